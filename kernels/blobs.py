"""Per-frame bookkeeping of the hand segmentation's candidates (numba, host side).

``tracker.segment`` peels objects off a subsampled depth grid from near to far and settles
on the hand's centre with a mean-shift. Each of those steps was a handful of whole-grid
numpy operations (bincounts, fancy indexing, masked sums) that cost more in call overhead
than in arithmetic on a ~200 x 160 grid; here each is one pass. The kernels release the
GIL, so frames prepared in parallel do not wait on each other.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def label_sizes_and_front_votes(labels, count, band, depth, front_m):
    """Pixels per connected component, and how many of them lie at the band's front.

    labels: (H, W) int32 component labels 0..count-1 (0: background);
    band: (H, W) bool, the pixels of the depth band (labelled or not);
    depth: (H, W) float32 metres; front_m: the depth below which a band pixel is at the
    front, a float32 as numpy compares a float32 array with a Python float.
    Returns (sizes, votes), both (count,) int64: ``np.bincount(labels.ravel())`` and
    ``np.bincount(labels[band & (depth < front_m)])``, each with ``minlength=count``.
    """
    sizes = np.zeros(count, np.int64)
    votes = np.zeros(count, np.int64)
    h, w = labels.shape
    for i in range(h):
        for j in range(w):
            label = labels[i, j]
            sizes[label] += 1
            if band[i, j] and depth[i, j] < front_m:
                votes[label] += 1
    return sizes, votes


@njit(cache=True, nogil=True)
def mean_shift(points, start, radius, iterations, min_count, max_travel):
    """Area-weighted mean-shift of camera-frame points from ``start``.

    points: (N, 3) float64 metres; start: (3,) float64; radius: the kernel's radius, metres;
    iterations: at most this many steps; min_count: fewer points within the kernel than this
    (or none) is no centre; max_travel: the centre stays within this of ``start`` (metres;
    negative: no limit).
    Each point weighs the surface area it sees, z^2. Stops when a step moves the centre
    less than 0.1 mm. Returns (centre (3,) float64, found bool).
    """
    centre = start.copy()
    r2 = radius * radius
    n = points.shape[0]
    for _ in range(iterations):
        count = 0
        total = 0.0
        sx = sy = sz = 0.0
        cx, cy, cz = centre[0], centre[1], centre[2]
        for i in range(n):
            x, y, z = points[i, 0], points[i, 1], points[i, 2]
            if (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < r2:
                count += 1
                area = z * z
                total += area
                sx += area * x
                sy += area * y
                sz += area * z
        if count == 0 or count < min_count or not total > 0:  # no weight: only points at z = 0
            return centre, False
        new = np.array([sx / total, sy / total, sz / total])
        if max_travel >= 0.0:
            travel = np.sqrt(np.sum((new - start) ** 2))
            if travel > max_travel:
                new = start + (new - start) * (max_travel / travel)
        if np.sqrt(np.sum((new - centre) ** 2)) < 1e-4:
            return new, True
        centre = new
    return centre, True


@njit(cache=True, nogil=True)
def blob_points(mask, depth, step, fx, fy, cx, cy, pixel_at_1m, zone):
    """The camera-frame points of a candidate's grid pixels, and its metric measures.

    mask: (H, W) bool grid pixels of the candidate; depth: (H, W) float32 metres; step: the
    grid's pixel stride in the image; fx, fy, cx, cy: the image's pinhole intrinsics;
    pixel_at_1m: a grid pixel's side at 1 m (metres); zone: grid pixels from the image edge
    that count as touching it.
    Returns (rows, cols, points, at_edge, area_m2, across_variance_m2):
      rows, cols: (N,) int64 grid coordinates in row-major order (``np.nonzero(mask)``);
      points: (N, 3) float64 camera-frame metres; at_edge: (N,) bool, within ``zone`` of the
      image edge; area_m2: the visible surface area (each pixel z^2 * pixel_at_1m^2);
      across_variance_m2: the smaller eigenvalue of the sample covariance of the points'
      (x, y), the variance across the blob's long axis (0 for fewer than 3 points).
    """
    h, w = mask.shape
    n = 0
    for i in range(h):
        for j in range(w):
            if mask[i, j]:
                n += 1
    rows = np.empty(n, np.int64)
    cols = np.empty(n, np.int64)
    points = np.empty((n, 3), np.float64)
    at_edge = np.empty(n, np.bool_)
    area = 0.0
    sx = sy = 0.0
    k = 0
    for i in range(h):
        for j in range(w):
            if not mask[i, j]:
                continue
            z = np.float64(depth[i, j])
            rows[k], cols[k] = i, j
            points[k, 0] = (j * step - cx) / fx * z
            points[k, 1] = (i * step - cy) / fy * z
            points[k, 2] = z
            at_edge[k] = j < zone or i < zone or j >= w - zone or i >= h - zone
            size = z * pixel_at_1m
            area += size * size
            sx += points[k, 0]
            sy += points[k, 1]
            k += 1
    across = 0.0
    if n > 2:
        mx, my = sx / n, sy / n
        xx = xy = yy = 0.0
        for k in range(n):
            dx, dy = points[k, 0] - mx, points[k, 1] - my
            xx += dx * dx
            xy += dx * dy
            yy += dy * dy
        xx, xy, yy = xx / (n - 1), xy / (n - 1), yy / (n - 1)
        across = max((xx + yy) / 2 - np.sqrt(((xx - yy) / 2) ** 2 + xy * xy), 0.0)
    return rows, cols, points, at_edge, area, across


@njit(cache=True, nogil=True)
def border_contacts(rows, cols, z, pixel_at_1m, zone, h, w):
    """How long a candidate lies along each edge of the image: (4,) float64 metres for the
    top, bottom, left and right edges. Along an edge, the distinct grid positions of its
    pixels within ``zone`` of it, times their mean metric pixel size (z * pixel_at_1m).

    rows, cols: (N,) int64 grid coordinates; z: (N,) float64 metres; h, w: the grid's shape.
    """
    lengths = np.zeros(4, np.float64)
    for edge in range(4):
        seen = np.zeros(w if edge < 2 else h, np.bool_)
        distinct = 0
        count = 0
        total = 0.0
        for k in range(rows.shape[0]):
            i, j = rows[k], cols[k]
            if edge == 0:
                at, along = i < zone, j
            elif edge == 1:
                at, along = i >= h - zone, j
            elif edge == 2:
                at, along = j < zone, i
            else:
                at, along = j >= w - zone, i
            if at:
                count += 1
                total += z[k] * pixel_at_1m
                if not seen[along]:
                    seen[along] = True
                    distinct += 1
        if count:
            lengths[edge] = distinct * (total / count)
    return lengths


@njit(cache=True, nogil=True)
def gaps_to_contact(points, at_edge, samples, contacts):
    """For an even sample of about ``samples`` of the points (every max(1, N // samples)-th),
    the squared 3-D distance to the nearest of an even sample of about ``contacts`` of the
    points at the image edge: (S,) float64 m^2. Needs at least one point at the edge."""
    edge_index = np.flatnonzero(at_edge)
    edge_index = edge_index[:: max(1, edge_index.shape[0] // contacts)]
    stride = max(1, points.shape[0] // samples)
    gaps = np.empty((points.shape[0] + stride - 1) // stride, np.float64)
    for s in range(gaps.shape[0]):
        p = points[s * stride]
        best = np.inf
        for e in edge_index:
            q = points[e]
            d = (p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 + (p[2] - q[2]) ** 2
            if d < best:
                best = d
        gaps[s] = best
    return gaps


@njit(cache=True, nogil=True)
def outline_cuts(inside, depth, taken_back, continuation, back_m):
    """Where a candidate's surface runs on past its outline.

    inside: (H, W) bool, the candidate within a window of the grid (a pixel of margin where
    the grid allows); depth: (H, W) float32 metres, 0 where invalid; taken_back: (H, W)
    float32, the far face of the band of the nearer candidate that took each pixel (0: none;
    < 0: set aside unjudged); continuation: float32, the largest depth step along one
    surface; back_m: float32, the far face of this candidate's band.
    The outline ring: pixels outside the candidate with a 4-neighbour inside. A ring pixel
    with depth within ``continuation`` of its farthest 4-neighbour inside continues the
    surface: into a nearer candidate where one took it, else, at or behind ``back_m`` or
    where set aside, behind the band (cut off there, as much as behind it).
    Returns (into_nearer, behind_band, runs_on): the sums of those ring pixels' depths (metres;
    times the grid pixel's side at 1 m, the outline's length) and (H, W) uint8, 1 on the ring
    pixels where it runs on behind the band.
    """
    h, w = inside.shape
    runs_on = np.zeros((h, w), np.uint8)
    into_nearer = 0.0
    behind_band = 0.0
    for i in range(h):
        for j in range(w):
            if inside[i, j]:
                continue
            touching = False
            inner = np.float32(0.0)
            if i > 0 and inside[i - 1, j]:
                touching, inner = True, max(inner, depth[i - 1, j])
            if i + 1 < h and inside[i + 1, j]:
                touching, inner = True, max(inner, depth[i + 1, j])
            if j > 0 and inside[i, j - 1]:
                touching, inner = True, max(inner, depth[i, j - 1])
            if j + 1 < w and inside[i, j + 1]:
                touching, inner = True, max(inner, depth[i, j + 1])
            around = depth[i, j]
            if not touching or not (around > 0) or not (abs(around - inner) < continuation):
                continue
            if taken_back[i, j] > 0:
                into_nearer += around
            elif around >= back_m or taken_back[i, j] < 0:
                behind_band += around
                runs_on[i, j] = 1
    return into_nearer, behind_band, runs_on


@njit(cache=True, nogil=True)
def tip_means(points, cut, along, sign, threshold):
    """The tip of an elongated blob: its points with ``sign * along > threshold``.

    points: (N, 3) float64 metres; cut: (N,) bool, points at a cut (image border, or where
    the surface runs on behind the band); along: (N,) float64, position along the main axis;
    sign: +1.0 or -1.0, which end.
    Returns (share of the tip's points at a cut, (3,) float64 mean of the tip's points);
    NaN where the tip is empty.
    """
    count = 0
    cuts = 0
    total = np.zeros(3, np.float64)
    for i in range(points.shape[0]):
        if sign * along[i] > threshold:
            count += 1
            if cut[i]:
                cuts += 1
            total += points[i]
    if count == 0:
        return np.nan, np.full(3, np.nan)
    return cuts / count, total / count


@njit(cache=True, nogil=True)
def nearest_squared_distance(points, stride, target):
    """The smallest squared distance (m^2) from ``target`` (3,) to every ``stride``-th of the
    (N, 3) float64 ``points``; inf for no points."""
    best = np.inf
    for i in range(0, points.shape[0], stride):
        d = (points[i, 0] - target[0]) ** 2 + (points[i, 1] - target[1]) ** 2 + (points[i, 2] - target[2]) ** 2
        if d < best:
            best = d
    return best
