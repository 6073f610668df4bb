"""The ``run_tracker.py`` / ``dgn-track`` command line: track hands from a source into files.

With no ``--source`` it uses a connected RealSense camera, or, when none is connected, the
built-in synthetic input (a rendered moving hand with sensor noise; no camera needed) and
says so.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from tracker.machine import usable_cpus
from tracker.signals import SignalHandlers
from tracker.sources import DEFAULT_SYNTHETIC_FRAMES
from tracker.types import HAND_CHOICES


def package_version() -> str:
    """The installed package's version ("not installed" when run from a bare checkout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dgn-hand-tracker")
    except PackageNotFoundError:
        return "not installed"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Track a hand (mesh + 21 keypoints, metres, camera frame) in depth frames with Dual Grid Net. "
        "With no --source: a connected RealSense camera, else the built-in synthetic input (no camera needed).",
        epilog="Exit status: 0 when the run ends at the end of its input, at --max-frames, or when Ctrl-C or SIGTERM "
        "stops it once tracking has begun (the usual end of a live session: every output is complete); 1 when the "
        "input or an output fails part-way (what came before it is kept); 2 for arguments, a source, weights or "
        "outputs that cannot be used, before anything is tracked; 130 for Ctrl-C (or SIGTERM, SIGHUP) before tracking begins.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (dgn-hand-tracker {package_version()})")
    parser.add_argument(
        "--list-cameras", action="store_true",
        help="list the connected RealSense cameras (serial, USB, firmware, depth modes and the one tracking takes) and exit",
    )
    parser.add_argument(
        "--source",
        help="realsense | realsense:SERIAL | FILE.db3 | FILE.bag | DIR (16-bit PNGs + intrinsics.json) | "
        "synthetic[:SEED[:left|right]] (the renderer; %d frames unless --max-frames)" % DEFAULT_SYNTHETIC_FRAMES,
    )
    parser.add_argument(
        "--out", type=_output_argument, default=Path("out/tracking.jsonl"), help="JSON-lines output, one object per frame (default %(default)s; - for standard output, "
        "with every message on standard error); the run's resolved settings go beside it as NAME.config.json",
    )
    parser.add_argument("--out-vertices", action="store_true", help="also write the 1159 mesh vertices per hand")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "onnxruntime", "onnxruntime-int8", "torch", "torch-cuda", "tensorrt"],
        help="network backend (default auto: torch-cuda where torch sees an NVIDIA GPU, else onnxruntime; "
        "onnxruntime-int8: the 8-bit network, faster on a CPU, see weights/MODEL_CARD.md for its accuracy; "
        "tensorrt: needs TensorRT 10, builds its engine on the first run)",
    )
    parser.add_argument(
        "--video", type=_video_argument,
        help="write an overlay video (.mp4) or the last overlay frame (.png); the video is MPEG-4 Part 2 (OpenCV's wheels "
        "have no H.264 encoder), which VLC and ffmpeg play but browsers do not: ffmpeg -i in.mp4 -c:v libx264 out.mp4 converts it",
    )
    parser.add_argument(
        "--no-viewer", action="store_true",
        help="no live window (default: a live overlay window when a display is present; Q or Esc quits)",
    )
    parser.add_argument("--viewer-3d", action="store_true", help="also show a live 3-D window (open3d, needs a display): depth points, hand mesh, skeleton")
    parser.add_argument("--mesh-dir", type=_folder_argument, help="write each frame's hand mesh (camera frame, metres) into this folder (one without meshes of an earlier run)")
    parser.add_argument("--mesh-format", choices=["ply", "obj"], help="mesh file format for --mesh-dir (default ply)")
    parser.add_argument("--record", type=_recording_argument, help="while tracking a live camera, record its depth to this .db3")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames have been tracked and written (frames dropped to keep up in real time "
        "do not count); default: no limit, except the synthetic input's %d frames" % DEFAULT_SYNTHETIC_FRAMES)
    parser.add_argument(
        "--realtime", action=argparse.BooleanOptionalAction, default=None,
        help="pace the input in real time (the default for recordings; a camera runs in real time only) or take "
        "every frame as fast as possible (--no-realtime; the default for folders and synthetic input)",
    )
    parser.add_argument("--smooth", action="store_true", help="smooth the joints and the mesh over time (One-Euro filter)")
    parser.add_argument(
        "--refine", action=argparse.BooleanOptionalAction, default=True,
        help="refine each estimate against the depth it was cut from (a few steps of articulated ICP after the network; "
        "15 %% lower mean joint error on held-out synthetic frames: benchmarks/results/refinement.json). Within a track the "
        "last frame's pose (on a moving hand, carried on by its last motion) is refined too and the fit the depth bears out better is kept, which steadies a far hand held still "
        "(benchmarks/results/held_still.json). About 1 ms a hand on one CPU core; within a track 2 ms, or about 1.2 ms with a second core for the last pose's fit. "
        "On by default; --no-refine keeps the network's fit as it is, for the most frames a second",
    )
    parser.add_argument(
        "--weights", type=_folder_argument,
        help="network weights directory (default: the shipped weights/; weights/fast: a narrower network, 40 %% fewer operations and less accurate; faster in float on a CPU, not always in 8 bits; see weights/fast/MODEL_CARD.md). "
        "Its side_classifier/ and presence/ sub-folders are used where it has them, else the shipped ones",
    )
    parser.add_argument(
        "--hand", choices=HAND_CHOICES, default="auto",
        help="which hand to track: auto decides per track from the depth crop (a small classifier whose "
        "votes add up over the frames; it may take a second to settle), right or left fixes it. "
        "A left hand is mirrored into the right-hand network (default %(default)s)",
    )
    parser.add_argument(
        # TrackerConfig.min_hand_probability's default (tracker.pipeline is not imported to build the parser).
        "--min-hand-probability", type=float, default=0.5, metavar="P",
        help="a small classifier (weights/presence) tells whether the crop holds a hand at all; where its probability, "
        "averaged over the track, is below P, the crop is doubted: the network runs and the hand is kept only where the depth "
        "bears its fit out well (confidence 0.8), and below 0.05 it is dropped before the network runs (an arm whose hand is "
        "out of view or hidden, a ball, a box). 0 to below 0.99; 0 turns the classifier off (default %(default)s)",
    )
    parser.add_argument(
        "--keep-planes", action="store_true",
        help="leave a wall or table right behind the hand in the network's crop. By default a plane found behind the hand "
        "(a hand resting on a desk, held against a wall or a screen) is cleared from the crop first: the networks were trained "
        "with such surfaces 8 cm or more behind the wrist and fit a hand nearer one far worse (docs/network.md)",
    )
    parser.add_argument(
        "--segment-ahead", type=int, metavar="N",
        help="where every frame is taken as fast as possible (a folder, --no-realtime), segment the next N frames in N worker "
        "processes while the network runs (default: 1 with onnxruntime on 3 or more cores, up to 3 with a GPU backend, 0 with the "
        "synthetic input). A frame's segmentation then starts from the hand found N + 1 frames before it (N + 3 with a GPU backend, "
        "which holds two frames' networks) rather than the frame before, so results differ slightly with N: 0 gives what tracker.api "
        "gives, on any machine. Live (a camera, --realtime) 1 is the most: a worker process segments each frame as it arrives while "
        "the network runs on the frame before, which with a core to spare may drop fewer frames where the tracker cannot keep up, "
        "and adds to each frame's latency where the worker and the network share two cores (docs/performance.md); default 0 live",
    )
    return parser


def _default_source() -> str:
    try:
        import pyrealsense2 as rs

        # A device with no depth sensor (a tracking camera, one in recovery mode) is no camera here.
        if any(sensor.is_depth_sensor() for device in rs.context().query_devices() for sensor in device.query_sensors()):
            return "realsense"
    except Exception:  # no SDK or no USB access: same as no camera
        pass
    return "synthetic"


#: The highest ``--min-hand-probability`` (``TrackerConfig.min_hand_probability``'s limit,
#: repeated so that building the parser imports no tracker module).
MAX_MIN_HAND_PROBABILITY = 0.99

#: The most worker processes ``--segment-ahead`` starts: more than a machine's cores only
#: slows every stage.
MAX_SEGMENT_AHEAD = 16

#: A warm-up longer than this (seconds) is worth a note: numba compiled the kernels.
WARM_UP_NOTE_S = 1.0

#: A live run that dropped more than this share of its frames while the tracker's own
#: processing took most of a frame's interval is told which lighter network to try.
LIGHTER_NETWORK_NOTE_DROPPED = 0.05

#: Signals that end the program; before and after the tracking loop (which stops cleanly on
#: them itself) they interrupt like Ctrl-C, so an open camera and its recording are closed.
_STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def console_main() -> int:
    """The command's entry point (``run_tracker.py``, ``dgn-track``): ``main``, then the
    interpreter's shutdown with Ctrl-C and the stop signals ignored. The outputs are
    complete when ``main`` returns, while the shutdown (libraries unloaded, the workers,
    which close with time limits, reaped) takes half a second more: a signal there would
    turn a finished run's exit status into 130 (or 143), with a traceback. (A handler that
    ended the process with the run's status instead would not last: Python resets its own
    handlers to the default, which dies of the signal, before the shutdown ends.)"""
    return main(exiting=True)


def main(argv: list[str] | None = None, exiting: bool = False) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.source is not None and not args.source.strip():
        # Most often an unset shell variable (--source "$SRC"): tracking the default input
        # instead would go unnoticed.
        parser.error("--source is empty; leave it out to track the default input")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    if not 0.0 <= args.min_hand_probability < MAX_MIN_HAND_PROBABILITY:
        parser.error(f"--min-hand-probability must be at least 0 (off) and below {MAX_MIN_HAND_PROBABILITY}")
    if args.segment_ahead is not None and not 0 <= args.segment_ahead <= MAX_SEGMENT_AHEAD:
        parser.error(f"--segment-ahead must be 0 (none) to {MAX_SEGMENT_AHEAD} worker processes")
    if args.list_cameras:
        defaults = vars(parser.parse_args([]))

        def given(action) -> str:
            options = [o for o in action.option_strings if o.startswith("--")] or [action.dest]
            # A pair of flags for one setting (--realtime / --no-realtime): the one given.
            return next((o for o in options if o.startswith("--no-")), options[0]) if getattr(args, action.dest) is False else options[0]

        others = sorted(
            given(action)
            for action in parser._actions
            if action.dest not in ("help", "version", "list_cameras") and getattr(args, action.dest, None) != defaults.get(action.dest)
        )
        if others:
            parser.error(f"--list-cameras lists the cameras and exits: it takes no other option (given: {', '.join(others)})")
        return _list_cameras()
    # SIGINT too (already Python's own handler, as a rule): a finished run ignores them all,
    # and the ones replaced come back when main returns.
    handlers = SignalHandlers(("SIGINT", *_STOP_SIGNALS), signal.default_int_handler)
    try:
        handlers.install()
        return _track(args, parser)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if exiting:  # the handlers replaced need not come back: the process ends
            _ignore_stop_signals()
        else:
            handlers.restore()


def _ignore_stop_signals() -> None:
    """Ctrl-C and the stop signals ignored from here on (from the main thread only, where
    handlers can be set): the run's outputs are complete, and a signal now would only make
    a finished run read as interrupted."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGINT", *_STOP_SIGNALS):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def _list_cameras() -> int:
    """Print the connected RealSense devices, one a line, to standard output."""
    from tracker.sources import SourceError, list_cameras

    try:
        cameras = list_cameras()
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not cameras:
        print("No RealSense device connected.")
        return 0
    for camera in cameras:
        about = ", ".join(
            [f"serial {camera.serial}"] + ([f"USB {camera.usb}"] if camera.usb else []) + ([f"firmware {camera.firmware}"] if camera.firmware else [])
        )
        if not camera.depth_modes:
            print(f"{camera.name} ({about}): no depth sensor, cannot be tracked with")
            continue
        w, h, f = camera.default_mode
        rates: dict[tuple[int, int], list[int]] = {}
        for width, height, fps in camera.depth_modes:
            rates.setdefault((width, height), []).append(fps)
        modes = "; ".join(f"{width}x{height} @ {'/'.join(map(str, sorted(fps)))} fps" for (width, height), fps in rates.items())
        print(f"{camera.name} ({about})")
        print(f"    tracking streams depth {w}x{h} @ {f} fps: --source realsense:{camera.serial}")
        print(f"    depth modes: {modes}")
    return 0


def _track(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from tracker.backends import BackendUnavailable, start_backend
    from tracker.estimator import HandEstimator
    from tracker.hand_model import HandModel
    from tracker.pipeline import HandTracker, TrackerConfig, backend_options, default_read_ahead, default_segment_ahead, run_pipeline
    from tracker.prepare import PrepareWorkerEnded, SharedMemoryUnavailable
    from tracker.sources import SourceError, SyntheticSource, open_source, source_kind
    from tracker.types import Handedness
    from tracker.weights import WEIGHTS_DIR, WeightsError, crop_classifiers, crop_frame_of, load_manifest

    spec = args.source or _default_source()
    if args.source is None:
        what = "a connected RealSense camera" if spec == "realsense" else "the built-in synthetic input (no camera connected)"
        print(f"No --source given: tracking {what}.", file=sys.stderr)
    kind = source_kind(spec)
    if args.record is not None and kind != "realsense":
        parser.error("--record needs a live camera source (realsense or realsense:SERIAL)")
    if args.mesh_format is not None and args.mesh_dir is None:
        parser.error("--mesh-format needs --mesh-dir (the folder the meshes go to)")
    if args.mesh_dir is not None:
        from tracker.mesh_output import check_mesh_directory

        try:  # before any output is opened (the JSON lines file is replaced) or a camera started
            check_mesh_directory(args.mesh_dir)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    from tracker.sinks import is_standard_output

    if not is_standard_output(args.out) and Path(args.out).is_dir():
        print(f"error: --out {args.out} is a folder; give the JSON-lines file's name (say {Path(args.out) / 'tracking.jsonl'})", file=sys.stderr)
        return 2
    clash = _clashing_paths(args, spec, kind)
    if clash is not None:  # before any of them is opened: each would replace the other
        print(f"error: {clash}", file=sys.stderr)
        return 2
    max_frames = args.max_frames
    synthetic = kind == "synthetic"
    if synthetic and max_frames is None:
        max_frames = DEFAULT_SYNTHETIC_FRAMES
    # Cameras and recordings run at their own pace unless told otherwise; folders and the
    # renderer deliver every frame as fast as they can. The pipeline's settings follow the
    # source's actual pace, so both are decided here, once.
    paced_by_default = kind in ("realsense", "recording")
    realtime = args.realtime if args.realtime is not None else paced_by_default
    # By default frames are prepared ahead only when every frame is processed (a live camera
    # would wait for them) and the source outpaces the tracker: the renderer behind the
    # synthetic source is slower than the tracker, and a worker would only take its cores.
    # Live, one worker on request segments each frame as it arrives (tracker.pipeline).
    if args.segment_ahead is not None and args.segment_ahead > 1 and realtime:
        live = "a live camera" if kind == "realsense" else "--realtime"
        print(f"error: with {live} one worker process at most segments the frames, each as it arrives: --segment-ahead 0 or 1 "
              "(more workers prepare frames taken as fast as possible, --no-realtime)", file=sys.stderr)
        return 2

    def workers_for(backend_name: str) -> int:
        if args.segment_ahead is not None:
            return args.segment_ahead
        return 0 if realtime or synthetic else default_segment_ahead(backend_name)

    # The resolved settings record what was asked for and the backend used.
    args.backend_asked = args.backend
    try:
        weights = args.weights or WEIGHTS_DIR
        manifest = load_manifest(weights)
        hand_model = HandModel.load()
        # A GPU that torch sees but cannot run the network on does not stop a run nobody put
        # on it (start_backend falls back to the CPU then); a fault in the code surfaces.
        backend, args.backend, _ = start_backend(
            args.backend, weights, lambda name: backend_options(name, workers_for(name)), lambda note: print(f"note: {note}", file=sys.stderr)
        )
        try:
            segment_ahead = workers_for(args.backend)
            handedness = None if args.hand == "auto" else Handedness(args.hand)
            config = TrackerConfig(
                cube_size_m=manifest["cube_size_m"], crop_frame=crop_frame_of(manifest), handedness=handedness, smooth=args.smooth,
                refine=args.refine, min_hand_probability=args.min_hand_probability,
                segment_ahead=segment_ahead,
                **({"background_plane": None} if args.keep_planes else {}),
            )
            side_classifier, presence = crop_classifiers(weights, handedness, args.min_hand_probability)
            tracker = HandTracker(HandEstimator(backend, hand_model), config, side_classifier, presence)
            # Before the camera starts: the first frames would otherwise wait for it, or be dropped.
            warm_up_s = tracker.warm_up()
            if _overlay_drawn(args):
                from tracker.viewer import warm_up_rasteriser

                warm_up_s += warm_up_rasteriser(hand_model.faces)
            if warm_up_s > WARM_UP_NOTE_S:
                print(
                    f"note: warming up took {warm_up_s:.1f} s (the first run after installing or updating compiles the numba "
                    "kernels; later runs load them from the cache)",
                    file=sys.stderr,
                )
            # Last: a camera opened here must be closed on any later failure.
            # The rendered stream is as long as the run, but in real time, where frames the
            # tracker is too slow for are dropped, it goes on until that many are tracked.
            source = open_source(spec, realtime=realtime, record_path=args.record, max_frames=None if realtime else max_frames)
        except BaseException:
            backend.close()
            raise
    except (WeightsError, BackendUnavailable, SourceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sinks, configs = [], []
    try:
        # The settings are written first and put in place once the outputs are open: a path
        # that cannot take them fails before the JSON lines replace an earlier run's.
        resolved_command = {"realtime": realtime, "max_frames": max_frames}
        if args.mesh_dir is not None:
            resolved_command["mesh_format"] = args.mesh_format or "ply"
        configs = _write_resolved_config(args, spec, source, tracker, manifest, resolved_command, kind)
        sinks = _open_sinks(args, hand_model)
        if isinstance(source, SyntheticSource):
            sinks.append(_SyntheticTruthError(source))
        for partial, path in configs:
            os.replace(partial, path)
    except BaseException as exc:  # the camera (and a recording it makes) closes on any of them
        _abandon(sinks)
        for partial, _ in configs:
            partial.unlink(missing_ok=True)
        source.close()
        if not isinstance(exc, (OSError, RuntimeError, ValueError)):
            raise
        print(f"error: {_describe_output_error(exc, args) if isinstance(exc, OSError) else exc}", file=sys.stderr)
        return 2
    try:
        print(f"source: {source.description}; backend: {args.backend}; writing {_out_name(args.out)}", file=sys.stderr)
        # Closes the source and the sinks whatever happens.
        summary = run_pipeline(
            source, tracker, sinks, drop_old_frames=realtime, max_frames=max_frames, read_ahead=default_read_ahead(args.backend, segment_ahead, source)
        )
    except (OSError, PrepareWorkerEnded, SharedMemoryUnavailable) as exc:  # an output that cannot be written, a worker killed or unfed
        failure = _describe_output_error(exc, args) if isinstance(exc, OSError) else exc
        print(f"error: {failure}; the frames processed before it are in {_out_name(args.out)}", file=sys.stderr)
        return 1
    except BaseException:
        # A signal before run_pipeline took over: close here (closing twice is harmless),
        # an earlier run's JSON lines as they were if none were written.
        _abandon(sinks)
        try:
            source.close()
        except Exception:
            pass
        raise
    _ignore_stop_signals()  # every output is complete: what is left is the report
    stats = summary.stats()
    latency = "" if stats["latency_ms_p50"] is None else f", latency p50 {stats['latency_ms_p50']:.1f} ms, p99 {stats['latency_ms_p99']:.1f} ms"
    judged = f", {stats['frames_judged_no_hand']} judged to hold no hand" if stats["frames_judged_no_hand"] else ""
    stopped = f"stopped by {stats['stopped_by']}"
    if synthetic and args.max_frames is None and stats["stopped_by"] == "max frames":
        stopped = f"the built-in input's {max_frames} frames are done (--max-frames sets another length)"
    print(
        f"{stats['frames']} frames ({stats['frames_with_hand']} with a hand{judged}, {stats['dropped']} dropped) in {stats['seconds']:.1f} s: "
        f"{stats['frames_per_second']:.1f} frames/s{latency}; {stopped}",
        file=sys.stderr,
    )
    lighter = _lighter_network_note(stats, realtime, args.backend, weights, tracker.config.segment_ahead)
    if lighter is not None:
        print(lighter, file=sys.stderr)
    if stats["frames"] and not stats["frames_with_hand"]:
        segment = tracker.config.segment
        if stats["frames_poorly_fitted"]:
            # The search found something and the network ran: the fits were what failed.
            print(
                f"note: no hand in any frame. In {stats['frames_poorly_fitted']} frames a hand-sized object was found and the network "
                f"fitted a hand to it, but the depth did not bear the fit out (confidence below {tracker.config.min_confidence:g}): "
                "weights other than the shipped ones that are not yet trained, or depth of another scale than the source reports?",
                file=sys.stderr,
            )
        else:
            print(
                f"note: no hand in any frame. The tracker takes the nearest hand-sized object {segment.min_depth_m:g}-{segment.max_depth_m:g} m "
                "from the camera; if one was there, check the depth unit and the focal lengths the source reports (above).",
                file=sys.stderr,
            )
        if stats["frames_judged_no_hand"]:
            print(
                f"note: in {stats['frames_judged_no_hand']} frames an object was found but judged to hold no hand "
                "(--min-hand-probability 0 turns that judgement off).",
                file=sys.stderr,
            )
    for sink in sinks:
        if isinstance(sink, _SyntheticTruthError) and sink.errors_mm:
            print(
                f"synthetic input: mean joint error against the rendered truth {np.mean(sink.errors_mm):.1f} mm "
                f"over {len(sink.errors_mm)} frames",
                file=sys.stderr,
            )
    if summary.error is not None:
        if summary.error_traceback:
            print(summary.error_traceback, end="", file=sys.stderr)
        print(f"error: input failed after {stats['frames']} frames (all of them written): {summary.error}", file=sys.stderr)
        return 1
    return 0


def settings_beside(output: str | Path) -> Path:
    """Where a run's resolved settings go beside its JSON lines or its recording:
    ``NAME.config.json``."""
    output = Path(output)
    return output.with_name(output.stem + ".config.json")


def _clashing_paths(args, spec: str, kind: str) -> str | None:
    """Why the run's files cannot all be what the flags name (None when they can): an output
    that is another output, the recording being read, or what a folder source reads (a
    PNG in it, which would also be taken for a depth frame next time, or its camera file)."""
    from tracker.sinks import is_standard_output

    named = []
    if not is_standard_output(args.out):
        named.append(("--out", Path(args.out)))
        named.append(("--out's settings file", settings_beside(args.out)))
    for flag, path in (("--video", args.video), ("--record", args.record), ("--mesh-dir", args.mesh_dir)):
        if path is not None:
            named.append((flag, Path(path)))
    if args.record is not None:
        beside_recording = settings_beside(args.record)
        # One settings file for session.jsonl and session.db3 side by side: not a clash.
        if all(os.path.realpath(beside_recording) != os.path.realpath(path) for flag, path in named if flag == "--out's settings file"):
            named.append(("--record's settings file", beside_recording))
    if kind == "recording":
        named.append(("--source", Path(spec.strip())))  # as open_source reads it
    seen: dict[Path, str] = {}
    for flag, path in named:
        key = Path(os.path.realpath(path))
        if key in seen:
            if "--source" in (flag, seen[key]):
                output = seen[key] if flag == "--source" else flag
                return f"{output} {path} is the recording being read: writing it would destroy the recording"
            return f"{seen[key]} and {flag} name the same path, {path}: one would overwrite the other"
        seen[key] = flag
    if kind == "folder":
        # The folder as the source reads it (its camera file searched above the path as
        # given, links not resolved) and where it truly is.
        folders = {Path(os.path.abspath(spec.strip())), Path(os.path.realpath(spec.strip()))}
        for flag, path in named:
            for written in {Path(os.path.abspath(path)), Path(os.path.realpath(path))}:
                inside = any(written.is_relative_to(folder) for folder in folders)
                if written.name == "intrinsics.json" and (inside or any(folder.is_relative_to(written.parent) for folder in folders)):
                    if written.exists():
                        return f"{flag} {path} is the camera file of the folder being read: writing it would destroy it"
                    return f"{flag} {path} is where the folder being read looks for its camera file: writing it there would become one"
                if written.suffix.lower() == ".png" and inside:
                    return (
                        f"{flag} {path} is in the folder of depth PNGs being read: it would replace a frame or be read as one "
                        "next time; write it elsewhere"
                    )
    return None


def _output_argument(text: str) -> str | Path:
    """An ``--out`` value: ``-`` stays the string that means standard output; anything else
    is a path, ``./-`` a file named ``-`` (which pathlib alone would read as ``-``)."""
    return text if text == "-" else _file_argument(text, "the JSON-lines file", "tracking.jsonl")


def _video_argument(text: str) -> Path:
    return _file_argument(text, "the video file", "overlay.mp4")


def _recording_argument(text: str) -> Path:
    return _file_argument(text, "the recording", "session.db3")


def _folder_argument(text: str) -> Path:
    _refuse_empty(text)
    return Path(text)


def _refuse_empty(text: str) -> None:
    # Most often an unset shell variable (--mesh-dir "$MESHES"): read as the current folder,
    # the run would write there, or look there, unnoticed.
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty (an unset shell variable?); give one, or leave the option out")


def _file_argument(text: str, what: str, example: str) -> Path:
    """A path option that names a file. One ending in a slash (or in . or ..) names a
    folder, which pathlib would drop: ``results/`` would become a file named ``results``."""
    _refuse_empty(text)
    if text.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)) or os.path.basename(text) in (".", ".."):
        raise argparse.ArgumentTypeError(f"{text} names a folder; give {what}'s name (say {Path(text) / example})")
    return Path(text)


def _describe_output_error(exc: OSError, args) -> str:
    """An output that could not be opened, named by the option that asked for it: the
    system's own message names a temporary file (the settings beside ``--out``) or none."""
    if exc.filename is None or not exc.strerror:
        return str(exc)
    failed = Path(os.fsdecode(exc.filename))
    asked = [
        (option, Path(path))
        for option, path in (("--out", args.out), ("--video", args.video), ("--mesh-dir", args.mesh_dir), ("--record", args.record))
        if path is not None and path != "-"
    ]
    # The path itself, a file in the folder asked for, or a folder on the way to it ...
    for option, path in asked:
        if failed == path or path in failed.parents or failed in path.parents:
            return f"cannot write {option} {path}: {exc.strerror}"
    # ... else the settings saved beside the JSON lines or the recording (NAME.config.json) ...
    for option, path in asked:
        if option in ("--out", "--record") and failed.parent == path.parent and failed.name.removesuffix(".partial") == settings_beside(path).name:
            return f"cannot write {option} {path}: {exc.strerror}"
    # ... else a file written beside it under its name (hidden temporary names), the option
    # whose suffix the file keeps first (a mesh folder has none to keep).
    beside = [
        (option, path) for option, path in asked
        if option != "--mesh-dir" and failed.parent == path.parent and failed.name.lstrip(".").startswith(path.stem + ".")
    ]
    for option, path in sorted(beside, key=lambda pair: not failed.name.endswith(pair[1].suffix)):
        return f"cannot write {option} {path}: {exc.strerror}"
    return f"cannot write {failed}: {exc.strerror}"


def _out_name(out: str | Path) -> str:
    from tracker.sinks import is_standard_output

    return "standard output" if is_standard_output(out) else str(out)


def _write_resolved_config(
    args, spec: str, source, tracker, manifest: dict, resolved_command: dict | None = None, kind: str | None = None
) -> list[tuple[Path, Path]]:
    """The run's resolved settings, for beside its output (and beside a recording it makes),
    written under temporary names: (written, where it goes) pairs. JSON lines sent to
    standard output have no file to sit beside; their settings are not kept.

    ``resolved_command``: what the run made of options left to their defaults (the pace,
    the number of frames, the mesh format), in place of the None it was given. Paths are
    absolute, so the file still says what was read and written when it is read elsewhere."""
    from tracker.machine import machine_info
    from tracker.sinks import is_standard_output, make_parent_folder
    from tracker.synth.dataset import config_to_dict
    from tracker.weights import WEIGHTS_DIR

    command = {k: str(v.absolute()) if isinstance(v, Path) else v for k, v in vars(args).items()}
    command.update(resolved_command or {})
    described = {"spec": spec, "description": source.description}
    if kind in ("recording", "folder"):
        described["path"] = str(Path(spec.strip()).absolute())
    resolved = {
        "command": command,
        "source": described,
        "tracker": config_to_dict(tracker.config),
        "weights": {
            "directory": str(Path(args.weights or WEIGHTS_DIR).absolute()), "files": manifest.get("files"), "parameters": manifest.get("parameters"),
            # The classifiers the run took (a --weights folder's own, or the shipped ones);
            # null where one is not used (a fixed --hand, the presence gate off).
            "side_classifier": _classifier_record(tracker.side_classifier),
            "presence": _classifier_record(tracker.presence),
        },
        "machine": machine_info(),
    }
    text = json.dumps(resolved, indent=2, default=str) + "\n"
    paths = []
    if is_standard_output(args.out):
        pass
    elif args.out.exists() and not args.out.is_file():
        # /dev/null, a FIFO: no folder of results to keep settings in (and /dev/null.config.json
        # would land in /dev).
        print(f"note: the run's resolved settings are not saved: {args.out} is not a regular file", file=sys.stderr)
    else:
        paths.append(settings_beside(args.out))
    if args.record is not None:
        beside_recording = settings_beside(args.record)
        if not any(p.resolve() == beside_recording.resolve() for p in paths):  # session.jsonl + session.db3: one file
            paths.append(beside_recording)
    if not paths and is_standard_output(args.out):
        print("note: the run's resolved settings are not saved: the JSON lines go to standard output", file=sys.stderr)
    written = []
    try:
        for path in paths:
            if path.is_dir():
                raise IsADirectoryError(f"cannot save the run's settings as {path}: it is a folder")
            make_parent_folder(path)
            partial = path.with_name(path.name + ".partial")
            written.append((partial, path))
            try:
                partial.write_text(text)
            except OSError as exc:
                if exc.filename is not None or exc.errno is None:
                    raise
                # A write that fails as the file is flushed (a full disk) names no file.
                raise OSError(exc.errno, exc.strerror, str(partial)) from exc
    except BaseException:
        for partial, _ in written:
            partial.unlink(missing_ok=True)
        raise
    return written


def _classifier_record(classifier) -> dict | None:
    if classifier is None:
        return None
    # The checksum its manifest gives, which loading it verified.
    source = getattr(classifier, "source", None)
    return {"file": None if source is None else str(Path(source).absolute()), "sha256": classifier.manifest["files"][classifier.onnx_name]}


def _lighter_network_note(stats: dict, realtime: bool, backend: str, weights: Path, segment_ahead: int = 0, cores: int | None = None) -> str | None:
    """For a live run on the CPU that fell behind its input: the lighter networks to try, and
    the live worker where the run had none and there is a core to spare for it (three or
    more: on two, the worker and the network share them, and the worker now saves no frames
    there; docs/performance.md), or None. A frame is dropped as well where the camera or the
    USB lost it, which no network helps: the tracker is taken to have fallen behind where its
    processing (median) took nine tenths of the frames' interval or more. ``cores``: the
    cores this process may use (default: as the OS says)."""
    from tracker.pipeline import ONNXRUNTIME_CPU_BACKENDS
    from tracker.weights import WEIGHTS_DIR

    arrived = stats["frames"] + stats["dropped"]
    if not realtime or backend not in ONNXRUNTIME_CPU_BACKENDS or not arrived or stats["processing_ms_p50"] is None:
        return None
    interval_ms = 1e3 * stats["seconds"] / arrived
    if stats["dropped"] / arrived <= LIGHTER_NETWORK_NOTE_DROPPED or stats["processing_ms_p50"] < 0.9 * interval_ms:
        return None
    fast = WEIGHTS_DIR / "fast"
    options = []
    if Path(weights).resolve() != fast.resolve() and fast.is_dir():
        options.append(f"--weights {fast} (a network with 40 % fewer operations, a little less accurate: {fast / 'MODEL_CARD.md'})")
    if backend == "onnxruntime":
        options.append("--backend onnxruntime-int8 (the 8-bit network, much faster on CPUs with AVX-512 VNNI)")
    if cores is None:
        cores = usable_cpus()
    worker = not segment_ahead and cores >= 3
    if not options and not worker:
        return None
    note = (
        f"note: {stats['dropped'] / arrived:.0%} of the frames were dropped to keep up: the tracker took {stats['processing_ms_p50']:.1f} ms "
        f"a frame (median), and a frame came every {interval_ms:.1f} ms."
    )
    if options:
        note += " A lighter network keeps up better: " + "; or ".join(options) + "."
    if worker:
        note += (" --segment-ahead 1 may drop fewer frames too: a worker process segments each frame as it arrives, "
                 "on a core of its own, which makes each estimate a few ms later (docs/performance.md).")
    return note


def _overlay_drawn(args) -> bool:
    """Whether the run draws the overlay: into a video, or a live window where a display is."""
    from tracker.viewer import display_available

    return args.video is not None or (not args.no_viewer and display_available())


def _abandon(sinks) -> None:
    """Close the outputs of a run that did not get to track: each as it was before where it
    can be (``abandon``), else closed."""
    for sink in sinks:
        try:
            getattr(sink, "abandon", sink.close)()
        except Exception:
            pass


def _open_sinks(args, hand_model) -> list:
    """The outputs the flags ask for; the live window only where a display is present."""
    from tracker.sinks import BackgroundSink, JsonLinesSink
    from tracker.viewer import VideoSink, WindowSink, display_problem

    # The JSON lines go in last, so that an output failing to open is told before them
    # (an earlier run's file is replaced only at the first line written).
    sinks = []
    try:
        if args.video is not None:
            # Drawn on its own thread, with a painter of its own: the window's is this thread's.
            sinks.append(BackgroundSink(VideoSink(args.video, hand_model)))
        if args.mesh_dir is not None:
            from tracker.mesh_output import MeshSink

            sinks.append(MeshSink(args.mesh_dir, hand_model.faces, fmt=args.mesh_format or "ply"))
        if not args.no_viewer:
            problem = display_problem()
            if problem is None:
                sinks.append(WindowSink(hand_model))
            else:
                print(f"{problem}: running headless; --video writes the overlay to a file", file=sys.stderr)
        if args.viewer_3d:
            from tracker.mesh_output import Open3DViewer

            sinks.append(Open3DViewer(hand_model.faces))
        sinks.insert(0, JsonLinesSink(args.out, include_vertices=args.out_vertices))
    except BaseException:
        _abandon(sinks)
        raise
    return sinks


class _SyntheticTruthError:
    """Collects each frame's mean joint error against the built-in input's rendered truth."""

    def __init__(self, source) -> None:
        self.source = source
        self.errors_mm: list[float] = []

    def write(self, result) -> None:
        truth = self.source.ground_truth(result.frame.frame_number)
        if result.hands and truth is not None:
            self.errors_mm.append(float(np.linalg.norm(result.hands[0].joints_cam_m - truth, axis=1).mean() * 1000))

    def close(self) -> None:
        pass
