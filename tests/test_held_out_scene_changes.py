import json

from benchmarks.held_out_scene_changes import main, scene_variants
from tracker.synth.scene import SceneConfig


def test_each_variant_undoes_one_change_of_the_hands():
    variants = scene_variants(SceneConfig())
    assert variants["current"] == SceneConfig()
    assert variants["without_interpenetration_test"].max_finger_penetration_m is None
    assert variants["without_interpenetration_test"].pose == SceneConfig().pose
    per_bone = variants["with_per_bone_scales"]
    assert per_bone.max_finger_penetration_m == SceneConfig().max_finger_penetration_m
    assert (per_bone.pose.bone_scale_jitter, per_bone.pose.finger_length_jitter, per_bone.pose.thickness_jitter) == (0.15, 0.0, 0.0)
    assert variants["earlier_hands"].max_finger_penetration_m is None and variants["earlier_hands"].pose == per_bone.pose


def test_a_short_run_writes_every_variant(tmp_path):
    out = tmp_path / "changes.json"
    assert main(["--frames", "2", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["variants"]) == {"current", "without_interpenetration_test", "with_per_bone_scales", "earlier_hands"}
    assert all(v["mean_joint_error_mm"] > 0 for v in record["variants"].values()) and record["frames"] == 2
