import numpy as np

from kernels.depth_holes import fill_isolated_holes

SPREAD = np.float32(0.02)


def _reference(depth: np.ndarray, min_measured: int, max_spread: float) -> np.ndarray:
    """The same rule, pixel by pixel in plain Python over the zero-padded image."""
    padded = np.pad(depth, 1)
    filled = depth.copy()
    for i, j in zip(*np.nonzero(~(depth > 0))):
        window = padded[i : i + 3, j : j + 3].copy()
        window[1, 1] = 0.0
        measured = window[window > 0]
        lost = ~(window > 0)
        lost[1, 1] = False
        in_a_line = (lost & lost[::-1, ::-1]).any()  # two opposite neighbours both holes
        if len(measured) >= min_measured and not in_a_line and measured.max() - measured.min() <= max_spread:
            filled[i, j] = measured.mean()
    return filled


def test_fill_matches_the_rule_on_random_images():
    rng = np.random.default_rng(3)
    for trial in range(20):
        depth = rng.uniform(0.4, 0.43, (23, 31)).astype(np.float32)
        depth[:, : rng.integers(0, 10)] += 0.1  # a step in depth: no fill across it
        depth[rng.random(depth.shape) < rng.uniform(0.05, 0.5)] = 0.0
        depth[rng.random(depth.shape) < 0.02] = np.nan
        for min_measured in (1, 5, 6, 8):
            filled, count = fill_isolated_holes(depth, min_measured, SPREAD)
            # float32 sums of up to 8 depths against numpy's pairwise mean: 1 ulp at 0.5 m.
            np.testing.assert_allclose(filled, _reference(depth, min_measured, SPREAD), rtol=1e-6, equal_nan=True)
            assert count == np.count_nonzero(~(depth > 0) & (filled > 0))


def test_a_single_hole_in_a_plane_takes_its_neighbours_mean():
    depth = np.full((5, 5), 0.5, np.float32)
    depth[2, 3] = 0.51  # one neighbour farther, within the spread
    depth[2, 2] = 0.0
    filled, count = fill_isolated_holes(depth, 6, SPREAD)
    assert count == 1
    np.testing.assert_allclose(filled[2, 2], (7 * 0.5 + 0.51) / 8, rtol=1e-6)  # float32 depths
    assert depth[2, 2] == 0.0  # the input is left as it was


def test_edges_bands_and_steps_are_never_filled():
    depth = np.zeros((12, 12), np.float32)
    depth[:, :6] = 0.5  # a straight silhouette: its holes have at most 5 measured neighbours
    filled, count = fill_isolated_holes(depth, 6, SPREAD)
    assert count == 0
    depth[:, 6] = 0.0
    depth[:, 7:] = 0.8  # a band with no depth between a surface and the background behind it
    assert fill_isolated_holes(depth, 6, SPREAD)[1] == 0
    depth[:, 7:] = 0.5 + 0.025  # ... or a finger lying just behind another
    assert fill_isolated_holes(depth, 6, SPREAD)[1] == 0
    depth[:, 7:] = 0.5  # a gap a pixel wide between two fingers side by side
    assert fill_isolated_holes(depth, 6, SPREAD)[1] == 0
    depth[3:9, 6] = 0.5  # ... its ends, and a crack across a surface
    filled, count = fill_isolated_holes(depth, 6, SPREAD)
    assert count == 2 and filled[2, 6] == filled[9, 6] == np.float32(0.5)
    depth[5, :] = 0.0  # holes left and right of each other
    assert fill_isolated_holes(depth, 1, SPREAD)[1] == 2  # only the gap's ends, as before


def test_a_region_with_no_depth_keeps_all_but_its_pockets():
    depth = np.full((30, 30), 0.6, np.float32)
    depth[5:25, 5:25] = 0.0
    filled, count = fill_isolated_holes(depth, 6, SPREAD)
    assert count == 0 and np.array_equal(filled, depth)
    depth[5:25, 5:25] = 0.6
    depth[10, 10] = depth[10, 11] = 0.0  # two holes side by side: 7 measured neighbours each
    filled, count = fill_isolated_holes(depth, 6, SPREAD)
    assert count == 2 and np.all(filled == np.float32(0.6))
