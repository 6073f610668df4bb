"""Capsule interpenetration counts (numba, host side).

Used by the synthetic data generator (``tracker.synth.collision``) to find drawn hand poses
whose fingers pass through each other; it runs for every drawn pose, so it must cost far
less than rendering a sample (tens of microseconds, and some 0.3 ms with the posing of the
mesh it tests, against tens of milliseconds).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def capsule_penetration_counts(points, starts, ends, radii, member_offsets, members, depth):
    """(C,) int64: how many of each capsule's member points lie deeper than ``depth`` inside it.

    points: (N, 3) float64; starts, ends: (C, 3) float64 segment ends; radii: (C,) float64
    (same units); capsule c's members are points[members[member_offsets[c]:member_offsets[c + 1]]]
    (member_offsets: (C + 1,) int64; members: int64). A point is inside by radius minus its
    distance to the segment.
    """
    n_capsules = starts.shape[0]
    counts = np.zeros(n_capsules, np.int64)
    for c in range(n_capsules):
        ax, ay, az = starts[c, 0], starts[c, 1], starts[c, 2]
        dx, dy, dz = ends[c, 0] - ax, ends[c, 1] - ay, ends[c, 2] - az
        length2 = dx * dx + dy * dy + dz * dz
        limit = radii[c] - depth
        if limit <= 0.0:
            continue
        limit2 = limit * limit
        for k in range(member_offsets[c], member_offsets[c + 1]):
            i = members[k]
            px, py, pz = points[i, 0] - ax, points[i, 1] - ay, points[i, 2] - az
            t = 0.0
            if length2 > 0.0:
                t = (px * dx + py * dy + pz * dz) / length2
                t = min(max(t, 0.0), 1.0)
            ex, ey, ez = px - t * dx, py - t * dy, pz - t * dz
            if ex * ex + ey * ey + ez * ez < limit2:
                counts[c] += 1
    return counts
