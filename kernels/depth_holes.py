"""Isolated holes in a depth image: pixels with no measurement inside a smooth surface
(numba, host side).

A depth camera loses single pixels and small clusters inside a surface it otherwise
measures (low texture or a dark patch for a stereo camera, an oblique or specular one for
coded light). The network was trained on blob-shaped holes and on losses along edges, not
on pixels missing here and there all over the hand; with a tenth of the pixels gone at
random its error grows several times (``benchmarks.depth_holes``). The network's crop
(``tracker.crop.make_crop``) fills such a pixel, only where its neighbours leave no doubt
that it lies inside one surface: most of the 8-neighbourhood measured, no two opposite
neighbours missing (a line of holes), every opposite pair's midpoint at one depth (a plane
through the hole) and all of them within a small depth range (not too steep a one). A straight edge, a silhouette, the invalid band
beside a foreground edge, a gap between two fingers, and the edge of a finger curled over
the palm, where the training data's noise drops pixels too, are never filled (see the
tests).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# The 8-neighbourhood in raster order: neighbour 7 - k lies opposite neighbour k.
_ROWS = np.array((-1, -1, -1, 0, 0, 1, 1, 1))
_COLS = np.array((-1, 0, 1, -1, 1, -1, 0, 1))


@njit(cache=True, nogil=True)
def fill_isolated_holes(depth, min_measured, max_step, max_spread):
    """Fill the isolated holes of a depth image.

    depth: (H, W) float32, metres (or any unit: ``max_spread`` is in the same one); a pixel
      is measured where it is > 0 (0, negative and NaN are holes).
    min_measured: int, the fewest measured 8-neighbours a hole needs to be filled (at most
      8; the image's border pixels, with 5 or 3 neighbours, are never filled above 5). A
      hole with two opposite neighbours also holes (left and right, above and below, or
      across a diagonal) is never filled: it lies in a line of holes, such as a gap between
      two fingers.
    max_step: float, how far apart the midpoints of its opposite neighbours (each pair with
      both measured) may lie: on a plane through the hole, at any slant, they coincide; a
      step in depth between two surfaces (a finger over the palm, a hand before its
      background) parts them by half the step or more.
    max_spread: float, and how far apart the nearest and the farthest neighbour may lie: a
      steep surface, such as a finger's side, where a camera loses pixels as often as the
      training data's noise does, is left as it is.
    Returns (filled, count): a new (H, W) float32 image, each filled hole the mean of those
    midpoints (read from the input, so a fill never feeds another), and how many were
    filled.
    """
    h, w = depth.shape
    filled = depth.copy()
    count = 0
    neighbour = np.zeros(8, np.float32)
    for i in range(h):
        for j in range(w):
            if depth[i, j] > 0:
                continue
            measured = 0
            missing = 0
            # Most holes lie in large regions with no measurement (beyond the camera's range,
            # or its threshold filter's): give up on one as soon as it cannot be filled.
            for k in range(8):
                ii = i + _ROWS[k]
                jj = j + _COLS[k]
                neighbour[k] = depth[ii, jj] if 0 <= ii < h and 0 <= jj < w else np.float32(0.0)
                if neighbour[k] > 0:
                    measured += 1
                else:
                    missing += 1
                    if missing > 8 - min_measured:
                        break
            if measured < min_measured:
                continue
            pairs = 0
            total = 0.0
            lowest = np.inf
            highest = -np.inf
            gap = False
            for k in range(4):
                a, b = neighbour[k], neighbour[7 - k]
                if a > 0 and b > 0:
                    middle = 0.5 * (np.float64(a) + np.float64(b))
                    pairs += 1
                    total += middle
                    lowest = min(lowest, middle)
                    highest = max(highest, middle)
                elif not a > 0 and not b > 0:
                    # Holes on both sides of it along one line through it: a gap a pixel
                    # wide (as between two fingers), or a crack, not a lone hole in a surface.
                    gap = True
            nearest = np.inf
            farthest = -np.inf
            for k in range(8):
                if neighbour[k] > 0:
                    nearest = min(nearest, neighbour[k])
                    farthest = max(farthest, neighbour[k])
            if not gap and pairs > 0 and highest - lowest <= max_step and farthest - nearest <= max_spread:
                filled[i, j] = total / pairs
                count += 1
    return filled, count
