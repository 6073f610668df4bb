"""Tests for kernels.sensor_noise (stereo depth-camera noise model).

Scenes are built here: flat planes and a fronto-parallel step (a square at
0.4 m over a background at 1.0 m). The focal length is chosen so that
f*b = 20 px*m, which makes disparities round numbers (fg 50 px, bg 20 px,
shadow width 30 px).
"""

import dataclasses
import math

import numpy as np
import pytest
from scipy import ndimage

from kernels import sensor_noise as sn
from kernels.sensor_noise import StereoNoiseModel

F_PX = 400.0
B_M = 0.05
FB = F_PX * B_M          # 20 px*m
Z_FG = 0.4
Z_BG = 1.0

# Everything off: the identity apart from range limits. Individual tests
# switch one effect back on.
OFF = StereoNoiseModel(
    disparity_step_px=0.0, disparity_noise_px=0.0, edge_dropout_probability=0.0,
    occlusion_shadow=False, flying_pixel_probability=0.0, edge_inflation_px=0.0,
    hole_rate_per_megapixel=0.0, baseline_m=B_M,
)


def step_scene(h=40, w=120, top=10, left=50, size=20, bg=Z_BG):
    """Square of side ``size`` at Z_FG over ``bg`` (0 = no background)."""
    z = np.full((h, w), bg, np.float32)
    z[top:top + size, left:left + size] = Z_FG
    return z


def chessboard_distance(mask):
    """Chebyshev distance of every pixel to the nearest True of mask."""
    return ndimage.distance_transform_cdt(~mask, metric="chessboard")


def varied_scene(seed=0, h=48, w=64):
    """Slanted plane, a near box, an invalid patch: exercises every stage."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    z = (0.9 + 0.004 * xx + 0.002 * yy).astype(np.float32)
    z[10:30, 20:40] = 0.45 + 0.001 * rng.standard_normal((20, 20))
    z[35:45, 5:15] = 0.0
    return z


# --------------------------------------------------------------------------
# Determinism, purity, types
# --------------------------------------------------------------------------

def test_same_seed_same_output_different_seed_different():
    z = varied_scene()
    before = z.copy()
    model = StereoNoiseModel(hole_rate_per_megapixel=2000.0)  # make holes likely in a small image
    a = sn.apply_stereo_noise(z, F_PX, model, np.random.default_rng(7))
    b = sn.apply_stereo_noise(z, F_PX, model, np.random.default_rng(7))
    c = sn.apply_stereo_noise(z, F_PX, model, np.random.default_rng(8))
    assert a.dtype == np.float32 and a.shape == z.shape
    assert np.array_equal(a, b)              # bit-identical, NaN-free
    assert not np.array_equal(a, c)
    assert np.array_equal(z, before)         # input untouched
    assert a is not z


@pytest.mark.parametrize("fn", [
    lambda z, r: sn.add_disparity_noise(z, F_PX, B_M, 0.08, r),
    lambda z, r: sn.add_flying_pixels(z, F_PX, B_M, 0.5, r),
    lambda z, r: sn.inflate_edges(z, F_PX, B_M, 1.5, r, vertical_ratio=0.5),
    lambda z, r: sn.drop_edges(z, F_PX, B_M, 0.5, 2, r),
    lambda z, r: sn.punch_holes(z, 5000.0, (1.0, 3.0), r),
])
def test_individual_effects_are_deterministic(fn):
    z = varied_scene()
    before = z.copy()
    a = fn(z, np.random.default_rng(3))
    b = fn(z, np.random.default_rng(3))
    c = fn(z, np.random.default_rng(4))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(z, before)


def test_float64_and_non_contiguous_input_accepted():
    z = varied_scene().astype(np.float64)
    a = sn.apply_stereo_noise(z, F_PX, StereoNoiseModel(), np.random.default_rng(1))
    b = sn.apply_stereo_noise(np.asfortranarray(z), F_PX, StereoNoiseModel(),
                              np.random.default_rng(1))
    assert a.dtype == np.float32
    assert np.array_equal(a, b)


# --------------------------------------------------------------------------
# Disparity quantisation and noise
# --------------------------------------------------------------------------

@pytest.mark.parametrize("step", [1.0 / 32.0, 0.25])
def test_quantisation_gives_multiples_of_the_step_within_half_a_step(step):
    rng = np.random.default_rng(0)
    z = rng.uniform(0.2, 2.9, (64, 64)).astype(np.float32)
    z[::7, ::5] = 0.0
    for out in (sn.quantise_disparity(z, F_PX, B_M, step),
                sn.apply_stereo_noise(z, F_PX, dataclasses.replace(OFF, disparity_step_px=step),
                                      rng)):
        valid = z > 0
        assert np.array_equal(out > 0, valid)     # nothing lost, nothing created
        d_in = FB / z[valid].astype(np.float64)
        d_out = FB / out[valid].astype(np.float64)
        k = d_out / step
        # Rounding the output depth to float32 (2^-24 relative) moves the
        # recovered disparity by <= 100 px * 6e-8 = 6e-6 px, i.e. < 2e-4
        # steps of 1/32 px; 1e-3 steps leaves margin.
        assert np.max(np.abs(k - np.round(k))) < 1e-3
        assert np.max(np.abs(d_out - d_in)) <= step / 2 + 1e-3 * step


def test_disparity_noise_depth_sigma_grows_with_z_squared():
    sigma_d = 0.08
    n = 250                                  # n*n = 62500 samples per plane
    stds = {}
    for seed, z0 in enumerate((0.4, 0.8)):
        z = np.full((n, n), z0, np.float32)
        out = sn.add_disparity_noise(z, F_PX, B_M, sigma_d, np.random.default_rng(seed))
        err = out.astype(np.float64) - z0
        expected = z0 ** 2 * sigma_d / FB    # first-order error propagation
        stds[z0] = err.std()
        # Relative standard error of a sample std is 1/sqrt(2N) = 0.28 %;
        # the second-order term (sigma_d/d)^2 ~ 1e-5 and float32 rounding of
        # z (6e-8 relative vs sigma_z/z >= 1.6e-3) are negligible. 2 % is
        # > 7 standard errors.
        assert stds[z0] == pytest.approx(expected, rel=0.02)
        # Unbiased to first order: |mean| well below sigma/sqrt(N) * 5.
        assert abs(err.mean()) < 5 * expected / n
    # The ratio of two independent stds has ~0.4 % relative standard error.
    assert stds[0.8] / stds[0.4] == pytest.approx(4.0, rel=0.03)


def test_disparity_noise_keeps_invalid_and_is_gaussian_in_disparity():
    n = 200
    z = np.full((n, n), 0.5, np.float32)
    z[:, :10] = 0.0
    out = sn.add_disparity_noise(z, F_PX, B_M, 0.1, np.random.default_rng(5))
    assert np.all(out[:, :10] == 0)
    e = FB / out[:, 10:].astype(np.float64) - FB / 0.5
    e /= e.std()
    # 38000 samples: the fraction beyond 1.96 sigma (5 %) has a standard
    # error of 0.11 %; the kurtosis of a Gaussian is 3 with standard error
    # sqrt(24/N) = 0.025.
    assert np.mean(np.abs(e) > 1.959964) == pytest.approx(0.05, abs=0.006)
    assert np.mean(e ** 4) == pytest.approx(3.0, abs=0.15)


# --------------------------------------------------------------------------
# Edge effects on a step
# --------------------------------------------------------------------------

def expected_discontinuity_pixels(z):
    """4-neighbours on both sides of the square's boundary."""
    fg = z == Z_FG
    cross = ndimage.generate_binary_structure(2, 1)
    outer = ndimage.binary_dilation(fg, cross) & ~fg
    inner = fg & ~ndimage.binary_erosion(fg, cross, border_value=1)
    return outer | inner


def test_discontinuity_mask_marks_both_sides_of_the_step():
    z = step_scene()
    mask = sn.discontinuity_mask(z, F_PX, B_M, 1.0)
    assert np.array_equal(mask, expected_discontinuity_pixels(z))
    # A steep slanted plane (0.5 px of disparity per pixel) is not a
    # discontinuity.
    xx = np.arange(64, dtype=np.float64)
    slope = np.tile((FB / (30.0 + 0.5 * xx)).astype(np.float32), (4, 1))
    assert not sn.discontinuity_mask(slope, F_PX, B_M, 1.0).any()


@pytest.mark.parametrize("width", [1, 2, 3])
def test_edge_dropout_only_within_the_stated_width(width):
    z = step_scene()
    edges = expected_discontinuity_pixels(z)
    within = chessboard_distance(edges) < width
    full = sn.drop_edges(z, F_PX, B_M, 1.0, width, np.random.default_rng(0))
    assert np.array_equal(full == 0, within)          # probability 1: the band exactly
    part = sn.drop_edges(z, F_PX, B_M, 0.5, width, np.random.default_rng(1))
    dropped = part == 0
    assert not np.any(dropped & ~within)
    assert np.array_equal(part[~dropped], z[~dropped])
    # Binomial(n, 0.5) with n >= 156 band pixels: allow 4 standard deviations.
    n = within.sum()
    assert dropped.sum() / n == pytest.approx(0.5, abs=4 * 0.5 / math.sqrt(n))


def test_flying_pixels_lie_between_the_surfaces_and_only_at_the_edge():
    z = step_scene()
    edges = expected_discontinuity_pixels(z)
    full = sn.add_flying_pixels(z, F_PX, B_M, 1.0, np.random.default_rng(0))
    changed = full != z
    assert np.array_equal(changed, edges)             # probability 1: every edge pixel
    assert np.all(full[changed] > Z_FG) and np.all(full[changed] < Z_BG)
    # Mixing in disparity with t in [0.05, 0.95] keeps 1.5 px away from
    # either surface's disparity.
    d = FB / full[changed].astype(np.float64)
    assert d.min() >= FB / Z_BG + 1.5 - 1e-4 and d.max() <= FB / Z_FG - 1.5 + 1e-4
    part = sn.add_flying_pixels(z, F_PX, B_M, 0.3, np.random.default_rng(2))
    changed = part != z
    assert not np.any(changed & ~edges)
    n = edges.sum()
    assert changed.sum() / n == pytest.approx(0.3, abs=4 * math.sqrt(0.21 / n))


def test_no_flying_pixels_against_invalid_background():
    z = step_scene(bg=0.0)
    out = sn.add_flying_pixels(z, F_PX, B_M, 1.0, np.random.default_rng(0))
    assert np.array_equal(out, z)


@pytest.mark.parametrize("focal", [F_PX, 164.0])
def test_occlusion_shadow_left_of_the_foreground_with_predicted_width(focal):
    z = step_scene()
    out = sn.occlusion_shadow(z, focal, B_M)
    fb = focal * B_M
    width = fb * (1.0 / Z_FG - 1.0 / Z_BG)            # 30 px, or 12.3 px
    shadow = (out == 0) & (z > 0)
    rows = np.arange(z.shape[0])
    fg_rows = (rows >= 10) & (rows < 30)
    assert not shadow[~fg_rows].any()
    for r in rows[fg_rows]:
        cols = np.flatnonzero(shadow[r])
        # The background pixels whose centres land, in the right image, within the square's
        # footprint there: [50 - 0.5 - width, 70 - 0.5 - width). With the 12.3 px jump that
        # is the band of round(width) pixels ending at the square's left edge (column 50);
        # the 30 px jump is wider than the 20 px square, so the right imager sees past it:
        # a 20 px band 10 px off the edge (columns 20-39), not 30 px ending at it.
        expected = [c for c in range(50) if 50 - 0.5 - width < c < 70 - 0.5 - width]
        assert cols.tolist() == expected
        assert len(expected) == min(round(width), 20)
    assert np.array_equal(out[~shadow], z[~shadow])


def reference_shadow(z, fb):
    """Brute-force definition: pixel j is hidden iff its right-image column j - d_j lies
    inside the right-image footprint (j' - d_j' - 0.5, max xr over the run + 0.5) of the
    surface starting at a left edge j' > j (left neighbour invalid or off by > 1 px of
    disparity, farther or nearer; the surface runs on while each next pixel is valid and
    not farther by > 1 px)."""
    d = np.where(z > 0, fb / np.where(z > 0, z, 1.0).astype(np.float64), 0.0)
    out = z.copy()
    h, w = z.shape
    for i in range(h):
        for j in range(w):
            if d[i, j] <= 0:
                continue
            for jp in range(j + 1, w):
                if d[i, jp] <= 0 or (jp > 0 and d[i, jp - 1] > 0 and abs(d[i, jp - 1] - d[i, jp]) <= 1.0):
                    continue
                end = jp
                while end + 1 < w and d[i, end + 1] > 0 and d[i, end + 1] >= d[i, end] - 1.0:
                    end += 1
                rb = max(k - d[i, k] for k in range(jp, end + 1)) + 0.5
                if jp - d[i, jp] - 0.5 < j - d[i, j] < rb:
                    out[i, j] = 0.0
                    break
    return out


def test_occlusion_shadow_matches_brute_force_definition():
    rng = np.random.default_rng(0)
    for trial in range(60):
        w = int(rng.integers(2, 50))
        if trial % 3 == 0:                             # independent depths
            z = rng.uniform(0.3, 2.0, (3, w))
        elif trial % 3 == 1:                           # piecewise-constant steps
            z = np.repeat(rng.uniform(0.3, 2.0, (3, w // 4 + 1)), 4, axis=1)[:, :w]
        else:                                          # random-walk surfaces
            z = np.clip(1.0 + np.cumsum(rng.normal(0, 0.05, (3, w)), axis=1), 0.2, 3.0)
        z[rng.random(z.shape) < 0.15] = 0.0
        z = z.astype(np.float32)
        fb = float(rng.uniform(5, 30))
        assert np.array_equal(sn.occlusion_shadow(z, fb, 1.0), reference_shadow(z, fb))


def test_a_nearer_object_left_of_a_surface_does_not_lift_the_surfaces_shadow():
    # One row, f = 420 px, b = 0.05 m (fb = 21 px m): background at 1.0 m (21 px), a finger
    # 5 px wide at 0.30 m (70 px) in front of the edge of a palm at 0.45 m (46.7 px).
    fb = 21.0
    z = np.array([[1.0] * 30 + [0.30] * 5 + [0.45] * 40], np.float32)
    out = sn.occlusion_shadow(z, 420.0, 0.05)
    # The right imager sees the palm's edge (column 35) at 35 - 46.7 = -11.7 and the
    # background pixel j at j - 21: the palm hides j - 21 > -12.2, so columns 9 up to the
    # finger (29). The finger's own shadow (70 px of disparity) falls left of the image.
    assert np.nonzero(out[0] == 0)[0].tolist() == list(range(9, 30))
    assert np.array_equal(out[0, 30:], z[0, 30:])  # the finger and palm stay
    assert np.array_equal(out, reference_shadow(z, fb))


def test_occlusion_shadow_spares_steep_but_visible_slopes():
    # Disparity slope of 0.9 px/px: steep, but the surface does not fold
    # over in the right image, so nothing is hidden.
    xx = np.arange(40, dtype=np.float64)
    z = np.tile((FB / (10.0 + 0.9 * xx)).astype(np.float32), (2, 1))
    assert np.array_equal(sn.occlusion_shadow(z, F_PX, B_M), z)


def fg_extent(out):
    rows, cols = np.nonzero(out == Z_FG)
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_inflation_widens_the_foreground_horizontally():
    z = step_scene()
    # Integer width: floor(2 + U) = 2 on every edge pixel.
    out = sn.inflate_edges(z, F_PX, B_M, 2.0, np.random.default_rng(0), vertical_ratio=0.0)
    changed = out != z
    assert np.all(z[changed] == Z_BG) and np.all(out[changed] == Z_FG)
    assert fg_extent(out) == (10, 29, 48, 71)
    assert changed.sum() == 20 * 2 * 2               # 20 rows, 2 px each side
    # Fractional width: each of the 40 side-edge pixels (20 rows x 2 sides)
    # bleeds 1 or 2 px, 1.5 on average; the mean of 40 such draws has a
    # standard deviation of 0.5/sqrt(40) = 0.08, so 0.3 is ~4 sd.
    out = sn.inflate_edges(z, F_PX, B_M, 1.5, np.random.default_rng(1), vertical_ratio=0.0)
    grown = (out == Z_FG).sum(axis=1)[10:30] - 20
    assert np.all((grown >= 2) & (grown <= 4))
    assert grown.mean() / 2 == pytest.approx(1.5, abs=0.3)


def test_inflation_vertical_ratio_and_invalid_background():
    z = step_scene(bg=0.0)
    out = sn.inflate_edges(z, F_PX, B_M, 2.0, np.random.default_rng(0), vertical_ratio=1.0)
    # Invalid background counts as infinitely far: the foreground bleeds
    # into it, 2 px in every direction (cross-shaped, so no corners).
    assert fg_extent(out) == (8, 31, 48, 71)
    assert out[8, 48] == 0 and out[8, 50] == Z_FG and out[10, 48] == Z_FG


def test_inflation_does_not_bleed_over_nearer_surfaces():
    z = step_scene()
    z[:, 70:] = 0.3            # a nearer wall touching the square's right side
    out = sn.inflate_edges(z, F_PX, B_M, 3.0, np.random.default_rng(0), vertical_ratio=0.0)
    assert np.all(out[:, 70:] == 0.3)
    assert np.all(out[10:30, 47:50] == Z_FG)   # the square still grows left


# --------------------------------------------------------------------------
# Holes, strength scaling, range, composition
# --------------------------------------------------------------------------

def test_hole_rate_roughly_as_configured():
    z = np.full((1000, 1000), 1.0, np.float32)        # one megapixel
    rate = 100.0
    out = sn.punch_holes(z, rate, (2.0, 3.0), np.random.default_rng(0))
    assert np.all((out == 0) | (out == z))
    _, n_holes = ndimage.label(out == 0, structure=np.ones((3, 3)))
    # Poisson(100): sd 10, so +-40 is 4 sd; merging of overlapping holes
    # (expected < 1 pair at this density) is negligible.
    assert abs(n_holes - rate) <= 40
    # Mean area ~ pi * E[R^2] * (1 + (a2^2 + a3^2)/2) = pi * 6.33 * 1.02 ~ 20 px;
    # pixel discretisation of such small blobs is worth +-25 %.
    assert (out == 0).sum() / n_holes == pytest.approx(20.3, rel=0.25)
    assert np.array_equal(sn.punch_holes(z, 0.0, (2.0, 3.0), np.random.default_rng(0)), z)


def test_strength_zero_is_identity_within_range_limits():
    z = varied_scene()
    z[0, :8] = [0.05, 0.09, 0.1, 0.5, 2.9, 3.0, 3.1, 7.0]   # around the range limits
    model = StereoNoiseModel(depth_scale_m=0.001)
    out = sn.apply_stereo_noise(z, F_PX, model.scaled(0.0), np.random.default_rng(0))
    inside = (z >= model.min_depth_m) & (z <= model.max_depth_m)
    assert np.array_equal(out[inside], z[inside])
    assert np.all(out[~inside] == 0)
    assert np.array_equal(out, sn.clip_range(z, model.min_depth_m, model.max_depth_m))


def test_scaled_scales_magnitudes():
    m = StereoNoiseModel()
    assert m.scaled(1.0) == m
    h = m.scaled(0.5)
    assert h.disparity_noise_px == pytest.approx(0.04)
    assert h.disparity_step_px == pytest.approx(1 / 64)
    assert h.edge_inflation_px == pytest.approx(0.5)
    assert h.hole_rate_per_megapixel == pytest.approx(10.0)
    assert h.edge_dropout_width_px == m.edge_dropout_width_px and h.occlusion_shadow
    big = m.scaled(10.0)
    assert big.edge_dropout_probability == 1.0 and big.flying_pixel_probability == 1.0
    zero = m.scaled(0)
    assert not zero.occlusion_shadow and zero.depth_scale_m is None
    with pytest.raises(ValueError):
        m.scaled(-0.1)
    with pytest.raises(ValueError):
        m.scaled(float("nan"))


def test_range_clipping_and_depth_unit():
    z = np.array([[0.0, 0.05, 0.1, 0.1234567, 2.9996, 3.0, 3.5]], np.float32)
    out = sn.clip_range(z, 0.1, 3.0)
    assert np.array_equal(out, np.array([[0, 0, 0.1, 0.1234567, 2.9996, 3.0, 0]], np.float32))
    q = sn.quantise_depth(z, 0.001)
    # float32 spacing near 3 m is 2.4e-7 m.
    assert np.allclose(q, np.round(z.astype(np.float64) * 1000) / 1000, rtol=0, atol=3e-7)
    # Composition: quantise to the unit first, then clip, so the range is
    # exact: 2.9996 rounds to 3.000 (kept), 3.5 is dropped.
    model = dataclasses.replace(OFF, depth_scale_m=0.001)
    out = sn.apply_stereo_noise(z, F_PX, model, np.random.default_rng(0))
    assert np.allclose(out, [[0, 0, 0.1, 0.123, 3.0, 3.0, 0]], rtol=0, atol=3e-7)


def test_default_model_output_is_valid_and_plausible():
    z = step_scene(h=60, w=160, top=20, left=80, size=30)
    model = StereoNoiseModel(depth_scale_m=0.001)
    out = sn.apply_stereo_noise(z, F_PX, model, np.random.default_rng(0))
    assert np.all(np.isfinite(out))
    valid = out > 0
    assert np.all((out[valid] >= model.min_depth_m) & (out[valid] <= model.max_depth_m))
    k = out[valid].astype(np.float64) / 0.001
    assert np.max(np.abs(k - np.round(k))) < 1e-3
    # The stereo shadow (30 px, minus 1 px of inflation) is left of the
    # square; right of it, beyond the edge fringe (inflation 1 px + dropout
    # band 2 px), there is no such band.
    assert np.all(out[25:45, 55:75] == 0)
    assert (out[25:45, 114:124] > 0).mean() > 0.9


def test_invalid_stays_invalid_without_inflation_and_flying_pixels():
    z = varied_scene()
    model = StereoNoiseModel(edge_inflation_px=0.0, flying_pixel_probability=0.0)
    for seed in range(5):
        out = sn.apply_stereo_noise(z, F_PX, model, np.random.default_rng(seed))
        assert np.all(out[z == 0] == 0)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

GOOD = np.full((4, 5), 1.0, np.float32)


@pytest.mark.parametrize("depth, focal, match", [
    (np.ones(5, np.float32), F_PX, "2-D"),
    (np.ones((2, 3, 4), np.float32), F_PX, "2-D"),
    (np.ones((3, 3), np.uint16), F_PX, "floating-point"),
    (np.where(np.eye(3) > 0, np.nan, 1.0).astype(np.float32), F_PX, "non-finite"),
    (np.where(np.eye(3) > 0, np.inf, 1.0).astype(np.float32), F_PX, "non-finite"),
    (np.where(np.eye(3) > 0, -0.5, 1.0).astype(np.float32), F_PX, "negative"),
    (GOOD, 0.0, "focal_px"),
    (GOOD, -400.0, "focal_px"),
    (GOOD, float("nan"), "focal_px"),
])
def test_bad_input_raises_value_error(depth, focal, match):
    with pytest.raises(ValueError, match=match):
        sn.apply_stereo_noise(depth, focal, StereoNoiseModel(), np.random.default_rng(0))


@pytest.mark.parametrize("call", [
    lambda z: sn.quantise_disparity(z, F_PX, B_M, 1 / 32),
    lambda z: sn.add_disparity_noise(z, F_PX, B_M, 0.08, np.random.default_rng(0)),
    lambda z: sn.occlusion_shadow(z, F_PX, B_M),
    lambda z: sn.inflate_edges(z, F_PX, B_M, 1.0, np.random.default_rng(0)),
    lambda z: sn.add_flying_pixels(z, F_PX, B_M, 0.2, np.random.default_rng(0)),
    lambda z: sn.drop_edges(z, F_PX, B_M, 0.2, 2, np.random.default_rng(0)),
    lambda z: sn.punch_holes(z, 10.0, (1.0, 2.0), np.random.default_rng(0)),
    lambda z: sn.clip_range(z, 0.1, 3.0),
    lambda z: sn.quantise_depth(z, 0.001),
    lambda z: sn.discontinuity_mask(z, F_PX, B_M),
])
def test_every_effect_validates_its_input(call):
    call(GOOD)
    for bad in (np.ones(3, np.float32), np.full((2, 2), np.nan, np.float32),
                np.full((2, 2), -1.0, np.float32)):
        with pytest.raises(ValueError):
            call(bad)


@pytest.mark.parametrize("kwargs", [
    dict(baseline_m=0.0), dict(disparity_noise_px=-0.1), dict(disparity_step_px=float("inf")),
    dict(edge_dropout_probability=1.5), dict(edge_dropout_width_px=1.5),
    dict(flying_pixel_probability=-0.1), dict(edge_inflation_px=-1.0),
    dict(hole_rate_per_megapixel=-1.0), dict(hole_radius_px=(3.0, 1.0)),
    dict(min_depth_m=2.0, max_depth_m=1.0), dict(depth_scale_m=0.0),
    dict(discontinuity_disparity_px=0.0),
])
def test_bad_model_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        StereoNoiseModel(**kwargs)


def test_bad_parameters_of_the_effects_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        sn.drop_edges(GOOD, F_PX, B_M, 1.2, 2, rng)
    with pytest.raises(ValueError):
        sn.drop_edges(GOOD, F_PX, B_M, 0.5, -1, rng)
    with pytest.raises(ValueError):
        sn.occlusion_shadow(GOOD, F_PX, 0.0)
    with pytest.raises(ValueError):
        sn.clip_range(GOOD, 3.0, 1.0)
    with pytest.raises(TypeError):
        sn.apply_stereo_noise(GOOD, F_PX, StereoNoiseModel(), 42)


def test_empty_and_tiny_images():
    model = StereoNoiseModel()
    for shape in [(0, 0), (0, 5), (1, 1), (1, 7), (7, 1)]:
        z = np.full(shape, 0.7, np.float32)
        out = sn.apply_stereo_noise(z, F_PX, model, np.random.default_rng(0))
        assert out.shape == shape and out.dtype == np.float32
