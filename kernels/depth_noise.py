"""A depth image's measurement noise, estimated and smoothed where it is more than the
network learned (numba, host side).

A stereo camera's depth noise grows with the square of the distance: on a D4xx at 848 x 480
about 0.8 mm at 0.45 m, 3 mm at 0.9 m and 7 mm at 1.4 m. The network was trained on hands 0.2 to
0.9 m away, so it has seen up to about 3 mm; past a metre its fits fall apart, while the same
hand with the noise of 0.9 m is fitted nearly as well as there (``benchmarks.working_distance``).
The network's crop (``tracker.crop.make_crop``) therefore estimates the noise on the surfaces
it holds (``surface_noise``) and, where that is more than the network knows, moves each pixel
towards the mean of its neighbours on the same surface (``smooth_surfaces``): silhouettes,
the steps between a finger and the palm behind it, and holes are kept, since only neighbours
within a band of a pixel's own depth take part, and no pixel is averaged with one that has
no depth.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: For independent Gaussian noise of deviation s on each pixel, a pixel less the mean of its
#: 8 neighbours deviates by s * sqrt(1 + 1/8), and the median of its magnitude is 0.6745 times
#: that.
_SIGMA_PER_MEDIAN_RESIDUAL = 1.0 / (0.6744897501960817 * np.sqrt(1.0 + 1.0 / 8.0))


@njit(cache=True, nogil=True)
def surface_noise(depth, max_step, min_samples):
    """The standard deviation of a depth image's noise, from its surfaces.

    depth: (H, W) float32, metres (or any unit: ``max_step`` and the result are in the same
      one); a pixel is measured where it is > 0.
    max_step: float, the largest depth difference between a pixel and each of its 8
      neighbours for the pixel to count as inside a surface: more is an edge (a silhouette, a
      finger over the palm), whose step would be taken for noise.
    min_samples: int, the fewest such pixels to estimate from; with fewer the estimate is 0.
    Returns (sigma, samples): the median of |pixel - mean of its 8 neighbours| over those
    pixels, scaled to the deviation of independent Gaussian noise per pixel (robust to the
    edges and curvature a few of them still hold), and how many pixels it was taken over.
    """
    h, w = depth.shape
    residuals = np.empty(max(h - 2, 0) * max(w - 2, 0), np.float64)
    count = 0
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            centre = np.float64(depth[i, j])
            if not centre > 0:
                continue
            total = 0.0
            inside = True
            for di in range(-1, 2):
                for dj in range(-1, 2):
                    if di == 0 and dj == 0:
                        continue
                    d = np.float64(depth[i + di, j + dj])
                    if not (d > 0 and abs(d - centre) <= max_step):
                        inside = False
                        break
                    total += d
                if not inside:
                    break
            if inside:
                residuals[count] = abs(centre - total / 8.0)
                count += 1
    if count < max(min_samples, 1):
        return 0.0, count
    return _SIGMA_PER_MEDIAN_RESIDUAL * np.median(residuals[:count]), count


@njit(cache=True, nogil=True)
def smooth_surfaces(depth, radius, band):
    """Each measured pixel the mean of the measured pixels within ``radius`` (a
    (2 radius + 1)^2 window, clipped at the image's edge) whose depth lies within ``band``
    of its own, itself included: independent noise of deviation s falls to about
    s / (2 radius + 1) inside a surface. Pixels with no depth (<= 0 or NaN) stay as they are
    and feed no mean; every mean is read from the input.

    depth: (H, W) float32; radius: int >= 0; band: float, in the depth's unit.
    Returns a new (H, W) float32 image.
    """
    h, w = depth.shape
    smoothed = depth.copy()
    for i in range(h):
        for j in range(w):
            centre = np.float64(depth[i, j])
            if not centre > 0:
                continue
            total = 0.0
            count = 0
            for ii in range(max(0, i - radius), min(h, i + radius + 1)):
                for jj in range(max(0, j - radius), min(w, j + radius + 1)):
                    d = np.float64(depth[ii, jj])
                    if d > 0 and abs(d - centre) <= band:
                        total += d
                        count += 1
            smoothed[i, j] = total / count
    return smoothed
