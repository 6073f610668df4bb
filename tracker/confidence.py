"""The tracker's confidence in a hand estimate: how far the measured depth bears it out.

The share of a crop that the network calls hand says little by itself: a ball or a head
with nothing behind it fills its crop and looks like hand to the network, while a real hand
held in front of a wall or the body shares its crop with that surface. So the estimate is
compared with the depth both ways, in the crop the network saw:

* **confirmed**: of the crop pixels the estimated mesh covers (rendered from the crop's
  virtual camera), the share whose measured depth lies within ``tolerance_m`` of the mesh's
  surface. Mesh over empty space, or in front of a surface well behind it, is not borne out
  (the lifting term of the paper's self-supervision in another form). Pixels past the
  image's edge are left out: nothing there can confirm or refute the mesh.
* **explained**: of the measured pixels the network calls hand, the share the mesh covers.

The confidence is their product, in [0, 1]. A good estimate of a hand scores about 0.85 (the
edge of a silhouette, where depth cameras measure little, keeps it below 1); a hand-sized
mesh fitted to a head scores near 0, and one fitted to a ball mostly below 0.4, since its
fingers reach past the object or its surface sinks into it
(``benchmarks/confidence_separation.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from kernels.agreement import agreement_counts
from tracker.crop import resample
from tracker.types import HandCrop, Handedness

#: Measured depth this close to the mesh's surface confirms it (metres). Sensor noise at arm's
#: length is a few millimetres and the network's depth error about 6 mm; a surface 2 cm
#: behind a finger is no longer that finger (a finger is 1.5-2 cm thick).
DEFAULT_TOLERANCE_M = 0.02
#: The tolerance a side check compares a hand's two fits by (``side_check_agreement``):
#: a hand fitted mirrored still lies on the hand's own surface within 2 cm over most of
#: it, its palm curving the wrong way by less than that, so at 2 cm the two fits often
#: score alike; within 1 cm the true side's fit stands out more (the median difference
#: between the two fits' confidence 0.20 against 0.13 at 2 cm), while the sensor's noise at
#: arm's length (a few millimetres, about 5 mm at 1.2 m on a D4xx) still leaves most of a
#: good fit's pixels inside it. On 1461 tuning frames (the working distance's poses at
#: 0.3-1.2 m, hands on or 2 cm before a desk, a wall or the body), each a track's first,
#: the side the check and the side classifier settled on was wrong on 11 instead of 27
#: (``docs/network.md``, "Left or right").
SIDE_CHECK_TOLERANCE_M = 0.01


@dataclass(frozen=True)
class DepthAgreement:
    """confirmed, explained: shares in [0, 1] (see the module docstring); mesh_pixels: crop
    pixels inside the image that the mesh covers; hand_pixels: measured crop pixels the
    network calls hand."""

    confirmed: float
    explained: float
    mesh_pixels: int
    hand_pixels: int

    @property
    def confidence(self) -> float:
        return self.confirmed * self.explained


def crop_camera(crop: HandCrop) -> tuple[float, float, float]:
    """The crop's virtual pinhole camera, (focal length, cx, cy) in crop pixels, unmirrored:
    a point p (camera frame) is seen at pixel f * q[:2] / q[2] + (cx, cy), q = cam_from_crop.T p.
    It is ``tracker.crop.crop_window``'s map, inverted: the cube spans the crop at its centre's
    depth along the virtual axis."""
    size = crop.depth.shape[0]
    centre = crop.cam_from_crop.T @ np.asarray(crop.center_cam_m, np.float64)
    focal = size * centre[2] / crop.cube_size_m
    half = (size - 1) / 2
    return focal, half - focal * centre[0] / centre[2], half - focal * centre[1] / centre[2]


def inside_image(crop: HandCrop, width: int, height: int) -> np.ndarray | None:
    """(S, S) bool: crop pixels whose nearest image pixel exists, by the crop's own
    nearest-neighbour map (``tracker.crop.resample``, so the two agree where a pixel centre
    falls half-way between two image pixels); None when all of them do, as for a hand well
    inside the image."""
    size = crop.depth.shape[0]
    # The crop's square maps onto a convex quadrilateral: well inside the image (a pixel
    # clear of its edge, beyond any doubt about rounding) if its corners are.
    corners = crop.image_from_crop @ np.array([[0.0, size - 1.0, 0.0, size - 1.0], [0.0, 0.0, size - 1.0, size - 1.0], [1.0, 1.0, 1.0, 1.0]])
    u, v, w = corners
    with np.errstate(divide="ignore", invalid="ignore"):
        if ((w > 0) & (u / w >= 1) & (u / w <= width - 2) & (v / w >= 1) & (v / w <= height - 2)).all():
            return None
    return resample(_image_of_ones(height, width), crop.image_from_crop, size, 0) > 0


def depth_agreement(
    crop: HandCrop,
    vertices_cam_m: np.ndarray,
    faces: np.ndarray,
    hand_probability: np.ndarray,
    image_size: tuple[int, int],
    tolerance_m: float = DEFAULT_TOLERANCE_M,
) -> DepthAgreement:
    """How far ``crop``'s depth bears out the mesh ``vertices_cam_m`` (V, 3) metres, camera
    frame, with triangles ``faces`` (F, 3); ``hand_probability`` (S, S) is the network's, in
    the crop as it saw it (mirrored for a left hand); ``image_size`` (width, height) of the
    image the crop was cut from. A mesh that covers no pixel inside the image is confirmed
    nowhere (0); with no pixel the network calls hand there is no hand to explain (0): the
    confidence is 0 either way. ``CropAgreement`` weighs several meshes against one crop."""
    return CropAgreement(crop, hand_probability, image_size).of(vertices_cam_m, faces, tolerance_m)


class CropAgreement:
    """``depth_agreement`` against one crop and its hand probability, for any number of
    meshes (``of``): what depends on the crop alone (its virtual camera, which of its pixels
    lie inside the image) is worked out once, and each mesh then costs its rendering."""

    def __init__(self, crop: HandCrop, hand_probability: np.ndarray, image_size: tuple[int, int]) -> None:
        size = crop.depth.shape[0]
        if hand_probability.shape != crop.depth.shape:
            raise ValueError(f"hand probability {hand_probability.shape} for a {crop.depth.shape} crop")
        self.crop = crop
        self.camera = crop_camera(crop)
        inside = inside_image(crop, *image_size)
        self.inside = _all_inside(size) if inside is None else inside
        self.centre_depth_m = float((crop.cam_from_crop.T @ np.asarray(crop.center_cam_m, np.float64))[2])
        self.depth = np.ascontiguousarray(crop.depth, dtype=np.float32)
        self.hand_probability = np.ascontiguousarray(hand_probability, dtype=np.float32)

    def of(self, vertices_cam_m: np.ndarray, faces: np.ndarray, tolerance_m: float = DEFAULT_TOLERANCE_M) -> DepthAgreement:
        """``depth_agreement`` of the mesh ``vertices_cam_m`` (V, 3), ``faces`` (F, 3)."""
        vertices = np.asarray(vertices_cam_m, np.float64)
        faces = np.ascontiguousarray(faces, dtype=np.int32)
        # The kernel reads vertices by index unchecked.
        if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"vertices (V, 3) and faces (F, 3) expected, got {vertices.shape} and {faces.shape}")
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise ValueError(f"faces name vertices {faces.min()}..{faces.max()}, but there are {len(vertices)}")
        crop = self.crop
        focal, cx, cy = self.camera
        mesh_pixels, confirmed, hand_pixels, covered_hand = agreement_counts(
            np.ascontiguousarray(vertices @ crop.cam_from_crop),
            faces,
            focal, cx, cy,
            crop.handedness == Handedness.LEFT,
            self.depth,
            self.hand_probability,
            self.inside,
            self.centre_depth_m,
            crop.cube_size_m / 2,
            float(tolerance_m),
        )
        return DepthAgreement(
            confirmed=confirmed / mesh_pixels if mesh_pixels else 0.0,
            explained=covered_hand / hand_pixels if hand_pixels else 0.0,
            mesh_pixels=int(mesh_pixels),
            hand_pixels=int(hand_pixels),
        )


@functools.lru_cache(maxsize=4)
def _all_inside(size: int) -> np.ndarray:
    # Writable, like a computed mask: a read-only array would be another type to numba,
    # compiled anew the first time a hand nears the image's edge.
    return np.ones((size, size), np.bool_)


@functools.lru_cache(maxsize=4)
def _image_of_ones(height: int, width: int) -> np.ndarray:
    # uint8, which OpenCV warps as it is (a bool image would be converted on every call).
    ones = np.ones((height, width), np.uint8)
    ones.flags.writeable = False  # shared between calls; only read by the resample
    return ones
