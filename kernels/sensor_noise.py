"""Stereo depth-camera noise model for synthetic training data.

The synthetic data generator renders a *clean* depth image (float32 metres,
0 = no measurement, z in the OpenCV camera frame: x right, y down, z
forward) plus an int16 label image. This module corrupts the clean depth the
way an active-stereo depth camera (Intel RealSense D4xx) does, so that a
network trained on synthetic data generalises to real sensor data (the SR30x's
coded light has its shadow and edge losses too, between its projector and
camera). Labels
are not touched: the caller decides what a label means where the depth was
invalidated or replaced.

Effects, each a separate pure function so they can be tested one by one:

==========================  ==================================================
``occlusion_shadow``        stereo shadow: background seen by the left
                            imager but hidden from the right one by a nearer
                            object has no match -> invalid band on the LEFT
                            of every foreground edge.
``inflate_edges``           foreground fattening: the matching window that
                            straddles an edge is dominated by the nearer
                            surface, so its depth bleeds into neighbouring
                            background pixels, mostly along the baseline.
``add_flying_pixels``       mixed pixels at discontinuities with a depth
                            strictly between the two surfaces.
``add_disparity_noise``     Gaussian sub-pixel matching error in disparity
                            -> depth sigma grows with z^2.
``quantise_disparity``      sub-pixel disparity quantisation.
``punch_holes``             blob-shaped dropouts (specular / low texture).
``drop_edges``              random invalid pixels near discontinuities.
``quantise_depth``          the device's depth unit (e.g. 1 mm for Z16).
``clip_range``              outside the working range -> 0.
==========================  ==================================================

``apply_stereo_noise`` composes them in that order: geometric effects on the
clean geometry, then matching noise and quantisation, then dropouts, then
the device depth unit and the range limits.

Conventions
-----------
* Depth is referenced to the LEFT imager (as on the D4xx); the right imager
  sits at ``+baseline_m`` along x, so a point at depth ``z`` and column ``u``
  in the depth image appears at column ``u - f*b/z`` in the right image.
* Disparity ``d = f*b/z`` in pixels, with ``f`` the horizontal focal length
  (``fx``) of the depth image in pixels; an invalid pixel (depth 0) is
  treated as infinitely far (disparity 0) when looking for discontinuities.
* Two 4-neighbours form a *discontinuity* when their disparities differ by
  more than ``discontinuity_disparity_px``; the valid pixels of such pairs
  are the "discontinuity pixels" (``discontinuity_mask``).
* Pixel centres are at integer coordinates (``depth[v, u]``).

Determinism: kernels are pure; every random number is drawn in Python from
the caller's ``numpy.random.Generator`` (as float32 uniforms) and passed to
the ``numba.njit`` kernels, which consume them in raster order. The same
input, model and generator state give a bit-identical output.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = [
    "StereoNoiseModel",
    "apply_stereo_noise",
    "discontinuity_mask",
    "occlusion_shadow",
    "inflate_edges",
    "add_flying_pixels",
    "add_disparity_noise",
    "quantise_disparity",
    "punch_holes",
    "drop_edges",
    "clip_range",
    "quantise_depth",
]


@dataclass(frozen=True)
class StereoNoiseModel:
    """Parameters of a stereo depth camera's error model.

    Defaults resemble an Intel RealSense D435 streaming depth at 848x480
    (fx ~ 420-430 px, so f*b ~ 21 px*m: 1 px of disparity is ~48 mm of depth
    at 1 m and ~8 mm at 0.4 m). The geometric effects depend on the focal
    length passed to ``apply_stereo_noise``, so the same model also works for
    other resolutions of the same device.
    """

    # Distance between the left (reference) and right imager centres, metres.
    # D435/D455: 50 mm / 95 mm; D415: 55 mm; SR305: structured light, use the
    # projector-camera distance.
    baseline_m: float = 0.050
    # Sub-pixel disparity quantisation, pixels. The D4xx ASIC reports
    # disparity with 5 fractional bits. 0 disables.
    disparity_step_px: float = 1.0 / 32.0
    # RMS sub-pixel matching error, pixels. Intel's D400 tuning guide quotes
    # ~0.08 px for a well-textured target with the projector on, giving
    # depth RMS = z^2 * 0.08 / (f*b), i.e. ~0.6 mm at 0.4 m, ~3.8 mm at 1 m.
    disparity_noise_px: float = 0.08
    # Probability that a valid pixel closer than ``edge_dropout_width_px``
    # (Chebyshev distance) to a discontinuity pixel is invalid: the census /
    # block matcher's cost curve is ambiguous where the window straddles two
    # disparities and the confidence / left-right checks reject it. Real
    # D435 edges show a ragged 1-3 px fringe of such dropouts.
    edge_dropout_probability: float = 0.3
    # Half-width of that fringe, pixels: discontinuity pixels are at distance
    # 0, so width 1 affects only them, width 2 also their 8-neighbours, ...
    edge_dropout_width_px: int = 2
    # Stereo shadow (left-right occlusion): background to the LEFT of a
    # foreground edge, over a width of f*b*(1/z_fg - 1/z_bg) px, is not seen
    # by the right imager and is reported invalid. Purely geometric, no
    # parameter besides the baseline.
    occlusion_shadow: bool = True
    # Probability that a discontinuity pixel with valid depth on both sides
    # becomes a "flying pixel" whose disparity is a mix of the two surfaces.
    # Much rarer on D4xx than on ToF cameras, but visible on hand silhouettes.
    flying_pixel_probability: float = 0.15
    # Mean foreground fattening along the baseline, pixels: each near-side
    # edge pixel bleeds its depth into floor(edge_inflation_px + U[0,1))
    # background pixels horizontally (mean = edge_inflation_px). D4xx uses a
    # 7x7 census window, whose half-width bounds the bias; the default
    # post-processing removes part of it, leaving ~1 px.
    edge_inflation_px: float = 1.0
    # Random blob-shaped holes per megapixel of image area (specular skin
    # highlights, projector pattern wash-out). A few per VGA frame.
    hole_rate_per_megapixel: float = 20.0
    # (min, max) radius of those holes, pixels; uniform in between.
    hole_radius_px: tuple[float, float] = (1.5, 6.0)
    # Working range, metres; outside -> 0. (A D435 at 848x480 with disparity
    # shift 0 stops matching below ~0.2 m; keep the limit at 0.1 m so the
    # scene, not the model, decides near-range behaviour.)
    min_depth_m: float = 0.1
    max_depth_m: float = 3.0
    # Optional final quantisation to the device depth unit, metres (D4xx Z16
    # default: 0.001). None keeps float precision.
    depth_scale_m: float | None = None
    # Disparity jump between 4-neighbours, pixels, above which they count as
    # a discontinuity. Must exceed the matching noise (0.08 px RMS gives a
    # neighbour difference of ~0.11 px RMS, so 1 px is ~9 sigma) and equals
    # the "fold-over" slope at which a surface starts to self-occlude.
    discontinuity_disparity_px: float = 1.0
    # Vertical fattening relative to horizontal: matching runs along the
    # rows (epipolar lines), so most of the bleed is horizontal; the
    # aggregation window still leaks a little across rows.
    edge_inflation_vertical_ratio: float = 0.25

    def __post_init__(self):
        # Normalise types so that equal models compare (and hash) equal.
        radius = tuple(float(r) for r in self.hole_radius_px)
        object.__setattr__(self, "hole_radius_px", radius)
        width = self.edge_dropout_width_px
        if isinstance(width, bool) or int(width) != width:
            raise ValueError("StereoNoiseModel: edge_dropout_width_px must be a "
                             f"non-negative integer, got {width!r}")
        object.__setattr__(self, "edge_dropout_width_px", int(width))

        def check(cond, msg):
            if not cond:
                raise ValueError(f"StereoNoiseModel: {msg}")

        finite = [
            self.baseline_m, self.disparity_step_px, self.disparity_noise_px,
            self.edge_dropout_probability, self.flying_pixel_probability,
            self.edge_inflation_px, self.hole_rate_per_megapixel,
            self.min_depth_m, self.max_depth_m,
            self.discontinuity_disparity_px,
            self.edge_inflation_vertical_ratio, *radius,
        ]
        check(all(math.isfinite(float(v)) for v in finite),
              "all parameters must be finite")
        check(self.baseline_m > 0, "baseline_m must be > 0")
        check(self.disparity_step_px >= 0, "disparity_step_px must be >= 0")
        check(self.disparity_noise_px >= 0, "disparity_noise_px must be >= 0")
        check(0 <= self.edge_dropout_probability <= 1,
              "edge_dropout_probability must be in [0, 1]")
        check(self.edge_dropout_width_px >= 0,
              "edge_dropout_width_px must be a non-negative integer")
        check(0 <= self.flying_pixel_probability <= 1,
              "flying_pixel_probability must be in [0, 1]")
        check(self.edge_inflation_px >= 0, "edge_inflation_px must be >= 0")
        check(self.edge_inflation_vertical_ratio >= 0,
              "edge_inflation_vertical_ratio must be >= 0")
        check(self.hole_rate_per_megapixel >= 0,
              "hole_rate_per_megapixel must be >= 0")
        check(len(radius) == 2 and 0 <= radius[0] <= radius[1],
              "hole_radius_px must be (min, max) with 0 <= min <= max")
        check(0 <= self.min_depth_m < self.max_depth_m,
              "need 0 <= min_depth_m < max_depth_m")
        check(self.discontinuity_disparity_px > 0,
              "discontinuity_disparity_px must be > 0")
        check(self.depth_scale_m is None
              or (math.isfinite(self.depth_scale_m) and self.depth_scale_m > 0),
              "depth_scale_m must be None or > 0")

    def scaled(self, strength: float) -> "StereoNoiseModel":
        """Copy with every corruption scaled by ``strength`` (>= 0).

        Rates and magnitudes scale linearly (probabilities clipped to 1):
        disparity step and noise, edge-dropout and flying-pixel
        probabilities, edge inflation, hole rate. Widths that only say
        *where* an effect may happen (``edge_dropout_width_px``,
        ``hole_radius_px``) are kept, so the expected number of corrupted
        pixels scales ~linearly rather than quadratically. The occlusion
        shadow and the device depth unit are not magnitudes: they stay as
        configured for ``strength > 0`` and are switched off at 0.

        ``scaled(0)`` is the identity apart from the range limits, which
        are kept at every strength (they describe the sensor, not noise);
        ``scaled(1)`` equals ``self``; ``strength > 1`` exaggerates.
        """
        s = float(strength)
        if not (math.isfinite(s) and s >= 0):
            raise ValueError(f"strength must be finite and >= 0, got {strength!r}")
        if s == 1.0:
            return self
        on = s > 0
        return dataclasses.replace(
            self,
            disparity_step_px=self.disparity_step_px * s,
            disparity_noise_px=self.disparity_noise_px * s,
            edge_dropout_probability=min(1.0, self.edge_dropout_probability * s),
            flying_pixel_probability=min(1.0, self.flying_pixel_probability * s),
            edge_inflation_px=self.edge_inflation_px * s,
            hole_rate_per_megapixel=self.hole_rate_per_megapixel * s,
            occlusion_shadow=self.occlusion_shadow and on,
            depth_scale_m=self.depth_scale_m if on else None,
        )


# ---------------------------------------------------------------------------
# njit kernels (private). All work in place on the array they are given;
# the public wrappers copy first. Stages whose neighbourhood rules need the
# unmodified image (inflation, flying pixels) collect their writes and apply
# them after the scan instead of keeping a second full-size image: large
# short-lived temporaries cost more in page faults than the kernels cost in
# arithmetic. error_model="numpy" drops ZeroDivisionError checks so LLVM can
# vectorise; every division by a depth is guarded by a validity test.
# ---------------------------------------------------------------------------

# Bits of the per-pixel discontinuity codes (uint8).
_EDGE = 1    # valid pixel with a 4-neighbour across a disparity jump
_NEAR = 2    # ... and at least one such neighbour is farther (or invalid)
_MIXED = 4   # ... and at least one such neighbour is valid (flying-pixel candidate)
_BAND = 8    # edge-dropout candidate (set by _mark_band)
# The code image is allocated with its width padded to a multiple of 8
# (padding = 0) so that the sparse-pixel loops can test 8 codes at once
# through a uint64 view; a byte-by-byte scan costs ~2 cycles/pixel because
# the loop body (with inner loops) does not vectorise.
_BYTES_1 = np.uint64(0x0101010101010101)

# float32 uniforms lie on a 2^-24 grid in [0, 1); shifting by half a step
# makes the set symmetric about 0.5 and keeps the inverse normal CDF finite
# (|x| <= 5.5 sigma, plenty for matching noise).
_HALF_ULP_U32 = 2.0 ** -25

# Flying pixels mix the two disparities with a fraction in [_MIX_LO, 1 -
# _MIX_LO]: a mix within 5 % of either surface is indistinguishable from
# matching noise, and the margin keeps the result strictly between the two
# depths even after rounding to float32.
_MIX_LO = 0.05

# Rows of uniforms drawn per chunk for the disparity noise: ~64 KiB keeps
# the temporaries in cache and below malloc's mmap threshold.
_NOISE_CHUNK_BYTES = 1 << 16

# Inverse normal CDF (Acklam's rational approximation, relative error
# < 1.2e-9). The central branch is branch-free and vectorises; the two tails
# (4.85 % of samples) would need log/sqrt, so for 2^-12 <= p < _P_LOW they
# are linearly interpolated in a table on a 2^-18 grid (error < 1e-5 sigma,
# worst at p = 2^-12) and only the remaining 0.05 % are evaluated exactly.
_P_LOW = 0.02425
_TAIL_STEP = 2.0 ** -18
_TAIL_EXACT_BELOW = 2.0 ** -12
_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
      1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
      6.680131188771972e+01, -1.328068155288572e+01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
      -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
      3.754408661907416e+00)


@njit(cache=True, error_model="numpy")
def _ndtri_central(q):
    """Acklam, central region; q = p - 0.5 with |q| <= 0.5 - _P_LOW."""
    r = q * q
    return ((((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r
                - 2.759285104469687e+02) * r + 1.383577518672690e+02) * r
              - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q
            / (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r
                  - 1.556989798598866e+02) * r + 6.680131188771972e+01) * r
                - 1.328068155288572e+01) * r + 1.0))


@njit(cache=True, error_model="numpy")
def _ndtri_lower(p):
    """Acklam, lower tail; 0 < p < _P_LOW."""
    q = math.sqrt(-2.0 * math.log(p))
    return ((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
              + 4.374664141464968e+00) * q + 2.938163982698783e+00)
            / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                 + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))


def _ndtri_numpy(p):
    """Vectorised Acklam (p in (0, 1)), to build the tail table."""
    p = np.asarray(p, np.float64)
    out = np.empty_like(p)
    lo = p < _P_LOW
    q = np.sqrt(-2.0 * np.log(p[lo]))
    out[lo] = np.polyval(_C, q) / np.polyval(_D + (1.0,), q)
    q = p[~lo] - 0.5
    r = q * q
    out[~lo] = np.polyval(_A, r) * q / np.polyval(_B + (1.0,), r)
    return out


_TAIL_TABLE = _ndtri_numpy(
    np.maximum(np.arange(int(_P_LOW / _TAIL_STEP) + 3) * _TAIL_STEP, 1e-300))


@njit(cache=True, error_model="numpy")
def _uniform_to_normal_inplace(u, tail_table):
    """u[k] (float32 uniform in [0, 1)) -> Phi^-1(u[k] + 2^-25), in place."""
    n = u.shape[0]
    # Tails first (branchy, ~5 % of samples; a table gather would be
    # branch-free but gathers are slow on some x86 cores). Their results
    # have |x| > 1.97, outside [0, 1), so the vectorised central pass below
    # can tell them apart from the uniforms still to convert.
    for k in range(n):
        p = np.float64(u[k]) + _HALF_ULP_U32
        if p < _P_LOW or p > 1.0 - _P_LOW:
            sign = 1.0
            if p > 0.5:
                # Exact in float64: p has at most 26 significant bits.
                p = 1.0 - p
                sign = -1.0
            if p < _TAIL_EXACT_BELOW:
                v = _ndtri_lower(p)
            else:
                s = p * (1.0 / _TAIL_STEP)
                i = int(s)
                f = s - i
                v = tail_table[i] + f * (tail_table[i + 1] - tail_table[i])
            u[k] = sign * v
    for k in range(n):
        x = u[k]
        c = _ndtri_central((np.float64(x) + _HALF_ULP_U32) - 0.5)
        u[k] = c if (x >= 0.0 and x < 1.0) else x


@njit(cache=True, error_model="numpy")
def _scan_input(depth):
    """(n_non_finite, n_negative) in one branch-free (vectorised) pass."""
    h, w = depth.shape
    n_bad = 0
    n_neg = 0
    for i in range(h):
        for j in range(w):
            z = depth[i, j]
            n_bad += not (abs(z) < np.inf)   # NaN compares false
            n_neg += z < 0.0
    return n_bad, n_neg


def _new_codes(shape):
    """Zeroed (H, ceil(W/8)*8) uint8 code image."""
    h, w = shape
    return np.zeros((h, (w + 7) // 8 * 8), np.uint8)


@njit(cache=True, error_model="numpy", inline="always")
def _mark_pair(codes, i0, j0, d0, i1, j1, d1, jump):
    if d0 - d1 > jump:
        # 0 is nearer; it is valid because d0 > jump > 0.
        codes[i0, j0] |= _EDGE | _NEAR
        if d1 > 0.0:
            codes[i0, j0] |= _MIXED
            codes[i1, j1] |= _EDGE | _MIXED
    elif d1 - d0 > jump:
        codes[i1, j1] |= _EDGE | _NEAR
        if d0 > 0.0:
            codes[i1, j1] |= _MIXED
            codes[i0, j0] |= _EDGE | _MIXED


@njit(cache=True, error_model="numpy")
def _edge_codes(depth, fb, jump, codes):
    """Fill ``codes[:, :W]`` (see _new_codes) with _EDGE/_NEAR/_MIXED bits
    for ``depth``; return the number of pixels carrying each bit."""
    h, w = depth.shape
    wpad = codes.shape[1]
    prev = np.zeros(w)
    cur = np.zeros(w)
    # Per-row jump flags, padded like the codes so that rows can be scanned
    # 8 flags at a time: jumps are sparse, and a per-pixel branch would
    # cost more than the vectorised comparisons.
    hflag = np.zeros(wpad, np.uint8)
    vflag = np.zeros(wpad, np.uint8)
    h64 = hflag.view(np.uint64)
    v64 = vflag.view(np.uint64)
    for i in range(h):
        for j in range(w):
            prev[j] = cur[j]
            z = depth[i, j]
            cur[j] = fb / z if z > 0.0 else 0.0
            codes[i, j] = 0
        # Each 4-neighbour pair is examined once (right and upper neighbour).
        for j in range(w - 1):
            hflag[j] = abs(cur[j] - cur[j + 1]) > jump
        for j in range(w):
            vflag[j] = i > 0 and abs(cur[j] - prev[j]) > jump
        for blk in range(h64.shape[0]):
            if h64[blk]:
                for j in range(8 * blk, 8 * blk + 8):
                    if hflag[j]:
                        _mark_pair(codes, i, j, cur[j], i, j + 1, cur[j + 1], jump)
            if v64[blk]:
                for j in range(8 * blk, 8 * blk + 8):
                    if vflag[j]:
                        _mark_pair(codes, i - 1, j, prev[j], i, j, cur[j], jump)
    n_edge = 0
    n_near = 0
    n_mixed = 0
    for i in range(h):
        for j in range(w):
            c = codes[i, j]
            n_edge += (c & _EDGE) != 0
            n_near += (c & _NEAR) != 0
            n_mixed += (c & _MIXED) != 0
    return n_edge, n_near, n_mixed


@njit(cache=True, error_model="numpy")
def _shadow_inplace(z, fb):
    """Stereo shadow, in place (see occlusion_shadow).

    A pixel at column j with disparity d projects to right-image column
    xr(j) = j - d. Only a left edge can hide anything (left neighbour
    invalid, or off by > 1 px of disparity: farther, or nearer, as a finger
    in front of the edge of a palm, which still hides what lies left of the
    finger): along a continuous run xr does not decrease to the right, so a
    run hides nothing of itself unless it folds over (slope > 1 px/px,
    which makes a left edge). Only pixels farther than the run can fall
    inside its footprint, so a nearer one is never hidden. The
    surface starting at left edge e runs right while each next pixel is
    valid and not farther by > 1 px; its right-image footprint is
    (xr(e) - 0.5, max xr over the run + 0.5). A valid pixel j < e is
    hidden iff xr(j) falls inside that footprint. Such a j lies within
    d(e) + 1 columns left of e, so each edge walks only that far; behind
    an object narrower than the disparity jump the shadow comes off the
    object's edge (the right imager sees past it).
    """
    h, w = z.shape
    disp = np.zeros(w)
    reach = np.zeros(w)  # the largest xr from each pixel to the end of its run
    for i in range(h):
        for j in range(w):
            zz = z[i, j]
            disp[j] = fb / zz if zz > 0.0 else 0.0
        for k in range(w - 1, -1, -1):
            reach[k] = k - disp[k]
            if k + 1 < w and disp[k] > 0.0 and disp[k + 1] > 0.0 and disp[k + 1] >= disp[k] - 1.0:
                reach[k] = max(reach[k], reach[k + 1])
        for e in range(w):
            d = disp[e]
            if d <= 0.0 or (e > 0 and disp[e - 1] > 0.0 and abs(disp[e - 1] - d) <= 1.0):
                continue  # not a left edge
            lb = e - d - 0.5
            rb = reach[e] + 0.5
            j = e - 1
            while j >= 0 and j > lb:
                dj = disp[j]
                if dj > 0.0:
                    xr = j - dj
                    if lb < xr < rb:
                        z[i, j] = 0.0
                j -= 1


@njit(cache=True, error_model="numpy")
def _flagged(codes, w, flag):
    """Flat indices i*w + j, in raster order, of the pixels whose code has a
    bit of ``flag``. Codes are tested 8 at a time (see _new_codes): flagged
    pixels are sparse, and a per-pixel branch would cost ~2 cycles/pixel."""
    h = codes.shape[0]
    c64 = codes.view(np.uint64)
    word = _BYTES_1 * np.uint64(flag)
    n = 0
    for i in range(h):
        for blk in range(c64.shape[1]):
            if c64[i, blk] & word:
                for j in range(8 * blk, 8 * blk + 8):
                    n += (codes[i, j] & flag) != 0
    out = np.empty(n, np.int64)
    n = 0
    for i in range(h):
        for blk in range(c64.shape[1]):
            if c64[i, blk] & word:
                for j in range(8 * blk, 8 * blk + 8):
                    if codes[i, j] & flag:
                        out[n] = i * w + j
                        n += 1
    return out


@njit(cache=True, error_model="numpy")
def _inflate_inplace(z, codes, fb, jump, rh, rv, u):
    """codes must describe z; u: one float32 uniform per _NEAR pixel."""
    h, w = z.shape
    sources = _flagged(codes, w, _NEAR)
    cap = sources.shape[0] * 2 * (int(rh) + int(rv) + 2)
    where = np.empty(cap, np.int64)
    value = np.empty(cap, np.float32)
    n = 0
    for k in range(sources.shape[0]):
        i = sources[k] // w
        j = sources[k] - i * w
        kh = int(rh + u[k])
        kv = int(rv + u[k])
        zq = z[i, j]
        # Background = farther by more than the jump threshold.
        lim = fb / zq - jump
        for s in (-1, 1):
            for t in range(1, kh + 1):
                jj = j + s * t
                if jj < 0 or jj >= w:
                    break
                zt = z[i, jj]
                # Stop at anything that is not background (own surface,
                # another foreground), as a matching window would.
                if zt > 0.0 and fb / zt >= lim:
                    break
                where[n] = i * w + jj
                value[n] = zq
                n += 1
            for t in range(1, kv + 1):
                ii = i + s * t
                if ii < 0 or ii >= h:
                    break
                zt = z[ii, j]
                if zt > 0.0 and fb / zt >= lim:
                    break
                where[n] = ii * w + j
                value[n] = zq
                n += 1
    # Applied after the scan so that bled depths never bleed again; every
    # target was background of its source, so the nearest bleed wins.
    for t in range(n):
        i = where[t] // w
        j = where[t] - i * w
        cur = z[i, j]
        if cur <= 0.0 or value[t] < cur:
            z[i, j] = value[t]


@njit(cache=True, error_model="numpy")
def _flying_inplace(z, codes, fb, jump, prob, u):
    """codes must describe z; u: two float32 uniforms per _MIXED pixel."""
    h, w = z.shape
    candidates = _flagged(codes, w, _MIXED)
    where = np.empty(candidates.shape[0], np.int64)
    value = np.empty(candidates.shape[0], np.float32)
    n = 0
    for k in range(candidates.shape[0]):
        if not (u[2 * k] < prob):
            continue
        i = candidates[k] // w
        j = candidates[k] - i * w
        dp = fb / z[i, j]
        # Mix with the valid neighbour across the largest jump.
        dq = dp
        for m in range(4):
            ii = i
            jj = j
            if m == 0:
                ii = i - 1
            elif m == 1:
                ii = i + 1
            elif m == 2:
                jj = j - 1
            else:
                jj = j + 1
            if ii < 0 or ii >= h or jj < 0 or jj >= w:
                continue
            zn = z[ii, jj]
            if zn <= 0.0:
                continue
            dn = fb / zn
            if abs(dn - dp) > jump and abs(dn - dp) > abs(dq - dp):
                dq = dn
        t = _MIX_LO + (1.0 - 2.0 * _MIX_LO) * u[2 * k + 1]
        where[n] = candidates[k]
        value[n] = fb / (dp + t * (dq - dp))
        n += 1
    # Deferred so that neighbours are mixed with original depths only.
    for t in range(n):
        i = where[t] // w
        z[i, where[t] - i * w] = value[t]


@njit(cache=True, error_model="numpy")
def _disparity_inplace_kernel(z, fb, sigma, normals, step):
    """Noise (sigma > 0: normals (H*W,), one deviate per pixel in raster
    order, valid or not), then quantisation (step > 0), in disparity."""
    h, w = z.shape
    inv_step = 1.0 / step if step > 0.0 else 0.0
    for i in range(h):
        # Branch-free body so that rows vectorise.
        for j in range(w):
            zz = z[i, j]
            d = fb / zz
            if sigma > 0.0:
                d += sigma * normals[i * w + j]
            if step > 0.0:
                d = math.floor(d * inv_step + 0.5) * step
            # A non-positive disparity is "beyond infinity": no match.
            z[i, j] = fb / d if (zz > 0.0 and d > 0.0) else 0.0


@njit(cache=True, error_model="numpy")
def _noise_rows(z, fb, sigma, u, step, tail_table):
    """Disparity noise + quantisation on a block of rows; u: float32
    uniforms, one per pixel of the block (consumed)."""
    _uniform_to_normal_inplace(u, tail_table)
    _disparity_inplace_kernel(z, fb, sigma, u, step)


@njit(cache=True, error_model="numpy")
def _mark_band(codes, z, radius):
    """Set _BAND on valid pixels within Chebyshev distance ``radius`` of an
    _EDGE pixel; return their count."""
    h, w = z.shape
    # Edge pixels are a small fraction of the image: stamping a square
    # around each beats a dense dilation.
    edges = _flagged(codes, w, _EDGE)
    for k in range(edges.shape[0]):
        i = edges[k] // w
        j = edges[k] - i * w
        for ii in range(max(0, i - radius), min(h, i + radius + 1)):
            for jj in range(max(0, j - radius), min(w, j + radius + 1)):
                codes[ii, jj] |= _BAND
    n = 0
    clear = np.uint8(~_BAND & 0xFF)
    for i in range(h):
        for j in range(w):
            c = codes[i, j]
            c = c if z[i, j] > 0.0 else c & clear
            codes[i, j] = c
            n += (c & _BAND) != 0
    return n


@njit(cache=True, error_model="numpy")
def _dropout_inplace(z, codes, prob, u):
    """_BAND pixels (raster order, one uniform each) -> 0 with ``prob``."""
    w = z.shape[1]
    band = _flagged(codes, w, _BAND)
    for k in range(band.shape[0]):
        if u[k] < prob:
            i = band[k] // w
            z[i, band[k] - i * w] = 0.0


@njit(cache=True, error_model="numpy")
def _holes_inplace_kernel(z, params):
    """params: (n, 7) float64 rows (cy, cx, radius, a2, phi2, a3, phi3)."""
    h, w = z.shape
    for n in range(params.shape[0]):
        cy = params[n, 0]
        cx = params[n, 1]
        rad = params[n, 2]
        a2 = params[n, 3]
        p2 = params[n, 4]
        a3 = params[n, 5]
        p3 = params[n, 6]
        # Radius modulated by 2nd/3rd angular harmonics: elongated, lumpy
        # blobs like real dropouts rather than perfect discs.
        rmax = rad * (1.0 + a2 + a3)
        i0 = max(0, int(math.ceil(cy - rmax)))
        i1 = min(h - 1, int(math.floor(cy + rmax)))
        j0 = max(0, int(math.ceil(cx - rmax)))
        j1 = min(w - 1, int(math.floor(cx + rmax)))
        for i in range(i0, i1 + 1):
            dy = i - cy
            for j in range(j0, j1 + 1):
                dx = j - cx
                rho = math.sqrt(dx * dx + dy * dy)
                if rho > rmax:
                    continue
                th = math.atan2(dy, dx)
                lim = rad * (1.0 + a2 * math.cos(2.0 * (th - p2))
                             + a3 * math.cos(3.0 * (th - p3)))
                if rho <= lim:
                    z[i, j] = 0.0


@njit(cache=True, error_model="numpy")
def _finalise_inplace(z, zmin, zmax, scale):
    """Depth-unit rounding (scale > 0), then range limits, so that the
    output honours them exactly."""
    h, w = z.shape
    inv_scale = 1.0 / scale if scale > 0.0 else 0.0
    for i in range(h):
        for j in range(w):
            v = np.float64(z[i, j])
            if scale > 0.0:
                v = math.floor(v * inv_scale + 0.5) * scale
            z[i, j] = v if (v >= zmin and v <= zmax) else 0.0


# ---------------------------------------------------------------------------
# Validation and in-place stages (Python side: random draws happen here)
# ---------------------------------------------------------------------------

def _as_depth(depth_m):
    """Validate a depth image; return a float32 C-contiguous COPY of it,
    which becomes the working and output array."""
    a = np.asarray(depth_m)
    if a.ndim != 2:
        raise ValueError(f"depth_m must be a 2-D (H, W) array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"depth_m must be a floating-point array in metres, got dtype {a.dtype}")
    z = np.array(a, dtype=np.float32, order="C", copy=True)
    n_bad, n_neg = _scan_input(z)
    if n_bad:
        raise ValueError(f"depth_m contains {n_bad} non-finite values (NaN or inf); "
                         "use 0 for 'no measurement'")
    if n_neg:
        raise ValueError(f"depth_m contains {n_neg} negative depths; use 0 for 'no measurement'")
    return z


def _check_positive(name, value):
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _check_nonneg(name, value):
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v


def _check_probability(name, value):
    v = float(value)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _inflate_stage(z, fb, width_px, vertical_ratio, jump, rng, codes):
    if width_px <= 0.0:
        return
    _, n_near, _ = _edge_codes(z, fb, jump, codes)
    u = rng.random(n_near, dtype=np.float32)
    _inflate_inplace(z, codes, fb, jump, width_px, width_px * vertical_ratio, u)


def _flying_stage(z, fb, prob, jump, rng, codes, n_mixed):
    """``codes``/``n_mixed`` must describe ``z``."""
    if prob <= 0.0:
        return
    u = rng.random(2 * n_mixed, dtype=np.float32)
    _flying_inplace(z, codes, fb, jump, prob, u)


def _disparity_stage(z, fb, sigma, step, rng):
    if sigma > 0.0:
        # One deviate per pixel, valid or not: a little waste on sparse
        # images, but the noise field is a function of the seed alone (an
        # extra hole does not shift every later pixel's noise) and the
        # kernel vectorises. Drawn in row blocks to keep temporaries small.
        h, w = z.shape
        rows = max(1, _NOISE_CHUNK_BYTES // (4 * max(w, 1)))
        for r0 in range(0, h, rows):
            block = z[r0:r0 + rows]
            u = rng.random(block.size, dtype=np.float32)
            _noise_rows(block, fb, sigma, u, step, _TAIL_TABLE)
    elif step > 0.0:
        _disparity_inplace_kernel(z, fb, 0.0, np.empty(0, np.float32), step)


def _holes_stage(z, rate, radius, rng):
    h, w = z.shape
    n = int(rng.poisson(rate * h * w * 1e-6)) if rate > 0.0 else 0
    if n == 0:
        return
    params = np.empty((n, 7), np.float64)
    # Centres anywhere over the pixel grid's extent.
    params[:, 0] = rng.uniform(-0.5, h - 0.5, n)
    params[:, 1] = rng.uniform(-0.5, w - 0.5, n)
    params[:, 2] = rng.uniform(radius[0], radius[1], n)
    params[:, 3] = rng.uniform(0.0, 0.3, n)
    params[:, 4] = rng.uniform(0.0, np.pi, n)
    params[:, 5] = rng.uniform(0.0, 0.15, n)
    params[:, 6] = rng.uniform(0.0, 2.0 * np.pi / 3.0, n)
    _holes_inplace_kernel(z, params)


def _drop_stage(z, prob, width_px, rng, codes):
    """``codes`` give the discontinuities (their _BAND bit is overwritten);
    pixels of z that are 0 by now are not candidates."""
    if prob <= 0.0 or width_px <= 0:
        return
    n = _mark_band(codes, z, int(width_px) - 1)
    u = rng.random(n, dtype=np.float32)
    _dropout_inplace(z, codes, prob, u)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

def apply_stereo_noise(depth_m: np.ndarray, focal_px: float, model: StereoNoiseModel,
                       rng: np.random.Generator) -> np.ndarray:
    """Corrupt a clean rendered depth image like a stereo depth camera.

    Order (each step on the output of the previous one):

    1. ``occlusion_shadow``  - visibility from the right imager, on the
       clean geometry;
    2. ``inflate_edges``     - foreground bleeds over background, including
       into the shadow band (a window there still matches the foreground);
    3. ``add_flying_pixels`` - mixed pixels at the (inflated) edges;
    4. ``add_disparity_noise`` then ``quantise_disparity`` (fused: the
       noisy disparity is quantised before it is turned back into depth);
    5. ``punch_holes``, then ``drop_edges`` - the dropout band is taken from
       the discontinuities found in step 3 (the fattened geometry the
       matcher sees), not re-detected on the noisy image, so mixed pixels
       cannot hide an edge; pixels that are already 0 are not candidates;
    6. ``quantise_depth`` (if ``model.depth_scale_m``), then ``clip_range``
       (so the output honours the range exactly).

    Invalid pixels (0) stay 0, except where inflation or flying pixels put
    a foreground / mixed depth into them.

    Parameters
    ----------
    depth_m : (H, W) float32 (any float dtype is accepted), metres
        Clean z-depth referenced to the left imager; 0 = no measurement.
        Not modified.
    focal_px : float
        Horizontal focal length ``fx`` of ``depth_m``, pixels (> 0).
    model : StereoNoiseModel
    rng : numpy.random.Generator
        Sole source of randomness; its state advances.

    Returns
    -------
    (H, W) float32, metres, 0 = invalid; a new array.

    Raises
    ------
    ValueError
        ``depth_m`` not 2-D, not floating point, with NaN/inf or negative
        values; ``focal_px`` not finite and > 0.
    TypeError
        ``model`` or ``rng`` of the wrong type.
    """
    if not isinstance(model, StereoNoiseModel):
        raise TypeError(f"model must be a StereoNoiseModel, got {type(model).__name__}")
    _check_rng(rng)
    f = _check_positive("focal_px", focal_px)
    z = _as_depth(depth_m)
    fb = f * model.baseline_m
    jump = model.discontinuity_disparity_px
    codes = _new_codes(z.shape)

    if model.occlusion_shadow:
        _shadow_inplace(z, fb)
    _inflate_stage(z, fb, model.edge_inflation_px, model.edge_inflation_vertical_ratio,
                   jump, rng, codes)
    need_drop = model.edge_dropout_probability > 0.0 and model.edge_dropout_width_px > 0
    if model.flying_pixel_probability > 0.0 or need_drop:
        _, _, n_mixed = _edge_codes(z, fb, jump, codes)
        _flying_stage(z, fb, model.flying_pixel_probability, jump, rng, codes, n_mixed)
    _disparity_stage(z, fb, model.disparity_noise_px, model.disparity_step_px, rng)
    _holes_stage(z, model.hole_rate_per_megapixel, model.hole_radius_px, rng)
    if need_drop:
        _drop_stage(z, model.edge_dropout_probability, model.edge_dropout_width_px, rng, codes)
    scale = 0.0 if model.depth_scale_m is None else model.depth_scale_m
    _finalise_inplace(z, model.min_depth_m, model.max_depth_m, scale)
    return z


def discontinuity_mask(depth_m: np.ndarray, focal_px: float, baseline_m: float,
                       jump_px: float = 1.0) -> np.ndarray:
    """Valid pixels with a 4-neighbour whose disparity differs by more than
    ``jump_px`` (an invalid neighbour counts as disparity 0, i.e. infinitely
    far; neighbours outside the image do not count).

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid.
    focal_px : horizontal focal length, pixels (> 0).
    baseline_m : stereo baseline, metres (> 0).
    jump_px : disparity jump threshold, pixels (> 0).

    Returns
    -------
    (H, W) bool.
    """
    fb = _check_positive("focal_px", focal_px) * _check_positive("baseline_m", baseline_m)
    jump = _check_positive("jump_px", jump_px)
    z = _as_depth(depth_m)
    codes = _new_codes(z.shape)
    _edge_codes(z, fb, jump, codes)
    return (codes[:, :z.shape[1]] & _EDGE) != 0


def occlusion_shadow(depth_m: np.ndarray, focal_px: float, baseline_m: float) -> np.ndarray:
    """Invalidate pixels the right imager cannot see (stereo shadow).

    The right imager is at ``+baseline_m`` along x, so a pixel at column
    ``u`` with disparity ``d`` lands at right-image column ``u - d``. A
    pixel is shadowed if its centre lands inside the right-image footprint
    of a surface further right (which must then be nearer). For a
    fronto-parallel step this is the band of ``round(f*b*(1/z_fg -
    1/z_bg))`` background pixels immediately LEFT of the foreground; behind
    an object narrower than that (a finger over a far background) it is a
    band of the object's width, detached from it. Continuous surfaces are
    only shadowed where they fold over (disparity slope > 1 px/px).

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid (never an occluder).
    focal_px : horizontal focal length, pixels (> 0).
    baseline_m : stereo baseline, metres (> 0).

    Returns
    -------
    (H, W) float32 metres, 0 = invalid; new array, no randomness.
    """
    fb = _check_positive("focal_px", focal_px) * _check_positive("baseline_m", baseline_m)
    z = _as_depth(depth_m)
    _shadow_inplace(z, fb)
    return z


def inflate_edges(depth_m: np.ndarray, focal_px: float, baseline_m: float, width_px: float,
                  rng: np.random.Generator, *, vertical_ratio: float = 0.25,
                  jump_px: float = 1.0) -> np.ndarray:
    """Foreground fattening.

    Every near-side discontinuity pixel (a valid pixel with a 4-neighbour
    farther by more than ``jump_px`` of disparity, or invalid) copies its
    depth into up to ``floor(width_px + U)`` consecutive background pixels
    to its left and right and ``floor(width_px * vertical_ratio + U)``
    above and below (one ``U ~ U[0, 1)`` per edge pixel, so the mean
    horizontal bleed is exactly ``width_px``). Background means farther by
    more than ``jump_px``; the bleed stops at the first pixel that is not.
    Where several bleeds reach a pixel the nearest depth wins. Invalid pixels
    count as infinitely far, so the foreground can bleed into them.

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid.
    focal_px, baseline_m : horizontal focal length (px) and baseline (m), > 0.
    width_px : mean horizontal bleed, pixels (>= 0; 0 = identity).
    rng : numpy.random.Generator; one float32 uniform per near-side edge pixel.
    vertical_ratio : vertical bleed relative to horizontal (>= 0).
    jump_px : discontinuity threshold in disparity, pixels (> 0).

    Returns
    -------
    (H, W) float32 metres, 0 = invalid; new array.
    """
    _check_rng(rng)
    fb = _check_positive("focal_px", focal_px) * _check_positive("baseline_m", baseline_m)
    width = _check_nonneg("width_px", width_px)
    ratio = _check_nonneg("vertical_ratio", vertical_ratio)
    jump = _check_positive("jump_px", jump_px)
    z = _as_depth(depth_m)
    _inflate_stage(z, fb, width, ratio, jump, rng, _new_codes(z.shape))
    return z


def add_flying_pixels(depth_m: np.ndarray, focal_px: float, baseline_m: float,
                      probability: float, rng: np.random.Generator, *,
                      jump_px: float = 1.0) -> np.ndarray:
    """Mixed ("flying") pixels at depth discontinuities.

    Each discontinuity pixel that has a VALID 4-neighbour across the jump
    (both sides of the edge qualify) becomes, with ``probability``, a mix of
    its own disparity and that neighbour's (the one across the largest
    jump): ``d = d_p + t (d_q - d_p)``, ``t ~ U[0.05, 0.95]``. The new depth
    ``f*b/d`` lies strictly between the two surfaces. Edges against invalid
    pixels have no second surface to mix with and are left alone (that is
    ``drop_edges``' job). Only discontinuity pixels change, so flying pixels
    are within 1 px (4-adjacent) of the edge.

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid.
    focal_px, baseline_m : horizontal focal length (px) and baseline (m), > 0.
    probability : per candidate pixel, in [0, 1].
    rng : numpy.random.Generator; two float32 uniforms per candidate pixel.
    jump_px : discontinuity threshold in disparity, pixels (> 0).

    Returns
    -------
    (H, W) float32 metres, 0 = invalid; new array.
    """
    _check_rng(rng)
    fb = _check_positive("focal_px", focal_px) * _check_positive("baseline_m", baseline_m)
    prob = _check_probability("probability", probability)
    jump = _check_positive("jump_px", jump_px)
    z = _as_depth(depth_m)
    codes = _new_codes(z.shape)
    _, _, n_mixed = _edge_codes(z, fb, jump, codes)
    _flying_stage(z, fb, prob, jump, rng, codes, n_mixed)
    return z


def add_disparity_noise(depth_m: np.ndarray, focal_px: float, baseline_m: float,
                        sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Independent Gaussian matching error in disparity.

    ``d' = f*b/z + sigma_px * N(0, 1)``, ``z' = f*b/d'`` (0 if ``d' <= 0``),
    so to first order the depth error has RMS ``z^2 * sigma_px / (f*b)``.

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid (stays 0).
    focal_px, baseline_m : horizontal focal length (px) and baseline (m), > 0.
    sigma_px : RMS disparity error, pixels (>= 0; 0 = identity).
    rng : numpy.random.Generator; one float32 uniform per pixel (valid or
        not), turned into a normal deviate by the inverse CDF in the kernel.

    Returns
    -------
    (H, W) float32 metres, 0 = invalid; new array.
    """
    _check_rng(rng)
    fb = _check_positive("focal_px", focal_px) * _check_positive("baseline_m", baseline_m)
    sigma = _check_nonneg("sigma_px", sigma_px)
    z = _as_depth(depth_m)
    _disparity_stage(z, fb, sigma, 0.0, rng)
    return z


def quantise_disparity(depth_m: np.ndarray, focal_px: float, baseline_m: float,
                       step_px: float) -> np.ndarray:
    """Round the disparity ``f*b/z`` to a multiple of ``step_px``.

    The disparity error is at most ``step_px / 2`` (plus the float32
    rounding of the returned depth, ~6e-8 relative); a disparity that
    rounds to 0 becomes invalid.

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid (stays 0).
    focal_px, baseline_m : horizontal focal length (px) and baseline (m), > 0.
    step_px : disparity step, pixels (>= 0; 0 = identity).

    Returns
    -------
    (H, W) float32 metres, 0 = invalid; new array, no randomness.
    """
    fb = _check_positive("focal_px", focal_px) * _check_positive("baseline_m", baseline_m)
    step = _check_nonneg("step_px", step_px)
    z = _as_depth(depth_m)
    _disparity_stage(z, fb, 0.0, step, None)
    return z


def punch_holes(depth_m: np.ndarray, rate_per_megapixel: float,
                radius_px: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Blob-shaped dropouts at random places.

    The number of holes is Poisson with mean ``rate_per_megapixel * H * W
    / 1e6`` (image area, valid or not); centres are uniform over the image;
    base radius ``R ~ U[radius_px]``; the boundary is ``R * (1 + a2
    cos 2(th - p2) + a3 cos 3(th - p3))`` with ``a2 ~ U[0, 0.3]``,
    ``a3 ~ U[0, 0.15]`` (elongated, lumpy blobs, mean area ~1.02 pi R^2).
    Holes at the border are clipped; overlapping holes merge.

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid.
    rate_per_megapixel : mean holes per 1e6 px (>= 0).
    radius_px : (min, max) base radius, pixels, 0 <= min <= max.
    rng : numpy.random.Generator.

    Returns
    -------
    (H, W) float32 metres, 0 = invalid; new array.
    """
    _check_rng(rng)
    rate = _check_nonneg("rate_per_megapixel", rate_per_megapixel)
    radius = tuple(float(r) for r in radius_px)
    if len(radius) != 2 or not (0 <= radius[0] <= radius[1]) or not math.isfinite(radius[1]):
        raise ValueError(f"radius_px must be (min, max) with 0 <= min <= max, got {radius_px!r}")
    z = _as_depth(depth_m)
    _holes_stage(z, rate, radius, rng)
    return z


def drop_edges(depth_m: np.ndarray, focal_px: float, baseline_m: float, probability: float,
               width_px: int, rng: np.random.Generator, *, jump_px: float = 1.0) -> np.ndarray:
    """Random invalid pixels along depth discontinuities.

    Each valid pixel whose Chebyshev distance to the nearest discontinuity
    pixel (``discontinuity_mask``) is less than ``width_px`` is set to 0
    with ``probability``. ``width_px = 1`` touches only the discontinuity
    pixels themselves (on both sides of the edge).

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid.
    focal_px, baseline_m : horizontal focal length (px) and baseline (m), > 0.
    probability : per candidate pixel, in [0, 1].
    width_px : non-negative int, pixels (0 = identity).
    rng : numpy.random.Generator; one float32 uniform per candidate pixel.
    jump_px : discontinuity threshold in disparity, pixels (> 0).

    Returns
    -------
    (H, W) float32 metres, 0 = invalid; new array.
    """
    _check_rng(rng)
    fb = _check_positive("focal_px", focal_px) * _check_positive("baseline_m", baseline_m)
    prob = _check_probability("probability", probability)
    if isinstance(width_px, bool) or int(width_px) != width_px or width_px < 0:
        raise ValueError(f"width_px must be a non-negative integer, got {width_px!r}")
    jump = _check_positive("jump_px", jump_px)
    z = _as_depth(depth_m)
    if prob > 0.0 and width_px > 0:
        codes = _new_codes(z.shape)
        _edge_codes(z, fb, jump, codes)
        _drop_stage(z, prob, int(width_px), rng, codes)
    return z


def clip_range(depth_m: np.ndarray, min_depth_m: float, max_depth_m: float) -> np.ndarray:
    """Depths outside ``[min_depth_m, max_depth_m]`` become 0.

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid.
    min_depth_m, max_depth_m : working range, metres, 0 <= min < max.

    Returns
    -------
    (H, W) float32 metres, 0 = invalid; new array.
    """
    lo = _check_nonneg("min_depth_m", min_depth_m)
    hi = _check_positive("max_depth_m", max_depth_m)
    if not lo < hi:
        raise ValueError(f"need min_depth_m < max_depth_m, got {lo} and {hi}")
    z = _as_depth(depth_m)
    _finalise_inplace(z, lo, hi, 0.0)
    return z


def quantise_depth(depth_m: np.ndarray, scale_m: float) -> np.ndarray:
    """Round depth to a multiple of the device depth unit ``scale_m``, as
    the Z16 stream does; values that round to 0 become invalid.

    Parameters
    ----------
    depth_m : (H, W) float, metres, 0 = invalid.
    scale_m : depth unit, metres (> 0), e.g. 0.001.

    Returns
    -------
    (H, W) float32 metres, 0 = invalid; new array.
    """
    scale = _check_positive("scale_m", scale_m)
    z = _as_depth(depth_m)
    _finalise_inplace(z, 0.0, np.inf, scale)
    return z
