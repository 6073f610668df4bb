import json

import cv2
import numpy as np
import pytest

from tracker.evaluate import main as evaluate_main, surface_samples
from tracker.train import RECIPES, train



@pytest.fixture(scope="module")
def smoke_weights(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(RECIPES["smoke"], run, progress=False)
    return run / "export"


def test_evaluation_writes_metrics_plots_and_a_model_card(smoke_weights, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate_main(["--weights", str(smoke_weights), "--frames", "3", "--out", str(out)]) == 0
    metrics = json.loads((out / "synthetic_metrics.json").read_text())
    assert metrics["frames"] == 3 and len(metrics["per_joint_error_mm"]) == 21
    curve = metrics["success_curve"]
    assert curve["threshold_mm"][0] == 0 and curve["threshold_mm"][-1] == 80
    assert all(a <= b for a, b in zip(curve["fraction_of_frames"], curve["fraction_of_frames"][1:]))
    real = json.loads((out / "real_fitting.json").read_text())
    assert real["frames"] == 19 and real["hands_found"] >= 1
    assert cv2.imread(str(out / "success_curve.png")) is not None
    assert cv2.imread(str(out / "real_overlay.png")) is not None
    card = (smoke_weights / "MODEL_CARD.md").read_text()
    assert "mean joint error after refit" in card and "python -m tracker.evaluate --frames 3" in card
    assert "held-out synthetic (3 frames)" in capsys.readouterr().out


def test_surface_samples_cover_the_triangles():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    points = surface_samples(vertices, np.array([[0, 1, 2]]), per_edge=4)
    assert len(points) == 15 and np.allclose(points[:, 2], 0)
    assert np.all(points[:, :2].sum(1) <= 1 + 1e-9)
