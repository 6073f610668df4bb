"""Finger interpenetration test for drawn hand poses.

The pose sampler draws the fingers' curls, the spread and the thumb's opposition from
separate latent variables, and about three poses in ten then push the thumb through the
index or middle finger, or one finger through its neighbour: shapes no real hand takes,
which the network would otherwise be taught to predict (and graded on). The scene renderer
asks this module whether a posed hand is such a shape and draws the pose again if so.

Each finger bone (the thumb's proximal and distal phalanges, and the three phalanges of
every other finger) is a capsule around the segment from its joint to the next, with the
radius that 30 % of the bone's own template vertices lie within: a capsule inside the skin,
so that fingers that merely touch (a pinch, a fist's thumb over the middle phalanges) do
not count. A pose interpenetrates when some capsule holds, deeper than a tolerance, at
least a few vertices of another finger.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from kernels.collision import capsule_penetration_counts
from tracker.skeleton import SKIN_JOINT_PART, HandPart

#: Radius of a bone's capsule: this percentile of its template vertices' distances to the bone.
RADIUS_PERCENTILE = 30.0


def _digit(part: HandPart) -> str:
    return part.name.split("_")[0]


@dataclass(frozen=True)
class FingerCapsules:
    """One capsule per finger bone of a hand model.

    joint_start, joint_end: (C,) int64 skin joints whose posed origins end the segment.
    radius_m: (C,) float64 radius for a hand of template size, metres.
    thickness_joint: (C,) int64 skin joint whose thickness scale widens the capsule.
    thumb_offsets: (C + 1,) int64 and thumb_members: int64 vertex indices; capsule c is
        tested against thumb_members[thumb_offsets[c]:thumb_offsets[c + 1]]: a thumb bone's
        capsule against the other fingers' vertices, a finger bone's against the thumb's
        (its metacarpal, the ball of the thumb, included). The metacarpal has no capsule of
        its own: a fingertip is caught sinking into the ball of the thumb only where the
        ball's surface points land in the fingertip's capsule, so a tip curled into a fist
        can sink into it unseen (``docs/network.md``, synthetic data).
    finger_offsets, finger_members: the same for a finger bone against the other three
        fingers' vertices (empty for the thumb's bones). Palm vertices are never tested:
        fingers fold onto the palm.
    """

    joint_start: np.ndarray
    joint_end: np.ndarray
    radius_m: np.ndarray
    thickness_joint: np.ndarray
    thumb_offsets: np.ndarray
    thumb_members: np.ndarray
    finger_offsets: np.ndarray
    finger_members: np.ndarray

    @classmethod
    def from_model(cls, model) -> "FingerCapsules":
        rest = model.pose()
        origins = rest.cam_from_joint[:, :3, 3].astype(np.float64)
        vertices = rest.vertices.astype(np.float64)
        part_digit = np.array(["" if p == HandPart.PALM else _digit(HandPart(p)) for p in range(len(HandPart))])
        vertex_digit = part_digit[model.vertex_part]
        start, radius, thumb, finger = [], [], [], []
        for part in HandPart:
            if part in (HandPart.PALM, HandPart.THUMB_METACARPAL):
                continue
            joint = int(np.flatnonzero(SKIN_JOINT_PART == part)[0])  # the bone's own joint; +1 is the next
            own = vertices[model.vertex_part == part]
            distances = segment_distances(own, origins[joint], origins[joint + 1])
            start.append(joint)
            radius.append(float(np.percentile(distances, RADIUS_PERCENTILE)))
            digit = _digit(part)
            if digit == "THUMB":
                thumb.append(np.flatnonzero((vertex_digit != "THUMB") & (vertex_digit != "")))
                finger.append(np.zeros(0, np.int64))
            else:
                thumb.append(np.flatnonzero(vertex_digit == "THUMB"))
                finger.append(np.flatnonzero((vertex_digit != digit) & (vertex_digit != "THUMB") & (vertex_digit != "")))
        start_array = np.array(start, np.int64)
        return cls(
            joint_start=start_array,
            joint_end=start_array + 1,
            radius_m=np.array(radius, np.float64),
            thickness_joint=start_array,
            thumb_offsets=np.cumsum([0] + [len(m) for m in thumb]).astype(np.int64),
            thumb_members=np.concatenate(thumb).astype(np.int64),
            finger_offsets=np.cumsum([0] + [len(m) for m in finger]).astype(np.int64),
            finger_members=np.concatenate(finger).astype(np.int64),
        )

    def interpenetration(
        self, vertices: np.ndarray, joint_origins: np.ndarray, bone_scales: np.ndarray, depth_m: float
    ) -> tuple[int, int]:
        """The most vertices that any one capsule holds deeper than ``depth_m``: of the thumb
        against the fingers (either way), and of a finger against another.

        vertices: (V, 3) posed vertices; joint_origins: (25, 3) posed skin-joint origins, the
        same frame, metres; bone_scales: (25, 2) [length, thickness] the hand was posed with.
        """
        points = np.ascontiguousarray(vertices, np.float64)
        joint_origins = np.asarray(joint_origins, np.float64)
        starts = np.ascontiguousarray(joint_origins[self.joint_start])
        ends = np.ascontiguousarray(joint_origins[self.joint_end])
        radii = self.radius_m * np.asarray(bone_scales, np.float64)[self.thickness_joint, 1]
        depth = float(depth_m)
        thumb = capsule_penetration_counts(points, starts, ends, radii, self.thumb_offsets, self.thumb_members, depth)
        finger = capsule_penetration_counts(points, starts, ends, radii, self.finger_offsets, self.finger_members, depth)
        return int(thumb.max()), int(finger.max())


def segment_distances(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) distances of (N, 3) points to the segment from a to b (same units)."""
    ab = b - a
    length2 = float(ab @ ab)
    t = np.zeros(len(points)) if length2 == 0.0 else np.clip((points - a) @ ab / length2, 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


_CAPSULES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def finger_capsules(model) -> FingerCapsules:
    """The model's capsules, built once per model object."""
    capsules = _CAPSULES.get(model)
    if capsules is None:
        capsules = _CAPSULES[model] = FingerCapsules.from_model(model)
    return capsules


def penetration_test(model, depth_m: float, min_vertices: int):
    """A ``tracker.synth.pose_sampler.PenetrationTest`` for this model: the thumb (or a
    finger) passes through a finger when some capsule holds at least ``min_vertices`` of
    its vertices deeper than ``depth_m``."""
    capsules = finger_capsules(model)

    def test(local_rotations: np.ndarray, bone_scales: np.ndarray) -> tuple[bool, bool]:
        posed = model.pose(local_rotations, bone_scales)
        thumb, finger = capsules.interpenetration(posed.vertices, posed.cam_from_joint[:, :3, 3], bone_scales, depth_m)
        return thumb >= min_vertices, finger >= min_vertices

    return test
