"""A wall, a table or the body right behind the hand in the network's crop, found and
cleared to background (numba, host side).

A hand resting on a table, or held a few centimetres in front of a wall or a screen, shares
the crop's 26 cm cube with that surface. The network and the crop classifiers were trained
on scenes whose desk or wall lies 8 cm or more behind the wrist, and a surface nearer than
that costs them dearly: hands with a wall 4 cm behind their joints' mean were fitted to
19 mm instead of 8, and the hand-presence classifier kept 12 % of them. Cleared to the
cube's far face, the surface is no longer there to mislead them, and a hand in front of
background is what they know best.

The crop is a pinhole view (the camera's own, or a virtual one turned to look at the cube's
centre), so a plane's inverse depth along the view's axis is linear in the crop's pixel
coordinates, as in ``tracker.segment``'s fit over the image: 1 / z = a i + b j + c. Of
planes through three points of the crop's back half (a fixed pseudo-random choice), the one
within ``band`` of the most pixels is refitted by least squares to the pixels within
``band`` of it until those stay the same, and it counts only where it holds a good share of
the crop, spread wide across it and along its edge (a wall runs on past the crop; a flat
hand and its forearm cross the edge with the forearm only), lies flat to within the
sensor's noise, and passes behind the cube's centre (which segmentation put on the visible
hand): a flat hand over nothing is itself such a plane, but it runs through its own centre.

A hand held against the body, or a few centimetres before it, has the body's front behind
it instead, which no plane fits: a plane holds a strip of it. Grown from that strip into
the smooth surface whose inverse depth is quadratic in the pixel coordinates
(``curve_surface``), the front of a torso or a shoulder is cleared as a wall is, under the
same checks, where it bends away from the camera as a body's front does; a plane and an
arm rising out of it, which a quadratic could join, bend the other way.

The plane search itself (``robust_plane``) and its growth are segmentation's too, where
they find the wall, table or body a hand stands out of over the whole image
(``tracker.segment``).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _fit(ii, jj, inverse, inliers, centre):
    """Least-squares (a, b, c) of inverse = a (i - centre) + b (j - centre) + c over the
    inliers, by Cramer's rule on the normal equations (centred coordinates keep them well
    conditioned); ok False where the inliers are too few or on one line."""
    sii = sij = sjj = si = sj = n = 0.0
    sti = stj = st = 0.0
    for k in range(len(ii)):
        if inliers[k]:
            x, y, t = ii[k] - centre, jj[k] - centre, inverse[k]
            sii += x * x
            sij += x * y
            sjj += y * y
            si += x
            sj += y
            n += 1.0
            sti += t * x
            stj += t * y
            st += t
    det = sii * (sjj * n - sj * sj) - sij * (sij * n - sj * si) + si * (sij * sj - sjj * si)
    # Relative to the scale of its terms: 3 points on a line give 0 up to rounding.
    if n < 3.0 or abs(det) <= 1e-9 * sii * sjj * n:
        return 0.0, 0.0, 0.0, False
    a = (sti * (sjj * n - sj * sj) - sij * (stj * n - sj * st) + si * (stj * sj - sjj * st)) / det
    b = (sii * (stj * n - st * sj) - sti * (sij * n - sj * si) + si * (sij * st - stj * si)) / det
    c = (sii * (sjj * st - stj * sj) - sij * (sij * st - stj * si) + sti * (sij * sj - sjj * si)) / det
    return a, b, c, True


@njit(cache=True, nogil=True)
def _through(i0, j0, t0, i1, j1, t1, i2, j2, t2, centre):
    """(a, b, c) of the plane inverse = a (i - centre) + b (j - centre) + c through three
    points; ok False where they are on one line."""
    x0, y0, x1, y1, x2, y2 = i0 - centre, j0 - centre, i1 - centre, j1 - centre, i2 - centre, j2 - centre
    det = x0 * (y1 - y2) - y0 * (x1 - x2) + (x1 * y2 - x2 * y1)
    if abs(det) < 1e-6:
        return 0.0, 0.0, 0.0, False
    a = (t0 * (y1 - y2) - y0 * (t1 - t2) + (t1 * y2 - t2 * y1)) / det
    b = (x0 * (t1 - t2) - t0 * (x1 - x2) + (x1 * t2 - x2 * t1)) / det
    c = (x0 * (y1 * t2 - y2 * t1) - y0 * (x1 * t2 - x2 * t1) + t0 * (x1 * y2 - x2 * y1)) / det
    return a, b, c, True


@njit(cache=True, nogil=True)
def _next(state):
    """A 64-bit linear congruential step (Knuth's MMIX constants): the same hypotheses for
    the same crop, whatever thread or process draws them."""
    return state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)


@njit(cache=True, nogil=True)
def robust_plane(ii, jj, z, picks, centre, band, hypotheses, rounds, stride, offset, min_behind, horizon_ok):
    """The plane 1 / z = a (i - centre) + b (j - centre) + c that the most points lie near,
    robust to what stands out of it (a hand on a table, in front of a wall), for a pinhole
    view's points: pixel coordinates ``ii``, ``jj`` and depths ``z`` (metres, > 0), float64.

    Of ``hypotheses`` planes through three points drawn from the indices ``picks`` (a fixed
    pseudo-random choice, seeded by the number of points), the one within ``band`` (metres,
    in depth) of the most of every ``stride``-th point, and passing at least ``min_behind``
    behind ``offset`` (metres) at the pixel (centre, centre) (0 and 0: no such bound), is
    refitted by least squares to the points within ``band`` of it until those stay the
    same, at most ``rounds`` times. A least-squares fit over all the points instead is
    drawn towards what stands out, by a hand's own share of them.

    A point whose ray never meets the plane in front of the camera lies beyond its horizon
    (a table seen along it, an arm raised above it). With ``horizon_ok`` it stands out of
    the plane without bound, and a plane whose horizon the pixel (centre, centre) lies
    beyond passes infinitely far behind it; without, such a plane is no plane at all.

    Returns (a, b, c, inliers, relief, found): inliers (n,) bool; relief (n,) float64
    metres in front of the plane (< 0: behind; inf beyond its horizon); found False where
    no three points drawn span a plane that counts, or a refit does not.
    """
    n = len(z)
    inverse = 1.0 / z
    inliers = np.zeros(n, np.bool_)
    relief = np.empty(n)
    best, best_a, best_b, best_c = -1, 0.0, 0.0, 0.0
    state = np.uint64(n)
    for _ in range(hypotheses):
        p = np.empty(3, np.int64)
        for m in range(3):
            state = _next(state)
            p[m] = picks[int(state >> np.uint64(33)) % len(picks)]
        a, b, c, ok = _through(ii[p[0]], jj[p[0]], inverse[p[0]], ii[p[1]], jj[p[1]], inverse[p[1]], ii[p[2]], jj[p[2]], inverse[p[2]], centre)
        if not ok:
            continue
        if c > 0.0:
            if 1.0 / c - offset < min_behind:
                continue
        elif not horizon_ok:
            continue  # the ray at (centre, centre) never meets it: with a horizon, infinitely far behind
        count = 0
        for m in range(0, n, stride):
            plane_inverse = a * (ii[m] - centre) + b * (jj[m] - centre) + c
            if plane_inverse > 0.0 and abs(1.0 / plane_inverse - z[m]) < band:
                count += 1
        if count > best:
            best, best_a, best_b, best_c = count, a, b, c
    if best < 3:
        return 0.0, 0.0, 0.0, inliers, relief, False
    a, b, c = best_a, best_b, best_c
    for attempt in range(rounds + 1):
        changed = False
        for m in range(n):
            plane_inverse = a * (ii[m] - centre) + b * (jj[m] - centre) + c
            if plane_inverse > 0.0:
                relief[m] = 1.0 / plane_inverse - z[m]
            elif horizon_ok:
                relief[m] = np.inf
            else:
                return a, b, c, inliers, relief, False
            inlier = abs(relief[m]) < band
            if inlier != inliers[m]:
                changed = True
                inliers[m] = inlier
        if not changed or attempt == rounds:
            break  # the relief is that of (a, b, c)
        a, b, c, ok = _fit(ii, jj, inverse, inliers, centre)
        if not ok:
            return a, b, c, inliers, relief, False
    return a, b, c, inliers, relief, True


@njit(cache=True, nogil=True)
def _solve(m, v):
    """Solution of the small linear system m x = v by Gaussian elimination with partial
    pivoting (m, v are overwritten); ok False where a pivot vanishes relative to the
    matrix's scale (the points too few, or on one conic)."""
    size = len(v)
    scale = 0.0
    for r in range(size):
        for col in range(size):
            scale = max(scale, abs(m[r, col]))
    x = np.zeros(size)
    if scale == 0.0:
        return x, False
    for col in range(size):
        pivot = col
        for r in range(col + 1, size):
            if abs(m[r, col]) > abs(m[pivot, col]):
                pivot = r
        if abs(m[pivot, col]) <= 1e-12 * scale:
            return x, False
        if pivot != col:
            for k in range(size):
                m[col, k], m[pivot, k] = m[pivot, k], m[col, k]
            v[col], v[pivot] = v[pivot], v[col]
        for r in range(col + 1, size):
            f = m[r, col] / m[col, col]
            for k in range(col, size):
                m[r, k] -= f * m[col, k]
            v[r] -= f * v[col]
    for r in range(size - 1, -1, -1):
        acc = v[r]
        for k in range(r + 1, size):
            acc -= m[r, k] * x[k]
        x[r] = acc / m[r, r]
    return x, True


@njit(cache=True, nogil=True)
def _curved_inverse(coefficients, x, y):
    return (coefficients[0] + coefficients[1] * x + coefficients[2] * y
            + coefficients[3] * x * x + coefficients[4] * x * y + coefficients[5] * y * y)


@njit(cache=True, nogil=True)
def curve_surface(ii, jj, z, inliers, centre, scale, band, rounds, horizon_ok, max_concave):
    """The smooth surface 1 / z = q(x, y), q quadratic in x = (i - centre) / scale and
    y = (j - centre) / scale, grown from the ``inliers`` (n,) bool of a plane
    (``robust_plane``'s): refitted by least squares to the points within ``band`` (metres,
    in depth) of it until those stay the same, at most ``rounds`` times.

    A torso or a shoulder behind the hand is no plane: one fits only a strip of it within
    the band. Its front is smooth over much more than a hand's width, and within the 26 cm of
    a crop, or a hand's surroundings, its inverse depth is close to quadratic in the pixel
    coordinates (a plane's is linear). What stands out of it by a hand's relief stays out: a
    quadratic cannot bend into a bump a hand's width across without leaving the rest of the
    surface, which holds most of the inliers. It can, though, join a plane to an arm rising
    out of it, bending towards the camera where a body's front bends away: the surface
    counts only where its quadratic part's larger eigenvalue (its bend towards the camera,
    in inverse depth per unit of x or y squared) is at most ``max_concave``. A sphere of
    radius R seen from within, concave towards the camera, bends by m^2 / (2 R) there, m the
    metres across per unit of x at a metre's depth.

    Returns (coefficients, inliers, relief, found): coefficients (6,) of 1, x, y, x^2, x y,
    y^2; relief (n,) metres in front of the surface (< 0: behind; inf beyond its horizon,
    with ``horizon_ok``; without, a point there ends the search: found False); found False
    too where the inliers do not fix a quadratic, or it bends too far towards the camera.
    """
    n = len(z)
    inside = inliers.copy()
    relief = np.empty(n)
    coefficients = np.zeros(6)
    if rounds < 1:
        return coefficients, inside, relief, False
    for attempt in range(rounds):
        m = np.zeros((6, 6))
        v = np.zeros(6)
        terms = np.empty(6)
        count = 0
        for k in range(n):
            if inside[k]:
                x, y = (ii[k] - centre) / scale, (jj[k] - centre) / scale
                terms[0], terms[1], terms[2], terms[3], terms[4], terms[5] = 1.0, x, y, x * x, x * y, y * y
                t = 1.0 / z[k]
                for r in range(6):
                    v[r] += terms[r] * t
                    for col in range(r, 6):
                        m[r, col] += terms[r] * terms[col]
                count += 1
        if count < 6:
            return coefficients, inside, relief, False
        for r in range(6):
            for col in range(r):
                m[r, col] = m[col, r]
        coefficients, ok = _solve(m, v)
        if not ok:
            return coefficients, inside, relief, False
        changed = False
        for k in range(n):
            surface_inverse = _curved_inverse(coefficients, (ii[k] - centre) / scale, (jj[k] - centre) / scale)
            if surface_inverse > 0.0:
                relief[k] = 1.0 / surface_inverse - z[k]
            elif horizon_ok:
                relief[k] = np.inf
            else:
                return coefficients, inside, relief, False
            inlier = abs(relief[k]) < band
            if inlier != inside[k]:
                changed = True
                inside[k] = inlier
        if not changed:
            break
    # The quadratic part's larger eigenvalue: how far the surface bends towards the camera
    # along its most concave direction.
    half_trace = 0.5 * (coefficients[3] + coefficients[5])
    bend = half_trace + np.sqrt((0.5 * (coefficients[3] - coefficients[5])) ** 2 + (0.5 * coefficients[4]) ** 2)
    return coefficients, inside, relief, bend <= max_concave


@njit(cache=True, nogil=True)
def _share_and_border(ii, jj, inliers, rows, cols):
    """How many of the points are ``inliers``, and how many of those lie on the crop's
    outermost ring of pixels."""
    count = 0
    border = 0
    for m in range(len(ii)):
        if inliers[m]:
            count += 1
            if ii[m] == 0 or jj[m] == 0 or ii[m] == cols - 1 or jj[m] == rows - 1:
                border += 1
    return count, border


@njit(cache=True, nogil=True)
def _counts(ii, jj, inliers, relief, inverse_at_middle, rows, cols, centre_depth, min_share, max_rms, min_behind, min_spread, min_border):
    """Whether a surface found in a crop (its ``inliers`` and ``relief``, and its inverse
    depth at the crop's middle pixel) counts as background: ``clear_plane_behind``'s
    checks."""
    count, border = _share_and_border(ii, jj, inliers, rows, cols)
    squares = si = sj = sii = sij = sjj = 0.0
    for m in range(len(ii)):
        if inliers[m]:
            squares += relief[m] * relief[m]
            si += ii[m]
            sj += jj[m]
            sii += ii[m] * ii[m]
            sij += ii[m] * jj[m]
            sjj += jj[m] * jj[m]
    if count < 3 or count < min_share * rows * cols or np.sqrt(squares / count) > max_rms:
        return False
    if border < min_border * (2 * (rows + cols) - 4):
        return False
    if inverse_at_middle > 0.0 and 1.0 / inverse_at_middle - centre_depth < min_behind:
        return False  # (<= 0: the middle pixel's ray never meets the surface, infinitely far behind)
    # The smaller eigenvalue of the inliers' 2 x 2 pixel covariance.
    vii = sii / count - (si / count) ** 2
    vjj = sjj / count - (sj / count) ** 2
    vij = sij / count - (si / count) * (sj / count)
    narrow = 0.5 * (vii + vjj) - np.sqrt(0.25 * (vii - vjj) ** 2 + vij * vij)
    return np.sqrt(12.0 * max(narrow, 0.0)) >= min_spread * rows


@njit(cache=True, nogil=True)
def clear_plane_behind(depth, centre_depth, half_cube, band, min_share, max_rms, min_behind, min_spread, min_border, clearance, hypotheses, rounds, curved_rounds, min_concave_radius):
    """Find the plane, or the body's front, behind the hand in a normalised crop and clear it.

    depth: (S, S) float32 normalised crop (``tracker.types.HandCrop.depth``): (z - centre
      depth) / half_cube, z the depth along the view's axis; measured where strictly
      between -1 and 1 (1: background or missing, -1: past the image's edge).
    centre_depth: the cube centre's depth along the view's axis, metres.
    half_cube: half the cube's edge, metres.
    band: metres; the plane's inliers lie this close to it (in depth).
    min_share: the plane needs inliers on at least this share of the crop's S * S pixels,
    max_rms: metres; ... their RMS distance from it (in depth) at most this,
    min_behind: metres; ... to pass at least this far behind the cube's centre, at the crop's
      middle pixel (a table seen along it may pass that pixel's ray by: beyond its horizon),
    min_spread: ... and its inliers to spread at least this share of S across their narrower
      direction (their standard deviation there, times sqrt(12): a strip's width), which a
      forearm reaching away behind the hand, nearly a plane along a strip, does not,
    min_border: ... and to hold at least this share of the crop's outermost ring of pixels:
      a wall or a table runs on past the crop, while a flat hand and its forearm, which may
      be as big and as flat, cross its edge with the forearm only.
    clearance: metres; a pixel less than this in front of the plane, or behind it, is
      cleared to 1 (background); one beyond its horizon stands out of it and is kept.
    hypotheses: planes through three points of the crop's back half tried; the one with the
      most inliers (passing behind the centre) is refitted by least squares to its inliers,
    rounds: ... at most this many times, until they stay the same.
    curved_rounds: a plane holding min_share of the crop already is also
      grown into the smooth curved surface it may be a strip of (``curve_surface``: a
      torso, a shoulder) by this many least-squares rounds at most, and that is cleared
      instead where it passes the checks above (0: the plane only),
    min_concave_radius: metres; ... and bends towards the camera no more than a sphere this
      big seen from within.

    Returns (cleared, found): a new (S, S) float32 crop, the input's copy where no plane was
    found; and whether one was.
    """
    rows, cols = depth.shape
    out = depth.copy()
    n = 0
    for j in range(rows):
        for i in range(cols):
            if -1.0 < depth[j, i] < 1.0:
                n += 1
    if n < 3 or n < min_share * rows * cols:
        return out, False
    ii = np.empty(n, np.float64)
    jj = np.empty(n, np.float64)
    z = np.empty(n, np.float64)
    k = 0
    for j in range(rows):
        for i in range(cols):
            value = depth[j, i]
            if -1.0 < value < 1.0:
                ii[k], jj[k], z[k] = i, j, centre_depth + half_cube * value
                k += 1
    middle = (rows - 1) / 2.0
    # The plane lies behind the hand: hypotheses through points of the crop's back half,
    # scored on at most ~500 points spread over the crop.
    back = np.nonzero(z >= np.median(z))[0]
    a, b, c, inliers, relief, found = robust_plane(ii, jj, z, back, middle, band, hypotheses, rounds, max(1, n // 500), centre_depth, min_behind, True)
    if not found:
        return out, False
    # Grown only from a strip holding the share the surface needs already: a body's front
    # behind the hand gives one, while the best plane in a crop with nothing behind the hand
    # (a patch of the hand or forearm) mostly holds less, and growing that costs time for
    # nothing.
    strip, _ = _share_and_border(ii, jj, inliers, rows, cols)
    counts = False  # the curved surface counts; else the plane is checked
    if curved_rounds > 0 and strip >= min_share * rows * cols:
        # Metres across per unit of the fit's coordinates, per metre of depth: its bound on
        # the bend towards the camera (``curve_surface``).
        across = middle * 2.0 * half_cube / (cols * centre_depth)
        coefficients, curved_inliers, curved_relief, curved = curve_surface(
            ii, jj, z, inliers, middle, middle, band, curved_rounds, True, across * across / (2.0 * min_concave_radius)
        )
        if curved and _counts(ii, jj, curved_inliers, curved_relief, coefficients[0], rows, cols, centre_depth, min_share, max_rms, min_behind, min_spread, min_border):
            inliers, relief, counts = curved_inliers, curved_relief, True
    if not counts and not _counts(ii, jj, inliers, relief, c, rows, cols, centre_depth, min_share, max_rms, min_behind, min_spread, min_border):
        return out, False
    for m in range(n):
        if relief[m] < clearance:
            out[int(jj[m]), int(ii[m])] = 1.0
    return out, True
