"""Inference backends: parity with the torch reference, the ONNX export, checked weights
loading and explicit errors for backends this machine cannot run.

A small randomly initialised network stands in for the trained one (same graph, fewer
channels), so the file runs in seconds and does not need ``weights/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tracker.backends import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    OnnxRuntimeBackend,
    TensorRTBackend,
    TorchBackend,
    TorchCudaGraphBackend,
    create_backend,
    default_engine_cache_dir,
    engine_cache_path,
    pack_outputs,
    packed_layout,
    physical_cores,
    unpack_outputs,
)
from conftest import export_small_network
from tracker.network import DualGridNetConfig
from tracker.weights import (
    MANIFEST,
    ONNX,
    ONNX_INPUT,
    ONNX_OUTPUTS,
    STATE_DICT,
    WeightsError,
    load_manifest,
    random_input,
)

SMALL = DualGridNetConfig(image_channels=16, mesh_channels=16, feature_channels=8)
CUDA = torch.cuda.is_available()


def relative_error(actual: np.ndarray, reference: np.ndarray, eps: float = 1e-6) -> float:
    """max|a - b| / max(max|b|, eps) over one output.

    Normalising by the output's peak magnitude, not element-wise, makes the bound
    scale-free across outputs that live on different scales (mesh coordinates up to 16,
    offsets below 1) without blowing up on elements that happen to be near zero, where
    float32 reassociation in a different kernel library leaves an absolute, not relative,
    error. eps only guards an all-zero output.
    """
    return float(np.max(np.abs(actual - reference)) / max(float(np.max(np.abs(reference))), eps))


def expected_shapes(config: DualGridNetConfig, num_vertices: int) -> dict[str, tuple[int, ...]]:
    s, g = config.crop_size, config.mesh_grid_size
    return {
        "mesh_coords": (1, 2, s, s),
        "hand_logit": (1, 1, s, s),
        "grid_offsets": (1, 3, g, g),
        "vertices": (1, num_vertices, 3),
    }


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The test network is tiny: with several intra-op threads torch spends its time in thread
    # hand-offs, and on a machine busy with other work those stall for seconds per forward.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, hand_model) -> Path:
    out = tmp_path_factory.mktemp("dgn_weights")
    export_small_network(hand_model, SMALL, out, 0.25)
    return out


@pytest.fixture(scope="module")
def reference(weights_dir) -> dict[str, np.ndarray]:
    with TorchBackend(weights_dir) as backend:
        return backend.run(random_input(seed=1, crop_size=SMALL.crop_size))


def copy_weights(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in (MANIFEST, STATE_DICT, ONNX):
        shutil.copy(src / name, dst / name)
    return dst


def test_torch_reference_outputs(reference, hand_model):
    assert set(reference) == set(ONNX_OUTPUTS)
    for name, shape in expected_shapes(SMALL, hand_model.num_vertices).items():
        assert reference[name].shape == shape and reference[name].dtype == np.float32, name
        assert np.all(np.isfinite(reference[name])), name


def test_onnxruntime_matches_torch(weights_dir, reference):
    with create_backend("onnxruntime", weights_dir, threads=1) as backend:
        assert isinstance(backend, Backend)
        out = backend.run(random_input(seed=1, crop_size=SMALL.crop_size))
    assert set(out) == set(ONNX_OUTPUTS)
    for name in ONNX_OUTPUTS:
        assert out[name].dtype == np.float32 and out[name].shape == reference[name].shape, name
        assert relative_error(out[name], reference[name]) < 1e-4, name


def test_onnxruntime_defaults_and_missing_provider(weights_dir):
    with OnnxRuntimeBackend(weights_dir) as backend:
        assert 1 <= backend.threads == physical_cores() <= os.cpu_count()
        assert backend.providers == ("CPUExecutionProvider",)
    with pytest.raises(BackendUnavailable, match="not \\['NoSuchExecutionProvider'\\]"):
        OnnxRuntimeBackend(weights_dir, providers=("NoSuchExecutionProvider",))


def test_onnx_export_round_trip(weights_dir, hand_model):
    onnx = pytest.importorskip("onnx")
    manifest = load_manifest(weights_dir)
    model = onnx.load(str(weights_dir / ONNX))
    onnx.checker.check_model(model, full_check=True)

    def static_shape(value_info) -> tuple[int, ...]:
        dims = value_info.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") for d in dims), f"{value_info.name} has a symbolic dimension"
        return tuple(d.dim_value for d in dims)

    assert [i.name for i in model.graph.input] == [ONNX_INPUT] == [manifest["onnx"]["input"]]
    assert static_shape(model.graph.input[0]) == tuple(manifest["onnx"]["input_shape"])
    assert [o.name for o in model.graph.output] == list(ONNX_OUTPUTS) == manifest["onnx"]["outputs"]
    shapes = expected_shapes(SMALL, hand_model.num_vertices)
    for output in model.graph.output:
        assert static_shape(output) == shapes[output.name], output.name
    float32 = onnx.TensorProto.FLOAT
    assert all(v.type.tensor_type.elem_type == float32 for v in [*model.graph.input, *model.graph.output])


def test_truncated_onnx_is_rejected(weights_dir, tmp_path):
    broken = copy_weights(weights_dir, tmp_path / "w")
    data = (broken / ONNX).read_bytes()
    (broken / ONNX).write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"dgn\.onnx is corrupt or from another model.*SHA-256"):
        create_backend("onnxruntime", broken)


def test_truncated_state_dict_is_rejected(weights_dir, tmp_path):
    broken = copy_weights(weights_dir, tmp_path / "w")
    data = (broken / STATE_DICT).read_bytes()
    (broken / STATE_DICT).write_bytes(data[:-100])
    with pytest.raises(WeightsError, match=r"dgn\.pt is corrupt or from another model.*re-export"):
        create_backend("torch", broken)


def test_changed_state_dict_is_rejected(weights_dir, tmp_path):
    broken = copy_weights(weights_dir, tmp_path / "w")
    data = bytearray((broken / STATE_DICT).read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    (broken / STATE_DICT).write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"dgn\.pt is corrupt or from another model"):
        create_backend("torch", broken)


def test_missing_weights_dir_says_so(tmp_path):
    import shutil

    from tracker.weights import WEIGHTS_DIR

    with pytest.raises(WeightsError, match="dgn.json missing"):
        create_backend("onnxruntime", tmp_path)
    with pytest.raises(WeightsError, match="no network weights at .*nowhere: no such folder"):
        create_backend("onnxruntime", tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("not weights")
    with pytest.raises(WeightsError, match="a_file: a file, not a folder"):
        create_backend("onnxruntime", tmp_path / "a_file")
    # The shipped manifest without the 8-bit network it lists: which file, where, and how to make it.
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(WEIGHTS_DIR / "dgn.json", copy)
    with pytest.raises(WeightsError, match=r"dgn_int8.onnx is missing from .*copy \(make it with: python -m tracker.quantize --weights"):
        create_backend("onnxruntime-int8", copy)


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda m: m["files"].update({ONNX: 12345}), "gives no SHA-256 (64 hexadecimal digits) for ['dgn.onnx']"),
        (lambda m: m["files"].update({ONNX: "abc"}), "gives no SHA-256"),
        (lambda m: m.update(cube_size_m="0.26"), "'cube_size_m' must be a positive number of metres, got '0.26'"),
        (lambda m: m.update(cube_size_m=-0.26), "'cube_size_m' must be a positive number"),
        (lambda m: m.update(cube_size_m=True), "'cube_size_m' must be a positive number"),
        (lambda m: m.update(onnx_int8="oops"), "'onnx_int8' is a str"),
        (lambda m: m["onnx"].update(input_shape=[1, 1, 32, 32]), "the ONNX input shape [1, 1, 32, 32] is not that of the network's 64x64 crop"),
    ],
)
def test_a_manifest_with_values_of_the_wrong_kind_is_refused(weights_dir, tmp_path, change, said):
    import json

    from tracker.weights import load_manifest

    copy = copy_weights(weights_dir, tmp_path / "w")
    manifest = json.loads((copy / "dgn.json").read_text())
    change(manifest)
    (copy / "dgn.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="not a valid weights manifest") as raised:
        load_manifest(copy)
    assert said in str(raised.value)


def test_a_manifest_nested_past_the_json_decoder_s_depth_is_refused(weights_dir, tmp_path):
    from tracker.weights import load_manifest

    copy = copy_weights(weights_dir, tmp_path / "w")
    (copy / "dgn.json").write_text("[" * 100_000 + "]" * 100_000)  # RecursionError in json, not ValueError
    with pytest.raises(WeightsError, match="not a valid weights manifest"):
        load_manifest(copy)


def test_a_graph_of_another_crop_size_than_its_manifest_says_is_refused(weights_dir, tmp_path):
    import json

    copy = copy_weights(weights_dir, tmp_path / "w")
    manifest = json.loads((copy / "dgn.json").read_text())
    manifest["network"]["crop_size"], manifest["onnx"]["input_shape"] = 32, [1, 1, 32, 32]
    (copy / "dgn.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match=r"dgn\.onnx takes input of shape \[1, 1, 64, 64\], but dgn.json says 32x32 crops"):
        create_backend("onnxruntime", copy)


def test_a_network_of_another_crop_size_is_given_crops_of_its_size(hand_model, tmp_path):
    # The tracker cuts the crops its network takes (64x64 for every shipped one).
    import dataclasses

    from tracker.api import open_tracker
    from tracker.sources import SyntheticSource
    from tracker.types import Handedness

    export_small_network(hand_model, dataclasses.replace(SMALL, crop_size=32), tmp_path / "w32", 0.26)
    frame = next(iter(SyntheticSource(seed=1, max_frames=1, hand_model=hand_model)))
    with open_tracker(tmp_path / "w32", "onnxruntime", hand="right", min_hand_probability=0.0) as tracker:
        assert tracker.prepare_config.crop_size == 32
        assert tracker.prepare(frame, None).crops[Handedness.RIGHT].depth.shape == (32, 32)
        tracker.process(frame)  # a random network's hand may be refused; it runs on its crop


def test_unknown_backend_lists_valid_names(weights_dir):
    with pytest.raises(ValueError, match="unknown inference backend 'tflite'") as info:
        create_backend("tflite", weights_dir)
    for name in BACKENDS:
        assert name in str(info.value)


def test_wrong_input_is_rejected(weights_dir):
    with OnnxRuntimeBackend(weights_dir, threads=1) as backend:
        with pytest.raises(ValueError, match=r"expected a \(1, 1, 64, 64\) float32 crop"):
            backend.run(np.zeros((1, 64, 64), np.float32))
        with pytest.raises(ValueError, match="expected float32 input, got float64"):
            backend.run(np.zeros((1, 1, 64, 64)))
        holed = np.ones((1, 1, 64, 64), np.float32)
        holed[0, 0, 5, 7] = np.nan
        with pytest.raises(ValueError, match="the crop holds NaN or infinite depths"):
            backend.run(holed)


def test_tensorrt_missing_is_unavailable(weights_dir, monkeypatch):
    # A None entry in sys.modules makes `import tensorrt` raise ImportError even where it is installed.
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailable, match=r"pip install -e '\.\[gpu\]' on a machine with an NVIDIA GPU"):
        create_backend("tensorrt", weights_dir)


def test_cuda_backends_without_cuda_are_unavailable(weights_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="needs an NVIDIA GPU with CUDA.*onnxruntime"):
        create_backend("torch-cuda", weights_dir)
    with pytest.raises(BackendUnavailable, match="needs an NVIDIA GPU"):
        create_backend("torch", weights_dir, device="cuda")


@pytest.mark.skipif(CUDA, reason="this machine has CUDA; the unavailable path is covered by the monkeypatched test")
def test_gpu_backends_unavailable_here(weights_dir):
    with pytest.raises(BackendUnavailable):
        create_backend("torch-cuda", weights_dir)
    with pytest.raises(BackendUnavailable):
        create_backend("tensorrt", weights_dir)


def test_engine_cache_key_and_location(monkeypatch, tmp_path):
    path = engine_cache_path(tmp_path, "NVIDIA GeForce RTX 4090/x", "10.7.0.post1", "ab" * 32, "fp16")
    assert path.parent == tmp_path
    assert path.name == f"NVIDIA-GeForce-RTX-4090-x_trt10.7.0.post1_{'ab' * 32}_fp16.engine"
    assert engine_cache_path(tmp_path, "g", "10.7", "ab" * 32, "fp32") != engine_cache_path(
        tmp_path, "g", "10.7", "ab" * 32, "fp16"
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_engine_cache_dir() == tmp_path / "dgn-hand-tracker" / "tensorrt"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec says relative paths are invalid
    assert default_engine_cache_dir() == Path.home() / ".cache" / "dgn-hand-tracker" / "tensorrt"


def test_engine_cache_inside_repo_is_refused(weights_dir):
    with pytest.raises(ValueError, match="inside the repository"):
        TensorRTBackend(weights_dir, cache_dir=Path(__file__).resolve().parent / "engines")
    with pytest.raises(ValueError, match="precision must be 'fp16' or 'fp32'"):
        TensorRTBackend(weights_dir, precision="int8")


class _StandInTensorRT:
    """Just enough of the tensorrt module for the engine cache's logic: an engine file
    loads when it holds b"engine" and not otherwise; builds are counted."""

    __version__ = "10.7.0"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data: bytes):
            return SimpleNamespace(create_execution_context=lambda: None) if data == b"engine" else None


@pytest.fixture
def stand_in_tensorrt(monkeypatch):
    """TensorRTBackend on this machine with a stand-in module and GPU. Returns the build
    function (its ``output`` is what the next build writes) and the list of what was built."""
    monkeypatch.setitem(sys.modules, "tensorrt", _StandInTensorRT)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Stand-in GPU")
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: SimpleNamespace(wait_stream=lambda other: None))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    monkeypatch.setattr(TensorRTBackend, "_bind_buffers", lambda self, trt: None)
    builds: list[bytes] = []

    def build(self, trt, onnx_path, workspace_bytes):
        builds.append(build.output)
        return build.output

    build.output = b"engine"
    monkeypatch.setattr(TensorRTBackend, "_build", build)
    return build, builds


def test_a_cached_engine_that_no_longer_loads_is_rebuilt_once(weights_dir, tmp_path, stand_in_tensorrt):
    build, builds = stand_in_tensorrt
    first = TensorRTBackend(weights_dir, precision="fp32", cache_dir=tmp_path)
    assert first.built_engine and builds == [b"engine"]
    assert not TensorRTBackend(weights_dir, precision="fp32", cache_dir=tmp_path).built_engine and len(builds) == 1
    first.engine_path.write_bytes(b"damaged")
    again = TensorRTBackend(weights_dir, precision="fp32", cache_dir=tmp_path)
    assert again.built_engine and len(builds) == 2 and first.engine_path.read_bytes() == b"engine"
    # An engine that does not load even when freshly built is not rebuilt in a loop.
    build.output = b"still broken"
    first.engine_path.write_bytes(b"damaged")
    with pytest.raises(BackendUnavailable, match="could not deserialize the engine it has just built"):
        TensorRTBackend(weights_dir, precision="fp32", cache_dir=tmp_path)
    assert len(builds) == 3


def test_a_cached_engine_that_cannot_be_read_is_rebuilt(weights_dir, tmp_path, stand_in_tensorrt, caplog, monkeypatch):
    build, builds = stand_in_tensorrt
    first = TensorRTBackend(weights_dir, precision="fp32", cache_dir=tmp_path)
    read_bytes = Path.read_bytes

    def unreadable(path):  # a file without read permission (root reads anything, so simulated)
        if path == first.engine_path:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    with caplog.at_level("WARNING"):
        again = TensorRTBackend(weights_dir, precision="fp32", cache_dir=tmp_path)
    assert again.built_engine and again.engine is not None and len(builds) == 2
    assert "could not read the cached TensorRT engine" in caplog.text


def test_a_container_cpu_quota_caps_the_thread_count(tmp_path, monkeypatch):
    from tracker import backends

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert backends.cgroup_cpu_quota(v2, "/") == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert backends.cgroup_cpu_quota(v2, "/") is None
    # A limit on a group above the process's own holds for it too; the smallest one counts.
    own = v2 / "machine.slice" / "app.scope"
    own.mkdir(parents=True)
    (own / "cpu.max").write_text("max 100000\n")
    (own.parent / "cpu.max").write_text("250000 100000\n")
    assert backends.cgroup_cpu_quota(v2, "/machine.slice/app.scope\n") == 2.5
    (own / "cpu.max").write_text("50000 100000\n")
    assert backends.cgroup_cpu_quota(v2, "/machine.slice/app.scope") == 0.5
    # A group not mounted here (a container without its own cgroup namespace): the mount's own limit.
    assert backends.cgroup_cpu_quota(v2, "/docker/0123abcd") is None
    (v2 / "cpu.max").write_text("200000 100000\n")
    assert backends.cgroup_cpu_quota(v2, "/docker/0123abcd") == 2.0
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert backends.cgroup_cpu_quota(tmp_path / "v1") == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert backends.cgroup_cpu_quota(tmp_path / "v1") is None
    assert backends.cgroup_cpu_quota(tmp_path / "nothing here") is None
    monkeypatch.setattr(backends, "cgroup_cpu_quota", lambda: 0.5)  # half a CPU: still one thread
    assert backends.physical_cores() == 1


def test_an_engine_cache_that_cannot_be_written_costs_a_rebuild_not_the_run(weights_dir, tmp_path, stand_in_tensorrt, caplog, monkeypatch):
    build, builds = stand_in_tensorrt
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder would go")
    with caplog.at_level(logging.WARNING, logger="tracker.backends"):
        backend = TensorRTBackend(weights_dir, precision="fp32", cache_dir=blocked)
    assert backend.built_engine and backend.engine is not None and builds == [b"engine"]
    assert "could not cache the TensorRT engine" in caplog.text
    assert TensorRTBackend(weights_dir, precision="fp32", cache_dir=blocked).built_engine and len(builds) == 2
    # A disk that fills up as the engine goes in: no partial file is left behind.
    full = tmp_path / "full"

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tracker.backends.os.replace", no_space)
    with caplog.at_level(logging.WARNING, logger="tracker.backends"):
        assert TensorRTBackend(weights_dir, precision="fp32", cache_dir=full).built_engine and len(builds) == 3
    assert "No space left on device" in caplog.text
    assert [p for p in full.rglob("*") if p.is_file()] == []


def test_a_cpu_backend_computes_at_launch_and_collect_hands_it_over_once(weights_dir):
    backend = create_backend("onnxruntime", weights_dir)
    depth = random_input(seed=1, crop_size=SMALL.crop_size)
    with pytest.raises(RuntimeError, match="collect\\(\\) without a launch\\(\\)"):
        backend.collect()
    backend.launch(depth)
    for name, value in backend.collect().items():
        np.testing.assert_array_equal(value, backend.run(depth)[name])
    with pytest.raises(RuntimeError, match="without a launch"):
        backend.collect()  # the outputs went to the first collect


def test_packed_outputs_unpack_to_the_networks_own(weights_dir):
    # What the CUDA-graph backend copies off the GPU in one piece, taken apart again.
    backend = TorchBackend(weights_dir)
    with torch.inference_mode():
        outputs = backend.network(torch.from_numpy(random_input(seed=1, crop_size=SMALL.crop_size)))
    layout = packed_layout(outputs)
    flat = pack_outputs(outputs).numpy()
    assert flat.ndim == 1 and flat.dtype == np.float32 and layout[-1][3] == flat.size and layout[0][2] == 0
    unpacked = unpack_outputs(flat, layout)
    assert list(unpacked) == list(ONNX_OUTPUTS)
    for name in ONNX_OUTPUTS:
        np.testing.assert_array_equal(unpacked[name], outputs[name].numpy())


def test_torch_cuda_slots_hand_back_each_crop_s_outputs_oldest_first_on_stand_ins(weights_dir, monkeypatch):
    # The CUDA graph backend's bookkeeping of its two slots, with CPU tensors standing in for
    # the GPU's (copies then finish at once): which buffers each crop uses, what collect
    # returns, what a third launch and run() drop. The GPU's own ordering is the CUDA test's.
    reference = TorchBackend(weights_dir)
    backend = object.__new__(TorchCudaGraphBackend)
    backend.crop_size = SMALL.crop_size
    backend.static_input = torch.zeros((1, 1, SMALL.crop_size, SMALL.crop_size))
    with torch.inference_mode():
        outputs = reference.network(backend.static_input)
    backend.static_packed, backend.layout = pack_outputs(outputs), packed_layout(outputs)
    replays = []

    def replay():
        replays.append(backend.static_input.clone())
        with torch.inference_mode():
            backend.static_packed.copy_(pack_outputs(reference.network(backend.static_input)))

    backend.graph = SimpleNamespace(replay=replay)
    backend.host_inputs = [torch.zeros_like(backend.static_input) for _ in range(2)]
    backend.host_packed = [torch.zeros_like(backend.static_packed) for _ in range(2)]
    synchronized = []
    backend.done = [SimpleNamespace(record=lambda: None, synchronize=lambda i=i: synchronized.append(i)) for i in range(2)]
    backend.queued, backend.next_slot = deque(), 0
    crops = [random_input(seed=s, crop_size=SMALL.crop_size) for s in (1, 2, 3)]
    expected = [reference.run(c) for c in crops]

    def same(got, want):
        for name in ONNX_OUTPUTS:
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6)

    backend.launch(crops[0])
    backend.launch(crops[1])
    assert backend.in_flight and list(backend.queued) == [0, 1]
    same(backend.collect(), expected[0])
    backend.launch(crops[2])  # into the slot just collected
    assert list(backend.queued) == [1, 0]
    same(backend.collect(), expected[1])
    same(backend.collect(), expected[2])
    assert not backend.in_flight and synchronized == [0, 1, 0]
    for crop in crops:  # a third launch waits for the oldest, whose outputs are dropped
        backend.launch(crop)
    assert synchronized[-1] == 1 and len(backend.queued) == 2
    same(backend.collect(), expected[1])
    same(backend.collect(), expected[2])
    backend.launch(crops[0])
    same(backend.run(crops[1]), expected[1])  # run() is this crop's, whatever was launched before
    assert not backend.in_flight
    with pytest.raises(RuntimeError, match="without a launch"):
        backend.collect()
    assert len(replays) == 8 and all(torch.equal(r, torch.from_numpy(c)) for r, c in zip(replays, [*crops, *crops, crops[0], crops[1]]))
    backend.close()


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_torch_cuda_graph_launch_returns_before_the_outputs_and_collect_waits_for_them(weights_dir):
    with TorchCudaGraphBackend(weights_dir) as backend:
        first, second = (random_input(seed=s, crop_size=SMALL.crop_size) for s in (1, 2))
        expected, expected_second = backend.run(first), backend.run(second)
        backend.launch(first)
        assert backend.in_flight  # queued; collect waits for it
        collected = backend.collect()
        assert not backend.in_flight
        # Two in flight, each with its own buffers, collected oldest first.
        backend.launch(second)
        backend.launch(first)
        both = [backend.collect(), backend.collect()]
        # A third waits for the oldest, whose outputs are dropped.
        for crop in (first, second, first):
            backend.launch(crop)
        after_third = [backend.collect(), backend.collect()]
        with pytest.raises(RuntimeError, match="without a launch"):
            backend.collect()
        backend.launch(second)
        assert backend.run(first)["vertices"].tobytes() == expected["vertices"].tobytes()  # not the crop before it
        assert not backend.in_flight
    for name in ONNX_OUTPUTS:
        np.testing.assert_array_equal(collected[name], expected[name])
        np.testing.assert_array_equal(both[0][name], expected_second[name])
        np.testing.assert_array_equal(both[1][name], expected[name])
        np.testing.assert_array_equal(after_third[0][name], expected_second[name])
        np.testing.assert_array_equal(after_third[1][name], expected[name])


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_torch_cuda_graph_matches_torch(weights_dir, reference):
    with TorchCudaGraphBackend(weights_dir) as backend:
        first = backend.run(random_input(seed=1, crop_size=SMALL.crop_size))
        backend.run(random_input(seed=2, crop_size=SMALL.crop_size))
        again = backend.run(random_input(seed=1, crop_size=SMALL.crop_size))
    assert list(first) == list(ONNX_OUTPUTS)
    for name in ONNX_OUTPUTS:
        assert first[name].shape == reference[name].shape and first[name].dtype == np.float32, name
        # cuDNN may use TF32 convolutions (10-bit mantissa), hence 1e-2 rather than 1e-4.
        assert relative_error(first[name], reference[name]) < 1e-2, name
        np.testing.assert_array_equal(first[name], again[name])  # replay reads the new input each time


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 5e-2)])
def test_tensorrt_matches_torch(weights_dir, reference, tmp_path, precision, tolerance):
    pytest.importorskip("tensorrt")
    backend = TensorRTBackend(weights_dir, precision=precision, cache_dir=tmp_path)
    assert backend.built_engine and backend.engine_path.is_file() and backend.engine_path.parent == tmp_path
    out = backend.run(random_input(seed=1, crop_size=SMALL.crop_size))
    backend.close()
    for name in ONNX_OUTPUTS:
        assert relative_error(out[name], reference[name]) < tolerance, name
    cached = TensorRTBackend(weights_dir, precision=precision, cache_dir=tmp_path)
    assert not cached.built_engine
    np.testing.assert_allclose(
        cached.run(random_input(seed=1, crop_size=SMALL.crop_size))["vertices"], out["vertices"], rtol=0, atol=1e-6
    )
    cached.close()


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.automatic_backend
def test_the_library_tracks_on_the_gpu_by_itself_as_on_the_cpu():
    from tracker.api import open_tracker
    from tracker.sources import SyntheticSource

    frames = list(SyntheticSource(seed=4, max_frames=3).frames())
    with open_tracker(hand="right") as on_gpu, open_tracker(backend="onnxruntime", hand="right") as on_cpu:
        assert on_gpu.estimator.backend.name == "torch-cuda"  # "auto" where torch sees a GPU
        for frame in frames:
            gpu, cpu = on_gpu.process(frame), on_cpu.process(frame)
            assert len(gpu.hands) == len(cpu.hands) == 1
            # cuDNN's TF32 convolutions (outputs within 1e-2 relative, above) move the crop's
            # vertices by up to about a millimetre in the worst case; a wrong crop, side or
            # frame conversion is centimetres.
            np.testing.assert_allclose(gpu.hands[0].joints_cam_m, cpu.hands[0].joints_cam_m, atol=2e-3)
