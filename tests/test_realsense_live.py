"""The live RealSense source against a software camera.

No camera is attached where the tests run, so a librealsense software device stands in for
one: the frames, the frame queue, the depth filters and the recorder are the SDK's own. Only
the device listing and the pipeline are stand-ins (the SDK lists no software devices): the
pipeline streams the software sensor, through ``rs.recorder`` when asked to record, into the
queue it is given, and, like the SDK's, refuses its own wait once it was given a queue.
"""

import gc
import threading
import time

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

import tracker.sources as sources  # noqa: E402
from tracker.sources import RealSenseSource, RecordingSource, SourceError  # noqa: E402

W, H, FPS, SCALE = 32, 24, 30, 0.001


class SoftwareCamera:
    """A depth camera made of a librealsense software device; ``push`` delivers a frame."""

    def __init__(self, serial: str = "0123456789"):
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "Software D435")
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.sensor = self.device.add_sensor("Stereo Module")
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.depth, 0, 1
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = W, H, FPS, 2, rs.format.z16
        k = rs.intrinsics()
        k.width, k.height, k.fx, k.fy, k.ppx, k.ppy = W, H, 30.0, 31.0, 15.5, 11.5
        k.model, k.coeffs = rs.distortion.none, [0.0] * 5
        stream.intrinsics = k
        self.profile = self.sensor.add_video_stream(stream, True).as_video_stream_profile()
        self.sensor.add_read_only_option(rs.option.depth_units, SCALE)
        self.connected = True
        self.number = 0

    def push(self, value: int) -> None:
        self.number += 1
        frame = rs.software_video_frame()
        frame.pixels = np.full((H, W), value, np.uint16)
        frame.stride, frame.bpp = 2 * W, 2
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
        self.sensor.open(self.sensor.get_stream_profiles()[0])
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
    def __init__(self, camera):
        self.camera = camera

    def query_devices(self):
        return [self.camera.device] if self.camera.connected else []


class StandInSdk:
    """pyrealsense2 with the device listing and the pipeline replaced."""

    def __init__(self, camera):
        self.camera = camera

    def __getattr__(self, name):
        return getattr(rs, name)

    def context(self):
        return StandInContext(self.camera)

    def pipeline(self, ctx=None):
        return StandInPipeline(self.camera)

    config = StandInConfig


@pytest.fixture
def camera(monkeypatch):
    camera = SoftwareCamera()
    monkeypatch.setattr(sources, "_import_rs", lambda: StandInSdk(camera))
    return camera


def collect(source, count: int, timeout_s: float = 20.0) -> list:
    """Up to ``count`` frames from ``source`` on a capture thread, as the pipeline takes them."""
    got, done = [], threading.Event()

    def capture():
        for frame in source.frames():
            got.append(frame)
            if len(got) == count:
                break
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


def test_an_sdk_error_while_the_camera_re_enumerates_is_one_failed_attempt(camera, monkeypatch):
    source = RealSenseSource(width=W, height=H, fps=FPS, frame_timeout_s=0.3)
    got, done, thread = collect(source, 2)
    camera.push(500)
    wait_for(lambda: len(got) == 1)
    failures = []
    listing = StandInContext.query_devices

    def flaky_listing(self):
        if not failures:  # USB trouble once, half-way through the re-plug
            failures.append(True)
            raise RuntimeError("failed to set power state")
        return listing(self)

    monkeypatch.setattr(StandInContext, "query_devices", flaky_listing)
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
