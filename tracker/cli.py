"""The ``run_tracker.py`` / ``dgn-track`` command line.

The live tracking pipeline is not assembled yet; today the command runs the built-in
synthetic input (the renderer streaming random hands, no camera needed) and writes a
picture of what the tracker will be fed: depth, ground-truth skeleton, mesh coordinates
and part labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_tracker.py",
        description="Depth-camera hand tracker (Dual Grid Net). With no arguments it runs on the built-in "
        "synthetic input, which needs no camera.",
    )
    parser.add_argument(
        "--source", default="synthetic", choices=["synthetic"], help="input to run on (default: %(default)s)"
    )
    parser.add_argument("--max-frames", type=int, default=6, help="frames to process (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic input (default: %(default)s)")
    parser.add_argument(
        "--image", type=Path, default=Path("out/synthetic_frames.png"), help="PNG to write (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_frames < 1:
        build_parser().error("--max-frames must be at least 1")
    from tracker.hand_model import HandModel
    from tracker.synth.contact_sheet import sample_row, write_contact_sheet
    from tracker.synth.scene import SceneConfig, render_sample

    print("No camera requested: running on the built-in synthetic input (rendered hands with sensor noise).")
    model = HandModel.load()
    rows = []
    for i in range(args.max_frames):
        sample = render_sample(model, SceneConfig(), args.seed + i)
        depth_m = sample.depth.astype(np.float32) * np.float32(sample.depth_scale)
        wrist = sample.joints[0]
        print(f"frame {i}: hand at {np.linalg.norm(wrist):.2f} m, {int(sample.mask.sum())} hand pixels")
        rows.append(
            sample_row(depth_m, sample.mask, sample.mesh_coords, sample.labels, sample.joints, sample.intrinsics, f"frame {i}")
        )
    path = write_contact_sheet(rows, args.image)
    print(f"wrote {path}")
    return 0
