"""A flat hand held still, square-on to the camera: how steady the tracker's joints are, and
how well it fits them, by how far the hand is from the camera.

    python -m benchmarks.held_still                          # 4 poses x 2 hands x 4 distances
    python -m benchmarks.held_still --frames 20 --distances 0.45 1.4 --out /tmp/still.json
    python -m benchmarks.held_still --arm-length 0.55 --distances 1.4 --out /tmp/short.json

A hand held up to point, wave or steer is often flat and facing the camera, and as still as
a hand can be. The built-in input's random poses (``benchmarks.working_distance``) seldom
show one, and never held. Here the model's open hand (its bind pose: fingers straight and a
little apart) faces the camera with its palm or its back, square-on or turned by 30 degrees
about the vertical or tilted back by 30 degrees about the horizontal (``POSES``), fingers
up and the arm (``ARM_LENGTH_M``) running down out of view. Each pose is
rendered at each distance (the wrist that far along the optical axis, the palm near the
image's centre) ``frames`` times at 30 frames/s, unmoving, each frame with fresh stereo
noise (``kernels.sensor_noise.StereoNoiseModel``, the built-in input's), and tracked as a run
tracks it: by the command line's tracker (``tracker.api.open_tracker``), once as it is and
once with ``--smooth`` (the One-Euro filter's default setting), both refining their
estimates as ``run_tracker.py`` does by default; ``--no-refine`` tracks both without the
online refinement (``benchmarks/results/held_still_no_refine.json``).

Per distance and setting, over all poses and both hands:

- frames with a hand reported, the hands lost (a frame without one after a frame with one),
  the share given the right side, and the side changes;
- the mean joint error, mm, against the rendered joints;
- jitter: the root mean square of the joints' frame-to-frame movement, mm (the hand does not
  move, so all of it is the noise passing through the tracker), of all joints and of the
  fingertips alone, averaged over the sequences;
- spread: the root mean square distance of each joint from its own mean over the sequence,
  mm: how far the estimate wanders about where it settles.

Writes ``benchmarks/results/held_still.json`` (with the command, machine and settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from benchmarks import cell, check_output_path, print_table, result_header, write_result
from kernels.sensor_noise import StereoNoiseModel
from tracker.backends import AUTO_BACKEND, BACKENDS
from tracker.sources import SyntheticSource, render_hand_pose
from tracker.types import DepthFrame, Handedness, Joint

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

#: (name, side facing the camera, turn about the camera's vertical axis, tilt back about its
#: horizontal axis, degrees).
POSES = (
    ("palm_square_on", "palm", 0.0, 0.0),
    ("back_square_on", "back", 0.0, 0.0),
    ("palm_turned_30", "palm", 30.0, 0.0),
    ("palm_tilted_back_30", "palm", 0.0, 30.0),
)
FINGERTIPS = (Joint.THUMB_TIP, Joint.INDEX_FINGER_TIP, Joint.MIDDLE_FINGER_TIP, Joint.RING_FINGER_TIP, Joint.PINKY_TIP)
#: Where the wrist goes, metres below the optical axis at any distance: the palm's centre
#: (some 9 cm up the fingers from the wrist) then lies near the image's centre.
WRIST_BELOW_AXIS_M = 0.06
SETTINGS = ("raw", "smoothed")
#: The arm drawn from the wrist, metres: the forearm and upper arm hanging down towards the
#: body, out of the view at every distance (at 1.4 m the image's lower edge lies 0.7 m below
#: the optical axis). The built-in input's 0.55 m ends inside the view there, as no real arm
#: does, and an arm's free far end may pass for its hand.
ARM_LENGTH_M = 1.0


@dataclass(frozen=True)
class HeldStillConfig:
    #: Metres from the camera to the wrist, along the optical axis.
    distances_m: tuple[float, ...] = (0.45, 0.9, 1.2, 1.4)
    #: Frames each pose is held for, at ``fps``.
    frames: int = 60
    fps: float = 30.0
    #: Seed of the noise (each pose, side, distance and frame draws its own from it).
    seed: int = 0
    #: The arm drawn from the wrist, metres (``ARM_LENGTH_M``): a shorter one ends in view at
    #: the far distances, its free end as near the camera as the hand or nearer.
    arm_length_m: float = ARM_LENGTH_M
    backend: str = "onnxruntime"
    #: Track with the online refinement (``tracker.refine``; the tracker's default), both settings.
    refine: bool = True


def hand_frame_axes(hand_model) -> tuple[np.ndarray, np.ndarray]:
    """The bind pose's finger direction (wrist to middle fingertip) and palm normal (the
    side its fingers close towards, which the thumb lies on), unit (3,) vectors in the hand
    frame, the normal made orthogonal to the fingers."""
    joints = hand_model.pose().joints
    fingers = joints[Joint.MIDDLE_FINGER_TIP] - joints[Joint.WRIST]
    fingers /= np.linalg.norm(fingers)
    normal = np.cross(joints[Joint.INDEX_FINGER_MCP] - joints[Joint.WRIST], joints[Joint.PINKY_MCP] - joints[Joint.WRIST])
    normal -= fingers * (normal @ fingers)
    normal /= np.linalg.norm(normal)
    # The thumb rests on the palm's side of the hand.
    if (joints[Joint.THUMB_TIP] - joints[Joint.WRIST]) @ normal < 0:
        normal = -normal
    return fingers, normal


def held_pose(hand_model, facing: str, turn_deg: float, tilt_deg: float, distance_m: float, handedness: Handedness):
    """The model's open hand with its fingers up and its palm (or back) towards the camera,
    then turned about the camera's vertical axis and tilted back about its horizontal one,
    the wrist ``distance_m`` along the optical axis and ``WRIST_BELOW_AXIS_M`` below it: a
    ``HandPose``."""
    from tracker.synth.pose_sampler import HandPose

    fingers, palm = hand_frame_axes(hand_model)
    # Camera frame: x right, y down, z away from the camera. Fingers up; the palm's normal
    # towards the camera (-z) for the palm facing it.
    target_normal = np.array([0.0, 0.0, -1.0 if facing == "palm" else 1.0])
    source = np.stack([fingers, palm, np.cross(fingers, palm)], axis=1)
    target = np.stack([np.array([0.0, -1.0, 0.0]), target_normal, np.cross([0.0, -1.0, 0.0], target_normal)], axis=1)
    square_on = target @ source.T
    # Tilting back: the fingertips move away from the camera (about +x, top away).
    turn = Rotation.from_euler("y", turn_deg, degrees=True) * Rotation.from_euler("x", -tilt_deg, degrees=True)
    cam_from_hand = np.eye(4)
    cam_from_hand[:3, :3] = turn.as_matrix() @ square_on
    cam_from_hand[:3, 3] = (0.0, WRIST_BELOW_AXIS_M, distance_m)
    count = len(hand_model.joint_parents)
    return HandPose(np.tile(np.eye(3), (count, 1, 1)), np.ones((count, 2)), cam_from_hand, handedness)


def held_sequence(hand_model, source: SyntheticSource, pose, frames: int, fps: float, rng_key: list[int], arm_length_m: float = ARM_LENGTH_M):
    """Yield (frame, (21, 3) true joints) for ``pose`` held ``frames`` frames, each rendered
    with fresh stereo noise, on an arm ``arm_length_m`` long."""
    for i in range(frames):
        depth, posed, _ = render_hand_pose(
            hand_model, pose, source.intrinsics, source.depth_scale,
            noise=StereoNoiseModel(), rng=np.random.default_rng([*rng_key, i]), arm_length_m=arm_length_m,
        )
        yield DepthFrame(depth, source.depth_scale, source.intrinsics, timestamp_ms=1000.0 * i / fps, serial="synthetic", frame_number=i), posed.joints


def steadiness(track: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Of (F, 21, 3) joints over consecutive frames of one held pose (NaN where no hand was
    reported): jitter of all joints and of the fingertips (RMS frame-to-frame movement) and
    the spread (RMS distance from each joint's own mean), mm; None where fewer than two
    consecutive frames hold a hand."""
    held = np.all(np.isfinite(track), axis=(1, 2))
    steps = track[1:] - track[:-1]
    both = held[1:] & held[:-1]
    if not both.any():
        return None, None, None
    moved = np.linalg.norm(steps[both], axis=2)
    jitter = float(1000 * np.sqrt(np.mean(moved**2)))
    tips = float(1000 * np.sqrt(np.mean(moved[:, list(FINGERTIPS)] ** 2)))
    reported = track[held]
    spread = float(1000 * np.sqrt(np.mean(np.sum((reported - reported.mean(axis=0)) ** 2, axis=2))))
    return jitter, tips, spread


def measure(config: HeldStillConfig, progress: bool = True) -> list[dict]:
    from tracker.api import open_tracker
    from tracker.hand_model import HandModel

    hand_model = HandModel.load()
    source = SyntheticSource(seed=0, max_frames=1, hand_model=hand_model)
    runs = [(z, pose, hand) for z in config.distances_m for pose in POSES for hand in (Handedness.RIGHT, Handedness.LEFT)]
    per_run: dict = {(z, name): [] for z in config.distances_m for name in SETTINGS}
    trackers = {name: open_tracker(backend=config.backend, smooth=name == "smoothed", refine=config.refine) for name in SETTINGS}
    try:
        for z, (pose_name, facing, turn, tilt), hand in tqdm(runs, desc="held poses", disable=not progress):
            pose = held_pose(hand_model, facing, turn, tilt, z, hand)
            key = [config.seed, POSES.index((pose_name, facing, turn, tilt)), int(hand == Handedness.LEFT), int(round(1000 * z))]
            for tracker in trackers.values():
                tracker.reset()
            tracks = {name: np.full((config.frames, 21, 3), np.nan) for name in SETTINGS}
            outcome = {name: {"right": [], "errors": [], "changes": 0, "lost": 0} for name in SETTINGS}
            last = {name: None for name in SETTINGS}
            for i, (frame, joints) in enumerate(held_sequence(hand_model, source, pose, config.frames, config.fps, key, config.arm_length_m)):
                for name, tracker in trackers.items():
                    result = tracker.process(frame)
                    if not result.hands:
                        outcome[name]["lost"] += last[name] is not None
                        last[name] = None
                        continue
                    reported = result.hands[0]
                    tracks[name][i] = reported.joints_cam_m
                    outcome[name]["right"].append(reported.handedness == hand)
                    outcome[name]["errors"].append(float(1000 * np.linalg.norm(reported.joints_cam_m - joints, axis=1).mean()))
                    outcome[name]["changes"] += last[name] is not None and reported.handedness != last[name]
                    last[name] = reported.handedness
            for name in SETTINGS:
                jitter, tips, spread = steadiness(tracks[name])
                per_run[z, name].append({
                    "pose": pose_name, "hand": hand.value, "frames_with_a_hand": len(outcome[name]["right"]),
                    "side_right": float(np.mean(outcome[name]["right"])) if outcome[name]["right"] else None,
                    "side_changes": int(outcome[name]["changes"]), "hands_lost": int(outcome[name]["lost"]),
                    "mean_joint_error_mm": float(np.mean(outcome[name]["errors"])) if outcome[name]["errors"] else None,
                    "jitter_mm": jitter, "fingertip_jitter_mm": tips, "spread_mm": spread,
                })
    finally:
        for tracker in trackers.values():
            tracker.close()
    return [summary(z, name, runs, config.frames) for (z, name), runs in per_run.items()]


def _mean(rows: list[dict], key: str) -> float | None:
    values = [row[key] for row in rows if row[key] is not None]
    return float(np.mean(values)) if values else None


def summary(distance_m: float, setting: str, runs: list[dict], frames: int) -> dict:
    """One distance and setting over its held poses: the frames with a hand, the side right
    (share of those frames) and side changes, and the means over the sequences of the joint
    error, jitter and spread (each sequence weighing alike)."""
    with_hand = sum(run["frames_with_a_hand"] for run in runs)
    right = sum(run["side_right"] * run["frames_with_a_hand"] for run in runs if run["side_right"] is not None)
    return {
        "distance_m": distance_m,
        "setting": setting,
        "sequences": len(runs),
        "frames": len(runs) * frames,
        "frames_with_a_hand": with_hand,
        "side_right": right / with_hand if with_hand else None,
        "side_changes": sum(run["side_changes"] for run in runs),
        "hands_lost": sum(run["hands_lost"] for run in runs),
        "mean_joint_error_mm": _mean(runs, "mean_joint_error_mm"),
        "jitter_mm": _mean(runs, "jitter_mm"),
        "fingertip_jitter_mm": _mean(runs, "fingertip_jitter_mm"),
        "spread_mm": _mean(runs, "spread_mm"),
        "per_sequence": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.held_still",
        description="How steady and how accurate the tracked joints of a flat hand held still, square-on to the camera, "
        "are by its distance from the camera (rendered with fresh stereo noise each frame), with and without --smooth.",
    )
    defaults = HeldStillConfig()
    parser.add_argument(
        "--distances", type=float, nargs="+", default=list(defaults.distances_m), metavar="M",
        help="distances from the camera to the wrist, metres (default %(default)s)",
    )
    parser.add_argument("--frames", type=int, default=defaults.frames, help="frames each pose is held, at 30 frames/s (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the noise (default %(default)s)")
    parser.add_argument(
        "--arm-length", type=float, default=defaults.arm_length_m, metavar="M",
        help="the arm drawn from the wrist, metres (default %(default)s: out of view at every distance; a shorter one ends in view "
        "far from the camera, its free end nearer the camera than the hand in the pose tilted back)",
    )
    parser.add_argument("--backend", default=defaults.backend, choices=[AUTO_BACKEND, *BACKENDS], help="inference backend (default %(default)s)")
    parser.add_argument("--refine", action=argparse.BooleanOptionalAction, default=True, help="track with the online refinement, raw and smoothed, as run_tracker.py does by default (--no-refine: without it)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "held_still.json", help="result JSON (default benchmarks/results/held_still.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not all(0.15 <= z <= 3.0 for z in args.distances):
        parser.error("--distances must lie between 0.15 m (the hand then just fits the view) and 3 m (what the renderer draws)")
    if args.frames < 2:
        parser.error("--frames must be at least 2 (jitter is a frame-to-frame movement)")
    if args.seed < 0:
        parser.error("--seed must be at least 0")
    if not 0.0 <= args.arm_length < 3.0:
        parser.error("--arm-length must lie between 0 (no arm) and 3 m")
    check_output_path(parser, "--out", args.out)
    config = dataclasses.replace(
        defaults, distances_m=tuple(args.distances), frames=args.frames, seed=args.seed, backend=args.backend, arm_length_m=args.arm_length,
        refine=args.refine,
    )

    began = time.perf_counter()
    rows = measure(config, progress=not args.no_progress)
    write_result(args.out, {**result_header("held_still", argv), "config": asdict(config), "rows": rows, "seconds": time.perf_counter() - began})
    print_table(
        ["distance", "setting", "frames with a hand", "hands lost", "side right", "side changes", "joint error", "jitter", "fingertip jitter", "spread"],
        [
            [
                f"{row['distance_m']:.2f} m", row["setting"], f"{row['frames_with_a_hand']} of {row['frames']}", str(row["hands_lost"]), cell(row["side_right"], ".1%"),
                str(row["side_changes"]), cell(row["mean_joint_error_mm"], ".1f", " mm"), cell(row["jitter_mm"], ".2f", " mm"),
                cell(row["fingertip_jitter_mm"], ".2f", " mm"), cell(row["spread_mm"], ".2f", " mm"),
            ]
            for row in rows
        ],
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
