"""What a frame needs before the network: the hand centre, the crops, the side and hand logits.

``prepare_frame`` segments a depth frame (``tracker.segment``), cuts the network's crops
around the hand (``tracker.crop``) and asks the crop classifiers about the unmirrored
crop: the side classifier, when the side is decided per track, and the hand-presence
classifier, whether it is a hand at all. None of it reads the tracker's state except the
prior, the last hand centre, so when a recording plays as fast as possible the tracker
hands frames to ``PrepareWorkers``, processes that prepare the next frames while it runs
the network on the current one (``tracker.pipeline``).

This module imports neither torch nor the inference runtimes' network code: a worker
process starts in a fraction of a second.
"""

from __future__ import annotations

import itertools
import multiprocessing
import multiprocessing.connection
import select
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing import shared_memory

import cv2
import numpy as np

from tracker.crop import CROP_SIZE, BackgroundPlane, CropFrame, OutOfImage, make_crop, mirrored, smooth_noise_in
from tracker.lens import pinhole_view
from tracker.segment import SegmentConfig, hand_centre_candidates, hand_near_prior, track_hand_center
from tracker.side_inference import CropClassifier, HandPresence, SideClassifier, classifier_crop
from tracker.types import CameraIntrinsics, DepthFrame, HandCrop, Handedness, depth_to_metres


#: OpenCV threads while frames are prepared, in the tracker's process and in each worker.
#: Segmentation's OpenCV calls (connected components, dilations of a 640x480 mask) are too
#: small for a pool of one thread per core to pay: one thread segmented frames no slower
#: than two even alone on two idle cores, and with several workers beside the network each
#: worker's pool would oversubscribe the cores. On a 16-core GPU machine, with OpenCV's
#: default pool, segmentation took 1.5 times as long as on a 2-core development VM, while
#: the refit, which uses no OpenCV, took the same time on both.
PREPARE_OPENCV_THREADS = 1


@dataclass(frozen=True)
class HandChoiceConfig:
    """How the hand-presence classifier chooses among the places segmentation could put the
    hand (``tracker.segment.hand_centre_candidates``) on a frame with no prior, a track's
    first. The geometric rules take the wrong place on about 2 % of single frames (the
    forearm's end of an arm, a fragment of the other arm in front of the hand), and the
    classifier, which calls such a crop no hand, tells them apart: on 1000 held-out frames
    (``python -m tracker.evaluate``, ``segmentation_centred``) the share of centres more than
    5 cm off fell from 1.7 % to 0.9 % (``docs/network.md``, "Hand or no hand")."""

    #: Other places are looked at only where the first place's hand logit is below this
    #: (sigmoid 0.993), which a plain view of a hand exceeds. 0 others: never.
    recheck_below_logit: float = 5.0
    #: Other places looked at, at most.
    others: int = 3
    #: Another place wins with a logit this much above the first's: the classifier gives
    #: two crops of the same hand a few centimetres apart logits up to ~0.5 apart.
    margin_logit: float = 1.0
    #: ... and at least this logit (sigmoid 0.88). Of arms whose hand is out of view, on
    #: some frames another place scores 1-2, a hand to the tracker, and would start a track
    #: on the arm; a hand's place that the rules passed over scores more as a rule
    #: (``benchmarks/results/confidence_separation_choice_without_floor.json``); at 1 or 0
    #: each hand a third past the image's edge gained costs about one such arm
    #: (``confidence_separation_choice_min_logit1.json``, ``..._min_logit0.json``).
    min_other_logit: float = 2.0
    #: On a tracked frame the others are looked at only where the place segmentation found
    #: gets a logit below this (the classifier leans to "no hand") or lies further from the
    #: last centre than ``PrepareConfig.new_track_jump_m`` (it would end the track), and
    #: only those within that distance of the last centre, by the rule above: a place that
    #: continues the track. Segmentation alone may take an arm's far end for its hand where
    #: the two ends lie far apart in depth, even against the last centre: the track ended
    #: on that frame and was found again on the next, by the classifier, every other frame,
    #: or went on from the arm's end where the classifier did not deny it
    #: (``benchmarks/results/held_still_short_arm.json``). None: never.
    recheck_tracked_below_logit: float | None = 0.0


@dataclass(frozen=True)
class PrepareConfig:
    segment: SegmentConfig
    cube_size_m: float
    #: The side the crop is taken as; None: both crops, and the classifier decides per track.
    handedness: Handedness | None
    #: The network's crop frame (its weights say which); the side classifier always takes
    #: the camera-frame crop it was trained on.
    crop_frame: CropFrame = CropFrame.CAMERA
    #: What the network's crops show past the image's edge (its weights say); each crop
    #: classifier's show what its own manifest says (``classifier_crop``).
    out_of_image: OutOfImage = OutOfImage.FAR
    hand_choice: HandChoiceConfig = HandChoiceConfig()
    #: The network's input size, pixels (its weights say).
    crop_size: int = CROP_SIZE
    #: A wall or table behind the hand cleared from every crop, the network's and the
    #: classifiers' (None: kept).
    background_plane: BackgroundPlane | None = BackgroundPlane()
    #: The tracker's ``new_track_jump_m``: a tracked frame's place further than this from the
    #: last centre ends the track, and another place within it may continue it
    #: (``HandChoiceConfig.recheck_tracked_below_logit``).
    new_track_jump_m: float = 0.12


@dataclass(frozen=True)
class Prepared:
    """One frame made ready for the network.

    centre: (3,) float64 hand centre, camera frame, metres; None when no hand was found.
    crops: the crop of the cube around it per side it may be taken as (both when the side is
        decided per track, else the fixed one); empty without a centre.
    right_logit: the side classifier's logit of "right" on the unmirrored crop; None when
        the side is fixed, or when it was left to the caller (no classifier given).
    timings_ms: segment, crop, side and presence (those that ran), milliseconds; presence
        with the other places the classifier looked at, their segmentation and crops too.
    hand_logit: the hand-presence classifier's logit of "a hand" on the same crop; None when
        it was left to the caller (none given).
    """

    centre: np.ndarray | None
    crops: dict[Handedness, HandCrop]
    right_logit: float | None
    timings_ms: dict[str, float]
    hand_logit: float | None = None


def side_classifier_crop(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    centre: np.ndarray,
    config: PrepareConfig,
    crops: dict[Handedness, HandCrop],
    classifier: CropClassifier,
) -> np.ndarray:
    """(S, S) depth the side (or hand-presence) classifier takes: the unmirrored crop in the
    camera frame, of the cube, size and fill past the image's edge it was trained on; the
    network's own right-hand crop when that is the same crop."""
    cube_size_m = classifier.cube_size_m or config.cube_size_m
    right = crops.get(Handedness.RIGHT)
    if (
        config.crop_frame == CropFrame.CAMERA
        and config.out_of_image == classifier.out_of_image
        and right is not None
        and cube_size_m == config.cube_size_m
        and right.depth.shape == (classifier.crop_size, classifier.crop_size)
    ):
        return right.depth
    return classifier_crop(classifier, depth_m, intrinsics, centre, config.cube_size_m, background_plane=config.background_plane)


def prepare_frame(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    prior: np.ndarray | None,
    config: PrepareConfig,
    classifier: SideClassifier | None = None,
    presence: HandPresence | None = None,
) -> Prepared:
    """Segment (H, W) float32 metres, crop around the hand, classify its side and whether it
    is a hand (see Prepared).

    A stream with a lens model is first resampled onto its pinhole image (``tracker.lens``);
    the centre and crops are exact 3-D either way."""
    t0 = time.perf_counter()
    depth_m, intrinsics = pinhole_view(depth_m, intrinsics)
    hand_logit = None
    presence_ms = 0.0
    places = None
    if prior is None and presence is not None:
        # A track's first frame: the classifier may choose among the places the hand may be.
        centre, hand_logit, presence_ms = likeliest_hand(depth_m, intrinsics, config, presence)
    elif presence is not None and config.hand_choice.recheck_tracked_below_logit is not None:
        # The other places are kept for the classifier, should it deny this one.
        places = hand_centre_candidates(depth_m, intrinsics, config.segment, prior)
        centre = next(places, None)
        if centre is None:
            centre = hand_near_prior(depth_m, intrinsics, prior, config.segment)
    else:
        centre = track_hand_center(depth_m, intrinsics, prior, config.segment)
    t1 = time.perf_counter()
    timings = {"segment": 1e3 * (t1 - t0) - presence_ms}
    if hand_logit is not None:
        timings["presence"] = presence_ms
    if centre is None:
        return Prepared(None, {}, None, timings)
    crops, right_logit, side_depth = _crops_and_side(depth_m, intrinsics, centre, config, classifier, timings)
    if presence is not None and hand_logit is None:
        t3 = time.perf_counter()
        same = (
            side_depth is not None
            and (presence.cube_size_m or config.cube_size_m) == (classifier.cube_size_m or config.cube_size_m)
            and presence.crop_size == classifier.crop_size
            and presence.out_of_image == classifier.out_of_image
        )
        hand_logit = presence.logit(side_depth if same else side_classifier_crop(depth_m, intrinsics, centre, config, crops, presence))
        if places is not None and (
            hand_logit < config.hand_choice.recheck_tracked_below_logit or np.linalg.norm(centre - prior) > config.new_track_jump_m
        ):
            better = _other_place(depth_m, intrinsics, config, presence, places, float(hand_logit), None, prior, config.new_track_jump_m)
            if better is not None:
                centre, hand_logit = better
                crops, right_logit, _ = _crops_and_side(depth_m, intrinsics, centre, config, classifier, {})
        timings["presence"] = 1e3 * (time.perf_counter() - t3)
    return Prepared(centre, crops, right_logit, timings, hand_logit)


def _crops_and_side(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    centre: np.ndarray,
    config: PrepareConfig,
    classifier: SideClassifier | None,
    timings: dict[str, float],
) -> tuple[dict[Handedness, HandCrop], float | None, np.ndarray | None]:
    """The network's crops around ``centre`` (see Prepared), the side classifier's logit and
    the crop it took (None where the side is fixed or no classifier is given); the crop and
    side stages' milliseconds go into ``timings``."""
    t0 = time.perf_counter()
    side = Handedness.RIGHT if config.handedness is None else config.handedness
    crops = {
        side: make_crop(
            depth_m, intrinsics, centre, config.cube_size_m, side, config.crop_size, config.crop_frame, config.out_of_image,
            background_plane=config.background_plane,
        )
    }
    if config.handedness is None:
        crops[Handedness.LEFT] = mirrored(crops[side])
    t1 = time.perf_counter()
    timings["crop"] = 1e3 * (t1 - t0)
    right_logit = None
    side_depth = None
    if config.handedness is None and classifier is not None:
        side_depth = side_classifier_crop(depth_m, intrinsics, centre, config, crops, classifier)
        right_logit = classifier.logit(side_depth)
        timings["side"] = 1e3 * (time.perf_counter() - t1)
    return crops, right_logit, side_depth


def _other_place(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    config: PrepareConfig,
    presence: HandPresence,
    places,
    logit: float,
    sensor: CameraIntrinsics | None = None,
    near: np.ndarray | None = None,
    within_m: float = np.inf,
) -> tuple[np.ndarray, float] | None:
    """(centre, hand logit) of the place among the next ``HandChoiceConfig.others`` of
    ``places`` (those within ``within_m`` of ``near``, where given) that the classifier
    clearly prefers to one given ``logit``, by ``HandChoiceConfig``'s margin and floor; None
    where none is."""
    choice = config.hand_choice
    if choice.others <= 0:
        return None
    if near is not None:
        places = (place for place in places if np.linalg.norm(place - near) <= within_m)
    others = [
        (float(presence.logit(classifier_crop(presence, depth_m, intrinsics, place, config.cube_size_m, sensor, config.background_plane))), place)
        for place in itertools.islice(places, choice.others)
    ]
    best_logit, best = max(others, key=lambda other: other[0], default=(-np.inf, None))
    if best_logit > logit + choice.margin_logit and best_logit >= choice.min_other_logit:
        return best, best_logit
    return None


def likeliest_hand(
    depth_m: np.ndarray, intrinsics: CameraIntrinsics, config: PrepareConfig, presence: HandPresence, sensor: CameraIntrinsics | None = None
) -> tuple[np.ndarray | None, float | None, float]:
    """The hand centre segmentation finds with no prior and its crop's hand logit; where the
    classifier doubts it, the other place it could be that the classifier clearly prefers
    (``HandChoiceConfig``). And the milliseconds spent on the classifier's crops (with
    the other places', segmentation's share of them too).
    ``sensor``: the whole image's intrinsics where ``depth_m`` is a window of it, so that a
    classifier trained with the image's edge marked sees the image's edges and not the
    window's (``make_crop``); a run's frames are whole images."""
    places = hand_centre_candidates(depth_m, intrinsics, config.segment)
    centre = next(places, None)
    if centre is None:
        return None, None, 0.0
    t0 = time.perf_counter()
    logit = float(presence.logit(classifier_crop(presence, depth_m, intrinsics, centre, config.cube_size_m, sensor, config.background_plane)))
    if logit < config.hand_choice.recheck_below_logit:
        better = _other_place(depth_m, intrinsics, config, presence, places, logit, sensor)
        if better is not None:
            centre, logit = better
    return centre, logit, 1e3 * (time.perf_counter() - t0)


def warm_up_preparation(config: PrepareConfig, classifiers=()) -> None:
    """Prepare a blank frame once, so that the first real frame pays none of the one-off
    costs: segmentation's and the crop's numba kernels loaded from their cache (compiled
    there on a run's first use after installation) and each crop classifier's first
    onnxruntime call, which allocates. ``prepare_frame`` itself, whatever a caller prepares
    frames with (a benchmark may replace it with one that keeps its first answer)."""
    size = 32  # segmentation's grid takes every pixel of so small a frame
    blank = np.zeros((size, size), np.float32)
    intrinsics = CameraIntrinsics(size, size, 30.0, 30.0, size / 2, size / 2)
    prepare_frame(blank, intrinsics, None, config, None)
    # An arm reaching in from the image's side, found afresh and then tracked: every
    # segmentation kernel runs (border contact, the arm's ends, the mean-shift, the prior).
    arm = np.zeros((48, 64), np.float32)
    arm[20:28, :50] = 0.5
    arm_intrinsics = CameraIntrinsics(64, 48, 60.0, 60.0, 32.0, 24.0)
    found = prepare_frame(arm, arm_intrinsics, None, config, None).centre
    prepare_frame(arm, arm_intrinsics, found, config, None)
    # A block standing 2 cm out of a wall, one surface with it: the wall's plane is fitted.
    wall = np.full((48, 64), 0.5, np.float32)
    wall[18:30, 26:38] = 0.48
    prepare_frame(wall, arm_intrinsics, None, config, None)
    # The same block out of a body's rounded front, no plane: the plane is grown into it.
    v, u = np.mgrid[:48, :64]
    body = (0.5 + ((u - 32.0) ** 2 + (v - 24.0) ** 2) / 60.0**2 * 0.25 / (2 * 0.25)).astype(np.float32)
    body[18:30, 26:38] = 0.48
    prepare_frame(body, arm_intrinsics, None, config, None)
    # A blank frame has no hand to crop: the crop's hole fill and background plane, on a plane.
    make_crop(np.full((size, size), 0.5, np.float32), intrinsics, np.array([0.0, 0.0, 0.45]), config.cube_size_m, background_plane=BackgroundPlane())
    # A hand far from a stereo camera: a crop's surface noisier than the network learned is
    # smoothed (a plane at 1.4 m, every other pixel 1 cm in front of it and behind it).
    v, u = np.mgrid[: config.crop_size, : config.crop_size]
    smooth_noise_in(np.where((u + v) % 2 == 0, 1.39, 1.41).astype(np.float32))
    for classifier in classifiers:
        if hasattr(classifier, "crop_size"):
            classifier.logit(np.ones((classifier.crop_size, classifier.crop_size), np.float32))


def serve(connection, config: PrepareConfig, prepare=prepare_frame) -> None:
    """A worker process: the first message on ``connection`` is the side and the
    hand-presence classifier, each (ONNX bytes, manifest) as the main process checked them,
    or None. Then each request names a
    shared-memory block holding a (H, W) uint16 depth image, with its shape, depth scale,
    intrinsics (None: those of the request before) and prior; the answer is its
    ``Prepared``, or the exception raised. Ends on None or when the other end closes.
    ``prepare``: what prepares a frame, with ``prepare_frame``'s arguments.

    Ctrl-C and a hang-up reach the whole process group, but only the main process decides
    how a run ends (it finishes the frame at hand and closes the outputs): both are ignored.
    """
    for signum in _HELD_SIGNALS:  # held back since the start (_start_holding_stop_signals)
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)
    cv2.setNumThreads(PREPARE_OPENCV_THREADS)
    intrinsics = None
    try:
        classifier_onnx, presence_onnx = connection.recv()
    except (EOFError, OSError):
        return
    classifier = None if classifier_onnx is None else SideClassifier.from_onnx(*classifier_onnx)
    presence = None if presence_onnx is None else HandPresence.from_onnx(*presence_onnx)
    # While the first frame is on its way: a live one would otherwise wait for this, and
    # the frames behind it be dropped (a few hundred milliseconds of a camera's).
    warm_up_preparation(config, (classifier, presence))
    blocks: dict[str, shared_memory.SharedMemory] = {}
    try:
        while True:
            try:
                request = connection.recv()
            except (EOFError, OSError):
                return
            if request is None:
                return
            try:
                name, shape, depth_scale, sent_intrinsics, prior = request
                # Sent when they change only (once per camera, as a rule): pickling them
                # every frame cost the tracker thread as much as the rest of the request.
                intrinsics = sent_intrinsics if sent_intrinsics is not None else intrinsics
                if name not in blocks:
                    # The main process created the block and unlinks it; attaching only maps it.
                    blocks[name] = shared_memory.SharedMemory(name=name)
                    # The main process keeps two blocks per worker and replaces both when the
                    # frame size changes: older mappings would keep their memory in use.
                    while len(blocks) > 2:
                        blocks.pop(next(iter(blocks))).close()
                # No view of the block outlives this line: the block may be closed and unmapped
                # after it, and a view would then point at nothing.
                depth_m = depth_to_metres(np.ndarray(shape, np.uint16, buffer=blocks[name].buf), depth_scale)
                answer = prepare(depth_m, intrinsics, prior, config, classifier, presence)
            except Exception as exc:  # sent back and raised in the main process
                answer = exc
            connection.send(answer)
    finally:
        for block in blocks.values():
            block.close()


# Signals to the whole process group that the main process takes as a stop (Windows has
# no SIGHUP).
_HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGHUP") if hasattr(signal, name))


def _start_holding_stop_signals(process) -> None:
    """Start ``process`` with Ctrl-C (SIGINT) and SIGHUP held back (blocked) from its first
    instruction: a spawned worker takes half a second to import what it runs, and a Ctrl-C
    to the process group in that time would end it with a traceback of the import. A
    blocked signal stays blocked across the exec and Python's start-up, until ``serve``
    ignores them and lets them through. This thread blocks them only while the process
    starts: one that reaches it then is delivered once the start is done, not lost.

    A start also starts multiprocessing's resource tracker, where nothing in this process
    has yet: the process that unlinks the shared memory left behind by a process that dies.
    It ignores SIGINT and SIGTERM itself but keeps SIGHUP blocked as it was started, so a
    hang-up to the group (the terminal closed) does not end it, and the main process's
    blocks still have it to unlink them should the main process be killed before it does.
    Without ``signal.pthread_sigmask`` (Windows) the worker starts as it would have."""
    if not hasattr(signal, "pthread_sigmask"):
        process.start()
        return
    from multiprocessing import resource_tracker

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        resource_tracker.ensure_running()
        # Launching the tracker unblocks SIGINT (and SIGTERM) in this thread when it is done.
        signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class PrepareWorkerEnded(RuntimeError):
    """A worker process is gone. ``signal_name``: the signal that ended it, if one did.

    A signal sent to the whole process group (``timeout``, ``kill -- -PGID``, a service
    manager stopping the run) ends the workers along with the run; the pipeline treats that
    as the stop request it is, not as a failure.
    """

    def __init__(self, worker: int, exit_code: int | None, what: str | None = None) -> None:
        self.worker, self.exit_code = worker, exit_code
        self.signal_name = None
        if exit_code is not None and exit_code < 0:
            try:
                self.signal_name = signal.Signals(-exit_code).name
            except ValueError:
                self.signal_name = f"signal {-exit_code}"
        super().__init__(f"frame preparation worker {worker} " + (what or f"ended unexpectedly (exit code {exit_code})"))


# How long a worker has to answer once the run is asked to stop: its frame takes
# milliseconds, so one that has not answered by then never will (stopped, hung).
STOP_ANSWER_GRACE_S = 2.0


class SharedMemoryUnavailable(RuntimeError):
    """No shared-memory block could be made to hand a frame to the workers (``/dev/shm`` full
    or too small, as a container's 64 MB default may be, or a limit on file sizes)."""


class _AnswerOrEnd:
    """Waits for a worker's answer (or its pipe's close) or for the worker's end, whichever
    comes first. A ``select.poll`` registered once: ``multiprocessing.connection.wait``
    builds a selector on every call (6 us against 2 us, every frame), and is what is left
    where there is no poll (Windows)."""

    def __init__(self, connection, process) -> None:
        self._connection, self._fd, self._sentinel = connection, connection.fileno(), process.sentinel
        self._poll = None
        if hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)
            self._poll.register(self._sentinel, select.POLLIN)

    def wait(self, timeout_s: float) -> str | None:
        """"answer" (to be received: an answer, or the pipe closed), "end" (the worker ended
        without one) or None when ``timeout_s`` passed with neither."""
        if self._poll is None:
            ready = multiprocessing.connection.wait([self._connection, self._sentinel], timeout=timeout_s)
            return "answer" if self._connection in ready else "end" if ready else None
        ready = {fd for fd, _ in self._poll.poll(timeout_s * 1000)}
        return "answer" if self._fd in ready else "end" if ready else None


class PrepareWorkers:
    """``count`` processes that prepare frames ahead of the tracker, request n in worker
    n % count.

    The depth image goes through shared memory and only a small request through the pipe:
    a frame is larger than a pipe's buffer, so sending it whole would block until the busy
    worker reads it. The calling thread sends and receives itself: with a helper thread
    moving them (as a process pool has), every hand-over waits for the GIL, which the busy
    tracker thread gives up only every few milliseconds. Each worker has two depth buffers,
    used in turn; with at most ``count + 1`` frames in flight, a buffer is written again
    only after the answer to what it last held was received.

    ``classifier``, ``presence``: the tracker's side and hand-presence classifiers; a worker
    makes its own from the same ONNX bytes. One it cannot copy (no ``onnx_bytes``) stays
    with the caller, and the answers leave ``right_logit`` (``hand_logit``) to it; without
    the hand-presence classifier, a worker takes a track's first place as segmentation
    alone finds it (no ``HandChoiceConfig`` choice). ``prepare``: what prepares a frame, with
    ``prepare_frame``'s arguments; a module-level function, which the workers import.
    ``stop``: the run's stop request: once it is set, a worker that does not answer within
    ``STOP_ANSWER_GRACE_S`` is given up (``PrepareWorkerEnded``), so that a hung worker
    cannot hold the run past Ctrl-C.
    """

    def __init__(
        self,
        count: int,
        config: PrepareConfig,
        classifier: SideClassifier | None = None,
        prepare=prepare_frame,
        presence: HandPresence | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self._stop = stop
        self._given_up: set[int] = set()  # workers that did not answer: killed on closing
        onnx = getattr(classifier, "onnx_bytes", None)
        classifier_onnx = None if onnx is None or config.handedness is not None else (onnx, classifier.manifest)
        onnx = getattr(presence, "onnx_bytes", None)
        presence_onnx = None if onnx is None else (onnx, presence.manifest)
        # spawn: the capture thread and the inference runtimes' threads make fork unsafe.
        context = multiprocessing.get_context("spawn")
        self._connections, self._processes = [], []
        self._waits: list[_AnswerOrEnd] = []
        self._buffers: dict[tuple[int, int], tuple[shared_memory.SharedMemory, np.ndarray]] = {}
        self._next_request = self._next_answer = 0
        self._intrinsics_sent: list[CameraIntrinsics | None] = [None] * count
        try:
            for i in range(count):
                ours, theirs = context.Pipe()
                process = context.Process(target=serve, args=(theirs, config, prepare), name=f"prepare-{i}", daemon=True)
                _start_holding_stop_signals(process)
                theirs.close()
                self._connections.append(ours)
                self._processes.append(process)
                self._waits.append(_AnswerOrEnd(ours, process))
            # The classifiers (half a megabyte) through the workers' own pipes, not with what
            # starts them: a Ctrl-C to the process group that ends a worker before it has
            # read what it was started with leaves that write waiting for good (the parent
            # holds the pipe's other end until it is done), while on these pipes the write
            # fails once the worker is gone.
            for i, connection in enumerate(self._connections):
                try:
                    connection.send((classifier_onnx, presence_onnx))
                except OSError:  # a broken pipe: the worker is gone
                    self._processes[i].join(timeout=5.0)
                    raise PrepareWorkerEnded(i, self._processes[i].exitcode) from None
        except BaseException:
            self.close()
            raise

    def _buffer(self, key: tuple[int, int], shape: tuple[int, int]) -> tuple[shared_memory.SharedMemory, np.ndarray]:
        held = self._buffers.get(key)
        if held is not None and held[1].shape == shape:
            return held
        if held is not None:  # another image size: a new block
            del held
            self._release(key)
        size = int(np.prod(shape)) * 2
        try:
            block = shared_memory.SharedMemory(create=True, size=size)
        except OSError as exc:
            raise SharedMemoryUnavailable(
                f"cannot make a {size / 1e6:.1f} MB shared-memory block to hand frames to the frame-preparing worker "
                f"({exc.strerror or exc}): is /dev/shm full or too small? --segment-ahead 0 prepares the frames without one"
            ) from exc
        held = self._buffers[key] = (block, np.ndarray(shape, np.uint16, buffer=block.buf))
        return held

    def _release(self, key: tuple[int, int]) -> None:
        block, image = self._buffers.pop(key)
        del image  # the last view of the block: nothing may point into it once it is unmapped
        block.close()
        block.unlink()

    def send(self, frame: DepthFrame, prior: np.ndarray | None) -> None:
        count = len(self._connections)
        worker, turn = self._next_request % count, (self._next_request // count) % 2
        block, image = self._buffer((worker, turn), frame.depth.shape)
        np.copyto(image, frame.depth)
        intrinsics = None if frame.intrinsics == self._intrinsics_sent[worker] else frame.intrinsics
        try:
            self._connections[worker].send((block.name, frame.depth.shape, frame.depth_scale, intrinsics, prior))
        except OSError:
            raise self._ended(worker) from None
        self._intrinsics_sent[worker] = frame.intrinsics
        self._next_request += 1

    def receive(self) -> Prepared:
        """The answer to the oldest request not yet received."""
        worker = self._next_answer % len(self._connections)
        self._next_answer += 1
        connection = self._connections[worker]
        given_up_at = None
        # Waiting on the worker's end as well as its answer: a worker gone without a word
        # is known at once, and a stop request is looked at between waits.
        while (ready := self._waits[worker].wait(0.1)) != "answer":
            if ready == "end":  # its end alone
                raise self._ended(worker)
            if self._stop is not None and self._stop.is_set():
                given_up_at = given_up_at or time.monotonic() + STOP_ANSWER_GRACE_S
                if time.monotonic() > given_up_at:
                    self._given_up.add(worker)
                    raise PrepareWorkerEnded(worker, None, f"did not answer within {STOP_ANSWER_GRACE_S:g} s of the stop")
        try:
            answer = connection.recv()
        except (EOFError, OSError):
            raise self._ended(worker) from None
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _ended(self, worker: int) -> "PrepareWorkerEnded":
        process = self._processes[worker]
        process.join(timeout=1.0)  # its pipe closes a moment before it can be reaped
        return PrepareWorkerEnded(worker, process.exitcode)

    def close(self) -> None:
        for connection in self._connections:
            try:
                connection.send(None)
            except OSError:  # the worker is gone already
                pass
        for i, process in enumerate(self._processes):
            if i in self._given_up:
                process.kill()
            process.join(timeout=2.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2.0)
            if process.is_alive():  # stopped (SIGSTOP), or deaf to SIGTERM
                process.kill()
                process.join(timeout=2.0)
        for connection in self._connections:
            connection.close()
        for key in list(self._buffers):
            self._release(key)
