"""What the online refinement (``tracker.refine``, on by default; ``--no-refine``) gains and costs.

    python -m benchmarks.refinement                          # 500 held-out frames + the SR305 frames
    python -m benchmarks.refinement --frames 50 --out /tmp/refinement.json

Held-out synthetic frames (the evaluation's stream, with sensor noise; ``tracker.evaluate``)
are cropped on the hand's true visible centroid as the tracker crops them (a wall or table
right behind the hand cleared), run through the network and the refit, and refined: the mean
joint error and the mean error of the refined vertices P_r against the rendered truth, before
and after, with the refinement's time per hand. Per-frame differences say how often it helps
and by how much it can hurt.

On the real SR305 frames (``tests/data/sr305-gestures``, each taken as a track's first, as
the evaluation does) there is no truth: the self-supervised fitting error (median distance
of the crop's hand points to the mesh surface) before and after, which the refinement
minimises and so cannot judge it alone, and a contact sheet of the frames it moved most
(depth | fit before | fit after) to look at.

Writes ``benchmarks/results/refinement.json`` and ``refinement.png`` beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from benchmarks import check_output_path, result_header, write_result
from tracker.backends import create_backend
from tracker.crop import BackgroundPlane, make_crop
from tracker.estimator import HandEstimator
from tracker.evaluate import DEFAULT_REAL_DIR, EVAL_STREAM_SEED, first_frame_centre, overlay_row, surface_samples
from tracker.lens import pinhole_view
from tracker.refine import RefineConfig, Refiner, crop_hand_points
from tracker.sources import FolderSource
from tracker.synth.dataset import sample_seed
from tracker.synth.scene import render_sample
from tracker.training_data import ExampleConfig, measured_hand
from tracker.types import Handedness
from tracker.weights import WEIGHTS_DIR, crop_frame_of, load_manifest

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
#: Real frames shown in the contact sheet: those the refinement moved most.
SHEET_FRAMES = 6


def _summary(before: np.ndarray, after: np.ndarray) -> dict:
    change = after - before
    return {
        "before_mm": float(before.mean()),
        "after_mm": float(after.mean()),
        "median_before_mm": float(np.median(before)),
        "median_after_mm": float(np.median(after)),
        "share_of_frames_closer": float(np.mean(change < 0)),
        "largest_gain_mm": float(-change.min()),
        "largest_loss_mm": float(max(change.max(), 0.0)),
    }


def synthetic(estimator: HandEstimator, refiner: Refiner, frames: int, progress: bool) -> dict:
    config = ExampleConfig()
    model = estimator.hand_model
    joints, vertices, distances, times, points = [], [], [], [], []
    for index in tqdm(range(frames), desc="held-out frames", unit="frame", disable=not progress):
        sample = render_sample(model, config.scene, sample_seed(EVAL_STREAM_SEED, index))
        depth_m, centroid = measured_hand(sample)
        crop = make_crop(
            depth_m, sample.intrinsics, centroid, config.cube_size_m, sample.pose.handedness, crop_size=config.crop_size, frame=config.crop_frame,
            out_of_image=config.out_of_image, sensor=sample.sensor, background_plane=BackgroundPlane(),
        )
        output, _ = estimator.run(crop)
        t0 = time.perf_counter()
        refined, _ = refiner.refine(crop, output)
        times.append(1e3 * (time.perf_counter() - t0))
        # Measured apart from the timed call: the measuring matches points once more.
        report = refiner.refine(crop, output, measure=True)[1]
        points.append(report["points"])
        distances.append((report["before_mm"], report["after_mm"]))
        joints.append([np.linalg.norm(o.joints - sample.joints, axis=1).mean() * 1e3 for o in (output, refined)])
        vertices.append([np.linalg.norm(o.refined_vertices - sample.vertices, axis=1).mean() * 1e3 for o in (output, refined)])
    joints, vertices, times = np.array(joints), np.array(vertices), np.array(times[1:] or times)  # the first call loads the kernels
    measured = np.array([d for d in distances if d[0] is not None], np.float64)
    return {
        "frames": frames,
        "stream_seed": EVAL_STREAM_SEED,
        "crop": "true visible centroid, background plane cleared",
        "mean_joint_error": _summary(joints[:, 0], joints[:, 1]),
        "mean_vertex_error_p_r": _summary(vertices[:, 0], vertices[:, 1]),
        "mean_point_to_plane_mm": {"before": float(measured[:, 0].mean()), "after": float(measured[:, 1].mean())} if len(measured) else None,
        "frames_refined": int(np.sum(np.array(points) > 0)),
        "refine_ms": {"median": float(np.median(times)), "p90": float(np.percentile(times, 90)), "p99": float(np.percentile(times, 99))},
    }


def real(estimator: HandEstimator, refiner: Refiner, folder: Path, weights: Path) -> tuple[dict, list[np.ndarray]]:
    manifest = load_manifest(weights)
    cube_size_m, crop_frame = manifest["cube_size_m"], crop_frame_of(manifest)
    source = FolderSource(folder)
    faces = estimator.hand_model.faces
    rows, per_frame = [], []
    for path, frame in zip(source.files, source.frames()):
        name = str(path.relative_to(folder))
        depth_m, intrinsics = pinhole_view(frame.depth_m(), frame.intrinsics)
        centre = first_frame_centre(depth_m, intrinsics, cube_size_m, weights_dir=str(weights), background_plane=BackgroundPlane())
        if centre is None:
            per_frame.append({"frame": name, "hand_found": False})
            continue
        # The SR305 frames' hands are right hands (as the evaluation takes them).
        crop = make_crop(depth_m, intrinsics, centre, cube_size_m, Handedness.RIGHT, frame=crop_frame, background_plane=BackgroundPlane())
        output, _ = estimator.run(crop)
        refined, _ = refiner.refine(crop, output)
        hand_points = crop_hand_points(crop, output.hand_probability, 10**6)
        fitting = [float(np.median(cKDTree(surface_samples(o.refined_vertices, faces)).query(hand_points)[0]) * 1e3) for o in (output, refined)]
        moved = float(np.linalg.norm(refined.joints - output.joints, axis=1).mean() * 1e3)
        per_frame.append({"frame": name, "hand_found": True, "fitting_error_before_mm": fitting[0], "fitting_error_after_mm": fitting[1], "joints_moved_mm": moved})
        before = overlay_row(depth_m, intrinsics, output.refined_vertices, faces, output.joints, f"{name}: {fitting[0]:.1f} mm")
        after = overlay_row(depth_m, intrinsics, refined.refined_vertices, faces, refined.joints, "")
        after = np.ascontiguousarray(after[:, after.shape[1] // 2 :])  # its fit alone: the depth panel is before's
        cv2.putText(after, f"refined: {fitting[1]:.1f} mm, joints moved {moved:.1f} mm", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append((moved, [before, after]))
    found = [f for f in per_frame if f["hand_found"]]
    summary = {
        "folder": folder.name,
        "frames": len(per_frame),
        "hands_found": len(found),
        "median_fitting_error_before_mm": float(np.median([f["fitting_error_before_mm"] for f in found])) if found else None,
        "median_fitting_error_after_mm": float(np.median([f["fitting_error_after_mm"] for f in found])) if found else None,
        "joints_moved_mm_median": float(np.median([f["joints_moved_mm"] for f in found])) if found else None,
        "per_frame": per_frame,
    }
    shown = [np.concatenate(row, axis=1) for _, row in sorted(rows, key=lambda r: -r[0])[:SHEET_FRAMES]]
    return summary, shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.refinement",
        description="The online refinement's gain and cost: joint and vertex error before and after on held-out synthetic frames, "
        "its time per hand, and the fitting error on the real SR305 frames with a contact sheet.",
    )
    parser.add_argument("--frames", type=int, default=500, help="held-out synthetic frames, from index 0 of the evaluation's stream (default %(default)s)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="exported weights directory (default %(default)s)")
    parser.add_argument("--backend", default="onnxruntime", help="inference backend (default %(default)s)")
    parser.add_argument("--real-dir", type=Path, default=DEFAULT_REAL_DIR, help="folder of real depth PNGs + intrinsics.json (default %(default)s)")
    parser.add_argument("--iterations", type=int, default=RefineConfig.iterations, help="Gauss-Newton steps per hand (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "refinement.json", help="result JSON; the contact sheet goes beside it as .png (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.iterations < 0:
        parser.error("--iterations must be 0 or more")
    check_output_path(parser, "--out", args.out)

    began = time.perf_counter()
    estimator = HandEstimator(create_backend(args.backend, str(args.weights)))
    config = RefineConfig(iterations=args.iterations)
    refiner = Refiner(estimator.hand_model, config)
    held_out = synthetic(estimator, refiner, args.frames, not args.no_progress)
    real_summary, sheet = real(estimator, refiner, args.real_dir, args.weights)
    result = {
        **result_header("refinement", argv),
        "config": {"refine": dataclasses.asdict(config), "weights": str(args.weights), "backend": args.backend, "frames": args.frames},
        "synthetic": held_out,
        "real": real_summary,
        "seconds": time.perf_counter() - began,
    }
    write_result(args.out, result)
    if sheet:
        cv2.imwrite(str(args.out.with_suffix(".png")), np.concatenate(sheet, axis=0))
    joints = held_out["mean_joint_error"]
    print(
        f"held-out synthetic ({args.frames} frames): mean joint error {joints['before_mm']:.2f} -> {joints['after_mm']:.2f} mm "
        f"({joints['share_of_frames_closer']:.0%} of frames closer, largest loss {joints['largest_loss_mm']:.1f} mm); "
        f"P_r {held_out['mean_vertex_error_p_r']['before_mm']:.2f} -> {held_out['mean_vertex_error_p_r']['after_mm']:.2f} mm; "
        f"refinement {held_out['refine_ms']['median']:.2f} ms median a hand"
    )
    if real_summary["hands_found"]:
        print(
            f"real ({real_summary['hands_found']} of {real_summary['frames']} frames): median fitting error "
            f"{real_summary['median_fitting_error_before_mm']:.2f} -> {real_summary['median_fitting_error_after_mm']:.2f} mm"
        )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
