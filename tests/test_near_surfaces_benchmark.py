"""The near-surfaces benchmark (benchmarks.near_surfaces): its surfaces lie where it says, and
it writes its table."""

import json

import cv2
import numpy as np
import pytest

from benchmarks.near_surfaces import SIDE_AT_FRAMES, main, scene_at, sequence_frames, side_right_error
from tracker.sources import SyntheticSource
from tracker.types import Handedness
from tracker.hand_model import HandModel
from tracker.synth.scene import SceneLabel


@pytest.fixture(scope="module")
def hand_model():
    return HandModel.load()


@pytest.mark.parametrize("gap_m", [0.0, 0.04])
def test_the_surface_lies_the_gap_behind_the_hand_and_hides_what_is_behind_it(hand_model, gap_m):
    depth, sample = scene_at(3, gap_m, hand_model)
    bare, same = scene_at(3, None, hand_model)
    np.testing.assert_array_equal(sample.joints, same.joints)  # the same scene, with and without
    k = sample.intrinsics
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64) * sample.depth_scale
    points = np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], axis=1)
    # The surface: the measured points the bare scene does not have.
    new = (bare[v, u] == 0) & (sample.labels[v, u] != SceneLabel.FOREARM)
    surface = points[new]
    assert len(surface) > 1000
    # A plane through them (least squares), and the hand's rearmost vertex the gap before it.
    centroid = surface.mean(axis=0)
    normal = np.linalg.svd(surface - centroid, full_matrices=False)[2][-1]
    normal *= -np.sign(normal @ centroid)  # towards the camera
    residual = (surface - centroid) @ normal
    # Stereo noise at up to a metre or so, and 1 mm depth steps.
    assert np.sqrt(np.mean(residual**2)) < 0.01
    gap = float(np.min((sample.vertices - centroid) @ normal))
    assert gap == pytest.approx(gap_m, abs=0.006)


def test_a_run_writes_each_gap_with_the_plane_cleared_and_kept(tmp_path):
    out = tmp_path / "near.json"
    assert main(["--scenes", "1", "--gaps", "0", "--track-sequences", "0", "--out", str(out), "--no-progress"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["gap_m"], row["background_plane"]) for row in rows] == [(None, "cleared"), (None, "kept"), (0.0, "cleared"), (0.0, "kept")]
    assert all(row["frames"] == 1 and len(row["per_scene"]) == 1 for row in rows)
    for row in rows:
        (scene,) = row["per_scene"]
        expected = scene["joint_error_mm"] if scene["outcome"] == "hand" and scene["side_right"] else None
        assert row["mean_joint_error_side_right_mm"] == expected
    picture = cv2.imread(str(out.with_suffix(".png")))
    assert picture is not None and picture.shape[0] == 6 * 192  # six scenes, a row each


def test_the_error_on_the_right_side_leaves_out_the_mirrored_fits_and_the_misses():
    rows = [
        {"outcome": "hand", "joint_error_mm": 6.0, "side_right": True},
        {"outcome": "hand", "joint_error_mm": 60.0, "side_right": False},
        {"outcome": "hand", "joint_error_mm": 8.0, "side_right": True},
        {"outcome": "nothing_found", "joint_error_mm": None, "side_right": None},
    ]
    assert side_right_error(rows) == 7.0
    assert side_right_error(rows[1:2] + rows[3:]) is None


@pytest.mark.parametrize("gap_m", [0.0, 0.03])
def test_a_tracked_sequence_keeps_its_surface_the_gap_behind_the_moving_hand(hand_model, gap_m):
    frames = list(sequence_frames(40, Handedness.LEFT, 31, gap_m, hand_model))
    bare = list(sequence_frames(40, Handedness.LEFT, 31, None, hand_model))
    assert [f.frame_number for f, _ in frames] == list(range(31))
    np.testing.assert_allclose([f.timestamp_ms for f, _ in frames], [1000.0 * i / 30.0 for i in range(31)])
    for i in (0, 30):
        (frame, joints), (plain, same) = frames[i], bare[i]
        np.testing.assert_array_equal(joints, same)  # the same hand, with and without
        k = frame.intrinsics
        v, u = np.nonzero((frame.depth > 0) & (plain.depth == 0))  # the surface, where the bare frame has nothing
        z = frame.depth[v, u].astype(np.float64) * frame.depth_scale
        surface = np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], axis=1)
        assert len(surface) > 1000
        centroid = surface.mean(axis=0)
        normal = np.linalg.svd(surface - centroid, full_matrices=False)[2][-1]
        normal *= -np.sign(normal @ centroid)
        # The hand's mesh, posed as the sequence poses it: its rearmost vertex the gap in
        # front of the plane (1 mm depth steps and stereo noise on the fit).
        pose = SyntheticSource(seed=40, hand=Handedness.LEFT, hand_model=hand_model).pose_at(i)
        vertices = hand_model.pose(pose.local_rotations, pose.bone_scales, pose.cam_from_hand, pose.handedness).vertices
        assert float(np.min((vertices - centroid) @ normal)) == pytest.approx(gap_m, abs=0.006)


def test_a_run_tracks_the_sequences_at_each_gap(tmp_path):
    out = tmp_path / "near.json"
    assert main(["--scenes", "1", "--gaps", "0", "--track-sequences", "1", "--track-frames", "3", "--out", str(out), "--no-progress"]) == 0
    tracked = json.loads(out.read_text())["tracked"]
    assert [row["gap_m"] for row in tracked] == [None, 0.0, 0.02]
    for row in tracked:
        assert row["sequences"] == 2 and row["frames"] == 6 and 0 <= row["frames_with_a_hand"] <= 6
        assert set(row["side_right_at_track_frame"]) == {str(n) for n in SIDE_AT_FRAMES}
        assert row["tracks_at_track_frame"]["16"] == 0  # 3 frames: no track reaches its 16th
        assert row["median_stage_ms"]["segment"] > 0.0  # every frame is segmented
