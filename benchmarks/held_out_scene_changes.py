"""What each change of the synthetic hands does to the held-out error of a set of weights.

The held-out frames follow the code's scene defaults, which have changed over time; to tell
a change of the frames from a change of the weights, this evaluates the same weights on the
same seeds with each later change of the hands undone in turn:

* ``current``: the scenes as ``python -m tracker.evaluate`` draws them;
* ``without_interpenetration_test``: fingers free to pass through each other;
* ``with_per_bone_scales``: every bone's length and thickness drawn on its own, +-15 %,
  without per-finger or per-hand scales (the earlier hands' proportions);
* ``earlier_hands``: both undone (the hands of the held-out set before these changes).

    python -m benchmarks.held_out_scene_changes [--weights DIR] [--frames 1000] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from benchmarks import result_header, write_result
from tracker.backends import create_backend
from tracker.estimator import HandEstimator
from tracker.evaluate import evaluate_synthetic
from tracker.hand_model import HandModel
from tracker.synth.dataset import config_to_dict
from tracker.synth.scene import SceneConfig
from tracker.training_data import example_config_for
from tracker.weights import WEIGHTS_DIR, WeightsError, load_manifest

RESULTS = Path(__file__).resolve().parent / "results"


def scene_variants(scene: SceneConfig) -> dict[str, SceneConfig]:
    per_bone = dataclasses.replace(scene.pose, bone_scale_jitter=0.15, finger_length_jitter=0.0, thickness_jitter=0.0)
    return {
        "current": scene,
        "without_interpenetration_test": dataclasses.replace(scene, max_finger_penetration_m=None),
        "with_per_bone_scales": dataclasses.replace(scene, pose=per_bone),
        "earlier_hands": dataclasses.replace(scene, pose=per_bone, max_finger_penetration_m=None),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.held_out_scene_changes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="exported weights (default: the shipped ones)")
    parser.add_argument("--frames", type=int, default=1000, help="held-out frames per variant (default 1000, as the model card)")
    parser.add_argument("--out", type=Path, default=RESULTS / "held_out_scene_changes.json", help="result JSON")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    try:
        manifest = load_manifest(args.weights)
        estimator = HandEstimator(create_backend("onnxruntime", args.weights), HandModel.load())
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base = example_config_for(manifest)
    results = {}
    for name, scene in scene_variants(base.scene).items():
        metrics = evaluate_synthetic(estimator, args.frames, dataclasses.replace(base, scene=scene), progress=True)
        results[name] = {
            "mean_joint_error_mm": metrics["mean_joint_error_mm"],
            "median_joint_error_mm": metrics["median_joint_error_mm"],
            "mean_initial_vertex_error_mm": metrics["mean_initial_vertex_error_mm"],
            "mean_refined_vertex_error_mm": metrics["mean_refined_vertex_error_mm"],
            "scene": config_to_dict(scene),
        }
        print(f"{name}: joints {metrics['mean_joint_error_mm']:.2f} mm, P_r {metrics['mean_refined_vertex_error_mm']:.2f} mm", flush=True)
    record = {
        **result_header("held_out_scene_changes", argv),
        "weights": {"directory": str(args.weights), "files": manifest.get("files")},
        "frames": args.frames,
        "variants": results,
    }
    write_result(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
