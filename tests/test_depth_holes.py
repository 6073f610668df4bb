import numpy as np

from kernels.depth_holes import fill_isolated_holes

STEP = np.float32(0.005)
SPREAD = np.float32(0.02)


def _reference(depth: np.ndarray, min_measured: int, max_step: float, max_spread: float) -> np.ndarray:
    """The same rule, pixel by pixel in plain Python over the zero-padded image."""
    padded = np.pad(depth, 1)
    filled = depth.copy()
    for i, j in zip(*np.nonzero(~(depth > 0))):
        neighbours = padded[i : i + 3, j : j + 3].ravel()[[0, 1, 2, 3, 5, 6, 7, 8]].astype(np.float64)
        opposite = neighbours[::-1]  # neighbour k faces neighbour 7 - k
        has, has_opposite = neighbours > 0, opposite > 0
        in_a_line = (~has & ~has_opposite).any()  # two opposite neighbours both holes
        middles = ((neighbours + opposite) / 2)[:4][(has & has_opposite)[:4]]
        measured = neighbours[has]
        if (
            has.sum() >= min_measured and not in_a_line and len(middles)
            and middles.max() - middles.min() <= max_step and measured.max() - measured.min() <= max_spread
        ):
            filled[i, j] = middles.mean()
    return filled


def test_fill_matches_the_rule_on_random_images():
    rng = np.random.default_rng(3)
    v, u = np.mgrid[:23, :31]
    for trial in range(20):
        depth = (0.4 + 0.002 * u * rng.uniform(-1, 1) + rng.normal(0, 0.001, u.shape)).astype(np.float32)  # a slanted, noisy plane
        depth[:, : rng.integers(0, 10)] += 0.03  # a step in depth: no fill across it
        depth[rng.random(depth.shape) < rng.uniform(0.05, 0.5)] = 0.0
        depth[rng.random(depth.shape) < 0.02] = np.nan
        for min_measured in (1, 5, 6, 8):
            filled, count = fill_isolated_holes(depth, min_measured, STEP, SPREAD)
            # float32 depths summed in float64 both ways, then rounded to float32.
            np.testing.assert_allclose(filled, _reference(depth, min_measured, STEP, SPREAD), rtol=1e-6, equal_nan=True)
            assert count == np.count_nonzero(~(depth > 0) & (filled > 0))


def test_a_hole_in_a_slanted_plane_takes_the_planes_depth():
    v, u = np.mgrid[:5, :5]
    depth = (0.5 + 0.004 * u + 0.002 * v).astype(np.float32)  # turned 45 degrees about one axis at 4 mm a pixel
    expected = depth[2, 2]
    depth[2, 2] = 0.0
    filled, count = fill_isolated_holes(depth, 6, STEP, SPREAD)
    assert count == 1
    np.testing.assert_allclose(filled[2, 2], expected, rtol=1e-6)  # float32 depths
    assert depth[2, 2] == 0.0  # the input is left as it was
    steep = (0.5 + 0.012 * u).astype(np.float32)  # a finger's side, 72 degrees
    steep[2, 2] = 0.0
    assert fill_isolated_holes(steep, 6, STEP, SPREAD)[1] == 0


def test_edges_bands_gaps_and_steps_are_never_filled():
    depth = np.zeros((12, 12), np.float32)
    depth[:, :6] = 0.5  # a straight silhouette: its holes have at most 5 measured neighbours
    assert fill_isolated_holes(depth, 6, STEP, SPREAD)[1] == 0
    depth[:, 6] = 0.0
    depth[:, 7:] = 0.8  # a band with no depth between a surface and the background behind it
    assert fill_isolated_holes(depth, 6, STEP, SPREAD)[1] == 0
    depth[:, 7:] = 0.5  # a gap a pixel wide between two fingers side by side
    assert fill_isolated_holes(depth, 6, STEP, SPREAD)[1] == 0
    depth[3:9, 6] = 0.5  # ... its ends, and a crack across a surface
    filled, count = fill_isolated_holes(depth, 6, STEP, SPREAD)
    assert count == 2 and filled[2, 6] == filled[9, 6] == np.float32(0.5)
    depth[5, :] = 0.0  # holes left and right of each other
    assert fill_isolated_holes(depth, 1, STEP, SPREAD)[1] == 2  # only the gap's ends, as before

    curled = np.full((9, 9), 0.5, np.float32)
    curled[:, 5:] = 0.488  # a finger curled over the palm, 12 mm in front of it
    curled[4, 4] = curled[2, 5] = 0.0  # a hole beside its edge on either side
    assert fill_isolated_holes(curled, 6, STEP, SPREAD)[1] == 0
    curled[:, 5:] = 0.494  # a 6 mm step: half of it is within 5 mm
    curled[4, 4] = curled[2, 5] = 0.0
    assert fill_isolated_holes(curled, 6, STEP, SPREAD)[1] == 2


def test_a_region_with_no_depth_keeps_all_but_its_pockets():
    depth = np.full((30, 30), 0.6, np.float32)
    depth[5:25, 5:25] = 0.0
    filled, count = fill_isolated_holes(depth, 6, STEP, SPREAD)
    assert count == 0 and np.array_equal(filled, depth)
    depth[5:25, 5:25] = 0.6
    depth[10, 10] = depth[10, 11] = 0.0  # two holes side by side: 7 measured neighbours each
    filled, count = fill_isolated_holes(depth, 6, STEP, SPREAD)
    assert count == 2 and np.all(filled == np.float32(0.6))
