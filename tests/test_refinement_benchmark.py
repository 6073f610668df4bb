"""The refinement benchmark (benchmarks.refinement): its figures and its contact sheet."""

import json

import pytest

from benchmarks.refinement import main


def test_the_benchmark_measures_before_and_after_on_synthetic_and_real_frames(tmp_path):
    out = tmp_path / "refinement.json"
    assert main(["--frames", "4", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    synthetic, real = result["synthetic"], result["real"]
    assert synthetic["frames"] == 4 and synthetic["frames_refined"] == 4
    # Point to plane is what the refinement minimises: it must fall wherever it ran.
    assert synthetic["mean_point_to_plane_mm"]["after"] < synthetic["mean_point_to_plane_mm"]["before"]
    assert synthetic["refine_ms"]["median"] > 0
    assert real["hands_found"] == real["frames"] == 19
    assert real["median_fitting_error_after_mm"] < real["median_fitting_error_before_mm"]
    assert result["config"]["refine"]["iterations"] == 2


@pytest.mark.parametrize("args", [["--frames", "0"], ["--iterations", "-1"]])
def test_bad_settings_are_refused(tmp_path, args):
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "r.json")])
