"""The GPU job script, run tiny on the CPU: every stage runs and leaves its result in $OUT.

GPU time is scarce and usually rented by the minute, so the script must work the first
time there; this checks its wiring (stage order, arguments, file names, packing) on any
machine.
"""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _smoke_env(tmp_path: Path) -> dict:
    return {
        **os.environ,
        "GPU_SESSION_SMOKE": "1",
        "OUT": str(tmp_path / "out"),
        "GPU_SESSION_RUN": str(tmp_path / "run"),
        "PYTHON": sys.executable,
    }


def test_gpu_session_smoke_run_brings_back_every_result(tmp_path):
    out = tmp_path / "out"
    env = _smoke_env(tmp_path)
    # What an earlier call left on the same machine must not come back as this call's result.
    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "export" / "stale.txt").write_text("from an earlier call")
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_session.sh"), "400"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (out / "session.log").read_text()
    runs = {"ahead3": (3, False), "ahead0": (0, False), "ahead3_replayed_network": (3, True)}
    for stage in ("compile", "backend tests", "network speed", *(f"pipeline ({name})" for name in runs), "training", "packing"):
        assert f"=== {stage}" in log
    assert "failed" not in log
    speed = json.loads((out / "network_speed_gpu.json").read_text())
    assert {"onnxruntime", "torch"} <= set(speed["backends"])
    for name, (ahead, replayed) in runs.items():
        pipeline = json.loads((out / f"pipeline_speed_gpu_{name}.json").read_text())
        assert pipeline["frames"] == 60 and pipeline["tracker_config"]["segment_ahead"] == ahead
        assert pipeline["network"].startswith("replayed") == replayed
    with tarfile.open(out / "gpu_training.tar.gz") as archive:
        names = set(archive.getnames())
        summary = json.load(archive.extractfile("summary.json"))
    assert {"export/dgn.pt", "export/dgn.onnx", "export/dgn.json", "metrics.csv", "summary.json"} <= names
    assert "export/stale.txt" not in names
    assert summary["examples_trained"] == 4 * 2 and summary["samples_seen"] >= 2  # smoke: 4 steps of 2, replayed
    # Small enough to copy back from a remote machine: at most 8 files, each under 16 MiB.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files)


def test_gpu_session_measurements_give_way_to_the_training_when_time_is_short(tmp_path):
    # 40 s: less than the smoke training's start-up and export (20 s) plus its reserve (30 s),
    # so every measurement is skipped at once rather than run into the training's time.
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_session.sh"), "40"],
        env=_smoke_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    log = (tmp_path / "out" / "session.log").read_text()
    for stage in ("compile", "backend tests", "network speed", "pipeline (ahead3)", "pipeline (ahead0)", "pipeline (ahead3_replayed_network)"):
        assert f"!!! {stage} skipped: no time left before the training" in log
    assert "training skipped" in log
    assert not list((tmp_path / "out").glob("*.json"))


def test_gpu_pipeline_smoke_run_brings_back_every_result(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_pipeline.sh"), "2"],
        env=_smoke_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "failed" not in (out / "session.log").read_text()
    for variant in ("", "_replayed_network", "_read_ahead1", "_no_refine", "_side_check_every0"):
        pipeline = json.loads((out / f"pipeline_speed_gpu_ahead2{variant}.json").read_text())
        assert pipeline["frames"] == 60 and pipeline["tracker_config"]["segment_ahead"] == 2
        assert pipeline["network"].startswith("replayed") == (variant == "_replayed_network")
        # The smoke run's CPU backend reads with a capture thread by default too, and runs
        # one network at a time; on the GPU the default is the tracker thread reading, and
        # this stage compares it with the other way.
        assert pipeline["read_ahead"] == 1 and ("--read-ahead" in pipeline["command"]) == (variant == "_read_ahead1")
        assert pipeline["tracker_config"]["refine"] == (variant != "_no_refine")
        assert ("refine" in pipeline["stage_median_ms"]) == (variant != "_no_refine")
        assert pipeline["pipelined_networks"] is False and pipeline["tracker_thread_cpu_ms_per_frame"] > 0
        assert pipeline["tracker_config"]["side_check_every"] == (0 if variant == "_side_check_every0" else 15)
    assert "onnxruntime" in json.loads((out / "network_speed_gpu.json").read_text())["backends"]
    live = json.loads((out / "pipeline_speed_gpu_paced90.json").read_text())
    assert live["pace_frames_per_second"] == 90.0 and live["frames"] + live["dropped"] == 60
    assert live["tracker_config"]["segment_ahead"] == 0
    profile = (out / "session.log").read_text().split("=== where the tracker thread spent its time (2 workers)")[1]
    assert "tottime" in profile and "(complete)" in profile  # the tracker's per-frame step is in it
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files)


def test_gpu_session_refuses_weights_to_fine_tune_that_are_not_there(tmp_path):
    # Found out at the start, not after the measurements, minutes of a rented GPU later.
    env = {**_smoke_env(tmp_path), "GPU_SESSION_INIT_FROM": str(tmp_path / "nowhere")}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_session.sh"), "400"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no exported weights there" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_gpu_scripts_explain_themselves_and_refuse_a_bad_argument_before_any_work(tmp_path):
    env = _smoke_env(tmp_path)
    for script, first_line in (("gpu_session.sh", "The whole GPU job"), ("gpu_pipeline.sh", "The GPU speed checks")):
        path = str(REPO / "benchmarks" / script)
        shown = subprocess.run(["bash", path, "--help"], env=env, capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0 and shown.stdout.startswith(first_line) and "OUT=/some/dir" in shown.stdout
        for bad in (["-x"], ["1.5"], ["3", "4"], ["010"]):  # a leading 0 would be read as octal
            done = subprocess.run(["bash", path, *bad], env=env, capture_output=True, text=True, timeout=30)
            assert done.returncode == 2 and done.stderr.startswith("usage:"), (script, bad, done.stderr)
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()
