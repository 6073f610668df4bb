"""Lens models of depth streams, and the pinhole view the tracker works in.

Segmentation, cropping, the network and the overlay all assume a pinhole camera. A D4xx
depth stream is one (its coefficients are zero), but an SR300/SR305 depth stream reports an
inverse Brown-Conrady model whose coefficients move points near the image corners by
several percent. ``pinhole_view`` resamples such a frame onto the pinhole image with the
same fx, fy, cx, cy, so every later stage is exact; a point's z is the same in both images
(the lens bends rays, not depth along the optical axis), so only the pixels move. Estimates
go back into the stream's own image through ``project``.

The models follow librealsense's own projection (``rs2_project_point_to_pixel``, SDK 2.50
and later), on normalised image coordinates x = X/Z, y = Y/Z; each maps a pinhole point to
where the lens puts it, and removing it takes an iterative inverse, as the SDK's
deprojection does:

- Brown-Conrady: OpenCV's radial + tangential polynomial.
- modified and inverse Brown-Conrady: the tangential terms act on the radially moved point.
  (Older SDKs treated "inverse" as a polynomial from distorted to undistorted coordinates
  and could not project with it; current ones project and deproject it like this, and
  ``tests/test_lens.py`` checks against the installed SDK.)
- Kannala-Brandt (4 coefficients): a fisheye model.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import cv2
import numpy as np

from tracker.types import CameraIntrinsics, DistortionModel

#: Fixed-point iterations for inverting a lens model, and the residual (normalised image
#: units, ~1e-4 px at fx 400) below which a pixel counts as solved.
INVERSE_ITERATIONS = 40
INVERSE_TOLERANCE = 3e-7


def _brown_conrady(x: np.ndarray, y: np.ndarray, c: tuple, modified: bool) -> tuple[np.ndarray, np.ndarray]:
    r2 = x * x + y * y
    radial = 1 + c[0] * r2 + c[1] * r2 * r2 + c[4] * r2 * r2 * r2
    if modified:  # the tangential terms act on the radially moved point (r2 stays the original)
        x, y = x * radial, y * radial
        return x + 2 * c[2] * x * y + c[3] * (r2 + 2 * x * x), y + 2 * c[3] * x * y + c[2] * (r2 + 2 * y * y)
    return (
        x * radial + 2 * c[2] * x * y + c[3] * (r2 + 2 * x * x),
        y * radial + 2 * c[3] * x * y + c[2] * (r2 + 2 * y * y),
    )


def _kannala_brandt(x: np.ndarray, y: np.ndarray, c: tuple) -> tuple[np.ndarray, np.ndarray]:
    r = np.hypot(x, y)
    theta = np.arctan(r)
    t2 = theta * theta
    rd = theta * (1 + c[0] * t2 + c[1] * t2**2 + c[2] * t2**3 + c[3] * t2**4)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(r > 1e-12, rd / r, 1.0)
    return x * scale, y * scale


def _invert(forward, qx: np.ndarray, qy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p with forward(p) = q, by fixed-point iteration from p = q (lens models are close to the
    identity over the image); NaN where it does not converge."""
    qx, qy = np.broadcast_arrays(qx, qy)
    shape = qx.shape
    # At least 1-D: numpy turns arithmetic on 0-d arrays into scalars, which take no NaN mask.
    qx, qy = np.atleast_1d(qx), np.atleast_1d(qy)
    px, py = qx.copy(), qy.copy()
    # Far outside the lens's range the polynomial overflows: those points end as NaN below.
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(INVERSE_ITERATIONS):
            fx, fy = forward(px, py)
            px, py = px + (qx - fx), py + (qy - fy)
        fx, fy = forward(px, py)
        bad = ~(np.hypot(qx - fx, qy - fy) < INVERSE_TOLERANCE)
    px[bad], py[bad] = np.nan, np.nan
    return px.reshape(shape), py.reshape(shape)


def distort(x: np.ndarray, y: np.ndarray, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pinhole coordinates -> where the lens puts them in the stream's image
    (normalised, float64)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    c, model = intrinsics.coeffs, intrinsics.distortion
    if intrinsics.is_pinhole:
        return x, y
    if model == DistortionModel.BROWN_CONRADY:
        return _brown_conrady(x, y, c, modified=False)
    if model in (DistortionModel.MODIFIED_BROWN_CONRADY, DistortionModel.INVERSE_BROWN_CONRADY):
        return _brown_conrady(x, y, c, modified=True)
    if model == DistortionModel.KANNALA_BRANDT4:
        return _kannala_brandt(x, y, c)
    raise ValueError(f"lens model {model.value} is not supported")


def undistort(x: np.ndarray, y: np.ndarray, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates in the stream's image -> pinhole ones (the inverse of
    ``distort``); NaN where the iteration does not converge."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if intrinsics.is_pinhole:
        return x, y
    return _invert(lambda u, v: distort(u, v, intrinsics), x, y)


def pinhole_intrinsics(intrinsics: CameraIntrinsics) -> CameraIntrinsics:
    """The same camera without its lens model."""
    if intrinsics.is_pinhole:
        return intrinsics
    return dataclasses.replace(intrinsics, distortion=DistortionModel.NONE, coeffs=(0.0,) * 5)


@lru_cache(maxsize=8)
def _pinhole_maps(intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float32 maps: for each pixel of the pinhole image, where it lies in the stream's."""
    k = intrinsics
    u, v = np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))
    xd, yd = distort((u - k.cx) / k.fx, (v - k.cy) / k.fy, k)
    map_u, map_v = xd * k.fx + k.cx, yd * k.fy + k.cy
    lost = ~(np.isfinite(map_u) & np.isfinite(map_v))
    map_u[lost], map_v[lost] = -1.0, -1.0  # outside the image: no depth
    return map_u.astype(np.float32), map_v.astype(np.float32)


def pinhole_view(depth_m: np.ndarray, intrinsics: CameraIntrinsics) -> tuple[np.ndarray, CameraIntrinsics]:
    """(H, W) float32 depth (metres) and intrinsics of the pinhole image of the same camera;
    the frame itself when it already is one. Nearest-neighbour: depth is not blended across
    an object's edge, and 0 (no measurement) stays 0."""
    if intrinsics.is_pinhole:
        return depth_m, intrinsics
    map_u, map_v = _pinhole_maps(intrinsics)
    depth = cv2.remap(np.asarray(depth_m, np.float32), map_u, map_v, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return depth, pinhole_intrinsics(intrinsics)


def project(points_cam_m: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(..., 3) camera-frame points (metres, z > 0) -> (..., 2) float64 pixels in the stream's
    own image, through its lens model."""
    points = np.asarray(points_cam_m, np.float64)
    if points.ndim == 0 or points.shape[-1] != 3:
        raise ValueError(f"expected points of shape (..., 3), got {points.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = points[..., 0] / points[..., 2], points[..., 1] / points[..., 2]
    x, y = distort(x, y, intrinsics)
    return np.stack([x * intrinsics.fx + intrinsics.cx, y * intrinsics.fy + intrinsics.cy], -1)
