"""Evaluation of shipped weights: held-out synthetic accuracy and real-frame fitting error.

    python -m tracker.evaluate                       # weights/ -> weights/eval/, weights/MODEL_CARD.md

1. A held-out synthetic set (its own seed stream, with sensor noise; the frames whose seed
   a training sample shares, if any, are named: ``training_overlap``), cropped exactly as
   in training: mean joint error of the refitted keypoints, mean vertex error of P_s and
   of P_r (mm), per-joint errors and the success-frame curve (fraction of frames whose
   largest joint error is below t, t = 0..80 mm) as JSON and PNG, and a sheet of the
   frames with the largest errors (truth beside estimate) to see where the network fails;
   and the same frames cropped where a run's tracker centres a track's first crop
   (segmentation, its choice checked by the hand-presence classifier:
   ``tracker.prepare.likeliest_hand``) (``segmentation_centred``).
2. Real RealSense SR305 frames (no labels): the hand is found as on a track's first
   frame (as in 1.), and the self-supervised fitting error is the median distance (mm) of the
   crop's hand points to the predicted mesh surface; an overlay sheet shows the fits.
3. With the default backend, the 8-bit network too when the weights have one
   (``tracker.quantize``): the same held-out frames as in 1., so the two compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from kernels.raster import render_mesh
from tracker.crop import CROP_SIZE, BackgroundPlane, CropFrame, OutOfImage, camera_to_crop, crop_points_camera, make_crop
from tracker.backends import BACKENDS, BackendUnavailable, create_backend
from tracker.estimator import HandEstimator
from tracker.hand_model import HandModel, HandModelError
from tracker.lens import pinhole_view
from tracker.pipeline import vote_side_check
from tracker.prepare import HandChoiceConfig, PrepareConfig, likeliest_hand
from tracker.segment import SegmentConfig
from tracker.side_inference import HandPresence, SideClassifier, classifier_crop
from tracker.side_vote import SideVote
from tracker.sources import FolderSource, SourceError
from tracker.synth.contact_sheet import colourise_depth, draw_skeleton, project
from tracker.machine import machine_info
from tracker.synth.dataset import config_to_dict, sample_seed
from tracker.synth.scene import render_sample
from tracker.training_data import ExampleConfig, example_config_for, example_from_sample, measured_hand
from tracker.training_history import CURRENT_STAGE, TrainingHistoryError, TrainingStage, last_narrowing, load_training_history, plot_training_curve
from tracker.types import HAND_CHOICES, CameraIntrinsics, Handedness, Joint, measured_crop_pixels
from tracker.weights import (
    EVAL_DIR,
    MODEL_CARD,
    ONNX,
    ONNX_INT8,
    STATE_DICT,
    WEIGHTS_DIR,
    WeightsError,
    crop_classifiers,
    crop_frame_of,
    load_manifest,
    out_of_image_of,
)

EVAL_STREAM_SEED = 2  # training draws from stream 1
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REAL_DIR = ROOT / "tests" / "data" / "sr305-gestures"
SUCCESS_THRESHOLDS_MM = np.arange(0, 81)
WORST_FRAMES_SHOWN = 9


#: Indices beyond the count of samples a training run drew that it may have rendered (one
#: stream lane per data worker and process, each a little ahead).
TRAINING_INDEX_MARGIN = 10_000


def training_stream_overlap(count: int, manifest: dict, progress: bool = True, stream_seed: int = EVAL_STREAM_SEED) -> dict:
    """Which of the first ``count`` held-out frames are also training samples.

    Each sample is rendered from one 32-bit seed drawn from (stream, index), so the held-out
    stream and the training stream could share a seed by chance (about 1000 x 1.5 M / 2^32:
    a 30 % chance that one frame does). This compares the held-out seeds with the seed of
    every training-stream index the weights' training can have drawn.
    """
    from tracker.train import TRAIN_STREAM_SEED

    training = manifest.get("training") or {}
    if not any(key in training for key in ("samples_seen_total", "samples_seen", "stream_end")):
        # Weights exported without their training record: how far the stream went is not
        # known, so no check could say the held-out frames are clear of it.
        return {"training_stream_indices_checked": None, "frames_that_are_training_samples": None}
    drawn = int(training.get("samples_seen_total", training.get("samples_seen", 0)))
    # Lanes resume where each stopped, so the stream can end past the count drawn (by up to
    # a round of lanes x batch per stage); where the export records its end, check to there.
    checked = max(drawn, int(training.get("stream_end", 0))) + TRAINING_INDEX_MARGIN
    held_out = {sample_seed(stream_seed, i): i for i in range(count)}
    shared = []
    chunk = 100_000
    with tqdm(total=checked, desc="held-out vs training seeds", disable=not progress, unit="seed", unit_scale=True) as bar:
        for start in range(0, checked, chunk):
            stop = min(checked, start + chunk)
            shared += [held_out[seed] for seed in (sample_seed(TRAIN_STREAM_SEED, j) for j in range(start, stop)) if seed in held_out]
            bar.update(stop - start)
    return {"training_stream_indices_checked": checked, "frames_that_are_training_samples": sorted(shared)}


def evaluate_synthetic(
    estimator: HandEstimator, count: int, config: ExampleConfig = ExampleConfig(), progress: bool = True, stream_seed: int = EVAL_STREAM_SEED,
    weights_dir: str | None = None, background_plane: BackgroundPlane | None = BackgroundPlane(),
) -> dict:
    """Held-out synthetic metrics; ``weights_dir``: whose hand-presence classifier chooses a
    track's first place for ``segmentation_centred`` (see ``first_frame_centre``).
    ``background_plane``: each crop clears a wall or table behind the hand, as the tracker's
    do (None: the crops keep it, as the training crops do)."""
    model = estimator.hand_model
    joint_errors, initial_errors, refined_errors, in_image, visible, off_axis = [], [], [], [], [], []
    segmented_errors, centre_offsets = [], []
    for i in tqdm(range(count), desc="held-out synthetic", disable=not progress, unit="frame"):
        seed = sample_seed(stream_seed, i)
        sample = render_sample(model, config.scene, seed)
        example = example_from_sample(sample, config, seed, background_plane)
        in_image.append(keypoints_in_image(sample.joints, sample.intrinsics if sample.sensor is None else sample.sensor))
        visible.append(float(sample.vertex_visible.mean()))
        centre = example["center_cam_m"].astype(np.float64)
        off_axis.append(float(np.degrees(np.arccos(centre[2] / np.linalg.norm(centre)))))
        outputs = estimator.backend.run(example["depth"][None])
        to_mm = 1000.0 * config.cube_size_m / 2
        refit = estimator.refit.fit(outputs["vertices"][0])
        joint_errors.append(np.linalg.norm(refit.joints - example["joints"], axis=1) * to_mm)
        initial_errors.append(np.linalg.norm(outputs["vertices"][0] - example["vertices"], axis=1).mean() * to_mm)
        refined_errors.append(np.linalg.norm(refit.vertices - example["vertices"], axis=1).mean() * to_mm)
        segmented_error, centre_offset = _segmentation_centred_error(estimator, sample, config, weights_dir, background_plane)
        segmented_errors.append(segmented_error)
        centre_offsets.append(centre_offset)
    joint_errors = np.array(joint_errors)
    worst = joint_errors.max(axis=1)
    success = [float(np.mean(worst < t)) for t in SUCCESS_THRESHOLDS_MM]
    per_frame_mean = joint_errors.mean(axis=1)
    in_image = np.array(in_image)
    worst_frames = [
        {
            "frame": int(i),
            "mean_joint_error_mm": float(per_frame_mean[i]),
            "max_joint_error_mm": float(worst[i]),
            "visible_vertex_fraction": visible[i],  # mesh vertices the camera sees (noise-free)
        }
        for i in np.argsort(-per_frame_mean, kind="stable")[:WORST_FRAMES_SHOWN]
    ]
    return {
        "frames": count,
        "stream_seed": stream_seed,
        "crop_frame": CropFrame(config.crop_frame).value,
        "mean_joint_error_mm": float(joint_errors.mean()),
        "median_joint_error_mm": float(np.median(joint_errors)),
        "mean_initial_vertex_error_mm": float(np.mean(initial_errors)),
        "mean_refined_vertex_error_mm": float(np.mean(refined_errors)),
        "per_joint_error_mm": {j.name: float(joint_errors[:, j].mean()) for j in Joint},
        "success_curve": {"threshold_mm": SUCCESS_THRESHOLDS_MM.tolist(), "fraction_of_frames": success},
        "worst_frames": worst_frames,
        # The pose sampler places the palm anywhere in the image, so some fingers leave it:
        # the network must guess them, as it must for a real hand at the edge of the view.
        # The crop frame matters most away from the optical axis (see tracker.crop).
        "by_off_axis_angle": off_axis_split(np.array(off_axis), per_frame_mean),
        "whole_hand_in_image": {
            "fraction_of_frames": float(in_image.mean()),
            "mean_joint_error_mm": float(joint_errors[in_image].mean()) if in_image.any() else None,
            "mean_joint_error_mm_partly_outside": float(joint_errors[~in_image].mean()) if (~in_image).any() else None,
        },
        "segmentation_centred": _segmentation_centred_summary(segmented_errors, centre_offsets, joint_errors),
    }


@functools.lru_cache(maxsize=2)
def _hand_presence(weights_dir: str | None) -> HandPresence:
    """The hand-presence classifier a run with ``--weights weights_dir`` uses: the folder's
    own (``presence/``) where it has one, else the shipped one."""
    return crop_classifiers(weights_dir, Handedness.RIGHT, 1.0)[1] or HandPresence.load()


def first_frame_centre(
    depth_m: np.ndarray, intrinsics: CameraIntrinsics, cube_size_m: float, segment: SegmentConfig = SegmentConfig(),
    hand_choice: HandChoiceConfig = HandChoiceConfig(), weights_dir: str | None = None, sensor: CameraIntrinsics | None = None,
    background_plane: BackgroundPlane | None = BackgroundPlane(),
) -> np.ndarray | None:
    """(3,) float64 camera-frame centre (m) where a run's tracker on ``weights_dir`` (None:
    the shipped weights) centres a track's first crop in (H, W) float32 metres of a pinhole
    view, or None where it finds no hand. ``sensor``: the whole image's intrinsics where
    ``depth_m`` is a rendered window of it; ``background_plane``: as the run's crops."""
    presence = _hand_presence(None if weights_dir is None else str(weights_dir))
    config = PrepareConfig(segment, cube_size_m, None, hand_choice=hand_choice, background_plane=background_plane)
    return likeliest_hand(depth_m, intrinsics, config, presence, sensor)[0]


def _segmentation_centred_error(
    estimator: HandEstimator, sample, config: ExampleConfig, weights_dir: str | None = None, background_plane: BackgroundPlane | None = BackgroundPlane()
) -> tuple[float | None, float | None]:
    """The frame's mean joint error (mm) with the crop centred where a run's tracker
    centres a track's first crop in the rendered frame (the whole image, or the window of it
    that ``config.scene.render_window_m`` renders), as a run does, instead of on the true
    visible centroid; and how far (mm) that centre is from the centroid. (None, None) where
    it finds no hand. The side is the true one: this measures the crop, not the side vote."""
    depth_m, centroid = measured_hand(sample)
    found = first_frame_centre(depth_m, sample.intrinsics, config.cube_size_m, weights_dir=weights_dir, sensor=sample.sensor, background_plane=background_plane)
    if found is None:
        return None, None
    crop = make_crop(
        depth_m, sample.intrinsics, found, config.cube_size_m, sample.pose.handedness, crop_size=config.crop_size, frame=config.crop_frame,
        out_of_image=config.out_of_image, sensor=sample.sensor, background_plane=background_plane,
    )
    outputs = estimator.backend.run(crop.depth[None, None].astype(np.float32))
    joints = estimator.refit.fit(outputs["vertices"][0]).joints
    to_mm = 1000.0 * config.cube_size_m / 2
    error = float(np.linalg.norm(joints - camera_to_crop(sample.joints, crop), axis=1).mean() * to_mm)
    return error, float(np.linalg.norm(found - centroid) * 1000.0)


def _segmentation_centred_summary(errors: list, offsets: list, centroid_errors: np.ndarray) -> dict:
    found = np.array([e is not None for e in errors], bool)
    errors = np.array([e for e in errors if e is not None], np.float64)
    offsets = np.array([o for o in offsets if o is not None], np.float64)
    # Beyond 5 cm the 26 cm cube cuts fingers off or holds the forearm instead: the
    # segmentation took another part of the scene for the hand.
    near = offsets <= SEGMENTATION_MISS_MM
    centroid_found = centroid_errors[found].mean(axis=1)
    return {
        "frames_with_a_hand_found": int(found.sum()),
        "mean_joint_error_mm": float(errors.mean()) if errors.size else None,
        "median_frame_error_mm": float(np.median(errors)) if errors.size else None,
        # The same frames cropped on the true centroid (plus the usual jitter), for comparison.
        "mean_joint_error_mm_centroid_crop_same_frames": float(centroid_found.mean()) if found.any() else None,
        "median_centre_offset_mm": float(np.median(offsets)) if offsets.size else None,
        "fraction_centre_off_over_50mm": float(np.mean(~near)) if offsets.size else None,
        "mean_joint_error_mm_centre_within_50mm": float(errors[near].mean()) if near.any() else None,
        "mean_joint_error_mm_centroid_crop_centre_within_50mm": float(centroid_found[near].mean()) if near.any() else None,
    }


def taken_streams() -> dict[int, str]:
    """The seed streams other parts of the project draw samples from, and what for."""
    from tracker.presence import HELD_OUT_STREAM_SEED as PRESENCE_HELD_OUT
    from tracker.presence import TRAIN_STREAM_SEED as PRESENCE_TRAIN
    from tracker.quantize import CALIBRATION_STREAM_SEED
    from tracker.side_classifier import HELD_OUT_STREAM_SEED as SIDE_HELD_OUT
    from tracker.side_classifier import TRAIN_STREAM_SEED as SIDE_TRAIN
    from tracker.train import TRAIN_STREAM_SEED

    taken: dict[int, list[str]] = {}
    for stream, what in (
        (TRAIN_STREAM_SEED, "the network's training samples"),
        (SIDE_TRAIN, "the side classifier's training crops"),
        (SIDE_HELD_OUT, "the side classifier's held-out crops"),
        (CALIBRATION_STREAM_SEED, "the 8-bit network's calibration crops"),
        (PRESENCE_TRAIN, "the hand-presence classifier's training scenes"),
        (PRESENCE_HELD_OUT, "the hand-presence classifier's held-out scenes"),
    ):
        taken.setdefault(stream, []).append(what)
    return {stream: " and ".join(whats) for stream, whats in taken.items()}


#: A crop centre further than this from the hand's centroid (mm) missed the hand.
SEGMENTATION_MISS_MM = 50.0


OFF_AXIS_BINS_DEG = (0, 10, 20, 30, 90)


def off_axis_split(angles_deg: np.ndarray, per_frame_error_mm: np.ndarray) -> list[dict]:
    """Mean joint error per bin of the angle between the optical axis and the ray to the crop
    centre (frames in each bin; empty bins have no error)."""
    split = []
    for low, high in zip(OFF_AXIS_BINS_DEG[:-1], OFF_AXIS_BINS_DEG[1:]):
        inside = (angles_deg >= low) & (angles_deg < high)
        split.append({
            "degrees": [low, high],
            "frames": int(inside.sum()),
            "mean_joint_error_mm": float(per_frame_error_mm[inside].mean()) if inside.any() else None,
        })
    return split


def keypoints_in_image(joints_cam_m: np.ndarray, intrinsics: CameraIntrinsics) -> bool:
    """Whether every keypoint projects inside the depth image (pixel centres at integers)."""
    u, v = project(np.asarray(joints_cam_m, np.float64), intrinsics).T
    return bool(np.all((u >= -0.5) & (u <= intrinsics.width - 0.5) & (v >= -0.5) & (v <= intrinsics.height - 0.5)))


def crop_pixels(
    points_crop: np.ndarray,
    center_cam_m: np.ndarray,
    cube_size_m: float,
    crop_size: int,
    frame: CropFrame = CropFrame.CAMERA,
    mirrored: bool = False,
) -> np.ndarray:
    """(N, 3) crop-normalised points -> (N, 2) crop pixels (centres at integers). The crop
    is the cube's projection at the centre's depth, so the focal length cancels: only the
    centre and the cube size are needed. In the ray frame the virtual camera's axes are the
    crop's, and the centre lies on its axis. A mirrored crop (a left hand's) is the crop of
    the scene reflected in x = 0, whose centre is the reflected one."""
    half_cube = cube_size_m / 2
    centre = np.asarray(center_cam_m, np.float64)
    if mirrored:
        centre = centre * np.array([-1.0, 1.0, 1.0])
    if CropFrame(frame) == CropFrame.RAY:
        centre = np.array([0.0, 0.0, np.linalg.norm(centre)])
    camera = np.asarray(points_crop, np.float64) * half_cube + centre  # in the virtual camera's axes
    pixels_per_ray = crop_size * centre[2] / cube_size_m  # crop pixels per unit of x/z
    return (crop_size - 1) / 2 + pixels_per_ray * (camera[:, :2] / camera[:, 2:3] - centre[:2] / centre[2])


def synthetic_frame_row(
    estimator: HandEstimator, config: ExampleConfig, frame: dict, panel: int = 200, stream_seed: int = EVAL_STREAM_SEED,
    background_plane: BackgroundPlane | None = BackgroundPlane(),
) -> np.ndarray:
    """One held-out frame: its depth crop with the true skeleton | with the estimated one."""
    seed = sample_seed(stream_seed, frame["frame"])
    sample = render_sample(estimator.hand_model, config.scene, seed)
    example = example_from_sample(sample, config, seed, background_plane)
    mirrored = sample.pose.handedness == Handedness.LEFT
    outputs = estimator.backend.run(example["depth"][None])
    estimate = estimator.refit.fit(outputs["vertices"][0]).joints
    depth = example["depth"][0]
    image = colourise_depth(np.where(measured_crop_pixels(depth), depth + 2.0, 0.0), 1.0, 3.0)  # cube's near..far face
    image = cv2.resize(image, (panel, panel), interpolation=cv2.INTER_NEAREST)
    scale = panel / config.crop_size
    panels = []
    for joints, label in ((example["joints"], "truth"), (estimate, "estimate")):
        uv = crop_pixels(joints, example["center_cam_m"], config.cube_size_m, config.crop_size, config.crop_frame, mirrored)
        uv = (uv + 0.5) * scale - 0.5
        picture = image.copy()
        draw_skeleton(picture, uv)
        cv2.putText(picture, label, (6, panel - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(picture)
    row = np.hstack(panels)
    title = f"frame {frame['frame']}: mean {frame['mean_joint_error_mm']:.0f}, max {frame['max_joint_error_mm']:.0f} mm, {frame['visible_vertex_fraction']:.0%} seen"
    cv2.putText(row, title, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return row


def plot_success_curve(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = metrics["success_curve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["threshold_mm"], curve["fraction_of_frames"], lw=2)
    ax.set_xlabel("maximum joint error threshold (mm)")
    ax.set_ylabel("fraction of frames")
    ax.set_xlim(0, 80)
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.4)
    ax.set_title(f"Held-out synthetic ({metrics['frames']} frames): mean joint error {metrics['mean_joint_error_mm']:.1f} mm")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def surface_samples(vertices: np.ndarray, faces: np.ndarray, per_edge: int = 4) -> np.ndarray:
    """Points spread over every triangle (a barycentric grid), for point-to-surface distances.

    With 4 steps per edge the spacing is ~1-2 mm on this mesh, so nearest-sample distance
    overestimates the true point-to-surface distance by well under a millimetre.
    """
    steps = [(i, j) for i in range(per_edge + 1) for j in range(per_edge + 1 - i)]
    bary = np.array([(i / per_edge, j / per_edge, 1 - (i + j) / per_edge) for i, j in steps])
    corners = vertices[faces]  # (F, 3, 3)
    return np.einsum("sk,fkc->fsc", bary, corners).reshape(-1, 3)


def evaluate_real(
    estimator: HandEstimator,
    folder: Path,
    cube_size_m: float,
    crop_frame: CropFrame = CropFrame.CAMERA,
    crop_size: int = CROP_SIZE,
    out_of_image: OutOfImage = OutOfImage.FAR,
    weights_dir: str | None = None,
    hand: str = Handedness.RIGHT.value,
    background_plane: BackgroundPlane | None = BackgroundPlane(),
) -> tuple[dict, list[np.ndarray]]:
    """The self-supervised fitting error on a folder of real depth frames, each taken as a
    track's first: its hand's side given (``hand`` "right", as the SR305 frames' hands are,
    or "left"), or decided as the tracker decides a track's first frame ("auto": the side
    check's two fits and the side classifier), which then adds its own mistakes."""
    source = FolderSource(folder)
    side_classifier = None
    if hand == "auto":
        side_classifier = crop_classifiers(weights_dir, None, 0.0)[0] or SideClassifier.load()
    results, rows = [], []
    for path, frame in zip(source.files, source.frames()):
        name = str(path.relative_to(folder))
        depth_m, intrinsics = pinhole_view(frame.depth_m(), frame.intrinsics)
        centre = first_frame_centre(depth_m, intrinsics, cube_size_m, weights_dir=weights_dir, background_plane=background_plane)
        if centre is None:
            results.append({"frame": name, "hand_found": False})
            continue
        fits = {}
        for side in (Handedness.RIGHT, Handedness.LEFT) if side_classifier is not None else (Handedness(hand),):
            crop = make_crop(depth_m, intrinsics, centre, cube_size_m, side, crop_size, crop_frame, out_of_image, background_plane=background_plane)
            fits[side] = (crop, estimator.run(crop)[0])
        side = next(iter(fits))
        if side_classifier is not None:
            vote = SideVote()
            vote_side_check(vote, {s: estimator.side_check_agreement(crop, output, intrinsics) for s, (crop, output) in fits.items()})
            side = vote.update(side_classifier.logit(classifier_crop(side_classifier, depth_m, intrinsics, centre, cube_size_m, background_plane=background_plane)))
        crop, output = fits[side]
        crop_points, measured = crop_points_camera(crop, intrinsics)
        points = crop_points[measured & (output.hand_probability > 0.5)]
        tree = cKDTree(surface_samples(output.refined_vertices, estimator.hand_model.faces))
        # No pixel the network calls hand: nothing to measure the fit by (None, not NaN).
        distance_mm = float(np.median(tree.query(points)[0]) * 1000) if len(points) else None
        results.append(
            {"frame": name, "hand_found": True, "handedness": side.value, "hand_points": int(len(points)), "median_distance_mm": distance_mm}
        )
        label = f"{name}: {distance_mm:.1f} mm" if distance_mm is not None else f"{name}: no hand pixels"
        rows.append(overlay_row(depth_m, intrinsics, output.refined_vertices, estimator.hand_model.faces, output.joints, label))
    found = [r for r in results if r["hand_found"]]
    measured = [r["median_distance_mm"] for r in found if r["median_distance_mm"] is not None]
    summary = {
        "folder": folder.name,
        "frames": len(results),
        "hands_found": len(found),
        "hand": hand,
        "left_hands": sum(r["handedness"] == Handedness.LEFT.value for r in found),
        "hands_without_points": len(found) - len(measured),
        "median_fitting_error_mm": float(np.median(measured)) if measured else None,
        "per_frame": results,
    }
    return summary, rows


def overlay_row(depth_m, intrinsics: CameraIntrinsics, vertices, faces, joints, title: str, panel: int = 240) -> np.ndarray:
    """Depth around the hand | the same with the predicted mesh shaded on top and the skeleton."""
    uv = np.stack([intrinsics.fx * joints[:, 0] / joints[:, 2] + intrinsics.cx, intrinsics.fy * joints[:, 1] / joints[:, 2] + intrinsics.cy], 1)
    z = float(np.median(joints[:, 2]))
    side = max(intrinsics.fx * 0.32 / z, 32.0)
    x0, y0 = uv.mean(0) - side / 2
    scale = panel / side
    affine = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    base = colourise_depth(depth_m, z - 0.15, z + 0.15)
    mesh_depth, face_index, _ = render_mesh(vertices, faces, intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, intrinsics.height, intrinsics.width)
    shade = np.zeros_like(base)
    covered = face_index >= 0
    if covered.any():
        gy, gx = np.gradient(np.where(covered, mesh_depth, z))
        light = np.clip(0.6 + 40 * (gx + gy), 0.2, 1.0)
        shade[covered] = (np.stack([light * 230, light * 230, light * 240], -1)[covered]).astype(np.uint8)
    blended = base.copy()
    blended[covered] = (0.35 * base[covered] + 0.65 * shade[covered]).astype(np.uint8)
    left = cv2.warpAffine(base, affine, (panel, panel), flags=cv2.INTER_NEAREST)
    right = cv2.warpAffine(blended, affine, (panel, panel), flags=cv2.INTER_NEAREST)
    draw_skeleton(right, uv, offset=(x0, y0), scale=scale)
    row = np.hstack([left, right])
    cv2.putText(row, title, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return row


def write_sheet(rows: list[np.ndarray], path: Path, columns: int = 3) -> None:
    if not rows:
        return
    blank = np.zeros_like(rows[0])
    rows = rows + [blank] * (-len(rows) % columns)
    grid = np.vstack([np.hstack(rows[i : i + columns]) for i in range(0, len(rows), columns)])
    cv2.imwrite(str(path), grid)


def scene_differences(trained_on: dict | None, held_out: dict, defaults: dict | None = None) -> list[str] | None:
    """Where the held-out frames' example config (``config_to_dict`` form) differs from the
    one the weights' last training stage drew from: "dotted.key: trained T, held out H"
    lines; [] when the same; None when the weights do not record theirs. The held-out set
    follows the code's current scene defaults, so weights trained before those changed are
    measured on scenes they were not trained on. ``defaults``: the code's defaults, in the
    same form; a setting added after the weights were trained (not in their record) that is
    held out at its default is no difference, as a new setting's default keeps what the code
    did before it."""
    if not trained_on:
        return None
    lines = []

    def walk(trained, held, default, prefix: str) -> None:
        for key in sorted(set(trained) | set(held)):
            name = f"{prefix}{key}"
            a, b = trained.get(key, "not recorded"), held.get(key, "not recorded")
            d = default.get(key, "not recorded") if isinstance(default, dict) else "not recorded"
            if isinstance(a, dict) and isinstance(b, dict):
                walk(a, b, d, name + ".")
            elif a != b and not (a == "not recorded" and b == d):
                lines.append(f"{name}: trained {json.dumps(a) if a != 'not recorded' else a}, held out {json.dumps(b) if b != 'not recorded' else b}")

    walk(trained_on, held_out, defaults or {}, "")
    return lines


def _background_plane_lines(background_plane) -> list[str]:
    """What the card says of the crops' background plane (the results' record of it)."""
    if background_plane == "not recorded":
        return []
    if background_plane is None:
        return ["Crops cut as in training, a wall or table right behind the hand left in them (`--keep-planes`).", ""]
    return [
        "Crops cut as the tracker cuts them: a wall or table right behind the hand is cleared to background "
        "(`tracker.crop.BackgroundPlane`; the training crops kept it).",
        "",
    ]


def _overlap_lines(overlap: dict | None) -> list[str]:
    if overlap is None:
        return []
    shared = overlap["frames_that_are_training_samples"]
    if shared is None:
        return ["Whether any of these frames is a training sample is not known: the weights do not record how much of the training stream they were trained on.", ""]
    # More than were drawn: the stream's end, with a margin for the data lanes' read-ahead.
    checked = (
        f"the first {overlap['training_stream_indices_checked']:,} samples of the training stream: to where the "
        f"weights' training stopped, and {TRAINING_INDEX_MARGIN:,} beyond for the data workers' read-ahead"
    )
    if not shared:
        return [f"None of these frames is a training sample (their seeds checked against {checked}).", ""]
    return [f"Frames {shared} share a seed with one of {checked}, so they are training samples too.", ""]


def _scene_difference_lines(differences: list[str] | None) -> list[str]:
    if not differences:
        return []
    return [
        "The held-out scenes are the current code's, which differ from the scenes these weights' last training stage"
        " drew from in: " + "; ".join(f"`{d}`" for d in differences) + ".",
        "",
    ]


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "unknown"


def _inside_blocks(net: dict, hourglass: str) -> str:
    """", N inside each residual block" where a network's blocks are narrower than its hourglass."""
    inner = net.get(f"{hourglass}_block_channels")
    return "" if inner is None or inner == net[f"{hourglass}_channels"] else f", {inner} inside each residual block"


def write_model_card(
    path: Path,
    manifest: dict,
    synthetic: dict,
    real: dict | None,
    command: str,
    speed: dict | None,
    training_curve: bool = False,
    int8: dict | None = None,
    narrowing: TrainingStage | None = None,
) -> None:
    """``narrowing``: the training stage that made this network narrower than the one it
    started from (``last_narrowing`` of the weights' history), said in the card."""
    training = manifest.get("training", {})
    recipe = training.get("recipe", {})
    net = manifest["network"]
    lines = [
        "# Dual Grid Net — model card",
        "",
        "Depth-only hand mesh and keypoint regression (Wan et al., *Dual Grid Net*, 2020), trained on",
        "synthetic depth of the WebXR generic hand (MIT, © 2019 Amazon) with a stereo noise model.",
        "",
        "## Architecture",
        "",
        f"- Input: {net['crop_size']}×{net['crop_size']} depth crop of a {manifest['cube_size_m']:.2f} m cube around the hand, normalised to [-1, 1]; "
        + (
            "seen by a virtual camera looking along the ray to the cube's centre, with targets in its axes (ray crop frame)."
            if crop_frame_of(manifest) == CropFrame.RAY
            else "a square window of the image, with targets along the camera's axes (camera crop frame)."
        )
        + (
            " Where the cube reaches past the image's edge the crop shows its near face (-1), which measured depth all but never takes."
            if out_of_image_of(manifest) == OutOfImage.MARKED
            else " Where the cube reaches past the image's edge the crop shows its far face (1), as for background."
        ),
        f"- Image-grid hourglass ({net['image_channels']} channels{_inside_blocks(net, 'image')}, {net['image_levels']} levels, pixel-unshuffle ×2) with heads for mesh coordinates (2), features ({net['feature_channels']}) and a hand mask (1).",
        f"- Extension onto the {net['mesh_grid_size']}×{net['mesh_grid_size']} mesh grid (softmax kernel σ = {net['extension_sigma']}, {net['extension_window']}×{net['extension_window']} window, weighted by the hand mask).",
        f"- Mesh-grid hourglass ({net['mesh_channels']} channels{_inside_blocks(net, 'mesh')}, {net['mesh_levels']} levels) -> 3-D offsets; "
        + (
            "each vertex read from its four grid nodes around its mesh coordinate with trained weights (learned sampling,"
            " started from the bilinear ones: a 256-row matrix with 4 entries per vertex in use)"
            if net.get("learned_sampling")
            else "bilinear sampling at each vertex's mesh coordinate"
        )
        + " -> P_s (1159 vertices).",
        "- Refit: per-part (16) least-squares similarity transforms (SVD in training; the same optimum from Horn's quaternion in the numba kernel), linear blend skinning -> P_r and 21 keypoints.",
        f"- Parameters: {manifest.get('parameters', 0):,}"
        + (
            f" ({manifest.get('parameters', 0) - (net['mesh_grid_size'] ** 2 - 4) * 1159:,} in use: the readout matrix's other entries stay 0)."
            if net.get("learned_sampling")
            else "."
        ),
        "",
        "## Training",
        "",
        f"- Samples seen: {_count(training.get('samples_seen'))} in {training.get('steps', '?')} steps"
        f" (batch {recipe.get('batch_size', '?')} × {training.get('world_size', 1)} process(es)), {training.get('seconds', 0) / 60:.0f} min on {training.get('device', '?')}.",
    ]
    if training.get("examples_trained", training.get("samples_seen")) != training.get("samples_seen"):
        lines.append(
            f"- Batches drawn from a replay memory of the last {recipe.get('replay_examples', 0):,} rendered samples:"
            f" {training['examples_trained']:,} examples trained on."
        )
    if training.get("recovered"):  # exported after the run, not by it: the record says what is reconstructed
        lines.append(f"- Exported from {training['recovered']}.")
    earlier = training.get("initialised_from")
    if earlier:
        lines.append(
            # The record holds the earlier weights' totals and the device of their last stage
            # only: the minutes are not all that device's (every stage: the training history).
            f"- Fine-tuned from weights that had seen {earlier['samples_seen']:,} samples in {earlier['seconds'] / 60:.0f} min of training,"
            f" their last stage on {earlier['device']} (every stage: `docs/training_history.md`): {training.get('samples_seen_total', 0):,} samples in all."
        )
    if narrowing is not None:
        was = narrowing.narrowed_from
        lines.append(
            f"- Narrowed, when the weights had seen {narrowing.start_samples:,} samples, from a network with an image hourglass of"
            f" {was.get('image_channels', '?')} channels ({was.get('image_block_channels', '?')} inside each block) and a mesh hourglass of"
            f" {was.get('mesh_channels', '?')} ({was.get('mesh_block_channels', '?')} inside each block), keeping the channels"
            " their next layers weigh most (`tracker/narrowing.py`), then trained on"
            + (" in this stage." if narrowing.name == CURRENT_STAGE else f" (stage `{narrowing.name}` and after).")
        )
    lines += [
        f"- Peak learning rate {recipe.get('learning_rate', '?')}, AdamW, cosine schedule; refit terms from step {recipe.get('refit_start_step', '?')}.",
        "- Data rendered on the fly: `python -m tracker.train --recipe cpu|gpu` (see `tracker/train.py`); `--init-from DIR` fine-tunes exported weights.",
        "",
    ]
    if training_curve:
        lines += [
            "Every stage's config and loss log are kept beside the weights (`training_config*.json`, `training_metrics*.csv`);"
            " the joint error on the training batches across all of them:",
            "",
            "![training history](eval/training_curve.png)",
            "",
        ]
    lines += [
        "## Metrics",
        "",
        f"Reproduce: `{command}` (it writes this card and `eval/` anew; a quicker check that leaves them as they are: "
        f"`{re.sub(r'--frames [0-9]+', '--frames 100 --out /tmp/eval --no-model-card', command)}`)",
        "",
        f"Held-out synthetic set ({synthetic['frames']} frames, seed stream {synthetic['stream_seed']}, with sensor noise):",
        "",
        *_background_plane_lines(synthetic.get("background_plane", "not recorded")),
        *_overlap_lines(synthetic.get("training_overlap")),
        *_scene_difference_lines(synthetic.get("scenes_differ_from_training")),
        "| metric | value |",
        "|---|---|",
        f"| mean joint error after refit | {synthetic['mean_joint_error_mm']:.2f} mm |",
        f"| mean vertex error P_s (network) | {synthetic['mean_initial_vertex_error_mm']:.2f} mm |",
        f"| mean vertex error P_r (refit) | {synthetic['mean_refined_vertex_error_mm']:.2f} mm |",
        f"| frames with all joints < 20 / 40 mm | {synthetic['success_curve']['fraction_of_frames'][20]:.2f} / {synthetic['success_curve']['fraction_of_frames'][40]:.2f} |",
        "",
    ]
    in_image = synthetic.get("whole_hand_in_image")
    if in_image and in_image["mean_joint_error_mm"] is not None and in_image["mean_joint_error_mm_partly_outside"] is not None:
        lines += [
            f"The hand is placed anywhere in the image, so in {1 - in_image['fraction_of_frames']:.0%} of the frames some keypoints lie outside it"
            f" (mean joint error {in_image['mean_joint_error_mm_partly_outside']:.2f} mm there, {in_image['mean_joint_error_mm']:.2f} mm where the whole hand is in view).",
            "",
        ]
    segmented = synthetic.get("segmentation_centred")
    if segmented and segmented["mean_joint_error_mm"] is not None:
        lines += [
            "Cropped where a run's tracker centres a track's first crop (segmentation, the hand-presence classifier choosing among the places it found"
            " where it doubts the first), instead of on the true visible centroid (the held-out frames are rendered as a window of the image 45 cm wide at the hand):"
            f" {segmented['frames_with_a_hand_found']} of {synthetic['frames']} frames have a hand found, centred {segmented['median_centre_offset_mm']:.1f} mm from the centroid (median),"
            f" with a mean joint error of {segmented['mean_joint_error_mm']:.2f} mm ({segmented['mean_joint_error_mm_centroid_crop_same_frames']:.2f} mm on the same frames cropped on the centroid)."
            f" In {segmented['fraction_centre_off_over_50mm']:.1%} of them the centre is more than 5 cm off, another part of the scene,"
            " mostly the arm, having been taken for the hand"
            + (
                f"; on the others the error is {segmented['mean_joint_error_mm_centre_within_50mm']:.2f} mm ({segmented['mean_joint_error_mm_centroid_crop_centre_within_50mm']:.2f} mm cropped on the centroid)."
                if segmented["mean_joint_error_mm_centre_within_50mm"] is not None
                else "."
            ),
            "",
        ]
    split = [b for b in synthetic.get("by_off_axis_angle", []) if b["frames"]]
    if split:
        lines += [
            "Mean joint error by the hand's angle off the optical axis: "
            + ", ".join(f"{b['degrees'][0]}–{b['degrees'][1]}° {b['mean_joint_error_mm']:.1f} mm ({b['frames']} frames)" for b in split)
            + ".",
            "",
        ]
    lines += [
        "![success curve](eval/success_curve.png)",
        "",
        f"The {len(synthetic.get('worst_frames', []))} held-out frames with the largest mean joint error (depth crop with the true skeleton | with the estimate):",
        "",
        "![worst held-out frames](eval/synthetic_worst.png)",
        "",
        "Per-joint mean error (mm): " + ", ".join(f"{k.lower()} {v:.1f}" for k, v in synthetic["per_joint_error_mm"].items()),
        "",
    ]
    if int8:
        q = int8["quantization"]
        chain = ", kept in 8 bits through the hourglasses' additions, ReLUs and upsamplings" if q.get("chain_operators_selected") else ""
        lines += [
            f"The 8-bit network (`dgn_int8.onnx`, backend `onnxruntime-int8`; `python -m tracker.quantize`: int8 convolution weights, one scale per"
            f" output channel, uint8 activations calibrated on {q['calibration_samples']} synthetic crops{chain}; the first convolution, the heads and"
            f" everything after them in float) on the same {int8['frames']} frames:"
            f" joints {int8['mean_joint_error_mm']:.2f} mm, P_s {int8['mean_initial_vertex_error_mm']:.2f} mm,"
            f" P_r {int8['mean_refined_vertex_error_mm']:.2f} mm, frames with all joints < 20 / 40 mm"
            f" {int8['success_curve']['fraction_of_frames'][20]:.2f} / {int8['success_curve']['fraction_of_frames'][40]:.2f}.",
            "",
        ]
    if real:
        fitting = real["median_fitting_error_mm"]
        lines += [
            f"Real SR305 frames ({real['hands_found']} of {real['frames']} with a hand found): median self-supervised fitting error "
            f"(hand points to predicted surface) " + (f"{fitting:.1f} mm." if fitting is not None else "not measured (no hand points)."),
            "",
            "![real overlays](eval/real_overlay.png)",
            "",
        ]
    if speed:
        lines += ["## Speed (batch 1, median ms; `python -m benchmarks.network_speed`, with the settings each result file records)", "", "| result file | stage | median ms |", "|---|---|---|"]
        for result_file, stages in speed.items():
            lines += [f"| {result_file} | {stage} | {ms:.2f} |" for stage, ms in stages.items() if ms is not None]
        lines.append("")
    lines += [
        "## Limitations",
        "",
        "- Trained on synthetic data only: real sensors differ (see the paper, §5.2, for the size of that gap).",
        _hand_shape_line(recipe.get("data")),
        "",
    ]
    path.write_text("\n".join(lines))


def _hand_shape_line(trained_on: dict | None) -> str:
    """The hand shapes the weights' last stage was trained on, from its recorded scene config
    (configs from before a setting existed lack it: the code then had none)."""
    pose = ((trained_on or {}).get("scene") or {}).get("pose")
    if not pose:
        return "- One hand model shape, its bones scaled at random (the weights do not record how much)."
    low, high = pose.get("hand_size_range", (0.9, 1.1))
    parts = [f"overall size {low:g}–{high:g}×"]
    if pose.get("finger_length_jitter"):
        parts.append(f"each finger's length ±{100 * pose['finger_length_jitter']:.0f} %")
    if pose.get("thickness_jitter"):
        parts.append(f"thickness ±{100 * pose['thickness_jitter']:.0f} %")
    parts.append(f"every bone's length and thickness ±{100 * pose.get('bone_scale_jitter', 0.0):.0f} % on its own")
    return f"- One hand model shape ({', '.join(parts)})."


def write_training_curve(weights_dir: Path, path: Path, held_out_mm: float, trained_samples: int | None = None) -> list[TrainingStage]:
    """Draw the weights' training history if their logs are there; the stages drawn ([] when
    none were). A broken history costs the picture, not the evaluation. ``trained_samples``:
    what the weights' manifest says they saw in all; logs that end elsewhere belong to other
    weights (new weights copied over old ones without their run's logs) and are not drawn."""
    try:
        stages = load_training_history(weights_dir)
        # Logs from before runs stopped between log rows wrote a last row end at most one
        # log interval short of where the weights stopped.
        last = stages[-1] if stages else None
        interval = 0 if last is None or not len(last.samples) else int(last.samples[-1] - (last.samples[-2] if len(last.samples) > 1 else 0))
        if last is not None and trained_samples is not None and not 0 <= trained_samples - last.end_samples <= interval:
            print(
                f"no training curve: the training logs in {weights_dir} end at {stages[-1].end_samples:,} samples, but the weights "
                f"there saw {trained_samples:,}. Put the run's config.json and metrics.csv beside them as "
                "training_config.json and training_metrics.csv (renaming the last stage's to training_config_NAME.json "
                "and training_metrics_NAME.csv)"
            )
            return []
        if stages:
            plot_training_curve(stages, path, held_out_mm)
            return stages
    except TrainingHistoryError as exc:
        print(f"no training curve: {exc}")
    return []


def cited_frames(metrics_path: Path) -> int | None:
    """How many held-out frames the figures in ``metrics_path`` (a weights folder's
    ``eval/synthetic_metrics.json``) came from; None where there are none to read."""
    try:
        frames = json.loads(metrics_path.read_text())["frames"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return frames if isinstance(frames, int) and not isinstance(frames, bool) else None


def _files_read(backend: str, with_int8: bool) -> list[str]:
    """The network files an evaluation with ``backend`` loads (and so verifies)."""
    read = {"onnxruntime-int8": [ONNX_INT8], "torch": [STATE_DICT], "torch-cuda": [STATE_DICT]}.get(backend, [ONNX])
    return read + ([ONNX_INT8] if with_int8 and ONNX_INT8 not in read else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracker.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="weights directory (default %(default)s)")
    parser.add_argument("--backend", default="onnxruntime", choices=list(BACKENDS), help="inference backend (default %(default)s)")
    parser.add_argument("--frames", type=int, default=1000, help="held-out synthetic frames (default %(default)s)")
    parser.add_argument("--real-dir", type=Path, default=DEFAULT_REAL_DIR, help="folder of real depth PNGs + intrinsics.json (default %(default)s)")
    parser.add_argument(
        "--real-hand", choices=HAND_CHOICES, default=Handedness.RIGHT.value,
        help="the side of the hands in --real-dir (default %(default)s, as in the SR305 frames), or auto: decided per frame as the "
        "tracker decides a track's first",
    )
    parser.add_argument("--out", type=Path, help="results directory (default WEIGHTS/eval)")
    parser.add_argument("--no-model-card", action="store_true", help="do not (re)write WEIGHTS/MODEL_CARD.md (needs --out elsewhere than WEIGHTS/eval, whose figures the card cites)")
    parser.add_argument(
        "--crop-frame", choices=[f.value for f in CropFrame],
        help="crop in this frame instead of the one the weights were trained in (a diagnostic: needs --out, writes no model card)",
    )
    parser.add_argument(
        "--stream-seed", type=int, default=EVAL_STREAM_SEED,
        help="draw the held-out frames from this seed stream instead (default %(default)s; the streams other parts of the project "
        "draw from are refused): a second set of frames to check figures against; needs --out, writes no model card",
    )
    parser.add_argument(
        "--keep-planes", action="store_true",
        help="leave a wall or table behind the hand in the crops, as the networks' training crops have it, instead of clearing it "
        "as the tracker does (a diagnostic: needs --out, writes no model card)",
    )
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    taken = taken_streams()
    if args.stream_seed < 0:
        parser.error("--stream-seed must be 0 or more")
    if args.stream_seed in taken:
        parser.error(f"--stream-seed {args.stream_seed} is the stream of {taken[args.stream_seed]}: its frames are not held out")
    # WEIGHTS/eval holds the float onnxruntime network's own figures, which the model card
    # cites (the default run adds the 8-bit network's beside them): a diagnostic goes elsewhere.
    into_own = (args.out or args.weights / EVAL_DIR).resolve() == (args.weights / EVAL_DIR).resolve()
    if args.crop_frame and into_own:
        parser.error("--crop-frame needs --out elsewhere than WEIGHTS/eval: the weights' own results there stay as they are")
    if args.keep_planes and into_own:
        parser.error("--keep-planes needs --out elsewhere than WEIGHTS/eval: the weights' own results there stay as they are")
    if args.backend != "onnxruntime" and into_own:
        parser.error(f"--backend {args.backend} needs --out elsewhere than WEIGHTS/eval, which holds the onnxruntime network's figures")
    if args.stream_seed != EVAL_STREAM_SEED and into_own:
        parser.error("--stream-seed needs --out elsewhere than WEIGHTS/eval, which holds the held-out set's own figures")
    if args.no_model_card and into_own:
        parser.error("--no-model-card needs --out elsewhere than WEIGHTS/eval, which holds the figures the model card cites")
    if args.out is not None and not into_own and args.out.name == EVAL_DIR and (args.out.parent / "dgn.json").is_file():
        parser.error(f"--out {args.out} holds the evaluation of the weights in {args.out.parent}, which their model card cites: give another folder")
    if into_own:
        # A quick check run into the weights' own folder would put its figures in the model
        # card in place of a larger run's, silently: it goes elsewhere.
        cited = cited_frames(args.weights / EVAL_DIR / "synthetic_metrics.json")
        if cited is not None and args.frames < cited:
            parser.error(
                f"{args.weights / 'eval'} holds the figures of {cited} frames, which the model card cites; a run of {args.frames} would "
                f"replace them: add --out DIR --no-model-card for a check, or run --frames {cited} (or more) to renew them"
            )
    try:
        FolderSource(args.real_dir)  # a bad folder fails now, not after the synthetic half
        manifest = load_manifest(args.weights)
        hand_model = HandModel.load()
        estimator = HandEstimator(create_backend(args.backend, args.weights), hand_model)
        int8_estimator = None
        if args.backend == "onnxruntime" and ONNX_INT8 in manifest["files"]:
            # Listed, so it must load: a stale or damaged 8-bit file fails here, before the run.
            int8_estimator = HandEstimator(create_backend("onnxruntime-int8", args.weights), hand_model)
        # The hand-presence classifier that picks a track's first place (the folder's own or
        # the shipped one): a damaged one fails now, not at the first frame.
        _hand_presence(str(args.weights))
    except (WeightsError, BackendUnavailable, SourceError, HandModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.weights / EVAL_DIR
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, no permission
        print(f"error: cannot write the results into {out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    example_config = example_config_for(manifest)
    if args.crop_frame:
        example_config = dataclasses.replace(example_config, crop_frame=CropFrame(args.crop_frame))
    background_plane = None if args.keep_planes else BackgroundPlane()
    # What produced each results file, so a figure can be traced to its weights, data and code.
    provenance = {
        "command": ["python", "-m", "tracker.evaluate", *(sys.argv[1:] if argv is None else argv)],
        # The manifest's files, and those this run read (each checked against its checksum).
        "weights": {"directory": str(args.weights.absolute()), "files": manifest.get("files"), "files_read": _files_read(args.backend, int8_estimator is not None)},
        "example_config": config_to_dict(example_config),
        # What every crop clears behind the hand, as the tracker's (None: nothing).
        "background_plane": None if background_plane is None else config_to_dict(background_plane),
        "machine": machine_info(),
    }
    synthetic = evaluate_synthetic(
        estimator, args.frames, example_config, stream_seed=args.stream_seed, weights_dir=str(args.weights), background_plane=background_plane
    )
    synthetic["backend"] = args.backend
    synthetic["training_overlap"] = training_stream_overlap(args.frames, manifest, stream_seed=args.stream_seed)
    trained_on = manifest.get("training", {}).get("recipe", {}).get("data")
    synthetic["scenes_differ_from_training"] = scene_differences(trained_on, provenance["example_config"], config_to_dict(ExampleConfig()))
    synthetic.update(provenance)
    if synthetic["training_overlap"]["frames_that_are_training_samples"]:
        print(f"warning: held-out frames {synthetic['training_overlap']['frames_that_are_training_samples']} are also training samples (a shared 32-bit seed)")
    elif synthetic["training_overlap"]["frames_that_are_training_samples"] is None:
        print("warning: the weights do not record how much of the training stream they saw; whether any held-out frame is a training sample is not known")
    (out / "synthetic_metrics.json").write_text(json.dumps(synthetic, indent=2) + "\n")
    plot_success_curve(synthetic, out / "success_curve.png")
    write_sheet(
        [synthetic_frame_row(estimator, example_config, f, stream_seed=args.stream_seed, background_plane=background_plane) for f in synthetic["worst_frames"]],
        out / "synthetic_worst.png",
    )
    training = manifest.get("training", {})
    trained_samples = training.get("samples_seen_total", training.get("samples_seen"))
    history = write_training_curve(
        args.weights, out / "training_curve.png", synthetic["mean_joint_error_mm"], trained_samples if isinstance(trained_samples, int) else None
    )
    int8 = None
    if int8_estimator is not None:
        # The same frames, so the model card can say what the 8-bit network costs.
        int8 = evaluate_synthetic(
            int8_estimator, args.frames, example_config, stream_seed=args.stream_seed, weights_dir=str(args.weights), background_plane=background_plane
        )
        int8["backend"] = "onnxruntime-int8"
        int8["quantization"] = manifest["onnx_int8"]
        int8.update(provenance)
        (out / "synthetic_metrics_int8.json").write_text(json.dumps(int8, indent=2) + "\n")
    else:
        (out / "synthetic_metrics_int8.json").unlink(missing_ok=True)  # an earlier run's, for other weights
        if args.backend == "onnxruntime":
            print(f"no 8-bit network in {args.weights} to evaluate beside it (python -m tracker.quantize makes one)")
    real = None
    if args.real_dir:
        try:
            real, rows = evaluate_real(
                estimator, args.real_dir, manifest["cube_size_m"], example_config.crop_frame, example_config.crop_size, example_config.out_of_image,
                str(args.weights), args.real_hand, background_plane,
            )
        except SourceError as exc:  # a damaged frame in the folder
            print(f"error: {exc} (the synthetic results are in {out}; no model card was written)", file=sys.stderr)
            return 2
        real.update(provenance, real_dir=str(args.real_dir))
        (out / "real_fitting.json").write_text(json.dumps(real, indent=2) + "\n")
        write_sheet(rows, out / "real_overlay.png")
    print(
        f"held-out synthetic ({args.frames} frames): joints {synthetic['mean_joint_error_mm']:.2f} mm, "
        f"P_s {synthetic['mean_initial_vertex_error_mm']:.2f} mm, P_r {synthetic['mean_refined_vertex_error_mm']:.2f} mm"
    )
    if real:
        fitting = real["median_fitting_error_mm"]
        print(f"real frames: {real['hands_found']}/{real['frames']} hands, median fitting error " + (f"{fitting:.1f} mm" if fitting is not None else "not measured"))
    if int8:
        print(
            f"8-bit network (onnxruntime-int8), same frames: joints {int8['mean_joint_error_mm']:.2f} mm, "
            f"P_s {int8['mean_initial_vertex_error_mm']:.2f} mm, P_r {int8['mean_refined_vertex_error_mm']:.2f} mm"
        )
    print(f"results in {out} ({time.perf_counter() - began:.0f} s)")
    # The card is the weights' own: written from their float run into WEIGHTS/eval, whose
    # images it shows. Another backend, frame or folder is a diagnostic beside it.
    own_run = args.backend == "onnxruntime" and args.crop_frame is None and not args.keep_planes and args.stream_seed == EVAL_STREAM_SEED and out.resolve() == (args.weights / EVAL_DIR).resolve()
    if own_run and not args.no_model_card:
        command = "python -m tracker.evaluate" + (f" --weights {args.weights}" if args.weights.resolve() != WEIGHTS_DIR.resolve() else "") + f" --frames {args.frames}"
        if args.real_dir != DEFAULT_REAL_DIR:
            command += f" --real-dir {args.real_dir}"
        if args.real_hand != Handedness.RIGHT.value:
            command += f" --real-hand {args.real_hand}"
        write_model_card(args.weights / MODEL_CARD, manifest, synthetic, real, command, network_speeds(manifest), bool(history), int8, last_narrowing(history))
    elif not args.no_model_card:
        print(f"no model card written: it cites the onnxruntime network's own run into {args.weights / 'eval'}")
    return 0


def network_speeds(manifest: dict, results_dir: Path = ROOT / "benchmarks" / "results") -> dict | None:
    """Median ms per stage from the network speed results measured with these weights (a
    result for other weights, kept for comparison, is left out; so is an 8-bit figure of
    another 8-bit file)."""
    speed = {}
    # Sub-folders too: a set of figures measured together (benchmarks/cpu_headline.sh) keeps
    # its files' names, told apart by the folder's.
    for f in sorted(results_dir.rglob("network_speed_*.json")):
        data = json.loads(f.read_text())
        weights = data.get("weights", {})
        if weights.get("onnx_sha256") != manifest["files"].get(ONNX):
            continue
        stages = {k: v.get("median_ms") if isinstance(v, dict) else v for k, v in data.get("backends", {}).items()}
        if weights.get("onnx_int8_sha256") != manifest["files"].get(ONNX_INT8):
            stages.pop("onnxruntime-int8", None)
        if "refit" in data:
            stages["refit_numba"] = data["refit"].get("median_ms")
        speed[f.relative_to(results_dir).with_suffix("").as_posix()] = stages
    return speed or None


if __name__ == "__main__":
    raise SystemExit(main())
