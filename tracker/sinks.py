"""Where tracking results go: JSON lines (one object per processed frame).

Each line is written and flushed as soon as its frame is done, so a crash or a failing
input never loses frames already processed. The object per frame:

    {"frame": int, "timestamp_ms": float, "serial": str,
     "hands": [{"handedness": "right"|"left", "confidence": float,
                "joints_xyz_m": [[x, y, z] x 21],     # MediaPipe order, camera frame, metres
                "joints_uv_px": [[u, v] x 21],        # depth-image pixels
                "vertices_xyz_m": [[x, y, z] x V]}],  # only with include_vertices
     "timings_ms": {stage: ms},
     "dropped_before": int}                   # frames lost before it (live / real time)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from tracker.pipeline import FrameResult


def _rounded(array: np.ndarray, decimals: int) -> list:
    return np.round(np.asarray(array, np.float64), decimals).tolist()


def frame_record(result: FrameResult, include_vertices: bool = False) -> dict:
    hands = []
    for hand in result.hands:
        entry = {
            "handedness": hand.handedness.value,
            "confidence": round(float(hand.confidence), 4),
            "joints_xyz_m": _rounded(hand.joints_cam_m, 5),  # 10 micrometres
            "joints_uv_px": _rounded(hand.joints_uv_px, 2),
        }
        if include_vertices:
            entry["vertices_xyz_m"] = _rounded(hand.vertices_cam_m, 5)
        hands.append(entry)
    return {
        "frame": int(result.frame.frame_number),
        "timestamp_ms": float(result.frame.timestamp_ms),
        "serial": result.frame.serial,
        "hands": hands,
        "timings_ms": {k: round(float(v), 3) for k, v in result.timings_ms.items()},
        "dropped_before": int(result.dropped_before),
    }


#: The argument that means this process's standard output, as a string: pathlib reads
#: ``./-`` as ``-`` too, and that one names a file.
STANDARD_OUTPUT_ARGUMENT = "-"


def is_standard_output(path: str | Path) -> bool:
    if isinstance(path, str) and path == STANDARD_OUTPUT_ARGUMENT:
        return True
    return str(path) == "/dev/stdout"


class JsonLinesSink:
    """Every line in the file is whole, even when a write fails (a full disk) halfway
    through one: what had gone out of that line is taken back before the error is raised.

    The string ``-`` (or ``/dev/stdout``) writes to standard output, wherever it goes: a pipe, a
    terminal, or a file it was redirected to, which is appended to rather than truncated.
    While the sink is open, anything else written to standard output (a native library's
    log) goes to standard error instead, so the stream stays JSON lines; a reader that
    closes the pipe (``| head``) stops the run like a closed viewer, as a stop, not an error.
    """

    #: Why the pipeline stopped when ``stop_requested`` is set.
    stop_reason = "output closed"

    def __init__(self, path: str | Path, include_vertices: bool = False) -> None:
        self.path = Path(path)
        self.include_vertices = include_vertices
        self.stop_requested = False
        self._standard_output = is_standard_output(path)
        if self._standard_output:
            # A duplicate of the descriptor, not a reopening of /dev/stdout: that would
            # truncate a redirected file and keep a write position of its own, so lines and
            # anything else written to it would overwrite each other.
            sys.stdout.flush()
            self._file = os.fdopen(os.dup(1), "wb", buffering=0)
            os.dup2(2, 1)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: a line (tens of kB with the mesh) goes out in one write call, here.
            self._file = open(self.path, "wb", buffering=0)
        # A pipe or a terminal cannot be taken back: lines are still written whole.
        self._seekable = self._file.seekable() and not self._standard_output

    def write(self, result: FrameResult) -> None:
        if self.stop_requested:
            return
        # allow_nan=False: a NaN or infinity would make the line invalid JSON for strict readers.
        line = (json.dumps(frame_record(result, self.include_vertices), separators=(",", ":"), allow_nan=False) + "\n").encode()
        start = self._file.tell() if self._seekable else None
        try:
            rest = memoryview(line)
            while rest:
                rest = rest[self._file.write(rest) :]
        except BrokenPipeError:
            if not self._standard_output:
                raise
            self.stop_requested = True  # the reader has gone: nothing more can be delivered
        except OSError:
            if start is not None:
                try:
                    os.ftruncate(self._file.fileno(), start)
                    self._file.seek(start)
                except OSError:
                    pass  # the write's own error says more
            raise

    def close(self) -> None:
        if not self._file.closed:
            if self._standard_output:
                sys.stdout.flush()
                os.dup2(self._file.fileno(), 1)  # standard output back where it was
            self._file.close()
