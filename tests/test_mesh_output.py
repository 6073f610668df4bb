"""Mesh files and the open3d viewer, on a synthetic frame: a flat wall with the rest-pose
hand held up 0.5 m in front of the camera, palm towards it, fingers up."""

import dataclasses
import sys

import numpy as np
import pytest

o3d = pytest.importorskip("open3d")

from tracker.mesh_output import MeshSink, Open3DViewer  # noqa: E402
from tracker.pipeline import FrameResult  # noqa: E402
from tracker.synth.contact_sheet import project  # noqa: E402
from tracker.types import CameraIntrinsics, DepthFrame, HandEstimate, Handedness  # noqa: E402

INTRINSICS = CameraIntrinsics(width=160, height=120, fx=140.0, fy=140.0, cx=79.5, cy=59.5)
#: Hand frame -> camera: fingers (hand -z) up the image (camera -y), back of the hand
#: (hand +y) away from the camera (+z).
CAM_FROM_HAND_ROTATION = np.array([[-1.0, 0, 0], [0, 0, 1], [0, 1, 0]])
#: open3d stores float64 and the PLY is binary float64, so the float32 vertices come back
#: exactly; OBJ is text with 6 significant digits, i.e. within 5e-7 m for coordinates under
#: 1 m. 1e-6 m holds for both and is far below anything a depth camera resolves.
TOLERANCE_M = 1e-6


def make_result(hand_model, offset=(0.0, 0.0, 0.0), handedness=Handedness.RIGHT, wall=True, hand=True):
    depth = np.full((INTRINSICS.height, INTRINSICS.width), 800 if wall else 0, np.uint16)  # 0.8 m
    frame = DepthFrame(depth, 0.001, INTRINSICS, frame_number=123, serial="synthetic")
    if not hand:
        return FrameResult(frame, (), {})
    cam_from_hand = np.eye(4)
    cam_from_hand[:3, :3] = CAM_FROM_HAND_ROTATION
    cam_from_hand[:3, 3] = np.array([0.0, 0.08, 0.5]) + offset
    posed = hand_model.pose(cam_from_hand=cam_from_hand, handedness=handedness)
    estimate = HandEstimate(
        vertices_cam_m=posed.vertices,
        joints_cam_m=posed.joints,
        joints_uv_px=project(posed.joints, INTRINSICS).astype(np.float32),
        handedness=handedness,
    )
    return FrameResult(frame, (estimate,), {})


def assert_outward(mesh) -> None:
    """Triangles wind outwards (positive enclosed volume) and the stored normals agree."""
    vertices, triangles = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    assert np.sum(a * np.cross(b, c)) / 6 > 0
    stored = np.asarray(mesh.vertex_normals).copy()
    mesh.compute_vertex_normals()
    assert np.mean(np.sum(stored * np.asarray(mesh.vertex_normals), axis=1) > 0.99) > 0.99


# ---------------------------------------------------------------------------- MeshSink


@pytest.mark.parametrize("handedness", [Handedness.RIGHT, Handedness.LEFT])
def test_ply_round_trip(tmp_path, hand_model, handedness):
    result = make_result(hand_model, handedness=handedness)
    sink = MeshSink(tmp_path / "meshes", hand_model.faces, fmt="ply")
    sink.write(result)
    sink.close()
    path = tmp_path / "meshes" / f"frame_000123_{handedness.value}.ply"
    assert sorted(p.name for p in (tmp_path / "meshes").iterdir()) == [path.name]  # no temporary left
    assert sink.files_written == 1 and sink.last_paths == [path]
    mesh = o3d.io.read_triangle_mesh(str(path))
    np.testing.assert_allclose(np.asarray(mesh.vertices), result.hands[0].vertices_cam_m, rtol=0, atol=TOLERANCE_M)
    # A left hand is the right one mirrored: its triangles are reversed to stay outward.
    expected_faces = hand_model.faces if handedness == Handedness.RIGHT else hand_model.faces[:, ::-1]
    np.testing.assert_array_equal(np.asarray(mesh.triangles), expected_faces)
    assert mesh.has_vertex_normals()
    assert_outward(mesh)


def test_obj_round_trip(tmp_path, hand_model):
    result = make_result(hand_model)
    vertices = result.hands[0].vertices_cam_m
    sink = MeshSink(tmp_path, hand_model.faces, fmt="OBJ")
    sink.write(result)
    path = tmp_path / "frame_000123_right.obj"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    # The file itself, in the order written.
    lines = path.read_text().splitlines()
    written_vertices = np.array([[float(x) for x in line.split()[1:4]] for line in lines if line.startswith("v ")])
    face_lines = [line.split()[1:4] for line in lines if line.startswith("f ")]
    written_faces = np.array([[int(corner.split("/")[0]) - 1 for corner in face] for face in face_lines])
    np.testing.assert_allclose(written_vertices, vertices, rtol=0, atol=TOLERANCE_M)
    np.testing.assert_array_equal(written_faces, hand_model.faces)
    assert sum(line.startswith("vn ") for line in lines) == len(vertices)
    # open3d reads OBJ vertices back in first-use order, so compare triangle corners.
    mesh = o3d.io.read_triangle_mesh(str(path))
    assert len(mesh.vertices) == len(vertices) and mesh.has_vertex_normals()
    corners = np.asarray(mesh.vertices)[np.asarray(mesh.triangles)]
    np.testing.assert_allclose(corners, vertices[hand_model.faces], rtol=0, atol=TOLERANCE_M)
    assert_outward(mesh)


def test_frame_without_hand_writes_nothing(tmp_path, hand_model):
    sink = MeshSink(tmp_path / "new" / "dir", hand_model.faces)
    sink.write(make_result(hand_model, hand=False))
    assert (tmp_path / "new" / "dir").is_dir() and not any((tmp_path / "new" / "dir").iterdir())
    assert sink.files_written == 0


def test_a_frame_counter_that_restarts_writes_a_new_part_and_overwrites_nothing(tmp_path, hand_model):
    sink = MeshSink(tmp_path, hand_model.faces)
    names = []
    for number in (7, 8, 2, 3, 3):  # the camera restarted at 2 after a reconnect; then a repeat
        result = make_result(hand_model)
        result = dataclasses.replace(result, frame=dataclasses.replace(result.frame, frame_number=number))
        sink.write(result)
        names += [p.name for p in sink.last_paths]
    assert names == [
        "frame_000007_right.ply", "frame_000008_right.ply", "frame_000002_right-part2.ply",
        "frame_000003_right-part2.ply", "frame_000003_right-part3.ply",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_a_folder_with_meshes_of_an_earlier_run_is_refused(tmp_path, hand_model):
    sink = MeshSink(tmp_path, hand_model.faces, fmt="obj")
    sink.write(make_result(hand_model))
    sink.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for fmt in ("ply", "obj"):  # whichever format the new run writes
        with pytest.raises(FileExistsError, match="already holds 1 hand meshes from an earlier run"):
            MeshSink(tmp_path, hand_model.faces, fmt=fmt)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # Other files do not count.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    (other / "frame_000001_right.png").write_bytes(b"")
    MeshSink(other, hand_model.faces).close()


def test_a_file_where_the_folder_would_go_is_refused_clearly(tmp_path, hand_model):
    (tmp_path / "afile").write_text("x")
    for path in (tmp_path / "afile", tmp_path / "afile" / "meshes"):
        with pytest.raises(FileExistsError, match="afile is a file, not a folder"):
            MeshSink(path, hand_model.faces)


def test_unknown_format_is_refused(tmp_path, hand_model):
    with pytest.raises(ValueError, match="ply, obj"):
        MeshSink(tmp_path, hand_model.faces, fmt="stl")


def test_failed_write_raises_with_path_and_leaves_nothing(tmp_path, hand_model, monkeypatch):
    monkeypatch.setattr(o3d.io, "write_triangle_mesh", lambda *args, **kwargs: False)
    sink = MeshSink(tmp_path, hand_model.faces)
    with pytest.raises(OSError, match="frame_000123_right.ply"):
        sink.write(make_result(hand_model))
    assert not any(tmp_path.iterdir()) and sink.files_written == 0


@pytest.mark.parametrize("fmt", ["ply", "obj"])
@pytest.mark.parametrize("kept", [0.0, 0.5, -5])
def test_a_file_open3d_cut_short_yet_called_written_is_refused(tmp_path, hand_model, monkeypatch, fmt, kept):
    # What a full disk does: open3d's writers ignore the failed writes and return True, with
    # the file empty, cut off, or short of its last few bytes (part of the last face).
    write = o3d.io.write_triangle_mesh

    def cut_short(path, mesh, **kwargs):
        assert write(path, mesh, **kwargs)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: int(len(data) * kept) if isinstance(kept, float) else kept])
        return True

    monkeypatch.setattr(o3d.io, "write_triangle_mesh", cut_short)
    sink = MeshSink(tmp_path, hand_model.faces, fmt)
    with pytest.raises(OSError, match=f"frame_000123_right.{fmt}: open3d's file came out incomplete"):
        sink.write(make_result(hand_model))
    assert not any(tmp_path.iterdir()) and sink.files_written == 0


def test_mismatched_faces_are_refused_before_open3d_sees_them(tmp_path, hand_model):
    sink = MeshSink(tmp_path, hand_model.faces + 10_000)
    with pytest.raises(ValueError, match="different hand model"):
        sink.write(make_result(hand_model))


def test_missing_open3d_says_how_to_install(tmp_path, hand_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "open3d", None)  # makes `import open3d` fail
    with pytest.raises(RuntimeError, match="pip install"):
        MeshSink(tmp_path, hand_model.faces)


# ---------------------------------------------------------------------------- Open3DViewer

BACKGROUND = np.array([20, 20, 26])  # _BACKGROUND_RGB in 0..255


def drawn(image: np.ndarray) -> np.ndarray:
    """Mask of pixels that are not the background."""
    return np.abs(image.astype(int) - BACKGROUND).sum(axis=-1) > 30


@pytest.fixture
def viewer(hand_model):
    try:
        v = Open3DViewer(hand_model.faces, visible=False, width=320, height=180)
    except RuntimeError as exc:
        pytest.skip(f"open3d cannot render offscreen in this environment: {exc}")
    yield v
    v.close()


def test_viewer_draws_cloud_mesh_and_skeleton(viewer, hand_model, tmp_path):
    viewer.write(make_result(hand_model))
    image = viewer.capture(tmp_path / "view.png")
    assert image.shape == (180, 320, 3) and image.dtype == np.uint8
    assert (tmp_path / "view.png").stat().st_size > 0
    assert drawn(image).mean() > 0.2  # the wall's points alone fill a good part of the view
    assert not viewer.stop_requested


def test_viewer_looks_from_the_camera(viewer, hand_model):
    """No wall: what is drawn is the hand. Moving it right/down in the camera frame moves it
    right/down on screen (the view is neither mirrored nor upside down)."""

    def centroid(offset):
        viewer.write(make_result(hand_model, offset=offset, wall=False))
        mask = drawn(viewer.capture())
        assert mask.sum() > 200
        rows, cols = np.nonzero(mask)
        return cols.mean(), rows.mean()

    x0, y0 = centroid((0.0, 0.0, 0.0))
    x1, y1 = centroid((0.05, 0.0, 0.0))
    x2, y2 = centroid((0.05, 0.04, 0.0))
    assert x1 - x0 > 10 and abs(y1 - y0) < 3
    assert y2 - y1 > 10 and abs(x2 - x1) < 3
    # The thumb of a right hand with its palm to the camera is on the image's right, as in
    # the depth image: the thumb-side half of the drawn hand sits right of the wrist.
    result = make_result(hand_model, wall=False)
    uv = result.hands[0].joints_uv_px
    assert uv[4, 0] > uv[0, 0]  # depth image: thumb tip right of the wrist
    viewer.write(result)
    rows, cols = np.nonzero(drawn(viewer.capture()))
    upper = rows < np.percentile(rows, 60)  # fingers and thumb, without the wrist
    assert np.percentile(cols[upper], 95) - x0 > x0 - np.percentile(cols[upper], 5)


def test_viewer_hides_the_hand_when_lost_and_keeps_the_points(viewer, hand_model):
    viewer.write(make_result(hand_model, wall=False))
    assert drawn(viewer.capture()).sum() > 200
    viewer.write(make_result(hand_model, wall=False, hand=False))
    assert drawn(viewer.capture()).sum() == 0
    viewer.write(make_result(hand_model, hand=False))
    assert drawn(viewer.capture()).mean() > 0.2
    viewer.close()
    viewer.close()  # idempotent
    viewer.write(make_result(hand_model))  # after close: ignored, not a crash


def test_visible_window_without_display_is_refused(hand_model, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the no-display check is for Linux (X11/Wayland)")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="leave out --viewer-3d"):
        Open3DViewer(hand_model.faces, visible=True)


def test_the_command_line_says_how_to_run_headless_when_the_3d_viewer_cannot_open(monkeypatch, tmp_path, capsys):
    from tracker.cli import main

    if not sys.platform.startswith("linux"):
        pytest.skip("the no-display check is for Linux (X11/Wayland)")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    # --no-viewer concerns the overlay window; the advice must be one that works.
    assert main(["--source", "synthetic", "--max-frames", "1", "--out", str(tmp_path / "x.jsonl"), "--no-viewer", "--viewer-3d"]) == 2
    assert "leave out --viewer-3d" in capsys.readouterr().err


def test_closing_the_window_requests_a_stop(viewer, hand_model):
    class ClosedByUser:  # the real window, except that the user has just closed it
        def __init__(self, vis):
            self._vis = vis

        def poll_events(self):
            return False

        def __getattr__(self, name):
            return getattr(self._vis, name)

    viewer.write(make_result(hand_model))
    assert not viewer.stop_requested
    viewer._vis = ClosedByUser(viewer._vis)
    viewer.write(make_result(hand_model))
    assert viewer.stop_requested
