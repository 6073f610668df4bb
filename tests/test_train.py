import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tracker.train import RECIPES, learning_rate, train
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

    # Resume: a longer run continues from the checkpoint instead of starting over.
    longer = SMOKE.__class__(**{**SMOKE.__dict__, "steps": SMOKE.steps + 2})
    train(longer, tmp_path, progress=False)
    rows = _rows(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows][-2:] == [SMOKE.steps + 1, SMOKE.steps + 2]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["samples_seen"] == (SMOKE.steps + 2) * SMOKE.batch_size

    network, manifest = load_network(tmp_path / "export")
    assert manifest["training"]["samples_seen"] == (SMOKE.steps + 2) * SMOKE.batch_size
    assert network(torch.zeros(1, 1, 64, 64))["vertices"].shape[-1] == 3


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


def test_learning_rate_schedule():
    config = RECIPES["cpu"]
    assert learning_rate(config, 0) < learning_rate(config, config.warmup_steps - 1)
    assert learning_rate(config, config.warmup_steps) == pytest.approx(config.learning_rate)
    assert learning_rate(config, config.steps) == pytest.approx(0.0, abs=1e-12)


def test_two_process_ddp_run_with_gloo(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "tracker.train", "--out", str(tmp_path), "--recipe", "smoke", "--steps", "3", "--device", "cpu"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["world_size"] == 2
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    # Two ranks, each with its own batch: the global sample count doubles.
    assert state["samples_seen"] == 3 * SMOKE.batch_size * 2
    assert (tmp_path / "export" / "dgn.onnx").is_file()
