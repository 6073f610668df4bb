"""Pictures of tracking results: depth colour map, shaded hand mesh, skeleton, frame rate.

``draw_overlay`` makes one BGR image per frame; ``VideoSink`` writes them to an MP4 (or,
for a path ending in .png, keeps the last frame as a PNG) and needs no display.
``WindowSink`` shows them live in an OpenCV window; ``display_available`` says whether
one can open (a display server, and an OpenCV build with a GUI), so the command line
stays headless by default where there is no screen. Both sinks share one ``OverlayPainter``
so a frame is drawn once however many sinks show it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from kernels.raster import render_mesh
from tracker.hand_model import HandModel
from tracker.lens import pinhole_view, project
from tracker.pipeline import FrameResult
from tracker.sinks import make_parent_folder
from tracker.synth.contact_sheet import colourise_depth, draw_skeleton


def draw_overlay(result: FrameResult, faces: np.ndarray, fps: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8 BGR: the depth image with each tracked hand drawn on top."""
    frame = result.frame
    # Drawn on the pinhole view of a stream with a lens model, where the mesh renders exactly.
    depth_m, k = pinhole_view(frame.depth_m(), frame.intrinsics)
    if result.hands:
        z = float(np.median(result.hands[0].joints_cam_m[:, 2]))
        near, far = z - 0.2, z + 0.6
    else:
        valid = depth_m[depth_m > 0]
        near, far = (np.percentile(valid, [1, 90]) if valid.size else (0.2, 1.5))
    image = colourise_depth(depth_m, near, far)
    for hand in result.hands:
        mesh_depth, face_index, _ = render_mesh(hand.vertices_cam_m, faces, k.fx, k.fy, k.cx, k.cy, k.height, k.width)
        _shade_mesh(image, mesh_depth, face_index >= 0)
        draw_skeleton(image, hand.joints_uv_px if k is frame.intrinsics else project(hand.joints_cam_m, k))
    text = f"frame {frame.frame_number}  hands {len(result.hands)}"
    if fps is not None:
        text += f"  {fps:.0f} fps"
    cv2.putText(image, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def _shade_mesh(image: np.ndarray, mesh_depth: np.ndarray, covered: np.ndarray) -> None:
    """Blend the rendered mesh, lit by its depth's slope, into ``image`` in place.

    Only over the mesh's bounding box and a pixel around it, the neighbours its slopes are
    taken from: the hand covers a few percent of the image, which the overlay draws live.
    """
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    if not rows.size:
        return
    box = (
        slice(max(rows[0] - 1, 0), min(rows[-1] + 2, covered.shape[0])),
        slice(max(cols[0] - 1, 0), min(cols[-1] + 2, covered.shape[1])),
    )
    covered, mesh_depth, region = covered[box], mesh_depth[box], image[box]
    if min(covered.shape) < 2:  # np.gradient needs two pixels along each axis
        return
    gy, gx = np.gradient(np.where(covered, mesh_depth, np.median(mesh_depth[covered])))
    light = np.clip(0.65 + 30 * (gx + gy), 0.25, 1.0)[covered]
    region[covered] = (0.35 * region[covered] + 0.65 * np.stack([light * 235, light * 235, light * 245], -1)).astype(np.uint8)


def warm_up_rasteriser(faces: np.ndarray) -> float:
    """Compile the overlay's rasteriser, or load it from numba's cache, before the first frame
    drawn (which the tracker would wait for); the seconds it took. Its vertices are float32
    camera-frame metres, as the tracker's estimates are, so the compiled version is theirs."""
    t0 = time.perf_counter()
    render_mesh(np.zeros((int(faces.max()) + 1, 3), np.float32), faces, 1.0, 1.0, 0.0, 0.0, 2, 2)
    return time.perf_counter() - t0


class OverlayPainter:
    """Draws each frame's overlay once, with the rate frames came over the last second."""

    def __init__(self, faces: np.ndarray) -> None:
        self.faces = faces
        self._times: list[float] = []
        self._noted: FrameResult | None = None
        self._last: tuple[FrameResult, np.ndarray] | None = None

    def note(self, result: FrameResult) -> None:
        """Count a frame towards the rate shown, whether or not it is drawn."""
        if result is self._noted:
            return
        self._noted = result
        now = time.perf_counter()
        self._times = [t for t in self._times if now - t < 1.0] + [now]

    def __call__(self, result: FrameResult) -> np.ndarray:
        if self._last is not None and self._last[0] is result:
            return self._last[1]
        self.note(result)
        # Frames over the time they spanned: right from the second frame on and after a pause
        # (a count over the last second would climb from 1 for a second).
        span = self._times[-1] - self._times[0]
        image = draw_overlay(result, self.faces, fps=(len(self._times) - 1) / span if span > 0 else None)
        self._last = (result, image)
        return image


def _first_frame_decodes(path: Path) -> bool:
    capture = cv2.VideoCapture(str(path))
    decoded = capture.isOpened() and capture.read()[0]
    capture.release()
    return bool(decoded)


class VideoSink:
    """Overlay frames into an MP4 (mp4v) or, for *.png, the last frame as a picture.

    The video runs at ``fps`` and follows the frames' timestamps: a frame is shown until the
    next one's time (repeated), the last one for as long as the one before it, and frames
    closer together than a video frame are skipped, so it plays at the pace of the input
    whatever rate the tracker managed. Frames without increasing timestamps take one video
    frame each.
    """

    #: A longer gap between frames (a camera reconnecting) is shortened to this in the video.
    MAX_GAP_S = 2.0

    #: Containers OpenCV writes mp4v video into; it picks the container from the suffix.
    VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv")

    def __init__(self, path: str | Path, hand_model: HandModel, fps: float = 30.0, painter: OverlayPainter | None = None) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".png", *self.VIDEO_SUFFIXES):
            raise ValueError(
                f"cannot tell what to write to {self.path}: give a video file ({', '.join(self.VIDEO_SUFFIXES)}) "
                "or a .png for the last overlay frame"
            )
        # OpenCV opens the file only at the first frame, and says no more than that it could
        # not: a path that cannot be written fails here, before a camera starts.
        if self.path.is_dir():
            raise ValueError(f"cannot write {self.path}: it is a folder")
        try:
            str(self.path).encode("utf-8")
        except UnicodeEncodeError:
            # OpenCV takes a path as UTF-8 text, and crashes on one that is not (a Latin-1
            # name from a zip file or a Windows share).
            raise ValueError(f"cannot write {self.path}: OpenCV cannot write to a path that is not valid UTF-8; choose another name") from None
        make_parent_folder(self.path)
        if not os.access(self.path.parent, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            read_only = hasattr(os, "statvfs") and bool(os.statvfs(self.path.parent).f_flag & os.ST_RDONLY)
            raise ValueError(f"cannot write {self.path}: {'read-only file system' if read_only else 'permission denied'}")
        self.painter = painter or OverlayPainter(hand_model.faces)
        self.fps = fps
        # Written under a hidden name and renamed into place when closed: a run killed
        # outright leaves no unplayable file under the real name, nor an earlier run's
        # video cut short. (The suffix stays last: OpenCV picks the container from it.)
        self._writing = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        try:  # a name too long once hidden, a file system that refuses it: found now
            self._writing.touch()
            self._writing.unlink()
        except OSError as exc:
            raise ValueError(f"cannot write {self.path} (as {self._writing.name} until it is complete): {exc.strerror or exc}") from None
        self._writer = None
        self._last: FrameResult | None = None  # for a .png: the newest frame, drawn when closed
        self._written = 0  # video frames so far
        # The newest frame, which the video holds, and its drawing once made: a frame that
        # gets no video frame of its own (a 90 fps camera into a 30 fps video) is not drawn.
        self._shown: FrameResult | None = None
        self._shown_image: np.ndarray | None = None
        self._put_last: FrameResult | None = None  # the frame last put into the video
        self._failed = False  # the encoder refused a frame
        self._first_time_ms = 0.0  # the input time of video frame 0
        self._previous_time_ms: float | None = None
        # How long the newest frame is held when the video ends: the time since the frame
        # before it (after a gap, which is no frame interval, the time before the gap). None
        # where the newest frame had no clock to follow.
        self._interval_ms: float | None = None
        self._closed = False

    def write(self, result: FrameResult) -> None:
        if hasattr(self.painter, "note"):
            self.painter.note(result)
        if self.path.suffix.lower() == ".png":
            self._last = result  # only the last frame is drawn, when closed
            return
        slot = self._slot(float(result.frame.timestamp_ms))
        if slot < self._written:
            # Shown too briefly for a video frame of its own, but the newest frame: the one
            # the next video frames hold until another comes.
            self._shown, self._shown_image = result, None
            return
        while self._written < slot:  # the previous frame stays on until this one's time
            self._put(self._shown)
        self._shown, self._shown_image = result, None
        self._put(result)

    def _drawn(self, result: FrameResult) -> np.ndarray:
        if result is self._shown and self._shown_image is not None:
            return self._shown_image
        image = self.painter(result)
        if self._writer is None:
            h, w = image.shape[:2]
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self._writing), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                self._writer = None
                if min(w, h) < 2:  # the encoder's own minimum: a size, not a missing encoder
                    raise OSError(f"cannot write video {self.path}: the frames are {w}x{h} pixels, and an mp4v video needs at least 2x2")
                raise OSError(f"cannot write video {self.path} (OpenCV has no mp4v encoder here?)")
        if image.shape[:2] != self._size[::-1]:
            # A camera reconnected in another depth mode: a video has one size, and OpenCV
            # would drop frames of another with no more than a log line.
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        if result is self._shown:
            self._shown_image = image  # held over several video frames: drawn once
        return image

    def _put(self, result: FrameResult) -> None:
        image = self._drawn(result)
        # OpenCV only logs a frame the encoder refused (disk full, a broken pipe).
        if self._writer.write(image) is False:
            self._failed = True
            raise OSError(f"cannot write video {self.path}: the encoder refused a frame (disk full?)")
        self._written += 1
        self._put_last = result

    def _slot(self, time_ms: float) -> int:
        """The video frame at which a frame with this timestamp appears."""
        previous, self._previous_time_ms = self._previous_time_ms, time_ms
        if previous is None or not time_ms > previous:
            # The first frame, or no clock to follow: next in line, and the clock restarts here.
            self._first_time_ms = time_ms - 1e3 * self._written / self.fps
            self._interval_ms = None
            return self._written
        if time_ms - previous > 1e3 * self.MAX_GAP_S:
            self._first_time_ms += time_ms - previous - 1e3 * self.MAX_GAP_S
        else:
            self._interval_ms = time_ms - previous
        return int(round((time_ms - self._first_time_ms) * self.fps / 1e3))

    @classmethod
    def _plays(cls, path: Path) -> bool:
        """Whether the video at ``path`` opens and its first frame decodes (a few ms, once).
        Where OpenCV here reads back no video of its kind at all (a build without a reader
        for the container), it cannot be told, and the video counts as playing."""
        try:
            if _first_frame_decodes(path):
                return True
            import tempfile

            with tempfile.TemporaryDirectory() as folder:
                probe = Path(folder) / f"probe{path.suffix}"
                writer = cv2.VideoWriter(str(probe), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (16, 16))
                for _ in range(2):
                    writer.write(np.zeros((16, 16, 3), np.uint8))
                writer.release()
                return not _first_frame_decodes(probe)
        except Exception:  # the writer's own error, if any, is the one to report
            return True  # and what cannot be checked is kept

    def close(self) -> None:
        if self._writer is None and self._last is None and not self._closed:
            # Nothing to write; an earlier run's file keeps its place, and says so, so it is
            # not taken for this run's beside this run's (empty) outputs.
            if self.path.exists():
                print(f"note: no frame was tracked, so {self.path} was not written: the file there is from before", file=sys.stderr)
        self._closed = True
        if self._writer is not None:
            try:
                if self._shown is not None and not self._failed:
                    # Every other frame is shown until the next one's time: the last one, for
                    # as long as the one before it, so the video lasts as long as the input.
                    if self._interval_ms is not None:
                        end = int(round((self._previous_time_ms + self._interval_ms - self._first_time_ms) * self.fps / 1e3))
                        while self._written < end:
                            self._put(self._shown)
                    # The newest frame came too soon after the one before for a slot of its
                    # own; the video still ends on it, the state the input ended in.
                    if self._shown is not self._put_last:
                        self._put(self._shown)
            finally:
                self._writer.release()
                self._writer = None
                if self._failed:
                    # Cut off (a full disk): an earlier run's video keeps its place, and what
                    # was written is kept only where it plays (an MP4 cut off before its
                    # index does not), freeing the space otherwise.
                    if self._plays(self._writing):
                        kept = f"what it holds is in {self._writing}"
                    else:
                        self._writing.unlink(missing_ok=True)
                        kept = "what it held could not be played and was removed"
                    print(
                        f"note: the video stopped after {self._written} frames when the encoder refused one; "
                        f"{kept}, and {self.path} was left as it was", file=sys.stderr,
                    )
                elif self._plays(self._writing):
                    os.replace(self._writing, self.path)
                else:
                    # Every frame was taken, but the file could not be finished: a disk that
                    # filled as the MP4's index went out at the very end, which OpenCV does
                    # not report. It would not play: an earlier run's video keeps its place.
                    self._writing.unlink(missing_ok=True)
                    kept = "; the video there from before was left as it was" if self.path.exists() else ""
                    raise OSError(f"cannot write video {self.path}: it did not play once finished (disk full?) and was removed{kept}")
        if self._last is not None:
            result, self._last = self._last, None
            image = self.painter(result)
            if not cv2.imwrite(str(self._writing), image):
                self._writing.unlink(missing_ok=True)
                raise OSError(f"cannot write the overlay picture {self.path}")
            os.replace(self._writing, self.path)


def opencv_has_gui() -> bool:
    """True for an OpenCV build with a window toolkit (the headless wheels have none)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("", "NONE")
    return False


def display_problem(environ: dict | None = None, platform: str | None = None, answers=None) -> str | None:
    """Why no live window can open, or None where one can: an X display that a server
    answers on Linux/BSD (on Windows and macOS there always is one) and an OpenCV build
    with a GUI.

    Wayland alone is not enough: the OpenCV wheels' Qt has only its X11 (xcb) plugin, and
    without an X server Qt aborts the whole process, outputs unfinished, instead of raising.
    A Wayland desktop runs X programs through XWayland, which sets DISPLAY. For the same
    reason a DISPLAY that no server answers counts as none (``answers``: the check, for tests)."""
    from tracker.display import x_display_problem, x_server_answers

    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    problem = x_display_problem(environ, platform, answers or x_server_answers)
    if problem is not None:
        return problem
    return None if opencv_has_gui() else "an OpenCV build without a GUI"


def display_available(environ: dict | None = None, platform: str | None = None, answers=None) -> bool:
    """Whether a live window can open (see ``display_problem``)."""
    return display_problem(environ, platform, answers) is None


class WindowSink:
    """The overlay, live, in an OpenCV window. Q or Esc, or closing the window, asks the
    pipeline to stop (``stop_requested``), which then finalises outputs and recordings.

    Frames closer together (by their timestamps) than a screen's refresh are counted in
    the rate shown but not drawn: a 90 fps camera is shown at 45 frames a second, and the
    tracker thread, which draws, keeps the time.

    ``show``, ``wait_key`` and ``window_visible`` default to OpenCV's; tests pass stand-ins.
    """

    QUIT_KEYS = (ord("q"), ord("Q"), 27)

    #: The most frames a second the window shows: a 60 Hz screen shows no more.
    MAX_SHOWN_PER_SECOND = 60.0

    def __init__(
        self,
        hand_model: HandModel,
        title: str = "DGN hand tracker (Q to quit)",
        painter: OverlayPainter | None = None,
        show=None,
        wait_key=None,
        window_visible=None,
    ) -> None:
        self.title = title
        self.painter = painter or OverlayPainter(hand_model.faces)
        self._show = show or cv2.imshow
        self._wait_key = wait_key or cv2.waitKey
        self._window_visible = window_visible or (lambda name: cv2.getWindowProperty(name, cv2.WND_PROP_VISIBLE) >= 1)
        self._shown = False
        self._last_shown_ms = 0.0  # the time of the frame last drawn
        self._previous_ms: float | None = None  # the time of the frame before
        self.stop_requested = False

    def _due(self, result: FrameResult) -> bool:
        """Whether to draw this frame: the first, one a refresh after the last drawn, or one
        with no clock to follow (the same time, or a clock that went back: a camera
        restarted, another camera)."""
        time_ms = float(result.frame.timestamp_ms)
        previous, self._previous_ms = self._previous_ms, time_ms
        following = previous is not None and time_ms > previous
        if following and time_ms < self._last_shown_ms + 1e3 / self.MAX_SHOWN_PER_SECOND:
            return False
        self._last_shown_ms = time_ms
        return True

    def write(self, result: FrameResult) -> None:
        if self.stop_requested:
            return
        if not self._due(result):
            if hasattr(self.painter, "note"):
                self.painter.note(result)  # in the rate shown all the same
            return
        self._show(self.title, self.painter(result))
        self._shown = True
        key = self._wait_key(1)  # also runs the GUI event loop: without it nothing is drawn
        if key is not None and key >= 0 and (key & 0xFF) in self.QUIT_KEYS:
            self.stop_requested = True
        elif not self._window_visible(self.title):
            self.stop_requested = True  # closed with the mouse

    def close(self) -> None:
        if self._shown and self._show is cv2.imshow:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass  # already gone with the display
        self._shown = False
