"""Where tracking results go: JSON lines (one object per processed frame).

Each line is written and flushed as soon as its frame is done, so a crash or a failing
input never loses frames already processed. The object per frame:

    {"frame": int, "timestamp_ms": float, "serial": str,
     "file": str,                             # only for a folder's PNGs: which one
     "hands": [{"handedness": "right"|"left", "confidence": float,
                "joints_xyz_m": [[x, y, z] x 21],     # MediaPipe order, camera frame, metres
                "joints_uv_px": [[u, v] x 21],        # depth-image pixels
                "vertices_xyz_m": [[x, y, z] x V]}],  # only with include_vertices
     "timings_ms": {stage: ms},
     "dropped_before": int}                   # frames lost before it (live / real time)
"""

from __future__ import annotations

import errno
import functools
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np

from tracker.pipeline import FrameResult


@functools.lru_cache(maxsize=16)
def _rows_format(rows: int, columns: int, decimals: int) -> str:
    row = "[" + ",".join([f"%.{decimals}f"] * columns) + "]"
    return "[" + ",".join([row] * rows) + "]"


def json_rows(values: np.ndarray, decimals: int) -> str:
    """JSON text of an (N, C) array of finite numbers, each written with ``decimals``
    decimals: one C-level format of the whole array, three times as fast as rounding it
    and handing the lists to ``json`` (the tracker writes a line every frame). A value that
    is not finite is refused, as ``json.dumps(allow_nan=False)`` refuses it: NaN is not JSON."""
    values = np.asarray(values)
    rows, columns = values.shape
    text = _rows_format(rows, columns, decimals) % tuple(values.ravel().tolist())
    if "n" in text:  # "nan", "inf": no number written this way has a letter
        raise ValueError("Out of range float values are not JSON compliant: the estimate holds NaN or infinity")
    return text


#: allow_nan=False: a NaN or infinity would make the line invalid JSON for strict readers.
#: One encoder for every line: ``json.dumps`` with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def frame_line(result: FrameResult, include_vertices: bool = False) -> str:
    """One frame's JSON object (the module's docstring), as one line without its newline."""
    hands = []
    for hand in result.hands:
        text = (
            f'{{"handedness":{_ENCODER.encode(hand.handedness.value)},"confidence":{_ENCODER.encode(round(float(hand.confidence), 4))},'
            f'"joints_xyz_m":{json_rows(hand.joints_cam_m, 5)},'  # 10 micrometres
            f'"joints_uv_px":{json_rows(hand.joints_uv_px, 2)}'
        )
        if include_vertices:
            text += f',"vertices_xyz_m":{json_rows(hand.vertices_cam_m, 5)}'
        hands.append(text + "}")
    frame = result.frame
    head = {"frame": int(frame.frame_number), "timestamp_ms": round(float(frame.timestamp_ms), 3), "serial": frame.serial}
    if frame.source_file:  # a folder's PNG: the file it came from
        head["file"] = frame.source_file
    head = _ENCODER.encode(head)
    timings = _ENCODER.encode({k: round(float(v), 3) for k, v in result.timings_ms.items()})
    return f'{head[:-1]},"hands":[{",".join(hands)}],"timings_ms":{timings},"dropped_before":{int(result.dropped_before)}}}'


#: The argument that means this process's standard output, as a string: pathlib reads
#: ``./-`` as ``-`` too, and that one names a file.
STANDARD_OUTPUT_ARGUMENT = "-"


def make_parent_folder(path: str | Path) -> None:
    """Create the folder ``path`` goes in (with those above it), or say plainly why not:
    ``mkdir`` alone names only "File exists" where a file stands in the way."""
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocking = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), parent)
        raise NotADirectoryError(f"cannot write {path}: {blocking} is a file, not a folder") from None


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
            try:
                if sys.stdout is None:  # the process was started with its standard output closed
                    raise OSError(errno.EBADF, os.strerror(errno.EBADF))
                sys.stdout.flush()
                self._file = os.fdopen(os.dup(1), "wb", buffering=0)
            except OSError as exc:
                raise OSError(
                    f"cannot write the JSON lines to standard output (--out -): it is closed or unusable ({exc.strerror or exc}); "
                    "redirect it (> FILE) or give --out FILE"
                ) from None
            os.dup2(2, 1)
        else:
            make_parent_folder(self.path)
            self._created = not os.path.lexists(self.path)
            # Opened without truncating, which waits for the first line or a run that ends
            # with none (``close``): an earlier run's file outlives a run interrupted before
            # tracking began (``abandon``). Unbuffered: a line (tens of kB with the mesh)
            # goes out in one write call, here.
            self._file = open(self.path, "ab", buffering=0)
        # A pipe, a terminal or a device (/dev/null) cannot be taken back nor emptied:
        # lines are still written whole.
        self._seekable = not self._standard_output and stat.S_ISREG(os.fstat(self._file.fileno()).st_mode)
        self._emptied = not self._seekable

    def _empty(self) -> None:
        if not self._emptied:
            self._file.truncate(0)
            self._file.seek(0)
            self._emptied = True

    def write(self, result: FrameResult) -> None:
        if self.stop_requested:
            return
        line = (frame_line(result, self.include_vertices) + "\n").encode()
        self._empty()
        start = self._file.tell() if self._seekable else None
        try:
            rest = memoryview(line)
            while rest:
                rest = rest[self._file.write(rest) :]
        except BrokenPipeError:
            if not self._standard_output:
                raise
            self.stop_requested = True  # the reader has gone: nothing more can be delivered
        except OSError as exc:
            if start is not None:
                try:
                    os.ftruncate(self._file.fileno(), start)
                    self._file.seek(start)
                except OSError:
                    pass  # the write's own error says more
            if exc.filename is None and exc.errno is not None and not self._standard_output:
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc  # a failed write names no file
            raise

    def abandon(self) -> None:
        """Close without a line written, the file as it was before: kept where it held an
        earlier run's lines, removed where this sink created it. Once lines are written, as
        ``close``."""
        if self._file.closed or self._emptied:
            self.close()
            return
        self._file.close()
        if self._created:
            self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if not self._file.closed:
            if not self._standard_output:
                self._empty()  # a run that ended with no line leaves no earlier run's behind
            if self._standard_output:
                sys.stdout.flush()
                os.dup2(self._file.fileno(), 1)  # standard output back where it was
            self._file.close()


class BackgroundSink:
    """Runs a slow output (the overlay video: drawing and encoding) on a thread of its own, so
    that the tracker thread goes on to the next frame meanwhile; on a 2-core CPU tracking a
    90 frames/s camera, drawing in line cost a tenth of the frames.

    At most ``max_waiting`` frames wait for it; one more waits for room (the output is not
    left behind for ever, nor frames dropped from it). Its failure is raised at the next
    ``write``, or at ``close``, which first writes what waits and then closes it. The frames
    it is given must not change afterwards (the tracker's results do not). A failure is
    raised once; the frames after it are not written.
    """

    _END = object()

    def __init__(self, sink, max_waiting: int = 8) -> None:
        import queue
        import threading

        self.sink = sink
        self._waiting: queue.Queue = queue.Queue(maxsize=max_waiting)
        self._failed = False
        self._error: BaseException | None = None  # the failure, until raised
        self._end_sent = False
        self._sink_done = False  # its own close or abandon called
        self._thread = threading.Thread(target=self._run, name=f"{type(sink).__name__}-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            result = self._waiting.get()
            if result is self._END:
                return
            if not self._failed:  # after a failure the rest is only taken off the queue
                try:
                    self.sink.write(result)
                except BaseException as exc:
                    self._error, self._failed = exc, True

    @property
    def stop_requested(self) -> bool:
        return getattr(self.sink, "stop_requested", False)

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def write(self, result: FrameResult) -> None:
        self._raise_failure()
        if not self._failed:
            self._waiting.put(result)

    def _finish(self):
        """The output's close or abandon to call, once nothing waits for it; None once called.
        Interrupted while it waits (Ctrl-C), it waits again when called again."""
        if not self._end_sent:
            self._waiting.put(self._END)
            self._end_sent = True
        self._thread.join()
        if self._sink_done:
            return None
        self._sink_done = True
        return self.sink

    def abandon(self) -> None:
        """As the output's own ``abandon`` (else ``close``), once nothing waits for it."""
        sink = self._finish()
        if sink is not None:
            getattr(sink, "abandon", sink.close)()

    def close(self) -> None:
        sink = self._finish()
        try:
            if sink is not None:
                sink.close()
        finally:
            self._raise_failure()
