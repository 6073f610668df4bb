import dataclasses

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from conftest import point_to_mesh
from kernels.raster import render_mesh
from tracker.skeleton import NUM_PARTS
from tracker.synth.scene import SceneConfig, SceneLabel, render_sample

CLEAN = SceneConfig(noise_probability=0.0, body_probability=0.0, table_probability=0.0)


def _back_project(sample, pixels_vu):
    k = sample.intrinsics
    z = sample.depth[pixels_vu[:, 0], pixels_vu[:, 1]].astype(np.float64) * sample.depth_scale
    x = (pixels_vu[:, 1] - k.cx) / k.fx * z
    y = (pixels_vu[:, 0] - k.cy) / k.fy * z
    return np.stack([x, y, z], axis=1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rendered_depth_lies_on_the_mesh_and_mesh_coords_match(hand_model, seed):
    sample = render_sample(hand_model, CLEAN, seed)
    pixels = np.argwhere(sample.mask & (sample.depth > 0))
    pixels = pixels[np.random.default_rng(0).permutation(len(pixels))[:300]]
    points = _back_project(sample, pixels)
    distance, face, closest = point_to_mesh(points, sample.vertices, hand_model.faces)
    # Only the 1 mm depth unit separates a pixel from the surface (<= 0.5 mm along the ray).
    assert np.median(distance) < 1e-3

    # Mesh coordinates: interpolate the vertex coordinates at the closest surface point,
    # found independently of the renderer, and compare with the rendered map.
    corners = sample.vertices[hand_model.faces[face]].astype(np.float64)
    m = np.stack([corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]], axis=2)
    bary12 = np.stack([np.linalg.lstsq(m[i], closest[i] - corners[i, 0], rcond=None)[0] for i in range(len(face))])
    weights = np.column_stack([1 - bary12.sum(1), bary12])
    expected = np.einsum("pk,pkc->pc", weights, hand_model.mesh_coords[hand_model.faces[face]])
    rendered = sample.mesh_coords[pixels[:, 0], pixels[:, 1]]
    error = np.linalg.norm(rendered - expected, axis=1)
    # The map changes by ~0.1 grid cell per mm on the surface; the sub-mm depth quantisation
    # moves the comparison point by about that much at worst.
    assert np.median(error) < 0.05 and np.percentile(error, 90) < 0.2


def test_mesh_coords_are_defined_exactly_on_the_hand(hand_model):
    sample = render_sample(hand_model, SceneConfig(), 4)
    valid = np.all(np.isfinite(sample.mesh_coords), axis=-1)
    np.testing.assert_array_equal(valid, sample.mask)
    assert np.all((sample.mesh_coords[valid] >= 0) & (sample.mesh_coords[valid] < 16))
    np.testing.assert_array_equal(sample.mask, (sample.labels >= 0) & (sample.labels < NUM_PARTS))


@pytest.mark.parametrize("spin_deg", [0.0, 70.0, 180.0, 250.0])
@pytest.mark.parametrize("facing", ["palm", "back"])
def test_joints_project_inside_the_silhouette_of_an_open_hand(hand_model, spin_deg, facing):
    # An open hand facing the camera hides none of its joints.
    cam_from_hand = np.eye(4)
    flip = [0.0, 0.0, 0.0] if facing == "back" else [0.0, np.pi, 0.0]
    # The hand frame's +y is dorsal; turning it to -z (towards the camera) shows the back.
    base = Rotation.from_euler("x", 90, degrees=True) * Rotation.from_rotvec(flip)
    cam_from_hand[:3, :3] = (Rotation.from_euler("z", spin_deg, degrees=True) * base).as_matrix()
    cam_from_hand[:3, 3] = [0.0, 0.0, 0.45]
    posed = hand_model.pose(cam_from_hand=cam_from_hand)
    depth, face_index, _ = render_mesh(posed.vertices, posed.faces, 500.0, 500.0, 320.0, 240.0, 480, 640)
    # Fingertip keypoints sit on the tip surface: allow one pixel of silhouette.
    silhouette = cv2.dilate((face_index >= 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    uv = posed.joints[:, :2] / posed.joints[:, 2:] * 500.0 + [320.0, 240.0]
    inside = silhouette[np.round(uv[:, 1]).astype(int), np.round(uv[:, 0]).astype(int)]
    assert inside.all(), f"joints outside the silhouette: {np.flatnonzero(~inside)}"


def test_same_seed_same_sample(hand_model):
    a, b = render_sample(hand_model, SceneConfig(), 11), render_sample(hand_model, SceneConfig(), 11)
    for field in ("depth", "mask", "labels", "vertices", "joints", "vertex_visible"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    np.testing.assert_array_equal(np.nan_to_num(a.mesh_coords, nan=-1), np.nan_to_num(b.mesh_coords, nan=-1))
    c = render_sample(hand_model, SceneConfig(), 12)
    assert not np.array_equal(a.depth, c.depth)


def test_forearm_and_distractors_are_rendered_and_labelled(hand_model):
    config = dataclasses.replace(SceneConfig(), body_probability=1.0, table_probability=1.0)
    seen = set()
    for seed in range(6):
        seen |= set(np.unique(render_sample(hand_model, config, seed).labels).tolist())
    assert {SceneLabel.FOREARM, SceneLabel.BODY, SceneLabel.TABLE} <= seen


def test_the_arm_reaches_away_from_the_camera_or_across_and_runs_on(hand_model):
    from tracker.synth.scene import FOREARM_REFERENCE_LENGTH_M, arm_rise_m, posed_forearm

    config = dataclasses.replace(CLEAN, render_window_m=None)
    rises, lengths = [], []
    for seed in range(40):
        sample = render_sample(hand_model, config, seed)
        rises.append(arm_rise_m(sample.pose))
        arm, _ = posed_forearm(sample.pose, config)
        lengths.append(float(np.linalg.norm(arm[-1] - sample.pose.cam_from_hand[:3, 3])))
    # No elbow more than 5 cm nearer the camera than the wrist; most arms recede.
    assert max(rises) <= config.max_arm_rise_m and np.mean(np.array(rises) < 0) > 0.5
    # Forearm and upper arm in one (55 cm for a hand of template size, scaled with the hand).
    assert min(lengths) > 0.4 and FOREARM_REFERENCE_LENGTH_M < config.forearm_length_m
    # The rise is measured where the tube's axis is, a forearm's length along it.
    pose = render_sample(hand_model, config, 3).pose
    reference = dataclasses.replace(config, forearm_length_m=FOREARM_REFERENCE_LENGTH_M)
    cap = posed_forearm(pose, reference)[0][-1]
    assert arm_rise_m(pose) == pytest.approx(pose.cam_from_hand[2, 3] - cap[2], abs=1e-9)


def test_a_desk_or_wall_never_cuts_through_the_hand_or_the_arm(hand_model, monkeypatch):
    import tracker.synth.scene as scene
    from tracker.synth.scene import plane_clear_of, posed_forearm

    # Moved back along its normal just far enough: the nearest point then rests on it.
    points = np.array([[0.0, 0.0, 0.5], [0.0, 0.1, 0.5]])
    moved = plane_clear_of(np.array([0.0, 0.05, 0.0]), np.array([0.0, -1.0, 0.0]), points)
    assert moved[1] == pytest.approx(0.1)
    assert np.all(plane_clear_of(np.array([0.0, 0.3, 0.0]), np.array([0.0, -1.0, 0.0]), points) == [0.0, 0.3, 0.0])
    planes = []
    composite = scene.composite_plane
    monkeypatch.setattr(scene, "composite_plane", lambda point, normal, *args: planes.append((point, normal)) or composite(point, normal, *args))
    config = dataclasses.replace(CLEAN, table_probability=1.0)
    drawn = 0
    for seed in range(30):
        planes.clear()
        sample = render_sample(hand_model, config, seed)
        drawn += len(planes)
        for point, normal in planes:
            occupied = np.vstack([sample.vertices, posed_forearm(sample.pose, config)[0]])
            assert np.min((occupied - point) @ normal) >= -1e-9, seed
            assert -point @ normal > 0  # the camera is in front of it
    assert drawn >= 20  # (a plane the camera would be behind is left out)


def test_noise_changes_depth_but_not_ground_truth(hand_model):
    clean = render_sample(hand_model, CLEAN, 21)
    noisy = render_sample(hand_model, dataclasses.replace(CLEAN, noise_probability=1.0), 21)
    np.testing.assert_array_equal(clean.mask, noisy.mask)
    np.testing.assert_array_equal(clean.joints, noisy.joints)
    changed = np.mean(clean.depth[clean.mask] != noisy.depth[clean.mask])
    assert changed > 0.2


def test_depth_beyond_range_or_16_bits_is_no_measurement():
    from tracker.synth.scene import to_depth_units

    depth = np.array([[0.0, 0.5, 0.6553, 0.70, 2.5, -0.1]])
    # 10 micrometre units: 16 bits reach 0.65535 m; beyond it, as beyond max_depth_m, 0.
    np.testing.assert_array_equal(to_depth_units(depth, 1e-5, 2.0), [[0, 50000, 65530, 0, 0, 0]])
    np.testing.assert_array_equal(to_depth_units(depth, 1e-3, 2.0), [[0, 500, 655, 700, 0, 0]])
