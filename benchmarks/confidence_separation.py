"""Confidence: how well the tracker's confidence tells a hand from what is not one.

    python -m benchmarks.confidence_separation                  # the committed figures
    python -m benchmarks.confidence_separation --sequences 2 --frames 12 --objects 5 --out /tmp/c.json

Each group is one kind of crop the network is run on, found as the tracker finds it
(segmentation without a prior), and scored as the tracker scores it
(``tracker.confidence``). Beside it, the measure it replaced: the share of the crop's
measured pixels that the network calls hand.

* ``hands``: the built-in input's moving hands (``SyntheticSource``, seeds S..S+N-1, every
  ``--every``-th of F frames), cropped as the side they are (what the side vote settles on),
  with their mean joint error;
* ``hands_as_the_other_side``: the same crops mirrored, as a wrong side vote would take them;
* ``hands_before_a_wall_Dcm``: the same hands with a wall D cm behind their joints' mean (a
  hand held before the body, a wall or a screen);
* objects the network may take for a hand, alone in the view at 0.35-0.8 m over nothing, a
  far wall or a farther one: ``ball`` (3-7 cm radius), ``head`` (8-12 cm), ``box`` (4-12 by
  6-18 cm, facing the camera), ``cylinder`` (an arm without its hand, 2.5-4.5 cm radius,
  running out of the image) and ``book`` (16 x 22 cm, tilted);
* ``real_sr305``: the 19 SR305 frames in ``tests/data/sr305-gestures``, on the side the side
  classifier gives;
* scenes of the hand network's kind (``SceneConfig``: arm, desk or wall, body, noise; seeds
  of stream ``scene_stream``, which no network trained on), whole 640 x 480-class frames:
  ``arms_whose_hand_is_hidden`` (drawn without their hand, ``SceneConfig.hand``),
  ``arms_whose_hand_is_past_the_edge`` (with it, the image cut at the side of the hand's
  box that leaves the most arm in view) and ``hands_a_third_past_the_edge`` (cut through
  the hand, two thirds of its pixels left).

Each crop also gets the hand-presence classifier's probability (``tracker.presence``), and
each group says what share of its crops each gate keeps and both together
(``TrackerConfig.min_hand_probability`` and ``min_confidence``), and what the tracker keeps
of them as a track's first frame: those two, and the crops the classifier doubts
(``doubtful_hand_probability``) whose fit reaches ``min_confidence_when_doubtful``.

``side_choice``: on the ``hands`` frames, how often the side whose mesh the depth bears out
better (by the confidence, and within the side check's 1 cm) is the true one, against the side classifier's single-frame answer (what the side
vote adds up) on the same crops, and the two together. ``tracked_sides``: the side the
tracker reports over whole sequences (the side classifier's held-out seeds 22-33, a right
and a left hand each), without side checks (``TrackerConfig.side_check_every`` 0) and with
its default ones, and with those but without the hand-presence classifier, without its
doubtful band (``TrackerConfig.doubtful_hand_probability``), or with every track voting
afresh, even one lost a frame before (``TrackerConfig.resume_side_within_ms`` 0), with
side checks and without.
``--track-first-seed`` tracks other seeds.

Writes ``benchmarks/results/confidence_separation.json`` with the resolved config: per
group the quantiles of both measures and the share of crops each keeps at its threshold
(``TrackerConfig.min_confidence`` for the confidence, 0.3 for the old measure).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import check_output_path, result_header, write_result
from kernels.raster import composite_ellipsoid
from tracker.backends import create_backend
from tracker.confidence import depth_agreement
from tracker.estimator import HandEstimator
from tracker.hand_model import HandModel
from tracker.pipeline import HandTracker, TrackerConfig
from tracker.prepare import HandChoiceConfig
from tracker.side_inference import sigmoid
from tracker.synth.dataset import sample_seed
from tracker.synth.scene import SceneConfig, SceneLabel, render_sample
from tracker.sources import FolderSource, SyntheticSource
from tracker.types import CameraIntrinsics, DepthFrame, Handedness
from tracker.weights import WEIGHTS_DIR, WeightsError, crop_classifiers, load_manifest

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
REAL_DIR = ROOT / "tests" / "data" / "sr305-gestures"
#: The threshold the replaced measure was used with.
OLD_THRESHOLD = 0.3
OBJECTS = ("ball", "head", "box", "cylinder", "book")
OBJECT_CAMERA = CameraIntrinsics(640, 480, 475.0, 475.0, 319.5, 239.5)


@dataclass(frozen=True)
class ConfidenceBenchConfig:
    sequences: int = 20
    frames: int = 90
    every: int = 6
    first_seed: int = 0
    walls_cm: tuple[int, ...] = (4, 6, 8, 10, 12, 14, 16)
    objects_per_kind: int = 20
    object_seed: int = 0
    min_confidence: float = TrackerConfig.min_confidence
    min_hand_probability: float = TrackerConfig.min_hand_probability
    doubtful_hand_probability: float = TrackerConfig.doubtful_hand_probability
    min_confidence_when_doubtful: float = TrackerConfig.min_confidence_when_doubtful
    #: Scenes per scene group, and their stream (``sample_seed``; 1-6 train or calibrate networks).
    scenes: int = 100
    scene_stream: int = 8
    #: The tracked sequences for ``tracked_sides`` (the side classifier's own held-out seeds).
    track_first_seed: int = 22
    track_sequences: int = 12
    track_frames: int = 150
    weights: str = str(WEIGHTS_DIR)
    #: How the tracker chooses a track's first place (``TrackerConfig.hand_choice``).
    hand_choice: HandChoiceConfig = field(default_factory=HandChoiceConfig)


def _scores(tracker: HandTracker, frame: DepthFrame, side: Handedness | None) -> dict | None:
    """Both measures for the crop the tracker takes from ``frame`` with no prior (None: no
    hand found), as ``side`` (None: as the side classifier says)."""
    prepared = tracker.prepare(frame, None)
    if prepared.centre is None:
        return None
    if side is None:
        side = Handedness.RIGHT if prepared.right_logit > 0 else Handedness.LEFT
    crop = prepared.crops[side]
    estimator = tracker.estimator
    output, _ = estimator.run(crop)
    agreement = depth_agreement(crop, output.refined_vertices, estimator.hand_model.faces, output.hand_probability, (frame.intrinsics.width, frame.intrinsics.height))
    measured = crop.measured
    hand_share = float((output.hand_probability[measured] > 0.5).mean()) if measured.any() else 0.0
    return {
        "confidence": agreement.confidence, "confirmed": agreement.confirmed, "explained": agreement.explained, "hand_share": hand_share,
        "side_check_agreement": estimator.side_check_agreement(crop, output, frame.intrinsics),
        "joints": output.joints, "right_logit": prepared.right_logit,
        "hand_probability": None if prepared.hand_logit is None else sigmoid(prepared.hand_logit),
    }


def _with_wall(frame: DepthFrame, wall_m: float) -> DepthFrame:
    depth = frame.depth_m()
    walled = np.where((depth > 0) & (depth < wall_m), depth, np.float32(wall_m))
    return DepthFrame.from_metres(walled, frame.intrinsics, frame.timestamp_ms, frame.serial, frame.frame_number)


def with_sphere(depth_m: np.ndarray, camera: CameraIntrinsics, centre_m, radius_m: float) -> np.ndarray:
    """(H, W) float32 copy of ``depth_m`` (metres, 0 = nothing) with a ball in front of what
    lies behind it (the renderer's own ellipsoid, as its scenes' distractors)."""
    depth = np.array(depth_m, np.float32)
    labels = np.zeros(depth.shape, np.int16)
    composite_ellipsoid(np.asarray(centre_m, np.float64), np.eye(3), np.full(3, float(radius_m)), camera.fx, camera.fy, camera.cx, camera.cy, depth, labels, 1)
    return depth


def object_depth(kind: str, rng: np.random.Generator, camera: CameraIntrinsics = OBJECT_CAMERA) -> np.ndarray:
    """(H, W) float32 depth (metres, 0 = nothing measured) of one object of ``kind``."""
    z0 = rng.uniform(0.35, 0.8)
    x0, y0 = rng.uniform(-0.1, 0.1, 2) * z0
    background = float(rng.choice([0.0, 1.3, 2.0]))
    v, u = np.mgrid[: camera.height, : camera.width].astype(np.float64)
    x, y = (u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy
    if kind in ("ball", "head"):
        radius = rng.uniform(0.03, 0.07) if kind == "ball" else rng.uniform(0.08, 0.12)
        ball = with_sphere(np.zeros(x.shape, np.float32), camera, [x0, y0, z0], radius)
        depth = np.where(ball > 0, ball, background)
    elif kind == "box":
        width, height = rng.uniform(0.04, 0.12), rng.uniform(0.06, 0.18)
        hit = (np.abs(x * z0 - x0) < width / 2) & (np.abs(y * z0 - y0) < height / 2)
        depth = np.where(hit, z0, background)
    elif kind == "cylinder":
        radius = rng.uniform(0.025, 0.045)
        across = y * z0 - y0
        hit = (np.abs(across) < radius) & (x * z0 > x0 - 0.05)
        depth = np.where(hit, z0 - np.sqrt(np.clip(radius**2 - across**2, 0.0, None)), background)
    elif kind == "book":
        hit = (np.abs(x * z0 - x0) < 0.08) & (np.abs(y * z0 - y0) < 0.11)
        depth = np.where(hit, z0 + 0.3 * (y * z0 - y0), background)
    else:
        raise ValueError(f"no object {kind!r}; one of {OBJECTS}")
    return depth.astype(np.float32)


def scene_frame(seed: int, group: str, hand_model: HandModel) -> DepthFrame | None:
    """A whole frame of the hand network's kind of scene for a scene group (see the module
    docstring); None where the cut leaves nothing of the kind asked for."""
    scene = dataclasses.replace(SceneConfig(), hand=group != "arms_whose_hand_is_hidden")
    sample = render_sample(hand_model, scene, seed)
    depth = sample.depth.astype(np.float32) * np.float32(sample.depth_scale)
    k = sample.intrinsics
    if group != "arms_whose_hand_is_hidden":
        v, u = np.nonzero(sample.mask)
        arm = sample.labels == SceneLabel.FOREARM
        if group == "arms_whose_hand_is_past_the_edge":
            # The four cuts that leave the hand's whole box out; the one with the most arm.
            cuts = [(0, k.height, 0, u.min()), (0, k.height, u.max() + 1, k.width), (0, v.min(), 0, k.width), (v.max() + 1, k.height, 0, k.width)]
            y0, y1, x0, x1 = max(cuts, key=lambda c: arm[c[0] : c[1], c[2] : c[3]].sum())
            if arm[y0:y1, x0:x1].sum() < 200:
                return None
        else:
            # The cut across the hand, from the side away from its arm, that leaves two thirds of it.
            arm_v, arm_u = np.nonzero(arm)
            towards_arm = np.array([arm_u.mean() - u.mean(), arm_v.mean() - v.mean()]) if len(arm_u) else np.array([0.0, 1.0])
            if abs(towards_arm[0]) > abs(towards_arm[1]):
                cut = int(np.sort(u)[len(u) // 3]) if towards_arm[0] > 0 else int(np.sort(u)[::-1][len(u) // 3]) + 1
                y0, y1, x0, x1 = (0, k.height, cut, k.width) if towards_arm[0] > 0 else (0, k.height, 0, cut)
            else:
                cut = int(np.sort(v)[len(v) // 3]) if towards_arm[1] > 0 else int(np.sort(v)[::-1][len(v) // 3]) + 1
                y0, y1, x0, x1 = (cut, k.height, 0, k.width) if towards_arm[1] > 0 else (0, cut, 0, k.width)
        depth = np.ascontiguousarray(depth[y0:y1, x0:x1])
        k = CameraIntrinsics(x1 - x0, y1 - y0, k.fx, k.fy, k.cx - x0, k.cy - y0)
    return DepthFrame.from_metres(depth, k)


SCENE_GROUPS = ("arms_whose_hand_is_hidden", "arms_whose_hand_is_past_the_edge", "hands_a_third_past_the_edge")


def group_stats(
    rows: list[dict | None], min_confidence: float, min_hand_probability: float, doubtful_hand_probability: float | None = None, min_confidence_when_doubtful: float = 1.0
) -> dict:
    """Per group: how many crops, the quantiles of each measure and the share each keeps
    at its threshold; ``kept_by_both`` (confidence and hand presence), and, given
    ``doubtful_hand_probability``, ``kept_by_the_tracker``: as a track's first frame is
    judged, a doubted crop (hand probability in [doubtful, min)) kept where its confidence
    reaches ``min_confidence_when_doubtful`` (``TrackerConfig``)."""
    found = [r for r in rows if r is not None]
    stats: dict = {"crops": len(rows), "hand_found": len(found)}
    if found and found[0].get("hand_probability") is not None:
        stats["kept_by_both"] = float(np.mean([r["confidence"] >= min_confidence and r["hand_probability"] >= min_hand_probability for r in found]))
        if doubtful_hand_probability is not None:
            doubted_bar = max(min_confidence, min_confidence_when_doubtful)

            def kept(r: dict) -> bool:
                if r["hand_probability"] >= min_hand_probability:
                    return r["confidence"] >= min_confidence
                return r["hand_probability"] >= doubtful_hand_probability and r["confidence"] >= doubted_bar

            stats["kept_by_the_tracker"] = float(np.mean([kept(r) for r in found]))
            rescued = [r for r in found if kept(r) and r["hand_probability"] < min_hand_probability]
            stats["doubted_and_kept"] = len(rescued)
            if rescued and "joint_error_mm" in rescued[0]:
                stats["mean_joint_error_mm_doubted_and_kept"] = float(np.mean([r["joint_error_mm"] for r in rescued]))
    for name, threshold in (("confidence", min_confidence), ("hand_share", OLD_THRESHOLD), ("hand_probability", min_hand_probability)):
        if any(r.get(name) is None for r in found):
            continue
        values = np.array([r[name] for r in found])
        if not values.size:
            stats[name] = None
            continue
        stats[name] = {
            "min": float(values.min()),
            "p5": float(np.percentile(values, 5)),
            "median": float(np.median(values)),
            "max": float(values.max()),
            "kept_at_threshold": float(np.mean(values >= threshold)),
            "threshold": threshold,
        }
    errors = [r["joint_error_mm"] for r in found if "joint_error_mm" in r]
    if errors:
        stats["mean_joint_error_mm"] = float(np.mean(errors))
        if "kept_by_both" in stats:
            # What the hand-presence gate drops: the crops it calls no hand, and how far off
            # the network's estimate on them was.
            kept = [r["joint_error_mm"] for r in found if r["hand_probability"] >= min_hand_probability]
            dropped = [r["joint_error_mm"] for r in found if r["hand_probability"] < min_hand_probability]
            stats["mean_joint_error_mm_kept_by_hand_presence"] = float(np.mean(kept)) if kept else None
            stats["mean_joint_error_mm_dropped_by_hand_presence"] = float(np.mean(dropped)) if dropped else None
        if len(errors) > 2:
            stats["correlation_confidence_joint_error"] = float(np.corrcoef([r["confidence"] for r in found], errors)[0, 1])
    return stats


#: Weights of the confidence difference between the sides, in logit units, for
#: ``side_choice``: how a side check might add it to the side classifier's logit.
SIDE_CHECK_WEIGHTS = (4.0, 8.0, 16.0)


def side_choice(own: list[dict | None], other: list[dict | None], truth_is_right: list[bool]) -> dict:
    """Per frame, whether each way of choosing the side picks the true one: the side
    classifier alone (its logit's sign, what the side vote sums), the side whose mesh the
    depth bears out better (both sides' crops run through the network) by the confidence
    (2 cm) and by what a side check weighs (``side_check_agreement``, 1 cm), and the
    classifier and the confidence together (logit + w * confidence difference)."""
    pairs = [(a, b, right) for a, b, right in zip(own, other, truth_is_right) if a is not None and b is not None]
    if not pairs:
        return {"frames": 0}
    difference = np.array([a["confidence"] - b["confidence"] for a, b, _ in pairs])  # true side minus the other
    checked = np.array([a["side_check_agreement"] - b["side_check_agreement"] for a, b, _ in pairs])
    logit = np.array([a["right_logit"] * (1.0 if right else -1.0) for a, _, right in pairs])  # towards the true side
    return {
        "frames": len(pairs),
        "classifier_correct": float(np.mean(logit > 0)),
        "confidence_correct": float(np.mean(difference > 0)),
        "confidence_wrong_by_over_0.05": float(np.mean(difference < -0.05)),
        "confidence_difference_quantiles": {f"p{q}": float(np.percentile(difference, q)) for q in (1, 5, 25, 50)},
        "combined_correct": {f"{w:g}": float(np.mean(logit + w * difference > 0)) for w in SIDE_CHECK_WEIGHTS},
        "side_check_correct": float(np.mean(checked > 0)),
        "side_check_wrong_by_over_0.05": float(np.mean(checked < -0.05)),
        "side_check_difference_quantiles": {f"p{q}": float(np.percentile(checked, q)) for q in (1, 5, 25, 50)},
    }


def tracked_sides(config: ConfidenceBenchConfig, estimator: HandEstimator, progress: bool = True, classifiers: tuple | None = None) -> dict:
    """The side the tracker reports, frame by frame, over whole sequences (seeds S.., a right
    and a left hand each, as ``python -m tracker.side_classifier evaluate --seeds`` draws
    them), without side checks and with the tracker's default ones, and with those but
    without the hand-presence classifier, without its doubtful band, or without taking up
    the side vote of a track lost just before (with side checks and without)."""
    out = {}
    every = TrackerConfig.side_check_every
    variants = {
        "side_check_every_0": TrackerConfig(side_check_every=0, hand_choice=config.hand_choice),
        "side_check_every_0_without_resuming": TrackerConfig(side_check_every=0, resume_side_within_ms=0.0, hand_choice=config.hand_choice),
        f"side_check_every_{every}": TrackerConfig(hand_choice=config.hand_choice),
        f"side_check_every_{every}_without_hand_presence": TrackerConfig(min_hand_probability=0.0, hand_choice=config.hand_choice),
        # Every crop the classifier doubts refused, as a denied one is.
        f"side_check_every_{every}_without_the_doubtful_band": TrackerConfig(
            doubtful_hand_probability=TrackerConfig.min_hand_probability, hand_choice=config.hand_choice
        ),
        f"side_check_every_{every}_without_resuming": TrackerConfig(resume_side_within_ms=0.0, hand_choice=config.hand_choice),
    }
    side, presence = classifiers or crop_classifiers(config.weights, None, TrackerConfig.min_hand_probability)
    for name, tracker_config in variants.items():
        # The classifiers loaded once, shared by the variants: none keeps state of a track.
        tracker = HandTracker(estimator, tracker_config, side, presence if tracker_config.min_hand_probability > 0 else None)
        correct, errors, changes, found, at_frame = [], [], 0, 0, {1: [], 10: [], 30: []}
        runs = [(seed, hand) for seed in range(config.track_first_seed, config.track_first_seed + config.track_sequences) for hand in Handedness]
        for seed, hand in tqdm(runs, desc=f"tracking, {name.replace('_', ' ')}", disable=not progress):
            tracker.reset()
            source = SyntheticSource(seed=seed, max_frames=config.track_frames, hand=hand, hand_model=estimator.hand_model)
            last = None
            for frame in source.frames():
                result = tracker.process(frame)
                if not result.hands:
                    continue
                found += 1
                reported = result.hands[0].handedness
                correct.append(reported == hand)
                if frame.frame_number + 1 in at_frame:
                    at_frame[frame.frame_number + 1].append(reported == hand)
                changes += last is not None and reported != last
                last = reported
                errors.append(float(np.linalg.norm(result.hands[0].joints_cam_m - source.ground_truth(frame.frame_number), axis=1).mean() * 1000))
        out[name] = {
            "frames": len(runs) * config.track_frames,
            "frames_with_a_hand": found,
            "frame_accuracy": float(np.mean(correct)) if correct else None,
            # Of the sequences with a hand reported at that frame: so many.
            "accuracy_at_frame": {str(k): float(np.mean(v)) if v else None for k, v in at_frame.items()},
            "sequences_with_a_hand_at_frame": {str(k): len(v) for k, v in at_frame.items()},
            "side_changes": int(changes),
            "mean_joint_error_mm": float(np.mean(errors)) if errors else None,
        }
    out["sequences"] = f"seeds {config.track_first_seed}-{config.track_first_seed + config.track_sequences - 1}, right and left, {config.track_frames} frames"
    return out


def measure(config: ConfidenceBenchConfig, progress: bool = True) -> dict[str, list]:
    hand_model = HandModel.load()
    estimator = HandEstimator(create_backend("onnxruntime", config.weights), hand_model)
    tracker_config = TrackerConfig(hand_choice=config.hand_choice)
    classifiers = crop_classifiers(config.weights, None, tracker_config.min_hand_probability)
    tracker = HandTracker(estimator, tracker_config, *classifiers)
    groups: dict[str, list] = {"hands": [], "hands_as_the_other_side": [], "truth_is_right": []}
    groups.update({f"hands_before_a_wall_{cm}cm": [] for cm in config.walls_cm})
    total = config.sequences * len(range(0, config.frames, config.every))
    with tqdm(total=total, desc="hands", disable=not progress, unit="frame") as bar:
        for seed in range(config.first_seed, config.first_seed + config.sequences):
            source = SyntheticSource(seed=seed, max_frames=config.frames, hand_model=hand_model)
            for frame in source.frames():
                if frame.frame_number % config.every:
                    continue
                truth = source.ground_truth(frame.frame_number)
                side = Handedness(source.pose_at(frame.frame_number).handedness)
                other = Handedness.LEFT if side == Handedness.RIGHT else Handedness.RIGHT
                groups["truth_is_right"].append(side == Handedness.RIGHT)
                for name, image, as_side in (
                    ("hands", frame, side),
                    ("hands_as_the_other_side", frame, other),
                    *((f"hands_before_a_wall_{cm}cm", _with_wall(frame, float(truth[:, 2].mean()) + cm / 100), side) for cm in config.walls_cm),
                ):
                    row = _scores(tracker, image, as_side)
                    if row is not None:
                        row["joint_error_mm"] = float(np.linalg.norm(row["joints"] - truth, axis=1).mean() * 1000)
                    groups[name].append(row)
                bar.update()
    rng = np.random.default_rng(config.object_seed)
    for kind in tqdm(OBJECTS, desc="objects", disable=not progress):
        groups[kind] = [_scores(tracker, DepthFrame.from_metres(object_depth(kind, rng), OBJECT_CAMERA), None) for _ in range(config.objects_per_kind)]
    real = FolderSource(REAL_DIR)
    groups["real_sr305"] = [_scores(tracker, frame, None) for frame in real.frames()]
    for group in tqdm(SCENE_GROUPS, desc="scenes", disable=not progress):
        frames = (scene_frame(sample_seed(config.scene_stream, i), group, hand_model) for i in range(config.scenes))
        groups[group] = [_scores(tracker, frame, None) for frame in frames if frame is not None]
    groups["tracked_sides"] = tracked_sides(config, estimator, progress, classifiers) if config.track_sequences else None
    tracker.close()
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.confidence_separation",
        description="How well the tracker's confidence separates hands (alone, before a wall, the wrong side) from balls, heads, "
        "boxes, arms and books, against the share of hand pixels it replaced.",
    )
    defaults = ConfidenceBenchConfig()
    parser.add_argument("--sequences", type=int, default=defaults.sequences, help="synthetic hand sequences (default %(default)s)")
    parser.add_argument("--frames", type=int, default=defaults.frames, help="frames per sequence (default %(default)s)")
    parser.add_argument("--every", type=int, default=defaults.every, help="take every N-th frame (default %(default)s)")
    parser.add_argument(
        "--walls", type=int, nargs="+", default=list(defaults.walls_cm), metavar="CM",
        help="the hands again with a wall this many cm behind their joints' mean (default %(default)s)",
    )
    parser.add_argument("--objects", type=int, default=defaults.objects_per_kind, help="objects of each kind (default %(default)s)")
    parser.add_argument("--track-sequences", type=int, default=defaults.track_sequences, help="seeds of tracked sequences, a right and a left hand each, for the reported side (default %(default)s; 0: none)")
    parser.add_argument(
        "--track-first-seed", type=int, default=defaults.track_first_seed,
        help="the first seed of the tracked sequences (default %(default)s: the side classifier's held-out seeds)",
    )
    parser.add_argument("--track-frames", type=int, default=defaults.track_frames, help="frames per tracked sequence (default %(default)s)")
    parser.add_argument("--scenes", type=int, default=defaults.scenes, help="frames of each scene group: arms without their hand, hands past the edge (default %(default)s)")
    parser.add_argument(
        "--weights", type=Path, default=WEIGHTS_DIR,
        help="weights directory; its side_classifier/ and presence/ sub-folders are used where it has them, as a run does (default %(default)s)",
    )
    parser.add_argument(
        "--choice-others", type=int, default=defaults.hand_choice.others,
        help="other places the hand-presence classifier may choose among on a track's first frame (default %(default)s; 0: segmentation's first place only)",
    )
    parser.add_argument(
        "--choice-min-logit", type=float, default=defaults.hand_choice.min_other_logit,
        help="the hand logit another place must reach to be chosen (default %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "confidence_separation.json", help="result JSON (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if min(args.sequences, args.frames, args.every, args.objects, args.scenes) < 1:
        parser.error("--sequences, --frames, --every, --objects and --scenes must be >= 1")
    if any(cm < 1 for cm in args.walls):
        parser.error("--walls must be whole centimetres >= 1")
    if args.track_sequences < 0 or args.track_frames < 1 or args.track_first_seed < 0:
        parser.error("--track-sequences and --track-first-seed must be >= 0 and --track-frames >= 1")
    if args.choice_others < 0 or not math.isfinite(args.choice_min_logit):
        parser.error("--choice-others must be >= 0 and --choice-min-logit a finite number")
    check_output_path(parser, "--out", args.out)
    try:  # the weights a run would load, checked before any frame is rendered
        load_manifest(args.weights)
        crop_classifiers(args.weights, None, TrackerConfig.min_hand_probability)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = ConfidenceBenchConfig(
        sequences=args.sequences, frames=args.frames, every=args.every, objects_per_kind=args.objects, weights=str(args.weights), walls_cm=tuple(args.walls),
        track_sequences=args.track_sequences, track_first_seed=args.track_first_seed, track_frames=args.track_frames, scenes=args.scenes,
        hand_choice=dataclasses.replace(defaults.hand_choice, others=args.choice_others, min_other_logit=args.choice_min_logit),
    )
    began = time.perf_counter()
    groups = measure(config, progress=not args.no_progress)
    result = {
        **result_header("confidence_separation", argv),
        "config": asdict(config),
        "groups": {
            name: group_stats(rows, config.min_confidence, config.min_hand_probability, config.doubtful_hand_probability, config.min_confidence_when_doubtful)
            for name, rows in groups.items()
            if name not in ("truth_is_right", "tracked_sides")
        },
        "side_choice": side_choice(groups["hands"], groups["hands_as_the_other_side"], groups["truth_is_right"]),
        "tracked_sides": groups["tracked_sides"],
        "seconds": time.perf_counter() - began,
    }
    write_result(args.out, result)
    print(
        f"{'group':33s} {'crops':>5s}  confidence min/p5/median/max  kept at {config.min_confidence}   hand share median  kept at {OLD_THRESHOLD}"
        f"   P(hand) median  kept at {config.min_hand_probability}   kept by both   by the tracker"
    )
    for name, stats in result["groups"].items():
        c, h, p = stats.get("confidence"), stats.get("hand_share"), stats.get("hand_probability")
        if c is None:
            print(f"{name:33s} {stats['crops']:5d}  no hand found")
            continue
        print(
            f"{name:33s} {stats['hand_found']:5d}  {c['min']:.2f}/{c['p5']:.2f}/{c['median']:.2f}/{c['max']:.2f}"
            f"{c['kept_at_threshold']:>18.0%}   {h['median']:17.2f}  {h['kept_at_threshold']:6.0%}"
            + (f"   {p['median']:14.2f}  {p['kept_at_threshold']:9.0%}   {stats['kept_by_both']:12.0%}   {stats['kept_by_the_tracker']:14.0%}" if p else "")
        )
    sides = result["side_choice"]
    if sides["frames"]:
        print(
            f"side of the {sides['frames']} hands: the classifier right on {sides['classifier_correct']:.1%} of frames, the better-confirmed "
            f"side of the two on {sides['confidence_correct']:.1%} (within 1 cm, as a side check weighs them: {sides['side_check_correct']:.1%}), "
            f"the classifier and the confidence together (logit + 16 x difference) on {sides['combined_correct']['16']:.1%}"
        )
    tracked = result["tracked_sides"]
    if tracked:
        for name, stats in tracked.items():
            if name != "sequences":
                share = lambda value, digits: "-" if value is None else f"{value:.{digits}%}"  # noqa: E731 (no hand found at all)
                error = "-" if stats["mean_joint_error_mm"] is None else f"{stats['mean_joint_error_mm']:.1f} mm"
                print(
                    f"tracked ({tracked['sequences']}), {name.replace('_', ' ')}: a hand on {stats['frames_with_a_hand']} of {stats['frames']} frames, "
                    f"side right on {share(stats['frame_accuracy'], 1)} of them "
                    f"(at frame 1: {share(stats['accuracy_at_frame']['1'], 0)}), {stats['side_changes']} side changes, mean joint error {error}"
                )
    print(f"wrote {args.out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
