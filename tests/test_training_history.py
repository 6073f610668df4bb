import csv
import json

import cv2
import numpy as np
import pytest

from tracker.evaluate import write_training_curve
from tracker.training_history import (
    CURRENT_STAGE,
    TrainingHistoryError,
    last_narrowing,
    load_training_history,
    plot_training_curve,
    smoothed,
)


def write_stage(directory, suffix, start_samples, joints_cm, learning_rate=1e-3, batch=16, crop_frame="camera", narrowed_from=None):
    """A stage's config and log as tracker.train writes them (suffix "" for the current one)."""
    config = {"train": {"learning_rate": learning_rate, "data": {"crop_frame": crop_frame}}, "world_size": 1}
    if start_samples is not None:
        config["initialised_from"] = {"path": "weights", "samples_seen": start_samples, "seconds": 60.0, "device": "cpu"}
        if narrowed_from:
            config["initialised_from"]["narrowed_from"] = narrowed_from
    name = f"_{suffix}" if suffix else ""
    (directory / f"training_config{name}.json").write_text(json.dumps(config))
    with open(directory / f"training_metrics{name}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "samples_seen", "lr", "joints_cm"])
        for i, value in enumerate(joints_cm):
            writer.writerow([20 * (i + 1), 20 * (i + 1) * batch, learning_rate, "nan" if value is None else value])


def test_stages_are_chained_by_where_each_began(tmp_path):
    write_stage(tmp_path, "", 1600, [1.0, 0.9], crop_frame="ray")  # the current weights, trained last
    write_stage(tmp_path, "tune1", 640, [2.0, 1.8, 1.7])
    write_stage(tmp_path, "base", None, [None, 5.0])  # no refit terms in the first rows yet
    stages = load_training_history(tmp_path)
    assert [s.name for s in stages] == ["base", "tune1", CURRENT_STAGE]
    assert [s.start_samples for s in stages] == [0, 640, 1600]
    assert [s.end_samples for s in stages] == [640, 1600, 2240]  # start + last logged row
    np.testing.assert_allclose(stages[1].joint_error_mm, [20.0, 18.0, 17.0])  # cm -> mm
    assert np.isnan(stages[0].joint_error_mm[0])
    assert stages[2].peak_learning_rate == pytest.approx(1e-3)
    assert [s.crop_frame for s in stages] == ["camera", "camera", "ray"]
    path = tmp_path / "curve.png"
    plot_training_curve(stages, path, held_out_mm=9.5)
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 100


def test_the_stage_that_narrowed_the_network_is_found_after_later_fine_tunes(tmp_path):
    wide = {"image_channels": 64, "image_block_channels": 64, "mesh_channels": 64, "mesh_block_channels": 64}
    write_stage(tmp_path, "base", None, [5.0])
    assert last_narrowing(load_training_history(tmp_path)) is None
    write_stage(tmp_path, "narrow", 320, [2.0], narrowed_from=wide)
    write_stage(tmp_path, "", 640, [1.0])  # a fine-tune of the narrowed weights as they are
    stages = load_training_history(tmp_path)
    assert [s.narrowed_from for s in stages] == [None, wide, None]
    narrowing = last_narrowing(stages)
    assert narrowing.name == "narrow" and narrowing.start_samples == 320


def test_steps_logged_twice_by_a_resumed_run_count_once(tmp_path):
    write_stage(tmp_path, "", None, [3.0, 2.0, 1.0])
    path = tmp_path / "training_metrics.csv"
    lines = path.read_text().splitlines()
    # The run died after logging step 40 and resumed from a checkpoint at step 20.
    path.write_text("\n".join(lines + ["40,640,0.001,1.5", "60,960,0.001,0.5"]) + "\n")
    (stage,) = load_training_history(tmp_path)
    assert stage.samples.tolist() == [320, 640, 960]
    np.testing.assert_allclose(stage.joint_error_mm, [30.0, 15.0, 5.0])


def test_a_directory_without_logs_has_no_history(tmp_path):
    assert load_training_history(tmp_path) == []
    assert write_training_curve(tmp_path, tmp_path / "curve.png", 10.0) == []
    assert not (tmp_path / "curve.png").exists()


def test_a_config_without_its_log_is_left_out(tmp_path):
    write_stage(tmp_path, "tune1", 640, [2.0])
    (tmp_path / "training_metrics_tune1.csv").unlink()
    write_stage(tmp_path, "", 1600, [1.0])
    assert [s.name for s in load_training_history(tmp_path)] == [CURRENT_STAGE]


def test_broken_histories_say_what_is_wrong(tmp_path, capsys):
    write_stage(tmp_path, "", 640, [1.0])
    write_stage(tmp_path, "tune1", 640, [2.0])
    with pytest.raises(TrainingHistoryError, match="same sample count"):
        load_training_history(tmp_path)
    # The evaluation goes on without the picture and says why.
    assert write_training_curve(tmp_path, tmp_path / "curve.png", 10.0) == []
    assert "same sample count" in capsys.readouterr().out

    # Whatever is wrong with a config, it is this error (which the evaluation survives),
    # never another that would end the evaluation after its slow part.
    for damaged in (b"{not json", b"\xff\xfe{}", b"null", b'{"initialised_from": {"samples_seen": "many"}}', b'{"train": 3}'):
        (tmp_path / "training_config_tune1.json").write_bytes(damaged)
        with pytest.raises(TrainingHistoryError, match="training_config_tune1.json"):
            load_training_history(tmp_path)

    (tmp_path / "training_config_tune1.json").unlink()
    (tmp_path / "training_metrics.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TrainingHistoryError, match="not a training log"):
        load_training_history(tmp_path)


def test_smoothing_is_a_centred_mean_that_skips_gaps():
    values = np.array([np.nan, 1.0, 2.0, 3.0, np.nan, np.nan, np.nan])
    # Golden values: each output is the mean of the finite values among itself and its
    # two neighbours; a window with none is NaN.
    np.testing.assert_allclose(smoothed(values, 3), [1.0, 1.5, 2.0, 2.5, 3.0, np.nan, np.nan])
    np.testing.assert_allclose(smoothed(np.arange(4.0), 1), np.arange(4.0))


def test_a_log_line_cut_short_is_left_out(tmp_path):
    write_stage(tmp_path, "", None, [3.0, 2.0])
    path = tmp_path / "training_metrics.csv"
    path.write_text(path.read_text() + "60,96")  # killed while writing the row
    (stage,) = load_training_history(tmp_path)
    assert stage.samples.tolist() == [320, 640]
    path.write_text(path.read_text() + "\n8")  # a row with only its step
    assert load_training_history(tmp_path)[0].samples.tolist() == [320, 640]


def test_logs_of_other_weights_are_not_drawn_as_theirs(tmp_path, capsys):
    write_stage(tmp_path, "", 1600, [1.0, 0.9])  # rows at 320 and 640 samples: the weights saw 2240
    assert [s.name for s in write_training_curve(tmp_path, tmp_path / "curve.png", 10.0, trained_samples=2240)] == [CURRENT_STAGE]
    (tmp_path / "curve.png").unlink()
    # A log whose last row came before the run stopped (older versions): within one interval.
    assert write_training_curve(tmp_path, tmp_path / "curve.png", 10.0, trained_samples=2240 + 320)
    (tmp_path / "curve.png").unlink()
    # New weights copied over these without their run's logs: the picture would show the old run.
    assert write_training_curve(tmp_path, tmp_path / "curve.png", 10.0, trained_samples=2240 + 64_000) == []
    assert "end at 2,240 samples, but the weights there saw 66,240" in capsys.readouterr().out
    assert not (tmp_path / "curve.png").exists()
