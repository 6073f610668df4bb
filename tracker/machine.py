"""Describes the machine a benchmark or training run ran on, stored with its results."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path


#: Vector extensions that decide how fast the network and the kernels run: virtual machines
#: often report only "AMD EPYC", and two such CPUs measured 3x apart on the same network.
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (a container's or taskset's share)
    where the platform has one (Linux), else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model", "flags") and key not in fields:
                    fields[key] = value.strip()
                if not line.strip() and fields:  # the first processor's block is enough
                    break
    except OSError:
        pass
    cpu = fields.get("model name", cpu)
    flags = set(fields.get("flags", "").split())
    # The project's own commit, from wherever the command was started, and whether tracked
    # files differed from it (a result from uncommitted code cannot be reproduced from it).
    # Results already written (a series of benchmarks run one after another) are no change
    # to what is measured.
    commit = _git("rev-parse", "--short", "HEAD")
    outputs = [f":(top,exclude){path}" for path in RESULT_DIRECTORIES]
    changes = _git("status", "--porcelain", "--untracked-files=no", "--", ":/", *outputs) if commit else None
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "utc_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_family_model": f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}",
        "vector_extensions": [name for name in VECTOR_FLAGS if name in flags],
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_uncommitted_changes": None if changes is None else bool(changes),
        # Other work on the machine slows what is measured: 1.0 is one core busy.
        "load_average_1min": load,
        "libraries": library_versions(),
        "gpu": _gpu(),
    }


def _gpu() -> dict | None:
    """The CUDA GPU torch uses, when torch is already loaded (it is not imported for this)."""
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_available():
            return None
        major, minor = torch.cuda.get_device_capability()
        return {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}", "cuda": torch.version.cuda}
    except Exception:  # a broken driver: the result still gets written
        return None


#: Distributions whose versions decide a result (installed or not).
LIBRARIES = ("torch", "numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "numba", "tensorrt", "tensorrt-cu12", "pyrealsense2", "opencv-python-headless", "opencv-python", "open3d", "scipy")


def library_versions() -> dict[str, str | None]:
    """Installed versions, read from the package metadata (nothing is imported)."""
    from importlib import metadata

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


#: Where measurements are written, relative to the repository's root.
RESULT_DIRECTORIES = ("benchmarks/results",)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parent
        ).stdout.strip()
    except OSError:
        return ""
