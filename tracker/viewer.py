"""Pictures of tracking results: depth colour map, shaded hand mesh, skeleton, frame rate.

``draw_overlay`` makes one BGR image per frame; ``VideoSink`` writes them to an MP4 (or,
for a path ending in .png, keeps the last frame as a PNG). Works headless: nothing here
needs a display.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np

from kernels.raster import render_mesh
from tracker.hand_model import HandModel
from tracker.pipeline import FrameResult
from tracker.synth.contact_sheet import colourise_depth, draw_skeleton


def draw_overlay(result: FrameResult, faces: np.ndarray, fps: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8 BGR: the depth image with each tracked hand drawn on top."""
    frame = result.frame
    depth_m = frame.depth_m()
    valid = depth_m[depth_m > 0]
    near, far = (np.percentile(valid, [1, 90]) if valid.size else (0.2, 1.5))
    if result.hands:
        z = float(np.median(result.hands[0].joints_cam_m[:, 2]))
        near, far = z - 0.2, z + 0.6
    image = colourise_depth(depth_m, near, far)
    k = frame.intrinsics
    for hand in result.hands:
        mesh_depth, face_index, _ = render_mesh(hand.vertices_cam_m, faces, k.fx, k.fy, k.cx, k.cy, k.height, k.width)
        covered = face_index >= 0
        if covered.any():
            gy, gx = np.gradient(np.where(covered, mesh_depth, np.median(mesh_depth[covered])))
            light = np.clip(0.65 + 30 * (gx + gy), 0.25, 1.0)[covered]
            image[covered] = (0.35 * image[covered] + 0.65 * np.stack([light * 235, light * 235, light * 245], -1)).astype(np.uint8)
        draw_skeleton(image, hand.joints_uv_px)
    text = f"frame {frame.frame_number}  hands {len(result.hands)}"
    if fps is not None:
        text += f"  {fps:.0f} fps"
    cv2.putText(image, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return image


class VideoSink:
    """Overlay frames into an MP4 (mp4v) or, for *.png, the last frame as a picture."""

    def __init__(self, path: str | Path, hand_model: HandModel, fps: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.faces = hand_model.faces
        self.fps = fps
        self._writer = None
        self._last = None
        self._times: list[float] = []

    def write(self, result: FrameResult) -> None:
        now = time.perf_counter()
        self._times = [t for t in self._times if now - t < 1.0] + [now]
        image = draw_overlay(result, self.faces, fps=len(self._times) if len(self._times) > 1 else None)
        if self.path.suffix.lower() == ".png":
            self._last = image
            return
        if self._writer is None:
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"cannot write video {self.path} (OpenCV has no mp4v encoder here?)")
        self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._last is not None:
            cv2.imwrite(str(self.path), self._last)
            self._last = None
