"""Segmentation accuracy: how far the hand centre that segmentation finds (the centre of the
network's crop) is from the hand, on synthetic sequences with known joints and on real
frames with hand-labelled palms.

    python -m benchmarks.segmentation_accuracy                          # 20 sequences x 60 frames
    python -m benchmarks.segmentation_accuracy --sequences 4 --frames 10 --out /tmp/seg.json

Synthetic: the CLI's default input (``SyntheticSource``: a moving hand whose arm runs out
of view, stereo noise), seeds S..S+N-1 (S = ``--first-seed``, 0), right hands on even seeds and left on odd ones,
frames 0..F-1 of each. The reference is the centroid of the hand's visible surface points
(noise-free), the point the network's training crops are centred on
(``tracker.training_data``); the error is the 3-D distance from it. Three ways:

* ``single_frame``: every frame segmented alone (``find_hand_center``), the geometric
  rules without help;
* ``first_frame``: every frame as the tracker takes a track's first (after a loss): the
  hand-presence classifier chooses among the places segmentation could put the hand
  (``tracker.prepare.likeliest_hand``);
* ``tracked``: each frame given the previous frame's centre as its prior
  (``track_hand_center``), as while tracking.

The 26 cm crop cube holds a hand of ~19 cm with room to spare, so a centre within ~3 cm of
the hand is harmless, and one more than 5 cm off cuts fingers off (or crops the forearm).

Real: the 19 SR305 frames in ``tests/data/sr305-gestures`` (body and arm in view), each with
a hand-labelled palm pixel (``palm_labels.json``, good to ~10 px): the image distance of the
projected centre from the label, and its depth against the palm's median depth, each
frame taken as a track's first.

Writes ``benchmarks/results/segmentation_accuracy.json`` (with the resolved config) and a
PNG of the error distributions next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import result_header, write_result
from tracker.crop import DEFAULT_CUBE_SIZE_M
from tracker.evaluate import first_frame_centre
from tracker.lens import pinhole_view, project
from tracker.prepare import HandChoiceConfig
from tracker.segment import SegmentConfig, find_hand_center, track_hand_center
from tracker.sources import FolderSource, SyntheticSource
from tracker.types import Handedness

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
REAL_DIR = ROOT / "tests" / "data" / "sr305-gestures"
#: A centre within this of the hand is harmless; beyond the far one fingers leave the crop.
NEAR_M, FAR_M = 0.03, 0.05


@dataclass(frozen=True)
class SegmentationBenchConfig:
    sequences: int = 20
    frames: int = 60
    first_seed: int = 0
    real_dir: str = str(REAL_DIR)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    hand_choice: HandChoiceConfig = field(default_factory=HandChoiceConfig)


def _first_frame_centre(depth_m: np.ndarray, intrinsics, config: SegmentationBenchConfig) -> np.ndarray | None:
    """Where the tracker centres a track's first crop (its default crop cube)."""
    return first_frame_centre(depth_m, intrinsics, DEFAULT_CUBE_SIZE_M, config.segment, config.hand_choice)


def _mm_or_none(error_m: float) -> float | None:
    return float(error_m * 1e3) if np.isfinite(error_m) else None


def error_stats(errors_m: np.ndarray) -> dict:
    """Summary of centre errors (metres; inf where no hand was found, NaN where no part of
    the hand was visible, so that there was nothing to find: those frames are left out)."""
    errors_m = np.asarray(errors_m, np.float64)
    without_visible_hand = int(np.isnan(errors_m).sum())
    errors_m = errors_m[~np.isnan(errors_m)]
    found = np.isfinite(errors_m)
    kept = errors_m[found]
    return {
        "frames": int(len(errors_m)),
        "frames_without_visible_hand": without_visible_hand,
        "found": float(found.mean()) if len(errors_m) else 0.0,
        "median_mm": float(np.median(kept) * 1e3) if kept.size else None,
        "p90_mm": float(np.percentile(kept, 90) * 1e3) if kept.size else None,
        f"within_{NEAR_M * 100:.0f}cm": float(np.mean(errors_m < NEAR_M)) if len(errors_m) else 0.0,
        f"over_{FAR_M * 100:.0f}cm_or_missed": float(np.mean(~(errors_m <= FAR_M))) if len(errors_m) else 0.0,
    }


def synthetic_errors(config: SegmentationBenchConfig, progress: bool = True) -> dict[str, np.ndarray]:
    """(sequences, frames) centre errors in metres for each way of segmenting."""
    shape = (config.sequences, config.frames)
    errors = {name: np.full(shape, np.inf) for name in ("single_frame", "first_frame", "tracked")}
    bar = tqdm(total=config.sequences * config.frames, desc="synthetic frames", disable=not progress, unit="frame")
    for index in range(config.sequences):
        seed = config.first_seed + index
        hand = Handedness.RIGHT if seed % 2 == 0 else Handedness.LEFT
        source = SyntheticSource(seed=seed, max_frames=config.frames, hand=hand)
        prior = None
        with source:
            for frame in source.frames():
                # As the tracker segments: the image without lens distortion (a no-op for a pinhole camera).
                depth_m, intrinsics = pinhole_view(frame.depth_m(), frame.intrinsics)
                with np.errstate(invalid="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # the mean of no visible pixel: NaN
                    truth = source.visible_hand_centroid(frame.frame_number)
                single = find_hand_center(depth_m, intrinsics, config.segment)
                first = _first_frame_centre(depth_m, intrinsics, config)
                tracked = track_hand_center(depth_m, intrinsics, prior, config.segment)
                prior = tracked
                i = frame.frame_number
                for name, centre in (("single_frame", single), ("first_frame", first), ("tracked", tracked)):
                    if not np.all(np.isfinite(truth)):
                        errors[name][index, i] = np.nan  # nothing of the hand in view to find
                    elif centre is not None:
                        errors[name][index, i] = np.linalg.norm(centre - truth)
                bar.update(1)
    bar.close()
    return errors


def real_errors(config: SegmentationBenchConfig) -> list[dict]:
    """Per labelled real frame: image distance (px) of the centre from the palm label and
    depth offset (m) from the palm's median depth; None fields where no hand was found."""
    real_dir = Path(config.real_dir)
    labels = json.loads((real_dir / "palm_labels.json").read_text())["palm_px"]
    source = FolderSource(real_dir)
    rows = []
    with source:
        frames = {source.files[frame.frame_number].relative_to(real_dir).as_posix(): frame for frame in source.frames()}
    for name, (label_u, label_v) in sorted(labels.items()):
        frame = frames[name]
        depth_m = frame.depth_m()
        centre = _first_frame_centre(*pinhole_view(depth_m, frame.intrinsics), config)
        row = {"frame": name, "distance_px": None, "depth_offset_m": None}
        if centre is not None:
            # The labels are pixels of the image as recorded, lens distortion and all.
            u, v = project(centre[None], frame.intrinsics)[0]
            palm = depth_m[max(0, label_v - 10) : label_v + 11, max(0, label_u - 10) : label_u + 11]  # clipped at the image edge
            row["distance_px"] = float(np.hypot(u - label_u, v - label_v))
            row["depth_offset_m"] = float(centre[2] - np.median(palm[palm > 0])) if np.any(palm > 0) else None
        rows.append(row)
    return rows


def plot(errors: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    t = np.linspace(0, 100, 201)
    for name, e in errors.items():
        e = e.ravel() * 1e3
        e = e[~np.isnan(e)]  # frames with nothing of the hand in view, left out as in error_stats
        ax.plot(t, [(e <= x).mean() for x in t], label=name.replace("_", " "))
    for x in (NEAR_M, FAR_M):
        ax.axvline(x * 1e3, color="0.7", lw=0.8, ls="--")
    ax.set(xlabel="centre error (mm, to the visible hand's centroid)", ylabel="fraction of frames", ylim=(0, 1.01), xlim=(0, 100))
    ax.set_title("Hand centre from segmentation, synthetic sequences", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.segmentation_accuracy",
        description="How far segmentation's hand centre is from the hand: synthetic sequences with known joints "
        "(single-frame, as a track's first frame, and tracked) and real SR305 frames with hand-labelled palms.",
    )
    parser.add_argument("--sequences", type=int, default=SegmentationBenchConfig.sequences, help="synthetic sequences (default %(default)s)")
    parser.add_argument("--frames", type=int, default=SegmentationBenchConfig.frames, help="frames per sequence (default %(default)s)")
    parser.add_argument("--first-seed", type=int, default=SegmentationBenchConfig.first_seed, help="seed of the first sequence (default %(default)s)")
    parser.add_argument("--real-dir", type=Path, default=REAL_DIR, help="labelled real frames (default: the SR305 test frames)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "segmentation_accuracy.json", help="result JSON, a PNG goes next to it (default benchmarks/results/segmentation_accuracy.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.sequences < 1 or args.frames < 1 or args.first_seed < 0:
        parser.error("--sequences and --frames must be >= 1, --first-seed >= 0")
    if not (args.real_dir / "palm_labels.json").is_file():
        parser.error(f"{args.real_dir} has no palm_labels.json")
    config = SegmentationBenchConfig(sequences=args.sequences, frames=args.frames, first_seed=args.first_seed, real_dir=str(args.real_dir))

    began = time.perf_counter()
    errors = synthetic_errors(config, progress=not args.no_progress)
    real = real_errors(config)
    distances = np.array([np.inf if r["distance_px"] is None else r["distance_px"] for r in real])
    result = {
        **result_header("segmentation_accuracy", argv),
        "config": asdict(config),
        "synthetic": {name: error_stats(e.ravel()) for name, e in errors.items()},
        "synthetic_worst_frames": [
            # None: no hand found in that frame at all (the worst, so listed first).
            {"seed": config.first_seed + int(s), "frame": int(f), "tracked_error_mm": _mm_or_none(errors["tracked"][s, f])}
            for s, f in zip(*np.unravel_index(np.argsort(-errors["tracked"], axis=None)[:10], errors["tracked"].shape))
        ],
        "real_sr305": {
            "frames": len(real),
            "found": int(np.isfinite(distances).sum()),
            "mean_distance_px": float(distances[np.isfinite(distances)].mean()) if np.isfinite(distances).any() else None,
            "max_distance_px": float(distances.max()) if len(real) and np.isfinite(distances).all() else None,  # None: some not found
            "within_40px": int((distances < 40).sum()),
            "per_frame": real,
        },
        "seconds": time.perf_counter() - began,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # The picture first: if drawing fails, the JSON beside it is not left newer than it.
    plot(errors, args.out.with_suffix(".png"))
    write_result(args.out, result)
    for name, stats in result["synthetic"].items():
        if stats["median_mm"] is None:
            print(f"synthetic {name:12s}: no hand found in any of the {stats['frames']} frames")
            continue
        print(
            f"synthetic {name:12s}: median {stats['median_mm']:.1f} mm, p90 {stats['p90_mm']:.1f} mm, "
            f"within 3 cm {stats['within_3cm']:.1%}, over 5 cm or missed {stats['over_5cm_or_missed']:.1%} "
            f"({stats['frames']} frames)"
        )
    r = result["real_sr305"]
    mean = "" if r["mean_distance_px"] is None else f", mean {r['mean_distance_px']:.1f} px"
    print(f"real SR305: {r['found']}/{r['frames']} found, {r['within_40px']} within 40 px of the palm label{mean}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
