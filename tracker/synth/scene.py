"""Renders one synthetic depth frame with ground truth: hand, forearm, distractors, noise.

The synthetic data generator (``tracker.synth.dataset``), the synthetic live source and the
tests call ``render_sample(model, config, seed)``. It draws a camera and a hand pose from the
seed, poses the hand model, attaches an arm at the wrist (reaching away from the camera or
across, long enough to run on out of view), optionally places a torso and a desk or wall
plane (behind the hand and the arm), rasterises everything into one z-buffer with per-pixel ground truth (mesh
coordinate, part label), corrupts the depth with the stereo noise model and quantises it
to the device's depth unit, as a camera would deliver it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from kernels.raster import (
    composite_ellipsoid,
    composite_plane,
    dominant_vertex_labels,
    interpolate_attributes,
    rasterize_mesh,
    visible_vertices,
)
from kernels.sensor_noise import StereoNoiseModel, apply_stereo_noise
from tracker.hand_model import HandModel
from tracker.skeleton import NUM_PARTS
from tracker.synth.collision import penetration_test
from tracker.synth.pose_sampler import PALM_CENTRE_HAND_M, HandPose, PoseSamplerConfig, sample_hand_pose
from tracker.types import CameraIntrinsics, Handedness


class SceneLabel(enum.IntEnum):
    """Per-pixel labels beyond the 16 hand parts (0..15)."""

    BACKGROUND = -1
    FOREARM = NUM_PARTS
    BODY = NUM_PARTS + 1
    TABLE = NUM_PARTS + 2


@dataclass(frozen=True)
class CameraConfig:
    """The random camera each sample is seen by (defaults: a RealSense at 640x480)."""

    width: int = 640
    height: int = 480
    focal_range_px: tuple[float, float] = (380.0, 620.0)
    principal_point_jitter_px: float = 8.0
    depth_scale_m: float = 0.001

    def sample(self, rng: np.random.Generator) -> CameraIntrinsics:
        f = rng.uniform(*self.focal_range_px)
        jitter = rng.uniform(-self.principal_point_jitter_px, self.principal_point_jitter_px, size=2)
        return CameraIntrinsics(
            width=self.width,
            height=self.height,
            fx=f,
            fy=f,
            cx=(self.width - 1) / 2 + jitter[0],
            cy=(self.height - 1) / 2 + jitter[1],
        )


@dataclass(frozen=True)
class SceneConfig:
    """Everything that decides what a synthetic sample looks like."""

    camera: CameraConfig = field(default_factory=CameraConfig)
    pose: PoseSamplerConfig = field(default_factory=PoseSamplerConfig)
    noise: StereoNoiseModel = field(default_factory=StereoNoiseModel)
    #: Probability that the sensor noise is applied at all (clean samples help early training).
    noise_probability: float = 1.0
    forearm: bool = True
    #: False draws everything but the hand (the pose drawn as usual, the arm at its wrist):
    #: an arm whose hand is out of view or hidden, a negative example for
    #: ``tracker.presence``. The arm's open wrist end is then capped.
    hand: bool = True
    #: Arm length and elliptic cross-section (half-widths, lateral x dorsal) at the wrist and
    #: at the far end, metres, for a hand of template size. Forearm and upper arm are one
    #: tube, long enough to run on out of view as a real arm does, instead of ending in mid-air.
    forearm_length_m: float = 0.55
    forearm_radii_wrist_m: tuple[float, float] = (0.027, 0.019)
    forearm_radii_far_m: tuple[float, float] = (0.035, 0.027)
    #: How much nearer the camera than the wrist the arm may come a forearm's length
    #: (``FOREARM_REFERENCE_LENGTH_M``) from it, metres; poses with the elbow nearer are drawn
    #: again. A user faces the camera: the arm reaches away from it or across, rarely at it
    #: past the hand. None: any direction.
    max_arm_rise_m: float | None = 0.05
    #: A desk or wall plane stays behind the hand and the arm (touching them at most),
    #: instead of cutting through them.
    table_clear_of_arm: bool = True
    body_probability: float = 0.3
    table_probability: float = 0.3
    #: How far behind the wrist the desk or wall is placed along its normal, metres (then
    #: moved back until it clears the hand and the arm).
    table_distance_m: tuple[float, float] = (0.08, 0.4)
    #: Draw the thumb (or the hand) again when a finger bone holds at least
    #: ``penetration_vertices`` vertices of another finger (the thumb included) deeper than
    #: this inside it, metres (``tracker.synth.collision``): a thumb through the index
    #: finger is no real hand. None: keep every pose.
    max_finger_penetration_m: float | None = 0.003
    penetration_vertices: int = 3
    #: Re-draw the pose when fewer hand pixels than this are visible (hand hidden by the forearm).
    min_hand_pixels: int = 40
    near_m: float = 0.05
    max_depth_m: float = 3.0
    #: If set, render only a square window of the sensor this many metres wide at the hand's
    #: depth, centred on the palm (at native resolution, so noise keeps its pixel scale):
    #: training needs only the hand's surroundings, and a window renders several times faster.
    render_window_m: float | None = None


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered frame and its ground truth (H, W from the camera; V = hand vertices).

    depth: (H, W) uint16 device units (metres = depth * depth_scale), noisy, 0 = no data.
    depth_scale: metres per unit.
    mask: (H, W) bool, pixels where the hand surface is the nearest surface (noise-free).
    mesh_coords: (H, W, 2) float32 mesh-grid coordinates (grid units, 0..16) of the hand
        surface seen at each pixel, NaN elsewhere.
    labels: (H, W) int16 hand part 0..15 or a SceneLabel.
    vertices: (V, 3) float32 posed hand vertices, camera frame, metres.
    joints: (21, 3) float32 keypoints in Joint order, camera frame, metres.
    vertex_visible: (V,) bool, vertex used by a face that covers at least one pixel.
    intrinsics: the camera; seed: reproduces this sample exactly with the same config.
    pose: the hand pose parameters that made it.
    sensor: the whole camera image where the arrays are a window of it (``render_window_m``:
        ``intrinsics`` are then the window's), else None.
    """

    depth: np.ndarray
    depth_scale: float
    mask: np.ndarray
    mesh_coords: np.ndarray
    labels: np.ndarray
    vertices: np.ndarray
    joints: np.ndarray
    vertex_visible: np.ndarray
    intrinsics: CameraIntrinsics
    seed: int
    pose: HandPose
    sensor: CameraIntrinsics | None = None


def forearm_mesh(
    length_m: float, radii_wrist: tuple[float, float], radii_far: tuple[float, float], segments: int = 16, rings: int = 6,
    cap_wrist: bool = False,
):
    """A tapered elliptic tube along +z, capped at the far end (and at the wrist end with
    ``cap_wrist``, for an arm drawn without its hand).

    Returns (vertices (N, 3) float64 in the forearm frame, metres; faces (M, 3) int32). The
    tube starts 1.5 cm inside the hand so no gap opens at the wrist when the wrist bends.
    """
    z = np.linspace(-0.015, length_m, rings)
    t = (z - z[0]) / (z[-1] - z[0])
    angles = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    rx = radii_wrist[0] + (radii_far[0] - radii_wrist[0]) * t
    ry = radii_wrist[1] + (radii_far[1] - radii_wrist[1]) * t
    ring_points = np.stack(
        [rx[:, None] * np.cos(angles)[None], ry[:, None] * np.sin(angles)[None], np.repeat(z[:, None], segments, 1)],
        axis=-1,
    ).reshape(-1, 3)
    vertices = np.vstack([ring_points, [[0.0, 0.0, length_m]]])
    faces = []
    for r in range(rings - 1):
        for s in range(segments):
            a, b = r * segments + s, r * segments + (s + 1) % segments
            faces += [(a, b + segments, b), (a, a + segments, b + segments)]
    cap = len(vertices) - 1
    last = (rings - 1) * segments
    faces += [(last + s, cap, last + (s + 1) % segments) for s in range(segments)]
    if cap_wrist:
        vertices = np.vstack([vertices, [[0.0, 0.0, z[0]]]])
        faces += [(s, (s + 1) % segments, cap + 1) for s in range(segments)]
    return vertices, np.asarray(faces, dtype=np.int32)


def _hand_scale(pose: HandPose) -> float:
    return float(np.median(pose.bone_scales))


def render_sample(model: HandModel, config: SceneConfig, seed: int) -> SyntheticSample:
    """Draw and render the sample identified by ``seed`` (deterministic)."""
    rng = np.random.default_rng(seed)
    sensor = config.camera.sample(rng)
    vertex_labels = model.vertex_part.astype(np.int16)
    penetration = (
        None
        if config.max_finger_penetration_m is None
        else penetration_test(model, config.max_finger_penetration_m, config.penetration_vertices)
    )
    for _ in range(100):
        pose = sample_hand_pose(rng, sensor, config.pose, penetration)
        if config.forearm and config.max_arm_rise_m is not None and arm_rise_m(pose) > config.max_arm_rise_m:
            continue
        intrinsics = sensor if config.render_window_m is None else _window(sensor, pose, config.render_window_m)
        h, w = intrinsics.height, intrinsics.width
        k = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy)
        posed = model.pose(pose.local_rotations, pose.bone_scales, pose.cam_from_hand, pose.handedness)
        fa_vertices, fa_faces = posed_forearm(pose, config) if config.forearm else (np.zeros((0, 3)), np.zeros((0, 3), np.int32))
        depth = np.zeros((h, w), np.float32)
        face_index = np.full((h, w), -1, np.int32)
        bary = np.zeros((h, w, 3), np.float32)
        labels = np.full((h, w), SceneLabel.BACKGROUND, np.int16)
        # Distractors first: the meshes then claim only pixels where they are nearer, so
        # face_index >= 0 means "a mesh is the visible surface".
        if rng.uniform() < config.table_probability:
            occupied = np.vstack([posed.vertices, fa_vertices] if config.hand else [fa_vertices]) if config.table_clear_of_arm else None
            _add_table(rng, pose, k, depth, labels, config, occupied)
        if rng.uniform() < config.body_probability:
            _add_body(rng, pose, k, depth, labels)
        if config.hand:
            rasterize_mesh(posed.vertices, posed.faces, *k, h, w, config.near_m, depth, face_index, bary, 0)
        n_hand_faces = len(posed.faces)
        if config.forearm:
            rasterize_mesh(fa_vertices, fa_faces, *k, h, w, config.near_m, depth, face_index, bary, n_hand_faces)
            labels[face_index >= n_hand_faces] = SceneLabel.FOREARM
        hand_face_index = np.where(face_index < n_hand_faces, face_index, -1)
        mask = hand_face_index >= 0
        # Without a hand, the arm must be in view instead.
        if (mask.sum() if config.hand else (labels == SceneLabel.FOREARM).sum()) >= config.min_hand_pixels:
            break
    else:
        raise RuntimeError("could not draw a pose with the hand in view; check the scene config")

    hand_labels = np.empty((h, w), np.int16)
    dominant_vertex_labels(hand_face_index, bary, posed.faces, vertex_labels, hand_labels)
    labels[mask] = hand_labels[mask]
    mesh_coords = np.empty((h, w, 2), np.float32)
    interpolate_attributes(hand_face_index, bary, posed.faces, model.mesh_coords, mesh_coords)
    vertex_visible = visible_vertices(hand_face_index, posed.faces, model.num_vertices)

    if rng.uniform() < config.noise_probability:
        depth = apply_stereo_noise(depth, intrinsics.fx, config.noise, rng)
    depth_units = to_depth_units(depth, config.camera.depth_scale_m, config.max_depth_m)
    return SyntheticSample(
        depth=depth_units,
        depth_scale=config.camera.depth_scale_m,
        mask=mask,
        mesh_coords=mesh_coords,
        labels=labels,
        vertices=posed.vertices,
        joints=posed.joints,
        vertex_visible=vertex_visible,
        intrinsics=intrinsics,
        seed=int(seed),
        pose=pose,
        sensor=None if intrinsics is sensor else sensor,
    )


def to_depth_units(depth_m: np.ndarray, depth_scale_m: float, max_depth_m: float) -> np.ndarray:
    """(H, W) float metres -> uint16 device units as a camera delivers them (0 beyond range)."""
    units = np.round(np.where((depth_m < 0) | (depth_m > max_depth_m), 0.0, depth_m) / depth_scale_m)
    # Beyond what 16 bits hold in this unit (65.5 m at 1 mm, 0.65 m at 10 um) a camera
    # reports nothing; saturating would make a false flat surface at the limit.
    return np.where(units > np.iinfo(np.uint16).max, 0, units).astype(np.uint16)


def _window(sensor: CameraIntrinsics, pose: HandPose, side_m: float) -> CameraIntrinsics:
    """Intrinsics of the square sub-window of the sensor around the palm centre."""
    palm = pose.cam_from_hand[:3, :3] @ PALM_CENTRE_HAND_M + pose.cam_from_hand[:3, 3]
    u = sensor.fx * palm[0] / palm[2] + sensor.cx
    v = sensor.fy * palm[1] / palm[2] + sensor.cy
    half = 0.5 * sensor.fx * side_m / palm[2]
    x0, x1 = int(np.clip(np.floor(u - half), 0, sensor.width - 1)), int(np.clip(np.ceil(u + half), 1, sensor.width))
    y0, y1 = int(np.clip(np.floor(v - half), 0, sensor.height - 1)), int(np.clip(np.ceil(v + half), 1, sensor.height))
    return CameraIntrinsics(max(x1 - x0, 1), max(y1 - y0, 1), sensor.fx, sensor.fy, sensor.cx - x0, sensor.cy - y0)


#: Where along the arm ``arm_rise_m`` looks by default: a forearm's length from the wrist
#: (for a hand of template size), about where the elbow is.
FOREARM_REFERENCE_LENGTH_M = 0.25


def arm_rise_m(pose: HandPose, along_m: float = FOREARM_REFERENCE_LENGTH_M) -> float:
    """How much nearer the camera than the wrist the arm's axis is ``along_m`` from it
    (scaled with the hand, as the arm is), metres: > 0 when the arm comes towards the camera."""
    direction = pose.cam_from_hand[:3, :3] @ _hand_from_forearm(pose)[:, 2]
    return float(-direction[2] * along_m * _hand_scale(pose))


def _hand_from_forearm(pose: HandPose) -> np.ndarray:
    hand_from_forearm = pose.hand_from_forearm_rotation
    if pose.handedness == Handedness.LEFT:
        mirror = np.diag([-1.0, 1.0, 1.0])
        hand_from_forearm = mirror @ hand_from_forearm @ mirror
    return hand_from_forearm


def posed_forearm(pose: HandPose, config: SceneConfig | None = None, cap_wrist: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The forearm tube at the wrist of ``pose``: (vertices (N, 3) camera frame metres, faces
    (M, 3)); its wrist end capped where the hand is not drawn, or as ``cap_wrist`` says."""
    config = config or SceneConfig()
    scale = _hand_scale(pose)
    vertices, faces = forearm_mesh(
        config.forearm_length_m * scale,
        tuple(r * scale for r in config.forearm_radii_wrist_m),
        tuple(r * scale for r in config.forearm_radii_far_m),
        cap_wrist=not config.hand if cap_wrist is None else cap_wrist,
    )
    cam_from_forearm = pose.cam_from_hand[:3, :3] @ _hand_from_forearm(pose)
    return vertices @ cam_from_forearm.T + pose.cam_from_hand[:3, 3], faces


def _add_table(rng, pose: HandPose, k, depth, labels, config: SceneConfig, occupied: np.ndarray | None = None) -> None:
    # A plane under or behind the hand, tilted at random: a desk or a wall.
    wrist = pose.cam_from_hand[:3, 3]
    normal = Rotation.from_euler("xz", rng.uniform(-35, 35, size=2), degrees=True).apply([0.0, -1.0, 0.0])
    if rng.uniform() < 0.5:  # a wall facing the camera instead of a desk below
        normal = Rotation.from_euler("xy", rng.uniform(-30, 30, size=2), degrees=True).apply([0.0, 0.0, -1.0])
    point = wrist - normal * rng.uniform(*config.table_distance_m)
    if occupied is not None:
        point = plane_clear_of(point, normal, occupied)
        if -point @ normal <= 0:
            return  # the camera would be behind the desk, which would hide everything
    composite_plane(point, normal, *k, depth, labels, np.int16(SceneLabel.TABLE), config.max_depth_m)


def plane_clear_of(point: np.ndarray, normal: np.ndarray, occupied: np.ndarray) -> np.ndarray:
    """A point of the plane (through ``point``, facing ``normal``) moved back along the normal
    until every one of the ``occupied`` (N, 3) points is on its front side or on it: a hand
    or an arm that reached through the plane now rests on it."""
    if len(occupied) == 0:
        return point
    reach = float(np.min((occupied - point) @ normal))
    return point + normal * min(reach, 0.0)


def _add_body(rng, pose: HandPose, k, depth, labels) -> None:
    # A torso-sized ellipsoid behind the hand, offset sideways as when the arm reaches out.
    wrist = pose.cam_from_hand[:3, 3]
    radii = np.array([rng.uniform(0.15, 0.22), rng.uniform(0.25, 0.35), rng.uniform(0.10, 0.14)])
    centre = wrist + np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.4), rng.uniform(0.25, 0.55) + radii[2]])
    rotation = Rotation.from_euler("z", rng.uniform(-20, 20), degrees=True).as_matrix()
    composite_ellipsoid(centre, rotation, radii, *k, depth, labels, np.int16(SceneLabel.BODY))
