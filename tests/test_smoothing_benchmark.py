"""The smoothing benchmark (benchmarks.smoothing): its offline filtering is the tracker's own."""

import json

from benchmarks.smoothing import main


def test_the_offline_filtering_matches_the_tracker_and_a_setting_is_chosen(tmp_path):
    out = tmp_path / "smoothing.json"
    assert main(["--sequences", "1", "--frames", "20", "--checked", "1", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 0
    for check in result["tracker_check"].values():
        # The same float64 filter on the same estimates; the tracker filters float32 joints
        # together with the mesh, which differs below a micrometre.
        assert abs(check["offline"]["error_mm"] - check["tracker"]["error_mm"]) < 1e-3
        assert abs(check["offline"]["jitter_mm"] - check["tracker"]["jitter_mm"]) < 1e-3
    chosen_on = [r["name"] for r in result["config"]["regimes"] if r["chosen_on"]]
    assert chosen_on == ["30fps_calm", "90fps_brisk"]
    for regime in chosen_on:
        raw, chosen = result["unsmoothed"][regime], result["default"][regime]
        assert chosen["error_mm"] <= 1.1 * raw["error_mm"] + 1e-9 and chosen["jitter_mm"] < raw["jitter_mm"]
