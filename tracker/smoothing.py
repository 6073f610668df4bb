"""Temporal smoothing of keypoints: the One-Euro filter (Casiez et al., CHI 2012).

A low-pass filter whose cut-off rises with speed: smoothing where the hand is still (less
jitter), little where it moves (little lag). Applied per coordinate of the 21 joints and
the mesh vertices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroConfig:
    """The default: of the settings ``benchmarks/smoothing.py`` tried on rendered moving
    hands tracked as by default (refined, within a track from the last frame's pose too),
    the one with the least jitter among those that add at most a tenth to the mean joint
    error, at 30 and at 90 frames/s (``benchmarks/results/smoothing.json``: jitter 32 % and
    38 % lower, error 7.6 % and 9.2 % higher). The one before it (1.5 Hz, 80, 2 Hz), chosen
    so when the last frame's pose was not yet carried on by the hand's motion, gives 31 % and
    37 % less jitter for 6.4 % and 8.5 % more error; then the 0.5 Hz cut-off added 10.4 %
    at 90 frames/s."""

    #: Cut-off at rest, Hz: lower = smoother when still.
    min_cutoff_hz: float = 0.5
    #: How fast the cut-off rises with speed (per m/s): higher = less lag in fast motion.
    speed_coefficient: float = 80.0
    #: Cut-off for the speed estimate itself, Hz.
    derivative_cutoff_hz: float = 2.0


#: The interval assumed between frames until the timestamps show one (30 frames/s).
NOMINAL_FRAME_S = 1.0 / 30.0


def _alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters arrays of a fixed shape (e.g. (21, 3) joints in metres) over timestamps."""

    def __init__(self, config: OneEuroConfig = OneEuroConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self._value = None
        self._speed = None
        self._time_s = None
        self._last_dt = NOMINAL_FRAME_S

    def __call__(self, value: np.ndarray, time_s: float) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if not math.isfinite(time_s):
            # A frame without a usable clock reading: taken one interval after the last, so
            # one NaN timestamp cannot make every later output NaN.
            time_s = 0.0 if self._time_s is None else self._time_s + self._last_dt
        if self._value is None or self._value.shape != value.shape:
            self._value, self._speed, self._time_s = value.copy(), np.zeros_like(value), time_s
            return value.copy()
        dt = time_s - self._time_s
        if dt <= 0:
            # A repeated timestamp (a clock quirk, or an input with no clock at all) or a
            # device clock that stepped back while its frames went on in order (the pipeline
            # starts a new track, and resets this filter, on a real gap) gives no interval to
            # filter over. Starting over would make the output jump to the raw sample, keeping
            # the old value would freeze a clockless input for good: take the interval between
            # the last two increasing timestamps (or a nominal frame).
            dt = self._last_dt
        else:
            self._last_dt = dt
        # A coordinate without a sample holds its filtered value rather than carrying the
        # NaN into every later output.
        value = np.where(np.isfinite(value), value, self._value)
        speed = (value - self._value) / dt
        self._speed = self._speed + _alpha(self.config.derivative_cutoff_hz, dt) * (speed - self._speed)
        cutoff = self.config.min_cutoff_hz + self.config.speed_coefficient * np.abs(self._speed)
        self._value = self._value + _alpha(cutoff, dt) * (value - self._value)
        # ... and one that had none yet (a NaN in the first frame) starts from its first sample.
        unset = ~(np.isfinite(self._value) & np.isfinite(self._speed))
        self._value[unset], self._speed[unset] = value[unset], 0.0
        self._time_s = time_s
        return self._value.copy()
