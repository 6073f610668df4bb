"""Network + refit on one hand crop: the step from HandCrop to HandEstimate.

Runs the chosen inference backend on the crop, refits the template to the predicted
vertices on the host (numba), and maps everything from crop-normalised coordinates back to
the camera frame (un-mirroring a left hand). Used by the evaluation and the live pipeline.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from tracker.confidence import SIDE_CHECK_TOLERANCE_M, depth_agreement
from tracker.crop import crop_to_camera
from tracker.hand_model import HandModel
from tracker.lens import project
from tracker.refit import Refit, RefitResult
from tracker.skeleton import NUM_PARTS
from tracker.types import CameraIntrinsics, HandCrop, HandEstimate


#: Joints nearer than this are not a hand the camera can have seen (depth cameras start at
#: ~0.1-0.2 m).
MIN_JOINT_DEPTH_M = 0.02
#: Joints further than this many cube edges from the crop centre are a network failure, not
#: a hand in the crop (the hand fills a cube of about its own size).
MAX_JOINT_REACH_CUBES = 1.0


@dataclass(frozen=True)
class NetworkOutput:
    """Raw per-crop outputs: refined vertices (V, 3) and joints (21, 3) float32 in the
    camera frame (metres); hand probability (S, S) float32; mesh coordinates (2, S, S)
    float32 mesh-grid units (0..G), the mesh UV each crop pixel shows; the network's own
    vertices P_s (V, 3) float32 in crop-normalised units and the crop, from which
    ``initial_vertices`` gives them in the camera frame; the refit's per-part transforms
    (16, 4, 4) float64 template -> crop-normalised frame (``RefitResult.part_transforms``),
    which the online refinement (``tracker.refine``) starts from."""

    refined_vertices: np.ndarray
    joints: np.ndarray
    hand_probability: np.ndarray
    mesh_coords: np.ndarray
    initial_vertices_crop: np.ndarray
    crop: HandCrop
    part_transforms_crop: np.ndarray | None = None

    @functools.cached_property
    def initial_vertices(self) -> np.ndarray:
        """P_s (V, 3) float32 in the camera frame (metres); mapped when first asked for, as
        tracking frame after frame never does."""
        return crop_to_camera(self.initial_vertices_crop, self.crop)


def usable(crop: HandCrop, output: NetworkOutput) -> bool:
    """Whether ``output`` is an estimate a hand could have given: finite, its joints before
    the camera and within reach of its crop (else a network failure; see ``to_estimate``)."""
    joints = output.joints
    reach = np.abs(joints - crop.center_cam_m).max() if joints.size else 0.0
    return bool(
        np.all(np.isfinite(joints))
        and np.all(joints[:, 2] >= MIN_JOINT_DEPTH_M)
        and np.all(np.isfinite(output.refined_vertices))
        and reach <= MAX_JOINT_REACH_CUBES * crop.cube_size_m
    )


@dataclass(frozen=True)
class Launched:
    """A crop whose network run was started (``HandEstimator.start``): the crop, how long
    the start took (ms), and the outputs already when the backend computed them there."""

    crop: HandCrop
    launch_ms: float
    outputs: dict[str, np.ndarray] | None = None


class HandEstimator:
    def __init__(self, backend, hand_model: HandModel | None = None) -> None:
        self.backend = backend
        self.hand_model = hand_model or HandModel.load()
        manifest = getattr(backend, "manifest", None)
        if manifest is not None:  # the ONNX and TensorRT networks carry the asset's sampling baked in
            from tracker.weights import check_hand_model  # torch-free import of this module otherwise

            check_hand_model(manifest, self.hand_model)
        self.refit = Refit(self.hand_model)

    def start(self, crop: HandCrop) -> Launched:
        """Start the network on ``crop`` (``complete`` finishes it): on a GPU backend this
        returns once the work is queued, and the caller may do other work meanwhile."""
        t0 = time.perf_counter()
        depth = crop.depth[None, None].astype(np.float32)
        launch = getattr(self.backend, "launch", None)
        outputs = None
        if launch is None:  # a backend with ``run`` alone computes here
            outputs = self.backend.run(depth)
        else:
            launch(depth)
        return Launched(crop, 1e3 * (time.perf_counter() - t0), outputs)

    def run(self, crop: HandCrop) -> tuple[NetworkOutput, dict[str, float]]:
        return self.complete(self.start(crop))

    def complete(self, launched: Launched) -> tuple[NetworkOutput, dict[str, float]]:
        """The network's outputs for a started crop, refitted, in the camera frame; timings
        of the network (its launch and the wait for it, not what the caller did between)
        and of the refit."""
        crop = launched.crop
        timings = {}
        t0 = time.perf_counter()
        outputs = launched.outputs if launched.outputs is not None else self.backend.collect()
        t1 = time.perf_counter()
        vertices_crop = outputs["vertices"][0]
        if np.all(np.isfinite(vertices_crop)):
            refit = self.refit.fit(vertices_crop)
        else:  # a numerical failure in the backend: reported as no hand (to_estimate), not an error
            nan = np.full_like(vertices_crop, np.nan)
            refit = RefitResult(nan, np.full((len(self.refit.keypoint_rest), 3), np.nan, np.float32), np.full((NUM_PARTS, 4, 4), np.nan))
        t2 = time.perf_counter()
        timings["network"] = launched.launch_ms + 1e3 * (t1 - t0)
        timings["refit"] = 1e3 * (t2 - t1)
        # The logistic as a tanh: no overflow (and warning) for very negative logits.
        hand_probability = 0.5 * (1.0 + np.tanh(0.5 * outputs["hand_logit"][0, 0]))
        return (
            NetworkOutput(
                refined_vertices=crop_to_camera(refit.vertices, crop),
                joints=crop_to_camera(refit.joints, crop),
                hand_probability=hand_probability.astype(np.float32),
                mesh_coords=outputs["mesh_coords"][0],
                initial_vertices_crop=vertices_crop,
                crop=crop,
                part_transforms_crop=refit.part_transforms,
            ),
            timings,
        )

    def side_check_agreement(self, crop: HandCrop, output: NetworkOutput, intrinsics: CameraIntrinsics) -> float:
        """How far ``crop``'s depth bears out this side's fit, for a side check to weigh
        against the other side's: the confidence (``to_estimate``'s, 0 where that is 0) at
        ``SIDE_CHECK_TOLERANCE_M``, which tells a mirrored fit from the true one better."""
        if not usable(crop, output):
            return 0.0
        return depth_agreement(
            crop, output.refined_vertices, self.hand_model.faces, output.hand_probability, (intrinsics.width, intrinsics.height),
            SIDE_CHECK_TOLERANCE_M,
        ).confidence

    def estimate(self, crop: HandCrop, intrinsics: CameraIntrinsics) -> HandEstimate:
        output, timings = self.run(crop)
        return self.to_estimate(crop, output, timings, intrinsics)

    def to_estimate(self, crop: HandCrop, output: NetworkOutput, timings: dict[str, float], intrinsics: CameraIntrinsics) -> HandEstimate:
        """The reported estimate for one crop's network output. Its confidence is how far
        the crop's depth bears the mesh out (``tracker.confidence``); 0 (dropped by the
        tracker) when the estimate is not finite, reaches to the camera or behind it (a crop
        cube around a centre nearer than half its size), or lies far outside its crop's cube."""
        joints = output.joints
        uv = project(joints, intrinsics)  # into the stream's own image, through its lens
        confidence = 0.0
        if usable(crop, output):
            t0 = time.perf_counter()
            agreement = depth_agreement(
                crop, output.refined_vertices, self.hand_model.faces, output.hand_probability, (intrinsics.width, intrinsics.height)
            )
            confidence = agreement.confidence
            timings = {**timings, "confidence": 1e3 * (time.perf_counter() - t0)}
        return HandEstimate(
            vertices_cam_m=output.refined_vertices,
            joints_cam_m=joints,
            joints_uv_px=uv.astype(np.float32),
            handedness=crop.handedness,
            confidence=confidence,
            timings_ms=timings,
        )
