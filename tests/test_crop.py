import numpy as np
import pytest

from tracker.crop import OUT_OF_IMAGE_DEPTH, OutOfImage, camera_to_crop, crop_to_camera, crop_window, make_crop
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
    with pytest.raises(ValueError, match="depth_m must be float metres, got uint16"):
        make_crop((depth * 1000).astype(np.uint16), K, np.array([0.0, 0.0, 0.5]), 0.26)


def test_nan_and_infinite_depth_are_background_in_both_frames():
    depth = _plane(0.52)
    depth[220:260, 300:340] = np.nan
    depth[100:120, 100:120] = np.inf
    for frame in ("camera", "ray"):
        crop = make_crop(depth, K, np.array([0.01, 0.0, 0.5]), 0.26, frame=frame)
        assert np.all(np.isfinite(crop.depth)) and np.all(np.abs(crop.depth) <= 1)
        assert np.any(crop.depth == 1.0) and np.any(crop.depth < 1.0)


def test_crop_camera_round_trip_and_left_mirroring():
    points = np.random.default_rng(0).normal([0.02, 0.01, 0.6], 0.05, (50, 3))
    for side in (Handedness.RIGHT, Handedness.LEFT):
        for frame in ("camera", "ray"):  # the ray frame's rotation is not the identity
            crop = make_crop(_plane(0.6), K, np.array([0.08, 0.01, 0.6]), 0.26, side, frame=frame)
            np.testing.assert_allclose(crop_to_camera(camera_to_crop(points, crop), crop), points, atol=1e-6)
            # The definition: un-mirror x, rotate into the camera's axes, scale, shift.
            normalised = camera_to_crop(points, crop)
            unmirrored = normalised * ([-1, 1, 1] if side == Handedness.LEFT else 1)
            expected = (crop.cam_from_crop @ unmirrored.T).T * 0.13 + crop.center_cam_m
            np.testing.assert_allclose(crop_to_camera(normalised, crop), expected, atol=1e-7)  # float32 metres: 6e-8 at 1 m
    right = make_crop(_plane(0.6), K, np.array([0.0, 0.0, 0.6]), 0.26)
    left = make_crop(_plane(0.6), K, np.array([0.0, 0.0, 0.6]), 0.26, Handedness.LEFT)
    x_right = camera_to_crop(points, right)[:, 0]
    x_left = camera_to_crop(points, left)[:, 0]
    np.testing.assert_allclose(x_left, -x_right, atol=1e-6)


# ---------------------------------------------------------------- the ray crop frame

from kernels.raster import render_mesh  # noqa: E402
from tracker.crop import CropFrame, cam_from_ray, crop_points_camera  # noqa: E402


def _sphere_depth(centre: np.ndarray, radius: float, k: CameraIntrinsics = K) -> np.ndarray:
    """(H, W) camera z of a sphere's front surface, 0 where the ray misses it (exact)."""
    v, u = np.mgrid[: k.height, : k.width].astype(np.float64)
    d = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)  # z = 1 rays
    a = (d * d).sum(-1)
    b = (d * centre).sum(-1)
    disc = b * b - a * (centre @ centre - radius**2)
    t = (b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where(disc > 0, t, 0.0).astype(np.float32)


def test_the_ray_is_reached_by_the_smallest_rotation():
    for centre in ([0.0, 0.0, 0.6], [0.3, -0.2, 0.5], [-0.4, 0.35, 0.45], [1e-9, 0.0, 1.0]):
        rotation = cam_from_ray(np.array(centre))
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rotation) == np.float64(1.0) or abs(np.linalg.det(rotation) - 1) < 1e-12
        np.testing.assert_allclose(rotation @ [0, 0, 1], np.array(centre) / np.linalg.norm(centre), atol=1e-12)
        # Smallest: the rotation axis is perpendicular to the optical axis (no roll about it).
        np.testing.assert_allclose((rotation @ [1, 0, 0])[1], (rotation @ [0, 1, 0])[0], atol=1e-12)
    np.testing.assert_array_equal(cam_from_ray(np.array([0.0, 0.0, 0.5])), np.eye(3))


def test_on_the_optical_axis_both_frames_give_the_same_crop():
    centre = np.array([0.0, 0.0, 0.5])
    depth = _sphere_depth(centre + [0.01, 0.02, 0.03], 0.05)
    camera, ray = (make_crop(depth, K, centre, 0.26, frame=f) for f in (CropFrame.CAMERA, CropFrame.RAY))
    np.testing.assert_allclose(ray.image_from_crop, camera.image_from_crop, atol=1e-9)
    np.testing.assert_allclose(ray.depth, camera.depth, atol=1e-6)


def test_ray_crop_points_lie_on_the_surface_they_were_cut_from():
    # A sphere far off the optical axis: every measured crop pixel, taken back to the camera
    # frame, is a point of its surface (nearest-neighbour sampling moves it along the surface,
    # never off it), in both frames, for both hands (the left one is mirrored).
    sphere, radius = np.array([0.28, -0.17, 0.5]), 0.06
    depth = _sphere_depth(sphere, radius)
    for frame in CropFrame:
        for hand in Handedness:
            crop = make_crop(depth, K, sphere - [0.0, 0.0, 0.03], 0.26, hand, frame=frame)
            grid, measured = crop_points_camera(crop, K)
            points = grid[measured]
            assert len(points) > 300
            # Nearest-neighbour sampling reads the depth of an image pixel up to half a pixel
            # (0.5 mm here) beside the crop pixel's ray, so on the sloped sphere a point lies up
            # to ~1 mm off its surface; a wrong homography or depth along the wrong axis would
            # be centimetres off this far from the axis.
            off_surface = np.abs(np.linalg.norm(points - sphere, axis=1) - radius)
            assert np.median(off_surface) < 2e-4 and off_surface.max() < 1.5e-3, (frame, hand, off_surface.max())
            # crop_to_camera of the crop-normalised point is the same point.
            normalised = camera_to_crop(points, crop)
            np.testing.assert_allclose(crop_to_camera(normalised, crop), points, atol=1e-5)


def test_crop_points_leave_out_pixels_past_the_image_edge():
    # A cube reaching past the image's left edge, cut with those pixels marked (-1, inside
    # the depth range) rather than far: they are no measurement, so no point, even where the
    # frame has no depth at all.
    from tracker.crop import OUT_OF_IMAGE_DEPTH, OutOfImage

    crop = make_crop(np.zeros((K.height, K.width), np.float32), K, np.array([-0.30, 0.0, 0.5]), out_of_image=OutOfImage.MARKED)
    assert (crop.depth == OUT_OF_IMAGE_DEPTH).sum() > 100
    _, measured = crop_points_camera(crop, K)
    assert not measured.any()


def test_a_sphere_looks_the_same_in_the_ray_frame_wherever_it_is():
    # Seen along the ray to it, a sphere is a disc of the same size wherever it is (at the
    # same distance). The camera-frame window sees it obliquely: off the axis it shows a
    # different shape (9 % more pixels here) for the same sphere.
    def silhouette(frame, sphere):
        crop = make_crop(_sphere_depth(sphere, 0.06), K, sphere, 0.26, frame=frame)
        rows, cols = np.nonzero(crop.depth < 1.0)
        return len(rows), rows.max() - rows.min(), cols.max() - cols.min(), crop.depth.min()

    off_axis = np.array([0.22, 0.15, 0.6])  # 24 degrees off the axis, wholly in the image
    on_axis = silhouette(CropFrame.RAY, np.array([0.0, 0.0, np.linalg.norm(off_axis)]))  # as far away
    off_axis_ray = silhouette(CropFrame.RAY, off_axis)
    off_axis_camera = silhouette(CropFrame.CAMERA, off_axis)
    assert abs(off_axis_ray[0] / on_axis[0] - 1) < 0.03  # area: the same disc, up to its rim pixels
    assert abs(off_axis_ray[1] - on_axis[1]) <= 1 and abs(off_axis_ray[2] - on_axis[2]) <= 1
    assert abs(off_axis_ray[3] - on_axis[3]) < 3e-3  # the nearest point, one radius in front (0.4 mm)
    assert abs(off_axis_camera[0] / on_axis[0] - 1) > 0.05


def test_a_hand_looks_the_same_and_has_the_same_targets_wherever_it_is(hand_model):
    # The same hand seen along two rays: once on the optical axis, once 28 degrees off it
    # (the whole scene turned about the camera). In the ray frame both crops and both sets
    # of targets agree; in the camera frame the targets differ by centimetres although the
    # crops look alike, which is what a network cannot resolve.
    k = CameraIntrinsics(640, 480, 380.0, 380.0, 319.5, 239.5)
    posed = hand_model.pose(cam_from_hand=np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0.45], [0, 0, 0, 1.0]]))
    # Centred exactly on the optical axis, so that the turned copy is seen along the ray the
    # turn takes the axis to (the ray frame's roll is that of the smallest rotation to a ray).
    shift = np.array([0.0, 0.0, 0.45]) - posed.vertices.mean(0)
    vertices_on_axis, joints_on_axis = posed.vertices + shift, posed.joints + shift
    turn = cam_from_ray(np.array([np.sin(np.radians(28)), 0.0, np.cos(np.radians(28))]))  # in the image
    results = {}
    for name, rotation in (("on axis", np.eye(3)), ("off axis", turn)):
        vertices = vertices_on_axis.astype(np.float64) @ rotation.T
        depth, _, _ = render_mesh(vertices, posed.faces, k.fx, k.fy, k.cx, k.cy, k.height, k.width)
        centre = rotation @ [0.0, 0.0, 0.45]
        for frame in CropFrame:
            crop = make_crop(depth, k, centre, 0.26, frame=frame)
            results[name, frame] = crop.depth, camera_to_crop(joints_on_axis.astype(np.float64) @ rotation.T, crop)
    ray_on, ray_off = results["on axis", CropFrame.RAY], results["off axis", CropFrame.RAY]
    # Crops: nearest-neighbour sampling of two renderings differs at the silhouette only.
    assert np.mean(np.abs(ray_on[0] - ray_off[0]) > 0.05) < 0.03
    np.testing.assert_allclose(ray_on[1], ray_off[1], atol=1e-5)  # targets: the same
    camera_off = results["off axis", CropFrame.CAMERA]
    moved_mm = np.linalg.norm(camera_off[1] - ray_on[1], axis=1).mean() * 130
    assert moved_mm > 10, moved_mm


def test_a_cube_partly_outside_the_image_is_far_face_there_and_a_centre_behind_is_refused():
    # Centre near the left border: at 0.5 m the cube's 0.26 m are 260 px, so ~110 px of the
    # crop's width (about 27 of its 64 columns) lie left of column 0.
    centre = np.array([(20 - K.cx) / K.fx * 0.5, 0.0, 0.5])
    for frame in ("camera", "ray"):
        crop = make_crop(_plane(0.52), K, centre, 0.26, frame=frame)
        outside = crop.depth[:, :20]
        inside = crop.depth[:, 40:]
        assert np.all(outside == 1.0), frame  # nothing measured there: the far face
        assert np.all(inside < 1.0), frame  # the wall, inside the cube
    # In the camera frame the wall 2 cm behind the centre is exactly 0.02 / 0.13 of the half cube.
    np.testing.assert_allclose(make_crop(_plane(0.52), K, centre, 0.26).depth[:, 40:], 0.02 / 0.13, rtol=1e-5)
    for z in (0.0, -0.3):
        with pytest.raises(ValueError, match="in front of the camera"):
            crop_window(np.array([0.0, 0.0, z]), 0.26, K, 64)


def test_a_marked_crop_shows_the_near_face_past_the_image_and_is_otherwise_the_same():
    # As above: about 27 of the 64 columns lie left of the image; a hand cut by the border.
    centre = np.array([(20 - K.cx) / K.fx * 0.5, 0.0, 0.5])
    depth = _plane(0.0)
    depth[:, :60] = 0.52  # measured only near the border
    for frame in ("camera", "ray"):
        for side in (Handedness.RIGHT, Handedness.LEFT):
            far = make_crop(depth, K, centre, 0.26, side, frame=frame)
            marked = make_crop(depth, K, centre, 0.26, side, frame=frame, out_of_image=OutOfImage.MARKED)
            # Which crop pixels lie in the image, from the map itself (crop pixel centres).
            i, j = np.meshgrid(np.arange(64.0), np.arange(64.0))
            uvw = np.einsum("rc,cij->rij", marked.image_from_crop, np.stack([i, j, np.ones_like(i)]))
            u = uvw[0] / uvw[2]
            # Nearest-neighbour rounding decides the pixels within half a pixel of the border.
            clearly_out, clearly_in = u < -0.5 - 1e-6, u > 0.5
            assert clearly_out.sum() > 20 * 64 and clearly_in.sum() > 30 * 64, (frame, side)
            assert np.all(marked.depth[clearly_out] == OUT_OF_IMAGE_DEPTH), (frame, side)
            assert np.all(far.depth[clearly_out] == 1.0), (frame, side)
            # In the image, background and measured pixels alike, the two crops agree.
            np.testing.assert_array_equal(marked.depth[clearly_in], far.depth[clearly_in])
            assert np.any(marked.measured) and not np.any(marked.measured & clearly_out)
            np.testing.assert_array_equal(marked.measured, far.measured)
    # A cube wholly in the image: nothing to mark.
    inside = np.array([0.0, 0.0, 0.5])
    np.testing.assert_array_equal(
        make_crop(depth, K, inside, 0.26, frame="ray", out_of_image="marked").depth, make_crop(depth, K, inside, 0.26, frame="ray").depth
    )


def test_a_window_of_the_image_marks_only_what_lies_past_the_whole_image():
    """A training window (a sub-image with shifted principal point) cut with the sensor's
    intrinsics marks the same crop pixels as the whole image does; past the window but in
    the image it shows background, and in the window the same depth."""
    from tracker.crop import resample

    centre = np.array([(20 - K.cx) / K.fx * 0.5, 0.0, 0.5])  # the cube reaches past the left edge
    depth = _plane(0.0)
    depth[:, :60] = 0.52
    x0, y0, w, h = 0, 180, 90, 120  # the window: the image's left edge, and a band of rows
    window_k = CameraIntrinsics(w, h, K.fx, K.fy, K.cx - x0, K.cy - y0)
    for frame in ("camera", "ray"):
        for side in (Handedness.RIGHT, Handedness.LEFT):
            full = make_crop(depth, K, centre, 0.26, side, frame=frame, out_of_image=OutOfImage.MARKED)
            window = make_crop(depth[y0 : y0 + h, x0 : x0 + w], window_k, centre, 0.26, side, frame=frame, out_of_image=OutOfImage.MARKED, sensor=K)
            past = full.depth == OUT_OF_IMAGE_DEPTH
            assert past.sum() > 20 * 64, (frame, side)
            np.testing.assert_array_equal(window.depth == OUT_OF_IMAGE_DEPTH, past)
            in_window = resample(np.ones((h, w), np.bool_), window.image_from_crop, 64, 0)
            # Rows above and below the band lie in the image: background, not marked.
            assert (~in_window & ~past).sum() > 10 * 64, (frame, side)
            assert np.all(window.depth[~in_window & ~past] == 1.0)
            np.testing.assert_array_equal(window.depth[in_window], full.depth[in_window])
            # Without the sensor, the window's own edges would be marked too.
            unknown = make_crop(depth[y0 : y0 + h, x0 : x0 + w], window_k, centre, 0.26, side, frame=frame, out_of_image="marked")
            assert (unknown.depth == OUT_OF_IMAGE_DEPTH).sum() > past.sum()
    with pytest.raises(ValueError, match="focal lengths"):
        make_crop(depth[:h, :w], CameraIntrinsics(w, h, 400.0, 400.0, 10.0, 10.0), centre, 0.26, out_of_image="marked", sensor=K)
    with pytest.raises(ValueError, match="not a whole-pixel window"):
        make_crop(depth[:h, :w], CameraIntrinsics(w, h, K.fx, K.fy, K.cx - 0.5, K.cy), centre, 0.26, out_of_image="marked", sensor=K)
    with pytest.raises(ValueError, match="not a whole-pixel window"):  # reaching past the sensor's right edge
        make_crop(depth[:h, :w], CameraIntrinsics(w, h, K.fx, K.fy, K.cx - 600, K.cy), centre, 0.26, out_of_image="marked", sensor=K)


def test_a_crops_measured_pixels_are_those_with_a_depth_inside_the_cube():
    depth = _plane(0.0)
    depth[200:280, 280:360] = 0.55
    crop = make_crop(depth, K, np.array([0.0, 0.0, 0.5]), 0.26)
    np.testing.assert_array_equal(crop.measured, crop.depth < 1.0)
    assert crop.measured[28:36, 28:36].all() and not crop.measured[0, 0]


def test_an_unknown_out_of_image_fill_in_weights_is_a_clear_error():
    from tracker.weights import WeightsError, out_of_image_of

    assert out_of_image_of({}) == OutOfImage.FAR  # weights from before the choice
    assert out_of_image_of({"out_of_image": "marked"}) == OutOfImage.MARKED
    with pytest.raises(WeightsError, match="unknown out-of-image fill 'grey'"):
        out_of_image_of({"out_of_image": "grey"})


def test_an_unknown_crop_frame_in_weights_is_a_clear_error():
    from tracker.weights import WeightsError, crop_frame_of

    assert crop_frame_of({}).value == "camera"  # weights from before the choice
    with pytest.raises(WeightsError, match="unknown crop frame 'sideways'"):
        crop_frame_of({"crop_frame": "sideways"})


def test_isolated_holes_are_filled_and_silhouettes_kept():
    depth = _plane(0.8)
    v, u = np.mgrid[:480, :640]
    disc = (u - 320) ** 2 + (v - 240) ** 2 < 60**2
    depth[disc] = 0.5
    centre = np.array([0.0, 0.0, 0.5])
    whole = make_crop(depth, K, centre, 0.26)
    # Nothing to fill: the disc's edge against the background stays where it was.
    np.testing.assert_array_equal(whole.depth, make_crop(depth, K, centre, 0.26, fill_holes=False).depth)
    holes = depth.copy()
    holes[np.random.default_rng(0).random(holes.shape) < 0.1] = 0.0
    filled = make_crop(holes, K, centre, 0.26)
    unfilled = make_crop(holes, K, centre, 0.26, fill_holes=False)
    inside = whole.measured
    interior = inside.copy()  # away from the disc's edge, where a hole's neighbours are all on it
    interior[1:-1, 1:-1] = inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:] & inside[1:-1, 1:-1]
    assert np.count_nonzero(inside & ~unfilled.measured) > 0.05 * np.count_nonzero(inside)
    # The odd hole with three or more lost neighbours stays: at a tenth lost, 4 % of them.
    assert np.count_nonzero(interior & ~filled.measured) < 0.01 * np.count_nonzero(interior)
    np.testing.assert_allclose(filled.depth[filled.measured & inside], whole.depth[filled.measured & inside], atol=1e-6)
    assert not np.any(filled.measured & ~inside)  # no depth made up beside the disc


@pytest.mark.parametrize("frame", ["camera", "ray"])
@pytest.mark.parametrize("out_of_image", [OutOfImage.FAR, OutOfImage.MARKED])
def test_the_mirrored_crop_is_the_other_sides_crop(frame, out_of_image):
    from tracker.crop import mirrored

    rng = np.random.default_rng(7)
    depth = _sphere_depth(np.array([0.1, -0.05, 0.55]), 0.08)
    depth[depth == 0] = 0.9
    depth[rng.random(depth.shape) < 0.1] = 0.0  # holes to fill, at every slant of the sphere
    # Well inside the image, and reaching past its left edge (the marked pixels mirror too).
    for centre in (np.array([0.1, -0.05, 0.5]), np.array([-0.33, 0.02, 0.5])):
        for side in (Handedness.RIGHT, Handedness.LEFT):
            crop = make_crop(depth, K, centre, 0.26, side, frame=frame, out_of_image=out_of_image)
            other = make_crop(depth, K, centre, 0.26, Handedness.LEFT if side == Handedness.RIGHT else Handedness.RIGHT, frame=frame, out_of_image=out_of_image)
            flipped = mirrored(crop)
            assert flipped.handedness == other.handedness
            np.testing.assert_array_equal(flipped.image_from_crop, other.image_from_crop)
            np.testing.assert_array_equal(flipped.cam_from_crop, other.cam_from_crop)
            np.testing.assert_array_equal(flipped.center_cam_m, other.center_cam_m)
            # A filled hole's depth sums its neighbours in mirrored order: float32 rounding.
            np.testing.assert_allclose(flipped.depth, other.depth, rtol=0, atol=1e-6)
            assert flipped.depth.flags.c_contiguous
            if out_of_image == OutOfImage.MARKED and centre[0] < 0:
                assert np.any(flipped.depth == OUT_OF_IMAGE_DEPTH)
