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


def test_dropping_channels_that_contribute_nothing_keeps_the_output_exactly(hand_model):
    """Zero the second convolution's weights on half the channels inside every block, and
    give the stream channels past 12 no reader and no writer: narrowing to what is left must
    pick exactly those channels and give the same outputs."""
    source = _randomised(hand_model)
    with torch.no_grad():
        for hourglass in (source.image_hourglass, source.mesh_hourglass):
            for block in hourglass.blocks():
                inner = block.body[0].out_channels
                block.body[3].weight[:, inner // 2 :] = 0
        hg = source.image_hourglass
        # Stream channels 12..15 of the image hourglass: nothing reads them and every
        # writer leaves them 0 (zero weights and a zero batch-norm shift), so they stay 0.
        readers = [b.body[0] for b in hg.blocks()] + [d[0][0] for d in hg.down] + [hg.head]
        for conv in readers:
            conv.weight[:, 12:] = 0
        for bn in [hg.stem[0][1], *(d[0][1] for d in hg.down), *(b.body[4] for b in hg.blocks())]:
            bn.weight[12:] = 0
            bn.bias[12:] = 0
    target = dataclasses.replace(WIDE, image_channels=12, image_block_channels=8, mesh_block_channels=6)
    narrow = narrowed(source, target, hand_model.mesh_coords)
    depth = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    expected, actual = _outputs(source, depth), _outputs(narrow, depth)
    for name in expected:
        # The same sums, with some zero terms left out: equal to float rounding.
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in source.parameters())


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
