"""Synthetic-data throughput: rendered samples per second per core, and with sharded output.

    python -m benchmarks.synthetic_throughput            # writes benchmarks/results/synthetic_throughput.json

Measures ``render_sample`` alone in one process (a full 640x480 frame, as the synthetic
source and the data-set generator render it), then a training example as a data-loader
worker makes it (``tracker.training_data.make_example``: a window around the hand, cut to
the 64x64 network input; the cost per sample per core of on-the-fly training), then the
whole generator (render + compress + write shards) with one worker and with one worker per
core.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from tracker.machine import machine_info
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
        "benchmark": "synthetic_throughput",
        "machine": machine_info(),
        "scene_config": config_to_dict(config),
        "render_sample_one_core": time_per_sample(lambda seed: render_sample(model, config, seed), args.samples),
        "training_example_one_core": {
            "render_window_m": example_config.scene.render_window_m,
            **time_per_sample(lambda seed: make_example(model, example_config, seed), args.samples),
        },
    }
    for workers in sorted({1, len(os.sched_getaffinity(0))}):  # the cores this process may use
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate_dataset(tmp, args.samples, seed=0, shard_size=64, workers=workers, config=config, progress=False)
        result[f"generate_dataset_{workers}_workers"] = {
            "samples": args.samples,
            "seconds": summary["seconds"],
            "samples_per_second": summary["samples_per_second"],
            "samples_per_second_per_core": summary["samples_per_second"] / workers,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("scene_config", "machine")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
