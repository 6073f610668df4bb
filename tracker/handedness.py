"""Tells a left hand from a right one: which of the two explanations fits the depth better.

The network knows only right hands; a left hand is cropped mirrored, which turns it into a
right hand. When the side is not given, the tracker crops the hand both ways, runs the
network and the refit on both, and scores each by how far the crop's hand points lie from
the refitted mesh. The wrong side can only be fitted by a mesh that is the mirror image
of the hand, which leaves the points further away.

One frame is a weak witness: a palm seen from the front looks much like the back of the
other hand seen from behind, and the two fits then differ by a millimetre or less. So the
evidence is accumulated over the frames of one track (a hand does not change side while
it is tracked): both sides are scored on the first frames of a track and then on every
``recheck_every``-th frame, and the side is the sign of the decaying sum of the score
differences. A lost track starts afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from tracker.types import CameraIntrinsics, HandCrop, Handedness


@dataclass(frozen=True)
class HandednessConfig:
    #: Frames at the start of a track on which both sides are scored.
    initial_frames: int = 8
    #: Afterwards, both sides are scored again on every n-th frame of the track.
    recheck_every: int = 15
    #: One frame's score difference counts at most this much (mm): a single bad fit (a
    #: segmentation slip, a fist) must not outvote several ordinary frames.
    max_frame_evidence_mm: float = 4.0
    #: Weight kept by earlier evidence per scored frame, so that a wrong early decision
    #: can still be overturned in a long track.
    decay: float = 0.95


def crop_points_cam(crop: HandCrop, intrinsics: CameraIntrinsics, hand_probability: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) float64 camera-frame points (metres) of the crop pixels inside the cube.

    With ``hand_probability`` ((S, S), the network's hand mask), only the pixels it takes
    for hand, unless that leaves too few to judge by.
    """
    inside = crop.depth < 1.0
    if hand_probability is not None:
        hand = inside & (hand_probability > 0.5)
        if hand.sum() >= 20:
            inside = hand
    rows, cols = np.nonzero(inside)
    image = crop.image_from_crop @ np.stack([cols, rows, np.ones_like(rows)]).astype(np.float64)
    z = float(crop.center_cam_m[2]) + crop.depth[rows, cols].astype(np.float64) * (crop.cube_size_m / 2)
    return np.stack([(image[0] - intrinsics.cx) / intrinsics.fx * z, (image[1] - intrinsics.cy) / intrinsics.fy * z, z], axis=1)


def fit_residual_mm(points_cam_m: np.ndarray, vertices_cam_m: np.ndarray) -> float:
    """Median distance (mm) from the observed points to the nearest mesh vertex (inf if none).

    Nearest vertex rather than nearest surface: the vertex spacing (a few mm) adds about the
    same amount to both sides' scores, and the tree over 1159 vertices costs well under 1 ms.
    """
    if len(points_cam_m) == 0:
        return float("inf")
    return float(np.median(cKDTree(vertices_cam_m).query(points_cam_m)[0]) * 1000.0)


class HandednessVote:
    """The accumulated left/right evidence of one track."""

    def __init__(self, config: HandednessConfig = HandednessConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        #: Positive: right fits better. Millimetres, decayed.
        self.evidence_mm = 0.0
        self.scored_frames = 0
        self.track_frames = 0

    @property
    def handedness(self) -> Handedness:
        return Handedness.RIGHT if self.evidence_mm >= 0.0 else Handedness.LEFT

    def next_frame_needs_both(self) -> bool:
        """Call once per tracked frame: whether this frame scores both sides."""
        index = self.track_frames
        self.track_frames += 1
        return index < self.config.initial_frames or index % self.config.recheck_every == 0

    def add(self, right_residual_mm: float, left_residual_mm: float) -> Handedness:
        """Add one frame's two scores; returns the side now believed."""
        difference = left_residual_mm - right_residual_mm
        if not np.isfinite(difference):
            return self.handedness  # one side saw no points: no evidence either way
        limit = self.config.max_frame_evidence_mm
        self.evidence_mm = self.config.decay * self.evidence_mm + float(np.clip(difference, -limit, limit))
        self.scored_frames += 1
        return self.handedness
