"""Per-part similarity refit of the template to predicted vertices (numba, inference side).

After the network predicts the initial vertices P_s, the refit (Dual Grid Net §3.4) finds
for each rigid part the similarity transform (scale, rotation, translation) that best maps
the template's part vertices onto P_s, then skins the template with those transforms:
refined vertices P_r and the 21 keypoints. ``tracker.refit`` holds the differentiable torch
twin used in training.

``umeyama`` is the textbook form (SVD of the cross-covariance, reflection-safe), kept as
the reference. ``fit_part_transforms``, on the inference path, gets the same rotation from
Horn's closed form: the unit quaternion that maximises trace(R^T C) over proper rotations
(C the cross-covariance) is the eigenvector of a symmetric 4x4 matrix for its largest
eigenvalue, and that eigenvalue is Umeyama's trace(D S), which gives the scale. Both solve
the same least-squares problem over rotations with det +1 (never a reflection); the
eigenvector takes a few scalar Jacobi sweeps, where 16 LAPACK SVDs with their copies, and
a copy of each part's points, took most of the refit's time.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _largest_eigenpair_sym4(a, vectors):
    """Cyclic Jacobi on the symmetric (4, 4) float64 ``a`` (destroyed); ``vectors`` (4, 4)
    receives the eigenvectors as columns. Returns the index of the largest eigenvalue, which
    is then ``a[i, i]`` with eigenvector ``vectors[:, i]``."""
    for r in range(4):
        for c in range(4):
            vectors[r, c] = 1.0 if r == c else 0.0
    total = 0.0
    for r in range(4):
        for c in range(4):
            total += a[r, c] * a[r, c]
    # Jacobi converges quadratically: a handful of sweeps reaches float64 round-off.
    for _ in range(50):
        off = 0.0
        for p in range(3):
            for q in range(p + 1, 4):
                off += a[p, q] * a[p, q]
        if off <= 1e-32 * total:
            break
        for p in range(3):
            for q in range(p + 1, 4):
                apq = a[p, q]
                if apq == 0.0:
                    continue
                theta = (a[q, q] - a[p, p]) / (2.0 * apq)
                if abs(theta) > 1e150:  # theta squared would overflow
                    t = 0.5 / theta
                else:
                    t = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
                    if theta < 0.0:
                        t = -t
                c = 1.0 / np.sqrt(t * t + 1.0)
                s = t * c
                for k in range(4):
                    akp = a[k, p]
                    akq = a[k, q]
                    a[k, p] = c * akp - s * akq
                    a[k, q] = s * akp + c * akq
                for k in range(4):
                    apk = a[p, k]
                    aqk = a[q, k]
                    a[p, k] = c * apk - s * aqk
                    a[q, k] = s * apk + c * aqk
                for k in range(4):
                    vkp = vectors[k, p]
                    vkq = vectors[k, q]
                    vectors[k, p] = c * vkp - s * vkq
                    vectors[k, q] = s * vkp + c * vkq
    best = 0
    for i in range(1, 4):
        if a[i, i] > a[best, best]:
            best = i
    return best


@njit(cache=True)
def _similarity_from_moments(mu_s, mu_t, cov, var_s, n, n_matrix, vectors, out):
    """Write target_from_source (4, 4) into ``out``.

    mu_s, mu_t: (3,) means; cov: (3, 3) sum over points of (s - mu_s)(t - mu_t)^T (row:
    source axis, column: target axis); var_s: sum of |s - mu_s|^2; n: point count.
    n_matrix, vectors: (4, 4) float64 scratch.
    """
    for r in range(4):
        for c in range(4):
            out[r, c] = 1.0 if r == c else 0.0
    if n < 3 or var_s < 1e-18 * n:
        for r in range(3):
            out[r, 3] = mu_t[r] - mu_s[r]
        return
    sxx, sxy, sxz = cov[0, 0], cov[0, 1], cov[0, 2]
    syx, syy, syz = cov[1, 0], cov[1, 1], cov[1, 2]
    szx, szy, szz = cov[2, 0], cov[2, 1], cov[2, 2]
    n_matrix[0, 0] = sxx + syy + szz
    n_matrix[0, 1] = n_matrix[1, 0] = syz - szy
    n_matrix[0, 2] = n_matrix[2, 0] = szx - sxz
    n_matrix[0, 3] = n_matrix[3, 0] = sxy - syx
    n_matrix[1, 1] = sxx - syy - szz
    n_matrix[1, 2] = n_matrix[2, 1] = sxy + syx
    n_matrix[1, 3] = n_matrix[3, 1] = szx + sxz
    n_matrix[2, 2] = -sxx + syy - szz
    n_matrix[2, 3] = n_matrix[3, 2] = syz + szy
    n_matrix[3, 3] = -sxx - syy + szz
    best = _largest_eigenpair_sym4(n_matrix, vectors)
    w, x, y, z = vectors[0, best], vectors[1, best], vectors[2, best], vectors[3, best]
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    # The largest eigenvalue is max over rotations of trace(R^T C): Umeyama's trace(D S).
    scale = n_matrix[best, best] / var_s
    out[0, 0] = scale * (w * w + x * x - y * y - z * z)
    out[0, 1] = scale * 2.0 * (x * y - w * z)
    out[0, 2] = scale * 2.0 * (x * z + w * y)
    out[1, 0] = scale * 2.0 * (x * y + w * z)
    out[1, 1] = scale * (w * w - x * x + y * y - z * z)
    out[1, 2] = scale * 2.0 * (y * z - w * x)
    out[2, 0] = scale * 2.0 * (x * z - w * y)
    out[2, 1] = scale * 2.0 * (y * z + w * x)
    out[2, 2] = scale * (w * w - x * x - y * y + z * z)
    for r in range(3):
        out[r, 3] = mu_t[r] - (out[r, 0] * mu_s[0] + out[r, 1] * mu_s[1] + out[r, 2] * mu_s[2])


@njit(cache=True)
def umeyama(source, target):
    """Least-squares similarity transform target ~ s * R @ source + t.

    source, target: (N, 3) float64, N >= 3 (fewer or degenerate points give a pure
    translation with identity rotation and unit scale; none, the identity). Returns (4, 4)
    float64 target_from_source whose upper-left block is s * R with det(R) = +1.
    """
    n = source.shape[0]
    out = np.eye(4)
    if n == 0:
        return out
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
    if n < 3 or var_s < 1e-18 * n:  # the kernel's rule: a spread under 1 nm per point
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
    part of each vertex in 0..P-1. Two passes over the vertices (means, then centred
    moments), so no part's points are copied.
    """
    counts = np.zeros(num_parts, np.int64)
    mu_s = np.zeros((num_parts, 3))
    mu_t = np.zeros((num_parts, 3))
    for v in range(vertex_part.shape[0]):
        k = vertex_part[v]
        counts[k] += 1
        for c in range(3):
            mu_s[k, c] += template_vertices[v, c]
            mu_t[k, c] += predicted_vertices[v, c]
    for k in range(num_parts):
        if counts[k] > 0:
            for c in range(3):
                mu_s[k, c] /= counts[k]
                mu_t[k, c] /= counts[k]
    cov = np.zeros((num_parts, 3, 3))
    var_s = np.zeros(num_parts)
    for v in range(vertex_part.shape[0]):
        k = vertex_part[v]
        sx = template_vertices[v, 0] - mu_s[k, 0]
        sy = template_vertices[v, 1] - mu_s[k, 1]
        sz = template_vertices[v, 2] - mu_s[k, 2]
        tx = predicted_vertices[v, 0] - mu_t[k, 0]
        ty = predicted_vertices[v, 1] - mu_t[k, 1]
        tz = predicted_vertices[v, 2] - mu_t[k, 2]
        var_s[k] += sx * sx + sy * sy + sz * sz
        cov[k, 0, 0] += sx * tx
        cov[k, 0, 1] += sx * ty
        cov[k, 0, 2] += sx * tz
        cov[k, 1, 0] += sy * tx
        cov[k, 1, 1] += sy * ty
        cov[k, 1, 2] += sy * tz
        cov[k, 2, 0] += sz * tx
        cov[k, 2, 1] += sz * ty
        cov[k, 2, 2] += sz * tz
    out = np.empty((num_parts, 4, 4))
    n_matrix = np.empty((4, 4))
    vectors = np.empty((4, 4))
    for k in range(num_parts):
        _similarity_from_moments(mu_s[k], mu_t[k], cov[k], var_s[k], counts[k], n_matrix, vectors, out[k])
    return out
