"""End-to-end tracking capacity: a recording played as fast as possible through the tracker.

    python -m benchmarks.pipeline_speed [--frames 2000] [--backend onnxruntime] [--input recording|memory]
        [--segment-ahead N] [--replay-network] [--warmup N] [--pace FPS] [--video] [--no-refine]

Builds a .db3 recording of the synthetic moving hand (rs.software_device + rs.recorder),
then runs the whole chain on it, every frame, no viewer: playback -> segment -> crop ->
side vote -> network -> refit -> online refinement (``--no-refine``: none) -> JSON lines.
``--input memory`` plays the same frames from memory instead (the first 500 rendered,
looped), for machines without the RealSense SDK (GPU boxes) or to take the playback out of
the measurement. ``--replay-network``
runs the network once and replays its output, which measures what the CPU stages alone
allow: no backend, however fast, can take the pipeline past that. Reports frames/s (median
over 100-frame windows, and overall), latency (p50/p99) and per-stage medians, all after
the first ``--warmup`` frames (the runtimes' first runs, the workers starting; the tracker
is warmed up before the run, as ``run_tracker.py`` warms it up, so that a cold numba cache
is compiled before it), and the resident memory at the start and end of the run (growth over all the
frames). Two latencies: from the frame's arrival to its estimate written, which here
includes waiting for the frame before it (played as fast as possible, each frame arrives
as soon as the one before is taken: latency at saturation), and from the tracker taking
the frame to its estimate written (``processing_ms``). A run that ends before every frame
is processed (a signal, an input error) writes no result and exits with status 1.

``--pace FPS`` measures live use instead of capacity: the frames from memory arrive at a
camera's rate, the tracker keeps only the newest (as with a camera: no segmenting ahead
unless ``--segment-ahead 1`` asks for the live worker, frames it cannot keep up with are
dropped and counted), and the latency that matters is reported, from the moment each frame
was due to its estimate written. That includes the wait for the capture thread to be
scheduled, which the arrival figure does not.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import math
import multiprocessing
import os
import pstats
import resource
import sys
import tempfile
import time
from array import array
from collections import deque
from pathlib import Path

import numpy as np

from benchmarks import check_output_path, write_result
from tracker.machine import machine_info
from tracker.sources import FrameSource, RecordingSource, SyntheticSource, write_recording

RESULTS = Path(__file__).resolve().parent / "results"


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def workers_rss_mb() -> float:
    """Resident size of the frame-preparation worker processes together (0 without any)."""
    total = 0.0
    for child in multiprocessing.active_children():
        try:
            total += rss_mb(child.pid)
        except OSError:  # ended between the listing and the read
            pass
    return total


def _measured(values) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return values[~np.isnan(values)]


class _Probe:
    """A sink that records when each frame was finished and the stage timings."""

    def __init__(self) -> None:
        # Packed doubles per stage rather than each frame's timings dict (about 0.5 kB a
        # frame, 5 MB over 10,000 frames): the probe must not be what the memory figure sees.
        self.done = array("d")
        # The tracker thread's own CPU time (the probe runs in it) when each frame was
        # finished: what that thread costs a frame whatever waits it had between.
        self.thread_cpu = array("d")
        self.frame_numbers = array("q")
        self.stage_ms: dict[str, array] = {}
        self.frames = 0
        self.rss: list[float] = []
        self.workers_rss: list[float] = []

    def write(self, result) -> None:
        self.done.append(time.perf_counter())
        self.thread_cpu.append(time.thread_time())
        self.frame_numbers.append(result.frame.frame_number)
        for stage, ms in result.timings_ms.items():
            if stage not in self.stage_ms:  # first seen late (side, only with a hand): NaN before
                self.stage_ms[stage] = array("d", [math.nan]) * self.frames
            self.stage_ms[stage].append(ms)
        self.frames += 1
        for stage, values in self.stage_ms.items():
            if len(values) < self.frames:
                values.append(math.nan)
        if len(self.done) % 100 == 0:
            self.rss.append(rss_mb())
            self.workers_rss.append(workers_rss_mb())

    def close(self) -> None:
        pass


class _ReplayedNetwork:
    """A backend that runs the real one once and then returns that output every frame, so
    that the pipeline's capacity without the network's cost can be measured.

    ``asynchronous``: launch and collect as a GPU backend does, so that the tracker thread
    takes the path it takes with one (the next frame handed to a worker between the two),
    with two frames in flight as torch-cuda holds them. ``gpu_ms``: then each network's
    outputs are ready that long after it could start, one network at a time, as on a GPU
    whose forward takes that long: what the tracker thread does meanwhile is what overlaps.
    """

    def __init__(self, backend, asynchronous: bool = False, gpu_ms: float = 0.0) -> None:
        self.backend, self.name, self.output = backend, f"{backend.name} (replayed)", None
        self.manifest = getattr(backend, "manifest", None)  # the crop frame and hand model it was trained with
        self.crop_size = backend.crop_size
        self.asynchronous = asynchronous
        self.frames_in_flight = 2 if asynchronous else 1
        self.gpu_seconds = gpu_ms / 1e3
        self._queued: deque[tuple[dict[str, np.ndarray], float]] = deque()  # outputs, when they are ready
        self._gpu_free_at = 0.0

    def _replayed(self, depth: np.ndarray) -> dict[str, np.ndarray]:
        if self.output is None:
            self.output = self.backend.run(depth)
        return {name: value.copy() for name, value in self.output.items()}

    def run(self, depth: np.ndarray) -> dict[str, np.ndarray]:
        """One network at once, as the GPU would give it (the tracker's side checks)."""
        if not self.asynchronous:
            return self._replayed(depth)
        self.launch(depth)
        return self.collect()

    @property
    def in_flight(self) -> bool:
        """Whether a launched network's outputs are still to be collected (as torch-cuda says)."""
        return bool(self._queued)

    def launch(self, depth: np.ndarray) -> None:
        outputs = self._replayed(depth)
        if len(self._queued) == self.frames_in_flight:  # as torch-cuda: the oldest is dropped
            self._queued.popleft()
        start = max(time.perf_counter(), self._gpu_free_at)
        self._gpu_free_at = start + self.gpu_seconds
        self._queued.append((outputs, self._gpu_free_at))

    def collect(self) -> dict[str, np.ndarray]:
        if not self._queued:
            raise RuntimeError(f"{self.name}: collect() without a launch() before it")
        outputs, ready = self._queued.popleft()
        # Sleep through most of the wait and spin the rest, as a GPU's synchronisation
        # returns within microseconds of the work's end.
        if (wait := ready - time.perf_counter()) > 3e-4:
            time.sleep(wait - 2e-4)
        while time.perf_counter() < ready:
            pass
        return outputs

    def close(self) -> None:
        self.backend.close()


_first_preparation = None


def _replayed_preparation(depth_m, intrinsics, prior, config, classifier=None, presence=None):
    """``prepare_frame`` run on a process's first frame only, whose answer is returned for
    every later one: with the network replayed too, what is left is the tracker thread's
    own work and the hand-overs, the frame to a worker and its answer back, still paid.
    Module-level, so that worker processes can import it; each keeps its own answer."""
    global _first_preparation
    if _first_preparation is None:
        from tracker.prepare import prepare_frame

        _first_preparation = prepare_frame(depth_m, intrinsics, prior, config, classifier, presence)
    return _first_preparation


class _LoopedFrames(FrameSource):
    """Pre-rendered frames played from memory, looped and renumbered: as fast as taken, or
    with ``pace_fps`` each at its due time, as a camera delivers them (``due``: when each
    was due, ``time.perf_counter`` seconds)."""

    light_to_read = True  # nothing to decode: as a recording is read

    def __init__(self, frames: list, total: int, pace_fps: float | None = None) -> None:
        super().__init__()
        self._frames, self.total, self.pace_fps = frames, total, pace_fps
        self.due = array("d")
        pace = "" if pace_fps is None else f", arriving at {pace_fps:g} frames/s"
        self.description = f"{len(frames)} synthetic frames in memory, looped to {total}{pace}"

    def frames(self):
        start = time.perf_counter()
        for i in range(self.total):
            if self.closed:
                return
            if self.pace_fps is not None:
                due = start + i / self.pace_fps
                self.due.append(due)
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            frame = self._frames[i % len(self._frames)]
            yield dataclasses.replace(frame, frame_number=i, timestamp_ms=i * 1000.0 / (self.pace_fps or 30.0))


def _paced_figures(probe: _Probe, source: _LoopedFrames, warmup: int, segment_ahead: int) -> dict:
    """Live use: latency from each processed frame's due time, and the share dropped, over
    the frames due after the first ``warmup``."""
    numbers = np.array(probe.frame_numbers)
    done = np.array(probe.done)
    due = np.array(source.due)
    timed = numbers >= warmup
    from_due = 1e3 * (done[timed] - due[numbers[timed]])
    offered = len(due) - warmup
    return {
        "pace_frames_per_second": source.pace_fps,
        "live_note": "frames arrive at the pace and the tracker keeps the newest, as from a camera: "
        + ("a worker process segments each frame as it arrives, " if segment_ahead else "no segmenting ahead, ")
        + "and frames it cannot keep up with are dropped",
        "frames_processed_after_warmup": int(timed.sum()),
        "frames_offered_after_warmup": int(offered),
        "dropped_share_after_warmup": float(1.0 - timed.sum() / offered) if offered > 0 else None,
        "latency_from_due_ms_p50": float(np.percentile(from_due, 50)) if from_due.size else None,
        "latency_from_due_ms_p99": float(np.percentile(from_due, 99)) if from_due.size else None,
    }


def _write_profile(profiler: cProfile.Profile, path: Path, frames: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        handle.write(f"cProfile of the tracker's thread over a run of {frames} frames (with the profiler's overhead)\n")
        stats = pstats.Stats(profiler, stream=handle)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)


def default_result_path(args: argparse.Namespace) -> Path:
    """Where a run's result goes without ``--out``: a file per kind of run."""
    suffix = ("" if args.input == "recording" else "_memory") + ("_replayed_network" if args.replay_network else "") + ("_as_gpu" if args.replay_as_gpu else "") + ("_replayed_preparation" if args.replay_preparation else "")
    if args.replay_gpu_ms:
        suffix += f"_gpu{args.replay_gpu_ms:g}ms"
    if args.one_network_at_a_time:
        suffix += "_one_network_at_a_time"
    if args.segment_ahead is not None:  # not the tracker's own choice: a file of its own
        suffix += f"_ahead{args.segment_ahead}"
    if args.read_ahead is not None:  # the same
        suffix += f"_read_ahead{args.read_ahead}"
    if args.side_check_every is not None:
        suffix += f"_side_check_every{args.side_check_every}"
    if args.pace is not None:
        suffix += f"_paced{args.pace:g}"
    if args.video:
        suffix += "_video"
    if not args.refine:
        suffix += "_no_refine"
    return RESULTS / f"pipeline_speed_{args.backend}{suffix}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames played: the recording's length, or with --input memory the frames looped through (default %(default)s)")
    parser.add_argument("--backend", default="onnxruntime", help="onnxruntime | onnxruntime-int8 | torch | torch-cuda | tensorrt (default %(default)s)")
    parser.add_argument(
        "--segment-ahead", type=int, default=None, metavar="N",
        help="segment the next N frames in N worker processes beside the network "
        "(default: as the tracker does, 1 with onnxruntime on 3+ cores, 0 with torch on the CPU, up to 3 on GPU backends); "
        "with --pace: 0 (the default) or 1, the live worker that segments each frame as it arrives",
    )
    parser.add_argument(
        "--replay-network", action="store_true",
        help="run the backend's network on the first crop only and replay that output for every later frame: "
        "what the CPU stages alone allow, the ceiling for any backend, a GPU one included",
    )
    parser.add_argument(
        "--replay-preparation", action="store_true",
        help="with --replay-network: prepare (segment, crop, side) each process's first frame only and hand back that "
        "answer for every later frame, the frames still sent to the workers and the answers received: what the tracker "
        "thread alone allows, as on a GPU machine with workers to spare",
    )
    parser.add_argument(
        "--replay-gpu-ms", type=float, default=0.0, metavar="MS",
        help="with --replay-as-gpu: each replayed network's outputs are ready MS after it could start, one at a time, "
        "as on a GPU whose forward takes MS (torch-cuda on an H200: 0.84); default 0",
    )
    parser.add_argument(
        "--one-network-at-a-time", action="store_true",
        help="complete each frame before beginning the next one's network, even on a backend that holds two "
        "(tracker.pipeline.run_pipeline's pipeline_networks=False)",
    )
    parser.add_argument(
        "--replay-as-gpu", action="store_true",
        help="with --replay-network: the replayed network launches and collects as a GPU backend's does "
        "(default: as the backend's own does), so that the tracker thread takes a GPU backend's path; "
        "the figure to watch is tracker_thread_cpu_ms_per_frame",
    )
    parser.add_argument(
        "--input", choices=["recording", "memory"], default="recording",
        help="play a .db3 recording (default) or pre-rendered frames from memory (no RealSense SDK needed)",
    )
    parser.add_argument(
        "--warmup", type=int, default=None, metavar="N",
        help="frames left out of the speed figures (default 100, or a fifth of --frames if that is fewer)",
    )
    parser.add_argument(
        "--read-ahead", type=int, default=None, metavar="N",
        help="frames the capture thread may have read and waiting for the tracker; 0: no capture thread, the tracker's "
        "thread reads each frame itself (default: as the tracker does, tracker.pipeline.default_read_ahead: 0 on a GPU backend with "
        "workers, which both inputs here allow, else 1)",
    )
    parser.add_argument(
        "--side-check-every", type=int, default=None, metavar="N",
        help="check the hand's side on a track's first frame and N frames after, by running the network as both "
        "sides, then further apart while the checks agree (default: as the tracker does, TrackerConfig.side_check_every "
        "and side_check_every_at_most; 0: never, as with --hand left|right)",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="FILE",
        help="also write where the tracker's thread spent the run's time (cProfile of the run alone, not the set-up; "
        "the capture thread and worker processes are not in it): the top functions by own and by total time",
    )
    parser.add_argument(
        "--pace", type=float, default=None, metavar="FPS",
        help="live use rather than capacity: frames arrive at FPS frames/s (with --input memory) and the tracker keeps "
        "the newest, as from a camera; reports the latency from each frame's due time and the frames dropped",
    )
    parser.add_argument(
        "--video", action="store_true",
        help="also write the overlay video (depth colour map, mesh, skeleton; 30 frames/s, into a temporary file), "
        "as run_tracker.py --video does",
    )
    parser.add_argument(
        "--refine", action=argparse.BooleanOptionalAction, default=True,
        help="track with the online refinement, as run_tracker.py does by default (--no-refine: without it, segment to refit and output alone)",
    )
    parser.add_argument(
        "--weights", type=Path, default=None, metavar="DIR",
        help="network weights directory, with its own classifiers where it has them, as run_tracker.py --weights takes it "
        "(default: the shipped weights/; another needs --out)",
    )
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/pipeline_speed_<backend>[_memory][_replayed_network][_as_gpu][_replayed_preparation][_gpuMSms][_one_network_at_a_time][_aheadN][_read_aheadN][_side_check_everyN][_pacedFPS][_video][_no_refine].json)")
    args = parser.parse_args(argv)
    # Imported here, not at the top: segmentation worker processes import this module again
    # when they start, and need none of torch, numba or the inference runtimes.
    from tracker.backends import BACKENDS, BackendUnavailable, create_backend

    if args.frames < 1:
        parser.error("--frames must be at least 1")
    if (args.replay_as_gpu or args.replay_preparation) and not args.replay_network:
        parser.error("--replay-as-gpu and --replay-preparation need --replay-network")
    if args.replay_gpu_ms and not args.replay_as_gpu:
        parser.error("--replay-gpu-ms needs --replay-as-gpu")
    if not (math.isfinite(args.replay_gpu_ms) and args.replay_gpu_ms >= 0):
        parser.error("--replay-gpu-ms must be a number of milliseconds, 0 or more")
    if args.read_ahead is not None and args.read_ahead < 0:
        parser.error("--read-ahead must be at least 0")
    if args.side_check_every is not None and args.side_check_every < 0:
        parser.error("--side-check-every must be 0 (never) or more")
    if args.pace is not None:
        if not (math.isfinite(args.pace) and args.pace > 0):
            parser.error("--pace must be a positive number of frames per second")
        if args.input != "memory":
            parser.error("--pace needs --input memory (a recording plays at its own recorded rate)")
        if args.read_ahead is not None:
            parser.error("--pace measures live use, which keeps only the newest frame: --read-ahead does not apply")
        if args.segment_ahead is not None and args.segment_ahead > 1:
            parser.error("--pace measures live use, where at most one worker prepares the frames: --segment-ahead 0 or 1")
    # Before the synthetic frames are rendered, which loads the machine itself.
    load_before = os.getloadavg()[0]
    if args.backend not in BACKENDS:
        parser.error(f"unknown backend {args.backend!r}; choose one of: {', '.join(BACKENDS)}")
    if args.segment_ahead is not None and args.segment_ahead < 0:
        parser.error("--segment-ahead must be >= 0")
    warmup = min(100, args.frames // 5) if args.warmup is None else args.warmup
    if not 0 <= warmup < args.frames:
        parser.error("--warmup must be at least 0 and fewer than --frames")
    if args.weights is not None and args.out is None:
        # The default result files are the shipped weights' runs, which the docs quote.
        parser.error("--weights needs --out (the default result files hold runs of the shipped weights)")
    out = args.out or default_result_path(args)
    if args.out is None and out.is_file():
        # The docs quote the committed results: a shorter run (a quick look) goes elsewhere.
        try:
            committed = json.loads(out.read_text()).get("frames_requested")
        except (OSError, ValueError, AttributeError):  # unreadable, damaged, not a result: nothing to keep
            committed = None
        if isinstance(committed, int) and args.frames < committed:
            parser.error(
                f"{out} holds a run of {committed} frames, which the docs cite; a run of {args.frames} would replace it: "
                f"add --out FILE for a check, or run --frames {committed} (or more) to renew it"
            )
    for flag, path in (("--out", out), ("--profile", args.profile)):
        if path is not None:
            check_output_path(parser, flag, path)
    from tracker.estimator import HandEstimator
    from tracker.hand_model import HandModel
    import cv2

    from tracker.pipeline import HandTracker, TrackerConfig, backend_options, default_read_ahead, default_segment_ahead, run_pipeline
    from tracker.prepare import PREPARE_OPENCV_THREADS
    from tracker.sinks import JsonLinesSink
    from tracker.synth.dataset import config_to_dict
    import torch

    from tracker.hand_model import HandModelError
    from tracker.sources import SourceError
    from tracker.weights import WEIGHTS_DIR, WeightsError, crop_classifiers, crop_frame_of, load_manifest

    # Weights and backend first: a missing runtime or damaged weights fail before the
    # frames are rendered, not after.
    backend = None
    try:
        hand_model = HandModel.load()
        weights = args.weights or WEIGHTS_DIR
        manifest = load_manifest(weights)
        # Live, as the tracker runs a camera: no workers unless the live one is asked for
        # (--segment-ahead 1), and the backend set up for what there is.
        ahead = (0 if args.pace is not None else default_segment_ahead(args.backend)) if args.segment_ahead is None else args.segment_ahead
        config = TrackerConfig(cube_size_m=manifest["cube_size_m"], crop_frame=crop_frame_of(manifest), segment_ahead=ahead)
        if args.side_check_every is not None:
            # A first interval longer than the tracker's longest makes that the longest too.
            at_most = max(config.side_check_every_at_most, args.side_check_every)
            config = dataclasses.replace(config, side_check_every=args.side_check_every, side_check_every_at_most=at_most)
        config = dataclasses.replace(config, refine=args.refine)
        backend = create_backend(args.backend, weights, **backend_options(args.backend, ahead))
        estimator = HandEstimator(backend, hand_model)  # checks the weights were made for this hand model
        classifiers = crop_classifiers(weights, None, config.min_hand_probability)
    except (HandModelError, WeightsError, BackendUnavailable) as exc:
        if backend is not None:  # made, but the weights do not fit this hand model
            backend.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = SyntheticSource(seed=0, max_frames=args.frames, hand_model=hand_model)
        if args.input == "recording":
            recording = Path(tmp) / "hand.db3"
            print(f"recording {args.frames} synthetic frames ...")
            try:
                write_recording(recording, synthetic.frames(), pace=False)
            except SourceError as exc:
                backend.close()
                print(f"error: {exc} (--input memory measures without a recording)", file=sys.stderr)
                return 2
            source = RecordingSource(recording, realtime=False)
        else:
            print(f"rendering {min(args.frames, 500)} synthetic frames ...")
            source = _LoopedFrames([synthetic.render(i)[0] for i in range(min(args.frames, 500))], args.frames, args.pace)
        # What the figures depend on besides the backend: its intra-op threads (onnxruntime
        # sizes them to the physical cores) and torch's.
        threads = {
            "backend": getattr(backend, "threads", None), "torch": torch.get_num_threads(),
            # OpenCV's pool as the machine sizes it, and what frame preparation uses instead.
            "opencv_default": cv2.getNumThreads(), "opencv_preparing_frames": PREPARE_OPENCV_THREADS,
        }
        read_ahead = default_read_ahead(args.backend, ahead, source) if args.read_ahead is None else args.read_ahead
        if args.replay_network:
            asynchronous = args.replay_as_gpu or bool(getattr(backend, "asynchronous", False))
            estimator = HandEstimator(_ReplayedNetwork(backend, asynchronous, args.replay_gpu_ms), hand_model)
        tracker = HandTracker(estimator, config, *classifiers)
        if args.replay_preparation:
            tracker.prepare_function = _replayed_preparation
        probe = _Probe()
        machine_at_start = machine_info()
        rss_start = rss_mb()
        # As run_tracker.py does before its source starts: a first run after installing
        # compiles the numba kernels here (tens of seconds) instead of in the timed frames,
        # or, paced, while a camera's frames go by and are dropped.
        warm_up_s = tracker.warm_up()
        if args.replay_network:
            estimator.backend.output = None  # the warm-up's blank crop is not the frame to replay
        if args.video:
            from tracker.viewer import warm_up_rasteriser

            warm_up_s += warm_up_rasteriser(hand_model.faces)
        sinks = [JsonLinesSink(Path(tmp) / "out.jsonl"), probe]
        if args.video:
            from tracker.sinks import BackgroundSink
            from tracker.viewer import VideoSink

            # At the command line's video rate, whatever the input's: a frame that gets no
            # video frame of its own is not drawn. On its own thread, as the command line has it.
            sinks.insert(1, BackgroundSink(VideoSink(Path(tmp) / "overlay.mp4", hand_model)))
        live = args.pace is not None
        pipelined = not args.one_network_at_a_time
        if args.profile is None:
            summary = run_pipeline(source, tracker, sinks, drop_old_frames=live, read_ahead=read_ahead, pipeline_networks=pipelined)
        else:
            # The profiler's own cost per call slows the run: these figures are for the
            # profile, not the speed.
            profiler = cProfile.Profile()
            summary = profiler.runcall(
                run_pipeline, source, tracker, sinks, drop_old_frames=live, read_ahead=read_ahead, pipeline_networks=pipelined
            )
            _write_profile(profiler, args.profile, summary.frames)
        rss_end = rss_mb()
    stats = summary.stats()
    # Frame ``warmup`` is the first timed one: speed from the time it was written on. Paced,
    # frames are dropped, so the first timed one is the first processed of those due from
    # frame ``warmup`` on: ``skip`` processed frames come before it.
    skip = int(np.searchsorted(np.array(probe.frame_numbers), warmup)) if live else warmup
    done = np.array(probe.done[max(0, skip - 1) :]) if skip else np.array(probe.done)
    windows = [100 / (done[i + 100] - done[i]) for i in range(0, len(done) - 100, 100)]
    if not skip:
        overall = stats["frames_per_second"]
    else:
        overall = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else None
    cpu = np.array(probe.thread_cpu[max(0, skip - 1) :]) if skip else np.array(probe.thread_cpu)
    # Per frame after the first timed one's end; without a warm-up, from the first frame's.
    tracker_cpu_ms = 1e3 * (cpu[-1] - cpu[0]) / (len(cpu) - 1) if len(cpu) > 1 else None
    latency = np.array(summary.latency_ms[skip:])
    processing = np.array(summary.processing_ms[skip:])
    stages = {
        k: float(np.median(v))
        # Replayed, the preparation's timings are its first frame's, every frame: not a measurement.
        for k in (("side_check", "network", "refit", "confidence", "refine") if args.replay_preparation else ("segment", "crop", "side", "presence", "side_check", "network", "refit", "confidence", "refine"))
        if (v := _measured(probe.stage_ms.get(k, array("d"))[skip:])).size
    }
    # Paced, the frames the tracker could not keep up with were dropped, not lost.
    ended_early = stats["frames"] + (stats["dropped"] if live else 0) != args.frames or stats["error"] is not None or stats["stopped_by"] != "end of input"
    result = {
        "benchmark": "pipeline_speed",
        "command": ["python", "-m", "benchmarks.pipeline_speed", *(sys.argv[1:] if argv is None else argv)],
        "machine": machine_at_start,
        "load_average_1min_before_rendering": load_before,
        "load_average_1min_at_end": os.getloadavg()[0],
        "weights_dir": str(Path(weights).absolute()),
        "weights_sha256": manifest["files"],
        "backend": args.backend,
        "network": (
            "replayed (first crop's output every frame"
            + (", launched and collected as on a GPU" if args.replay_as_gpu else "")
            + (f", each ready {args.replay_gpu_ms:g} ms after it could start" if args.replay_gpu_ms else "")
            + ")"
        )
        if args.replay_network else "run every frame",
        "preparation": "replayed (each process's first frame's, every frame)" if args.replay_preparation else "run every frame",
        "overlay_video": args.video,
        # Under the profiler every Python call costs more: not a speed figure to quote.
        "profiled": args.profile is not None,
        "input": source.description,
        "tracker_config": config_to_dict(tracker.config),  # as the tracker resolved it
        "backend_options": backend_options(args.backend, ahead),
        "threads": threads,
        "frames": stats["frames"],
        "frames_requested": args.frames,
        "dropped": stats["dropped"],
        "stopped_by": stats["stopped_by"],
        "error": stats["error"],
        "frames_with_hand": stats["frames_with_hand"],
        "frames_judged_no_hand": stats["frames_judged_no_hand"],
        "warm_up_s": warm_up_s,
        "warmup_frames": warmup,
        "timed_frames": max(len(done) - 1, 0) if skip else len(done),
        "windows_of_100_frames": len(windows),
        "frames_per_second_median_100_frame_windows": float(np.median(windows)) if windows else None,
        "frames_per_second_overall": overall,
        "read_ahead": 1 if live else read_ahead,  # live, the slot holds the newest frame only
        # Each frame's network begun before the one before it was completed (a backend that
        # holds two frames, with workers preparing them).
        "pipelined_networks": summary.pipelined_networks,
        "latency_note": (
            "from the frame's arrival (handed over by the capture thread) to its estimate written" if live else
            "from the frame's arrival (read by the tracker's thread itself, with no capture thread: when it is taken) to its "
            "estimate written, the same as processing_ms" if read_ahead == 0 else
            "from the frame's arrival to its estimate written; played as fast as possible, a frame arrives as soon as "
            "there is room for it (read_ahead frames may wait), so this includes waiting for the processing of the frames before it "
            "(latency at saturation)"
        ),
        "latency_ms_p50": float(np.percentile(latency, 50)) if latency.size else None,
        "latency_ms_p99": float(np.percentile(latency, 99)) if latency.size else None,
        "processing_ms_p50": float(np.percentile(processing, 50)) if processing.size else None,
        "processing_ms_p99": float(np.percentile(processing, 99)) if processing.size else None,
        "stage_median_ms": stages,
        "tracker_thread_cpu_ms_per_frame": tracker_cpu_ms,
        "tracker_thread_cpu_note": "CPU time of the tracker's thread (take, hand-over to workers, side vote, network call, refit, "
        "estimate, sinks) per frame over the timed frames, its blocking waits left out; with the network replayed, 1000 / this "
        "is the most frames/s that thread allows on this machine, with no worker left waiting. onnxruntime also runs part of "
        "the network in this thread, and a wait for a GPU's outputs (a stand-in's with --replay-gpu-ms, torch's "
        "synchronisation) spins, so it counts. The online refinement's second fit, on a thread of its own where the process "
        "has more than one CPU, does not count, nor does this thread's (blocking) wait for it",
        **(_paced_figures(probe, source, warmup, ahead) if live else {}),
        "rss_mb_start": rss_start,
        "rss_mb_end": rss_end,
        "rss_mb_growth": rss_end - rss_start,
        "rss_mb_every_100_frames": probe.rss,
        # Worker processes, together: their growth counts as much as the tracker's own.
        "workers_rss_mb_every_100_frames": probe.workers_rss,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "tracker_config", "rss_mb_every_100_frames", "workers_rss_mb_every_100_frames")}, indent=2))
    if ended_early:
        print(f"error: the run ended early ({stats['stopped_by']}{': ' + stats['error'] if stats['error'] else ''}; "
              f"{stats['frames']} of {args.frames} frames); {out} is left as it was", file=sys.stderr)
        return 1
    write_result(out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
