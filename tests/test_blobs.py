"""The segmentation's numba kernels (kernels/blobs.py) against the whole-array numpy rules
they replace, on random grids, and a few golden values."""

import cv2
import numpy as np
import pytest

from kernels.blobs import (
    blob_points,
    border_contacts,
    gaps_to_contact,
    label_sizes_and_front_votes,
    mean_shift,
    nearest_squared_distance,
    outline_cuts,
    tip_means,
)

CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)


def random_grid(rng, h, w):
    """Depth on a 1 cm grid (steps of exactly a threshold occur too), a fifth invalid."""
    depth = (np.round(rng.uniform(0.3, 0.6, (h, w)) * 100) / 100).astype(np.float32)
    depth[rng.uniform(size=(h, w)) < 0.2] = 0.0
    return depth


def test_label_sizes_and_front_votes_are_the_bincounts():
    rng = np.random.default_rng(0)
    for _ in range(30):
        h, w = (int(x) for x in rng.integers(1, 50, size=2))
        depth = random_grid(rng, h, w)
        band = (depth > 0) & (depth < 0.5)
        count, labels = cv2.connectedComponents((band & (rng.uniform(size=(h, w)) < 0.8)).view(np.uint8), connectivity=8)
        front = np.float32(0.4)
        sizes, votes = label_sizes_and_front_votes(labels, count, band, depth, front)
        np.testing.assert_array_equal(sizes, np.bincount(labels.ravel(), minlength=count))
        np.testing.assert_array_equal(votes, np.bincount(labels[band & (depth < front)], minlength=count))


def reference_mean_shift(points, start, radius, iterations, min_count, max_travel):
    """The rule as numpy whole-array steps."""
    centre = start
    area = points[:, 2] ** 2
    for _ in range(iterations):
        near = np.sum((points - centre) ** 2, axis=1) < radius**2
        if not near.any() or np.count_nonzero(near) < min_count:
            return None
        weight = np.where(near, area, 0.0)
        new = weight @ points / weight.sum()
        if max_travel >= 0 and np.linalg.norm(new - start) > max_travel:
            new = start + (new - start) * (max_travel / np.linalg.norm(new - start))
        if np.linalg.norm(new - centre) < 1e-4:
            return new
        centre = new
    return centre


@pytest.mark.parametrize("max_travel", [-1.0, 0.02])
def test_mean_shift_matches_the_numpy_rule(max_travel):
    rng = np.random.default_rng(1)
    for _ in range(30):
        points = rng.normal([0.0, 0.0, 0.5], 0.05, size=(int(rng.integers(5, 400)), 3))
        start = points[0] + rng.normal(0, 0.03, 3)
        expected = reference_mean_shift(points, start, 0.08, 15, 10, max_travel)
        centre, found = mean_shift(points, start, 0.08, 15, 10, max_travel)
        assert found == (expected is not None)
        if found:
            # Only the order of summation differs: rounding, far below a micrometre.
            np.testing.assert_allclose(centre, expected, rtol=0, atol=1e-12)


def test_mean_shift_golden():
    # Two points 2 cm apart at 1 m and 2 m: area weights 1 and 4, so the centre is 4/5 of the
    # way to the far one; with no point within the kernel, nothing.
    points = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    centre, found = mean_shift(points, np.array([0.0, 0.0, 1.5]), 1.0, 15, 1, -1.0)
    assert found
    np.testing.assert_allclose(centre, [0.0, 0.0, 1.8], atol=1e-15)
    _, found = mean_shift(points, np.array([5.0, 0.0, 1.5]), 1.0, 15, 1, -1.0)
    assert not found
    # Points with no weight (z = 0) give no centre rather than a division by zero.
    _, found = mean_shift(np.zeros((5, 3)), np.zeros(3), 1.0, 15, 1, -1.0)
    assert not found
    # A travel limit of 10 cm stops it 10 cm from the start.
    centre, found = mean_shift(points, np.array([0.0, 0.0, 1.5]), 1.0, 15, 1, 0.1)
    assert found
    np.testing.assert_allclose(centre, [0.0, 0.0, 1.6], atol=1e-15)


def test_blob_points_match_the_numpy_rule():
    rng = np.random.default_rng(2)
    fx, fy, cx, cy, step, pixel_at_1m, zone = 475.0, 470.0, 320.5, 239.5, 3, 3 / 472.5, 4
    for _ in range(30):
        h, w = (int(x) for x in rng.integers(1, 60, size=2))
        depth = random_grid(rng, h, w)
        mask = (depth > 0) & (rng.uniform(size=(h, w)) < 0.5)
        rows, cols, points, at_edge, area, across = blob_points(mask, depth, step, fx, fy, cx, cy, pixel_at_1m, zone)
        gv, gu = np.nonzero(mask)
        z = depth[gv, gu].astype(np.float64)
        expected = np.stack([(gu * step - cx) / fx * z, (gv * step - cy) / fy * z, z], axis=1)
        np.testing.assert_array_equal(rows, gv)
        np.testing.assert_array_equal(cols, gu)
        np.testing.assert_array_equal(points, expected)  # the same operations in the same order
        np.testing.assert_array_equal(at_edge, (gu < zone) | (gv < zone) | (gu >= w - zone) | (gv >= h - zone))
        assert area == pytest.approx(np.sum((z * pixel_at_1m) ** 2), rel=1e-12)
        if len(z) > 2:
            smallest = max(np.linalg.eigvalsh(np.cov(expected[:, :2].T))[0], 0.0)
            # A difference of two sums of squares: rounding relative to the larger variance.
            assert across == pytest.approx(smallest, abs=1e-12 * max(1.0, np.trace(np.cov(expected[:, :2].T))))
        else:
            assert across == 0.0


def test_blob_points_golden():
    # The top two rows of a 3 x 4 grid at 1 m (step 1, f = 1 px/m, centre at 0): x = 0..3 m,
    # y = 0 or 1 m, four points each; the variance across it is that of y, 8 * 0.5^2 / 7.
    depth = np.ones((3, 4), np.float32)
    mask = np.zeros((3, 4), bool)
    mask[:2] = True
    rows, cols, points, at_edge, area, across = blob_points(mask, depth, 1, 1.0, 1.0, 0.0, 0.0, 0.5, 1)
    assert len(points) == 8 and area == pytest.approx(8 * 0.25)
    assert across == pytest.approx(0.25 * 8 / 7)
    # Zone 1 on a 3 x 4 grid: every pixel but the inner ones, (1, 1) and (1, 2), is at the edge.
    np.testing.assert_array_equal(at_edge, [True, True, True, True, True, False, False, True])


def reference_border_contacts(rows, cols, z, pixel_at_1m, zone, h, w):
    size = z * pixel_at_1m
    lengths = []
    for at, along in ((rows < zone, cols), (rows >= h - zone, cols), (cols < zone, rows), (cols >= w - zone, rows)):
        lengths.append(len(np.unique(along[at])) * float(np.mean(size[at])) if at.any() else 0.0)
    return np.array(lengths)


def test_border_contacts_match_the_numpy_rule():
    rng = np.random.default_rng(3)
    for _ in range(30):
        h, w = (int(x) for x in rng.integers(2, 40, size=2))
        mask = rng.uniform(size=(h, w)) < 0.3
        rows, cols = np.nonzero(mask)
        z = rng.uniform(0.3, 1.0, len(rows))
        np.testing.assert_allclose(
            border_contacts(rows, cols, z, 0.006, 3, h, w), reference_border_contacts(rows, cols, z, 0.006, 3, h, w), rtol=1e-12
        )


def test_gaps_to_contact_match_the_numpy_rule():
    rng = np.random.default_rng(4)
    for _ in range(30):
        points = rng.normal(0.0, 0.1, size=(int(rng.integers(1, 2000)), 3))
        at_edge = rng.uniform(size=len(points)) < 0.2
        at_edge[int(rng.integers(len(points)))] = True
        contact = points[at_edge]
        contact = contact[:: max(1, len(contact) // 64)]
        sample = points[:: max(1, len(points) // 256)]
        expected = np.min(np.sum((sample[:, None, :] - contact[None, :, :]) ** 2, axis=2), axis=1)
        np.testing.assert_allclose(gaps_to_contact(points, at_edge, 256, 64), expected, rtol=1e-12, atol=1e-18)


def reference_outline(inside, depth, taken_back, continuation, back_m):
    """The rule as the whole-window numpy and OpenCV steps."""
    ring = cv2.dilate(inside.view(np.uint8), CROSS).view(bool) & ~inside
    inner = cv2.dilate(np.where(inside, depth, 0.0).astype(np.float32), CROSS)[ring]
    around = depth[ring]
    continues = (around > 0) & (np.abs(around - inner) < continuation)
    nearer = continues & (taken_back[ring] > 0)
    behind = continues & (((taken_back[ring] == 0) & (around >= back_m)) | (taken_back[ring] < 0))
    runs_on = np.zeros(inside.shape, np.uint8)
    runs_on[ring] = behind
    return float(np.sum(around[nearer], dtype=np.float64)), float(np.sum(around[behind], dtype=np.float64)), runs_on


def test_outline_cuts_match_the_numpy_rule():
    rng = np.random.default_rng(5)
    for _ in range(40):
        h, w = (int(x) for x in rng.integers(1, 40, size=2))
        depth = random_grid(rng, h, w)
        inside = (depth > 0) & (depth < 0.45) & (rng.uniform(size=(h, w)) < 0.7)
        draw = rng.uniform(size=(h, w))
        taken_back = np.where(draw < 0.2, np.float32(0.4), np.where(draw > 0.9, np.float32(-1.0), np.float32(0.0)))
        continuation, back = np.float32(0.03), np.float32(0.45)
        nearer, behind, runs_on = outline_cuts(inside, depth, taken_back, continuation, back)
        expected_nearer, expected_behind, expected_runs_on = reference_outline(inside, depth, taken_back, continuation, back)
        np.testing.assert_array_equal(runs_on, expected_runs_on)
        assert nearer == pytest.approx(expected_nearer, rel=1e-6)  # float32 depths summed
        assert behind == pytest.approx(expected_behind, rel=1e-6)


def test_outline_cuts_golden():
    # A pixel at 0.40 m beside a ring of: 0.42 (runs on behind a band ending at 0.41), 0.405
    # (within the band: no cut), 0.50 (a jump: no continuation), and 0.41 taken by a nearer
    # candidate; the corners are no 4-neighbours.
    depth = np.array([[0.9, 0.42, 0.9], [0.405, 0.40, 0.50], [0.9, 0.41, 0.9]], np.float32)
    inside = np.zeros((3, 3), bool)
    inside[1, 1] = True
    taken_back = np.zeros((3, 3), np.float32)
    taken_back[2, 1] = 0.45
    nearer, behind, runs_on = outline_cuts(inside, depth, taken_back, np.float32(0.03), np.float32(0.41))
    assert nearer == pytest.approx(0.41) and behind == pytest.approx(0.42)
    np.testing.assert_array_equal(runs_on, [[0, 1, 0], [0, 0, 0], [0, 0, 0]])
    # The 0.405 pixel within the band, set aside unjudged: cut off there too.
    taken_back[1, 0] = -1.0
    nearer, behind, runs_on = outline_cuts(inside, depth, taken_back, np.float32(0.03), np.float32(0.41))
    assert nearer == pytest.approx(0.41) and behind == pytest.approx(0.42 + 0.405)
    np.testing.assert_array_equal(runs_on, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])


def test_tip_means_and_nearest_distance():
    rng = np.random.default_rng(6)
    points = rng.normal(0.0, 0.1, (500, 3))
    cut = rng.uniform(size=500) < 0.3
    along = points @ np.array([0.6, 0.8, 0.0])
    for sign in (1.0, -1.0):
        threshold = float(np.percentile(sign * along, 90))
        tip = sign * along > threshold
        share, mean = tip_means(points, cut, along, sign, threshold)
        assert share == pytest.approx(np.mean(cut[tip]), rel=1e-12)
        np.testing.assert_allclose(mean, points[tip].mean(axis=0), rtol=1e-12)
    share, mean = tip_means(points, cut, along, 1.0, float(along.max()))
    assert np.isnan(share) and np.isnan(mean).all()
    target = np.array([0.05, -0.02, 0.1])
    for stride in (1, 7):
        expected = np.min(np.sum((points[::stride] - target) ** 2, axis=1))
        assert nearest_squared_distance(points, stride, target) == pytest.approx(expected, rel=1e-12)
    assert nearest_squared_distance(points[:0], 1, target) == np.inf
