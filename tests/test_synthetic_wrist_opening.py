"""The measurement of the synthetic scenes' open forearm tube (benchmarks.synthetic_wrist_opening)."""

import json

from benchmarks.synthetic_wrist_opening import main


def test_the_first_training_scenes_give_their_known_count(tmp_path):
    # The training stream's first 20 scenes: 11 look into the tube here. Two of them by 3 and
    # 4 pixels only, which another CPU's rounding could tip either way, hence the margin.
    out = tmp_path / "wrist.json"
    assert main(["--scenes", "20", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert 9 <= result["scenes_seeing_into_the_tube"] <= 13
    assert result["share_of_scenes"] == result["scenes_seeing_into_the_tube"] / 20
    assert 0 < result["pixels_median_where_seen"] <= result["pixels_max"]
    assert 5 < result["depth_below_capped_surface_mm_max"] < 40
