import numpy as np

from tracker.crop import camera_to_crop, crop_to_camera, crop_window, make_crop
from tracker.types import CameraIntrinsics, Handedness

K = CameraIntrinsics(640, 480, 500.0, 500.0, 320.0, 240.0)


def _plane(z: float) -> np.ndarray:
    return np.full((480, 640), z, np.float32)


def test_crop_window_is_centred_and_sized_by_the_cube():
    centre = np.array([0.05, -0.02, 0.5])
    image_from_crop = crop_window(centre, 0.26, K, 64)
    middle = image_from_crop @ [31.5, 31.5, 1.0]
    np.testing.assert_allclose(middle[:2], [500 * 0.1 + 320, 500 * -0.04 + 240])
    # 64 crop pixels span the cube's width at the centre's depth.
    assert image_from_crop[0, 0] * 64 == np.float64(500 * 0.26 / 0.5)


def test_depth_normalisation_and_background():
    depth = _plane(0.0)
    depth[200:280, 280:360] = 0.55
    crop = make_crop(depth, K, np.array([0.0, 0.0, 0.5]), 0.26)
    inside = crop.depth[28:36, 28:36]
    np.testing.assert_allclose(inside, (0.55 - 0.5) / 0.13, rtol=1e-5)
    assert crop.depth[0, 0] == 1.0  # no measurement -> far face of the cube
    far = make_crop(_plane(2.0), K, np.array([0.0, 0.0, 0.5]), 0.26)
    assert np.all(far.depth == 1.0)  # beyond the cube -> far face


def test_crop_camera_round_trip_and_left_mirroring():
    points = np.random.default_rng(0).normal([0.02, 0.01, 0.6], 0.05, (50, 3))
    for side in (Handedness.RIGHT, Handedness.LEFT):
        crop = make_crop(_plane(0.6), K, np.array([0.02, 0.01, 0.6]), 0.26, side)
        np.testing.assert_allclose(crop_to_camera(camera_to_crop(points, crop), crop), points, atol=1e-6)
    right = make_crop(_plane(0.6), K, np.array([0.0, 0.0, 0.6]), 0.26)
    left = make_crop(_plane(0.6), K, np.array([0.0, 0.0, 0.6]), 0.26, Handedness.LEFT)
    x_right = camera_to_crop(points, right)[:, 0]
    x_left = camera_to_crop(points, left)[:, 0]
    np.testing.assert_allclose(x_left, -x_right, atol=1e-6)
