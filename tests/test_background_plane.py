"""The crop's background plane: a wall or table right behind the hand found and cleared
(``kernels.background_plane``, ``tracker.crop.BackgroundPlane``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kernels.background_plane import _fit, _solve, clear_plane_behind, curve_surface, robust_plane
from tracker.crop import BackgroundPlane, CropFrame, make_crop, resample
from tracker.types import CameraIntrinsics, Handedness

K = CameraIntrinsics(640, 480, 600.0, 600.0, 319.5, 239.5)
PLANE = BackgroundPlane()


def _clear(depth, centre_depth, half_cube=0.13, plane=PLANE):
    p = plane
    return clear_plane_behind(
        np.ascontiguousarray(depth, np.float32), float(centre_depth), float(half_cube), p.band_m, p.min_share, p.max_rms_m, p.min_behind_m,
        p.min_spread, p.min_border, p.clearance_m, p.hypotheses, p.rounds, p.curved_rounds, p.min_concave_radius_m,
    )


def _scene(centre, wall_normal, wall_behind_m, block_half_m=0.035, noise_m=0.0, seed=0):
    """(H, W) float32 metres: a wall through the point ``wall_behind_m`` behind ``centre``
    along the camera's axis, facing ``wall_normal``, and in front of it a box 7 cm across and
    4 cm deep whose front face is 2 cm before ``centre``: a stand-in for a hand. And the
    box's mask."""
    v, u = np.mgrid[: K.height, : K.width].astype(np.float64)
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)
    normal = np.asarray(wall_normal, np.float64) / np.linalg.norm(wall_normal)
    point = np.asarray(centre, np.float64) + np.array([0.0, 0.0, wall_behind_m])
    wall = (point @ normal) / (rays @ normal)
    front = centre[2] - 0.02
    x, y = rays[..., 0] * front, rays[..., 1] * front
    box = (np.abs(x - centre[0]) < block_half_m) & (np.abs(y - centre[1]) < block_half_m) & (front < wall)
    depth = np.where(box, front, wall)
    depth += np.random.default_rng(seed).normal(0.0, noise_m, depth.shape)
    return depth.astype(np.float32), box


def test_the_fit_is_least_squares():
    # Cramer's rule on the normal equations against numpy's least squares, on noisy points of
    # a plane over part of a crop.
    rng = np.random.default_rng(3)
    ii, jj = rng.uniform(0, 63, 500), rng.uniform(0, 63, 500)
    inverse = 0.004 * (ii - 31.5) - 0.002 * (jj - 31.5) + 2.1 + rng.normal(0, 0.01, 500)
    inliers = rng.uniform(size=500) < 0.7
    a, b, c, ok = _fit(ii, jj, inverse, inliers, 31.5)
    design = np.stack([ii - 31.5, jj - 31.5, np.ones(500)], axis=1)
    expected = np.linalg.lstsq(design[inliers], inverse[inliers], rcond=None)[0]
    assert ok
    np.testing.assert_allclose([a, b, c], expected, rtol=1e-9, atol=1e-12)


def _table_seen_along(share_standing_out, camera_height_m=0.1, seed=5):
    """Grid points of a table seen along it from ``camera_height_m`` above it, with
    ``share_standing_out`` of them 3-8 cm above it (a hand and forearm resting on it):
    (ii, jj, z) float64 and which stand out. The table's plane is y = camera height in the
    camera frame, so 1 / z = (j - cy) / (f * height) exactly."""
    rng = np.random.default_rng(seed)
    n = 3000
    ii, jj = rng.uniform(0, 212, n), rng.uniform(85, 159, n)
    table = 200.0 * camera_height_m / (jj - 79.5)  # f = 200 px, cy = 79.5
    up = rng.uniform(size=n) < share_standing_out
    # Raised by h along the table's normal: on a ray at row j a point h above the table
    # meets it at depth f (height - h) / (j - cy).
    z = np.where(up, 200.0 * (camera_height_m - rng.uniform(0.03, 0.08, n)) / (jj - 79.5), table)
    return ii, jj, z, up


@pytest.mark.parametrize("share", [0.1, 0.25, 0.35])
def test_the_robust_plane_is_the_table_and_not_the_hand_on_it(share):
    # The hand's own share of the points draws a least-squares plane towards it; the plane
    # most points lie near is the table's, whatever stands on it.
    ii, jj, z, up = _table_seen_along(share)
    centre = 106.0
    a, b, c, inliers, relief, found = robust_plane(ii, jj, z, np.arange(len(z)), centre, 0.015, 48, 5, 6, 0.0, 0.0, True)
    assert found
    assert np.array_equal(inliers, ~up)  # every point of the table, none of the hand
    # The table's inverse depth, 1 / z = (j - 79.5) / 20: a = 0, b = 0.05 per row.
    np.testing.assert_allclose([a, b, c], [0.0, 0.05, (centre - 79.5) / 20.0], atol=1e-9)
    assert np.all(relief[up] > 0.03)
    # Least squares over them all is not the table: the hand's points pull it off by more
    # than the band on many of the table's points.
    design = np.stack([ii - centre, jj - centre, np.ones_like(ii)], axis=1)
    fit = np.linalg.lstsq(design, 1.0 / z, rcond=None)[0]
    assert np.count_nonzero(np.abs(1.0 / (design[~up] @ fit) - z[~up]) >= 0.015) > 0.1 * np.count_nonzero(~up)


def test_points_beyond_the_horizon_stand_out_without_bound_or_end_the_search():
    # An arm raised above a table seen along it: rays above the table's horizon (row 79.5
    # here) never meet it.
    ii, jj, z, up = _table_seen_along(0.0)
    raised = np.arange(200)
    jj[raised] = np.linspace(20.0, 70.0, 200)
    z[raised] = 0.5
    a, b, c, inliers, relief, found = robust_plane(ii, jj, z, np.arange(len(z)), 106.0, 0.015, 48, 5, 6, 0.0, 0.0, True)
    assert found and np.all(relief[raised] == np.inf) and not inliers[raised].any() and inliers[200:].all()
    assert not robust_plane(ii, jj, z, np.arange(len(z)), 106.0, 0.015, 48, 5, 6, 0.0, 0.0, False)[5]


def test_planes_too_near_the_offset_are_not_tried():
    # The crop's use: only planes passing min_behind behind the cube's centre at the middle
    # pixel count, so a table in front of that never wins.
    ii, jj, z, _ = _table_seen_along(0.0)
    depth_at_middle = 20.0 / (106.0 - 79.5)  # 0.755 m
    assert robust_plane(ii, jj, z, np.arange(len(z)), 106.0, 0.015, 48, 5, 6, depth_at_middle - 0.05, 0.01, True)[5]
    assert not robust_plane(ii, jj, z, np.arange(len(z)), 106.0, 0.015, 48, 5, 6, depth_at_middle, 0.01, True)[5]


def test_points_on_a_line_give_no_plane():
    ii = np.arange(10.0)
    assert not _fit(ii, 2.0 * ii, np.ones(10), np.ones(10, bool), 31.5)[3]
    assert not _fit(ii[:2], ii[:2], np.ones(2), np.ones(2, bool), 31.5)[3]


def test_a_wall_behind_a_block_is_cleared_and_the_block_kept_golden():
    # On the optical axis, a wall 4 cm behind the centre: every wall pixel goes, exactly the
    # block stays, and its depths are untouched.
    centre = np.array([0.0, 0.0, 0.5])
    depth, box = _scene(centre, (0.0, 0.0, -1.0), 0.04)
    crop = make_crop(depth, K, centre, 0.26)
    cleared = make_crop(depth, K, centre, 0.26, background_plane=PLANE)
    block = crop.depth < 0.0  # the block's front is 2 cm before the centre: -0.154 normalised
    assert block.sum() == 18 * 18  # 7 cm at 0.48 m through a 26 cm cube at 0.5 m onto 64 pixels
    np.testing.assert_array_equal(cleared.depth[block], crop.depth[block])
    assert np.all(cleared.depth[~block] == 1.0)
    assert np.count_nonzero(crop.depth[~block] < 1.0) == 64 * 64 - 18 * 18  # the wall filled the rest


def test_a_table_seen_along_it_is_cleared_though_the_arm_rises_past_its_horizon():
    # A camera 10 cm above a table looks along it at a hand (a box 3 cm tall) resting on it
    # 38 cm away, its forearm rising behind it above the camera's height: that part of the
    # crop lies beyond the table's horizon, where no ray meets it. It stands out of the
    # plane, which is still the table's; and the table, which crosses the crop as a band
    # reaching only its sides, is wide enough along the crop's edge.
    height = 0.10
    v, u = np.mgrid[: K.height, : K.width].astype(np.float64)
    across, down = (u - K.cx) / K.fx, (v - K.cy) / K.fy
    depth = np.where(down > 0, height / np.maximum(down, 1e-9), 0.0)  # the table, y = height (y down)
    hand = (np.abs(across * 0.38) < 0.045) & (down * 0.38 > height - 0.03) & (down * 0.38 < height)
    arm = (np.abs(across * 0.42) < 0.03) & (down * 0.42 > -0.06) & (down * 0.42 <= height - 0.03)
    depth = np.where(arm & ((depth == 0) | (depth > 0.42)), 0.42, depth)
    depth = np.where(hand, 0.38, depth).astype(np.float32)
    centre = np.array([0.0, 0.085, 0.395])
    crop = make_crop(depth, K, centre, 0.26, frame=CropFrame.RAY)
    cleared = make_crop(depth, K, centre, 0.26, frame=CropFrame.RAY, background_plane=PLANE)
    measured = crop.depth < 1.0
    on_hand = resample(hand.astype(np.uint8), crop.image_from_crop, 64, 0).astype(bool) & measured
    on_arm = resample(arm.astype(np.uint8), crop.image_from_crop, 64, 0).astype(bool) & measured
    table = measured & ~on_hand & ~on_arm
    assert on_hand.sum() > 150 and on_arm.sum() > 150 and table.sum() > 800
    assert np.all(cleared.depth[table] == 1.0)
    np.testing.assert_array_equal(cleared.depth[on_arm], crop.depth[on_arm])
    # The box's lowest rows, where its front meets the table, lie within the clearance (8 mm
    # in depth) of it and go with it, as a finger's underside does: a row or two of pixels.
    kept = cleared.depth[on_hand] == crop.depth[on_hand]
    assert kept.mean() > 0.85 and np.all(cleared.depth[on_hand][~kept] == 1.0)


@pytest.mark.parametrize("frame", list(CropFrame))
@pytest.mark.parametrize("normal", [(0.0, 0.0, -1.0), (0.0, -0.5, -0.866), (0.3, 0.3, -0.906)], ids=["wall", "table", "slanted"])
def test_walls_and_tables_at_a_slant_off_the_axis_go_in_either_crop_frame(frame, normal):
    # Off the optical axis (the ray frame's virtual camera turned 17 degrees), tilted by up
    # to 30 degrees, and with a stereo camera's noise at half a metre (1 mm): the plane's
    # inverse depth is linear in either crop's pixels, and noise and the pixels'
    # nearest-neighbour steps stay well inside the 1.5 cm band.
    centre = np.array([0.12, -0.08, 0.45])
    depth, box = _scene(centre, normal, 0.06, noise_m=0.001, seed=1)
    crop = make_crop(depth, K, centre, 0.26, frame=frame)
    cleared = make_crop(depth, K, centre, 0.26, frame=frame, background_plane=PLANE)
    block = resample(box, crop.image_from_crop, 64, 0)
    assert 250 < block.sum() < 400  # about 18 x 18, as on the axis
    np.testing.assert_array_equal(cleared.depth[block], crop.depth[block])
    wall = crop.measured & ~block
    # Only the few noisy pixels along the block's outline where the wall blends in may stay.
    assert np.mean(cleared.depth[wall] == 1.0) > 0.99


def test_a_left_crop_is_cleared_as_the_mirrored_right_one():
    centre = np.array([0.05, 0.02, 0.5])
    depth, _ = _scene(centre, (0.2, -0.5, -0.84), 0.05, noise_m=0.001)
    right = make_crop(depth, K, centre, 0.26, Handedness.RIGHT, frame=CropFrame.RAY, background_plane=PLANE)
    left = make_crop(depth, K, centre, 0.26, Handedness.LEFT, frame=CropFrame.RAY, background_plane=PLANE)
    np.testing.assert_array_equal(left.depth, right.depth[:, ::-1])


def test_a_flat_hand_over_nothing_is_no_background():
    # A flat plate through the centre with nothing behind it is a plane filling much of the
    # crop, but it runs through the centre, where segmentation puts the visible hand.
    centre = np.array([0.0, 0.0, 0.5])
    depth = np.zeros((K.height, K.width), np.float32)
    depth[190:290, 270:370] = 0.5  # 17 cm at 0.5 m: most of the crop
    crop = make_crop(depth, K, centre, 0.26)
    cleared, found = _clear(crop.depth, 0.5)
    assert not found
    np.testing.assert_array_equal(cleared, crop.depth)
    np.testing.assert_array_equal(make_crop(depth, K, centre, 0.26, background_plane=PLANE).depth, crop.depth)


def test_a_flat_hand_and_its_forearm_in_one_plane_are_no_background():
    # A flat hand 9 x 18 cm and its forearm 6 cm wide, one slanted plane over nothing, with
    # the crop centred 1.5 cm in front of it (where segmentation's centre may sit on a hand
    # seen so): flat, big and wide enough, and behind the centre, but it reaches the crop's
    # edge with the forearm only.
    centre = np.array([0.0, 0.0, 0.5])
    v, u = np.mgrid[: K.height, : K.width].astype(np.float64)
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)
    normal = np.array([0.0, 0.5, -0.866])
    point = centre + np.array([0.0, 0.0, 0.015])
    z = (point @ normal) / (rays @ normal)
    x, y = rays[..., 0] * z, rays[..., 1] * z
    hand = (np.abs(x) < 0.045) & (np.abs(y + 0.02) < 0.09)
    forearm = (np.abs(x - 0.01) < 0.03) & (y > 0.0) & (y < 0.4)
    depth = np.where(hand | forearm, z, 0.0).astype(np.float32)
    crop = make_crop(depth, K, centre, 0.26)
    assert crop.measured.mean() > 0.25
    assert not _clear(crop.depth, 0.5)[1]
    assert _clear(crop.depth, 0.5, plane=dataclasses.replace(PLANE, min_border=0.0))[1]  # what the edge rule tells apart


def _ball_behind(radius_m, behind_m, hand=True):
    """(H, W) float32 metres: a ball of ``radius_m`` whose front lies ``behind_m`` behind the
    point 0.5 m down the optical axis, seen from the camera, with a block 6.5 cm across (a
    stand-in for a hand) 1 cm before that point."""
    v, u = np.mgrid[: K.height, : K.width].astype(np.float64)
    x, y = (u - K.cx) / K.fx * 0.6, (v - K.cy) / K.fy * 0.6
    ball = 0.5 + behind_m + radius_m - np.sqrt(np.clip(radius_m**2 - x**2 - y**2, 0, None))
    depth = np.where(x**2 + y**2 < radius_m**2, ball, 0.0).astype(np.float32)
    if hand:
        depth[200:280, 280:360] = 0.49
    return depth


def test_the_front_of_a_body_behind_the_hand_is_cleared_and_the_hand_kept():
    # A torso-sized ball (20 cm radius) 4 cm behind the centre fills the crop and reaches its
    # edge all round, but its curve is no plane: a plane through it holds a ring of it within
    # 1.5 cm, about a third, and clears that only. Grown into the curved surface, all of it
    # goes, and the block in front stays as it was.
    centre = np.array([0.0, 0.0, 0.5])
    depth = _ball_behind(0.2, 0.04)
    crop = make_crop(depth, K, centre, 0.26)
    block = crop.depth < 0.0  # the block lies 1 cm before the centre, the ball 4 cm behind
    assert crop.measured.mean() > 0.8 and 0.05 < block.mean() < 0.15
    cleared, found = _clear(crop.depth, 0.5)
    assert found
    np.testing.assert_array_equal(cleared[block], crop.depth[block])
    assert np.all(cleared[~block] == 1.0)
    planes_only, _ = _clear(crop.depth, 0.5, plane=dataclasses.replace(PLANE, curved_rounds=0))
    assert np.count_nonzero(planes_only[~block] < 1.0) > 0.4 * np.count_nonzero(~block)


def test_a_ball_behind_the_hand_within_the_crop_is_no_background():
    # A ball of 15 cm radius 6 cm behind the centre lies within the crop but for its edge:
    # curved as a body's front is, and fitted as well, but something held, not what the
    # hand is in front of.
    centre = np.array([0.0, 0.0, 0.5])
    crop = make_crop(_ball_behind(0.15, 0.06), K, centre, 0.26)
    assert crop.measured.mean() > 0.5
    _, found = _clear(crop.depth, 0.5)
    assert not found


def test_a_curved_surface_is_recovered_exactly_from_a_strip_of_it():
    # Points of a surface whose inverse depth is quadratic in the pixel coordinates, started
    # from the inliers of a strip across it (what a plane fits of it): the fit takes the whole
    # surface, the coefficients to rounding, and the block in front stays out.
    ii, jj = np.meshgrid(np.arange(64.0), np.arange(64.0))
    ii, jj = ii.ravel(), jj.ravel()
    x, y = (ii - 31.5) / 31.5, (jj - 31.5) / 31.5
    # A body's front: the inverse depth falls off every way from the middle, as depth grows.
    coefficients = np.array([1.0 / 0.56, 0.02, -0.03, -0.09, 0.01, -0.05])
    z = 1.0 / (coefficients[0] + coefficients[1] * x + coefficients[2] * y + coefficients[3] * x * x + coefficients[4] * x * y + coefficients[5] * y * y)
    block = (np.abs(x) < 0.3) & (np.abs(y) < 0.3)
    z[block] -= 0.05
    strip = (np.abs(y - 0.6) < 0.15) & ~block
    fitted, inliers, relief, found = curve_surface(ii, jj, z, strip, 31.5, 31.5, 0.015, 8, True, 0.0)
    assert found
    np.testing.assert_allclose(fitted, coefficients, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(inliers, ~block)
    np.testing.assert_allclose(relief[block], 0.05, atol=1e-12)
    # The same surface bent the other way, towards the camera (what a plane and an arm rising
    # from it come to), is refused beyond the bend allowed.
    concave = coefficients * np.array([1, 1, 1, -1, -1, -1])
    z_concave = 1.0 / (concave[0] + concave[1] * x + concave[2] * y + concave[3] * x * x + concave[4] * x * y + concave[5] * y * y)
    assert not curve_surface(ii, jj, z_concave, strip, 31.5, 31.5, 0.015, 8, True, 0.0)[3]
    assert curve_surface(ii, jj, z_concave, strip, 31.5, 31.5, 0.015, 8, True, 0.1)[3]
    # Too few points, or points on one line, fix no quadratic; no round fits none.
    assert not curve_surface(ii, jj, z, strip, 31.5, 31.5, 0.015, 0, True, 0.0)[3]
    assert not curve_surface(ii, jj, z, np.arange(len(z)) < 5, 31.5, 31.5, 0.015, 8, True, 0.0)[3]
    assert not curve_surface(ii, jj, z, jj == 10, 31.5, 31.5, 0.015, 8, True, 0.0)[3]


def test_the_small_solver_pivots_and_refuses_singular_systems():
    rng = np.random.default_rng(4)
    m = rng.normal(size=(6, 6))
    m[0, 0] = 0.0  # needs a row swap
    v = rng.normal(size=6)
    x, ok = _solve(m.copy(), v.copy())
    assert ok
    np.testing.assert_allclose(x, np.linalg.solve(m, v), rtol=1e-10)
    m[5] = m[4]
    assert not _solve(m.copy(), v.copy())[1]


def test_too_little_plane_or_too_near_is_kept():
    centre = np.array([0.0, 0.0, 0.5])
    # A wall only in one corner of the crop: too little of it.
    depth, _ = _scene(centre, (0.0, 0.0, -1.0), 0.05)
    depth[:, : int(K.cx) + 40] = 0.0
    depth[: int(K.cy) + 40] = 0.0
    crop = make_crop(depth, K, centre, 0.26)
    assert 0.05 < (crop.measured & (crop.depth > 0)).mean() < PLANE.min_share
    assert not _clear(crop.depth, 0.5)[1]
    # A wall passing less than 1 cm behind the centre: the centre is on the wall, no hand before it.
    depth, _ = _scene(centre, (0.0, 0.0, -1.0), 0.005, block_half_m=0.0)
    assert not _clear(make_crop(depth, K, centre, 0.26).depth, 0.5)[1]


def test_a_board_as_narrow_as_a_forearm_behind_the_hand_is_kept():
    # A flat strip 6 cm wide (a forearm's width, and flatter than one) runs across the crop
    # 4 cm behind the centre: plane enough and a fifth of the crop, but too narrow for a wall.
    centre = np.array([0.0, 0.0, 0.5])
    depth, _ = _scene(centre, (0.0, 0.0, -1.0), 0.04)
    x = (np.arange(K.width) - K.cx) / K.fx * 0.54
    depth[:, np.abs(x) > 0.03] = 0.0
    depth[220:260, 300:340] = 0.48
    crop = make_crop(depth, K, centre, 0.26)
    board = crop.measured & (crop.depth > 0.2)
    assert board.mean() > PLANE.min_share
    assert not _clear(crop.depth, 0.5)[1]
    # Wider, as a wall seen through a gap, it goes.
    depth, _ = _scene(centre, (0.0, 0.0, -1.0), 0.04)
    depth[:, np.abs(x) > 0.05] = 0.0
    assert _clear(make_crop(depth, K, centre, 0.26).depth, 0.5)[1]


def test_a_steep_wall_with_the_arm_across_the_back_half_is_found():
    # A wall slanting 60 degrees away to one side: its near part is as near as the hand and
    # its far part leaves the cube, and an arm runs to the far side. The plane is still found
    # among its points, and the hand and arm in front are kept.
    centre = np.array([0.0, 0.0, 0.5])
    depth, box = _scene(centre, (0.866, 0.0, -0.5), 0.05)
    v, u = np.mgrid[: K.height, : K.width]
    arm = (np.abs(v - K.cy) < 25) & (u > K.cx) & (u < K.cx + 200)
    depth[arm] = np.minimum(depth[arm], 0.5 + (u[arm] - K.cx) / 200 * 0.05)
    crop = make_crop(depth, K, centre, 0.26)
    cleared, found = _clear(crop.depth, 0.5)
    assert found
    kept = resample(box | arm, crop.image_from_crop, 64, 0)
    np.testing.assert_array_equal(cleared[kept], crop.depth[kept])


def test_noise_rougher_than_a_plane_is_kept():
    # A wall with 1 cm of noise: no plane to 6 mm RMS, whatever lies in front of it (in the
    # crop as cut, before its noise smoothing, which takes 1 cm to about 4 mm: a wall then).
    centre = np.array([0.0, 0.0, 0.5])
    depth, _ = _scene(centre, (0.0, 0.0, -1.0), 0.05, noise_m=0.01, seed=2)
    assert not _clear(make_crop(depth, K, centre, 0.26, smooth_noise=False).depth, 0.5)[1]


def test_pixels_past_the_image_and_empty_crops_are_left_alone():
    centre = np.array([0.0, 0.0, 0.5])
    empty = np.ones((64, 64), np.float32)
    cleared, found = _clear(empty, 0.5)
    assert not found and np.all(cleared == 1.0)
    marked = empty.copy()
    marked[:, :20] = -1.0  # past the image's edge: not measured, and kept as marked
    depth, _ = _scene(centre, (0.0, 0.0, -1.0), 0.05)
    crop = make_crop(depth, K, centre, 0.26).depth.copy()
    crop[:, :20] = -1.0
    cleared, found = _clear(crop, 0.5)
    assert found
    assert np.all(cleared[:, :20] == -1.0)
