"""Isolated holes in a depth image: pixels with no measurement inside a smooth surface
(numba, host side).

A depth camera loses single pixels and small clusters inside a surface it otherwise
measures (low texture or a dark patch for a stereo camera, an oblique or specular one for
coded light). The network was trained on blob-shaped holes and on losses along edges, not
on pixels missing here and there all over the hand; with a tenth of the pixels gone at
random its error grows several times (``benchmarks.depth_holes``). The network's crop
(``tracker.crop.make_crop``) fills such a pixel with the mean of its neighbours, only where
the neighbours leave no doubt that it lies on one surface: most of the 8-neighbourhood measured and all of it within a small
depth range, and not in a line of holes. A straight edge, a silhouette, the invalid band
beside a foreground edge, and a gap between two fingers, a pixel wide or wider, at one
depth or at two, are never filled (see the tests).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# The 8-neighbourhood in raster order: neighbour 7 - k lies opposite neighbour k.
_ROWS = np.array((-1, -1, -1, 0, 0, 1, 1, 1))
_COLS = np.array((-1, 0, 1, -1, 1, -1, 0, 1))


@njit(cache=True, nogil=True)
def fill_isolated_holes(depth, min_measured, max_spread):
    """Fill the isolated holes of a depth image.

    depth: (H, W) float32, metres (or any unit: ``max_spread`` is in the same one); a pixel
      is measured where it is > 0 (0, negative and NaN are holes).
    min_measured: int, the fewest measured 8-neighbours a hole needs to be filled (at most
      8; the image's border pixels, with 5 or 3 neighbours, are never filled above 5). A
      hole with two opposite neighbours also holes (left and right, above and below, or
      across a diagonal) is never filled: it lies in a line of holes, such as a gap between
      two fingers.
    max_spread: float, the largest difference between the nearest and the farthest of those
      neighbours: more, and the hole may lie on an edge between two surfaces.
    Returns (filled, count): a new (H, W) float32 image, each filled hole the mean of its
    measured neighbours (read from the input, so a fill never feeds another), and how many
    were filled.
    """
    h, w = depth.shape
    filled = depth.copy()
    count = 0
    for i in range(h):
        for j in range(w):
            if depth[i, j] > 0:
                continue
            measured = 0
            missing = 0
            lost = 0  # bit k: neighbour k has no depth
            total = 0.0
            nearest = np.inf
            farthest = -np.inf
            # Most holes lie in large regions with no measurement (beyond the camera's range,
            # or its threshold filter's): give up on one as soon as it cannot be filled.
            for k in range(8):
                ii = i + _ROWS[k]
                jj = j + _COLS[k]
                z = depth[ii, jj] if 0 <= ii < h and 0 <= jj < w else np.float32(0.0)
                if z > 0:
                    measured += 1
                    total += z
                    nearest = min(nearest, z)
                    farthest = max(farthest, z)
                else:
                    missing += 1
                    lost |= 1 << k
                    if missing > 8 - min_measured:
                        break
            # Holes on both sides of it along one line through it: a gap a pixel wide (as
            # between two fingers), or a crack, not a lone hole in a surface.
            gap = False
            for k in range(4):
                if (lost >> k) & 1 and (lost >> (7 - k)) & 1:
                    gap = True
            if measured >= min_measured and not gap and farthest - nearest <= max_spread:
                filled[i, j] = total / measured
                count += 1
    return filled, count
