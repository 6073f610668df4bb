"""A track's first crop, and a tracked crop it denies: the hand-presence classifier chooses
among the places segmentation could put the hand (``tracker.prepare.likeliest_hand``,
``HandChoiceConfig.recheck_tracked_below_logit``)."""

import dataclasses
import time

import numpy as np
import pytest

from test_segment import FAR_HAND, K, NEAR_HAND, render, render_arm, visible_centroid
from tracker.crop import DEFAULT_CUBE_SIZE_M, OutOfImage, make_crop
from tracker.prepare import HandChoiceConfig, PrepareConfig, likeliest_hand, prepare_frame
from tracker.segment import SegmentConfig, find_hand_center, hand_centre_candidates
from tracker.side_inference import HandPresence
from tracker.types import Handedness


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
    # While tracking, the prior decides: the hand's end, 25 cm from the last centre, is too
    # far to continue the track; a track on the wrong end ends by the hand evidence falling.
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


#: Two hand-sized objects about 10 cm apart, the second behind and beside the first: both
#: within ``PrepareConfig.new_track_jump_m`` of a last centre on the first.
NEAR_PAIR = [((0.0, 0.0, 0.50), (0.045, 0.09, 0.015), (0, 0, 0)), ((0.05, 0.0, 0.58), (0.045, 0.09, 0.015), (0, 0, 0))]


@pytest.fixture(scope="module")
def near_pair():
    depth, labels = render(*NEAR_PAIR)
    first, second = (visible_centroid(depth, labels, i) for i in range(2))
    # The premise: tracking from the first, segmentation offers it, then the second.
    places = list(hand_centre_candidates(depth, K, previous_center=first))
    assert len(places) == 2 and np.linalg.norm(places[0] - first) < 0.03 and np.linalg.norm(places[1] - second) < 0.03
    assert np.linalg.norm(second - first) < PrepareConfig.new_track_jump_m
    return depth, first, second


def test_a_tracked_place_the_classifier_denies_gives_way_to_one_near_the_last_centre(near_pair):
    depth, first, second = near_pair
    presence = ScriptedPresence(-3.0, 9.0)
    prepared = prepare_frame(depth, K, first, _config(), None, presence)
    assert np.linalg.norm(prepared.centre - second) < 0.03 and prepared.hand_logit == 9.0 and presence.logits == []
    # The crops are the new place's, not the denied one's.
    moved = make_crop(depth, K, prepared.centre, DEFAULT_CUBE_SIZE_M, Handedness.RIGHT)
    np.testing.assert_array_equal(prepared.crops[Handedness.RIGHT].depth, moved.depth)
    assert prepared.timings_ms["presence"] > 0.0


@pytest.mark.parametrize(
    "choice, logits",
    [
        (HandChoiceConfig(), (0.5,)),  # not denied: no other place looked at
        (HandChoiceConfig(), (-3.0, 1.5)),  # clearly better, but not clearly a hand
        (HandChoiceConfig(), (-3.0, -2.5)),  # within the margin
        (HandChoiceConfig(recheck_tracked_below_logit=None), (-3.0,)),  # never while tracking
        (HandChoiceConfig(recheck_tracked_below_logit=-4.0), (-3.0,)),  # not denied enough
    ],
)
def test_a_tracked_place_stays_unless_another_near_it_wins_by_the_margin(near_pair, choice, logits):
    depth, first, _ = near_pair
    presence = ScriptedPresence(*logits)
    prepared = prepare_frame(depth, K, first, _config(choice), None, presence)
    assert np.linalg.norm(prepared.centre - first) < 0.03 and prepared.hand_logit == logits[0] and presence.logits == []


def test_a_tracked_frame_takes_no_place_too_far_from_the_last_centre_to_continue_the_track(two_hands):
    # The other hand, 30 cm away, would end the track however sure the classifier were: the
    # track's own hand evidence, not one frame's logit, decides whether it ends.
    depth, near, _ = two_hands
    presence = ScriptedPresence(-7.0, 9.0)
    prepared = prepare_frame(depth, K, near, _config(), None, presence)
    assert np.linalg.norm(prepared.centre - near) < 0.03 and prepared.hand_logit == -7.0 and presence.logits == [9.0]


def _held_tilted_back_frames(hand_model, count: int):
    """A flat hand held at 1.4 m, tilted back 30 degrees, on a 55 cm arm whose free end comes
    towards the camera and ends in view: (frames, true joints)."""
    from benchmarks.held_still import held_pose
    from kernels.sensor_noise import StereoNoiseModel
    from tracker.sources import SyntheticSource, render_hand_pose
    from tracker.types import DepthFrame

    source = SyntheticSource(seed=0, max_frames=1, hand_model=hand_model)
    pose = held_pose(hand_model, "palm", 0.0, 30.0, 1.4, Handedness.RIGHT)
    frames = []
    for i in range(count):
        depth, posed, _ = render_hand_pose(
            hand_model, pose, source.intrinsics, source.depth_scale, noise=StereoNoiseModel(), rng=np.random.default_rng([1, i]), arm_length_m=0.55
        )
        frames.append((DepthFrame(depth, source.depth_scale, source.intrinsics, timestamp_ms=1000.0 * i / 30, serial="s", frame_number=i), posed.joints))
    return frames


def test_the_shipped_classifier_keeps_a_track_on_its_hand_where_segmentation_takes_the_arms_far_end(hand_model):
    # The arm's two ends lie some 30 cm apart in depth, and segmentation takes the nearer
    # for the hand even against the last centre: the free end of the arm, 60 cm from the
    # hand. The classifier denies that crop (logit about -6) and takes the hand's (+9).
    (frame, joints), = _held_tilted_back_frames(hand_model, 1)
    depth, hand = frame.depth_m(), joints.mean(axis=0)
    presence = HandPresence.load()
    config = _config()
    first = prepare_frame(depth, frame.intrinsics, None, config, None, presence)
    # As in the segmentation tests: the kernel takes in some wrist, within 4 cm of the hand.
    assert np.linalg.norm(first.centre - hand) < 0.04
    unchecked = prepare_frame(depth, frame.intrinsics, first.centre, dataclasses.replace(config, hand_choice=HandChoiceConfig(recheck_tracked_below_logit=None)), None, presence)
    assert np.linalg.norm(unchecked.centre - hand) > 0.4 and unchecked.hand_logit < 0.0  # the premise
    tracked = prepare_frame(depth, frame.intrinsics, first.centre, config, None, presence)
    assert np.linalg.norm(tracked.centre - hand) < 0.04 and tracked.hand_logit > 5.0


@pytest.mark.parametrize("logits, taken", [((3.0, 9.0), "hand"), ((3.0, 3.5), "arm's end"), ((9.0, 3.0), "arm's end")])
def test_a_tracked_place_that_would_end_the_track_gives_way_to_one_near_the_last_centre(hand_model, logits, taken):
    # The arm's far end, 60 cm from the last centre, is not denied (a first logit of 3) but
    # would end the track: the hand's place near the last centre is looked at and taken
    # where the classifier clearly prefers it, by the same margin as ever.
    (frame, joints), = _held_tilted_back_frames(hand_model, 1)
    depth, hand = frame.depth_m(), joints.mean(axis=0)
    presence = ScriptedPresence(*logits)
    prepared = prepare_frame(depth, frame.intrinsics, hand, _config(), None, presence)
    assert presence.logits == []
    if taken == "hand":
        assert np.linalg.norm(prepared.centre - hand) < 0.04 and prepared.hand_logit == logits[1]
    else:
        assert np.linalg.norm(prepared.centre - hand) > 0.4 and prepared.hand_logit == logits[0]


def test_a_track_on_a_hand_held_tilted_back_on_a_short_arm_is_kept_on_every_frame(hand_model):
    # Before the tracked frames looked at other places, the track ended on every other
    # frame: the forearm's end (a jump of 60 cm) on the tracked frames, the hand found
    # again by the classifier on the next; or, where the classifier did not deny the
    # forearm's end, went on from there.
    from tracker.api import open_tracker

    with open_tracker() as tracker:
        errors = []
        for frame, joints in _held_tilted_back_frames(hand_model, 20):
            result = tracker.process(frame)
            assert len(result.hands) == 1, frame.frame_number
            errors.append(float(np.linalg.norm(result.hands[0].joints_cam_m - joints, axis=1).mean()))
    # 1.4 m is the far end of the working range, where flat hands held still are fitted to
    # 7 mm on average (benchmarks/results/held_still.json); 2 cm allows for this pose.
    assert max(errors) < 0.02
