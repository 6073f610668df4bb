import csv
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from tracker.network import DualGridNet, DualGridNetConfig
from tracker.train import RECIPES, DataStalled, _loader_timed_out, initial_weights, learning_rate, train
from tracker.training_data import SyntheticStream
from tracker.weights import WeightsError, load_network

ROOT = Path(__file__).resolve().parent.parent
SMOKE = RECIPES["smoke"]


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_training_checkpoints_resumes_and_exports(tmp_path):
    train(SMOKE, tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == SMOKE.steps and state["samples_seen"] == SMOKE.steps * SMOKE.batch_size
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train"]["batch_size"] == SMOKE.batch_size and config["world_size"] == 1
    rows = _rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, SMOKE.steps + 1))
    assert all(float(r["initial_cm"]) > 0 for r in rows)
    # The refit's terms before it starts are left blank, not written as nan.
    assert [r["joints_cm"] == "" for r in rows] == [step < SMOKE.refit_start_step for step in range(SMOKE.steps)]

    # Resume: a longer run continues from the checkpoint instead of starting over. A row
    # logged after the checkpoint (the run died between the two) is logged again, once.
    first_rows = rows
    with open(tmp_path / "metrics.csv", "a", newline="") as f:
        csv.writer(f).writerow([SMOKE.steps + 1] + ["0"] * (len(rows[0]) - 1))
    longer = SMOKE.__class__(**{**SMOKE.__dict__, "steps": SMOKE.steps + 2})
    train(longer, tmp_path, progress=False)
    rows = _rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, SMOKE.steps + 3))
    # Started over, the run would have rewritten the first rows (another schedule, other
    # timings) and an optimiser of 2 steps.
    assert rows[: SMOKE.steps] == first_rows
    optimizer_steps = {float(v["step"]) for v in torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]["state"].values()}
    assert optimizer_steps == {SMOKE.steps + 2.0}
    assert float(rows[SMOKE.steps]["initial_cm"]) > 0  # the new row, not the stale one
    assert torch.load(tmp_path / "last.pt", weights_only=True)["samples_seen"] == (SMOKE.steps + 2) * SMOKE.batch_size

    network, manifest = load_network(tmp_path / "export")
    assert manifest["training"]["samples_seen"] == (SMOKE.steps + 2) * SMOKE.batch_size
    assert network(torch.zeros(1, 1, 64, 64))["vertices"].shape[-1] == 3

    # The same command again on the finished run: nothing to train, and its records and
    # export (with what was added to it since: an 8-bit network) are left as they are.
    export = tmp_path / "export"
    manifest["onnx_int8"] = {"added": "by tracker.quantize"}
    (export / "dgn.json").write_text(json.dumps(manifest))
    kept = {path.name: path.read_bytes() for path in [*export.iterdir(), tmp_path / "summary.json", tmp_path / "config.json", tmp_path / "metrics.csv"]}
    train(longer, tmp_path, progress=False)
    assert {name: (export / name if (export / name).exists() else tmp_path / name).read_bytes() for name in kept} == kept
    # A damaged export is written again, with the losses the run ended with.
    (export / "dgn.onnx").write_bytes(b"cut short")
    (export / "dgn_int8.onnx").write_bytes(b"made from the earlier weights")
    summary = train(longer, tmp_path, progress=False)
    _, manifest = load_network(export)
    assert summary["last_losses"] and manifest["training"]["last_losses"] == json.loads(kept["summary.json"])["last_losses"]
    assert not (export / "dgn_int8.onnx").exists() and "onnx_int8" not in manifest
    assert sorted(path.name for path in export.iterdir()) == ["dgn.json", "dgn.onnx", "dgn.pt"]  # no temporary files left


def test_a_finished_run_run_again_is_done_however_it_once_ended(tmp_path, capsys):
    import tracker.train as train_module

    train(SMOKE, tmp_path, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # Stopped by a signal in its last step, and written by a version without skipped_steps.
    summary.update(stopped_by="SIGINT", stopped_by_signal=2)
    del summary["skipped_steps"]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert train_module.main(["--out", str(tmp_path), "--recipe", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "has already finished (4 steps); its export" in out and "resume" not in out and "trained" not in out


def _losses_with(monkeypatch, action):
    """compute_losses as in training, with ``action(call_number, terms)`` run on each call."""
    import tracker.train as train_module

    real = train_module.compute_losses
    calls = []

    def patched(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls.append(1)
        return action(len(calls), terms)

    monkeypatch.setattr(train_module, "compute_losses", patched)


def test_a_step_with_non_finite_gradients_is_skipped(tmp_path, monkeypatch):
    def nan_on_second(call, terms):
        if call == 2:
            terms["total"] = terms["total"] * float("nan")
        return terms

    _losses_with(monkeypatch, nan_on_second)
    summary = train(SMOKE, tmp_path, progress=False)
    assert summary["steps"] == SMOKE.steps and summary["skipped_steps"] == 1
    network, _ = load_network(tmp_path / "export")
    assert all(bool(torch.isfinite(p).all()) for p in network.parameters())
    # The optimiser took the other steps only.
    state = torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]["state"]
    assert {float(v["step"]) for v in state.values()} == {SMOKE.steps - 1.0}
    # Resumed, the run still counts the step skipped before.
    monkeypatch.undo()
    longer = SMOKE.__class__(**{**SMOKE.__dict__, "steps": SMOKE.steps + 2})
    assert train(longer, tmp_path, progress=False)["skipped_steps"] == 1
    assert load_network(tmp_path / "export")[1]["training"]["skipped_steps"] == 1


def test_weights_count_as_finite_only_with_finite_batchnorm_statistics():
    from tracker.train import _all_finite

    network = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert _all_finite(network)
    network[1].running_var[0] = float("nan")  # exported with the weights, so it counts
    assert not _all_finite(network)


def test_a_run_that_stays_non_finite_stops_with_a_clear_error(tmp_path, monkeypatch, capsys):
    import tracker.train as train_module

    monkeypatch.setattr(train_module, "MAX_NONFINITE_STEPS", 2)

    def nan_from_third(call, terms):
        if call >= 3:
            terms["total"] = terms["total"] * float("inf")
        return terms

    _losses_with(monkeypatch, nan_from_third)
    rc = train_module.main(["--out", str(tmp_path), "--recipe", "smoke", "--steps", "8"])
    assert rc == 2
    assert "not finite for 2 steps in a row (step 4)" in capsys.readouterr().err
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # the checkpoint of step 2 stays
    assert state["step"] == 2 and all(bool(torch.isfinite(v).all()) for v in state["network"].values())


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_ends_the_run_after_its_step_with_a_checkpoint_and_an_export(tmp_path, monkeypatch, capsys, name):
    import signal

    import tracker.train as train_module

    number = getattr(signal, name)
    # A job started in the background inherits SIGINT ignored, which the run rightly leaves
    # so: the signal gets its interactive default for this test.
    inherited = signal.signal(number, signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL)
    try:
        before = signal.getsignal(number)

        def signal_on_third(call, terms):
            if call == 3:
                os.kill(os.getpid(), number)
            return terms

        _losses_with(monkeypatch, signal_on_third)
        rc = train_module.main(["--out", str(tmp_path), "--recipe", "smoke", "--steps", "8"])
        assert rc == 128 + number
        captured = capsys.readouterr()
        assert f"{name}: stopping after this step" in captured.err and "run the same command again to resume" in captured.out
        # Step 3 was finished (not checkpointed by the schedule: every 2 steps) and kept.
        assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 3
        assert [int(r["step"]) for r in _rows(tmp_path / "metrics.csv")] == [1, 2, 3]
        _, manifest = load_network(tmp_path / "export")
        assert manifest["training"]["steps"] == 3 and manifest["training"]["stopped_by"] == name
        assert signal.getsignal(number) is before
    finally:
        signal.signal(number, inherited)


def test_a_second_signal_aborts_at_once(tmp_path, monkeypatch):
    import signal

    def two_signals(call, terms):
        if call == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return terms

    _losses_with(monkeypatch, two_signals)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train(SMOKE, tmp_path, progress=False)
    assert not (tmp_path / "export").exists()  # aborted mid-step: nothing written as if finished
    assert signal.getsignal(signal.SIGTERM) is before


def test_corrupt_weights_fail_the_checksum(tmp_path):
    train(SMOKE, tmp_path, progress=False)
    export = tmp_path / "export"
    data = (export / "dgn.pt").read_bytes()
    (export / "dgn.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="corrupt or from another model"):
        load_network(export)
    (export / "dgn.json").unlink()
    with pytest.raises(WeightsError, match="no network weights"):
        load_network(export)


def test_weights_refuse_a_hand_model_they_were_not_trained_with(tmp_path, hand_model):
    import numpy as np

    from tracker.backends import create_backend
    from tracker.estimator import HandEstimator
    from tracker.hand_model import DEFAULT_ASSET, HandModel

    train(SMOKE, tmp_path, progress=False)
    export = tmp_path / "export"
    with np.load(DEFAULT_ASSET, allow_pickle=False) as data:
        arrays = dict(data)
    arrays["mesh_coords"] = arrays["mesh_coords"][::-1].copy()  # another embedding, same shapes
    other = tmp_path / "other_hand.npz"
    np.savez(other, **arrays)
    other_model = HandModel.load(other)
    with pytest.raises(WeightsError, match="trained with the hand model"):
        load_network(export, hand_model=other_model)
    with pytest.raises(WeightsError, match="trained with the hand model"):
        HandEstimator(create_backend("onnxruntime", export), other_model)
    # The asset they were exported with loads; so does a model made in memory (no file).
    load_network(export, hand_model=HandModel.load(DEFAULT_ASSET))
    HandEstimator(create_backend("onnxruntime", export), HandModel(arrays))


def test_learning_rate_schedule():
    config = RECIPES["cpu"]
    assert learning_rate(config, 0) < learning_rate(config, config.warmup_steps - 1)
    assert learning_rate(config, config.warmup_steps) == pytest.approx(config.learning_rate)
    assert learning_rate(config, config.steps) == pytest.approx(0.0, abs=1e-12)
    # A time budget that runs out first ends the cosine by then; the step count no longer matters.
    early = config.warmup_steps + 10
    assert learning_rate(config, early, time_fraction=0.5) == pytest.approx(0.5 * config.learning_rate)
    assert learning_rate(config, early, time_fraction=1.0) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(config, config.steps - 1, time_fraction=0.1) == learning_rate(config, config.steps - 1)
    # ... also when it runs out during the warm-up.
    assert learning_rate(config, config.warmup_steps // 2, time_fraction=1.0) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(config, config.warmup_steps - 1, time_fraction=0.5) == pytest.approx(0.5 * config.learning_rate)


def test_a_resume_with_other_steps_goes_on_from_the_learning_rate_it_had():
    from tracker.train import ScheduleAnchor, resumed_schedule_anchor

    config = RECIPES["cpu"]
    saved = {"steps": config.steps, "warmup_steps": config.warmup_steps}
    longer = SMOKE.__class__(**{**config.__dict__, "steps": 2 * config.steps})
    at = 2 * config.steps // 3
    anchor = resumed_schedule_anchor(saved, None, longer, at)
    assert learning_rate(longer, at, anchor=anchor) == pytest.approx(learning_rate(config, at), rel=1e-12)
    rates = [learning_rate(longer, step, anchor=anchor) for step in range(at, longer.steps + 1)]
    assert all(b < a for a, b in zip(rates, rates[1:])) and rates[-1] == pytest.approx(0.0, abs=1e-12)
    # Without the anchor the rate would jump to more than twice what it was.
    assert learning_rate(longer, at) > 2 * learning_rate(config, at)
    # A second change later goes on from the anchored schedule, again without a jump.
    later = at + 500
    shorter = SMOKE.__class__(**{**config.__dict__, "steps": config.steps + 1000})
    again = resumed_schedule_anchor(longer.__dict__, anchor, shorter, later)
    assert learning_rate(shorter, later, anchor=again) == pytest.approx(learning_rate(longer, later, anchor=anchor), rel=1e-12)
    assert learning_rate(shorter, shorter.steps, anchor=again) == pytest.approx(0.0, abs=1e-12)
    # The same steps keep the checkpoint's anchor; a change during the warm-up needs none
    # (the warm-up does not depend on the steps); a schedule that had ended restarts.
    assert resumed_schedule_anchor(saved, anchor, config, at) == anchor
    assert resumed_schedule_anchor(saved, None, longer, config.warmup_steps - 1) is None
    assert resumed_schedule_anchor(saved, None, longer, config.steps) is None
    assert ScheduleAnchor.from_dict(anchor.to_dict()) == anchor and ScheduleAnchor.from_dict(None) is None


def test_a_stopped_run_resumed_with_more_steps_keeps_its_learning_rate(tmp_path, capsys):
    import tracker.train as train_module

    # A run of 8 steps stopped at step 4, made by rewriting a finished 4-step run's record.
    train(SMOKE, tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    state["config"]["steps"] = 8
    torch.save(state, tmp_path / "last.pt")
    stopped = SMOKE.__class__(**{**SMOKE.__dict__, "steps": 8})
    assert train_module.main(["--out", str(tmp_path), "--recipe", "smoke", "--steps", "12"]) == 0
    assert "goes on from" in capsys.readouterr().out
    rates = [float(r["lr"]) for r in _rows(tmp_path / "metrics.csv")[SMOKE.steps:]]
    # Logged with 3 significant digits.
    assert rates[0] == pytest.approx(learning_rate(stopped, SMOKE.steps), rel=5e-3)
    assert all(b < a for a, b in zip(rates, rates[1:])) and rates[-1] > 0
    assert torch.load(tmp_path / "last.pt", weights_only=True)["schedule_anchor"]["step"] == SMOKE.steps
    assert json.loads((tmp_path / "config.json").read_text())["schedule_anchor"]["step"] == SMOKE.steps


def test_fine_tuning_starts_from_exported_weights_and_counts_their_samples(tmp_path, hand_model, monkeypatch):
    import tracker.train as train_module

    starts = []

    class RecordingStream(train_module.SyntheticStream):
        def __init__(self, *args, start=0, **kwargs):
            starts.append(start)
            super().__init__(*args, start=start, **kwargs)

    monkeypatch.setattr(train_module, "SyntheticStream", RecordingStream)
    train(SMOKE, tmp_path / "first", progress=False)
    start, _ = load_network(tmp_path / "first" / "export")
    fresh = DualGridNet(hand_model.mesh_coords, DualGridNetConfig(**start.config.to_dict()))
    record = initial_weights(fresh, tmp_path / "first" / "export")
    assert record["samples_seen"] == SMOKE.steps * SMOKE.batch_size
    for name, value in start.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name

    summary = train(SMOKE, tmp_path / "second", progress=False, init_from=tmp_path / "first" / "export")
    assert summary["samples_seen_total"] == 2 * SMOKE.steps * SMOKE.batch_size
    # The fine-tune draws the samples after those the first run drew, never the same ones.
    first_total = SMOKE.steps * SMOKE.batch_size
    assert starts == [0, first_total]
    assert json.loads((tmp_path / "second" / "config.json").read_text())["sample_stream"]["first_index"] == first_total
    _, manifest = load_network(tmp_path / "second" / "export")
    assert manifest["training"]["initialised_from"]["samples_seen"] == SMOKE.steps * SMOKE.batch_size

    # Another shape than narrowing gives is refused.
    other = DualGridNet(hand_model.mesh_coords, DualGridNetConfig(feature_channels=16))
    with pytest.raises(WeightsError, match="only the widths can differ"):
        initial_weights(other, tmp_path / "first" / "export")


def _failure_excerpt(stderr: str) -> str:
    # The launcher's own report fills the end of stderr; a rank's fault dump comes before it.
    found = [at for at in (stderr.find("terminate called"), stderr.find("Fatal Python error")) if at >= 0]
    fault = stderr[min(found):min(found) + 6000] + "\n...\n" if found else ""
    return fault + stderr[-3000:]


def _torchrun_training(out_dir: Path, port: int, *train_args: str) -> None:
    """Two gloo ranks of ``tracker.train`` into ``out_dir``; fails the test unless they succeed."""
    # Faulthandler prints every thread's Python stack if a rank dies on a signal, so a failure
    # says where that rank was, not only its exit code.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "tracker.train", "--out", str(out_dir), "--recipe", "smoke", "--device", "cpu", *train_args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    if result.returncode != 0 and "exitcode  : -6" in result.stderr:
        # Rarely (about once in a hundred runs on a loaded 2-core machine) a rank dies of a
        # native abort ("terminate called without an active exception").
        # What these tests check, ranks that agree and stop together, fails differently: a
        # gloo error or a hang into the timeout. So that abort gets one fresh attempt,
        # reported as a warning with its fault dump.
        warnings.warn(f"a training rank aborted; running again from scratch:\n{_failure_excerpt(result.stderr)}", stacklevel=2)
        shutil.rmtree(out_dir, ignore_errors=True)
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, _failure_excerpt(result.stderr)


def test_two_process_ddp_run_with_gloo(tmp_path):
    _torchrun_training(tmp_path, 29517, "--steps", "3")
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["world_size"] == 2
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    # Two ranks, each with its own batch: the global sample count doubles.
    assert state["samples_seen"] == 3 * SMOKE.batch_size * 2
    # Rank r draws the indices r, r + 2, ...; the checkpoint holds both ranks' lanes.
    assert state["stream_lanes"] == {"start": 0, "lanes": 2, "next": [12, 13]}
    assert (tmp_path / "export" / "dgn.onnx").is_file()


def test_two_process_ddp_run_with_a_replay_memory(tmp_path):
    _torchrun_training(tmp_path, 29519, "--steps", "3", "--replay-examples", "8", "--replay-max-uses", "2")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["examples_trained"] == 3 * SMOKE.batch_size * 2
    # Summed over both ranks: each drew 6 examples, at most 2 draws per rendered example.
    assert summary["samples_seen"] >= 2 * 3
    rows = _rows(tmp_path / "metrics.csv")
    assert [int(r["examples_trained"]) for r in rows] == [4, 8, 12]


def test_ddp_ranks_stop_together_when_the_time_budget_ends(tmp_path):
    # Far more steps than fit in 6 s: the time budget ends the run. A rank that stopped on
    # its own clock would leave the other waiting in the all-reduce until the timeout.
    _torchrun_training(tmp_path, 29518, "--steps", "100000", "--max-minutes", "0.1")
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert 0 < state["step"] < 100000 and state["samples_seen"] == state["step"] * SMOKE.batch_size * 2
    # The learning rate decays with the clock: by the last step most of the budget is gone
    # even on a slow machine (a step takes well under a third of it), so it is far below the peak.
    assert float(_rows(tmp_path / "metrics.csv")[-1]["lr"]) < 0.5 * SMOKE.learning_rate


def test_fine_tuning_from_missing_weights_is_a_clear_error(tmp_path, capsys):
    from tracker.train import main as train_main

    assert train_main(["--out", str(tmp_path / "run"), "--recipe", "smoke", "--init-from", str(tmp_path / "none")]) == 2
    assert "no network weights" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_resumes_only_in_the_crop_frame_it_was_trained_in(tmp_path, capsys):
    from tracker.train import main as train_main

    out = tmp_path / "run"
    assert train_main(["--out", str(out), "--recipe", "smoke", "--crop-frame", "camera"]) == 0
    capsys.readouterr()
    assert train_main(["--out", str(out), "--recipe", "smoke", "--steps", "6"]) == 2  # the default is ray
    assert "trained on camera-frame crops" in capsys.readouterr().err
    assert train_main(["--out", str(out), "--recipe", "smoke", "--steps", "6", "--crop-frame", "camera"]) == 0
    assert json.loads((out / "export" / "dgn.json").read_text())["crop_frame"] == "camera"


def test_the_out_of_image_fill_is_recorded_kept_on_resume_and_announced_when_a_fine_tune_changes_it(tmp_path, capsys):
    from tracker.train import main as train_main

    out = tmp_path / "run"
    assert train_main(["--out", str(out), "--recipe", "smoke", "--out-of-image", "marked"]) == 0
    assert json.loads((out / "export" / "dgn.json").read_text())["out_of_image"] == "marked"
    assert json.loads((out / "config.json").read_text())["train"]["data"]["out_of_image"] == "marked"
    capsys.readouterr()
    assert train_main(["--out", str(out), "--recipe", "smoke", "--steps", "6"]) == 2  # the default is far
    assert "showing marked past the image's edge, not far" in capsys.readouterr().err
    assert train_main(["--out", str(tmp_path / "tune"), "--recipe", "smoke", "--init-from", str(out / "export")]) == 0
    assert "trained with crops showing marked past the image's edge; this run trains them with far" in capsys.readouterr().out
    assert json.loads((tmp_path / "tune" / "export" / "dgn.json").read_text())["out_of_image"] == "far"


def test_a_run_resumes_only_with_the_hand_model_it_was_trained_with(tmp_path, hand_model):
    from tracker.train import ResumeError

    train(SMOKE, tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["hand_model_sha256"] == hand_model.sha256
    # As if the asset had been rebuilt since: the network's vertices would be sampled at
    # other mesh coordinates.
    state["hand_model_sha256"] = "0" * 64
    torch.save(state, tmp_path / "last.pt")
    longer = SMOKE.__class__(**{**SMOKE.__dict__, "steps": SMOKE.steps + 2})
    with pytest.raises(ResumeError, match="trained with the hand model 000000000000"):
        train(longer, tmp_path, progress=False)


def test_a_resumed_run_keeps_its_time_budget_and_says_what_changed(tmp_path, capsys):
    train(SMOKE, tmp_path, progress=False, max_seconds=3600.0)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["max_seconds"] == 3600.0
    capsys.readouterr()
    # Resumed without the budget: the learning rate still follows the hour, not the steps.
    longer = SMOKE.__class__(**{**SMOKE.__dict__, "steps": SMOKE.steps + 2})
    train(longer, tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "resuming with the run's time budget of 60 min" in out
    assert f"steps {SMOKE.steps} -> {SMOKE.steps + 2}" in out
    assert json.loads((tmp_path / "config.json").read_text())["max_seconds"] == 3600.0
    assert torch.load(tmp_path / "last.pt", weights_only=True)["max_seconds"] == 3600.0


def test_a_fine_tune_says_when_it_changes_the_crop_frame_and_a_resume_when_it_ignores_init_from(tmp_path, capsys):
    import dataclasses

    from tracker.crop import CropFrame

    train(SMOKE, tmp_path / "first", progress=False)
    trained_in = CropFrame(SMOKE.data.crop_frame)
    other = CropFrame.CAMERA if trained_in is CropFrame.RAY else CropFrame.RAY
    capsys.readouterr()
    switched = dataclasses.replace(SMOKE, data=dataclasses.replace(SMOKE.data, crop_frame=other))
    train(switched, tmp_path / "second", progress=False, init_from=tmp_path / "first" / "export")
    assert f"trained on {trained_in.value}-frame crops; this run trains them on {other.value}-frame ones" in capsys.readouterr().out
    longer = dataclasses.replace(switched, steps=SMOKE.steps + 2)
    train(longer, tmp_path / "second", progress=False, init_from=tmp_path / "first" / "export")
    assert f"at step {SMOKE.steps}: --init-from {tmp_path / 'first' / 'export'} is not used" in capsys.readouterr().out


def test_the_command_line_refuses_a_bad_learning_rate_and_warns_of_a_schedule_cut_short(tmp_path, capsys, monkeypatch):
    import tracker.train as train_module

    for bad in ("0", "-1e-3", "nan"):
        with pytest.raises(SystemExit):
            train_module.main(["--out", str(tmp_path), "--recipe", "smoke", f"--lr={bad}"])
        assert "--lr must be a positive number" in capsys.readouterr().err
    monkeypatch.setattr(train_module, "train", lambda *args, **kwargs: {"steps": 0, "samples_seen": 0, "seconds": 0.0, "skipped_steps": 0})
    assert train_module.main(["--out", str(tmp_path), "--recipe", "cpu", "--steps", "150"]) == 0
    err = capsys.readouterr().err
    assert "end before the refit terms start (at step 201, counting from 1" in err and "warm-up" not in err
    train_module.main(["--out", str(tmp_path), "--recipe", "cpu", "--steps", "50"])
    assert "within the recipe's 100-step warm-up" in capsys.readouterr().err
    # A fine-tune trains the refit terms from its first step: its weights are trained already.
    configs = []
    monkeypatch.setattr(train_module, "train", lambda config, *args, **kwargs: configs.append(config) or {"steps": 0, "samples_seen": 0, "seconds": 0.0, "skipped_steps": 0})
    assert train_module.main(["--out", str(tmp_path), "--recipe", "cpu", "--steps", "150", "--init-from", "weights"]) == 0
    assert configs[0].refit_start_step == 0 and "refit terms start" not in capsys.readouterr().err


@pytest.mark.parametrize("minutes", ["0", "inf", "nan"])
def test_a_time_budget_must_be_positive_and_finite(tmp_path, capsys, minutes):
    from tracker.train import main as train_main

    with pytest.raises(SystemExit):
        train_main(["--out", str(tmp_path / "run"), "--recipe", "smoke", "--max-minutes", minutes])
    assert "--max-minutes must be a finite number more than 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text.encode("utf-8")[:40] + b"\xff\xfe" + text.encode("utf-8")[40:],  # not UTF-8
        lambda text: json.dumps({**json.loads(text), "files": ["dgn.pt"]}).encode(),  # files not a table
        lambda text: json.dumps({**json.loads(text), "cube_size_m": "big"}).encode(),
    ],
)
def test_a_damaged_manifest_is_a_clear_error(tmp_path, damage):
    from tracker.weights import load_manifest

    train(SMOKE, tmp_path, progress=False)
    manifest = tmp_path / "export" / "dgn.json"
    manifest.write_bytes(damage(manifest.read_text()))
    with pytest.raises(WeightsError, match="not a valid weights manifest"):
        load_manifest(tmp_path / "export")


def test_stream_lanes_record_how_far_each_lane_got():
    from tracker.training_data import StreamLanes

    lanes = StreamLanes(start=100, lanes=3)
    assert lanes.next.tolist() == [100, 101, 102] and lanes.end == 100
    lanes.update([100, 103, 101, 106])  # lane 0 took three, lane 1 one, lane 2 none
    assert lanes.next.tolist() == [109, 104, 102] and lanes.end == 107
    assert StreamLanes.resumed(lanes.to_dict(), 100, 3).next.tolist() == [109, 104, 102]
    assert StreamLanes.resumed(lanes.to_dict(), 100, 4) is None  # other lanes: not these
    assert StreamLanes.resumed(None, 100, 3) is None


def test_a_run_with_two_workers_resumes_each_lane_where_it_was(tmp_path):
    # Two data workers take turns, batch by batch: after 3 steps one lane has given two
    # batches, the other one. Restarting both at samples_seen would draw some examples twice.
    two = SMOKE.__class__(**{**SMOKE.__dict__, "workers": 2, "steps": 3, "checkpoint_every": 100})
    train(two, tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    # Lane 0 drew 0, 2, 4, 6; lane 1 drew 1, 3.
    assert state["stream_lanes"] == {"start": 0, "lanes": 2, "next": [8, 5]} and state["samples_seen"] == 6
    train(SMOKE.__class__(**{**two.__dict__, "steps": 4}), tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["stream_lanes"]["next"] == [12, 5]  # lane 0 went on from 8, not from 6
    network, manifest = load_network(tmp_path / "export")
    assert manifest["training"]["stream_end"] == 11  # where a fine-tune from these weights begins
    # Resumed with other lanes (no workers: one lane), it goes on past everything drawn:
    # from 11, not from samples_seen (8), which lane 0 had drawn already.
    train(SMOKE.__class__(**{**two.__dict__, "workers": 0, "steps": 5}), tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["stream_lanes"] == {"start": 0, "lanes": 1, "next": [13]}


class StuckStream(torch.utils.data.IterableDataset):
    """Stands in for the synthetic stream with a worker that never hands over a batch
    (spawned workers import it from this module)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def __iter__(self):
        import time

        time.sleep(3600)
        yield {}


def test_a_stuck_data_worker_ends_the_run_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("tracker.train.SyntheticStream", StuckStream)
    # A short timeout keeps the test quick; the worker never hands over a batch however
    # long it is given.
    stuck = SMOKE.__class__(**{**SMOKE.__dict__, "workers": 1, "data_timeout_s": 5.0})
    before = set(multiprocessing.active_children())
    with pytest.raises(DataStalled, match="no batch came from the data-loader workers in 5 s.*no checkpoint of this run had been written"):
        train(stuck, tmp_path, progress=False)
    # The stuck worker ignores SIGTERM: left alive, the interpreter's exit would wait on it.
    assert set(multiprocessing.active_children()) <= before


class StreamThatStalls(SyntheticStream):
    """The synthetic stream, whose worker gets stuck after a few examples."""

    def __iter__(self):
        import time

        for count, example in enumerate(super().__iter__()):
            if count == 6:
                time.sleep(3600)
            yield example


def test_a_stall_after_some_steps_saves_them_in_a_checkpoint_first(tmp_path, monkeypatch):
    monkeypatch.setattr("tracker.train.SyntheticStream", StreamThatStalls)
    # Batches of 2 and a checkpoint every 100 steps: the three steps the worker's six
    # examples make would otherwise be lost. The timeout covers the worker's start too
    # (imports, the first render): 5 s proved too short on two cores busy with other work.
    stalling = SMOKE.__class__(**{**SMOKE.__dict__, "steps": 10, "workers": 1, "data_timeout_s": 10.0, "checkpoint_every": 100})
    began = time.perf_counter()
    before = set(multiprocessing.active_children())
    with pytest.raises(DataStalled, match="last.pt holds step 3 and the same command resumes"):
        train(stalling, tmp_path, progress=False)
    elapsed = time.perf_counter() - began
    assert set(multiprocessing.active_children()) <= before  # not asleep for an hour past the run
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 3 and state["samples_seen"] == 6
    # The 10 s spent waiting for the stuck worker trained nothing: it is not trained time,
    # which a resumed run's time budget and schedule go on from.
    assert state["train_seconds"] <= elapsed - 10.0
    assert state["stream_lanes"]["next"] == [6]  # a resume goes on with the seventh example


class StreamStoppedWithItsGroup(SyntheticStream):
    """The synthetic stream, whose worker, after a few examples, is sent a SIGTERM with the
    training process, as to the whole process group (torchrun, timeout, a job scheduler)."""

    def __iter__(self):
        import signal
        import time

        for count, example in enumerate(super().__iter__()):
            if count == 6:
                time.sleep(2.0)  # the trainer has (most likely) taken the batches made and waits for the next
                os.kill(os.getppid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
            yield example


def test_a_stop_signal_to_the_whole_process_group_still_ends_with_a_checkpoint_and_an_export(tmp_path, monkeypatch):
    monkeypatch.setattr("tracker.train.SyntheticStream", StreamStoppedWithItsGroup)
    stopping = SMOKE.__class__(**{**SMOKE.__dict__, "steps": 10, "workers": 1, "data_timeout_s": 60.0, "checkpoint_every": 100})
    summary = train(stopping, tmp_path, progress=False)
    # The worker leaves SIGTERM to the trainer and goes on, so the trainer ends after the step
    # in progress (the six examples make three steps; the worker may have made a fourth batch
    # meanwhile), as a signal to it alone would.
    assert summary["stopped_by"] == "SIGTERM" and summary["steps"] <= 4
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == summary["steps"]
    _, manifest = load_network(tmp_path / "export")
    assert manifest["training"]["steps"] == summary["steps"] and manifest["training"]["stopped_by"] == "SIGTERM"


def test_the_loader_timeout_is_recognised_through_the_replay_thread():
    timeout = RuntimeError("DataLoader timed out after 5 seconds")
    wrapped = RuntimeError("the training data stream failed")
    wrapped.__cause__ = timeout
    assert _loader_timed_out(wrapped) and _loader_timed_out(timeout)
    assert not _loader_timed_out(RuntimeError("DataLoader worker (pid 1) exited unexpectedly"))


def test_the_export_records_the_hand_model_the_network_was_built_from(tmp_path, monkeypatch):
    # Not whatever the asset file holds when the run ends: it may have been rebuilt meanwhile.
    from types import SimpleNamespace

    import tracker.train
    from tracker.hand_model import HandModel

    loaded = HandModel.load()
    assert loaded.sha256 is not None
    loaded.sha256 = "ab" * 32
    monkeypatch.setattr(tracker.train, "HandModel", SimpleNamespace(load=lambda: loaded))
    train(SMOKE, tmp_path, progress=False)
    manifest = json.loads((tmp_path / "export" / "dgn.json").read_text())
    assert manifest["hand_model_sha256"] == "ab" * 32
    with pytest.raises(WeightsError, match="were trained with the hand model abababababab"):
        load_network(tmp_path / "export", hand_model=HandModel.load())


def test_data_workers_leave_the_stop_signals_to_the_training_process():
    import signal

    from tracker.train import _ignore_interrupts

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {name: signal.getsignal(name) for name in stops}
    try:
        _ignore_interrupts(0)
        assert all(signal.getsignal(name) == signal.SIG_IGN for name in stops)
    finally:
        for name, handler in before.items():
            signal.signal(name, handler)


def _mean_on_rank(rank: int, port: int, results) -> None:
    """One of two gloo ranks logging losses (spawned processes import it from this module)."""
    import torch.distributed as dist

    from tracker.train import _mean_over_ranks

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results[rank] = _mean_over_ranks({"total": rank + 1.0, "joints": 10.0 * rank}, 2, torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def test_logged_losses_are_the_mean_over_the_ranks():
    import torch.multiprocessing as mp

    from tracker.train import _mean_over_ranks

    assert _mean_over_ranks({"total": 2.0}, 1, torch.device("cpu")) == {"total": 2.0}
    results = mp.Manager().dict()
    mp.spawn(_mean_on_rank, args=(29531, results), nprocs=2, join=True)
    # Both ranks log the same figures: rank 0's 1 and rank 1's 2 average to 1.5.
    assert results[0] == results[1] == {"joints": 5.0, "total": 1.5}


def test_a_damaged_checkpoint_or_run_directory_is_a_clear_error(tmp_path, capsys):
    from tracker.train import main as train_main

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(SystemExit):
        train_main(["--out", str(not_a_folder), "--recipe", "smoke"])
    assert "is a file, not a run directory" in capsys.readouterr().err

    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    assert train_main(["--out", str(out), "--recipe", "smoke"]) == 2
    err = capsys.readouterr().err
    assert f"cannot read {out / 'last.pt'}" in err and "--no-resume" in err and "Traceback" not in err
    torch.save({"step": 3}, out / "last.pt")
    assert train_main(["--out", str(out), "--recipe", "smoke"]) == 2
    assert "is not a training checkpoint" in capsys.readouterr().err


def test_no_resume_keeps_the_earlier_run_aside_and_a_finished_run_is_not_trained_again(tmp_path, monkeypatch, capsys):
    import tracker.train as train_module

    train(SMOKE, tmp_path, progress=False)
    first = torch.load(tmp_path / "last.pt", weights_only=True)
    capsys.readouterr()

    # Run again as it is: finished, so no data workers start and nothing is trained.
    def no_stream(*args, **kwargs):
        raise AssertionError("the data stream was started for a finished run")

    monkeypatch.setattr(train_module, "SyntheticStream", no_stream)
    summary = train(SMOKE, tmp_path, progress=False)
    assert summary["steps"] == SMOKE.steps and "already finished" in capsys.readouterr().out
    assert summary["seconds"] == pytest.approx(first["train_seconds"], abs=5.0)  # export time only
    assert len(_rows(tmp_path / "metrics.csv")) == SMOKE.steps
    monkeypatch.undo()

    train(SMOKE, tmp_path, resume=False, progress=False)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("earlier-")]
    assert len(aside) == 1 and "earlier run's files are kept in" in capsys.readouterr().out
    assert torch.load(aside[0] / "last.pt", weights_only=True)["step"] == SMOKE.steps
    assert (aside[0] / "metrics.csv").is_file() and (aside[0] / "export" / "dgn.pt").is_file()
    # The new run's log holds its own rows only.
    assert [int(r["step"]) for r in _rows(tmp_path / "metrics.csv")] == list(range(1, SMOKE.steps + 1))


def test_a_fresh_start_beside_a_run_without_its_checkpoint_keeps_that_run_aside(tmp_path, capsys):
    import dataclasses

    train(SMOKE, tmp_path, progress=False)
    first = load_network(tmp_path / "export")[1]["files"]
    (tmp_path / "last.pt").unlink()  # deleted to save space, say
    capsys.readouterr()
    train(dataclasses.replace(SMOKE, seed=1), tmp_path, progress=False)
    assert f"no checkpoint to resume in {tmp_path}: the earlier run's files are kept in" in capsys.readouterr().out
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("earlier-")]
    assert load_network(aside / "export")[1]["files"] == first and (aside / "metrics.csv").is_file()
    assert load_network(tmp_path / "export")[1]["files"] != first


def test_a_fresh_start_may_fine_tune_its_own_folders_export(tmp_path, capsys):
    train(SMOKE, tmp_path, progress=False)
    first = load_network(tmp_path / "export")[1]
    summary = train(SMOKE, tmp_path, resume=False, progress=False, init_from=tmp_path / "export")
    assert summary["initialised_from"]["samples_seen"] == first["training"]["samples_seen"]
    (aside,) = [p for p in tmp_path.iterdir() if p.name.startswith("earlier-")]
    assert load_network(aside / "export")[1]["files"] == first["files"]
    # On record where those weights are now, not where the new ones went.
    assert summary["initialised_from"]["path"] == str((aside / "export").absolute())
    assert json.loads((tmp_path / "config.json").read_text())["initialised_from"]["path"] == str((aside / "export").absolute())


def test_a_second_run_into_the_same_folder_at_once_is_refused(tmp_path, capsys):
    import tracker.train as train_module

    with train_module._run_lock(tmp_path, rank=0):
        with pytest.raises(train_module.RunInUse, match=f"another training run is writing into {tmp_path} \\(process {os.getpid()}\\)"):
            train(SMOKE, tmp_path, progress=False)
        assert train_module.main(["--out", str(tmp_path), "--recipe", "smoke"]) == 2
        assert "another training run is writing into" in capsys.readouterr().err
        assert not (tmp_path / "metrics.csv").exists()
    train(SMOKE, tmp_path, progress=False)  # free again


def test_a_resume_with_another_number_of_processes_says_the_batch_changes(tmp_path, capsys):
    import dataclasses

    train(SMOKE, tmp_path, progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["world_size"] == 1
    state["world_size"] = 2
    torch.save(state, tmp_path / "last.pt")
    capsys.readouterr()
    train(dataclasses.replace(SMOKE, steps=SMOKE.steps + 1), tmp_path, progress=False)
    b = SMOKE.batch_size
    assert f"resuming a run trained by 2 process(es) with 1: each step now takes {b} examples instead of {2 * b}" in capsys.readouterr().out


def test_an_export_of_other_weights_drops_the_model_card_and_evaluation_of_the_earlier(tmp_path, hand_model):
    from tracker.crop import CropFrame
    from tracker.weights import export_weights

    network = DualGridNet(hand_model.mesh_coords, SMOKE.network)
    export_weights(network, 0.26, tmp_path, crop_frame=CropFrame.RAY)
    (tmp_path / "MODEL_CARD.md").write_text("card")
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "synthetic_metrics.json").write_text("{}")
    export_weights(network, 0.26, tmp_path, crop_frame=CropFrame.RAY)  # the same weights again: still described
    assert (tmp_path / "MODEL_CARD.md").is_file() and (tmp_path / "eval" / "synthetic_metrics.json").is_file()
    with torch.no_grad():
        next(network.parameters()).add_(1.0)
    export_weights(network, 0.26, tmp_path, crop_frame=CropFrame.RAY)
    assert not (tmp_path / "MODEL_CARD.md").exists() and not (tmp_path / "eval").exists()


def test_a_resumed_fine_tune_keeps_its_refit_terms_and_its_earlier_settings_on_record(tmp_path):
    train(SMOKE, tmp_path / "first", progress=False)
    fine_tune = SMOKE.__class__(**{**SMOKE.__dict__, "refit_start_step": 0})  # as main sets it with --init-from
    train(fine_tune, tmp_path / "second", progress=False, init_from=tmp_path / "first" / "export")
    # Resumed without --init-from, with the recipe's refit delay and another learning rate.
    longer = SMOKE.__class__(**{**SMOKE.__dict__, "steps": SMOKE.steps + 2, "learning_rate": SMOKE.learning_rate / 2})
    train(longer, tmp_path / "second", progress=False)
    config = json.loads((tmp_path / "second" / "config.json").read_text())
    assert config["train"]["refit_start_step"] == 0 and config["resumed_at_step"] == SMOKE.steps
    assert [segment["train"]["learning_rate"] for segment in config["earlier_segments"]] == [SMOKE.learning_rate]
    assert config["train"]["learning_rate"] == SMOKE.learning_rate / 2


def test_learned_sampling_from_the_command_line_is_trained_and_exported(tmp_path, hand_model):
    from tracker.network import bilinear_sampling_matrix
    from tracker.train import main as train_main

    out = tmp_path / "run"
    assert train_main(["--out", str(out), "--recipe", "smoke", "--learned-sampling"]) == 0
    network, manifest = load_network(out / "export")
    assert manifest["network"]["learned_sampling"] is True
    assert json.loads((out / "config.json").read_text())["train"]["network"]["learned_sampling"] is True
    # Trained away from the bilinear start, on each vertex's own four nodes only.
    start = torch.as_tensor(bilinear_sampling_matrix(hand_model.mesh_coords, 16).T.copy())
    support = torch.as_tensor(bilinear_sampling_matrix(hand_model.mesh_coords, 16, support=True).T.copy()) > 0
    trained = network.grid_to_vertices.detach()
    assert not torch.equal(trained[support], start[support]) and not trained[~support].any()

    # Fine-tuned without the flag, weights trained with it keep it (there is no way back).
    again = tmp_path / "again"
    assert train_main(["--out", str(again), "--recipe", "smoke", "--init-from", str(out / "export"), "--steps", "1"]) == 0
    assert load_network(again / "export")[1]["network"]["learned_sampling"] is True


def test_a_checkpoint_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import tracker.train as train_module

    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half")  # what a full disk leaves behind
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(train_module.torch, "save", full_disk)
    out = tmp_path / "run"
    assert train_module.main(["--out", str(out), "--recipe", "smoke"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the checkpoint {out / 'last.pt'}" in err and "Traceback" not in err
    assert not (out / "last.pt").exists() and not (out / "last.pt.partial").exists()


def test_a_fine_tune_narrows_the_weights_it_starts_from_and_says_so(tmp_path, capsys, hand_model):
    """Narrower widths on the command line with --init-from: the run starts from the weights'
    most used channels, and its export and record carry the new widths."""
    from tracker.crop import CropFrame
    from tracker.train import main as train_main
    from tracker.weights import export_weights

    wide, _ = load_network("weights")
    export_weights(wide, 0.26, tmp_path / "wide", crop_frame=CropFrame.RAY)
    capsys.readouterr()
    args = ["--out", str(tmp_path / "narrow"), "--recipe", "smoke", "--init-from", str(tmp_path / "wide"), "--image-block-channels", "32", "--mesh-channels", "48"]
    assert train_main(args) == 0
    out = capsys.readouterr().out
    assert "narrowed (image_block_channels 64 -> 32, mesh_channels 64 -> 48, mesh_block_channels 64 -> 48)" in out
    manifest = json.loads((tmp_path / "narrow" / "export" / "dgn.json").read_text())
    assert manifest["network"]["image_block_channels"] == 32 and manifest["network"]["mesh_channels"] == 48
    record = json.loads((tmp_path / "narrow" / "config.json").read_text())["initialised_from"]
    assert record["narrowed_from"]["image_block_channels"] == 64 and record["narrowed_from"]["mesh_channels"] == 64
    # Resumed without the flags or --init-from, the run keeps its widths.
    assert train_main(["--out", str(tmp_path / "narrow"), "--recipe", "smoke", "--steps", "6"]) == 0
    resumed = json.loads((tmp_path / "narrow" / "export" / "dgn.json").read_text())
    assert resumed["network"] == manifest["network"] and resumed["training"]["steps"] == 6
    # Fine-tuned again, the narrowed weights keep their widths without the flags.
    assert train_main(["--out", str(tmp_path / "again"), "--recipe", "smoke", "--init-from", str(tmp_path / "narrow" / "export")]) == 0
    assert "narrowed" not in capsys.readouterr().out
    assert json.loads((tmp_path / "again" / "export" / "dgn.json").read_text())["network"] == manifest["network"]
    # Wider than the weights: a clear refusal, nothing trained.
    assert train_main(["--out", str(tmp_path / "wider"), "--recipe", "smoke", "--init-from", str(tmp_path / "narrow" / "export"), "--mesh-channels", "64"]) == 2
    assert "mesh_channels 64 is wider than the 48 of the weights started from" in capsys.readouterr().err
    assert not (tmp_path / "wider" / "export").exists()
    with pytest.raises(SystemExit):
        train_main(["--out", str(tmp_path / "bad"), "--recipe", "smoke", "--image-block-channels", "0"])


class _Counting(torch.utils.data.IterableDataset):
    def __iter__(self):
        count = 0
        while True:
            yield torch.tensor([count])
            count += 1


def _die_by_signal_when_exiting(worker_id: int) -> None:
    """A data worker that ignores stop signals, as training's do, and dies by a signal when
    it exits, as one did (SIGABRT) at the end of a run on a GPU machine (spawned: imported
    from here). SIGUSR1 rather than an abort: its default action dumps no core, and a core
    dump (a core_pattern that pipes to a helper ignores RLIMIT_CORE) holds the process."""
    import multiprocessing.util

    from tracker.train import _ignore_interrupts

    _ignore_interrupts(worker_id)
    multiprocessing.util.Finalize(None, _end_by_sigusr1, exitpriority=100)


def _end_by_sigusr1() -> None:
    # Its default action: a native library in the worker handles SIGUSR1 with an abort.
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGUSR1)
    multiprocessing.util.Finalize(None, os.abort, exitpriority=100)


def _still_running(process) -> str:
    """'' once the process has ended, else its pid and kernel state, for the failure message."""
    from tracker.train import _worker_ended

    if _worker_ended(process):
        return ""
    try:
        with open(f"/proc/{process.pid}/stat") as stat:
            return f"pid {process.pid} in state {stat.read().rpartition(')')[2].split()[0]}"
    except FileNotFoundError:
        return f"pid {process.pid}, with no /proc entry"


def test_a_worker_reaped_elsewhere_counts_as_ended_and_is_not_killed_again():
    from tracker.train import _worker_ended

    worker = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(30,))
    worker.start()
    try:
        assert not _worker_ended(worker)
        os.kill(worker.pid, signal.SIGKILL)
        os.waitpid(worker.pid, 0)  # reaped behind multiprocessing's back
        assert worker.is_alive()  # waitpid's ECHILD, read as "not started yet"
        assert _worker_ended(worker)  # its sentinel says otherwise
    finally:
        if not _worker_ended(worker):
            worker.kill()


def test_a_data_worker_dying_while_the_loader_stops_does_not_fail_the_run(capsys):
    from torch.utils.data import DataLoader

    from tracker.train import _end_data_workers

    loader = DataLoader(
        _Counting(), batch_size=2, num_workers=2, persistent_workers=True,
        multiprocessing_context="spawn", worker_init_fn=_die_by_signal_when_exiting,
    )
    next(iter(loader))
    iterator = loader._iterator
    workers = list(iterator._workers)
    shutdown = iterator._shutdown_workers

    def shutdown_as_on_the_gpu_machine():
        # Whether torch's SIGCHLD handler sees the death while it joins is a race; there it
        # did, and raised this from the join.
        iterator._shutdown_workers = shutdown  # once: the iterator's __del__ calls it again
        shutdown()  # raises this itself when torch's handler sees the death in time
        raise RuntimeError(f"DataLoader worker (pid {workers[0].pid}) is killed by signal: User defined signal 1. ")

    iterator._shutdown_workers = shutdown_as_on_the_gpu_machine
    _end_data_workers(loader)  # the trained network is sound; stopping must not raise
    assert not [state for state in map(_still_running, workers) if state]
    assert any(worker.exitcode == -signal.SIGUSR1 for worker in workers)  # the death did happen
    assert "ended abnormally" in capsys.readouterr().err


def test_the_gpu_recipe_keeps_to_its_time_budget_unless_told_otherwise(tmp_path, monkeypatch, capsys):
    import tracker.train as train_module

    budgets = []

    rendered = [1]

    def fake_train(config, out_dir, resume, max_seconds, init_from, command=None):
        budgets.append(max_seconds)
        # Ended by the budget, with each rendered example trained on four times.
        return {"steps": 1, "samples_seen": rendered[0], "examples_trained": 4, "seconds": max_seconds or 1.0, "skipped_steps": 0, "max_seconds": max_seconds}

    monkeypatch.setattr(train_module, "train", fake_train)
    run = tmp_path / "run"
    assert train_module.main(["--out", str(run), "--recipe", "gpu", "--device", "cpu"]) == 0
    assert budgets[-1] == 60 * train_module.RECIPE_MINUTES["gpu"] <= 10 * 60  # the recipe's promise
    out = capsys.readouterr().out
    assert "the gpu recipe trains for 9 minutes" in out and "the time budget (9 min) ended the run before step" in out
    assert "trained 1 steps on 4 examples (1 rendered, the rest drawn again from a replay memory)" in out
    rendered[0] = 22  # a short run: the loader filled the memory past what was trained
    assert train_module.main(["--out", str(run), "--recipe", "gpu", "--device", "cpu"]) == 0
    assert "trained 1 steps on 4 examples (22 rendered: the replay memory is filled ahead of the training)" in capsys.readouterr().out
    assert train_module.main(["--out", str(run), "--recipe", "gpu", "--device", "cpu", "--max-minutes", "4"]) == 0
    assert budgets[-1] == 240
    run.mkdir()
    (run / "last.pt").write_bytes(b"")  # a run to resume keeps the budget it started with
    assert train_module.main(["--out", str(run), "--recipe", "gpu", "--device", "cpu"]) == 0
    assert budgets[-1] is None
    assert train_module.main(["--out", str(run), "--recipe", "cpu"]) == 0
    assert budgets[-1] is None  # the cpu recipe has no budget of its own


def test_a_run_resumed_with_init_from_goes_on_with_its_own_network_and_records_what_trained_it(tmp_path, capsys, monkeypatch):
    from tracker.train import main as train_main

    learned = tmp_path / "learned"
    assert train_main(["--out", str(learned), "--recipe", "smoke", "--learned-sampling", "--steps", "1"]) == 0
    run = tmp_path / "run"
    assert train_main(["--out", str(run), "--recipe", "smoke", "--steps", "2"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["command"] == ["python", "-m", "tracker.train", "--out", str(run), "--recipe", "smoke", "--steps", "2"]
    assert "git_commit" in config["machine"]
    capsys.readouterr()
    # Resumed with --init-from weights of another kind (learned sampling): it is not used,
    # and the run goes on as it was rather than being refused as another network.
    assert train_main(["--out", str(run), "--recipe", "smoke", "--steps", "4", "--init-from", str(learned / "export")]) == 0
    out = capsys.readouterr().out
    assert "is not used" in out and "learned sampling" not in out
    assert json.loads((run / "config.json").read_text())["train"]["network"]["learned_sampling"] is False
    # A fine-tune records where it started from, wherever the command ran.
    monkeypatch.chdir(tmp_path)
    assert train_main(["--out", "again", "--recipe", "smoke", "--steps", "1", "--init-from", "run/export"]) == 0
    assert json.loads((tmp_path / "again" / "config.json").read_text())["initialised_from"]["path"] == str(run / "export")
    # Resumed with its own command, it trains the refit terms from its first step as before:
    # no warning that they never start.
    capsys.readouterr()
    assert train_main(["--out", "again", "--recipe", "smoke", "--steps", "2", "--init-from", "run/export"]) == 0  # smoke: refit from step 3
    assert "refit terms start" not in capsys.readouterr().err


def test_a_training_run_given_for_weights_points_to_its_export(tmp_path):
    from tracker.weights import load_manifest

    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "export" / "dgn.json").write_text("{}")
    with pytest.raises(WeightsError, match="it is a training run, whose exported weights are in .*export"):
        load_manifest(tmp_path / "run")


def test_a_replay_setting_without_a_replay_memory_is_refused(tmp_path, capsys):
    from tracker.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--recipe", "smoke", "--replay-max-uses", "2"])
    assert exit_info.value.code == 2 and "give --replay-examples N too" in capsys.readouterr().err


def test_after_a_hang_up_the_terminal_is_not_written_to_but_a_file_still_is(tmp_path):
    from tracker.train import terminal_gone

    controller, terminal = os.openpty()
    log = os.open(tmp_path / "log.txt", os.O_WRONLY | os.O_CREAT)
    saved = os.dup(2)
    try:
        os.dup2(terminal, 2)
        terminal_gone((2, log))
        assert os.path.samestat(os.fstat(2), os.stat(os.devnull))  # the terminal: let go
        assert os.path.samestat(os.fstat(log), os.stat(tmp_path / "log.txt"))  # a file: kept
    finally:
        os.dup2(saved, 2)
        for fd in (saved, controller, terminal, log):
            os.close(fd)
