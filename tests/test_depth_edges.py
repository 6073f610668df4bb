import numpy as np

from kernels.depth_edges import depth_edges


def _reference(depth: np.ndarray, valid: np.ndarray, jump: np.float32, jump_from: np.float32):
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
        allowed = jump * np.maximum(np.float32(1.0), np.minimum(depth[a], depth[b]) / jump_from)
        same = valid[a] & valid[b] & (np.abs(diff) <= allowed)
        connected[a] |= same
        connected[b] |= same
        pairs.append((a, b, diff, allowed))
    ok = valid & connected
    behind = np.zeros(depth.shape, bool)
    for a, b, diff, allowed in pairs:
        both = ok[a] & ok[b]
        behind[a] |= both & (diff > allowed)
        behind[b] |= both & (diff < -allowed)
    return ~connected, behind


def test_depth_edges_match_the_whole_image_rule():
    rng = np.random.default_rng(0)
    jump = np.float32(0.03)
    for trial in range(40):
        h, w = (int(x) for x in rng.integers(1, 40, size=2))
        # Surfaces on a 1 cm depth grid, so steps of exactly the jump occur too; near and
        # far, where the step allowed grows with the depth (from 0.5 m here).
        near, far = (0.3, 0.5) if trial % 2 else (0.8, 1.5)
        depth = (np.round(rng.uniform(near, far, (h, w)) * 100) / 100).astype(np.float32)
        valid = rng.uniform(size=(h, w)) < 0.8
        isolated, behind = depth_edges(depth, valid, jump, np.float32(0.5))
        expected_isolated, expected_behind = _reference(depth, valid, jump, np.float32(0.5))
        np.testing.assert_array_equal(isolated, expected_isolated)
        np.testing.assert_array_equal(behind, expected_behind)


def test_depth_edges_golden():
    # A 2 x 3 grid: a near pair, a far pixel 10 cm behind the right one, a lone invalid pixel.
    depth = np.array([[0.40, 0.41, 0.51], [0.0, 0.40, 0.52]], np.float32)
    valid = depth > 0
    isolated, behind = depth_edges(depth, valid, np.float32(0.03), np.float32(0.7))
    np.testing.assert_array_equal(isolated, [[False, False, False], [True, False, False]])
    np.testing.assert_array_equal(behind, [[False, False, True], [False, False, True]])


def test_the_step_on_one_surface_grows_past_its_depth():
    # The same steps 3.5 times as far: 3.5 cm apart (more than 3 cm) at 0.4-0.5 m is an edge,
    # at 1.4 m (3 cm x 1.4 / 0.7 = 6 cm allowed) one surface; 10 cm apart still an edge.
    depth = np.array([[0.40, 0.435, 0.535]], np.float32)
    valid = depth > 0
    isolated, behind = depth_edges(depth, valid, np.float32(0.03), np.float32(0.7))
    np.testing.assert_array_equal(isolated, [[True, True, True]])
    far = depth + np.float32(1.0)
    isolated, behind = depth_edges(far, valid, np.float32(0.03), np.float32(0.7))
    np.testing.assert_array_equal(isolated, [[False, False, True]])
    two_surfaces = np.array([[1.40, 1.435, 1.535, 1.56]], np.float32)
    isolated, behind = depth_edges(two_surfaces, two_surfaces > 0, np.float32(0.03), np.float32(0.7))
    np.testing.assert_array_equal(isolated, [[False, False, False, False]])
    np.testing.assert_array_equal(behind, [[False, False, True, False]])
