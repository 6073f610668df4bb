"""The data that flows between pipeline stages.

Every stage of the tracker (source -> segment -> crop -> network -> refit -> sinks) talks to
the next through the frozen dataclasses below. Conventions, used everywhere in the project:

* Camera frame: OpenCV/RealSense, x right, y down, z forward, metres, float32.
* Pixels: (u, v) = (column, row) with pixel centres at integer coordinates.
* Depth images hold the device's raw uint16 units; multiply by ``depth_scale`` (m/unit)
  for metres. 0 means "no measurement".
* Transforms are 4x4 and named ``dst_from_src`` (``cam_from_hand`` maps hand-frame
  points into the camera frame).
* The hand frame is the wrist joint's bind frame of the hand model (the WebXR hand
  convention): origin at the wrist, -z from the wrist towards the fingers, +y out of the
  back of the hand, x completing a right-handed frame.
"""

from __future__ import annotations

import enum
import logging
import math
import numbers
from dataclasses import dataclass, field

import numpy as np


class Joint(enum.IntEnum):
    """The 21 hand keypoints in MediaPipe order."""

    WRIST = 0
    THUMB_CMC = 1
    THUMB_MCP = 2
    THUMB_IP = 3
    THUMB_TIP = 4
    INDEX_FINGER_MCP = 5
    INDEX_FINGER_PIP = 6
    INDEX_FINGER_DIP = 7
    INDEX_FINGER_TIP = 8
    MIDDLE_FINGER_MCP = 9
    MIDDLE_FINGER_PIP = 10
    MIDDLE_FINGER_DIP = 11
    MIDDLE_FINGER_TIP = 12
    RING_FINGER_MCP = 13
    RING_FINGER_PIP = 14
    RING_FINGER_DIP = 15
    RING_FINGER_TIP = 16
    PINKY_MCP = 17
    PINKY_PIP = 18
    PINKY_DIP = 19
    PINKY_TIP = 20


NUM_JOINTS = len(Joint)

#: Parent of each keypoint in the kinematic tree (the wrist has none).
JOINT_PARENTS: dict[Joint, Joint | None] = {
    Joint.WRIST: None,
    Joint.THUMB_CMC: Joint.WRIST,
    Joint.THUMB_MCP: Joint.THUMB_CMC,
    Joint.THUMB_IP: Joint.THUMB_MCP,
    Joint.THUMB_TIP: Joint.THUMB_IP,
    Joint.INDEX_FINGER_MCP: Joint.WRIST,
    Joint.INDEX_FINGER_PIP: Joint.INDEX_FINGER_MCP,
    Joint.INDEX_FINGER_DIP: Joint.INDEX_FINGER_PIP,
    Joint.INDEX_FINGER_TIP: Joint.INDEX_FINGER_DIP,
    Joint.MIDDLE_FINGER_MCP: Joint.WRIST,
    Joint.MIDDLE_FINGER_PIP: Joint.MIDDLE_FINGER_MCP,
    Joint.MIDDLE_FINGER_DIP: Joint.MIDDLE_FINGER_PIP,
    Joint.MIDDLE_FINGER_TIP: Joint.MIDDLE_FINGER_DIP,
    Joint.RING_FINGER_MCP: Joint.WRIST,
    Joint.RING_FINGER_PIP: Joint.RING_FINGER_MCP,
    Joint.RING_FINGER_DIP: Joint.RING_FINGER_PIP,
    Joint.RING_FINGER_TIP: Joint.RING_FINGER_DIP,
    Joint.PINKY_MCP: Joint.WRIST,
    Joint.PINKY_PIP: Joint.PINKY_MCP,
    Joint.PINKY_DIP: Joint.PINKY_PIP,
    Joint.PINKY_TIP: Joint.PINKY_DIP,
}

#: Parent index per keypoint as an int array (-1 for the wrist), for vectorised code.
JOINT_PARENT_INDEX = np.array(
    [-1 if JOINT_PARENTS[j] is None else int(JOINT_PARENTS[j]) for j in Joint], dtype=np.int32
)

#: (child, parent) pairs: the 20 bones of the drawn skeleton.
SKELETON_BONES: tuple[tuple[Joint, Joint], ...] = tuple(
    (j, p) for j, p in JOINT_PARENTS.items() if p is not None
)


class Handedness(str, enum.Enum):
    RIGHT = "right"
    LEFT = "left"


#: The choices of which hand to track: "auto" decides per track (``tracker.side_vote``),
#: the others fix the side.
HAND_CHOICES = ("auto", Handedness.RIGHT.value, Handedness.LEFT.value)


class DistortionModel(str, enum.Enum):
    """Lens models as librealsense names them."""

    NONE = "none"
    BROWN_CONRADY = "brown_conrady"
    INVERSE_BROWN_CONRADY = "inverse_brown_conrady"
    MODIFIED_BROWN_CONRADY = "modified_brown_conrady"
    KANNALA_BRANDT4 = "kannala_brandt4"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_real(value) -> bool:
    """A number (a Python or numpy int or float, a 0-d numeric array as a .npz gives it),
    not text, None or a bool."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    return isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "fiu"


def _whole_number(value) -> int | None:
    """``value`` as an int where it is a whole number (640, 640.0, "640"), else None (640.5,
    NaN, True: a size no camera reports, which int() would quietly round or take)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):  # exact, however large
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of one depth stream, as read from the device or a recording.

    width, height: image size in pixels (> 0).
    fx, fy: focal lengths in pixels (> 0).
    cx, cy: principal point in pixels (pixel centres at integer coordinates).
    distortion: the lens model; coeffs: its 5 coefficients (float64, librealsense order).
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion: DistortionModel = DistortionModel.NONE
    coeffs: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        width, height = _whole_number(self.width), _whole_number(self.height)
        _require(
            width is not None and height is not None,
            f"intrinsics have an image size of {self.width!r}x{self.height!r}; the stream's width and height are whole numbers of pixels",
        )
        _require(
            width > 0 and height > 0,
            f"intrinsics have zero or negative image size {self.width}x{self.height}; "
            "the stream's width and height must be positive",
        )
        try:
            values = [float(x) for x in (self.fx, self.fy, self.cx, self.cy, *self.coeffs)]
        except (TypeError, ValueError):
            values = None
        _require(values is not None, f"intrinsics must be numbers: {self}")
        _require(all(math.isfinite(x) for x in values), f"intrinsics contain NaN/inf: {self}")
        _require(
            float(self.fx) > 0 and float(self.fy) > 0,
            f"intrinsics have non-positive focal length fx={self.fx}, fy={self.fy}",
        )
        _require(len(self.coeffs) == 5, f"expected 5 distortion coefficients, got {len(self.coeffs)}")
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "height", height)
        for name in ("fx", "fy", "cx", "cy"):  # e.g. quoted numbers in a JSON file
            object.__setattr__(self, name, float(getattr(self, name)))
        try:
            object.__setattr__(self, "distortion", DistortionModel(self.distortion))
        except ValueError:
            raise ValueError(f"unknown distortion model {self.distortion!r}; one of {', '.join(m.value for m in DistortionModel)}") from None
        object.__setattr__(self, "coeffs", tuple(float(c) for c in self.coeffs))

    @property
    def is_pinhole(self) -> bool:
        """True when pixels can be (un)projected without a distortion model."""
        if self.distortion == DistortionModel.NONE:
            return True
        # Zero coefficients switch a Brown-Conrady lens off, but Kannala-Brandt with zero
        # coefficients is still the equidistant fisheye (r_d = atan r).
        return self.distortion != DistortionModel.KANNALA_BRANDT4 and not any(self.coeffs)

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) float64 camera matrix K."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def to_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "distortion": self.distortion.value,
            "coeffs": list(self.coeffs),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CameraIntrinsics":
        """From ``to_dict``'s form (an intrinsics.json's "intrinsics"); "distortion" and
        "coeffs" may be left out for a pinhole camera. Other fields are refused: a misspelt
        one would otherwise quietly give another lens."""
        fields = ("width", "height", "fx", "fy", "cx", "cy", "distortion", "coeffs")
        missing = set(fields[:6]) - set(d)
        _require(not missing, f"intrinsics are missing fields: {sorted(missing)}")
        unknown = [key for key in d if key not in fields]
        _require(not unknown, f"intrinsics have unknown fields {unknown}; the fields are {', '.join(fields)}")
        coeffs = d.get("coeffs", (0.0,) * 5)
        # Any sequence of numbers (a list from JSON, a numpy array, ROS's array.array), but
        # not text, which would be read character by character: "12345" as 1, 2, 3, 4, 5.
        _require(
            not isinstance(coeffs, (str, bytes)) and hasattr(coeffs, "__len__") and all(_is_real(c) for c in coeffs),
            f'"coeffs" must be a list of 5 numbers, got {coeffs!r}',
        )
        _require(
            "distortion" in d or not any(coeffs),
            f'intrinsics give distortion coefficients {list(coeffs)} but no "distortion" model, so they would go unused; '
            f"name the model ({', '.join(m.value for m in DistortionModel)}) or leave the coefficients out",
        )
        return cls(
            width=d["width"],
            height=d["height"],
            fx=d["fx"],
            fy=d["fy"],
            cx=d["cx"],
            cy=d["cy"],
            distortion=d.get("distortion", "none"),
            coeffs=tuple(coeffs),
        )


#: Metres per unit of the frames ``DepthFrame.from_metres`` makes.
METRES_IMAGE_DEPTH_SCALE = 1e-4
#: Depths beyond this, most of an image's, are taken for millimetres given as metres.
IMPLAUSIBLE_DEPTH_M = 100.0
_far_depths_warned = False


def _warn_once_far_depths(share: float) -> None:
    global _far_depths_warned
    if not _far_depths_warned:
        _far_depths_warned = True
        logging.getLogger(__name__).warning(
            "DepthFrame.from_metres: %.0f%% of the depths are beyond %g m, which no depth camera measures; it takes "
            "metres (is the image in millimetres? divide by 1000)", 100 * share, IMPLAUSIBLE_DEPTH_M,
        )


def depth_to_metres(depth: np.ndarray, depth_scale: float) -> np.ndarray:
    """(H, W) uint16 device units -> (H, W) float32 metres (0 stays 0, no measurement)."""
    return depth.astype(np.float32) * np.float32(depth_scale)


@dataclass(frozen=True)
class DepthFrame:
    """One depth image as the camera delivered it.

    depth: (H, W) uint16 raw device units; metres = depth * depth_scale; 0 = no measurement.
        The array is kept as given, not copied, and results refer to it (``FrameResult.frame``):
        a driver that refills one buffer for every frame passes a copy. Masked pixels of a
        masked array become 0; big-endian uint16 is converted.
    depth_scale: metres per unit (D4xx 0.001, SR305 0.000125).
    intrinsics: of this stream; (height, width) must match depth.shape.
    timestamp_ms: device or recording timestamp in milliseconds.
    serial: camera serial number ("synthetic" for rendered frames).
    frame_number: the device's frame counter (monotonic per stream).
    sequence: which recording session of the source the frame belongs to, where a source
        holds several (a folder's sub-folders); a frame of another one starts a new track.
    source_file: the file the frame was read from, relative to the source ("s1/0042.png"
        for a folder's PNG), so that results can be matched to it; "" for a camera's,
        a recording's or a rendered frame.
    """

    depth: np.ndarray
    depth_scale: float
    intrinsics: CameraIntrinsics
    timestamp_ms: float = 0.0
    serial: str = ""
    frame_number: int = 0
    sequence: str = ""
    source_file: str = ""

    def __post_init__(self) -> None:
        depth = self.depth
        _require(isinstance(depth, np.ndarray), "DepthFrame.depth must be a numpy array")
        if isinstance(depth, np.ma.MaskedArray):
            # Its masked pixels' values are not measurements; the tracker reads the plain
            # array. As DepthFrame.from_metres does, they become 0, no measurement.
            depth = np.ma.filled(depth, 0)
        if depth.dtype.kind == "u" and depth.dtype.itemsize == 2 and not depth.dtype.isnative:
            depth = depth.astype(np.uint16)  # big-endian, as a ROS image may be
        object.__setattr__(self, "depth", depth)
        _require(depth.dtype == np.uint16, f"DepthFrame.depth must be uint16, got {depth.dtype}")
        _require(depth.ndim == 2, f"DepthFrame.depth must be 2-D (H, W), got shape {depth.shape}")
        _require(
            isinstance(self.intrinsics, CameraIntrinsics),
            f"DepthFrame.intrinsics must be a CameraIntrinsics (CameraIntrinsics.from_dict for a dict), got {type(self.intrinsics).__name__}",
        )
        _require(
            depth.shape == (self.intrinsics.height, self.intrinsics.width),
            f"depth image is {depth.shape[1]}x{depth.shape[0]} but the intrinsics are "
            f"{self.intrinsics.width}x{self.intrinsics.height}",
        )
        _require(
            _is_real(self.depth_scale) and math.isfinite(self.depth_scale) and self.depth_scale > 0,
            f"depth_scale must be a positive number of metres per unit, got {self.depth_scale!r}",
        )
        # Every output line carries it; JSON has no NaN.
        _require(
            _is_real(self.timestamp_ms) and math.isfinite(self.timestamp_ms),
            f"DepthFrame.timestamp_ms must be finite (a number of milliseconds), got {self.timestamp_ms!r}",
        )
        # Every output line carries these too, as the JSON contract's types: a number given
        # for the serial would come out as one, a fraction of a frame number rounded away.
        _require(
            isinstance(self.frame_number, numbers.Integral) and not isinstance(self.frame_number, (bool, np.bool_)),
            f"DepthFrame.frame_number must be a whole number (the device's frame counter), got {self.frame_number!r}",
        )
        for name in ("serial", "sequence", "source_file"):
            value = getattr(self, name)
            _require(isinstance(value, str), f"DepthFrame.{name} must be a str, got {type(value).__name__} {value!r}")
        # Python's own numbers: the tracker subtracts counters and timestamps of two frames,
        # which in a numpy unsigned type wraps round where a counter restarts or a clock
        # steps back.
        object.__setattr__(self, "frame_number", int(self.frame_number))
        object.__setattr__(self, "timestamp_ms", float(self.timestamp_ms))

    def depth_m(self) -> np.ndarray:
        """(H, W) float32 metres, 0 where there is no measurement."""
        return depth_to_metres(self.depth, self.depth_scale)

    @classmethod
    def from_metres(
        cls, depth_m: np.ndarray, intrinsics: CameraIntrinsics, timestamp_ms: float = 0.0, serial: str = "", frame_number: int = 0
    ) -> "DepthFrame":
        """A frame from a depth image in metres ((H, W) float, as ROS's 32FC1 images and most
        depth libraries give it): stored in units of ``METRES_IMAGE_DEPTH_SCALE`` (0.1 mm),
        far finer than any depth camera measures. Zero, negative, NaN and infinite depths, and
        depths beyond the 6.55 m the units reach, become 0, no measurement."""
        depth_m = np.asarray(np.ma.filled(depth_m, 0.0))  # a masked pixel is not measured
        _require(depth_m.ndim == 2, f"a depth image must be 2-D (H, W), got shape {depth_m.shape}")
        _require(
            np.issubdtype(depth_m.dtype, np.floating),
            f"depth in metres must be floating point, got {depth_m.dtype}; for integer device units use "
            "DepthFrame(depth, depth_scale, intrinsics)",
        )
        from kernels.depth_units import metres_to_units  # numba: loaded on first use only

        if depth_m.dtype not in (np.float32, np.float64):  # float16, longdouble: what the kernel takes
            depth_m = depth_m.astype(np.float64)
        # One memory layout for the kernel, which the tracker's warm-up compiles (a strided
        # view would take a compilation of its own on a caller's first frame).
        depth_m = np.ascontiguousarray(depth_m)
        depth, implausible, positive = metres_to_units(depth_m, METRES_IMAGE_DEPTH_SCALE, IMPLAUSIBLE_DEPTH_M)
        if positive and implausible > positive // 2:
            # No depth camera measures that far: most likely millimetres, which would give an
            # empty result on every frame with no word why. (A wall beyond the 6.55 m the
            # units hold is no sign of it: a D4xx sees that far.)
            _warn_once_far_depths(implausible / positive)
        # The labels as given: the frame checks them, rather than str() and int() making
        # "None" of a missing serial or rounding a fraction of a frame number away.
        return cls(depth, METRES_IMAGE_DEPTH_SCALE, intrinsics, timestamp_ms, serial, frame_number)


@dataclass(frozen=True)
class HandCrop:
    """The network input: a fixed-size 3-D cube around the hand, resampled to S x S pixels.

    depth: (S, S) float32, (z - centre depth) / (cube_size_m / 2), in the crop frame's axes:
        z - center_cam_m[2] in the camera frame; in the ray frame, depth along the virtual
        camera's axis minus |center_cam_m|. Values outside [-1, 1] (in front of the cube as
        well as behind it), background and missing pixels are 1 (the far face of the cube);
        where the cube reaches past the image, 1 or -1 (``tracker.crop.OutOfImage``).
    center_cam_m: (3,) float32 cube centre in the camera frame, metres.
    cube_size_m: edge length of the cube in metres.
    image_from_crop: (3, 3) float64 map from crop pixel (u, v, 1) to image pixel (homogeneous:
        affine in the camera crop frame, a homography in the ray frame; see tracker.crop).
    handedness: the crop of a left hand is mirrored in x so the network always sees a right hand.
    cam_from_crop: (3, 3) float64 rotation from the crop's axes to the camera's (the identity
        in the camera crop frame).
    """

    depth: np.ndarray
    center_cam_m: np.ndarray
    cube_size_m: float
    image_from_crop: np.ndarray
    handedness: Handedness = Handedness.RIGHT
    cam_from_crop: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def measured(self) -> np.ndarray:
        """(S, S) bool: pixels with a depth inside the cube (not background, missing or
        out of the image)."""
        return measured_crop_pixels(self.depth)


def measured_crop_pixels(depth: np.ndarray) -> np.ndarray:
    """Bool mask of a normalised crop's (any shape) pixels with a depth inside the cube:
    background and missing depth are 1, pixels past the image's edge 1 or -1
    (``tracker.crop.OUT_OF_IMAGE_DEPTH``)."""
    return (depth < 1.0) & (depth > -1.0)


@dataclass(frozen=True)
class HandEstimate:
    """The tracker's answer for one hand in one frame.

    vertices_cam_m: (V, 3) float32 mesh vertices in the camera frame, metres.
    joints_cam_m: (21, 3) float32 keypoints in Joint order, camera frame, metres.
    joints_uv_px: (21, 2) float32 keypoints projected into the depth image, pixels.
    handedness: which hand.
    confidence: in [0, 1].
    timings_ms: stage name -> milliseconds spent on this estimate.
    """

    vertices_cam_m: np.ndarray
    joints_cam_m: np.ndarray
    joints_uv_px: np.ndarray
    handedness: Handedness = Handedness.RIGHT
    confidence: float = 1.0
    timings_ms: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every output (JSON lines, meshes, the overlay) reads these shapes; a wrong one
        # would surface far from where it was made.
        vertices, joints, uv = (np.shape(a) for a in (self.vertices_cam_m, self.joints_cam_m, self.joints_uv_px))
        _require(len(vertices) == 2 and vertices[1] == 3, f"HandEstimate.vertices_cam_m must be (V, 3), got {vertices}")
        _require(joints == (NUM_JOINTS, 3), f"HandEstimate.joints_cam_m must be ({NUM_JOINTS}, 3), got {joints}")
        _require(uv == (NUM_JOINTS, 2), f"HandEstimate.joints_uv_px must be ({NUM_JOINTS}, 2), got {uv}")
        _require(0.0 <= self.confidence <= 1.0, f"HandEstimate.confidence must be in [0, 1], got {self.confidence}")
