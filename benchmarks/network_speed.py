"""Network speed: batch-1 forward latency per inference backend, and the numba refit.

    python -m benchmarks.network_speed                          # weights/, every backend
    python -m benchmarks.network_speed --weights /tmp/dgn --backends onnxruntime,torch --iterations 200
    python -m benchmarks.network_speed --threads 1               # CPU backends on one core

Per backend: build it (``setup_s``, which includes a TensorRT engine build on a cold cache),
``--warmup`` untimed runs, then ``--iterations`` timed ``run`` calls on one fixed crop, each
including the host->device and device->host copies the live loop pays. Reports median /
p90 / p99 latency in ms and sequential runs per second, plus the largest output deviation
from the torch CPU reference (max|a - b| / max|b| per output). TensorRT is measured at fp16
and fp32; ``onnxruntime-int8`` (the 8-bit network, when ``tracker.quantize`` made one) differs
from the reference by its rounding, not by a defect. A backend that cannot run here is
recorded as {"skipped": reason}.

The refit (``Refit.fit``, numba) runs on the reference's output vertices; its time adds to
the network's per frame.

So that figures from different machines can be compared, the result also holds the
forward's arithmetic (``network_gflop``: convolutions and matrix products, counted by
torch), each backend's ``achieved_gflops``, and on the CPU what a large float32 matrix
product reaches with the same threads (``cpu_matmul_gflops``, the best of runs before and
after the backends), and ``forward_ms_at_matmul_rate``: the forward's float32 arithmetic at
that rate. It is a reference, not a bound: the matrix-product rate itself varies from run to
run on a shared machine, and a backend's fastest call (``min_ms``) can beat it (integer
arithmetic has another peak altogether).

Results go to ``benchmarks/results/network_speed_<device>.json`` (device: "cpu", or the
sanitised name of the CUDA GPU torch sees) with the machine, the network config from the
manifest and the library versions. Any exported weights directory works (``--weights``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import check_output_path, result_header, write_result
from tracker.backends import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    TensorRTBackend,
    TorchBackend,
    cgroup_cpu_quota,
    create_backend,
    physical_cores,
)
from tracker.hand_model import HandModel, HandModelError
from tracker.pipeline import ONNXRUNTIME_CPU_BACKENDS
from tracker.refit import Refit
from tracker.weights import ONNX, ONNX_INT8, ONNX_OUTPUTS, WEIGHTS_DIR, WeightsError, load_manifest, random_input

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_tag() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-") or "cuda"


def library_versions() -> dict:
    versions = {"torch": torch.__version__, "numpy": np.__version__, "cuda": torch.version.cuda}
    for name in ("onnxruntime", "onnx", "numba", "tensorrt"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            versions[name] = None
    return versions


def network_gflop(network: torch.nn.Module, depth: np.ndarray) -> float:
    """Floating-point operations of one forward (multiply-adds count two), in 1e9."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.as_tensor(depth))
    return counter.get_total_flops() / 1e9


def cpu_matmul_gflops(threads: int, size: int = 2048, repeats: int = 20) -> float:
    """float32 GFLOP/s of a size x size matrix product in torch on ``threads`` threads (best of ``repeats``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        best = min(time_calls(lambda: a @ b, warmup=1, iterations=repeats))
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / best / 1e9


def latency_stats(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1e3
    return {
        "iterations": len(ms),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "runs_per_second": float(len(ms) / (ms.sum() / 1e3)),
    }


def time_calls(fn, warmup: int, iterations: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def max_relative_error(out: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        n: float(np.max(np.abs(out[n] - reference[n])) / max(float(np.max(np.abs(reference[n]))), 1e-6))
        for n in ONNX_OUTPUTS
    }


def variants(name: str, threads: int | None) -> list[tuple[str, dict]]:
    """(result key, create_backend options) for each configuration of one backend measured."""
    if name in ONNXRUNTIME_CPU_BACKENDS and threads is not None:
        return [(name, {"threads": threads})]
    if name == "tensorrt":
        return [("tensorrt-fp16", {"precision": "fp16"}), ("tensorrt-fp32", {"precision": "fp32"})]
    return [(name, {})]


def measure_backend(
    name: str, options: dict, weights: Path, depth: np.ndarray, reference, warmup: int, iterations: int
) -> dict:
    t0 = time.perf_counter()
    try:
        backend: Backend = create_backend(name, weights, **options)
    except BackendUnavailable as exc:
        return {"skipped": str(exc)}
    except WeightsError as exc:
        if name == "onnxruntime-int8" and ONNX_INT8 not in load_manifest(weights)["files"]:
            return {"skipped": str(exc)}  # an optional file
        # A damaged or stale file: this backend's entry says so, the others are still
        # measured, and the run ends with an error.
        return {"error": str(exc)}
    setup_s = time.perf_counter() - t0
    try:
        result = {"setup_s": setup_s, **latency_stats(time_calls(lambda: backend.run(depth), warmup, iterations))}
        result["max_relative_error_vs_torch_cpu"] = max_relative_error(backend.run(depth), reference)
        if isinstance(backend, TensorRTBackend):
            result.update(engine=str(backend.engine_path), engine_built_now=backend.built_engine)
        if hasattr(backend, "threads"):
            result["threads"] = backend.threads
    finally:
        backend.close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.network_speed", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights", type=Path, default=WEIGHTS_DIR, help="exported weights directory (default %(default)s)"
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated (default: all of %(default)s)")
    parser.add_argument("--iterations", type=int, default=300, help="timed runs per backend (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed runs first (default %(default)s)")
    parser.add_argument(
        "--peak-repeats", type=int, default=20,
        help="timed 2048x2048 matrix products for the CPU's reference rate, before and after the backends (default %(default)s; "
        "about 0.25 s each on one core)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch and onnxruntime (default: their own defaults)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="result JSON (default benchmarks/results/network_speed_<device>.json)"
    )
    args = parser.parse_args(argv)
    args.argv = argv  # recorded with the results
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if args.iterations < 1 or args.peak_repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--iterations, --peak-repeats and --threads must be >= 1, --warmup >= 0")
    if args.out is None and (args.weights.resolve() != WEIGHTS_DIR.resolve() or set(names) != set(BACKENDS) or args.threads is not None):
        # The default file is the shipped weights' run over every backend, which the docs
        # and the model card quote: a partial run goes beside it, not over it.
        parser.error("--weights, --backends and --threads need --out (the default result file holds the full run of weights/)")
    if args.out is not None:
        check_output_path(parser, "--out", args.out)
    threads_before = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _measure(args, names)
    finally:  # the caller's own setting again (an importing process, a test session)
        torch.set_num_threads(threads_before)


def _measure(args: argparse.Namespace, names: list[str]) -> int:
    try:
        manifest = load_manifest(args.weights)
        reference_backend = TorchBackend(args.weights)
    except (WeightsError, HandModelError) as exc:
        print(
            f"error: {exc}\n(pass --weights DIR with a directory written by tracker.weights.export_weights)",
            file=sys.stderr,
        )
        return 2

    depth = random_input(seed=0, crop_size=int(manifest["network"]["crop_size"]))
    reference = reference_backend.run(depth)
    gflop = network_gflop(reference_backend.network, depth)
    reference_backend.close()
    tag = device_tag()
    # The reference rate before the backends as well as after: it moves on a shared machine.
    matmul_before = cpu_matmul_gflops(args.threads or physical_cores(), repeats=args.peak_repeats) if tag == "cpu" else None
    result = {
        **result_header("network_speed", args.argv),
        "device": tag,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        # The cores onnxruntime's threads are sized to: physical cores in the affinity mask,
        # capped by a container's CPU quota (recorded too; None: no quota).
        "physical_cores": physical_cores(),
        "cgroup_cpu_quota": cgroup_cpu_quota(),
        # Other work on the machine inflates the tails (p90/p99) first; keep the evidence.
        "load_average_1min_at_start": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions(),
        "weights": {
            "dir": str(args.weights.resolve()),
            "onnx_sha256": manifest["files"][ONNX],
            "onnx_int8_sha256": manifest["files"].get(ONNX_INT8),
            "parameters": manifest.get("parameters"),
        },
        "network": manifest["network"],
        "network_gflop": gflop,
        "settings": {"warmup": args.warmup, "iterations": args.iterations, "peak_repeats": args.peak_repeats, "batch": 1, "threads": args.threads, "backends": names},
        "backends": {},
    }
    for name in names:
        for key, options in variants(name, args.threads):
            print(f"{key} ...", file=sys.stderr, flush=True)
            result["backends"][key] = measure_backend(
                name, options, args.weights, depth, reference, args.warmup, args.iterations
            )
    if torch.cuda.is_available() and "torch" in names:
        # Eager CUDA next to the graph-replay backend shows what the CUDA graph saves.
        result["backends"]["torch-cuda-eager"] = measure_backend(
            "torch", {"device": "cuda"}, args.weights, depth, reference, args.warmup, args.iterations
        )

    for measured in result["backends"].values():
        if "median_ms" in measured:
            measured["achieved_gflops"] = gflop / (measured["median_ms"] / 1e3)
    if tag == "cpu":
        threads = args.threads or physical_cores()
        rates = {"before_backends": matmul_before, "after_backends": cpu_matmul_gflops(threads, repeats=args.peak_repeats)}
        result["cpu_matmul_gflops"] = {"threads": threads, "gflops": max(rates.values()), **rates}
        result["forward_ms_at_matmul_rate"] = 1e3 * gflop / result["cpu_matmul_gflops"]["gflops"]

    refit = Refit(HandModel.load())
    vertices = reference["vertices"][0]
    refit_times = time_calls(
        lambda: refit.fit(vertices), warmup=5, iterations=args.iterations
    )  # warm-up compiles the numba kernels
    result["refit"] = {"vertices": int(vertices.shape[0]), **latency_stats(refit_times)}

    result["load_average_1min_at_end"] = os.getloadavg()[0]
    out = args.out or RESULTS_DIR / f"network_speed_{tag}.json"
    write_result(out, result)
    summary = {
        k: (
            {m: round(v, 3) for m, v in r.items() if m.endswith("_ms") or m == "runs_per_second"}
            if "skipped" not in r and "error" not in r
            else r
        )
        for k, r in {**result["backends"], "refit": result["refit"]}.items()
    }
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    failed = {k: r["error"] for k, r in result["backends"].items() if "error" in r}
    for key, error in failed.items():
        print(f"error: {key}: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
