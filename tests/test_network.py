import numpy as np
import pytest
import torch

from tracker.network import DualGridNet, DualGridNetConfig, bilinear_sampling_matrix
from tracker.refit import Refit
from tracker.train import LossWeights, compute_losses
from tracker.training_data import ExampleConfig, fixed_examples

SMALL = DualGridNetConfig(image_channels=24, mesh_channels=24, feature_channels=8)


def _dense_extension(net, mesh_coords, features, probability):
    """The paper's definition, written directly: softmax over the 8x8 window of grid nodes."""
    g = net.config.mesh_grid_size
    nodes = torch.stack(torch.meshgrid(torch.arange(g) + 0.5, torch.arange(g) + 0.5, indexing="xy"), -1).reshape(-1, 2)
    m = mesh_coords.flatten(2).transpose(1, 2)
    diff = m[:, :, None, :] - nodes[None, None]
    inside = (diff.abs() < net.config.extension_window / 2).all(-1).float()
    kernel = torch.exp(-net.config.extension_sigma * (diff**2).sum(-1)) * inside
    weights = kernel / (kernel.sum(-1, keepdim=True) + 1e-6) * probability.flatten(2).transpose(1, 2)
    total = weights.sum(1)
    splat = torch.bmm(weights.transpose(1, 2), features.flatten(2).transpose(1, 2))
    grid = torch.cat([splat / (total[..., None] + 1e-3), torch.log1p(total)[..., None]], -1)
    return grid.transpose(1, 2).reshape(mesh_coords.shape[0], -1, g, g)


def test_separable_extension_equals_the_dense_definition(hand_model):
    net = DualGridNet(hand_model.mesh_coords, SMALL)
    gen = torch.Generator().manual_seed(0)
    coords = torch.rand(2, 2, 64, 64, generator=gen) * 16
    features = torch.randn(2, 8, 64, 64, generator=gen)
    probability = torch.rand(2, 1, 64, 64, generator=gen)
    fast = net.extension(coords, features, probability)
    # Products of the two 1-D normalisers differ from the 2-D one only by the epsilons.
    torch.testing.assert_close(fast, _dense_extension(net, coords, features, probability), rtol=1e-4, atol=1e-4)


def test_bilinear_sampling_reads_node_values_at_node_centres():
    coords = np.array([[0.5, 0.5], [3.5, 7.5], [4.0, 7.5], [15.5, 15.5]])
    s = bilinear_sampling_matrix(coords, 16)
    grid = np.arange(256, dtype=np.float32)  # value = row * 16 + col
    np.testing.assert_allclose(s @ grid, [0, 7 * 16 + 3, 7 * 16 + 3.5, 255], atol=1e-5)
    np.testing.assert_allclose(s.sum(1), 1.0, atol=1e-6)


def test_vertices_read_the_offset_grid_bilinearly_at_their_mesh_coordinates(hand_model):
    net = DualGridNet(hand_model.mesh_coords, SMALL).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)))
    sampling = torch.as_tensor(bilinear_sampling_matrix(hand_model.mesh_coords, SMALL.mesh_grid_size))
    expected = torch.einsum("vn,bcn->bvc", sampling, out["grid_offsets"].flatten(2))
    torch.testing.assert_close(out["vertices"], expected, rtol=1e-5, atol=1e-6)


def test_output_shapes(hand_model):
    net = DualGridNet(hand_model.mesh_coords, SMALL).eval()
    out = net(torch.zeros(3, 1, 64, 64))
    assert out["mesh_coords"].shape == (3, 2, 64, 64)
    assert out["hand_logit"].shape == (3, 1, 64, 64)
    assert out["vertices"].shape == (3, hand_model.num_vertices, 3)
    out = {k: v.detach() for k, v in out.items()}
    assert float(out["mesh_coords"].min()) >= 0 and float(out["mesh_coords"].max()) <= 16


def test_network_overfits_a_small_batch(hand_model):
    torch.manual_seed(0)
    batch = fixed_examples(ExampleConfig(), stream_seed=99, count=8)
    tiny = DualGridNetConfig(image_channels=16, mesh_channels=16, feature_channels=8, image_levels=2)
    net = DualGridNet(hand_model.mesh_coords, tiny)
    refit = Refit(hand_model)
    optimiser = torch.optim.Adam(net.parameters(), lr=5e-3)
    losses = []
    for step in range(70):
        terms = compute_losses(net(batch["depth"]), batch, refit, LossWeights(), use_refit=step >= 60)
        optimiser.zero_grad()
        terms["total"].backward()
        optimiser.step()
        losses.append({k: float(v.detach()) for k, v in terms.items()})
    # On a batch it can memorise the loss falls at least tenfold (the vertex term from
    # ~35 cm); the last steps include the refit terms, which must be finite and small too.
    assert losses[59]["total"] < losses[0]["total"] / 10, (losses[0], losses[59])
    assert losses[-1]["joints"] < losses[0]["initial"] / 5


def test_learned_sampling_starts_bilinear_and_trains_each_vertexs_own_nodes_only(hand_model):
    import dataclasses

    bilinear = DualGridNet(hand_model.mesh_coords, SMALL).eval()
    learned = DualGridNet(hand_model.mesh_coords, dataclasses.replace(SMALL, learned_sampling=True))
    learned.load_bilinear_state_dict(bilinear.state_dict())
    depth = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(learned.eval()(depth)["vertices"], bilinear(depth)["vertices"], rtol=0, atol=0)

    start = learned.grid_to_vertices.detach().clone()
    support = torch.as_tensor(bilinear_sampling_matrix(hand_model.mesh_coords, SMALL.mesh_grid_size, support=True).T.copy()) > 0
    assert (support.sum(0) == 4).all() and torch.equal(start[~support], torch.zeros(int((~support).sum())))
    optimizer = torch.optim.AdamW(learned.parameters(), lr=0.01, weight_decay=0.01)
    learned.train()
    for _ in range(2):
        optimizer.zero_grad()
        learned(depth)["vertices"].square().sum().backward()
        optimizer.step()
    changed = learned.grid_to_vertices.detach() != start
    assert changed[support].any() and not changed[~support].any()

    # Its state carries the trained weights; bilinear networks refuse them.
    again = DualGridNet(hand_model.mesh_coords, learned.config)
    again.load_state_dict(learned.state_dict())
    assert torch.equal(again.grid_to_vertices, learned.grid_to_vertices)
    with pytest.raises(RuntimeError, match="unexpected"):
        DualGridNet(hand_model.mesh_coords, SMALL).load_bilinear_state_dict(learned.state_dict())


def test_learned_sampling_exports_and_fine_tunes_from_bilinear_weights(hand_model, tmp_path):
    import dataclasses

    from tracker.crop import CropFrame
    from tracker.train import initial_weights
    from tracker.weights import WeightsError, export_weights, load_network

    bilinear = DualGridNet(hand_model.mesh_coords, SMALL).eval()
    export_weights(bilinear, 0.26, tmp_path / "bilinear", crop_frame=CropFrame.RAY)
    learned = DualGridNet(hand_model.mesh_coords, dataclasses.replace(SMALL, learned_sampling=True))
    initial_weights(learned, tmp_path / "bilinear")
    with torch.no_grad():
        learned.grid_to_vertices.mul_(1.5)  # as if trained
    export_weights(learned.eval(), 0.26, tmp_path / "learned", crop_frame=CropFrame.RAY)
    loaded, manifest = load_network(tmp_path / "learned")
    assert manifest["network"]["learned_sampling"] is True
    assert torch.equal(loaded.grid_to_vertices, learned.grid_to_vertices)
    # Learned sampling is not turned back into bilinear sampling.
    with pytest.raises(WeightsError, match="cannot go back to bilinear"):
        initial_weights(DualGridNet(hand_model.mesh_coords, SMALL), tmp_path / "learned")


def test_an_export_cut_short_leaves_the_earlier_one_whole(hand_model, tmp_path, monkeypatch):
    import tracker.weights
    from tracker.crop import CropFrame
    from tracker.weights import export_weights, load_network

    earlier = DualGridNet(hand_model.mesh_coords, SMALL).eval()
    export_weights(earlier, 0.26, tmp_path, crop_frame=CropFrame.RAY)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}

    def killed(network, path):  # a second Ctrl-C, a scheduler's SIGKILL while the ONNX is written
        path.write_bytes(b"half an onnx")
        raise KeyboardInterrupt

    monkeypatch.setattr(tracker.weights, "export_onnx", killed)
    newer = DualGridNet(hand_model.mesh_coords, SMALL).eval()
    with torch.no_grad():
        next(newer.parameters()).add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        export_weights(newer, 0.26, tmp_path, crop_frame=CropFrame.RAY)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    load_network(tmp_path)  # every checksum still matches
