"""The shipped weights' training history, stage by stage, as one learning curve.

The shipped weights come from a first run and a chain of fine-tunes, each started from the
previous export. Each finished stage leaves its resolved config and its loss log in the
weights directory: ``training_config.json`` / ``training_metrics.csv`` for the stage that
made the current weights, ``training_config_NAME.json`` / ``training_metrics_NAME.csv`` for
earlier ones. A stage's ``initialised_from.samples_seen`` says how many samples the weights
had seen when it began, which orders the stages and places them on one sample axis.

The evaluation draws the curve (``eval/training_curve.png``) for the model card: the joint
error on the training batches (noisy synthetic samples like the held-out frames; scenes that
changed since a stage trained, the model card names) against all samples seen, and where
each stage began.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CURRENT_STAGE = "current"


class TrainingHistoryError(ValueError):
    """A stage's config or log is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class TrainingStage:
    """One training run of the chain.

    name: the suffix of its files ("base", "tune3", ...; ``CURRENT_STAGE`` for the last).
    start_samples: samples the weights had seen when the stage began.
    samples: (N,) int64 samples seen within the stage at each log row.
    joint_error_mm: (N,) float64 mean keypoint error on that row's training batch, mm
        (NaN before the refit terms start).
    learning_rate: (N,) float64.
    peak_learning_rate: the stage's configured learning rate.
    crop_frame: the crop frame it trained in (``tracker.crop``; logs from before the choice: camera).
    narrowed_from: the widths (``tracker.narrowing.WIDTHS``) of the weights the stage began
        from where it narrowed them, else None.
    """

    name: str
    start_samples: int
    samples: np.ndarray
    joint_error_mm: np.ndarray
    learning_rate: np.ndarray
    peak_learning_rate: float
    crop_frame: str = "camera"
    narrowed_from: dict | None = None

    @property
    def end_samples(self) -> int:
        return self.start_samples + (int(self.samples[-1]) if len(self.samples) else 0)


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_stage(name: str, config_path: Path, metrics_path: Path) -> TrainingStage:
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON and bytes that are not UTF-8
        raise TrainingHistoryError(f"{config_path}: cannot read the stage's config ({exc})") from exc
    if not isinstance(config, dict):
        raise TrainingHistoryError(f"{config_path}: not a training config (a JSON {type(config).__name__}, not an object)")
    try:
        with open(metrics_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, ValueError, csv.Error) as exc:
        raise TrainingHistoryError(f"{metrics_path}: cannot read the stage's log ({exc})") from exc
    if not rows or "samples_seen" not in rows[0] or "joints_cm" not in rows[0]:
        raise TrainingHistoryError(f"{metrics_path}: no rows with samples_seen and joints_cm (not a training log?)")
    # A run resumed from a checkpoint logs the steps after it again (older versions kept
    # both rows): the later row of a step is the one the run went on from.
    by_step = {}
    for row in rows:
        if None in row or None in row.values():  # fewer or more fields than the header: a line cut short
            continue
        try:
            step = int(float(row.get("step") or row["samples_seen"]))
            int(float(row["samples_seen"]))
        except (TypeError, ValueError):  # a line cut short (the run was killed while writing it)
            continue
        by_step[step] = row
    rows = [by_step[step] for step in sorted(by_step)]
    if not rows:
        raise TrainingHistoryError(f"{metrics_path}: no readable rows")
    try:
        earlier = config.get("initialised_from") or {}
        train = config.get("train") or {}
        return TrainingStage(
            name=name,
            start_samples=int(earlier.get("samples_seen") or 0),
            samples=np.array([int(float(r["samples_seen"])) for r in rows], np.int64),
            joint_error_mm=np.array([10.0 * _float(r["joints_cm"]) for r in rows]),
            learning_rate=np.array([_float(r.get("lr")) for r in rows]),
            peak_learning_rate=_float(train.get("learning_rate")),
            crop_frame=str((train.get("data") or {}).get("crop_frame", "camera")),
            narrowed_from=dict(earlier["narrowed_from"]) if earlier.get("narrowed_from") else None,
        )
    except (AttributeError, TypeError, ValueError) as exc:  # a field of another type than a config's
        raise TrainingHistoryError(f"{config_path}: not a training config this can read ({type(exc).__name__}: {exc})") from exc


def load_training_history(weights_dir: str | Path) -> list[TrainingStage]:
    """Every stage whose config and log are both in ``weights_dir``, oldest first.

    Raises TrainingHistoryError when two stages claim the same starting point (the chain
    is then ambiguous). Returns [] when the directory holds no training logs.
    """
    weights_dir = Path(weights_dir)
    stages = []
    current_config, current_metrics = weights_dir / "training_config.json", weights_dir / "training_metrics.csv"
    if current_config.is_file() and current_metrics.is_file():
        stages.append(read_stage(CURRENT_STAGE, current_config, current_metrics))
    for config_path in sorted(weights_dir.glob("training_config_*.json")):
        name = config_path.stem.removeprefix("training_config_")
        metrics_path = weights_dir / f"training_metrics_{name}.csv"
        if metrics_path.is_file():
            stages.append(read_stage(name, config_path, metrics_path))
    stages.sort(key=lambda s: s.start_samples)
    starts = [s.start_samples for s in stages]
    if len(set(starts)) != len(starts):
        clash = sorted({s.name for s in stages if starts.count(s.start_samples) > 1})
        raise TrainingHistoryError(f"{weights_dir}: stages {clash} all start at the same sample count; which came first is unknown")
    return stages


def last_narrowing(stages: list[TrainingStage]) -> TrainingStage | None:
    """The latest stage that began by narrowing the weights it started from, if any (the
    stages after it fine-tune the narrower network as it is)."""
    narrowing = [s for s in stages if s.narrowed_from]
    return narrowing[-1] if narrowing else None


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean over ``window`` rows that skips NaNs (NaN where a window has none)."""
    values = np.asarray(values, np.float64)
    valid = np.isfinite(values)
    kernel = np.ones(min(max(int(window), 1), max(len(values), 1)))  # "same" gives the longer length
    total = np.convolve(np.where(valid, values, 0.0), kernel, mode="same")
    count = np.convolve(valid.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def plot_training_curve(stages: list[TrainingStage], path: Path, held_out_mm: float | None = None, window: int = 25) -> None:
    """Training-batch joint error (running mean) against all samples seen, one colour per
    stage; ``held_out_mm``: the evaluation's mean joint error, marked at the end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not stages:
        raise TrainingHistoryError("no training stages to plot")
    fig, ax = plt.subplots(figsize=(8, 4))
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(stages)))
    for stage, colour in zip(stages, colours):
        x = (stage.start_samples + stage.samples) / 1e6
        ax.plot(x, smoothed(stage.joint_error_mm, window), color=colour, lw=1.5, label=f"{stage.name} (lr {stage.peak_learning_rate:g}, {stage.crop_frame})")
        ax.axvline(stage.start_samples / 1e6, color=colour, lw=0.8, ls=":")
    if held_out_mm is not None:
        ax.plot([stages[-1].end_samples / 1e6], [held_out_mm], "r*", ms=12, label=f"held-out: {held_out_mm:.1f} mm")
    ax.set_xlabel("samples seen (millions)")
    ax.set_ylabel("joint error on training batches (mm)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.4)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.set_title(f"Training history: {len(stages)} stage(s), {stages[-1].end_samples:,} samples")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
