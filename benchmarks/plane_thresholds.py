"""How the crop's background plane (``tracker.crop.BackgroundPlane``) does on the scenes its
thresholds are chosen on: how often it finds the surface behind a hand, and how much of
the hand it clears with it, for one setting or several.

    python -m benchmarks.plane_thresholds                            # scenes 200-399
    python -m benchmarks.plane_thresholds --min-border 0.10 0.12 0.15 --scenes 50
    python -m benchmarks.plane_thresholds --min-share 0.15 0.20 0.25

The scenes are ``benchmarks.near_surfaces``' (seed stream 9), from scene 200 on: that
benchmark reports on scenes 0-99, which no threshold was chosen on. Each scene, with no
surface and with one a given gap behind the hand, is cropped at the visible hand's
centroid (where the network's training crops are centred) in both crop frames (the
network's, along the ray, and the classifiers', the camera's), and the plane searched for
with each setting (every pair of the ``min_border`` and ``min_share`` values given, the
rest the tracker's). Per gap and setting: the share of crops in which a plane was found
(with no surface: found where there is none), and the share of the crops' hand pixels it
cleared.

Writes ``benchmarks/results/plane_thresholds.json`` (with the command, machine and settings).
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

from benchmarks import check_output_path, print_table, result_header, write_result
from benchmarks.near_surfaces import scene_at
from tracker.crop import BackgroundPlane, CropFrame, make_crop, resample
from tracker.training_data import hand_centroid
from tracker.types import Handedness

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class PlaneThresholdsConfig:
    first_scene: int = 200
    scenes: int = 200
    gaps_m: tuple[float | None, ...] = (None, 0.0, 0.01, 0.02, 0.04, 0.08)
    #: ``BackgroundPlane.min_border`` and ``min_share`` values compared, each pair, every
    #: other setting the tracker's.
    min_borders: tuple[float, ...] = (BackgroundPlane.min_border,)
    min_shares: tuple[float, ...] = (BackgroundPlane.min_share,)
    cube_size_m: float = 0.26


def measure(config: PlaneThresholdsConfig, progress: bool = True) -> list[dict]:
    from tracker.hand_model import HandModel

    hand_model = HandModel.load()
    planes = {
        (border, share): dataclasses.replace(BackgroundPlane(), min_border=border, min_share=share)
        for border in config.min_borders for share in config.min_shares
    }
    # Per (gap, setting): crops, crops with a plane found, hand pixels, hand pixels cleared.
    counts = {(z, setting): np.zeros(4, np.int64) for z in config.gaps_m for setting in planes}
    scenes = range(config.first_scene, config.first_scene + config.scenes)
    for index in tqdm(scenes, desc="scenes", disable=not progress):
        for z in config.gaps_m:
            depth, sample = scene_at(index, z, hand_model)
            depth_m = depth.astype(np.float32) * np.float32(sample.depth_scale)
            centre = hand_centroid(depth_m, sample.mask, sample.intrinsics, sample.joints.mean(axis=0))
            for frame in CropFrame:
                kept = make_crop(depth_m, sample.intrinsics, centre, config.cube_size_m, Handedness.RIGHT, frame=frame)
                measured = (kept.depth > -1.0) & (kept.depth < 1.0)
                hand = resample(sample.mask.astype(np.uint8), kept.image_from_crop, kept.depth.shape[0], 0).astype(bool) & measured
                for setting, plane in planes.items():
                    cleared = make_crop(depth_m, sample.intrinsics, centre, config.cube_size_m, Handedness.RIGHT, frame=frame, background_plane=plane)
                    found = bool(np.any(measured & (cleared.depth == 1.0)))
                    counts[z, setting] += [1, found, hand.sum(), (hand & (cleared.depth == 1.0)).sum()]
    return [
        {
            "gap_m": z, "min_border": border, "min_share": share, "crops": int(n[0]), "plane_found": float(n[1] / n[0]),
            "hand_pixels_cleared": float(n[3] / n[2]) if n[2] else None,
        }
        for (z, (border, share)), n in counts.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.plane_thresholds",
        description="How often the crop's background plane finds the surface behind a hand, and how much of the hand it clears, "
        "on the scenes its thresholds are chosen on (benchmarks.near_surfaces' scenes from 200 on), per gap, min_border and min_share.",
    )
    defaults = PlaneThresholdsConfig()
    parser.add_argument("--first-scene", type=int, default=defaults.first_scene, help="first scene (default %(default)s)")
    parser.add_argument("--scenes", type=int, default=defaults.scenes, help="scenes (default %(default)s)")
    parser.add_argument(
        "--min-border", type=float, nargs="+", default=list(defaults.min_borders), metavar="SHARE",
        help="BackgroundPlane.min_border values compared (default: the tracker's, %(default)s)",
    )
    parser.add_argument(
        "--min-share", type=float, nargs="+", default=list(defaults.min_shares), metavar="SHARE",
        help="BackgroundPlane.min_share values compared, each with each --min-border (default: the tracker's, %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / "plane_thresholds.json", help="result JSON (default benchmarks/results/plane_thresholds.json)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.scenes < 1 or args.first_scene < 0:
        parser.error("--scenes must be at least 1 and --first-scene at least 0")
    if not all(0.0 <= share <= 1.0 for share in (*args.min_border, *args.min_share)):
        parser.error("--min-border and --min-share values must lie between 0 and 1")
    check_output_path(parser, "--out", args.out)
    config = PlaneThresholdsConfig(first_scene=args.first_scene, scenes=args.scenes, min_borders=tuple(args.min_border), min_shares=tuple(args.min_share))

    began = time.perf_counter()
    rows = measure(config, progress=not args.no_progress)
    write_result(args.out, {**result_header("plane_thresholds", argv), "config": asdict(config), "rows": rows, "seconds": time.perf_counter() - began})
    print_table(
        ["gap", "min_border", "min_share", "crops", "plane found", "hand pixels cleared"],
        [
            [
                "none" if row["gap_m"] is None else f"{100 * row['gap_m']:.0f} cm", f"{row['min_border']:.2f}", f"{row['min_share']:.2f}", str(row["crops"]),
                f"{row['plane_found']:.1%}", "-" if row["hand_pixels_cleared"] is None else f"{row['hand_pixels_cleared']:.2%}",
            ]
            for row in rows
        ],
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
