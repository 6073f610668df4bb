"""Working distance: how often the tracker reports a hand, and how well it fits it, by how
far the hand is from the camera.

    python -m benchmarks.working_distance                       # 100 poses x 9 distances, 12 tracked x 4
    python -m benchmarks.working_distance --poses 4 --track-sequences 0 --out /tmp/distance.json

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

Tracked (``--track-sequences``, ``--track-distances``): the built-in input's moving hands
(seeds 40-45 unless told, a right and a left hand each, 90 frames), every pose moved along
its ray to each distance, tracked as a run tracks them; per distance, as
``benchmarks.near_surfaces``' tracked part: the frames with a hand, the side right (all,
and at a track's frames 1, 16 and 31), the side changes and the mean joint error.

The tracker refines its estimates (``tracker.refine``), as ``run_tracker.py`` does by
default; ``--no-refine`` tracks without (``benchmarks/results/working_distance_no_refine.json``).

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


#: The tracked sequences' first seed of the built-in input (``SyntheticSource``): the
#: committed benchmarks that track its sequences use seeds 0-33.
TRACK_FIRST_SEED = 40
#: Track frames (1 = the first) at which the side reported is counted: the first, and
#: the frames after the next side checks (``TrackerConfig.side_check_every``, 15).
SIDE_AT_FRAMES = (1, 16, 31)


@dataclass(frozen=True)
class WorkingDistanceConfig:
    poses: int = 100
    first_seed: int = 0
    #: Metres from the camera to the hand's origin (its wrist end), along its ray.
    distances_m: tuple[float, ...] = (0.15, 0.2, 0.3, 0.45, 0.6, 0.9, 1.2, 1.4, 1.6)
    backend: str = "onnxruntime"
    #: Tracked sequences (``measure_tracked``): seeds from ``track_first_seed``, a right
    #: and a left hand each, ``track_frames`` frames, at each of ``track_distances_m``.
    track_sequences: int = 6
    track_first_seed: int = TRACK_FIRST_SEED
    track_frames: int = 90
    track_distances_m: tuple[float, ...] = (0.45, 0.9, 1.2, 1.4)
    #: Track with the online refinement (``tracker.refine``; the tracker's default).
    refine: bool = True


def _in_image(joints_cam_m: np.ndarray, intrinsics) -> bool:
    uv = project(joints_cam_m, intrinsics)
    return bool(np.all(joints_cam_m[:, 2] > 0) and np.all((uv >= 0) & (uv < [intrinsics.width, intrinsics.height])))


def render_at_distance(source: SyntheticSource, frame_number: int, distance_m: float, rng: np.random.Generator):
    """``source``'s pose at ``frame_number`` moved along its ray so that the hand's origin
    lies ``distance_m`` from the camera, and rendered again with the built-in input's noise:
    (the (H, W) depth in the source's units, the posed hand)."""
    pose = source.pose_at(frame_number)
    moved = np.array(pose.cam_from_hand, np.float64)
    moved[:3, 3] *= distance_m / moved[2, 3]
    depth, posed, _ = render_hand_pose(
        source.hand_model, dataclasses.replace(pose, cam_from_hand=moved), source.intrinsics, source.depth_scale,
        noise=StereoNoiseModel(), rng=rng, arm_length_m=source.ARM_LENGTH_M,  # the built-in input's noise
    )
    return depth, posed


def pose_at_distance(seed: int, distance_m: float) -> tuple[SyntheticSource, np.ndarray, object]:
    """The built-in input's first pose of ``seed`` (right hands on even seeds, left on odd),
    moved along its ray to ``distance_m`` (``render_at_distance``): (its source, the (H, W)
    depth in the source's units, the posed hand)."""
    source = SyntheticSource(seed=seed, max_frames=1, hand=Handedness.RIGHT if seed % 2 == 0 else Handedness.LEFT)
    depth, posed = render_at_distance(source, 0, distance_m, np.random.default_rng([seed, int(round(1000 * distance_m))]))
    return source, depth, posed


def sequence_at_distance(seed: int, hand: Handedness, frames: int, distance_m: float, hand_model=None):
    """Yield (frame, (21, 3) true joints) for the first ``frames`` frames of the built-in
    input's moving ``hand`` (``SyntheticSource(seed)``), each pose moved along its ray to
    ``distance_m`` (``render_at_distance``): the hand moves across the view and turns as it
    does at arm's length, at that distance."""
    source = SyntheticSource(seed=seed, max_frames=frames, hand=hand, hand_model=hand_model)
    for i in range(frames):
        depth, posed = render_at_distance(source, i, distance_m, np.random.default_rng([seed, i, int(round(1000 * distance_m))]))
        frame = DepthFrame(depth, source.depth_scale, source.intrinsics, timestamp_ms=1000.0 * i / source.fps, serial="synthetic", frame_number=i)
        yield frame, posed.joints


def track_sequences(config, key: str, settings, sequence, progress: bool = True, adjust=None) -> list[dict]:
    """Track the built-in input's moving hands (``config.track_sequences`` seeds from
    ``config.track_first_seed``, a right and a left hand each) under each of ``settings``
    (a gap to a surface, a distance: ``key`` names it in the rows), the frames
    ``sequence(seed, hand, setting)`` yields as (frame, true joints).

    Per setting: the frames with a hand reported, the share of those on the true side (all,
    and at ``SIDE_AT_FRAMES`` of each track), the side changes, the mean joint error (mm),
    of all and of those on the true side, and each stage's median milliseconds
    (``FrameResult.timings_ms``, on the machine the result file names). ``config``: also
    its ``track_frames``, ``backend`` and, where it has one, ``refine``; ``adjust``: called
    on the tracker once opened (a benchmark's setting)."""
    from tracker.api import open_tracker

    seeds = range(config.track_first_seed, config.track_first_seed + config.track_sequences)
    runs = [(setting, seed, hand) for setting in settings for seed in seeds for hand in (Handedness.RIGHT, Handedness.LEFT)]
    outcomes = {setting: {"right": [], "errors": [], "changes": 0, "at": {n: [] for n in SIDE_AT_FRAMES}, "ms": {}} for setting in settings}
    with open_tracker(backend=config.backend, refine=getattr(config, "refine", True)) as tracker:
        if adjust is not None:
            adjust(tracker)
        for setting, seed, hand in tqdm(runs, desc="tracked sequences", disable=not progress):
            tracker.reset()
            last, track_frame, out = None, 0, outcomes[setting]
            for frame, joints in sequence(seed, hand, setting):
                result = tracker.process(frame)
                for stage, ms in result.timings_ms.items():
                    out["ms"].setdefault(stage, []).append(ms)
                if not result.hands:
                    last, track_frame = None, 0
                    continue
                track_frame += 1
                reported = result.hands[0].handedness
                out["right"].append(reported == hand)
                out["errors"].append(float(1000 * np.linalg.norm(result.hands[0].joints_cam_m - joints, axis=1).mean()))
                out["changes"] += last is not None and reported != last
                if track_frame in out["at"]:
                    out["at"][track_frame].append(reported == hand)
                last = reported
    rows = []
    for setting, out in outcomes.items():
        right, errors = np.array(out["right"], bool), np.array(out["errors"])
        rows.append({
            key: setting,
            "sequences": 2 * config.track_sequences,
            "frames": 2 * config.track_sequences * config.track_frames,
            "frames_with_a_hand": int(len(right)),
            "side_right": float(right.mean()) if len(right) else None,
            "side_right_at_track_frame": {str(n): float(np.mean(v)) if v else None for n, v in out["at"].items()},
            "tracks_at_track_frame": {str(n): len(v) for n, v in out["at"].items()},
            "side_changes": int(out["changes"]),
            "mean_joint_error_mm": float(errors.mean()) if len(errors) else None,
            "mean_joint_error_side_right_mm": float(errors[right].mean()) if right.any() else None,
            # Over the frames each stage ran in: segmentation (every frame) is what a surface
            # behind the hand costs most, each candidate it peels off a slice of it.
            "median_stage_ms": {stage: float(np.median(ms)) for stage, ms in out["ms"].items()},
        })
    return rows


def measure_tracked(config: WorkingDistanceConfig, progress: bool = True) -> list[dict]:
    """Per distance (``config.track_distances_m``): the built-in input's moving hands
    tracked at that distance (``sequence_at_distance``), as ``track_sequences`` reports them."""
    from tracker.hand_model import HandModel

    hand_model = HandModel.load()
    return track_sequences(
        config, "distance_m", config.track_distances_m,
        lambda seed, hand, distance_m: sequence_at_distance(seed, hand, config.track_frames, distance_m, hand_model),
        progress,
    )


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
    with open_tracker(backend=config.backend, refine=config.refine) as tracker:
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
    parser.add_argument(
        "--track-sequences", type=int, default=WorkingDistanceConfig.track_sequences,
        help="tracked sequences of the built-in input, a right and a left hand each, moved to each --track-distances "
        "(default %(default)s; 0: none)",
    )
    parser.add_argument("--track-frames", type=int, default=WorkingDistanceConfig.track_frames, help="frames per tracked sequence (default %(default)s)")
    parser.add_argument(
        "--track-distances", type=float, nargs="+", default=list(WorkingDistanceConfig.track_distances_m), metavar="M",
        help="distances the tracked sequences are moved to, metres (default %(default)s)",
    )
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True, help="track with the online refinement, as run_tracker.py does by default (--no-refine: without it)")
    args = parser.parse_args(argv)
    if args.poses < 1 or args.first_seed < 0:
        parser.error("--poses must be at least 1, --first-seed at least 0")
    if not all(0.05 < z < 3.0 for z in (*args.distances, *args.track_distances)):
        parser.error("--distances and --track-distances must lie between 0.05 and 3 m (what the renderer draws)")
    if args.track_sequences < 0 or args.track_frames < 1:
        parser.error("--track-sequences must be at least 0 and --track-frames at least 1")
    check_output_path(parser, "--out", args.out)
    config = WorkingDistanceConfig(
        poses=args.poses, first_seed=args.first_seed, distances_m=tuple(args.distances), backend=args.backend,
        track_sequences=args.track_sequences, track_frames=args.track_frames, track_distances_m=tuple(args.track_distances),
        refine=args.refine,
    )

    began = time.perf_counter()
    rows = measure(config, progress=not args.no_progress)
    tracked = measure_tracked(config, progress=not args.no_progress) if config.track_sequences else []
    result = {
        **result_header("working_distance", argv),
        "config": asdict(config),
        "by_distance": rows,
        "tracked": tracked,
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
    if tracked:
        print_table(
            ["distance", "tracked frames with a hand", "side right", *(f"at frame {n}" for n in SIDE_AT_FRAMES), "side changes", "joint error", "on the right side"],
            [
                [
                    f"{row['distance_m']:.2f} m", f"{row['frames_with_a_hand']} of {row['frames']}", cell(row["side_right"], ".1%"),
                    *(cell(row["side_right_at_track_frame"][str(n)], ".0%") for n in SIDE_AT_FRAMES), str(row["side_changes"]),
                    cell(row["mean_joint_error_mm"], ".1f", " mm"), cell(row["mean_joint_error_side_right_mm"], ".1f", " mm"),
                ]
                for row in tracked
            ],
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
