"""The live overlay window, its display detection, and viewers stopping the pipeline."""

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracker.backends import create_backend
from tracker.estimator import HandEstimator
from tracker.pipeline import HandTracker, run_pipeline
from tracker.sinks import JsonLinesSink
from tracker.sources import SyntheticSource
from tracker.viewer import WindowSink, display_available, display_problem, opencv_has_gui

ROOT = Path(__file__).resolve().parent.parent


def test_display_detection():
    assert opencv_has_gui()  # the project depends on the GUI build of OpenCV
    def answering(display):
        return True

    assert not display_available(environ={}, platform="linux", answers=answering)
    assert display_available(environ={"DISPLAY": ":0"}, platform="linux", answers=answering)
    # Wayland without XWayland: the wheel's Qt would abort the process, so no window.
    assert not display_available(environ={"WAYLAND_DISPLAY": "wayland-0"}, platform="linux", answers=answering)
    assert display_available(environ={"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, platform="linux", answers=answering)
    assert display_available(environ={}, platform="win32")
    # A DISPLAY nobody answers (SSH without X forwarding, an inherited variable): Qt would
    # abort the process there.
    assert display_problem(environ={"DISPLAY": ":7"}, platform="linux", answers=lambda display: False) == "no X server answers at DISPLAY=:7"


def test_an_x_server_is_found_on_its_unix_socket_or_tcp_port(tmp_path):
    import socket

    from tracker.display import x_server_answers

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(tmp_path / "X5"))
        server.listen(1)
        assert x_server_answers(":5", socket_dir=str(tmp_path)) and x_server_answers("unix:5.0", socket_dir=str(tmp_path))
    assert not x_server_answers("unix:6", socket_dir=str(tmp_path))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        for number in range(150, 250):  # a free port above 6000, as an X forwarding's display
            try:
                server.bind(("127.0.0.1", 6000 + number))
                break
            except OSError:
                continue
        server.listen(1)
        assert x_server_answers(f"127.0.0.1:{number}.0", socket_dir=str(tmp_path))
    assert not x_server_answers(f"127.0.0.1:{number}", socket_dir=str(tmp_path), timeout_s=0.2)
    assert not x_server_answers("not a display") and not x_server_answers(":x")


def test_an_x_server_on_the_ipv6_loopback_answers(tmp_path):
    import socket

    from tracker.display import x_server_answers

    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6")
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as server:
        for number in range(150, 250):  # a free port above 6000, as an X forwarding's display
            try:
                server.bind(("::1", 6000 + number))
                break
            except OSError as error:
                if error.errno == errno.EADDRNOTAVAIL:
                    pytest.skip("no IPv6 loopback on this machine")
        else:
            pytest.skip("no free port in 6150-6249 on the IPv6 loopback")
        server.listen(1)
        assert x_server_answers(f"[::1]:{number}", socket_dir=str(tmp_path))
        assert x_server_answers(f"::1:{number}.0", socket_dir=str(tmp_path))


def test_a_display_nobody_answers_runs_headless(tmp_path, monkeypatch, capsys):
    from tracker.cli import main

    monkeypatch.setenv("DISPLAY", "unix:987")  # no server: its socket does not exist
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["--source", "synthetic", "--max-frames", "2", "--out", str(tmp_path / "x.jsonl")]) == 0
    assert "no X server answers at DISPLAY=unix:987: running headless" in capsys.readouterr().err
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 2
    assert main(["--source", "synthetic", "--max-frames", "1", "--out", str(tmp_path / "y.jsonl"), "--viewer-3d"]) == 2
    assert "no X server answers at DISPLAY=unix:987" in capsys.readouterr().err


class FakeWindow:
    """Stands in for cv2.imshow / waitKey / getWindowProperty; presses a key on a given frame."""

    def __init__(self, key_on_frame: int | None = None, closed_on_frame: int | None = None):
        self.key_on_frame, self.closed_on_frame = key_on_frame, closed_on_frame
        self.images = []

    def show(self, title, image):
        self.images.append(image)

    def wait_key(self, delay):
        return ord("q") if len(self.images) == self.key_on_frame else -1

    def visible(self, title):
        return len(self.images) != self.closed_on_frame


@pytest.mark.parametrize("how", ["key", "closed"])
def test_window_quits_the_run_and_keeps_what_was_written(tmp_path, hand_model, how):
    window = FakeWindow(key_on_frame=3) if how == "key" else FakeWindow(closed_on_frame=3)
    sink = WindowSink(hand_model, show=window.show, wait_key=window.wait_key, window_visible=window.visible)
    out = tmp_path / "t.jsonl"
    tracker = HandTracker(HandEstimator(create_backend("onnxruntime"), hand_model))
    source = SyntheticSource(seed=1, max_frames=40, hand_model=hand_model)
    summary = run_pipeline(source, tracker, [JsonLinesSink(out), sink], drop_old_frames=False)
    assert summary.stopped_by == "viewer closed"
    assert summary.frames == 3 and len(window.images) == 3
    assert window.images[0].shape == (480, 640, 3)
    assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == [0, 1, 2]


def test_the_window_shows_no_more_frames_than_a_screen_refreshes(hand_model):
    import numpy as np

    from tracker.pipeline import FrameResult
    from tracker.types import CameraIntrinsics, DepthFrame

    window = FakeWindow()
    sink = WindowSink(hand_model, show=window.show, wait_key=window.wait_key, window_visible=window.visible)
    intrinsics = CameraIntrinsics(width=64, height=48, fx=50.0, fy=50.0, cx=32.0, cy=24.0)
    # A 90 fps camera (11.1 ms apart), then its clock restarting, then a clock that stands still.
    times_ms = [0.0, 11.1, 22.2, 33.3, 44.4, 55.5, 0.5, 5.0, 5.0, 5.0]
    for number, time_ms in enumerate(times_ms):
        frame = DepthFrame(np.full((48, 64), 800, np.uint16), 0.001, intrinsics, timestamp_ms=time_ms, frame_number=number)
        sink.write(FrameResult(frame, (), {}))
    # Drawn: 0, then 22.2 and 44.4 (16.7 ms on at least), then 0.5 (the clock went back), and
    # the two at an unchanged 5.0: with no clock to follow, every frame.
    assert len(window.images) == 6
    # The rate drawn on the picture counts every frame, shown or not: all noted.
    assert len(sink.painter._times) == len(times_ms)


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (apt install xvfb) for a real X display")
def test_live_window_opens_on_a_display(tmp_path):
    display = f":{90 + os.getpid() % 9}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "800x600x24", "-nolisten", "tcp"], stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # let the server accept connections
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
        cmd = [sys.executable, str(ROOT / "run_tracker.py"), "--source", "synthetic", "--max-frames", "4", "--out", str(tmp_path / "t.jsonl")]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
        assert result.returncode == 0, result.stderr
        assert "running headless" not in result.stderr  # the window sink was used
        assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 4
    finally:
        server.terminate()
        server.wait(timeout=10)


def _video_frames(path: Path) -> list:
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            return frames
        frames.append(image)


@pytest.mark.parametrize(
    "times_ms,expected",
    [
        # At 30 fps: the first frame is held until the second's time, 100 ms on (3 video
        # frames); one 6.7 ms after the third has no video frame of its own but is the newest,
        # so it is what stays on through a 10 s gap, shrunk to 2 s (60 frames). The last is
        # held for the 6.7 ms before the gap, less than a video frame.
        ([0.0, 100.0, 133.3, 140.0, 10140.0], [0, 0, 0, 1, 2] + [3] * 59 + [4]),
        ([5.0, 5.0, 5.0], [0, 1, 2]),  # no clock to follow: one video frame each
        # 10 fps for 1.1 s: the last frame too is held for 100 ms, as long as the others.
        ([100.0 * i for i in range(11)], [i for i in range(11) for _ in range(3)]),
        ([40.0], [0]),  # a single frame, with no interval to hold it for: one video frame
        # 90 fps: every third frame, and the last one's 11 ms are less than a video frame more.
        ([1000 * i / 90 for i in range(6)], [0, 2, 5]),
        # Frames 1, 3 and 4 come too soon for a slot of their own; the video still ends on
        # the last one, the state the input ended in.
        ([0.0, 10.0, 20.0, 40.0, 45.0], [0, 2, 4]),
    ],
)
def test_the_overlay_video_follows_the_frames_timestamps(tmp_path, hand_model, times_ms, expected):
    import numpy as np

    from tracker.pipeline import FrameResult
    from tracker.types import CameraIntrinsics, DepthFrame
    from tracker.viewer import VideoSink

    k = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)

    def result(i: int, time_ms: float = 0.0) -> FrameResult:
        depth = np.full((48, 64), 500, np.uint16)
        depth[:, : 12 * (i + 1)] = 0  # told apart by how much of the frame has no depth
        return FrameResult(DepthFrame(depth, 0.001, k, timestamp_ms=time_ms, frame_number=i), (), {})

    sink = VideoSink(tmp_path / "v.mp4", hand_model)
    for i, t in enumerate(times_ms):
        sink.write(result(i, t))
    sink.close()
    looks = [sink.painter(result(i)).astype(float) for i in range(len(times_ms))]
    # Nearest drawn frame for each decoded one (the codec is lossy).
    shown = [int(np.argmin([np.abs(image - look).mean() for look in looks])) for image in _video_frames(tmp_path / "v.mp4")]
    assert shown == expected


@pytest.mark.parametrize("index_written", [True, False])
def test_the_overlay_video_takes_frames_of_another_size_and_reports_a_refused_one(tmp_path, hand_model, capsys, index_written):
    import numpy as np

    from tracker.pipeline import FrameResult
    from tracker.types import CameraIntrinsics, DepthFrame
    from tracker.viewer import VideoSink

    def result(width: int, height: int, i: int) -> FrameResult:
        k = CameraIntrinsics(width, height, 50.0, 50.0, width / 2, height / 2)
        return FrameResult(DepthFrame(np.full((height, width), 500, np.uint16), 0.001, k, timestamp_ms=33.3 * i, frame_number=i), (), {})

    sink = VideoSink(tmp_path / "v.mp4", hand_model)
    sink.write(result(64, 48, 0))
    # A camera back in another mode: OpenCV would drop frames of another size with a log
    # line, so they are scaled to the video's.
    sink.write(result(80, 60, 1))
    assert sink._written == 2
    writer = sink._writer

    partial = tmp_path / ".v.partial.mp4"

    class Full:  # the encoder's answer on a full disk
        def write(self, image):
            return False

        def release(self):
            writer.release()
            if not index_written:  # the disk was full before the video's index went out
                partial.write_bytes(partial.read_bytes()[:2000])

    sink._writer = Full()
    with pytest.raises(OSError, match="encoder refused a frame"):
        sink.write(result(64, 48, 2))
    # No file cut off takes the real name, where an earlier run's video would have been
    # replaced. What was written stays under its hidden name where it plays; one that
    # cannot be played is removed, freeing the full disk.
    sink.close()
    assert not (tmp_path / "v.mp4").exists() and partial.is_file() == index_written
    assert ("what it holds is in" if index_written else "could not be played and was removed") in capsys.readouterr().err


@pytest.mark.parametrize("name", ["v.mp4", "v.png"])
def test_the_overlay_goes_into_place_only_when_closed(tmp_path, hand_model, name):
    import cv2
    import numpy as np

    from tracker.pipeline import FrameResult
    from tracker.types import CameraIntrinsics, DepthFrame
    from tracker.viewer import VideoSink

    k = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    target = tmp_path / name
    target.write_bytes(b"an earlier run's overlay")

    sink = VideoSink(target, hand_model)
    for i in range(3):
        sink.write(FrameResult(DepthFrame(np.full((48, 64), 500, np.uint16), 0.001, k, timestamp_ms=33.3 * i, frame_number=i), (), {}))
    # A run killed now (no close) would leave the earlier file whole under its name.
    assert target.read_bytes() == b"an earlier run's overlay"
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    if name.endswith(".png"):
        assert cv2.imread(str(target)).shape == (48, 64, 3)
    else:
        assert len(_video_frames(target)) == 3


def test_frames_too_small_for_a_video_are_said_to_be(tmp_path, hand_model):
    import numpy as np

    from tracker.pipeline import FrameResult
    from tracker.types import CameraIntrinsics, DepthFrame
    from tracker.viewer import VideoSink

    # The mp4v encoder opens no video narrower or lower than 2 pixels: the size is the
    # cause, not a missing encoder.
    k = CameraIntrinsics(1, 1, 50.0, 50.0, 0.0, 0.0)
    sink = VideoSink(tmp_path / "v.mp4", hand_model)
    with pytest.raises(OSError, match="the frames are 1x1 pixels, and an mp4v video needs at least 2x2"):
        sink.write(FrameResult(DepthFrame(np.full((1, 1), 500, np.uint16), 0.001, k), (), {}))
        sink.close()  # the frame is drawn when its time is over, at the latest here
    sink.close()
    assert not (tmp_path / "v.mp4").exists()


def test_a_video_path_that_cannot_be_written_fails_before_any_frame(tmp_path, hand_model):
    from tracker.viewer import VideoSink

    (tmp_path / "v.mp4").mkdir()
    with pytest.raises(ValueError, match="v.mp4: it is a folder"):
        VideoSink(tmp_path / "v.mp4", hand_model)
    # A name with a byte of another encoding (Latin-1 é): OpenCV's writer would crash on it.
    for suffix in (".mp4", ".png"):
        with pytest.raises(ValueError, match="not valid UTF-8"):
            VideoSink(tmp_path / f"caf\udce9{suffix}", hand_model)


def test_a_video_with_no_frames_leaves_an_earlier_file_and_says_so(tmp_path, hand_model, capsys):
    from tracker.viewer import VideoSink

    video = tmp_path / "hands.mp4"
    video.write_bytes(b"an earlier run's video")
    sink = VideoSink(video, hand_model)
    sink.close()
    sink.close()
    assert video.read_bytes() == b"an earlier run's video"
    assert capsys.readouterr().err.count("was not written: the file there is from before") == 1
    VideoSink(tmp_path / "new.mp4", hand_model).close()
    assert not (tmp_path / "new.mp4").exists() and capsys.readouterr().err == ""


@pytest.mark.parametrize("name, drawn", [("v.png", 1), ("v.mp4", 12)])
def test_only_the_frames_the_overlay_shows_are_drawn(tmp_path, hand_model, name, drawn):
    import numpy as np

    from tracker.pipeline import FrameResult
    from tracker.types import CameraIntrinsics, DepthFrame
    from tracker.viewer import OverlayPainter, VideoSink

    k = CameraIntrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    painter = OverlayPainter(hand_model.faces)
    calls = []

    def counted(result):
        calls.append(result.frame.frame_number)
        return OverlayPainter.__call__(painter, result)

    sink = VideoSink(tmp_path / name, hand_model, painter=counted)
    # 31 frames of a 90 fps camera (333 ms) into a 30 fps video: frames 0, 2, 5, ..., 29
    # take a video frame each (11), and the video ends on the last, 30; a picture shows
    # the last one only.
    for i in range(31):
        sink.write(FrameResult(DepthFrame(np.full((48, 64), 500, np.uint16), 0.001, k, timestamp_ms=1000 * i / 90, frame_number=i), (), {}))
    sink.close()
    assert len(calls) == drawn and calls[-1] == 30


def test_depth_colours_follow_the_turbo_map_from_near_red_to_far_blue():
    import cv2
    import numpy as np

    from tracker.synth.contact_sheet import colourise_depth

    turbo = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[None], cv2.COLORMAP_TURBO)[0]
    # near 0.5, far 1.3 m: level 255 (1.3 - d) / 0.8 rounded down, saturated; 0 m is no data.
    depth = np.array([[0.4, 0.5, 0.7, 0.9, 1.1, 1.3, 2.0, 0.0]], np.float32)
    expected = turbo[[255, 255, 191, 127, 63, 0, 0, 0]]
    expected[-1] = 0
    np.testing.assert_array_equal(colourise_depth(depth, 0.5, 1.3)[0], expected)
    # Anywhere in between, within one level of the exact map (float32 rounding at a level's edge).
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.0, 2.0, (120, 160)).astype(np.float32)
    exact = np.floor(255 * (1.3 - np.clip(depth.astype(np.float64), 0.5, 1.3)) / 0.8).astype(int)
    got = colourise_depth(depth, 0.5, 1.3)
    level = np.abs(turbo[None, None].astype(int) - got[:, :, None].astype(int)).sum(-1).argmin(-1)
    assert np.abs(level - exact).max() <= 1


def test_the_mesh_is_shaded_over_its_box_as_over_the_whole_image():
    import numpy as np

    from tracker.viewer import _shade_mesh

    rng = np.random.default_rng(1)
    for rows, cols in ((slice(30, 70), slice(50, 90)), (slice(0, 20), slice(140, 160))):  # inside; at a corner
        covered = np.zeros((100, 160), bool)
        covered[rows, cols] = rng.random((20 if rows.start == 0 else 40, 20 if cols.start == 140 else 40)) < 0.8
        mesh_depth = np.where(covered, 0.5 + 0.02 * rng.random(covered.shape), 0.0)
        image = rng.integers(0, 255, (100, 160, 3), dtype=np.uint8)
        # What the overlay did over the whole image: its slopes, and the blend on the covered pixels.
        gy, gx = np.gradient(np.where(covered, mesh_depth, np.median(mesh_depth[covered])))
        light = np.clip(0.65 + 30 * (gx + gy), 0.25, 1.0)[covered]
        expected = image.copy()
        expected[covered] = (0.35 * image[covered] + 0.65 * np.stack([light * 235, light * 235, light * 245], -1)).astype(np.uint8)
        _shade_mesh(image, mesh_depth, covered)
        np.testing.assert_array_equal(image, expected)
    untouched = image.copy()
    _shade_mesh(image, mesh_depth, np.zeros_like(covered))  # no mesh in view: nothing drawn
    np.testing.assert_array_equal(image, untouched)


def test_depth_colours_of_an_empty_range_are_those_of_a_millimetre():
    import numpy as np

    from tracker.synth.contact_sheet import colourise_depth

    # A frame whose valid pixels all lie at one depth gives the overlay near == far.
    depth = np.array([[0.7, 0.7004, 0.7011, 0.0, np.nan]], np.float32)
    np.testing.assert_array_equal(colourise_depth(depth, 0.7, 0.7), colourise_depth(depth, 0.7, 0.701))
    got = colourise_depth(depth, 0.7, 0.7)[0]
    reference = colourise_depth(np.array([[0.0001, 10.0]], np.float32), 0.0, 1.0)[0]  # the map's near and far ends
    np.testing.assert_array_equal(got[0], reference[0])  # at near: the nearest colour
    np.testing.assert_array_equal(got[2], reference[1])  # past the millimetre: the farthest
    assert not got[3:].any()  # no data, NaN included: black


def test_a_video_is_kept_where_opencv_here_reads_no_video_back(tmp_path, monkeypatch):
    # A build whose reader cannot open what its writer wrote (no reader for the container):
    # the finished video cannot be checked, and is kept, not taken for a cut-off one.
    import cv2

    from tracker.cli import main

    class ReadsNothing:
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(cv2, "VideoCapture", ReadsNothing)
    video = tmp_path / "v.mp4"
    assert main(["--source", "synthetic", "--max-frames", "2", "--no-viewer", "--out", str(tmp_path / "t.jsonl"), "--video", str(video)]) == 0
    assert video.stat().st_size > 2000


def test_a_video_that_cannot_be_finished_fails_the_run_and_keeps_the_earlier_one(tmp_path, monkeypatch, capsys):
    import cv2

    from tracker.cli import main

    class IndexLost:
        """OpenCV's writer on a disk that fills as the MP4's index goes out when it is
        released: every frame taken, no error, and a file with no index."""

        def __init__(self, path, *args):
            self.path, self.writer = Path(path), opened(path, *args)

        def isOpened(self):
            return self.writer.isOpened()

        def write(self, image):
            return self.writer.write(image)

        def release(self):
            self.writer.release()
            if self.path.parent == tmp_path:  # the disk of the video, not the system's temporary folder
                self.path.write_bytes(self.path.read_bytes()[:2000])

    opened = cv2.VideoWriter
    monkeypatch.setattr(cv2, "VideoWriter", IndexLost)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"an earlier run's video")
    argv = ["--source", "synthetic", "--max-frames", "2", "--no-viewer", "--out", str(tmp_path / "t.jsonl"), "--video", str(video)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"cannot write video {video}: it did not play once finished" in err and "left as it was" in err
    assert video.read_bytes() == b"an earlier run's video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.config.json", "t.jsonl", "v.mp4"]  # nothing unplayable left


class _HeldSink:
    """An output that takes frames only while ``open`` is set, recording the thread each came on."""

    def __init__(self, fail_at=None) -> None:
        import threading

        self.open = threading.Event()
        self.taken, self.threads, self.closed, self.fail_at = [], set(), 0, fail_at

    def write(self, result) -> None:
        import threading

        assert self.open.wait(10)
        if result == self.fail_at:
            raise OSError("disk full")
        self.taken.append(result)
        self.threads.add(threading.current_thread().name)

    def close(self) -> None:
        self.closed += 1


def test_a_background_output_takes_frames_in_order_off_the_callers_thread_and_is_closed_after_them():
    from tracker.sinks import BackgroundSink

    held = _HeldSink()
    sink = BackgroundSink(held, max_waiting=4)
    for frame in range(4):
        sink.write(frame)  # returns while the output is held: nothing waits for the drawing
    assert held.taken == []
    held.open.set()
    for frame in range(4, 10):
        sink.write(frame)
    sink.close()
    assert held.taken == list(range(10)) and held.closed == 1
    assert held.threads == {"_HeldSink-writer"}
    sink.close()  # once is enough
    assert held.closed == 1


def test_a_background_output_full_of_frames_makes_the_next_one_wait():
    import threading

    from tracker.sinks import BackgroundSink

    held = _HeldSink()
    sink = BackgroundSink(held, max_waiting=2)
    # One frame is taken off the queue and waits in the output's write, two wait in the queue.
    for frame in range(3):
        sink.write(frame)
    writer = threading.Thread(target=sink.write, args=(3,))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive()  # no room: it waits, rather than dropping a frame
    held.open.set()
    writer.join(10)
    sink.close()
    assert held.taken == [0, 1, 2, 3]


def test_a_background_outputs_failure_is_raised_at_the_next_write_or_at_close():
    from tracker.sinks import BackgroundSink

    held = _HeldSink(fail_at=1)
    held.open.set()
    sink = BackgroundSink(held)
    sink.write(0)
    sink.write(1)
    with pytest.raises(OSError, match="disk full"):
        for frame in range(2, 1000):  # raised as soon as the writer thread has failed
            sink.write(frame)
            time.sleep(0.01)
    sink.close()  # raised once: the caller has it
    assert held.taken == [0] and held.closed == 1
    # A failure on the last frames, after the last write, is raised by close, after the
    # output is closed (a video gets its end).
    held = _HeldSink(fail_at=2)
    held.open.set()
    sink = BackgroundSink(held)
    for frame in range(3):
        sink.write(frame)
    with pytest.raises(OSError, match="disk full"):
        sink.close()
    assert held.closed == 1


def test_a_background_outputs_close_interrupted_while_it_waits_closes_it_when_called_again():
    from tracker.sinks import BackgroundSink

    held = _HeldSink()
    sink = BackgroundSink(held)
    sink.write(0)
    join = sink._thread.join
    calls = []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the frame is still being written
        return join(*args, **kwargs)

    sink._thread.join = interrupted_once
    with pytest.raises(KeyboardInterrupt):
        sink.close()
    assert held.closed == 0
    held.open.set()
    sink.close()  # the pipeline's clean-up: waits again, then closes the output
    assert held.taken == [0] and held.closed == 1
