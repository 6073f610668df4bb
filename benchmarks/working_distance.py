"""Working distance: how often the tracker reports a hand, and how well it fits it, by how
far the hand is from the camera.

    python -m benchmarks.working_distance                       # 100 poses x 9 distances
    python -m benchmarks.working_distance --poses 4 --out /tmp/distance.json

Each pose is the first frame of the built-in synthetic input (``SyntheticSource``, seeds
S..S+N-1: right hands on even seeds, left on odd ones, an arm running out of view, stereo
noise), moved along its ray from the camera so that the hand's origin lies at each distance,
rendered again and tracked as the first frame of a track (no prior, the side decided from
that frame alone): the hardest case, as after the hand was lost. The tracker is the
command line's and the API's (``tracker.api.open_tracker``: the shipped weights, the
hand-presence and side classifiers on).

Per distance: the share of frames with a hand reported, judged to hold none (a crop found
and turned down by the hand-presence evidence), or with nothing found; the mean joint error
of the hands reported, mm, against the rendered joints; the share of them given the right
side; and the share of frames whose every keypoint lies inside the image.

Writes ``benchmarks/results/working_distance.json`` (with the command, machine and settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import cell, check_output_path, print_table, result_header, write_result
from kernels.sensor_noise import StereoNoiseModel
from tracker.backends import AUTO_BACKEND, BACKENDS
from tracker.lens import project
from tracker.sources import SyntheticSource, render_hand_pose
from tracker.types import DepthFrame, Handedness

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class WorkingDistanceConfig:
    poses: int = 100
    first_seed: int = 0
    #: Metres from the camera to the hand's origin (its wrist end), along its ray.
    distances_m: tuple[float, ...] = (0.15, 0.2, 0.3, 0.45, 0.6, 0.9, 1.2, 1.4, 1.6)
    backend: str = "onnxruntime"


def _in_image(joints_cam_m: np.ndarray, intrinsics) -> bool:
    uv = project(joints_cam_m, intrinsics)
    return bool(np.all(joints_cam_m[:, 2] > 0) and np.all((uv >= 0) & (uv < [intrinsics.width, intrinsics.height])))


def pose_at_distance(seed: int, distance_m: float) -> tuple[SyntheticSource, np.ndarray, object]:
    """The built-in input's first pose of ``seed`` (right hands on even seeds, left on odd),
    moved along its ray so that the hand's origin lies ``distance_m`` from the camera, and
    rendered again with the built-in input's noise: (its source, the (H, W) depth in the
    source's units, the posed hand)."""
    source = SyntheticSource(seed=seed, max_frames=1, hand=Handedness.RIGHT if seed % 2 == 0 else Handedness.LEFT)
    pose = source.pose_at(0)
    moved = np.array(pose.cam_from_hand, np.float64)
    moved[:3, 3] *= distance_m / moved[2, 3]
    rng = np.random.default_rng([seed, int(round(1000 * distance_m))])
    depth, posed, _ = render_hand_pose(
        source.hand_model, dataclasses.replace(pose, cam_from_hand=moved), source.intrinsics, source.depth_scale,
        noise=StereoNoiseModel(), rng=rng, arm_length_m=source.ARM_LENGTH_M,  # the built-in input's noise
    )
    return source, depth, posed


def first_frame_outcome(tracker, source: SyntheticSource, depth: np.ndarray, posed) -> dict:
    """Track ``depth`` as a track's first frame: what became of it, and the joint error (mm)
    and side of the hand reported."""
    return track_first_frame(tracker, DepthFrame(depth, source.depth_scale, source.intrinsics), posed.joints, source.hand)


def track_first_frame(tracker, frame: DepthFrame, joints_cam_m: np.ndarray, side, timings_ms: dict | None = None) -> dict:
    """``frame`` tracked as a track's first: what became of it ("hand", "judged_no_hand",
    "nothing_found"), the joint error (mm) against the (21, 3) true joints and whether the
    hand reported is on the true ``side``. ``timings_ms``, if given, gets each stage's
    milliseconds (``FrameResult.timings_ms``)."""
    tracker.reset()
    result = tracker.process(frame)
    if timings_ms is not None:
        timings_ms.update(result.timings_ms)
    hand = result.hands[0] if result.hands else None
    return {
        "outcome": "hand" if hand is not None else "judged_no_hand" if result.judged_no_hand else "nothing_found",
        "joint_error_mm": None if hand is None else float(1000 * np.linalg.norm(hand.joints_cam_m - joints_cam_m, axis=1).mean()),
        "side_right": None if hand is None else hand.handedness == side,
    }


def outcome_summary(frames: list[dict]) -> dict:
    """Shares of ``first_frame_outcome``s, and the mean error and side of the hands reported."""
    found = [f for f in frames if f["outcome"] == "hand"]
    return {
        "frames": len(frames),
        "hand_reported": len(found) / len(frames),
        "judged_no_hand": sum(f["outcome"] == "judged_no_hand" for f in frames) / len(frames),
        "nothing_found": sum(f["outcome"] == "nothing_found" for f in frames) / len(frames),
        "mean_joint_error_mm": float(np.mean([f["joint_error_mm"] for f in found])) if found else None,
        "side_right": sum(f["side_right"] for f in found) / len(found) if found else None,
    }


def measure(config: WorkingDistanceConfig, progress: bool = True) -> list[dict]:
    from tracker.api import open_tracker

    outcomes = {z: [] for z in config.distances_m}
    with open_tracker(backend=config.backend) as tracker:
        seeds = range(config.first_seed, config.first_seed + config.poses)
        for seed in tqdm(seeds, desc="poses", disable=not progress):
            for z in config.distances_m:
                source, depth, posed = pose_at_distance(seed, z)
                outcomes[z].append({"seed": seed, **first_frame_outcome(tracker, source, depth, posed), "in_image": _in_image(posed.joints, source.intrinsics)})
    return [
        {
            "distance_m": z,
            **outcome_summary(frames),
            "whole_hand_in_image": sum(f["in_image"] for f in frames) / len(frames),
            "per_pose": frames,
        }
        for z, frames in outcomes.items()
    ]


def add_first_frame_arguments(parser: argparse.ArgumentParser, defaults, per: str, result_name: str) -> None:
    """The options of a benchmark that tracks synthetic poses as first frames: how many poses
    (seeds) per ``per`` and from which seed, the backend, the result file and the progress bar.
    ``defaults``: its config class, whose fields give the defaults."""
    parser.add_argument("--poses", type=int, default=defaults.poses, help=f"poses (seeds) per {per} (default %(default)s)")
    parser.add_argument("--first-seed", type=int, default=defaults.first_seed, help="seed of the first pose (default %(default)s)")
    parser.add_argument("--backend", default=defaults.backend, choices=[AUTO_BACKEND, *BACKENDS], help="inference backend (default %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / result_name, help=f"result JSON (default benchmarks/results/{result_name})"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.working_distance",
        description="How often a hand is reported, and how well it is fitted, by its distance from the camera "
        "(synthetic poses moved along their rays, each tracked as a track's first frame).",
    )
    add_first_frame_arguments(parser, WorkingDistanceConfig, "distance", "working_distance.json")
    parser.add_argument(
        "--distances", type=float, nargs="+", default=list(WorkingDistanceConfig.distances_m), metavar="M",
        help="distances from the camera, metres (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.poses < 1 or args.first_seed < 0:
        parser.error("--poses must be at least 1, --first-seed at least 0")
    if not all(0.05 < z < 3.0 for z in args.distances):
        parser.error("--distances must lie between 0.05 and 3 m (what the renderer draws)")
    check_output_path(parser, "--out", args.out)
    config = WorkingDistanceConfig(poses=args.poses, first_seed=args.first_seed, distances_m=tuple(args.distances), backend=args.backend)

    began = time.perf_counter()
    rows = measure(config, progress=not args.no_progress)
    result = {
        **result_header("working_distance", argv),
        "config": asdict(config),
        "by_distance": rows,
        "seconds": time.perf_counter() - began,
    }
    write_result(args.out, result)
    print_table(
        ["distance", "hand", "judged no hand", "nothing", "joint error", "side right", "all in image"],
        [
            [f"{row['distance_m']:.2f} m", f"{row['hand_reported']:.0%}", f"{row['judged_no_hand']:.0%}", f"{row['nothing_found']:.0%}",
             cell(row["mean_joint_error_mm"], ".1f", " mm"), cell(row["side_right"], ".0%"), f"{row['whole_hand_in_image']:.0%}"]
            for row in rows
        ],
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
