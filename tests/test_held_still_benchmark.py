"""The held-still benchmark (benchmarks.held_still): its poses face the camera as they say,
its steadiness figures are what they claim, and it writes its table."""

import json

import numpy as np
import pytest

from benchmarks.held_still import ARM_LENGTH_M, POSES, SETTINGS, WRIST_BELOW_AXIS_M, held_pose, held_sequence, main, steadiness
from tracker.hand_model import HandModel
from tracker.sources import SyntheticSource
from tracker.types import Handedness, Joint


@pytest.fixture(scope="module")
def hand_model():
    return HandModel.load()


@pytest.mark.parametrize("hand", [Handedness.RIGHT, Handedness.LEFT])
def test_square_on_poses_face_the_camera_with_the_side_they_name(hand_model, hand):
    for name, facing, turn, tilt in POSES:
        pose = held_pose(hand_model, facing, turn, tilt, 0.9, hand)
        joints = hand_model.pose(pose.local_rotations, pose.bone_scales, pose.cam_from_hand, hand).joints
        assert np.allclose(joints[Joint.WRIST], [0.0, WRIST_BELOW_AXIS_M, 0.9], atol=1e-9)
        # Fingers up (the image's y runs down), within the tilt.
        up = joints[Joint.WRIST, 1] - joints[Joint.MIDDLE_FINGER_TIP, 1]
        assert up > 0.15 * np.cos(np.radians(tilt)), name
        if turn == 0 and tilt == 0:
            # The thumb lies on the palm's side: nearer the camera than the knuckles with the
            # palm towards it, farther with the back. The fingertips stay in the palm's plane.
            thumb_in_front = joints[Joint.MIDDLE_FINGER_MCP, 2] - joints[Joint.THUMB_TIP, 2]
            assert (thumb_in_front > 0.02) if facing == "palm" else (thumb_in_front < -0.02), name
            assert abs(joints[Joint.MIDDLE_FINGER_TIP, 2] - joints[Joint.WRIST, 2]) < 0.02, name
        if tilt:
            # Tilted back: the fingertips farther than the wrist, by ~sin(tilt) of a hand's length.
            assert joints[Joint.MIDDLE_FINGER_TIP, 2] - joints[Joint.WRIST, 2] > 0.15 * np.sin(np.radians(tilt)), name


def test_the_arm_runs_out_of_view_at_the_farthest_distance(hand_model):
    source = SyntheticSource(seed=0, max_frames=1, hand_model=hand_model)
    k = source.intrinsics
    for name, facing, turn, tilt in POSES:
        frame, _ = next(held_sequence(hand_model, source, held_pose(hand_model, facing, turn, tilt, 1.4, Handedness.RIGHT), 1, 30.0, [0]))
        depth = frame.depth_m()
        # Something drawn in the bottom row: the arm leaves the image rather than ending in it.
        assert np.count_nonzero(depth[k.height - 1] > 0) > 0, name
    assert ARM_LENGTH_M >= 0.9
    # The built-in input's arm ends in view there, its free end short of the image's edge.
    pose = held_pose(hand_model, "palm", 0.0, 30.0, 1.4, Handedness.RIGHT)
    frame, _ = next(held_sequence(hand_model, source, pose, 1, 30.0, [0], arm_length_m=0.55))
    depth = frame.depth_m()
    assert np.count_nonzero(depth[k.height - 12 :] > 0) == 0 and np.count_nonzero(depth > 0) > 1000


def test_steadiness_of_a_known_shake():
    # Every joint steps 1 mm along x and back each frame: jitter 1 mm (all joints and the
    # fingertips), each joint 0.5 mm from its mean.
    track = np.zeros((10, 21, 3))
    track[1::2, :, 0] = 0.001
    jitter, tips, spread = steadiness(track)
    assert jitter == pytest.approx(1.0) and tips == pytest.approx(1.0) and spread == pytest.approx(0.5)
    # Only the fingertips shake: the jitter of all joints is sqrt(5 / 21) of theirs.
    track = np.zeros((10, 21, 3))
    track[1::2, [4, 8, 12, 16, 20], 1] = 0.002
    jitter, tips, _ = steadiness(track)
    assert tips == pytest.approx(2.0) and jitter == pytest.approx(2.0 * np.sqrt(5 / 21))
    # Frames without a hand break the steps: only consecutive pairs count.
    track = np.zeros((6, 21, 3))
    track[1] = 0.003
    track[2] = np.nan
    track[3:] = 0.0
    jitter, _, _ = steadiness(track)
    # Pairs (0, 1), (3, 4), (4, 5): one step of 3 mm * sqrt(3) per joint, two of 0.
    assert jitter == pytest.approx(np.sqrt((3 * 3.0**2) / 3))
    # No two consecutive frames with a hand: nothing to measure.
    track = np.full((4, 21, 3), np.nan)
    track[0] = track[2] = 0.0
    assert steadiness(track) == (None, None, None)


def test_command_writes_both_settings_per_distance(tmp_path, capsys):
    out = tmp_path / "still.json"
    assert main(["--frames", "3", "--distances", "0.45", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "held_still" and result["config"]["frames"] == 3 and result["config"]["distances_m"] == [0.45]
    rows = result["rows"]
    assert [row["setting"] for row in rows] == list(SETTINGS)
    for row in rows:
        assert row["sequences"] == 2 * len(POSES) and row["frames"] == 3 * 2 * len(POSES)
        # A flat hand at 45 cm is found in every frame, on its side, within a centimetre.
        assert row["frames_with_a_hand"] == row["frames"] and row["hands_lost"] == 0 and row["side_right"] == 1.0
        assert row["mean_joint_error_mm"] < 10 and row["jitter_mm"] is not None
    # The filter can only steady what it is given.
    assert rows[1]["jitter_mm"] < rows[0]["jitter_mm"]
    assert "fingertip jitter" in capsys.readouterr().out


def test_bad_arguments_are_refused(tmp_path):
    for argv in (["--frames", "1"], ["--distances", "0.05"], ["--seed", "-1"], ["--arm-length", "-0.1"], ["--arm-length", "3"]):
        with pytest.raises(SystemExit):
            main([*argv, "--out", str(tmp_path / "x.json")])
