"""The library interface (tracker.api): tracking from Python, frames brought by the caller."""

import json
import logging

import numpy as np
import pytest

from tracker.api import CameraIntrinsics, DepthFrame, Joint, frame_line, open_tracker, track
from tracker.smoothing import OneEuroConfig
from tracker.sources import DEFAULT_SYNTHETIC_FRAMES, FrameSource, SourceError, SyntheticSource
from tracker.types import METRES_IMAGE_DEPTH_SCALE
from tracker.weights import WeightsError


def _joint_error_mm(result, source) -> float:
    truth = source.ground_truth(result.frame.frame_number)
    return float(np.linalg.norm(result.hands[0].joints_cam_m - truth, axis=1).mean() * 1000)


def test_track_follows_the_rendered_hand():
    # Round trip: a moving hand rendered with known joints, tracked, compared.
    source = SyntheticSource(seed=3, max_frames=12)
    results = list(track(source))
    assert [r.frame.frame_number for r in results] == list(range(12))
    assert all(len(r.hands) == 1 for r in results)
    hand = results[-1].hands[0]
    assert hand.joints_cam_m.shape == (len(Joint), 3) and hand.joints_uv_px.shape == (len(Joint), 2)
    # The built-in input scores 7.5 mm over its 120 frames (README), seed 3 about 8 mm; a
    # crop in the wrong place or a side mixed up is centimetres off.
    assert np.mean([_joint_error_mm(r, source) for r in results]) < 15.0
    assert source.closed  # closed when the loop ends
    # The command line's JSON line for a result: joints to 10 micrometres.
    line = json.loads(frame_line(results[-1]))
    assert line["frame"] == 11 and line["hands"][0]["handedness"] == hand.handedness.value
    np.testing.assert_allclose(line["hands"][0]["joints_xyz_m"], hand.joints_cam_m, atol=6e-6)


def test_track_takes_a_source_by_name_and_stops_at_max_frames():
    with track("synthetic:5:left", max_frames=3, hand="left") as results:
        found = [r.hands for r in results]
    assert len(found) == 3 and all(len(hands) == 1 and hands[0].handedness.value == "left" for hands in found)
    # Without a frame count the built-in input has the command line's length, not endless.
    assert track("synthetic").max_frames == DEFAULT_SYNTHETIC_FRAMES


class _ClosingSpy:
    """Stands in for a backend's close, counting the calls."""

    def __init__(self, close) -> None:
        self.close, self.calls = close, 0

    def __call__(self) -> None:
        self.calls += 1
        self.close()


def test_leaving_early_closes_the_source_and_the_backend():
    source = SyntheticSource(seed=1, max_frames=50)
    with track(source) as results:
        spy = _ClosingSpy(results.hand_tracker.estimator.backend.close)
        results.hand_tracker.estimator.backend.close = spy
        for number, _ in enumerate(results):
            if number == 1:
                break
        assert not source.closed
    assert source.closed and spy.calls == 1 and results.hand_tracker.closed
    assert list(results) == []  # closed: no more frames
    with pytest.raises(RuntimeError, match="closed"):
        results.hand_tracker.process(next(iter(SyntheticSource(seed=1, max_frames=1))))


@pytest.mark.parametrize("source", [None, [], (x for x in ())])
def test_a_source_of_another_type_is_refused_rather_than_taken_for_a_path(source):
    with pytest.raises(TypeError, match="takes a source name"):
        track(source)


@pytest.mark.parametrize("closed_in", ["prepare", "network"])
def test_a_close_from_the_processing_thread_leaves_the_backend_to_the_frame_in_hand(closed_in):
    # As a signal handler's close does, between two of the frame's steps: the frame either
    # finishes (closed while its network runs) or stops with the tracker's own "closed"
    # error (closed before it begins), never on a backend already taken away.
    frames = list(SyntheticSource(seed=1, max_frames=2).frames())
    with open_tracker() as hand_tracker:
        backend = hand_tracker.estimator.backend
        spy = _ClosingSpy(backend.close)
        backend.close = spy
        if closed_in == "prepare":
            prepare = hand_tracker.prepare_function
            hand_tracker.prepare_function = lambda *args: (hand_tracker.close(), prepare(*args))[1]
            with pytest.raises(RuntimeError, match="this HandTracker is closed"):
                hand_tracker.process(frames[0])
        else:
            run = backend.run
            backend.run = lambda depth: (hand_tracker.close(), run(depth))[1]
            assert len(hand_tracker.process(frames[0]).hands) == 1
        assert spy.calls == 1  # closed as the frame ended
        with pytest.raises(RuntimeError, match="closed"):
            hand_tracker.process(frames[1])


def test_an_opened_source_is_closed_when_the_tracker_cannot_open(tmp_path):
    source = SyntheticSource(seed=1, max_frames=5)
    with pytest.raises(WeightsError):
        track(source, weights=tmp_path)
    assert source.closed


def test_the_tracker_is_closed_when_the_source_cannot_open(tmp_path, monkeypatch):
    from tracker.pipeline import HandTracker

    closed = []
    monkeypatch.setattr(HandTracker, "close", lambda self: closed.append(self))
    with pytest.raises(SourceError):
        track(tmp_path / "missing.db3")  # raised here, not at the first frame
    assert len(closed) == 1


class _FailsAfter(FrameSource):
    """Two rendered frames, then a failure, as a camera unplugged or a recording cut short."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered = SyntheticSource(seed=2, max_frames=2)

    def frames(self):
        yield from self.rendered.frames()
        raise SourceError("the recording ends in the middle of a frame")


def test_a_source_failing_midway_raises_after_the_frames_before_it():
    source = _FailsAfter()
    seen = []
    results = track(source)
    with pytest.raises(SourceError, match="middle of a frame"):
        for result in results:
            seen.append(result.frame.frame_number)
    assert seen == [0, 1] and source.closed and results.hand_tracker.closed


def test_a_frame_made_from_metres_tracks_like_the_cameras_own():
    # The renderer's frames are in whole millimetres, which 0.1 mm units hold exactly; in
    # metres the two differ by a float32 rounding step at most (1e-6 m at 3 m), which moves the
    # joints by about 1e-7 m: 1e-5 m leaves room for onnxruntime's own rounding.
    source = SyntheticSource(seed=4, max_frames=3)
    frames = list(source.frames())
    with open_tracker(hand="right") as direct, open_tracker(hand="right") as from_metres:
        for frame in frames:
            made = DepthFrame.from_metres(frame.depth_m(), frame.intrinsics, frame.timestamp_ms, frame.serial, frame.frame_number)
            np.testing.assert_allclose(made.depth_m(), frame.depth_m(), atol=1e-6)
            a, b = direct.process(frame), from_metres.process(made)
            assert len(a.hands) == len(b.hands) == 1
            np.testing.assert_allclose(a.hands[0].joints_cam_m, b.hands[0].joints_cam_m, atol=1e-5)


def test_a_hand_with_pixels_missing_all_over_it_is_tracked_as_a_whole_one():
    # Round trip with a tenth of the pixels lost at random (a dark or oblique surface): the
    # crop fills such isolated holes (tracker.crop.HOLE_FILL_MIN_MEASURED). Unfilled, these
    # frames scored 37-59 mm over three draws of the holes, and lost the hand on some.
    import dataclasses

    source = SyntheticSource(seed=3, max_frames=8)
    frames = list(source.frames())
    rng = np.random.default_rng(0)
    errors = {}
    for name, lost in (("whole", 0.0), ("holes", 0.1)):
        with open_tracker(hand="right") as tracker:
            results = [
                tracker.process(dataclasses.replace(frame, depth=np.where(rng.random(frame.depth.shape) < lost, 0, frame.depth).astype(frame.depth.dtype)))
                for frame in frames
            ]
        assert all(len(r.hands) == 1 for r in results)
        errors[name] = np.mean([_joint_error_mm(r, source) for r in results])
    # Seed 3's first 8 frames score 10.0 mm whole; filled, three draws of the holes gave
    # 9.2-10.3 mm.
    assert errors["holes"] < errors["whole"] + 1.5, errors


def test_depth_in_metres_keeps_what_was_measured_and_drops_the_rest():
    intrinsics = CameraIntrinsics(4, 2, 100.0, 100.0, 2.0, 1.0)
    depth_m = np.array([[0.5, 0.31234, np.nan, -0.2], [np.inf, 0.0, 6.5, 7.0]], np.float32)
    frame = DepthFrame.from_metres(depth_m, intrinsics, timestamp_ms=12.5, serial="ros", frame_number=7)
    assert frame.depth_scale == METRES_IMAGE_DEPTH_SCALE
    # 0.1 mm units, rounded: 0.31234 m -> 3123 units; beyond 6.5535 m, NaN, inf, <= 0: 0.
    np.testing.assert_array_equal(frame.depth, [[5000, 3123, 0, 0], [0, 0, 65000, 0]])
    assert (frame.timestamp_ms, frame.serial, frame.frame_number) == (12.5, "ros", 7)
    # Labels of the wrong kind are refused as a DepthFrame refuses them, not made into "None" or 1.
    with pytest.raises(ValueError, match="serial must be a str"):
        DepthFrame.from_metres(depth_m, intrinsics, serial=None)
    with pytest.raises(ValueError, match="frame_number must be a whole number"):
        DepthFrame.from_metres(depth_m, intrinsics, frame_number=1.5)
    with pytest.raises(ValueError, match="2-D"):
        DepthFrame.from_metres(depth_m[None], intrinsics)
    masked = np.ma.masked_array(np.full((2, 4), 0.5), mask=[[True, False, False, False]] + [[False] * 4])
    assert DepthFrame.from_metres(masked, intrinsics).depth[0, 0] == 0  # masked: not measured
    with np.errstate(all="raise"):  # huge values are dropped without a floating-point warning
        assert not DepthFrame.from_metres(np.full((2, 4), 1e308), intrinsics).depth.any()
    with pytest.raises(ValueError, match="floating point"):
        DepthFrame.from_metres(np.full((2, 4), 500, np.uint16), intrinsics)
    with pytest.raises(ValueError, match="intrinsics"):
        DepthFrame.from_metres(depth_m[:, :3], intrinsics)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f4"])
def test_depth_in_metres_becomes_the_units_numpy_s_own_rounding_gives(dtype):
    # The one-pass kernel against the whole-image numpy formula it replaced: the same
    # units to the bit, half-unit ties, NaN, infinities and out-of-range depths included,
    # and for strided views of the caller's image.
    rng = np.random.default_rng(0)
    depth_m = rng.uniform(-1.0, 8.0, (48, 64))
    depth_m[3, :40] = (np.arange(40) + 0.5) * METRES_IMAGE_DEPTH_SCALE
    depth_m[::7, ::3], depth_m[::11, ::5], depth_m[1::13] = np.nan, np.inf, -np.inf
    depth_m = depth_m.astype(dtype)
    for image in (depth_m, depth_m[:, ::2], depth_m.T):
        with np.errstate(over="ignore", invalid="ignore"):
            units = image.astype(np.float64) / METRES_IMAGE_DEPTH_SCALE
            expected = np.rint(np.where(np.isfinite(units) & (units >= 0.5) & (units < 65535.5), units, 0.0)).astype(np.uint16)
        k = CameraIntrinsics(image.shape[1], image.shape[0], 50.0, 50.0, 10.0, 10.0)
        np.testing.assert_array_equal(DepthFrame.from_metres(image, k).depth, expected)


def test_depth_that_looks_like_millimetres_is_warned_of_once(monkeypatch, caplog):
    import tracker.types

    monkeypatch.setattr(tracker.types, "_far_depths_warned", False)
    k = CameraIntrinsics(4, 2, 100.0, 100.0, 2.0, 1.0)
    millimetres = np.full((2, 4), 450.0, np.float32)
    # A room seen to its far wall, beyond the 6.55 m the units hold: metres, nothing to say.
    far_wall = np.array([[0.45, 0.45, 7.0, 7.0], [7.0, 7.5, 8.0, 9.0]], np.float32)
    with caplog.at_level(logging.WARNING, logger="tracker.types"):
        DepthFrame.from_metres(np.full((2, 4), 0.45, np.float32), k)
        DepthFrame.from_metres(far_wall, k)
        assert not caplog.records
        for _ in range(2):
            assert not DepthFrame.from_metres(millimetres, k).depth.any()
    assert len(caplog.records) == 1 and "is the image in millimetres?" in caplog.records[0].getMessage()


def test_timestamps_in_seconds_are_warned_of_once(caplog):
    k = CameraIntrinsics(8, 6, 5.0, 5.0, 4.0, 3.0)
    empty = np.zeros((6, 8), np.float32)
    with open_tracker(hand="right") as hand_tracker, caplog.at_level(logging.WARNING, logger="tracker.pipeline"):
        for number in range(4):  # milliseconds at 90 frames/s: nothing to say
            hand_tracker.process(DepthFrame.from_metres(empty, k, timestamp_ms=number * 1000 / 90, frame_number=number))
        assert not caplog.records
        for number in range(4, 20):  # seconds
            hand_tracker.process(DepthFrame.from_metres(empty, k, timestamp_ms=number / 90, frame_number=number))
    assert len(caplog.records) == 1 and "are they seconds?" in caplog.records[0].getMessage()
    # Six cameras' frames in turn, each a tenth of a millisecond after the one before: no warning.
    caplog.clear()
    with open_tracker(hand="right") as hand_tracker, caplog.at_level(logging.WARNING, logger="tracker.pipeline"):
        for number in range(3):
            for camera in range(6):
                frame = DepthFrame.from_metres(empty, k, timestamp_ms=number * 1000 / 30 + camera / 10, serial=f"cam{camera}", frame_number=number)
                hand_tracker.process(frame)
    assert not caplog.records
    # Frames the caller does not number (frame_number 0 throughout), as the README's loop.
    with open_tracker(hand="right") as hand_tracker, caplog.at_level(logging.WARNING, logger="tracker.pipeline"):
        for number in range(10):
            hand_tracker.process(DepthFrame.from_metres(empty, k, timestamp_ms=number / 30))
    assert len(caplog.records) == 1


def test_an_empty_scene_gives_no_hands_not_an_error():
    intrinsics = CameraIntrinsics(64, 48, 50.0, 50.0, 32.0, 24.0)
    with open_tracker(hand="right") as hand_tracker:
        assert hand_tracker.process(DepthFrame.from_metres(np.zeros((48, 64), np.float32), intrinsics)).hands == ()


def test_an_opened_tracker_is_warmed_up_and_its_backend_closed_if_that_fails(monkeypatch):
    from tracker.backends import OnnxRuntimeBackend
    from tracker.pipeline import HandTracker

    warmed = []
    monkeypatch.setattr(HandTracker, "warm_up", lambda self: warmed.append(self) or 0.0)
    with open_tracker() as tracker:
        assert warmed == [tracker]

    def fails(self):
        raise RuntimeError("the network's first run failed")

    closed = []
    monkeypatch.setattr(HandTracker, "warm_up", fails)
    monkeypatch.setattr(OnnxRuntimeBackend, "close", lambda self: closed.append(self))
    with pytest.raises(RuntimeError, match="first run failed"):
        open_tracker()
    assert len(closed) == 1


def test_bad_arguments_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="hand must be one of"):
        open_tracker(hand="middle")
    with pytest.raises(WeightsError):
        open_tracker(weights=tmp_path)
    with pytest.raises(ValueError, match="unknown inference backend 'cuda'; choose one of: auto, onnxruntime"):
        open_tracker(backend="cuda")
    with pytest.raises(ValueError, match="keep_planes must be True or False"):
        open_tracker(keep_planes="no")
    with pytest.raises(ValueError, match="at least 1"):
        track("synthetic", max_frames=0)


def test_a_smoothing_setting_of_ones_own_is_the_trackers():
    # A cut-off of 0.05 Hz all but freezes the joints where the first frame put them.
    frozen = OneEuroConfig(min_cutoff_hz=0.05, speed_coefficient=0.01, derivative_cutoff_hz=1.0)
    errors = {}
    for name, smooth in (("default", True), ("frozen", frozen)):
        source = SyntheticSource(seed=3, max_frames=30)
        with track(source, hand="right", smooth=smooth) as results:
            assert results.hand_tracker.config.smooth
            assert results.hand_tracker.config.smoothing == (OneEuroConfig() if smooth is True else frozen)
            errors[name] = np.mean([_joint_error_mm(r, source) for r in results if r.hands])
    # The rendered hand starts from rest and moves 4-5 mm a frame by the 30th: frozen joints
    # trail it by centimetres (29 mm on average), where the default's lag adds a few
    # percent to the 8 mm an unsmoothed track's first 30 frames score.
    assert errors["default"] < 10.0
    assert errors["frozen"] > 2 * errors["default"]
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="OneEuroConfig.min_cutoff_hz must be a positive number"):
            open_tracker(smooth=OneEuroConfig(min_cutoff_hz=bad))
    # A speed coefficient of 0 is a fixed cut-off: allowed.
    from tracker.api import _smoothing_setting

    fixed = OneEuroConfig(speed_coefficient=0.0)
    assert _smoothing_setting(fixed) is fixed
    with pytest.raises(ValueError, match="OneEuroConfig.speed_coefficient must be a number of 0 or more"):
        _smoothing_setting(OneEuroConfig(speed_coefficient=-1.0))


def test_an_automatic_gpu_backend_that_cannot_start_falls_back_with_a_note(monkeypatch, caplog):
    import tracker.backends

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(tracker.backends, "automatic_backend", lambda: "torch-cuda")
    monkeypatch.setitem(tracker.backends.BACKENDS, "torch-cuda", out_of_memory)
    with caplog.at_level(logging.WARNING), open_tracker(hand="right") as hand_tracker:
        assert hand_tracker.estimator.backend.name == "onnxruntime"
    assert "the torch-cuda backend cannot run here" in caplog.text
    # Named explicitly, the same failure is the caller's to handle.
    with pytest.raises(RuntimeError, match="out of memory"):
        open_tracker(backend="torch-cuda")


def test_the_readme_example_runs():
    # The README's "From Python" block, with its placeholders filled by rendered frames: the
    # names and arguments it shows must stay those of the code.
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("### From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 'track("session.db3", realtime=False)' in block and "        ...\n" in block
    shown = []

    def my_depth_images():
        for frame in SyntheticSource(seed=2, max_frames=2):
            yield frame.depth_m(), frame.timestamp_ms

    code = block.replace('"session.db3", realtime=False', '"synthetic", max_frames=2').replace("        ...\n", "        shown.append(result)\n")
    exec(compile(code, "README.md", "exec"), {"my_depth_images": my_depth_images, "shown": shown})
    assert len(shown) == 2 and all(len(result.hands) == 1 for result in shown)


class _SkippingSource(FrameSource):
    """Rendered frames numbered as a camera playing on while each is tracked would deliver them."""

    def __init__(self, numbers, realtime):
        super().__init__()
        self.numbers, self.realtime = numbers, realtime
        self.rendered = SyntheticSource(seed=2, max_frames=1)

    def frames(self):
        frame = next(iter(self.rendered))
        for number in self.numbers:
            yield DepthFrame(frame.depth, frame.depth_scale, frame.intrinsics, 33.3 * number, frame.serial, number)


@pytest.mark.parametrize("realtime", [True, False])
def test_frames_a_real_time_source_skipped_are_counted_as_a_run_counts_them(realtime):
    numbers = [0, 3, 4, 10, 2]  # the last: the counter went back (a reconnect), not a loss
    with track(_SkippingSource(numbers, realtime)) as results:
        dropped = [r.dropped_before for r in results]
    assert dropped == ([0, 2, 0, 5, 0] if realtime else [0] * len(numbers))


def _depth_folder(folder, frames: int, meta: dict) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    k = meta["intrinsics"]
    for i in range(frames):
        cv2.imwrite(str(folder / f"{i}.png"), np.zeros((k["height"], k["width"]), np.uint16))
    (folder / "intrinsics.json").write_text(json.dumps(meta))


_TINY_CAMERA = {"depth_scale": 0.001, "intrinsics": {"width": 8, "height": 6, "fx": 5.0, "fy": 5.0, "cx": 4.0, "cy": 3.0}}


def test_a_path_names_a_folder_even_one_called_like_another_source_and_an_empty_name_is_refused(tmp_path, monkeypatch):
    _depth_folder(tmp_path / "synthetic", 2, {**_TINY_CAMERA, "serial": "folder"})
    monkeypatch.chdir(tmp_path)
    from pathlib import Path

    with track(Path("synthetic")) as results:
        assert [r.frame.serial for r in results] == ["folder", "folder"]
    with track("synthetic", max_frames=1) as results:  # a name: the renderer
        assert [r.frame.serial for r in results] == ["synthetic"]
    for empty in ("", "  "):  # would be the working folder, whose PNGs are not what was meant
        with pytest.raises(SourceError, match="the source is empty"):
            track(empty)


def test_closing_releases_the_source_at_once_and_a_closed_source_is_refused(tmp_path):
    import threading

    with track("synthetic", max_frames=2) as results:
        list(results)
    assert results.source.closed and results._frames.gi_frame is None  # the generator's clean-up has run
    # A source an earlier track closed gives no frames: said so, not an empty run.
    with pytest.raises(SourceError, match="was closed"):
        track(results.source)
    # A bad frame count leaves no opened source behind either.
    for bad in (0, "3", 2.5, True):
        source = SyntheticSource(seed=1, max_frames=5)
        with pytest.raises(ValueError, match="max_frames must be a whole number"):
            track(source, max_frames=bad)
        assert source.closed
    # On/off settings are True or False: the string "false" would be true.
    source = SyntheticSource(seed=1, max_frames=5)
    with pytest.raises(ValueError, match="realtime must be True, False or None"):
        track(source, realtime="false")
    assert source.closed
    with pytest.raises(ValueError, match="smooth must be True, False or a tracker.smoothing.OneEuroConfig"):
        track("synthetic", smooth="no")
    # Read from two threads at once: each frame goes to one of them, none is lost or twice.
    results = track("synthetic", max_frames=12)
    taken, failures = [[], []], []

    def take(i):
        try:
            taken[i].extend(r.frame.frame_number for r in results)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            failures.append(exc)

    readers = [threading.Thread(target=take, args=(i,)) for i in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(60)
    assert not failures and sorted(taken[0] + taken[1]) == list(range(12)), (taken, failures)
    assert results.source.closed
    # Closed from another thread while frames are being tracked: the loop ends quietly.
    results = track("synthetic", max_frames=1000)
    ended = []

    def consume():
        try:
            ended.append(sum(1 for _ in results))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            ended.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    while results.frames_tracked < 3:
        threading.Event().wait(0.01)
    results.close()
    consumer.join(30)
    assert len(ended) == 1 and isinstance(ended[0], int) and 3 <= ended[0] < 1000, ended


def test_a_close_from_another_thread_waits_for_the_frame_being_tracked():
    # On the CPU backends (conftest.py), whose launch runs the network through run().
    import threading
    import time

    events = []
    with open_tracker(hand="right") as hand_tracker:
        backend = hand_tracker.estimator.backend
        run, close = backend.run, backend.close
        started = threading.Event()

        def slow_run(depth):
            started.set()
            time.sleep(0.2)  # long enough for the close below to arrive meanwhile
            outputs = run(depth)
            events.append("ran")
            return outputs

        backend.run = slow_run
        backend.close = lambda: events.append("closed") or close()
        frame = next(iter(SyntheticSource(seed=1, max_frames=1)))
        processed = []
        worker = threading.Thread(target=lambda: processed.append(hand_tracker.process(frame)))
        worker.start()
        started.wait(10)
        hand_tracker.close()  # from this thread, with the frame in the other one's hands
        worker.join(10)
    assert events[:2] == ["ran", "closed"] and len(processed) == 1 and processed[0].hands
    with pytest.raises(RuntimeError, match="closed"):
        hand_tracker.process(frame)


def test_a_close_from_another_thread_while_a_frame_is_read_still_releases_the_source():
    # The closing thread cannot close the generator while the consumer is inside it; the
    # consumer, back from the frame, closes it, so the source's clean-up runs now.
    import threading
    import time

    cleaned, reading = [], threading.Event()

    class SlowSource(FrameSource):
        description = "two rendered frames, read slowly"

        def frames(self):
            try:
                for frame in SyntheticSource(seed=1, max_frames=2).frames():
                    reading.set()
                    time.sleep(0.3)  # the close arrives meanwhile
                    yield frame
            finally:
                cleaned.append(threading.current_thread().name)

    results = track(SlowSource(), hand="right")
    ended = []
    consumer = threading.Thread(target=lambda: ended.append(list(results)), name="consumer")
    consumer.start()
    reading.wait(10)
    results.close()
    consumer.join(30)
    assert ended == [[]] and cleaned == ["consumer"]  # ended quietly; cleaned up by the consumer, not at collection
