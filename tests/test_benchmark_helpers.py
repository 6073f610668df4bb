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


def test_the_cpu_headline_script_writes_each_figure_s_result_file(tmp_path):
    import os
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "cpu_headline.sh"
    env = {**os.environ, "CPU_HEADLINE_SMOKE": "1", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    shown = subprocess.run(["bash", str(script), "--help"], env=env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and shown.stdout.startswith("The README's CPU speed") and "OUT=/some/dir" in shown.stdout
    refused = subprocess.run(["bash", str(script), "3"], env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and refused.stderr.startswith("usage:") and not (tmp_path / "out").exists()

    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    speed, fast = (json.loads((out / name).read_text()) for name in ("network_speed_cpu.json", "network_speed_cpu_fast.json"))
    assert set(speed["backends"]) == {"onnxruntime", "onnxruntime-int8", "torch"} and speed["refit"]["median_ms"] > 0
    assert set(fast["backends"]) == {"onnxruntime", "onnxruntime-int8"} and fast["weights"]["dir"].endswith("fast")
    capacity = json.loads((out / "pipeline_speed_onnxruntime.json").read_text())
    assert capacity["frames"] == 30 and "pace_frames_per_second" not in capacity
    for name, weights in (("", "weights"), ("_fast", "fast")):
        live = json.loads((out / f"pipeline_speed_onnxruntime_memory_paced90{name}.json").read_text())
        assert live["pace_frames_per_second"] == 90.0 and live["frames"] + live["dropped"] == 30
        assert live["weights_dir"].endswith(weights)
