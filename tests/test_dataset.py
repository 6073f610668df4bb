import json

import numpy as np
import pytest

from tracker.synth.contact_sheet import main as contact_sheet_main
from tracker.synth.dataset import (
    SHARD_FIELDS,
    ShardError,
    generate_dataset,
    iter_shard_samples,
    load_shard,
    main as dataset_main,
    sample_seed,
)
from tracker.synth.scene import SceneConfig, render_sample


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, num_samples=5, seed=3, shard_size=2, workers=1, progress=False)
    return out


def test_shards_hold_every_sample_with_its_seed(dataset):
    shards = sorted(dataset.glob("shard-*.npz"))
    assert [p.name for p in shards] == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    seeds = np.concatenate([load_shard(p)["seed"] for p in shards])
    assert seeds.tolist() == [sample_seed(3, i) for i in range(5)]
    config = json.loads((dataset / "config.json").read_text())
    assert config["num_samples"] == 5 and config["scene"]["pose"]["distance_range_m"] == [0.2, 0.9]
    assert not list(dataset.glob("*.partial"))


def test_a_stored_sample_re_renders_from_its_seed(dataset, hand_model):
    stored = next(iter_shard_samples(dataset / "shard-00001.npz"))
    again = render_sample(hand_model, SceneConfig(), int(stored["seed"]))
    np.testing.assert_array_equal(stored["depth"], again.depth)
    np.testing.assert_array_equal(stored["joints"], again.joints)
    np.testing.assert_array_equal(stored["mask"], again.mask)
    # Mesh coordinates are stored as float16: 1/128 of a grid cell near the top of the range.
    np.testing.assert_allclose(stored["mesh_coords"], again.mesh_coords, atol=1 / 64, equal_nan=True)
    for field in SHARD_FIELDS:
        assert field in stored


def test_generation_is_deterministic_across_shard_sizes(dataset, tmp_path):
    generate_dataset(tmp_path, num_samples=5, seed=3, shard_size=5, workers=1, progress=False)
    one = load_shard(tmp_path / "shard-00000.npz")
    split = [load_shard(p) for p in sorted(dataset.glob("shard-*.npz"))]
    np.testing.assert_array_equal(one["depth"], np.concatenate([s["depth"] for s in split]))


def test_corrupt_and_foreign_shards_are_rejected(dataset, tmp_path):
    good = (dataset / "shard-00000.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ShardError, match="corrupt or truncated"):
        load_shard(tmp_path / "cut.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ShardError, match="not a synthetic-data shard"):
        load_shard(tmp_path / "other.npz")
    with pytest.raises(ShardError, match="not found"):
        load_shard(tmp_path / "missing.npz")


def test_command_lines(dataset, tmp_path, capsys):
    assert dataset_main(["--out", str(tmp_path / "d"), "--num-samples", "2", "--workers", "1", "--seed", "1"]) == 0
    assert "wrote 2 samples" in capsys.readouterr().out
    sheet = tmp_path / "sheet.png"
    assert contact_sheet_main(["--shard", str(dataset / "shard-00000.npz"), "--out", str(sheet), "--count", "2"]) == 0
    import cv2

    image = cv2.imread(str(sheet))
    assert image is not None and image.shape[1] == 4 * 220 and image.shape[0] > 2 * 220
    # Rendered from the same stream seed, the sheet shows the samples the shards hold.
    from_shard, rendered = tmp_path / "from_shard.png", tmp_path / "rendered.png"
    assert contact_sheet_main(["--shard", str(tmp_path / "d" / "shard-00000.npz"), "--out", str(from_shard), "--count", "2"]) == 0
    assert contact_sheet_main(["--seed", "1", "--out", str(rendered), "--count", "2"]) == 0
    # (The shard keeps depth in metres at another precision: a colour may round one level off.)
    difference = np.abs(cv2.imread(str(from_shard)).astype(int) - cv2.imread(str(rendered)).astype(int))
    assert difference.max() <= 1 and np.mean(difference > 0) < 0.01
    with pytest.raises(SystemExit):
        dataset_main(["--out", str(tmp_path / "e"), "--num-samples", "0"])


def test_windowed_scenes_cannot_go_into_shards(tmp_path):
    with pytest.raises(ValueError, match="render_window_m"):
        generate_dataset(tmp_path, num_samples=1, config=SceneConfig(render_window_m=0.4), progress=False)


def test_the_mask_target_is_hand_only_where_the_camera_measured_depth(hand_model):
    from tracker.training_data import ExampleConfig, make_example

    for seed in range(6):
        example = make_example(hand_model, ExampleConfig(), seed)
        hand, depth = example["hand_mask"][0] > 0, example["depth"][0]
        # The clean render's hand pixels that the noise left without depth (1: no data, or
        # beyond the cube) are not hand: the network cannot see them.
        assert hand.any() and np.all(depth[hand] < 1.0)


def test_a_left_hand_reaches_the_network_mirrored_into_a_right_one(hand_model):
    import dataclasses

    from tracker.training_data import ExampleConfig, example_from_sample
    from tracker.types import Handedness

    def signed_volume(vertices):  # > 0 for the right-hand template's winding, < 0 mirrored
        a, b, c = (vertices[hand_model.faces[:, k]].astype(np.float64) for k in range(3))
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)

    config = ExampleConfig()
    config = dataclasses.replace(config, scene=dataclasses.replace(config.scene, pose=dataclasses.replace(config.scene.pose, left_hand_probability=1.0)))
    sample = render_sample(hand_model, config.scene, 7)
    assert sample.pose.handedness == Handedness.LEFT and signed_volume(sample.vertices) < 0
    example = example_from_sample(sample, config, 7)
    assert signed_volume(example["vertices"]) > 0


def test_a_folder_that_already_holds_a_dataset_is_refused(dataset, tmp_path, capsys):
    before = sorted(p.name for p in dataset.iterdir())
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        generate_dataset(dataset, num_samples=2, seed=4, shard_size=1, workers=1, progress=False)
    assert sorted(p.name for p in dataset.iterdir()) == before
    assert dataset_main(["--out", str(dataset), "--num-samples", "2", "--workers", "1"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert sorted(p.name for p in dataset.iterdir()) == before


def test_the_contact_sheet_says_what_is_wrong_with_its_output_path(dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        contact_sheet_main(["--shard", str(dataset / "shard-00000.npz"), "--out", str(tmp_path / "sheet.txt"), "--count", "1"])
    assert "give a .png" in capsys.readouterr().err
    folder = tmp_path / "sheet.png"
    folder.mkdir()
    assert contact_sheet_main(["--shard", str(dataset / "shard-00000.npz"), "--out", str(folder), "--count", "1"]) == 2
    assert f"error: cannot write {folder}" in capsys.readouterr().err


def test_marked_examples_differ_from_far_ones_only_in_the_depth_past_the_image(hand_model):
    import dataclasses

    from tracker.crop import OUT_OF_IMAGE_DEPTH, OutOfImage
    from tracker.training_data import ExampleConfig, example_from_sample

    far_config = ExampleConfig()
    marked_config = dataclasses.replace(far_config, out_of_image=OutOfImage.MARKED)
    # The pose sampler puts the palm anywhere in the image: some cubes reach past its edge.
    for seed in range(60):
        sample = render_sample(hand_model, far_config.scene, seed)
        far, marked = example_from_sample(sample, far_config, seed), example_from_sample(sample, marked_config, seed)
        past = marked["depth"][0] == OUT_OF_IMAGE_DEPTH
        if past.any():
            break
    else:
        pytest.fail("no cube of the first 60 samples reached past the image")
    assert np.all(far["depth"][0][past] == 1.0)
    np.testing.assert_array_equal(marked["depth"][0][~past], far["depth"][0][~past])
    for key in ("mesh_coords", "coords_valid", "hand_mask", "vertices", "joints", "center_cam_m"):
        np.testing.assert_array_equal(marked[key], far[key], err_msg=key)
    assert not np.any(marked["hand_mask"][0][past])


def test_training_windows_mark_only_crop_pixels_past_the_sensor_image(hand_model):
    """Training renders a window around the hand; a cube reaching past the window's edge
    inside the image is not at the edge of the view, and a real frame shows something there.
    The training window (0.45 m) holds the crop; a narrower one shows both cases."""
    import dataclasses

    from tracker.crop import OUT_OF_IMAGE_DEPTH, OutOfImage, make_crop
    from tracker.training_data import ExampleConfig, example_from_sample, measured_hand

    base = ExampleConfig()
    config = dataclasses.replace(base, out_of_image=OutOfImage.MARKED, scene=dataclasses.replace(base.scene, render_window_m=0.25))
    i, j = np.meshgrid(np.arange(64.0), np.arange(64.0))
    past_window_only = past_sensor = 0
    for seed in range(30):
        sample = render_sample(hand_model, config.scene, seed)
        example = example_from_sample(sample, config, seed)
        # The same crop's map, to know where each of its pixels falls.
        depth_m, _ = measured_hand(sample)
        crop = make_crop(depth_m, sample.intrinsics, example["center_cam_m"], config.cube_size_m, sample.pose.handedness, frame=config.crop_frame)
        uvw = np.einsum("rc,cij->rij", crop.image_from_crop, np.stack([i, j, np.ones_like(i)]))
        u, v = uvw[0] / uvw[2], uvw[1] / uvw[2]  # window pixels
        sensor, window = sample.sensor or sample.intrinsics, sample.intrinsics
        us, vs = u + (sensor.cx - window.cx), v + (sensor.cy - window.cy)
        # Half a pixel of slack: nearest-neighbour rounding decides the border pixels.
        in_sensor = (us > 0.5) & (us < sensor.width - 1.5) & (vs > 0.5) & (vs < sensor.height - 1.5)
        out_sensor = (us < -0.5 - 1e-6) | (us > sensor.width - 0.5 + 1e-6) | (vs < -0.5 - 1e-6) | (vs > sensor.height - 0.5 + 1e-6)
        out_window = (u < -0.5 - 1e-6) | (u > window.width - 0.5 + 1e-6) | (v < -0.5 - 1e-6) | (v > window.height - 0.5 + 1e-6)
        marked = example["depth"][0] == OUT_OF_IMAGE_DEPTH
        assert np.all(marked[out_sensor]) and not np.any(marked[in_sensor]), seed
        past_window_only += int((out_window & in_sensor).any())
        past_sensor += int(out_sensor.any())
    # Both cases occur in these samples, so both were checked.
    assert past_window_only > 5 and past_sensor > 0, (past_window_only, past_sensor)


def test_evaluation_and_calibration_cut_their_crops_as_the_weights_were_trained():
    from tracker.crop import CropFrame, OutOfImage
    from tracker.training_data import example_config_for

    manifest = {"network": {"crop_size": 48}, "cube_size_m": 0.3, "crop_frame": "ray", "out_of_image": "marked"}
    config = example_config_for(manifest)
    assert (config.crop_size, config.cube_size_m, config.crop_frame, config.out_of_image) == (48, 0.3, CropFrame.RAY, OutOfImage.MARKED)
    old = example_config_for({"network": {"crop_size": 64}, "cube_size_m": 0.26})  # from before both choices
    assert (old.crop_frame, old.out_of_image) == (CropFrame.CAMERA, OutOfImage.FAR)
