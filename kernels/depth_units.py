"""Depth in metres to integer depth units, in one pass (numba, host side).

``DepthFrame.from_metres`` runs this on every frame a caller brings in metres (ROS's 32FC1
images, most depth libraries): one pass in place of a dozen whole-image numpy passes in
float64, with the same units to the bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def metres_to_units(depth_m, metres_per_unit, implausible_m):
    """``depth_m`` ((H, W) float32 or float64, metres) in units of ``metres_per_unit``:
    (H, W) uint16, rounded half to even; 0 (no measurement) where the depth is NaN,
    infinite, under half a unit or beyond the 65535 units uint16 holds. Also returns the
    number of finite depths beyond ``implausible_m`` and of finite positive ones."""
    h, w = depth_m.shape
    out = np.empty((h, w), np.uint16)
    implausible = positive = 0
    for i in range(h):
        for j in range(w):
            metres = np.float64(depth_m[i, j])
            units = metres / metres_per_unit
            out[i, j] = np.uint16(np.rint(units)) if 0.5 <= units < 65535.5 else 0
            if 0.0 < metres < np.inf:
                positive += 1
                if metres > implausible_m:
                    implausible += 1
    return out, implausible, positive
