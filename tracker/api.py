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

    for result in track("realsense", max_frames=300):   # or a recording, a folder, "synthetic"
        ...

Frames are tracked one after another in the caller's thread: each one's hand seeds the next
one's search, so pass a camera's frames in order. ``run_tracker.py`` adds what a
stand-alone run needs on top (a capture thread that keeps only the newest frame, workers that
segment ahead, the output files and windows, signal handling).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from tracker.backends import AUTO_BACKEND, start_backend
from tracker.estimator import HandEstimator
from tracker.hand_model import HandModel
from tracker.pipeline import FrameResult, HandTracker, TrackerConfig
from tracker.sources import FrameSource, open_source
from tracker.types import CameraIntrinsics, DepthFrame, HandEstimate, Handedness, Joint
from tracker.weights import WEIGHTS_DIR, crop_frame_of, load_manifest

__all__ = [
    "CameraIntrinsics",
    "DepthFrame",
    "FrameResult",
    "HandEstimate",
    "HandTracker",
    "Handedness",
    "Joint",
    "open_tracker",
    "track",
]

#: ``hand``'s choices: the side decided per track by the side classifier, or fixed.
HAND_CHOICES = ("auto", "right", "left")


def open_tracker(
    weights: str | Path | None = None,
    backend: str = AUTO_BACKEND,
    hand: str = "auto",
    smooth: bool = False,
) -> HandTracker:
    """A ``HandTracker`` ready for ``process(frame)``; close it (or use ``with``) to free its
    backend.

    weights: an exported weights folder (default: the shipped ``weights/``; ``weights/fast``
        for the narrower network).
    backend: "auto" (torch-cuda where torch sees an NVIDIA GPU, falling back to onnxruntime
        with a warning on stderr if it cannot start there; else onnxruntime), or one of
        ``tracker.backends.BACKENDS`` ("onnxruntime", "onnxruntime-int8", "torch",
        "torch-cuda", "tensorrt"), which raises ``BackendUnavailable`` if it cannot run here.
    hand: "auto", "right" or "left" (every hand taken as that side).
    smooth: One-Euro smoothing of joints and mesh over time.

    Raises ``tracker.weights.WeightsError`` for missing or damaged weights.
    """
    if hand not in HAND_CHOICES:
        raise ValueError(f"hand must be one of {', '.join(HAND_CHOICES)}, got {hand!r}")
    weights = Path(weights) if weights is not None else WEIGHTS_DIR
    manifest = load_manifest(weights)
    hand_model = HandModel.load()
    network, _, fallback = start_backend(backend, weights)
    if fallback is not None:
        print(f"note: {fallback}", file=sys.stderr)
    config = TrackerConfig(
        cube_size_m=manifest["cube_size_m"],
        crop_frame=crop_frame_of(manifest),
        handedness=None if hand == "auto" else Handedness(hand),
        smooth=smooth,
    )
    try:
        return HandTracker(HandEstimator(network, hand_model), config)
    except BaseException:
        network.close()
        raise


def track(
    source: str | FrameSource,
    *,
    weights: str | Path | None = None,
    backend: str = AUTO_BACKEND,
    hand: str = "auto",
    smooth: bool = False,
    realtime: bool | None = None,
    max_frames: int | None = None,
) -> Iterator[FrameResult]:
    """Each frame of ``source`` tracked, in order, as a ``FrameResult`` (``hands`` empty where
    no hand is seen).

    source: as ``run_tracker.py --source`` takes it ("realsense[:SERIAL]", a ``.db3`` or
        ``.bag`` recording, a folder of depth PNGs with ``intrinsics.json``,
        "synthetic[:SEED][:left|right]"), or an opened ``tracker.sources.FrameSource``.
    realtime: for a recording, play at its recorded pace (default) or every frame as fast as
        they are tracked (False). A camera is always real time.
    max_frames: stop after this many frames (the synthetic input is endless without it).
    The other arguments: ``open_tracker``'s.

    The source and the backend are closed when the loop ends, breaks or raises. A source
    that fails midway raises ``tracker.sources.SourceError`` after the frames before it.
    """
    hand_tracker = open_tracker(weights, backend, hand, smooth)
    try:
        frames = open_source(source, realtime=realtime, max_frames=max_frames) if isinstance(source, (str, Path)) else source
    except BaseException:
        hand_tracker.close()
        raise
    with hand_tracker, frames:
        for count, frame in enumerate(frames, start=1):
            yield hand_tracker.process(frame)
            if max_frames is not None and count >= max_frames:
                break
