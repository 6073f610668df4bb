"""Benchmarks: each a ``python -m benchmarks.NAME`` command that measures one thing and writes
a JSON result (by default into ``benchmarks/results/``) holding the command, the machine and
commit it ran on, and its resolved configuration, so that every figure quoted elsewhere can
be traced to a file and reproduced."""

import json
import math
import sys
from pathlib import Path


def result_header(benchmark: str, argv: list[str] | None) -> dict:
    """The fields every result opens with: the benchmark's name, the command that reproduces
    it (``argv``: the arguments main was given, None for the process's own) and the machine,
    with the project's commit."""
    from tracker.machine import machine_info

    return {
        "benchmark": benchmark,
        "command": ["python", "-m", f"benchmarks.{benchmark}", *(sys.argv[1:] if argv is None else argv)],
        "machine": machine_info(),
    }


def _finite(value):
    """``value`` with every NaN or infinity in it made None (JSON's null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_result(path: Path, result: dict) -> None:
    """Write ``result`` as strict JSON: NaN and Infinity are not JSON, and strict readers (a
    browser, jq) refuse a file holding them, so a figure that came out non-finite (a mean of
    nothing) is written as null and said so, rather than the minutes of measuring lost."""
    try:
        text = json.dumps(result, indent=2, allow_nan=False)
    except ValueError:
        print(f"note: {path.name} holds figures that are not finite (a mean of nothing); written as null", file=sys.stderr)
        text = json.dumps(_finite(result), indent=2, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def cell(value: float | None, spec: str, unit: str = "") -> str:
    """A table cell: ``value`` formatted by ``spec`` with its unit, or "-" where there is none
    (no hand found to measure)."""
    return "-" if value is None else f"{value:{spec}}{unit}"


def print_table(columns: list[str], rows: list[list[str]]) -> None:
    """Print rows of already formatted cells under their column names, each column right-aligned
    to its widest cell, two spaces apart."""
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows)]
    for cells in (columns, *rows):
        print("  ".join(cell.rjust(width) for cell, width in zip(cells, widths)))


def check_output_path(parser, flag: str, path) -> None:
    """Refuse, as a one-line argument error, an output file that cannot be written: a folder
    in its place, or a folder for it that cannot be made. Checked before a benchmark
    measures for minutes, not after. (tracker.sinks is imported here, not at the top:
    segmentation workers import the benchmark modules again and need none of it.)"""
    from tracker.sinks import make_parent_folder

    if path.is_dir():
        parser.error(f"{flag} {path} is a folder; give the file's name")
    try:
        make_parent_folder(path)
    except OSError as exc:
        parser.error(f"cannot write {flag} {path}: {exc.strerror}" if exc.filename else str(exc))
