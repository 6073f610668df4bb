"""Dual Grid Net (Wan et al., 2020, §3): depth crop -> initial mesh vertices P_s.

    64x64 normalised depth
      -> pixel-unshuffle x2 -> image-grid hourglass -> heads at 64x64 (pixel-shuffle x2):
           I_m  2 ch  mesh coordinate of each pixel (grid units, 0..16)
           I_f  d ch  features
           I_s  1 ch  hand-pixel logit (ours: the paper assumed a pre-segmented input)
      -> extension: each pixel's features splatted onto the 16x16 mesh grid at its predicted
         mesh coordinate, weights exp(-sigma |n - m|^2) normalised over the 8x8 grid nodes
         around m (sigma = 0.5), times the pixel's hand probability; a dense weight-matrix
         product so the graph exports to ONNX/TensorRT unchanged
      -> mesh-grid hourglass (pixel-unshuffle x2 too) -> 3-D offsets on the 16x16 grid
      -> sampling: each vertex reads the grid bilinearly at its fixed mesh coordinate (a
         fixed (256, V) matrix) -> P_s in crop-normalised coordinates

With ``learned_sampling`` (ours) each vertex's weights on its four grid nodes are trained,
starting from the bilinear ones. The hand model's 2-D mesh layout puts most vertices in a
cell shared with vertices far away on the surface (the palm side and the back of a finger
overlap), so no grid read bilinearly can place them all; weights of their own let vertices
in one cell differ. The matrix keeps its shape and sparsity, so the exported graph and its
speed are the same.

Crop-normalised coordinates are camera-frame offsets from the crop centre divided by half
the cube size (``tracker.crop``). Everything here has static shapes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class DualGridNetConfig:
    """Width and depth of the two hourglasses and the size of the grids."""

    crop_size: int = 64
    mesh_grid_size: int = 16
    image_channels: int = 64
    image_levels: int = 3
    mesh_channels: int = 64
    mesh_levels: int = 2
    feature_channels: int = 32
    extension_sigma: float = 0.5
    extension_window: int = 8
    learned_sampling: bool = False
    #: Channels between the two convolutions of each residual block (None: the hourglass's
    #: width). Most of a forward is these convolutions at the image hourglass's top level.
    image_block_channels: int | None = None
    mesh_block_channels: int | None = None

    def __post_init__(self) -> None:
        for name in ("image_channels", "mesh_channels", "feature_channels", "image_block_channels", "mesh_block_channels"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, inner_channels: int | None = None) -> None:
        super().__init__()
        inner = channels if inner_channels is None else inner_channels
        self.body = nn.Sequential(
            nn.Conv2d(channels, inner, 3, 1, 1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Conv2d(inner, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class Hourglass(nn.Module):
    """Encoder-decoder with a skip at every level (Newell et al.), static shapes."""

    def __init__(self, in_channels: int, channels: int, out_channels: int, levels: int, block_channels: int | None = None) -> None:
        super().__init__()

        def block() -> ResidualBlock:
            return ResidualBlock(channels, block_channels)

        self.stem = nn.Sequential(_conv_bn_relu(in_channels, channels), block())
        self.down = nn.ModuleList([nn.Sequential(_conv_bn_relu(channels, channels, 2), block()) for _ in range(levels)])
        self.skip = nn.ModuleList([block() for _ in range(levels)])
        self.bottom = block()
        self.up = nn.ModuleList([block() for _ in range(levels)])
        self.head = nn.Conv2d(channels, out_channels, 1)

    def blocks(self) -> list[ResidualBlock]:
        return [self.stem[1], *(d[1] for d in self.down), *self.skip, self.bottom, *self.up]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        skips = []
        for down, skip in zip(self.down, self.skip):
            skips.append(skip(x))
            x = down(x)
        x = self.bottom(x)
        for up, s in zip(self.up, reversed(skips)):
            x = up(F.interpolate(x, scale_factor=2.0, mode="nearest") + s)
        return self.head(x)


def bilinear_sampling_matrix(mesh_coords: np.ndarray, grid_size: int, support: bool = False) -> np.ndarray:
    """(V, G*G) float32: row v reads grid values bilinearly at mesh_coords[v]; with
    ``support``, 1 at the four nodes each vertex reads (whatever their weights) and 0 elsewhere.

    Grid node (row r, column c) sits at mesh coordinate (c + 0.5, r + 0.5): node centres.
    """
    m = np.asarray(mesh_coords, np.float64) - 0.5
    x0 = np.clip(np.floor(m[:, 0]), 0, grid_size - 2).astype(int)
    y0 = np.clip(np.floor(m[:, 1]), 0, grid_size - 2).astype(int)
    fx = np.clip(m[:, 0] - x0, 0, 1)
    fy = np.clip(m[:, 1] - y0, 0, 1)
    out = np.zeros((len(m), grid_size * grid_size), np.float32)
    rows = np.arange(len(m))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            index = (rows, (y0 + dy) * grid_size + x0 + dx)
            if support:
                out[index] = 1.0
            else:
                np.add.at(out, index, wy * wx)
    return out


class DualGridNet(nn.Module):
    """Depth crop (B, 1, 64, 64) -> dict of I_m, I_s logits, grid offsets and P_s."""

    def __init__(self, mesh_coords: np.ndarray, config: DualGridNetConfig = DualGridNetConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.crop_size % 2 or c.mesh_grid_size % 2:
            raise ValueError("crop and mesh grid sizes must be even (pixel-unshuffle x2)")
        self.image_hourglass = Hourglass(4, c.image_channels, 4 * (3 + c.feature_channels), c.image_levels, c.image_block_channels)
        self.mesh_hourglass = Hourglass(4 * (c.feature_channels + 1), c.mesh_channels, 4 * 3, c.mesh_levels, c.mesh_block_channels)
        g = c.mesh_grid_size
        self.register_buffer("grid_axis", torch.arange(g, dtype=torch.float32) + 0.5, persistent=False)
        # Stored transposed, (G*G, V): as the second operand of the product the constant is
        # packed once by onnxruntime's matrix kernels, which then write V columns instead of 3.
        sampling = torch.as_tensor(bilinear_sampling_matrix(mesh_coords, g).T.copy())
        if c.learned_sampling:
            self.grid_to_vertices = nn.Parameter(sampling)
            # Only each vertex's own four nodes are trained: in training the matrix is used
            # through this mask, so the rest gets no gradient and stays 0 (exported as is).
            support = torch.as_tensor(bilinear_sampling_matrix(mesh_coords, g, support=True).T.copy())
            self.register_buffer("sampling_support", support, persistent=False)
        else:
            self.register_buffer("grid_to_vertices", sampling, persistent=False)
        self.num_vertices = len(mesh_coords)

    def load_bilinear_state_dict(self, state: dict) -> None:
        """Weights of a network with bilinear sampling into this one, whose sampling starts
        from the bilinear weights (the same function until trained)."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        allowed = {"grid_to_vertices"} if self.config.learned_sampling else set()
        if unexpected or set(missing) - allowed:
            raise RuntimeError(f"state dict does not fit: missing {sorted(set(missing) - allowed)}, unexpected {sorted(unexpected)}")

    def extension(self, mesh_coords: torch.Tensor, features: torch.Tensor, hand_probability: torch.Tensor) -> torch.Tensor:
        """Splat per-pixel features onto the mesh grid.

        mesh_coords (B, 2, H, W) grid units; features (B, d, H, W); hand_probability (B, 1, H, W)
        (any pixel order, the same in all three).
        Returns (B, d + 1, G, G): the weighted mean feature per node and log(1 + its total
        weight).
        The kernel exp(-sigma |n - m|^2) over a square window factorises into a row and a
        column kernel, and so does its normalisation, so the (G*G, P) weight matrix is the
        outer product of two (G, P) factors. Building that matrix and multiplying it with the
        (P, d) features costs half the memory traffic of weighting the features per column
        first, which is what bounds training on a CPU. The total weight per node is the
        product of the two factors alone, (G, P) x (P, G), so the large product keeps exactly
        d columns (32 in the shipped network): a 33rd (a ones channel) made the CPU's matrix
        kernels run a third panel of 16 columns for one.
        """
        b, d = features.shape[:2]
        g = self.config.mesh_grid_size
        half = self.config.extension_window / 2
        m = mesh_coords.flatten(2)  # (B, 2, P)

        def axis_kernel(coord: torch.Tensor) -> torch.Tensor:  # (B, P) -> (B, G, P), columns sum to 1
            diff = self.grid_axis[:, None] - coord[:, None, :]
            k = torch.exp(-self.config.extension_sigma * diff * diff) * (diff.abs() < half).to(coord.dtype)
            return k / (k.sum(1, keepdim=True) + 1e-6)

        kx = axis_kernel(m[:, 0]) * hand_probability.flatten(2)  # (B, G, P)
        ky = axis_kernel(m[:, 1])  # (B, G, P)
        weights = (ky[:, :, None, :] * kx[:, None, :, :]).reshape(b, g * g, -1)  # (B, row * G + col, P)
        f = features.flatten(2).transpose(1, 2)  # (B, P, d)
        splat = torch.bmm(weights, f).reshape(b, g, g, d)  # (B, row, col, d)
        total = torch.bmm(ky, kx.transpose(1, 2)).reshape(b, g, g, 1)  # (B, row, col, 1)
        mean = splat / (total + 1e-3)
        grid = torch.cat([mean, torch.log1p(total)], dim=-1)
        return grid.permute(0, 3, 1, 2).contiguous()

    def forward(self, depth: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        b, d = depth.shape[0], c.feature_channels
        raw = self.image_hourglass(F.pixel_unshuffle(depth, 2))  # (B, 4 * (3 + d), S/2, S/2)
        grid_size = float(c.mesh_grid_size)
        # Pixel-shuffle channel k = 4 * head + sub-pixel, so the first 12 channels are I_m and
        # I_s at full size.
        small = F.pixel_shuffle(raw[:, :12], 2)
        mesh_coords = torch.sigmoid(small[:, :2]) * grid_size
        hand_logit = small[:, 2:3]
        # The extension sums over pixels, so it takes them in the unshuffled order (a
        # permutation): the 32 feature channels are never shuffled, which saved 5% of the
        # CPU forward.
        pixels = 4 * raw.shape[-2] * raw.shape[-1]
        splat_coords = torch.sigmoid(raw[:, :8]).reshape(b, 2, pixels, 1) * grid_size
        splat_probability = torch.sigmoid(raw[:, 8:12]).reshape(b, 1, pixels, 1)
        features = raw[:, 12:].reshape(b, d, pixels, 1)
        grid = self.extension(splat_coords, features, splat_probability)
        offsets = F.pixel_shuffle(self.mesh_hourglass(F.pixel_unshuffle(grid, 2)), 2)  # (B, 3, G, G)
        sampling = self.grid_to_vertices
        if self.config.learned_sampling and self.training:
            sampling = sampling * self.sampling_support
        vertices = torch.matmul(offsets.flatten(2), sampling).transpose(1, 2)  # (B, V, 3)
        return {"mesh_coords": mesh_coords, "hand_logit": hand_logit, "grid_offsets": offsets, "vertices": vertices}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
