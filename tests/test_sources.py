"""Frame sources: recordings round-trip bit-exactly, broken inputs fail fast and clearly.

Everything runs without a camera: recordings are written with librealsense's software device
(``write_recording``), so the playback path is the SDK's own.
"""

import dataclasses
import gc
import os
import shutil
import json
import math
import re
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rs = pytest.importorskip("pyrealsense2")

from tracker.sources import (  # noqa: E402
    FolderSource,
    RealSenseSource,
    RecordingSource,
    SourceError,
    SyntheticSource,
    open_source,
    write_recording,
)
from tracker.types import CameraIntrinsics, DepthFrame, DistortionModel, Handedness  # noqa: E402

from conftest import sdk_frames_held, sdk_frames_in_traceback, sdk_objects_in_running_streams  # noqa: E402

SR305 = Path(__file__).parent / "data" / "sr305-gestures"


@pytest.fixture(scope="module")
def synthetic_frames(hand_model):
    with SyntheticSource(seed=3, max_frames=10, hand_model=hand_model) as source:
        return list(source.frames())


@pytest.fixture(scope="module")
def recording(tmp_path_factory, synthetic_frames):
    """A 10-frame .db3 written at the frames' own pace (0.3 s)."""
    path = tmp_path_factory.mktemp("rec") / "hand.db3"
    assert write_recording(path, synthetic_frames) == 10
    return path


def _same_frames(expected, got):
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        assert b.depth.dtype == np.uint16 and np.array_equal(a.depth, b.depth)
        assert b.intrinsics == a.intrinsics
        assert b.depth_scale == a.depth_scale
        assert b.frame_number == a.frame_number
        assert b.serial == a.serial
        # librealsense keeps timestamps to the nanosecond.
        assert b.timestamp_ms == pytest.approx(a.timestamp_ms, abs=1e-5)


def test_recording_plays_back_every_frame_bit_exactly(recording, synthetic_frames):
    with RecordingSource(recording, realtime=False) as source:
        assert "depth 640x480" in source.description
        got = list(source.frames())
    _same_frames(synthetic_frames, got)
    assert np.all(np.diff([f.timestamp_ms for f in got]) > 0)


def test_recording_round_trips_distortion_and_odd_depth_unit(tmp_path):
    coeffs = (0.1, -0.02, 0.001, 0.002, 0.0)
    k = CameraIntrinsics(64, 48, 50.25, 51.5, 31.7, 23.2, DistortionModel.INVERSE_BROWN_CONRADY, coeffs)
    rng = np.random.default_rng(0)
    frames = [
        DepthFrame(rng.integers(0, 65535, (48, 64), dtype=np.uint16), 0.000125, k, 1000.0 + 11.1 * i, "1234", 100 + i)
        for i in range(5)
    ]
    write_recording(tmp_path / "odd.db3", frames, pace=False)
    with RecordingSource(tmp_path / "odd.db3", realtime=False) as source:
        _same_frames(frames, list(source.frames()))
    # Written without real-time spacing: played in real time, the run says what it will skip.
    with RecordingSource(tmp_path / "odd.db3", realtime=True) as source:
        assert "written without real-time spacing" in source.description and "--no-realtime plays every one" in source.description


def test_a_paced_recording_gets_no_note_on_its_spacing(recording):
    with RecordingSource(recording, realtime=True) as source:
        assert "real-time spacing" not in source.description and "at the recorded pace" in source.description


def test_realtime_playback_of_a_paced_recording(recording, synthetic_frames):
    began = time.perf_counter()
    with RecordingSource(recording, realtime=True) as source:
        got = list(source.frames())
    # At the recorded pace (0.3 s); a consumer this fast gets every frame, but real time may
    # skip one on a loaded machine, so only order and the last frame are required.
    numbers = [f.frame_number for f in got]
    assert len(got) >= 5 and numbers == sorted(set(numbers)) and numbers[-1] == synthetic_frames[-1].frame_number
    assert time.perf_counter() - began > 0.25


def test_a_consumer_that_pauses_near_the_end_of_a_real_time_playback_gets_no_false_corruption(tmp_path):
    # The playback reaches the end while the consumer sleeps; the frames it had queued come
    # after it stopped, when it no longer says where it is in the file.
    k = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    frames = [DepthFrame(np.full((48, 64), 500 + i, np.uint16), 0.001, k, 1000.0 + 1000 / 90 * i, "S1", i) for i in range(90)]
    write_recording(tmp_path / "p90.db3", frames, pace=True, fps=90)
    numbers = []
    with RecordingSource(tmp_path / "p90.db3", realtime=True) as source:
        for frame in source.frames():
            numbers.append(frame.frame_number)
            if frame.frame_number == 84:
                time.sleep(0.2)
    assert numbers[-1] == 89


def test_close_from_another_thread_ends_the_iteration_promptly(recording):
    source = RecordingSource(recording, realtime=True)
    got, errors = [], []

    def consume():
        try:
            for frame in source.frames():
                got.append(frame)
                time.sleep(0.05)
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    deadline = time.perf_counter() + 30
    while not got and not errors and time.perf_counter() < deadline:
        time.sleep(0.005)
    assert got, errors
    began = time.perf_counter()
    source.close()
    thread.join(timeout=5)
    assert not thread.is_alive() and not errors
    # Promptly; the bound leaves a busy test machine room.
    assert time.perf_counter() - began < 3.0
    assert len(got) < 10


def test_no_sdk_frame_is_held_while_the_consumer_has_a_frame(recording):
    # A capture thread blocked on a full queue keeps the generator suspended at its yield;
    # were the SDK's frames held there, a close() from another thread would stop the
    # pipeline under them.
    with RecordingSource(recording, realtime=False) as source:
        it = source.frames()
        for _ in range(2):
            next(it)
            assert sdk_frames_held(it) == []
        it.close()


def test_a_close_from_another_thread_leaves_the_stop_to_the_playing_stream(recording, monkeypatch):
    import tracker.sources

    held_at_stops = []
    stop = tracker.sources._stop_pipeline

    def checked_stop(pipe):
        held_at_stops.extend(sdk_objects_in_running_streams({RecordingSource.frames.__code__, RecordingSource._play.__code__}))
        return stop(pipe)

    monkeypatch.setattr(tracker.sources, "_stop_pipeline", checked_stop)
    source = RecordingSource(recording, realtime=True)
    got = []
    thread = threading.Thread(target=lambda: got.extend(source.frames()), daemon=True)
    thread.start()
    deadline = time.perf_counter() + 30
    while not got and time.perf_counter() < deadline:
        time.sleep(0.005)
    source.close()
    thread.join(5)
    assert got and not thread.is_alive()
    # Stopped by the stream's own thread, once it held no frame (its own frames are on the
    # stack then, holding nothing).
    assert held_at_stops and all(own and held == [] for own, held in held_at_stops)


def test_a_playback_closed_by_its_consumer_makes_no_sdk_call_after_the_close(recording, monkeypatch):
    # Closed in the loop body (the stream's own thread), the pipeline stops at once; the
    # generator, resumed once more, must not wait on the stopped pipeline and take a frame
    # that is freed after the stop.
    after_close = []
    play = RecordingSource._play

    def watched(self, pipe, playback, convert):
        class Watched:
            def __init__(self, of, name):
                self.of, self.name = of, name

            def __getattr__(self, attribute):
                method = getattr(self.of, attribute)

                def call(*args):
                    if source.closed:
                        after_close.append(f"{self.name}.{attribute}")
                    return method(*args)

                return call

        return play(self, Watched(pipe, "pipeline"), Watched(playback, "playback"), convert)

    monkeypatch.setattr(RecordingSource, "_play", watched)
    for realtime in (False, True):
        source = RecordingSource(recording, realtime=realtime)
        for count, _ in enumerate(source.frames(), start=1):
            if count == 3:
                source.close()
        assert count == 3 and after_close == []


def test_close_from_the_consumer_ends_playback(recording):
    source = RecordingSource(recording, realtime=False)
    it = source.frames()
    next(it)
    source.close()
    assert list(it) == []
    source.close()  # idempotent


def test_truncated_recording_fails_fast(recording, tmp_path):
    data = recording.read_bytes()
    cut = tmp_path / "cut.db3"
    cut.write_bytes(data[: len(data) // 2])
    began = time.perf_counter()
    with pytest.raises(SourceError, match="truncated, corrupt"):
        list(RecordingSource(cut, realtime=False).frames())
    assert time.perf_counter() - began < 10


@pytest.mark.parametrize("name", ["garbage.db3", "garbage.bag"])
def test_garbage_file_is_rejected(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="not a RealSense recording"):
        RecordingSource(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        RecordingSource(tmp_path / "nope.db3")
    (tmp_path / "empty.db3").touch()
    with pytest.raises(SourceError, match="empty"):
        RecordingSource(tmp_path / "empty.db3")
    os.mkfifo(tmp_path / "pipe.db3")  # there, but nothing the SDK can play
    with pytest.raises(SourceError, match="pipe.db3 is not a regular file"):
        RecordingSource(tmp_path / "pipe.db3")


def test_corrupt_frame_midway_yields_the_frames_before_then_fails(recording, synthetic_frames, tmp_path):
    broken = tmp_path / "broken.db3"
    broken.write_bytes(recording.read_bytes())
    with sqlite3.connect(broken) as db:  # cut the compressed image of the 6th depth frame short
        rows = db.execute(
            "SELECT messages.id FROM messages JOIN topics ON messages.topic_id = topics.id "
            "WHERE topics.name LIKE '%Depth_0/image/data%' ORDER BY messages.timestamp"
        ).fetchall()
        assert len(rows) == 10
        db.execute("UPDATE messages SET data = substr(data, 1, 300) WHERE id = ?", rows[5])
    got = []
    with pytest.raises(SourceError, match="corrupt"):
        for frame in RecordingSource(broken, realtime=False).frames():
            got.append(frame)
    _same_frames(synthetic_frames[:5], got)


def _write_depth_then_colour(path: Path, depth_frames: int, colour_after_s: float) -> None:
    """Depth at 90 fps, then one colour frame ``colour_after_s`` after the last depth frame:
    a complete recording whose timeline runs on past its depth stream."""
    w, h = 32, 24
    k = rs.intrinsics()
    k.width, k.height, k.fx, k.fy, k.ppx, k.ppy = w, h, 30.0, 30.0, 16.0, 12.0
    k.model, k.coeffs = rs.distortion.none, [0.0] * 5
    device = rs.software_device()
    depth_sensor, colour_sensor = device.add_sensor("Depth"), device.add_sensor("Colour")
    profiles = []
    for sensor, (kind, uid, fps, bpp, fmt) in zip(
        (depth_sensor, colour_sensor), ((rs.stream.depth, 1, 90, 2, rs.format.z16), (rs.stream.color, 2, 30, 3, rs.format.rgb8))
    ):
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = kind, 0, uid
        stream.width, stream.height, stream.fps, stream.bpp, stream.fmt = w, h, fps, bpp, fmt
        stream.intrinsics = k
        profiles.append(sensor.add_video_stream(stream, True).as_video_stream_profile())
    depth_sensor.add_read_only_option(rs.option.depth_units, 0.001)
    recorder = rs.recorder(str(path), device)
    recorded, queues = recorder.query_sensors(), []
    for sensor in recorded:
        sensor.open(sensor.get_stream_profiles()[0])
        queues.append(rs.frame_queue(1))
        sensor.start(queues[-1])

    def push(sensor, profile, pixels, number):
        frame = rs.software_video_frame()
        frame.pixels, frame.stride, frame.bpp = pixels, pixels.strides[0], pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
        frame.timestamp, frame.domain, frame.frame_number, frame.profile = 1000.0 * time.perf_counter(), rs.timestamp_domain.hardware_clock, number, profile
        sensor.on_video_frame(frame)

    for i in range(depth_frames):
        push(depth_sensor, profiles[0], np.full((h, w), 500 + i, np.uint16), i + 1)
        time.sleep(1 / 90)
    time.sleep(colour_after_s)
    push(colour_sensor, profiles[1], np.zeros((h, w, 3), np.uint8), 1)
    for sensor in recorded:
        sensor.stop()
        sensor.close()
    del recorded, queues, recorder, depth_sensor, colour_sensor, profiles, device
    gc.collect()


def test_a_complete_recording_whose_other_streams_run_on_is_not_called_corrupt(tmp_path):
    path = tmp_path / "depth_and_colour.db3"
    _write_depth_then_colour(path, depth_frames=20, colour_after_s=0.06)
    source = RecordingSource(path, realtime=False)
    assert source.duration_s > 19 / 90 + 0.05  # the timeline does run on past the depth
    frames = list(source.frames())
    assert len(frames) == 20 and frames[-1].depth[0, 0] == 519


def test_recording_without_depth_stream(tmp_path):
    path = tmp_path / "ir.db3"
    _software_recording(path, frames=3, infrared=True)
    with pytest.raises(SourceError, match="no depth stream") as info:
        RecordingSource(path)
    assert "Infrared" in str(info.value)


def test_write_recording_rejects_bad_input(tmp_path, synthetic_frames):
    with pytest.raises(SourceError, match=r"\.db3"):
        write_recording(tmp_path / "x.bag", synthetic_frames[:1])
    with pytest.raises(SourceError, match="no frames"):
        write_recording(tmp_path / "x.db3", [])
    other = DepthFrame(np.zeros((48, 64), np.uint16), 0.001, CameraIntrinsics(64, 48, 50, 50, 32, 24))
    with pytest.raises(SourceError, match="one camera.s depth stream"):
        write_recording(tmp_path / "x.db3", [synthetic_frames[0], other], pace=False)
    # The frame written before the rejected one is in a finalised, playable file.
    assert len(list(RecordingSource(tmp_path / "x.db3", realtime=False).frames())) == 1


def test_folder_source_reads_the_sr305_sample():
    with FolderSource(SR305) as source:
        frames = list(source.frames())
    assert len(frames) == 19
    first = frames[0]
    assert first.intrinsics.fx == pytest.approx(476.007) and first.depth_scale == 0.000125
    assert first.serial == "SR305" and first.depth.dtype == np.uint16
    assert [f.frame_number for f in frames] == list(range(19))
    assert frames[1].timestamp_ms == pytest.approx(1000 / 30)
    # Numeric order within each folder: 30.png before 110.png.
    names = [p.relative_to(SR305).as_posix() for p in source.files]
    assert names[:2] == ["20210326-230536/30.png", "20210326-230536/50.png"]


def test_folder_errors(tmp_path, monkeypatch):
    import cv2

    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((4, 6), np.uint16))
    with pytest.raises(SourceError, match="intrinsics.json") as info:
        FolderSource(tmp_path)
    assert "depth_scale" in str(info.value) and "fx" in str(info.value)
    intrinsics = '{"width": 6, "height": 4, "fx": 5, "fy": 5, "cx": 3, "cy": 2}'
    meta = '{"serial": "x", "depth_scale": 0.001, "intrinsics": %s}' % intrinsics
    (tmp_path / "intrinsics.json").write_text(meta)
    # A PNG that is not a depth image is refused before anything is tracked.
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(SourceError, match=r"1.png holds 8-bit RGB pixels, not depth"):
        FolderSource(tmp_path)
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((5, 6), np.uint16))
    with pytest.raises(SourceError, match=r"1.png is 6x5 but intrinsics.json says 6x4"):
        FolderSource(tmp_path)
    # One damaged past its header fails where it comes, after the frames before it.
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((4, 6), np.uint16))
    (tmp_path / "1.png").write_bytes((tmp_path / "1.png").read_bytes()[:40])
    got = []
    with pytest.raises(SourceError, match="1.png"):
        for frame in FolderSource(tmp_path).frames():
            got.append(frame)
    assert len(got) == 1
    # One removed while the folder is read is said to be gone, not called corrupt.
    cv2.imwrite(str(tmp_path / "1.png"), np.zeros((4, 6), np.uint16))
    frames = FolderSource(tmp_path).frames()
    next(frames)
    (tmp_path / "1.png").unlink()
    with pytest.raises(SourceError, match="1.png is gone: it was removed or moved while the folder was being read"):
        next(frames)
    (tmp_path / "1.png").write_bytes(b"not a png at all")
    with pytest.raises(SourceError, match="1.png is not a PNG image"):
        FolderSource(tmp_path)
    (tmp_path / "1.png").unlink()
    (tmp_path / ".thumbnails").mkdir()  # hidden folders are not frames
    cv2.imwrite(str(tmp_path / ".thumbnails" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    assert len(FolderSource(tmp_path).files) == 1
    (tmp_path / "intrinsics.json").write_text('{"depth_scale": 0.001}')
    with pytest.raises(SourceError, match="intrinsics.json"):
        FolderSource(tmp_path)
    def unreadable(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", unreadable)  # as chmod 0 would, for anyone but root
    with pytest.raises(SourceError, match="cannot read .*intrinsics.json: .*Permission denied"):
        FolderSource(tmp_path)


def test_folder_frames_come_in_natural_order(tmp_path):
    import cv2

    meta = {"depth_scale": 0.001, "intrinsics": {"width": 2, "height": 2, "fx": 5, "fy": 5, "cx": 0.5, "cy": 0.5}}
    (tmp_path / "intrinsics.json").write_text(json.dumps(meta))
    names = ["s9/frame_2.png", "s9/frame_10.png", "s9/frame_1.png", "s10/frame_1.png", "s10/frame_0002.png"]
    for value, name in enumerate(names):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name), np.full((2, 2), value, np.uint16))
    order = [int(f.depth[0, 0]) for f in FolderSource(tmp_path).frames()]
    assert [names[v] for v in order] == [
        "s9/frame_1.png", "s9/frame_2.png", "s9/frame_10.png", "s10/frame_1.png", "s10/frame_0002.png",
    ]


def test_each_sub_folder_is_a_sequence_with_the_nearest_intrinsics(tmp_path):
    import cv2

    def camera(width, scale, serial):
        return {"serial": serial, "depth_scale": scale, "intrinsics": {"width": width, "height": 2, "fx": 5, "fy": 5, "cx": 0.5, "cy": 0.5}}

    (tmp_path / "intrinsics.json").write_text(json.dumps(camera(2, 0.000125, "top")))
    for name, width in (("a/0.png", 2), ("a/1.png", 2), ("b/0.png", 3), ("b/deeper/0.png", 3), ("c/0.PNG", 2)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / name), np.full((2, width), 7, np.uint16))
    # b's own camera, saved by a Windows editor (a byte-order mark before the JSON).
    (tmp_path / "b" / "intrinsics.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(camera(3, 0.001, "b-cam")).encode())
    source = FolderSource(tmp_path)
    frames = list(source.frames())
    assert [(f.sequence, f.serial, f.depth_scale, f.intrinsics.width) for f in frames] == [
        ("a", "top", 0.000125, 2), ("a", "top", 0.000125, 2),
        ("b", "b-cam", 0.001, 3), ("b/deeper", "b-cam", 0.001, 3),  # the nearest one above it
        ("c", "top", 0.000125, 2),  # an upper-case .PNG is a frame too
    ]
    assert [f.frame_number for f in frames] == list(range(5))  # counted through the whole folder
    assert (source.intrinsics.width, source.depth_scale, source.serial) == (2, 0.000125, "top")
    assert "in 4 sequences" in source.description and "2 intrinsics.json files" in source.description
    # One sequence alone, as the source: the camera file of the data set's root, above it.
    alone = FolderSource(tmp_path / "a")
    assert [f.serial for f in alone.frames()] == ["top", "top"] and f"the camera of {tmp_path / 'intrinsics.json'}" in alone.description
    # Without one at the top, each folder needs its own (or one between).
    (tmp_path / "intrinsics.json").unlink()
    with pytest.raises(SourceError, match=r"has no intrinsics.json.*\(nor has .*a, nor any folder above it\)"):
        FolderSource(tmp_path)
    for folder in ("a", "c"):
        (tmp_path / folder / "intrinsics.json").write_text(json.dumps(camera(2, 0.000125, folder)))
    assert [f.serial for f in FolderSource(tmp_path).frames()] == ["a", "a", "b-cam", "b-cam", "c"]


def test_folders_linked_into_the_input_are_read_once_and_an_unreadable_one_is_an_error(tmp_path, monkeypatch):
    import cv2

    root, elsewhere = tmp_path / "input", tmp_path / "elsewhere"
    for folder in (root / "s1", elsewhere / "s2"):
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "0.png"), np.zeros((2, 2), np.uint16))
    meta = {"depth_scale": 0.001, "intrinsics": {"width": 2, "height": 2, "fx": 5, "fy": 5, "cx": 0.5, "cy": 0.5}}
    (root / "intrinsics.json").write_text(json.dumps(meta))
    (root / "s2").symlink_to(elsewhere / "s2")
    (root / "s1" / "loop").symlink_to(root)  # a link back up the tree is walked once
    (root / "a_link_to_s1").symlink_to(root / "s1")  # read as s1, the folder itself, not via the link
    files = FolderSource(root).files
    assert [str(p.relative_to(root)) for p in files] == ["s1/0.png", "s2/0.png"]

    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("s2"):
            raise PermissionError(13, "Permission denied", str(path))  # chmod 0, for anyone but root
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SourceError, match="cannot read folder .*s2: Permission denied"):
        FolderSource(root)


def test_synthetic_source_is_deterministic_smooth_and_has_ground_truth(hand_model, synthetic_frames):
    with SyntheticSource(seed=3, max_frames=10, hand_model=hand_model) as again:
        for a, b in zip(synthetic_frames, again.frames()):
            assert np.array_equal(a.depth, b.depth)
        truth = [again.ground_truth(i) for i in range(10)]
    assert all(t.shape == (21, 3) for t in truth)
    assert again.ground_truth(10) is None
    first = synthetic_frames[0]
    assert first.serial == "synthetic" and first.depth_scale == 0.001
    assert (first.intrinsics.width, first.intrinsics.height, first.intrinsics.fx) == (640, 480, 475.0)
    # Every frame shows the hand near its ground truth depth.
    for frame, joints in zip(synthetic_frames, truth):
        wrist = joints[0]
        u = int(round(frame.intrinsics.fx * wrist[0] / wrist[2] + frame.intrinsics.cx))
        v = int(round(frame.intrinsics.fy * wrist[1] / wrist[2] + frame.intrinsics.cy))
        assert 0 <= u < 640 and 0 <= v < 480
        assert np.count_nonzero(frame.depth) > 400
    # Smooth: over a stretch that crosses keyframes (2 s each), joints move < 3 cm per frame.
    source = SyntheticSource(seed=5, hand_model=hand_model)
    joints = np.stack([source.ground_truth(i) for i in range(0, 200, 1)])
    step = np.linalg.norm(np.diff(joints, axis=0), axis=-1)
    assert step.max() < 0.03
    assert np.linalg.norm(joints[-1] - joints[0], axis=-1).mean() > 0.02  # and it does move


def test_synthetic_source_different_seeds_differ(hand_model):
    a = SyntheticSource(seed=0, hand_model=hand_model).ground_truth(0)
    b = SyntheticSource(seed=1, hand_model=hand_model).ground_truth(0)
    assert not np.allclose(a, b)


def test_realsense_without_camera_says_so():
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense device is connected")
    with pytest.raises(SourceError, match="no RealSense camera connected") as info:
        RealSenseSource()
    assert "found: nothing" in str(info.value)


def test_realsense_errors_are_not_taken_for_sdk_failures():
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense device is connected")
    with pytest.raises(SourceError) as info:
        RealSenseSource(serial="0123456789")
    assert "SDK failed" not in str(info.value) and "no RealSense camera connected" in str(info.value)
    # Beyond the SDK's threshold filter, which would only say "out of range value".
    with pytest.raises(SourceError, match="max_depth_m must be at most 16 m"):
        RealSenseSource(max_depth_m=20.0)


def test_a_db3_suffix_in_capitals_is_named_not_called_corrupt(recording, tmp_path, synthetic_frames):
    upper = tmp_path / "UP.DB3"
    shutil.copyfile(recording, upper)
    with pytest.raises(SourceError, match="must end in a lower-case .db3.*rename it to UP.db3"):
        RecordingSource(upper)
    with pytest.raises(SourceError, match="lower-case .db3"):
        write_recording(tmp_path / "W.DB3", synthetic_frames[:1])
    assert not (tmp_path / "W.DB3").exists()
    # Renamed to .bag: a good .db3 under the old format's suffix, not a corrupt file.
    renamed = tmp_path / "session.bag"
    shutil.copyfile(recording, renamed)
    with pytest.raises(SourceError, match="a .db3 recording .* under another suffix.*rename it to session.db3"):
        RecordingSource(renamed)


def test_open_source_specs(tmp_path, recording):
    with pytest.raises(SourceError, match="accepted") as info:
        open_source("webcam")
    for form in ("realsense:SERIAL", ".db3", ".bag", "intrinsics.json", "synthetic"):
        assert form in str(info.value)
    with pytest.raises(SourceError, match="live camera"):
        open_source("synthetic", record_path=tmp_path / "x.db3")
    assert isinstance(open_source(str(SR305)), FolderSource)
    with open_source(str(recording)) as source:
        assert isinstance(source, RecordingSource) and source.realtime
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "missing.bag"))
    synthetic = open_source("synthetic:7:left")
    assert (synthetic.seed, synthetic.hand) == (7, Handedness.LEFT)
    for spec, message in (("synthetic:-5", "a seed of 0 or more, got -5"), ("synthetic:1:2", "one seed"), ("synthetic:left:right", "one hand side"), ("synthetic:1:middle", "or right., got 'middle'")):
        with pytest.raises(SourceError, match=message):
            open_source(spec)


def test_a_folder_s_frame_rate_comes_from_its_camera_file(tmp_path):
    import cv2

    meta = {"depth_scale": 0.001, "intrinsics": {"width": 2, "height": 2, "fx": 5, "fy": 5, "cx": 0.5, "cy": 0.5}}
    (tmp_path / "take").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "take" / f"{i}.png"), np.full((2, 2), i, np.uint16))
    (tmp_path / "intrinsics.json").write_text(json.dumps(meta))  # above the folder read
    assert FolderSource(tmp_path / "take").fps == 30.0  # none given: the common default
    (tmp_path / "intrinsics.json").write_text(json.dumps({**meta, "fps": 90}))
    source = FolderSource(tmp_path / "take")
    assert source.fps == 90.0 and "at 90 fps" in source.description
    assert [f.timestamp_ms for f in source.frames()] == pytest.approx([0.0, 1000 / 90, 2000 / 90])
    assert FolderSource(tmp_path / "take", fps=15.0).fps == 15.0  # a caller's own rate wins
    # A frame rate no camera has is a typo: a --realtime run would wait days between frames
    # (and past 1e-10 fps overflow the clock's wait).
    for bad in (0, -5, "fast", None, True, "90", 1e-300, 0.001, 1e5):
        (tmp_path / "intrinsics.json").write_text(json.dumps({**meta, "fps": bad}))
        with pytest.raises(SourceError, match='"fps" must be a number of frames a second from 0.01 to 10000'):
            FolderSource(tmp_path / "take")
    (tmp_path / "intrinsics.json").write_text("[" * 100_000 + "]" * 100_000)  # nested past the decoder's depth
    with pytest.raises(SourceError, match="intrinsics.json is not valid"):
        FolderSource(tmp_path / "take")
    for bad in (0, -0.001, "0.001", None, True, float("nan")):  # true is no metre per unit
        (tmp_path / "intrinsics.json").write_text(json.dumps({**meta, "depth_scale": bad}))
        with pytest.raises(SourceError, match='"depth_scale" must be a positive number'):
            FolderSource(tmp_path / "take")
    for bad in (1e300, 2.0, 1e-7):  # no depth camera's unit: a typo, or millimetres for metres
        (tmp_path / "intrinsics.json").write_text(json.dumps({**meta, "depth_scale": bad}))
        with pytest.raises(SourceError, match="a depth camera's lies from 1e-06 to 1"):
            FolderSource(tmp_path / "take")


def test_a_folder_played_in_real_time_keeps_its_pace(tmp_path):
    import cv2

    meta = {"depth_scale": 0.001, "intrinsics": {"width": 2, "height": 2, "fx": 5, "fy": 5, "cx": 0.5, "cy": 0.5}}
    (tmp_path / "intrinsics.json").write_text(json.dumps(meta))
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((2, 2), i, np.uint16))
    began = time.perf_counter()
    arrived = [time.perf_counter() - began for _ in FolderSource(tmp_path, realtime=True, fps=20.0).frames()]
    # Frame i is due i / 20 s after the start: never early (late only by scheduling).
    assert len(arrived) == 5
    assert all(t >= i / 20.0 - 1e-3 for i, t in enumerate(arrived)), arrived
    assert arrived[-1] < 0.2 + 1.0  # and not much later on a busy machine


def test_recordings_and_cameras_need_the_sdk_and_say_how_to_get_it(monkeypatch):
    import builtins

    import tracker.sources as sources

    real_import = builtins.__import__

    def without_sdk(name, *args, **kwargs):
        if name == "pyrealsense2":
            raise ImportError("No module named 'pyrealsense2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_sdk)
    with pytest.raises(SourceError, match="pip install pyrealsense2"):
        sources._import_rs()
    from tracker.cli import _default_source

    assert _default_source() == "synthetic"  # no SDK: tracked as if no camera were connected


@pytest.mark.parametrize("depth_sensors, expected", [((False,), "synthetic"), ((False, True), "realsense")])
def test_with_no_source_named_only_a_device_with_depth_counts_as_a_camera(monkeypatch, depth_sensors, expected):
    # A tracking camera, or a depth camera in recovery mode, lists no depth sensor.
    from types import SimpleNamespace

    from tracker.cli import _default_source

    sensors = [SimpleNamespace(is_depth_sensor=lambda depth=depth: depth) for depth in depth_sensors]
    device = SimpleNamespace(query_sensors=lambda: sensors)
    monkeypatch.setattr(rs, "context", lambda: SimpleNamespace(query_devices=lambda: [device]))
    assert _default_source() == expected


def _software_recording(
    path, frames: int = 5, depth_units: float | None = 0.001, fx: float = 30.0, infrared: bool = False, lens: str = "none"
):
    """A recording written straight through librealsense, with what write_recording would
    refuse to write: no or a zero depth unit, impossible intrinsics, a lens model the
    tracker has none of, no frames, or an infrared stream instead of depth."""
    w, h = 32, 24
    device = rs.software_device()
    stream = rs.video_stream()
    if infrared:
        sensor, dtype = device.add_sensor("Stereo Module"), np.uint8
        stream.type, stream.index, stream.uid, stream.bpp, stream.fmt = rs.stream.infrared, 1, 7, 1, rs.format.y8
    else:
        sensor, dtype = device.add_sensor("Depth"), np.uint16
        stream.type, stream.index, stream.uid, stream.bpp, stream.fmt = rs.stream.depth, 0, 1, 2, rs.format.z16
    stream.width, stream.height, stream.fps = w, h, 30
    k = rs.intrinsics()
    k.width, k.height, k.fx, k.fy, k.ppx, k.ppy = w, h, fx, 30.0, 16.0, 12.0
    k.model, k.coeffs = getattr(rs.distortion, lens), [0.0] * 5
    stream.intrinsics = k
    profile = sensor.add_video_stream(stream, True).as_video_stream_profile()
    if depth_units is not None and not infrared:
        sensor.add_read_only_option(rs.option.depth_units, depth_units)
    recorder = rs.recorder(str(path), device)
    recorded = recorder.query_sensors()[0]
    recorded.open(recorded.get_stream_profiles()[0])
    queue = rs.frame_queue(1)
    recorded.start(queue)
    for i in range(frames):
        frame = rs.software_video_frame()
        frame.pixels = np.full((h, w), 100 + i, dtype)
        frame.stride, frame.bpp, frame.timestamp, frame.frame_number, frame.profile = w * stream.bpp, stream.bpp, 33.3 * i, i + 1, profile
        frame.domain = rs.timestamp_domain.hardware_clock
        sensor.on_video_frame(frame)
        time.sleep(1 / 30)
    recorded.stop()
    recorded.close()
    del recorded, queue, recorder, sensor, profile, device
    gc.collect()
    return path


@pytest.mark.parametrize(
    "options, message",
    [
        ({"depth_units": None}, "no usable depth unit \\(none was recorded\\)"),
        ({"depth_units": 0.0}, "no usable depth unit \\(it says 0.0 m per unit\\)"),
        ({"frames": 0}, "holds no frames at all"),
        ({"lens": "ftheta"}, "recording .*r.db3: the depth stream uses the lens model 'ftheta', which the tracker cannot \\(un\\)project"),
    ],
)
def test_a_recording_that_cannot_be_tracked_is_refused_when_opened(tmp_path, options, message):
    path = _software_recording(tmp_path / "r.db3", **options)
    with pytest.raises(SourceError, match=message):
        RecordingSource(path, realtime=False)


def test_a_frame_with_impossible_intrinsics_is_a_source_error(tmp_path):
    path = _software_recording(tmp_path / "r.db3", fx=0.0)
    with RecordingSource(path, realtime=False) as source:
        with pytest.raises(SourceError, match="r.db3: depth frame 1 cannot be used: .*focal length") as raised:
            list(source.frames())
    # The error outlives the playback: its traceback must not keep the SDK's frame alive.
    assert sdk_frames_in_traceback(raised.value) == []


def test_a_camera_frame_of_a_lens_the_tracker_lacks_is_not_kept_by_its_error():
    # As a live camera's first frame meets it: the converter's own SourceError.
    from tracker.sources import _DepthFrameConverter

    device = rs.software_device()
    sensor = device.add_sensor("Depth")
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid, stream.bpp, stream.fmt = rs.stream.depth, 0, 1, 2, rs.format.z16
    stream.width, stream.height, stream.fps = 32, 24, 30
    k = rs.intrinsics()
    k.width, k.height, k.fx, k.fy, k.ppx, k.ppy = 32, 24, 30.0, 30.0, 16.0, 12.0
    k.model, k.coeffs = rs.distortion.ftheta, [0.0] * 5
    stream.intrinsics = k
    profile = sensor.add_video_stream(stream, True).as_video_stream_profile()
    sensor.add_read_only_option(rs.option.depth_units, 0.001)
    queue = rs.frame_queue(2)
    sensor.open(profile)
    sensor.start(queue)
    pushed = rs.software_video_frame()
    pushed.pixels = np.full((24, 32), 500, np.uint16)
    pushed.stride, pushed.bpp, pushed.timestamp, pushed.frame_number, pushed.profile = 64, 2, 0.0, 1, profile
    sensor.on_video_frame(pushed)
    frame = queue.wait_for_frame(5000).as_depth_frame()
    with pytest.raises(SourceError, match="lens model 'ftheta'") as raised:
        _DepthFrameConverter(rs, "x", "RealSense camera x")(frame)
    del frame
    assert sdk_frames_in_traceback(raised.value) == []
    sensor.stop()
    sensor.close()


def test_a_recording_holds_one_camera(tmp_path, synthetic_frames):
    frames = [synthetic_frames[0], dataclasses.replace(synthetic_frames[1], serial="another camera")]
    with pytest.raises(SourceError, match="serial 'another camera'.*holds one camera's depth stream"):
        write_recording(tmp_path / "two.db3", frames, pace=False)


def test_the_depth_frames_a_recording_holds_are_counted_in_its_tables(recording, tmp_path):
    from tracker.sources import _recorded_depth_frames

    assert _recorded_depth_frames(recording) == 10
    # Where the tables cannot tell, playback falls back on the file's timeline.
    not_sqlite = tmp_path / "junk.db3"
    not_sqlite.write_bytes(b"not a database" * 100)
    assert _recorded_depth_frames(not_sqlite) is None
    assert _recorded_depth_frames(tmp_path / "hand.bag") is None


def test_an_empty_folder_says_it_holds_no_depth_images(tmp_path):
    with pytest.raises(SourceError, match="holds no .png depth images"):
        FolderSource(tmp_path)


def test_a_relative_folder_takes_the_camera_truly_above_it(tmp_path, monkeypatch):
    # "../root/seq" from another folder: the working folder, textually above it, is not.
    import cv2

    def camera(serial):
        return json.dumps({"serial": serial, "depth_scale": 0.001, "intrinsics": {"width": 2, "height": 2, "fx": 5, "fy": 5, "cx": 0.5, "cy": 0.5}})

    (tmp_path / "root" / "seq").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    cv2.imwrite(str(tmp_path / "root" / "seq" / "0.png"), np.zeros((2, 2), np.uint16))
    (tmp_path / "root" / "intrinsics.json").write_text(camera("root"))
    (tmp_path / "work" / "intrinsics.json").write_text(camera("decoy"))
    monkeypatch.chdir(tmp_path / "work")
    source = FolderSource("../root/seq")
    assert source.serial == "root" and f"the camera of {tmp_path / 'root' / 'intrinsics.json'}" in source.description
    monkeypatch.chdir(tmp_path / "root" / "seq")
    assert FolderSource(".").serial == "root"


def test_each_sequence_of_a_folder_is_timed_at_its_own_rate_and_a_null_serial_is_none_given(tmp_path):
    import cv2

    k = {"width": 8, "height": 6, "fx": 5.0, "fy": 5.0, "cx": 4.0, "cy": 3.0}
    (tmp_path / "intrinsics.json").write_text(json.dumps({"depth_scale": 0.001, "intrinsics": k, "serial": None}))  # 30 fps
    for folder, meta in (("s1", None), ("s2", {"depth_scale": 0.001, "intrinsics": k, "fps": 10})):
        (tmp_path / folder).mkdir()
        for i in range(3):
            cv2.imwrite(str(tmp_path / folder / f"{i}.png"), np.zeros((6, 8), np.uint16))
        if meta:
            (tmp_path / folder / "intrinsics.json").write_text(json.dumps(meta))
    source = FolderSource(tmp_path)
    frames = list(source.frames())
    # s1 at 30 fps (33.3 ms apart), then s2 at its own 10 fps (100 ms apart); exact sums of the steps.
    assert [f.timestamp_ms for f in frames] == pytest.approx([0.0, 1000 / 30, 2000 / 30, 100.0, 200.0, 300.0])
    assert frames[0].serial == "" and "serial not given" in source.description and "its own intrinsics.json's rate" in source.description
    # A rate given to the source times every frame.
    assert [f.timestamp_ms for f in FolderSource(tmp_path, fps=20.0).frames()] == pytest.approx([0, 50, 100, 150, 200, 250])


def test_a_png_whose_name_is_not_utf8_is_read(tmp_path):
    # A Latin-1 name, as from a zip file or a Windows share: Python hands it over with the
    # byte escaped, which OpenCV, given the path, cannot take.
    import cv2

    meta = {"depth_scale": 0.001, "intrinsics": {"width": 2, "height": 2, "fx": 5, "fy": 5, "cx": 0.5, "cy": 0.5}}
    (tmp_path / "intrinsics.json").write_text(json.dumps(meta))
    for i, name in enumerate((b"frame_0.png", b"frame_1\xe9.png", b"frame_2.png")):
        try:
            with open(os.path.join(os.fsencode(tmp_path), name), "wb") as f:
                f.write(cv2.imencode(".png", np.full((2, 2), 500 + i, np.uint16))[1].tobytes())
        except OSError:  # a file system that takes only UTF-8 names cannot hold one
            pytest.skip("the file system refuses names that are not UTF-8")
    frames = list(FolderSource(tmp_path).frames())
    assert [int(f.depth[0, 0]) for f in frames] == [500, 501, 502]
    assert os.fsencode(frames[1].source_file) == b"frame_1\xe9.png"


def _not_utf8(folder: Path, name: bytes) -> Path:
    """``folder / name`` for a name in another encoding than UTF-8, as Python surfaces it."""
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


def test_a_recording_path_that_is_not_utf8_is_refused_with_what_to_rename(recording, tmp_path, synthetic_frames):
    # pyrealsense2 would only raise a TypeError about its arguments.
    latin1 = _not_utf8(tmp_path, b"rec_\xe9.db3")
    try:
        shutil.copyfile(recording, latin1)
    except OSError:  # a file system that takes only UTF-8 names cannot hold one
        pytest.skip("the file system refuses names that are not UTF-8")
    with pytest.raises(SourceError, match=r"cannot open recording .*rec_.*\.db3: the RealSense SDK cannot open a path that is not valid UTF-8; rename the file$"):
        RecordingSource(latin1)
    with pytest.raises(SourceError, match="not valid UTF-8; rename the file$"):
        open_source(str(latin1))
    with pytest.raises(SourceError, match=r"cannot record to .*out_.*\.db3: .*not valid UTF-8; rename the file$"):
        write_recording(_not_utf8(tmp_path, b"out_\xe9.db3"), synthetic_frames[:1])
    folder = _not_utf8(tmp_path, b"take_\xe9")
    folder.mkdir()
    with pytest.raises(SourceError, match="not valid UTF-8; rename the folders in it whose names are not$"):
        write_recording(folder / "out.db3", synthetic_frames[:1])
    assert sorted(os.listdir(os.fsencode(tmp_path))) == [b"rec_\xe9.db3", b"take_\xe9"]
    assert os.listdir(folder) == []


def _folder_of_frames(folder: Path, names) -> None:
    """2x2 depth PNGs named ``names``, the i-th holding depth i, with an intrinsics.json."""
    import cv2

    meta = {"depth_scale": 0.001, "intrinsics": {"width": 2, "height": 2, "fx": 5, "fy": 5, "cx": 0.5, "cy": 0.5}}
    (folder / "intrinsics.json").write_text(json.dumps(meta))
    for value, name in enumerate(names):
        (folder / name).parent.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / name), np.full((2, 2), value, np.uint16))


def test_digits_that_are_no_numbers_sort_as_text(tmp_path):
    # A superscript or a circled digit is a digit to Python, but int() reads none of them.
    names = ["frame_10.png", "frame_1².png", "frame_2.png", "frame_1.png", "①/0.png", "٣.png"]
    _folder_of_frames(tmp_path, names)
    order = [names[int(f.depth[0, 0])] for f in FolderSource(tmp_path).frames()]
    # "٣" (Arabic-Indic three) is a number in another script: it compares as 3.
    assert order == ["٣.png", "frame_1.png", "frame_1².png", "frame_2.png", "frame_10.png", "①/0.png"]


@pytest.mark.parametrize("listing", ["as listed", "reversed"])
def test_names_equal_as_numbers_come_in_one_order_whatever_the_listing(tmp_path, monkeypatch, listing):
    names = ["s1/frame_1.png", "s1/frame_001.png", "s01/frame_1.png", "s1/frame_01.png", "s01/frame_2.png", "s01/frame_1.PNG"]
    _folder_of_frames(tmp_path, names)
    walk = os.walk

    def listed(*args, **kwargs):  # the order a file system lists names in is its own
        for folder, subfolders, files in walk(*args, **kwargs):
            yield folder, subfolders, files[::-1] if listing == "reversed" else files

    monkeypatch.setattr(os, "walk", listed)
    frames = list(FolderSource(tmp_path).frames())
    assert [names[int(f.depth[0, 0])] for f in frames] == [
        "s01/frame_1.PNG", "s01/frame_1.png", "s01/frame_2.png", "s1/frame_001.png", "s1/frame_01.png", "s1/frame_1.png",
    ]
    # s01/ and s1/ are sequences of their own, each in one piece.
    assert [f.sequence for f in frames] == ["s01"] * 3 + ["s1"] * 3


def test_a_pipe_named_png_is_refused_without_being_opened(tmp_path):
    # Opening a named pipe waits for a writer: the folder would never open.
    _folder_of_frames(tmp_path, ["0.png"])
    (tmp_path / "1.png").symlink_to(tmp_path / "0.png")  # a link to a PNG is one
    assert len(list(FolderSource(tmp_path).frames())) == 2
    pipe = tmp_path / "2.png"
    os.mkfifo(pipe)
    outcome = []

    def open_folder():
        try:
            FolderSource(tmp_path)
        except SourceError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=open_folder, daemon=True)
    thread.start()
    thread.join(10)  # at once, unless it opened the pipe; the bound leaves a busy machine room
    if thread.is_alive():
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))  # lets the waiting reader go
        pytest.fail("opening the folder waited on the pipe")
    assert outcome == [f"{pipe} is not a regular file, so it holds no depth image; move it out of {tmp_path}"]


@pytest.mark.parametrize(
    "change, said",
    [
        # Each of these was read as another camera: no lens, zero coefficients, 30 fps.
        ({"intrinsics": {"distorsion": "brown_conrady"}}, r"intrinsics have unknown fields \['distorsion'\]; the fields are width, height, fx, fy, cx, cy, distortion, coeffs"),
        ({"intrinsics": {"distortion": "brown_conrady", "coefs": [0.1, 0, 0, 0, 0]}}, r"unknown fields \['coefs'\]"),
        ({"intrinsics": {"coeffs": [0.1, 0.02, 0, 0, 0]}}, r'coefficients \[0.1, 0.02, 0, 0, 0\] but no "distortion" model, so they would go unused; name the model \(none, brown_conrady'),
        ({"frame_rate": 90}, r"unknown keys \['frame_rate'\]; the keys are serial, depth_scale, intrinsics, fps"),
        ({"intrinsics": {"distortion": "brown_conrady", "coeffs": "12345"}}, r"\"coeffs\" must be a list of 5 numbers, got '12345'"),
        ({"intrinsics": {"distortion": "brown_conrady", "coeffs": [True, 0, 0, 0, 0]}}, r"\"coeffs\" must be a list of 5 numbers"),
    ],
)
def test_a_camera_file_with_a_misspelt_key_or_coefficients_of_no_lens_is_refused(tmp_path, change, said):
    _folder_of_frames(tmp_path, ["0.png"])
    good = json.loads((tmp_path / "intrinsics.json").read_text())
    meta = {**good, **change, "intrinsics": {**good["intrinsics"], **change.get("intrinsics", {})}}
    (tmp_path / "intrinsics.json").write_text(json.dumps(meta))
    with pytest.raises(SourceError, match=f"intrinsics.json is not valid \\(.*{said}"):
        FolderSource(tmp_path)
    # Zero coefficients need no lens model.
    good["intrinsics"]["coeffs"] = [0, 0, 0, 0, 0]
    (tmp_path / "intrinsics.json").write_text(json.dumps(good))
    assert FolderSource(tmp_path).intrinsics.coeffs == (0.0,) * 5


def test_a_png_opencv_refuses_outright_is_a_source_error(tmp_path):
    import zlib

    # A valid PNG header declaring 50000 x 50000 16-bit grey pixels, past OpenCV's limit on
    # pixels: imdecode raises instead of returning None.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (50000).to_bytes(4, "big") * 2 + bytes([16, 0, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    (tmp_path / "0.png").write_bytes(png)
    intrinsics = {"width": 50000, "height": 50000, "fx": 5e4, "fy": 5e4, "cx": 25000, "cy": 25000}
    (tmp_path / "intrinsics.json").write_text(json.dumps({"depth_scale": 0.001, "intrinsics": intrinsics}))
    with pytest.raises(SourceError, match="0.png cannot be read as an image"):
        next(iter(FolderSource(tmp_path).frames()))


def test_a_wait_past_the_clock_s_range_does_not_overflow():
    # A recording's timestamp centuries ahead, played in real time: Event.wait would raise
    # OverflowError for so long a timeout.
    import threading

    source = SyntheticSource(seed=0, max_frames=1)
    threading.Timer(0.2, source.close).start()
    began = time.perf_counter()
    assert source._sleep_until(began + 1e300) is False  # waits, until closed
    assert time.perf_counter() - began >= 0.15


@pytest.mark.parametrize(
    "change, said",
    [
        ({"fx": 1e-300}, "fx=1e-300 px for an image 640 px across: a field of view outside 1-179 degrees"),
        ({"fy": 1e300}, "fy=1e+300 px for an image 480 px across"),
        ({"fx": 0.4, "fy": 0.4}, "fx=0.4 px"),  # in millimetres, say
        ({"cx": 1e300}, "cx=1e+300 px, further than the image's 640 px outside it"),
        ({"cy": -1e300}, "cy=-1e+300 px"),
    ],
)
def test_a_folder_camera_no_camera_has_is_refused(tmp_path, change, said):
    import cv2

    intrinsics = {"width": 640, "height": 480, "fx": 400.0, "fy": 400.0, "cx": 320.0, "cy": 240.0}
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((480, 640), np.uint16))
    (tmp_path / "intrinsics.json").write_text(json.dumps({"depth_scale": 0.001, "intrinsics": {**intrinsics, **change}}))
    with pytest.raises(SourceError, match=re.escape(said)):
        FolderSource(tmp_path)
    # The widest and the narrowest views allowed, 179 and 1 degrees, and the principal point
    # an image's size outside it.
    edge = {"fx": 320 / math.tan(math.radians(89.4)), "fy": 240 / math.tan(math.radians(0.51)), "cx": -640.0, "cy": 960.0}
    (tmp_path / "intrinsics.json").write_text(json.dumps({"depth_scale": 0.001, "intrinsics": {**intrinsics, **edge}}))
    FolderSource(tmp_path)
