import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from kernels.refit import _largest_eigenpair_sym4, fit_part_transforms, umeyama
from tracker.refit import Refit
from tracker.skeleton import NUM_PARTS
from tracker.types import Joint


def _similarity(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.eye(4)
    t[:3, :3] = rng.uniform(0.85, 1.15) * Rotation.random(random_state=seed).as_matrix()
    t[:3, 3] = rng.normal(0, 0.1, 3) + [0, 0, 0.5]
    return t


def test_umeyama_recovers_a_similarity_and_never_reflects():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(30, 3))
    truth = _similarity(1)
    target = source @ truth[:3, :3].T + truth[:3, 3]
    np.testing.assert_allclose(umeyama(source, target), truth, atol=1e-10)
    mirrored = target * [-1, 1, 1]  # the best fit would be a reflection
    assert np.linalg.det(umeyama(source, mirrored)[:3, :3]) > 0
    # Degenerate inputs give what the docstring says, never NaN.
    np.testing.assert_array_equal(umeyama(np.zeros((0, 3)), np.zeros((0, 3))), np.eye(4))
    one = umeyama(source[:1], target[:1])
    np.testing.assert_allclose(one[:3, :3], np.eye(3))
    np.testing.assert_allclose(one[:3, 3], target[0] - source[0])


def test_jacobi_finds_the_largest_eigenpair():
    rng = np.random.default_rng(5)
    for trial in range(200):
        a = rng.normal(size=(4, 4))
        a = a + a.T
        if trial % 4 == 0:  # a repeated top eigenvalue: any vector of its plane is right
            q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
            a = q @ np.diag([3.0, 3.0, -1.0, 0.5]) @ q.T
        values, vectors = np.linalg.eigh(a)
        work, found = a.copy(), np.empty((4, 4))
        best = _largest_eigenpair_sym4(work, found)
        # float64 round-off on entries of size ~5, with margin
        assert abs(work[best, best] - values[-1]) < 1e-12
        v = found[:, best]
        np.testing.assert_allclose(a @ v, values[-1] * v, atol=1e-12)
        np.testing.assert_allclose(found.T @ found, np.eye(4), atol=1e-12)


def test_part_fit_matches_the_svd_reference_on_hard_cases(hand_model):
    """The inference fit (Horn's quaternion) and the reference (Umeyama's SVD) solve the
    same problem; they must give the same transform, mirrored and collapsed parts included."""
    refit = Refit(hand_model)
    rng = np.random.default_rng(6)
    part = refit.vertex_part
    cases = [
        refit.template + rng.normal(0, 0.003, refit.template.shape),  # a network's noise
        refit.template @ _similarity(7)[:3, :3].T * 2.0 + 0.4,  # rotated, scaled, far
        refit.template * [-1, 1, 1] + rng.normal(0, 0.001, refit.template.shape),  # mirrored
        rng.normal(0, 0.05, refit.template.shape),  # nothing like a hand
        refit.template * [1, 1, 0],  # every part flattened onto a plane
    ]
    collapsed = refit.template.copy()
    collapsed[part == 3] = [0.1, 0.2, 0.3]  # one part shrunk to a point
    cases.append(collapsed)
    for target in cases:
        fast = fit_part_transforms(refit.template, target, part, NUM_PARTS)
        for k in range(NUM_PARTS):
            reference = umeyama(refit.template[part == k], target[part == k])
            # Moments summed in a different order: round-off of the float64 sums only.
            np.testing.assert_allclose(fast[k], reference, atol=1e-9)


def test_refit_recovers_known_part_transforms_exactly(hand_model):
    refit = Refit(hand_model)
    truth = np.stack([_similarity(10 + k) for k in range(NUM_PARTS)])
    part = hand_model.vertex_part
    template = hand_model.template_vertices.astype(np.float64)
    moved = np.einsum("vrc,vc->vr", truth[part, :3, :3], template) + truth[part, :3, 3]
    result = refit.fit(moved)
    # Noise-free input: exact up to float64 round-off.
    np.testing.assert_allclose(result.part_transforms, truth, atol=1e-9)
    # With one transform for every part the skinning reproduces a rigid motion exactly.
    same = np.stack([truth[0]] * NUM_PARTS)
    rigid = template @ same[0, :3, :3].T + same[0, :3, 3]
    res = refit.fit(rigid)
    np.testing.assert_allclose(res.vertices, rigid, atol=1e-6)
    bind = hand_model.hand_from_joint_bind[:, :3, 3]
    assert np.linalg.norm(res.joints[Joint.WRIST] - (bind[0] @ same[0, :3, :3].T + same[0, :3, 3])) < 1e-6


def test_numba_and_torch_refits_agree(hand_model):
    refit = Refit(hand_model)
    rng = np.random.default_rng(3)
    posed = hand_model.pose(cam_from_hand=_similarity(4) * [[1], [1], [1], [1]]).vertices
    noisy = posed + rng.normal(0, 0.004, posed.shape).astype(np.float32)
    reference = refit.fit(noisy)
    vertices, joints, transforms = refit.fit_torch(torch.tensor(noisy[None], dtype=torch.float64))
    # The two refits are specified to agree to 1e-5 m; both run in float64, so they agree far tighter.
    assert np.abs(vertices[0].numpy() - reference.vertices).max() < 1e-5
    assert np.abs(joints[0].numpy() - reference.joints).max() < 1e-5
    np.testing.assert_allclose(transforms[0].numpy(), reference.part_transforms, atol=1e-6)


def test_torch_refit_gradients_are_finite(hand_model):
    refit = Refit(hand_model)
    p = torch.tensor(hand_model.template_vertices[None], requires_grad=True)
    noisy = p + 0.003 * torch.randn_like(p)
    vertices, joints, _ = refit.fit_torch(noisy)
    (vertices.square().sum() + joints.sum()).backward()
    assert torch.isfinite(p.grad).all()


def test_refit_rejects_bad_input(hand_model):
    refit = Refit(hand_model)
    with pytest.raises(ValueError, match="vertices"):
        refit.fit(np.zeros((10, 3)))
    bad = hand_model.template_vertices.copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        refit.fit(bad)
