"""The left/right classifier at inference time: an onnxruntime session over ``side.onnx``.

The live tracker asks it for each frame's crop (``tracker.side_vote`` votes over the track).
It is apart from ``tracker.side_classifier`` (the network, its training and evaluation) so
that code which only runs it, such as a segmentation worker process, imports neither torch
nor the training code.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

ONNX = "side.onnx"
ONNX_INPUT = "depth"
ONNX_OUTPUT = "right_logit"


class SideClassifier:
    """The shipped classifier on onnxruntime: ``SideClassifier.load().probability_right(crop.depth)``.

    ``onnx_bytes`` and ``manifest`` are what ``from_onnx`` needs to make the same
    classifier elsewhere (another process) without reading and checking the files again.
    """

    def __init__(self, session, manifest: dict, onnx_bytes: bytes) -> None:
        self.session = session
        self.manifest = manifest
        self.onnx_bytes = onnx_bytes
        self.crop_size = int(manifest["network"]["crop_size"])
        #: Edge of the cube its crops were cut from (m); None in a manifest that does not
        #: say, which then takes the tracker's.
        self.cube_size_m = float(manifest["cube_size_m"]) if manifest.get("cube_size_m") is not None else None
        self._feed = np.empty((1, 1, self.crop_size, self.crop_size), np.float32)

    @classmethod
    def load(cls, directory: str | Path | None = None, threads: int = 1) -> SideClassifier:
        """The verified classifier from ``directory`` (default: the shipped one)."""
        # The manifest format and the checksums belong to the training side (torch).
        from tracker.side_classifier import SIDE_WEIGHTS_DIR, load_manifest
        from tracker.weights import verified_path

        directory = SIDE_WEIGHTS_DIR if directory is None else directory
        manifest = load_manifest(directory)
        data = verified_path(directory, ONNX, manifest).read_bytes()
        return cls.from_onnx(data, manifest, threads, source=Path(directory) / ONNX)

    @classmethod
    def from_onnx(cls, data: bytes, manifest: dict, threads: int = 1, source: str | Path = ONNX) -> SideClassifier:
        """A classifier over ONNX bytes already checked against ``manifest``."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread: the crop is tiny, and the main network wants the other cores.
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        problem = None
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            problem = f"{source}: onnxruntime cannot load the model ({exc}); re-export the weights"
        else:
            inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
            if inputs != [ONNX_INPUT] or outputs != [ONNX_OUTPUT]:
                problem = f"{source}: expected input {ONNX_INPUT!r} and output {ONNX_OUTPUT!r}, got {inputs} and {outputs}"
        if problem is not None:
            from tracker.weights import WeightsError  # only now: it brings torch

            raise WeightsError(problem)
        return cls(session, manifest, data)

    def logit(self, crop_depth: np.ndarray) -> float:
        """Logit of "right hand" for one (S, S) crop (as make_crop(..., RIGHT) gives it)."""
        crop_depth = np.asarray(crop_depth)
        if crop_depth.shape != (self.crop_size, self.crop_size):
            raise ValueError(f"expected a ({self.crop_size}, {self.crop_size}) crop, got shape {crop_depth.shape}")
        self._feed[0, 0] = crop_depth
        return float(self.session.run([ONNX_OUTPUT], {ONNX_INPUT: self._feed})[0][0, 0])

    def probability_right(self, crop_depth: np.ndarray) -> float:
        """P(right hand) for one (S, S) crop; the mirrored crop of the same hand gives ~1 - p."""
        z = self.logit(crop_depth)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def logits(self, crops: np.ndarray) -> np.ndarray:
        return np.array([self.logit(c) for c in crops], np.float32)
