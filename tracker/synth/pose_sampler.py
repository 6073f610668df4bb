"""Random, anatomically plausible hand poses for synthetic training and test data.

The synthetic data generator draws one ``HandPose`` per sample from here. Poses come
from a few latent variables, as real hands move: a grasp level shared by the fingers
(correlated curls, with a chance of an independent finger such as pointing), a spread, a
thumb opposition and a thumb curl. Each joint angle follows from those plus noise and is
clipped to per-joint limits (flexion, abduction, twist). The global orientation is
uniform over the whole sphere, the hand 0.2-0.9 m from the camera and inside its view.
Each finger gets a length scale and the hand a thickness scale on top of an overall hand
size, and every bone a small jitter of both. Poses whose fingers pass through each other
are drawn again by the renderer (``tracker.synth.collision``), which has the mesh.

Angles use the rig's axes (``tracker.skeleton``): flexion is a rotation about the joint's
-x axis, abduction about +y (towards the thumb for fingers, palmar for the thumb), twist
about z (along the bone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from tracker.skeleton import NUM_SKIN_JOINTS, SKIN_JOINT_INDEX, SKIN_JOINT_NAMES
from tracker.types import CameraIntrinsics, Handedness

FINGERS = ("index", "middle", "ring", "pinky")


@dataclass(frozen=True)
class JointLimits:
    """Range of motion of one joint in degrees: (min, max) per axis."""

    flexion: tuple[float, float]
    abduction: tuple[float, float] = (0.0, 0.0)
    twist: tuple[float, float] = (0.0, 0.0)


#: Ranges of motion (degrees), from the usual clinical figures, slightly widened for
#: hypermobile hands. Negative flexion is hyperextension.
JOINT_LIMITS: dict[str, JointLimits] = {
    "thumb-metacarpal": JointLimits(flexion=(-20, 50), abduction=(-15, 50), twist=(-15, 35)),
    "thumb-phalanx-proximal": JointLimits(flexion=(-15, 65), abduction=(-10, 10), twist=(-5, 5)),
    "thumb-phalanx-distal": JointLimits(flexion=(-25, 85), twist=(-3, 3)),
    **{f"{f}-finger-metacarpal": JointLimits(flexion=(-3, 12), abduction=(-3, 3), twist=(-3, 3)) for f in FINGERS},
    **{
        f"{f}-finger-phalanx-proximal": JointLimits(flexion=(-30, 95), abduction=(-25, 25), twist=(-8, 8))
        for f in FINGERS
    },
    **{f"{f}-finger-phalanx-intermediate": JointLimits(flexion=(-5, 110), twist=(-4, 4)) for f in FINGERS},
    **{f"{f}-finger-phalanx-distal": JointLimits(flexion=(-15, 85), twist=(-4, 4)) for f in FINGERS},
}


@dataclass(frozen=True)
class PoseSamplerConfig:
    """What range of hands to draw."""

    distance_range_m: tuple[float, float] = (0.2, 0.9)
    #: How much one finger's length (all its bones together) varies from hand to hand,
    #: relative to the others: +-6 %, about the spread of finger-length ratios in adults.
    finger_length_jitter: float = 0.06
    #: How much the fingers' thickness varies from hand to hand (slender or stout), +-10 %.
    thickness_jitter: float = 0.10
    #: Independent per-bone variation of length and of thickness on top of those (+-5 %).
    bone_scale_jitter: float = 0.05
    #: Overall hand size relative to the template (adult hands vary about +-10 %).
    hand_size_range: tuple[float, float] = (0.9, 1.1)
    #: Fraction of left hands (the right model mirrored). The network sees a left hand's crop
    #: mirrored, with the camera's occlusion shadows on the other side of every edge, so
    #: half of the hands are left ones, as at a camera.
    left_hand_probability: float = 0.5
    #: Keep the hand centre at least this far (metres, in the hand's plane) inside the image.
    image_margin_m: float = 0.05
    #: Probability that a finger ignores the shared grasp (pointing, counting gestures).
    independent_finger_probability: float = 0.3
    #: Wrist flexion and radial/ulnar deviation of the forearm relative to the hand (degrees).
    wrist_flexion_deg: tuple[float, float] = (-70.0, 70.0)
    wrist_deviation_deg: tuple[float, float] = (-20.0, 30.0)


@dataclass(frozen=True)
class HandPose:
    """A drawn hand.

    local_rotations: (25, 3, 3) float64 per skin joint, relative to the bind pose.
    bone_scales: (25, 2) float64 [length, thickness] per skin joint.
    cam_from_hand: (4, 4) float64 hand frame -> camera frame, metres.
    handedness: left hands are the right model mirrored.
    hand_from_forearm_rotation: (3, 3) float64 orientation of the forearm (its +z points
        from the wrist towards the elbow) in the hand frame.
    """

    local_rotations: np.ndarray
    bone_scales: np.ndarray
    cam_from_hand: np.ndarray
    handedness: Handedness = Handedness.RIGHT
    hand_from_forearm_rotation: np.ndarray = field(default_factory=lambda: np.eye(3))


def joint_rotation(flexion_deg: float, abduction_deg: float, twist_deg: float) -> np.ndarray:
    """(3, 3) local rotation: abduction, then flexion, then twist about the bone.

    R = R_y(abduction) @ R_x(-flexion) @ R_z(twist), written out in closed form: the pose
    sampler calls this ~20 times per sample, and scipy's ``Rotation`` objects cost ~0.25 ms
    a call, a third of the time it takes to render a training example.
    """
    a, f, t = np.radians(abduction_deg), -np.radians(flexion_deg), np.radians(twist_deg)
    ca, sa, cf, sf, ct, st = np.cos(a), np.sin(a), np.cos(f), np.sin(f), np.cos(t), np.sin(t)
    abd = np.array([[ca, 0.0, sa], [0.0, 1.0, 0.0], [-sa, 0.0, ca]])
    flex = np.array([[1.0, 0.0, 0.0], [0.0, cf, -sf], [0.0, sf, cf]])
    twist = np.array([[ct, -st, 0.0], [st, ct, 0.0], [0.0, 0.0, 1.0]])
    return abd @ flex @ twist


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _clip(x: float, lo: float, hi: float) -> float:
    # np.clip on a scalar costs ~10 us; the sampler clips ~80 scalars per pose.
    return float(min(max(x, lo), hi))


def sample_joint_angles(rng: np.random.Generator, config: PoseSamplerConfig) -> dict[str, tuple[float, float, float]]:
    """Skin joint name -> (flexion, abduction, twist) in degrees, within JOINT_LIMITS."""
    angles, grasp = sample_finger_angles(rng, config)
    angles.update(sample_thumb_angles(rng, grasp))
    return angles


def sample_finger_angles(rng: np.random.Generator, config: PoseSamplerConfig) -> tuple[dict[str, tuple[float, float, float]], float]:
    """The four fingers' joint angles (degrees, within JOINT_LIMITS) and the grasp level
    (0 open .. 1 fist) they were drawn around, which the thumb's curl follows."""
    # Grasp level: a mixture so open hands and fists are both common, not only mid-curls.
    grasp = float(rng.choice([rng.uniform(0.0, 0.15), rng.uniform(0.0, 1.0), rng.uniform(0.75, 1.0)], p=[0.3, 0.45, 0.25]))
    spread = float(rng.uniform(0.0, 1.0) * (1.0 - 0.7 * grasp))
    angles: dict[str, tuple[float, float, float]] = {}
    spread_direction = {"index": 1.0, "middle": 0.1, "ring": -0.6, "pinky": -1.2}
    for finger in FINGERS:
        if rng.uniform() < config.independent_finger_probability:
            curl = float(rng.uniform(0.0, 1.0))
        else:
            curl = _clip(grasp + rng.normal(0.0, 0.12), 0.0, 1.0)
        mcp = _lerp(-10.0, 85.0, curl) + rng.normal(0.0, 8.0)
        pip = _lerp(0.0, 100.0, curl) + rng.normal(0.0, 8.0)
        dip = 0.7 * pip + rng.normal(0.0, 6.0)  # DIP follows PIP through the tendons
        abd = spread_direction[finger] * _lerp(0.0, 18.0, spread) + rng.normal(0.0, 3.0)
        # The ring and little finger metacarpals fold in as the hand closes (palm cupping).
        cup = {"index": 0.0, "middle": 0.2, "ring": 0.6, "pinky": 1.0}[finger] * _lerp(0.0, 10.0, curl)
        angles[f"{finger}-finger-metacarpal"] = (cup + rng.normal(0, 1.5), rng.normal(0, 1.0), rng.normal(0, 1.0))
        angles[f"{finger}-finger-phalanx-proximal"] = (mcp, abd, rng.normal(0.0, 3.0))
        angles[f"{finger}-finger-phalanx-intermediate"] = (pip, 0.0, rng.normal(0.0, 1.5))
        angles[f"{finger}-finger-phalanx-distal"] = (dip, 0.0, rng.normal(0.0, 1.5))
    return _clipped(angles), grasp


def sample_thumb_angles(rng: np.random.Generator, grasp: float) -> dict[str, tuple[float, float, float]]:
    """The thumb's joint angles (degrees, within JOINT_LIMITS): an opposition drawn on its
    own and a curl that follows the fingers' grasp level."""
    opposition = float(rng.uniform(0.0, 1.0))
    thumb_curl = _clip(0.6 * grasp + 0.4 * rng.uniform(), 0.0, 1.0)
    angles = {
        "thumb-metacarpal": (
            _lerp(-10.0, 40.0, opposition) + rng.normal(0.0, 6.0),
            _lerp(-5.0, 40.0, opposition) + rng.normal(0.0, 6.0),
            _lerp(0.0, 25.0, opposition) + rng.normal(0.0, 4.0),  # pronation that opposes the pad
        ),
        "thumb-phalanx-proximal": (_lerp(-5.0, 55.0, thumb_curl) + rng.normal(0.0, 6.0), rng.normal(0, 3.0), 0.0),
        "thumb-phalanx-distal": (_lerp(-15.0, 75.0, thumb_curl) + rng.normal(0.0, 8.0), 0.0, rng.normal(0, 1.0)),
    }
    return _clipped(angles)


def _clipped(angles: dict[str, tuple[float, float, float]]) -> dict[str, tuple[float, float, float]]:
    clipped = {}
    for name, (flex, abd, twist) in angles.items():
        lim = JOINT_LIMITS[name]
        clipped[name] = (
            _clip(flex, *lim.flexion),
            _clip(abd, *lim.abduction),
            _clip(twist, *lim.twist),
        )
    return clipped


def local_rotations_from_angles(angles: dict[str, tuple[float, float, float]]) -> np.ndarray:
    """(25, 3, 3) float64 local rotations; joints not named stay at the bind pose."""
    rotations = np.tile(np.eye(3), (NUM_SKIN_JOINTS, 1, 1))
    for name, (flex, abd, twist) in angles.items():
        rotations[SKIN_JOINT_INDEX[name]] = joint_rotation(flex, abd, twist)
    return rotations


def sample_bone_scales(rng: np.random.Generator, config: PoseSamplerConfig) -> np.ndarray:
    """(25, 2) float64 [length, thickness]: overall hand size, times a length scale per
    finger and a thickness scale per hand, times a small per-bone jitter.

    Bones of one finger grow together in real hands; independent per-bone scales as wide as
    the spread between hands make hands no one has (a long middle phalanx on a short finger).
    """
    size = rng.uniform(*config.hand_size_range)
    # A factor with no jitter draws nothing: configs without them (the side classifier's
    # scenes) keep the random stream, and so the samples, of the code before they existed.
    finger_length = np.ones(len(_DIGITS))
    if config.finger_length_jitter > 0:
        finger_length = rng.uniform(1.0 - config.finger_length_jitter, 1.0 + config.finger_length_jitter, size=len(_DIGITS))
    thickness = 1.0
    if config.thickness_jitter > 0:
        thickness = rng.uniform(1.0 - config.thickness_jitter, 1.0 + config.thickness_jitter)
    jitter = rng.uniform(1.0 - config.bone_scale_jitter, 1.0 + config.bone_scale_jitter, size=(NUM_SKIN_JOINTS, 2))
    scales = size * jitter
    scales[:, 0] *= np.append(1.0, finger_length)[_SKIN_JOINT_DIGIT]
    scales[:, 1] *= thickness
    return scales


_DIGITS = ("thumb", *FINGERS)
#: (25,) int64 digit of each skin joint: 0 for the wrist (and the palm's own scale), 1 + the
#: index in _DIGITS otherwise. The fingers' metacarpals (the palm) keep the hand's length.
_SKIN_JOINT_DIGIT = np.array(
    [
        0 if name == "wrist" or (name.endswith("metacarpal") and not name.startswith("thumb"))
        else 1 + _DIGITS.index(name.split("-")[0])
        for name in SKIN_JOINT_NAMES
    ],
    dtype=np.int64,
)


#: The template's palm centre in the hand frame (metres): the point placed in view.
PALM_CENTRE_HAND_M = np.array([0.0, -0.01, -0.06])


def sample_cam_from_hand(rng: np.random.Generator, intrinsics: CameraIntrinsics, config: PoseSamplerConfig) -> np.ndarray:
    """(4, 4) float64: uniform random orientation, palm centre in view at 0.2-0.9 m."""
    rotation = Rotation.random(random_state=rng).as_matrix()
    z = rng.uniform(*config.distance_range_m)
    margin_u = min(intrinsics.fx * config.image_margin_m / z, 0.45 * intrinsics.width)
    margin_v = min(intrinsics.fy * config.image_margin_m / z, 0.45 * intrinsics.height)
    u = rng.uniform(margin_u, intrinsics.width - 1 - margin_u)
    v = rng.uniform(margin_v, intrinsics.height - 1 - margin_v)
    palm_cam = np.array([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z])
    cam_from_hand = np.eye(4)
    cam_from_hand[:3, :3] = rotation
    cam_from_hand[:3, 3] = palm_cam - rotation @ PALM_CENTRE_HAND_M
    return cam_from_hand


#: Whether a hand with these (25, 3, 3) local rotations and (25, 2) bone scales passes the
#: thumb through a finger, and whether it passes a finger through another:
#: (thumb_through, finger_through). The renderer has the mesh to tell
#: (``tracker.synth.collision``).
PenetrationTest = Callable[[np.ndarray, np.ndarray], tuple[bool, bool]]

#: Draws of the whole hand, and of the thumb for one hand, before a pose that still
#: interpenetrates is kept. A hand takes 1.1 whole draws and 0.6 thumb redraws on average
#: (the thumb's mostly in fists), so the limit is a guard, not a filter.
MAX_HAND_DRAWS = 20
MAX_THUMB_DRAWS = 8


def sample_articulation(
    rng: np.random.Generator,
    config: PoseSamplerConfig,
    penetration: PenetrationTest | None = None,
    bone_scales: np.ndarray | None = None,
) -> tuple[dict[str, tuple[float, float, float]], np.ndarray]:
    """Joint angles (as ``sample_joint_angles``) and (25, 2) bone scales of one hand; the
    scales are drawn unless given.

    With a ``penetration`` test, a thumb that passes through a finger is drawn again for
    the same fingers (a fist keeps its fingers, and its thumb ends up over or beside
    them), and a hand whose fingers pass through each other is drawn again whole.
    """
    for _ in range(MAX_HAND_DRAWS):
        # Drawn in the order of the code before the test existed (fingers, thumb, scales), so
        # that without a test the stream of hands is the same.
        fingers, grasp = sample_finger_angles(rng, config)
        thumb = sample_thumb_angles(rng, grasp)
        scales = sample_bone_scales(rng, config) if bone_scales is None else np.asarray(bone_scales, np.float64)
        for attempt in range(MAX_THUMB_DRAWS):
            if attempt:
                thumb = sample_thumb_angles(rng, grasp)
            angles = {**fingers, **thumb}
            if penetration is None:
                return angles, scales
            thumb_through, finger_through = penetration(local_rotations_from_angles(angles), scales)
            if not (thumb_through or finger_through):
                return angles, scales
            if finger_through:
                break
    return angles, scales  # still interpenetrating after every draw: rare enough to keep


def sample_hand_pose(
    rng: np.random.Generator,
    intrinsics: CameraIntrinsics,
    config: PoseSamplerConfig = PoseSamplerConfig(),
    penetration: PenetrationTest | None = None,
) -> HandPose:
    """One random hand in view of a camera with these intrinsics (see sample_articulation
    for ``penetration``)."""
    angles, scales = sample_articulation(rng, config, penetration)
    cam_from_hand = sample_cam_from_hand(rng, intrinsics, config)
    handedness = Handedness.LEFT if rng.uniform() < config.left_hand_probability else Handedness.RIGHT
    # The forearm leaves the wrist along the hand frame's +z, bent by wrist flexion
    # (about x) and deviation (about y).
    forearm = Rotation.from_euler(
        "xy", [rng.uniform(*config.wrist_flexion_deg), rng.uniform(*config.wrist_deviation_deg)], degrees=True
    ).as_matrix()
    return HandPose(
        local_rotations=local_rotations_from_angles(angles),
        bone_scales=scales,
        cam_from_hand=cam_from_hand,
        handedness=handedness,
        hand_from_forearm_rotation=forearm,
    )
