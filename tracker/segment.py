"""Finds the hand in a depth frame without ground truth: nearest object, forearm cut, 3-D mean-shift.

The hand held towards a depth camera is, as a rule, the nearest object in view, often with
its forearm attached. The segmentation takes the valid points within a depth band behind
the nearest robust depth, keeps the connected blob that holds the nearest points, and, if
that blob is elongated like a hand plus forearm, starts from its hand end: the end that
does not run out of the image (forearms enter from the border), else the nearer one.
A 3-D mean-shift with a hand-sized kernel then settles on the hand's centre, where the
network's crop cube goes. In a stream, ``track_hand_center`` falls back on the last centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tracker.types import CameraIntrinsics


@dataclass(frozen=True)
class SegmentConfig:
    min_depth_m: float = 0.1
    max_depth_m: float = 1.5
    #: Points up to this far behind the nearest surface belong to the candidate object.
    depth_band_m: float = 0.15
    #: Radius of the mean-shift kernel: about half a hand length.
    kernel_radius_m: float = 0.08
    #: A blob longer than this along its main axis is a hand with its forearm.
    forearm_min_length_m: float = 0.22
    #: The hand centre sits about this far in from the hand end of the blob.
    hand_end_offset_m: float = 0.07
    #: Fewer points than this is "no hand in view".
    min_points: int = 60
    max_points: int = 4000
    iterations: int = 15
    #: Pixels from the image edge that count as "touching the border".
    border_px: int = 6


def back_project(depth_m: np.ndarray, intrinsics: CameraIntrinsics, mask: np.ndarray) -> np.ndarray:
    """(N, 3) float64 camera-frame points of the masked pixels (pinhole)."""
    v, u = np.nonzero(mask)
    z = depth_m[v, u].astype(np.float64)
    return np.stack([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], axis=1)


def _mean_shift(points: np.ndarray, start: np.ndarray, radius: float, config: SegmentConfig) -> np.ndarray | None:
    centre = start
    r2 = radius**2
    for _ in range(config.iterations):
        near = np.sum((points - centre) ** 2, axis=1) < r2
        if near.sum() < config.min_points // 2:
            return None
        new = points[near].mean(axis=0)
        if np.linalg.norm(new - centre) < 1e-4:
            return new
        centre = new
    return centre


def _subsample(points: np.ndarray, n: int, *arrays):
    if len(points) <= n:
        return (points, *arrays)
    pick = np.random.default_rng(0).choice(len(points), n, replace=False)
    return (points[pick], *(a[pick] for a in arrays))


def find_hand_center(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    config: SegmentConfig = SegmentConfig(),
) -> np.ndarray | None:
    """(3,) float64 hand centre in the camera frame (metres), or None if nothing hand-like is near."""
    valid = (depth_m > config.min_depth_m) & (depth_m < config.max_depth_m) & np.isfinite(depth_m)
    if valid.sum() < config.min_points:
        return None
    # A low percentile, not the minimum: flying pixels and speckle sit in front of everything.
    nearest = np.percentile(depth_m[valid], 0.5)
    band = valid & (depth_m < nearest + config.depth_band_m)
    if band.sum() < config.min_points:
        return None
    count, labels = cv2.connectedComponents(band.astype(np.uint8), connectivity=8)
    # The blob holding the nearest points (not merely the biggest: that may be the body).
    nearest_pixels = band & (depth_m < nearest + 0.02)
    votes = np.bincount(labels[nearest_pixels], minlength=count)
    votes[0] = 0
    blob = labels == int(np.argmax(votes))
    if blob.sum() < config.min_points:
        return None
    v, u = np.nonzero(blob)
    points = back_project(depth_m, intrinsics, blob)
    points, u, v = _subsample(points, config.max_points, u, v)
    mean = points.mean(axis=0)
    _, _, axes = np.linalg.svd(points - mean, full_matrices=False)
    along = (points - mean) @ axes[0]
    start = mean
    if along.max() - along.min() > config.forearm_min_length_m:
        h, w = depth_m.shape
        ends = []
        for sign in (1.0, -1.0):
            tip = sign * along > np.percentile(sign * along, 90)  # the last 10 % of the blob
            at_border = np.mean((u[tip] < config.border_px) | (v[tip] < config.border_px) | (u[tip] >= w - config.border_px) | (v[tip] >= h - config.border_px))
            ends.append((at_border > 0.05, float(points[tip, 2].mean()), sign))
        # Prefer the end inside the image, then the nearer one.
        _, _, sign = min(ends)
        extreme = along.max() if sign > 0 else along.min()
        start = mean + axes[0] * (extreme - sign * config.hand_end_offset_m)
    return _mean_shift(points, start, config.kernel_radius_m, config)


def track_hand_center(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    previous_center: np.ndarray | None,
    config: SegmentConfig = SegmentConfig(),
) -> np.ndarray | None:
    """Hand centre in a tracked stream: detect afresh, and fall back on the last centre.

    Detection each frame keeps the forearm cut in force (a mean-shift seeded only from the
    last centre creeps down the forearm over a few frames); when detection finds nothing
    (a hand briefly behind the nearest object, a dropout) the mean-shift seeded from the
    previous centre keeps the hand.
    """
    centre = find_hand_center(depth_m, intrinsics, config)
    if centre is not None or previous_center is None:
        return centre
    valid = (depth_m > config.min_depth_m) & (depth_m < config.max_depth_m) & (np.abs(depth_m - previous_center[2]) < config.depth_band_m)
    if valid.sum() < config.min_points:
        return None
    points = _subsample(back_project(depth_m, intrinsics, valid), config.max_points)[0]
    return _mean_shift(points, np.asarray(previous_center, np.float64), config.kernel_radius_m, config)
