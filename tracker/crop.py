"""Cuts the network input out of a depth frame: a fixed 3-D cube around the hand, 64 x 64.

Used by training (centre from ground truth, jittered), evaluation and the live pipeline
(centre from the segmentation). The cube of edge ``cube_size_m`` is centred at a 3-D point;
its projection at the centre's depth defines a square image window, resampled with
nearest-neighbour to S x S (depth must not be blended across edges). Depth becomes
(z - z_centre) / (cube / 2), and everything outside [-1, 1] or missing becomes 1, the far
face of the cube. Predictions in crop-normalised coordinates (x, y, z relative to the
centre, divided by cube / 2) map back to the camera frame with ``crop_to_camera``.
"""

from __future__ import annotations

import cv2
import numpy as np

from tracker.types import CameraIntrinsics, Handedness, HandCrop

CROP_SIZE = 64
DEFAULT_CUBE_SIZE_M = 0.26


def crop_window(center_cam_m: np.ndarray, cube_size_m: float, intrinsics: CameraIntrinsics, crop_size: int = CROP_SIZE) -> np.ndarray:
    """(3, 3) float64 image_from_crop affine for a cube centred at ``center_cam_m``.

    Crop pixel (i, j) (centres at integers) maps to image pixel image_from_crop @ (i, j, 1).
    """
    x, y, z = (float(c) for c in center_cam_m)
    if not z > 0:
        raise ValueError(f"crop centre must be in front of the camera, got z = {z}")
    u = intrinsics.fx * x / z + intrinsics.cx
    v = intrinsics.fy * y / z + intrinsics.cy
    su = intrinsics.fx * cube_size_m / z / crop_size  # image pixels per crop pixel
    sv = intrinsics.fy * cube_size_m / z / crop_size
    half = (crop_size - 1) / 2
    return np.array([[su, 0.0, u - su * half], [0.0, sv, v - sv * half], [0.0, 0.0, 1.0]])


def resample(image: np.ndarray, image_from_crop: np.ndarray, crop_size: int, fill) -> np.ndarray:
    """Nearest-neighbour resample of an (H, W[, C]) image into the crop window."""
    crop_from_image = np.linalg.inv(image_from_crop)[:2]
    flags = cv2.INTER_NEAREST
    if image.dtype == np.bool_:
        return cv2.warpAffine(image.astype(np.uint8), crop_from_image, (crop_size, crop_size), flags=flags, borderValue=0) > 0
    if image.ndim == 3 and image.shape[2] > 4:
        raise ValueError("at most 4 channels")
    return cv2.warpAffine(image, crop_from_image, (crop_size, crop_size), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def make_crop(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    center_cam_m: np.ndarray,
    cube_size_m: float = DEFAULT_CUBE_SIZE_M,
    handedness: Handedness = Handedness.RIGHT,
    crop_size: int = CROP_SIZE,
) -> HandCrop:
    """Crop and normalise (H, W) float32 metres depth around a 3-D centre (camera frame, m).

    A left hand's crop is mirrored left-right so the network always sees a right hand.
    """
    image_from_crop = crop_window(center_cam_m, cube_size_m, intrinsics, crop_size)
    if handedness == Handedness.LEFT:
        flip = np.array([[-1.0, 0.0, crop_size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        image_from_crop = image_from_crop @ flip
    depth = resample(depth_m.astype(np.float32, copy=False), image_from_crop, crop_size, 0.0)
    normalised = (depth - np.float32(center_cam_m[2])) / np.float32(cube_size_m / 2)
    normalised[(depth <= 0) | (normalised > 1) | (normalised < -1)] = 1.0
    return HandCrop(
        depth=normalised.astype(np.float32),
        center_cam_m=np.asarray(center_cam_m, np.float32),
        cube_size_m=float(cube_size_m),
        image_from_crop=image_from_crop,
        handedness=Handedness(handedness),
    )


def crop_to_camera(points_crop: np.ndarray, crop: HandCrop) -> np.ndarray:
    """(..., 3) crop-normalised points -> camera frame metres (un-mirroring a left hand)."""
    points = np.array(points_crop, dtype=np.float64, copy=True)
    if crop.handedness == Handedness.LEFT:
        points[..., 0] *= -1
    return (points * (crop.cube_size_m / 2) + crop.center_cam_m).astype(np.float32)


def camera_to_crop(points_cam_m: np.ndarray, crop: HandCrop) -> np.ndarray:
    """(..., 3) camera frame metres -> crop-normalised coordinates (inverse of crop_to_camera)."""
    points = (np.asarray(points_cam_m, np.float64) - crop.center_cam_m) / (crop.cube_size_m / 2)
    if crop.handedness == Handedness.LEFT:
        points[..., 0] *= -1
    return points.astype(np.float32)
