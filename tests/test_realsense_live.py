"""The live RealSense source against a software camera.

No camera is attached where the tests run, so a librealsense software device stands in for
one: the frames, the frame queue, the depth filters and the recorder are the SDK's own. Only
the device listing and the pipeline are stand-ins (the SDK lists no software devices): the
pipeline streams the software sensor, through ``rs.recorder`` when asked to record, into the
queue it is given, and, like the SDK's, refuses its own wait once it was given a queue.
"""

import gc
import logging
import sys
import threading
import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

import tracker.sources as sources  # noqa: E402
from tracker.sources import RealSenseSource, RecordingSource, SourceError  # noqa: E402

from conftest import sdk_frames_held, sdk_objects_in_running_streams  # noqa: E402

W, H, FPS, SCALE = 32, 24, 30, 0.001


class SoftwareCamera:
    """A depth camera made of a librealsense software device; ``push`` delivers a frame."""

    def __init__(self, serial: str = "0123456789", width: int = W, height: int = H, fps: int = FPS):
        self.width, self.height = width, height
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "Software D435")
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.sensor = self.device.add_sensor("Stereo Module")
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.depth, 0, 1
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = width, height, fps, 2, rs.format.z16
        k = rs.intrinsics()
        k.width, k.height = width, height
        k.fx, k.fy, k.ppx, k.ppy = 30.0 * width / W, 31.0 * height / H, (width - 1) / 2, (height - 1) / 2
        k.model, k.coeffs = rs.distortion.none, [0.0] * 5
        stream.intrinsics = k
        self.profile = self.sensor.add_video_stream(stream, True).as_video_stream_profile()
        self.sensor.add_read_only_option(rs.option.depth_units, SCALE)
        self.connected = True
        self.number = 0

    def push(self, value: int) -> None:
        self.number += 1
        frame = rs.software_video_frame()
        frame.pixels = np.full((self.height, self.width), value, np.uint16)
        frame.stride, frame.bpp = 2 * self.width, 2
        frame.timestamp, frame.domain = 1000.0 * time.perf_counter(), rs.timestamp_domain.hardware_clock
        frame.frame_number, frame.profile = self.number, self.profile
        self.sensor.on_video_frame(frame)


class StandInPipeline:
    def __init__(self, camera: SoftwareCamera):
        self.camera, self.sensor, self.recorder = camera, None, None

    def start(self, config, queue=None):
        if queue is None:
            raise AssertionError("the source must take frames from its own queue, not the pipeline's wait")
        if not self.camera.connected:
            raise RuntimeError("No device connected")
        if config.record_to is not None:
            self.recorder = rs.recorder(config.record_to, self.camera.device)
            self.sensor = self.recorder.query_sensors()[0]
        else:
            self.sensor = self.camera.sensor
        # Like the SDK's, a mode the camera does not offer cannot be resolved.
        _, width, height, _, fps = config.stream
        profiles = [p.as_video_stream_profile() for p in self.sensor.get_stream_profiles()]
        offered = [p for p in profiles if (p.width(), p.height(), p.fps()) == (width, height, fps)]
        if not offered:
            raise RuntimeError("Couldn't resolve requests")
        self.sensor.open(offered[0])
        self.sensor.start(queue)
        return StandInProfile()

    def wait_for_frames(self, *args):  # the SDK throws once a pipeline was given a queue
        raise RuntimeError("wait_for_frames cannot be called if a callback was provided")

    try_wait_for_frames = poll_for_frames = wait_for_frames

    def stop(self):
        if self.sensor is None:
            raise RuntimeError("stop() cannot be called before start()")
        self.sensor.stop()
        self.sensor.close()
        self.sensor = self.recorder = None
        gc.collect()  # the recorder finalises its file when it is released


class StandInProfile:
    def get_device(self):
        return self

    def first_depth_sensor(self):
        return self

    def get_depth_scale(self):
        return SCALE


class StandInConfig:
    def __init__(self):
        self.record_to = None

    def enable_device(self, serial):
        self.serial = serial

    def enable_stream(self, *args):
        self.stream = args

    def enable_record_to_file(self, path):
        self.record_to = path


class StandInContext:
    def __init__(self, sdk):
        self.sdk = sdk  # through the SDK: a test can plug in another camera

    def query_devices(self):
        camera = self.sdk.camera
        return [camera.device] if camera.connected else []


class StandInSdk:
    """pyrealsense2 with the device listing and the pipeline replaced."""

    def __init__(self, camera):
        self.camera = camera

    def __getattr__(self, name):
        return getattr(rs, name)

    def context(self):
        return StandInContext(self)

    def pipeline(self, ctx=None):
        return StandInPipeline(self.camera)

    config = StandInConfig


@pytest.fixture
def sdk(monkeypatch):
    sdk = StandInSdk(SoftwareCamera())
    monkeypatch.setattr(sources, "_import_rs", lambda: sdk)
    return sdk


@pytest.fixture
def camera(sdk):
    return sdk.camera


def collect(source, count: int, timeout_s: float = 20.0) -> list:
    """Up to ``count`` frames from ``source`` on a capture thread, as the pipeline takes them."""
    got, done = [], threading.Event()

    def capture():
        try:
            for frame in source.frames():
                got.append(frame)
                if len(got) == count:
                    break
        finally:  # also when the stream fails: the test sees it at once, not at its timeout
            done.set()

    thread = threading.Thread(target=capture, daemon=True)
    thread.start()
    return got, done, thread


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not condition():
        assert time.perf_counter() < deadline, "timed out"
        time.sleep(0.01)


def test_frames_come_with_the_devices_own_intrinsics_and_depth_unit(camera):
    source = RealSenseSource(width=W, height=H, fps=FPS)
    assert "Software D435 (serial 0123456789)" in source.description and f"{W}x{H} @ {FPS} fps" in source.description
    got, done, thread = collect(source, 3)
    for value in (500, 501, 502):
        wait_for(lambda: len(got) >= value - 500)  # one at a time, as a camera delivers them
        camera.push(value)
    assert done.wait(10)
    source.close()
    assert [int(f.depth[0, 0]) for f in got] == [500, 501, 502]
    frame = got[0]
    assert frame.depth.shape == (H, W) and frame.depth_scale == SCALE and frame.serial == "0123456789"
    assert (frame.intrinsics.fx, frame.intrinsics.fy, frame.intrinsics.cx, frame.intrinsics.cy) == (30.0, 31.0, 15.5, 11.5)


def test_no_sdk_frame_is_held_while_the_consumer_has_a_frame(camera):
    source = RealSenseSource(width=W, height=H, fps=FPS)
    it = source.frames()
    for value in (500, 501):
        camera.push(value)
        assert int(next(it).depth[0, 0]) == value
        assert sdk_frames_held(it) == []
    it.close()
    source.close()


def test_a_close_from_another_thread_leaves_the_stop_to_the_waiting_stream(camera, monkeypatch):
    # As run_pipeline's clean-up closes a live source while its capture thread waits in the
    # SDK for the next frame: the pipeline stops only once that thread has let go of the
    # queue and its frames (librealsense may crash freeing them after the stop).
    held_at_stops = []
    stop = StandInPipeline.stop

    def checked_stop(self):
        held_at_stops.extend(sdk_objects_in_running_streams({RealSenseSource.frames.__code__}))
        return stop(self)

    monkeypatch.setattr(StandInPipeline, "stop", checked_stop)
    source = RealSenseSource(width=W, height=H, fps=FPS)
    got = []
    thread = threading.Thread(target=lambda: got.extend(source.frames()), daemon=True)
    thread.start()
    camera.push(500)
    wait_for(lambda: len(got) == 1)
    time.sleep(0.05)  # back in the SDK's wait for the next frame
    began = time.perf_counter()
    source.close()
    thread.join(5)
    assert not thread.is_alive() and time.perf_counter() - began < 3.0  # a poll or two; room for a busy machine
    assert held_at_stops == [(True, [])]  # stopped once, by the stream's own thread, holding nothing


def test_a_close_from_another_thread_returns_once_a_slow_stop_has_finalised_the_recording(camera, tmp_path, monkeypatch):
    # The stream's own thread stops the pipeline (which finalises a recording); a stop that
    # takes longer than the close's wait for the stream must still be over when close()
    # returns, or the run could end with the recording unfinished.
    stop = StandInPipeline.stop
    stopped = []

    def slow_stop(self):
        time.sleep(1.5)  # longer than sources._STREAM_STOP_WAIT_S
        stop(self)
        stopped.append(True)

    monkeypatch.setattr(StandInPipeline, "stop", slow_stop)
    source = RealSenseSource(width=W, height=H, fps=FPS, record_path=tmp_path / "s.db3")
    got, done, thread = collect(source, 100)
    camera.push(500)
    wait_for(lambda: len(got) == 1)
    time.sleep(0.05)  # back in the SDK's wait for the next frame
    source.close()
    assert stopped == [True]
    thread.join(5)


def test_a_disconnect_reconnects_and_records_on_into_a_second_file(camera, tmp_path, monkeypatch):
    base = tmp_path / "session.db3"
    # A second without frames is a disconnect: long enough that a busy test machine does not
    # stall into one between two pushes.
    source = RealSenseSource(width=W, height=H, fps=FPS, record_path=base, frame_timeout_s=1.0)
    got, done, thread = collect(source, 8)
    for value in range(500, 504):
        camera.push(value)
        time.sleep(1 / FPS)
    wait_for(lambda: len(got) == 4)
    camera.connected = False  # unplugged: no frames, and the camera is not listed
    wait_for(lambda: source._queue is None)  # the stream stopped: reconnecting
    time.sleep(0.6)  # a reconnect attempt or two find nothing
    camera.connected = True
    wait_for(lambda: len(source.record_paths) == 2)  # streaming again, into part 2
    for value in range(600, 604):
        camera.push(value)
        time.sleep(1 / FPS)
    assert done.wait(10)
    source.close()
    assert [int(f.depth[0, 0]) for f in got] == [500, 501, 502, 503, 600, 601, 602, 603]
    assert source.record_paths == [base, tmp_path / "session-part2.db3"]
    # Nothing recorded before the disconnect was lost: each file holds its own frames.
    monkeypatch.undo()  # the real SDK plays the files back
    first = [int(f.depth[0, 0]) for f in RecordingSource(base, realtime=False).frames()]
    second = [int(f.depth[0, 0]) for f in RecordingSource(source.record_paths[1], realtime=False).frames()]
    assert first == [500, 501, 502, 503] and second == [600, 601, 602, 603]


def _fail_once(monkeypatch, cls, name: str, message: str) -> list:
    """Makes ``cls.name`` raise the SDK's RuntimeError on its first call only; the list it
    returns is non-empty once that call has happened."""
    failures: list = []
    real = getattr(cls, name)

    def flaky(self, *args, **kwargs):
        if not failures:
            failures.append(True)
            raise RuntimeError(message)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, flaky)
    return failures


def test_an_sdk_error_while_the_camera_re_enumerates_is_one_failed_attempt(camera, monkeypatch):
    source = RealSenseSource(width=W, height=H, fps=FPS, frame_timeout_s=0.3)
    got, done, thread = collect(source, 2)
    camera.push(500)
    wait_for(lambda: len(got) == 1)
    # USB trouble once, half-way through the re-plug.
    failures = _fail_once(monkeypatch, StandInContext, "query_devices", "failed to set power state")
    wait_for(lambda: failures)  # the stream stalled, and the first attempt hit the error
    wait_for(lambda: source._queue is not None)  # a later attempt started streaming again
    camera.push(600)
    assert done.wait(10)
    source.close()
    assert [int(f.depth[0, 0]) for f in got] == [500, 600]


def test_close_during_a_disconnect_ends_the_stream_promptly(camera):
    source = RealSenseSource(width=W, height=H, fps=FPS, frame_timeout_s=0.2)
    got, done, thread = collect(source, 100)
    camera.connected = False
    wait_for(lambda: source._queue is None)  # reconnecting
    began = time.perf_counter()
    source.close()
    assert done.wait(5) and time.perf_counter() - began < 3.0
    assert got == []


def test_a_camera_that_never_comes_back_is_an_error_that_says_so(camera):
    source = RealSenseSource(width=W, height=H, fps=FPS, frame_timeout_s=0.2, reconnect_attempts=2)
    camera.connected = False
    with pytest.raises(SourceError, match="2 attempts to reconnect failed"):
        for _ in source.frames():
            pass


def test_sdk_failures_while_opening_are_clear_errors_and_stop_the_stream(camera, monkeypatch):
    def broken_listing():
        raise RuntimeError("failed to set power state")

    with monkeypatch.context() as patch:
        patch.setattr(StandInContext, "query_devices", lambda self: broken_listing())
        with pytest.raises(SourceError, match="RealSense SDK failed while looking for a camera: failed to set power state"):
            RealSenseSource(width=W, height=H, fps=FPS)
    # Streaming had begun when the depth unit could not be read: the stream is stopped.
    stopped = []
    original_stop = StandInPipeline.stop
    monkeypatch.setattr(StandInPipeline, "stop", lambda self: (stopped.append(True), original_stop(self)))
    monkeypatch.setattr(StandInProfile, "get_depth_scale", lambda self: broken_listing())
    with pytest.raises(SourceError, match="started but its depth unit could not be read"):
        RealSenseSource(width=W, height=H, fps=FPS)
    assert stopped == [True]


def test_a_camera_that_restarts_but_sends_no_frames_gives_up_and_says_where_it_recorded(camera, tmp_path, monkeypatch):
    monkeypatch.setattr(RealSenseSource, "_RECONNECT_DELAY_S", 0.01)
    base = tmp_path / "session.db3"
    source = RealSenseSource(width=W, height=H, fps=FPS, record_path=base, frame_timeout_s=0.1, reconnect_attempts=3)
    starts = []
    start = StandInPipeline.start

    def counted_start(self, config, queue=None):
        starts.append(True)
        if len(starts) == 10:  # without a limit on frameless restarts this would go on for ever
            source.close()
        return start(self, config, queue)

    monkeypatch.setattr(StandInPipeline, "start", counted_start)
    camera.push(500)  # one frame, then the camera is listed and starts each time, but sends nothing
    got = []
    with pytest.raises(SourceError, match="restarted 3 times but sent no frame after any restart") as info:
        for frame in source.frames():
            got.append(int(frame.depth[0, 0]))
    assert got == [500] and len(starts) == 3
    parts = [tmp_path / f"session-part{n}.db3" for n in (2, 3, 4)]
    assert source.record_paths == [base, *parts]
    assert f"recorded: {base}, {', '.join(map(str, parts))}" in str(info.value)
    assert "(session-part2.db3, session-part3.db3, session-part4.db3 hold no frames)" in str(info.value)


def test_a_camera_replugged_into_a_slower_port_streams_its_closest_mode(sdk, camera, monkeypatch, caplog):
    monkeypatch.setattr(RealSenseSource, "_RECONNECT_DELAY_S", 0.01)
    source = RealSenseSource(width=W, height=H, fps=FPS, frame_timeout_s=0.3)
    got, done, thread = collect(source, 2)
    camera.push(500)
    wait_for(lambda: len(got) == 1)
    camera.connected = False
    wait_for(lambda: source._queue is None)  # reconnecting
    # Back on USB 2: the same camera, which no longer offers the mode it streamed.
    slower = sdk.camera = SoftwareCamera(width=W // 2, height=H // 2, fps=FPS // 2)
    with caplog.at_level(logging.WARNING, logger="tracker.sources"):
        wait_for(lambda: source._queue is not None or done.is_set())
        slower.push(600)
        assert done.wait(10)
    source.close()
    assert [int(f.depth[0, 0]) for f in got] == [500, 600]
    after = got[1]
    assert after.depth.shape == (H // 2, W // 2)
    k = after.intrinsics
    assert (k.fx, k.fy, k.cx, k.cy) == (15.0, 15.5, 7.5, 5.5)  # the slower stream's own, not those from before
    old, new = f"{W}x{H} @ {FPS} fps", f"{W // 2}x{H // 2} @ {FPS // 2} fps"
    assert f"depth {new} (the camera does not offer {old}" in source.description
    assert f"now streams depth {new} instead of {old}" in caplog.text


def test_a_start_that_fails_after_the_recording_began_does_not_overwrite_that_part(camera, tmp_path, monkeypatch):
    monkeypatch.setattr(RealSenseSource, "_RECONNECT_DELAY_S", 0.01)
    base = tmp_path / "session.db3"
    source = RealSenseSource(width=W, height=H, fps=FPS, record_path=base, frame_timeout_s=0.3)
    got, done, thread = collect(source, 2)
    camera.push(500)
    wait_for(lambda: len(got) == 1)
    # The first restart streams, and records, but its depth unit cannot be read.
    failures = _fail_once(monkeypatch, StandInProfile, "get_depth_scale", "failed to read option")
    wait_for(lambda: failures and source._queue is not None)  # the stall, the failed restart, a good one
    camera.push(600)
    assert done.wait(10)
    source.close()
    assert [int(f.depth[0, 0]) for f in got] == [500, 600]
    assert source.record_paths == [base, tmp_path / "session-part2.db3", tmp_path / "session-part3.db3"]
    monkeypatch.undo()  # the real SDK plays the file back
    assert [int(f.depth[0, 0]) for f in RecordingSource(source.record_paths[2], realtime=False).frames()] == [600]


@pytest.mark.parametrize("earlier", ["session.db3", "session-part3.db3"])
def test_recording_over_an_earlier_recording_is_refused_before_the_camera_starts(
    camera, tmp_path, monkeypatch, earlier
):
    (tmp_path / earlier).write_bytes(b"an earlier run")
    for unrelated in ("session-partial.db3", "session-part2.bag", "other.db3"):
        (tmp_path / unrelated).write_bytes(b"")
    monkeypatch.setattr(StandInPipeline, "start", lambda *args: pytest.fail("the camera started"))
    refused = f"cannot record to .*session.db3: {earlier} from an earlier recording already exists"
    with pytest.raises(SourceError, match=refused):
        RealSenseSource(width=W, height=H, fps=FPS, record_path=tmp_path / "session.db3")
    assert (tmp_path / earlier).read_bytes() == b"an earlier run"


def test_a_record_folder_that_cannot_be_written_is_refused_before_the_camera_starts(camera, tmp_path, monkeypatch):
    from pathlib import Path

    touch = Path.touch

    def read_only(self, *args, **kwargs):  # as a read-only folder does (root may write anywhere)
        if self.parent == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return touch(self, *args, **kwargs)

    monkeypatch.setattr(Path, "touch", read_only)
    monkeypatch.setattr(StandInPipeline, "start", lambda *args: pytest.fail("the camera started"))
    with pytest.raises(SourceError, match="cannot write .*session.db3: Permission denied"):
        RealSenseSource(width=W, height=H, fps=FPS, record_path=tmp_path / "session.db3")
    assert list(tmp_path.iterdir()) == []


def test_the_connected_cameras_are_listed_with_the_mode_tracking_takes(sdk, camera, monkeypatch, capsys):
    from tracker.cli import main

    # A second depth mode, and a device without a depth sensor beside the camera.
    faster = rs.video_stream()
    faster.type, faster.index, faster.uid = rs.stream.depth, 0, 2
    faster.width, faster.height, faster.fps, faster.bpp, faster.fmt = W, H, 90, 2, rs.format.z16
    faster.intrinsics = camera.profile.get_intrinsics()
    camera.sensor.add_video_stream(faster)
    tracking = rs.software_device()
    tracking.register_info(rs.camera_info.name, "Software T265")
    tracking.register_info(rs.camera_info.serial_number, "987")
    tracking.add_sensor("Tracking Module")
    monkeypatch.setattr(StandInContext, "query_devices", lambda self: [camera.device, tracking])
    listed = sources.list_cameras()
    assert [c.serial for c in listed] == ["0123456789", "987"]
    assert listed[0].depth_modes == ((W, H, 90), (W, H, 30)) and listed[0].default_mode == (W, H, 90)
    assert listed[1].depth_modes == () and listed[1].default_mode is None
    assert main(["--list-cameras"]) == 0
    out = capsys.readouterr().out
    assert f"Software D435 (serial 0123456789)\n    tracking streams depth {W}x{H} @ 90 fps: --source realsense:0123456789" in out
    assert f"depth modes: {W}x{H} @ 30/90 fps" in out
    assert "Software T265 (serial 987): no depth sensor" in out


def test_listing_cameras_says_when_there_are_none_or_no_sdk(sdk, camera, monkeypatch, capsys):
    from tracker.cli import main

    camera.connected = False
    assert main(["--list-cameras"]) == 0 and "No RealSense device connected" in capsys.readouterr().out

    def no_sdk():
        raise SourceError("pyrealsense2 is not installed")

    monkeypatch.setattr(sources, "_import_rs", no_sdk)
    assert main(["--list-cameras"]) == 2 and "pyrealsense2 is not installed" in capsys.readouterr().err


def test_the_closest_depth_mode_is_chosen_by_resolution_then_rate():
    d435 = [(1280, 720, 30), (848, 480, 90), (848, 480, 30), (640, 480, 60)]
    assert sources.closest_depth_mode(d435, 848, 480, 90) == (848, 480, 90)
    # On USB 2 a D4xx offers less: the nearest resolution wins over the nearer rate.
    assert sources.closest_depth_mode([(640, 480, 30), (480, 270, 60)], 848, 480, 90) == (640, 480, 30)
    assert sources.closest_depth_mode([(640, 480, 30), (640, 480, 60)], 848, 480, 90) == (640, 480, 60)


def test_a_record_path_that_is_not_utf8_is_refused_before_the_camera_starts(camera, tmp_path, monkeypatch):
    import os
    from pathlib import Path

    monkeypatch.setattr(StandInPipeline, "start", lambda *args: pytest.fail("the camera started"))
    latin1 = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"session_\xe9.db3")))
    with pytest.raises(SourceError, match=r"cannot record to .*session_.*\.db3: the RealSense SDK cannot open a path that is not valid UTF-8"):
        RealSenseSource(width=W, height=H, fps=FPS, record_path=latin1)
    assert os.listdir(tmp_path) == []


def test_no_sdk_frame_or_queue_is_held_by_the_stream_when_it_stops_the_pipeline(camera, monkeypatch):
    # The pipeline stops at a reconnect and when the iteration ends; frames, and a queue
    # holding some, that outlive the stop are freed after it, which may crash librealsense.
    held_at_stops = []
    stop = StandInPipeline.stop

    def checked_stop(self):
        caller = sys._getframe(1)
        while caller is not None:
            if caller.f_code is RealSenseSource.frames.__code__:
                held = [name for name, value in caller.f_locals.items() if isinstance(value, (rs.frame, rs.frame_queue))]
                held_at_stops.append(held)
            caller = caller.f_back
        return stop(self)

    monkeypatch.setattr(StandInPipeline, "stop", checked_stop)
    monkeypatch.setattr(RealSenseSource, "_RECONNECT_DELAY_S", 0.01)
    source = RealSenseSource(width=W, height=H, fps=FPS, frame_timeout_s=0.3)
    it = source.frames()
    camera.push(500)
    assert int(next(it).depth[0, 0]) == 500
    got = []
    thread = threading.Thread(target=lambda: got.append(next(it)), daemon=True)
    thread.start()
    wait_for(lambda: held_at_stops and source._queue is not None)  # stalled, stopped, started again
    camera.push(600)
    thread.join(10)
    assert [int(f.depth[0, 0]) for f in got] == [600]
    camera.push(601)  # waiting in the queue when the consumer stops
    it.close()
    # At the reconnect (another one, were the push above later than the frame timeout after
    # the restart, on a busy machine) and at the end.
    assert len(held_at_stops) >= 2 and all(held == [] for held in held_at_stops)
