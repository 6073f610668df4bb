"""Synthetic-data throughput: rendered samples per second per core, and with sharded output.

    python -m benchmarks.synthetic_throughput            # writes benchmarks/results/synthetic_throughput.json

Measures ``render_sample`` alone in one process (a full 640x480 frame, as the synthetic
source and the data-set generator render it), then a training example as a data-loader
worker makes it (``tracker.training_data.make_example``: a window around the hand, cut to
the 64x64 network input; the cost per sample per core of on-the-fly training), then the
whole generator (render + compress + write shards) with one worker and with one worker per
core. The generator's figures are what its command gives: with more than one worker they
include starting the worker processes (a fresh interpreter each, importing and loading the
hand model), which ``pool_start_up_s`` measures on its own; the samples are split into
four equal shards per worker, so no worker idles while another finishes.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import result_header, write_result
from tracker.backends import cgroup_cpu_quota
from tracker.hand_model import HandModel
from tracker.synth.dataset import config_to_dict, generate_dataset
from tracker.synth.scene import SceneConfig, render_sample
from tracker.training_data import ExampleConfig, make_example

RESULT = Path(__file__).resolve().parent / "results" / "synthetic_throughput.json"


def time_per_sample(make, samples: int) -> dict:
    """Median and p90 ms of ``make(seed)`` over ``samples`` seeds, after 5 untimed calls
    (JIT compilation and caches)."""
    for seed in range(5):
        make(seed)
    times_ms = []
    for seed in range(1000, 1000 + samples):
        t0 = time.perf_counter()
        make(seed)
        times_ms.append((time.perf_counter() - t0) * 1e3)
    return {
        "samples": samples,
        "median_ms": float(np.median(times_ms)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "samples_per_second_per_core": float(1e3 / np.mean(times_ms)),
    }


def _ready(_: int) -> bool:
    from tracker.synth import dataset  # noqa: F401  what a generator worker imports first

    HandModel.load()
    return True


def usable_cpus() -> int:
    """The CPUs this process may use: its affinity mask, capped by a container's CPU quota
    (a 2-CPU limit on a 64-CPU host is 2 workers' worth, not 64)."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota is not None else cpus


def pool_start_up_seconds(workers: int) -> float:
    """Seconds for ``workers`` spawned processes to start, import the renderer and load the
    hand model: the part of a multi-worker generator run that is not rendering."""
    began = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_ready, range(workers), chunksize=1)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="samples per measurement (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULT, help="result JSON (default %(default)s)")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    config = SceneConfig()
    example_config = ExampleConfig()
    model = HandModel.load()
    result = {
        **result_header("synthetic_throughput", argv),
        "scene_config": config_to_dict(config),
        "example_config": config_to_dict(example_config),
        "render_sample_one_core": time_per_sample(lambda seed: render_sample(model, config, seed), args.samples),
        "training_example_one_core": {
            "render_window_m": example_config.scene.render_window_m,
            **time_per_sample(lambda seed: make_example(model, example_config, seed), args.samples),
        },
    }
    for workers in sorted({1, usable_cpus()}):
        shard_size = math.ceil(args.samples / (4 * workers))
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate_dataset(tmp, args.samples, seed=0, shard_size=shard_size, workers=workers, config=config, progress=False)
        entry = {
            "samples": args.samples,
            "shard_size": shard_size,
            "seconds": summary["seconds"],
            "samples_per_second": summary["samples_per_second"],
            "samples_per_second_per_core": summary["samples_per_second"] / workers,
        }
        if workers > 1:
            entry["pool_start_up_s"] = pool_start_up_seconds(workers)
        result[f"generate_dataset_{workers}_workers"] = entry
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("scene_config", "machine")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
