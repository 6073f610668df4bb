"""Depth with holes: how the tracker copes with pixels lost all over the hand.

    python -m benchmarks.depth_holes                             # 60 poses x 5 loss rates
    python -m benchmarks.depth_holes --poses 4 --out /tmp/holes.json

A depth camera loses pixels here and there on a surface it otherwise measures (a dark or
oblique patch of skin for coded light, little texture for a stereo camera): single pixels
and small clusters, which the training data's noise (blob-shaped holes, losses along edges)
does not hold. Each pose is the first frame of the built-in synthetic input (as in
``benchmarks.working_distance``: right hands on even seeds, left on odd ones, an arm running
out of view, stereo noise) with its hand's origin at ``--distance``; of it, each
``--loss-rates`` share of the pixels is set to "no depth" at random, and the frame is
tracked as a track's first (no prior, the side decided from that frame alone), by the
command line's and the API's tracker (``tracker.api.open_tracker``), which fills the
crop's isolated holes (``tracker.crop.HOLE_FILL_MIN_MEASURED``), and by the same tracker
with that fill turned off: what the fill is for.

Per loss rate and arm: the share of frames with a hand reported, judged to hold none, or
with nothing found; the mean joint error of the hands reported, mm, against the rendered
joints; and the share of them given the right side.

Writes ``benchmarks/results/depth_holes.json`` (with the command, machine and settings).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

import tracker.crop
from benchmarks import cell, check_output_path, print_table, result_header, write_result
from benchmarks.working_distance import add_first_frame_arguments, first_frame_outcome, outcome_summary, pose_at_distance


@dataclass(frozen=True)
class DepthHolesConfig:
    poses: int = 60
    first_seed: int = 0
    #: Metres from the camera to the hand's origin (its wrist end), along its ray.
    distance_m: float = 0.45
    #: Shares of the image's pixels lost, each independently of the others.
    loss_rates: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
    backend: str = "onnxruntime"


@contextlib.contextmanager
def hole_fill(on: bool):
    """The crop's hole fill as the tracker has it (on), or turned off: no hole has more
    than 8 neighbours measured."""
    kept = tracker.crop.HOLE_FILL_MIN_MEASURED
    if not on:
        tracker.crop.HOLE_FILL_MIN_MEASURED = 9
    try:
        yield
    finally:
        tracker.crop.HOLE_FILL_MIN_MEASURED = kept


def lose_pixels(depth: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``depth`` with each pixel set to 0 (no depth) with probability ``rate``."""
    return np.where(rng.random(depth.shape) < rate, 0, depth).astype(depth.dtype)


def measure(config: DepthHolesConfig, progress: bool = True) -> list[dict]:
    from tracker.api import open_tracker

    outcomes = {(fill, rate): [] for fill in (True, False) for rate in config.loss_rates}
    with open_tracker(backend=config.backend) as hand_tracker:
        seeds = range(config.first_seed, config.first_seed + config.poses)
        for seed in tqdm(seeds, desc="poses", disable=not progress):
            source, depth, posed = pose_at_distance(seed, config.distance_m)
            for rate in config.loss_rates:
                # The same holes for both arms.
                holed = lose_pixels(depth, rate, np.random.default_rng([seed, int(round(1000 * rate))]))
                for fill in (True, False):
                    with hole_fill(fill):
                        outcomes[fill, rate].append({"seed": seed, **first_frame_outcome(hand_tracker, source, holed, posed)})
    return [
        {"hole_fill": fill, "loss_rate": rate, **outcome_summary(frames), "per_pose": frames}
        for (fill, rate), frames in outcomes.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.depth_holes",
        description="How often a hand is reported, and how well it is fitted, with a share of its pixels lost at random, "
        "with the crop's hole fill and without (synthetic poses, each tracked as a track's first frame).",
    )
    add_first_frame_arguments(parser, DepthHolesConfig, "loss rate", "depth_holes.json")
    parser.add_argument("--distance", type=float, default=DepthHolesConfig.distance_m, metavar="M", help="distance from the camera, metres (default %(default)s)")
    parser.add_argument(
        "--loss-rates", type=float, nargs="+", default=list(DepthHolesConfig.loss_rates), metavar="SHARE",
        help="shares of the pixels lost, 0 to below 1 (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.poses < 1 or args.first_seed < 0:
        parser.error("--poses must be at least 1, --first-seed at least 0")
    if not 0.05 < args.distance < 3.0:
        parser.error("--distance must lie between 0.05 and 3 m (what the renderer draws)")
    if not all(0.0 <= r < 1.0 for r in args.loss_rates):
        parser.error("--loss-rates must lie in [0, 1)")
    check_output_path(parser, "--out", args.out)
    config = DepthHolesConfig(
        poses=args.poses, first_seed=args.first_seed, distance_m=args.distance, loss_rates=tuple(args.loss_rates), backend=args.backend
    )

    began = time.perf_counter()
    rows = measure(config, progress=not args.no_progress)
    result = {
        **result_header("depth_holes", argv),
        "config": asdict(config),
        "by_loss_rate": rows,
        "seconds": time.perf_counter() - began,
    }
    write_result(args.out, result)
    print_table(
        ["lost", "fill", "hand", "judged no hand", "nothing", "joint error", "side right"],
        [
            [f"{row['loss_rate']:.0%}", "on" if row["hole_fill"] else "off", f"{row['hand_reported']:.0%}", f"{row['judged_no_hand']:.0%}",
             f"{row['nothing_found']:.0%}", cell(row["mean_joint_error_mm"], ".1f", " mm"), cell(row["side_right"], ".0%")]
            for row in rows
        ],
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
