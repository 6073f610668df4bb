from pathlib import Path

import numpy as np
import pytest

from tracker.types import JOINT_PARENT_INDEX, SKELETON_BONES, CameraIntrinsics, DepthFrame, Joint


def test_joints_are_mediapipe_order():
    assert len(Joint) == 21
    assert Joint.WRIST == 0 and Joint.THUMB_TIP == 4 and Joint.INDEX_FINGER_MCP == 5 and Joint.PINKY_TIP == 20
    # Every parent precedes its child, so one forward pass resolves the tree.
    assert all(JOINT_PARENT_INDEX[j] < j for j in Joint)
    assert len(SKELETON_BONES) == 20


@pytest.mark.parametrize(
    "width,height,fx",
    [
        (0, 480, 400.0), (640, 0, 400.0), (640, 480, 0.0), (640, 480, float("nan")), (640, 480, "four hundred"), (640, 480, None),
        # Sizes int() would quietly round or take: no camera reports them.
        (640.5, 480, 400.0), (True, True, 400.0), (float("nan"), 480, 400.0), ("wide", 480, 400.0),
    ],
)
def test_bad_intrinsics_are_rejected(width, height, fx):
    with pytest.raises(ValueError, match="intrinsics"):
        CameraIntrinsics(width, height, fx, fx, 320.0, 240.0)


def test_an_unknown_distortion_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown distortion model 'bogus'; one of none, brown_conrady, "):
        CameraIntrinsics(640, 480, 400.0, 400.0, 320.0, 240.0, "bogus")


def test_intrinsics_given_as_text_become_numbers():
    # As a hand-written intrinsics.json may quote them.
    k = CameraIntrinsics.from_dict({"width": "64", "height": 48, "fx": "50.5", "fy": 50, "cx": "31.5", "cy": 23.5})
    assert (k.width, k.fx, k.fy, k.cx) == (64, 50.5, 50.0, 31.5)
    assert all(type(v) is float for v in (k.fx, k.fy, k.cx, k.cy))
    whole = CameraIntrinsics(640.0, np.int64(480), 400.0, 400.0, 320.0, 240.0)
    assert (whole.width, whole.height) == (640, 480) and type(whole.width) is int and type(whole.height) is int
    assert CameraIntrinsics(2**53 + 1, 10**400, 400.0, 400.0, 320.0, 240.0).width == 2**53 + 1  # exact, however large


def test_intrinsics_round_trip_through_dict():
    k = CameraIntrinsics(848, 480, 425.1, 425.2, 423.9, 239.5, "brown_conrady", (0.1, 0, 0, 0, 0))
    assert CameraIntrinsics.from_dict(k.to_dict()) == k
    assert not k.is_pinhole


@pytest.mark.parametrize(
    "scale, timestamp_ms, intrinsics, said",
    [
        ("0.001", 0.0, None, "depth_scale must be a positive number of metres per unit, got '0.001'"),
        (0.001, None, None, "timestamp_ms must be finite (a number of milliseconds), got None"),
        (True, 0.0, None, "depth_scale must be a positive number"),
        (0.001, 0.0, {"width": 4, "height": 3}, "intrinsics must be a CameraIntrinsics (CameraIntrinsics.from_dict for a dict), got dict"),
    ],
)
def test_a_depth_frame_of_values_of_the_wrong_kind_says_which(scale, timestamp_ms, intrinsics, said):
    k = CameraIntrinsics(4, 3, 5.0, 5.0, 2.0, 1.5)
    with pytest.raises(ValueError) as raised:
        DepthFrame(np.zeros((3, 4), np.uint16), scale, intrinsics or k, timestamp_ms)
    assert said in str(raised.value)
    # Numbers as numpy and a .npz give them are numbers.
    assert DepthFrame(np.zeros((3, 4), np.uint16), np.float32(0.001), k, np.array(5.0)).depth_scale == np.float32(0.001)


@pytest.mark.parametrize(
    "field, value, said",
    [
        ("serial", 123, "serial must be a str, got int 123"),
        ("serial", None, "serial must be a str, got NoneType None"),
        ("frame_number", 1.5, "frame_number must be a whole number (the device's frame counter), got 1.5"),
        ("frame_number", True, "frame_number must be a whole number"),
        ("frame_number", "7", "frame_number must be a whole number"),
        ("sequence", None, "sequence must be a str"),
        ("source_file", Path("a.png"), "source_file must be a str"),
    ],
)
def test_a_depth_frame_s_labels_are_of_the_output_s_types(field, value, said):
    # The serial and the frame number go into every output line as a string and a whole
    # number: anything else is refused where the frame is made, not turned into either.
    k = CameraIntrinsics(4, 3, 5.0, 5.0, 2.0, 1.5)
    with pytest.raises(ValueError) as raised:
        DepthFrame(np.zeros((3, 4), np.uint16), 0.001, k, **{field: value})
    assert said in str(raised.value)
    assert DepthFrame(np.zeros((3, 4), np.uint16), 0.001, k, frame_number=np.int64(7)).frame_number == 7


def test_depth_frame_checks_shape_dtype_and_scale():
    k = CameraIntrinsics(4, 3, 2.0, 2.0, 1.5, 1.0)
    frame = DepthFrame(np.full((3, 4), 500, np.uint16), 0.001, k)
    assert np.allclose(frame.depth_m(), 0.5)
    with pytest.raises(ValueError, match="4x3"):
        DepthFrame(np.zeros((4, 4), np.uint16), 0.001, k)
    with pytest.raises(ValueError, match="uint16"):
        DepthFrame(np.zeros((3, 4), np.float32), 0.001, k)
    with pytest.raises(ValueError, match="depth_scale"):
        DepthFrame(np.zeros((3, 4), np.uint16), 0.0, k)


def test_numpy_counters_and_timestamps_become_python_numbers():
    # The tracker subtracts two frames' counters and timestamps: in a numpy unsigned type a
    # counter that restarts, or a clock that steps back, would wrap round.
    k = CameraIntrinsics(4, 3, 5.0, 5.0, 2.0, 1.5)
    frame = DepthFrame(np.zeros((3, 4), np.uint16), 0.001, k, np.uint64(65), frame_number=np.uint32(3))
    assert type(frame.frame_number) is int and type(frame.timestamp_ms) is float
    assert frame.frame_number - 5 == -2 and frame.timestamp_ms - 66 == -1.0


def test_masked_pixels_are_no_measurement_and_big_endian_depth_is_read():
    k = CameraIntrinsics(2, 1, 5.0, 5.0, 0.5, 0.0)
    masked = np.ma.masked_array(np.array([[1, 800]], np.uint16), mask=[[True, False]])
    frame = DepthFrame(masked, 0.001, k)
    assert type(frame.depth) is np.ndarray and frame.depth.tolist() == [[0, 800]]
    assert masked.data.tolist() == [[1, 800]]  # the caller's array as it was
    big_endian = np.array([[1, 800]], ">u2")
    np.testing.assert_allclose(DepthFrame(big_endian, 0.001, k).depth_m(), [[0.001, 0.8]], rtol=1e-6)  # float32 metres


def test_lens_coefficients_may_come_as_any_sequence_of_numbers_but_not_text():
    import array

    base = {"width": 4, "height": 3, "fx": 5.0, "fy": 5.0, "cx": 2.0, "cy": 1.5, "distortion": "brown_conrady"}
    for coeffs in ([0.1, 0, 0, 0, 0], (0.1, 0, 0, 0, 0), np.array([0.1, 0, 0, 0, 0]), array.array("d", [0.1, 0, 0, 0, 0])):
        assert CameraIntrinsics.from_dict({**base, "coeffs": coeffs}).coeffs == (0.1, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="must be a list of 5 numbers"):
        CameraIntrinsics.from_dict({**base, "coeffs": "12345"})


def test_hand_estimate_checks_its_shapes_and_confidence():
    from tracker.types import HandEstimate

    vertices, joints, uv = np.zeros((5, 3), np.float32), np.zeros((21, 3), np.float32), np.zeros((21, 2), np.float32)
    HandEstimate(vertices, joints, uv, confidence=0.0)
    for bad, message in (
        ({"vertices_cam_m": np.zeros(5)}, "vertices_cam_m must be \\(V, 3\\)"),
        ({"joints_cam_m": np.zeros((20, 3))}, "joints_cam_m must be \\(21, 3\\)"),
        ({"joints_uv_px": np.zeros((21, 3))}, "joints_uv_px must be \\(21, 2\\)"),
        ({"confidence": float("nan")}, "confidence must be in \\[0, 1\\]"),
        ({"confidence": 1.5}, "confidence must be in \\[0, 1\\]"),
    ):
        with pytest.raises(ValueError, match=message):
            HandEstimate(**{"vertices_cam_m": vertices, "joints_cam_m": joints, "joints_uv_px": uv, **bad})
