"""The near-body benchmark (benchmarks.near_body): its torso lies where it says, and it writes
its table."""

import json

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from benchmarks.near_surfaces import SCENE_STREAM
from benchmarks.near_body import Torso, front_depth, gap_to, main, planes_only, scene_at, torso_backdrop, torso_behind
from kernels.raster import composite_ellipsoid
from tracker.hand_model import HandModel
from tracker.synth.dataset import sample_seed
from tracker.sources import SyntheticSource
from tracker.types import CameraIntrinsics, Handedness


@pytest.fixture(scope="module")
def hand_model():
    return HandModel.load()


def test_the_torso_front_is_where_the_renderer_draws_it():
    # front_depth along pixel rays against the renderer's own per-pixel solution.
    k = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    torso = Torso(np.array([0.05, 0.1, 0.8]), Rotation.from_euler("z", 15, degrees=True).as_matrix(), np.array([0.18, 0.3, 0.12]))
    depth = np.zeros((k.height, k.width), np.float32)
    composite_ellipsoid(torso.centre, torso.rotation, torso.radii, k.fx, k.fy, k.cx, k.cy, depth, np.zeros(depth.shape, np.int16), np.int16(1))
    v, u = np.mgrid[: k.height, : k.width]
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones(u.shape)], axis=-1).reshape(-1, 3)
    z = front_depth(torso, rays).reshape(depth.shape)
    assert np.array_equal(np.isnan(z), depth == 0) and 0.1 < (depth > 0).mean() < 0.9  # edges inside the image
    np.testing.assert_allclose(z[depth > 0], depth[depth > 0], rtol=1e-6)  # float32 z-buffer


@pytest.mark.parametrize("gap_m", [0.0, 0.04])
def test_the_torso_lies_the_gap_behind_the_hand(hand_model, gap_m):
    depth, sample = scene_at(3, gap_m, hand_model)
    bare, same = scene_at(3, None, hand_model)
    np.testing.assert_array_equal(sample.joints, same.joints)  # the same scene, with and without
    torso = torso_behind(sample.vertices, gap_m, np.random.default_rng([sample_seed(SCENE_STREAM, 3), 2]))  # as scene_at draws it
    assert gap_to(torso, sample.vertices) == pytest.approx(gap_m, abs=1e-6)
    # The torso shows round the hand: many more measured pixels than the bare scene's.
    assert np.count_nonzero(depth) > np.count_nonzero(bare) + 10_000


def test_a_run_writes_each_gap_with_both_settings(tmp_path):
    out = tmp_path / "body.json"
    assert main(["--scenes", "1", "--gaps", "0", "--track-sequences", "0", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert [(row["gap_m"], row["setting"]) for row in result["rows"]] == [(None, "curved"), (None, "planes only"), (0.0, "curved"), (0.0, "planes only")]
    assert all(row["frames"] == 1 and len(row["per_scene"]) == 1 for row in result["rows"])
    assert all(row["median_stage_ms"]["segment"] > 0 for row in result["rows"])  # every frame is segmented
    assert result["config"]["first_scene"] == 0
    picture = cv2.imread(str(out.with_suffix(".png")))
    assert picture is not None and picture.shape[0] == 6 * 192  # six scenes, a row each


def test_planes_only_turns_the_curved_surfaces_off_and_nothing_else():
    class Tracker:
        from tracker.pipeline import TrackerConfig

        config = TrackerConfig()

    tracker = Tracker()
    before = tracker.config
    planes_only(tracker)
    assert tracker.config.segment.relief_curved_rounds == 0 and tracker.config.background_plane.curved_rounds == 0
    assert before.segment.relief_curved_rounds > 0 and before.background_plane.curved_rounds > 0
    assert before.segment.relief_local_radius_m > 0
    assert tracker.config.segment == type(before.segment)(**{**vars(before.segment), "relief_curved_rounds": 0, "relief_local_radius_m": 0.0})


@pytest.mark.parametrize("gap_m", [0.0, 0.02])
def test_a_sequence_torso_is_drawn_once_and_kept_the_gap_behind_the_moving_hand(hand_model, gap_m):
    source = SyntheticSource(seed=40, hand=Handedness.RIGHT, hand_model=hand_model)
    k = source.intrinsics
    poses = [source.pose_at(i) for i in (0, 30)]
    hands = [hand_model.pose(p.local_rotations, p.bone_scales, p.cam_from_hand, p.handedness) for p in poses]
    add = torso_backdrop(np.random.default_rng(1), hands, k, 3.0)
    sizes = []
    for posed in hands:
        depth = np.zeros((k.height, k.width), np.float32)
        add(depth, posed, gap_m)
        # The torso's front under each vertex's pixel: the least depth behind the hand is
        # the gap, to the pixel's size on the curve (a few millimetres).
        u = np.round(posed.vertices[:, 0] / posed.vertices[:, 2] * k.fx + k.cx).astype(int)
        v = np.round(posed.vertices[:, 1] / posed.vertices[:, 2] * k.fy + k.cy).astype(int)
        inside = (u >= 0) & (u < k.width) & (v >= 0) & (v < k.height)
        behind = depth[v[inside], u[inside]] - posed.vertices[inside, 2]
        assert np.min(behind[depth[v[inside], u[inside]] > 0]) == pytest.approx(gap_m, abs=0.004)
        sizes.append(np.count_nonzero(depth))
    assert min(sizes) > 20_000  # the same torso, whole, in both frames


def test_a_run_tracks_the_sequences_with_both_settings(tmp_path):
    out = tmp_path / "body.json"
    assert main(["--scenes", "1", "--gaps", "0", "--track-sequences", "1", "--track-frames", "2", "--out", str(out), "--no-progress"]) == 0
    tracked = json.loads(out.read_text())["tracked"]
    assert [(row["setting"], row["gap_m"]) for row in tracked] == [(s, z) for s in ("curved", "planes only") for z in (None, 0.0, 0.02)]
    assert all(row["frames"] == 4 for row in tracked)  # a right and a left hand, 2 frames each
