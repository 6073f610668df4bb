"""The narrower network shipped beside the default one (weights/fast): a folder that checks
out, tracks, states its own accuracy and speed, and is what its record says it is."""

import json
import re

import numpy as np
import pytest

from tracker.backends import create_backend
from tracker.cli import main as run_tracker
from tracker.estimator import HandEstimator
from tracker.evaluate import EVAL_STREAM_SEED
from tracker.synth.dataset import sample_seed
from tracker.narrowing import WIDTHS
from tracker.train import _width
from tracker.training_data import example_config_for, make_example
from tracker.training_history import last_narrowing, load_training_history
from tracker.weights import FAST_WEIGHTS_DIR, ONNX_INT8, WEIGHTS_DIR, check_weights, load_manifest, load_network


def test_the_fast_weights_check_out_and_are_narrower_than_the_default_ones():
    fast = check_weights(FAST_WEIGHTS_DIR)  # checksums, loading, ONNX graphs against torch
    default = load_manifest(WEIGHTS_DIR)
    assert fast["parameters"] < default["parameters"]
    # Narrowed from trained weights, not trained from scratch: the stage that narrowed them
    # records from what (the stages after it fine-tune the narrower network as it is).
    narrowing = last_narrowing(load_training_history(FAST_WEIGHTS_DIR))
    assert narrowing is not None and narrowing.start_samples > 0
    network, _ = load_network(FAST_WEIGHTS_DIR)
    widths = {name: _width(network.config, name) for name in WIDTHS}
    assert all(widths[name] <= was for name, was in narrowing.narrowed_from.items())
    assert any(widths[name] < was for name, was in narrowing.narrowed_from.items())
    assert ONNX_INT8 in fast["files"]


def test_the_fast_weights_history_continues_from_the_weights_they_were_narrowed_from():
    stages = load_training_history(FAST_WEIGHTS_DIR)
    manifest = load_manifest(FAST_WEIGHTS_DIR)
    # The chain starts where the default weights were narrowed, and every stage begins where the one before it ended.
    assert stages and stages[0] is last_narrowing(stages)
    assert [s.start_samples for s in stages[1:]] == [s.end_samples for s in stages[:-1]]
    assert stages[-1].start_samples == manifest["training"]["initialised_from"]["samples_seen"]
    assert stages[-1].end_samples == manifest["training"]["samples_seen_total"]


def test_the_model_card_quotes_its_own_evaluation_and_speed():
    card = (FAST_WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    synthetic = json.loads((FAST_WEIGHTS_DIR / "eval" / "synthetic_metrics.json").read_text())
    assert f"{synthetic['mean_joint_error_mm']:.2f} mm" in card
    assert "--weights" in card and str(FAST_WEIGHTS_DIR.name) in card  # the command that measures it again
    assert "inside each residual block" in card and "Narrowed, when the weights had seen" in card  # what makes it narrower, and since when
    # Its speed is in the card, from a benchmark run of these very files.
    assert re.search(r"\| (\w+/)?network_speed_\w+ \| onnxruntime \| [0-9.]+ \|", card), card


def test_the_fast_network_tracks_held_out_hands_in_float_and_8_bits(hand_model):
    manifest = load_manifest(FAST_WEIGHTS_DIR)
    config = example_config_for(manifest)
    to_mm = 1000.0 * config.cube_size_m / 2
    estimators = {name: HandEstimator(create_backend(name, FAST_WEIGHTS_DIR), hand_model) for name in ("onnxruntime", "onnxruntime-int8")}
    errors = {name: [] for name in estimators}
    for i in range(16):
        example = make_example(hand_model, config, sample_seed(EVAL_STREAM_SEED, i))
        for name, estimator in estimators.items():
            vertices = estimator.backend.run(example["depth"][None])["vertices"][0]
            joints = estimator.refit.fit(vertices).joints
            errors[name].append(np.linalg.norm(joints - example["joints"], axis=1).mean() * to_mm)
    # Over 1000 held-out frames both are within a few tenths of a millimetre of 7 mm (the model card);
    # a broken network or a badly calibrated 8-bit copy is centimetres off.
    assert np.mean(errors["onnxruntime"]) < 15.0, errors
    assert np.mean(errors["onnxruntime-int8"]) < np.mean(errors["onnxruntime"]) + 2.0, errors


def test_run_tracker_with_the_fast_weights(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert run_tracker(["--source", "synthetic", "--weights", str(FAST_WEIGHTS_DIR), "--max-frames", "5", "--no-viewer", "--out", str(out)]) == 0
    reported = re.search(r"mean joint error against the rendered truth ([0-9.]+) mm over 5 frames", capsys.readouterr().err)
    assert reported and float(reported.group(1)) < 20.0  # these weights: 7.8 mm over the input's 120 frames (measured)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5 and all(len(r["hands"][0]["joints_xyz_m"]) == 21 for r in records)
    resolved = json.loads((tmp_path / "t.config.json").read_text())
    assert resolved["weights"]["directory"] == str(FAST_WEIGHTS_DIR)
    assert resolved["weights"]["parameters"] == load_manifest(FAST_WEIGHTS_DIR)["parameters"]
