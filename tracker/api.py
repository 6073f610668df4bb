"""The tracker as a library: the stages ``run_tracker.py`` runs, for programs that bring
their own depth images (a ROS node, a game engine's plug-in, a robot's control loop) or want
each frame's hands as Python objects rather than JSON lines.

    from tracker.api import CameraIntrinsics, DepthFrame, open_tracker

    with open_tracker() as hand_tracker:          # shipped weights, fastest backend here
        intrinsics = CameraIntrinsics(640, 480, fx=475.0, fy=475.0, cx=320.0, cy=240.0)
        frame = DepthFrame.from_metres(depth_m, intrinsics, timestamp_ms=t_ms)
        for hand in hand_tracker.process(frame).hands:
            hand.joints_cam_m                     # (21, 3) metres, camera frame, MediaPipe order

    from tracker.api import track

    with track("realsense", max_frames=300) as results:  # or a recording, a folder, "synthetic"
        for result in results:
            ...

``frame_line(result)`` is a result as the command line writes it, one JSON object (to send
on, or to log). Frames are tracked one after another in the caller's thread: each one's hand seeds the next
one's search, so pass a camera's frames in order. ``run_tracker.py`` adds what a
stand-alone run needs on top (a capture thread that keeps only the newest frame, workers that
segment ahead, the output files and windows, signal handling).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
import threading
from pathlib import Path

import numpy as np

from tracker.backends import AUTO_BACKEND, start_backend
from tracker.estimator import HandEstimator
from tracker.hand_model import HandModel
from tracker.pipeline import MAX_MIN_HAND_PROBABILITY, FrameGaps, FrameResult, HandTracker, TrackerConfig
from tracker.refine import RefineConfig
from tracker.sinks import frame_line
from tracker.smoothing import OneEuroConfig
from tracker.sources import DEFAULT_SYNTHETIC_FRAMES, FrameSource, SourceError, open_source, source_kind
from tracker.types import HAND_CHOICES, CameraIntrinsics, DepthFrame, HandEstimate, Handedness, Joint
from tracker.weights import WEIGHTS_DIR, crop_classifiers, crop_frame_of, load_manifest

__all__ = [
    "CameraIntrinsics",
    "DepthFrame",
    "FrameResult",
    "HandEstimate",
    "HandTracker",
    "Handedness",
    "Joint",
    "TrackedFrames",
    "frame_line",
    "open_tracker",
    "track",
]

log = logging.getLogger(__name__)


def open_tracker(
    weights: str | Path | None = None,
    backend: str = AUTO_BACKEND,
    hand: str = "auto",
    smooth: bool | OneEuroConfig = False,
    min_hand_probability: float = TrackerConfig.min_hand_probability,
    keep_planes: bool = False,
    refine: bool | RefineConfig = True,
) -> HandTracker:
    """A ``HandTracker`` ready for ``process(frame)``; close it (or use ``with``) to release
    its backend.

    weights: an exported weights folder (default: the shipped ``weights/``; ``weights/fast``
        for the narrower network).
    backend: "auto" (torch-cuda where torch sees an NVIDIA GPU, falling back to onnxruntime
        with a logged warning if it cannot start there; else onnxruntime), or one of
        ``tracker.backends.BACKENDS`` ("onnxruntime", "onnxruntime-int8", "torch",
        "torch-cuda", "tensorrt"). One named that cannot run here raises:
        ``BackendUnavailable`` (no GPU, no TensorRT) or the GPU's own error (out of memory).
    hand: "auto", "right" or "left" (every hand taken as that side).
    smooth: One-Euro smoothing of joints and mesh over time: True for the default setting
        (``tracker.smoothing.OneEuroConfig()``), or a ``OneEuroConfig`` of one's own.
    min_hand_probability: the hand-presence gate (``TrackerConfig.min_hand_probability``,
        default 0.5; 0: off; below 0.99). ``weights``' ``side_classifier/`` and ``presence/``
        sub-folders are used where it has them, else the shipped classifiers.
    keep_planes: leave a wall or table right behind the hand in the crops; by default it is
        cleared from them (``TrackerConfig.background_plane``, ``--keep-planes``).
    refine: refine each estimate against the depth (``TrackerConfig.refine``, on by
        default; False as ``--no-refine``: the network's fit as it is, a little faster),
        or a ``tracker.refine.RefineConfig`` to refine with settings of one's own.

    The tracker is warmed up (``HandTracker.warm_up``): its first frame is as fast as the
    rest. Raises ``tracker.weights.WeightsError`` for missing or damaged weights.
    """
    if hand not in HAND_CHOICES:
        raise ValueError(f"hand must be one of {', '.join(HAND_CHOICES)}, got {hand!r}")
    # Strictly True or False: "no" or "false" would be true.
    smoothing = _smoothing_setting(smooth)
    # Any real number (a numpy scalar from a config file or a ROS parameter too), not a bool.
    if isinstance(min_hand_probability, bool) or not isinstance(min_hand_probability, numbers.Real) or not 0.0 <= min_hand_probability < MAX_MIN_HAND_PROBABILITY:
        raise ValueError(f"min_hand_probability must be a number at least 0 and below {MAX_MIN_HAND_PROBABILITY}, got {min_hand_probability!r}")
    min_hand_probability = float(min_hand_probability)
    if not isinstance(keep_planes, bool):
        raise ValueError(f"keep_planes must be True or False, got {keep_planes!r}")
    if not isinstance(refine, (bool, RefineConfig)):
        raise ValueError(f"refine must be True, False or a tracker.refine.RefineConfig, got {refine!r}")
    weights = Path(weights) if weights is not None else WEIGHTS_DIR
    manifest = load_manifest(weights)
    config = TrackerConfig(
        cube_size_m=manifest["cube_size_m"],
        crop_frame=crop_frame_of(manifest),
        handedness=None if hand == "auto" else Handedness(hand),
        smooth=smoothing is not None,
        smoothing=smoothing or OneEuroConfig(),
        min_hand_probability=min_hand_probability,
        refine=refine is not False,
        refinement=refine if isinstance(refine, RefineConfig) else RefineConfig(),
        **({"background_plane": None} if keep_planes else {}),
    )
    hand_model = HandModel.load()
    network, _, _ = start_backend(backend, weights, on_fallback=log.warning)
    try:
        side_classifier, presence = crop_classifiers(weights, config.handedness, min_hand_probability)
        tracker = HandTracker(HandEstimator(network, hand_model), config, side_classifier, presence)
        tracker.warm_up()
        return tracker
    except BaseException:
        network.close()
        raise


def _smoothing_setting(smooth: object) -> OneEuroConfig | None:
    """The One-Euro setting ``smooth`` asks for, None for none."""
    if isinstance(smooth, OneEuroConfig):
        for field in dataclasses.fields(smooth):
            value = getattr(smooth, field.name)
            # A cut-off of 0 Hz would freeze the joints; a negative or NaN one gives NaN joints.
            # The speed coefficient may be 0: a fixed cut-off.
            zero_allowed = field.name == "speed_coefficient"
            number = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
            if not (number and (value >= 0 if zero_allowed else value > 0)):
                kind = "a number of 0 or more" if zero_allowed else "a positive number"
                raise ValueError(f"smooth: OneEuroConfig.{field.name} must be {kind}, got {value!r}")
        return smooth
    # Strictly True or False: "no" or "false" would be true.
    if not isinstance(smooth, (bool, np.bool_)):
        raise ValueError(f"smooth must be True, False or a tracker.smoothing.OneEuroConfig, got {smooth!r}")
    return OneEuroConfig() if smooth else None


class TrackedFrames:
    """The frames of a source, each tracked as it is taken (``track``): an iterator of
    ``FrameResult``, and a context manager that closes the source and the tracker.

    Both are closed when the frames end, when the source fails (its ``SourceError``
    is raised after the frames before it), on ``close()`` and on leaving a ``with`` block;
    a loop left early without either holds the camera until the object is collected.
    Several threads may read it: each frame goes to one of them, in turn.
    """

    def __init__(self, hand_tracker: HandTracker, source: FrameSource, max_frames: int | None) -> None:
        self.hand_tracker = hand_tracker
        self.source = source
        self.max_frames = max_frames
        self.frames_tracked = 0
        self._frames = iter(source)
        self._closed = False
        self._reading = threading.Lock()
        # A live camera, or a recording played in real time, goes on while a frame is
        # tracked: what it skipped meanwhile is counted in ``dropped_before``, as a run does.
        self._gaps = FrameGaps() if getattr(source, "realtime", True) else None

    def __iter__(self) -> "TrackedFrames":
        return self

    def __next__(self) -> FrameResult:
        # Threads reading the same frames take them in turn, each frame once; unguarded, the
        # second would find the source's generator busy and end the frames for both.
        with self._reading:
            return self._next_frame()

    def _next_frame(self) -> FrameResult:
        if self._closed or (self.max_frames is not None and self.frames_tracked >= self.max_frames):
            self.close()
            self._close_frames()  # where another thread's close could not (it was reading a frame)
            raise StopIteration
        try:
            frame = next(self._frames)
            result = self.hand_tracker.process(frame)
        except Exception:  # the end of the frames too: nothing more comes from them
            if self._closed:  # closed from another thread meanwhile: the frames end quietly
                self._close_frames()
                raise StopIteration from None
            self.close()
            raise
        except BaseException:  # Ctrl-C, an exit: passed on, with everything closed
            self.close()
            raise
        self.frames_tracked += 1
        if self._gaps is not None:
            result = dataclasses.replace(result, dropped_before=self._gaps.lost_before(frame))
        return result

    def _close_frames(self) -> None:
        """Close the source's generator, where it waits between frames: its own clean-up (a
        recording's playback, the SDK's frames) runs now, not when it is collected. While
        another thread is reading a frame from it, it cannot be: that thread's next call
        closes it (``__next__``)."""
        try:
            getattr(self._frames, "close", lambda: None)()
        except ValueError as exc:
            if "already executing" not in str(exc):
                raise

    def close(self) -> None:
        """Close the source and the tracker (idempotent); a thread reading a frame meanwhile
        gets no more after it."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close_frames()
        finally:
            try:
                self.source.close()
            finally:
                self.hand_tracker.close()

    def __enter__(self) -> "TrackedFrames":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # at interpreter exit the modules it needs may be gone
                pass


def track(
    source: str | Path | FrameSource,
    *,
    weights: str | Path | None = None,
    backend: str = AUTO_BACKEND,
    hand: str = "auto",
    smooth: bool | OneEuroConfig = False,
    realtime: bool | None = None,
    max_frames: int | None = None,
    min_hand_probability: float = TrackerConfig.min_hand_probability,
    refine: bool | RefineConfig = True,
) -> TrackedFrames:
    """Each frame of ``source`` tracked, in order, as a ``FrameResult`` (``hands`` empty where
    no hand is seen); the tracker and the source are opened here, so bad weights or a missing
    file raise at once.

    source: as ``run_tracker.py --source`` takes it ("realsense[:SERIAL]", a ``.db3`` or
        ``.bag`` recording, a folder of depth PNGs with ``intrinsics.json``,
        "synthetic[:SEED][:left|right]"); a path object, which always names a recording or
        a folder; or an opened ``tracker.sources.FrameSource``, which is then closed with the
        rest (also when the tracker cannot be opened or the arguments are refused).
    realtime: for a source named by a string: a recording plays at its recorded pace
        (default) or every frame as fast as they are tracked (False). A camera is always
        real time; an opened source keeps its own pace.
    max_frames: stop after this many frames (at least 1; the synthetic input named by a
        string has ``DEFAULT_SYNTHETIC_FRAMES``, 120, as on the command line, and a
        ``SyntheticSource`` passed in its own length).
    The other arguments: ``open_tracker``'s.
    """
    opened = isinstance(source, FrameSource)
    try:
        if not opened and not isinstance(source, (str, os.PathLike)):
            # Else str() of it would be looked up as a path: a list of frames, None, a generator.
            raise TypeError(
                f"track() takes a source name (str), a path or a tracker.sources.FrameSource, not {type(source).__name__}; "
                "for depth images of your own, call process() on open_tracker()'s HandTracker"
            )
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, numbers.Integral) or max_frames < 1):
            raise ValueError(f"max_frames must be a whole number of at least 1, got {max_frames!r}")
        if realtime is not None and not isinstance(realtime, (bool, np.bool_)):
            raise ValueError(f"realtime must be True, False or None (the source's own pace), got {realtime!r}")
        if opened and source.closed:
            raise SourceError(f"{source.description} was closed (by an earlier track?); open it again")
        if not opened and not isinstance(source, os.PathLike) and not str(source).strip():
            open_source(str(source))  # refuses it, as it refuses any unknown source, before the tracker's warm-up
        if not opened and max_frames is None and source_kind(source if isinstance(source, os.PathLike) else str(source)) == "synthetic":
            max_frames = DEFAULT_SYNTHETIC_FRAMES  # as on the command line; an opened one may be endless
        hand_tracker = open_tracker(weights, backend, hand, smooth, min_hand_probability, refine=refine)
    except BaseException:
        if opened:  # closed with the rest, however the call fails
            source.close()
        raise
    frames = None
    try:
        # A path object names a file or a folder, a string whatever --source takes.
        frames = source if opened else open_source(source if isinstance(source, os.PathLike) else str(source), realtime=None if realtime is None else bool(realtime), max_frames=max_frames)
        return TrackedFrames(hand_tracker, frames, max_frames)
    except BaseException:
        try:
            if frames is not None:
                frames.close()
        finally:
            hand_tracker.close()
        raise
