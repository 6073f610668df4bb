"""The crop classifiers at inference time: onnxruntime sessions over ``side.onnx`` (left or
right hand) and ``presence.onnx`` (a hand or not).

The live tracker asks both about each frame's unmirrored camera-frame crop
(``tracker.side_vote`` votes over the track; ``TrackerConfig.min_hand_probability`` drops
what is no hand). They are apart from ``tracker.side_classifier`` and ``tracker.presence``
(the networks, their training and evaluation) so that code which only runs them, such as a
segmentation worker process, imports neither torch nor the training code.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from tracker.crop import BackgroundPlane, OutOfImage, make_crop
from tracker.types import CameraIntrinsics, Handedness

ONNX = "side.onnx"
ONNX_INPUT = "depth"
ONNX_OUTPUT = "right_logit"
PRESENCE_ONNX = "presence.onnx"
PRESENCE_ONNX_INPUT = "depth"
PRESENCE_ONNX_OUTPUT = "hand_logit"


class CropClassifier:
    """A one-logit classifier of (S, S) crops on onnxruntime.

    ``onnx_bytes`` and ``manifest`` are what ``from_onnx`` needs to make the same
    classifier elsewhere (another process) without reading and checking the files again.
    """

    onnx_name, onnx_input, onnx_output = ONNX, ONNX_INPUT, ONNX_OUTPUT

    def __init__(self, session, manifest: dict, onnx_bytes: bytes, source: str | Path | None = None) -> None:
        self.session = session
        self.manifest = manifest
        self.onnx_bytes = onnx_bytes
        self.crop_size = int(manifest["network"]["crop_size"])
        #: Edge of the cube its crops were cut from (m); None in a manifest that does not
        #: say, which then takes the tracker's.
        self.cube_size_m = float(manifest["cube_size_m"]) if manifest.get("cube_size_m") is not None else None
        #: What its crops show past the image's edge; a manifest that does not say was
        #: trained on the far face.
        self.out_of_image = out_of_image_in(manifest)
        #: The file it was read from, where it was (a run records it with its settings).
        self.source = None if source is None else str(source)

    @classmethod
    def _manifest(cls, directory: str | Path | None) -> tuple[Path, dict]:
        """(the weights folder, its checked manifest); ``None``: the shipped folder."""
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path | None = None, threads: int = 1):
        """The verified classifier from ``directory`` (default: the shipped one)."""
        from tracker.weights import verified_path

        directory, manifest = cls._manifest(directory)
        data = verified_path(directory, cls.onnx_name, manifest).read_bytes()
        return cls.from_onnx(data, manifest, threads, source=Path(directory) / cls.onnx_name)

    @classmethod
    def from_onnx(cls, data: bytes, manifest: dict, threads: int = 1, source: str | Path | None = None):
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
            problem = f"{source or cls.onnx_name}: onnxruntime cannot load the model ({exc}); re-export the weights"
        else:
            inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
            size = int(manifest["network"]["crop_size"])
            if inputs != [cls.onnx_input] or outputs != [cls.onnx_output]:
                problem = f"{source or cls.onnx_name}: expected input {cls.onnx_input!r} and output {cls.onnx_output!r}, got {inputs} and {outputs}"
            elif session.get_inputs()[0].shape != [1, 1, size, size]:
                problem = f"{source or cls.onnx_name} takes input of shape {session.get_inputs()[0].shape}, but its manifest says {size}x{size} crops"
        if problem is not None:
            from tracker.weights import WeightsError  # only now: it brings torch

            raise WeightsError(problem)
        return cls(session, manifest, data, source)

    def logit(self, crop_depth: np.ndarray) -> float:
        """The logit for one (S, S) crop (as ``classifier_crop`` cuts it)."""
        crop_depth = np.asarray(crop_depth)
        if crop_depth.shape != (self.crop_size, self.crop_size):
            raise ValueError(f"expected a ({self.crop_size}, {self.crop_size}) crop, got shape {crop_depth.shape}")
        # A feed of its own each call (no copy for a contiguous float32 crop): one shared
        # buffer gave a thread another thread's crop's answer where threads share a classifier.
        feed = np.ascontiguousarray(crop_depth, np.float32).reshape(1, 1, self.crop_size, self.crop_size)
        return float(self.session.run([self.onnx_output], {self.onnx_input: feed})[0][0, 0])

    def probability(self, crop_depth: np.ndarray) -> float:
        return sigmoid(self.logit(crop_depth))

    def logits(self, crops: np.ndarray) -> np.ndarray:
        return np.array([self.logit(c) for c in crops], np.float32)


def classifier_crop(
    classifier, depth_m: np.ndarray, intrinsics: CameraIntrinsics, centre: np.ndarray, cube_size_m: float, sensor: CameraIntrinsics | None = None,
    background_plane: BackgroundPlane | None = None,
) -> np.ndarray:
    """(S, S) float32: the crop ``classifier`` (its ``crop_size``, ``cube_size_m`` and
    ``out_of_image``) takes of (H, W) float32 metres around the camera-frame ``centre`` (m):
    unmirrored, in the camera frame, of its own cube where it names one (else ``cube_size_m``).
    ``sensor``: the whole image's intrinsics where ``depth_m`` is a window of it, and
    ``background_plane`` whether to clear a wall or table behind the hand (``make_crop``)."""
    return make_crop(
        depth_m, intrinsics, centre, classifier.cube_size_m or cube_size_m, Handedness.RIGHT, crop_size=classifier.crop_size,
        out_of_image=classifier.out_of_image, sensor=sensor, background_plane=background_plane,
    ).depth


def out_of_image_in(manifest: dict) -> OutOfImage:
    """What a network's or a classifier's crops showed past the image's edge, from its
    manifest (manifests from before the choice: the far face); WeightsError for a value
    this version does not know."""
    value = manifest.get("out_of_image", OutOfImage.FAR.value)
    try:
        return OutOfImage(value)
    except ValueError:
        from tracker.weights import WeightsError  # only now: it brings torch

        raise WeightsError(f"unknown out-of-image fill {value!r} in the manifest; expected one of {[o.value for o in OutOfImage]}") from None


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


class SideClassifier(CropClassifier):
    """The shipped left/right classifier: ``SideClassifier.load().probability_right(crop.depth)``."""

    @classmethod
    def _manifest(cls, directory):
        # The manifest format and the checksums belong to the training side (torch).
        from tracker.side_classifier import SIDE_WEIGHTS_DIR, load_manifest

        directory = SIDE_WEIGHTS_DIR if directory is None else directory
        return Path(directory), load_manifest(directory)

    def probability_right(self, crop_depth: np.ndarray) -> float:
        """P(right hand) for one (S, S) crop; the mirrored crop of the same hand gives ~1 - p."""
        return self.probability(crop_depth)


class HandPresence(CropClassifier):
    """The shipped hand-or-not classifier: ``HandPresence.load().probability(crop.depth)``, on
    the side classifier's crop where both were trained alike (``tracker.presence``)."""

    onnx_name, onnx_input, onnx_output = PRESENCE_ONNX, PRESENCE_ONNX_INPUT, PRESENCE_ONNX_OUTPUT

    @classmethod
    def _manifest(cls, directory):
        from tracker.presence import PRESENCE_WEIGHTS_DIR, load_manifest

        directory = PRESENCE_WEIGHTS_DIR if directory is None else directory
        return Path(directory), load_manifest(directory)
