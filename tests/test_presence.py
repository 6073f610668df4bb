"""Tests of the hand-presence classifier (tracker.presence) and the scenes it learns from."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from tracker import presence as pr
from tracker.side_inference import HandPresence
from tracker.synth.dataset import sample_seed
from tracker.synth.scene import SceneConfig, SceneLabel, forearm_mesh, render_sample
from tracker.weights import WeightsError


def test_a_scene_drawn_without_its_hand_keeps_its_arm_where_it_was(hand_model):
    # Seeds whose first pose drawn has its hand in view: without the hand the same pose is
    # kept (the draw is repeated only while neither hand nor arm is in view).
    for seed in (3, 4, 5):
        with_hand = render_sample(hand_model, SceneConfig(), seed)
        without = render_sample(hand_model, dataclasses.replace(SceneConfig(), hand=False), seed)
        assert with_hand.mask.sum() >= SceneConfig().min_hand_pixels
        assert not without.mask.any() and not ((without.labels >= 0) & (without.labels < SceneLabel.FOREARM)).any()
        # The same pose and arm: every arm pixel with the hand is an arm pixel without it
        # (where the hand stood, more arm shows).
        arm_with, arm_without = with_hand.labels == SceneLabel.FOREARM, without.labels == SceneLabel.FOREARM
        assert arm_with.sum() > 0 and not (arm_with & ~arm_without).any()
        np.testing.assert_array_equal(with_hand.joints, without.joints)


def test_the_arm_drawn_alone_is_closed_at_the_wrist():
    open_end, _ = forearm_mesh(0.3, (0.03, 0.02), (0.04, 0.03))
    closed, faces = forearm_mesh(0.3, (0.03, 0.02), (0.04, 0.03), cap_wrist=True)
    assert len(closed) == len(open_end) + 1 and faces.max() == len(closed) - 1
    # Every edge of a closed tube is shared by exactly two faces.
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()


def test_crops_are_labelled_by_what_they_hold(hand_model):
    config = pr.DataConfig()  # every hand whole (cut by the image's edge: below)
    rows = {kind: [] for kind in pr.KINDS}
    for i in range(12):
        kind = pr.KINDS[i % 3]
        row = pr.render_crop(hand_model, config, sample_seed(99, i), kind)
        if row is not None:
            rows[kind].append(row)
    assert all(rows.values())
    for row in rows["hand"]:
        # A positive: the crop is centred on the hand, so it holds many of its pixels.
        assert row["label"] == 1.0 and row["hand"].sum() > 50
    for row in rows["arm"] + rows["object"]:
        assert row["label"] == 0.0 and not row["hand"].any()
        assert (row["depth"] < 1).sum() > 20  # something was found and cropped
    for row in sum(rows.values(), []):
        assert row["depth"].shape == (64, 64) and row["depth"].dtype == np.float32
        assert row["depth"].min() >= -1 and row["depth"].max() <= 1


def test_the_image_edge_cut_keeps_its_share_of_the_hand_and_a_window_of_the_sensor():
    from tracker.crop import OUT_OF_IMAGE_DEPTH, OutOfImage, make_crop
    from tracker.types import CameraIntrinsics

    # A 40 x 30 window at (180, 140) of a 400 x 300 sensor; the "hand" a 10 x 20 block.
    sensor = CameraIntrinsics(400, 300, 100.0, 100.0, 190.0, 150.0)
    window = CameraIntrinsics(40, 30, 100.0, 100.0, 10.0, 10.0)
    depth = np.full((30, 40), 0.5, np.float32)
    hand = np.zeros((30, 40), bool)
    hand[5:15, 10:30] = True
    for side in range(4):
        cut_depth, cut_window, cut_sensor, cut_hand = pr.cut_at_image_edge(depth, window, sensor, hand, side, 0.7)
        # Whole rows or columns go: 0.7 of 20 columns is 14 of them, of 10 rows, 7.
        assert cut_hand.sum() == round(0.7 * hand.sum())
        assert cut_depth.shape == cut_hand.shape == (cut_window.height, cut_window.width)
        # A ray keeps its pixel: the window's centre of projection moves with the cut.
        assert cut_depth.shape[1 - side // 2] < depth.shape[1 - side // 2]
        # Marked as past the image on the cut's side, and only there: the other three sides
        # of the window lie inside the sensor (they show background, not the image's end).
        # The cube, 0.6 m at 0.5 m around the hand, spans 120 sensor pixels.
        centre = np.array([0.05, 0.0, 0.5])
        crop = make_crop(cut_depth, cut_window, centre, 0.6, crop_size=64, out_of_image=OutOfImage.MARKED, sensor=cut_sensor)
        marked = crop.depth == OUT_OF_IMAGE_DEPTH
        lines = marked if side < 2 else marked.T  # (rows, columns) or (columns, rows)
        across = lines.all(axis=0)
        assert (lines.any(axis=0) == across).all() and 0 < across.sum() < 64
        assert across[0 if side in (0, 2) else -1] and not across[-1 if side in (0, 2) else 0]
    none_left = pr.cut_at_image_edge(depth, window, sensor, hand, 1, 0.0)
    assert not none_left[3].any() and none_left[0].shape == (30, 10)  # just short of the hand
    assert pr.cut_at_image_edge(depth, window, sensor, hand[:, ::-1] & False, 0, 0.5)[0] is depth  # no hand: uncut
    with pytest.raises(ValueError, match="side"):
        pr.cut_at_image_edge(depth, window, sensor, hand, 4, 0.5)


def test_hand_scenes_cut_by_the_image_edge_are_labelled_by_what_is_left(hand_model):
    whole = pr.DataConfig(edge_cut_probability=0.0)
    cut = pr.DataConfig(edge_cut_probability=1.0, edge_cut_whole_hand=0.0)
    past = pr.DataConfig(edge_cut_probability=1.0, edge_cut_whole_hand=1.0)
    fewer = 0
    for i in range(6):
        seed = sample_seed(99, i)
        rows = [pr.render_crop(hand_model, config, seed, "hand") for config in (whole, cut, past)]
        if rows[0] is None or rows[1] is None:
            continue
        # Still a hand, centred on what is left of it; with it all past the edge, no hand
        # (the arm, or nothing found).
        assert rows[0]["label"] == 1.0 and (rows[1] is None or rows[1]["label"] == 1.0)
        fewer += int(rows[1]["hand"].sum() < rows[0]["hand"].sum())
        assert rows[2] is None or (rows[2]["label"] == 0.0 and not rows[2]["hand"].any())
    assert fewer >= 3


def test_augmentation_past_the_edge_leaves_a_positive_half_its_hand():
    s = 64
    yy, xx = np.mgrid[:s, :s]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 14**2
    depth = torch.from_numpy(np.where(disc, 0.0, 1.0).astype(np.float32))[None, None].repeat(64, 1, 1, 1)
    hand = torch.from_numpy(disc)[None, None].repeat(64, 1, 1, 1)
    quiet = pr.AugmentConfig(mirror_probability=0.0, max_shift_px=0.0, max_scale=1.0, max_depth_offset=0.0, max_noise_sigma=0.0, max_pixel_dropout=0.0, edge_probability=1.0)
    before = float(disc.sum())
    for label, seed in ((1.0, 0), (0.0, 1)):
        out = pr.augment(depth, hand, torch.full((64,), label), quiet, torch.Generator().manual_seed(seed))
        kept = (out < 1).sum(dim=(1, 2, 3)).float() / before
        if label:
            # Half at least (a few pixels either way from the turn's nearest resampling).
            assert kept.min() >= quiet.edge_keep_hand - 0.03 and (kept < 0.97).any()
        else:
            assert (kept < quiet.edge_keep_hand - 0.03).any()  # a negative may lose anything


def _runs_around_the_border(mask: np.ndarray) -> int:
    """Runs of True pixels along the (S, S) mask's border, walked once around."""
    ring = np.concatenate([mask[0, :-1], mask[:-1, -1], mask[-1, :0:-1], mask[:0:-1, 0]])
    if ring.all():
        return 1
    return int(np.sum(ring & ~np.roll(ring, 1)))


def test_marked_crops_keep_their_mark_through_augmentation_and_the_edge_is_marked():
    from tracker.crop import OUT_OF_IMAGE_DEPTH, OutOfImage

    s = 64
    yy, xx = np.mgrid[:s, :s]
    disc = (yy - 32) ** 2 + (xx - 36) ** 2 < 12**2
    depth = np.where(disc, 0.0, 1.0).astype(np.float32)
    depth[:, :20] = OUT_OF_IMAGE_DEPTH  # past the image's left edge
    depth = torch.from_numpy(depth)[None, None].repeat(64, 1, 1, 1)
    hand = torch.from_numpy(disc)[None, None].repeat(64, 1, 1, 1)
    label = torch.ones(64)
    heavy = pr.AugmentConfig(edge_probability=0.0, max_depth_offset=0.5, max_noise_sigma=0.1, max_pixel_dropout=0.5)
    quiet = dataclasses.replace(heavy, max_depth_offset=0.0, max_noise_sigma=0.0, max_pixel_dropout=0.0)
    out = pr.augment(depth, hand, label, heavy, torch.Generator().manual_seed(0), OutOfImage.MARKED)
    # The turn, shift and scale draw the same whatever the depth moves, noise and dropouts:
    # none of those touch a marked pixel, nor make one.
    still = pr.augment(depth, hand, label, quiet, torch.Generator().manual_seed(0), OutOfImage.MARKED)
    np.testing.assert_array_equal((out == OUT_OF_IMAGE_DEPTH).numpy(), (still == OUT_OF_IMAGE_DEPTH).numpy())
    assert not ((out < -0.99) & (out != OUT_OF_IMAGE_DEPTH)).any()
    for mask in (still == OUT_OF_IMAGE_DEPTH)[:, 0].numpy():
        # Turned with the crop, the image's edge still runs on past the crop's border: one
        # stretch of the border is marked, with no background between it and the mark
        # where a turn brings a corner in.
        assert mask.sum() > 0.5 * 20 * s and _runs_around_the_border(mask) == 1
    hand_like = ((still > -0.99) & (still < 1)).sum(dim=(1, 2, 3)).float() / float(disc.sum())
    # The hand is still there: scaled by up to 1.1 either way (area x 0.83..1.21).
    assert hand_like.min() > 0.75 and hand_like.max() < 1.25
    # On the far face, the same values are depth: moved and noised like any other.
    far = pr.augment(depth, hand, label, heavy, torch.Generator().manual_seed(0), OutOfImage.FAR)
    assert (far == OUT_OF_IMAGE_DEPTH).sum() < 0.01 * (out == OUT_OF_IMAGE_DEPTH).sum()

    # The half-plane standing for the image's edge shows what the crops show past it.
    empty = torch.ones(32, 1, s, s)
    edge = pr.AugmentConfig(edge_probability=1.0)
    negatives = torch.zeros(32)
    marked_edge = pr.augment(empty, torch.zeros_like(empty, dtype=torch.bool), negatives, edge, torch.Generator().manual_seed(1), OutOfImage.MARKED)
    assert set(marked_edge.unique().tolist()) == {OUT_OF_IMAGE_DEPTH, 1.0}
    far_edge = pr.augment(empty, torch.zeros_like(empty, dtype=torch.bool), negatives, edge, torch.Generator().manual_seed(1), OutOfImage.FAR)
    assert (far_edge == 1.0).all()


def test_hand_scenes_cut_by_the_image_edge_show_the_mark_past_it(hand_model):
    from tracker.crop import OUT_OF_IMAGE_DEPTH, OutOfImage

    far = pr.DataConfig(edge_cut_probability=1.0, edge_cut_whole_hand=0.0)
    marked = dataclasses.replace(far, out_of_image=OutOfImage.MARKED)
    compared = with_mark = 0
    for i in range(6):
        seed = sample_seed(99, i)
        rows = [pr.render_crop(hand_model, config, seed, "hand") for config in (far, marked)]
        if rows[0] is None:
            continue
        past = rows[1]["depth"] == OUT_OF_IMAGE_DEPTH
        # The same crop, the far face (1) where the image ends, and labelled alike.
        np.testing.assert_array_equal(np.where(past, 1.0, rows[1]["depth"]), rows[0]["depth"])
        assert rows[1]["label"] == rows[0]["label"]
        compared += 1
        with_mark += int(past.any())
    assert compared >= 3 and with_mark >= 1


def test_onnx_export_round_trips_and_damaged_weights_raise_a_clear_error(tmp_path):
    torch.manual_seed(1)
    network = pr.PresenceNet()
    for module in network.modules():  # non-trivial batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    torch.nn.init.normal_(network.head[-1].weight, std=3.0)
    manifest = pr.export_weights(network, tmp_path, training={"note": "test"})
    assert manifest["onnx"]["output"] == "hand_logit" and manifest["parameters"] == pr.count_parameters(network)
    crops = np.random.default_rng(0).uniform(-1, 1, (6, 64, 64)).astype(np.float32)
    expected = pr.torch_logits(network, crops)
    assert np.abs(expected).max() > 1e-3
    # onnxruntime's fused kernels against torch's: float32 rounding only.
    np.testing.assert_allclose(HandPresence.load(tmp_path).logits(crops), expected, atol=1e-4, rtol=0)
    reloaded, _ = pr.load_network(tmp_path)
    np.testing.assert_allclose(pr.torch_logits(reloaded, crops), expected, atol=1e-6, rtol=0)

    onnx = tmp_path / pr.PRESENCE_ONNX
    onnx.write_bytes(onnx.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="corrupt"):
        HandPresence.load(tmp_path)
    with pytest.raises(WeightsError, match="missing"):
        HandPresence.load(tmp_path / "nowhere")
    (tmp_path / pr.MANIFEST).write_text("{not json")
    with pytest.raises(WeightsError, match="not a valid hand-presence manifest"):
        HandPresence.load(tmp_path)


def test_a_classifier_trained_on_marked_crops_is_given_marked_crops(hand_model, tmp_path):
    from tracker.crop import OUT_OF_IMAGE_DEPTH, CropFrame, OutOfImage, make_crop
    from tracker.prepare import PrepareConfig, prepare_frame, side_classifier_crop
    from tracker.side_inference import SideClassifier, classifier_crop
    from tracker.types import Handedness

    torch.manual_seed(2)
    network = pr.PresenceNet()
    torch.nn.init.normal_(network.head[-1].weight, std=3.0)
    manifest = pr.export_weights(network, tmp_path, out_of_image=OutOfImage.MARKED)
    assert manifest["out_of_image"] == "marked" and "-1" in manifest["input"]
    marked = HandPresence.load(tmp_path)
    shipped = HandPresence.load()
    assert marked.out_of_image == OutOfImage.MARKED and shipped.out_of_image == OutOfImage.FAR
    assert "out_of_image" not in pr.load_manifest()  # the shipped manifest: the far face, unsaid

    # A worker process rebuilds it from its ONNX bytes and manifest: still marked.
    assert HandPresence.from_onnx(marked.onnx_bytes, marked.manifest).out_of_image == OutOfImage.MARKED

    # A hand scene whose image ends across the hand (a third of it past the right edge).
    sample = render_sample(hand_model, SceneConfig(), sample_seed(31, 0))
    whole = sample.depth.astype(np.float32) * np.float32(sample.depth_scale)
    depth_m, k, _, _ = pr.cut_at_image_edge(whole, sample.intrinsics, sample.intrinsics, sample.mask, 1, 0.67)
    config = PrepareConfig(pr.DataConfig().segment, pr.DataConfig().cube_size_m, None, CropFrame.CAMERA, OutOfImage.FAR)
    side = SideClassifier.load()
    first = prepare_frame(depth_m, k, None, config, side, marked)  # a track's first frame: the choice of place
    assert first.centre is not None
    for prepared in (first, prepare_frame(depth_m, k, first.centre, config, side, marked)):  # and inside a track
        own = classifier_crop(marked, depth_m, k, prepared.centre, config.cube_size_m)
        far = classifier_crop(shipped, depth_m, k, prepared.centre, config.cube_size_m)
        assert (own == OUT_OF_IMAGE_DEPTH).any() and not (far == OUT_OF_IMAGE_DEPTH).any()
        np.testing.assert_array_equal(own, make_crop(depth_m, k, prepared.centre, config.cube_size_m, Handedness.RIGHT, out_of_image=OutOfImage.MARKED).depth)
        # The side classifier's crop (the far face) is not the one it is shown.
        assert prepared.hand_logit == marked.logit(own) != marked.logit(far)
        # Nor is the network's own crop (the far face), which the far-face classifier takes.
        crops = prepared.crops
        assert side_classifier_crop(depth_m, k, prepared.centre, config, crops, shipped) is crops[Handedness.RIGHT].depth
        np.testing.assert_array_equal(side_classifier_crop(depth_m, k, prepared.centre, config, crops, marked), own)

    # A manifest naming a mark this version does not know is refused, saying so.
    manifest["out_of_image"] = "blurred"
    pr.write_manifest(tmp_path, manifest, pr.MANIFEST)
    with pytest.raises(WeightsError, match="unknown out-of-image fill 'blurred'"):
        HandPresence.load(tmp_path)


def test_evaluation_cuts_the_crops_as_the_weights_were_trained(tmp_path, monkeypatch):
    from tracker.crop import OutOfImage

    pr.export_weights(pr.PresenceNet(), tmp_path, out_of_image=OutOfImage.MARKED)
    seen = []

    def fake_set(cache_dir, config, stream_seed, count, workers=2, progress=True, desc=""):
        seen.append(config.out_of_image)
        rows = {"depth": np.ones((4, 64, 64), np.float32), "hand": np.zeros((4, 64, 64), bool), "label": np.array([1, 0, 1, 0], np.float32),
                "kind": np.array([0, 1, 0, 2], np.int8), "seed": np.arange(4)}
        return rows, 0.0

    monkeypatch.setattr(pr, "cached_set", fake_set)
    pr.evaluate(tmp_path, pr.TrainConfig(held_out_samples=4), None, progress=False)  # a config on the far face
    assert seen == [OutOfImage.MARKED]


def test_a_short_training_run_writes_loadable_weights_with_its_config(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--samples", "8", "--held-out", "8", "--steps", "4", "--workers", "1"]
    assert pr.main([*argv, "--edge-cut-probability", "0.5", "--seed", "3"]) == 0
    manifest = json.loads((out / "export" / pr.MANIFEST).read_text())
    assert manifest["training"]["steps"] == 4 and manifest["training"]["samples_seen"] == 4 * pr.TrainConfig.batch_size
    config = json.loads((out / "training_config.json").read_text())
    assert config["samples"] == 8 and config["seed"] == 3 and config["data"]["edge_cut_probability"] == 0.5
    # The training scenes cut so, the held-out ones never: runs with and without compare.
    for stream, cut in ((pr.TRAIN_STREAM_SEED, 0.5), (pr.HELD_OUT_STREAM_SEED, 0.0)):
        with np.load(out / "cache" / f"presence_stream{stream}_n8.npz") as cached:
            assert json.loads(str(cached["key"]))["data"]["edge_cut_probability"] == cut
    assert (out / "training_metrics.csv").read_text().count("\n") == 2  # header and the last step
    HandPresence.load(out / "export").logit(np.ones((64, 64), np.float32))
    # The export is what weights/presence/ holds: the weights with their run's config and log.
    for name in ("training_config.json", "training_metrics.csv"):
        assert (out / "export" / name).read_bytes() == (out / name).read_bytes()
    assert json.loads((out / "summary.json").read_text()) == manifest["training"]
    with pytest.raises(SystemExit):
        pr.main([*argv, "--edge-cut-probability", "1.5"])
    with pytest.raises(SystemExit):
        pr.main([*argv, "--out-of-image", "blurred"])
    # Trained on marked crops: recorded in the config, the scenes' cache and the manifest,
    # which is what a run reads to cut the classifier's crops (absent: the far face).
    assert "out_of_image" not in manifest and config["data"]["out_of_image"] == "far"
    marked = tmp_path / "marked"
    assert pr.main(["train", "--out", str(marked), "--samples", "8", "--held-out", "8", "--steps", "2", "--workers", "1", "--out-of-image", "marked"]) == 0
    assert json.loads((marked / "export" / pr.MANIFEST).read_text())["out_of_image"] == "marked"
    assert json.loads((marked / "training_config.json").read_text())["data"]["out_of_image"] == "marked"
    for stream in (pr.TRAIN_STREAM_SEED, pr.HELD_OUT_STREAM_SEED):
        with np.load(marked / "cache" / f"presence_stream{stream}_n8.npz") as cached:
            assert json.loads(str(cached["key"]))["data"]["out_of_image"] == "marked"


def test_the_shipped_classifier_tells_the_real_hands_from_arms_without_theirs(hand_model, tmp_path):
    from benchmarks.confidence_separation import REAL_DIR, scene_frame
    from tracker.pipeline import HandTracker, TrackerConfig
    from tracker.sources import FolderSource

    manifest = pr.load_manifest()
    assert manifest["metrics"]["hands"]["called_hand"] > 0.97 and manifest["metrics"]["arms"]["called_hand"] < 0.02
    tracker = HandTracker(type("Estimator", (), {"backend": None})(), TrackerConfig(cube_size_m=0.26, refine=False))
    real = [tracker.prepare(frame, None).hand_logit for frame in FolderSource(REAL_DIR).frames()]
    assert len(real) == 19 and min(real) > 0
    # Held-out scenes (a stream no network trained on) of arms whose hand is hidden.
    arms = [tracker.prepare(scene_frame(sample_seed(8, i), "arms_whose_hand_is_hidden", hand_model), None).hand_logit for i in range(8)]
    assert max(a for a in arms if a is not None) < 0


def test_the_shipped_weights_pass_their_checksums():
    shipped = pr.PRESENCE_WEIGHTS_DIR
    manifest = pr.load_manifest(shipped)
    for name, digest in manifest["files"].items():
        assert pr.sha256_of(shipped / name) == digest


def test_a_damaged_shipped_copy_is_refused(tmp_path):
    directory = tmp_path / "presence"
    shutil.copytree(pr.PRESENCE_WEIGHTS_DIR, directory)
    state = directory / pr.STATE_DICT
    state.write_bytes(state.read_bytes()[:-100])
    with pytest.raises(WeightsError, match="corrupt"):
        pr.load_network(directory)


def test_the_classifier_is_trained_on_the_crop_the_tracker_gives_it(hand_model):
    # The same scene through the training data's cut and through the tracker's preparation
    # (whose network crops are in the ray frame: the classifiers cut their own camera-frame crop).
    from tracker.crop import CropFrame, OutOfImage
    from tracker.prepare import PrepareConfig, prepare_frame

    data = pr.DataConfig()
    presence = HandPresence.load()
    config = PrepareConfig(data.segment, data.cube_size_m, None, CropFrame.RAY, OutOfImage.FAR)
    for kind, seed in (("hand", 11), ("arm", 12)):
        row = pr.render_crop(hand_model, data, seed, kind)
        sample = render_sample(hand_model, dataclasses.replace(data.scene, hand=kind == "hand"), seed)
        depth_m = sample.depth.astype(np.float32) * np.float32(sample.depth_scale)
        prepared = prepare_frame(depth_m, sample.intrinsics, None, config, None, presence)
        assert prepared.hand_logit == presence.logit(row["depth"])
        assert (prepared.hand_logit > 0) == (kind == "hand")


def test_a_weights_folder_brings_its_own_classifiers_where_it_has_them(tmp_path):
    from tracker.side_inference import SideClassifier
    from tracker.weights import crop_classifiers

    assert crop_classifiers(tmp_path, None, 0.5) == (None, None)  # none there: the tracker takes the shipped ones
    shutil.copytree(pr.PRESENCE_WEIGHTS_DIR, tmp_path / "presence")
    side, presence = crop_classifiers(tmp_path, None, 0.5)
    assert side is None and isinstance(presence, HandPresence)
    assert crop_classifiers(tmp_path, None, 0.0) == (None, None)  # the gate off: not loaded
    shutil.copytree(pr.PRESENCE_WEIGHTS_DIR.parent / "side_classifier", tmp_path / "side_classifier")
    from tracker.types import Handedness

    assert isinstance(crop_classifiers(tmp_path, None, 0.5)[0], SideClassifier)
    assert crop_classifiers(tmp_path, Handedness.LEFT, 0.5)[0] is None  # a fixed side needs none
    onnx = tmp_path / "presence" / pr.PRESENCE_ONNX
    onnx.write_bytes(onnx.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="corrupt"):
        crop_classifiers(tmp_path, None, 0.5)


def test_the_library_takes_the_hand_presence_setting_and_checks_it_before_starting():
    from tracker.api import open_tracker, track

    for bad in (0.99, -0.5, float("nan"), "abc", None, True):
        with pytest.raises(ValueError, match="min_hand_probability"):
            open_tracker(min_hand_probability=bad, backend="no-such-backend")  # refused before the backend
    # A numpy scalar (read from a config file or a ROS parameter) is a number like any other.
    with pytest.raises(ValueError, match="backend"):
        open_tracker(min_hand_probability=np.float32(0.3), backend="no-such-backend")
    with track("synthetic", max_frames=3, min_hand_probability=np.float64(0.0)) as frames:
        results = list(frames)
    assert len(results) == 3 and all("presence" not in r.timings_ms for r in results)


def test_the_command_line_says_when_it_judged_what_it_found_no_hand(hand_model, tmp_path, capsys):
    # Frames of arms whose hand is hidden, as a folder of depth PNGs: no hand reported, and
    # the summary says why.
    import cv2

    from benchmarks.confidence_separation import scene_frame
    from tracker.cli import main

    folder = tmp_path / "arms"
    for i in range(3):  # each scene its own camera: a sub-folder each, with its intrinsics
        frame = scene_frame(sample_seed(8, i), "arms_whose_hand_is_hidden", hand_model)
        k = frame.intrinsics
        (folder / str(i)).mkdir(parents=True)
        cv2.imwrite(str(folder / str(i) / "000.png"), np.round(frame.depth_m() / 0.001).astype(np.uint16))
        (folder / str(i) / "intrinsics.json").write_text(json.dumps(
            {"serial": "arms", "depth_scale": 0.001, "intrinsics": {"width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}}
        ))
    out = tmp_path / "arms.jsonl"
    assert main(["--source", str(folder), "--out", str(out), "--no-viewer"]) == 0
    err = capsys.readouterr().err
    assert "3 frames (0 with a hand, 3 judged to hold no hand" in err and "--min-hand-probability 0 turns that judgement off" in err
    assert [json.loads(line)["hands"] for line in out.read_text().splitlines()] == [[], [], []]
