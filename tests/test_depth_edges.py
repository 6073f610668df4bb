import numpy as np

from kernels.depth_edges import depth_edges


def _reference(depth: np.ndarray, valid: np.ndarray, jump: np.float32):
    """The same rule as whole-image numpy operations over the four neighbour directions."""
    pairs = []
    connected = np.zeros(depth.shape, bool)
    for a, b in (
        ((slice(None), slice(1, None)), (slice(None), slice(None, -1))),
        ((slice(1, None), slice(None)), (slice(None, -1), slice(None))),
        ((slice(1, None), slice(1, None)), (slice(None, -1), slice(None, -1))),
        ((slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))),
    ):
        diff = depth[a] - depth[b]
        same = valid[a] & valid[b] & (np.abs(diff) <= jump)
        connected[a] |= same
        connected[b] |= same
        pairs.append((a, b, diff))
    ok = valid & connected
    behind = np.zeros(depth.shape, bool)
    for a, b, diff in pairs:
        both = ok[a] & ok[b]
        behind[a] |= both & (diff > jump)
        behind[b] |= both & (diff < -jump)
    return ~connected, behind


def test_depth_edges_match_the_whole_image_rule():
    rng = np.random.default_rng(0)
    jump = np.float32(0.03)
    for trial in range(40):
        h, w = (int(x) for x in rng.integers(1, 40, size=2))
        # Surfaces on a 1 cm depth grid, so steps of exactly the jump occur too.
        depth = (np.round(rng.uniform(0.3, 0.5, (h, w)) * 100) / 100).astype(np.float32)
        valid = rng.uniform(size=(h, w)) < 0.8
        isolated, behind = depth_edges(depth, valid, jump)
        expected_isolated, expected_behind = _reference(depth, valid, jump)
        np.testing.assert_array_equal(isolated, expected_isolated)
        np.testing.assert_array_equal(behind, expected_behind)


def test_depth_edges_golden():
    # A 2 x 3 grid: a near pair, a far pixel 10 cm behind the right one, a lone invalid pixel.
    depth = np.array([[0.40, 0.41, 0.51], [0.0, 0.40, 0.52]], np.float32)
    valid = depth > 0
    isolated, behind = depth_edges(depth, valid, np.float32(0.03))
    np.testing.assert_array_equal(isolated, [[False, False, False], [True, False, False]])
    np.testing.assert_array_equal(behind, [[False, False, True], [False, False, True]])
