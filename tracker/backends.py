"""Inference backends: one interface over torch, onnxruntime and TensorRT for the live loop.

The tracker calls ``backend.run(depth)`` once per frame with the (1, 1, S, S) float32 crop
from ``tracker.crop`` (S = 64) and gets back the network's four outputs as float32 numpy
arrays, named as in the ONNX export (``tracker.weights.ONNX_OUTPUTS``):

    mesh_coords   (1, 2, S, S)  mesh coordinate of each pixel, grid units (0..G)
    hand_logit    (1, 1, S, S)  hand-pixel logit
    grid_offsets  (1, 3, G, G)  3-D offsets on the mesh grid, crop-normalised units
    vertices      (1, V, 3)     P_s, crop-normalised units (input to ``tracker.refit``)

Backends (``create_backend(name)``):

* ``onnxruntime``  CPU, the default for machines without an NVIDIA GPU;
* ``onnxruntime-int8`` the same with the 8-bit network (``tracker.quantize``): faster
  convolutions on the CPU for a fraction of a millimetre of accuracy;
* ``torch``        the reference implementation (eval mode, no autograd), CPU or CUDA;
* ``torch-cuda``   torch on CUDA replaying one captured CUDA graph per frame;
* ``tensorrt``     an engine built from the shipped ONNX on first use and cached per GPU,
  TensorRT version, ONNX checksum and precision under the user cache directory.

``run`` is ``launch`` then ``collect``. On the GPU backends ``launch`` only queues the
work, so the tracker hands the next frame to a segmentation worker while the GPU runs the
network (``tracker.pipeline``); on the CPU ones it computes.

Every backend loads its weights file through the manifest's SHA-256 check
(``tracker.weights``). A backend that cannot run on this machine raises
``BackendUnavailable`` when created. ``create_backend`` never falls back to another
backend; ``start_backend`` does for the ``auto`` choice alone, with a note, when the GPU
backend it picked cannot start (``gpu_start_failure``).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from tracker.weights import (
    MANIFEST,
    ONNX,
    ONNX_INT8,
    ONNX_INPUT,
    ONNX_OUTPUTS,
    WEIGHTS_DIR,
    WeightsError,
    load_manifest,
    load_network,
    verified_path,
)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
#: GPU scratch memory TensorRT may use while choosing kernels (bytes); the network needs far
#: less, the limit only bounds what the builder tries.
DEFAULT_TRT_WORKSPACE_BYTES = 1 << 30


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine (missing package or GPU)."""


@runtime_checkable
class Backend(Protocol):
    """Batch-1 network inference: (1, 1, S, S) float32 crop -> the four named float32 outputs."""

    name: str
    #: S, the crop's edge in pixels.
    crop_size: int

    def run(self, depth: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


class _BackendBase:
    """Input checking and context-manager support shared by the backends."""

    name = "?"
    crop_size: int
    #: Whether ``launch`` returns before the network has run (a GPU's queue), so that work
    #: between it and ``collect`` overlaps the network.
    asynchronous = False
    #: How many launched crops may wait to be collected, each ``collect`` taking the oldest.
    frames_in_flight = 1

    def _checked_input(self, depth: np.ndarray) -> np.ndarray:
        s = self.crop_size
        if not isinstance(depth, np.ndarray) or depth.shape != (1, 1, s, s):
            got = depth.shape if isinstance(depth, np.ndarray) else type(depth).__name__
            raise ValueError(f"{self.name}: expected a (1, 1, {s}, {s}) float32 crop, got {got}")
        if depth.dtype != np.float32:
            # Casting here would hide a float64 pipeline that costs a copy every frame.
            raise ValueError(f"{self.name}: expected float32 input, got {depth.dtype}; make the crop float32 upstream")
        # A NaN would make every output NaN on one backend and pass unseen on another (the
        # 8-bit one); tracker.crop gives none (no measurement is 1, as the background).
        if not np.isfinite(depth).all():
            raise ValueError(f"{self.name}: the crop holds NaN or infinite depths; give pixels without a measurement 1, as tracker.crop does")
        return np.ascontiguousarray(depth)

    def launch(self, depth: np.ndarray) -> None:
        """Start the network on one crop; ``collect`` returns its outputs. A GPU backend
        returns as soon as the work is queued, so the caller can do other work while the GPU
        runs; a CPU backend computes here. One crop at a time: a second launch first waits
        for the one before, whose outputs are then lost."""
        self._launched = None
        self._launched = self.run(depth)

    def collect(self) -> dict[str, np.ndarray]:
        """The outputs of the last ``launch``, as ``run`` returns them."""
        outputs, self._launched = getattr(self, "_launched", None), None
        if outputs is None:
            raise RuntimeError(f"{self.name}: collect() without a launch() before it")
        return outputs

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _require_cuda(backend: str) -> None:
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"the {backend} backend needs an NVIDIA GPU with CUDA, and torch {torch.__version__} sees none "
            "(a CPU-only torch build, no driver, or CUDA_VISIBLE_DEVICES hides the GPU); "
            "use the 'onnxruntime' backend on this machine"
        )


def physical_cores() -> int:
    """Physical CPU cores this process may run on (hyper-threads counted once).

    Linux: distinct (package, core) pairs among the CPUs in the affinity mask, from sysfs,
    and no more than a container's CPU quota allows (a container limited to 2 CPUs on a
    64-core host sees all 64 in its mask, and 32 spinning threads there are throttled).
    Elsewhere, or if sysfs is unreadable, the logical CPU count: the cost of over-counting is
    a slower session, never a wrong result.
    """
    try:
        cpus = os.sched_getaffinity(0)
        cores = set()
        for cpu in cpus:
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            cores.add(
                ((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip())
            )
        count = len(cores)
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup"), own_group: str | None = None) -> float | None:
    """The CPUs' worth of time this process's cgroup may use (a container's --cpus), or None
    when unlimited or unknown. cgroup v2: the smallest ``cpu.max`` ("QUOTA PERIOD" or "max
    PERIOD") of the process's own group (``own_group``, from /proc/self/cgroup when None) and
    every group above it, since a parent's limit holds for all its children; v1:
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1: none)."""
    if own_group is None:
        try:
            groups = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            groups = []
        own_group = next((line.split(":", 2)[2] for line in groups if line.startswith("0::")), "/")
    folder = root / own_group.strip().lstrip("/")
    limits, any_v2 = [], False
    while True:
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            any_v2 = True
            if quota != "max":
                limits.append(int(quota) / int(period))
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    if any_v2:
        return min(limits) if limits else None
    for folder in (root / "cpu,cpuacct", root / "cpu"):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
            return None if quota <= 0 or period <= 0 else quota / period
        except (OSError, ValueError):
            continue
    return None


# --------------------------------------------------------------------------- torch


class TorchBackend(_BackendBase):
    """The reference: the torch network from ``dgn.pt``, eval mode, no autograd."""

    name = "torch"

    def __init__(self, weights_dir: str | Path = WEIGHTS_DIR, device: str = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda":
            _require_cuda("torch (device='cuda')")
        network, self.manifest = load_network(weights_dir)
        self.network = network.to(self.device).eval()
        self.crop_size = self.network.config.crop_size

    def run(self, depth: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(self._checked_input(depth)).to(self.device)
        with torch.inference_mode():
            out = self.network(x)
        return {name: out[name].float().cpu().numpy() for name in ONNX_OUTPUTS}

    def close(self) -> None:
        self.network = None


def packed_layout(outputs: dict[str, "torch.Tensor"]) -> list[tuple[str, tuple[int, ...], int, int]]:
    """Where each named output lies in ``pack_outputs``' flat buffer: (name, shape, start,
    end), in ``ONNX_OUTPUTS`` order."""
    layout, start = [], 0
    for name in ONNX_OUTPUTS:
        shape = tuple(outputs[name].shape)
        end = start + math.prod(shape)
        layout.append((name, shape, start, end))
        start = end
    return layout


def pack_outputs(outputs: dict[str, "torch.Tensor"]) -> "torch.Tensor":
    """The outputs, float32, flattened one after another in ``ONNX_OUTPUTS`` order: one copy
    off the GPU per frame instead of one per output (each a driver call of tens of
    microseconds, on the tracker thread)."""
    return torch.cat([outputs[name].reshape(-1).float() for name in ONNX_OUTPUTS])


def unpack_outputs(flat: np.ndarray, layout: list[tuple[str, tuple[int, ...], int, int]]) -> dict[str, np.ndarray]:
    """The named outputs, as views of ``flat`` (see ``packed_layout``)."""
    return {name: flat[start:end].reshape(shape) for name, shape, start, end in layout}


class TorchCudaGraphBackend(_BackendBase):
    """torch on CUDA, the whole forward captured once as a CUDA graph and replayed per frame.

    At batch 1 the eager network is bound by kernel-launch overhead (hundreds of small
    kernels); a graph replay launches them all in one call. The graph reads a fixed input
    buffer and writes fixed output buffers, so each frame copies in and copies out.
    Convolutions follow torch's cuDNN defaults (TF32 allowed on Ampere and newer).

    Two crops may be in flight: each has its own pinned host buffers, and everything runs
    on one stream, so the second crop's copy in waits for the first one's graph, and its
    graph for the first one's copy out, in the GPU's own order.
    """

    name = "torch-cuda"
    asynchronous = True
    frames_in_flight = 2

    def __init__(self, weights_dir: str | Path = WEIGHTS_DIR, warmup_runs: int = 3) -> None:
        _require_cuda(self.name)
        self.device = torch.device("cuda")
        network, self.manifest = load_network(weights_dir)
        self.network = network.to(self.device).eval()
        s = self.crop_size = self.network.config.crop_size
        self.static_input = torch.zeros((1, 1, s, s), dtype=torch.float32, device=self.device)
        # Warm-up on a side stream, as capture requires: it lets cuDNN pick its algorithms and
        # the caching allocator settle before the graph's memory pool is recorded.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(warmup_runs):
                self.network(self.static_input)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            outputs = self.network(self.static_input)
            # Packed inside the graph: one more kernel in the replay, one copy out per frame.
            self.static_packed = pack_outputs(outputs)
        self.layout = packed_layout(outputs)
        # Pinned host buffers make the per-frame copies true DMA transfers; one pair per
        # crop in flight, used in turn.
        slots = range(self.frames_in_flight)
        self.host_inputs = [torch.empty((1, 1, s, s), dtype=torch.float32, pin_memory=True) for _ in slots]
        self.host_packed = [torch.empty(self.static_packed.shape, dtype=torch.float32, pin_memory=True) for _ in slots]
        self.done = [torch.cuda.Event() for _ in slots]  # recorded after a crop's copy out
        self.queued: collections.deque[int] = collections.deque()  # slots launched, oldest first
        self.next_slot = 0

    @property
    def in_flight(self) -> bool:
        return bool(self.queued)

    def launch(self, depth: np.ndarray) -> None:
        checked = self._checked_input(depth)
        if len(self.queued) == self.frames_in_flight:
            # Every slot's pinned buffers may still be read by copies queued: the oldest
            # crop is waited for, and its outputs are lost.
            self.done[self.queued.popleft()].synchronize()
        slot = self.next_slot
        self.host_inputs[slot].numpy()[...] = checked
        # From here a copy may be queued that reads the pinned buffer, whatever fails next.
        self.queued.append(slot)
        self.next_slot = (slot + 1) % self.frames_in_flight
        self.static_input.copy_(self.host_inputs[slot], non_blocking=True)
        self.graph.replay()
        self.host_packed[slot].copy_(self.static_packed, non_blocking=True)
        self.done[slot].record()

    def collect(self) -> dict[str, np.ndarray]:
        """The outputs of the oldest crop launched and not yet collected."""
        if not self.queued:
            raise RuntimeError(f"{self.name}: collect() without a launch() before it")
        slot = self.queued.popleft()
        self.done[slot].synchronize()
        # A copy: the host buffer is overwritten by a later crop.
        return unpack_outputs(self.host_packed[slot].numpy().copy(), self.layout)

    def run(self, depth: np.ndarray) -> dict[str, np.ndarray]:
        while self.queued:  # run() hands back this crop's outputs, so nothing may be ahead of it
            self.collect()
        self.launch(depth)
        return self.collect()

    def close(self) -> None:
        if getattr(self, "queued", None):  # nothing queued may outlive the buffers it uses
            torch.cuda.current_stream().synchronize()
            self.queued.clear()
        self.graph = self.static_packed = self.static_input = self.network = None


# --------------------------------------------------------------------------- onnxruntime


class OnnxRuntimeBackend(_BackendBase):
    """onnxruntime with the verified ``dgn.onnx``, on the CPU unless ``providers`` says otherwise.

    One frame at a time, so the session runs sequentially (no inter-op parallelism) with one
    intra-op thread per physical core by default: hyper-threads share the core's vector
    units and only add synchronisation cost for convolutions this small. On a machine that
    is busy with other work, fewer threads than cores avoid stalls (see
    ``benchmarks.network_speed --threads``).

    ``spin``: whether idle intra-op threads spin-wait for the next operator within a run
    (between runs they sleep, whichever it is). Spinning is
    faster when the network has the cores to itself (60 against 51 frames/s end to end on
    a 2-core CPU, 2000-frame runs); when frame-preparation worker processes share those cores, the spinning
    threads steal their time, and turning it off is faster (70 against 58 frames/s with one
    worker; both measured while the threads still spun between runs too).
    ``tracker.pipeline.backend_options`` chooses.
    """

    name = "onnxruntime"

    def __init__(
        self,
        weights_dir: str | Path = WEIGHTS_DIR,
        threads: int | None = None,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
        spin: bool = True,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable(
                f"the {self.name} backend needs the onnxruntime package ({exc}); pip install onnxruntime"
            ) from exc
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            # onnxruntime itself would warn and quietly run on the CPU instead.
            raise BackendUnavailable(
                f"onnxruntime {ort.__version__} here offers {ort.get_available_providers()}, not {missing}; "
                "install the onnxruntime build for that provider or leave providers at the CPU default"
            )
        self.providers = tuple(providers)
        self.manifest = load_manifest(weights_dir)
        path = self._model_path(Path(weights_dir))
        self.crop_size = int(self.manifest["network"]["crop_size"])
        self.threads = physical_cores() if threads is None else int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.spin = bool(spin)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        # Within a run only: left spinning after it, the threads hold the cores through the
        # tracker's own work between two networks (the refinement's second thread, the
        # capture thread), which then waits for them.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(self.providers))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise WeightsError(f"{path}: onnxruntime cannot load the model ({exc}); {self._remedy(Path(weights_dir))}") from exc
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [ONNX_INPUT] or set(outputs) != set(ONNX_OUTPUTS):
            raise WeightsError(
                f"{path}: expected input {[ONNX_INPUT]} and outputs {list(ONNX_OUTPUTS)}, got {inputs} and {outputs}; "
                f"the file was not written by this project's export; {self._remedy(Path(weights_dir))}"
            )
        shape = self.session.get_inputs()[0].shape
        if shape != [1, 1, self.crop_size, self.crop_size]:
            raise WeightsError(
                f"{path} takes input of shape {shape}, but {MANIFEST} says {self.crop_size}x{self.crop_size} crops; "
                f"the two are not of one model; {self._remedy(Path(weights_dir))}"
            )
        self.ort_version = ort.__version__

    def _model_path(self, weights_dir: Path) -> Path:
        return verified_path(weights_dir, ONNX, self.manifest)

    def _remedy(self, weights_dir: Path) -> str:
        return "re-export the weights"

    def run(self, depth: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(list(ONNX_OUTPUTS), {ONNX_INPUT: self._checked_input(depth)})
        return {name: np.asarray(v, np.float32) for name, v in zip(ONNX_OUTPUTS, values, strict=True)}

    def close(self) -> None:
        self.session = None


class OnnxRuntimeInt8Backend(OnnxRuntimeBackend):
    """onnxruntime with ``dgn_int8.onnx``: int8 convolutions, the rest as ``onnxruntime``.

    The 8-bit file must have been made from the float network now in the directory: one
    left over from an earlier export would run the old weights under the new checksums.
    """

    name = "onnxruntime-int8"

    def _remedy(self, weights_dir: Path) -> str:
        return f"remake it with: python -m tracker.quantize --weights {weights_dir}"

    def _model_path(self, weights_dir: Path) -> Path:
        command = f"python -m tracker.quantize --weights {weights_dir}"
        if ONNX_INT8 not in self.manifest["files"] or "onnx_int8" not in self.manifest:
            raise WeightsError(f"no 8-bit network in {weights_dir} ({ONNX_INT8} is not listed in {MANIFEST}); make it with: {command}")
        if self.manifest["onnx_int8"].get("quantized_from") != self.manifest["files"].get(ONNX):
            raise WeightsError(
                f"{weights_dir / ONNX_INT8} was quantised from another {ONNX} than the one in {weights_dir} "
                f"(re-exported since?); remake it with: {command}"
            )
        return verified_path(weights_dir, ONNX_INT8, self.manifest)


# --------------------------------------------------------------------------- TensorRT


def _sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "unknown"


def default_engine_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dgn-hand-tracker/tensorrt`` (``~/.cache`` when unset or relative, per XDG)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "dgn-hand-tracker" / "tensorrt"


def engine_cache_path(
    cache_dir: str | Path, gpu_name: str, tensorrt_version: str, onnx_sha256: str, precision: str
) -> Path:
    """Where the engine for this GPU, TensorRT version, ONNX file and precision is cached.

    An engine is only valid for the GPU model and TensorRT version that built it, and for one
    network file; all four go into the name, so a new model or upgrade builds a fresh engine.
    """
    name = "_".join(
        [_sanitise(gpu_name), "trt" + _sanitise(tensorrt_version), _sanitise(onnx_sha256), _sanitise(precision)]
    )
    return Path(cache_dir) / f"{name}.engine"


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailable(
            f"the tensorrt backend needs NVIDIA TensorRT >= 10 ({exc}); "
            "pip install -e '.[gpu]' on a machine with an NVIDIA GPU, or use the 'onnxruntime' backend"
        ) from exc
    return tensorrt


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


class TensorRTBackend(_BackendBase):
    """A TensorRT engine built from the shipped ``dgn.onnx``, cached per GPU and model.

    The first run on a machine builds the engine (tens of seconds) and writes it to
    ``cache_dir`` (default ``default_engine_cache_dir()``, never the repository); later runs
    deserialize it, and build it again if the cached file no longer loads. torch CUDA tensors serve as the engine's device buffers, so no pycuda.

    precision "fp16" lets TensorRT pick half-precision kernels (I/O stays float32); it needs
    a GPU with fast FP16 and TensorRT 10.x (TensorRT 11 removed weakly typed FP16 builds).
    "fp32" also disables TF32, so its outputs track the torch reference to float precision.
    """

    name = "tensorrt"
    asynchronous = True

    def __init__(
        self,
        weights_dir: str | Path = WEIGHTS_DIR,
        precision: str = "fp16",
        cache_dir: str | Path | None = None,
        workspace_bytes: int = DEFAULT_TRT_WORKSPACE_BYTES,
    ) -> None:
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp16' or 'fp32', got {precision!r}")
        self.precision = precision
        cache_dir = Path(cache_dir) if cache_dir is not None else default_engine_cache_dir()
        if cache_dir.resolve().is_relative_to(REPO_ROOT):
            # Engines are per-machine binaries of ~MBs; one committed by accident is useless elsewhere.
            raise ValueError(
                f"TensorRT engine cache {cache_dir} is inside the repository {REPO_ROOT}; choose a directory outside it"
            )
        trt = _import_tensorrt()
        self.tensorrt_version = trt.__version__
        if _version_tuple(trt.__version__) < (8, 5):
            raise BackendUnavailable(
                f"TensorRT {trt.__version__} lacks the named-tensor API (execute_async_v3); install TensorRT >= 10"
            )
        _require_cuda(self.name)
        self.device = torch.device("cuda")
        self.manifest = load_manifest(weights_dir)
        onnx_path = verified_path(weights_dir, ONNX, self.manifest)
        self.crop_size = int(self.manifest["network"]["crop_size"])
        self.gpu_name = torch.cuda.get_device_name(self.device)
        self.engine_path = engine_cache_path(
            cache_dir, self.gpu_name, trt.__version__, self.manifest["files"][ONNX], precision
        )
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.built_engine = not self.engine_path.is_file()
        if self.built_engine:
            serialized = self._build_and_cache(trt, onnx_path, workspace_bytes)
        else:
            try:
                serialized = self.engine_path.read_bytes()
            except OSError as exc:  # unreadable: rebuilt below like one that does not load
                log.warning("could not read the cached TensorRT engine %s (%s)", self.engine_path, exc)
                serialized = b""
        self.engine = self.runtime.deserialize_cuda_engine(serialized) if serialized else None
        if self.engine is None and not self.built_engine:
            # The key cannot see everything an engine depends on (a driver update, a damaged
            # disk block), and a stale engine is only a cache: build it again, once.
            log.warning(
                "the cached TensorRT engine %s could not be loaded (see the TensorRT log above); rebuilding it",
                self.engine_path,
            )
            serialized = self._build_and_cache(trt, onnx_path, workspace_bytes)
            self.built_engine = True
            self.engine = self.runtime.deserialize_cuda_engine(serialized)
        if self.engine is None:
            raise BackendUnavailable(
                f"TensorRT could not deserialize the engine it has just built, {self.engine_path} "
                "(see the TensorRT log above); use the 'torch-cuda' backend on this machine"
            )
        self.context = self.engine.create_execution_context()
        self._bind_buffers(trt)
        self.stream = torch.cuda.Stream(self.device)
        # The buffers were allocated on the default stream; order their first use after that.
        self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def _build_and_cache(self, trt, onnx_path: Path, workspace_bytes: int) -> bytes:
        serialized = self._build(trt, onnx_path, workspace_bytes)
        # Write-then-rename: an interrupted build never leaves a truncated engine under the final name.
        partial = self.engine_path.with_name(f"{self.engine_path.name}.{os.getpid()}.partial")
        try:
            self.engine_path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(serialized)
            os.replace(partial, self.engine_path)
        except OSError as exc:
            # The cache is only a cache (a read-only home, a full disk): this run uses the
            # engine it has built, and the next one builds it again.
            log.warning("could not cache the TensorRT engine in %s (%s); it is built again on the next run", self.engine_path, exc)
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass
        return serialized

    def _build(self, trt, onnx_path: Path, workspace_bytes: int) -> bytes:
        log.info(
            "building TensorRT %s engine for %s from %s (first run on this machine)",
            self.precision,
            self.gpu_name,
            onnx_path,
        )
        builder = trt.Builder(self.logger)
        # Before TensorRT 10 the ONNX parser only accepts explicit-batch networks; from 10 on the
        # flag is deprecated (and removed in 11) because every network is explicit batch.
        flags = (
            0
            if _version_tuple(trt.__version__) >= (10,)
            else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        )
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise WeightsError(f"{onnx_path}: the TensorRT ONNX parser rejected the model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
        if self.precision == "fp16":
            fp16 = getattr(trt.BuilderFlag, "FP16", None)
            if fp16 is None:
                raise BackendUnavailable(
                    f"TensorRT {trt.__version__} has no FP16 builder flag (weakly typed builds were removed in 11.x); "
                    "use precision='fp32', or install tensorrt>=10,<11 for FP16"
                )
            # Deprecated from TensorRT 10.5 but still answered; where it is gone, FP16 stays an
            # allowance (weak typing) and TensorRT keeps FP32 kernels the GPU lacks FP16 for.
            if not getattr(builder, "platform_has_fast_fp16", True):
                raise BackendUnavailable(f"{self.gpu_name} has no fast FP16 support; use precision='fp32'")
            config.set_flag(fp16)
        elif hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailable(
                f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above); "
                "use the 'torch-cuda' backend on this machine"
            )
        return bytes(serialized)

    def _bind_buffers(self, trt) -> None:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if set(names) != {ONNX_INPUT, *ONNX_OUTPUTS}:
            raise WeightsError(
                f"{self.engine_path}: engine tensors {names} are not {[ONNX_INPUT, *ONNX_OUTPUTS]}; "
                "delete the file to rebuild it"
            )
        self.device_buffers: dict[str, torch.Tensor] = {}
        for name in names:
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = self.engine.get_tensor_dtype(name)
            if any(d < 0 for d in shape) or dtype != trt.DataType.FLOAT:
                raise WeightsError(f"{self.engine_path}: tensor {name} is {shape} {dtype}, expected static float32")
            buffer = torch.empty(shape, dtype=torch.float32, device=self.device)
            self.context.set_tensor_address(name, buffer.data_ptr())
            self.device_buffers[name] = buffer
        self.host_input = torch.empty(self.device_buffers[ONNX_INPUT].shape, dtype=torch.float32, pin_memory=True)
        self.host_outputs = {
            n: torch.empty(self.device_buffers[n].shape, dtype=torch.float32, pin_memory=True) for n in ONNX_OUTPUTS
        }
        self.in_flight = False

    def launch(self, depth: np.ndarray) -> None:
        checked = self._checked_input(depth)
        if self.in_flight:  # the pinned input buffer may still be read by the copy before
            self.stream.synchronize()
        self.host_input.numpy()[...] = checked
        self.in_flight = True  # from here a copy may be queued that reads the pinned buffer
        with torch.cuda.stream(self.stream):
            self.device_buffers[ONNX_INPUT].copy_(self.host_input, non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            for name, host in self.host_outputs.items():
                host.copy_(self.device_buffers[name], non_blocking=True)

    def collect(self) -> dict[str, np.ndarray]:
        if not self.in_flight:
            raise RuntimeError(f"{self.name}: collect() without a launch() before it")
        self.stream.synchronize()
        self.in_flight = False
        return {name: host.numpy().copy() for name, host in self.host_outputs.items()}

    def run(self, depth: np.ndarray) -> dict[str, np.ndarray]:
        self.launch(depth)
        return self.collect()

    def close(self) -> None:
        if getattr(self, "in_flight", False):  # no queued work may outlive its context
            self.stream.synchronize()
            self.in_flight = False
        # Context before engine before runtime: TensorRT objects must die in reverse creation order.
        self.context = None
        self.engine = None
        self.runtime = None
        self.device_buffers = {}


# --------------------------------------------------------------------------- registry

BACKENDS: dict[str, type] = {
    "onnxruntime": OnnxRuntimeBackend,
    "onnxruntime-int8": OnnxRuntimeInt8Backend,
    "torch": TorchBackend,
    "torch-cuda": TorchCudaGraphBackend,
    "tensorrt": TensorRTBackend,
}


#: The default of the command line and of ``tracker.api``: the fastest backend known to run
#: here (``automatic_backend``).
AUTO_BACKEND = "auto"

#: What ``auto`` falls back to, and what every machine runs.
CPU_BACKEND = "onnxruntime"


def automatic_backend() -> str:
    """The backend ``auto`` stands for on this machine: torch CUDA graphs where torch sees an
    NVIDIA GPU, else onnxruntime. TensorRT is never picked unasked: its engine build takes
    tens of seconds on a first run, and it needs a package most machines lack."""
    return "torch-cuda" if torch.cuda.is_available() else CPU_BACKEND


def gpu_start_failure(error: BaseException) -> bool:
    """Whether ``error``, raised while a GPU backend was being created, says the GPU cannot
    run it here (no CUDA, no kernels for this GPU, out of memory, a CUDA library failing)
    rather than a fault in the code, which must not be hidden behind a fallback."""
    if isinstance(error, (BackendUnavailable, torch.cuda.OutOfMemoryError)):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    return type(error) is RuntimeError and any(word in str(error) for word in ("CUDA", "cuDNN", "CUBLAS", "cublas", "NVRTC"))


def release_gpu_memory() -> None:
    """Hand back what a GPU backend that failed to start left in torch's memory cache."""
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def start_backend(
    asked: str,
    weights_dir: str | Path = WEIGHTS_DIR,
    options_for: Callable[[str], dict] = lambda name: {},
    on_fallback: Callable[[str], None] = log.warning,
) -> tuple[Backend, str, str | None]:
    """The backend ``asked`` for (``AUTO_BACKEND`` resolved here), its name, and a note when
    the GPU backend ``auto`` chose could not start and ``CPU_BACKEND`` runs instead (else
    None). ``options_for(name)``: ``create_backend``'s options for the backend of that name.
    ``on_fallback(note)`` is called before the CPU backend starts, so the note is seen even
    if that fails too.

    Only ``auto``'s choice falls back, and only on a failure that says the GPU cannot run
    it (``gpu_start_failure``): a backend named explicitly that cannot run raises, and so
    does a fault in the code.
    """
    automatic = asked == AUTO_BACKEND
    if not automatic and asked not in BACKENDS:
        raise ValueError(f"unknown inference backend {asked!r}; choose one of: {AUTO_BACKEND}, {', '.join(BACKENDS)}")
    name = automatic_backend() if automatic else asked
    failure = None
    try:
        return create_backend(name, weights_dir, **options_for(name)), name, None
    except Exception as exc:
        if not automatic or name == CPU_BACKEND or not gpu_start_failure(exc):
            raise
        failure = f"{type(exc).__name__}: {exc}"
    # Out of the handler, so the failed backend's tensors (held by the traceback) can go first.
    release_gpu_memory()
    note = f"the {name} backend cannot run here ({failure}); using {CPU_BACKEND} instead"
    on_fallback(note)
    return create_backend(CPU_BACKEND, weights_dir, **options_for(CPU_BACKEND)), CPU_BACKEND, note


def create_backend(name: str, weights_dir: str | Path = WEIGHTS_DIR, **options) -> Backend:
    """The backend called ``name`` (a key of BACKENDS) with its options.

    Raises BackendUnavailable unchanged when it cannot run here: the choice was explicit.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown inference backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    return BACKENDS[name](weights_dir, **options)
