"""Synthetic dataset generator: N rendered samples -> sharded .npz files with ground truth.

    python -m tracker.synth.dataset --out data/synth --num-samples 10000 --seed 0 --workers 2

Sample i of a dataset is rendered from its own seed, derived from (dataset seed, i), so a
dataset is reproducible in whole or sample by sample (``render_sample(model, config,
seed)`` with the stored seed), whatever the shard size or worker count. Each shard is
written to a temporary name and renamed when complete, so an interrupted run never
leaves a half-written shard behind; ``config.json`` next to the shards holds the resolved
configuration. Training renders its samples on the fly from a stream of its own (and a
window around the hand), instead of reading shards.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import multiprocessing as mp
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from tracker.hand_model import HandModel
from tracker.synth.scene import SceneConfig, SyntheticSample, render_sample
from tracker.types import CameraIntrinsics, Handedness

SHARD_FORMAT_VERSION = 1
#: Arrays every shard holds, stacked over its samples (N) -> shape, dtype, unit.
SHARD_FIELDS = {
    "depth": "(N, H, W) uint16 device units, noisy, 0 = no data",
    "depth_scale": "(N,) float64 metres per unit",
    "mask": "(N, H, W) bool hand pixels (noise-free)",
    "mesh_coords": "(N, H, W, 2) float16 mesh-grid units, NaN off the hand",
    "labels": "(N, H, W) int8 hand part 0..15, 16 forearm, 17 body, 18 table, -1 background",
    "vertices": "(N, V, 3) float32 camera frame metres",
    "joints": "(N, 21, 3) float32 camera frame metres, MediaPipe order",
    "vertex_visible": "(N, V) bool",
    "intrinsics": "(N, 6) float64 width, height, fx, fy, cx, cy (pinhole)",
    "seed": "(N,) int64 per-sample seed for render_sample",
    "local_rotations": "(N, 25, 3, 3) float32",
    "bone_scales": "(N, 25, 2) float32 [length, thickness]",
    "cam_from_hand": "(N, 4, 4) float64",
    "is_left": "(N,) bool",
}


class ShardError(ValueError):
    """A shard file is missing, truncated or not a synthetic-data shard."""


def sample_seed(dataset_seed: int, index: int) -> int:
    """Seed of sample ``index`` of the dataset with seed ``dataset_seed``.

    32 bits, so a few indices of a long stream share a seed, and render the same sample: about
    n^2 / 2^33 pairs among n indices (some 560 in the 2.2 million samples the shipped weights
    drew), which is also why the evaluation checks its held-out frames against the training
    stream. Widening it would change every stream: the held-out set, and the place where a
    fine-tune takes up the training stream."""
    return int(np.random.SeedSequence([int(dataset_seed), int(index)]).generate_state(1, dtype=np.uint32)[0])


def config_to_dict(config) -> dict:
    def convert(value):
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        if isinstance(value, enum.Enum):  # plain values, for JSON and weights-only checkpoints
            return value.value
        return value

    return convert(config)


def stack_samples(samples: list[SyntheticSample]) -> dict[str, np.ndarray]:
    """Stack rendered samples into the shard layout described by SHARD_FIELDS."""
    return {
        "depth": np.stack([s.depth for s in samples]),
        "depth_scale": np.array([s.depth_scale for s in samples], np.float64),
        "mask": np.stack([s.mask for s in samples]),
        "mesh_coords": np.stack([s.mesh_coords for s in samples]).astype(np.float16),
        "labels": np.stack([s.labels for s in samples]).astype(np.int8),
        "vertices": np.stack([s.vertices for s in samples]),
        "joints": np.stack([s.joints for s in samples]),
        "vertex_visible": np.stack([s.vertex_visible for s in samples]),
        "intrinsics": np.array(
            [[s.intrinsics.width, s.intrinsics.height, s.intrinsics.fx, s.intrinsics.fy, s.intrinsics.cx, s.intrinsics.cy] for s in samples],
            np.float64,
        ),
        "seed": np.array([s.seed for s in samples], np.int64),
        "local_rotations": np.stack([s.pose.local_rotations for s in samples]).astype(np.float32),
        "bone_scales": np.stack([s.pose.bone_scales for s in samples]).astype(np.float32),
        "cam_from_hand": np.stack([s.pose.cam_from_hand for s in samples]),
        "is_left": np.array([s.pose.handedness == Handedness.LEFT for s in samples]),
    }


def write_shard(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz readable by np.load, deflated at level 1.

    The images are mostly empty, so the fastest deflate level already shrinks them ~20x;
    numpy's savez_compressed (level 6) costs more time than rendering the samples.
    """
    tmp = path.with_name(path.name + ".partial")
    arrays = {"format_version": np.int32(SHARD_FORMAT_VERSION), **arrays}
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    os.replace(tmp, path)


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Read a whole shard; raises ShardError with the reason if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: shard not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ShardError(f"{path}: shard is corrupt or truncated ({exc})") from exc
    missing = sorted(set(SHARD_FIELDS) - set(arrays))
    if missing:
        raise ShardError(f"{path}: not a synthetic-data shard (missing {missing})")
    if int(arrays.get("format_version", -1)) != SHARD_FORMAT_VERSION:
        raise ShardError(f"{path}: shard format {arrays.get('format_version')} != {SHARD_FORMAT_VERSION}")
    n = len(arrays["seed"])
    bad = [k for k in SHARD_FIELDS if len(arrays[k]) != n]
    if bad:
        raise ShardError(f"{path}: fields {bad} do not hold {n} samples")
    return arrays


def iter_shard_samples(path: str | Path) -> Iterator[dict]:
    """Yield the samples of a shard as dicts (depth also as float metres, intrinsics as an object)."""
    arrays = load_shard(path)
    for i in range(len(arrays["seed"])):
        w, h, fx, fy, cx, cy = arrays["intrinsics"][i]
        sample = {k: arrays[k][i] for k in SHARD_FIELDS}
        sample["intrinsics"] = CameraIntrinsics(int(w), int(h), fx, fy, cx, cy)
        sample["depth_m"] = arrays["depth"][i].astype(np.float32) * np.float32(arrays["depth_scale"][i])
        sample["mesh_coords"] = arrays["mesh_coords"][i].astype(np.float32)
        yield sample


_worker_model: HandModel | None = None


def _render_shard(job: tuple[Path, int, int, int, SceneConfig]) -> int:
    global _worker_model
    path, dataset_seed, start, count, config = job
    if _worker_model is None:
        _worker_model = HandModel.load()
    samples = [render_sample(_worker_model, config, sample_seed(dataset_seed, i)) for i in range(start, start + count)]
    write_shard(path, stack_samples(samples))
    return count


def generate_dataset(
    out_dir: str | Path,
    num_samples: int,
    seed: int = 0,
    shard_size: int = 128,
    workers: int = 1,
    config: SceneConfig | None = None,
    progress: bool = True,
) -> dict:
    """Render ``num_samples`` samples into ``out_dir``/shard-*.npz; returns a summary dict."""
    if num_samples < 1 or shard_size < 1 or workers < 1:
        raise ValueError("num_samples, shard_size and workers must be at least 1")
    config = config or SceneConfig()
    if config.render_window_m is not None:
        # Each windowed sample has its own image size, which a shard's stacked arrays cannot hold.
        raise ValueError("shards hold full frames: use a scene config without render_window_m")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Shards of an earlier run under other numbers would stay beside these and be read as
    # part of this dataset (duplicates, or another seed's samples).
    earlier = sorted(p.name for p in out_dir.iterdir() if p.name.startswith("shard-") or p.name.startswith("config.json"))
    if earlier:
        raise FileExistsError(
            f"{out_dir} already holds a dataset ({', '.join(earlier[:3])}{', ...' if len(earlier) > 3 else ''}): "
            "choose an empty folder, or delete that one first"
        )
    starts = range(0, num_samples, shard_size)
    jobs = [
        (out_dir / f"shard-{k:05d}.npz", seed, start, min(shard_size, num_samples - start), config)
        for k, start in enumerate(starts)
    ]
    description = (
        json.dumps(
            {
                "shard_format_version": SHARD_FORMAT_VERSION,
                "num_samples": num_samples,
                "seed": seed,
                "shard_size": shard_size,
                "fields": SHARD_FIELDS,
                "scene": config_to_dict(config),
            },
            indent=2,
        )
        + "\n"
    )
    began = time.perf_counter()
    bar = tqdm(total=num_samples, unit="sample", disable=not progress, desc="rendering")
    if workers == 1:
        for job in jobs:
            bar.update(_render_shard(job))
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            for done in pool.imap_unordered(_render_shard, jobs):
                bar.update(done)
    bar.close()
    # Last, and whole: a config.json says the dataset is complete.
    partial = out_dir / "config.json.partial"
    partial.write_text(description)
    os.replace(partial, out_dir / "config.json")
    seconds = time.perf_counter() - began
    return {"num_samples": num_samples, "shards": len(jobs), "seconds": seconds, "samples_per_second": num_samples / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracker.synth.dataset",
        description="Render a synthetic depth dataset with ground truth (hand mesh, joints, mesh-coordinate "
        "maps, part labels) into sharded .npz files. Deterministic for a given --seed.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples to render (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default %(default)s)")
    parser.add_argument("--shard-size", type=int, default=128, help="samples per shard file (default %(default)s)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    parser.add_argument("--no-noise", action="store_true", help="render clean depth (no stereo noise model)")
    parser.add_argument("--distance", type=float, nargs=2, metavar=("NEAR_M", "FAR_M"), default=(0.2, 0.9), help="hand distance range in metres")
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.shard_size < 1 or args.workers < 1:
        parser.error("--num-samples, --shard-size and --workers must be at least 1")
    if not 0.05 < args.distance[0] < args.distance[1]:
        parser.error("--distance needs 0.05 < NEAR_M < FAR_M")
    config = SceneConfig(
        noise_probability=0.0 if args.no_noise else 1.0,
        pose=dataclasses.replace(SceneConfig().pose, distance_range_m=tuple(args.distance)),
    )
    try:
        summary = generate_dataset(args.out, args.num_samples, args.seed, args.shard_size, args.workers, config)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {summary['num_samples']} samples in {summary['shards']} shards to {args.out} "
        f"({summary['samples_per_second']:.1f} samples/s with {args.workers} worker(s))"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
