"""Surfaces in a depth grid: which pixels have a neighbour on their own surface, and which lie
on the far side of a depth jump (numba, host side).

The hand segmentation (``tracker.segment``) runs this on every frame's subsampled depth
before it peels objects off near to far. One pass over the 8-neighbourhood replaces a
dozen whole-image numpy operations, and the kernel releases the GIL, so frames prepared
in parallel do not wait on each other.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Each neighbour pair once: right, down, down-right, down-left.
_PAIR_OFFSETS = ((0, 1), (1, 0), (1, 1), (1, -1))


@njit(cache=True, nogil=True)
def _allowed(jump, jump_from, a, b):
    """The largest step between neighbours at depths a and b on one surface: ``jump``, times
    the nearer depth over ``jump_from`` where that is more than 1."""
    return jump * max(np.float32(1.0), min(a, b) / jump_from)


@njit(cache=True, nogil=True)
def depth_edges(depth, valid, jump, jump_from):
    """Isolated pixels and far sides of depth jumps.

    depth: (H, W) float32 metres; valid: (H, W) bool, pixels with a measurement;
    jump: float32 metres, the largest depth step between neighbours on one surface up to
    ``jump_from`` (float32 metres) from the camera; further, ``jump`` times the nearer
    neighbour's depth over ``jump_from`` (a grid's neighbours lie further apart there, and
    the noise is larger). Below, "more than ``jump``" means more than that step.
    Returns (isolated, behind), both (H, W) bool:
      isolated: no valid 8-neighbour within ``jump`` of the pixel's depth (invalid pixels
        included);
      behind: among the rest, pixels with such a neighbour more than ``jump`` nearer.
    """
    h, w = depth.shape
    connected = np.zeros((h, w), np.bool_)
    for i in range(h):
        for j in range(w):
            if not valid[i, j]:
                continue
            for di, dj in _PAIR_OFFSETS:
                ii, jj = i + di, j + dj
                if ii < h and 0 <= jj < w and valid[ii, jj] and abs(depth[ii, jj] - depth[i, j]) <= _allowed(jump, jump_from, depth[ii, jj], depth[i, j]):
                    connected[i, j] = True
                    connected[ii, jj] = True
    behind = np.zeros((h, w), np.bool_)
    for i in range(h):
        for j in range(w):
            if not (valid[i, j] and connected[i, j]):
                continue
            for di, dj in _PAIR_OFFSETS:
                ii, jj = i + di, j + dj
                if ii < h and 0 <= jj < w and valid[ii, jj] and connected[ii, jj]:
                    step = depth[ii, jj] - depth[i, j]
                    allowed = _allowed(jump, jump_from, depth[ii, jj], depth[i, j])
                    if step > allowed:
                        behind[ii, jj] = True
                    elif step < -allowed:
                        behind[i, j] = True
    isolated = ~connected
    return isolated, behind
