"""Finds the hand in a depth frame without ground truth: peel objects off from near to far,
judge each on metric properties, forearm cut, 3-D mean-shift.

The hand held towards a depth camera is, as a rule, the nearest object in view, but not
always: the other arm, a shoulder or a chair back reaching in from the image border can be
nearer. So objects are peeled off from near to far, one per step (at most ``max_steps``),
and each is judged before it may count as the hand.

1. Candidate: the valid points within ``depth_band_m`` behind the nearest remaining depth (a
   low percentile, so speckle does not decide), split where neighbouring depths jump by more
   than ``continuation_m`` (a hand a few centimetres in front of a wall is not one surface
   with it; further than ``continuation_from_m``, by more than a step that grows with the
   depth), and of those the 8-connected blob that holds the nearest points. Points with
   no neighbour on their surface (flying pixels) are dropped up front, and blobs too small
   to be even part of a hand in the same step, so speckle cannot use up the steps. A blob
   judged too big or too attached (below) is tried once more with half the band, which
   parts a hand held just in front of the body from it; one still too big or too attached
   that lies mostly in one plane (a wall, a table) gives what stands out of that plane by
   ``min_relief_m`` or more, with the plane just outside its outline: a hand touching it or
   a few centimetres in front of it. A body's front, no plane, is fitted as a smooth curved
   surface grown from the plane's strip of it, over the whole candidate or else over its
   part near its front. The candidate is then removed and the next step looks behind it.
2. Judgement, in metres from the pinhole back-projection, so the same at every distance.
   NOT_HAND, skipped:
   - visible area above ``max_hand_area_m2`` (more than hand, forearm and upper arm): a
     torso, wall or table;
   - attached along more than ``max_attachment_m`` of its outline. A hand hangs on the rest
     of the scene only by the forearm, so only about a forearm's width of its outline may be
     cut rather than free: in contact with the image border (within ``border_px``), or where
     its surface runs on without a jump behind the band, or into pixels set aside unjudged
     (the band behind a front of jump edges, step 1's speckle-and-edges case). A piece of a torso or of the other
     arm is cut along a much longer outline;
   - its surface runs on into a nearer candidate: it is that candidate's continuation (a
     forearm behind its hand, a torso behind a shoulder), not a new object. Along more
     than ``max_attachment_m`` it counts as too attached as well (the next slice of a desk
     seen along it, which a hand may rest on).
   ALONG_SIDE, the last resort: attached too long only for lying along a side of the image
   (the border zone) while no wider than ``max_border_contact_m`` and running on behind
   the band less than ``min_border_reach_m``: a hand near that side with its forearm
   hanging down along it, which is taken only where nothing else may be the hand and no
   hand is tracked (the crop classifier then tells it from the other arm or a torso's
   edge, which look the same here).
   PARTIAL, at most part of a hand, kept in reserve:
   - entering the image along more than ``max_border_contact_m`` of the border: wider than
     an arm coming in, so a hand lying along the border or something bigger;
   - visible area below ``min_hand_area_m2`` (a fist or a hand edge-on shows more);
   - cut by the image border, with less than ``min_border_reach_m`` (about a hand length)
     of it reaching in from the cut.
   Otherwise HAND.
3. Choice: the first HAND wins. A PARTIAL wins only if no HAND follows within
   ``depth_band_m`` behind it: a fragment just in front of a whole hand is not the hand,
   but a hand cut by the border or seen edge-on, with nothing hand-like beside it, is.
   With the last hand centre (``previous_center``), a candidate within ``prior_radius_m`` of
   it wins first (HAND before PARTIAL), so a tracked hand is not taken over by a hand-like
   object appearing in front of it; failing that, the choice above.
   A candidate whose surface runs on behind its band is followed up to ``grow_band_m``
   behind its front, if that makes it no worse a hand: a forearm reaching away from the
   camera would otherwise be cut off from its own hand, and stand in for it.
   PARTIAL candidates in front of the chosen HAND and within ``part_gap_m`` of it join it:
   a hand held in front of its own wrist (a fist towards the camera, a forearm reaching
   away) is cut from its arm by the occluding edge, often in pieces too small to pass as a
   hand, and the arm alone would otherwise be chosen and cropped at its wrist end.
4. Centre: if the blob is elongated like a hand plus forearm it starts from its hand end:
   the end where the arm does not run on (out of the image, as forearms enter from the
   border, or on behind the band towards the elbow); of two ends more than
   ``arm_depth_span_m`` apart in depth, the nearer; when tracking, the end clearly nearer
   the last centre; with both ends cut or neither, the clearly wider one (a palm is wider
   than a wrist), then the one cut much less; else the nearer one. A 3-D mean-shift with a
   hand-sized kernel then settles on the hand's centre (the visible hand's centroid, where
   the network's training crops are centred), where the crop cube goes. Points weigh the
   surface area they see (~z^2), and from the hand end of an arm the centre moves at most
   ``hand_end_travel_m`` and sees only the last ``hand_span_m`` of the arm: counted by
   pixels, a nearer forearm outweighs the hand and draws the kernel down the arm, and even
   by area a forearm outweighs a hand seen edge-on or curled.

Candidates are found on a grid about ``grid_width_px`` wide (every 3rd pixel at 640 or
848 px), which keeps a frame at about a millisecond on one laptop-class core (the
``segment`` stage of ``benchmarks.pipeline_speed``); the metric thresholds do not depend on
it, and the SR305 palm tests hold at every 2nd pixel too. The per-candidate measures and
the mean-shift are numba kernels (``kernels.blobs``): as numpy steps, their call overhead
alone took as long again.
In a stream, ``track_hand_center`` passes the last centre down as the prior and, when
nothing is found, falls back on a mean-shift from it. ``hand_centre_candidates`` lists,
after the centre chosen, the other places the hand may be (the arm's other end, the other
candidates), for a crop classifier to choose among on a track's first frame
(``tracker.prepare.likeliest_hand``) and on a tracked frame whose place it denies.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import cKDTree

from kernels.background_plane import curve_surface, robust_plane
from kernels.blobs import blob_points, border_contacts, gaps_to_contact, label_sizes_and_front_votes, mean_shift, nearest_squared_distance, outline_cuts, tip_means
from kernels.depth_edges import depth_edges
from tracker.types import CameraIntrinsics


@dataclass(frozen=True)
class SegmentConfig:
    min_depth_m: float = 0.1
    max_depth_m: float = 1.5
    #: Points up to this far behind the nearest surface belong to the candidate object.
    depth_band_m: float = 0.15
    #: Radius of the mean-shift kernel: about half a hand length.
    kernel_radius_m: float = 0.08
    #: A blob longer than this along its main axis is a hand with its forearm.
    forearm_min_length_m: float = 0.22
    #: The hand centre sits about this far in from the hand end of the blob.
    hand_end_offset_m: float = 0.07
    #: From there the mean-shift may move the centre at most this far: further, the
    #: forearm's larger visible area draws it down the arm (a hand seen edge-on).
    hand_end_travel_m: float = 0.04
    #: And it sees only the points this far from the hand end (a hand is ~19 cm long, its
    #: visible centroid ~8 cm in from the fingertips): within the kernel's reach the forearm
    #: would still pull the centre those 4 cm towards the wrist.
    hand_span_m: float = 0.15
    #: Two ends of an arm this far apart in depth, both cut or neither: the nearer is the
    #: hand's. More than a forearm's length: the blob holds the upper arm too, so it is an
    #: arm reaching away from the body, towards the camera.
    arm_depth_span_m: float = 0.27
    #: Fewer points than this (on the candidate grid) is "no hand in view".
    min_points: int = 60
    #: Narrower blobs are not even part of a hand (a finger is some 15 mm wide).
    min_width_m: float = 0.008
    max_points: int = 4000
    iterations: int = 15
    #: Pixels from the image edge that count as "touching the border": depth cameras lose
    #: the outermost pixels (matching window, projector coverage), ~2 % of the width.
    border_px: int = 12
    #: Neighbouring points closer in depth than this lie on one surface; a larger jump is an
    #: occluding edge. A surface seen at up to ~80 degrees stays below it on the grid.
    continuation_m: float = 0.03
    #: ... up to this depth; further, between grid points of which the nearer is at depth z,
    #: ``continuation_m * z / continuation_from_m``. The grid's points lie further apart with
    #: the depth, so a slanted surface steps further between them, and a stereo camera's noise
    #: grows faster still: at 1.2-1.4 m the steep sides of a hand (fingers pointing at the
    #: camera) jumped by more than 3 cm, and the hand fell apart into pieces smaller than a
    #: hand with no centre. On 100 tuning poses as a track's first frame, none was found on 3 %
    #: at 1.2 m and 11 % at 1.4 m; scaled from 0.84 m (80 degrees on the grid of a 640-pixel
    #: image) on 3 % at 1.4 m; from 0.7 or 0.5 m, on none.
    continuation_from_m: float = 0.7
    #: Smallest visible area of a whole hand: a fist shows ~60 cm^2, a flat hand edge-on
    #: ~18 x 2.5 cm. Smaller blobs may be part of a hand (PARTIAL: still used if nothing better).
    min_hand_area_m2: float = 0.004
    #: Smaller than this is not even part of a hand worth cropping: speckle.
    min_part_area_m2: float = 0.0005
    #: Largest visible area of a hand with its forearm and upper arm (~180 + 200 + 300 cm^2).
    max_hand_area_m2: float = 0.08
    #: A blob cut by the image border needs this much of it reaching in from the cut to hold a
    #: whole hand.
    min_border_reach_m: float = 0.10
    #: A blob entering the image wider than this is not an arm coming in (~6-12 cm across,
    #: more if oblique): at most part of a hand lying along the border.
    max_border_contact_m: float = 0.15
    #: Longest cut outline (image border, plus surface running on behind the band) a hand can
    #: have: it hangs on the scene only by its arm, which may be cut twice (entering the image,
    #: leaving the band), each cut ~6-12 cm across, ragged and perhaps oblique.
    max_attachment_m: float = 0.30
    #: A blob running on into a nearer candidate along more than this is its continuation
    #: (a few pixels' contact is noise).
    min_join_m: float = 0.02
    #: A candidate too big or too attached at ``depth_band_m`` is tried once more with half the
    #: band, if that is no narrower than this (a hand's own depth relief is a few centimetres).
    min_band_m: float = 0.05
    #: Candidates judged per frame at most (bounds the work on cluttered frames).
    max_steps: int = 6
    #: With a prior, a candidate within this distance of the last centre is the tracked hand:
    #: a hand moves a few centimetres between frames.
    prior_radius_m: float = 0.10
    #: An end of an arm this much nearer the last centre than the other is the hand's.
    prior_end_margin_m: float = 0.05
    #: Of an arm's two ends, one this many times as wide as the other is the hand's: a palm is
    #: 7-9 cm across and more with the fingers spread, the forearm near the wrist 5-6 cm.
    #: Closer than that (a fist, a hand edge-on, a tapering arm) the width says nothing.
    wider_end_ratio: float = 1.2
    #: The length of an arm's end whose width is compared (a hand is ~19 cm long).
    end_length_m: float = 0.12
    #: Candidates are searched on a grid about this many pixels wide.
    grid_width_px: int = 213
    #: A candidate whose surface runs on behind its band is followed this far behind its front
    #: (a forearm pointing away from the camera, with the hand at its far end: ~25 + 20 cm).
    grow_band_m: float = 0.45
    #: A PARTIAL candidate in front of the chosen hand and this close to it (3-D, nearest
    #: points) is part of it, cut off by an occluding edge (see the module docstring).
    #: Within ``continuation_m``: the pieces of a hand in front of its wrist measured
    #: 0.6-2.5 cm apart.
    part_gap_m: float = 0.03
    #: A candidate that stays too big or too attached at half the band, and lies mostly in
    #: one plane (a wall, a table, a screen), gives the blob standing out of that plane by
    #: this much or more as the candidate instead: a hand a few centimetres in front of it
    #: (its fingers' thickness). 0: never.
    min_relief_m: float = 0.015
    #: ... where at least this share of its points lie within ``min_relief_m`` of the plane,
    min_plane_share: float = 0.6
    #: ... spread about it by no more than this (RMS): a wall or table with the camera's
    #: noise; a torso or a room is no plane.
    max_plane_rms_m: float = 0.006
    #: Planes through three of its points tried, for the one the most points lie near,
    relief_hypotheses: int = 48
    #: ... then refitted without the points standing out, at most this many times.
    relief_fit_rounds: int = 5
    #: A candidate whose plane holds too little of it, or too loosely, may be a body's front
    #: with a hand resting on it: the plane is grown into the curved surface it is a strip
    #: of, so many rounds at most (``tracker.crop.BackgroundPlane.curved_rounds``; 0: planes
    #: only), and what stands out of that is looked at as out of a plane,
    relief_curved_rounds: int = 30
    #: ... a surface bending towards the camera no more than a sphere this big.
    relief_min_concave_radius_m: float = 1.0
    #: Where neither holds the whole candidate, its part within this distance of its front
    #: (its nearest points, 3-D) is looked at alone: a torso's front, over a hand's length
    #: around a hand resting on it, is close enough to a quadratic where the whole torso,
    #: curving away to its sides, is not: on 200 tuning scenes resting on a torso, no hand
    #: was found in 4.5 % without it and in 2 % with it
    #: (``benchmarks/results/near_body_tuning_local_fit.json``, ``..._before_local_fit.json``).
    #: 0: never.
    relief_local_radius_m: float = 0.2


def percentile(values: np.ndarray, q: float):
    """``np.percentile(values, q)`` (linear interpolation) of a non-empty 1-D array of finite
    values, to the last bit, for a fraction of the cost: np.percentile spends ~0.1 ms on
    bookkeeping per call, and segmentation calls it several times a frame."""
    n = values.size
    if n == 0:
        return np.percentile(values, q)  # its own answer for the empty case
    virtual = (n - 1) * (q / 100)
    if virtual >= n - 1:
        return values.max()
    below = math.floor(virtual)
    gamma = virtual - below
    lower, upper = np.partition(values, (below, below + 1))[below : below + 2]
    # np.percentile's interpolation, in the array's precision: from the nearer neighbour.
    step = upper - lower
    return upper - step * (1 - gamma) if gamma >= 0.5 else lower + step * gamma


def pixels_of(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero(mask)`` of a 2-D mask (rows, columns; row-major order), the same arrays:
    numpy's 2-D nonzero costs ~0.1 ms on a candidate grid, ten times the flat one."""
    return np.divmod(np.flatnonzero(mask), mask.shape[1])


def back_project(depth_m: np.ndarray, intrinsics: CameraIntrinsics, mask: np.ndarray) -> np.ndarray:
    """(N, 3) float64 camera-frame points of the masked pixels (pinhole)."""
    v, u = pixels_of(mask)
    z = depth_m[v, u].astype(np.float64)
    return np.stack([(u - intrinsics.cx) / intrinsics.fx * z, (v - intrinsics.cy) / intrinsics.fy * z, z], axis=1)


def _mean_shift(
    points: np.ndarray, start: np.ndarray, radius: float, config: SegmentConfig, max_travel_m: float | None = None
) -> np.ndarray | None:
    """Mean-shift from ``start``; with ``max_travel_m`` the centre stays within that of the start.
    Each point weighs the surface area it sees (~z^2): by pixel count, a nearer forearm would
    outweigh the hand behind it and draw the centre onto itself."""
    centre, found = mean_shift(
        np.ascontiguousarray(points, np.float64),
        np.ascontiguousarray(start, np.float64).reshape(3),
        float(radius),
        config.iterations,
        config.min_points // 2,
        -1.0 if max_travel_m is None else float(max_travel_m),
    )
    return centre if found else None


def _subsample(points: np.ndarray, n: int, *arrays):
    if len(points) <= n:
        return (points, *arrays)
    # Evenly spaced in scan order: spread over the whole blob, deterministic, and cheap.
    pick = np.linspace(0, len(points) - 1, n).astype(np.intp)
    return (points[pick], *(a[pick] for a in arrays))


#: Verdicts on a candidate, best first.
HAND, PARTIAL, ALONG_SIDE, NOT_HAND = 0, 1, 2, 3
#: ``_Grid.taken_back`` of pixels set aside without being judged (``kernels.blobs.outline_cuts``).
SET_ASIDE = np.float32(-1.0)


@dataclass
class _Blob:
    """One candidate: camera-frame points of its grid pixels, the depth of its front, which
    points lie at a cut (the image border, or where the surface runs on behind the band),
    the verdict."""

    points: np.ndarray
    front_m: float
    cut: np.ndarray
    verdict: int = HAND
    reason: str = "hand-like"
    #: NOT_HAND for being too big or too attached: maybe merged with what it touches.
    merged: bool = False
    #: Length of outline where the surface runs on behind the band (metres).
    runs_on_m: float = 0.0
    #: Taken into the hand chosen: the candidate chosen, or a piece in front of it joined to
    #: it (``_with_parts_in_front``).
    taken: bool = False


class _Grid:
    """The frame sampled every ``step`` pixels, and what the candidates peeled off it took."""

    def __init__(self, depth_m: np.ndarray, intrinsics: CameraIntrinsics, config: SegmentConfig) -> None:
        self.config = config
        self.k = intrinsics
        self.step = max(1, int(depth_m.shape[1]) // max(1, config.grid_width_px))
        # Always a copy: it is edited below, and with step 1 (frames up to 425 px wide) a
        # view would edit the caller's frame, which the crop is cut from afterwards.
        self.depth = np.array(depth_m[:: self.step, :: self.step], dtype=np.float32, order="C", copy=True)
        # NaN fails both comparisons, so holes marked NaN are invalid like zeros.
        self.valid = (self.depth > config.min_depth_m) & (self.depth < config.max_depth_m)
        self.depth[~self.valid] = 0.0
        # Metric size of one grid pixel at depth 1 m (square pixels assumed for lengths).
        self.pixel_at_1m = self.step / np.sqrt(intrinsics.fx * intrinsics.fy)
        self.zone = max(1, -(-config.border_px // self.step))
        isolated, self.behind_edge = self._depth_edges()
        # A point with no neighbour on its surface is a flying pixel or speckle.
        self.valid &= ~isolated
        self.depth[isolated] = 0.0
        # Far face of the band of the candidate that took each pixel (0: none did;
        # SET_ASIDE: set aside behind a front of jump edges).
        self.taken_back = np.zeros(self.depth.shape, np.float32)

    def _depth_edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixels with no neighbour on their own surface (8-neighbourhood); and, among the
        rest, pixels on the far side of a depth jump to a neighbour, which are left out of
        the blobs to keep surfaces that only touch in the image apart."""
        return depth_edges(self.depth, self.valid, np.float32(self.config.continuation_m), np.float32(self.config.continuation_from_m))

    def candidates(self):
        """Yield candidate blobs from near to far, each judged."""
        c = self.config
        remaining = self.valid.copy()
        judged = 0
        # Steps that find only speckle cost little and clear at least 0.5 % of what remains,
        # but are bounded too.
        for _ in range(3 * c.max_steps):
            if judged == c.max_steps:
                return
            values = self.depth[remaining]
            if len(values) < c.min_points:
                return
            # A low percentile, not the minimum: flying pixels and speckle sit in front of all.
            nearest = float(percentile(values, 0.5))
            back = nearest + c.depth_band_m
            band = remaining & (self.depth < back)
            count, labels = cv2.connectedComponents((band & ~self.behind_edge).view(np.uint8), connectivity=8)
            # The blob holding the nearest points (not merely the biggest: that may be the body).
            sizes, votes = label_sizes_and_front_votes(labels, count, band, self.depth, np.float32(nearest + 0.02))
            # Too few pixels for even part of a hand were they all at the band's far face.
            tiny = sizes * (back * self.pixel_at_1m) ** 2 < c.min_part_area_m2
            tiny[0] = False
            if tiny.any():
                remaining &= ~np.take(tiny, labels)
            front_edges = votes[0] > 0  # band pixels at the front on the far side of a jump
            votes[0] = 0
            votes[tiny] = 0
            if votes.max() == 0:
                # Only speckle and jump edges at the front. Speckle alone: it went above, so
                # look again without it (a hand may lie right behind a thin layer of it). Jump
                # edges (the far side of an occluding edge, as behind the candidate just
                # taken): look behind them. Either way the nearest point goes, with the band
                # around it, except blobs in the band well apart from what was taken and from
                # those edges: a hand a few cm behind a line of edge pixels along a body.
                if front_edges:
                    at_front = band & (self.depth < nearest + 0.02)
                    taken_or_edge = ((self.taken_back > 0) | (at_front & (labels == 0))).view(np.uint8)
                    beside = cv2.dilate(taken_or_edge, None, iterations=2).view(bool)
                    touching = np.unique(labels[beside & band])
                    apart = band & (labels > 0) & ~np.isin(labels, touching)
                    remaining &= ~(band & ~apart)
                    # Set aside, not judged: a later candidate whose surface runs on into it
                    # is cut off there, not free. Counted as free, the far rim of a torso
                    # whose front was set aside here (the front lay beside an arm's edge) had
                    # an outline short enough to pass as a hand.
                    self.taken_back[band & ~apart] = SET_ASIDE
                continue
            mask = labels == int(np.argmax(votes))
            blob = self._judge(mask, back)
            if blob.merged and c.depth_band_m / 2 >= c.min_band_m:
                # Too big or too attached: perhaps a hand held just in front of a torso or
                # a wall, one surface with it at this band. Its front part alone may be the
                # hand; if so, the rest is left to be peeled off later.
                back = nearest + c.depth_band_m / 2
                front = remaining & (self.depth < back) & ~self.behind_edge
                count, labels = cv2.connectedComponents(front.view(np.uint8), connectivity=8)
                votes = np.bincount(labels[front & (self.depth < nearest + 0.02)], minlength=count)
                votes[0] = 0
                if votes.max() > 0:
                    part = labels == int(np.argmax(votes))
                    part_blob = self._judge(part, back)
                    # Only a front part that may be the hand itself: one lying along a side
                    # of the image in front of a torso is the torso's edge.
                    if part_blob.verdict in (HAND, PARTIAL):
                        mask, blob = part, part_blob
                if blob.merged and c.min_relief_m > 0:
                    # Still one surface with what it touches: a hand a few centimetres in
                    # front of a wall or flat on a table. What stands out of that plane.
                    relief = self._standing_out(mask)
                    if relief is not None:
                        relief_blob = self._judge(relief, nearest + c.depth_band_m)
                        if relief_blob.verdict in (HAND, PARTIAL):
                            mask, blob = relief, relief_blob
            elif blob.verdict != NOT_HAND and blob.runs_on_m > c.min_join_m and c.grow_band_m > c.depth_band_m:
                mask, blob, back = self._follow_behind_band(mask, blob, back, nearest, remaining)
            remaining &= ~mask
            self.taken_back[mask] = back
            judged += 1
            yield blob

    def _standing_out(self, mask: np.ndarray) -> np.ndarray | None:
        """Of a candidate too big or too attached, the blob standing out of the plane or
        the body's front it mostly lies in (``_standing_out_of_surface``), or else out of
        that of its part near its front (``relief_local_radius_m``): (grid) mask, or None."""
        part, held = self._standing_out_of_surface(mask)
        radius = self.config.relief_local_radius_m
        if held or radius <= 0:
            return part
        k = self.k
        gv, gu, points, _, _, _ = blob_points(mask, self.depth, self.step, k.fx, k.fy, k.cx, k.cy, self.pixel_at_1m, self.zone)
        if len(points) < 3:
            return None
        z = points[:, 2]
        front = points[z <= percentile(z, 1)].mean(axis=0)
        near = np.sum((points - front) ** 2, axis=1) < radius * radius
        if near.all():
            return None  # the same candidate, which no surface held
        local = np.zeros(mask.shape, bool)
        local[gv[near], gu[near]] = True
        return self._standing_out_of_surface(local)[0]

    def _standing_out_of_surface(self, mask: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """Of a candidate too big or too attached, the blob standing out of the plane or
        the body's front it mostly lies in, holding the nearest points: (grid) mask, or None
        where the candidate is neither (a room) or nothing stands out of it; and whether a
        surface held the candidate (``_holds``).

        A plane's inverse depth is linear in the pixel coordinates. The plane is the one
        within ``min_relief_m`` of the most points among ``relief_hypotheses`` through three
        of them, refitted by least squares to those points until they stay the same
        (``kernels.background_plane.robust_plane``). A least-squares fit over the whole
        candidate would be drawn towards the hand by the hand's own share of it: a slice of
        a desk seen along it, with a hand and forearm resting on it, is a quarter hand.
        Where that plane holds too little of the candidate, or too loosely, it is grown into
        the curved surface it is a strip of (``kernels.background_plane.curve_surface``): a
        torso's front, smooth over much more than a hand's width."""
        c = self.config
        gv, gu = pixels_of(mask)
        z = self.depth[gv, gu].astype(np.float64)
        if len(z) < 3:
            return None, False
        # Scored on at most ~500 points spread over the candidate, as a wall fills much of the grid.
        _, _, _, on_surface, relief, found = robust_plane(
            gu.astype(np.float64), gv.astype(np.float64), z, np.arange(len(z)), (self.depth.shape[1] - 1) / 2.0, c.min_relief_m,
            c.relief_hypotheses, c.relief_fit_rounds, max(1, len(z) // 500), 0.0, 0.0, True,
        )
        if not found:
            return None, False
        if not self._holds(on_surface, relief) and c.relief_curved_rounds > 0:
            # No plane: perhaps a body's front, of which the plane holds a strip.
            centre = (self.depth.shape[1] - 1) / 2.0
            across = centre * self.pixel_at_1m
            _, on_surface, relief, found = curve_surface(
                gu.astype(np.float64), gv.astype(np.float64), z, on_surface, centre, centre, c.min_relief_m, c.relief_curved_rounds, True,
                across * across / (2.0 * c.relief_min_concave_radius_m),
            )
        if not found or not self._holds(on_surface, relief):
            return None, False
        out = np.zeros(mask.shape, bool)
        out[gv[relief >= c.min_relief_m], gu[relief >= c.min_relief_m]] = True
        count, labels = cv2.connectedComponents(out.view(np.uint8), connectivity=8)
        if count < 2:
            return None, True
        nearest = float(np.min(self.depth[out]))
        votes = np.bincount(labels[out & (self.depth < nearest + 0.02)], minlength=count)
        votes[0] = 0
        part = labels == int(np.argmax(votes))
        # A hand stands out of a wall with an edge: just outside its outline lies the wall.
        # The front of a rounded surface (a torso) that a plane fits well enough rises out
        # of it gradually, its outline just under the threshold.
        relief_map = np.full(mask.shape, np.nan)
        relief_map[gv, gu] = relief
        # A grid pixel out, past the pixels the camera blends at the edge.
        near = cv2.dilate(part.view(np.uint8), None).view(bool)
        ring = cv2.dilate(near.view(np.uint8), None).view(bool) & ~near & mask
        if not ring.any() or np.median(relief_map[ring]) > c.min_relief_m / 2:
            return None, True
        return part, True

    def _holds(self, on_surface: np.ndarray, relief: np.ndarray) -> bool:
        """Whether a surface fitted to a candidate holds enough of it, closely enough, for
        what stands out of it to be looked at."""
        c = self.config
        count = np.count_nonzero(on_surface)
        return count >= max(c.min_plane_share * len(relief), 1) and np.sqrt(np.mean(relief[on_surface] ** 2)) <= c.max_plane_rms_m

    def _follow_behind_band(self, mask: np.ndarray, blob: _Blob, back: float, nearest: float, remaining: np.ndarray):
        """The candidate followed along its surface up to ``grow_band_m`` behind its front, if
        that is no worse a hand: a forearm reaching away from the camera leaves its hand behind
        the band, and the band's cut would make the forearm alone the candidate. A hand held
        towards the camera grows by its forearm at most (an upper arm and torso make the blob
        too big or too attached, and it stays as it was)."""
        grow_back = nearest + self.config.grow_band_m
        region = remaining & (self.depth < grow_back) & ~self.behind_edge
        _, labels = cv2.connectedComponents(region.view(np.uint8), connectivity=8)
        touched = np.zeros(int(labels.max()) + 1, bool)
        touched[labels[mask]] = True  # mask lies within region: no label 0 among them
        grown_mask = np.take(touched, labels) & region
        if np.count_nonzero(grown_mask) <= np.count_nonzero(mask):
            return mask, blob, back
        grown = self._judge(grown_mask | mask, grow_back)
        if grown.verdict > blob.verdict:
            return mask, blob, back
        return grown_mask | mask, grown, grow_back

    def _judge(self, mask: np.ndarray, back_m: float) -> _Blob:
        c, k = self.config, self.k
        h, w = self.depth.shape
        gv, gu, points, at_edge, area, across_variance = blob_points(
            mask, self.depth, self.step, k.fx, k.fy, k.cx, k.cy, self.pixel_at_1m, self.zone
        )
        blob = _Blob(points, float(percentile(points[:, 2], 2)), at_edge)
        if area > c.max_hand_area_m2:
            blob.verdict, blob.reason, blob.merged = NOT_HAND, f"larger than an arm ({area * 1e4:.0f} cm^2)", True
            return blob
        if area < c.min_part_area_m2:
            blob.verdict, blob.reason = NOT_HAND, f"speckle ({area * 1e4:.1f} cm^2)"
            return blob
        # Width across the blob's long axis in the image plane (a uniform strip's is
        # sqrt(12) standard deviations): a line of edge pixels along a body's outline can have
        # the area of part of a hand, but even one finger seen alone is wider.
        width = float(np.sqrt(12.0 * across_variance))
        if width < c.min_width_m:
            blob.verdict, blob.reason = NOT_HAND, f"a sliver {width * 1000:.0f} mm wide"
            return blob

        # The outline: a pixel just outside whose depth is within continuation_m of its
        # neighbour inside continues the blob's surface. Behind the band's far face the blob
        # is cut off there; into a nearer candidate, the blob continues that candidate.
        y0, y1 = max(int(gv.min()) - 1, 0), min(int(gv.max()) + 2, h)
        x0, x1 = max(int(gu.min()) - 1, 0), min(int(gu.max()) + 2, w)
        # Contiguous copies, always: a window the grid's full width would be contiguous
        # already, another type to numba, compiled anew mid-run the first time one comes.
        inside = np.ascontiguousarray(mask[y0:y1, x0:x1])
        into_nearer, behind_band, runs_on = outline_cuts(
            inside,
            np.ascontiguousarray(self.depth[y0:y1, x0:x1]),
            np.ascontiguousarray(self.taken_back[y0:y1, x0:x1]),
            np.float32(c.continuation_m),
            np.float32(back_m),
        )
        join_m = into_nearer * self.pixel_at_1m
        if join_m > c.min_join_m:
            blob.verdict, blob.reason = NOT_HAND, f"continues a nearer candidate along {join_m * 100:.0f} cm"
            # Along more than an arm's attachment: the next band's slice of a surface that
            # runs on from the last, a desk seen at a slant, which a hand may rest on.
            blob.merged = join_m > c.max_attachment_m
            return blob
        cut_m = blob.runs_on_m = behind_band * self.pixel_at_1m
        # Blob points within the border zone's width of such a cut are at the cut, too.
        near_cut = cv2.dilate(runs_on, None, iterations=self.zone).view(bool)
        blob.cut = blob.cut | near_cut[inside]  # row-major order, as the points

        # Contact with the image border: its length along the edges, and how far the blob
        # reaches from where it is cut off (3-D distance to the nearest contact point).
        reach, contact_m, side_contact_m = np.inf, 0.0, 0.0
        if np.count_nonzero(at_edge) >= 2:
            lengths = border_contacts(gv, gu, points[:, 2].copy(), self.pixel_at_1m, self.zone, h, w)
            contact_m = float(lengths.sum())
            side_contact_m = float(max(lengths[2], lengths[3]))
            cut_m += contact_m
            reach = float(np.sqrt(percentile(gaps_to_contact(points, at_edge, 256, 64), 98)))
        if cut_m > c.max_attachment_m and cut_m - side_contact_m <= c.max_attachment_m and width < c.max_border_contact_m and blob.runs_on_m < c.min_border_reach_m:
            # Lying along a side of the image, narrow as an arm: a hand near that side with
            # its forearm hanging down along it, or the other arm, or a torso's edge.
            # Its front part alone may be a better hand, as for a blob too attached (merged).
            blob.verdict, blob.reason, blob.merged = ALONG_SIDE, f"lies along a side of the image ({side_contact_m * 100:.0f} cm)", True
        elif cut_m > c.max_attachment_m:
            blob.verdict, blob.reason, blob.merged = NOT_HAND, f"attached along {cut_m * 100:.0f} cm of outline", True
        elif contact_m > c.max_border_contact_m:
            blob.verdict, blob.reason = PARTIAL, f"enters the image {contact_m * 100:.0f} cm wide"
        elif area < c.min_hand_area_m2:
            blob.verdict, blob.reason = PARTIAL, f"smaller than a hand ({area * 1e4:.0f} cm^2)"
        elif reach < c.min_border_reach_m:
            blob.verdict, blob.reason = PARTIAL, f"cut by the image border, reaches {reach * 100:.0f} cm in"
        return blob


def _choose(candidates, prior: np.ndarray | None, config: SegmentConfig, seen: list[_Blob] | None = None) -> _Blob | None:
    """The hand among the candidates (near to far), by the rule in the module docstring,
    with the pieces of it that lie in front joined to it. ``seen``: filled with the
    candidates taken from ``candidates`` on the way, in their order."""
    seen = [] if seen is None else seen

    def recorded():
        for blob in candidates:
            seen.append(blob)
            yield blob

    chosen = _pick(recorded(), prior, config)
    if chosen is not None:
        chosen.taken = True
    if chosen is None or chosen.verdict != HAND:
        return chosen
    before = next(i for i, blob in enumerate(seen) if blob is chosen)
    return _with_parts_in_front(chosen, [blob for blob in seen[:before] if blob.verdict == PARTIAL], config)


def _with_parts_in_front(blob: _Blob, parts: list[_Blob], config: SegmentConfig) -> _Blob:
    """``blob`` joined by those of ``parts`` (nearer candidates) within ``part_gap_m`` of it."""
    if not parts:
        return blob
    tree = cKDTree(blob.points)
    joined = [
        part for part in parts
        if np.isfinite(tree.query(part.points, k=1, distance_upper_bound=config.part_gap_m)[0]).any()
    ]
    if not joined:
        return blob
    for part in joined:
        part.taken = True
    merged = _Blob(
        np.concatenate([blob.points] + [part.points for part in joined]),
        min([blob.front_m] + [part.front_m for part in joined]),
        np.concatenate([blob.cut] + [part.cut for part in joined]),
    )
    merged.reason = f"{blob.reason}, with {len(joined)} piece(s) in front"
    merged.runs_on_m = blob.runs_on_m
    return merged


def _pick(candidates, prior: np.ndarray | None, config: SegmentConfig) -> _Blob | None:
    partial = fresh = tracked_partial = along_side = None
    for blob in candidates:
        if fresh is None and partial is not None and blob.front_m > partial.front_m + config.depth_band_m:
            fresh = partial  # no whole hand right behind the partial one
        # This and everything further on lies behind the tracked hand: without a prior, or
        # with nothing found near it, the choice without a prior stands (or is still to come).
        near_prior = prior is not None and blob.front_m <= prior[2] + config.prior_radius_m
        if not near_prior and (tracked_partial or fresh) is not None:
            return tracked_partial or fresh
        if blob.verdict == NOT_HAND:
            continue
        if blob.verdict == ALONG_SIDE:
            # The last resort, and only for a fresh search: tracking, the fallback on the last
            # centre follows a hand along the side.
            if prior is None and along_side is None:
                along_side = blob
            continue
        if near_prior:
            if nearest_squared_distance(blob.points, max(1, len(blob.points) // 2000), prior) < config.prior_radius_m**2:
                if blob.verdict == HAND:
                    return blob
                tracked_partial = tracked_partial or blob
        if fresh is None:
            if blob.verdict == HAND:
                fresh = blob
                if not near_prior:
                    return fresh
            elif partial is None:
                partial = blob
    return tracked_partial or fresh or partial or along_side


def _wider_end(points: np.ndarray, mean: np.ndarray, main_axis: np.ndarray, along: np.ndarray, config: SegmentConfig) -> float | None:
    """Which end of an arm (+1: the end at ``along.max()``, -1: the one at ``along.min()``)
    is clearly the wider, by ``wider_end_ratio``; None if neither is. An end's width: how far
    the points of its last ``end_length_m`` reach out from the line through their centroid
    along ``main_axis`` (the 90th percentile of their distance from it, in 3-D, so a hand
    turned about the arm counts as wide as one facing the camera)."""
    widths = []
    for sign in (1.0, -1.0):
        end = sign * along > (sign * along).max() - config.end_length_m
        across = points[end] - mean - np.outer(along[end], main_axis)
        across -= across.mean(axis=0)
        widths.append(float(percentile(np.sqrt(np.einsum("ij,ij->i", across, across)), 90)))
    if max(widths) <= config.wider_end_ratio * min(widths):
        return None
    return 1.0 if widths[0] > widths[1] else -1.0


def _hand_centres(blob: _Blob, config: SegmentConfig, prior: np.ndarray | None = None):
    """Yield the blob's hand centre; on an arm (a blob longer than ``forearm_min_length_m``),
    then the centre at its other end. Nothing where too few points are left or the
    mean-shift finds none at the hand's end."""
    points, cut = _subsample(blob.points, config.max_points, blob.cut)
    if len(points) < config.min_points:
        return
    mean = points.mean(axis=0)
    centred = points - mean
    main_axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
    along = centred @ main_axis
    if along.max() - along.min() <= config.forearm_min_length_m:
        centre = _mean_shift(points, mean, config.kernel_radius_m, config)
        if centre is not None:
            yield centre
        return
    sign = _hand_end(points, cut, along, mean, main_axis, config, prior)
    for end in (sign, -sign):
        extreme = along.max() if end > 0 else along.min()
        start = mean + main_axis * (extreme - end * config.hand_end_offset_m)
        # On an arm the kernel always holds more forearm than fingers and would slide down
        # it: the centre may settle anywhere near the hand end, but not leave it, and sees
        # only the hand's length of the arm.
        hand = end * along > end * extreme - config.hand_span_m
        near_end = points[hand] if np.count_nonzero(hand) >= config.min_points else points
        centre = _mean_shift(near_end, start, config.kernel_radius_m, config, config.hand_end_travel_m)
        if centre is None:
            return  # no centre at the hand's end: the other end does not stand in for it
        yield centre


def _hand_end(points: np.ndarray, cut: np.ndarray, along: np.ndarray, mean: np.ndarray, main_axis: np.ndarray, config: SegmentConfig, prior: np.ndarray | None) -> float:
    """Which end of an arm is its hand's: +1 the end at ``along.max()``, -1 the other."""
    ends, to_prior = [], []
    for sign in (1.0, -1.0):
        # The tip: the last 10 % of the blob.
        cut_share, tip_mean = tip_means(points, cut, along, sign, float(percentile(sign * along, 90)))
        ends.append((cut_share, float(tip_mean[2]), sign))
        if prior is not None:
            to_prior.append(float(np.linalg.norm(tip_mean - prior)))
    # At the forearm's end the arm runs on, out of the image or behind the band: prefer
    # the end where it does not. With both ends cut (fingers touch the border too) or
    # neither, the clearly wider end is the hand's, then the one cut much less, then the
    # nearer one. Width comes after one end alone being cut: where the arm widens
    # towards the shoulder near the border, its end can be the wider. With both ends cut
    # it comes before how much they are: fingers at the border are cut along much of
    # their end, and on 1000 held-out frames width chose the better end more often. The
    # price: a wide end cut much more than the other (a shoulder) now wins.
    # When tracking, the end clearly nearer where the hand was last time wins over both:
    # an arm with neither end cut (or both) is otherwise a guess. Not on a short blob,
    # though, whose ends are both about as near: a centre that drifted towards the
    # wrist would flip the choice onto the forearm's end and keep it there.
    # Of two ends far apart in depth, both cut or neither, the nearer is the hand's, even
    # against the last centre (which may have locked onto the wrong end): the arm reaches
    # away from the camera towards the body, and the hand is big and near enough to touch
    # the border.
    (cut_a, z_a, _), (cut_b, z_b, _) = ends
    far_apart = abs(z_a - z_b) > config.arm_depth_span_m
    if far_apart and (cut_a > 0.05) == (cut_b > 0.05):
        return min(ends, key=lambda end: end[1])[-1]
    if to_prior and min(to_prior) < config.prior_radius_m and abs(to_prior[0] - to_prior[1]) > config.prior_end_margin_m:
        return ends[int(np.argmin(to_prior))][-1]
    if (cut_a > 0.05) != (cut_b > 0.05):
        return min(ends)[-1]
    if (wider := _wider_end(points, mean, main_axis, along, config)) is not None:
        return wider
    if cut_a > 0.05 and abs(cut_a - cut_b) > 0.1:
        return min(ends)[-1]
    return min(ends, key=lambda end: end[1])[-1]


def find_hand_center(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    config: SegmentConfig = SegmentConfig(),
    previous_center: np.ndarray | None = None,
) -> np.ndarray | None:
    """(3,) float64 hand centre in the camera frame (metres), or None if nothing hand-like is near.

    ``previous_center``: the last hand centre when tracking; a candidate near it is
    preferred over a nearer one.
    """
    return next(hand_centre_candidates(depth_m, intrinsics, config, previous_center), None)


def hand_centre_candidates(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    config: SegmentConfig = SegmentConfig(),
    previous_center: np.ndarray | None = None,
):
    """Yield (3,) float64 camera-frame centres (metres) where the hand may be, the likeliest
    first: ``find_hand_center``'s answer, then, for a crop classifier to choose among, the
    other end of that arm, then the centres of the other candidates that may be a hand or
    part of one: those peeled off before it (and not joined to it), then the rest, near to
    far, as they are peeled off (``max_steps`` candidates in all). A centre within half the
    kernel's radius of one given already is skipped: its crop would show much the same.

    The geometric rules pick the wrong place now and then, where nothing in the depth alone
    tells them better: the forearm's end of an arm whose ends are cut alike, or a fragment
    of the other arm in front of the hand. Each further centre costs only when asked for.
    """
    depth_m = np.asarray(depth_m)
    if depth_m.ndim != 2 or depth_m.size == 0:
        return
    # Contiguous, whatever the caller holds it in: one array type for the kernels it goes to.
    prior = None if previous_center is None else np.ascontiguousarray(previous_center, np.float64).reshape(3)
    if prior is not None and not np.all(np.isfinite(prior)):
        prior = None
    candidates = _Grid(depth_m, intrinsics, config).candidates()
    seen: list[_Blob] = []
    chosen = _choose(candidates, prior, config, seen)
    if chosen is None:
        return
    centres = _hand_centres(chosen, config, prior)
    first = next(centres, None)
    if first is None:
        return  # the chosen candidate has no centre: no hand found, whatever else is in view
    yield first
    given = [first]

    def new(places):
        for centre in places:
            if all(np.linalg.norm(centre - other) >= config.kernel_radius_m / 2 for other in given):
                given.append(centre)
                yield centre

    yield from new(centres)
    for blob in itertools.chain(seen, candidates):
        if blob.verdict != NOT_HAND and not blob.taken:
            yield from new(itertools.islice(_hand_centres(blob, config), 1))


def track_hand_center(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    previous_center: np.ndarray | None,
    config: SegmentConfig = SegmentConfig(),
) -> np.ndarray | None:
    """Hand centre in a tracked stream: detect afresh, preferring the hand near the last
    centre, and fall back on the last centre.

    Detection each frame keeps the forearm cut in force (a mean-shift seeded only from the
    last centre creeps down the forearm over a few frames); when detection finds nothing
    (a hand briefly behind the nearest object, a dropout) the mean-shift seeded from the
    previous centre keeps the hand.
    """
    centre = find_hand_center(depth_m, intrinsics, config, previous_center)
    if centre is not None or previous_center is None:
        return centre
    return hand_near_prior(depth_m, intrinsics, previous_center, config)


def hand_near_prior(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    previous_center: np.ndarray,
    config: SegmentConfig = SegmentConfig(),
) -> np.ndarray | None:
    """``track_hand_center``'s fallback where detection finds nothing: the mean-shift
    seeded from the last centre over the pixels near it in the image and in depth; None
    where too few are left."""
    depth_m = np.asarray(depth_m)
    previous_center = np.asarray(previous_center, np.float64)
    if not (np.all(np.isfinite(previous_center)) and previous_center[2] > config.min_depth_m):
        return None
    valid = (depth_m > config.min_depth_m) & (depth_m < config.max_depth_m) & (np.abs(depth_m - previous_center[2]) < config.depth_band_m)
    # Only pixels near the last centre's image position: a wall or body elsewhere at that
    # depth would otherwise fill the sample and leave the hand too few points.
    k = intrinsics
    u, v = k.fx * previous_center[0] / previous_center[2] + k.cx, k.fy * previous_center[1] / previous_center[2] + k.cy
    radius = 2.0 * config.kernel_radius_m * max(k.fx, k.fy) / previous_center[2]
    window = np.zeros_like(valid)
    window[max(0, int(v - radius)) : max(0, int(v + radius) + 1), max(0, int(u - radius)) : max(0, int(u + radius) + 1)] = True
    valid &= window
    # ``min_points`` counts points on the candidate grid, as detection does.
    step = max(1, int(depth_m.shape[1]) // max(1, config.grid_width_px))
    if valid[::step, ::step].sum() < config.min_points:
        return None
    points = _subsample(back_project(depth_m, intrinsics, valid), config.max_points)[0]
    return _mean_shift(points, np.asarray(previous_center, np.float64), config.kernel_radius_m, config)

