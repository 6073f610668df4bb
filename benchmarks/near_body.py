"""Hands held before the body: how often the tracker reports a hand a few centimetres in
front of a torso, or resting on it, and how well it fits it, with the curved surface behind
the hand taken into account (the default) and with planes only, as before.

    python -m benchmarks.near_body                        # 100 scenes x 6 gaps, 12 sequences
    python -m benchmarks.near_body --scenes 10 --track-sequences 0 --out /tmp/body.json

Each scene is one of ``benchmarks.near_surfaces``' (seed stream 9, which nothing trains on: a
hand at the end of an arm that runs on out of view, in a whole 640 x 480-class frame) with a
torso behind the hand instead of a desk or wall: an ellipsoid the size of the renderer's
(``tracker.synth.scene``: 30-44 cm wide, 50-70 cm tall, 20-28 cm deep, turned by up to 20
degrees about the optical axis), its centre up to 12 cm to either side of the hand's and
from 5 cm above to 20 cm below it, as before the chest, at the depth where its front comes
a given gap behind the hand: the least, over the hand's mesh vertices, of the depth from
the vertex to the torso's front along the vertex's line of sight (0: the hand rests on it).
What lies behind the torso is hidden by it; the stereo noise is then made over the whole
frame. The renderer's own scenes put the torso 25 cm or more behind the wrist, and the
networks were trained on those. Each frame is tracked as a track's first (no prior, the
side decided from that frame alone), by the command line's tracker
(``tracker.api.open_tracker``: the shipped weights and classifiers), once as it is and once
with segmentation and the crops looking for planes only, over the whole candidate
(``SegmentConfig.relief_curved_rounds`` and ``relief_local_radius_m`` and
``BackgroundPlane.curved_rounds`` 0).

Per gap and setting, as ``benchmarks.near_surfaces``: the share of frames with a hand
reported, judged to hold none, or with nothing found; the mean joint error of the hands
reported (mm, against the rendered joints), and of those given the right side; the share
given the right side; and each stage's median time.

Tracked (``--track-sequences``), as ``benchmarks.near_surfaces``' tracked part: the built-in
input's moving hands (seeds 40 on, a right and a left hand each) with a torso drawn once
per sequence and moved along behind the hand at a given gap in every frame, tracked as a
run tracks them, with both settings.

Writes ``benchmarks/results/near_body.json`` (with the command, machine and settings) and
beside it ``near_body.png``: the first scenes with the hand resting on the torso, the whole
frame, then the network's crop with planes only cleared and with the curved surface cleared.
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
from benchmarks import near_surfaces
from benchmarks.near_surfaces import SCENE_STREAM, SIDE_AT_FRAMES, TRACK_FIRST_SEED, measure_tracked, side_right_error
from benchmarks.working_distance import outcome_summary, track_first_frame
from kernels.raster import composite_ellipsoid
from kernels.sensor_noise import apply_stereo_noise
from tracker.backends import AUTO_BACKEND, BACKENDS
from tracker.synth.dataset import sample_seed
from tracker.synth.scene import SceneConfig, SceneLabel, render_sample, to_depth_units
from tracker.types import DepthFrame

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class NearBodyConfig:
    scenes: int = 100
    #: The first scene of the stream: 0 for the figures reported; 200 on for tuning.
    first_scene: int = 0
    #: Least gaps between the hand and the torso's front along the hand's lines of sight,
    #: metres. None: no torso.
    gaps_m: tuple[float | None, ...] = (None, 0.0, 0.02, 0.04, 0.08, 0.15)
    backend: str = "onnxruntime"
    #: Tracked sequences (``benchmarks.near_surfaces.measure_tracked``): seeds from
    #: ``track_first_seed`` on, a right and a left hand each (0: none), so many frames
    #: each, at these gaps, with the torso moved along behind the hand.
    track_sequences: int = 6
    track_first_seed: int = TRACK_FIRST_SEED
    track_frames: int = 90
    track_gaps_m: tuple[float | None, ...] = (None, 0.0, 0.02)


@dataclass(frozen=True)
class Torso:
    """An ellipsoid standing for the body: centre (3,) camera frame, metres; rotation (3, 3)
    camera from ellipsoid axes; radii (3,) metres."""

    centre: np.ndarray
    rotation: np.ndarray
    radii: np.ndarray


def front_depth(torso: Torso, points: np.ndarray) -> np.ndarray:
    """(n,) camera z at which the line of sight through each of ``points`` ((n, 3) camera
    frame, z > 0) first meets the torso's surface in front of the camera; NaN where it
    misses. As ``kernels.raster.composite_ellipsoid`` solves it per pixel."""
    m = (torso.rotation / torso.radii[None, :]).T  # unit-sphere coordinates: m @ p
    a = (points / points[:, 2:3]) @ m.T
    b = m @ torso.centre
    qa, qb, qc = np.sum(a * a, axis=1), a @ b, float(b @ b) - 1.0
    disc = qb * qb - qa * qc
    root = np.sqrt(np.maximum(disc, 0.0))
    near, far = (qb - root) / qa, (qb + root) / qa
    z = np.where(near > 0, near, far)
    return np.where((disc >= 0) & (z > 0), z, np.nan)


def gap_to(torso: Torso, vertices: np.ndarray) -> float:
    """The least depth from a vertex to the torso's front along its line of sight (inf where
    no line of sight meets it)."""
    z = front_depth(torso, vertices)
    hit = ~np.isnan(z)
    return float(np.min(z[hit] - vertices[hit, 2])) if hit.any() else np.inf


def draw_torso(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A torso's radii (3,), rotation (3, 3) and centre's offset (3,) from the hand's
    centre, drawn as the module says (its depth is set by ``place_torso``)."""
    radii = np.array([rng.uniform(0.15, 0.22), rng.uniform(0.25, 0.35), rng.uniform(0.10, 0.14)])
    rotation = Rotation.from_euler("z", rng.uniform(-20, 20), degrees=True).as_matrix()
    offset = np.array([rng.uniform(-0.12, 0.12), rng.uniform(-0.05, 0.2), 0.0])
    return radii, rotation, offset


def place_torso(shape: tuple[np.ndarray, np.ndarray, np.ndarray], vertices: np.ndarray, gap_m: float) -> Torso:
    """The torso of ``shape`` (``draw_torso``) at the depth where it lies ``gap_m`` behind
    the hand's ``vertices`` ((n, 3) camera frame)."""
    radii, rotation, offset = shape
    centre = vertices.mean(axis=0) + offset
    # The gap grows with the centre's depth: bisect for it, to well under the sensor's noise.
    near, far = float(centre[2]) - 0.5, float(centre[2]) + 1.5
    for _ in range(40):
        middle = 0.5 * (near + far)
        if gap_to(Torso(np.array([centre[0], centre[1], middle]), rotation, radii), vertices) < gap_m:
            near = middle
        else:
            far = middle
    return Torso(np.array([centre[0], centre[1], far]), rotation, radii)


def torso_behind(vertices: np.ndarray, gap_m: float, rng: np.random.Generator) -> Torso:
    """A torso drawn as the module says, ``gap_m`` behind the hand's ``vertices``."""
    return place_torso(draw_torso(rng), vertices, gap_m)


def add_torso(depth_m: np.ndarray, torso: Torso, k) -> None:
    """In place: ``torso`` drawn into ``depth_m`` ((H, W) float32 metres, 0: nothing, camera
    ``k``), hiding what lies behind it."""
    labels = np.zeros(depth_m.shape, np.int16)
    composite_ellipsoid(torso.centre, torso.rotation, torso.radii, k.fx, k.fy, k.cx, k.cy, depth_m, labels, np.int16(SceneLabel.BODY))


def torso_backdrop(rng: np.random.Generator, hands: list, k, max_depth_m: float):
    """``benchmarks.near_surfaces.sequence_frames``' backdrop: a torso drawn once for the
    sequence and moved with the hand, ``gap_m`` behind it in every frame."""
    shape = draw_torso(rng)

    def add(depth_m: np.ndarray, posed, gap_m: float) -> None:
        add_torso(depth_m, place_torso(shape, posed.vertices, gap_m), k)

    return add


def scene_at(index: int, gap_m: float | None, hand_model) -> tuple[np.ndarray, object]:
    """Scene ``index`` of the stream with a torso ``gap_m`` behind the hand (None: none):
    (H, W) uint16 depth in the sample's units, with noise, and the clean sample."""
    seed = sample_seed(SCENE_STREAM, index)
    scene = dataclasses.replace(SceneConfig(), body_probability=0.0, table_probability=0.0, noise_probability=0.0)
    sample = render_sample(hand_model, scene, seed)
    depth = sample.depth.astype(np.float32) * np.float32(sample.depth_scale)
    # Its own draws ([seed, 2]: near_surfaces' surfaces draw from [seed, 1]), the same torso
    # shape and place at every gap.
    rng = np.random.default_rng([seed, 2])
    if gap_m is not None:
        add_torso(depth, torso_behind(sample.vertices, gap_m, rng), sample.intrinsics)
    noisy = apply_stereo_noise(depth, sample.intrinsics.fx, scene.noise, np.random.default_rng([seed, 3]))
    return to_depth_units(noisy, sample.depth_scale, scene.max_depth_m), sample


def planes_only(tracker) -> None:
    """In place: ``tracker`` with segmentation and its crops looking for planes only."""
    config = tracker.config
    tracker.config = dataclasses.replace(
        config,
        segment=dataclasses.replace(config.segment, relief_curved_rounds=0, relief_local_radius_m=0.0),
        background_plane=dataclasses.replace(config.background_plane, curved_rounds=0),
    )


SETTINGS = ("curved", "planes only")


def measure(config: NearBodyConfig, progress: bool = True) -> list[dict]:
    from tracker.api import open_tracker
    from tracker.hand_model import HandModel

    hand_model = HandModel.load()
    frames = {(z, name): [] for z in config.gaps_m for name in SETTINGS}
    stage_ms = {(z, name): {} for z in config.gaps_m for name in SETTINGS}
    trackers = {name: open_tracker(backend=config.backend) for name in SETTINGS}
    planes_only(trackers["planes only"])
    try:
        for index in tqdm(range(config.first_scene, config.first_scene + config.scenes), desc="scenes", disable=not progress):
            for z in config.gaps_m:
                depth, sample = scene_at(index, z, hand_model)
                for name, tracker in trackers.items():
                    frame = DepthFrame(depth, sample.depth_scale, sample.intrinsics)
                    timings: dict = {}
                    frames[z, name].append({"scene": index, **track_first_frame(tracker, frame, sample.joints, sample.pose.handedness, timings)})
                    for stage, ms in timings.items():
                        stage_ms[z, name].setdefault(stage, []).append(ms)
    finally:
        for tracker in trackers.values():
            tracker.close()
    return [
        {
            "gap_m": z, "setting": name, **outcome_summary(rows), "mean_joint_error_side_right_mm": side_right_error(rows),
            # Over the frames each stage ran in, on the machine the result file names.
            "median_stage_ms": {stage: float(np.median(ms)) for stage, ms in stage_ms[z, name].items()},
            "per_scene": rows,
        }
        for (z, name), rows in frames.items()
    ]


def write_picture(path: Path, hand_model) -> None:
    """``benchmarks.near_surfaces.write_picture``'s rows for the first six scenes resting on
    the torso: the frame, then the network's crop with planes only cleared and with the
    curved surface cleared."""
    from tracker.crop import BackgroundPlane

    curved = BackgroundPlane()
    settings = (("planes only", dataclasses.replace(curved, curved_rounds=0)), ("curved", curved))
    near_surfaces.write_picture(path, hand_model, scene=scene_at, settings=settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.near_body",
        description="How often a hand held before the body or resting on it is reported, and how well it is fitted, with the "
        "curved surface behind it taken into account and with planes only (synthetic scenes, each tracked as a track's first frame).",
    )
    parser.add_argument("--scenes", type=int, default=NearBodyConfig.scenes, help="scenes per gap (default %(default)s)")
    parser.add_argument("--first-scene", type=int, default=NearBodyConfig.first_scene, help="first scene of the stream (default %(default)s; 200 on: the tuning scenes)")
    parser.add_argument(
        "--gaps", type=float, nargs="+", default=[z for z in NearBodyConfig.gaps_m if z is not None], metavar="M",
        help="least gaps between the hand and the torso's front along the hand's lines of sight, metres, besides the scenes "
        "with no torso (default %(default)s)",
    )
    parser.add_argument(
        "--track-sequences", type=int, default=NearBodyConfig.track_sequences,
        help="tracked sequences of the built-in input, a right and a left hand each, with the torso moved along behind the hand "
        "(default %(default)s; 0: none)",
    )
    parser.add_argument("--track-frames", type=int, default=NearBodyConfig.track_frames, help="frames per tracked sequence (default %(default)s)")
    parser.add_argument("--backend", default=NearBodyConfig.backend, choices=[AUTO_BACKEND, *BACKENDS], help="inference backend (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "near_body.json", help="result JSON (default benchmarks/results/near_body.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.scenes < 1 or args.first_scene < 0:
        parser.error("--scenes must be at least 1 and --first-scene at least 0")
    if args.track_sequences < 0 or args.track_frames < 1:
        parser.error("--track-sequences must be at least 0 and --track-frames at least 1")
    if not all(0.0 <= z <= 0.4 for z in args.gaps):
        parser.error("--gaps must lie between 0 and 0.4 m")
    check_output_path(parser, "--out", args.out)
    config = NearBodyConfig(
        scenes=args.scenes, first_scene=args.first_scene, gaps_m=(None, *args.gaps), backend=args.backend,
        track_sequences=args.track_sequences, track_frames=args.track_frames,
    )

    began = time.perf_counter()
    rows = measure(config, progress=not args.no_progress)
    tracked = []
    if config.track_sequences:
        for name, adjust in (("curved", None), ("planes only", planes_only)):
            tracked += [{"setting": name, **row} for row in measure_tracked(config, not args.no_progress, torso_backdrop, adjust)]
    write_result(
        args.out, {**result_header("near_body", argv), "config": asdict(config), "rows": rows, "tracked": tracked, "seconds": time.perf_counter() - began}
    )
    from tracker.hand_model import HandModel

    write_picture(args.out.with_suffix(".png"), HandModel.load())
    print_table(
        ["gap", "setting", "hand", "judged no hand", "nothing", "joint error", "on the right side", "side right", "segment", "crop"],
        [
            [
                "none" if row["gap_m"] is None else f"{100 * row['gap_m']:.0f} cm", row["setting"],
                f"{row['hand_reported']:.0%}", f"{row['judged_no_hand']:.0%}", f"{row['nothing_found']:.0%}",
                cell(row["mean_joint_error_mm"], ".1f", " mm"), cell(row["mean_joint_error_side_right_mm"], ".1f", " mm"), cell(row["side_right"], ".0%"),
                cell(row["median_stage_ms"].get("segment"), ".2f", " ms"), cell(row["median_stage_ms"].get("crop"), ".2f", " ms"),
            ]
            for row in rows
        ],
    )
    if tracked:
        print_table(
            ["gap", "setting", "tracked frames with a hand", "side right", *(f"at frame {n}" for n in SIDE_AT_FRAMES), "side changes", "joint error", "on the right side", "segment", "crop"],
            [
                [
                    "none" if row["gap_m"] is None else f"{100 * row['gap_m']:.0f} cm", row["setting"], f"{row['frames_with_a_hand']} of {row['frames']}",
                    cell(row["side_right"], ".1%"), *(cell(row["side_right_at_track_frame"][str(n)], ".0%") for n in SIDE_AT_FRAMES),
                    str(row["side_changes"]), cell(row["mean_joint_error_mm"], ".1f", " mm"), cell(row["mean_joint_error_side_right_mm"], ".1f", " mm"),
                    cell(row["median_stage_ms"].get("segment"), ".2f", " ms"), cell(row["median_stage_ms"].get("crop"), ".2f", " ms"),
                ]
                for row in tracked
            ],
        )
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
