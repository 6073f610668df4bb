"""Shipped network weights: export, checksums and checked loading.

A weights directory (``weights/`` by default) holds

* ``dgn.pt``    the network's state dict (loads with ``torch.load(weights_only=True)``),
* ``dgn.onnx``  the same network exported for onnxruntime / TensorRT (batch 1, static),
* ``dgn_int8.onnx`` optionally, the same network quantised to 8 bits for the CPU
  (``tracker.quantize``),
* ``dgn.json``  the manifest: network config, crop cube size, SHA-256 of every file and of
  the hand-model asset they were trained with, and the training summary.

Every load checks the file against the manifest's checksum first, so a truncated download,
a stale export or a file from another model fails with a message instead of garbage.

``python -m tracker.weights --reexport [--weights DIR]`` rewrites ``dgn.onnx`` from
``dgn.pt`` with this version's graph (the state dict is the model; the ONNX graph is how this
version computes it), after checking that onnxruntime's outputs match torch's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from tracker.crop import CropFrame, OutOfImage
from tracker.hand_model import DEFAULT_ASSET, HandModel, HandModelError
from tracker.network import DualGridNet, DualGridNetConfig

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
# A narrower network beside the default one, for CPUs where the default misses real time:
# less accurate, faster (its own model card says by how much).
FAST_WEIGHTS_DIR = WEIGHTS_DIR / "fast"
MANIFEST = "dgn.json"
STATE_DICT = "dgn.pt"
ONNX = "dgn.onnx"
ONNX_INT8 = "dgn_int8.onnx"
#: What tracker.evaluate writes into a weights folder about its weights.
MODEL_CARD = "MODEL_CARD.md"
EVAL_DIR = "eval"
ONNX_INPUT = "depth"
ONNX_OUTPUTS = ("mesh_coords", "hand_logit", "grid_offsets", "vertices")
ONNX_OPSET = 17


class WeightsError(ValueError):
    """Network weights are missing, corrupt or do not match their manifest."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    path = Path(weights_dir) / MANIFEST
    if not Path(weights_dir).is_dir():
        what = "a file, not a folder" if Path(weights_dir).exists() else f"no such folder (from {Path.cwd()})"
        raise WeightsError(f"no network weights at {weights_dir}: {what}; give the folder that holds {MANIFEST}")
    if not path.is_file():
        if (Path(weights_dir) / "export" / MANIFEST).is_file():
            raise WeightsError(
                f"no network weights in {weights_dir} ({MANIFEST} missing): it is a training run, whose exported weights are in "
                f"{Path(weights_dir) / 'export'}"
            )
        raise WeightsError(f"no network weights in {weights_dir} ({MANIFEST} missing); train and export a model first")
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):
            raise TypeError(f"it holds a JSON {type(manifest).__name__}, not an object")
        network = DualGridNetConfig(**manifest["network"])
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError(f"'files' is a {type(files).__name__}, not a name -> SHA-256 table")
        bad = [name for name, digest in files.items() if not (isinstance(digest, str) and _is_sha256(digest))]
        if bad:
            raise ValueError(f"'files' gives no SHA-256 (64 hexadecimal digits) for {bad}")
        check_cube_size(manifest["cube_size_m"])
        shape = manifest.get("onnx", {}).get("input_shape")
        if shape is not None and shape != [1, 1, network.crop_size, network.crop_size]:
            raise ValueError(f"the ONNX input shape {shape} is not that of the network's {network.crop_size}x{network.crop_size} crop")
        if not isinstance(manifest.get("onnx_int8", {}), dict):
            raise TypeError(f"'onnx_int8' is a {type(manifest['onnx_int8']).__name__}, not the 8-bit network's record")
    # ValueError: also bad JSON and text that is not UTF-8; RecursionError: JSON nested deeper
    # than the decoder goes, which no manifest is.
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise WeightsError(f"{path}: not a valid weights manifest ({exc!r})") from exc
    return manifest


def check_cube_size(cube) -> None:
    """ValueError unless ``cube`` (a manifest's ``cube_size_m``) is a positive number of
    metres, as an export writes it: "0.26" would be taken for one by float()."""
    if isinstance(cube, bool) or not isinstance(cube, (int, float)) or not 0 < cube < float("inf"):
        raise ValueError(f"'cube_size_m' must be a positive number of metres, got {cube!r}")


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def verified_path(weights_dir: str | Path, name: str, manifest: dict | None = None) -> Path:
    """Path of a weights file whose SHA-256 matches the manifest; WeightsError otherwise."""
    manifest = manifest or load_manifest(weights_dir)
    path = Path(weights_dir) / name
    if not path.is_file():
        cure = f"make it with: python -m tracker.quantize --weights {weights_dir}" if name == ONNX_INT8 else "re-export or fetch the weights again"
        raise WeightsError(f"{name} is missing from {weights_dir} ({cure})")
    expected = manifest["files"].get(name)
    if expected is None:
        raise WeightsError(f"{name} is not listed in {Path(weights_dir) / MANIFEST}")
    actual = sha256_of(path)
    if actual != expected:
        # The 8-bit network is made here from the float one, and an interrupted remake can
        # leave it out of step with the manifest: making it again is the cure.
        cure = (
            f"remake it: python -m tracker.quantize --weights {weights_dir}"
            if name == ONNX_INT8
            else "truncated download? re-export or fetch the weights again"
        )
        raise WeightsError(
            f"{path} is corrupt or from another model: SHA-256 {actual[:12]}... does not match the manifest's "
            f"{expected[:12]}... ({cure})"
        )
    return path


def load_network(weights_dir: str | Path = WEIGHTS_DIR, hand_model: HandModel | None = None) -> tuple[DualGridNet, dict]:
    """The verified torch network (eval mode, CPU) and its manifest."""
    manifest = load_manifest(weights_dir)
    path = verified_path(weights_dir, STATE_DICT, manifest)
    hand_model = hand_model or HandModel.load()
    check_hand_model(manifest, hand_model, weights_dir)
    network = DualGridNet(hand_model.mesh_coords, DualGridNetConfig(**manifest["network"]))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:  # torch raises several types for bad archives
        # A state dict of another shape lists every mismatched tensor: the first says enough.
        lines = str(exc).strip().splitlines()
        first = next((line.strip() for line in lines[1:] if line.strip()), "") if len(lines) > 3 else ""
        why = f"{lines[0]} {first} ... ({len(lines) - 1} lines); does {MANIFEST}'s network match it?" if first else str(exc)
        raise WeightsError(f"{path}: cannot load the state dict ({why})") from exc
    return network.eval(), manifest


def export_onnx(network: DualGridNet, path: Path) -> None:
    network = network.eval()
    example = torch.zeros(1, 1, network.config.crop_size, network.config.crop_size)
    with warnings.catch_warnings():
        # The TorchScript exporter, chosen on purpose (dynamo=False: the graph the backends
        # and the 8-bit rewrite were built and measured on), says it is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=[ONNX_INPUT],
            output_names=list(ONNX_OUTPUTS),
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def check_hand_model(manifest: dict, hand_model: HandModel, weights_dir: str | Path | None = None) -> None:
    """Raise WeightsError unless ``hand_model`` is the asset the weights were exported with.

    The network samples its vertices at the asset's mesh coordinates and the refit fits the
    asset's template parts, so weights used with another asset give wrong hands, with every
    file checksum intact. A model made in memory (tests) has no file to compare.
    """
    expected = manifest.get("hand_model_sha256")
    source = Path(hand_model.source)
    actual = hand_model.sha256
    if actual is None and source.is_file():  # a model built from a file's arrays by hand
        actual = sha256_of(source)
    if expected is None or actual is None:
        return
    if actual != expected:
        which = "the network weights" if weights_dir is None else f"the network weights in {weights_dir}"
        raise WeightsError(
            f"{which} were trained with the hand model {expected[:12]}..., but {source} is {actual[:12]}...; "
            "their vertices and refit would not match. Use the asset they were exported with, or train and "
            "export weights for this one"
        )


def crop_frame_of(manifest: dict) -> CropFrame:
    """The crop frame the weights were trained in (manifests from before the choice: camera)."""
    try:
        return CropFrame(manifest.get("crop_frame", CropFrame.CAMERA.value))
    except ValueError as exc:
        raise WeightsError(f"unknown crop frame {manifest.get('crop_frame')!r} in the manifest; expected one of {[f.value for f in CropFrame]}") from exc


def out_of_image_of(manifest: dict) -> OutOfImage:
    """What the weights' crops showed past the image's edge (manifests from before the
    choice: the far face)."""
    from tracker.side_inference import out_of_image_in

    return out_of_image_in(manifest)


def export_weights(
    network: DualGridNet,
    cube_size_m: float,
    out_dir: str | Path,
    training: dict | None = None,
    *,
    crop_frame: CropFrame,
    out_of_image: OutOfImage = OutOfImage.FAR,
    hand_model_sha256: str | None = None,
) -> dict:
    """Write dgn.pt, dgn.onnx and the manifest into ``out_dir``; returns the manifest.

    ``crop_frame``: the frame the network was trained in (``data.crop_frame`` of its
    training config). No default: weights labelled with the wrong frame run without error,
    on crops whose targets are sheared by the ray's angle. ``out_of_image``: what its crops
    showed past the image's edge (``data.out_of_image``).

    ``hand_model_sha256``: of the hand model the network was built from (``HandModel.sha256``);
    by default the asset file's as it is now, which is only right if it has not changed since.

    Each file is written under a temporary name and put in place once all are written (the
    manifest last), so a run killed during the export (tens of seconds) leaves the earlier
    export whole rather than new weights beside an old manifest. An 8-bit network made from
    the earlier weights (``tracker.quantize``) no longer matches them and is removed; so are
    the model card and ``eval/`` that ``tracker.evaluate`` wrote of them, where the weights
    are not the same as before.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        earlier = json.loads((out_dir / MANIFEST).read_text())["files"][STATE_DICT]
    except (OSError, ValueError, KeyError, TypeError):
        earlier = None
    partial = {name: out_dir / f".{name}.partial" for name in (STATE_DICT, ONNX, MANIFEST)}
    try:
        state = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        torch.save(state, partial[STATE_DICT])
        export_onnx(network.cpu(), partial[ONNX])
        manifest = _manifest(network, cube_size_m, crop_frame, out_of_image, hand_model_sha256, training, partial)
        partial[MANIFEST].write_text(json.dumps(manifest, indent=2) + "\n")
        for name in (STATE_DICT, ONNX, MANIFEST):
            os.replace(partial[name], out_dir / name)
        # After the manifest: until then the earlier one lists it (the new one does not).
        (out_dir / ONNX_INT8).unlink(missing_ok=True)
        if earlier is not None and earlier != manifest["files"][STATE_DICT]:
            # They describe weights no longer there.
            (out_dir / MODEL_CARD).unlink(missing_ok=True)
            shutil.rmtree(out_dir / EVAL_DIR, ignore_errors=True)
    finally:
        for path in partial.values():
            path.unlink(missing_ok=True)
    return manifest


def _manifest(network: DualGridNet, cube_size_m: float, crop_frame, out_of_image, hand_model_sha256, training, written: dict[str, Path]) -> dict:
    return {
        "network": network.config.to_dict(),
        "cube_size_m": float(cube_size_m),
        "crop_frame": CropFrame(crop_frame).value,
        "out_of_image": OutOfImage(out_of_image).value,
        "parameters": int(sum(p.numel() for p in network.parameters())),
        "onnx": {"input": ONNX_INPUT, "input_shape": [1, 1, network.config.crop_size, network.config.crop_size], "outputs": list(ONNX_OUTPUTS), "opset": ONNX_OPSET},
        "hand_model_sha256": hand_model_sha256 or sha256_of(DEFAULT_ASSET),
        "files": {STATE_DICT: sha256_of(written[STATE_DICT]), ONNX: sha256_of(written[ONNX])},
        "training": training or {},
    }


def random_input(seed: int = 0, crop_size: int = 64) -> np.ndarray:
    """(1, 1, S, S) float32 crop-like input for parity tests and benchmarks."""
    rng = np.random.default_rng(seed)
    depth = np.ones((1, 1, crop_size, crop_size), np.float32)
    yy, xx = np.mgrid[:crop_size, :crop_size]
    blob = (xx - crop_size / 2) ** 2 / 300 + (yy - crop_size / 2) ** 2 / 500 < 1
    depth[0, 0][blob] = rng.uniform(-0.4, 0.3, blob.sum()).astype(np.float32)
    return depth


#: onnxruntime's outputs may differ from torch's by float32 rounding only; a wrong graph is off
#: by whole units.
REEXPORT_TOLERANCE = 1e-4


def onnx_mismatch(network: DualGridNet, onnx_path: Path, tolerance: float | None = REEXPORT_TOLERANCE) -> str | None:
    """How the ONNX graph at ``onnx_path`` differs from ``network`` on a crop-like input, or
    None where every output has torch's shape and (unless ``tolerance`` is None: an 8-bit
    graph) its values to ``tolerance``, relative to the output's largest magnitude."""
    import onnxruntime

    depth = random_input(seed=0, crop_size=network.config.crop_size)
    with torch.no_grad():
        expected = {name: value.numpy() for name, value in network(torch.from_numpy(depth)).items()}
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    actual = dict(zip(ONNX_OUTPUTS, session.run(list(ONNX_OUTPUTS), {ONNX_INPUT: depth})))
    for name in ONNX_OUTPUTS:
        if actual[name].shape != expected[name].shape:
            return f"{name} is {actual[name].shape}, torch's {expected[name].shape}"
        if tolerance is None:
            continue
        scale = max(float(np.abs(expected[name]).max()), 1e-6)
        error = float(np.abs(actual[name] - expected[name]).max()) / scale
        if not error < tolerance:
            return f"{name} is {error:.2g} (relative) off torch's"
    return None


def crop_classifiers(weights_dir: str | Path | None, handedness, min_hand_probability: float):
    """(side classifier, hand-presence classifier) for a tracker on the weights in
    ``weights_dir``: each from its sub-folder there (``side_classifier/``, ``presence/``)
    where it has one, else None, which the tracker takes as the shipped one; None as well
    where it is not used (a fixed side; the presence gate off)."""
    from tracker.side_inference import HandPresence, SideClassifier

    directory = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    side = SideClassifier.load(directory / "side_classifier") if handedness is None and (directory / "side_classifier").is_dir() else None
    presence = HandPresence.load(directory / "presence") if min_hand_probability > 0 and (directory / "presence").is_dir() else None
    return side, presence


def check_weights(weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    """Load everything a run loads from ``weights_dir`` and check it, or raise WeightsError:
    the float network and its ONNX export are there, every file matches its checksum, the
    state dict fits the manifest's network and hand model, each ONNX graph runs and gives
    torch's output shapes (the float one torch's values), the 8-bit network was made from
    this float one, and a side classifier and a hand-presence classifier beside them load.
    Returns the manifest."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise WeightsError(f"checking the ONNX graphs needs onnxruntime ({exc}); pip install onnxruntime") from exc
    weights_dir = Path(weights_dir)
    manifest = load_manifest(weights_dir)
    missing = [name for name in (STATE_DICT, ONNX) if name not in manifest["files"]]
    if missing:
        raise WeightsError(f"{weights_dir / MANIFEST} lists no {' or '.join(missing)}: a weights folder holds the network and its ONNX export")
    for name in manifest["files"]:
        verified_path(weights_dir, name, manifest)
    network, _ = load_network(weights_dir)
    graphs = {ONNX: REEXPORT_TOLERANCE, ONNX_INT8: None}
    for name, tolerance in graphs.items():
        if name not in manifest["files"]:
            continue
        try:
            mismatch = onnx_mismatch(network, weights_dir / name, tolerance)
        except Exception as exc:  # onnxruntime raises its own types for graphs it cannot load or run
            raise WeightsError(f"{weights_dir / name} does not load or run in onnxruntime: {type(exc).__name__}: {exc}") from exc
        if mismatch is not None:
            cure = f"python -m tracker.quantize --weights {weights_dir}" if name == ONNX_INT8 else f"python -m tracker.weights --weights {weights_dir} --reexport"
            raise WeightsError(f"{weights_dir / name} does not compute what {STATE_DICT} does: its {mismatch}; remake it: {cure}")
    if ONNX_INT8 in manifest["files"] and manifest.get("onnx_int8", {}).get("quantized_from") != manifest["files"][ONNX]:
        raise WeightsError(f"{ONNX_INT8} was quantised from another {ONNX}; remake it: python -m tracker.quantize --weights {weights_dir}")
    from tracker import presence, side_classifier
    from tracker.side_inference import HandPresence, SideClassifier

    for folder, load_manifest_of, load_network_of, classifier_type in (
        ("side_classifier", side_classifier.load_manifest, side_classifier.load_side_network, SideClassifier),
        ("presence", presence.load_manifest, presence.load_network, HandPresence),
    ):
        directory = weights_dir / folder
        if directory.exists():
            classifier_manifest = load_manifest_of(directory)
            for name in classifier_manifest["files"]:
                verified_path(directory, name, classifier_manifest)
            classifier_network, _ = load_network_of(directory)
            # The ONNX graph is what a run loads: it must say what the state dict says.
            classifier = classifier_type.load(directory)
            crops = np.stack([random_input(seed=s, crop_size=classifier.crop_size)[0, 0] for s in range(4)])
            expected, got = side_classifier.torch_logits(classifier_network, crops), classifier.logits(crops)
            if not np.allclose(got, expected, rtol=1e-3, atol=1e-3):
                raise WeightsError(
                    f"{directory / classifier_type.onnx_name} does not compute what its state dict does (logits {np.round(got, 3).tolist()} "
                    f"against {np.round(expected, 3).tolist()}); export the classifier again"
                )
    return manifest


def reexport_onnx(weights_dir: str | Path = WEIGHTS_DIR) -> dict:
    """Rewrite ``dgn.onnx`` from the verified ``dgn.pt`` and its checksum in the manifest.

    The new file is checked against torch before anything is replaced, so a graph that does
    not match, or a failure while exporting, leaves the previous export intact. Both files
    are then renamed into place; a crash between the two renames leaves a ``dgn.onnx`` the
    manifest refuses, which running the re-export again repairs (it needs only ``dgn.pt``).
    The export is deterministic: the same code writes the same bytes. An 8-bit model made
    from a different graph becomes stale (its backend says so) until ``tracker.quantize``
    runs again. Returns the manifest.
    """
    try:
        import onnxruntime
    except ImportError as exc:
        raise WeightsError(f"re-exporting checks the new graph with onnxruntime ({exc}); pip install onnxruntime") from exc

    weights_dir = Path(weights_dir)
    network, manifest = load_network(weights_dir)
    if not os.access(weights_dir, os.W_OK):
        raise WeightsError(f"cannot write into {weights_dir}; copy the weights somewhere writable and re-export them there")
    partial_model = weights_dir / f".{ONNX}.reexport.partial"
    partial_manifest = weights_dir / f".{MANIFEST}.reexport.partial"
    model_replaced = False
    try:
        export_onnx(network, partial_model)
        mismatch = onnx_mismatch(network, partial_model)
        if mismatch is not None:
            raise WeightsError(f"the re-exported graph's {mismatch}; {weights_dir / ONNX} is left as it was")
        manifest["files"][ONNX] = sha256_of(partial_model)
        with open(partial_manifest, "w") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        with open(partial_model, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial_model, weights_dir / ONNX)
        model_replaced = True
        os.replace(partial_manifest, weights_dir / MANIFEST)
    except WeightsError:
        raise
    except Exception as exc:  # torch, onnxruntime and the file system raise their own types
        state = "run the re-export again to repair it" if model_replaced else "it is left as it was"
        raise WeightsError(f"re-exporting {weights_dir / STATE_DICT} failed: {type(exc).__name__}: {exc}; {weights_dir / ONNX}: {state}") from exc
    finally:
        partial_model.unlink(missing_ok=True)
        partial_manifest.unlink(missing_ok=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracker.weights", description="Check or re-export a weights directory.")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="weights directory (default %(default)s)")
    parser.add_argument(
        "--reexport", action="store_true",
        help="rewrite dgn.onnx from dgn.pt with this version's graph (then run python -m tracker.quantize for the 8-bit model)",
    )
    args = parser.parse_args(argv)
    try:
        if args.reexport:
            manifest = reexport_onnx(args.weights)
            print(f"wrote {args.weights / ONNX} (SHA-256 {manifest['files'][ONNX][:12]}...) from {STATE_DICT}; it matches torch")
            if ONNX_INT8 in manifest["files"] and manifest.get("onnx_int8", {}).get("quantized_from") != manifest["files"][ONNX]:
                print(f"{ONNX_INT8} was made from the previous graph; remake it: python -m tracker.quantize --weights {args.weights}")
        else:
            manifest = check_weights(args.weights)
            beside = [name for folder, name in (("side_classifier", "side"), ("presence", "hand-presence")) if (args.weights / folder).exists()]
            also = f"; so do the {' and '.join(beside)} classifier{'s' if len(beside) > 1 else ''}" if beside else ""
            print(f"{args.weights}: {', '.join(manifest['files'])} match {MANIFEST}, load, and the ONNX graphs compute the network{also}")
    except (WeightsError, HandModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
