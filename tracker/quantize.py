"""8-bit network for onnxruntime on the CPU: ``dgn_int8.onnx`` from the shipped ``dgn.onnx``.

Post-training static quantisation: the convolutions' weights become int8 (one scale per
output channel) and their inputs uint8, with activation ranges calibrated on synthetic
crops from a stream of their own (neither training's nor the held-out set's). The model is
written in the QDQ form (QuantizeLinear/DequantizeLinear pairs around float operators),
which onnxruntime fuses into integer convolutions and which other runtimes read as well.

What stays in floating point, and why:

* the first convolution, which sees the raw depth crop: one uint8 step over the crop's
  [-1, 1] range is a millimetre of depth, and quantising that input took the held-out
  joint error from 11.5 to 42 mm (300 frames, the weights of the time);
* the two heads (the 1x1 convolutions that end each hourglass): their outputs are the
  network's mesh coordinates, features and vertex offsets, which 8 bits would round to
  about a millimetre;
* everything after the heads (the extension's soft splatting, the sampling, the
  sigmoids), whose inputs are grid coordinates and weights that need their precision.

In between, the hourglasses' residual additions, ReLUs and nearest-neighbour upsamplings
are quantised too, so that their activations stay 8-bit from one convolution to the next.
Left in float they cost a dequantise, a float add and a quantise per block, and NCHW/NHWC
transposes around each. With the weights of the time, on an idle AVX-512 VNNI CPU, the
8-bit forward took 3.83 ms quantised the earlier way and 3.63 ms this way, the float graph's
rewrite included (``benchmarks/results/network_speed_cpu_previous_weights_*.json``: single
runs, within what runs on that machine vary by), for 0.03 mm of held-out joint error (11.04 -> 11.07 mm over 1000 frames; the float
network scored 10.95). Additions outside that convolution chain (the extension's epsilons) are
kept in float: quantised, they put the error at 55 mm. Quantising the convolutions alone
had cost 0.09 mm on 300 frames of earlier weights (11.51 -> 11.60 mm); quantising the
heads as well cost 0.14 mm more for no measurable speed.

The manifest records the float model the int8 one was made from; after a re-export the
int8 backend refuses the stale file and says how to remake it.

    python -m tracker.quantize [--weights DIR] [--samples 512]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tracker.hand_model import HandModel, HandModelError
from tracker.synth.dataset import sample_seed
from tracker.training_data import example_config_for, make_example
from tracker.weights import (
    MANIFEST,
    ONNX,
    ONNX_INPUT,
    ONNX_INT8,
    WEIGHTS_DIR,
    WeightsError,
    load_manifest,
    sha256_of,
    verified_path,
)

#: Training draws from stream 1, the held-out set from 2, the side classifier from 3 and 4.
CALIBRATION_STREAM_SEED = 5
#: Activation ranges from 512 crops rather than 128 cost the shipped weights 0.13 mm of
#: held-out joint error instead of 0.40 (the ranges of rarer crops are in them), for
#: seconds more of calibration.
DEFAULT_CALIBRATION_SAMPLES = 512


def calibration_crops(manifest: dict, count: int, progress: bool = True) -> np.ndarray:
    """(count, 1, S, S) float32 network inputs rendered as training renders them."""
    config = example_config_for(manifest)
    model = HandModel.load()
    crops = [
        make_example(model, config, sample_seed(CALIBRATION_STREAM_SEED, i))["depth"]
        for i in tqdm(range(count), desc="calibration crops", unit="crop", disable=not progress)
    ]
    return np.stack(crops).astype(np.float32)


def float_convolutions(model_path: Path) -> list[str]:
    """Names of the convolutions kept in floating point: the first one, on the raw depth,
    and the 1x1 heads."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    if not convolutions:
        raise WeightsError(f"{model_path}: no convolution in the network; is it a Dual Grid Net export?")
    kernel_shapes = {t.name: tuple(t.dims[2:]) for t in graph.initializer}
    heads = [c.name for c in convolutions if kernel_shapes.get(c.input[1]) == (1, 1)]
    return [convolutions[0].name] + [name for name in heads if name != convolutions[0].name]


#: Operators quantised where they sit in the hourglasses' convolution chains.
CHAIN_OPERATORS = ("Add", "Relu", "Resize")


def chain_operators(model_path: Path, float_heads: list[str]) -> tuple[list[str], list[str]]:
    """(inside, outside): names of the additions, ReLUs and upsamplings whose data inputs all
    come from convolutions other than the float heads, or from other such operators; and of
    the rest.

    Inside are the residual blocks, skips and upsamplings of both hourglasses; outside are
    the extension's and the sampling's arithmetic on grid coordinates and weights. The
    quantiser excludes nodes by name, so every candidate needs a name of its own.
    """
    import onnx

    graph = onnx.load(str(model_path)).graph
    names = [node.name for node in graph.node]
    unnamed = [i for i, node in enumerate(graph.node) if not node.name or names.count(node.name) > 1]
    if unnamed:
        raise WeightsError(f"{model_path}: {len(unnamed)} nodes without a name of their own (first: #{unnamed[0]} {graph.node[unnamed[0]].op_type}); cannot choose what to quantise")
    heads = set(float_heads)
    producer = {output: node for node in graph.node for output in node.output}
    inside: set[str] = set()

    def from_chain(tensor: str) -> bool:
        node = producer.get(tensor)
        return node is not None and ((node.op_type == "Conv" and node.name not in heads) or node.name in inside)

    grew = True
    while grew:  # a fixed point, so the order of the graph's nodes does not matter
        grew = False
        for node in graph.node:
            if node.op_type not in CHAIN_OPERATORS or node.name in inside:
                continue
            # Resize's other inputs are its constant scales; its data is the first one.
            data = node.input[:1] if node.op_type == "Resize" else node.input
            if all(from_chain(tensor) for tensor in data):
                inside.add(node.name)
                grew = True
    candidates = [node.name for node in graph.node if node.op_type in CHAIN_OPERATORS]
    return [n for n in candidates if n in inside], [n for n in candidates if n not in inside]


def quantize_weights(weights_dir: str | Path = WEIGHTS_DIR, samples: int = DEFAULT_CALIBRATION_SAMPLES, progress: bool = True) -> dict:
    """Write ``dgn_int8.onnx`` next to ``dgn.onnx`` and record it in the manifest (returned)."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise WeightsError(f"quantisation needs onnxruntime and onnx ({exc}); pip install onnxruntime onnx") from exc
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    weights_dir = Path(weights_dir)
    manifest = load_manifest(weights_dir)
    float_path = verified_path(weights_dir, ONNX, manifest)
    if not os.access(weights_dir, os.W_OK):
        raise WeightsError(f"cannot write into {weights_dir}; copy the weights somewhere writable and quantise them there")
    crops = calibration_crops(manifest, samples, progress)

    class Crops(CalibrationDataReader):
        def __init__(self) -> None:
            self.index = 0

        def get_next(self):
            if self.index >= len(crops):
                return None
            self.index += 1
            return {ONNX_INPUT: crops[self.index - 1 : self.index]}

    # Both files are written beside their final names and renamed into place, so an
    # interrupted run leaves the previous 8-bit network and its manifest entry intact.
    partial_model = weights_dir / f".{ONNX_INT8}.partial"
    partial_manifest = weights_dir / f".{MANIFEST}.partial"
    try:
        with tempfile.TemporaryDirectory(prefix="dgn-quantize-") as scratch:
            prepared = Path(scratch) / "prepared.onnx"
            # Shape inference and constant folding first, as onnxruntime recommends: the
            # quantiser then sees every tensor's shape and the batch-norms already folded.
            quant_pre_process(str(float_path), str(prepared))
            kept_float = float_convolutions(prepared)
            # The first convolution stays float but its ReLU and the stem's residual addition
            # still belong to the chain (onnxruntime leaves a ReLU on float input in float).
            chain, outside_chain = chain_operators(prepared, float_heads=kept_float[1:])
            quantize_static(
                str(prepared),
                str(partial_model),
                Crops(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["Conv", *CHAIN_OPERATORS],
                nodes_to_exclude=kept_float + outside_chain,
                calibrate_method=CalibrationMethod.MinMax,
                calibration_providers=["CPUExecutionProvider"],
            )
        import onnxruntime

        manifest["files"][ONNX_INT8] = sha256_of(partial_model)
        manifest["onnx_int8"] = {
            "quantized_from": manifest["files"][ONNX],
            "format": "QDQ",
            "weights": "int8, one scale per output channel",
            "activations": "uint8, min-max calibrated",
            "calibration_samples": int(samples),
            "calibration_stream_seed": CALIBRATION_STREAM_SEED,
            "float_convolutions": kept_float,
            "chain_operators_selected": len(chain),
            "onnxruntime": onnxruntime.__version__,
        }
        partial_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(partial_model, weights_dir / ONNX_INT8)
        os.replace(partial_manifest, weights_dir / MANIFEST)
    except WeightsError:
        raise
    except Exception as exc:  # onnx / onnxruntime raise their own types for a graph they cannot handle
        raise WeightsError(f"quantising {float_path} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        partial_model.unlink(missing_ok=True)
        partial_manifest.unlink(missing_ok=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracker.quantize", description=__doc__.splitlines()[0].replace("``", "") + " The manifest (dgn.json) records it and its checksum.")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="weights directory holding dgn.onnx (default %(default)s)")
    parser.add_argument(
        "--samples", type=int, default=DEFAULT_CALIBRATION_SAMPLES,
        help="synthetic crops to calibrate the activation ranges on (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    try:
        manifest = quantize_weights(args.weights, args.samples)
    except (WeightsError, HandModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = args.weights / ONNX_INT8
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, calibrated on {args.samples} crops); {MANIFEST} lists it")
    print(f"convolutions kept in floating point: {', '.join(manifest['onnx_int8']['float_convolutions'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
