"""The helpers every benchmark writes its result and prints its table with."""

import json
import subprocess

import numpy as np

from benchmarks import cell, print_table, result_header, write_result


def test_a_result_opens_with_the_command_that_reproduces_it_and_the_commit():
    header = result_header("working_distance", ["--poses", "3"])
    assert header["benchmark"] == "working_distance"
    assert header["command"] == ["python", "-m", "benchmarks.working_distance", "--poses", "3"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert header["machine"]["git_commit"] == (commit or None)


def test_a_result_is_strict_json_with_non_finite_figures_as_null(tmp_path, capsys):
    path = tmp_path / "deeper" / "result.json"  # its folder made as well
    write_result(path, {"mean_mm": float("nan"), "rows": [{"p99_ms": np.float64("inf")}, (1.5, -float("inf"))], "frames": 3})
    # json.loads would take NaN back; a strict reader would not.
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("}\n")
    assert json.loads(text) == {"mean_mm": None, "rows": [{"p99_ms": None}, [1.5, None]], "frames": 3}
    assert "not finite" in capsys.readouterr().err
    write_result(path, {"mean_mm": 2.0})  # finite: nothing said
    assert json.loads(path.read_text()) == {"mean_mm": 2.0} and capsys.readouterr().err == ""


def test_a_table_aligns_each_column_to_its_widest_cell(capsys):
    print_table(["distance", "joint error"], [["0.30 m", cell(5.46, ".1f", " mm")], ["1.40 m", cell(None, ".1f", " mm")]])
    assert capsys.readouterr().out.splitlines() == [
        "distance  joint error",
        "  0.30 m       5.5 mm",
        "  1.40 m            -",
    ]
