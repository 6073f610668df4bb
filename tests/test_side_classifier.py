"""Tests of the right/left hand classifier (tracker.side_classifier)."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from tracker import side_classifier as sc
from tracker.crop import OutOfImage
from tracker.synth.dataset import sample_seed
from tracker.training_data import ExampleConfig, make_example
from tracker.weights import WeightsError

#: Rendered held-out crops used below: half right hands, half left (odd indices). ~0.4 s.
HELD_OUT_COUNT = 40


@pytest.fixture(scope="module")
def held_out() -> dict[str, np.ndarray]:
    return sc.render_set(sc.DataConfig(), sc.HELD_OUT_STREAM_SEED, HELD_OUT_COUNT, progress=False)


def _batch(data: dict[str, np.ndarray], seed: int = 0) -> dict[str, torch.Tensor]:
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(data[k]))
        for k in ("depth", "forearm", "parts", "right", "facing", "along", "across")
    }
    tensors["depth"], tensors["forearm"] = tensors["depth"][:, None], tensors["forearm"][:, None]
    return sc.augment(tensors, sc.AugmentConfig(), torch.Generator().manual_seed(seed))


def test_network_output_shape():
    network = sc.SideNet().eval()
    assert network(torch.zeros(3, 1, 64, 64)).shape == (3, 1)
    logits, out = network.forward_all(torch.zeros(2, 1, 64, 64))
    assert logits.shape == (2, 1) and out["part_logits"].shape == (2, sc.NUM_PART_CLASSES, 16, 16)
    assert out["facing"].shape == (2,) and out["along"].shape == out["across"].shape == (2, 2)


def test_crop_is_the_one_make_example_cuts(hand_model):
    # The classifier must see exactly what the pipeline gives it: the camera-frame crop of a
    # right hand, whatever frame the network's own crop is in.
    from tracker.crop import CropFrame

    seed = sample_seed(sc.HELD_OUT_STREAM_SEED, 0)
    ours = sc.render_crop(hand_model, ExampleConfig(), seed)
    scene = ExampleConfig().scene
    right_hand = dataclasses.replace(scene, pose=dataclasses.replace(scene.pose, left_hand_probability=0.0))
    camera_frame = ExampleConfig(crop_frame=CropFrame.CAMERA, scene=right_hand)
    np.testing.assert_array_equal(ours["depth"], make_example(hand_model, camera_frame, seed)["depth"][0])


def test_the_classifier_renders_the_scenes_the_shipped_one_was_trained_and_measured_on():
    import json

    from tracker.synth.dataset import config_to_dict

    shipped = json.loads((sc.SIDE_WEIGHTS_DIR / "side.json").read_text())["training"]["config"]["data"]["example"]["scene"]
    now = config_to_dict(sc.DataConfig().example.scene)
    assert {key: now[key] for key in shipped if key != "pose"} == {k: v for k, v in shipped.items() if k != "pose"}
    assert {key: now["pose"][key] for key in shipped["pose"]} == shipped["pose"]
    # Settings added since: at the values that render what it was trained on.
    assert now["max_arm_rise_m"] is None and now["table_clear_of_arm"] is False
    assert now["max_finger_penetration_m"] is None
    assert now["pose"]["finger_length_jitter"] == 0.0 and now["pose"]["thickness_jitter"] == 0.0


def test_augmentation_mirrors_labels_and_keeps_range(held_out):
    tensors = {
        k: torch.from_numpy(np.ascontiguousarray(held_out[k]))
        for k in ("depth", "forearm", "parts", "right", "facing", "along", "across")
    }
    tensors["depth"], tensors["forearm"] = tensors["depth"][:, None], tensors["forearm"][:, None]
    config = sc.AugmentConfig(
        mirror_probability=1.0,
        rotate=False,
        max_shift_px=0,
        max_scale=1.0,
        max_depth_offset=0,
        max_noise_sigma=0,
        max_pixel_dropout=0,
        erase_probability=0,
        forearm_erase_probability=0,
    )
    out = sc.augment(tensors, config, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["depth"], tensors["depth"].flip(-1))
    assert torch.equal(out["label"], (~tensors["right"]).float())
    flip_x = torch.tensor([-1.0, 1.0])
    torch.testing.assert_close(out["along"], tensors["along"] * flip_x)
    torch.testing.assert_close(out["across"], tensors["across"] * flip_x)
    assert torch.equal(out["facing"], tensors["facing"])
    full = _batch(held_out)
    assert full["depth"].min() >= -1 and full["depth"].max() <= 1


@pytest.fixture
def one_torch_thread():
    # With another busy process on a 2-core machine, two torch threads spin-wait on each other
    # and a backward pass takes ~30x longer than with one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(held_out, one_torch_thread):
    torch.manual_seed(0)
    config = sc.TrainConfig()
    network = sc.SideNet()
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-3)
    batch = _batch({k: v[:16] for k, v in held_out.items()})
    first = sc.training_step(network, optimizer, batch, config)
    for _ in range(15):
        last = sc.training_step(network, optimizer, batch, config)
    assert last["total"] < 0.7 * first["total"]
    assert last["side"] < first["side"]


def test_onnx_export_round_trips(tmp_path, held_out):
    torch.manual_seed(1)
    network = sc.SideNet()
    # Non-trivial batch-norm statistics and a head that does not squash everything to ~0.
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(network.head[-1].weight, std=3.0)
    manifest = sc.export_weights(network, tmp_path, training={"note": "test"})
    assert manifest["onnx"]["input_shape"] == [1, 1, 64, 64] and manifest["onnx"]["opset"] == sc.ONNX_OPSET
    classifier = sc.SideClassifier.load(tmp_path)
    crops = np.concatenate([held_out["depth"][:4], held_out["depth"][:4, :, ::-1]])
    expected = sc.torch_logits(network, crops)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(classifier.logits(crops), expected, atol=1e-4, rtol=0)
    reloaded, _ = sc.load_side_network(tmp_path)
    np.testing.assert_allclose(sc.torch_logits(reloaded, crops), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="crop"):
        classifier.probability_right(crops[0][None])


def test_damaged_weights_raise_a_clear_error(tmp_path):
    directory = tmp_path / "side"
    shutil.copytree(sc.SIDE_WEIGHTS_DIR, directory)
    onnx, state = directory / sc.ONNX, directory / sc.STATE_DICT
    onnx.write_bytes(onnx.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="corrupt"):
        sc.SideClassifier.load(directory)
    state.write_bytes(state.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="corrupt"):
        sc.load_side_network(directory)
    # A truncated file whose manifest was "fixed" to match still fails, at the loader.
    manifest = json.loads((directory / sc.MANIFEST).read_text())
    manifest["files"][sc.ONNX] = sc.sha256_of(onnx)
    manifest["files"][sc.STATE_DICT] = sc.sha256_of(state)
    (directory / sc.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="onnxruntime cannot load"):
        sc.SideClassifier.load(directory)
    with pytest.raises(WeightsError, match="cannot load the state dict"):
        sc.load_side_network(directory)
    (directory / sc.MANIFEST).write_text("{not json")
    with pytest.raises(WeightsError, match="not a valid"):
        sc.SideClassifier.load(directory)
    with pytest.raises(WeightsError, match="missing"):
        sc.SideClassifier.load(tmp_path / "nowhere")


def test_the_weights_check_runs_the_classifiers_as_a_run_loads_them(tmp_path):
    # A run loads the classifiers' ONNX graphs; the check (python -m tracker.weights) must
    # catch one that is not the state dict's network, or not a network of its kind, even
    # where the manifest's checksums were made to match.
    from tracker.weights import WEIGHTS_DIR, check_weights

    weights = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, weights, ignore=shutil.ignore_patterns("eval", "training_*", "*.png", "*.md", "fast", "webxr-generic-hand"))
    check_weights(weights)
    side, presence = weights / "side_classifier", weights / "presence"

    def swap(folder, manifest_name, name, data):
        (folder / name).write_bytes(data)
        manifest = json.loads((folder / manifest_name).read_text())
        manifest["files"][name] = sc.sha256_of(folder / name)
        (folder / manifest_name).write_text(json.dumps(manifest))

    original = (side / sc.ONNX).read_bytes()
    torch.manual_seed(3)
    sc.export_weights(sc.SideNet(), tmp_path / "untrained", training={"note": "test"})
    swap(side, sc.MANIFEST, sc.ONNX, (tmp_path / "untrained" / sc.ONNX).read_bytes())
    with pytest.raises(WeightsError, match=r"side\.onnx does not compute what its state dict does"):
        check_weights(weights)
    swap(side, sc.MANIFEST, sc.ONNX, original)
    swap(presence, "presence.json", "presence.onnx", original)  # the side classifier in the hand-presence one's place
    with pytest.raises(WeightsError, match="expected input 'depth' and output 'hand_logit'"):
        check_weights(weights)


def test_a_classifier_manifest_with_values_a_run_cannot_use_is_refused(tmp_path):
    for change, said in (
        ({"cube_size_m": -0.26}, "'cube_size_m' must be a positive number of metres, got -0.26"),
        ({"cube_size_m": "26cm"}, "'cube_size_m' must be a positive number"),
    ):
        directory = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(sc.SIDE_WEIGHTS_DIR, directory)
        manifest = json.loads((directory / sc.MANIFEST).read_text())
        (directory / sc.MANIFEST).write_text(json.dumps({**manifest, **change}))
        with pytest.raises(WeightsError, match="not a valid side-classifier manifest") as raised:
            sc.SideClassifier.load(directory)
        assert said in str(raised.value)
    (directory / sc.MANIFEST).write_text("[" * 100_000 + "]" * 100_000)  # nested past the JSON decoder's depth
    with pytest.raises(WeightsError, match="not a valid side-classifier manifest"):
        sc.SideClassifier.load(directory)


def test_shipped_weights_tell_held_out_hands_and_their_mirrors_apart(held_out):
    classifier = sc.SideClassifier.load()
    torch_network, _ = sc.load_side_network()
    crops = np.concatenate([held_out["depth"], held_out["depth"][..., ::-1]])
    truth = np.concatenate([held_out["right"], ~held_out["right"]])
    logits = classifier.logits(crops)
    np.testing.assert_allclose(logits, sc.torch_logits(torch_network, crops), atol=1e-4, rtol=0)
    # 80 crops: 40 rendered (20 right, 20 left), each also mirrored. A crop and its mirror
    # nearly always get the same verdict, so this is ~40 independent trials. The shipped
    # model gets 78 % of the full held-out stream (1200 crops) and 77.5 % of these; a
    # guessing model would reach 65 % with probability ~3 % (sd ~8 % over 40 trials), and a
    # retrained model of the same quality still clears it with ~2 sd to spare.
    assert np.mean((logits > 0) == truth) >= 0.65


def test_sequence_metrics_count_the_changes_of_the_reported_side():
    class Scripted:
        """Both crops of frame i (hand centroid, live centre) get the i-th logit."""

        cube_size_m, crop_size, out_of_image = None, 64, OutOfImage.FAR  # crops as the shipped classifier's

        def __init__(self):
            self.calls = 0

        def logit(self, crop):
            self.calls += 1
            return (1.0, -1.05, -0.5)[(self.calls - 1) // 2 % 3]

    metrics = sc.sequence_metrics(Scripted(), seeds=(10,), frames=3, progress=False)
    assert metrics["frames_without_centre"] == 0  # so every frame made both calls
    # Right, right (mean -0.025 is within the margin), left (mean -0.18): one change each.
    assert [q["side_changes"] for q in metrics["per_sequence"]] == [1, 1]
    assert metrics["vote"]["side_changes"] == 2 and metrics["vote"]["most_side_changes_in_a_sequence"] == 1


@pytest.mark.parametrize("counts", [["--frames", "0"], ["--held-out", "0"]])
def test_evaluate_refuses_empty_counts_before_any_work(counts, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sc.main(["evaluate", *counts])
    assert exit_info.value.code == 2 and "must be >= 1" in capsys.readouterr().err


def test_evaluate_writes_what_it_prints_with_how_it_was_made(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sc, "evaluate", lambda *args, **kwargs: {"held_out": {"accuracy": 0.9, "per_frame": [1, 0]}})
    out = tmp_path / "results" / "side_vote.json"
    assert sc.main(["evaluate", "--seeds", "22", "23", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["held_out"] == json.loads(capsys.readouterr().out)["held_out"] == {"accuracy": 0.9}
    assert record["command"] == ["python", "-m", "tracker.side_classifier", "evaluate", "--seeds", "22", "23", "--out", str(out)]
    assert record["machine"]["git_commit"] and record["weights"]["sha256"]["side.onnx"] == sc.load_manifest()["files"]["side.onnx"]


def test_missing_real_frames_cost_their_check_not_the_evaluation(monkeypatch, capsys):
    from tracker.sources import SourceError

    def missing(classifier, folder=None):
        raise SourceError("tests/data/sr305-gestures does not exist")

    monkeypatch.setattr(sc, "real_frame_metrics", missing)
    assert sc._real_frame_metrics_or_why_not(None) == {"not_measured": "tests/data/sr305-gestures does not exist"}
    assert "no real-frame check" in capsys.readouterr().err


def test_training_leaves_the_callers_thread_count_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(sc, "_train", lambda config, out_dir, progress: torch.set_num_threads(1) or {"steps": 0})
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # not what training sets, whatever this process started with
    try:
        assert sc.train(sc.TrainConfig(threads=1), tmp_path) == {"steps": 0}
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_short_training_run_exports_the_weights_with_their_config_and_log(tmp_path):
    out = tmp_path / "run"
    assert sc.main(["train", "--out", str(out), "--samples", "8", "--held-out", "8", "--steps", "2"]) == 0
    # The export is what weights/side_classifier/ holds: the weights with their run's config and log.
    assert (out / "export" / "training_config.json").read_bytes() == (out / "config.json").read_bytes()
    assert (out / "export" / "training_metrics.csv").read_bytes() == (out / "metrics.csv").read_bytes()
    assert json.loads((out / "export" / "side.json").read_text())["training"]["steps"] == 2


def test_threads_sharing_a_classifier_each_get_their_own_crops_answer():
    import threading

    from tracker.side_inference import SideClassifier

    classifier = SideClassifier.load()
    rng = np.random.default_rng(0)
    crops = [np.clip(rng.normal(0.5, 0.5, (64, 64)), -1, 1).astype(np.float32), np.ones((64, 64), np.float32)]
    expected = [classifier.logit(c) for c in crops]
    assert abs(expected[0] - expected[1]) > 0.1
    wrong = [0, 0]

    def classify(k):
        for _ in range(2000):
            # The same crop through the same session: equal to the last bit but for
            # onnxruntime's threading; another crop's answer is off by far more.
            if abs(classifier.logit(crops[k]) - expected[k]) > 1e-4:
                wrong[k] += 1

    threads = [threading.Thread(target=classify, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == [0, 0]


def test_training_then_evaluating_stores_the_metrics_in_the_export(tmp_path, monkeypatch, capsys):
    # train --evaluate shares the namespace with evaluate's own options: its --out (the run
    # folder) is not the metrics file evaluate --out writes.
    summary = {"steps": 1, "samples_seen": 2, "train_seconds": 1.0, "render_seconds": 1.0}
    monkeypatch.setattr(sc, "train", lambda config, out: summary)
    monkeypatch.setattr(sc, "evaluate", lambda *args, **kwargs: {"held_out": {"accuracy": 0.9}})
    monkeypatch.setattr(sc, "load_manifest", lambda weights: {"files": {}})
    stored = []
    monkeypatch.setattr(sc, "write_manifest", lambda weights, manifest: stored.append((weights, manifest)))
    assert sc.main(["train", "--out", str(tmp_path), "--evaluate"]) == 0
    assert stored == [(tmp_path / "export", {"files": {}, "metrics": {"held_out": {"accuracy": 0.9}}})]
