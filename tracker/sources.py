"""Where depth frames come from: a RealSense camera, a recording, a folder of PNGs, or a renderer.

Every input of the tracker is a ``FrameSource``: ``frames()`` yields ``DepthFrame`` objects in
order until the input ends, ``close()`` releases it (and finalises a recording), and every
failure is a ``SourceError`` whose message says what went wrong and how to fix it. Frames
always carry the intrinsics (with the lens model), the depth unit and the serial of the
device or recording they came from; nothing here assumes a particular camera.

* ``RealSenseSource``: a live RealSense camera (the D400 series; the SDK dropped the SR30x
  after 2.50) through pyrealsense2, optionally
  recording to a ROS 2 ``.db3`` file while it streams.
* ``RecordingSource``: a ``.db3`` (librealsense >= 2.58) or ``.bag`` recording, played back
  either at its own pace or frame by frame with every frame delivered.
* ``FolderSource``: 16-bit depth PNGs plus an ``intrinsics.json`` (the format of
  ``tests/data/sr305-gestures`` and of ``tracker.evaluate``).
* ``SyntheticSource``: a rendered hand moving smoothly between random poses, with stereo
  sensor noise and per-frame ground truth; needs no camera.

``open_source(spec)`` turns a command-line string into one of these, and
``write_recording(path, frames)`` writes any frames into a ``.db3`` that the RealSense SDK
(and ``RecordingSource``) plays back bit-exactly.

pyrealsense2 is imported only by the classes that need it, so folders and synthetic input
work without the SDK.

What librealsense does here (2.59, verified by experiment; see the tests):

* Non-real-time playback delivers every frame only if ``set_real_time(False)`` is applied
  before the pipeline starts: ``config.resolve(pipeline)`` returns the very playback device
  that ``pipeline.start(config)`` then uses, so it is set there. Set after ``start()``, the
  first frames have often already been played in real time and dropped.
* Every ``config.enable_stream`` must come before ``resolve``; a later one makes ``start``
  resolve a fresh (real-time) playback device.
* End of file: ``try_wait_for_frames`` times out and the playback reports ``stopped``. A
  frame that cannot be decoded midway (corrupt payload) also just stops the playback (the
  SDK only logs it), so the end is checked: played frame by frame, against the number of
  depth frames a ``.db3`` file's tables hold; otherwise against the file's duration.
* Recording: ``rs.recorder`` stores the wall-clock arrival time of each frame as its place in
  the file's timeline (the frame's own timestamp is stored alongside), and the file is
  complete once the recorded sensor is stopped and the recorder released.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracker.types import CameraIntrinsics, DepthFrame, DistortionModel, Handedness

log = logging.getLogger(__name__)

#: How long one blocking wait on librealsense may last. Short, so that ``close()`` from
#: another thread (the pipeline's main thread, on Ctrl-C) takes effect promptly: the SDK
#: serialises ``pipeline.stop()`` behind a wait in progress.
_POLL_MS = 100
#: How long a close() from another thread waits for a stream running in the SDK (waiting for
#: or converting a frame) to see it and stop its pipeline itself: a few polls.
_STREAM_STOP_WAIT_S = 1.0
#: What pyrealsense2 records: .db3 (rosbag2, SDK >= 2.58) and .bag (rosbag1, older SDKs).
RECORDING_SUFFIXES = (".db3", ".bag")
#: The built-in input's length where the command line or ``tracker.api.track`` is given no
#: frame count: four seconds of motion, enough to see it track.
DEFAULT_SYNTHETIC_FRAMES = 120


class SourceError(RuntimeError):
    """A frame source cannot be opened or has failed; the message says why and what to do."""


class FrameSource(abc.ABC):
    """A stream of depth frames.

    ``frames()`` yields ``DepthFrame`` objects in order and returns at the end of the input; it
    raises ``SourceError`` on failure (after the frames that were read before the failure).
    ``close()`` is idempotent, may be called from another thread while ``frames()`` runs (the
    iteration then ends quietly), and finalises a recording. Sources are context managers.
    """

    description: str = ""
    #: Whether reading a frame costs little time outside the interpreter lock (frames held
    #: in memory, or decoded by the RealSense SDK's own threads): a capture thread then
    #: overlaps nothing with the tracker's work and only adds hand-overs
    #: (``tracker.pipeline.default_read_ahead``). Not so for PNGs decoded as they are read,
    #: or frames rendered.
    light_to_read: bool = False

    def __init__(self) -> None:
        self._closed = threading.Event()
        # For the RealSense SDK's streams: the thread running the stream's generator, None
        # while it is suspended at a yield (it then holds no SDK frame) or not started; and
        # whether the stream has stopped its pipeline itself.
        self._stream_thread: int | None = None
        self._stream_stopped = threading.Event()
        # Held while a pipeline is stopped (which finalises a recording): a close() that
        # comes meanwhile returns only once that stop is done.
        self._stopping = threading.Lock()

    def _stop_left_to_the_stream(self) -> bool:
        """In a close() from another thread while the stream runs in the SDK: wait for it to
        see the close, let go of its frames and stop its pipeline itself (librealsense may
        crash freeing a frame after its pipeline's stop). False where the caller stops it: no
        other thread runs the stream, or it did not stop in time (a camera restarting)."""
        thread = self._stream_thread
        if thread is None or thread == threading.get_ident():
            return False
        return self._stream_stopped.wait(_STREAM_STOP_WAIT_S)

    @abc.abstractmethod
    def frames(self) -> Iterator[DepthFrame]:
        """Yield the frames of this source until its end."""

    def close(self) -> None:
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __iter__(self) -> Iterator[DepthFrame]:
        return self.frames()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}>"

    def _sleep_until(self, deadline: float) -> bool:
        """Wait until ``time.perf_counter()`` reaches ``deadline``; False if closed meanwhile."""
        delay = deadline - time.perf_counter()
        if delay > 0:
            # Event.wait refuses a timeout past the platform's limit (hundreds of years)
            # with an OverflowError: a recording's timestamp that far ahead waits as long.
            return not self._closed.wait(min(delay, threading.TIMEOUT_MAX))
        return not self._closed.is_set()


# ---------------------------------------------------------------------------- librealsense helpers


def _import_rs():
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # the SDK is optional for folders and synthetic input
        raise SourceError(
            f"pyrealsense2 is not installed ({exc}); install it with `pip install pyrealsense2` "
            "to use RealSense cameras and recordings"
        ) from exc
    return rs


def _from_float32(value: float) -> float:
    """The shortest decimal that is the same float32 as ``value``.

    librealsense stores intrinsics and the depth unit as float32, so 0.000125 comes back as
    0.0001250000059371814. The shortest decimal with the same float32 is what the device or
    recording was given; using it makes values round-trip exactly through recordings.
    """
    return float(np.format_float_scientific(np.float32(value), unique=True))


def _distortion_from_rs(model, where: str) -> DistortionModel:
    """The lens model of an ``rs.distortion``; ``where``: "recording PATH" and the like."""
    try:
        return DistortionModel(model.name)
    except ValueError:
        supported = ", ".join(m.value for m in DistortionModel)
        raise SourceError(
            f"{where}: the depth stream uses the lens model '{model.name}', which the tracker cannot "
            f"(un)project; supported: {supported}"
        ) from None


def _intrinsics_from_rs(rs, intrinsics, where: str) -> CameraIntrinsics:
    """CameraIntrinsics from an ``rs.intrinsics`` (lens model and coefficients included)."""
    distortion = _distortion_from_rs(intrinsics.model, where)
    return CameraIntrinsics(
        width=intrinsics.width,
        height=intrinsics.height,
        fx=_from_float32(intrinsics.fx),
        fy=_from_float32(intrinsics.fy),
        cx=_from_float32(intrinsics.ppx),
        cy=_from_float32(intrinsics.ppy),
        distortion=distortion,
        coeffs=tuple(_from_float32(c) for c in intrinsics.coeffs),
    )


def _intrinsics_to_rs(rs, intrinsics: CameraIntrinsics):
    out = rs.intrinsics()
    out.width, out.height = intrinsics.width, intrinsics.height
    out.fx, out.fy, out.ppx, out.ppy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    out.model = getattr(rs.distortion, intrinsics.distortion.value)
    out.coeffs = list(intrinsics.coeffs)
    return out


class _DepthFrameConverter:
    """Turns librealsense depth frames into DepthFrames (intrinsics cached per stream profile)."""

    def __init__(self, rs, serial: str, where: str) -> None:
        self._rs = rs
        self._serial = serial
        self._where = where  # "recording PATH", "RealSense camera SERIAL": for error messages
        self._intrinsics: dict[tuple[int, int, int], CameraIntrinsics] = {}

    def __call__(self, depth) -> DepthFrame:
        try:
            profile = depth.profile.as_video_stream_profile()
            key = (profile.unique_id(), profile.width(), profile.height())
            intrinsics = self._intrinsics.get(key)
            if intrinsics is None:
                intrinsics = self._intrinsics[key] = _intrinsics_from_rs(self._rs, profile.get_intrinsics(), self._where)
            # Copy: the SDK recycles a small pool of frame buffers, and holding them stalls the stream.
            pixels = np.array(np.asanyarray(depth.get_data()), dtype=np.uint16, copy=True)
            return DepthFrame(
                depth=pixels,
                depth_scale=_from_float32(depth.get_units()),
                intrinsics=intrinsics,
                timestamp_ms=float(depth.get_timestamp()),
                serial=self._serial,
                frame_number=int(depth.get_frame_number()),
            )
        except ValueError as exc:  # a zero depth unit, impossible intrinsics: what DepthFrame refuses
            raise SourceError(f"{self._where}: depth frame {depth.get_frame_number()} cannot be used: {exc}") from exc
        finally:
            # An error's traceback keeps this call's locals, and with them the SDK's frame,
            # past the pipeline's stop, which librealsense may crash freeing then.
            depth = None  # noqa: F841


def _png_files(root: Path) -> list[Path]:
    """Every .png under ``root``, in folders linked into it too (each folder once). Hidden
    files and folders (editor and OS droppings) are not frames. A folder that cannot be
    read is an error rather than frames silently missing."""

    def refuse(error: OSError) -> None:
        raise SourceError(f"cannot read folder {error.filename}: {error.strerror or error}")

    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=refuse):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link to one folder
            subfolders[:] = []
            continue
        seen.add(real)
        # Real folders before links to them, in name order: one listing on every filesystem.
        # lost+found (a drive's root) belongs to the file system, not the recording.
        subfolders[:] = sorted(
            (d for d in subfolders if not d.startswith(".") and d != "lost+found"),
            key=lambda d: (os.path.islink(os.path.join(folder, d)), d),
        )
        found += [Path(folder) / n for n in names if n.lower().endswith(".png") and not n.startswith(".")]
    return found


def _device_info(rs, device, info, default: str = "") -> str:
    return device.get_info(info) if device.supports(info) else default


def _depth_frame_of(frame):
    """The depth frame in what a pipeline delivers (a frameset, or the frame itself), or None."""
    if frame.is_frameset():
        depth = frame.as_frameset().get_depth_frame()
        return depth if depth else None
    return frame.as_depth_frame() if frame.is_depth_frame() else None


def _stop_pipeline(pipe) -> None:
    try:
        pipe.stop()
    except RuntimeError:  # not started or already stopped: nothing to release
        pass


# ---------------------------------------------------------------------------- live camera

#: The depth mode a live camera is asked for (``RealSenseSource``): the D4xx's native depth
#: resolution at its highest rate for it.
DEFAULT_DEPTH_MODE = (848, 480, 90)


def _depth_modes(rs, device) -> tuple[tuple[int, int, int], ...]:
    """The z16 depth modes (width, height, fps) ``device``'s depth sensors offer, largest and
    fastest first; empty for a device without a depth sensor."""
    modes = set()
    for sensor in device.query_sensors():
        if not sensor.is_depth_sensor():
            continue
        for p in sensor.get_stream_profiles():
            if p.stream_type() == rs.stream.depth and p.format() == rs.format.z16 and p.is_video_stream_profile():
                v = p.as_video_stream_profile()
                modes.add((v.width(), v.height(), v.fps()))
    return tuple(sorted(modes, key=lambda mode: (-mode[0] * mode[1], -mode[2])))


def closest_depth_mode(modes, width: int, height: int, fps: int) -> tuple[int, int, int]:
    """Of ``modes`` (width, height, fps), the one closest to the one asked for: resolution
    first (the crop and the network see pixels), then frame rate, then the faster."""

    def distance(mode):
        w, h, f = mode
        return (abs(math.log(w / width)) + abs(math.log(h / height)), abs(math.log(f / fps)), -f)

    return min(modes, key=distance)


@dataclass(frozen=True)
class CameraListing:
    """A connected RealSense device as ``list_cameras`` finds it.

    depth_modes: its z16 depth modes (width, height, fps), largest and fastest first; empty
    for a device without a depth sensor (a tracking camera, one in recovery mode). usb and
    firmware: as the SDK reports them ("" where it does not).
    """

    name: str
    serial: str
    firmware: str
    usb: str
    depth_modes: tuple[tuple[int, int, int], ...]

    @property
    def default_mode(self) -> tuple[int, int, int] | None:
        """The depth mode ``RealSenseSource`` streams by default on this device."""
        return closest_depth_mode(self.depth_modes, *DEFAULT_DEPTH_MODE) if self.depth_modes else None


def list_cameras() -> list[CameraListing]:
    """The RealSense devices connected now. Raises SourceError without the SDK, or when the
    SDK fails to list them (USB trouble)."""
    rs = _import_rs()
    found = []
    try:
        for device in rs.context().query_devices():
            try:
                modes = _depth_modes(rs, device)
            except RuntimeError:  # a device half-way through re-enumerating
                modes = ()
            found.append(
                CameraListing(
                    name=_device_info(rs, device, rs.camera_info.name, "unknown device"),
                    serial=_device_info(rs, device, rs.camera_info.serial_number, "?"),
                    firmware=_device_info(rs, device, rs.camera_info.firmware_version),
                    usb=_device_info(rs, device, rs.camera_info.usb_type_descriptor),
                    depth_modes=modes,
                )
            )
    except RuntimeError as exc:
        raise SourceError(f"the RealSense SDK failed while listing cameras: {exc}; reconnect the camera and try again") from exc
    return found


@dataclass(frozen=True)
class _ConnectedDevice:
    name: str
    serial: str
    has_depth: bool

    def __str__(self) -> str:
        return f"{self.name} (serial {self.serial}{'' if self.has_depth else ', no depth sensor'})"


class RealSenseSource(FrameSource):
    """A live RealSense depth camera.

    serial: which camera (None: the first one with a depth sensor).
    width, height, fps: the depth mode; 848x480 @ 90 fps is the D4xx's native depth resolution
        at its highest rate for it: the least motion blur between frames and the lowest
        latency. A camera that does not offer it (a D4xx on a USB 2 port, another model) streams the
        closest z16 depth mode it has, and ``description`` says so.
    record_path: if set (a ``.db3``), every raw depth frame is also recorded there;
        ``close()`` finalises the file. After a reconnect, recording continues in
        ``<name>-part2.db3``, ``-part3`` ... (the SDK finalises a file when its stream stops).
        Opening refuses a path where that file or any of its parts exists already.
    max_depth_m, min_depth_m: the threshold filter's range (None: no threshold filter).
    spatial, temporal, hole_filling: librealsense's other depth filters, off by default.
    frame_timeout_s: no frame for this long counts as a disconnect.
    reconnect_attempts: how often to try to get the camera back before giving up. Counted
        from the last frame: a restart after which no frame arrives is a failed attempt.
        Each reconnect chooses the depth mode again (a camera replugged into a USB 2 port
        offers fewer), and ``description`` follows a change.

    Post-processing, chosen for hand tracking: only the threshold filter is on. It zeroes
    everything beyond ``max_depth_m`` (the room behind the user, and the far-range noise of a
    stereo camera), which keeps the "nearest object" segmentation on the hand, and it costs
    well under a millisecond without adding latency. The spatial filter (edge-preserving
    smoothing) rounds off and merges fingers a few pixels wide; the temporal filter averages
    over past frames, so a moving hand leaves a smeared trail and its position lags; hole
    filling invents depth in the gaps between fingers and along silhouettes. All three change
    the finger geometry the network has learned from raw-like (synthetic stereo noise) data,
    so they are off. Recordings always hold the raw, unfiltered frames.
    """

    DEFAULT_MAX_DEPTH_M = 2.0
    #: The SDK's threshold filter takes distances up to this; beyond, it raises a bare error.
    THRESHOLD_FILTER_LIMIT_M = 16.0
    # Wait before the first reconnect attempt; it doubles with each further one, up to 8 s.
    _RECONNECT_DELAY_S = 0.5

    def __init__(
        self,
        serial: str | None = None,
        width: int = DEFAULT_DEPTH_MODE[0],
        height: int = DEFAULT_DEPTH_MODE[1],
        fps: int = DEFAULT_DEPTH_MODE[2],
        record_path: str | os.PathLike | None = None,
        *,
        max_depth_m: float | None = DEFAULT_MAX_DEPTH_M,
        min_depth_m: float = 0.1,
        spatial: bool = False,
        temporal: bool = False,
        hole_filling: bool = False,
        frame_timeout_s: float = 3.0,
        reconnect_attempts: int = 5,
    ) -> None:
        super().__init__()
        rs = self._rs = _import_rs()
        if width <= 0 or height <= 0 or fps <= 0:
            raise SourceError(f"the depth mode must be positive, got {width}x{height} @ {fps} fps")
        if max_depth_m is not None and not 0 <= min_depth_m < max_depth_m:
            raise SourceError(f"the threshold range must satisfy 0 <= min < max, got {min_depth_m}-{max_depth_m} m")
        if max_depth_m is not None and max_depth_m > self.THRESHOLD_FILTER_LIMIT_M:
            raise SourceError(
                f"max_depth_m must be at most {self.THRESHOLD_FILTER_LIMIT_M:g} m (the SDK's threshold filter's range), "
                f"got {max_depth_m:g}; None turns the filter off"
            )
        self._record_base = None if record_path is None else Path(record_path)
        if self._record_base is not None:
            _check_db3_path(self._record_base, "the recording")
            _refuse_earlier_recording(self._record_base)  # before the camera starts and creates the file
        self._frame_timeout_s = float(frame_timeout_s)
        self._reconnect_attempts = int(reconnect_attempts)
        try:
            self._ctx = rs.context()
            device = self._find_device(serial)
            self.serial = device.serial
        except SourceError:  # no camera, another serial: already says what was found
            raise
        except RuntimeError as exc:  # how librealsense reports USB and firmware trouble
            raise SourceError(f"the RealSense SDK failed while looking for a camera: {exc}; reconnect the camera and try again") from exc
        self._filters = []
        if max_depth_m is not None:
            self._filters.append(rs.threshold_filter(float(min_depth_m), float(max_depth_m)))
        if spatial:
            self._filters.append(rs.spatial_filter())
        if temporal:
            self._filters.append(rs.temporal_filter())
        if hole_filling:
            self._filters.append(rs.hole_filling_filter())
        filters = [f"threshold {min_depth_m:g}-{max_depth_m:g} m"] if max_depth_m is not None else []
        optional = (("spatial", spatial), ("temporal", temporal), ("hole filling", hole_filling))
        filters += [name for name, on in optional if on]
        self._device = device
        self._requested = (width, height, fps)
        self._filter_names = filters
        self._profile: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._pipe = self._queue = None
        self._iterated = False
        self._record_paths: list[Path] = []
        # Since the last frame (or the start): reconnect attempts, those of them that started
        # the camera, and how many recording parts were opened before it.
        self._attempts_without_frame = 0
        self._restarts_without_frame = 0
        self._parts_with_frames = 0
        self._start()
        self._describe()

    def _describe(self) -> None:
        w, h, f = self._profile
        width, height, fps = self._requested
        mode = f"depth {w}x{h} @ {f} fps"
        if (w, h, f) != (width, height, fps):
            mode += f" (the camera does not offer {width}x{height} @ {fps} fps; this is its closest depth mode)"
        depth_unit_mm = 1000 * self._depth_scale
        self.description = (
            f"RealSense {self._device.name} (serial {self.serial}), {mode}, depth unit {depth_unit_mm:g} mm, "
            f"filters: {', '.join(self._filter_names) or 'none'}"
            + (f", recording to {self._record_paths[0]}" if self._record_paths else "")
        )

    @property
    def record_paths(self) -> list[Path]:
        """The recording files written so far (more than one after a reconnect)."""
        return list(self._record_paths)

    def _list_devices(self) -> list[_ConnectedDevice]:
        rs = self._rs
        found = []
        for device in self._ctx.query_devices():
            try:
                has_depth = any(s.is_depth_sensor() for s in device.query_sensors())
            except RuntimeError:
                has_depth = False
            found.append(
                _ConnectedDevice(
                    name=_device_info(rs, device, rs.camera_info.name, "unknown device"),
                    serial=_device_info(rs, device, rs.camera_info.serial_number, "?"),
                    has_depth=has_depth,
                )
            )
        return found

    def _find_device(self, serial: str | None) -> _ConnectedDevice:
        found = self._list_devices()
        cameras = [d for d in found if d.has_depth]
        if not cameras:
            listing = "; ".join(str(d) for d in found) or "nothing"
            raise SourceError(
                f"no RealSense camera connected (found: {listing}); connect a D400-series camera "
                "to a USB 3 port, or use a recording, a folder or 'synthetic' as the source"
            )
        if serial is None:
            return cameras[0]
        for d in cameras:
            if d.serial == serial:
                return d
        listing = ", ".join(f"{d.serial} ({d.name})" for d in cameras)
        raise SourceError(f"no RealSense camera with serial {serial} is connected; connected: {listing}")

    def _device_handle(self):
        rs = self._rs
        try:
            for device in self._ctx.query_devices():
                if _device_info(rs, device, rs.camera_info.serial_number) == self.serial:
                    return device
        except RuntimeError as exc:
            # A camera half-way through re-enumerating makes the SDK throw here; as a
            # SourceError it is one failed attempt the reconnect loop retries, not the end.
            raise SourceError(f"the RealSense SDK failed while listing cameras: {exc}") from exc
        return None

    def _choose_profile(self, handle, width: int, height: int, fps: int) -> tuple[int, int, int]:
        modes = _depth_modes(self._rs, handle)
        if not modes:
            raise SourceError(f"RealSense camera {self._device} offers no z16 depth stream; update its firmware")
        return closest_depth_mode(modes, width, height, fps)

    def _next_record_path(self) -> Path | None:
        if self._record_base is None:
            return None
        part = len(self._record_paths) + 1
        if part == 1:
            return self._record_base
        return self._record_base.with_name(f"{self._record_base.stem}-part{part}{self._record_base.suffix}")

    def _start(self) -> None:
        """Start streaming (the device must be listed: a pipeline start without one blocks ~15 s)."""
        rs = self._rs
        handle = self._device_handle()
        if handle is None:
            raise SourceError(f"RealSense camera {self.serial} is not connected")
        # Chosen on every start, not once: replugged into a USB 2 port, a camera no longer
        # offers the mode it streamed on USB 3, and only the closest one it has now works.
        try:
            w, h, f = self._choose_profile(handle, *self._requested)
        except SourceError:
            raise
        except RuntimeError as exc:
            raise SourceError(
                f"the RealSense SDK failed while reading the depth modes of camera {self.serial}: {exc}"
            ) from exc
        cfg = rs.config()
        cfg.enable_device(self.serial)
        cfg.enable_stream(rs.stream.depth, w, h, rs.format.z16, f)
        record_path = self._next_record_path()
        if record_path is not None:
            cfg.enable_record_to_file(str(record_path))
        pipe = rs.pipeline(self._ctx)
        # Frames arrive in a queue the pipeline fills, not through the pipeline's own wait:
        # that wait restarts a camera that went away by itself, with the same settings, so a
        # recording would start again from an empty file. Here only _reconnect restarts, into
        # the next -partN file.
        queue = rs.frame_queue(2)
        try:
            profile = pipe.start(cfg, queue)
        except RuntimeError as exc:
            raise SourceError(
                f"cannot start RealSense camera {self.serial} at depth {w}x{h} @ {f} fps: {exc}; "
                "is another program using it?"
            ) from exc
        # The file exists from here on, even if what follows fails: the next start records
        # into the next part instead of overwriting this one.
        if record_path is not None:
            self._record_paths.append(record_path)
        try:
            self._depth_scale = _from_float32(profile.get_device().first_depth_sensor().get_depth_scale())
            if not (math.isfinite(self._depth_scale) and self._depth_scale > 0):
                raise RuntimeError(f"it reports {self._depth_scale} m per unit")
        except RuntimeError as exc:
            queue = profile = None  # noqa: F841  (let go of before the stop, with any frames)
            with self._stopping:
                _stop_pipeline(pipe)  # streaming, and perhaps recording, already: stop and finalise
            raise SourceError(f"RealSense camera {self.serial} started but its depth unit could not be read: {exc}") from exc
        # A new converter per start: its intrinsics come from the stream started here.
        self._convert = _DepthFrameConverter(rs, self.serial, f"RealSense camera {self.serial}")
        self._profile = (w, h, f)
        with self._lock:
            closed_meanwhile = self._closed.is_set()  # close() during a reconnect
            if not closed_meanwhile:
                self._pipe, self._queue = pipe, queue
        if closed_meanwhile:
            queue = profile = None  # noqa: F841  (let go of before the stop, with any frames)
            with self._stopping:
                _stop_pipeline(pipe)

    def _stop(self) -> None:
        with self._stopping:
            with self._lock:
                pipe, self._pipe, self._queue = self._pipe, None, None
            if pipe is not None:
                _stop_pipeline(pipe)  # also finalises the recording

    def _frame_arrived(self) -> None:
        self._attempts_without_frame = self._restarts_without_frame = 0
        self._parts_with_frames = len(self._record_paths)

    def _reconnect(self, problem: str) -> None:
        log.warning("RealSense camera %s: %s; reconnecting", self.serial, problem)
        self._stop()
        # Attempts are counted from the last frame, not from the last start: a camera that
        # enumerates and starts but never delivers would otherwise be restarted for ever,
        # each time into a new recording part.
        while self._attempts_without_frame < self._reconnect_attempts:
            attempt = self._attempts_without_frame = self._attempts_without_frame + 1
            if self._closed.wait(min(self._RECONNECT_DELAY_S * 2 ** (attempt - 1), 8.0)):
                return
            mode = self._profile
            try:
                self._start()
            except SourceError as exc:
                log.warning(
                    "RealSense camera %s: reconnect attempt %d/%d failed: %s",
                    self.serial, attempt, self._reconnect_attempts, exc,
                )
                continue
            self._restarts_without_frame += 1
            log.warning("RealSense camera %s: reconnected (attempt %d)", self.serial, attempt)
            if self._profile != mode:
                log.warning(
                    "RealSense camera %s: now streams depth %dx%d @ %d fps instead of %dx%d @ %d fps, "
                    "the closest mode it offers on this connection (a USB 2 port offers fewer)",
                    self.serial, *self._profile, *mode,
                )
                self._describe()
            return
        if self._restarts_without_frame:
            what = (
                f"{self._reconnect_attempts} reconnect attempts since its last frame: the camera restarted "
                f"{self._restarts_without_frame} times but sent no frame after any restart; unplug it, wait "
                "a few seconds and plug it into a USB 3 port"
            )
        else:
            what = f"{self._reconnect_attempts} attempts to reconnect failed; check the USB cable and port (USB 3)"
        recorded = ""
        if self._record_paths:
            recorded = f"; recorded: {', '.join(str(p) for p in self._record_paths)}"
            empty = self._record_paths[self._parts_with_frames:]
            if empty:
                recorded += f" ({', '.join(p.name for p in empty)} hold no frames)"
        raise SourceError(f"RealSense camera {self.serial} stopped delivering frames ({problem}); {what}{recorded}")

    def frames(self) -> Iterator[DepthFrame]:
        """Frames until ``close()``; a camera stream can be iterated once."""
        if self._iterated:
            raise SourceError("a RealSense stream can be iterated once; open a new RealSenseSource")
        self._iterated = True
        self._stream_thread = threading.get_ident()
        try:
            last_frame = time.perf_counter()
            while not self._closed.is_set():
                with self._lock:
                    queue = self._queue
                if queue is None:
                    return
                try:
                    ok, frame = queue.try_wait_for_frame(_POLL_MS)
                    problem = None
                except RuntimeError as exc:
                    ok, problem = False, f"the SDK reported: {exc}"
                if self._closed.is_set():
                    return
                if ok:
                    depth = _depth_frame_of(frame)
                    if depth is None:
                        continue
                    self._frame_arrived()
                    for f in self._filters:
                        depth = f.process(depth)
                    last_frame = time.perf_counter()
                    converted = self._convert(depth.as_depth_frame())
                    # Not held while the consumer works (as in RecordingSource), nor the queue
                    # and the frames it may hold: a close() from another thread meanwhile
                    # stops the pipeline at once (while the stream runs, it leaves the stop to
                    # the stream: _stop_left_to_the_stream).
                    frame = depth = queue = None
                    self._stream_thread = None
                    yield converted
                    self._stream_thread = threading.get_ident()
                    continue
                if problem is None and time.perf_counter() - last_frame < self._frame_timeout_s:
                    continue
                frame = depth = queue = None  # _reconnect stops the pipeline: they go first, as at the end
                self._reconnect(problem or f"no frame for {self._frame_timeout_s:g} s")
                last_frame = time.perf_counter()
        finally:
            # The stream ends with the iteration (also when the consumer stops early); the
            # SDK's last frames go first, the queue's too: librealsense may crash freeing
            # frames after a stop.
            frame = depth = queue = None  # noqa: F841
            self._stream_thread = threading.get_ident()  # also when closed while suspended
            self.close()
            self._stream_stopped.set()

    def close(self) -> None:
        super().close()
        if not self._stop_left_to_the_stream():
            self._stop()


# ---------------------------------------------------------------------------- recordings


def _refuse_earlier_recording(base: Path) -> None:
    """Refuse a record path where a recording, or a -partN of one, exists: a new run would
    overwrite the file and some parts and leave the rest, a mix of two runs."""
    part = re.compile(re.escape(base.stem) + r"-part[0-9]+" + re.escape(base.suffix))
    try:
        names = sorted(n for n in os.listdir(base.parent) if n == base.name or part.fullmatch(n))
    except OSError as exc:
        raise SourceError(f"cannot read folder {base.parent}: {exc.strerror or exc}") from exc
    if names:
        raise SourceError(
            f"cannot record to {base}: {', '.join(names)} from an earlier recording already "
            f"{'exists' if len(names) == 1 else 'exist'} in {base.parent}, and a new recording would "
            "overwrite them. Choose another name or move them away"
        )


#: The first bytes of every SQLite file, and so of every .db3 recording.
SQLITE_MAGIC = b"SQLite format 3\x00"


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def _db3_suffix_case_error(path: Path, what: str) -> SourceError | None:
    """librealsense tells a ROS 2 recording by its suffix, case-sensitively: it reads (and
    refuses to write) a ``.DB3`` file as a ROS 1 bag, and calls a good recording corrupt."""
    if path.suffix.lower() == ".db3" and path.suffix != ".db3":
        return SourceError(
            f"{what} {path} must end in a lower-case .db3: librealsense tells the format by the suffix "
            f"and reads {path.suffix} as an old .bag; rename it to {path.with_suffix('.db3').name}"
        )
    return None


def _check_sdk_path(path: Path, what: str) -> None:
    """pyrealsense2 takes a path only as UTF-8 text: given one whose name holds another
    encoding's byte (a Latin-1 name from a zip file or a Windows share) it raises a bare
    TypeError about its arguments. ``what``: "cannot open recording PATH" and the like."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        try:
            path.name.encode("utf-8")
            rename = "rename the folders in it whose names are not"
        except UnicodeEncodeError:
            rename = "rename the file"
        raise SourceError(f"{what}: the RealSense SDK cannot open a path that is not valid UTF-8; {rename}") from None


def _check_db3_path(path: Path, what: str) -> None:
    _check_sdk_path(path, f"cannot record to {path}")
    case_error = _db3_suffix_case_error(path, what)
    if case_error is not None:
        raise case_error
    if path.suffix.lower() != ".db3":
        raise SourceError(
            f"{what} {path} must end in .db3: librealsense >= 2.58 records only ROS 2 .db3 files "
            "(.bag files still play back)"
        )
    if not path.parent.is_dir():
        raise SourceError(f"cannot write {path}: the folder {path.parent} does not exist")
    # Found now: the SDK would fail only as the camera starts, with a message about the
    # device ("is another program using it?").
    probe = path.parent / f".{path.name}.probe-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SourceError(f"cannot write {path}: {exc.strerror or exc}") from None


class RecordingSource(FrameSource):
    """A RealSense recording (``.db3``, or ``.bag`` from older SDKs): its depth stream, in order.

    realtime: True plays at the recorded pace and, like a live camera, skips frames the
        consumer is too slow for; False delivers every frame as fast as it is consumed.
    stall_timeout_s: while the playback says it is playing, a gap without frames longer than
        this is an error (a recording paused for longer would be cut here).

    Opening checks the file (missing, not a recording, truncated, no depth stream) and fails
    fast with a SourceError. A frame that cannot be decoded midway ends the playback: the
    frames before it have been yielded, then SourceError. (librealsense only logs such a
    failure, so it is recognised by the playback stopping short of the file's duration; a
    failure within the last two frames looks like the end.)
    """

    # Played as fast as possible to a GPU backend, 1.17 times the frames without a capture
    # thread (benchmarks/results/pipeline_speed_cpu_tracker_thread_recording_read_ahead*.json).
    light_to_read = True

    def __init__(self, path: str | os.PathLike, realtime: bool = True, *, stall_timeout_s: float = 10.0) -> None:
        super().__init__()
        rs = self._rs = _import_rs()
        self.path = Path(path)
        self.realtime = bool(realtime)
        self._stall_timeout_s = float(stall_timeout_s)
        if self.path.suffix.lower() not in RECORDING_SUFFIXES:
            raise SourceError(f"{self.path} is not a RealSense recording: expected a .db3 or .bag file")
        case_error = _db3_suffix_case_error(self.path, "recording")
        if case_error is not None:
            raise case_error
        if not self.path.is_file():
            raise SourceError(f"recording {self.path} " + ("is not a regular file" if self.path.exists() else "does not exist"))
        if self.path.stat().st_size == 0:
            raise SourceError(f"recording {self.path} is empty (0 bytes); was the recording finalised?")
        _check_sdk_path(self.path, f"cannot open recording {self.path}")
        self._lock = threading.Lock()
        self._pipe = None
        self._running = False
        # Probe: resolve every stream of the file (no enable_stream), which reads the file's
        # index and device description without playing anything.
        cfg = rs.config()
        cfg.enable_device_from_file(str(self.path), repeat_playback=False)
        device = self._resolve(cfg, rs.pipeline()).get_device()
        streams = []
        depth = []
        other_fps = []
        depth_sensor = None
        for sensor in device.query_sensors():
            for p in sensor.get_stream_profiles():
                streams.append(f"{p.stream_name()} {_profile_text(p)}")
                if p.stream_type() == rs.stream.depth:
                    depth.append(p)
                    depth_sensor = sensor
                elif p.fps() > 0:
                    other_fps.append(p.fps())
        # How far the file may run on past its last depth frame when it is complete: other
        # streams (colour, IMU) go on until their own last frame, and their sensors stop one
        # after another. Two intervals of the slowest of them, and half a second for the stops.
        self._tail_allowance_ns = (2e9 / min(other_fps) + 0.5e9) if other_fps else 0.0
        if not streams:
            raise SourceError(
                f"recording {self.path} holds no frames at all (the camera was stopped before its first frame arrived)"
            )
        if not depth:
            raise SourceError(
                f"recording {self.path} has no depth stream (it holds: {', '.join(streams)}); record with the depth stream enabled"
            )
        z16 = [p for p in depth if p.format() == rs.format.z16]
        if not z16:
            raise SourceError(
                f"the depth stream of {self.path} is {', '.join(_profile_text(p) for p in depth)}; "
                "the tracker needs z16 depth"
            )
        for p in z16:  # refused here rather than at the first frame, before anything is tracked
            _distortion_from_rs(p.as_video_stream_profile().get_intrinsics().model, f"recording {self.path}")
        try:
            units = depth_sensor.get_option(rs.option.depth_units) if depth_sensor.supports(rs.option.depth_units) else None
        except RuntimeError:
            units = None
        if units is None or not (math.isfinite(units) and units > 0):
            found = "none was recorded" if units is None else f"it says {units} m per unit"
            raise SourceError(
                f"recording {self.path} has no usable depth unit ({found}), so its depth cannot be turned into metres"
            )
        self.serial = _device_info(rs, device, rs.camera_info.serial_number)
        name = _device_info(rs, device, rs.camera_info.name, "unknown device")
        self.duration_s = device.as_playback().get_duration().total_seconds()
        self._recorded_depth_frames = _recorded_depth_frames(self.path)
        pace = "at the recorded pace, skipping frames when slow" if self.realtime else "every frame, as fast as read"
        count, fps = self._recorded_depth_frames, z16[0].fps()
        if self.realtime and count is not None and count > 2 and fps > 0 and self.duration_s < 0.25 * (count - 1) / fps:
            # Written as fast as made (write_recording(pace=False)): in real time nearly all
            # of it would be skipped.
            pace += (
                f"; its {count} frames span {self.duration_s:.1f} s, not the {(count - 1) / fps:.1f} s of {fps} fps: it was written "
                "without real-time spacing, and played in real time most frames are skipped (--no-realtime plays every one)"
            )
        self.description = (
            f"recording {self.path} ({name}, serial {self.serial or 'not recorded'}, depth {_profile_text(z16[0])}, "
            f"{self.duration_s:.1f} s), played {pace}"
        )

    def _resolve(self, cfg, pipe):
        try:
            return cfg.resolve(pipe)
        except RuntimeError as exc:
            if self.path.suffix.lower() != ".db3" and _starts_with(self.path, SQLITE_MAGIC):
                # librealsense tells the format by the suffix alone.
                raise SourceError(
                    f"cannot open recording {self.path}: it is a .db3 recording (ROS 2, SQLite) under another suffix, which "
                    f"librealsense reads as an old .bag; rename it to {self.path.with_suffix('.db3').name}"
                ) from exc
            raise SourceError(
                f"cannot open recording {self.path}: it is truncated, corrupt or not a RealSense recording "
                f"(librealsense: {exc})"
            ) from exc

    def frames(self) -> Iterator[DepthFrame]:
        """Every depth frame of the recording (a new playback from the start on each call)."""
        rs = self._rs
        with self._lock:
            if self._running:
                raise SourceError(f"recording {self.path} is already being played; open a second RecordingSource")
            if self._closed.is_set():
                raise SourceError(f"recording {self.path} was closed")
            self._running = True
        try:
            cfg = rs.config()
            cfg.enable_device_from_file(str(self.path), repeat_playback=False)
            cfg.enable_stream(rs.stream.depth)  # before resolve: see the module docstring
            pipe = rs.pipeline()
            device = self._resolve(cfg, pipe).get_device()
            playback = device.as_playback()
            playback.set_real_time(self.realtime)  # before start, or early frames are lost
            try:
                pipe.start(cfg)
            except RuntimeError as exc:
                raise SourceError(f"cannot play recording {self.path}: {exc}") from exc
            with self._lock:
                self._pipe = pipe
            self._stream_stopped.clear()  # before the thread is named: no earlier playback's "stopped"
            self._stream_thread = threading.get_ident()
            yield from self._play(pipe, playback, _DepthFrameConverter(rs, self.serial, f"recording {self.path}"))
        finally:
            with self._stopping:
                with self._lock:
                    pipe, self._pipe, self._running = self._pipe, None, False
                if pipe is not None:
                    _stop_pipeline(pipe)
            self._stream_thread = None
            self._stream_stopped.set()

    def _play(self, pipe, playback, convert) -> Iterator[DepthFrame]:
        rs = self._rs
        count = 0
        last_position_ns = 0  # furthest point of the file's timeline seen while frames came
        first_frame = None  # (timestamp ms, file position ns) of the first depth frame
        waiting_since = time.perf_counter()
        draining = False
        frameset = depth = None
        try:
            while True:
                try:
                    ok, frameset = pipe.try_wait_for_frames(_POLL_MS)
                except RuntimeError as exc:
                    if self._closed.is_set():
                        return
                    raise SourceError(f"playback of {self.path} failed after {count} frames: {exc}") from exc
                if self._closed.is_set():
                    return
                if ok:
                    depth = frameset.get_depth_frame()
                    last_position_ns = max(last_position_ns, playback.get_position())
                    waiting_since = time.perf_counter()
                    if depth:
                        # A stopped playback says it is at 0, yet frames it queued before stopping
                        # still come (real time, behind a slow consumer): each frame's own
                        # timestamp places it on the file's timeline as well.
                        stamp_ms = depth.get_timestamp()
                        if first_frame is None:
                            first_frame = (stamp_ms, last_position_ns)
                        elif stamp_ms > first_frame[0]:
                            last_position_ns = max(last_position_ns, first_frame[1] + int((stamp_ms - first_frame[0]) * 1e6))
                        count += 1
                        converted = convert(depth)
                        # While the consumer works on it (a capture thread blocked on a full
                        # queue, a close() from another thread) the SDK's frames are let go:
                        # one held takes a buffer from the SDK's small pool, and one freed after
                        # the pipeline's stop may crash librealsense.
                        frameset = depth = None
                        self._stream_thread = None
                        yield converted
                        self._stream_thread = threading.get_ident()
                        if self._closed.is_set():  # closed meanwhile, the pipeline perhaps stopped: no SDK call
                            return
                        # The playback ran on while the consumer worked (real time): sample again.
                        last_position_ns = max(last_position_ns, playback.get_position())
                    continue
                if playback.current_status() == rs.playback_status.stopped:
                    # A frame may have been queued between the timed-out wait and the status
                    # read; only a second empty wait after "stopped" is the end.
                    if not draining:
                        draining = True
                        continue
                    self._check_complete(count, last_position_ns)
                    return
                draining = False
                if time.perf_counter() - waiting_since > self._stall_timeout_s:
                    raise SourceError(
                        f"playback of {self.path} stalled: no frame for {self._stall_timeout_s:g} s after {count} frames "
                        f"although it is at {playback.get_position() / 1e9:.2f} s of {self.duration_s:.2f} s"
                    )
        finally:
            # Ended early (the consumer stopped), this frame and the SDK's last frames in it
            # outlive the pipeline's stop, held by the exception's traceback: librealsense
            # may crash freeing frames after that. They go now.
            frameset = depth = None  # noqa: F841

    def _check_complete(self, count: int, last_position_ns: int) -> None:
        duration_ns = self.duration_s * 1e9
        if count == 0:
            raise SourceError(f"recording {self.path} has a depth stream but no depth frame could be read from it")
        if not self.realtime and self._recorded_depth_frames is not None:
            # Played frame by frame, every depth frame the file holds comes: an exact count.
            # The timeline below is a bound, and a playback that read on past the frame it
            # could not decode (as it may on a busy machine) can stretch it over the rest.
            if count < self._recorded_depth_frames:
                raise SourceError(
                    f"recording {self.path} stopped after {count} of its {self._recorded_depth_frames} depth frames: "
                    "the next frame could not be read (the file is corrupt there)"
                )
            return
        # The last depth frame may precede the file's last message (metadata) by up to a frame
        # interval; allow two average intervals plus a millisecond, and what other streams add.
        interval_ns = last_position_ns / max(count - 1, 1)
        if last_position_ns + 2 * interval_ns + 1e6 + self._tail_allowance_ns < duration_ns:
            raise SourceError(
                f"recording {self.path} stopped at {last_position_ns / 1e9:.2f} s of {duration_ns / 1e9:.2f} s after "
                f"{count} frames: the next frame could not be read (the file is corrupt there)"
            )

    def close(self) -> None:
        super().close()
        if self._stop_left_to_the_stream():
            return
        with self._stopping:
            with self._lock:
                pipe = self._pipe
            if pipe is not None:
                _stop_pipeline(pipe)  # a wait in progress on another thread then ends the iteration


def _recorded_depth_frames(path: Path) -> int | None:
    """The depth images a ``.db3`` recording holds, counted in its SQLite tables; None where
    that cannot be told: a ROS 1 ``.bag``, more than one depth stream, other tables."""
    if path.suffix.lower() != ".db3":
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            topics = db.execute(r"SELECT id FROM topics WHERE name LIKE '%/Depth\_%/image/data%' ESCAPE '\'").fetchall()
            if len(topics) != 1:
                return None
            return int(db.execute("SELECT COUNT(*) FROM messages WHERE topic_id = ?", topics[0]).fetchone()[0])
    except sqlite3.Error:
        return None


def _profile_text(p) -> str:
    fmt = p.format().name
    if p.is_video_stream_profile():
        v = p.as_video_stream_profile()
        return f"{v.width()}x{v.height()} @ {p.fps()} fps {fmt}"
    return f"@ {p.fps()} Hz {fmt}"


def write_recording(
    path: str | os.PathLike,
    frames: Iterable[DepthFrame],
    *,
    fps: int = 30,
    pace: bool = True,
) -> int:
    """Write depth frames into a RealSense ``.db3`` recording; returns the number written.

    The first frame sets the stream (intrinsics, depth unit, serial); every frame must match
    it. Depth, frame numbers, intrinsics (with the lens model), the depth unit and the serial
    play back exactly with ``RecordingSource`` or any RealSense tool; timestamps to the
    nanosecond (the file keeps them to 1e-6 ms). ``fps`` is the nominal rate written into the
    stream profile.

    pace: the SDK places each frame in the file's timeline at the moment it is handed over,
        so frames are handed over at the spacing of their timestamps; real-time playback then
        runs at the right speed. Without pacing the file is written as fast as possible and
        plays back correctly only with ``realtime=False``.

    An existing file is replaced. If the frames run out early or one is rejected, the frames
    written so far stay in a finalised file and the error propagates.
    """
    rs = _import_rs()
    path = Path(path)
    _check_db3_path(path, "the recording")
    if fps <= 0:
        raise SourceError(f"fps must be positive, got {fps}")
    iterator = iter(frames)
    first = next(iterator, None)
    if first is None:
        raise SourceError(f"no frames to write to {path}")
    if path.exists():
        path.unlink()
    intrinsics, scale = first.intrinsics, first.depth_scale
    written = 0
    device = rs.software_device()
    device.register_info(rs.camera_info.name, "dgn-hand-tracker software depth camera")
    if first.serial:
        device.register_info(rs.camera_info.serial_number, first.serial)
    sensor = device.add_sensor("Depth")
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = rs.stream.depth, 0, 1
    stream.width, stream.height, stream.fps = intrinsics.width, intrinsics.height, int(fps)
    stream.bpp, stream.fmt = 2, rs.format.z16
    stream.intrinsics = _intrinsics_to_rs(rs, intrinsics)
    profile = sensor.add_video_stream(stream, True).as_video_stream_profile()
    # The depth unit is an option of the depth sensor; the recorder stores it with the stream.
    sensor.add_read_only_option(rs.option.depth_units, float(scale))
    recorder = rs.recorder(str(path), device)
    recorded = recorder.query_sensors()[0]
    recorded.open(recorded.get_stream_profiles()[0])
    # Frames are recorded as they pass the recorder; a one-slot queue that drops them
    # afterwards keeps nothing alive (no Python callback, so no GIL hand-offs either).
    sink = rs.frame_queue(1)
    recorded.start(sink)
    try:
        began, first_ts = time.perf_counter(), first.timestamp_ms
        for index, frame in enumerate(_chain(first, iterator)):
            if frame.intrinsics != intrinsics or frame.depth_scale != scale or frame.serial != first.serial:
                raise SourceError(
                    f"frame {index} (number {frame.frame_number}, serial {frame.serial!r}) has intrinsics {frame.intrinsics} "
                    f"and depth unit {frame.depth_scale} m, but the recording's stream was set up from the first frame "
                    f"(serial {first.serial!r}) with {intrinsics} and {scale} m; a recording holds one camera's depth stream"
                )
            if pace:
                delay = began + (frame.timestamp_ms - first_ts) / 1000.0 - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            out = rs.software_video_frame()
            out.pixels = np.ascontiguousarray(frame.depth)  # copied by the SDK
            out.stride, out.bpp = 2 * intrinsics.width, 2
            out.timestamp = float(frame.timestamp_ms)
            out.domain = rs.timestamp_domain.hardware_clock
            out.frame_number = int(frame.frame_number)
            out.profile = profile
            sensor.on_video_frame(out)
            written += 1
    finally:
        # Finalise: stop and close the recorded sensor (this flushes the file), then release
        # the recorder before the device it wraps.
        recorded.stop()
        recorded.close()
        del recorded, sink, recorder, sensor, profile, device
    if not path.is_file() or path.stat().st_size == 0:
        raise SourceError(f"librealsense did not write {path} (no file or an empty one after {written} frames)")
    return written


def _chain(first, rest):
    yield first
    yield from rest


# ---------------------------------------------------------------------------- folders of PNGs

#: The frame rates a folder's intrinsics.json may give: a frame every 100 s (a time-lapse)
#: to 10,000 a second; outside them a typo (its timestamps, and a --realtime run's waits,
#: would be days apart or all but equal).
MIN_FOLDER_FPS, MAX_FOLDER_FPS = 0.01, 10000.0

#: The fields of view (degrees, across an image axis) a camera's intrinsics.json may give.
MIN_FIELD_OF_VIEW_DEG, MAX_FIELD_OF_VIEW_DEG = 1.0, 179.0


def _check_camera_plausible(k: CameraIntrinsics) -> None:
    """Refuse (ValueError) a whole camera image's intrinsics that no camera has: a field of
    view outside 1 to 179 degrees across an axis, or the principal point further than the
    image's size outside it. A unit mixed up or a typo would otherwise run and find no hand.
    (Not a check of every CameraIntrinsics: a strip cut from an image keeps the camera's
    focal length and principal point, far outside the strip.)"""
    # Compared as focal length times a tangent against the size: Python compares a float
    # with an int of any size exactly, where the size turned into a float could overflow.
    widest, narrowest = (2 * math.tan(math.radians(fov / 2)) for fov in (MAX_FIELD_OF_VIEW_DEG, MIN_FIELD_OF_VIEW_DEG))
    for axis, size, focal in (("fx", k.width, k.fx), ("fy", k.height, k.fy)):
        if not focal * narrowest <= size <= focal * widest:
            raise ValueError(
                f"{axis}={focal:g} px for an image {size} px across: a field of view outside "
                f"{MIN_FIELD_OF_VIEW_DEG:g}-{MAX_FIELD_OF_VIEW_DEG:g} degrees; is it in pixels?"
            )
    for axis, size, centre in (("cx", k.width, k.cx), ("cy", k.height, k.cy)):
        if not -size <= centre <= 2 * size:
            raise ValueError(f"{axis}={centre:g} px, further than the image's {size} px outside it")


_INTRINSICS_FORMAT = (
    '{"serial": "...", "depth_scale": <metres per unit>, "intrinsics": {"width", "height", "fx", "fy", '
    '"cx", "cy", "distortion": "none" | "brown_conrady" | ..., "coeffs": [5 numbers]}, "fps": <frames a second, optional>}'
)


def _natural_key(name: str) -> tuple:
    """Digit runs compare as numbers: frame_2 before frame_10, s9/ before s10/."""
    # isdecimal, not isdigit: the runs split off are those of \d, and a superscript or a
    # circled digit (frame_1², ①) is a digit but no number int() reads.
    return tuple((0, int(part), "") if part.isdecimal() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)


def _png_sort_key(folder: Path, path: Path):
    # Names equal as numbers (frame_1, frame_01; 1.png, 1.PNG) in the order of their
    # characters: the same order on every file system, whatever order it lists them in. And
    # per folder, so that the frames of s1/ and s01/ do not interleave.
    folders = tuple((_natural_key(part), part) for part in path.parent.relative_to(folder).parts)
    return folders, _natural_key(path.stem), path.name


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey + alpha", 6: "RGBA"}


def _png_header(path: Path) -> tuple[int, int, int, int] | None:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk; None if it has none."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), head[24], head[25]


class FolderSource(FrameSource):
    """16-bit depth PNGs in a folder (and its sub-folders) with an ``intrinsics.json``.

    Frames come in natural order of folder, then file name: digit runs compare as numbers
    (frame_2 before frame_10, s9/ before s10/), and names equal as numbers (frame_01,
    frame_1) in the order of their characters. Hidden files and folders are skipped, and every
    PNG must be a 16-bit single-channel image of its intrinsics' size. Each PNG takes the
    ``intrinsics.json`` nearest to it: its own folder's, else the one above it, and so on
    (above ``path`` too: a session folder of a data set whose camera file sits at its
    root). Each folder of PNGs is a sequence of its own (``DepthFrame.sequence``): the
    tracker starts a new track at the first frame of the next. Frame i comes 1 / fps seconds
    after frame i - 1 (at frame i - 1's rate), and its frame number is i, counted through
    the whole folder.
    fps: the frame rate of every frame; by default each frame's is the ``"fps"`` of its own
    intrinsics.json (the rate the frames were captured at, which the smoothing, a video's
    pace and real-time playback follow), else 30.
    realtime: True paces the frames at ``fps``; False yields them as fast as consumed.
    """

    def __init__(self, path: str | os.PathLike, realtime: bool = False, fps: float | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.realtime = bool(realtime)
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise SourceError(f"fps must be a positive number, got {fps}")
        if not self.path.is_dir():
            raise SourceError(f"{self.path} is not a folder of depth PNGs")
        self.files = sorted(_png_files(self.path), key=lambda p: _png_sort_key(self.path, p))
        if not self.files:
            raise SourceError(f"{self.path} holds no .png depth images (16-bit PNGs, with an intrinsics.json beside them or in a folder above)")
        #: Per folder holding an intrinsics.json: its camera (intrinsics, depth scale, serial),
        #: and the frame rate it gives.
        self._cameras: dict[Path, tuple[CameraIntrinsics, float, str]] = {}
        self._fps: dict[Path, float] = {}
        by_folder: dict[Path, Path] = {}  # looked up once a folder, not once a PNG
        for path in self.files:
            if path.parent not in by_folder:
                by_folder[path.parent] = self._camera_folder(path.parent)
        camera_folders = [by_folder[path.parent] for path in self.files]
        #: Per file, its camera, from the nearest intrinsics.json.
        self._camera_of = [self._cameras[folder] for folder in camera_folders]
        # The source's own camera (its description, callers that ask): the top folder's where
        # its PNGs use it, else its first frame's.
        top = Path(os.path.abspath(self.path))  # as _camera_folder keys the cameras
        own = top if top in self._cameras else camera_folders[0]
        self.intrinsics, self.depth_scale, self.serial = self._cameras[own]
        self.fps = float(fps) if fps is not None else self._fps[own]
        # Each frame timed at the rate of its own intrinsics.json (all at ``fps`` where given):
        # frame i comes 1 / rate after frame i - 1, at frame i - 1's rate.
        rates = [self.fps] * len(self.files) if fps is not None else [self._fps[folder] for folder in camera_folders]
        self._timestamps_ms: list[float] = []
        start_ms, start = 0.0, 0
        for index, rate in enumerate(rates):
            if index and rate != rates[index - 1]:
                start_ms, start = start_ms + 1000.0 * (index - start) / rates[index - 1], index
            self._timestamps_ms.append(start_ms + 1000.0 * (index - start) / rate)
        rates_differ = len(set(rates)) > 1
        self._check_headers()
        k = self.intrinsics
        cameras = len(set(self._camera_of))
        sequences = len({path.parent for path in self.files})
        above = [folder for folder in self._cameras if folder != top and top.is_relative_to(folder)]
        self.description = (
            f"folder {self.path} ({len(self.files)} depth PNGs"
            + (f" in {sequences} sequences" if sequences > 1 else "")
            + (f", the camera of {above[0] / 'intrinsics.json'}" if above else "")
            + (f", {cameras} intrinsics.json files; the first " if cameras > 1 else " ")
            + f"{k.width}x{k.height}, depth unit {1000 * self.depth_scale:g} mm, serial {self.serial or 'not given'}) at {self.fps:g} fps"
            + (" (each sequence at its own intrinsics.json's rate)" if rates_differ else "")
            + (" in real time" if self.realtime else "")
        )

    @staticmethod
    def _no_intrinsics(folder: Path) -> str:
        return (
            f"{folder} has no intrinsics.json; the depth unit and the camera intrinsics of the PNGs are "
            f"needed. Expected {folder / 'intrinsics.json'} with {_INTRINSICS_FORMAT}"
        )

    def _camera_folder(self, folder: Path) -> Path:
        """The folder of the camera of the PNGs in ``folder``: the nearest at or above it
        with an intrinsics.json, read into ``_cameras`` and ``_fps``."""
        # From the absolute path with ".." taken out: the folders truly above it, past the
        # working folder too (symbolic links are not resolved: a linked sequence folder
        # takes the camera of the folder it is linked into).
        base = Path(os.path.abspath(folder))
        for candidate in (base, *base.parents):
            meta_path = candidate / "intrinsics.json"
            if meta_path.is_file():
                if candidate not in self._cameras:
                    *camera, self._fps[candidate] = self._read_intrinsics(meta_path)
                    self._cameras[candidate] = tuple(camera)
                return candidate
        raise SourceError(self._no_intrinsics(self.path) + (" (nor has any folder above it)" if folder == self.path else f" (nor has {folder}, nor any folder above it)"))

    @staticmethod
    def _read_intrinsics(meta_path: Path) -> tuple[CameraIntrinsics, float, str, float]:
        """(intrinsics, depth scale, serial, frame rate: 30 where the file gives none)."""
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors) is no error
            missing = [k for k in ("depth_scale", "intrinsics") if k not in meta]
            if missing:
                raise ValueError(f"missing {missing}")
            # A misspelt key would otherwise quietly give the default: "frame_rate" 30 fps.
            keys = ("serial", "depth_scale", "intrinsics", "fps")
            unknown = [k for k in meta if k not in keys]
            if unknown:
                raise ValueError(f"unknown keys {unknown}; the keys are {', '.join(keys)}")
            intrinsics = CameraIntrinsics.from_dict(meta["intrinsics"])
            _check_camera_plausible(intrinsics)
            depth_scale = meta["depth_scale"]
            # true would read as 1 (a metre per unit), "0.001" as a number, "90" as a frame
            # rate: none of them is one.
            if isinstance(depth_scale, bool) or not isinstance(depth_scale, (int, float)) or not (math.isfinite(depth_scale) and depth_scale > 0):
                raise ValueError(f'"depth_scale" must be a positive number of metres per unit, got {depth_scale!r}')
            # A micrometre to a metre per unit: a 16-bit image then spans 65 mm to 65 km.
            if not 1e-6 <= depth_scale <= 1.0:
                raise ValueError(f'"depth_scale" is {depth_scale:g} metres per unit; a depth camera\'s lies from 1e-06 to 1 (D4xx 0.001, SR305 0.000125)')
            depth_scale = float(depth_scale)
            fps = meta.get("fps", 30.0)
            if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and MIN_FOLDER_FPS <= fps <= MAX_FOLDER_FPS):
                raise ValueError(f'"fps" must be a number of frames a second from {MIN_FOLDER_FPS:g} to {MAX_FOLDER_FPS:g}, got {fps!r}')
        except OSError as exc:
            raise SourceError(f"cannot read {meta_path}: {exc}") from exc
        except (ValueError, TypeError, AttributeError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
            raise SourceError(f"{meta_path} is not valid ({exc}); expected {_INTRINSICS_FORMAT}") from exc
        serial = meta.get("serial")
        return intrinsics, depth_scale, "" if serial is None else str(serial), float(fps)

    def _check_headers(self) -> None:
        """Refuse a folder holding a PNG that is not a depth image (an overlay saved into it,
        a colour frame) before any frame is tracked, rather than failing half-way through."""
        for path, (k, _, _) in zip(self.files, self._camera_of):
            try:
                # Not opened unless a regular file (or a link to one): opening a named pipe
                # waits for a writer, for ever.
                regular = stat.S_ISREG(path.stat().st_mode)
                header = _png_header(path) if regular else None
            except OSError as exc:
                raise SourceError(f"cannot read {path}: {exc}") from exc
            if not regular:
                raise SourceError(f"{path} is not a regular file, so it holds no depth image; move it out of {self.path}")
            if header is None:
                raise SourceError(f"{path} is not a PNG image (corrupt or renamed); move it out of {self.path}")
            width, height, bits, colour = header
            if bits != 16 or colour != 0:
                kind = f"{bits}-bit {_PNG_COLOUR_TYPES.get(colour, f'colour type {colour}')}"
                raise SourceError(
                    f"{path} holds {kind} pixels, not depth; depth PNGs must be single-channel 16-bit "
                    f"(raw device units). Move it out of {self.path}"
                )
            if (width, height) != (k.width, k.height):
                raise SourceError(f"{path} is {width}x{height} but intrinsics.json says {k.width}x{k.height}")

    def __len__(self) -> int:
        return len(self.files)

    def frames(self) -> Iterator[DepthFrame]:
        import cv2

        began = time.perf_counter()
        for index, (path, (k, depth_scale, serial)) in enumerate(zip(self.files, self._camera_of)):
            if self._closed.is_set():
                return
            if self.realtime and not self._sleep_until(began + self._timestamps_ms[index] / 1000.0):
                return
            if not path.is_file():  # listed when the folder was opened; OpenCV would only warn
                raise SourceError(f"{path} is gone: it was removed or moved while the folder was being read")
            # Decoded from bytes read here: OpenCV takes a path as UTF-8, and crashes on a
            # name that is not (a Latin-1 name from a zip file or a Windows share).
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
            try:
                depth = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
            except cv2.error as exc:  # refused outright rather than unread: more pixels than OpenCV takes
                raise SourceError(f"{path} cannot be read as an image ({getattr(exc, 'err', None) or str(exc).strip().splitlines()[-1]})") from exc
            if depth is None:
                raise SourceError(f"{path} cannot be read as an image (corrupt or not a PNG)")
            if depth.dtype != np.uint16 or depth.ndim != 2:
                channels = 1 if depth.ndim == 2 else depth.shape[2]
                raise SourceError(
                    f"{path} is a {depth.dtype} image with {channels} channel(s); depth PNGs must be "
                    "single-channel 16-bit (raw device units)"
                )
            if depth.shape != (k.height, k.width):
                raise SourceError(
                    f"{path} is {depth.shape[1]}x{depth.shape[0]} but intrinsics.json says {k.width}x{k.height}"
                )
            yield DepthFrame(
                depth=depth,
                depth_scale=depth_scale,
                intrinsics=k,
                timestamp_ms=self._timestamps_ms[index],
                serial=serial,
                frame_number=index,
                sequence=path.parent.relative_to(self.path).as_posix(),
                source_file=path.relative_to(self.path).as_posix(),
            )


# ---------------------------------------------------------------------------- synthetic input


def render_hand_pose(
    hand_model,
    pose,
    intrinsics: CameraIntrinsics,
    depth_scale_m: float,
    *,
    forearm: bool = True,
    noise=None,
    rng: np.random.Generator | None = None,
    near_m: float = 0.05,
    max_depth_m: float = 3.0,
    arm_length_m: float | None = None,
):
    """Render one ``HandPose`` as a camera with ``intrinsics`` would see it.

    Returns (depth (H, W) uint16 in units of ``depth_scale_m``, 0 = no data; the
    ``PosedHand`` with vertices and 21 joints in the camera frame, metres; number of pixels
    where the hand is the visible surface). The forearm (optional) has the scene's default
    cross-section and is ``arm_length_m`` long (a forearm's length, 25 cm, if not given);
    ``noise`` is a ``StereoNoiseModel``
    (None: clean depth) drawn from ``rng``.
    """
    from kernels.raster import rasterize_mesh
    from kernels.sensor_noise import apply_stereo_noise
    from tracker.synth.scene import FOREARM_REFERENCE_LENGTH_M, SceneConfig, posed_forearm, to_depth_units

    h, w = intrinsics.height, intrinsics.width
    k = (intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy)
    posed = hand_model.pose(pose.local_rotations, pose.bone_scales, pose.cam_from_hand, pose.handedness)
    depth = np.zeros((h, w), np.float32)
    face_index = np.full((h, w), -1, np.int32)
    bary = np.zeros((h, w, 3), np.float32)
    rasterize_mesh(posed.vertices, posed.faces, *k, h, w, near_m, depth, face_index, bary, 0)
    n_hand_faces = len(posed.faces)
    if forearm:
        length = FOREARM_REFERENCE_LENGTH_M if arm_length_m is None else arm_length_m
        vertices, faces = posed_forearm(pose, dataclasses.replace(SceneConfig(), forearm_length_m=length))
        rasterize_mesh(vertices, faces, *k, h, w, near_m, depth, face_index, bary, n_hand_faces)
    hand_pixels = int(np.count_nonzero((face_index >= 0) & (face_index < n_hand_faces)))
    if noise is not None:
        if rng is None:
            raise ValueError("render_hand_pose: noise needs an rng (numpy Generator)")
        depth = apply_stereo_noise(depth, intrinsics.fx, noise, rng)
    return to_depth_units(depth, depth_scale_m, max_depth_m), posed, hand_pixels


@dataclass(frozen=True)
class _Keyframe:
    angles: dict  # skin joint name -> (flexion, abduction, twist) degrees
    rotation: object  # scipy Rotation: hand frame -> camera frame
    palm_cam_m: np.ndarray  # (3,) palm centre in the camera frame
    forearm: object  # scipy Rotation: forearm orientation in the hand frame


class SyntheticSource(FrameSource):
    """A rendered hand (right by default) moving smoothly in front of a virtual RealSense-like camera.

    Keyframes are drawn from ``seed`` every ``keyframe_interval_s`` seconds of stream time:
    joint angles from the anatomical sampler, an orientation and a palm position in view at
    0.3-0.7 m, a wrist bend. Consecutive keyframes are at most 0.25 m and 90 degrees apart,
    and the hand eases in and out of each (smoothstep): joint angles and the palm position
    are interpolated linearly in the eased parameter, orientations by slerp. Hand speeds stay
    below ~0.3 m/s, a few millimetres per frame at 30 fps. Each frame is rendered with the
    forearm and the stereo noise model, quantised to 1 mm units.

    The camera: 640x480, fx = fy = 475 px, principal point at the image centre, no lens
    distortion, depth unit 0.001 m, serial "synthetic". The arm is a tube ``ARM_LENGTH_M`` long
    (forearm and upper arm in one, so it runs on out of view as a real arm does, instead of
    ending in mid-air), and its far end is never much nearer to the camera than the wrist:
    the user faces the camera, as in front of a monitor. Frame i has frame number i and
    timestamp i / fps s. The stream is deterministic for a seed (the noise of frame i is
    drawn from (seed, i)); ``ground_truth(i)`` gives its 21 joints.

    max_frames: None streams forever. realtime: pace the frames at ``fps``.
    """

    WIDTH, HEIGHT, FOCAL_PX, DEPTH_SCALE_M = 640, 480, 475.0, 0.001
    MAX_TRAVEL_M = 0.25
    MAX_TURN_RAD = math.pi / 2
    MIN_HAND_PIXELS = 400
    ARM_LENGTH_M = 0.55
    #: How much nearer to the camera than the wrist the elbow may be (metres).
    MAX_ELBOW_RISE_M = 0.05
    GROUND_TRUTH_CACHE = 1000

    def __init__(
        self,
        seed: int = 0,
        fps: float = 30.0,
        max_frames: int | None = None,
        realtime: bool = False,
        *,
        keyframe_interval_s: float = 2.0,
        forearm: bool = True,
        noise: bool = True,
        hand: Handedness = Handedness.RIGHT,
        hand_model=None,
    ) -> None:
        super().__init__()
        from kernels.sensor_noise import StereoNoiseModel
        from tracker.hand_model import HandModel
        from tracker.synth.pose_sampler import PoseSamplerConfig, sample_bone_scales

        if not (math.isfinite(fps) and fps > 0):
            raise SourceError(f"fps must be a positive number, got {fps}")
        if max_frames is not None and max_frames < 0:
            raise SourceError(f"max_frames must be >= 0 or None, got {max_frames}")
        if not keyframe_interval_s > 0:
            raise SourceError(f"keyframe_interval_s must be positive, got {keyframe_interval_s}")
        self.seed = int(seed)
        self.fps = float(fps)
        self.max_frames = max_frames
        self.realtime = bool(realtime)
        self.forearm = bool(forearm)
        self.hand = Handedness(hand)
        self.keyframe_interval_s = float(keyframe_interval_s)
        self._noise = StereoNoiseModel() if noise else None
        self.hand_model = hand_model if hand_model is not None else HandModel.load()
        self.intrinsics = CameraIntrinsics(
            self.WIDTH, self.HEIGHT, self.FOCAL_PX, self.FOCAL_PX, (self.WIDTH - 1) / 2, (self.HEIGHT - 1) / 2
        )
        self.depth_scale = self.DEPTH_SCALE_M
        # The hands of the streams the committed benchmarks (segmentation, side vote, the
        # side classifier's sequences) were measured on: every bone scaled on its own, and no
        # test of fingers passing through each other, which the training scenes have since.
        self._pose_config = PoseSamplerConfig(
            distance_range_m=(0.3, 0.7), bone_scale_jitter=0.15, finger_length_jitter=0.0, thickness_jitter=0.0
        )
        self._rng = np.random.default_rng(self.seed)
        self._bone_scales = sample_bone_scales(self._rng, self._pose_config)
        self._keyframes: list[_Keyframe] = []
        self._lock = threading.Lock()
        self._truth: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        length = "endless" if max_frames is None else f"{max_frames} frames"
        self.description = (
            f"synthetic moving {self.hand.value} hand (seed {self.seed}, {length} at {self.fps:g} fps"
            f"{', real time' if self.realtime else ''}; 640x480, f 475 px, depth unit 1 mm"
            f"{', stereo noise' if noise else ', no noise'}{'' if forearm else ', no forearm'})"
        )

    # -- motion

    def _keyframe(self, index: int) -> _Keyframe:
        with self._lock:  # frames() and ground_truth() may run on different threads
            while len(self._keyframes) <= index:
                previous = self._keyframes[-1] if self._keyframes else None
                self._keyframes.append(self._draw_keyframe(previous))
            return self._keyframes[index]

    def _draw_keyframe(self, previous: _Keyframe | None) -> _Keyframe:
        from scipy.spatial.transform import Rotation

        from tracker.synth.pose_sampler import PALM_CENTRE_HAND_M, sample_cam_from_hand, sample_joint_angles

        rng, config = self._rng, self._pose_config
        for _ in range(100):
            angles = sample_joint_angles(rng, config)
            cam_from_hand = sample_cam_from_hand(rng, self.intrinsics, config)
            forearm = Rotation.from_euler(
                "xy", [rng.uniform(*config.wrist_flexion_deg), rng.uniform(*config.wrist_deviation_deg)], degrees=True
            )
            rotation = Rotation.from_matrix(cam_from_hand[:3, :3])
            palm = cam_from_hand[:3, :3] @ PALM_CENTRE_HAND_M + cam_from_hand[:3, 3]
            if previous is not None:
                # Limit the step from the previous keyframe. Both palms are in view, so every
                # point between them is too (a segment projects to a segment).
                step = palm - previous.palm_cam_m
                distance = float(np.linalg.norm(step))
                if distance > self.MAX_TRAVEL_M:
                    palm = previous.palm_cam_m + step * (self.MAX_TRAVEL_M / distance)
                turn = (previous.rotation.inv() * rotation).as_rotvec()
                angle = float(np.linalg.norm(turn))
                if angle > self.MAX_TURN_RAD:
                    rotation = previous.rotation * Rotation.from_rotvec(turn * (self.MAX_TURN_RAD / angle))
            keyframe = _Keyframe(angles, rotation, palm, forearm)
            pose = self._pose_from(keyframe, keyframe, 0.0)
            if self._elbow_rise_m(pose) > self.MAX_ELBOW_RISE_M:
                continue
            # Keep keyframes where the hand itself is visible (not hidden behind its forearm).
            _, _, hand_pixels = render_hand_pose(
                self.hand_model, pose, self.intrinsics, self.depth_scale,
                forearm=self.forearm, arm_length_m=self.ARM_LENGTH_M,
            )
            if hand_pixels >= self.MIN_HAND_PIXELS:
                return keyframe
        raise SourceError(f"synthetic source: no visible hand pose found in 100 draws (seed {self.seed})")

    @staticmethod
    def _elbow_rise_m(pose) -> float:
        """How much nearer the camera than the wrist the arm is a forearm's length along it."""
        from tracker.synth.scene import arm_rise_m

        return arm_rise_m(pose)

    def _pose_from(self, a: _Keyframe, b: _Keyframe, e: float):
        from scipy.spatial.transform import Rotation, Slerp

        from tracker.synth.pose_sampler import PALM_CENTRE_HAND_M, HandPose, local_rotations_from_angles

        angles = {name: tuple((1 - e) * x + e * y for x, y in zip(a.angles[name], b.angles[name])) for name in a.angles}
        if e == 0.0:
            rotation, forearm = a.rotation, a.forearm
        else:
            rotation = Slerp([0.0, 1.0], Rotation.concatenate([a.rotation, b.rotation]))(e)
            forearm = Slerp([0.0, 1.0], Rotation.concatenate([a.forearm, b.forearm]))(e)
        palm = (1 - e) * a.palm_cam_m + e * b.palm_cam_m
        cam_from_hand = np.eye(4)
        cam_from_hand[:3, :3] = rotation.as_matrix()
        cam_from_hand[:3, 3] = palm - cam_from_hand[:3, :3] @ PALM_CENTRE_HAND_M
        return HandPose(
            local_rotations=local_rotations_from_angles(angles),
            bone_scales=self._bone_scales,
            cam_from_hand=cam_from_hand,
            handedness=self.hand,
            hand_from_forearm_rotation=forearm.as_matrix(),
        )

    def pose_at(self, frame_number: int):
        """The ``HandPose`` of frame ``frame_number`` (deterministic)."""
        if frame_number < 0:
            raise ValueError(f"frame numbers start at 0, got {frame_number}")
        t = frame_number / self.fps / self.keyframe_interval_s
        k = int(math.floor(t))
        s = t - k
        e = s * s * (3.0 - 2.0 * s)  # smoothstep: velocity is continuous through keyframes
        return self._pose_from(self._keyframe(k), self._keyframe(k + 1), e)

    def ground_truth(self, frame_number: int) -> np.ndarray | None:
        """(21, 3) float32 joints of frame ``frame_number`` in the camera frame, metres.

        The last 1000 streamed frames are kept; any other frame of the stream is recomputed
        (the motion is deterministic). None for a frame number outside the stream.
        """
        frame_number = int(frame_number)
        if frame_number < 0 or (self.max_frames is not None and frame_number >= self.max_frames):
            return None
        with self._lock:
            joints = self._truth.get(frame_number)
        if joints is None:
            pose = self.pose_at(frame_number)
            posed = self.hand_model.pose(pose.local_rotations, pose.bone_scales, pose.cam_from_hand, pose.handedness)
            joints = posed.joints
        return joints.copy()

    def visible_hand_centroid(self, frame_number: int) -> np.ndarray:
        """(3,) float64 mean camera-frame point (metres) of the hand's visible surface in frame
        ``frame_number``, without noise: where the hand alone and the hand with its arm
        render the same depth. The point a crop should be centred on (training crops are)."""
        pose = self.pose_at(frame_number)
        k = self.intrinsics
        depth = {
            arm: render_hand_pose(self.hand_model, pose, k, self.depth_scale, forearm=arm, arm_length_m=self.ARM_LENGTH_M)[0]
            for arm in (False, True)
        }
        visible = (depth[False] > 0) & (depth[False] == depth[True])
        v, u = np.nonzero(visible)
        z = depth[True][v, u] * self.depth_scale
        return np.array([((u - k.cx) / k.fx * z).mean(), ((v - k.cy) / k.fy * z).mean(), z.mean()])

    # -- frames

    def render(self, frame_number: int) -> tuple[DepthFrame, np.ndarray]:
        """Frame ``frame_number`` and its (21, 3) ground-truth joints (deterministic)."""
        pose = self.pose_at(frame_number)
        rng = np.random.default_rng([self.seed, frame_number])
        depth, posed, _ = render_hand_pose(
            self.hand_model, pose, self.intrinsics, self.depth_scale, forearm=self.forearm, noise=self._noise, rng=rng,
            arm_length_m=self.ARM_LENGTH_M,
        )
        frame = DepthFrame(
            depth=depth,
            depth_scale=self.depth_scale,
            intrinsics=self.intrinsics,
            timestamp_ms=1000.0 * frame_number / self.fps,
            serial="synthetic",
            frame_number=frame_number,
        )
        return frame, posed.joints

    def frames(self) -> Iterator[DepthFrame]:
        began = time.perf_counter()
        index = 0
        while self.max_frames is None or index < self.max_frames:
            if self._closed.is_set():
                return
            if self.realtime and not self._sleep_until(began + index / self.fps):
                return
            frame, joints = self.render(index)
            with self._lock:
                self._truth[index] = joints
                while len(self._truth) > self.GROUND_TRUTH_CACHE:
                    self._truth.popitem(last=False)
            yield frame
            index += 1


# ---------------------------------------------------------------------------- command-line specs

SOURCE_FORMS = (
    "'realsense' (the first connected camera), 'realsense:SERIAL', a recording 'FILE.db3' or 'FILE.bag', "
    "a folder of 16-bit depth PNGs with intrinsics.json, 'synthetic', 'synthetic:SEED' or 'synthetic:SEED:left|right'"
)


def source_kind(spec: str | os.PathLike) -> str:
    """How ``open_source`` reads ``spec``: "realsense", "synthetic", "recording" or "folder"
    (whether it exists is left to ``open_source``). A path object is always a file or a
    folder, never parsed as a name: ``Path("synthetic")`` is a folder of that name."""
    if not isinstance(spec, os.PathLike):
        spec = str(spec).strip()
        kind = spec.partition(":")[0].lower()
        if kind in ("realsense", "synthetic"):
            return kind
    # A folder is read as one whatever its name ends in (a folder of frames called run.db3).
    return "recording" if Path(spec).suffix.lower() in RECORDING_SUFFIXES and not Path(spec).is_dir() else "folder"


def open_source(
    spec: str | os.PathLike,
    *,
    realtime: bool | None = None,
    record_path: str | os.PathLike | None = None,
    max_frames: int | None = None,
) -> FrameSource:
    """Open the source a command-line string names (see ``SOURCE_FORMS``), or the recording
    or folder a path object names.

    realtime: None takes each kind's natural mode: recordings play at their recorded pace,
        folders and synthetic input as fast as consumed. A camera is always real time.
    record_path: record a live camera's depth to this ``.db3`` (cameras only).
    max_frames: length of the synthetic stream (None: endless); other sources ignore it.
    """
    kind = source_kind(spec)
    if isinstance(spec, os.PathLike):
        spec, argument = os.fspath(spec), ""
    else:
        spec = str(spec).strip()
        argument = spec.partition(":")[2]
        if not spec:  # Path("") would be the working directory: an unset name must not track that
            raise SourceError(f"the source is empty; accepted: {SOURCE_FORMS}")
    if kind == "realsense":
        if realtime is False:
            raise SourceError("a live camera is always real time; drop --no-realtime (or record it and play the file)")
        return RealSenseSource(serial=argument or None, record_path=record_path)
    if record_path is not None:
        raise SourceError(
            f"recording needs a live camera source ('realsense' or 'realsense:SERIAL'), not {spec!r}; "
            "to convert other input use tracker.sources.write_recording"
        )
    if kind == "synthetic":
        seed, hand = None, None
        form = "'synthetic[:SEED][:left|right]'"
        for part in filter(None, argument.split(":")):
            if part.lower() in ("left", "right"):
                if hand is not None:
                    raise SourceError(f"{form} takes one hand side, got {argument!r}")
                hand = Handedness(part.lower())
                continue
            try:
                value = int(part)
            except ValueError:
                raise SourceError(f"{form} needs an integer seed and/or a hand side (left or right), got {part!r}") from None
            if seed is not None:
                raise SourceError(f"{form} takes one seed, got {argument!r}")
            seed = value
            if seed < 0:
                raise SourceError(f"{form} needs a seed of 0 or more, got {seed}")
        return SyntheticSource(seed=seed or 0, realtime=bool(realtime), hand=hand or Handedness.RIGHT, max_frames=max_frames)
    path = Path(spec)
    if kind == "recording":
        return RecordingSource(path, realtime=True if realtime is None else realtime)
    if path.is_dir():
        return FolderSource(path, realtime=bool(realtime))
    what = "does not exist" if not path.exists() else "is neither a recording nor a folder"
    raise SourceError(f"unknown source {spec!r} ({what}); accepted: {SOURCE_FORMS}")
