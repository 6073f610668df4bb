import dataclasses

import pytest
import torch

from tracker.narrowing import block_channel_importance, block_width, check_narrowing, narrowed, stream_channel_importance
from tracker.network import DualGridNet, DualGridNetConfig

WIDE = DualGridNetConfig(image_channels=16, mesh_channels=12, feature_channels=8)


def _randomised(hand_model, config=WIDE, seed=0) -> DualGridNet:
    """A network with random batch-norm statistics too, so a copy that mixed up channels
    would show in the output."""
    torch.manual_seed(seed)
    net = DualGridNet(hand_model.mesh_coords, config)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _outputs(net, depth):
    with torch.no_grad():
        return net(depth)


def test_block_width_defaults_to_the_hourglass_width():
    assert block_width(WIDE, "image") == 16 and block_width(WIDE, "mesh") == 12
    config = dataclasses.replace(WIDE, image_block_channels=6)
    assert block_width(config, "image") == 6
    net = DualGridNet(torch.rand(50, 2).numpy() * 16, config)
    assert all(b.body[0].out_channels == 6 and b.body[3].in_channels == 6 for b in net.image_hourglass.blocks())
    assert all(b.body[0].out_channels == 12 for b in net.mesh_hourglass.blocks())


def test_narrowing_to_the_same_widths_is_the_same_network(hand_model):
    source = _randomised(hand_model)
    copy = narrowed(source, WIDE, hand_model.mesh_coords)
    depth = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for name, value in _outputs(source, depth).items():
        torch.testing.assert_close(_outputs(copy, depth)[name], value, rtol=0, atol=0)


def _scattered(generator: torch.Generator, width: int, count: int) -> torch.Tensor:
    """``count`` channel indices spread over 0..width-1 (not the last ones: a narrowing that
    kept the first channels whatever their weights would otherwise pass)."""
    return torch.randperm(width, generator=generator)[:count]


def _kill_channels(net: DualGridNet, dead_stream: dict, dead_inner: int, generator: torch.Generator) -> None:
    """Make channels contribute nothing: per hourglass, the stream channels ``dead_stream``
    (nothing reads them and every writer leaves them 0, so they stay 0), and in every block
    ``dead_inner`` of its inner channels (the second convolution gives them no weight)."""
    with torch.no_grad():
        for name, hg in (("image", net.image_hourglass), ("mesh", net.mesh_hourglass)):
            for block in hg.blocks():
                inner = block.body[0].out_channels
                block.body[3].weight[:, _scattered(generator, inner, dead_inner)] = 0
            dead = dead_stream[name]
            readers = [b.body[0] for b in hg.blocks()] + [d[0][0] for d in hg.down] + [hg.head]
            for conv in readers:
                conv.weight[:, dead] = 0
            for bn in [hg.stem[0][1], *(d[0][1] for d in hg.down), *(b.body[4] for b in hg.blocks())]:
                bn.weight[dead] = 0
                bn.bias[dead] = 0


def test_dropping_channels_that_contribute_nothing_keeps_the_output_exactly(hand_model):
    """Channels at scattered places that contribute nothing, in both hourglasses' streams
    and inside every block: narrowing to what is left must pick exactly the others and give
    the same outputs."""
    source = _randomised(hand_model)
    generator = torch.Generator().manual_seed(3)
    dead_stream = {"image": _scattered(generator, 16, 4), "mesh": _scattered(generator, 12, 4)}
    _kill_channels(source, dead_stream, dead_inner=6, generator=generator)
    # Inside the blocks: 16 - 6 = 10 in the image hourglass, 12 - 6 = 6 in the mesh one.
    target = dataclasses.replace(WIDE, image_channels=12, image_block_channels=10, mesh_channels=8, mesh_block_channels=6)
    narrow = narrowed(source, target, hand_model.mesh_coords)
    kept = set(range(16)) - set(dead_stream["image"].tolist())
    assert narrow.image_hourglass.head.weight.shape[1] == 12
    torch.testing.assert_close(narrow.image_hourglass.head.weight, source.image_hourglass.head.weight[:, sorted(kept)])
    depth = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    expected, actual = _outputs(source, depth), _outputs(narrow, depth)
    for name in expected:
        # The same sums, with some zero terms left out: equal to float rounding.
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in source.parameters())
    # Keeping the first channels instead changes the outputs: the test tells the two apart.
    first = DualGridNet(hand_model.mesh_coords, target).eval()
    first.load_state_dict({k: v for k, v in narrow.state_dict().items()})
    with torch.no_grad():
        first.image_hourglass.head.weight.copy_(source.image_hourglass.head.weight[:, :12])
    assert not torch.allclose(_outputs(first, depth)["vertices"], expected["vertices"], atol=1e-3)


def test_a_fine_tune_starts_from_the_narrowed_weights(hand_model, tmp_path):
    from tracker.crop import CropFrame
    from tracker.train import initial_weights
    from tracker.weights import export_weights

    source = _randomised(hand_model)
    export_weights(source, 0.26, tmp_path / "wide", crop_frame=CropFrame.RAY)
    target = dataclasses.replace(WIDE, image_block_channels=8, mesh_channels=10)
    network = DualGridNet(hand_model.mesh_coords, target)
    record = initial_weights(network, tmp_path / "wide")
    assert record["narrowed_from"] == {"image_channels": 16, "image_block_channels": 16, "mesh_channels": 12, "mesh_block_channels": 12}
    expected = narrowed(source, target, hand_model.mesh_coords).state_dict()
    for name, value in network.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)
    # The same widths spelt out (an explicit full block width) are no narrowing.
    same = DualGridNet(hand_model.mesh_coords, dataclasses.replace(WIDE, image_block_channels=16))
    assert "narrowed_from" not in initial_weights(same, tmp_path / "wide")


def test_importance_ranks_what_a_block_passes_on(hand_model):
    source = _randomised(hand_model)
    block = source.image_hourglass.blocks()[0]
    with torch.no_grad():
        block.body[3].weight[:, 3] = 0  # its output goes nowhere
        block.body[1].weight[5] = 1e-4  # always 0 after the ReLU: a tiny scale, a negative shift
        block.body[1].bias[5] = -1.0
        block.body[3].weight[:, 7] *= 10  # weighed ten times more than the others
    importance = block_channel_importance(block)
    assert importance[3] == 0 and importance[5] < 1e-3 * importance.median()
    assert int(importance.argmax()) == 7
    stream = stream_channel_importance(source.image_hourglass)
    assert stream.shape == (16,) and bool((stream > 0).all())


def test_narrowing_refuses_what_it_cannot_do(hand_model):
    with pytest.raises(ValueError, match="wider"):
        check_narrowing(WIDE, dataclasses.replace(WIDE, image_block_channels=20))
    with pytest.raises(ValueError, match="feature_channels 8 -> 4"):
        check_narrowing(WIDE, dataclasses.replace(WIDE, feature_channels=4))
    with pytest.raises(ValueError, match="learned sampling"):
        check_narrowing(dataclasses.replace(WIDE, learned_sampling=True), WIDE)
    with pytest.raises(ValueError, match="positive integer"):
        DualGridNetConfig(image_block_channels=0)


def test_narrowed_network_keeps_learned_sampling(hand_model):
    learned = dataclasses.replace(WIDE, learned_sampling=True)
    source = _randomised(hand_model, learned)
    with torch.no_grad():
        source.grid_to_vertices.mul_(1.5)
    narrow = narrowed(source, dataclasses.replace(learned, image_block_channels=4), hand_model.mesh_coords)
    torch.testing.assert_close(narrow.grid_to_vertices, source.grid_to_vertices)
