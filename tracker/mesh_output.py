"""3-D outputs of the tracker: per-frame hand meshes on disk and a live open3d window.

Both are pipeline sinks like ``JsonLinesSink`` and ``VideoSink`` (``write(result)`` once per
processed frame, ``close()`` at the end), for when the 2-D overlay is not enough:

* ``MeshSink`` writes every tracked hand of every frame as a PLY or OBJ mesh with vertex
  normals, in the camera frame (x right, y down, z forward), metres, for other tools
  (Blender, MeshLab, evaluation scripts) to pick up.
* ``Open3DViewer`` shows the depth frame as a point cloud with the hand mesh and skeleton
  in a window the user can orbit. It uses open3d's legacy ``Visualizer``: the Filament
  based ``gui``/``O3DVisualizer`` cannot render offscreen on the machines this runs on,
  while the legacy one falls back to EGL when there is no display, which is also what
  lets the tests (and ``capture``) render without a window.

open3d is imported only when one of these is built, so the rest of the tracker runs
without it.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np

from tracker.lens import pinhole_view, project
from tracker.pipeline import FrameResult
from tracker.types import NUM_JOINTS, SKELETON_BONES, HandEstimate, Handedness

MESH_FORMATS = ("ply", "obj")
_INSTALL_HINT = (
    "install it with `.venv/bin/python -m pip install 'open3d>=0.18'`, or run ./setup.sh, which also "
    "installs the system libraries it loads (libGL, libEGL, libgomp, libusb)"
)


def _import_open3d():
    try:
        import open3d
    except ImportError as exc:  # also what a missing system library of the wheel looks like
        raise RuntimeError(f"the 3-D outputs need open3d, which cannot be imported ({exc}); {_INSTALL_HINT}") from exc
    return open3d


def _check_faces(faces: np.ndarray) -> np.ndarray:
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or faces.min() < 0:
        raise ValueError(f"faces must be a non-empty (F, 3) array of vertex indices, got shape {faces.shape}")
    return faces


def _hand_faces(faces: np.ndarray, hand: HandEstimate) -> np.ndarray:
    # ``faces`` wind outwards on the right hand; a left hand is that mesh mirrored, which
    # turns the winding inside out, so its normals would point into the hand. Reversing
    # each triangle is what ``HandModel.faces_for`` does too.
    return faces if Handedness(hand.handedness) == Handedness.RIGHT else np.ascontiguousarray(faces[:, ::-1])


def _hand_vertices(hand: HandEstimate, faces: np.ndarray) -> np.ndarray:
    vertices = np.asarray(hand.vertices_cam_m, dtype=np.float64)
    # open3d does not check indices: an out-of-range face would read past the vertex
    # buffer in compute_vertex_normals (a crash, not an exception).
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) <= int(faces.max()):
        raise ValueError(
            f"hand mesh has vertices of shape {vertices.shape} but the faces index up to vertex {int(faces.max())}; "
            "were the faces taken from a different hand model?"
        )
    return vertices


def earlier_meshes(directory: str | Path) -> list[Path]:
    """Hand meshes a MeshSink wrote into ``directory`` before (none if it does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("frame_*") if p.suffix.lower().lstrip(".") in MESH_FORMATS)


def check_mesh_directory(directory: str | Path) -> None:
    """Refuse a folder that already holds meshes: a new run would overwrite those of the
    frame numbers it shares with the old one and leave the rest, a mix of two runs. A path
    that is a file, or lies under one, cannot be the folder either, nor an existing folder
    that cannot be written (raised as ``OSError``)."""
    directory = Path(directory)
    for part in (directory, *directory.parents):
        if part.exists() and not part.is_dir():
            raise FileExistsError(f"cannot write hand meshes into {directory}: {part} is a file, not a folder")
    found = earlier_meshes(directory)
    if found:
        raise FileExistsError(
            f"{directory} already holds {len(found)} hand meshes from an earlier run (such as {found[0].name}); "
            "a new run would overwrite some and mix the two. Choose an empty folder or move them away"
        )
    if directory.is_dir():
        # Found now, not at the first hand tracked, when the other outputs (an earlier run's
        # JSON lines) would already be replaced. A folder yet to be made is made by this
        # process, which can then write in it.
        probe = directory / f".probe-{os.getpid()}.partial"
        try:
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise OSError(f"cannot write hand meshes into {directory}: {exc.strerror or exc}; choose a folder that can be written") from None


class MeshSink:
    """One mesh file per tracked hand per frame: ``frame_000123_right.ply`` in ``directory``,
    which must not hold meshes from an earlier run.

    ``faces``: the hand model's (F, 3) triangles for a right hand (``HandModel.faces``); a
    left hand's are reversed here. Frames without a hand write nothing. ``files_written``
    counts the files so far.

    Precision: PLY is binary with float64 coordinates, so the float32 vertices come back
    exactly. open3d writes OBJ text with 6 significant digits: exact to about a micrometre
    within a metre of the camera, 10 micrometres up to 10 m.
    """

    def __init__(self, directory: str | Path, faces: np.ndarray, fmt: str = "ply") -> None:
        fmt = str(fmt).lower().lstrip(".")
        if fmt not in MESH_FORMATS:
            raise ValueError(f"unknown mesh format {fmt!r}; choose one of {', '.join(MESH_FORMATS)}")
        self._o3d = _import_open3d()
        self.directory = Path(directory)
        check_mesh_directory(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.faces = _check_faces(faces)
        self.fmt = fmt
        self.files_written = 0
        self.last_paths: list[Path] = []
        # A frame counter that goes back (a camera restarted after a reconnect) starts a new
        # part, named like the recording's -partN files, so no earlier mesh is overwritten.
        self._part = 1
        self._last_frame_number: int | None = None

    def path_for(self, frame_number: int, handedness: Handedness, index: int = 0) -> Path:
        # A second hand of the same side in one frame must not overwrite the first.
        suffix = f"_{index}" if index else ""
        part = f"-part{self._part}" if self._part > 1 else ""
        return self.directory / f"frame_{int(frame_number):06d}_{Handedness(handedness).value}{suffix}{part}.{self.fmt}"

    def _mesh(self, hand: HandEstimate):
        o3d = self._o3d
        faces = _hand_faces(self.faces, hand)
        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(_hand_vertices(hand, faces)), o3d.utility.Vector3iVector(faces)
        )
        mesh.compute_vertex_normals()
        # compute_vertex_normals also makes per-triangle normals, which OBJ cannot hold:
        # open3d would warn on every file.
        mesh.triangle_normals = o3d.utility.Vector3dVector()
        return mesh

    def write(self, result: FrameResult) -> None:
        self.last_paths = []
        number = int(result.frame.frame_number)
        if self._last_frame_number is not None and number <= self._last_frame_number:
            self._part += 1
        self._last_frame_number = number
        seen: dict[str, int] = {}
        for hand in result.hands:
            side = Handedness(hand.handedness).value
            path = self.path_for(result.frame.frame_number, hand.handedness, seen.get(side, 0))
            seen[side] = seen.get(side, 0) + 1
            self._write_atomically(self._mesh(hand), path)
            self.files_written += 1
            self.last_paths.append(path)

    def _write_atomically(self, mesh, path: Path) -> None:
        # Written under its own name (open3d picks the writer from the extension, and an OBJ
        # names its object after the file) in a hidden folder beside it, then moved: the
        # rename is atomic within a file system, so readers (and a crash) never see a
        # half-written file under the real name.
        staging = path.with_name(f".{path.stem}.partial")
        temporary = staging / path.name
        try:
            staging.mkdir(exist_ok=True)
            ok = self._o3d.io.write_triangle_mesh(str(temporary), mesh, write_ascii=False, print_progress=False)
            # open3d reports success even where its writes failed (a full disk leaves the
            # file empty or cut off), so what it wrote is checked before it takes the name.
            if not ok or not self._complete(temporary, mesh):
                raise OSError(
                    f"could not write the hand mesh {path}: open3d's file came out {'unwritten' if not ok else 'incomplete'} "
                    "(disk full or not writable?)"
                )
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
            try:
                staging.rmdir()
            except OSError:
                pass

    def _complete(self, written: Path, mesh) -> bool:
        """Whether ``written`` holds all of ``mesh``: a PLY read back (0.3 ms for a hand),
        an OBJ's lines counted (reading it back takes as long as writing it)."""
        vertices, triangles = len(mesh.vertices), len(mesh.triangles)
        if self.fmt == "ply":
            read = self._o3d.io.read_triangle_mesh(str(written))
            return len(read.vertices) == vertices and len(read.triangles) == triangles
        text = written.read_bytes()
        last_line = text.rstrip(b"\n").rpartition(b"\n")[2]
        return (
            text.endswith(b"\n") and text.count(b"\nv ") == vertices and text.count(b"\nvn ") == vertices
            and text.count(b"\nf ") == triangles and last_line.startswith(b"f ") and len(last_line.split()) == 4
        )

    def close(self) -> None:
        pass  # every file is complete once write() returns


#: Bone colours per finger (thumb, index, middle, ring, pinky), RGB in [0, 1].
_FINGER_RGB = np.array(
    [[0.9, 0.24, 0.24], [0.24, 0.78, 0.24], [0.16, 0.63, 0.9], [0.78, 0.24, 0.78], [0.9, 0.78, 0.16]]
)
_SKIN_RGB = (0.93, 0.80, 0.70)
_BACKGROUND_RGB = (0.08, 0.08, 0.10)
_BONES = np.array([[int(child), int(parent)] for child, parent in SKELETON_BONES], np.int32)
_BONE_RGB = _FINGER_RGB[(_BONES[:, 0] - 1) // 4]


def _display_problem_3d(environ, platform: str) -> str | None:
    """Why Open3D cannot open a window on this Linux machine, or None: its GLFW takes a
    Wayland display as well as an X one that a server answers."""
    from tracker.display import x_display_problem

    if not platform.startswith("linux") or environ.get("WAYLAND_DISPLAY"):
        return None
    if not environ.get("DISPLAY"):
        return "DISPLAY/WAYLAND_DISPLAY not set"
    return x_display_problem(environ, platform)


class Open3DViewer:
    """Live 3-D view of the tracking: depth point cloud, shaded hand mesh, 21-joint skeleton.

    Everything is drawn in the camera frame. The view is placed on the first frame, and once
    more on the first hand seen: from where the depth camera is, looking along +z at the
    hand (from at most ``VIEW_DISTANCE_M``), image-up -y, so it first looks like the depth
    image; the mouse orbits from there.
    Key M toggles the mesh, which otherwise hides the skeleton inside it. The geometry
    objects are updated in place, never re-created per frame.

    ``stop_requested`` becomes True once the user closes the window; the pipeline checks it
    after each write. Must be used from the thread that created it (an OpenGL context
    belongs to one thread); the pipeline writes sinks from its main loop.

    ``visible=False`` renders offscreen (EGL) for tests and ``capture``; without a display,
    a visible window is refused rather than silently rendering to nowhere.
    """

    #: The eye never starts further than this from the hand: a hand at arm's length seen
    #: from the camera would fill a tenth of the window.
    VIEW_DISTANCE_M = 0.25

    def __init__(
        self,
        faces: np.ndarray,
        visible: bool = True,
        width: int = 960,
        height: int = 540,
        max_points: int = 4000,
        window_name: str = "hand tracker 3-D",
    ) -> None:
        self._o3d = o3d = _import_open3d()
        self.faces = _check_faces(faces)
        self.max_points = int(max_points)
        self._closed = False
        self._stop_requested = False
        self._view_set_on_hand = False
        self._view_set = False
        self._mesh_shown = True
        problem = _display_problem_3d(os.environ, sys.platform) if visible else None
        if problem is not None:
            # The legacy Visualizer would fall back to an offscreen context and "succeed"
            # with no window anywhere: a live view nobody can see.
            raise RuntimeError(f"no display for the 3-D viewer ({problem}); leave out --viewer-3d, and use --mesh-dir or --video when headless")
        # The key-callback flavour is still the legacy Visualizer, plus keyboard hooks.
        self._vis = o3d.visualization.VisualizerWithKeyCallback()
        if not self._vis.create_window(window_name=window_name, width=int(width), height=int(height), visible=visible):
            raise RuntimeError(
                "open3d could not open the 3-D viewer window (no display or no OpenGL/EGL here); "
                "leave out --viewer-3d, and use --mesh-dir or --video when headless"
            )
        options = self._vis.get_render_option()
        options.background_color = np.asarray(_BACKGROUND_RGB)
        options.point_size = 3.0
        options.line_width = 4.0
        # The hand mesh is open at the wrist; culled back faces would show as a hole there.
        options.mesh_show_back_face = True
        self._cloud = o3d.geometry.PointCloud()
        self._mesh = o3d.geometry.TriangleMesh()
        self._skeleton = o3d.geometry.LineSet()
        with self._quiet():
            # Not yet fitted: the view is set from the first frame's content (see _set_view).
            for geometry in (self._cloud, self._mesh, self._skeleton):
                self._vis.add_geometry(geometry, reset_bounding_box=False)
        self._vis.register_key_callback(ord("M"), self._toggle_mesh)

    # ------------------------------------------------------------------ sink interface

    @property
    def stop_requested(self) -> bool:
        """True once the user closed the window: the run should end."""
        return self._stop_requested

    def write(self, result: FrameResult) -> None:
        if self._closed or self._stop_requested:
            return
        hand = result.hands[0] if result.hands else None
        self._update_cloud(result, hand)
        self._update_hand(hand)
        with self._quiet():
            for geometry in (self._cloud, self._mesh, self._skeleton):
                self._vis.update_geometry(geometry)
            if hand is not None and not self._view_set_on_hand:
                self._set_view(np.asarray(hand.joints_cam_m, np.float64).mean(axis=0))
                self._view_set_on_hand = True
            elif not self._view_set and len(self._cloud.points):
                self._set_view(np.median(np.asarray(self._cloud.points), axis=0))
            if not self._vis.poll_events():
                self._stop_requested = True
                return
            self._vis.update_renderer()

    def capture(self, path: str | Path | None = None) -> np.ndarray:
        """Render the current view; (H, W, 3) uint8 RGB, also saved as a PNG at ``path``."""
        if self._closed:
            raise RuntimeError("the 3-D viewer is closed")
        # The float buffer renders first (do_render) and works the same on- and offscreen.
        buffer = np.asarray(self._vis.capture_screen_float_buffer(do_render=True))
        image = (np.clip(buffer, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        if path is not None:
            import cv2

            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), image[:, :, ::-1]):
                raise OSError(f"could not write the viewer capture {path}")
        return image

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._vis.destroy_window()

    def __enter__(self) -> "Open3DViewer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _quiet(self):
        # Empty geometry (no hand yet / hand lost) makes open3d warn about empty bounding
        # boxes on every update; those are expected here.
        o3d = self._o3d
        return o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error)

    def _toggle_mesh(self, _vis) -> bool:
        self._mesh_shown = not self._mesh_shown
        return False  # the next write redraws

    def _update_cloud(self, result: FrameResult, hand: HandEstimate | None) -> None:
        from tracker.segment import back_project
        from tracker.synth.contact_sheet import colourise_depth

        frame = result.frame
        depth_m, k = pinhole_view(frame.depth_m(), frame.intrinsics)  # exact 3-D points for a stream with a lens model
        h, w = depth_m.shape
        # A regular pixel grid keeps the cloud evenly spread and the draw cost fixed.
        stride = max(1, math.ceil(math.sqrt(h * w / max(self.max_points, 1))))
        grid = depth_m[::stride, ::stride]
        mask = np.zeros(depth_m.shape, bool)
        mask[::stride, ::stride] = grid > 0
        points = back_project(depth_m, k, mask)
        colour_depth = grid[grid > 0]
        if hand is not None:
            # Denser around the hand, which is what the viewer is for.
            uv = project(hand.joints_cam_m, k)
            u0, v0 = np.clip(np.floor(uv.min(0)) - 20, 0, [w - 1, h - 1]).astype(int)
            u1, v1 = np.clip(np.ceil(uv.max(0)) + 20, 0, [w - 1, h - 1]).astype(int)
            fine = np.zeros(depth_m.shape, bool)
            fine[v0 : v1 + 1 : 2, u0 : u1 + 1 : 2] = True
            fine &= (depth_m > 0) & ~mask
            points = np.concatenate([points, back_project(depth_m, k, fine)])
            colour_depth = np.concatenate([colour_depth, depth_m[fine]])
        if hand is not None:
            # The same colour range as the 2-D overlay: the hand and what is just behind it.
            near = float(np.median(hand.joints_cam_m[:, 2]))
            near, far = near - 0.2, near + 0.6
        elif len(points):
            near, far = np.percentile(points[:, 2], [1, 90])
            far = max(far, near + 0.3)  # a flat scene would otherwise map to one colour
        else:
            near, far = 0.2, 1.5
        # OpenCV's colour map dies with SIGFPE on an empty array: with no points, colour the
        # (never empty) grid image instead, which then selects nothing.
        colours = colourise_depth(colour_depth[None, :] if colour_depth.size else grid, float(near), float(far))
        colours = (colours[0] if colour_depth.size else colours[grid > 0])[:, ::-1] / 255.0
        o3d = self._o3d
        self._cloud.points = o3d.utility.Vector3dVector(points)
        self._cloud.colors = o3d.utility.Vector3dVector(colours.astype(np.float64))

    def _update_hand(self, hand: HandEstimate | None) -> None:
        o3d = self._o3d
        if hand is None or not self._mesh_shown:
            self._mesh.clear()
        else:
            faces = _hand_faces(self.faces, hand)
            vertices = _hand_vertices(hand, faces)
            self._mesh.vertices = o3d.utility.Vector3dVector(vertices)
            self._mesh.triangles = o3d.utility.Vector3iVector(faces)
            self._mesh.vertex_colors = o3d.utility.Vector3dVector(np.tile(_SKIN_RGB, (len(vertices), 1)))
            self._mesh.compute_vertex_normals()
        if hand is None:
            self._skeleton.clear()
        else:
            joints = np.asarray(hand.joints_cam_m, np.float64)
            if joints.shape != (NUM_JOINTS, 3):
                raise ValueError(f"hand joints must be ({NUM_JOINTS}, 3), got {joints.shape}")
            self._skeleton.points = o3d.utility.Vector3dVector(joints)
            self._skeleton.lines = o3d.utility.Vector2iVector(_BONES)
            self._skeleton.colors = o3d.utility.Vector3dVector(_BONE_RGB)

    def _set_view(self, lookat: np.ndarray) -> None:
        """Look from the depth camera's side along +z at ``lookat``, from the camera or, for a
        far hand, from ``VIEW_DISTANCE_M`` in front of it."""
        vis = self._vis
        # Fit the view's bounding box (near/far planes and the zoom scale) to the content now
        # present; the geometries were added empty.
        vis.reset_view_point(True)
        control = vis.get_view_control()
        control.set_front([0.0, 0.0, -1.0])  # open3d's front points from the scene to the eye
        control.set_up([0.0, -1.0, 0.0])  # image rows grow along +y
        control.set_lookat(lookat.tolist())
        # open3d's zoom is relative to the bounding box; measure the eye distance at zoom 1
        # and scale it so the eye sits in the camera's image plane (z = 0).
        control.set_zoom(1.0)
        extrinsic = np.asarray(control.convert_to_pinhole_camera_parameters().extrinsic)
        eye = -extrinsic[:3, :3].T @ extrinsic[:3, 3]
        unit_distance = float(np.linalg.norm(eye - lookat))
        if unit_distance > 0 and lookat[2] > 0:
            control.set_zoom(min(float(lookat[2]), self.VIEW_DISTANCE_M) / unit_distance)
        # Fixed clip planes: the fitted ones came from this frame and would cut off a scene
        # that later grows deeper.
        control.set_constant_z_near(0.01)
        control.set_constant_z_far(50.0)
        self._view_set = True
