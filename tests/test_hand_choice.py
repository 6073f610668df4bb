"""A track's first crop: the hand-presence classifier chooses among the places segmentation
could put the hand (``tracker.prepare.likeliest_hand``)."""

import dataclasses
import time

import numpy as np
import pytest

from test_segment import FAR_HAND, K, NEAR_HAND, render, render_arm, visible_centroid
from tracker.crop import DEFAULT_CUBE_SIZE_M, OutOfImage
from tracker.prepare import HandChoiceConfig, PrepareConfig, likeliest_hand, prepare_frame
from tracker.segment import SegmentConfig, find_hand_center, hand_centre_candidates
from tracker.side_inference import HandPresence


class ScriptedPresence:
    """A hand-presence classifier that gives the logits it was handed, in turn."""

    cube_size_m = None
    crop_size = 64
    out_of_image = OutOfImage.FAR  # past the image's edge: the far face

    def __init__(self, *logits: float) -> None:
        self.logits = list(logits)
        self.calls = 0

    def logit(self, crop_depth: np.ndarray) -> float:
        assert crop_depth.shape == (self.crop_size, self.crop_size)
        self.calls += 1
        return self.logits.pop(0)


def _config(choice: HandChoiceConfig = HandChoiceConfig(), segment: SegmentConfig = SegmentConfig()) -> PrepareConfig:
    return PrepareConfig(segment, DEFAULT_CUBE_SIZE_M, None, hand_choice=choice)


#: Four hand-sized objects apart in the image and in depth, near to far.
FOUR = [((x, y, z), (0.045, 0.09, 0.015), (0, 0, 0)) for x, y, z in ((-0.2, -0.1, 0.5), (0.2, -0.1, 0.6), (-0.2, 0.12, 0.7), (0.2, 0.12, 0.8))]


@pytest.fixture(scope="module")
def four_hands():
    depth, labels = render(*FOUR)
    centroids = [visible_centroid(depth, labels, i) for i in range(4)]
    # The premise: segmentation offers all four, near to far.
    places = list(hand_centre_candidates(depth, K))
    assert len(places) == 4 and all(np.linalg.norm(p - c) < 0.03 for p, c in zip(places, centroids))
    return depth, centroids


@pytest.mark.parametrize("others, logits, taken", [(3, (-7.0, 2.5, 4.0, 3.0), 2), (1, (-7.0, 2.5), 1), (2, (-7.0, 2.5, 1.0), 1)])
def test_the_best_of_the_other_places_looked_at_wins(four_hands, others, logits, taken):
    depth, centroids = four_hands
    presence = ScriptedPresence(*logits)  # runs out, and fails, if asked about more places
    centre, logit, _ = likeliest_hand(depth, K, _config(HandChoiceConfig(others=others)), presence)
    assert np.linalg.norm(centre - centroids[taken]) < 0.03 and logit == logits[taken] and presence.logits == []


def test_the_classifier_time_is_reported_apart_from_segmentation(four_hands):
    depth, _ = four_hands
    t0 = time.perf_counter()
    prepared = prepare_frame(depth, K, None, _config(), None, ScriptedPresence(-7.0, -6.0, -5.0, 3.0))
    total_ms = 1e3 * (time.perf_counter() - t0)
    assert prepared.hand_logit == 3.0
    timings = prepared.timings_ms
    assert timings["presence"] > 0.0 and timings["segment"] > 0.0
    assert timings["segment"] + timings["presence"] + timings["crop"] <= total_ms


@pytest.fixture(scope="module")
def two_hands():
    depth, labels = render(NEAR_HAND, FAR_HAND)
    return depth, visible_centroid(depth, labels, 0), visible_centroid(depth, labels, 1)


def test_a_first_place_the_classifier_is_sure_of_is_taken_without_looking_further(two_hands):
    depth, near, _ = two_hands
    presence = ScriptedPresence(HandChoiceConfig.recheck_below_logit)
    centre, logit, _ = likeliest_hand(depth, K, _config(), presence)
    assert np.linalg.norm(centre - near) < 0.03 and logit == HandChoiceConfig.recheck_below_logit and presence.calls == 1


def test_a_doubted_first_place_gives_way_to_one_the_classifier_clearly_prefers(two_hands):
    depth, _, far = two_hands
    presence = ScriptedPresence(-7.0, 9.0)
    centre, logit, spent_ms = likeliest_hand(depth, K, _config(), presence)
    assert np.linalg.norm(centre - far) < 0.03 and logit == 9.0 and presence.calls == 2 and spent_ms > 0.0


@pytest.mark.parametrize(
    "choice, logits",
    [
        (HandChoiceConfig(), (-7.0, -6.5)),  # within the margin: the geometric choice stands
        (HandChoiceConfig(), (-7.0, 1.5)),  # clearly better, but not clearly a hand
        (HandChoiceConfig(), (1.5, 2.2)),  # a hand, but within the margin
        (HandChoiceConfig(others=0), (-7.0,)),  # no other place looked at
        (HandChoiceConfig(recheck_below_logit=-8.0), (-7.0,)),  # not doubted enough
    ],
)
def test_the_first_place_stays_unless_another_wins_by_the_margin(two_hands, choice, logits):
    depth, near, _ = two_hands
    presence = ScriptedPresence(*logits)
    centre, logit, _ = likeliest_hand(depth, K, _config(choice), presence)
    assert np.linalg.norm(centre - near) < 0.03 and logit == logits[0] and presence.logits == []


def test_nothing_found_costs_no_classifier_run():
    presence = ScriptedPresence()
    assert likeliest_hand(np.zeros((K.height, K.width), np.float32), K, _config(), presence) == (None, None, 0.0)


@pytest.mark.parametrize("flexion_deg", [-50.0, -70.0])
def test_the_shipped_classifier_takes_the_hand_end_of_an_arm_segmentation_got_wrong(hand_model, flexion_deg):
    # An arm whose ends segmentation cannot tell apart by the depth alone (the width rule
    # switched off): it takes the elbow's end, 25 cm from the hand. The classifier calls that
    # crop no hand and the hand's end a hand (logits about -6.5 and +13).
    depth, labels = render_arm(hand_model, (0.0, -0.12, 0.55), flexion_deg, forearm_length_m=0.25)
    hand = visible_centroid(depth, labels, 0)
    config = _config(segment=SegmentConfig(wider_end_ratio=np.inf))
    elbow = find_hand_center(depth, K, config.segment)
    assert np.linalg.norm(elbow - hand) > 0.15
    presence = HandPresence.load()
    prepared = prepare_frame(depth, K, None, config, None, presence)
    # As in the segmentation tests: the kernel takes in some wrist, within 4 cm of the hand.
    assert np.linalg.norm(prepared.centre - hand) < 0.04
    assert prepared.hand_logit > 5.0 and set(prepared.timings_ms) == {"segment", "crop", "presence"}
    # While tracking, the prior decides, as before: the classifier's logit comes from the crop
    # there, and a track on the wrong end ends by the hand evidence falling.
    tracked = prepare_frame(depth, K, elbow, config, None, presence)
    assert np.linalg.norm(tracked.centre - elbow) < 0.03 and tracked.hand_logit < 0.0
    # Without the choice, the elbow's end.
    unchosen = prepare_frame(depth, K, None, dataclasses.replace(config, hand_choice=HandChoiceConfig(others=0)), None, presence)
    assert np.linalg.norm(unchosen.centre - elbow) < 1e-9


def test_a_marked_classifier_on_a_window_of_the_image_sees_only_the_image_edges_marked(two_hands):
    # A rendered training or evaluation window: a hand whole in it but near its edge, well
    # inside the image. Told the sensor, the marked crop shows no mark (the cube is within the image);
    # told nothing, the window's edge would be marked as if the image ended there.
    from tracker.crop import OUT_OF_IMAGE_DEPTH

    depth, near, _ = two_hands
    u = int(round(K.fx * near[0] / near[2] + K.cx))
    left = u - 60  # the hand is about 90 pixels wide, its cube's crop about 250
    window = dataclasses.replace(K, width=K.width - left, cx=K.cx - left)
    window_depth = np.ascontiguousarray(depth[:, left:])

    class MarkedRecorder(ScriptedPresence):
        out_of_image = OutOfImage.MARKED

        def logit(self, crop_depth):
            self.crops.append(crop_depth.copy())
            return super().logit(crop_depth)

    marked = {}
    for told, sensor in (("sensor", K), ("window only", None)):
        presence = MarkedRecorder(HandChoiceConfig.recheck_below_logit)
        presence.crops = []
        centre, _, _ = likeliest_hand(window_depth, window, _config(), presence, sensor)
        assert np.linalg.norm(centre - near) < 0.03 and len(presence.crops) == 1
        marked[told] = int((presence.crops[0] == OUT_OF_IMAGE_DEPTH).sum())
    assert marked["sensor"] == 0 and marked["window only"] > 0
