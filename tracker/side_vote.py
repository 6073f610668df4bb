"""Decides whether a tracked hand is a left or a right one, from the side classifier's
per-frame logits summed over the track.

One crop is a weak witness (the classifier is right on about 4 frames in 5 of a synthetic
sequence), but a hand does not change side while it is tracked, so the evidence adds up:
the decision is the sign of the mean logit since the track began. Each logit is clipped
first, so one confidently wrong frame (a fist seen end-on, a crop half on the forearm)
cannot outvote a run of moderate ones. The first frame decides alone; when the track is
lost, found far from where it was (``TrackerConfig.new_track_jump_m``), or when the
frames stop following on (``TrackerConfig.new_track_gap_ms``: a gap, a frame counter that
went back, another camera), the vote starts over, as the next hand found may be the other
one; except that a hand lost and found again within ``TrackerConfig.resume_side_within_ms``
(200 ms) near where it was lost takes up the vote it had.

Measured on 24 synthetic sequences (12 left, 12 right, 150 frames, crops where the live
segmentation puts them; ``python -m tracker.side_classifier evaluate``, stored in
``weights/side_classifier/side.json``): single frames 80 % right; the running decision 95 %
of all frames, 88 % at frame 30, 96 % at frame 60, and all 24 right at the end.

The tracker adds stronger evidence where it can (``TrackerConfig.side_check_every``): on a
track's first frame (unless it takes up a lost track's vote) and every so often after, it
runs the network on both sides' crops and adds the difference of how far the depth bears
each fit out (within 1 cm, ``HandEstimator.side_check_agreement``), as ten frames' worth
of vote; the figures below are the classifier's alone.

Once decided, the side changes only when the mean logit passes ``switch_margin`` (0.1)
beyond 0 the other way. Without that margin (``--switch-margin 0``) the reported side
changed 9 times over those 24 sequences, up to 3 times in one, where 5 changes (the
corrections of a wrong first frame) were all that was needed; with it, 7, up to 2 in one
(95.4 % of frames right instead of 96.8 %). On 24 other sequences (seeds 22 to 33,
``--seeds``), which played no part in choosing it: 10 changes instead of 26 (up to 3 in
one instead of 9), 89.5 % of frames right instead of 89.8 %, all 24 right at the end
either way; a margin of 0.25 held wrong first decisions longer (8 changes, 89.0 %; right
at frame 60 in 88 % of the sequences, against 92 %). (The margin was chosen with the
side classifier before its last training, where it gave 9 changes instead of 15 and 7
instead of 17.) ``side_changes`` in the evaluation's vote section counts them
(``benchmarks/results/side_vote_*.json``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracker.types import Handedness


@dataclass(frozen=True)
class SideVoteConfig:
    #: Logits are clipped to +-this before they are averaged (a logit of 4 is p = 0.98).
    max_abs_logit: float = 4.0
    #: Once a side is decided, the mean logit has to pass this far beyond 0 towards the other
    #: side to change it. Early in a track the mean can hover around 0, and without a margin
    #: the reported side (and with it the mirrored mesh) flickered back and forth; 0.1 kept
    #: only the one change that corrects a wrong first frame, at no cost in accuracy, while
    #: wider margins held wrong decisions longer (see the module docstring).
    switch_margin: float = 0.1


class SideVote:
    """Running mean of clipped "right hand" logits over one track."""

    def __init__(self, config: SideVoteConfig = SideVoteConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._sum = 0.0
        self._count = 0
        self._side: Handedness | None = None

    @property
    def frames(self) -> float:
        """Frames voted since the track began (weighted by their votes)."""
        return self._count

    @property
    def mean_logit(self) -> float:
        """Mean clipped logit so far (0 before the first frame)."""
        return self._sum / self._count if self._count else 0.0

    @property
    def side(self) -> Handedness | None:
        """The side decided so far, None before the first frame."""
        return self._side

    def update(self, right_logit: float, votes: float = 1.0) -> Handedness:
        """Add one frame's logit (> 0: right), as ``votes`` frames' worth of evidence (a
        stronger witness than the classifier, such as ``HandTracker``'s side check, counts
        as several); returns the side decided so far. A NaN logit is no evidence and leaves
        the vote as it was (right, with no evidence at all: the more common hand)."""
        logit = float(right_logit)
        if not np.isnan(logit):
            limit = self.config.max_abs_logit
            self._sum += votes * min(max(logit, -limit), limit)
            self._count += votes
            mean, margin = self.mean_logit, self.config.switch_margin
            if self._side is None:
                self._side = Handedness.RIGHT if mean >= 0.0 else Handedness.LEFT
            elif self._side == Handedness.RIGHT and mean < -margin:
                self._side = Handedness.LEFT
            elif self._side == Handedness.LEFT and mean > margin:
                self._side = Handedness.RIGHT
        return self.side or Handedness.RIGHT
