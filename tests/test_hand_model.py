import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from tracker.hand_model import HandModel
from tracker.skeleton import KEYPOINT_SKIN_JOINT_INDEX, NUM_SKIN_JOINTS, SKIN_JOINT_INDEX
from tracker.types import Joint


def _random_pose(seed: int):
    rng = np.random.default_rng(seed)
    rotations = Rotation.from_rotvec(rng.normal(0, 0.4, (NUM_SKIN_JOINTS, 3))).as_matrix()
    scales = rng.uniform(0.85, 1.15, (NUM_SKIN_JOINTS, 2))
    cam_from_hand = np.eye(4)
    cam_from_hand[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    cam_from_hand[:3, 3] = [0.05, -0.02, 0.5]
    return rotations, scales, cam_from_hand


def test_rest_pose_returns_the_template(hand_model: HandModel):
    posed = hand_model.pose()
    # float32 storage of the bind matrices: agreement to ~1e-7 m is exact for our purposes.
    np.testing.assert_allclose(posed.vertices, hand_model.template_vertices, atol=1e-6)
    bind_joints = hand_model.hand_from_joint_bind[KEYPOINT_SKIN_JOINT_INDEX, :3, 3]
    np.testing.assert_allclose(posed.joints, bind_joints, atol=1e-6)
    np.testing.assert_allclose(posed.joints[Joint.WRIST], 0.0, atol=1e-6)  # the hand frame's origin


def test_rigid_transform_of_the_rest_pose(hand_model: HandModel):
    _, _, cam_from_hand = _random_pose(3)
    posed = hand_model.pose(cam_from_hand=cam_from_hand)
    expected = hand_model.template_vertices @ cam_from_hand[:3, :3].T + cam_from_hand[:3, 3]
    np.testing.assert_allclose(posed.vertices, expected, atol=1e-6)


def test_flexing_a_finger_moves_only_that_finger(hand_model: HandModel):
    rotations = hand_model.rest_rotations()
    rotations[SKIN_JOINT_INDEX["index-finger-phalanx-proximal"]] = Rotation.from_rotvec([-np.pi / 2, 0, 0]).as_matrix()
    rest, bent = hand_model.pose(), hand_model.pose(rotations)
    moved = np.linalg.norm(bent.joints - rest.joints, axis=1) > 1e-6
    assert set(np.flatnonzero(moved)) == {Joint.INDEX_FINGER_PIP, Joint.INDEX_FINGER_DIP, Joint.INDEX_FINGER_TIP}
    # Flexion (about -x) curls towards the palm, which faces the hand frame's -y.
    assert bent.joints[Joint.INDEX_FINGER_TIP, 1] < rest.joints[Joint.INDEX_FINGER_TIP, 1] - 0.03
    # Bones are rigid: the PIP-DIP distance is unchanged.
    seg = lambda p: np.linalg.norm(p.joints[Joint.INDEX_FINGER_DIP] - p.joints[Joint.INDEX_FINGER_PIP])  # noqa: E731
    assert seg(bent) == pytest.approx(seg(rest), abs=1e-6)


def test_length_scale_stretches_the_bone(hand_model: HandModel):
    scales = np.ones((NUM_SKIN_JOINTS, 2))
    scales[SKIN_JOINT_INDEX["middle-finger-phalanx-intermediate"], 0] = 1.15
    rest, long = hand_model.pose(), hand_model.pose(bone_scales=scales)
    seg = lambda p: np.linalg.norm(p.joints[Joint.MIDDLE_FINGER_DIP] - p.joints[Joint.MIDDLE_FINGER_PIP])  # noqa: E731
    assert seg(long) == pytest.approx(1.15 * seg(rest), rel=1e-5)


def test_numba_and_torch_agree(hand_model: HandModel):
    poses = [_random_pose(s) for s in range(3)]
    rot, scales, cams = (torch.tensor(np.stack(x)) for x in zip(*poses))
    mirror = torch.tensor([False, True, False])
    vertices, joints = hand_model.pose_torch(rot, scales, cams, mirror)
    for b, (r, s, c) in enumerate(poses):
        ref = hand_model.pose(r, s, c, "left" if mirror[b] else "right")
        # float64 in both; differences are summation order only.
        np.testing.assert_allclose(vertices[b].numpy(), ref.vertices, atol=1e-6)
        np.testing.assert_allclose(joints[b].numpy(), ref.joints, atol=1e-6)


def test_torch_twin_is_differentiable(hand_model: HandModel):
    rot = torch.eye(3, dtype=torch.float32).repeat(1, NUM_SKIN_JOINTS, 1, 1)
    scales = torch.ones(1, NUM_SKIN_JOINTS, 2, requires_grad=True)
    vertices, joints = hand_model.pose_torch(rot, scales)
    (vertices.sum() + joints.sum()).backward()
    assert torch.isfinite(scales.grad).all() and scales.grad.abs().sum() > 0


def test_left_hand_is_the_mirror_image(hand_model: HandModel):
    rot, scales, _ = _random_pose(5)
    right, left = hand_model.pose(rot, scales), hand_model.pose(rot, scales, handedness="left")
    np.testing.assert_allclose(left.vertices, right.vertices * [-1, 1, 1], atol=1e-7)
    np.testing.assert_array_equal(left.faces, right.faces[:, ::-1])  # outward winding kept
    frames = left.cam_from_joint[:, :3, :3]
    assert np.allclose(np.linalg.det(frames), 1.0, atol=1e-4)  # proper rotations, not reflections


def test_bad_pose_input(hand_model: HandModel):
    with pytest.raises(ValueError, match=r"\(25, 3, 3\)"):
        hand_model.pose(np.eye(3))
    bad = hand_model.rest_rotations()
    bad[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hand_model.pose(bad)
    for not_rigid in (np.diag([-1.0, 1.0, 1.0, 1.0]), np.diag([1.1, 1.0, 1.0, 1.0])):
        with pytest.raises(ValueError, match="for a left hand give handedness=Handedness.LEFT"):
            hand_model.pose(cam_from_hand=not_rigid)
