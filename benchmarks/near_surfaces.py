"""Hands near a surface: how often the tracker reports a hand resting on a desk or held in
front of a wall, and how well it fits it, with the crop's background plane cleared (the
default) and kept.

    python -m benchmarks.near_surfaces                        # 100 scenes x 8 gaps
    python -m benchmarks.near_surfaces --scenes 10 --out /tmp/near.json

Each scene is one of the hand network's kind (``tracker.synth.scene``: a hand at the end of
an arm that runs on out of view), drawn from seed stream 9, which nothing trains on, in a
whole 640 x 480-class frame, with a surface added behind the hand as the renderer draws
desks and walls: a desk under the hand (its normal up, tilted by up to 35 degrees) or a wall
facing the camera (tilted by up to 30), one or the other at random. The surface lies a given
gap behind the hand's rearmost point along its normal (0: the hand rests on it), with the
camera 10 cm or more in front of it, and hides whatever lies behind it, the arm's far part
as a rule; the stereo noise is then made over the whole frame. The same scene is also tracked with no surface at all. The renderer's own
scenes put the surface behind the arm as well, 8 cm or more behind the wrist, and the
networks were trained on those. Each frame is tracked as a track's first (no prior, the side decided from
that frame alone), by the command line's tracker (``tracker.api.open_tracker``: the shipped
weights and classifiers), once with ``keep_planes`` and once without.

Per gap and setting: the share of frames with a hand reported, judged to hold
none, or with nothing found; the mean joint error of the hands reported (mm, against the
rendered joints), and of those given the right side; the share given the right side.

Tracked (``--track-sequences``): the built-in input's moving hands (seeds 40 on, a right
and a left hand each) with a desk or wall moved along behind the hand at a given gap in
every frame, tracked as a run tracks them: the frames with a hand, the side reported (of
all frames with a hand, and at a track's 1st, 16th and 31st frame: after its first, second
and third side check), the side changes, and the mean joint error, of all frames with a
hand and of those on the right side; and each stage's median time.

Writes ``benchmarks/results/near_surfaces.json`` (with the command, machine and settings)
and beside it ``near_surfaces.png``: the first scenes with the hand resting on the surface,
the whole frame, then the network's crop with the plane kept and cleared.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from benchmarks import cell, check_output_path, print_table, result_header, write_result
from benchmarks.working_distance import SIDE_AT_FRAMES, TRACK_FIRST_SEED, outcome_summary, track_first_frame, track_sequences
from tracker.backends import AUTO_BACKEND, BACKENDS
from kernels.raster import composite_plane
from kernels.sensor_noise import StereoNoiseModel, apply_stereo_noise
from tracker.sources import SyntheticSource, render_hand_pose
from tracker.synth.dataset import sample_seed
from tracker.synth.scene import SceneConfig, SceneLabel, render_sample, to_depth_units
from tracker.types import DepthFrame, Handedness

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"

#: The scenes' seed stream: no network or classifier draws from it.
SCENE_STREAM = 9
#: The camera lies at least this far in front of the surface (a camera standing on the desk
#: looks along it from a few centimetres up); a surface drawn nearer, or with the camera
#: behind it (where it would hide the hand), is drawn again.
CAMERA_CLEARANCE_M = 0.1


@dataclass(frozen=True)
class NearSurfacesConfig:
    scenes: int = 100
    #: Gaps between the hand's rearmost point and the surface along its normal, metres.
    #: None: no surface.
    gaps_m: tuple[float | None, ...] = (None, 0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12)
    backend: str = "onnxruntime"
    #: Tracked sequences (``sequence_frames``): seeds from ``track_first_seed`` on, a right
    #: and a left hand each (0: none), so many frames each, at these gaps.
    track_sequences: int = 6
    track_first_seed: int = TRACK_FIRST_SEED
    track_frames: int = 90
    track_gaps_m: tuple[float | None, ...] = (None, 0.0, 0.02)


def surface_normal(rng: np.random.Generator) -> np.ndarray:
    """A desk's or a wall's unit normal, towards the camera, as ``tracker.synth.scene`` draws
    them."""
    desk = Rotation.from_euler("xz", rng.uniform(-35, 35, size=2), degrees=True).apply([0.0, -1.0, 0.0])
    wall = Rotation.from_euler("xy", rng.uniform(-30, 30, size=2), degrees=True).apply([0.0, 0.0, -1.0])
    return wall if rng.uniform() < 0.5 else desk


def add_surface(depth: np.ndarray, point: np.ndarray, normal: np.ndarray, k, max_depth_m: float) -> None:
    """In place: the plane through ``point`` facing ``normal`` (unit, towards the camera) drawn
    into ``depth`` ((H, W) float32 metres, 0: nothing, camera ``k``), hiding what lies
    behind it."""
    labels = np.zeros(depth.shape, np.int16)
    # Behind the plane nothing is seen: clear what lies there before compositing it.
    v, u = np.mgrid[: k.height, : k.width]
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones(depth.shape)], axis=-1)
    behind = (depth > 0) & (((rays * depth[..., None]) - point) @ normal < 0)
    depth[behind] = 0.0
    composite_plane(point, normal, k.fx, k.fy, k.cx, k.cy, depth, labels, np.int16(SceneLabel.TABLE), max_depth_m)


def scene_at(index: int, gap_m: float | None, hand_model) -> tuple[np.ndarray, object]:
    """Scene ``index`` of the stream with a surface ``gap_m`` behind the hand (None: none):
    (H, W) uint16 depth in the sample's units, with noise, and the clean sample (its joints,
    side, camera and depth scale)."""
    seed = sample_seed(SCENE_STREAM, index)
    scene = dataclasses.replace(SceneConfig(), body_probability=0.0, table_probability=0.0, noise_probability=0.0)
    sample = render_sample(hand_model, scene, seed)
    depth = sample.depth.astype(np.float32) * np.float32(sample.depth_scale)
    rng = np.random.default_rng([seed, 1])
    # Drawn whatever the gap, so each gap shows the same surface: at no gap it comes nearest
    # the camera.
    for _ in range(100):
        normal = surface_normal(rng)
        rearmost = sample.vertices[np.argmin(sample.vertices @ normal)]
        if -float(rearmost @ normal) >= CAMERA_CLEARANCE_M:
            break
    else:
        raise RuntimeError(f"scene {index}: no surface behind the hand clear of the camera in 100 draws")
    if gap_m is not None:
        add_surface(depth, rearmost - normal * gap_m, normal, sample.intrinsics, scene.max_depth_m)
    noisy = apply_stereo_noise(depth, sample.intrinsics.fx, scene.noise, rng)
    return to_depth_units(noisy, sample.depth_scale, scene.max_depth_m), sample


def measure(config: NearSurfacesConfig, progress: bool = True) -> list[dict]:
    from tracker.api import open_tracker
    from tracker.hand_model import HandModel

    hand_model = HandModel.load()
    settings = {"cleared": False, "kept": True}
    frames = {(z, name): [] for z in config.gaps_m for name in settings}
    trackers = {name: open_tracker(backend=config.backend, keep_planes=keep) for name, keep in settings.items()}
    try:
        for index in tqdm(range(config.scenes), desc="scenes", disable=not progress):
            for z in config.gaps_m:
                depth, sample = scene_at(index, z, hand_model)
                for name, tracker in trackers.items():
                    frame = DepthFrame(depth, sample.depth_scale, sample.intrinsics)
                    frames[z, name].append({"scene": index, **track_first_frame(tracker, frame, sample.joints, sample.pose.handedness)})
    finally:
        for tracker in trackers.values():
            tracker.close()
    return [
        {"gap_m": z, "background_plane": name, **outcome_summary(rows), "mean_joint_error_side_right_mm": side_right_error(rows), "per_scene": rows}
        for (z, name), rows in frames.items()
    ]


def side_right_error(rows: list[dict]) -> float | None:
    """Mean joint error (mm) of the hands reported on their true side: a track's first frame
    given the wrong side is fitted mirrored, some 30-70 mm off, and a track's later frames
    add to its side vote (``tracker.side_vote``), so the fit apart from that is worth its
    own figure."""
    errors = [row["joint_error_mm"] for row in rows if row["outcome"] == "hand" and row["side_right"]]
    return float(np.mean(errors)) if errors else None


def plane_backdrop(rng: np.random.Generator, hands: list, k, max_depth_m: float):
    """A desk or a wall drawn once for a sequence (``sequence_frames``), as for the scenes,
    clear of the camera with every one of the posed ``hands``: a function (depth_m, posed,
    gap_m) that draws it ``gap_m`` behind the posed hand's rearmost point into depth_m."""
    for _ in range(100):
        normal = surface_normal(rng)
        if all(-float(np.min(posed.vertices @ normal)) >= CAMERA_CLEARANCE_M for posed in hands):
            break
    else:
        raise RuntimeError("no surface behind the hand clear of the camera in every frame in 100 draws")

    def add(depth_m: np.ndarray, posed, gap_m: float) -> None:
        rearmost = posed.vertices[np.argmin(posed.vertices @ normal)]
        add_surface(depth_m, rearmost - normal * gap_m, normal, k, max_depth_m)

    return add


def sequence_frames(seed: int, hand: Handedness, frames: int, gap_m: float | None, hand_model, backdrop=plane_backdrop):
    """Yield (frame, (21, 3) true joints) for the first ``frames`` frames of the built-in
    input's moving ``hand`` (``SyntheticSource(seed)``) with a surface ``gap_m`` behind the
    hand in every frame (None: none): by default a desk or a wall (``plane_backdrop``;
    ``backdrop``: another of its kind), drawn once for the sequence and moved with the hand
    so that the gap stays the same, as a hand sliding over a desk or along a wall. The
    stereo noise is made over the whole frame."""
    source = SyntheticSource(seed=seed, max_frames=frames, hand=hand, hand_model=hand_model)
    k, scale, max_depth_m = source.intrinsics, source.depth_scale, 3.0
    poses = [source.pose_at(i) for i in range(frames)]
    hands = [hand_model.pose(pose.local_rotations, pose.bone_scales, pose.cam_from_hand, pose.handedness) for pose in poses]
    rng = np.random.default_rng([seed, int(hand == Handedness.LEFT), SCENE_STREAM])
    add_behind = backdrop(rng, hands, k, max_depth_m)
    noise = StereoNoiseModel()
    for i, (pose, posed) in enumerate(zip(poses, hands)):
        depth, _, _ = render_hand_pose(hand_model, pose, k, scale, forearm=True, arm_length_m=source.ARM_LENGTH_M, max_depth_m=max_depth_m)
        depth_m = depth.astype(np.float32) * np.float32(scale)
        if gap_m is not None:
            add_behind(depth_m, posed, gap_m)
        noisy = apply_stereo_noise(depth_m, k.fx, noise, np.random.default_rng([seed, i]))
        frame = DepthFrame(
            to_depth_units(noisy, scale, max_depth_m), scale, k, timestamp_ms=1000.0 * i / source.fps, serial="synthetic", frame_number=i
        )
        yield frame, posed.joints


def measure_tracked(config, progress: bool = True, backdrop=plane_backdrop, adjust=None) -> list[dict]:
    """Per gap (``config.track_gaps_m``): the tracked sequences with a surface ``gap_m``
    behind the hand (``sequence_frames``), as ``benchmarks.working_distance.track_sequences``
    reports them. ``config``: its ``track_*`` fields and ``backend`` (``NearSurfacesConfig``'s);
    ``backdrop``: what lies behind the hand; ``adjust``: called on the tracker once opened
    (a benchmark's setting)."""
    from tracker.hand_model import HandModel

    hand_model = HandModel.load()
    return track_sequences(
        config, "gap_m", config.track_gaps_m,
        lambda seed, hand, gap_m: sequence_frames(seed, hand, config.track_frames, gap_m, hand_model, backdrop),
        progress, adjust,
    )


def write_picture(path: Path, hand_model, scenes: int = 6, gap_m: float = 0.0, panel: int = 192, scene=scene_at, settings=None) -> None:
    """``scenes`` rows: the frame with a surface ``gap_m`` behind the hand (``scene``: what
    draws scene i with it, ``scene_at`` by default), then the crop the network sees around
    the visible hand (ray frame, 26 cm cube) with each of ``settings`` ((label,
    ``BackgroundPlane`` or None) pairs; by default the plane kept and cleared); crop depth
    coloured from the cube's near face (red) to its far face (blue), background black."""
    from tracker.crop import BackgroundPlane, CropFrame, make_crop
    from tracker.synth.contact_sheet import colourise_depth
    from tracker.training_data import hand_centroid

    settings = settings or (("kept", None), ("cleared", BackgroundPlane()))
    rows = []
    for index in range(scenes):
        depth, sample = scene(index, gap_m, hand_model)
        depth_m = depth.astype(np.float32) * np.float32(sample.depth_scale)
        frame = colourise_depth(depth_m, 0.2, 1.5)
        frame = cv2.resize(frame, (panel * frame.shape[1] // frame.shape[0], panel), interpolation=cv2.INTER_AREA)
        centre = hand_centroid(depth_m, sample.mask, sample.intrinsics, sample.joints.mean(axis=0))
        tiles = [frame]
        for label, plane in settings:
            crop = make_crop(depth_m, sample.intrinsics, centre, 0.26, sample.pose.handedness, frame=CropFrame.RAY, background_plane=plane)
            tile = colourise_depth(np.where(crop.measured, crop.depth + 2.0, 0.0), 1.0, 3.0)
            tile = cv2.resize(tile, (panel, panel), interpolation=cv2.INTER_NEAREST)
            cv2.putText(tile, label, (6, panel - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        rows.append(np.hstack(tiles))
    cv2.imwrite(str(path), np.vstack(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.near_surfaces",
        description="How often a hand resting on a desk or held before a wall is reported, and how well it is fitted, with the "
        "crop's background plane cleared and kept (synthetic scenes, each tracked as a track's first frame).",
    )
    parser.add_argument("--scenes", type=int, default=NearSurfacesConfig.scenes, help="scenes per gap (default %(default)s)")
    parser.add_argument(
        "--gaps", type=float, nargs="+", default=[z for z in NearSurfacesConfig.gaps_m if z is not None], metavar="M",
        help="gaps between the hand and the surface behind it, metres, besides the scenes with no surface (default %(default)s)",
    )
    parser.add_argument(
        "--track-sequences", type=int, default=NearSurfacesConfig.track_sequences,
        help="tracked sequences of the built-in input, a right and a left hand each, with the surface moved along behind the hand "
        "(default %(default)s; 0: none)",
    )
    parser.add_argument("--track-frames", type=int, default=NearSurfacesConfig.track_frames, help="frames per tracked sequence (default %(default)s)")
    parser.add_argument("--backend", default=NearSurfacesConfig.backend, choices=[AUTO_BACKEND, *BACKENDS], help="inference backend (default %(default)s)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / "near_surfaces.json", help="result JSON (default benchmarks/results/near_surfaces.json)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    if args.track_sequences < 0 or args.track_frames < 1:
        parser.error("--track-sequences must be at least 0 and --track-frames at least 1")
    if not all(0.0 <= z <= 0.4 for z in args.gaps):
        parser.error("--gaps must lie between 0 and 0.4 m")
    check_output_path(parser, "--out", args.out)
    config = NearSurfacesConfig(
        scenes=args.scenes, gaps_m=(None, *args.gaps), backend=args.backend, track_sequences=args.track_sequences, track_frames=args.track_frames
    )

    began = time.perf_counter()
    rows = measure(config, progress=not args.no_progress)
    tracked = measure_tracked(config, progress=not args.no_progress) if config.track_sequences else []
    write_result(
        args.out, {**result_header("near_surfaces", argv), "config": asdict(config), "rows": rows, "tracked": tracked, "seconds": time.perf_counter() - began}
    )
    from tracker.hand_model import HandModel

    write_picture(args.out.with_suffix(".png"), HandModel.load())
    print_table(
        ["gap", "plane", "hand", "judged no hand", "nothing", "joint error", "on the right side", "side right"],
        [
            [
                "none" if row["gap_m"] is None else f"{100 * row['gap_m']:.0f} cm", row["background_plane"],
                f"{row['hand_reported']:.0%}", f"{row['judged_no_hand']:.0%}", f"{row['nothing_found']:.0%}",
                cell(row["mean_joint_error_mm"], ".1f", " mm"), cell(row["mean_joint_error_side_right_mm"], ".1f", " mm"), cell(row["side_right"], ".0%"),
            ]
            for row in rows
        ],
    )
    if tracked:
        print_table(
            ["gap", "tracked frames with a hand", "side right", *(f"at frame {n}" for n in SIDE_AT_FRAMES), "side changes", "joint error", "on the right side", "segment"],
            [
                [
                    "none" if row["gap_m"] is None else f"{100 * row['gap_m']:.0f} cm", f"{row['frames_with_a_hand']} of {row['frames']}",
                    cell(row["side_right"], ".1%"), *(cell(row["side_right_at_track_frame"][str(n)], ".0%") for n in SIDE_AT_FRAMES),
                    str(row["side_changes"]), cell(row["mean_joint_error_mm"], ".1f", " mm"), cell(row["mean_joint_error_side_right_mm"], ".1f", " mm"),
                    cell(row["median_stage_ms"].get("segment"), ".2f", " ms"),
                ]
                for row in tracked
            ],
        )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
