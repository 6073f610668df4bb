"""Online refinement: a few Gauss-Newton steps of articulated ICP after the refit.

After the refit (``tracker.refit``: the network's vertices -> 16 per-part similarity
transforms -> skinned mesh), each part is moved by a small rigid motion so that the mesh
meets the crop's measured hand points, point to plane, from the side the camera sees (Dual Grid Net §4.1's ICP term, minimised per frame instead of used as a
training loss). Two priors keep it a hand: each part stays near where the network put it,
and parts that meet at a joint stay together. The kernels are in ``kernels.icp``. The
tracker (``TrackerConfig.refine``) refines the hands it keeps, after their confidence: a
refined mesh meets the depth wherever it lies, so it must not decide whether a hand is there.
Within a track it also refines the last frame's refined pose against the new frame and
keeps whichever fit the depth bears out better (``Refiner.refine_tracked``), so a frame
whose network fit breaks does not break the track's hand; on a moving hand that pose is
first carried on by the palm's last motion (``Refiner.start_from_last``). The two fits are independent, and
where the process has a second CPU the last pose's runs on a thread of its own, begun before
the tracker judges the network's fit (``Refiner.start_tracked``).

Why: the network regresses the mesh from a 64x64 crop and leaves millimetres on the table
that the depth itself can settle; the refinement takes them back where the hand is seen,
and the network's pose stands where it is not (a finger hidden behind the palm has no
points and stays put). ``benchmarks/refinement.py`` measures it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import weakref
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from kernels.icp import crop_pixel_points, nearest_front_vertices, refine_part_transforms, vertex_normals
from kernels.lbs import linear_blend_skinning
from tracker.confidence import CropAgreement, crop_camera
from tracker.estimator import NetworkOutput
from tracker.hand_model import HandModel
from tracker.machine import usable_cpus
from tracker.refit import Refit
from tracker.skeleton import NUM_PARTS, SKIN_JOINT_PARENTS, SKIN_JOINT_PART, HandPart
from tracker.types import Handedness, HandCrop

#: Crop pixels the network gives at least this hand probability are the hand's points.
HAND_PIXEL_PROBABILITY = 0.5


@dataclass(frozen=True)
class RefineConfig:
    #: Gauss-Newton steps per frame (each matches points anew). Two reach nearly all of the
    #: gain on synthetic frames (a third: 0.015 mm more for a third more time).
    iterations: int = 2
    #: At most this many of the crop's hand pixels are matched (evenly spread over them);
    #: by default all of a 64x64 crop's. More points average the depth's noise away: with
    #: at most 256 of them, a hand held still shook more refined than not (``docs/network.md``).
    max_points: int = 4096
    #: Fewer hand pixels than this: too little of the hand to move 16 parts by; the
    #: network's pose is kept.
    min_points: int = 20
    #: Scale of the mean point-to-plane residual against the priors below: the data term
    #: is mean((r / point_sigma_m)^2) over the points, so its pull does not grow with the
    #: number of points (a near hand has more).
    point_sigma_m: float = 0.0003
    #: Residuals beyond this pull with a constant force (Huber): sensor noise is ~1 mm at
    #: arm's length, and a stray point (a fingertip's edge, the forearm) must not dominate.
    huber_m: float = 0.002
    #: A point further than this from every camera-facing vertex is not matched: it is not
    #: on this hand, or the mesh is too far from it for a nearest vertex to mean anything.
    max_match_distance_m: float = 0.03
    #: How far each part may move from the network's pose before the prior outweighs a
    #: residual of one ``point_sigma_m`` (rotation about the part's centre, translation).
    rotation_sigma_rad: float = 0.3
    translation_sigma_m: float = 0.01
    #: Two parts' placements of the joint they share may part by about this much.
    joint_gap_sigma_m: float = 0.03
    #: While tracking, also refine the track's last refined pose against each new frame and
    #: keep whichever of the two fits the depth bears out better (``Refiner.refine_tracked``).
    #: The network fits each frame afresh, and now and then, mostly on a far hand whose thin
    #: fingers the sensor's noise breaks up, a fit comes out broken (fingertips centimetres
    #: off) between good ones; the last frame's pose, refined, then fits better and is kept.
    #: Where the hand moved, the network's fit does. It costs a second refinement and two
    #: agreements a tracked frame, on a second thread where there is a CPU for it
    #: (``docs/network.md``, "Online refinement").
    from_last_frame: bool = True
    #: ... moved on first as the hand was moving (``continued_pose``): where the palm moved
    #: further than this between the track's last two frames, the last pose is carried on
    #: by that motion (translation and turn about the palm's centre, per the frames' clock)
    #: before it is refined, so that on a moving hand it starts where the hand now is
    #: rather than a frame behind. The limit is for a palm at 0.45 m and grows with the
    #: square of its distance, as the depth's noise does: a hand held still must not be
    #: pushed on by its own jitter. None: the last pose as it was. Chosen ad hoc
    #: (``docs/network.md``, "From the last frame's pose").
    continue_motion_above_m: float | None = 0.001

    def __post_init__(self) -> None:
        if not isinstance(self.from_last_frame, bool):
            raise ValueError(f"from_last_frame must be True or False, got {self.from_last_frame!r}")
        limit = self.continue_motion_above_m
        if limit is not None and not (isinstance(limit, (int, float)) and np.isfinite(limit) and limit >= 0):
            raise ValueError(f"continue_motion_above_m must be None or a distance of 0 or more (metres), got {limit!r}")
        if self.iterations < 0 or not 1 <= self.min_points <= self.max_points:
            raise ValueError(f"iterations >= 0 and 1 <= min_points <= max_points needed, got {self.iterations}, {self.min_points}, {self.max_points}")
        for name in ("point_sigma_m", "huber_m", "max_match_distance_m", "rotation_sigma_rad", "translation_sigma_m", "joint_gap_sigma_m"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")


def crop_hand_points(crop: HandCrop, hand_probability: np.ndarray, max_points: int) -> np.ndarray:
    """(N, 3) float64 camera-frame points (metres) of the crop's pixels that are measured
    (depth inside the cube) and that the network calls hand, at most ``max_points`` of
    them, evenly spread. Through the crop's own virtual camera (``confidence.crop_camera``),
    so any lens the frame had is already undone."""
    focal, cx, cy = crop_camera(crop)
    cam_from_crop = np.ascontiguousarray(crop.cam_from_crop, np.float64)
    centre_depth = float((cam_from_crop.T @ np.asarray(crop.center_cam_m, np.float64))[2])
    return crop_pixel_points(
        np.ascontiguousarray(crop.depth, np.float32), np.ascontiguousarray(hand_probability, np.float32), HAND_PIXEL_PROBABILITY, max_points,
        crop.handedness == Handedness.LEFT, focal, cx, cy, centre_depth, crop.cube_size_m / 2, cam_from_crop,
    )


def camera_part_transforms(part_transforms_crop: np.ndarray, crop: HandCrop) -> np.ndarray:
    """(P, 4, 4) float64 camera_from_template per part, from the refit's transforms in the
    crop's normalised (and, for a left hand, mirrored) frame: ``crop_to_camera`` after them."""
    cam_from_points = np.asarray(crop.cam_from_crop, np.float64) * (crop.cube_size_m / 2)
    if crop.handedness == Handedness.LEFT:
        cam_from_points = cam_from_points.copy()
        cam_from_points[:, 0] *= -1
    out = np.zeros_like(part_transforms_crop, dtype=np.float64)
    out[:, :3, :] = cam_from_points @ part_transforms_crop[:, :3, :]
    out[:, :3, 3] += crop.center_cam_m
    out[:, 3, 3] = 1.0
    return out


#: Depth at which ``RefineConfig.continue_motion_above_m`` holds as given.
CONTINUE_MOTION_REFERENCE_DEPTH_M = 0.45
#: At most this many of the last frame-to-frame steps are carried on (frames dropped in
#: between): a longer guess, from one step's noisy motion, is more likely wrong than right.
MAX_CONTINUED_STEPS = 3.0


def _turned_by(turn: np.ndarray, steps: float) -> np.ndarray:
    """(3, 3) ``turn`` (a rotation) taken ``steps`` times, about the same axis. A
    frame-to-frame turn is small, and Rodrigues' formula on its axis-angle costs a
    hundredth of scipy's ``Rotation`` (which was 0.14 ms of the tracker's thread a frame);
    near a half turn, where the axis cannot be read off the skew part, scipy decides."""
    sine_axis = 0.5 * np.array([turn[2, 1] - turn[1, 2], turn[0, 2] - turn[2, 0], turn[1, 0] - turn[0, 1]])
    angle = float(np.arctan2(np.linalg.norm(sine_axis), 0.5 * (np.trace(turn) - 1.0)))
    if angle > 3.0:
        return Rotation.from_rotvec(steps * Rotation.from_matrix(turn).as_rotvec()).as_matrix()
    if angle < 1e-12:
        return np.eye(3)
    axis = sine_axis / np.linalg.norm(sine_axis)
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    scaled = steps * angle
    return np.eye(3) + np.sin(scaled) * cross + (1.0 - np.cos(scaled)) * (cross @ cross)


def continued_pose(last: np.ndarray, previous_palm: np.ndarray, palm_centre: np.ndarray, steps: float) -> np.ndarray:
    """(P, 4, 4) float64 camera_from_template per part: ``last`` moved on rigidly by
    ``steps`` times the palm's motion from ``previous_palm`` to ``last[PALM]`` (each a
    (4, 4) camera_from_template of the palm part): its centre (``palm_centre``, (3,) in the
    template, metres) carried along in a straight line, and the whole hand turned about it
    by that many times the palm's turn. Parts' poses are similarities: only their rotation
    is carried on, never a change of scale."""
    last = np.asarray(last, np.float64)
    before, after = np.asarray(previous_palm, np.float64), last[HandPart.PALM]
    centre_before = before[:3, :3] @ palm_centre + before[:3, 3]
    centre_after = after[:3, :3] @ palm_centre + after[:3, 3]
    # A similarity's linear part is its rotation times a scale: the cube root of the
    # determinant takes the scale off.
    turn = (after[:3, :3] / np.cbrt(np.linalg.det(after[:3, :3]))) @ (before[:3, :3] / np.cbrt(np.linalg.det(before[:3, :3]))).T
    rotation = _turned_by(turn, steps)
    moved_from_last = np.eye(4)
    moved_from_last[:3, :3] = rotation
    moved_from_last[:3, 3] = centre_after + steps * (centre_after - centre_before) - rotation @ centre_after
    return moved_from_last[None] @ last


class Refiner:
    """Refines a crop's network output against the crop's depth (``refine``).
    ``parallel``: a tracked frame's two fits (``refine_tracked``) run side by side where
    the process may run on more than one CPU; the results are the same either way."""

    def __init__(self, model: HandModel, config: RefineConfig = RefineConfig(), parallel: bool = True) -> None:
        self.config = config
        refit = Refit(model)
        self.template = refit.template
        self.vertex_part_weights = refit.vertex_part_weights
        self.keypoint_rest = refit.keypoint_rest
        self.keypoint_part_weights = refit.keypoint_part_weights
        self.faces = {side: np.ascontiguousarray(model.faces_for(side), np.int32) for side in Handedness}
        self.agreement_faces = np.ascontiguousarray(model.faces, np.int32)  # as the estimator's confidence has them
        # The parts moving each vertex, compact (at most four on this model), for the kernel.
        weights = self.vertex_part_weights
        count = int((weights > 0).sum(1).max())
        self.vertex_parts = np.full((len(weights), count), -1, np.int64)
        self.vertex_blend = np.zeros((len(weights), count))
        for v, row in enumerate(weights):
            parts = np.flatnonzero(row > 0)
            self.vertex_parts[v, : len(parts)] = parts
            self.vertex_blend[v, : len(parts)] = row[parts]
        # Each part's centre in the template: it rotates about where its vertices are.
        self.part_rest_centres = (weights.T @ self.template) / weights.sum(0)[:, None]
        rest = model.hand_from_joint_bind[:, :3, 3].astype(np.float64)
        links = [(int(SKIN_JOINT_PART[p]), int(SKIN_JOINT_PART[j]), j) for j, p in enumerate(SKIN_JOINT_PARENTS) if p >= 0 and SKIN_JOINT_PART[j] != SKIN_JOINT_PART[p]]
        self.link_parts = np.array([[a, b] for a, b, _ in links], np.int64).reshape(-1, 2)
        self.link_points = np.array([rest[j] for _, _, j in links], np.float64).reshape(-1, 3)
        c = config
        # A thread for the second of a tracked frame's two fits, where this process may run
        # on more than one CPU; shut down with the refiner.
        self._second_fit = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="refine") if parallel and usable_cpus() > 1 else None
        if self._second_fit is not None:
            weakref.finalize(self, self._second_fit.shutdown, wait=False)
        self.prior = np.tile(np.r_[np.full(3, c.rotation_sigma_rad ** -2), np.full(3, c.translation_sigma_m ** -2)], NUM_PARTS)

    def start_from_last(self, last: np.ndarray, last_ms: float, previous_palm: np.ndarray | None, previous_ms: float, now_ms: float) -> np.ndarray:
        """Where a tracked frame at ``now_ms`` (the frames' clock, milliseconds) starts its
        fit from the last frame's (``refine_tracked``'s ``last``): ``last``, the track's last
        refined pose (at ``last_ms``), moved on as the palm moved since the frame before
        (``previous_palm``, its palm's camera_from_template then, at ``previous_ms``; None
        where the track has no such frame) where that motion is larger than the depth's
        noise would make it (``RefineConfig.continue_motion_above_m``); else ``last``."""
        limit = self.config.continue_motion_above_m
        if limit is None or previous_palm is None or not now_ms > last_ms > previous_ms:
            return last  # no motion known, or no clock to carry it on by
        centre = self.part_rest_centres[HandPart.PALM]
        after = last[HandPart.PALM, :3, :3] @ centre + last[HandPart.PALM, :3, 3]
        before = previous_palm[:3, :3] @ centre + previous_palm[:3, 3]
        depth = max(float(after[2]), 1e-3)
        if not np.linalg.norm(after - before) > limit * (depth / CONTINUE_MOTION_REFERENCE_DEPTH_M) ** 2:
            return last
        steps = min((now_ms - last_ms) / (last_ms - previous_ms), MAX_CONTINUED_STEPS)
        moved = continued_pose(last, previous_palm, centre, steps)
        return moved if np.all(np.isfinite(moved)) else last

    def refine(self, crop: HandCrop, output: NetworkOutput, measure: bool = False, start: np.ndarray | None = None) -> tuple[NetworkOutput, dict]:
        """``output`` with its mesh and joints refined against ``crop``'s depth, and what the
        refinement did: the Gauss-Newton ``steps`` taken, the hand ``points`` matched on
        the first and the parts' poses it ended at (``cam_from_template``, (P, 4, 4) float64,
        camera_from_template per part; only where it refined); with ``measure``, also the
        mean point-to-plane distance (mm) of the matched points before (``before_mm``) and
        after (``after_mm``, which costs one more matching). ``start``, such poses, is where
        it starts instead of the network's fit (the hand's pose in an earlier frame), the
        network's hand pixels still telling which points are the hand's. The output comes
        back unchanged where too few hand points were seen or the result is not finite (a
        numerical failure)."""
        return self._refine_points(crop, output, self._hand_points(crop, output), measure, start)

    def _hand_points(self, crop: HandCrop, output: NetworkOutput) -> np.ndarray | None:
        """The crop's hand points the refinement matches (``crop_hand_points``), or None
        where the network's fit cannot be refined (no refit transforms, not finite)."""
        if output.part_transforms_crop is None or not np.all(np.isfinite(output.refined_vertices)):
            return None
        return crop_hand_points(crop, output.hand_probability, self.config.max_points)

    def _refine_points(self, crop: HandCrop, output: NetworkOutput, points: np.ndarray | None, measure: bool, start: np.ndarray | None) -> tuple[NetworkOutput, dict]:
        """``refine`` on hand points already gathered (``_hand_points``)."""
        c = self.config
        report = {"points": 0, "steps": 0, "before_mm": None, "after_mm": None}
        if points is None or len(points) < c.min_points:
            return output, report
        faces = self.faces[crop.handedness]
        if start is None:
            transforms = camera_part_transforms(np.asarray(output.part_transforms_crop, np.float64), crop)
            vertices = np.asarray(output.refined_vertices, np.float64)
        else:
            transforms = np.ascontiguousarray(start, np.float64)
            vertices = linear_blend_skinning(self.template, self.vertex_part_weights, transforms)
        if measure:
            report["before_mm"] = _mean_point_to_plane_mm(points, vertices, faces, c.max_match_distance_m)
        transforms, vertices, report["points"], report["steps"] = refine_part_transforms(
            points, transforms, vertices, faces, self.template, self.vertex_parts, self.vertex_blend, self.vertex_part_weights,
            self.part_rest_centres, self.link_parts, self.link_points, self.prior, c.iterations,
            1.0 / (len(points) * c.point_sigma_m**2), c.joint_gap_sigma_m**-2, c.huber_m, c.max_match_distance_m,
        )
        if measure:
            report["after_mm"] = _mean_point_to_plane_mm(points, vertices, faces, c.max_match_distance_m)
        joints = linear_blend_skinning(self.keypoint_rest, self.keypoint_part_weights, transforms)
        if not (np.all(np.isfinite(vertices)) and np.all(np.isfinite(joints)) and np.all(np.isfinite(transforms))):
            return output, {**report, "steps": 0, "after_mm": report["before_mm"]}
        report["cam_from_template"] = transforms
        return dataclasses.replace(output, refined_vertices=vertices.astype(np.float32), joints=joints.astype(np.float32)), report

    def refine_tracked(self, crop: HandCrop, output: NetworkOutput, image_size: tuple[int, int], last: np.ndarray | None) -> tuple[NetworkOutput, dict]:
        """``refine`` for a frame of a track: where ``last`` is the track's last refined pose
        (``refine``'s ``cam_from_template``, the same side) and ``RefineConfig.from_last_frame``
        holds, that pose is refined against ``crop`` too, and of the two refined fits the one
        the crop's depth bears out better is kept (``tracker.confidence.depth_agreement``, the
        tracker's confidence measure; the network's fit on a tie). The report says which
        (``from_last_frame``) and, where both were weighed, their ``agreement``s (network's,
        last pose's). ``image_size``: (width, height) of the image the crop was cut from."""
        return self.start_tracked(crop, output, image_size, last).finish()

    def start_tracked(self, crop: HandCrop, output: NetworkOutput, image_size: tuple[int, int], last: np.ndarray | None) -> "TrackedRefinement":
        """``refine_tracked`` begun: the last pose's fit goes to the worker thread, where
        there is one, and the caller's thread is free until it calls ``finish`` on what this
        returns (the tracker judges the network's fit meanwhile). Not finished, it is let go."""
        return TrackedRefinement(self, crop, output, image_size, last)


class TrackedRefinement:
    """A tracked frame's refinement under way (``Refiner.start_tracked``)."""

    def __init__(self, refiner: Refiner, crop: HandCrop, output: NetworkOutput, image_size: tuple[int, int], last: np.ndarray | None) -> None:
        self.refiner, self.crop, self.output = refiner, crop, output
        self.points = refiner._hand_points(crop, output)  # the same for both fits
        self.last = last
        if last is None or not refiner.config.from_last_frame or self.points is None or len(self.points) < refiner.config.min_points:
            self.last = None
            return
        # Each fit judged as the tracker judges the network's (faces and all): mesh over
        # empty space or sunk into the surface counts against it, which matching the
        # hand's points to the mesh alone would not see (a broken finger over background).
        self.judge = CropAgreement(crop, output.hand_probability, image_size)
        # The two fits are independent: the last pose's goes to the worker thread, where
        # there is one (the kernels release the interpreter lock), and the result is the
        # same as one after the other.
        worker = refiner._second_fit
        self.carrying = worker.submit(self._judged, last) if worker is not None else None

    def _judged(self, start: np.ndarray | None) -> tuple[NetworkOutput, dict, float | None]:
        fit, report = self.refiner._refine_points(self.crop, self.output, self.points, False, start)
        agreement = self.judge.of(fit.refined_vertices, self.refiner.agreement_faces).confidence if "cam_from_template" in report else None
        return fit, report, agreement

    def finish(self) -> tuple[NetworkOutput, dict]:
        """``Refiner.refine_tracked``'s result."""
        if self.last is None:
            refined, report = self.refiner._refine_points(self.crop, self.output, self.points, False, None)
            report["from_last_frame"] = False
            return refined, report
        refined, report, ours = self._judged(None)
        carried, carried_report, theirs = self.carrying.result() if self.carrying is not None else self._judged(self.last)
        report["from_last_frame"] = False
        if ours is None or theirs is None:
            return refined, report
        if theirs > ours:
            return carried, {**carried_report, "from_last_frame": True, "agreement": (ours, theirs)}
        return refined, {**report, "agreement": (ours, theirs)}


def _mean_point_to_plane_mm(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, max_distance_m: float) -> float | None:
    """Mean |n . (v - x)| (mm) of the points matched to the mesh as a step matches them;
    None where none is."""
    normals = vertex_normals(vertices, faces)
    matches = nearest_front_vertices(points, vertices, normals, max_distance_m)
    matched = matches >= 0
    if not matched.any():
        return None
    k = matches[matched]
    return float(np.abs(np.einsum("ij,ij->i", normals[k], vertices[k] - points[matched])).mean() * 1e3)


def warm_up_refiner(refiner: Refiner) -> None:
    """Run the kernels once (the template 0.5 m ahead, its own vertices for points), so that
    a run's first refined frame pays no numba compilation or cache load."""
    transforms = np.tile(np.eye(4), (NUM_PARTS, 1, 1))
    transforms[:, 2, 3] = 0.5
    vertices = linear_blend_skinning(refiner.template, refiner.vertex_part_weights, transforms)
    points = np.ascontiguousarray(vertices[:: max(1, len(vertices) // 32)])
    faces = refiner.faces[Handedness.RIGHT]
    c = refiner.config
    crop_pixel_points(np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32), HAND_PIXEL_PROBABILITY, c.max_points, False, 1.0, 1.5, 1.5, 0.5, 0.13, np.eye(3))
    refine_part_transforms(
        points, transforms, vertices, faces, refiner.template, refiner.vertex_parts, refiner.vertex_blend, refiner.vertex_part_weights,
        refiner.part_rest_centres, refiner.link_parts, refiner.link_points, refiner.prior, 1, 1.0, 1.0, c.huber_m, c.max_match_distance_m,
    )
    _mean_point_to_plane_mm(points, vertices, faces, c.max_match_distance_m)
