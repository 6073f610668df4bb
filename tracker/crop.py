"""Cuts the network input out of a depth frame: a fixed 3-D cube around the hand, 64 x 64.

Used by training (centre from ground truth, jittered), evaluation and the live pipeline
(centre from the segmentation). The cube of edge ``cube_size_m`` is centred at a 3-D point
c; the crop is the cube seen by a virtual camera, resampled with nearest-neighbour to S x S
(depth must not be blended across edges). Depth becomes (depth - depth of c) / (cube / 2),
and everything outside [-1, 1] or missing becomes 1, the far face of the cube, except isolated
holes inside a surface, which take their neighbours' depth first (``fill_holes``; see
``kernels.depth_holes``); where the surfaces in the cube are noisier than the network
learned (a hand a metre or more from a stereo camera), they are smoothed down to what it
learned (``smooth_noise``; see ``kernels.depth_noise``); and, where asked
(``BackgroundPlane``), a wall or table right behind the hand is cleared to the far face too
(``kernels.background_plane``). Where the cube
reaches past the image's edge the crop shows the far face too (``OutOfImage.FAR``), or, for
weights trained so (their manifest says), ``OUT_OF_IMAGE_DEPTH`` (``OutOfImage.MARKED``): a
hand cut by the edge of the view then does not look like a hand that ends there. Predictions
in crop-normalised coordinates (relative to c, divided by cube / 2, along the crop's axes)
map back to the camera frame with ``crop_to_camera``.

Two crop frames (``CropFrame``); the weights' manifest says which one they were trained in:

* ``camera``: the crop's axes are the camera's; the virtual camera is the sensor itself and
  the crop a square window of the image around c's projection.
* ``ray``: the virtual camera looks straight at c (rotated from the camera by the smallest
  rotation that turns its optical axis onto the ray to c), and the crop's axes are the
  virtual camera's. A hand then looks the same, and has the same targets, wherever in the
  image it is. In the camera frame it does not: away from the optical axis the same crop
  belongs to targets sheared by the ray's angle, x_target = x_crop + (x_c / z_c) dz, which
  the crop does not show (it holds neither x_c / z_c nor z_c), so a network must guess it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import cv2
import numpy as np

from kernels.background_plane import clear_plane_behind
from kernels.depth_holes import fill_isolated_holes
from kernels.depth_noise import smooth_surfaces, surface_noise
from tracker.types import CameraIntrinsics, Handedness, HandCrop

CROP_SIZE = 64
DEFAULT_CUBE_SIZE_M = 0.26


class CropFrame(str, Enum):
    CAMERA = "camera"
    RAY = "ray"


class OutOfImage(str, Enum):
    """What a crop shows where its cube reaches past the image's edge."""

    #: The far face of the cube, as for background and missing depth.
    FAR = "far"
    #: ``OUT_OF_IMAGE_DEPTH``, the near face, which measured depth all but never takes
    #: exactly: unseen, rather than empty.
    MARKED = "marked"


OUT_OF_IMAGE_DEPTH = -1.0

#: A crop pixel with no depth is filled when at least this many of its 8 neighbours have
#: one (``kernels.depth_holes``). Six leaves every pixel of a straight edge (at most 5
#: measured neighbours) and of a band of missing depth beside one unfilled; with a fifth of
#: the pixels lost at random, most holes still have six.
HOLE_FILL_MIN_MEASURED = 6
#: ... and its opposite neighbours' midpoints lie this close in depth: a step of 1 cm or more
#: between two surfaces (a finger curled over the palm) parts them by 5 mm or more, a slant
#: not at all. Not a round 5 mm: depths in a camera's units (1, 0.125 or 0.1 mm) often give
#: exactly that, and such a tie would fill a frame in one unit and not the same frame given
#: in metres (float32 rounding).
HOLE_FILL_MAX_STEP_M = 0.00503
#: ... and all its measured neighbours lie within this depth range: the 3 x 3 neighbourhood
#: spans 8 mm across (11 mm diagonally) in the default 26 cm cube, so 2 cm passes a surface
#: turned up to 60 degrees from the camera; steeper ones, a finger's side, are left as the
#: network learned them. 2.012 cm, for the reason above.
HOLE_FILL_MAX_SPREAD_M = 0.02012

#: The depth noise (standard deviation, m) the network learned to fit through: its training
#: hands were at most 0.9 m from the camera, where the training data's stereo noise (as a
#: D4xx's) is about 3 mm; within a crop's surfaces it measures 3.0 mm there, 1.6 mm at 0.6 m and
#: 6.5 mm at 1.4 m (``kernels.depth_noise.surface_noise``). A crop noisier than this is
#: smoothed (``smooth_noise``) down to ``NOISE_TARGET_M``, what the network saw on hands at
#: about 0.75 m. Tuned on hands at 0.9-1.4 m that no committed figure uses (100 poses as a
#: track's first frame and 12 moving hands at each distance): smoothed all the way wherever
#: above 3 mm, the hands at 0.9 m were fitted 0.05 mm worse (6.12 against 6.07 mm tracked);
#: smoothed only down to 3 mm, those at 1.4 m 0.2 mm worse (8.49 against 8.30 mm tracked);
#: down to 2 mm, neither.
NOISE_LEARNED_M = 0.003
NOISE_TARGET_M = 0.002
#: Neighbours further apart in depth than this are an edge, not noise, for the estimate: a
#: finger lies 1.5-2 cm over the palm, and the median leaves out the few such steps left.
NOISE_EDGE_STEP_M = 0.03
#: Fewer pixels inside a surface than this (a hand far past the image's edge, a crop of
#: background) and the noise is not estimated: the crop is left as it is.
NOISE_MIN_SAMPLES = 50
#: The smoothing averages a pixel with the neighbours within this many noise deviations of
#: its depth, and never less than ``NOISE_MIN_BAND_M``: two pixels of one surface differ by
#: more 1 time in 30, while a step of more (2 cm at 1.4 m: a finger over the palm, a
#: silhouette) is kept. On hands tracked at 1.4 m (tuning seeds), 2 and 4 deviations fitted
#: them worse than 3 (15.9 and 10.5 mm against 8.3 mm).
NOISE_BAND_SIGMAS = 3.0
NOISE_MIN_BAND_M = 0.01
#: The smoothing's window, (2 r + 1)^2 pixels. 3 x 3 with the band above divides a surface's
#: noise by about 2.4 (``NOISE_CUT``: the band, centred on a pixel's own noisy depth, leaves
#: out more of the neighbours on the surface's other side; ``tests/test_depth_noise.py``),
#: which takes the noise at 1.4 m (6.5 mm) below the learned level. 5 x 5 (a finger's width, 2
#: cm of the 26 cm cube) cuts it by 3 but blurs the fingers: on tuning hands at 1.4 m it fitted
#: them worse (9.0 against 8.5 mm as a track's first frame, 8.6 against 8.3 mm tracked).
NOISE_WINDOW_RADIUS = 1
NOISE_CUT = 2.4


def smooth_noise_in(depth_m: np.ndarray) -> np.ndarray:
    """(S, S) float32 metres, 0 where unmeasured: ``depth_m`` with its surfaces' noise brought
    down to ``NOISE_TARGET_M`` where it is more than ``NOISE_LEARNED_M``
    (``kernels.depth_noise``), else ``depth_m`` itself. Each pixel moves the share of the way
    to its smoothed depth that does it; from ``NOISE_CUT`` times the target on, all the way."""
    noise, _ = surface_noise(depth_m, NOISE_EDGE_STEP_M, NOISE_MIN_SAMPLES)
    if not noise > NOISE_LEARNED_M:
        return depth_m
    smoothed = smooth_surfaces(depth_m, NOISE_WINDOW_RADIUS, max(NOISE_MIN_BAND_M, NOISE_BAND_SIGMAS * noise))
    share = min(1.0, (1.0 - NOISE_TARGET_M / noise) / (1.0 - 1.0 / NOISE_CUT))
    if share >= 1.0:
        return smoothed
    return (depth_m + np.float32(share) * (smoothed - depth_m)).astype(np.float32)


@dataclass(frozen=True)
class BackgroundPlane:
    """How a crop finds a wall, a table or the body behind the hand and clears it to
    background (``kernels.background_plane``): of planes through three pixels of the crop's
    back half, the one within ``band_m`` of the most pixels, or the curved surface it grows
    into, which must hold ``min_share`` of the crop spread ``min_spread`` of it wide and
    ``min_border`` of its edge, lie within ``max_rms_m`` of its pixels and pass at least
    ``min_behind_m`` behind the cube's centre; what lies less than ``clearance_m`` in front
    of it, or behind it, becomes background."""

    #: As ``SegmentConfig.min_relief_m``: a hand's own relief stands out of a plane by more.
    band_m: float = 0.015
    #: A wall behind the hand fills most of what the hand leaves of the crop, a table seen at
    #: a slant or beside a hand near the camera much less. Against a fifth or a quarter,
    #: this found the plane in more rendered crops of hands before one (0 to 8 cm behind:
    #: 89.8 % against 88.2 and 82.8 % resting on it, 68.8 % against 62.0 and 52.8 % 4 cm
    #: before it) and in none of those with no surface (``python -m
    #: benchmarks.plane_thresholds --min-share 0.15 0.20 0.25``: scenes 200-399 of
    #: ``benchmarks/near_surfaces.py``).
    min_share: float = 0.15
    #: As ``SegmentConfig.max_plane_rms_m``: a stereo camera's noise on a wall at a metre
    #: and less, while a torso's curve is further off any plane.
    max_rms_m: float = 0.006
    #: A flat hand over nothing is itself a plane, but one through the cube's centre, which
    #: segmentation puts on the visible hand.
    min_behind_m: float = 0.01
    #: A quarter of a 26 cm crop is 6.5 cm, more than a forearm's width: a forearm reaching
    #: away behind the hand lies within ``band_m`` of a plane along its length, but a
    #: narrow one. A desk's band along the bottom of the crop, seen at a slant, is wider.
    min_spread: float = 0.25
    #: A wall or a table runs on past the crop's edge, along much of it; a flat hand and its
    #: forearm, as flat and as big as a plane seen through the crop can be, cross the edge
    #: with the forearm only (6 to 8 % of it in the two held-out frames of
    #: ``tracker.evaluate`` where they were taken for a plane without this). A desk seen
    #: along it runs past the crop's sides alone, often less than 15 % of it where a hand
    #: rests on it; at 0.12 rather than 0.15 the plane was found in 89.8 % rather than 88.5 % of
    #: the crops of hands resting on one, and still in none with no surface
    #: (``python -m benchmarks.plane_thresholds --min-border 0.10 0.12 0.15``: scenes
    #: 200-399 as above; 90.8 % at 0.10).
    min_border: float = 0.12
    #: Under a finger resting on a table its visible side curves down to the table, its
    #: widest about 8 mm up; below that the surface is the table's as much as the hand's.
    clearance_m: float = 0.008
    #: Planes through three points tried: with half the back half's points on the wall, all
    #: three of a try are, one time in eight, so 48 tries all miss one time in 600.
    hypotheses: int = 48
    rounds: int = 6
    #: A body's front right behind the hand (a torso, a shoulder) is no plane, and costs the
    #: network and the classifiers as a wall does (``benchmarks.near_body``). The plane,
    #: where it holds ``min_share`` of the crop already, is grown into the curved surface it
    #: is a strip of by least-squares rounds on the pixels within ``band_m`` of it until
    #: they stay the same (``curve_surface``), which counts instead where it passes the
    #: checks above; each round reaches a band further round the curve, so it takes
    #: several. 0: planes only.
    curved_rounds: int = 30
    #: ... bending towards the camera no more than a sphere this big: a body's front bends
    #: away; a plane grown into an arm rising out of it would bend towards it.
    min_concave_radius_m: float = 1.0


def cam_from_ray(center_cam_m: np.ndarray) -> np.ndarray:
    """(3, 3) float64 rotation taking the camera's optical axis onto the ray to the centre,
    the smallest such (about the axis z x ray); the identity on the optical axis."""
    # Rodrigues' formula written out in floats: as 3 x 3 numpy products it cost ~15 us, and
    # each crop of a frame takes it twice.
    x, y, z = np.asarray(center_cam_m, np.float64).reshape(3).tolist()
    norm = math.sqrt(x * x + y * y + z * z)
    if not norm > 0:
        raise ValueError(f"no ray to the camera's centre itself: {(x, y, z)}")
    ax, ay = -y / norm, x / norm  # z x ray; its z component is 0
    sin, cos = math.hypot(ax, ay), z / norm
    if sin < 1e-12:
        return np.eye(3)
    kx, ky, t = ax / sin, ay / sin, 1.0 - cos
    # I + sin K + (1 - cos) K^2, K the cross-product matrix of the unit axis (kx, ky, 0).
    return np.array([
        [1.0 - t * ky * ky, t * kx * ky, sin * ky],
        [t * kx * ky, 1.0 - t * kx * kx, -sin * kx],
        [-sin * ky, sin * kx, 1.0 - t * (kx * kx + ky * ky)],
    ])


def crop_window(
    center_cam_m: np.ndarray,
    cube_size_m: float,
    intrinsics: CameraIntrinsics,
    crop_size: int = CROP_SIZE,
    frame: CropFrame = CropFrame.CAMERA,
) -> np.ndarray:
    """(3, 3) float64 image_from_crop for a cube centred at ``center_cam_m``.

    Crop pixel (i, j) (centres at integers) maps to the image pixel (u / w, v / w) with
    (u, v, w) = image_from_crop @ (i, j, 1): an affine map (w = 1) in the camera frame, a
    homography in the ray frame. Either way the cube spans the crop at the centre's depth
    along the virtual camera's axis.
    """
    c = np.asarray(center_cam_m, np.float64)
    if not c[2] > 0:
        raise ValueError(f"crop centre must be in front of the camera, got z = {c[2]}")
    frame = CropFrame(frame)
    rotation = np.eye(3) if frame == CropFrame.CAMERA else cam_from_ray(c)
    centre = rotation.T @ c  # in the virtual camera's axes: on its axis in the ray frame
    half = (crop_size - 1) / 2
    pixels_per_unit = crop_size * centre[2] / cube_size_m  # crop pixels per unit of x/z
    # Crop pixel -> ray with unit depth in the virtual camera's axes, the centre's in the middle.
    ray_from_crop = np.array([
        [1.0 / pixels_per_unit, 0.0, centre[0] / centre[2] - half / pixels_per_unit],
        [0.0, 1.0 / pixels_per_unit, centre[1] / centre[2] - half / pixels_per_unit],
        [0.0, 0.0, 1.0],
    ])
    return _k(intrinsics) @ rotation @ ray_from_crop


def resample(image: np.ndarray, image_from_crop: np.ndarray, crop_size: int, fill) -> np.ndarray:
    """Nearest-neighbour resample of an (H, W[, C]) image into the crop window (affine or
    projective ``image_from_crop``)."""
    if image.ndim == 3 and image.shape[2] > 4:
        raise ValueError("at most 4 channels")
    affine = _is_affine(image_from_crop)
    size, flags = (crop_size, crop_size), cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    source = image.astype(np.uint8) if image.dtype == np.bool_ else image
    border = 0 if image.dtype == np.bool_ else fill
    if affine:
        out = cv2.warpAffine(source, np.ascontiguousarray(image_from_crop[:2]), size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    else:
        out = cv2.warpPerspective(source, image_from_crop, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=border)
    return out > 0 if image.dtype == np.bool_ else out


def _is_affine(image_from_crop: np.ndarray) -> bool:
    """``np.allclose(image_from_crop[2], (0, 0, 1))``, its default tolerances, in plain floats:
    numpy's costs ~30 us a call, and a frame resamples several crops."""
    a, b, c = image_from_crop[2].tolist()
    return abs(a) <= 1e-8 and abs(b) <= 1e-8 and abs(c - 1.0) <= 1e-8 + 1e-5


def make_crop(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    center_cam_m: np.ndarray,
    cube_size_m: float = DEFAULT_CUBE_SIZE_M,
    handedness: Handedness = Handedness.RIGHT,
    crop_size: int = CROP_SIZE,
    frame: CropFrame = CropFrame.CAMERA,
    out_of_image: OutOfImage = OutOfImage.FAR,
    sensor: CameraIntrinsics | None = None,
    fill_holes: bool = True,
    background_plane: BackgroundPlane | None = None,
    smooth_noise: bool = True,
) -> HandCrop:
    """Crop and normalise (H, W) float32 metres depth around a 3-D centre (camera frame, m).

    A left hand's crop is mirrored left-right so the network always sees a right hand.
    ``sensor``: the whole image's intrinsics where ``depth_m`` is a window of it (a rendered
    training window, ``intrinsics`` then being the window's). Crop pixels past the window but
    in the image show background, as for any pixel with no depth; with ``out_of_image``
    marked, only those past the whole image are marked, as they would be in a real frame.
    ``fill_holes``: fill isolated holes (``HOLE_FILL_MIN_MEASURED``) before normalising.
    ``smooth_noise``: then smooth the surfaces in the cube where they are noisier than the
    network learned (``smooth_noise_in``).
    ``background_plane``: clear a wall or table behind the hand to background (None: keep it).
    """
    frame = CropFrame(frame)
    if not np.issubdtype(np.asarray(depth_m).dtype, np.floating):
        # A camera's raw units (uint16 millimetres) taken as metres would lie past every cube.
        raise ValueError(f"depth_m must be float metres, got {np.asarray(depth_m).dtype}: scale a camera's units by its depth scale (DepthFrame.depth_m)")
    image_from_crop = crop_window(center_cam_m, cube_size_m, intrinsics, crop_size, frame)
    if handedness == Handedness.LEFT:
        image_from_crop = image_from_crop @ _mirror(crop_size)
    depth = resample(depth_m.astype(np.float32, copy=False), image_from_crop, crop_size, 0.0)
    if fill_holes:
        depth, _ = fill_isolated_holes(depth, HOLE_FILL_MIN_MEASURED, np.float32(HOLE_FILL_MAX_STEP_M), np.float32(HOLE_FILL_MAX_SPREAD_M))
    cam_from_crop = np.eye(3) if frame == CropFrame.CAMERA else cam_from_ray(center_cam_m)
    centre_depth = float((cam_from_crop.T @ np.asarray(center_cam_m, np.float64))[2])
    if frame == CropFrame.RAY:
        # A pixel's camera z -> depth along the virtual axis. Its ray r = K^-1 image_from_crop
        # (i, j, 1) has virtual z' = 1, and the point z r / r_z on it has virtual depth z / r_z;
        # K^-1 keeps the third coordinate, so r_z is image_from_crop's third row at (i, j, 1).
        steps = np.arange(crop_size, dtype=np.float64)
        w = image_from_crop[2]
        ray_z = (w[0] * steps[None, :] + w[1] * steps[:, None] + w[2]).astype(np.float32)
        depth = depth / ray_z  # 0 (no data) stays 0
    normalised = (depth - np.float32(centre_depth)) / np.float32(cube_size_m / 2)
    # Written so NaN or infinite depth (holes some sources mark that way) fails too: background.
    background = (depth <= 0) | ~(np.abs(normalised) <= 1)
    if smooth_noise:
        # Only what lies in the cube: the room metres behind a hand is far noisier than it.
        in_cube = np.where(background, np.float32(0.0), depth)
        smoothed = smooth_noise_in(in_cube)
        if smoothed is not in_cube:
            normalised = (smoothed - np.float32(centre_depth)) / np.float32(cube_size_m / 2)
            background = (smoothed <= 0) | ~(np.abs(normalised) <= 1)
    normalised[background] = 1.0
    if background_plane is not None:
        p = background_plane
        normalised, _ = clear_plane_behind(
            normalised, float(centre_depth), float(cube_size_m) / 2, float(p.band_m), float(p.min_share), float(p.max_rms_m),
            float(p.min_behind_m), float(p.min_spread), float(p.min_border), float(p.clearance_m), int(p.hypotheses), int(p.rounds), int(p.curved_rounds),
            float(p.min_concave_radius_m),
        )
    if OutOfImage(out_of_image) == OutOfImage.MARKED:
        # The same nearest-neighbour map as the depth's, so the two agree pixel for pixel.
        inside = _inside_image(depth_m.shape[:2], intrinsics, image_from_crop, crop_size, sensor)
        normalised[~inside] = OUT_OF_IMAGE_DEPTH
    return HandCrop(
        depth=normalised.astype(np.float32),
        center_cam_m=np.asarray(center_cam_m, np.float32),
        cube_size_m=float(cube_size_m),
        image_from_crop=image_from_crop,
        handedness=Handedness(handedness),
        cam_from_crop=cam_from_crop,
    )


def mirrored(crop: HandCrop) -> HandCrop:
    """``crop`` taken as the other hand: what ``make_crop`` cuts from the same frame and cube
    for the other handedness, without resampling the frame again. The nearest-neighbour map
    takes a mirrored crop pixel to the same image pixel, and every later step treats both
    sides alike, so the two agree but for the rounding of a filled hole's depth."""
    return HandCrop(
        depth=np.ascontiguousarray(crop.depth[:, ::-1]),
        center_cam_m=crop.center_cam_m.copy(),
        cube_size_m=crop.cube_size_m,
        image_from_crop=crop.image_from_crop @ _mirror(crop.depth.shape[1]),  # its own inverse
        handedness=Handedness.RIGHT if crop.handedness == Handedness.LEFT else Handedness.LEFT,
        cam_from_crop=crop.cam_from_crop.copy(),
    )


def _mirror(crop_size: int) -> np.ndarray:
    """(3, 3) crop_from_mirrored_crop: column i <-> crop_size - 1 - i."""
    return np.array([[-1.0, 0.0, crop_size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def _inside_image(
    shape: tuple[int, int], intrinsics: CameraIntrinsics, image_from_crop: np.ndarray, crop_size: int, sensor: CameraIntrinsics | None
) -> np.ndarray:
    """(S, S) bool: crop pixels whose nearest image pixel exists (in the whole sensor image
    where the depth is a window of it)."""
    if sensor is None:
        return resample(np.ones(shape, np.bool_), image_from_crop, crop_size, 0)
    if (sensor.fx, sensor.fy) != (intrinsics.fx, intrinsics.fy):
        raise ValueError(f"a window keeps the sensor's focal lengths: {(intrinsics.fx, intrinsics.fy)} against {(sensor.fx, sensor.fy)}")
    # The window's pixel (x, y) is the sensor's (x + x0, y + y0).
    offset = np.array([sensor.cx - intrinsics.cx, sensor.cy - intrinsics.cy])
    x0, y0 = (int(v) for v in np.round(offset))
    if np.abs(offset - (x0, y0)).max() > 1e-6 or x0 < 0 or y0 < 0 or x0 + shape[1] > sensor.width or y0 + shape[0] > sensor.height:
        raise ValueError(
            f"a {shape[1]}x{shape[0]} window at pixel offset ({offset[0]:g}, {offset[1]:g}) is not a whole-pixel window of the "
            f"{sensor.width}x{sensor.height} sensor image"
        )
    sensor_from_window = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    return resample(np.ones((sensor.height, sensor.width), np.bool_), sensor_from_window @ image_from_crop, crop_size, 0)


def _k(intrinsics: CameraIntrinsics) -> np.ndarray:
    return np.array([[intrinsics.fx, 0.0, intrinsics.cx], [0.0, intrinsics.fy, intrinsics.cy], [0.0, 0.0, 1.0]])


def crop_to_camera(points_crop: np.ndarray, crop: HandCrop) -> np.ndarray:
    """(..., 3) crop-normalised points -> camera frame metres (un-mirroring a left hand)."""
    # One product with the mirror and the scale folded into the matrix, without a temporary
    # per step (the tracker maps point sets every frame); in float64, so the float32 result
    # is what scaling after the product gives, to float32 rounding.
    cam_from_points = crop.cam_from_crop.T * (crop.cube_size_m / 2)
    if crop.handedness == Handedness.LEFT:
        cam_from_points[0] *= -1
    return (np.asarray(points_crop, np.float64) @ cam_from_points + crop.center_cam_m).astype(np.float32)


def camera_to_crop(points_cam_m: np.ndarray, crop: HandCrop) -> np.ndarray:
    """(..., 3) camera frame metres -> crop-normalised coordinates (inverse of crop_to_camera)."""
    points = (np.asarray(points_cam_m, np.float64) - crop.center_cam_m) @ crop.cam_from_crop / (crop.cube_size_m / 2)
    if crop.handedness == Handedness.LEFT:
        points[..., 0] *= -1
    return points.astype(np.float32)


def crop_points_camera(crop: HandCrop, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Every measured crop pixel as a camera-frame point: (S, S, 3) float64 metres and the
    (S, S) bool mask of measured pixels (depth inside the cube; ``HandCrop.measured``, so
    pixels marked as past the image's edge are not among them).

    A crop pixel's ray r = K^-1 image_from_crop (i, j, 1) has unit depth along the virtual
    camera's axis in either frame, so its point is r times the pixel's depth along that axis.
    """
    s = crop.depth.shape[0]
    jj, ii = np.mgrid[:s, :s].astype(np.float64)
    rays = np.linalg.inv(_k(intrinsics)) @ crop.image_from_crop @ np.stack([ii.ravel(), jj.ravel(), np.ones(s * s)])
    centre_depth = (crop.cam_from_crop.T @ crop.center_cam_m.astype(np.float64))[2]
    depth = centre_depth + crop.depth.astype(np.float64).ravel() * crop.cube_size_m / 2
    return (rays * depth).T.reshape(s, s, 3), crop.measured
