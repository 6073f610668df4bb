"""The background plane's threshold benchmark (benchmarks.plane_thresholds): a row per gap and
setting, a plane where there is a surface and none where there is not."""

import json

from benchmarks.plane_thresholds import main


def test_a_run_writes_each_gap_and_setting(tmp_path):
    out = tmp_path / "planes.json"
    assert main(["--scenes", "1", "--min-border", "0.12", "0.5", "--min-share", "0.15", "0.9", "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert {row["min_share"] for row in result["rows"]} == {0.15, 0.9}
    # A plane on 90 % of the crop leaves no room for the hand in it: never found.
    assert all(row["plane_found"] == 0.0 for row in result["rows"] if row["min_share"] == 0.9)
    rows = {(row["gap_m"], row["min_border"]): row for row in result["rows"] if row["min_share"] == 0.15}
    assert set(rows) == {(gap, border) for gap in (None, 0.0, 0.01, 0.02, 0.04, 0.08) for border in (0.12, 0.5)}
    assert all(row["crops"] == 2 for row in rows.values())  # one scene, both crop frames
    # Scene 200: no surface, no plane; resting on a wall or desk, the plane in both crops,
    # with next to none of the hand. A stricter setting finds it in no more crops.
    assert rows[None, 0.12]["plane_found"] == 0.0
    assert rows[0.0, 0.12]["plane_found"] == 1.0 and rows[0.0, 0.12]["hand_pixels_cleared"] < 0.01
    assert all(rows[gap, 0.5]["plane_found"] <= rows[gap, 0.12]["plane_found"] for gap in (None, 0.0, 0.01, 0.02, 0.04, 0.08))
    assert result["config"]["first_scene"] == 200 and result["config"]["min_borders"] == [0.12, 0.5] and result["config"]["min_shares"] == [0.15, 0.9]
