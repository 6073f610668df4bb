"""A known flaw of the synthetic training scenes: how often the camera sees into the forearm
tube through its open wrist end.

    python -m benchmarks.synthetic_wrist_opening                       # 200 scenes of stream 1
    python -m benchmarks.synthetic_wrist_opening --scenes 20 --out /tmp/wrist.json

The forearm (``tracker.synth.scene.forearm_mesh``) is a tube that starts 1.5 cm inside the
hand, so that no gap opens when the wrist bends, and is left open at that end when the hand
is drawn. Where the wrist bends far, the tube's rim comes out through the skin and the camera
sees its inside: a dent beside the wrist, up to a few centimetres deep, that no real arm has. Each scene of the training stream (``tracker.training_data.ExampleConfig``'s scene,
without sensor noise) is rendered twice, with the tube as drawn and with its wrist end
capped; the pixels whose depth differs and that show the tube in the first are the ones that
look into it. Fixing this changes every synthetic frame, the held-out set included, and
helps only weights trained on the fixed scenes, so the scenes stay as the shipped weights
were trained on them until the next training run.

Writes ``benchmarks/results/synthetic_wrist_opening.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import check_output_path, result_header, write_result
from kernels.raster import rasterize_mesh
from tracker.hand_model import HandModel
from tracker.synth.dataset import sample_seed
from tracker.synth.scene import posed_forearm, render_sample
from tracker.training_data import ExampleConfig

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def tube_inside_pixels(model: HandModel, sample, scene) -> tuple[int, float]:
    """(pixels of ``sample`` that see into the open wrist end, deepest of them below the
    capped surface in metres; 0 where none)."""
    k = sample.intrinsics
    h, w = sample.depth.shape
    hand_faces = model.faces_for(sample.pose.handedness)
    renders = []
    for capped in (False, True):
        tube, tube_faces = posed_forearm(sample.pose, scene, cap_wrist=capped)
        depth = np.zeros((h, w), np.float32)
        face = np.full((h, w), -1, np.int32)
        barycentric = np.zeros((h, w, 3), np.float32)
        rasterize_mesh(sample.vertices, hand_faces, k.fx, k.fy, k.cx, k.cy, h, w, scene.near_m, depth, face, barycentric, 0)
        rasterize_mesh(tube, tube_faces, k.fx, k.fy, k.cx, k.cy, h, w, scene.near_m, depth, face, barycentric, len(hand_faces))
        renders.append((depth, face))
    (open_depth, open_face), (capped_depth, _) = renders
    # Where the scene itself shows that surface: a desk or body in front of it hides it.
    shown = np.abs(open_depth - sample.depth * sample.depth_scale) <= 2 * sample.depth_scale
    inside = (open_depth != capped_depth) & (open_face >= len(hand_faces)) & shown
    if not inside.any():
        return 0, 0.0
    return int(inside.sum()), float((open_depth[inside] - capped_depth[inside]).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.synthetic_wrist_opening",
        description="How often the synthetic training scenes show the inside of the forearm tube through its open wrist end.",
    )
    parser.add_argument("--scenes", type=int, default=200, help="scenes of the stream, from index 0 (default %(default)s)")
    parser.add_argument("--stream", type=int, default=1, help="the sample stream's seed (default %(default)s, the training stream)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "synthetic_wrist_opening.json", help="result JSON (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error("--scenes must be at least 1")
    check_output_path(parser, "--out", args.out)

    began = time.perf_counter()
    model = HandModel.load()
    scene = dataclasses.replace(ExampleConfig().scene, noise_probability=0.0)  # the clean surfaces
    pixels, depths = [], []
    for index in tqdm(range(args.scenes), desc="scenes", unit="scene", disable=args.no_progress):
        count, deepest = tube_inside_pixels(model, render_sample(model, scene, sample_seed(args.stream, index)), scene)
        pixels.append(count)
        depths.append(deepest)
    pixels, depths = np.array(pixels), np.array(depths)
    seen = pixels > 0
    result = {
        **result_header("synthetic_wrist_opening", argv),
        "config": {"scenes": args.scenes, "stream": args.stream, "scene": dataclasses.asdict(scene)},
        "scenes_seeing_into_the_tube": int(seen.sum()),
        "share_of_scenes": float(seen.mean()),
        "pixels_median_where_seen": float(np.median(pixels[seen])) if seen.any() else None,
        "pixels_max": int(pixels.max()),
        "depth_below_capped_surface_mm_max": float(depths.max() * 1000),
        "depth_below_capped_surface_mm_median_where_seen": float(np.median(depths[seen]) * 1000) if seen.any() else None,
        "seconds": time.perf_counter() - began,
    }
    write_result(args.out, result)
    print(
        f"{seen.sum()} of {args.scenes} scenes ({seen.mean():.1%}) show the inside of the forearm tube"
        + (f": median {result['pixels_median_where_seen']:.0f} pixels where they do, up to {depths.max() * 1000:.0f} mm deeper than a capped end" if seen.any() else "")
        + f"; written to {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
