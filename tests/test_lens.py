"""Lens models against librealsense's own (de)projection, and the pinhole view end to end."""

import dataclasses

import numpy as np
import pytest

from tracker.lens import distort, pinhole_view, project, undistort
from tracker.types import CameraIntrinsics, DepthFrame, DistortionModel

# Of the size an SR300/SR305 depth stream reports (inverse Brown-Conrady): points near the
# corners move by several percent.
SR305_LIKE = (0.098, 0.203, 0.003, 0.003, -0.112)
FISHEYE_LIKE = (-0.01, 0.02, -0.005, 0.001, 0.0)
MODELS = [
    (DistortionModel.INVERSE_BROWN_CONRADY, SR305_LIKE),
    (DistortionModel.BROWN_CONRADY, (-0.05, 0.02, 0.001, -0.002, 0.003)),
    (DistortionModel.MODIFIED_BROWN_CONRADY, (0.04, -0.03, 0.002, 0.001, 0.01)),
    (DistortionModel.KANNALA_BRANDT4, FISHEYE_LIKE),
    (DistortionModel.KANNALA_BRANDT4, (0.0,) * 5),  # the bare equidistant fisheye
]


def _intrinsics(model=DistortionModel.NONE, coeffs=(0.0,) * 5) -> CameraIntrinsics:
    return CameraIntrinsics(640, 480, 475.0, 476.0, 318.5, 242.0, model, coeffs)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.linspace(0, 639, 9), np.linspace(0, 479, 7))
    k = _intrinsics()
    return ((u - k.cx) / k.fx).ravel(), ((v - k.cy) / k.fy).ravel()


@pytest.mark.parametrize("model,coeffs", MODELS)
def test_distort_and_undistort_are_inverses_over_the_image(model, coeffs):
    k = _intrinsics(model, coeffs)
    x, y = _grid()
    xd, yd = distort(x, y, k)
    assert np.hypot(xd - x, yd - y).max() > 1e-3  # the lens does move the corners
    xu, yu = undistort(xd, yd, k)
    # 1e-6 normalised units is ~5e-4 px: the iterative inverse's tolerance, with room.
    np.testing.assert_allclose(np.stack([xu, yu]), np.stack([x, y]), atol=1e-6)


@pytest.mark.parametrize("model,coeffs", MODELS)
def test_one_point_goes_through_as_an_array_of_them_does(model, coeffs, recwarn):
    k = _intrinsics(model, coeffs)
    x, y = undistort(0.3, -0.2, k)
    xs, ys = undistort(np.array([0.3, 40.0]), np.array([-0.2, 40.0]), k)
    assert np.shape(x) == () and (float(x), float(y)) == (xs[0], ys[0])
    # Broadcast as numpy broadcasts: a row of x against a column of y.
    grid_x, grid_y = undistort(np.array([[0.3, 0.1]]), np.array([[-0.2], [0.0]]), k)
    assert grid_x.shape == (2, 2) and (grid_x[0, 0], grid_y[0, 0]) == (xs[0], ys[0])
    # Far outside the lens's range: no inverse, NaN, and no overflow warnings on the way.
    assert np.isnan(xs[1]) and np.isnan(ys[1])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    point = np.array([0.1, -0.05, 0.5])
    np.testing.assert_array_equal(project(point, k), project(point[None], k)[0])
    with pytest.raises(ValueError, match=r"expected points of shape \(\.\.\., 3\)"):
        project(np.zeros((4, 2)), k)


def _rs_intrinsics(k: CameraIntrinsics):
    rs = pytest.importorskip("pyrealsense2")
    out = rs.intrinsics()
    out.width, out.height, out.fx, out.fy, out.ppx, out.ppy = k.width, k.height, k.fx, k.fy, k.cx, k.cy
    out.model, out.coeffs = getattr(rs.distortion, k.distortion.value), list(k.coeffs)
    return rs, out


@pytest.mark.parametrize("model,coeffs", MODELS)
def test_projection_is_librealsenses(model, coeffs):
    k = _intrinsics(model, coeffs)
    rs, rs_k = _rs_intrinsics(k)
    points = np.array([[-0.3, -0.2, 0.6], [0.25, 0.2, 0.55], [0.0, 0.0, 1.0], [0.1, -0.15, 0.4]])
    for point, pixel in zip(points, project(points, k)):
        # librealsense computes in float32: 1e-3 px.
        np.testing.assert_allclose(pixel, rs.rs2_project_point_to_pixel(rs_k, point.tolist()), atol=1e-3)


@pytest.mark.parametrize("model,coeffs", [m for m in MODELS if m[0] != DistortionModel.MODIFIED_BROWN_CONRADY])
def test_deprojection_is_librealsenses(model, coeffs):
    # (librealsense cannot deproject the modified model; the round trip above covers ours.)
    k = _intrinsics(model, coeffs)
    rs, rs_k = _rs_intrinsics(k)
    for u, v in [(0.0, 0.0), (639.0, 479.0), (100.0, 400.0), (320.0, 240.0), (600.0, 20.0)]:
        expected = rs.rs2_deproject_pixel_to_point(rs_k, [u, v], 0.7)
        x, y = undistort(np.array([(u - k.cx) / k.fx]), np.array([(v - k.cy) / k.fy]), k)
        # float32 and a fixed number of iterations in the SDK: 2e-5 m.
        np.testing.assert_allclose([x[0] * 0.7, y[0] * 0.7, 0.7], expected, atol=2e-5)


def _tilted_plane_depth(k: CameraIntrinsics) -> np.ndarray:
    """Depth of the plane z = 0.6 + 0.3 x (metres) as the camera with lens ``k`` sees it."""
    u, v = np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))
    x, _ = undistort((u - k.cx) / k.fx, (v - k.cy) / k.fy, k)
    # On the ray (x, y, 1) t: z = t = 0.6 + 0.3 x t.
    return (0.6 / (1 - 0.3 * x)).astype(np.float32)


def test_the_pinhole_view_shows_the_scene_a_pinhole_camera_would():
    lens = _intrinsics(DistortionModel.INVERSE_BROWN_CONRADY, SR305_LIKE)
    depth, pinhole = pinhole_view(_tilted_plane_depth(lens), lens)
    assert pinhole.is_pinhole and (pinhole.fx, pinhole.cx) == (lens.fx, lens.cx)
    expected = _tilted_plane_depth(pinhole)
    seen = depth > 0
    # This lens narrows the view: the pinhole image's corners lie outside the stream's.
    assert 0.8 < seen.mean() < 1.0
    # Nearest neighbour: off by at most about a pixel's step of the plane's depth.
    step = np.abs(np.diff(expected, axis=1)).max()
    assert np.abs(depth - expected)[seen].max() < 1.5 * step
    # Pixel by pixel: each pinhole pixel shows the stream pixel nearest to where its ray
    # lands through the lens (an image of pixel numbers, remapped, names the one it took).
    numbers = (np.arange(lens.width * lens.height, dtype=np.float32) + 1).reshape(lens.height, lens.width)
    taken, _ = pinhole_view(numbers, lens)
    u, v = np.meshgrid(np.arange(lens.width, dtype=np.float64), np.arange(lens.height, dtype=np.float64))
    rays = np.stack([(u - pinhole.cx) / pinhole.fx, (v - pinhole.cy) / pinhole.fy, np.ones_like(u)], -1).reshape(-1, 3)
    landed = project(rays, lens).reshape(lens.height, lens.width, 2)
    nearest = np.rint(landed).astype(int)
    inside = (nearest[..., 0] >= 0) & (nearest[..., 0] < lens.width) & (nearest[..., 1] >= 0) & (nearest[..., 1] < lens.height)
    # (A ray landing within a thousandth of a pixel of a half-pixel boundary may round either way.)
    clear = inside & np.all(np.abs(landed - np.floor(landed) - 0.5) > 1e-3, axis=-1)
    expected_numbers = numbers[nearest[..., 1].clip(0, lens.height - 1), nearest[..., 0].clip(0, lens.width - 1)]
    np.testing.assert_array_equal(taken[clear], expected_numbers[clear])
    assert np.all(taken[~inside] == 0) and clear.mean() > 0.8
    # Without a lens model the frame is passed through untouched.
    plain = _tilted_plane_depth(pinhole)
    assert pinhole_view(plain, pinhole)[0] is plain


def test_a_hand_seen_through_a_lens_is_tracked_where_it_is(hand_model):
    """Render -> distort -> track -> compare: the estimate through the lens matches the one
    from the pinhole frame, in 3-D and in the stream's own pixels."""
    from tracker.backends import create_backend
    from tracker.estimator import HandEstimator
    from tracker.pipeline import HandTracker, TrackerConfig
    from tracker.sources import SyntheticSource
    from tracker.types import Handedness

    source = SyntheticSource(seed=2, max_frames=1, hand_model=hand_model)
    frame = next(iter(source.frames()))  # the hand well off the image centre, wholly in view
    k = frame.intrinsics
    lens = dataclasses.replace(k, distortion=DistortionModel.INVERSE_BROWN_CONRADY, coeffs=SR305_LIKE)
    # What a camera with this lens records: each of its pixels looks along its undistorted ray.
    u, v = np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))
    x, y = undistort((u - k.cx) / k.fx, (v - k.cy) / k.fy, lens)
    pu, pv = np.rint(x * k.fx + k.cx).astype(int), np.rint(y * k.fy + k.cy).astype(int)
    inside = (pu >= 0) & (pu < k.width) & (pv >= 0) & (pv < k.height)
    raw = np.zeros_like(frame.depth)
    raw[inside] = frame.depth[pv[inside], pu[inside]]

    estimator = HandEstimator(create_backend("onnxruntime"), hand_model)
    config = TrackerConfig(handedness=Handedness.RIGHT)

    def track(depth, intrinsics):
        tracker = HandTracker(estimator, config)
        (hand,) = tracker.process(dataclasses.replace(frame, depth=depth, intrinsics=intrinsics)).hands
        return hand, tracker.previous_center

    (plain, plain_centre), (lensed, lensed_centre), (lens_ignored, _) = track(frame.depth, k), track(raw, lens), track(raw, k)
    # The pinhole view gives back the rendered pixels (nearest neighbour both ways); only the
    # few the lens leaves outside its narrower view differ, at the far end of the arm: they
    # move the crop centre by under a millimetre.
    assert np.linalg.norm(lensed_centre - plain_centre) < 0.001
    # Even that can tip an ambiguous finger (here the index finger moves ~4 cm), so the two
    # estimates are judged against the rendered truth: through the lens as good as from the
    # pinhole frame, within the 2 mm such a tip moves the mean either way.
    truth = source.ground_truth(frame.frame_number)

    def error(hand):
        return np.linalg.norm(hand.joints_cam_m - truth, axis=1).mean()

    assert error(lensed) < error(plain) + 0.002
    # Taking the stream for a pinhole camera would put the hand centimetres off, and the
    # estimate with it.
    assert np.linalg.norm(lens_ignored.joints_cam_m - plain.joints_cam_m, axis=1).mean() > 0.01
    assert error(lens_ignored) > error(plain) + 0.005
    np.testing.assert_allclose(lensed.joints_uv_px, project(lensed.joints_cam_m, lens), atol=1e-3)
    # In the stream's own pixels the joints sit where the lens put them, not where a pinhole would.
    assert np.abs(lensed.joints_uv_px - project(lensed.joints_cam_m, k)).max() > 5.0
