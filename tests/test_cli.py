import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tracker.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_default_run_tracks_the_built_in_input(tmp_path, capsys, monkeypatch, no_camera):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out, video = tmp_path / "t.jsonl", tmp_path / "last.png"
    assert main(["--max-frames", "5", "--out", str(out), "--video", str(video)]) == 0
    messages = capsys.readouterr().err  # standard output is kept for --out -
    assert "built-in synthetic input" in messages
    # Measured 7.5 mm over the input's 120 frames (README); a broken pipeline is centimetres off.
    reported = re.search(r"mean joint error against the rendered truth ([0-9.]+) mm over 5 frames", messages)
    assert reported and float(reported.group(1)) < 20.0, messages
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 1, 2, 3, 4] and lines[0]["serial"] == "synthetic"
    assert "file" not in lines[0]  # a rendered frame comes from no file
    assert cv2.imread(str(video)).shape == (480, 640, 3)
    assert "running headless" in messages
    # The resolved settings are kept beside the output.
    resolved = json.loads((tmp_path / "t.config.json").read_text())
    assert resolved["command"]["max_frames"] == 5 and resolved["source"]["spec"] == "synthetic"
    assert resolved["tracker"]["cube_size_m"] > 0
    # And which classifiers it took: the shipped ones, by file and content.
    import hashlib

    for name, folder, onnx in (("side_classifier", "side_classifier", "side.onnx"), ("presence", "presence", "presence.onnx")):
        shipped = ROOT / "weights" / folder / onnx
        assert resolved["weights"][name] == {"file": str(shipped), "sha256": hashlib.sha256(shipped.read_bytes()).hexdigest()}
    # The renderer is slower than the tracker: no worker would help it.
    assert resolved["tracker"]["segment_ahead"] == 0
    # A wall or table behind the hand is cleared from the crops unless asked otherwise.
    assert resolved["tracker"]["background_plane"]["clearance_m"] > 0
    # The automatic choice (onnxruntime in the tests, GPU or not: conftest.py), named in the settings.
    assert resolved["command"]["backend"] == "onnxruntime" and "backend: onnxruntime" in messages


def test_keep_planes_leaves_the_surface_behind_the_hand_in_the_crops(tmp_path, capsys, no_camera):
    out = tmp_path / "t.jsonl"
    assert main(["--max-frames", "2", "--out", str(out), "--no-viewer", "--keep-planes"]) == 0
    resolved = json.loads((tmp_path / "t.config.json").read_text())
    assert resolved["tracker"]["background_plane"] is None
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("flags, refined", [([], True), (["--refine"], True), (["--no-refine"], False)])
def test_the_refinement_is_on_by_default_timed_and_saved_with_the_run(tmp_path, no_camera, flags, refined):
    out = tmp_path / "t.jsonl"
    assert main(["--max-frames", "3", "--out", str(out), "--no-viewer", *flags]) == 0
    resolved = json.loads((tmp_path / "t.config.json").read_text())
    assert resolved["tracker"]["refine"] is refined and resolved["tracker"]["refinement"]["iterations"] == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and all(line["hands"] and ("refine" in line["timings_ms"]) == refined for line in lines)


@pytest.mark.parametrize("seconds, noted", [(0.2, False), (4.5, True)])
def test_the_tracker_warms_up_before_the_source_opens_and_a_slow_warm_up_is_explained(tmp_path, capsys, monkeypatch, seconds, noted):
    import tracker.sources
    from tracker.pipeline import HandTracker

    steps = []
    monkeypatch.setattr(HandTracker, "warm_up", lambda self: steps.append("warm up") or seconds)
    opened = tracker.sources.open_source
    monkeypatch.setattr(tracker.sources, "open_source", lambda *args, **kwargs: steps.append("open source") or opened(*args, **kwargs))
    assert main(["--source", "synthetic", "--max-frames", "1", "--no-viewer", "--out", str(tmp_path / "t.jsonl")]) == 0
    # Before the source: a camera's first frames would otherwise wait for it.
    assert steps == ["warm up", "open source"]
    messages = capsys.readouterr().err
    assert ("warming up took 4.5 s" in messages and "compiles the numba kernels" in messages) == noted


def test_a_warm_up_that_fails_closes_the_backend(tmp_path, monkeypatch):
    from tracker.backends import OnnxRuntimeBackend
    from tracker.pipeline import HandTracker

    closed = []
    monkeypatch.setattr(OnnxRuntimeBackend, "close", lambda self: closed.append(self))

    def fails(self):
        raise RuntimeError("the network's first run failed")

    monkeypatch.setattr(HandTracker, "warm_up", fails)
    with pytest.raises(RuntimeError, match="first run failed"):
        main(["--source", "synthetic", "--max-frames", "1", "--no-viewer", "--out", str(tmp_path / "t.jsonl")])
    assert len(closed) == 1


def test_an_automatic_gpu_backend_that_cannot_run_falls_back_to_onnxruntime(tmp_path, capsys, monkeypatch):
    # As on a machine whose torch sees a GPU it cannot use: torch-cuda fails as it starts.
    import tracker.backends

    def no_kernel_image(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(tracker.backends, "automatic_backend", lambda: "torch-cuda")
    monkeypatch.setitem(tracker.backends.BACKENDS, "torch-cuda", no_kernel_image)
    out = tmp_path / "t.jsonl"
    assert main(["--source", "synthetic", "--max-frames", "2", "--no-viewer", "--out", str(out)]) == 0
    messages = capsys.readouterr().err
    assert "the torch-cuda backend cannot run here" in messages and "using onnxruntime instead" in messages
    assert len(out.read_text().splitlines()) == 2
    command = json.loads((tmp_path / "t.config.json").read_text())["command"]
    assert command["backend"] == "onnxruntime" and command["backend_asked"] == "auto"


def test_a_fault_in_an_automatic_gpu_backend_is_not_hidden_by_the_fallback(tmp_path, monkeypatch):
    import tracker.backends

    def bug(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x3 and 4x5)")

    monkeypatch.setattr(tracker.backends, "automatic_backend", lambda: "torch-cuda")
    monkeypatch.setitem(tracker.backends.BACKENDS, "torch-cuda", bug)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        main(["--source", "synthetic", "--max-frames", "2", "--no-viewer", "--out", str(tmp_path / "t.jsonl")])


def test_what_counts_as_a_gpu_that_cannot_start():
    import torch

    from tracker.backends import BackendUnavailable, gpu_start_failure

    assert gpu_start_failure(BackendUnavailable("no CUDA"))
    assert gpu_start_failure(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB"))
    assert gpu_start_failure(RuntimeError("CUDA error: no kernel image is available for execution on the device"))
    assert gpu_start_failure(RuntimeError("cuDNN error: CUDNN_STATUS_NOT_INITIALIZED"))
    assert not gpu_start_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not gpu_start_failure(NotImplementedError("CUDA"))  # a RuntimeError subclass: a fault
    assert not gpu_start_failure(ValueError("CUDA"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="torch-cuda runs on this machine")
def test_a_gpu_backend_asked_for_by_name_that_cannot_run_is_an_error(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["--source", "synthetic", "--max-frames", "2", "--no-viewer", "--backend", "torch-cuda", "--out", str(out)]) == 2
    assert "the torch-cuda backend needs an NVIDIA GPU" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.automatic_backend
def test_the_automatic_backend_follows_what_torch_sees(monkeypatch):
    import torch

    from tracker.backends import automatic_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert automatic_backend() == "torch-cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert automatic_backend() == "onnxruntime"


def test_left_hand_input_and_mesh_files(tmp_path, capsys):
    out, meshes = tmp_path / "t.jsonl", tmp_path / "meshes"
    args = ["--source", "synthetic:3:left", "--hand", "left", "--max-frames", "3", "--no-viewer"]
    assert main(args + ["--out", str(out), "--mesh-dir", str(meshes), "--mesh-format", "obj"]) == 0
    assert "moving left hand" in capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(r["hands"][0]["handedness"] == "left" for r in records)
    assert sorted(p.name for p in meshes.iterdir()) == [f"frame_00000{i}_left.obj" for i in range(3)]
    # A second run into the same folder is refused before it replaces the first's output.
    first_output = out.read_bytes()
    assert main(args + ["--out", str(out), "--mesh-dir", str(meshes)]) == 2
    assert "already holds 3 hand meshes from an earlier run" in capsys.readouterr().err
    assert out.read_bytes() == first_output


def test_the_side_is_decided_automatically_by_default(tmp_path):
    # Seed 10: a sequence the shipped side classifier calls left from its first frame
    # (tests/test_side_vote.py covers the vote itself).
    out = tmp_path / "t.jsonl"
    assert main(["--source", "synthetic:10:left", "--max-frames", "4", "--no-viewer", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["hands"][0]["handedness"] for r in records] == ["left"] * 4
    assert all("side" in r["timings_ms"] for r in records)
    assert json.loads((tmp_path / "t.config.json").read_text())["command"]["hand"] == "auto"


def test_help_explains_the_command():
    result = subprocess.run([sys.executable, str(ROOT / "run_tracker.py"), "--help"], capture_output=True, text=True, check=True)
    assert "--source" in result.stdout and "no camera" in result.stdout.lower()
    # Scripts need to know what a Ctrl-C that ends a live session returns.
    assert "Exit status: 0" in result.stdout and "130 for Ctrl-C" in " ".join(result.stdout.split())


def test_record_needs_a_camera(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--source", "synthetic", "--record", str(tmp_path / "r.db3")])
    assert exit_info.value.code == 2
    assert "--record needs a live camera" in capsys.readouterr().err


def test_a_video_path_without_a_known_suffix_fails_before_tracking(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["--max-frames", "2", "--no-viewer", "--out", str(out), "--video", str(tmp_path / "hands")]) == 2
    assert "give a video file (.mp4" in capsys.readouterr().err
    assert not out.exists()  # nothing tracked, nothing half-written
    # An earlier run's output outlives an output that fails to open.
    out.write_text('{"frame":0}\n')
    assert main(["--max-frames", "2", "--no-viewer", "--out", str(out), "--video", str(tmp_path / "hands")]) == 2
    assert out.read_text() == '{"frame":0}\n'


def test_an_output_that_is_a_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    assert main(["--source", "synthetic", "--max-frames", "1", "--no-viewer", "--out", str(tmp_path)]) == 2
    assert f"--out {tmp_path} is a folder; give the JSON-lines file's name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_empty_source_is_refused_rather_than_taken_for_the_default(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--source", "", "--out", str(tmp_path / "x.jsonl")])
    assert exit_info.value.code == 2 and "--source is empty" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    "flag, value, said",
    [
        # pathlib drops a trailing slash: each would be written as a file named like the folder.
        ("--out", "results" + os.sep, "results/ names a folder; give the JSON-lines file's name (say results/tracking.jsonl)"),
        ("--out", "results" + os.sep + ".", "names a folder; give the JSON-lines file's name (say results/tracking.jsonl)"),
        ("--video", "v.mp4" + os.sep, "v.mp4/ names a folder; give the video file's name"),
        ("--record", "r.db3" + os.sep, "r.db3/ names a folder; give the recording's name"),
        # An unset shell variable: each would be read as the current folder.
        *((flag, "", f"argument {flag}: the path is empty") for flag in ("--out", "--video", "--record", "--mesh-dir", "--weights")),
    ],
)
def test_a_path_that_names_a_folder_or_nothing_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, flag, value, said):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["--source", "synthetic", "--max-frames", "1", "--no-viewer", "--out", "t.jsonl", flag, value])
    assert exit_info.value.code == 2 and said.replace("/", os.sep) in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_outputs_that_are_one_file_or_the_recording_read_are_refused(tmp_path, capsys):
    same = tmp_path / "x.mp4"
    same.write_text('{"frame":0}\n')  # an earlier run's lines: kept
    argv = ["--max-frames", "2", "--no-viewer", "--source", "synthetic"]
    assert main([*argv, "--out", str(same), "--video", str(tmp_path / "." / "x.mp4")]) == 2
    assert "--out and --video name the same path" in capsys.readouterr().err
    assert same.read_text() == '{"frame":0}\n'
    recording = tmp_path / "session.db3"
    recording.write_bytes(b"a recording")
    for spec in (str(recording), f" {recording} "):  # spaces around it as the source reads it: stripped
        assert main(["--no-viewer", "--source", spec, "--out", str(recording)]) == 2
        assert "--out " + str(recording) + " is the recording being read" in capsys.readouterr().err
    assert recording.read_bytes() == b"a recording"
    # A folder's frames and its camera file, as well as the recording's bytes, are input.
    folder = tmp_path / "session"
    (folder / "take1").mkdir(parents=True)
    frame = folder / "take1" / "0.png"
    frame.write_bytes(b"a depth frame")
    (tmp_path / "intrinsics.json").write_text("{}")  # the camera file above the folder
    for flag, path, said in (
        ("--video", frame, "is in the folder of depth PNGs being read"),
        ("--video", folder / "overlay.PNG", "is in the folder of depth PNGs being read"),
        ("--out", tmp_path / "intrinsics.json", "is the camera file of the folder being read"),
        ("--out", folder / "take1" / "intrinsics.json", "is where the folder being read looks for its camera file"),
    ):
        assert main(["--no-viewer", "--source", str(folder), flag, str(path)]) == 2
        assert said in capsys.readouterr().err
    assert frame.read_bytes() == b"a depth frame" and (tmp_path / "intrinsics.json").read_text() == "{}"
    # A folder read through a link takes the camera file above the link; a padded name is the same folder.
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "take1").symlink_to(folder / "take1")
    for source, flag, path, said in (
        (tmp_path / "links" / "take1", "--out", tmp_path / "links" / "intrinsics.json", "looks for its camera file"),
        (tmp_path / "links" / "take1", "--video", frame, "is in the folder of depth PNGs"),
        (f"{folder / 'take1'} ", "--video", folder / "take1" / "x.png", "is in the folder of depth PNGs"),
    ):
        assert main(["--no-viewer", "--source", str(source), flag, str(path)]) == 2
        assert said in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--out", "--video"])
def test_an_output_under_a_file_says_so_before_tracking(tmp_path, capsys, flag):
    (tmp_path / "out").write_text("a file where a folder would go")
    out = tmp_path / "kept.jsonl"
    out.write_text('{"frame":0}\n')
    argv = ["--max-frames", "2", "--no-viewer", "--source", "synthetic", "--out", str(out)]
    argv += ["--out" if flag == "--out" else "--video", str(tmp_path / "out" / ("t.jsonl" if flag == "--out" else "v.mp4"))]
    assert main(argv) == 2
    assert f"{tmp_path / 'out'} is a file, not a folder" in capsys.readouterr().err
    assert out.read_text() == '{"frame":0}\n'


def test_a_video_name_the_file_system_refuses_fails_before_tracking(tmp_path, capsys):
    # The video is written under a longer hidden name until it is complete: a name that
    # fits only without that must fail at the start, not at the first frame.
    out = tmp_path / "kept.jsonl"
    out.write_text('{"frame":0}\n')
    video = tmp_path / ("v" * 246 + ".mp4")  # 250 bytes: a legal name, 260 once hidden
    assert main(["--max-frames", "2", "--no-viewer", "--source", "synthetic", "--out", str(out), "--video", str(video)]) == 2
    assert "File name too long" in capsys.readouterr().err
    assert out.read_text() == '{"frame":0}\n'


def test_json_lines_on_standard_output_stay_pure_and_keep_what_came_before(tmp_path):
    # Redirected into a file that already holds a line: the tracker appends after it, and
    # every message goes to standard error, so the file is the line plus the JSON lines.
    for name in ("-", "/dev/stdout"):
        target = tmp_path / "redirected.txt"
        target.write_text("header\n")
        with open(target, "a") as stdout:
            cmd = [sys.executable, str(ROOT / "run_tracker.py"), "--source", "synthetic", "--max-frames", "3", "--no-viewer", "--out", name]
            result = subprocess.run(cmd, cwd=tmp_path, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=240)
        assert result.returncode == 0, result.stderr
        lines = target.read_text().splitlines()
        assert lines[0] == "header" and [json.loads(line)["frame"] for line in lines[1:]] == [0, 1, 2], lines
        assert "mean joint error against the rendered truth" in result.stderr and "writing standard output" in result.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["redirected.txt"]  # no settings file beside "-"


def test_a_path_to_a_file_named_dash_is_a_file_not_standard_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--source", "synthetic", "--max-frames", "2", "--no-viewer", "--out", "./-"]) == 0
    assert capsys.readouterr().out == ""
    assert [json.loads(line)["frame"] for line in (tmp_path / "-").read_text().splitlines()] == [0, 1]
    assert (tmp_path / "-.config.json").is_file()


def test_settings_that_cannot_be_saved_leave_the_earlier_output_alone(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    out.write_text('{"frame": 0}\n')
    (tmp_path / "t.config.json").mkdir()
    assert main(["--source", "synthetic", "--max-frames", "2", "--no-viewer", "--out", str(out)]) == 2
    assert "cannot save the run's settings as" in capsys.readouterr().err
    assert out.read_text() == '{"frame": 0}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.config.json", "t.jsonl"]  # no partial file left


def test_on_standard_output_other_writers_go_to_standard_error_while_the_lines_flow(capfd):
    import numpy as np

    from tracker.pipeline import FrameResult
    from tracker.sinks import JsonLinesSink
    from tracker.types import CameraIntrinsics, DepthFrame

    frame = DepthFrame(np.zeros((4, 4), np.uint16), 0.001, CameraIntrinsics(4, 4, 5.0, 5.0, 1.5, 1.5), frame_number=7)
    sink = JsonLinesSink("-")
    os.write(1, b"a native library's log line\n")  # what Open3D's C++ log would do
    sink.write(FrameResult(frame, (), {}))
    sink.close()
    os.write(1, b"after the run\n")
    captured = capfd.readouterr()
    assert captured.out.splitlines()[0] == json.dumps({"frame": 7, "timestamp_ms": 0.0, "serial": "", "hands": [], "timings_ms": {}, "dropped_before": 0}, separators=(",", ":"))
    assert captured.out.splitlines()[1:] == ["after the run"]  # standard output is back
    assert "a native library's log line" in captured.err


def test_a_reader_that_closes_the_pipe_stops_the_run_quietly():
    # `run_tracker.py --out - | head -n 2`: once head has its lines, the run stops as asked.
    cmd = [sys.executable, str(ROOT / "run_tracker.py"), "--source", "synthetic", "--max-frames", "500", "--no-viewer", "--out", "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=240)
    assert [line["frame"] for line in lines] == [0, 1]
    assert proc.returncode == 0, stderr.decode()
    assert b"stopped by output closed" in stderr and b"Traceback" not in stderr


def test_output_and_recording_of_one_name_share_one_settings_file(tmp_path, monkeypatch):
    # session.jsonl and session.db3 side by side: one session.config.json for both.
    from types import SimpleNamespace

    import tracker.cli as cli
    from tracker.pipeline import TrackerConfig
    from tracker.sources import SyntheticSource

    args = cli.build_parser().parse_args(["--out", str(tmp_path / "session.jsonl"), "--record", str(tmp_path / "session.db3")])
    no_classifiers = SimpleNamespace(config=TrackerConfig(), side_classifier=None, presence=None)
    written = cli._write_resolved_config(args, "realsense", SyntheticSource(max_frames=1), no_classifiers, {})
    assert [path for _, path in written] == [tmp_path / "session.config.json"]
    for partial, path in written:
        os.replace(partial, path)
    assert json.loads((tmp_path / "session.config.json").read_text())["source"]["spec"] == "realsense"


def test_mesh_format_without_a_mesh_folder_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--source", "synthetic", "--mesh-format", "obj"])
    assert exit_info.value.code == 2
    assert "--mesh-format needs --mesh-dir" in capsys.readouterr().err


def test_output_to_a_device_keeps_no_settings_file_beside_it(capsys):
    assert main(["--source", "synthetic", "--max-frames", "2", "--no-viewer", "--out", os.devnull]) == 0
    assert not Path(os.devnull).with_name("null.config.json").exists()
    assert "is not a regular file" in capsys.readouterr().err


def test_version_names_the_installed_package(capsys):
    import tomllib

    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # setup.sh installs the checkout in place; a bare checkout says so rather than guess.
    assert re.search(rf"dgn-hand-tracker ({re.escape(declared)}|not installed)\)", capsys.readouterr().out)


def test_a_run_that_finds_no_hand_says_what_to_check(tmp_path, capsys):
    # A wrong depth unit puts every depth out of range: the run is no error, but says so.
    import numpy as np

    meta = {"depth_scale": 0.001, "intrinsics": {"width": 64, "height": 48, "fx": 50, "fy": 50, "cx": 32, "cy": 24}}
    (tmp_path / "intrinsics.json").write_text(json.dumps(meta))
    cv2.imwrite(str(tmp_path / "0.png"), np.full((48, 64), 5000, np.uint16))  # 5 m: past the hand's range
    assert main(["--source", str(tmp_path), "--no-viewer", "--out", str(tmp_path / "t.jsonl")]) == 0
    assert "note: no hand in any frame" in capsys.readouterr().err


def test_in_real_time_dropped_frames_do_not_count_towards_max_frames(tmp_path, monkeypatch):
    import tracker.sources

    lengths = []
    opened = tracker.sources.open_source
    monkeypatch.setattr(tracker.sources, "open_source", lambda *args, **kwargs: lengths.append(kwargs["max_frames"]) or opened(*args, **kwargs))
    out = tmp_path / "t.jsonl"
    # In real time the tracker may fall behind the 30 fps stream and drop frames: the stream
    # goes on until the frames asked for are tracked, rather than ending after that many.
    assert main(["--source", "synthetic", "--realtime", "--max-frames", "12", "--no-viewer", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 12
    assert main(["--source", "synthetic", "--max-frames", "12", "--no-viewer", "--out", str(out)]) == 0
    assert lengths == [None, 12]


def test_segment_ahead_0_gives_on_a_folder_what_the_library_gives(tmp_path, monkeypatch):
    # With workers (the default on 3 or more cores) a frame's segmentation starts from the hand
    # of two frames before: a slightly different answer, which --segment-ahead 0 takes away.
    from tracker.api import track

    monkeypatch.delenv("DISPLAY", raising=False)
    folder = Path(__file__).parent / "data" / "sr305-gestures"
    out = tmp_path / "t.jsonl"
    assert main(["--source", str(folder), "--segment-ahead", "0", "--max-frames", "6", "--out", str(out), "--no-viewer"]) == 0
    assert json.loads((tmp_path / "t.config.json").read_text())["tracker"]["segment_ahead"] == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    library = [result for _, result in zip(range(6), track(str(folder)))]
    assert [line["frame"] for line in lines] == [result.frame.frame_number for result in library]
    # Each line names its PNG, relative to the folder, in the order the folder is played.
    files = sorted((p.relative_to(folder).as_posix() for p in folder.rglob("*.png")), key=lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)])
    assert [line["file"] for line in lines] == [result.frame.source_file for result in library] == files[:6]
    for line, result in zip(lines, library):
        assert len(line["hands"]) == len(result.hands)
        for written, hand in zip(line["hands"], result.hands):
            # The JSON's own rounding (0.01 mm) is all that separates them.
            np.testing.assert_allclose(written["joints_xyz_m"], hand.joints_cam_m, atol=1e-5)


@pytest.mark.parametrize("argv, message", [(["--segment-ahead", "-1"], "--segment-ahead must be 0"), (["--segment-ahead", "17"], "--segment-ahead must be 0")])
def test_segment_ahead_out_of_range_is_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_segment_ahead_in_real_time_is_refused_before_anything_starts(tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    assert main(["--source", "synthetic", "--realtime", "--segment-ahead", "2", "--out", str(out), "--no-viewer"]) == 2
    said = capsys.readouterr().err
    assert "one worker process at most" in said and "--segment-ahead 0 or 1" in said and not out.exists()


def test_a_worker_segments_live_frames_when_asked(tmp_path):
    folder = Path(__file__).parent / "data" / "sr305-gestures"
    out = tmp_path / "t.jsonl"
    assert main(["--source", str(folder), "--realtime", "--segment-ahead", "1", "--max-frames", "4", "--out", str(out), "--no-viewer"]) == 0
    assert json.loads((tmp_path / "t.config.json").read_text())["tracker"]["segment_ahead"] == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and sum(bool(r["hands"]) for r in records) >= len(records) - 1


def test_an_output_the_system_refuses_is_named_by_its_option(tmp_path, capsys):
    # The system's message names a temporary file, or the path alone; the error names the
    # option too. What a read-only file system or /sys says (root writes anywhere else in a test).
    from tracker.cli import _describe_output_error, build_parser

    args = build_parser().parse_args(["--out", "/r/a.jsonl", "--mesh-dir", "/r/a_meshes", "--video", "/r/a.mp4"])
    for filename, said in (
        ("/r/a.config.json.partial", "cannot write --out /r/a.jsonl: Read-only file system"),
        ("/r/a_meshes", "cannot write --mesh-dir /r/a_meshes: Read-only file system"),
        ("/r/.a.partial.mp4", "cannot write --video /r/a.mp4: Read-only file system"),  # its suffix kept: the video's
        ("/r", "cannot write --out /r/a.jsonl: Read-only file system"),  # the folder on the way
        ("/elsewhere/x", "cannot write /elsewhere/x: Read-only file system"),
    ):
        assert _describe_output_error(OSError(30, "Read-only file system", filename), args) == said


def test_a_run_whose_fits_all_fail_says_so_rather_than_blame_the_depth_unit(tmp_path, capsys, monkeypatch):
    # Segmentation finds the hand and the network runs, but no fit is borne out (as with
    # weights not yet trained): the note says that, not "check the depth unit".
    import dataclasses

    from tracker.estimator import HandEstimator

    to_estimate = HandEstimator.to_estimate

    def no_confidence(self, *args, **kwargs):
        return dataclasses.replace(to_estimate(self, *args, **kwargs), confidence=0.0)

    monkeypatch.setattr(HandEstimator, "to_estimate", no_confidence)
    assert main(["--source", "synthetic", "--max-frames", "3", "--no-viewer", "--hand", "right", "--out", str(tmp_path / "t.jsonl")]) == 0
    err = capsys.readouterr().err
    assert "In 3 frames a hand-sized object was found and the network fitted a hand to it" in err and "check the depth unit" not in err


def test_the_built_in_input_ending_is_not_called_a_frame_limit(tmp_path, capsys, monkeypatch, no_camera):
    import tracker.cli as cli

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setattr(cli, "DEFAULT_SYNTHETIC_FRAMES", 3)
    assert main(["--out", str(tmp_path / "a.jsonl")]) == 0
    messages = capsys.readouterr().err
    assert "3 frames (" in messages and "the built-in input's 3 frames are done" in messages and "stopped by max frames" not in messages
    assert main(["--max-frames", "2", "--out", str(tmp_path / "b.jsonl")]) == 0
    assert "stopped by max frames" in capsys.readouterr().err


def test_a_mesh_folder_that_is_another_output_or_its_settings_file_is_refused(tmp_path, capsys):
    argv = ["--max-frames", "2", "--no-viewer", "--source", "synthetic"]
    out = tmp_path / "d.jsonl"
    for mesh_dir, said in ((out, "--out and --mesh-dir name the same path"), (tmp_path / "d.config.json", "--out's settings file and --mesh-dir")):
        assert main([*argv, "--out", str(out), "--mesh-dir", str(mesh_dir)]) == 2
        assert said in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any output was opened, no folder made


def test_a_mesh_folder_that_cannot_be_written_is_refused_before_the_earlier_output_is_replaced(tmp_path, capsys, monkeypatch):
    import errno

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    out = tmp_path / "t.jsonl"
    out.write_text('{"frame":0}\n')  # an earlier run's lines

    def refused_inside_meshes(call):
        def refused(path, *args, **kwargs):
            if Path(path).parent == meshes:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return call(path, *args, **kwargs)

        return refused

    # What a read-only file system says to a file or folder made in it (root writes anywhere else in a test).
    monkeypatch.setattr(os, "open", refused_inside_meshes(os.open))
    monkeypatch.setattr(os, "mkdir", refused_inside_meshes(os.mkdir))
    argv = ["--max-frames", "2", "--no-viewer", "--source", "synthetic", "--out", str(out), "--mesh-dir", str(meshes)]
    assert main(argv) == 2
    assert f"cannot write hand meshes into {meshes}: Read-only file system" in capsys.readouterr().err
    assert out.read_text() == '{"frame":0}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meshes", "t.jsonl"] and not any(meshes.iterdir())


@pytest.mark.parametrize(
    "others, named", [(["--source", "synthetic", "--out", "x.jsonl"], "--out, --source"), (["--no-realtime"], "--no-realtime"), (["--realtime"], "--realtime")]
)
def test_list_cameras_takes_no_other_option(capsys, others, named):
    with pytest.raises(SystemExit) as exit_info:
        main(["--list-cameras", *others])
    assert exit_info.value.code == 2
    assert f"it takes no other option (given: {named})" in capsys.readouterr().err


def test_the_settings_saved_are_the_ones_the_run_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, made absolute in the settings
    assert main(["--source", "synthetic", "--no-viewer", "--out", "t.jsonl", "--mesh-dir", "meshes", "--max-frames", "1"]) == 0
    command = json.loads((tmp_path / "t.config.json").read_text())["command"]
    assert command["mesh_format"] == "ply" and command["realtime"] is False and command["max_frames"] == 1
    assert command["out"] == str(tmp_path / "t.jsonl") and command["mesh_dir"] == str(tmp_path / "meshes")
    import tracker.cli

    monkeypatch.setattr(tracker.cli, "DEFAULT_SYNTHETIC_FRAMES", 3)  # the built-in input's length, shortened
    assert main(["--source", "synthetic", "--no-viewer", "--out", "u.jsonl"]) == 0
    resolved = json.loads((tmp_path / "u.config.json").read_text())
    assert resolved["command"]["max_frames"] == 3 and resolved["command"]["mesh_format"] is None  # no meshes asked for
    assert Path(resolved["weights"]["directory"]).is_absolute() and Path(resolved["weights"]["directory"], "dgn.json").is_file()


def test_a_folder_named_like_a_recording_is_read_as_a_folder(tmp_path):
    from tracker.sources import source_kind

    (tmp_path / "run.db3").mkdir()
    assert source_kind(str(tmp_path / "run.db3")) == "folder"
    assert source_kind(str(tmp_path / "missing.db3")) == "recording"


def test_standard_output_closed_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)  # what Python makes of a process started with it closed (>&-)
    assert main(["--source", "synthetic", "--no-viewer", "--max-frames", "1", "--out", "-"]) == 2
    assert "cannot write the JSON lines to standard output (--out -): it is closed" in capsys.readouterr().err


def test_a_full_disk_while_saving_the_settings_names_the_output(tmp_path, capsys, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")  # as a flush on close says it: no file named

    monkeypatch.setattr(Path, "write_text", full)
    # A mesh folder named like the JSON lines, as is usual, is not blamed for their settings.
    argv = ["--source", "synthetic", "--no-viewer", "--max-frames", "1", "--out", str(tmp_path / "t.jsonl"), "--mesh-dir", str(tmp_path / "t")]
    assert main(argv) == 2
    assert f"error: cannot write --out {tmp_path / 't.jsonl'}: No space left on device" in capsys.readouterr().err


def test_an_output_on_the_recording_s_settings_file_is_refused(tmp_path):
    from tracker.cli import _clashing_paths, build_parser

    def clash(*argv):
        return _clashing_paths(build_parser().parse_args(list(argv)), "realsense", "realsense")

    out, record = str(tmp_path / "x.jsonl"), str(tmp_path / "r.db3")
    assert "--video and --record's settings file name the same path" in clash("--out", out, "--record", record, "--video", str(tmp_path / "r.config.json"))
    # session.jsonl and session.db3 side by side share one settings file, as intended.
    assert clash("--out", str(tmp_path / "s.jsonl"), "--record", str(tmp_path / "s.db3")) is None


def test_a_video_cut_off_by_a_full_disk_ends_the_run_and_keeps_what_came_before(tmp_path, capsys, monkeypatch):
    # The video is drawn on a thread of its own: its failure still stops the run, the frames
    # tracked before it stay in the JSON lines, and an earlier video keeps its place.
    import tracker.viewer

    real_writer = cv2.VideoWriter

    class FillsUp:  # the encoder's answer on a full disk, from the 11th frame on
        written = 0

        def __init__(self, *args):
            self.writer = real_writer(*args)

        def isOpened(self):
            return self.writer.isOpened()

        def write(self, image):
            FillsUp.written += 1
            return False if FillsUp.written > 10 else self.writer.write(image)

        def release(self):
            self.writer.release()

    monkeypatch.setattr(tracker.viewer.cv2, "VideoWriter", FillsUp)
    out, video = tmp_path / "t.jsonl", tmp_path / "v.mp4"
    video.write_bytes(b"an earlier run's video")
    assert main(["--source", "synthetic", "--max-frames", "60", "--no-viewer", "--out", str(out), "--video", str(video)]) == 1
    assert "encoder refused a frame" in capsys.readouterr().err
    frames = [json.loads(line)["frame"] for line in out.read_text().splitlines()]
    assert 10 <= len(frames) < 60 and frames == list(range(len(frames)))
    assert video.read_bytes() == b"an earlier run's video"


def _live_stats(frames: int, dropped: int, seconds: float, processing_ms: float | None) -> dict:
    return {"frames": frames, "dropped": dropped, "seconds": seconds, "processing_ms_p50": processing_ms}


def test_a_live_run_that_fell_behind_on_the_cpu_is_told_of_the_lighter_networks():
    from tracker.cli import _lighter_network_note
    from tracker.weights import WEIGHTS_DIR

    # 90 frames/s for 10 s, 14 % dropped, 11.9 ms a frame against 11.1 ms: what an AVX2-only
    # 2-core VM measured (benchmarks/results/pipeline_speed_onnxruntime_memory_paced90_avx2.json).
    behind = _live_stats(774, 126, 10.0, 11.9)
    note = _lighter_network_note(behind, True, "onnxruntime", WEIGHTS_DIR)
    assert note.startswith("note: 14% of the frames were dropped") and "11.9 ms" in note and "11.1 ms" in note
    assert f"--weights {WEIGHTS_DIR / 'fast'}" in note and "--backend onnxruntime-int8" in note
    # Each suggestion only where it is not what the run already used.
    note = _lighter_network_note(behind, True, "onnxruntime-int8", WEIGHTS_DIR)
    assert "--weights" in note and "--backend" not in note
    assert "--weights" not in _lighter_network_note(behind, True, "onnxruntime", WEIGHTS_DIR / "fast")
    assert _lighter_network_note(behind, True, "onnxruntime-int8", WEIGHTS_DIR / "fast", segment_ahead=1) is None
    # The live worker, where the run had none and a core is there to spare for it: on two,
    # it and the network share them, and it saved no frames (docs/performance.md).
    worker = "--segment-ahead 1 may drop fewer frames too"
    assert worker not in _lighter_network_note(behind, True, "onnxruntime", WEIGHTS_DIR, segment_ahead=1, cores=8)
    assert worker in _lighter_network_note(behind, True, "onnxruntime", WEIGHTS_DIR, cores=3)
    assert worker not in _lighter_network_note(behind, True, "onnxruntime", WEIGHTS_DIR, cores=2)
    only_worker = _lighter_network_note(behind, True, "onnxruntime-int8", WEIGHTS_DIR / "fast", cores=4)
    assert worker in only_worker and "lighter network" not in only_worker
    assert _lighter_network_note(behind, True, "onnxruntime-int8", WEIGHTS_DIR / "fast", cores=2) is None
    # Not live, not the CPU, few drops, or drops the tracker's speed does not explain (the
    # camera or the USB lost them: 3 ms a frame): nothing to suggest.
    assert _lighter_network_note(behind, False, "onnxruntime", WEIGHTS_DIR) is None
    assert _lighter_network_note(behind, True, "torch-cuda", WEIGHTS_DIR) is None
    assert _lighter_network_note(_live_stats(870, 30, 10.0, 11.9), True, "onnxruntime", WEIGHTS_DIR) is None
    assert _lighter_network_note(_live_stats(774, 126, 10.0, 3.0), True, "onnxruntime", WEIGHTS_DIR) is None
    assert _lighter_network_note(_live_stats(0, 0, 0.0, None), True, "onnxruntime", WEIGHTS_DIR) is None


@pytest.mark.parametrize("live", [False, True])
def test_no_shared_memory_for_the_worker_is_said_plainly(tmp_path, monkeypatch, capsys, live):
    import errno

    from tracker import prepare

    def refused(**_):  # as a full /dev/shm or a limit on file sizes refuses it
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(prepare.shared_memory, "SharedMemory", refused)
    folder = Path(__file__).parent / "data" / "sr305-gestures"
    out = tmp_path / "x.jsonl"
    # Live, the capture thread hands the frames to the worker: the failure is still the tracker's.
    realtime = ["--realtime"] if live else []
    assert main(["--source", str(folder), *realtime, "--segment-ahead", "1", "--max-frames", "3", "--out", str(out), "--no-viewer"]) == 1
    said = capsys.readouterr().err
    assert "shared-memory block to hand frames to the frame-preparing worker (File too large)" in said
    assert "--segment-ahead 0 prepares the frames without one" in said and "Traceback" not in said
