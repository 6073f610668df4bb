"""The streaming tracker: capture thread -> segment + crop + side (``tracker.prepare``) ->
side vote -> network + refit -> sinks.

Capture runs on its own thread so a slow frame never stalls the camera (a recording
played as fast as possible to a GPU backend is read by the tracker thread itself, which is
what limits the rate there: ``default_read_ahead``). With a GPU backend that holds two
frames, each frame's network is begun before the frame before it is completed. For a live camera
(or real-time playback) the tracker always takes the newest frame and counts the ones it
skipped; for as-fast-as-possible playback the capture waits for the tracker so every frame
is processed; there, with ``segment_ahead`` = N, the next N frames are prepared in N
worker processes while the current one is in the network. Live, with ``segment_ahead`` 1 or
more, one worker process prepares each frame as it arrives while the network runs on the
frame before (``_LiveAhead``). Each frame's stages are timed.
Ctrl-C / SIGTERM stop the loop cleanly: the source is closed (finalising a recording) and
every sink flushed and closed.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
import traceback
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from tracker.confidence import depth_agreement
from tracker.crop import CROP_SIZE, DEFAULT_CUBE_SIZE_M, BackgroundPlane, CropFrame, OutOfImage
from tracker.estimator import HandEstimator, Launched
from tracker.lens import pinhole_view, project
from tracker.machine import usable_cpus
from tracker.prepare import PREPARE_OPENCV_THREADS, HandChoiceConfig, PrepareConfig, Prepared, PrepareWorkerEnded, PrepareWorkers, prepare_frame, side_classifier_crop, warm_up_preparation
from tracker.refine import RefineConfig, Refiner, warm_up_refiner
from tracker.segment import SegmentConfig
from tracker.skeleton import HandPart
from tracker.side_vote import SideVote, SideVoteConfig
from tracker.signals import SignalHandlers
from tracker.smoothing import OneEuroConfig, OneEuroFilter
from tracker.side_inference import sigmoid
from tracker.sources import SourceError
from tracker.types import CameraIntrinsics, DepthFrame, HandCrop, HandEstimate, Handedness


@dataclass(frozen=True)
class TrackerConfig:
    #: Edge of the crop cube (metres) the network was trained on; None: as its weights'
    #: manifest says (``DEFAULT_CUBE_SIZE_M`` for a network without one).
    cube_size_m: float | None = None
    #: The crop frame the network was trained in; None: as its weights' manifest says.
    crop_frame: CropFrame | None = None
    #: Which hand the crop is taken as; left hands are mirrored into the right-hand network.
    #: None: decided per track by the side classifier (``tracker.side_vote``).
    handedness: Handedness | None = None
    side_vote: SideVoteConfig = field(default_factory=SideVoteConfig)
    #: Below this confidence the estimate is dropped (no hand reported).
    min_confidence: float = 0.4
    #: A crop the hand-presence classifier (``tracker.presence``) gives less than this
    #: probability of being a hand is dropped before the network runs: the end of an arm
    #: whose hand is out of view or hidden, which the depth would bear a fitted mesh out on.
    #: 0: the classifier is not run. Over a track the tracker weighs each frame's logit
    #: into a running mean (``hand_evidence_weight`` the new frame's share), so one frame
    #: called no hand does not end a track, while an arm left behind by a hand gone out of
    #: view loses it on its second frame (on its fourth where the depth bears the arm's fit
    #: out as well as a doubted crop needs, below). Below 0.99 (``MAX_MIN_HAND_PROBABILITY``).
    min_hand_probability: float = 0.5
    hand_evidence_weight: float = 0.3
    #: Where the track's hand evidence is below ``min_hand_probability`` but not below this,
    #: the classifier doubts rather than denies: the network runs anyway, and its fit is kept
    #: only where the depth bears it out at ``min_confidence_when_doubtful`` or more. A fist
    #: held end-on to the camera is doubted and fits well; an arm's end, denied outright or
    #: doubted, fits worse (``benchmarks/results/confidence_separation.json``,
    #: ``kept_by_the_tracker``). At or above ``min_hand_probability``: no such band.
    doubtful_hand_probability: float = 0.05
    min_confidence_when_doubtful: float = 0.8
    #: Refine each estimate kept against its crop's depth (``tracker.refine``: a few steps
    #: of articulated ICP after the refit; off: the network's refitted pose as it is). The
    #: confidence, and so whether a hand is reported, is the network's fit's either way.
    #: On by default: 15 % less joint error on held-out frames, and within a track (where it
    #: also refines the last frame's pose) a hand held still shakes less, for about 1 ms a
    #: hand on one CPU core; within a track its two fits take 2 ms one after the other, and
    #: 1.1-1.2 ms of this thread's time side by side on two cores (``benchmarks/refinement.py``,
    #: ``benchmarks/held_still.py``, ``docs/performance.md``).
    refine: bool = True
    refinement: RefineConfig = field(default_factory=RefineConfig)
    #: Smooth the joints over time with a One-Euro filter (off: raw per-frame estimates).
    smooth: bool = False
    #: The filter's setting where ``smooth`` (``benchmarks/smoothing.py`` measured it).
    smoothing: OneEuroConfig = field(default_factory=OneEuroConfig)
    #: A hand centre this far from the last one starts a new track (side vote and smoothing
    #: start over): the tracked hand left and segmentation found another one. A hand moves a
    #: few centimetres between frames (12 cm is 3.6 m/s at 30 frames/s).
    new_track_jump_m: float = 0.12
    #: Frames further apart than this (a camera that reconnected, a recording resumed) start
    #: a new track, as does a frame counter that goes back or another camera's frame: the
    #: hand seen next may be another one, and the side vote must not carry over.
    new_track_gap_ms: float = 500.0
    #: A track lost and found again this soon (ms from the lost track's last frame to the
    #: new one's first) and within ``new_track_jump_m`` of where it was lost takes up the
    #: lost track's side vote rather than starting one afresh: a hand does not change side
    #: in a blink, while one frame's side check alone is far weaker evidence than a track's
    #: whole vote (a hand the presence classifier denied for one frame had been reported on
    #: the other side from there on). Hand evidence and smoothing still start over; the side
    #: checks go on as the lost track had them due. 0, or frames without a clock (every
    #: timestamp 0): every track votes afresh.
    resume_side_within_ms: float = 200.0
    #: Where the side is decided per track: on its first frame and this many frames after
    #: (then further apart, below; a track that takes up a lost one's vote, above, goes on
    #: with its count), the
    #: network also runs on the other side's crop, and the side whose mesh the
    #: depth bears out better (``HandEstimator.side_check_agreement``) gets ``SIDE_CHECK_VOTES`` frames'
    #: worth of the side vote; 0: never. Per frame that side is the true one far more often
    #: than the side classifier's (``benchmarks/results/confidence_separation.json``,
    #: ``side_choice``). A check runs with no other frame's network in flight: a run that
    #: keeps two in flight (a GPU's, ``run_pipeline``) completes the frames before it first.
    side_check_every: int = 15
    #: ... and the frames between checks double after each check that bears out the side the
    #: track had decided, up to this many; a check that goes against it brings them back
    #: to ``side_check_every``. A check runs the network a second time: every 15 frames,
    #: those frames were the slowest on a 2-core CPU and set the latency's 99th percentile
    #: (``docs/performance.md``), and once a track's checks agree, further ones seldom
    #: change anything. ``side_check_every``: a check at that fixed interval.
    side_check_every_at_most: int = 120
    #: When playing a recording as fast as possible, prepare the next N frames (segment,
    #: crop, side classifier: ``tracker.prepare``) in N worker processes while the network
    #: runs on this one (0: each frame when its turn comes). Segmentation is the costliest
    #: stage on the CPU and holds the GIL most of the time, so a thread does not overlap it
    #: with the rest (it measured slower than none); processes do (``default_segment_ahead``
    #: says how many pay with each backend). Frame i's segmentation then
    #: uses the hand centre of frame i - N - 1 as its prior (of frame i - N - 2 with a GPU
    #: backend, which gets frame i while frame i - N - 1 is in the network, and of frame
    #: i - N - 3 with one that holds two frames' networks, ``run_pipeline``), fixed when it
    #: is sent, so runs are reproducible. Live (``run_pipeline``'s ``drop_old_frames``),
    #: any N above 0 means one worker process, which prepares each frame as it arrives from
    #: the tracker's hand centre at that moment (``_LiveAhead``).
    segment_ahead: int = 0
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    #: On a track's first frame, the hand-presence classifier may take another place
    #: segmentation found over its first choice, and on a tracked frame whose place it
    #: denies, another near the last centre (``tracker.prepare.HandChoiceConfig``).
    hand_choice: HandChoiceConfig = field(default_factory=HandChoiceConfig)
    #: A wall or table right behind the hand (a hand resting on a desk, held against a
    #: screen) is cleared from the crops before the network and the classifiers see them
    #: (``tracker.crop.BackgroundPlane``); None: crops keep it, as the networks' training
    #: crops do.
    background_plane: BackgroundPlane | None = field(default_factory=BackgroundPlane)


#: Backends whose network runs off the CPU, where segmenting ahead pays.
GPU_BACKENDS = ("torch-cuda", "tensorrt")
#: onnxruntime on the CPU, float or 8-bit: the same threading, so the same worker choice.
ONNXRUNTIME_CPU_BACKENDS = ("onnxruntime", "onnxruntime-int8")
#: Frames a recording played as fast as possible may have read and waiting for the tracker.
PLAYBACK_READ_AHEAD = 1
#: Signals that stop a run; sent to the whole process group, they end the frame-preparation
#: workers as well.
GROUP_STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

#: The largest hand-presence logit one frame adds to a track's running evidence: from its
#: most certain, an arm left by its hand (-6 after a track at +6) ends the track on its
#: second frame with ``hand_evidence_weight`` 0.3 (2.4, a hand; -0.12, doubted, so kept
#: only on a good fit; -1.88, doubted; -3.12, no hand).
HAND_EVIDENCE_MAX_ABS_LOGIT = 6.0
#: ``min_hand_probability`` must stay below this: near the most a track's evidence can reach
#: (sigmoid(6) = 0.9975), every frame would be dropped.
MAX_MIN_HAND_PROBABILITY = 0.99

#: A side check's evidence: the difference of the two fits' agreement with the depth
#: (right minus left, ``HandEstimator.side_check_agreement``) in logit units per unit of it,
#: clipped as any logit (``SideVoteConfig.max_abs_logit``): the median difference between
#: the true side's fit and the other's, 0.20, is a logit of 4.
SIDE_CHECK_LOGIT_PER_CONFIDENCE = 20.0
#: ... counting as this many frames of the side classifier's: the better-confirmed side is
#: the true one on 98-99 % of single frames, the classifier's on 82 % (``side_choice`` in
#: ``benchmarks/results/confidence_separation.json``; ``SIDE_CHECK_TOLERANCE_M``).
SIDE_CHECK_VOTES = 10.0


def vote_side_check(vote, confidence: dict[Handedness, float]) -> None:
    """Add a side check's evidence, how far the depth bears out each side's fit
    (``HandEstimator.side_check_agreement``), to ``vote`` (a
    ``tracker.side_vote.SideVote``); where neither fit is usable (a network failure, a mesh
    outside the image) there is no evidence."""
    if max(confidence.values()) > 0.0:
        difference = confidence[Handedness.RIGHT] - confidence[Handedness.LEFT]
        vote.update(SIDE_CHECK_LOGIT_PER_CONFIDENCE * difference, votes=SIDE_CHECK_VOTES)


def default_segment_ahead(backend: str) -> int:
    """Frames to prepare ahead with this backend when playing as fast as possible.

    With a GPU backend up to 3, a process each, leaving a core to the tracker thread and
    one to capture: segmentation cost about twice what the rest of a frame cost on the CPU
    when this was measured, so 2-3 workers kept the tracker thread busy. With onnxruntime on
    the CPU one, when there are three cores or more, so that the worker has one of its own.
    On two, where the worker and the network share the cores, it once paid (65 against 59
    frames/s end to end, while preparation took about 4 ms a frame); since segmentation got
    leaner it no longer does: 75.5 and 76.4 frames/s with the worker against 74.4 and 76.6
    without (8-bit: 108.4 and 93.5 against 96.0 and 98.4), the latency p50 38 against 25-27
    ms, and the worker's 240 MB more memory
    (``benchmarks/results/playback_avx2_segment_ahead/``). The torch CPU backend gains
    nothing from a worker (33 frames/s either way), so it gets none.
    """
    cores = usable_cpus()
    if backend in GPU_BACKENDS:
        return max(1, min(3, cores - 2))
    if backend in ONNXRUNTIME_CPU_BACKENDS and cores >= 3:
        return 1
    return 0


def default_read_ahead(backend: str, segment_ahead: int, source=None) -> int:
    """Frames the capture thread reads ahead when a recording plays as fast as possible
    (``run_pipeline``'s ``read_ahead``); 0: no capture thread, the tracker thread reads.

    With a GPU backend and workers preparing the frames, the tracker thread is what limits
    the rate; where reading a frame takes little time outside the interpreter lock
    (``FrameSource.light_to_read``: a recording, frames in memory) a capture thread only
    takes the lock from it, with a wake-up and a wait at every hand-over. With the network's
    and the preparation's results replayed (``python -m benchmarks.pipeline_speed
    --replay-network --replay-as-gpu --replay-preparation``) the tracker thread reading
    itself managed 1.15 times the frames from memory on a 2-core CPU
    (``benchmarks/results/pipeline_speed_cpu_tracker_thread_read_ahead0.json`` against
    ``..._read_ahead1.json``) and 1.17 times from a recording (``..._recording_...``). Where
    the workers or the network on the CPU are the limit, or reading is work of its own
    (PNGs to decode, frames to render), the capture thread reads while the rest runs.
    """
    if backend in GPU_BACKENDS and segment_ahead > 0 and getattr(source, "light_to_read", False):
        return 0
    return PLAYBACK_READ_AHEAD


def backend_options(backend: str, segment_ahead: int) -> dict:
    """Options for ``tracker.backends.create_backend`` that suit ``segment_ahead`` workers:
    onnxruntime's threads stop spin-waiting when worker processes share the cores."""
    if backend in ONNXRUNTIME_CPU_BACKENDS and segment_ahead > 0:
        return {"spin": False}
    return {}


log = logging.getLogger(__name__)
#: Successive frames, each under a millisecond after the one before, after which the
#: timestamps are taken for seconds and a warning given (one such step may be a clock quirk).
SUB_MILLISECOND_STEPS_WARNED = 5
# How long a worker ended by a stop signal waits for that signal to reach this process too.
OWN_STOP_SIGNAL_WAIT_S = 1.0


class FrameGaps:
    """Frames lost before each one delivered, from the gaps in its camera's frame numbers:
    what a live camera, or a recording played in real time, skipped while the tracker was
    busy (and what the camera's own queues dropped). A counter that goes back, as after a
    reconnect, is a restart, not a loss."""

    def __init__(self) -> None:
        self._last_number: dict[str, int] = {}

    def lost_before(self, frame: DepthFrame) -> int:
        previous = self._last_number.get(frame.serial)
        self._last_number[frame.serial] = frame.frame_number
        return 0 if previous is None else max(0, frame.frame_number - previous - 1)


@dataclass(frozen=True)
class FrameResult:
    """What the tracker found in one frame: zero or more hands and the stage timings (ms).
    ``judged_no_hand``: a crop was found, and the hand-presence evidence dropped it: it
    denied the crop, or doubted it and the fit was not good enough for a doubted crop
    (``TrackerConfig.doubtful_hand_probability``)."""

    frame: DepthFrame
    hands: tuple[HandEstimate, ...]
    timings_ms: dict[str, float]
    dropped_before: int = 0
    judged_no_hand: bool = False


class HandTracker:
    """Per-frame processing. The last hand centre backs up the next segmentation, and with
    automatic handedness the side vote runs over the track, as does the hand-presence
    evidence, which drops a crop that holds no hand before the network runs; when the hand
    is lost (nothing found, no hand by that evidence, low confidence, or a centre too far
    from the last one: another hand) all are cleared, and so is the smoothing, which also
    starts over when the side vote changes its mind (the joints then come from the other
    side's fit). Only a hand found again within a blink near where it was lost takes up its
    side vote (``TrackerConfig.resume_side_within_ms``).

    ``side_classifier``: a ``tracker.side_inference.SideClassifier`` for automatic
    handedness (``config.handedness`` None); the shipped one is loaded if not given.
    ``presence``: a ``tracker.side_inference.HandPresence`` where
    ``config.min_hand_probability`` > 0; the shipped one is loaded if not given.
    """

    def __init__(self, estimator: HandEstimator, config: TrackerConfig = TrackerConfig(), side_classifier=None, presence=None) -> None:
        self.estimator = estimator
        manifest = getattr(estimator.backend, "manifest", None)
        #: What the network's crops show past the image's edge: as its weights were trained.
        self.out_of_image = OutOfImage.FAR
        if manifest is not None:
            from tracker.weights import crop_frame_of, out_of_image_of

            self.out_of_image = out_of_image_of(manifest)
            trained_in = crop_frame_of(manifest)
            if config.crop_frame is not None and CropFrame(config.crop_frame) != trained_in:
                raise ValueError(f"crops in the {CropFrame(config.crop_frame).value} frame for weights trained in the {trained_in.value} frame")
            config = dataclasses.replace(config, crop_frame=trained_in)
            # A cube of another size shows the network hands larger or smaller than any it
            # learnt: it runs, and is centimetres off.
            trained_cube = float(manifest.get("cube_size_m", DEFAULT_CUBE_SIZE_M))
            if config.cube_size_m is not None and not np.isclose(config.cube_size_m, trained_cube, rtol=0, atol=1e-9):
                raise ValueError(f"a {config.cube_size_m:g} m crop cube for weights trained on {trained_cube:g} m cubes")
            config = dataclasses.replace(config, cube_size_m=trained_cube)
        else:
            if config.crop_frame is None:
                config = dataclasses.replace(config, crop_frame=CropFrame.CAMERA)
            if config.cube_size_m is None:
                config = dataclasses.replace(config, cube_size_m=DEFAULT_CUBE_SIZE_M)
        if not 0.0 <= config.min_hand_probability < MAX_MIN_HAND_PROBABILITY:
            raise ValueError(f"min_hand_probability must be at least 0 and below {MAX_MIN_HAND_PROBABILITY}, got {config.min_hand_probability!r}")
        if not 0.0 <= config.doubtful_hand_probability <= 1.0:
            raise ValueError(f"doubtful_hand_probability must be between 0 and 1, got {config.doubtful_hand_probability!r}")
        if not 0.0 <= config.min_confidence_when_doubtful <= 1.0:
            raise ValueError(f"min_confidence_when_doubtful must be between 0 and 1, got {config.min_confidence_when_doubtful!r}")
        if not config.resume_side_within_ms >= 0.0:
            raise ValueError(f"resume_side_within_ms must be 0 or more, got {config.resume_side_within_ms!r}")
        if config.side_check_every > 0 and not config.side_check_every_at_most >= config.side_check_every:
            raise ValueError(f"side_check_every_at_most must be at least side_check_every ({config.side_check_every}), got {config.side_check_every_at_most!r}")
        if not 0.0 < config.hand_evidence_weight <= 1.0:
            raise ValueError(f"hand_evidence_weight must be above 0 and at most 1, got {config.hand_evidence_weight}")
        self.config = config
        self._previous_center: np.ndarray | None = None
        #: The hand centre of the last frame begun in the current track: what a new one is
        #: measured against for a jump. One at a time it is the previous centre; with a
        #: frame begun before the last is completed, it is that newer frame's.
        self._begun_center: np.ndarray | None = None
        #: Where in the stream that frame was.
        self._begun_position: _StreamPosition | None = None
        #: The last tracks that ended with a side vote, oldest first, which a track found
        #: again soon after near where one ended takes up (``TrackerConfig.resume_side_within_ms``).
        #: More than one: a hand lost for a moment, while another thing is taken for a hand
        #: elsewhere for a frame or two, is still found again with its own vote.
        self._ended: list[_EndedTrack] = []
        self._smoother = OneEuroFilter(config.smoothing) if config.smooth else None
        self._refiner = Refiner(estimator.hand_model, config.refinement) if config.refine else None
        #: The current track's last refined pose, which the next frame's refinement also
        #: starts from (``RefineConfig.from_last_frame``); None at a track's start.
        self._last_pose: _RefinedPose | None = None
        self.side_classifier = None
        if config.handedness is None:
            if side_classifier is None:
                from tracker.side_inference import SideClassifier

                side_classifier = SideClassifier.load()
            self.side_classifier = side_classifier
        self.presence = None
        if config.min_hand_probability > 0:
            if presence is None:
                from tracker.side_inference import HandPresence

                presence = HandPresence.load()
            self.presence = presence
        self._side_vote = SideVote(config.side_vote)
        #: The track's running hand-presence logit (None: no frame of the track yet).
        self._hand_evidence: float | None = None
        self._side: Handedness | None = None
        #: Frames of the current track that went through the side vote, and which of them
        #: the last side check was made at (None: none yet in this track).
        self._track_frames = 0
        self._side_checked_at: int | None = None
        #: Frames from the last side check to the next (``_space_side_checks``).
        self._side_check_interval = config.side_check_every
        #: Counts the tracks ended (``_lost``): a frame whose network ran while its track
        #: ended (``run_pipeline`` may begin the next frame before completing this one)
        #: is reported, but does not carry the new track on.
        self._track = 0
        self._last_frame: _StreamPosition | None = None
        #: Frames begun so far (a frame sent to be segmented ahead knows by it whether the
        #: frame its stream broke at has been begun: ``run_pipeline``).
        self.frames_begun = 0
        #: What prepares a frame (segment, crop, side, presence), here and in the worker processes:
        #: ``prepare_frame``'s arguments, a module-level function the workers can import.
        self.prepare_function = prepare_frame
        #: Set by ``close``: the backend is gone.
        self.closed = False
        # Held by ``process`` and ``close``: a close from another thread (a stop button, a
        # shutdown hook) waits for the frame in hand rather than pulling the backend from under it.
        self._in_use = threading.RLock()
        # ``process`` calls under way (in the thread holding ``_in_use``): a close from that
        # thread, a signal handler's, leaves the backend to the frame in hand.
        self._processing = 0
        self._sub_millisecond_steps = 0  # frames in a row under a millisecond apart (_check_clock)
        self._clock_warned = False

    def warm_up(self) -> float:
        """Run each stage once on a blank input, so that the first real frame pays none of
        the one-off costs: the numba kernels of segmentation and refit are compiled on a
        run's first use after installation (seconds, before they are cached on disk) and
        loaded from that cache on later runs, and the backend makes its first call. The
        tracker's state is left as it was. Returns the seconds it took.

        Between frames only, not while one is begun: the blank crop would take its place in
        the backend's queue. It segments with ``prepare_frame`` itself, not through
        ``prepare_function``, which a benchmark may replace with one that keeps its first
        answer; a backend wrapped that way is best not warmed up."""
        self._check_open()
        if getattr(self.estimator.backend, "in_flight", False):
            raise RuntimeError("warm_up() while a frame's network is running; complete that frame first")
        t0 = time.perf_counter()
        warm_up_preparation(self.prepare_config, (self.side_classifier, self.presence))
        size = 32
        blank = np.zeros((size, size), np.float32)
        blank_intrinsics = CameraIntrinsics(size, size, 30.0, 30.0, size / 2, size / 2)
        for dtype in (np.float32, np.float64):  # a caller's images in metres: DepthFrame.from_metres's kernel
            image = blank.astype(dtype)
            DepthFrame.from_metres(image, blank_intrinsics)
            image.flags.writeable = False  # as a ROS message's buffer is: compiled apart
            DepthFrame.from_metres(image, blank_intrinsics)
        s = self.estimator.backend.crop_size
        # A crop of nothing but background, 0.5 m ahead: what the network makes of it is
        # finite, so the refit runs on it.
        background = HandCrop(np.ones((s, s), np.float32), np.array([0.0, 0.0, 0.5], np.float32), self.config.cube_size_m, np.eye(3))
        output, _ = self.estimator.run(background)
        # And the confidence's render of a mesh into the crop: the template at the centre,
        # as the network's answer for nothing may not be a mesh worth rendering.
        template = self.estimator.hand_model.template_vertices
        depth_agreement(background, template - template.mean(axis=0) + background.center_cam_m, self.estimator.hand_model.faces, output.hand_probability, (s, s))
        if self._refiner is not None:
            warm_up_refiner(self._refiner)
        return time.perf_counter() - t0

    def close(self) -> None:
        """Close the network's backend (its session, engine or CUDA graph; torch keeps freed
        GPU memory cached for reuse). The tracker processes no frames after it; a ``process``
        call under way is finished first: one in another thread is waited for, and where the
        close comes from the processing thread itself (a signal handler's) the backend is
        closed as that call returns. ``run_pipeline``'s stages are not waited for."""
        with self._in_use:
            self.closed = True
            if not self._processing:
                self.estimator.backend.close()

    def __enter__(self) -> "HandTracker":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def reset(self) -> None:
        """Forget the track: the next frame is treated as the first of a new input."""
        self._lost()
        self._last_frame = None
        self._ended = []

    def follows(self, last: DepthFrame | None, frame: DepthFrame) -> bool:
        """Whether ``frame`` follows ``last`` closely enough to continue its track (True
        after no frame at all)."""
        if last is None:
            return True
        # The counter says the order; device clocks may step back a little while it goes on,
        # so the timestamp only tells a gap. Without a clock (every timestamp 0) only the
        # serial and the counter can tell.
        return (
            frame.serial == last.serial
            and frame.sequence == last.sequence
            and frame.frame_number >= last.frame_number
            and abs(frame.timestamp_ms - last.timestamp_ms) <= self.config.new_track_gap_ms
        )

    def prior_for(self, frame: DepthFrame) -> np.ndarray | None:
        """The hand centre to segment ``frame`` around: the last one, unless ``frame`` does
        not follow the last frame begun (its track ends there, before it is segmented)."""
        return self._previous_center if self.follows(self._last_frame, frame) else None

    def _continues_stream(self, frame: DepthFrame) -> bool:
        """Whether ``frame`` follows the last one begun closely enough to continue its track."""
        last, self._last_frame = self._last_frame, _StreamPosition(frame.serial, frame.frame_number, frame.timestamp_ms, frame.sequence)
        self.frames_begun += 1
        self._check_clock(last, frame)
        return self.follows(last, frame)

    def _check_clock(self, last: _StreamPosition | None, frame: DepthFrame) -> None:
        """Warn, once, of timestamps that look like seconds: successive frames under a
        millisecond apart, faster than any depth camera. Taken as milliseconds they would
        freeze the smoothing and hide every gap in the stream."""
        if last is None or self._clock_warned:
            return
        step = frame.timestamp_ms - last.timestamp_ms
        # One camera's frames, its counter going on by one or standing still (frames the
        # caller does not number); another camera's frame may well come a moment later.
        if frame.serial == last.serial and frame.frame_number - last.frame_number in (0, 1) and 0 < step < 1.0:
            self._sub_millisecond_steps += 1
            if self._sub_millisecond_steps >= SUB_MILLISECOND_STEPS_WARNED:
                self._clock_warned = True
                log.warning(
                    "the frames' timestamps advance by under a millisecond a frame (%g ms last): DepthFrame.timestamp_ms "
                    "takes milliseconds; are they seconds? (multiply by 1000)", step,
                )
        else:
            self._sub_millisecond_steps = 0

    def _lost(self) -> None:
        self._track += 1
        if self._side_vote.frames > 0:
            # A new vote object: the ended one is kept as it stands for a track that may
            # take it up (``_resume_side``).
            ended = _EndedTrack(
                self._side_vote, self._side, self._track_frames, self._side_checked_at, self._side_check_interval, self._begun_center, self._begun_position
            )
            self._ended = [*self._ended, ended][-_ENDED_TRACKS_KEPT:]
            self._side_vote = SideVote(self.config.side_vote)
        self._previous_center = self._begun_center = self._begun_position = None
        self._last_pose = None
        self._hand_evidence = None
        self._track_frames = 0
        self._side_checked_at: int | None = None
        self._side_check_interval = self.config.side_check_every
        self._side = None
        self._restart_smoothing()

    def _restart_smoothing(self) -> None:
        # A new filter rather than a reset: a frame begun before (``_Begun.smoother``) is
        # still completed with the filter of its own track and side.
        if self.config.smooth:
            self._smoother = OneEuroFilter(self.config.smoothing)

    @property
    def prepare_config(self) -> PrepareConfig:
        return PrepareConfig(
            self.config.segment,
            self.config.cube_size_m,
            self.config.handedness,
            CropFrame(self.config.crop_frame),
            self.out_of_image,
            self.config.hand_choice,
            # The network's own input size (64 for every shipped one).
            int(getattr(getattr(self.estimator, "backend", None), "crop_size", CROP_SIZE)),
            self.config.background_plane,
            self.config.new_track_jump_m,
        )

    @property
    def previous_center(self) -> np.ndarray | None:
        """The last confidently tracked hand centre (camera frame, m), the next prior."""
        return self._previous_center

    def prepare(self, frame: DepthFrame, prior: np.ndarray | None) -> Prepared:
        """Segmentation, crops, side and hand logits: reads no tracker state but ``prior``."""
        return self.prepare_function(frame.depth_m(), frame.intrinsics, prior, self.prepare_config, self.side_classifier, self.presence)

    def process(self, frame: DepthFrame) -> FrameResult:
        """Track one frame: segment, crop, run the network, refit, check; returns its
        ``FrameResult`` (``hands`` empty where no hand was found, which is not an error).

        Frames of one stream come in their order: each continues the track of the frame
        before where it follows it (``follows``: same camera and sequence, the counter not
        going back, no gap in time over ``TrackerConfig.new_track_gap_ms``); any other
        frame starts a new track (``reset`` starts one at will). Calls from several threads
        are taken one at a time. Raises TypeError for anything but a DepthFrame and
        RuntimeError once the tracker is closed.
        """
        if not isinstance(frame, DepthFrame):
            raise TypeError(
                f"process() takes a DepthFrame, not {type(frame).__name__}: wrap a depth image with its intrinsics, "
                "DepthFrame.from_metres(depth_m, intrinsics) or DepthFrame(depth_u16, depth_scale, intrinsics)"
            )
        with self._in_use:
            self._check_open()
            self._processing += 1
            try:
                return self.finish(frame, self.prepare(frame, self.prior_for(frame)))
            finally:
                self._processing -= 1
                if self.closed and not self._processing:  # closed by this thread meanwhile
                    self.estimator.backend.close()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this HandTracker is closed; open a new one (tracker.api.open_tracker)")

    def _crop(self, frame: DepthFrame, prepared: Prepared, timings: dict[str, float]) -> tuple[HandCrop, Launched | None]:
        """The network's crop, mirrored for a left hand (fixed, or as the side vote says),
        and its network's run where a side check has already made it."""
        if self.config.handedness is not None:
            return prepared.crops[self.config.handedness], None
        logit = prepared.right_logit
        if logit is None:  # prepared without the classifier (see PrepareWorkers)
            t0 = time.perf_counter()
            depth = side_classifier_crop(*pinhole_view(frame.depth_m(), frame.intrinsics), prepared.centre, self.prepare_config, prepared.crops, self.side_classifier)
            logit = self.side_classifier.logit(depth)
            timings["side"] = 1e3 * (time.perf_counter() - t0)
        checked = self._side_check(frame, prepared)
        if checked is not None:
            # Spaced by what the vote had decided before this check's evidence joins it.
            self._space_side_checks(checked[0])
            vote_side_check(self._side_vote, checked[0])
        self._track_frames += 1
        side = Handedness.LEFT if self._side_vote.update(logit) == Handedness.LEFT else Handedness.RIGHT
        if self._side is not None and side != self._side:
            self._restart_smoothing()
        self._side = side
        if checked is None:
            return prepared.crops[side], None
        _, runs, check_ms = checked
        # The side taken reports its own network's time as "network"; the rest is the check's.
        timings["side_check"] = check_ms - runs[side].launch_ms
        return prepared.crops[side], runs[side]

    def _hand_judgement(self, frame: DepthFrame, prepared: Prepared, timings: dict[str, float]) -> str:
        """What the track's running hand evidence, this frame's crop added, says: "hand",
        "doubtful" or "no hand" ("hand" without the hand-presence classifier); see
        ``TrackerConfig.min_hand_probability`` and ``doubtful_hand_probability``."""
        if self.presence is None:
            return "hand"
        logit = prepared.hand_logit
        if logit is None:  # prepared without it (see PrepareWorkers)
            t0 = time.perf_counter()
            depth = side_classifier_crop(*pinhole_view(frame.depth_m(), frame.intrinsics), prepared.centre, self.prepare_config, prepared.crops, self.presence)
            logit = self.presence.logit(depth)
            timings["presence"] = 1e3 * (time.perf_counter() - t0)
        # Clipped, so that no single frame outweighs the track: the shipped classifier
        # gives logits of +-10 and more on plain cases.
        logit = min(max(float(logit), -HAND_EVIDENCE_MAX_ABS_LOGIT), HAND_EVIDENCE_MAX_ABS_LOGIT)
        weight = self.config.hand_evidence_weight
        self._hand_evidence = logit if self._hand_evidence is None else (1.0 - weight) * self._hand_evidence + weight * logit
        probability = sigmoid(self._hand_evidence)
        if probability >= self.config.min_hand_probability:
            return "hand"
        return "doubtful" if probability >= self.config.doubtful_hand_probability else "no hand"

    def _side_check_due_in_track(self) -> bool:
        return self.config.side_check_every > 0 and (self._side_checked_at is None or self._track_frames - self._side_checked_at >= self._side_check_interval)

    def _space_side_checks(self, confidence: dict[Handedness, float]) -> None:
        """After a side check (each side's fit's agreement with the depth): the frames to
        the next, doubled where it bore out the side the track had decided, else back to
        the shortest (``TrackerConfig.side_check_every_at_most``). A check with no evidence
        (neither fit usable, or both alike) leaves them as they were."""
        right, left = confidence[Handedness.RIGHT], confidence[Handedness.LEFT]
        if max(right, left) <= 0.0 or right == left:
            return
        found = Handedness.RIGHT if right > left else Handedness.LEFT
        if self._side_vote.side == found:
            self._side_check_interval = min(2 * self._side_check_interval, self.config.side_check_every_at_most)
        else:
            self._side_check_interval = self.config.side_check_every

    def _resumable(self, frame: DepthFrame, centre: np.ndarray, ended_tracks: list[_EndedTrack] | None = None) -> _EndedTrack | None:
        """The lost track a track that begins with ``frame``, its hand at ``centre``, would
        take up (``TrackerConfig.resume_side_within_ms``): of those (``ended_tracks``, by
        default the ones kept) that ended within that time and near enough, the nearest."""
        window_ms = self.config.resume_side_within_ms
        if self.config.handedness is not None or window_ms <= 0:
            return None
        best, best_distance = None, self.config.new_track_jump_m
        for ended in self._ended if ended_tracks is None else ended_tracks:
            if ended.center is None or ended.position is None:
                continue
            if frame.timestamp_ms == 0.0 and ended.position.timestamp_ms == 0.0:
                continue  # frames without a clock: how long the hand was gone is unknown
            distance = float(np.linalg.norm(centre - ended.center))
            soon = abs(frame.timestamp_ms - ended.position.timestamp_ms) <= window_ms
            if soon and distance <= best_distance and self.follows(ended.position, frame):
                best, best_distance = ended, distance
        return best

    def _resume_side(self, frame: DepthFrame, centre: np.ndarray) -> None:
        """On a track's first frame: take up the side vote of a track lost just before near
        it, where there is one to take up (``_resumable``)."""
        ended = self._resumable(frame, centre)
        # The others stay, until they are too old to take up: a hand lost while this one
        # was found elsewhere may come back.
        window_ms = self.config.resume_side_within_ms
        self._ended = [
            other for other in self._ended if other is not ended and other.position is not None and abs(frame.timestamp_ms - other.position.timestamp_ms) <= window_ms
        ]
        if ended is not None:
            # The side checks go on as they were due: a check on the frame the hand is found
            # again, often in the pose it was lost in, fits both sides badly.
            self._side_vote, self._side = ended.vote, ended.side
            self._track_frames, self._side_checked_at = ended.track_frames, ended.side_checked_at
            self._side_check_interval = ended.side_check_interval

    def _jumped(self, centre: np.ndarray) -> bool:
        """Whether the hand found at ``centre`` is too far from the last one begun to be the same."""
        return self._begun_center is not None and bool(np.linalg.norm(centre - self._begun_center) > self.config.new_track_jump_m)

    def side_check_due(self, frame: DepthFrame, prepared: Prepared) -> bool:
        """Whether beginning ``frame`` would check its side (``TrackerConfig.side_check_every``)
        if the backend were free: no other frame's network in flight. A run that keeps two
        networks in flight (``run_pipeline``) completes the frames begun before such a frame,
        so that the check is made where one at a time makes it. True may be a frame the hand
        presence then turns down: no harm, the frames before are only completed sooner."""
        if self.config.handedness is not None or self.config.side_check_every <= 0 or prepared.centre is None:
            return False
        if not self.follows(self._last_frame, frame):
            return True  # a new track, and nothing carries over a break in the stream
        if self._jumped(prepared.centre):
            # A new track, which may take up one lost before the current one began, among
            # those kept once the current one has ended (``_lost``); never the current one,
            # as it jumped from there.
            kept = [*self._ended, None][-_ENDED_TRACKS_KEPT:] if self._side_vote.frames > 0 else self._ended
            ended = self._resumable(frame, prepared.centre, [track for track in kept if track is not None])
            if ended is None:
                return True
        else:
            ended = self._resumable(frame, prepared.centre) if self._track_frames == 0 else None
        if ended is not None:
            return ended.side_checked_at is None or ended.track_frames - ended.side_checked_at >= ended.side_check_interval
        return self._side_check_due_in_track()

    def _side_check(self, frame: DepthFrame, prepared: Prepared):
        """(each side's confidence, each side's network run, milliseconds the check took)
        where a side check is due and the backend is free to run it now (see
        ``TrackerConfig.side_check_every``), else None."""
        if not self._side_check_due_in_track() or getattr(self.estimator.backend, "in_flight", False):
            return None
        self._side_checked_at = self._track_frames
        t0 = time.perf_counter()
        backend = self.estimator.backend
        sides = (Handedness.RIGHT, Handedness.LEFT)
        # A backend that holds two crops gets both at once: the second side's network runs
        # while this thread refits and scores the first.
        both_at_once = int(getattr(backend, "frames_in_flight", 1)) >= 2
        launch_ms, runs, confidence = {}, {}, {}
        try:
            if both_at_once:
                for side in sides:
                    began = time.perf_counter()
                    backend.launch(prepared.crops[side].depth[None, None].astype(np.float32))
                    launch_ms[side] = 1e3 * (time.perf_counter() - began)
            for side in sides:
                crop = prepared.crops[side]
                began = time.perf_counter()
                outputs = backend.collect() if both_at_once else backend.run(crop.depth[None, None].astype(np.float32))
                runs[side] = Launched(crop, launch_ms.get(side, 0.0) + 1e3 * (time.perf_counter() - began), outputs)
                output, _ = self.estimator.complete(runs[side])
                confidence[side] = self.estimator.side_check_agreement(crop, output, frame.intrinsics)
        except BaseException:
            # Nothing of the check may stay queued: the next frame's network would hand back
            # its outputs. (Without ``in_flight``, the crops launched and not collected.)
            left = len(launch_ms) - len(runs)
            while getattr(backend, "in_flight", left > 0):
                left -= 1
                try:
                    backend.collect()
                except Exception:
                    break
            raise
        return confidence, runs, 1e3 * (time.perf_counter() - t0)

    def finish(self, frame: DepthFrame, prepared: Prepared) -> FrameResult:
        """Everything after preparing the frame: side vote, network, refit, tracking state."""
        begun = self.begin(frame, prepared)
        return begun if isinstance(begun, FrameResult) else self.complete(begun)

    def begin(self, frame: DepthFrame, prepared: Prepared) -> FrameResult | _Begun:
        """``finish`` up to the network's start: the result at once when there is no hand
        to run it on, else what ``complete`` takes. Between the two the tracker's state is
        as this frame left it before its network (the track may have been lost)."""
        self._check_open()
        timings: dict[str, float] = dict(prepared.timings_ms)
        if not self._continues_stream(frame):
            self._lost()
            # The next hand may be another one: nothing carries over a break in the stream.
            self._ended = []
        centre = prepared.centre
        if centre is None:
            self._lost()
            return FrameResult(frame, (), timings)
        if self._jumped(centre):
            self._lost()
        judgement = self._hand_judgement(frame, prepared, timings)
        if judgement == "no hand":
            self._lost()
            return FrameResult(frame, (), timings, judged_no_hand=True)
        if self._track_frames == 0:
            self._resume_side(frame, centre)
        self._begun_center, self._begun_position = centre, self._last_frame
        crop, launched = self._crop(frame, prepared, timings)
        return _Begun(frame, centre, launched or self.estimator.start(crop), timings, self._track, self._smoother, judgement == "doubtful")

    def complete(self, begun: _Begun) -> FrameResult:
        """``finish`` from the network's start on: its outputs, the refit, the tracking state.

        Frames are completed in the order they were begun. When a later frame was begun in
        between (``run_pipeline`` with a backend that holds two frames), it may have ended
        the track this frame belongs to: this frame's hand is still reported, smoothed with
        its own track's filter, as one at a time, but the new track does not start from it,
        nor does its failure end the new one. Only when this frame fails does the order
        show: the frame begun after it, in the same track, is reported, smoothed with that
        track's filter and judged by its side vote, but starts no track; the next one is
        found afresh."""
        frame, timings = begun.frame, begun.timings_ms
        output, stage_ms = self.estimator.complete(begun.launched)
        timings.update(stage_ms)
        crop = begun.launched.crop
        current = begun.track == self._track
        refining = None
        if self._refiner is not None:
            t0 = time.perf_counter()
            # Begun before the confidence, so that the last pose's fit, on the refinement's
            # own thread, runs while this one judges the network's fit. A frame completed
            # after a later one ended its track neither starts from nor leaves a pose for
            # the new track.
            last = self._last_pose if current and self._last_pose is not None and self._last_pose.handedness == crop.handedness else None
            size = (frame.intrinsics.width, frame.intrinsics.height)
            start = None if last is None else self._refiner.start_from_last(last.cam_from_template, last.timestamp_ms, last.previous_palm, last.previous_ms, frame.timestamp_ms)
            refining = self._refiner.start_tracked(crop, output, size, start)
            refine_begun_ms = 1e3 * (time.perf_counter() - t0)
        estimate = self.estimator.to_estimate(crop, output, dict(timings), frame.intrinsics)
        # The stages the estimate itself took (its confidence) are the frame's too.
        timings.update({stage: ms for stage, ms in estimate.timings_ms.items() if stage not in timings})
        min_confidence = max(self.config.min_confidence, self.config.min_confidence_when_doubtful) if begun.doubtful else self.config.min_confidence
        if estimate.confidence < min_confidence:
            if current:
                self._lost()
            # A doubted crop whose fit the depth does not bear out well enough: no hand.
            return FrameResult(frame, (), timings, judged_no_hand=begun.doubtful)
        if current:
            self._previous_center = begun.centre
        if refining is not None:
            # Taken after the confidence, which judges the network's own fit: a refined mesh
            # meets the depth better wherever it is, so judged after refinement, a fit to the
            # wrong thing (a desk under a hand 1 cm above it) could pass (``docs/network.md``).
            t0 = time.perf_counter()
            refined, report = refining.finish()
            if current:
                before = self._last_pose if self._last_pose is not None and self._last_pose.handedness == crop.handedness else None
                self._last_pose = None
                if "cam_from_template" in report:
                    self._last_pose = _RefinedPose(
                        crop.handedness, report["cam_from_template"], frame.timestamp_ms,
                        None if before is None else before.cam_from_template[HandPart.PALM], 0.0 if before is None else before.timestamp_ms,
                    )
            timings["refine"] = refine_begun_ms + 1e3 * (time.perf_counter() - t0)
            uv = project(refined.joints, frame.intrinsics)
            estimate = dataclasses.replace(estimate, joints_cam_m=refined.joints, vertices_cam_m=refined.refined_vertices, joints_uv_px=uv.astype(np.float32))
        if begun.smoother is not None:
            # Joints and mesh through one filter, so the drawn and written mesh stays on the
            # smoothed skeleton rather than jittering around it.
            count = len(estimate.joints_cam_m)
            both = np.concatenate([estimate.joints_cam_m, estimate.vertices_cam_m])
            both = begun.smoother(both, frame.timestamp_ms / 1e3).astype(np.float32)
            joints, vertices = both[:count], both[count:]
            uv = project(joints, frame.intrinsics)
            estimate = dataclasses.replace(estimate, joints_cam_m=joints, vertices_cam_m=vertices, joints_uv_px=uv.astype(np.float32))
        return FrameResult(frame, (estimate,), timings)


#: Ended tracks a new one may take up (``HandTracker._ended``): more than a run of brief
#: mistaken tracks between a hand's loss and its return within the time allowed.
_ENDED_TRACKS_KEPT = 4


class _EndedTrack(NamedTuple):
    """A track that ended with a side vote: the vote, the side it reported, its frames and
    last side check and the frames to the next (as ``HandTracker`` counts them), and the hand centre and stream
    position of its last frame begun (``HandTracker._resume_side``)."""

    vote: SideVote
    side: Handedness | None
    track_frames: int
    side_checked_at: int | None
    side_check_interval: int
    center: np.ndarray | None
    position: "_StreamPosition | None"


class _RefinedPose(NamedTuple):
    """A frame's refined hand: its side, its parts' poses ((P, 4, 4) float64
    camera_from_template, ``Refiner.refine``'s ``cam_from_template``) and the frame's
    timestamp (ms); and of the track's frame before, where it was refined on the same side,
    the palm's pose ((4, 4) float64 camera_from_template) and timestamp: how the hand was
    moving (``Refiner.start_from_last``)."""

    handedness: Handedness
    cam_from_template: np.ndarray
    timestamp_ms: float
    previous_palm: np.ndarray | None
    previous_ms: float


class _StreamPosition(NamedTuple):
    """Where a frame stands in its stream: what ``HandTracker.follows`` compares."""

    serial: str
    frame_number: int
    timestamp_ms: float
    sequence: str


@dataclass(frozen=True)
class _Begun:
    """A frame whose network was started (``HandTracker.begin``): the hand centre it was
    found at (camera frame, m), the started network run, the frame's timings so far, the
    track it was begun in (``HandTracker._track``) and that track's smoothing filter
    (None without smoothing)."""

    frame: DepthFrame
    centre: np.ndarray
    launched: Launched
    timings_ms: dict[str, float]
    track: int
    smoother: OneEuroFilter | None
    #: The hand presence doubted it (``TrackerConfig.doubtful_hand_probability``).
    doubtful: bool = False


class _FrameHandover:
    """What the capture thread's hand-overs to the tracker share: the lock and wake-up, the
    frames dropped since the last one taken, and how the input ended."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.dropped = 0
        self.finished = False
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None = None) -> None:
        with self.condition:
            # A stop request after the input failed must not erase the failure.
            self.finished, self.error = True, self.error or error
            self.condition.notify_all()


class _FrameSlot(_FrameHandover):
    """Hands frames from the capture thread to the tracker.

    ``drop_old``: keep only the newest frame (live); otherwise the producer waits while
    ``capacity`` frames are waiting (as-fast-as-possible playback loses nothing). Room for
    more than one lets the capture thread read ahead whenever it holds the interpreter
    lock, so that the tracker may find its next frame waiting rather than hand the lock
    over and wait for the frame to be read (``PLAYBACK_READ_AHEAD``).
    """

    def __init__(self, drop_old: bool, capacity: int = 1) -> None:
        if capacity < 1 and not drop_old:  # live, it holds one frame whatever is asked
            raise ValueError(f"a frame slot holds at least one frame, not {capacity}")
        super().__init__()
        self.drop_old = drop_old
        self.capacity = 1 if drop_old else capacity
        self.frames: deque[DepthFrame] = deque()

    def put(self, frame: DepthFrame, stop: threading.Event, arrival: dict, lost_before: int = 0) -> None:
        """Offer a frame; its arrival time is when it is offered. A live camera offers each
        frame as it comes; playback as fast as possible offers the next one as soon as there
        is room, so its frames wait here while the ones before are processed.
        ``lost_before``: frames the input lost just before this one (never offered)."""
        with self.condition:
            self.dropped += lost_before
            if not self.drop_old:
                while len(self.frames) >= self.capacity and not stop.is_set():
                    self.condition.wait(0.1)
            elif self.frames:
                arrival.pop(id(self.frames.popleft()), None)
                self.dropped += 1
            self.frames.append(frame)
            arrival[id(frame)] = time.perf_counter()
            self.condition.notify_all()

    def take(self) -> tuple[DepthFrame | None, int]:
        """Next frame and how many were dropped before it; (None, n) at the end."""
        with self.condition:
            while not self.frames and not self.finished:
                self.condition.wait(0.1)
            frame = self.frames.popleft() if self.frames else None
            dropped, self.dropped = self.dropped, 0
            self.condition.notify_all()
            return frame, dropped


class _LiveAhead(_FrameHandover):
    """Live frames prepared (``tracker.prepare``) by one worker process as they arrive: the
    live counterpart of ``_FrameSlot``, with the frame-preparing worker behind it.

    Prepared on the tracker thread, a live frame's segmentation waits for the network of
    the frame before it, and the second core idles while the network runs on the first.
    Here the capture thread sends each frame to the worker the moment it arrives if the
    worker is free, so that it is segmented while the tracker thread runs the network on
    the frame before. One arriving while the worker is busy waits, the newest only (an
    older one waiting is dropped, as ``_FrameSlot`` drops it), and goes to the worker once
    the tracker has taken the worker's answer. At most one frame is with the worker, so
    each answer is of the newest frame there was when the worker became free. The prior a
    frame is segmented around is the tracker's when the frame is sent (``prior_for``).

    ``take`` gives the frame with the worker, ``receive`` its preparation. A failure to
    hand a frame to the worker (the worker gone, no shared memory) is raised by ``take``
    in the tracker thread, not taken for an input error. ``PrepareWorkers`` is used from
    two threads here, but never at once: a frame is sent only while none is with the
    worker (by the capture thread) or once its answer is in (by ``receive``).
    """

    def __init__(self, workers: PrepareWorkers, prior_for) -> None:
        super().__init__()
        self._workers, self._prior_for = workers, prior_for
        # With the worker (at most one), each with the frames dropped before it.
        self._sent: deque[tuple[DepthFrame, int]] = deque()
        self._waiting: DepthFrame | None = None
        self._worker_error: BaseException | None = None
        self._closed = False

    def _send(self, frame: DepthFrame) -> None:
        """To the worker; the caller holds ``condition``."""
        try:
            self._workers.send(frame, self._prior_for(frame))
        except Exception as exc:
            self._worker_error = exc
        else:
            self._sent.append((frame, self.dropped))
            self.dropped = 0

    def put(self, frame: DepthFrame, stop: threading.Event, arrival: dict, lost_before: int = 0) -> None:
        with self.condition:
            self.dropped += lost_before
            if self._closed or self._worker_error is not None:
                return
            arrival[id(frame)] = time.perf_counter()
            if not self._sent:
                self._send(frame)
            else:
                if self._waiting is not None:
                    arrival.pop(id(self._waiting), None)
                    self.dropped += 1
                self._waiting = frame
            self.condition.notify_all()

    def take(self) -> tuple[DepthFrame | None, int]:
        """The frame with the worker and how many were dropped before it; (None, n) at the end."""
        with self.condition:
            while not self._sent and self._worker_error is None and not self.finished:
                self.condition.wait(0.1)
            if self._worker_error is not None:
                raise self._worker_error
            if self._sent:
                return self._sent[0]
            dropped, self.dropped = self.dropped, 0
            return None, dropped

    def receive(self) -> Prepared:
        """The preparation of the frame ``take`` gave; the frame waiting, if any, then goes
        to the worker, before this one's network runs."""
        try:
            prepared = self._workers.receive()
        except BaseException:
            with self.condition:
                self._sent.popleft()
            raise
        with self.condition:
            self._sent.popleft()
            if self._waiting is not None and not self._closed:
                frame, self._waiting = self._waiting, None
                self._send(frame)
        return prepared

    def close(self) -> None:
        """No frame goes to the worker after this (it is closed next)."""
        with self.condition:
            self._closed = True
            self.condition.notify_all()


class _InlineFrames:
    """The tracker thread reads the source itself, with no capture thread (``read_ahead``
    0, playback as fast as possible only): ``_FrameSlot``'s taking side over a plain
    iterator. Where the tracker thread is the limit (a GPU backend with workers preparing
    frames) the capture thread buys nothing, as reading a frame holds the interpreter lock
    either way, and every hand-over between the two threads costs a wake-up and a wait for
    that lock. A frame arrives when it has been read."""

    def __init__(self, source, arrival: dict) -> None:
        # Opened at the first take, where a failure to open is the input error it is (with
        # the source and the outputs closed), as the capture thread's would be.
        self._source, self._frames, self._arrival = source, None, arrival
        self.finished = False
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None = None) -> None:
        self.finished, self.error = True, self.error or error

    def close(self) -> None:
        """Ends the source's generator now (its own clean-up runs), not when it is collected."""
        self.finished = True
        close = getattr(self._frames, "close", None)  # a generator's; a plain iterator has none (nor a source never read)
        if close is not None:
            close()

    def take(self) -> tuple[DepthFrame | None, int]:
        if self.finished:
            return None, 0
        try:
            if self._frames is None:
                self._frames = iter(self._source.frames())
            frame = next(self._frames)
        except StopIteration:
            self.finished = True
            return None, 0
        except BaseException as exc:  # reported as the capture thread's would be
            self.finish(exc)
            return None, 0
        if self.finished:  # a stop request came while it was read: as the capture thread, left unprocessed
            return None, 0
        self._arrival[id(frame)] = time.perf_counter()
        return frame, 0


@dataclass
class RunSummary:
    """What a run did. ``seconds``: from taking the first frame to writing the last one
    (start-up and shutdown left out, so frames / seconds is the processing rate).
    ``latency_ms``: per frame, from its arrival (``_FrameSlot.put``) to its estimate
    written; ``processing_ms``: from the tracker taking it to its estimate written, the
    part of that latency the tracker itself adds."""

    frames: int = 0
    dropped: int = 0
    frames_with_hand: int = 0
    #: Frames whose crop the hand-presence evidence dropped (``FrameResult.judged_no_hand``).
    frames_judged_no_hand: int = 0
    #: Frames whose network ran but whose fit the depth did not bear out well enough
    #: (``TrackerConfig.min_confidence``): no hand reported.
    frames_poorly_fitted: int = 0
    seconds: float = 0.0
    # Packed doubles, 16 bytes a frame for both, not a list of float objects (64): a live
    # session of hours keeps every frame's figures for the percentiles at its end.
    latency_ms: array = field(default_factory=lambda: array("d"))
    processing_ms: array = field(default_factory=lambda: array("d"))
    stopped_by: str = "end of input"
    #: Whether each frame's network began before the frame before it was completed.
    pipelined_networks: bool = False
    error: str | None = None
    #: The input's traceback when it failed with something other than a SourceError.
    error_traceback: str | None = None

    def stats(self) -> dict:
        """Counts and rates; the latency percentiles are None when no frame was processed."""
        lat, processing = np.array(self.latency_ms), np.array(self.processing_ms)
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "frames_with_hand": self.frames_with_hand,
            "frames_judged_no_hand": self.frames_judged_no_hand,
            "frames_poorly_fitted": self.frames_poorly_fitted,
            "seconds": self.seconds,
            "frames_per_second": self.frames / self.seconds if self.seconds > 0 else 0.0,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "processing_ms_p50": float(np.percentile(processing, 50)) if processing.size else None,
            "processing_ms_p99": float(np.percentile(processing, 99)) if processing.size else None,
            "stopped_by": self.stopped_by,
            "error": self.error,
        }


def describe_input_error(error: BaseException) -> str:
    """What stopped the input, in one line: a SourceError's own message (it names the cause
    and what to do), anything else with its type, and never an empty string."""
    text = str(error)
    if isinstance(error, SourceError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_pipeline(
    source,
    tracker: HandTracker,
    sinks: list,
    drop_old_frames: bool,
    max_frames: int | None = None,
    read_ahead: int = PLAYBACK_READ_AHEAD,
    pipeline_networks: bool = True,
) -> RunSummary:
    """Stream ``source`` through ``tracker`` into ``sinks`` until the end, an error or a signal.

    ``read_ahead``: without ``drop_old_frames``, how many frames the capture thread may have
    read and waiting (``_FrameSlot``); 0: no capture thread, the tracker thread reads each
    frame when it needs it (``_InlineFrames``). ``pipeline_networks``: when frames are
    prepared ahead by workers and the backend holds two frames at once (torch-cuda), begin
    each frame's network before completing the frame before it (False: one at a time).
    A frame's begin then sees the track as the frame two before left it, but for the
    new-track jump (``TrackerConfig.new_track_jump_m``), measured from the frame just
    before as ever; a failure of that frame is known only after (``HandTracker.complete``).

    Sink errors propagate; source errors end the run with ``summary.error`` set after every
    frame already received was processed and written. A sink whose ``stop_requested``
    turns true (a viewer window closed) ends the run after the current frame.
    """
    tracker.reset()  # a tracker used for an earlier run starts this one afresh
    opencv_threads = cv2.getNumThreads()  # put back after the run: the caller's own OpenCV keeps its pool
    stop = threading.Event()
    summary = RunSummary()
    arrival: dict[int, float] = {}
    inline = read_ahead == 0 and not drop_old_frames
    # Live with ``segment_ahead``: one worker prepares each frame as it arrives (``_LiveAhead``).
    live_ahead = drop_old_frames and int(getattr(getattr(tracker, "config", None), "segment_ahead", 0)) > 0
    live_workers = None
    slot = _InlineFrames(source, arrival) if inline else _FrameSlot(drop_old_frames, read_ahead)

    def capture() -> None:
        # Live, the camera and the SDK's own queues drop frames too when capture falls
        # behind; those show as gaps in the frame numbers and count as dropped.
        gaps = FrameGaps()
        try:
            for frame in source.frames():
                if stop.is_set():
                    break
                slot.put(frame, stop, arrival, gaps.lost_before(frame) if drop_old_frames else 0)
            slot.finish()
        except BaseException as exc:  # reported by the consumer
            slot.finish(exc)

    def request_stop(signum, _frame) -> None:
        # A signal during shutdown (closing a video, joining the capture thread) does not
        # rewrite why the run ended.
        if not stop.is_set():
            summary.stopped_by = signal.Signals(signum).name
        stop.set()
        slot.finish()

    # Segmenting ahead needs the next frames at hand; waiting for them from a live camera
    # would add frames of latency, so only as-fast-as-possible playback does it (live, a
    # worker prepares each frame as it arrives instead: ``_LiveAhead``).
    workers = 0 if drop_old_frames else int(getattr(getattr(tracker, "config", None), "segment_ahead", 0))
    # A backend whose launch returns before the network has run (a GPU's) lets the next
    # frame's hand-over to a worker overlap it; with one that computes in its launch, the
    # hand-over comes first, so that the worker gets the frame as early as it can.
    backend = getattr(getattr(tracker, "estimator", None), "backend", None)
    overlap = bool(getattr(backend, "asynchronous", False))
    # One that holds two frames takes the next frame's network before the last one's
    # outputs are collected: the GPU then works while this thread does the rest.
    pipelined = pipeline_networks and overlap and workers > 0 and int(getattr(backend, "frames_in_flight", 1)) >= 2
    summary.pipelined_networks = pipelined
    ahead = None

    taken_at: dict[int, float] = {}
    # Segmenting ahead: the last frame sent, and the count of frames the tracker will have
    # begun once it has begun the frame the stream last broke at.
    last_sent = getattr(tracker, "_last_frame", None)
    begun_after_break = 0
    taken_count = 0
    begun_at_start = getattr(tracker, "frames_begun", None)

    def prior_ahead(frame: DepthFrame):
        """The prior ``frame`` is segmented around when sent ahead: the tracker's, unless the
        stream broke at it or after the frame the tracker last began (whose track ends there)."""
        nonlocal last_sent, begun_after_break
        follows = getattr(tracker, "follows", None)
        if follows is not None and begun_at_start is not None:
            if not follows(last_sent, frame):  # this frame is the ``taken_count``-th of the run
                begun_after_break = begun_at_start + taken_count + 1
            last_sent = frame
            if tracker.frames_begun < begun_after_break:
                return None
        return tracker.previous_center

    def take_next():
        """(frame, dropped), the frame sent to be prepared when segmenting ahead, or None at the end."""
        nonlocal taken_count
        frame, dropped = slot.take()
        if frame is None:
            return None
        taken_at[id(frame)] = time.perf_counter()
        if ahead is not None:
            # Sent before the frames in flight finish: the prior is the state after the
            # frame ``workers + 1`` before (``workers + 2`` with an asynchronous backend,
            # whose next frame is sent while the network runs; ``workers + 3`` with two
            # networks in flight), whatever the processes' timing, so runs are reproducible.
            ahead.send(frame, prior_ahead(frame))
        taken_count += 1
        return frame, dropped

    # SIGHUP: the terminal or ssh session went away.
    handlers = SignalHandlers(GROUP_STOP_SIGNALS, request_stop)
    ran_through = False
    thread = None if inline else threading.Thread(target=capture, name="capture", daemon=True)
    first_taken = last_written = None
    try:
        # In here: a signal landing while the handlers go in still closes the source and
        # sinks, and the handlers already replaced are put back.
        handlers.install()
        cv2.setNumThreads(PREPARE_OPENCV_THREADS)

        def stopped_by_group_signal(exc: PrepareWorkerEnded) -> bool:
            """Whether a worker ended by the signal that stops the run (sent to the whole
            process group), rather than failing; the run then stops, the frames still with
            the workers left unprocessed."""
            if stop.is_set():
                return True
            if exc.signal_name not in GROUP_STOP_SIGNALS:
                return False
            if getattr(signal, exc.signal_name) in handlers.previous:
                # Sent to the group, the signal reaches this process too, whose handler may
                # not have run yet. A worker ended by it alone (by hand, by a watchdog) is
                # a failure, not a stop asked for.
                return stop.wait(OWN_STOP_SIGNAL_WAIT_S)
            # No handler of ours to say (a run in another thread, or the signal ignored here
            # as under nohup): taken as the stop it most likely is.
            summary.stopped_by = exc.signal_name
            stop.set()
            return True

        def start_workers(count: int) -> PrepareWorkers | None:
            """``count`` frame-preparing workers; None where a stop came while they started
            (no frame is taken then). In here: a failure to start them still closes the
            source and sinks."""
            try:
                return PrepareWorkers(
                    count,
                    tracker.prepare_config,
                    tracker.side_classifier,
                    getattr(tracker, "prepare_function", prepare_frame),
                    getattr(tracker, "presence", None),
                    stop=stop,
                )
            except PrepareWorkerEnded as exc:  # a Ctrl-C while they started
                if not stopped_by_group_signal(exc):
                    raise
                return None

        if live_ahead:  # started before the capture thread, which hands it the frames
            live_workers = start_workers(1)
            if live_workers is not None:
                slot = _LiveAhead(live_workers, tracker.prior_for)
        if workers > 0:
            ahead = start_workers(workers)
        if thread is not None:
            thread.start()
        in_flight: deque = deque()
        ended = False

        def fill() -> None:
            """Take frames until the current one and, segmenting ahead, the next ``workers``
            are at hand (each sent to a worker as it is taken)."""
            nonlocal ended
            while not ended and len(in_flight) <= workers:
                taken = take_next()
                if taken is None:
                    ended = True
                else:
                    in_flight.append(taken)

        def deliver(result: FrameResult, dropped: int) -> bool:
            """Write one frame's result to the sinks and count it; True when the run ends
            with it (a sink asked to stop, or ``max_frames``)."""
            nonlocal last_written
            frame = result.frame
            result = FrameResult(frame, result.hands, result.timings_ms, dropped, result.judged_no_hand)
            for sink in sinks:
                sink.write(result)
            last_written = time.perf_counter()
            stopping = [sink for sink in sinks if getattr(sink, "stop_requested", False)]
            if stopping:
                summary.stopped_by = getattr(stopping[0], "stop_reason", "viewer closed")
                stop.set()
            now = time.perf_counter()
            arrived = arrival.pop(id(frame), None)
            if arrived is not None:
                summary.latency_ms.append(1e3 * (now - arrived))
            summary.processing_ms.append(1e3 * (now - taken_at.pop(id(frame))))
            summary.frames += 1
            summary.frames_with_hand += bool(result.hands)
            summary.frames_judged_no_hand += result.judged_no_hand
            summary.frames_poorly_fitted += not result.hands and not result.judged_no_hand and "network" in result.timings_ms
            if max_frames is not None and summary.frames >= max_frames:
                summary.stopped_by = "max frames"
                return True
            return bool(stopping)

        def next_frame():
            """(frame, dropped) to process now, or None at the end or on a stop."""
            nonlocal first_taken
            if stop.is_set():
                return None
            fill()
            if not in_flight:
                return None
            frame, dropped = in_flight.popleft()
            if first_taken is None:
                first_taken = time.perf_counter()
            summary.dropped += dropped
            return frame, dropped

        # Begun frames whose network outputs are not yet taken, oldest first (pipelined).
        pending: deque = deque()
        try:
            try:
                if pipelined:
                    # The next frame's network starts before the last one's outputs are taken, so
                    # the GPU works while this thread refits, writes and hands frames over. A
                    # signal's stop still writes the frames begun; a sink's stop or max_frames
                    # does not.
                    side_check_due = getattr(tracker, "side_check_due", None)

                    def deliver_oldest() -> bool:
                        begun, dropped = pending.popleft()
                        return deliver(begun if isinstance(begun, FrameResult) else tracker.complete(begun), dropped)

                    def write_begun() -> None:
                        """Where a worker fails, the frames whose networks ran are written before
                        the failure is raised, as one network at a time writes its frame."""
                        while pending and not deliver_oldest():
                            pass

                    while True:
                        room = max_frames is None or summary.frames + len(pending) < max_frames
                        taken = next_frame() if room else None
                        if taken is not None:
                            try:
                                prepared = ahead.receive()
                            except PrepareWorkerEnded as exc:
                                if stopped_by_group_signal(exc):
                                    continue  # the frames begun are still written
                                write_begun()
                                raise
                            except Exception:  # the worker's own failure on this frame
                                write_begun()
                                raise
                            # A side check runs the network on both sides' crops, one after
                            # the other, with the backend to itself: the frames begun before
                            # are completed first (a pause in the overlap every
                            # ``side_check_every`` frames and at a new track's start).
                            if pending and side_check_due is not None and side_check_due(taken[0], prepared):
                                if any(deliver_oldest() for _ in range(len(pending))):
                                    break  # a sink's stop: this frame is not begun
                            pending.append((tracker.begin(taken[0], prepared), taken[1]))
                            try:
                                fill()  # the next frame to a worker while the networks run
                            except PrepareWorkerEnded as exc:
                                if stopped_by_group_signal(exc):
                                    continue
                                write_begun()
                                raise
                            if len(pending) < 2:
                                continue
                        if not pending:
                            break
                        if deliver_oldest():
                            break
                while not pipelined and (taken := next_frame()) is not None:
                    frame, dropped = taken
                    if live_workers is not None:
                        result = tracker.finish(frame, slot.receive())
                    elif ahead is None:
                        result = tracker.process(frame)
                    elif not overlap:
                        result = tracker.finish(frame, ahead.receive())
                    else:
                        result = tracker.begin(frame, ahead.receive())
                        # While the GPU runs the network, the next frame goes to a worker (its
                        # copy into shared memory and the pipe: a third of the tracker thread's
                        # time on an H200's host). Its prior is the track as this frame left it
                        # before its network, the same on every run.
                        try:
                            fill()
                        except PrepareWorkerEnded as exc:
                            if not stopped_by_group_signal(exc):  # (a stop lets this frame, begun, be written below)
                                # Its network ran: the frame is written before the failure is raised.
                                if not isinstance(result, FrameResult):
                                    result = tracker.complete(result)
                                deliver(result, dropped)
                                raise
                        finally:  # the network's outputs are taken whatever happened meanwhile
                            if not isinstance(result, FrameResult):
                                result = tracker.complete(result)
                    if deliver(result, dropped):
                        break
            finally:
                # Networks started and not written (the run ended early, or failed): their
                # outputs are taken, so that the backend holds nothing for a later run.
                for begun, _ in pending:
                    if not isinstance(begun, FrameResult):
                        try:
                            tracker.estimator.complete(begun.launched)
                        except Exception:  # the run's own ending (or failure) is what is reported
                            pass
        except PrepareWorkerEnded as exc:
            if not stopped_by_group_signal(exc):
                raise
        # An input error met while reading ahead, past the frames asked for, ends nothing.
        if slot.error is not None and summary.stopped_by != "max frames":
            summary.error = describe_input_error(slot.error)
            if not isinstance(slot.error, SourceError):  # a fault in the code, not the input: keep its trace
                summary.error_traceback = "".join(traceback.format_exception(slot.error))
            summary.stopped_by = "input error"
        ran_through = True
    finally:
        stop.set()
        # Each part is closed even when one before it fails (a video must still get its
        # index, a recording its end); the first failure is raised after all of them.
        failures = []

        def close(part) -> None:
            try:
                part.close()
            except Exception as exc:
                failures.append(exc)

        if ahead is not None:
            close(ahead)
        if live_workers is not None:
            close(slot)  # before its worker: the capture thread sends it no more frames
            close(live_workers)
        if inline:
            close(slot)
        close(source)
        if thread is not None and thread.is_alive():
            thread.join(timeout=5.0)
        for sink in sinks:
            close(sink)
        cv2.setNumThreads(opencv_threads)
        handlers.restore()
        if first_taken is not None and last_written is not None:
            summary.seconds = last_written - first_taken
        # A failure to close is raised only when nothing else is on its way out (not
        # sys.exc_info(): called from an except block, that is the caller's exception).
        if failures and ran_through:
            raise failures[0]
    return summary
