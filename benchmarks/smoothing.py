"""What ``--smooth`` (the One-Euro filter on joints and mesh) costs in lag and buys in
steadiness, and how its default setting was chosen.

    python -m benchmarks.smoothing                      # 6 sequences a regime, 4 minutes on 2 cores
    python -m benchmarks.smoothing --sequences 1 --frames 40 --out /tmp/smoothing.json

Rendered moving hands (``SyntheticSource``, with stereo noise) are tracked unsmoothed in two
regimes: 30 frames/s with the input's usual calm motion (a new pose every 2 s, the wrist at
0.1-0.25 m/s) and 90 frames/s, the D4xx's default rate, with brisker motion (a new pose
every 0.7 s, up to 0.7 m/s). Each setting of a grid is then applied to those estimates as the
tracker applies it (one filter a track, started afresh where the hand is lost) and scored
against the rendered truth:

- error: mean joint error (mm); a filter's lag adds to it wherever the hand moves;
- jitter: root mean square of the frame-to-frame change of the joints' error (mm), the shake
  about the truth that smoothing is for.

The default (``tracker.smoothing.OneEuroConfig``) is the setting with the least jitter, on
average over both regimes as a share of the unsmoothed jitter, among those whose error is at
most ``MAX_ERROR_INCREASE`` above the unsmoothed error in each. A third regime, a hand held
still at 30 frames/s, is scored for information: what the filter does where it costs no lag.
The chosen and the earlier default are then also run through the tracker itself
(``smooth=True``) on the first sequences, to check that the offline filtering is the
tracker's.

Writes ``benchmarks/results/smoothing.json`` and a plot beside it (``smoothing.png``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import check_output_path, result_header, write_result
from tracker.api import open_tracker
from tracker.smoothing import OneEuroConfig, OneEuroFilter
from tracker.sources import SyntheticSource

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"

#: (name, frames per second, seconds between the motion's keyframes, frames a sequence,
#: whether the default is chosen on it). The still hand (a keyframe every 1000 s: it drifts
#: a fraction of a millimetre a second) shows what smoothing does where there is no lag to
#: pay; it plays no part in the choice.
REGIMES = (
    ("30fps_calm", 30.0, 2.0, 240, True),
    ("90fps_brisk", 90.0, 0.7, 360, True),
    ("30fps_still", 30.0, 1000.0, 240, False),
)
#: Seeds of the rendered sequences (each regime the same ones).
FIRST_SEED = 100
#: How much a setting may add to the mean joint error, in every regime, to be chosen.
MAX_ERROR_INCREASE = 0.10
GRID = {
    "min_cutoff_hz": (0.5, 1.0, 1.5, 2.5, 4.0),
    "speed_coefficient": (4.0, 10.0, 20.0, 40.0, 80.0, 160.0),
    "derivative_cutoff_hz": (1.0, 2.0, 4.0),
}
#: The default before this measurement, for comparison: chosen by it on the tracker's
#: estimates when the refinement started from the last frame's pose as it was, not yet
#: carried on by the hand's motion (before it: 2.5 Hz, 80, 1 Hz, when the refinement started
#: from the network's fit alone; 1.5 Hz, 40, 4 Hz on unrefined estimates).
EARLIER_DEFAULT = OneEuroConfig(min_cutoff_hz=1.5, speed_coefficient=80.0, derivative_cutoff_hz=2.0)


@dataclasses.dataclass(frozen=True)
class Sequence:
    joints_m: np.ndarray  # (N, 21, 3) float, camera frame, metres; NaN where no hand was reported
    truth_m: np.ndarray  # (N, 21, 3) float, the rendered joints
    time_s: np.ndarray  # (N,) float, the frames' timestamps


def tracked(seed: int, fps: float, interval_s: float, frames: int, smoothing: OneEuroConfig | None) -> Sequence:
    """One rendered sequence tracked, unsmoothed or with ``smoothing``."""
    source = SyntheticSource(seed=seed, fps=fps, max_frames=frames, keyframe_interval_s=interval_s)
    joints, truth, times = [], [], []
    with open_tracker(smooth=smoothing or False) as hand_tracker:
        with source:
            for frame in source.frames():
                result = hand_tracker.process(frame)
                joints.append(result.hands[0].joints_cam_m if result.hands else np.full((21, 3), np.nan))
                truth.append(source.ground_truth(frame.frame_number))
                times.append(frame.timestamp_ms / 1e3)
    return Sequence(np.array(joints, np.float64), np.array(truth, np.float64), np.array(times))


def smoothed(sequence: Sequence, config: OneEuroConfig) -> np.ndarray:
    """The sequence's joints filtered as the tracker filters them: a new filter where a track
    starts (here: after a frame without a hand)."""
    out = sequence.joints_m.copy()
    filter_ = None
    for i, (joints, t) in enumerate(zip(sequence.joints_m, sequence.time_s)):
        if not np.all(np.isfinite(joints)):
            filter_ = None
            continue
        if filter_ is None:
            filter_ = OneEuroFilter(config)
        out[i] = filter_(joints, float(t))
    return out


def score(sequences: list[Sequence], joints: list[np.ndarray]) -> dict:
    """Mean joint error and jitter (mm) over the sequences, each sequence weighing alike."""
    errors, jitters = [], []
    for sequence, estimate in zip(sequences, joints):
        error = estimate - sequence.truth_m
        found = np.all(np.isfinite(error), axis=(1, 2))
        errors.append(np.linalg.norm(error[found], axis=2).mean())
        both = found[1:] & found[:-1]
        step = np.linalg.norm(np.diff(error, axis=0)[both], axis=2)
        jitters.append(np.sqrt(np.mean(step**2)))
    return {"error_mm": 1e3 * float(np.mean(errors)), "jitter_mm": 1e3 * float(np.mean(jitters))}


def choose(scores: dict[str, dict[OneEuroConfig, dict]], raw: dict[str, dict]) -> OneEuroConfig | None:
    """The grid's setting with the least jitter relative to the unsmoothed, averaged over the
    regimes given, among those within ``MAX_ERROR_INCREASE`` of the unsmoothed error in each."""
    settings = next(iter(scores.values())).keys()
    allowed = [s for s in settings if all(scores[r][s]["error_mm"] <= (1 + MAX_ERROR_INCREASE) * raw[r]["error_mm"] for r in scores)]
    if not allowed:
        return None
    return min(allowed, key=lambda s: np.mean([scores[r][s]["jitter_mm"] / raw[r]["jitter_mm"] for r in scores]))


def plot(path: Path, scores, raw, chosen, earlier, chosen_on) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(6 * len(scores), 4.5))
    for ax, (regime, by_setting) in zip(np.atleast_1d(axes), scores.items()):
        ax.scatter([v["error_mm"] for v in by_setting.values()], [v["jitter_mm"] for v in by_setting.values()], s=10, c="0.7", label="grid")
        for label, point, style in (
            ("unsmoothed", raw[regime], "ko"),
            ("earlier default", by_setting.get(earlier), "bs"),
            ("default", by_setting.get(chosen), "r*"),
        ):
            if point is not None:
                ax.plot(point["error_mm"], point["jitter_mm"], style, markersize=10, label=label)
        if regime in chosen_on:
            ax.axvline((1 + MAX_ERROR_INCREASE) * raw[regime]["error_mm"], color="r", lw=0.8, ls="--", label=f"error +{MAX_ERROR_INCREASE:.0%}")
        ax.set_xlabel("mean joint error (mm)")
        ax.set_ylabel("jitter: RMS frame-to-frame change of the error (mm)")
        ax.set_title(regime.replace("_", ", "))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _name(config: OneEuroConfig) -> dict:
    return dataclasses.asdict(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.smoothing",
        description="Lag against steadiness of the One-Euro smoothing (--smooth) on rendered moving hands, over a grid of settings.",
    )
    parser.add_argument("--sequences", type=int, default=6, help="rendered sequences a regime (default %(default)s)")
    parser.add_argument("--frames", type=int, default=None, help="frames a sequence (default: 240 at 30 frames/s, 360 at 90)")
    parser.add_argument("--checked", type=int, default=2, help="sequences a regime run through the tracker with smoothing on, to check the offline filtering (default %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "smoothing.json", help="result JSON; the plot goes beside it (default %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.sequences < 1 or (args.frames is not None and args.frames < 3) or not 0 <= args.checked <= args.sequences:
        parser.error("--sequences must be at least 1, --frames at least 3, --checked between 0 and --sequences")
    check_output_path(parser, "--out", args.out)

    began = time.perf_counter()
    seeds = range(FIRST_SEED, FIRST_SEED + args.sequences)
    regimes = [(name, fps, interval, args.frames or frames) for name, fps, interval, frames, _ in REGIMES]
    chosen_on = [name for name, *_, used in REGIMES if used]
    settings = [OneEuroConfig(*values) for values in itertools.product(*GRID.values())]
    if EARLIER_DEFAULT not in settings:
        settings.append(EARLIER_DEFAULT)
    sequences: dict[str, list[Sequence]] = {}
    with tqdm(total=len(regimes) * len(seeds), desc="tracking", unit="sequence", disable=args.no_progress) as bar:
        for name, fps, interval, frames in regimes:
            sequences[name] = []
            for seed in seeds:
                sequences[name].append(tracked(seed, fps, interval, frames, None))
                bar.update()
    raw = {name: score(seqs, [s.joints_m for s in seqs]) for name, seqs in sequences.items()}
    scores = {name: {c: score(seqs, [smoothed(s, c) for s in seqs]) for c in settings} for name, seqs in sequences.items()}
    chosen = choose({r: scores[r] for r in chosen_on}, raw)

    # The offline filtering against the tracker's own, on the first sequences.
    checks = {}
    for name, fps, interval, frames in regimes:
        for label, config in (("default", chosen), ("earlier_default", EARLIER_DEFAULT)):
            if config is None or args.checked == 0:
                continue
            firsts = sequences[name][: args.checked]
            through_tracker = [tracked(seed, fps, interval, frames, config) for seed in seeds[: args.checked]]
            offline = score(firsts, [smoothed(s, config) for s in firsts])
            online = score(through_tracker, [s.joints_m for s in through_tracker])
            checks[f"{name}_{label}"] = {"offline": offline, "tracker": online}

    result = {
        **result_header("smoothing", argv),
        "config": {
            "regimes": [dict(zip(("name", "fps", "keyframe_interval_s", "frames"), r), chosen_on=r[0] in chosen_on) for r in regimes],
            "seeds": list(seeds),
            "grid": GRID,
            "max_error_increase": MAX_ERROR_INCREASE,
        },
        "unsmoothed": raw,
        "default": None if chosen is None else {"setting": _name(chosen), **{r: scores[r][chosen] for r in scores}},
        "earlier_default": {"setting": _name(EARLIER_DEFAULT), **{r: scores[r][EARLIER_DEFAULT] for r in scores}},
        "default_in_code": _name(OneEuroConfig()),
        "tracker_check": checks,
        "grid_results": [{"setting": _name(c), **{r: scores[r][c] for r in scores}} for c in settings],
        "seconds": time.perf_counter() - began,
    }
    write_result(args.out, result)
    plot(args.out.with_suffix(".png"), scores, raw, chosen, EARLIER_DEFAULT, chosen_on)
    for regime in scores:
        line = f"{regime}: unsmoothed {raw[regime]['error_mm']:.2f} mm error, {raw[regime]['jitter_mm']:.2f} mm jitter"
        for label, config in (("earlier default", EARLIER_DEFAULT), ("chosen", chosen)):
            if config is not None:
                s = scores[regime][config]
                line += f"; {label} {s['error_mm']:.2f} / {s['jitter_mm']:.2f}"
        print(line)
    print(f"chosen: {chosen}; written to {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
