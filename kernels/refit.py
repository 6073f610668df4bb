"""Per-part similarity refit of the template to predicted vertices (numba, inference side).

After the network predicts the initial vertices P_s, the refit (Dual Grid Net §3.4) finds
for each rigid part the similarity transform (scale, rotation, translation) that best maps
the template's part vertices onto P_s (Umeyama's closed form with an SVD, reflection-safe),
then skins the template with those transforms: refined vertices P_r and the 21 keypoints.
``tracker.refit`` holds the differentiable torch twin used in training.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def umeyama(source, target):
    """Least-squares similarity transform target ~ s * R @ source + t.

    source, target: (N, 3) float64, N >= 3 (fewer or degenerate points give a pure
    translation with identity rotation and unit scale). Returns (4, 4) float64
    target_from_source whose upper-left block is s * R with det(R) = +1.
    """
    n = source.shape[0]
    out = np.eye(4)
    mu_s = np.zeros(3)
    mu_t = np.zeros(3)
    for i in range(n):
        mu_s += source[i]
        mu_t += target[i]
    mu_s /= n
    mu_t /= n
    cov = np.zeros((3, 3))
    var_s = 0.0
    for i in range(n):
        ds = source[i] - mu_s
        dt = target[i] - mu_t
        var_s += ds[0] * ds[0] + ds[1] * ds[1] + ds[2] * ds[2]
        for r in range(3):
            for c in range(3):
                cov[r, c] += dt[r] * ds[c]
    if n < 3 or var_s < 1e-18:
        out[:3, 3] = mu_t - mu_s
        return out
    cov /= n
    var_s /= n
    u, sigma, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # reflection: flip the weakest axis
        d[2] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (sigma[0] * d[0] + sigma[1] * d[1] + sigma[2] * d[2]) / var_s
    out[:3, :3] = scale * rotation
    out[:3, 3] = mu_t - scale * rotation @ mu_s
    return out


@njit(cache=True)
def fit_part_transforms(template_vertices, predicted_vertices, vertex_part, num_parts):
    """(P, 4, 4) float64 cam_from_template similarity per part.

    template_vertices, predicted_vertices: (V, 3) float32/64 metres; vertex_part: (V,) int
    part of each vertex in 0..P-1.
    """
    out = np.empty((num_parts, 4, 4))
    counts = np.zeros(num_parts, np.int64)
    for v in range(vertex_part.shape[0]):
        counts[vertex_part[v]] += 1
    for k in range(num_parts):
        src = np.empty((counts[k], 3))
        dst = np.empty((counts[k], 3))
        i = 0
        for v in range(vertex_part.shape[0]):
            if vertex_part[v] == k:
                for c in range(3):
                    src[i, c] = template_vertices[v, c]
                    dst[i, c] = predicted_vertices[v, c]
                i += 1
        out[k] = umeyama(src, dst)
    return out
