import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tracker.crop import make_crop
from tracker.evaluate import crop_pixels, keypoints_in_image, main as evaluate_main, surface_samples
from tracker.types import CameraIntrinsics
from tracker.train import RECIPES, train



@pytest.fixture(scope="module")
def smoke_weights(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(RECIPES["smoke"], run, progress=False)
    return run / "export"


def test_evaluation_writes_metrics_plots_and_a_model_card(smoke_weights, tmp_path, capsys):
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(smoke_weights, weights)
    out = weights / "eval"  # the default: the weights' own results, which the card cites
    assert evaluate_main(["--weights", str(weights), "--frames", "3"]) == 0
    metrics = json.loads((out / "synthetic_metrics.json").read_text())
    assert metrics["frames"] == 3 and len(metrics["per_joint_error_mm"]) == 21
    assert metrics["crop_frame"] == "ray"  # the smoke weights were trained in the default frame
    curve = metrics["success_curve"]
    assert curve["threshold_mm"][0] == 0 and curve["threshold_mm"][-1] == 80
    assert all(a <= b for a, b in zip(curve["fraction_of_frames"], curve["fraction_of_frames"][1:]))
    real = json.loads((out / "real_fitting.json").read_text())
    assert real["frames"] == 19 and real["hands_found"] >= 1
    assert cv2.imread(str(out / "success_curve.png")) is not None
    assert cv2.imread(str(out / "real_overlay.png")) is not None
    worst = metrics["worst_frames"]
    assert len(worst) == 3 and sorted(f["frame"] for f in worst) == [0, 1, 2]
    assert [f["mean_joint_error_mm"] for f in worst] == sorted((f["mean_joint_error_mm"] for f in worst), reverse=True)
    assert all(f["max_joint_error_mm"] >= f["mean_joint_error_mm"] for f in worst)
    assert all(0.0 < f["visible_vertex_fraction"] < 1.0 for f in worst)  # never all, never none
    assert sum(b["frames"] for b in metrics["by_off_axis_angle"]) == 3
    split = metrics["whole_hand_in_image"]
    parts = [(split["fraction_of_frames"], split["mean_joint_error_mm"]), (1 - split["fraction_of_frames"], split["mean_joint_error_mm_partly_outside"])]
    # The two groups' means, weighted by their shares, give the overall mean (float32 sums).
    assert sum(w * e for w, e in parts if e is not None) == pytest.approx(metrics["mean_joint_error_mm"], rel=1e-5)
    segmented = metrics["segmentation_centred"]
    # Cropped where the segmentation finds the hand: errors of the frames it finds, beside
    # the same frames' errors with the centroid crop.
    assert 0 < segmented["frames_with_a_hand_found"] <= 3 and segmented["mean_joint_error_mm"] > 0
    assert segmented["median_centre_offset_mm"] >= 0 and segmented["mean_joint_error_mm_centroid_crop_same_frames"] > 0
    sheet = cv2.imread(str(out / "synthetic_worst.png"))
    assert sheet is not None and sheet.shape[1] == 3 * 2 * 200  # three frames, truth | estimate
    card = (weights / "MODEL_CARD.md").read_text()
    assert "eval/synthetic_worst.png" in card and "where a run's tracker centres a track's first crop" in card
    assert "eval/training_curve.png" not in card  # an export keeps no training logs beside it
    assert "mean joint error after refit" in card and f"python -m tracker.evaluate --weights {weights} --frames 3" in card
    assert metrics["training_overlap"]["frames_that_are_training_samples"] == []
    assert metrics["scenes_differ_from_training"] == []  # trained on today's scenes
    # Each results file says what made it: command, weights, data settings, machine and commit.
    assert metrics["command"][:3] == ["python", "-m", "tracker.evaluate"] and "--frames" in metrics["command"]
    assert metrics["weights"]["files"] == json.loads((weights / "dgn.json").read_text())["files"]
    assert metrics["weights"]["files_read"] == ["dgn.onnx"]  # no 8-bit network here; dgn.pt is not read
    assert metrics["example_config"]["crop_frame"] == "ray" and "scene" in metrics["example_config"]
    assert "git_commit" in metrics["machine"] and real["machine"] == metrics["machine"] and real["real_dir"]
    assert "None of these frames is a training sample" in card
    # Cut as the tracker cuts its crops, and said so.
    assert metrics["background_plane"]["clearance_m"] > 0 and "a wall or table right behind the hand is cleared" in card
    stdout = capsys.readouterr().out
    assert "held-out synthetic (3 frames)" in stdout and "no 8-bit network" in stdout
    assert "8-bit network" not in card and not (out / "synthetic_metrics_int8.json").exists()
    # A quicker run into the same folder would put its figures in the card in place of these.
    card = (weights / "MODEL_CARD.md").read_bytes()
    with pytest.raises(SystemExit):
        evaluate_main(["--weights", str(weights), "--frames", "2"])
    assert "holds the figures of 3 frames, which the model card cites" in capsys.readouterr().err
    assert (weights / "MODEL_CARD.md").read_bytes() == card and json.loads((out / "synthetic_metrics.json").read_text())["frames"] == 3
    # Nor may another weights' check go into this folder's eval/.
    with pytest.raises(SystemExit):
        evaluate_main(["--weights", str(Path(__file__).resolve().parent.parent / "weights"), "--frames", "2", "--out", str(out), "--no-model-card"])
    assert f"holds the evaluation of the weights in {weights}" in capsys.readouterr().err


def test_evaluation_judges_the_8_bit_network_on_the_same_frames(smoke_weights, tmp_path, capsys):
    import shutil

    from tracker.quantize import quantize_weights
    from tracker.weights import ONNX_INT8

    weights = tmp_path / "weights"
    shutil.copytree(smoke_weights, weights)
    quantize_weights(weights, samples=2, progress=False)
    out = weights / "eval"
    assert evaluate_main(["--weights", str(weights), "--frames", "3"]) == 0
    float_metrics = json.loads((out / "synthetic_metrics.json").read_text())
    int8 = json.loads((out / "synthetic_metrics_int8.json").read_text())
    assert float_metrics["backend"] == "onnxruntime" and int8["backend"] == "onnxruntime-int8"
    assert int8["frames"] == 3 and int8["quantization"]["calibration_samples"] == 2
    assert int8["mean_joint_error_mm"] != float_metrics["mean_joint_error_mm"]  # another network ran
    card = (weights / "MODEL_CARD.md").read_text()
    assert f"joints {int8['mean_joint_error_mm']:.2f} mm" in card and "on the same 3 frames" in card
    assert "kept in 8 bits through the hourglasses' additions, ReLUs and upsamplings" in card
    assert "8-bit network (onnxruntime-int8), same frames" in capsys.readouterr().out
    # Into a folder of its own it leaves the card, which cites the float run, as it was.
    card = (weights / "MODEL_CARD.md").read_bytes()
    assert evaluate_main(["--weights", str(weights), "--backend", "onnxruntime-int8", "--frames", "2", "--out", str(tmp_path / "int8")]) == 0
    assert (weights / "MODEL_CARD.md").read_bytes() == card and "no model card written" in capsys.readouterr().out
    # Listed but damaged: the evaluation stops before it starts, and says which file.
    (weights / ONNX_INT8).write_bytes(b"truncated")
    assert evaluate_main(["--weights", str(weights), "--frames", "2", "--out", str(tmp_path / "eval2")]) == 2
    assert "dgn_int8.onnx is corrupt" in capsys.readouterr().err
    # The 8-bit network alone only into a folder of its own.
    with pytest.raises(SystemExit):
        evaluate_main(["--weights", str(weights), "--backend", "onnxruntime-int8"])
    assert "--backend onnxruntime-int8 needs --out elsewhere" in capsys.readouterr().err


def test_surface_samples_cover_the_triangles():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    points = surface_samples(vertices, np.array([[0, 1, 2]]), per_edge=4)
    assert len(points) == 15 and np.allclose(points[:, 2], 0)
    assert np.all(points[:, :2].sum(1) <= 1 + 1e-9)


def test_crop_pixels_follow_the_crop_window():
    intrinsics = CameraIntrinsics(width=640, height=480, fx=380.0, fy=385.0, cx=321.0, cy=238.0)
    centre = np.array([0.05, -0.03, 0.45])
    crop = make_crop(np.full((480, 640), 0.45, np.float32), intrinsics, centre, 0.26, crop_size=64)
    # Golden values: the centre is the middle of the 64-pixel window, and a point half a cube
    # to the right at the centre's depth is on the window's right edge.
    np.testing.assert_allclose(crop_pixels(np.zeros((1, 3)), centre, 0.26, 64), [[31.5, 31.5]], atol=1e-9)
    np.testing.assert_allclose(crop_pixels(np.array([[1.0, 0.0, 0.0]]), centre, 0.26, 64), [[63.5, 31.5]], atol=1e-9)
    # Anywhere in the cube: the same pixel as projecting with the intrinsics and undoing the
    # crop's image_from_crop (only float64 round-off apart).
    points = np.random.default_rng(0).uniform(-1, 1, (50, 3))
    camera = points * 0.13 + centre
    uv = np.stack([intrinsics.fx * camera[:, 0] / camera[:, 2] + intrinsics.cx, intrinsics.fy * camera[:, 1] / camera[:, 2] + intrinsics.cy, np.ones(50)])
    expected = (np.linalg.inv(crop.image_from_crop) @ uv)[:2].T
    np.testing.assert_allclose(crop_pixels(points, centre, 0.26, 64), expected, atol=1e-9)


def test_keypoints_in_image_counts_the_whole_pixel_area():
    intrinsics = CameraIntrinsics(width=100, height=80, fx=100.0, fy=100.0, cx=49.5, cy=39.5)
    # At z = 1 m, x = (u - cx) / fx: u = 99.5 is the right edge of the last pixel column.
    assert keypoints_in_image(np.array([[0.0, 0.0, 1.0], [0.5, 0.4, 1.0]]), intrinsics)
    assert not keypoints_in_image(np.array([[0.0, 0.0, 1.0], [0.51, 0.0, 1.0]]), intrinsics)
    assert not keypoints_in_image(np.array([[0.0, -0.41, 1.0]]), intrinsics)


def test_bad_arguments_get_clear_errors_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        evaluate_main(["--frames", "0"])
    assert "--frames must be at least 1" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert evaluate_main(["--weights", str(missing), "--frames", "2"]) == 2
    assert "no network weights" in capsys.readouterr().err
    assert not missing.exists()  # nothing written for a failed start
    no_intrinsics = tmp_path / "pngs"
    no_intrinsics.mkdir()
    cv2.imwrite(str(no_intrinsics / "0.png"), np.zeros((4, 4), np.uint16))
    assert evaluate_main(["--real-dir", str(no_intrinsics), "--frames", "2", "--out", str(tmp_path / "eval")]) == 2
    assert "no intrinsics.json" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    assert evaluate_main(["--frames", "2", "--out", str(a_file), "--no-model-card"]) == 2
    assert "cannot write the results into" in capsys.readouterr().err and a_file.read_text() == "not a folder"
    with pytest.raises(SystemExit):
        evaluate_main(["--crop-frame", "ray", "--frames", "2"])
    assert "--crop-frame needs --out elsewhere" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_main(["--keep-planes", "--frames", "2"])
    assert "--keep-planes needs --out elsewhere" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_main(["--stream-seed", "7", "--frames", "2"])
    assert "--stream-seed needs --out elsewhere" in capsys.readouterr().err
    for stream, what in (
        ("1", "the network's training samples"), ("5", "the 8-bit network's calibration crops and the hand-presence classifier's training"),
        ("3", "side classifier"), ("6", "the hand-presence classifier's held-out scenes"),
    ):
        with pytest.raises(SystemExit):
            evaluate_main(["--stream-seed", stream, "--frames", "2", "--out", str(tmp_path / "eval")])
        assert what in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_main(["--stream-seed", "-1", "--frames", "2", "--out", str(tmp_path / "eval")])
    assert "--stream-seed must be 0 or more" in capsys.readouterr().err
    for args in (["--no-model-card"], ["--backend", "onnxruntime-int8"]):
        # The card would cite figures no longer in WEIGHTS/eval, named or not.
        from tracker.weights import WEIGHTS_DIR

        for out in ([], ["--out", str(WEIGHTS_DIR / "eval")]):
            with pytest.raises(SystemExit):
                evaluate_main([*args, *out, "--frames", "2"])
            assert "needs --out elsewhere than WEIGHTS/eval" in capsys.readouterr().err


def test_the_model_card_quotes_only_speeds_measured_with_its_weights(tmp_path):
    from tracker.evaluate import network_speeds

    manifest = {"files": {"dgn.onnx": "aa", "dgn_int8.onnx": "bb"}}
    results = {
        "network_speed_cpu": {"onnx_sha256": "aa", "onnx_int8_sha256": "bb"},
        "network_speed_cpu_stale_int8": {"onnx_sha256": "aa", "onnx_int8_sha256": "old"},
        "network_speed_cpu_previous_weights": {"onnx_sha256": "old", "onnx_int8_sha256": "older"},
    }
    for name, weights in results.items():
        backends = {"onnxruntime": {"median_ms": 6.0}, "onnxruntime-int8": {"median_ms": 4.0}}
        (tmp_path / f"{name}.json").write_text(json.dumps({"weights": weights, "backends": backends, "refit": {"median_ms": 0.07}}))
    # A set measured together (benchmarks/cpu_headline.sh) in a folder of its own, its files
    # named as the top level's are: told apart by the folder.
    (tmp_path / "headline").mkdir()
    (tmp_path / "headline" / "network_speed_cpu.json").write_text(
        json.dumps({"weights": results["network_speed_cpu"], "backends": {"onnxruntime": {"median_ms": 5.0}}})
    )
    assert network_speeds(manifest, tmp_path) == {
        "headline/network_speed_cpu": {"onnxruntime": 5.0},
        "network_speed_cpu": {"onnxruntime": 6.0, "onnxruntime-int8": 4.0, "refit_numba": 0.07},
        "network_speed_cpu_stale_int8": {"onnxruntime": 6.0, "refit_numba": 0.07},
    }
    assert network_speeds({"files": {"dgn.onnx": "new"}}, tmp_path) is None


def test_a_real_hand_without_hand_pixels_is_left_out_of_the_fitting_error(hand_model):
    from types import SimpleNamespace

    from tracker.evaluate import DEFAULT_REAL_DIR, evaluate_real

    class NoHandPixels:
        """A network that finds no hand pixel in any crop."""

        def __init__(self):
            self.hand_model = hand_model

        def run(self, crop):
            vertices = hand_model.template_vertices + np.array([0.0, 0.0, 0.4], np.float32)
            return SimpleNamespace(hand_probability=np.zeros(crop.depth.shape, np.float32), refined_vertices=vertices, joints=vertices[:21]), {}

    summary, rows = evaluate_real(NoHandPixels(), DEFAULT_REAL_DIR, 0.26)
    assert summary["hands_found"] == len(rows) > 0 and summary["hands_without_points"] == summary["hands_found"]
    assert summary["median_fitting_error_mm"] is None
    json.dumps(summary, allow_nan=False)  # no NaN: strict JSON


def test_real_left_hands_are_fitted_as_left_hands(tmp_path):
    # Real frames mirrored, intrinsics with them: right hands become left hands seen by a
    # mirrored camera. Cropped as left hands (given, or decided as a track's first frame
    # decides it) they fit as the originals do as right hands; cropped as right hands (the
    # default, for the SR305 frames' right hands) they would fit far worse.
    from tracker.backends import create_backend
    from tracker.estimator import HandEstimator
    from tracker.evaluate import DEFAULT_REAL_DIR, evaluate_real
    from tracker.weights import load_manifest

    originals, mirrored = tmp_path / "right", tmp_path / "left"
    for folder in (originals, mirrored):
        (folder / "s").mkdir(parents=True)
    for name in ("50", "90", "170"):
        depth = cv2.imread(str(DEFAULT_REAL_DIR / "20210326-230536" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(originals / "s" / f"{name}.png"), depth)
        cv2.imwrite(str(mirrored / "s" / f"{name}.png"), np.ascontiguousarray(depth[:, ::-1]))
    meta = json.loads((DEFAULT_REAL_DIR / "intrinsics.json").read_text())
    (originals / "intrinsics.json").write_text(json.dumps(meta))
    meta["intrinsics"]["cx"] = meta["intrinsics"]["width"] - 1 - meta["intrinsics"]["cx"]
    assert not any(meta["intrinsics"].get("coeffs", [])[2:4])  # no tangential terms, whose signs a mirror would flip
    (mirrored / "intrinsics.json").write_text(json.dumps(meta))

    estimator = HandEstimator(create_backend("onnxruntime"))
    cube = load_manifest()["cube_size_m"]

    def fits(folder, hand):
        summary, _ = evaluate_real(estimator, folder, cube, hand=hand)
        return [f["median_distance_mm"] for f in summary["per_frame"]], [f["handedness"] for f in summary["per_frame"]]

    right, sides = fits(originals, "right")
    assert sides == ["right"] * 3
    for hand in ("left", "auto"):
        left, sides = fits(mirrored, hand)
        assert sides == ["left"] * 3, hand
        # The same crops, mirrored, up to float rounding in the segmentation and the mirror.
        np.testing.assert_allclose(left, right, atol=0.05)
    as_right, _ = fits(mirrored, "right")
    assert np.median(as_right) > np.median(right) + 0.5


def test_crop_pixels_follow_the_ray_frames_virtual_camera():
    from tracker.crop import CropFrame, crop_to_camera

    intrinsics = CameraIntrinsics(width=640, height=480, fx=380.0, fy=385.0, cx=321.0, cy=238.0)
    centre = np.array([0.21, -0.12, 0.45])  # 29 degrees off the optical axis
    crop = make_crop(np.full((480, 640), 0.45, np.float32), intrinsics, centre, 0.26, crop_size=64, frame=CropFrame.RAY)
    np.testing.assert_allclose(crop_pixels(np.zeros((1, 3)), centre, 0.26, 64, CropFrame.RAY), [[31.5, 31.5]], atol=1e-9)
    # Anywhere in the cube: the pixel the camera sees the point at, taken through the crop's
    # homography (homogeneous coordinates, so divided by the third).
    points = np.random.default_rng(0).uniform(-1, 1, (50, 3))
    camera = crop_to_camera(points, crop).astype(np.float64)
    uv = np.stack([intrinsics.fx * camera[:, 0] / camera[:, 2] + intrinsics.cx, intrinsics.fy * camera[:, 1] / camera[:, 2] + intrinsics.cy, np.ones(50)])
    back = np.linalg.inv(crop.image_from_crop) @ uv
    # 1e-3 px: crop_to_camera returns float32 metres.
    np.testing.assert_allclose(crop_pixels(points, centre, 0.26, 64, CropFrame.RAY), (back[:2] / back[2]).T, atol=1e-3)


def test_the_off_axis_split_bins_frames_by_angle():
    from tracker.evaluate import off_axis_split

    split = off_axis_split(np.array([5.0, 12.0, 18.0, 45.0]), np.array([10.0, 20.0, 40.0, 7.0]))
    assert [b["frames"] for b in split] == [1, 2, 0, 1]
    assert [b["mean_joint_error_mm"] for b in split] == [10.0, 30.0, None, 7.0]


def test_a_damaged_real_frame_is_a_clear_error_after_the_synthetic_results(smoke_weights, tmp_path, capsys):
    import shutil

    from tracker.evaluate import DEFAULT_REAL_DIR

    real = tmp_path / "real"
    shutil.copytree(DEFAULT_REAL_DIR, real)
    damaged = sorted(real.rglob("*.png"))[0]
    damaged.write_bytes(damaged.read_bytes()[:200])
    out = tmp_path / "eval"
    assert evaluate_main(["--weights", str(smoke_weights), "--frames", "2", "--out", str(out), "--real-dir", str(real)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "synthetic results are in" in err and "Traceback" not in err
    assert (out / "synthetic_metrics.json").is_file()


def test_a_damaged_hand_presence_classifier_is_a_clear_error_before_any_frame(smoke_weights, tmp_path, capsys):
    import shutil

    import tracker.evaluate as evaluate
    from tracker.weights import WEIGHTS_DIR

    weights = tmp_path / "weights"
    shutil.copytree(smoke_weights, weights)
    shutil.copytree(WEIGHTS_DIR / "presence", weights / "presence")
    damaged = weights / "presence" / "presence.onnx"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    evaluate._hand_presence.cache_clear()
    out = tmp_path / "eval"
    assert evaluate_main(["--weights", str(weights), "--frames", "1", "--out", str(out), "--no-model-card"]) == 2
    evaluate._hand_presence.cache_clear()
    err = capsys.readouterr().err
    assert "error:" in err and "presence.onnx" in err and "Traceback" not in err
    assert not out.exists()  # refused before anything was run or written


def test_held_out_frames_are_checked_against_the_training_stream(monkeypatch):
    import tracker.evaluate as evaluate

    manifest = {"training": {"samples_seen": 100, "samples_seen_total": 500}}
    overlap = evaluate.training_stream_overlap(20, manifest, progress=False)
    assert overlap == {"training_stream_indices_checked": 500 + evaluate.TRAINING_INDEX_MARGIN, "frames_that_are_training_samples": []}
    # Were the streams to share seeds (here the training stream's index j has the held-out
    # stream's seed of j + 3), the shared frames are named.
    monkeypatch.setattr(evaluate, "sample_seed", lambda stream, index: index if stream == evaluate.EVAL_STREAM_SEED else index + 3)
    assert evaluate.training_stream_overlap(5, manifest, progress=False)["frames_that_are_training_samples"] == [3, 4]
    # With several data lanes the stream ends past the count drawn: checked to its end.
    manifest["training"]["stream_end"] = 500 + 2 * evaluate.TRAINING_INDEX_MARGIN
    monkeypatch.setattr(evaluate, "sample_seed", lambda stream, index: index if stream == evaluate.EVAL_STREAM_SEED else index - 500 - 15_000)
    overlap = evaluate.training_stream_overlap(5, manifest, progress=False)
    assert overlap["training_stream_indices_checked"] == 500 + 3 * evaluate.TRAINING_INDEX_MARGIN
    assert overlap["frames_that_are_training_samples"] == [0, 1, 2, 3, 4]
    assert "share a seed" in evaluate._overlap_lines({"training_stream_indices_checked": 9, "frames_that_are_training_samples": [3]})[0]


def test_another_seed_stream_gives_other_held_out_frames_and_no_card(smoke_weights, tmp_path, monkeypatch):
    import shutil

    import tracker.evaluate as evaluate

    weights = tmp_path / "weights"
    shutil.copytree(smoke_weights, weights)
    drawn = []  # every stream a sample is drawn from: the frames, their pictures, the overlap check
    real_sample_seed = evaluate.sample_seed
    monkeypatch.setattr(evaluate, "sample_seed", lambda stream, index: drawn.append(stream) or real_sample_seed(stream, index))
    runs, streams = {}, {}
    for stream, out in ((2, weights / "eval"), (7, tmp_path / "stream7")):
        assert evaluate_main(["--weights", str(weights), "--frames", "2", "--stream-seed", str(stream), "--out", str(out)]) == 0
        runs[stream] = json.loads((out / "synthetic_metrics.json").read_text())
        streams[stream], drawn[:] = set(drawn), []
        if stream == 2:
            card = (weights / "MODEL_CARD.md").read_text()
            (weights / "MODEL_CARD.md").unlink()
    assert runs[7]["stream_seed"] == 7 and runs[2]["stream_seed"] == 2
    # Held-out frames from the stream asked for, and the training stream's seeds for the overlap check only.
    assert streams[7] == {7, 1} and streams[2] == {2, 1}
    # Other frames: other errors (float sums of different renders cannot agree by chance).
    assert runs[7]["mean_joint_error_mm"] != runs[2]["mean_joint_error_mm"]
    assert runs[7]["training_overlap"]["frames_that_are_training_samples"] == []
    assert not (weights / "MODEL_CARD.md").exists() and "seed stream 2" in card


def test_weights_without_a_training_record_get_a_card_that_says_what_is_not_known(smoke_weights, tmp_path):
    import tracker.evaluate as evaluate

    # Exported by hand from a state dict: no training record at all.
    manifest = {**json.loads((smoke_weights / "dgn.json").read_text()), "training": {}}
    overlap = evaluate.training_stream_overlap(20, manifest, progress=False)
    assert overlap == {"training_stream_indices_checked": None, "frames_that_are_training_samples": None}
    synthetic = json.loads((evaluate.WEIGHTS_DIR / "eval" / "synthetic_metrics.json").read_text())
    synthetic["training_overlap"] = overlap
    card = tmp_path / "MODEL_CARD.md"
    evaluate.write_model_card(card, manifest, synthetic, None, "python -m tracker.evaluate", None)
    text = card.read_text()
    assert "Samples seen: unknown" in text and "is not known" in text and "None of these frames" not in text


def test_the_synthetic_errors_are_the_distances_to_the_truth_in_millimetres(hand_model):
    """Golden values: a network that answers each held-out crop with its true vertices moved
    by a known offset, and a refit that returns the true joints moved by the same, are
    off by exactly that offset, in mm, on every joint and vertex."""
    from types import SimpleNamespace

    from tracker.evaluate import EVAL_STREAM_SEED, evaluate_synthetic
    from tracker.synth.dataset import sample_seed
    from tracker.training_data import ExampleConfig, make_example

    config = ExampleConfig()
    offset = np.array([0.03, -0.04, 0.0], np.float32)  # crop units: 5 % of the half cube
    truth = {}
    for i in range(3):
        example = make_example(hand_model, config, sample_seed(EVAL_STREAM_SEED, i))
        truth[example["depth"].tobytes()] = example

    class TruthPlusOffset:
        def run(self, depth):
            example = truth.get(np.asarray(depth, np.float32)[0].tobytes())
            vertices = np.zeros((1, len(hand_model.template_vertices), 3), np.float32) if example is None else (example["vertices"] + offset)[None]
            return {"vertices": vertices}

    class RefitOfTruth:
        def fit(self, vertices):
            example = next((e for e in truth.values() if np.array_equal(vertices, e["vertices"] + offset)), None)
            joints = np.zeros((21, 3), np.float32) if example is None else example["joints"] + offset
            return SimpleNamespace(vertices=vertices, joints=joints)

    estimator = SimpleNamespace(backend=TruthPlusOffset(), refit=RefitOfTruth(), hand_model=hand_model)
    metrics = evaluate_synthetic(estimator, 3, config, progress=False)
    expected_mm = float(np.linalg.norm(offset)) * config.cube_size_m / 2 * 1000.0  # 0.05 x 130 mm = 6.5 mm
    assert metrics["mean_joint_error_mm"] == pytest.approx(expected_mm, rel=1e-5)  # float32 arithmetic
    assert metrics["median_joint_error_mm"] == pytest.approx(expected_mm, rel=1e-5)
    assert metrics["mean_initial_vertex_error_mm"] == pytest.approx(expected_mm, rel=1e-5)
    assert metrics["mean_refined_vertex_error_mm"] == pytest.approx(expected_mm, rel=1e-5)
    assert all(v == pytest.approx(expected_mm, rel=1e-5) for v in metrics["per_joint_error_mm"].values())
    # Every frame's largest joint error is 6.5 mm: under every threshold from 7 mm on, none below.
    curve = dict(zip(metrics["success_curve"]["threshold_mm"], metrics["success_curve"]["fraction_of_frames"]))
    assert curve[6] == 0.0 and curve[7] == 1.0


@pytest.mark.parametrize("frame", ["camera", "ray"])
def test_crop_pixels_of_a_left_hands_mirrored_crop(frame):
    from tracker.crop import CropFrame, crop_to_camera
    from tracker.types import Handedness

    intrinsics = CameraIntrinsics(width=640, height=480, fx=380.0, fy=385.0, cx=321.0, cy=238.0)
    centre = np.array([0.25, 0.05, 0.5])  # well off the axis, where the mirrored crop differs most
    crop = make_crop(np.full((480, 640), 0.5, np.float32), intrinsics, centre, 0.26, Handedness.LEFT, crop_size=64, frame=CropFrame(frame))
    points = np.random.default_rng(1).uniform(-1, 1, (50, 3))
    camera = crop_to_camera(points, crop).astype(np.float64)
    uv = np.stack([intrinsics.fx * camera[:, 0] / camera[:, 2] + intrinsics.cx, intrinsics.fy * camera[:, 1] / camera[:, 2] + intrinsics.cy, np.ones(50)])
    back = np.linalg.inv(crop.image_from_crop) @ uv
    # 1e-3 px: crop_to_camera returns float32 metres.
    np.testing.assert_allclose(crop_pixels(points, centre, 0.26, 64, CropFrame(frame), mirrored=True), (back[:2] / back[2]).T, atol=1e-3)


def test_a_hand_model_that_does_not_load_is_a_message(tmp_path, monkeypatch, capsys):
    from tracker.hand_model import HandModel, HandModelError

    def damaged(*args, **kwargs):
        raise HandModelError("weights/hand_model.npz is truncated")

    monkeypatch.setattr(HandModel, "load", damaged)
    assert evaluate_main(["--frames", "2", "--out", str(tmp_path / "eval"), "--no-model-card"]) == 2
    assert "error: weights/hand_model.npz is truncated" in capsys.readouterr().err


def test_scene_differences_name_what_the_held_out_scenes_changed():
    from tracker.evaluate import scene_differences

    assert scene_differences(None, {"a": 1}) is None
    trained = {"a": 1, "scene": {"length": 0.25, "pose": {"left": 0.0}}}
    held_out = {"a": 1, "scene": {"length": 0.55, "clear": True, "pose": {"left": 0.5}}}
    assert scene_differences(trained, held_out) == [
        "scene.clear: trained not recorded, held out true",
        "scene.length: trained 0.25, held out 0.55",
        "scene.pose.left: trained 0.0, held out 0.5",
    ]
    assert scene_differences(held_out, held_out) == []
    # A setting added since the weights were trained, held out at its default: no difference.
    defaults = {"a": 1, "scene": {"length": 0.25, "clear": True, "pose": {"left": 0.0}}}
    assert scene_differences(trained, held_out, defaults) == ["scene.length: trained 0.25, held out 0.55", "scene.pose.left: trained 0.0, held out 0.5"]
    assert scene_differences(trained, {**held_out, "scene": {**held_out["scene"], "clear": False}}, defaults)[0] == "scene.clear: trained not recorded, held out false"


def test_the_model_card_states_the_hand_shapes_the_weights_were_trained_on():
    from tracker.evaluate import _hand_shape_line

    older = {"scene": {"pose": {"hand_size_range": [0.9, 1.1], "bone_scale_jitter": 0.15}}}
    assert _hand_shape_line(older) == "- One hand model shape (overall size 0.9–1.1×, every bone's length and thickness ±15 % on its own)."
    newer = {"scene": {"pose": {"hand_size_range": [0.9, 1.1], "finger_length_jitter": 0.06, "thickness_jitter": 0.1, "bone_scale_jitter": 0.05}}}
    assert _hand_shape_line(newer) == (
        "- One hand model shape (overall size 0.9–1.1×, each finger's length ±6 %, thickness ±10 %,"
        " every bone's length and thickness ±5 % on its own)."
    )
    assert "do not record" in _hand_shape_line(None)


def test_the_card_says_how_the_vertices_are_read_from_the_mesh_grid(smoke_weights, tmp_path):
    import tracker.evaluate as evaluate

    manifest = json.loads((smoke_weights / "dgn.json").read_text())
    synthetic = json.loads((evaluate.WEIGHTS_DIR / "eval" / "synthetic_metrics.json").read_text())
    card = tmp_path / "MODEL_CARD.md"
    for learned in (False, True):
        manifest["network"]["learned_sampling"] = learned
        manifest["parameters"] = 300_000
        evaluate.write_model_card(card, manifest, synthetic, None, "python -m tracker.evaluate", None)
        text = card.read_text()
        assert ("learned sampling" in text) == learned and ("bilinear sampling at each vertex" in text) != learned
        # The readout matrix's unused entries (all but 4 per vertex of each 256-row column) are not counted as in use.
        in_use = 300_000 - (manifest["network"]["mesh_grid_size"] ** 2 - 4) * 1159
        assert (f"- Parameters: 300,000 ({in_use:,} in use" in text) == learned


def test_the_card_says_when_the_weights_were_exported_after_their_run(smoke_weights, tmp_path):
    import tracker.evaluate as evaluate

    manifest = json.loads((smoke_weights / "dgn.json").read_text())
    synthetic = json.loads((evaluate.WEIGHTS_DIR / "eval" / "synthetic_metrics.json").read_text())
    card = tmp_path / "MODEL_CARD.md"
    evaluate.write_model_card(card, manifest, synthetic, None, "python -m tracker.evaluate", None)
    assert "- Exported from" not in card.read_text()
    manifest["training"]["recovered"] = "the run's last checkpoint (step 40 of 43)"
    evaluate.write_model_card(card, manifest, synthetic, None, "python -m tracker.evaluate", None)
    assert "- Exported from the run's last checkpoint (step 40 of 43).\n" in card.read_text()


def test_the_card_says_what_the_crops_show_past_the_image(smoke_weights, tmp_path):
    import tracker.evaluate as evaluate

    manifest = json.loads((smoke_weights / "dgn.json").read_text())
    synthetic = json.loads((evaluate.WEIGHTS_DIR / "eval" / "synthetic_metrics.json").read_text())
    card = tmp_path / "MODEL_CARD.md"
    for fill, words in (("far", "shows its far face (1), as for background"), ("marked", "shows its near face (-1)")):
        manifest["out_of_image"] = fill
        evaluate.write_model_card(card, manifest, synthetic, None, "python -m tracker.evaluate", None)
        assert words in card.read_text(), fill


def test_the_card_gives_the_width_inside_the_blocks_of_a_narrowed_network(smoke_weights, tmp_path):
    import tracker.evaluate as evaluate

    manifest = json.loads((smoke_weights / "dgn.json").read_text())
    synthetic = json.loads((evaluate.WEIGHTS_DIR / "eval" / "synthetic_metrics.json").read_text())
    card = tmp_path / "MODEL_CARD.md"
    net = manifest["network"]
    evaluate.write_model_card(card, manifest, synthetic, None, "python -m tracker.evaluate", None)
    assert "inside each residual block" not in card.read_text()  # manifests from before the choice, or full width
    net.update(image_block_channels=net["image_channels"] // 2, mesh_block_channels=net["mesh_channels"])
    evaluate.write_model_card(card, manifest, synthetic, None, "python -m tracker.evaluate", None)
    text = card.read_text()
    assert f"Image-grid hourglass ({net['image_channels']} channels, {net['image_channels'] // 2} inside each residual block," in text
    assert f"Mesh-grid hourglass ({net['mesh_channels']} channels, {net['mesh_levels']} levels)" in text


def test_the_card_says_where_a_narrowed_network_was_narrowed(smoke_weights, tmp_path):
    import tracker.evaluate as evaluate
    from tracker.training_history import CURRENT_STAGE, TrainingStage

    manifest = json.loads((smoke_weights / "dgn.json").read_text())
    synthetic = json.loads((evaluate.WEIGHTS_DIR / "eval" / "synthetic_metrics.json").read_text())
    card = tmp_path / "MODEL_CARD.md"
    wide = {"image_channels": 64, "image_block_channels": 64, "mesh_channels": 48, "mesh_block_channels": 40}
    empty = np.zeros(0)
    for name, words in (("narrow", "(stage `narrow` and after)"), (CURRENT_STAGE, "in this stage")):
        stage = TrainingStage(name, 2_637_792, empty.astype(np.int64), empty, empty, 1e-3, "ray", wide)
        evaluate.write_model_card(card, manifest, synthetic, None, "python -m tracker.evaluate", None, narrowing=stage)
        text = card.read_text()
        assert "Narrowed, when the weights had seen 2,637,792 samples, from a network with an image hourglass of 64 channels (64 inside each block)" in text
        assert "mesh hourglass of 48 (40 inside each block)" in text and words in text
    evaluate.write_model_card(card, manifest, synthetic, None, "python -m tracker.evaluate", None)
    assert "Narrowed" not in card.read_text()


def test_the_first_place_is_chosen_by_the_weights_own_hand_presence_classifier(tmp_path, monkeypatch):
    import shutil

    from tracker import evaluate
    from tracker.side_inference import HandPresence
    from tracker.weights import WEIGHTS_DIR

    loaded = []
    load = HandPresence.load.__func__

    def recorded(cls, directory=None, threads=1):
        loaded.append(None if directory is None else Path(directory))
        return load(cls, directory, threads)

    monkeypatch.setattr(HandPresence, "load", classmethod(recorded))
    evaluate._hand_presence.cache_clear()
    shutil.copytree(WEIGHTS_DIR / "presence", tmp_path / "own" / "presence")
    (tmp_path / "plain").mkdir()
    depth = np.zeros((48, 64), np.float32)
    k = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    evaluate.first_frame_centre(depth, k, 0.26, weights_dir=tmp_path / "own")  # no hand there: only the classifier matters
    evaluate.first_frame_centre(depth, k, 0.26, weights_dir=tmp_path / "plain")
    evaluate._hand_presence.cache_clear()
    assert loaded == [tmp_path / "own" / "presence", None]  # the folder's own, then the shipped one
