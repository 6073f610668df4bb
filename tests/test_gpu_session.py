"""The GPU job script, run tiny on the CPU: every stage runs and leaves its result in $OUT.

A GPU machine is lent rarely and briefly, so the script must work the first time there;
this checks its wiring (stage order, arguments, file names, packing) on any machine.
"""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_session_smoke_run_brings_back_every_result(tmp_path):
    out = tmp_path / "out"
    env = {
        **os.environ,
        "GPU_SESSION_SMOKE": "1",
        "OUT": str(out),
        "GPU_SESSION_RUN": str(tmp_path / "run"),
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_session.sh"), "400"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (out / "session.log").read_text()
    runs = {"ahead3": (3, False), "ahead0": (0, False), "ahead3_replayed_network": (3, True)}
    for stage in ("backend tests", "network speed", *(f"pipeline ({name})" for name in runs), "training", "packing"):
        assert f"=== {stage}" in log
    assert "failed" not in log
    speed = json.loads((out / "network_speed_gpu.json").read_text())
    assert {"onnxruntime", "torch"} <= set(speed["backends"])
    for name, (ahead, replayed) in runs.items():
        pipeline = json.loads((out / f"pipeline_speed_gpu_{name}.json").read_text())
        assert pipeline["frames"] == 120 and pipeline["tracker_config"]["segment_ahead"] == ahead
        assert pipeline["network"].startswith("replayed") == replayed
    with tarfile.open(out / "gpu_training.tar.gz") as archive:
        names = set(archive.getnames())
        summary = json.load(archive.extractfile("summary.json"))
    assert {"export/dgn.pt", "export/dgn.onnx", "export/dgn.json", "metrics.csv", "summary.json"} <= names
    assert summary["examples_trained"] == 4 * 2 and summary["samples_seen"] >= 2  # smoke: 4 steps of 2, replayed
    # What the device tool brings back: at most 8 files, each under 16 MiB.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files)
