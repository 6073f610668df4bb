"""End-to-end tracking capacity: a recording played as fast as possible through the tracker.

    python -m benchmarks.pipeline_speed [--frames 2000] [--backend onnxruntime]

Builds a .db3 recording of the synthetic moving hand (rs.software_device + rs.recorder),
then runs the whole chain on it, every frame, no viewer: playback -> segment -> crop ->
network -> refit -> JSON lines. Reports frames/s (median over 100-frame windows, and
overall), latency from frame arrival to written estimate (p50/p99), per-stage medians, and
the resident memory at the start and end of the run (growth over the frames).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from tracker.backends import create_backend
from tracker.estimator import HandEstimator
from tracker.hand_model import HandModel
from tracker.machine import machine_info
from tracker.pipeline import HandTracker, TrackerConfig, run_pipeline
from tracker.sinks import JsonLinesSink
from tracker.sources import RecordingSource, SyntheticSource, write_recording
from tracker.synth.dataset import config_to_dict
from tracker.weights import load_manifest

RESULTS = Path(__file__).resolve().parent / "results"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


class _Probe:
    """A sink that records when each frame was finished and the stage timings."""

    def __init__(self) -> None:
        self.done: list[float] = []
        self.timings: list[dict] = []
        self.rss: list[float] = []

    def write(self, result) -> None:
        self.done.append(time.perf_counter())
        self.timings.append(result.timings_ms)
        if len(self.done) % 100 == 0:
            self.rss.append(rss_mb())

    def close(self) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames in the recording (default %(default)s)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/pipeline_speed_<backend>.json)")
    args = parser.parse_args(argv)
    hand_model = HandModel.load()
    manifest = load_manifest()
    with tempfile.TemporaryDirectory() as tmp:
        recording = Path(tmp) / "hand.db3"
        print(f"recording {args.frames} synthetic frames ...")
        write_recording(recording, SyntheticSource(seed=0, max_frames=args.frames, hand_model=hand_model).frames(), pace=False)
        config = TrackerConfig(cube_size_m=manifest["cube_size_m"])
        tracker = HandTracker(HandEstimator(create_backend(args.backend), hand_model), config)
        probe = _Probe()
        rss_start = rss_mb()
        summary = run_pipeline(RecordingSource(recording, realtime=False), tracker, [JsonLinesSink(Path(tmp) / "out.jsonl"), probe], drop_old_frames=False)
        rss_end = rss_mb()
    stats = summary.stats()
    done = np.array(probe.done)
    windows = [100 / (done[i + 100] - done[i]) for i in range(0, len(done) - 100, 100)]
    stages = {k: float(np.median([t[k] for t in probe.timings if k in t])) for k in ("segment", "crop", "network", "refit")}
    result = {
        "benchmark": "pipeline_speed",
        "machine": machine_info(),
        "backend": args.backend,
        "tracker_config": config_to_dict(config),
        "frames": stats["frames"],
        "frames_with_hand": stats["frames_with_hand"],
        "frames_per_second_median_100_frame_windows": float(np.median(windows)) if windows else None,
        "frames_per_second_overall": stats["frames_per_second"],
        "latency_ms_p50": stats["latency_ms_p50"],
        "latency_ms_p99": stats["latency_ms_p99"],
        "stage_median_ms": stages,
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "rss_mb_growth": rss_end - rss_start,
        "rss_mb_every_100_frames": probe.rss,
    }
    out = args.out or RESULTS / f"pipeline_speed_{args.backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "tracker_config", "rss_mb_every_100_frames")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
