"""Start a narrower Dual Grid Net from trained weights of a wider one.

Most of a forward on a CPU is the 3x3 convolutions of the image hourglass's top level, and
their cost goes with the product of their input and output channels. Training a narrower
network from scratch takes as long as the wide one took; a fine-tune starts it instead from
the wide one's weights on the channels that matter most (``tracker.train --init-from
WEIGHTS --image-channels N --image-block-channels K ...``). That start is no finished
network: the running batch statistics after a narrowed layer are the wide network's until
the fine-tune updates them, and what the dropped channels carried has to be learnt again
(how far a fine-tune got: ``docs/training_history.md``).

Two kinds of channel can go:

- the channels inside a residual block (between its two convolutions): each block keeps
  those whose output the block's second convolution weighs most, measured as
  ``|w2[:, c]| * rms(relu(bn1(x))_c)``;
- an hourglass's width, the channels every block adds to (its residual stream): one set is
  kept for the whole hourglass, the channels the convolutions reading the stream weigh most
  (the norm of their weights on the channel, summed over every convolution reading it).

The rest of the network (the extension, the sampling matrix) is copied as is. Kept channels
stay in their order, so narrowing to the full width gives the same network.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from tracker.network import DualGridNet, DualGridNetConfig, Hourglass, ResidualBlock

#: Fields of the network's config that narrowing may change; everything else must match.
WIDTHS = ("image_channels", "image_block_channels", "mesh_channels", "mesh_block_channels")


def block_width(config: DualGridNetConfig, hourglass: str) -> int:
    """The channels inside the residual blocks of ``hourglass`` ("image" or "mesh")."""
    inner = getattr(config, f"{hourglass}_block_channels")
    return getattr(config, f"{hourglass}_channels") if inner is None else inner


def check_narrowing(source: DualGridNetConfig, target: DualGridNetConfig) -> None:
    """Raise ValueError unless ``target`` is ``source`` with no width larger (learned
    sampling may be switched on, as in any fine-tune)."""
    others = {f.name for f in dataclasses.fields(DualGridNetConfig)} - set(WIDTHS) - {"learned_sampling"}
    differing = sorted(name for name in others if getattr(source, name) != getattr(target, name))
    if differing:
        raise ValueError(
            "only the widths can differ from the weights started from: "
            + ", ".join(f"{name} {getattr(source, name)} -> {getattr(target, name)}" for name in differing)
        )
    if source.learned_sampling and not target.learned_sampling:
        raise ValueError("the weights started from were trained with learned sampling, which cannot go back to bilinear")
    for hourglass in ("image", "mesh"):
        for name, wide, narrow in (
            (f"{hourglass}_channels", getattr(source, f"{hourglass}_channels"), getattr(target, f"{hourglass}_channels")),
            (f"{hourglass}_block_channels", block_width(source, hourglass), block_width(target, hourglass)),
        ):
            if narrow > wide:
                raise ValueError(f"{name} {narrow} is wider than the {wide} of the weights started from: a network can be narrowed, not widened")


def _post_relu_rms(bn: nn.BatchNorm2d) -> torch.Tensor:
    """Per channel, the root mean square of relu(bn(x)) for a batch-normalised x ~ N(0, 1)
    (the running statistics make bn's output scale * N(0, 1) + shift)."""
    scale, shift = bn.weight.detach().abs(), bn.bias.detach()
    # E[relu(s z + b)^2] for z ~ N(0, 1): (s^2 + b^2) Phi(b/s) + s b phi(b/s).
    ratio = shift / scale.clamp_min(1e-12)
    cdf = 0.5 * (1 + torch.erf(ratio / math.sqrt(2)))
    pdf = torch.exp(-0.5 * ratio * ratio) / math.sqrt(2 * math.pi)
    return ((scale * scale + shift * shift) * cdf + scale * shift * pdf).clamp_min(0).sqrt()


def block_channel_importance(block: ResidualBlock) -> torch.Tensor:
    """(inner,) how much each channel inside ``block`` contributes to its output."""
    first_bn, second_conv = block.body[1], block.body[3]
    weight_norm = second_conv.weight.detach().flatten(2).norm(dim=2).norm(dim=0)  # over outputs and taps
    return weight_norm * _post_relu_rms(first_bn)


def stream_channel_importance(hourglass: Hourglass) -> torch.Tensor:
    """(channels,) how much the convolutions reading the hourglass's residual stream weigh
    each of its channels."""
    readers = [b.body[0] for b in hourglass.blocks()] + [d[0][0] for d in hourglass.down] + [hourglass.head]
    return sum(conv.weight.detach().transpose(0, 1).flatten(1).norm(dim=1) for conv in readers)


def _top(importance: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` largest entries, in ascending index order."""
    return torch.sort(torch.topk(importance, count).indices).values


def _copy_conv(source: nn.Conv2d, target: nn.Conv2d, out_index: torch.Tensor | None, in_index: torch.Tensor | None) -> None:
    weight = source.weight.detach()
    if out_index is not None:
        weight = weight[out_index]
    if in_index is not None:
        weight = weight[:, in_index]
    target.weight.data.copy_(weight)
    if source.bias is not None:
        bias = source.bias.detach()
        target.bias.data.copy_(bias if out_index is None else bias[out_index])


def _copy_bn(source: nn.BatchNorm2d, target: nn.BatchNorm2d, index: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).data.copy_(getattr(source, name).detach()[index])
    target.num_batches_tracked.data.copy_(source.num_batches_tracked.detach())


def _narrow_hourglass(source: Hourglass, target: Hourglass) -> None:
    wide = source.head.in_channels
    narrow = target.head.in_channels
    stream = _top(stream_channel_importance(source), narrow) if narrow < wide else torch.arange(wide)
    stem_conv, stem_bn = source.stem[0][0], source.stem[0][1]
    _copy_conv(stem_conv, target.stem[0][0], stream, None)
    _copy_bn(stem_bn, target.stem[0][1], stream)
    for (sd, td) in zip(source.down, target.down):
        _copy_conv(sd[0][0], td[0][0], stream, stream)
        _copy_bn(sd[0][1], td[0][1], stream)
    for sb, tb in zip(source.blocks(), target.blocks()):
        inner_count = tb.body[0].out_channels
        inner = _top(block_channel_importance(sb), inner_count)
        _copy_conv(sb.body[0], tb.body[0], inner, stream)
        _copy_bn(sb.body[1], tb.body[1], inner)
        _copy_conv(sb.body[3], tb.body[3], stream, inner)
        _copy_bn(sb.body[4], tb.body[4], stream)
    _copy_conv(source.head, target.head, None, stream)


@torch.no_grad()
def narrow_into(source: DualGridNet, target: DualGridNet) -> None:
    """Copy ``source``'s weights on the channels kept into ``target``, whose config is
    ``source``'s with some widths smaller."""
    check_narrowing(source.config, target.config)
    # Every entry of the target is written below: a layer added to the network later must be
    # narrowed here too, not left at its random initialisation.
    for tensor in target.state_dict().values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    _narrow_hourglass(source.image_hourglass, target.image_hourglass)
    _narrow_hourglass(source.mesh_hourglass, target.mesh_hourglass)
    if target.config.learned_sampling:
        # From bilinear weights too: learned sampling starts from them.
        target.grid_to_vertices.data.copy_(source.grid_to_vertices.detach())
    unwritten = [name for name, tensor in target.state_dict().items() if tensor.is_floating_point() and bool(torch.isnan(tensor).any())]
    if unwritten:
        raise RuntimeError(f"narrowing left these entries of the network unset: {unwritten}")


def narrowed(source: DualGridNet, config: DualGridNetConfig, mesh_coords) -> DualGridNet:
    """A network of ``config`` holding ``source``'s weights on the channels kept; in eval mode."""
    target = DualGridNet(mesh_coords, config)
    narrow_into(source, target)
    return target.eval()
