"""Tells whether the hand in a crop is a right or a left hand: a small CNN on the 64 x 64 depth crop.

The main network knows only right hands; a left hand must be cropped mirrored
(``make_crop(..., Handedness.LEFT)``). This classifier decides which: it takes the crop exactly
as ``make_crop(..., Handedness.RIGHT)`` cuts it ((1, 1, 64, 64) float32 in [-1, 1], background
1) and returns one logit, > 0 for a right hand. It takes ~0.15 ms with onnxruntime on one CPU
thread, cheap enough for every frame. One frame is a weak witness (about 4 in 5 right on
synthetic hands in any orientation); the live tracker averages the logits over a track (a
hand does not change side while it is tracked; ``tracker.side_vote``). ``SideNet`` says how
it is built and why.

    python -m tracker.side_classifier train --out runs/side --samples 12000 --steps 4500 --evaluate
    python -m tracker.side_classifier evaluate --weights weights/side_classifier --write

Training data are synthetic crops from the project's renderer, cut as
``tracker.training_data.make_example`` cuts them (same scene, noise, centroid and jitter),
from our own streams: 3 for training, 4 held out (1 and 2 belong to the main network).
Crops are rendered once and cached under the run directory.

Shortcuts the renderer offers, and what is done about them:

* The stereo noise model is not mirror-symmetric: its occlusion shadow lies on the LEFT of
  foreground edges, so depth jumps with the background on the left are rarer than with the
  background on the right. If left hands were only mirrored right crops, that would say
  "left hand", and real left hands (shadowed on the left like everything else) would look
  right. So half the rendered samples are left hands (the mirrored hand model rendered with
  the usual noise), and every sample is mirrored at random with its label inverted: the
  side of the shadow carries no information about the label. The held-out metrics report
  rendered and mirrored crops separately.
* The forearm (a crude tube, bent against the hand over an asymmetric range) would be an
  easy cue; it is erased from a share of the training crops, and the held-out metrics are
  also reported with the forearm erased.
* The hand's direction in the image: random in-plane rotations (a rotation keeps the side,
  a mirror does not), so no direction is tied to a side; per-direction accuracy is reported.
* Crop centring: random shifts and scale on top of make_example's centre jitter.

Weights (``weights/side_classifier/``): ``side.pt`` (state dict, loads with
``weights_only=True``), ``side.onnx`` (batch 1, static), ``side.json`` (manifest: network
config, SHA-256 of both files, ONNX names, training summary, metrics). Every load checks the
checksum first, so a truncated or foreign file raises ``WeightsError``. Inference
(``SideClassifier``) lives in ``tracker.side_inference``; ``SideClassifier.from_onnx``
needs no torch (``load`` reads the weights folder through this module, which does).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from tracker.crop import CROP_SIZE, DEFAULT_CUBE_SIZE_M, make_crop, resample
from tracker.side_inference import ONNX, ONNX_INPUT, ONNX_OUTPUT, SideClassifier, classifier_crop
from tracker.synth.dataset import config_to_dict, sample_seed
from tracker.synth.pose_sampler import PALM_CENTRE_HAND_M, PoseSamplerConfig
from tracker.synth.scene import SceneConfig, SceneLabel, render_sample
from tracker.training_data import ExampleConfig, hand_centroid, measured_hand
from tracker.types import Handedness, Joint
from tracker.weights import WEIGHTS_DIR, WeightsError, check_cube_size, sha256_of, verified_path

SIDE_WEIGHTS_DIR = WEIGHTS_DIR / "side_classifier"
MANIFEST = "side.json"
STATE_DICT = "side.pt"
ONNX_OPSET = 17  # as tracker.weights
FORMAT = "dgn-side-classifier/1"

TRAIN_STREAM_SEED = 3
HELD_OUT_STREAM_SEED = 4
REAL_FRAMES_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "sr305-gestures"


# ----------------------------------------------------------------------------- network


#: Part classes the network segments: background / palm / thumb / index / middle / ring /
#: little finger / forearm, from the renderer's labels (hand parts 0..15, then SceneLabel).
NUM_PART_CLASSES = 8
#: Initial weights of each part class's centroid in ``across`` (learned afterwards): thumb and
#: index side minus ring and little-finger side. With perfect parts this gets the 2-D turn
#: right for ~90 % of held-out crops, thumb minus whole hand for only ~75 %.
ACROSS_INIT = (0.0, 0.0, 1.0, 0.5, 0.0, -0.5, -1.0, 0.0)
_PART_CLASS_OF_LABEL = np.zeros(256, np.int8)  # indexed by label + 1 (label -1 is background)
_PART_CLASS_OF_LABEL[1 + 0] = 1
_PART_CLASS_OF_LABEL[1 + 1 : 1 + 4] = 2
for _finger in range(4):
    _PART_CLASS_OF_LABEL[1 + 4 + 3 * _finger : 1 + 7 + 3 * _finger] = 3 + _finger
_PART_CLASS_OF_LABEL[1 + int(SceneLabel.FOREARM)] = 7
#: Cross-entropy weight per part class (about 1 / sqrt(pixel share)): the thumb covers ~2 % of
#: the crop and would otherwise drown in the background.
PART_CLASS_WEIGHTS = (0.3, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0)


def _conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    # BatchNorm folds into the convolution when onnxruntime optimises the graph.
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class StagesConfig:
    """A network config whose ``stages`` are (out_channels, kernel, stride) tuples, to and
    from the lists a JSON manifest holds."""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["stages"] = [list(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        d["stages"] = tuple(tuple(int(v) for v in s) for s in d["stages"])
        return cls(**d)


@dataclass(frozen=True)
class SideNetConfig(StagesConfig):
    """Conv stages as (out_channels, kernel, stride); the part map is decoded from stage
    ``deep_stage`` upsampled onto stage ``skip_stage`` (twice its resolution)."""

    stages: tuple[tuple[int, int, int], ...] = ((16, 5, 2), (32, 3, 2), (32, 3, 1), (64, 3, 2), (64, 3, 1), (96, 3, 2))
    skip_stage: int = 2
    deep_stage: int = 4
    part_channels: int = 32
    hidden: int = 32
    crop_size: int = CROP_SIZE


class SideNet(nn.Module):
    """(B, 1, S, S) crop -> (B, 1) logit, > 0: right hand.

    Trained on the side label alone, a plain CNN stays at chance for as long as this CPU
    budget lasts: the side is a parity. In 2-D it is the exclusive or of two cues that are
    learnable by themselves: which way the hand turns in the image (where the thumb lies
    relative to the wrist-to-knuckles axis: clockwise or anticlockwise) and whether the palm
    or the back faces the camera. Neither cue alone says anything about the side, so
    neither gets a gradient from the label until both exist. So the network is built around
    them:

    * ``facing`` and ``along`` (the wrist-to-knuckles direction) are regressed from the
      pooled features, supervised during training;
    * ``across`` is geometry, not regression: a part map (thumb, each finger, ...,
      supervised) at 1/4 resolution, and a learned weighted sum of the parts' centroids,
      starting as thumb-and-index side minus ring-and-little-finger side (regressing this
      vector from pooled features failed: pooling throws away where the thumb is);
    * the head sees the pooled features, facing, the turn (across x along) and facing x
      turn, so it can decide from the product and fall back on the features where the cues
      are weak (a hand seen edge-on, the thumb hidden).
    """

    def __init__(self, config: SideNetConfig = SideNetConfig()) -> None:
        super().__init__()
        self.config = config
        stages, widths, strides = [], [], []
        channels, stride = 1, 1
        for out, kernel, step in config.stages:
            stages.append(_conv(channels, out, kernel, step))
            channels, stride = out, stride * step
            widths.append(out)
            strides.append(stride)
        if strides[config.deep_stage] != 2 * strides[config.skip_stage]:
            raise ValueError("deep_stage must have half the resolution of skip_stage")
        self.stages = nn.ModuleList(stages)
        c = config.part_channels
        self.part_deep = nn.Conv2d(widths[config.deep_stage], c, 1)
        self.part_skip = nn.Conv2d(widths[config.skip_stage], c, 1)
        self.part_head = nn.Sequential(_conv(c, c, 3, 1), nn.Conv2d(c, NUM_PART_CLASSES, 1))
        self.across_weights = nn.Parameter(torch.tensor(ACROSS_INIT))
        grid = config.crop_size // strides[config.skip_stage]
        # Cell centres of the part grid in crop units (-1 .. 1; x right, y down).
        centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 - 1
        self.register_buffer(
            "cell_xy", torch.stack(torch.meshgrid(centres, centres, indexing="xy"))[None], persistent=False
        )
        # Average pooling: by the last stage every cell sees most of the hand, and pooling
        # keeps the answer from depending on where in the crop the hand sits.
        self.cues = nn.Linear(channels, 3)  # facing, along (x, y)
        self.head = nn.Sequential(
            nn.Linear(channels + 3, config.hidden), nn.ReLU(inplace=True), nn.Linear(config.hidden, 1)
        )

    def _centroids(self, prob: torch.Tensor) -> torch.Tensor:
        """(B, C, 2) centroid of each part class's probability, crop units."""
        # The + 1 cell pulls a centroid of little evidence towards the crop centre: a hidden
        # thumb gives a short ``across`` and a weak turn, not a confident wrong one.
        moments = (prob[:, :, None] * self.cell_xy[:, None]).sum(dim=(3, 4))
        return moments / (prob.sum(dim=(2, 3))[:, :, None] + 1.0)

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        return self.forward_all(depth)[0]

    def forward_all(self, depth: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, 1) and the intermediate outputs that training supervises."""
        x, taps = depth, []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        deep = F.interpolate(self.part_deep(taps[self.config.deep_stage]), scale_factor=2.0, mode="nearest")
        part_logits = self.part_head(F.relu(deep + self.part_skip(taps[self.config.skip_stage])))
        centroids = self._centroids(torch.softmax(part_logits, dim=1))
        across = (self.across_weights[None, :, None] * centroids).sum(dim=1)
        pooled = x.mean(dim=(2, 3))
        raw = self.cues(pooled)
        facing, along = torch.tanh(raw[:, 0:1]), raw[:, 1:3]
        turn = across[:, 0:1] * along[:, 1:2] - across[:, 1:2] * along[:, 0:1]
        logit = self.head(torch.cat([pooled, facing, turn, facing * turn], 1))
        return logit, {"facing": facing[:, 0], "along": along, "across": across, "part_logits": part_logits}


def count_parameters(network: nn.Module) -> int:
    return int(sum(p.numel() for p in network.parameters()))


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataConfig:
    #: The scenes the shipped classifier was trained and measured on: a 25 cm forearm in any
    #: direction, desk and wall planes placed without regard to the arm, every bone's length
    #: and thickness varied on its own by +-15 %, fingers free to pass through each other,
    #: right hands unless a crop asks for a left one (the hand network's scenes have since
    #: become more like a user's).
    example: ExampleConfig = field(
        default_factory=lambda: ExampleConfig(
            scene=dataclasses.replace(
                SceneConfig(), render_window_m=0.45, forearm_length_m=0.25, max_arm_rise_m=None, table_clear_of_arm=False,
                max_finger_penetration_m=None,
                pose=dataclasses.replace(
                    PoseSamplerConfig(),
                    left_hand_probability=0.0,  # (each crop sets its side)
                    bone_scale_jitter=0.15,
                    finger_length_jitter=0.0,
                    thickness_jitter=0.0,
                ),
            )
        )
    )
    #: Render every other sample as a real (mirrored-model) left hand; False renders right
    #: hands only, so left examples are mirrored crops (the shortcut ablation, see the docstring).
    render_left_hands: bool = True


@dataclass(frozen=True)
class AugmentConfig:
    """Label-preserving augmentation, applied per batch (mirroring inverts the label)."""

    mirror_probability: float = 0.5
    rotate: bool = True
    max_shift_px: float = 4.0
    max_scale: float = 1.1
    max_depth_offset: float = 0.12  # crop units (1 = 13 cm): segmentation centre error in z
    max_noise_sigma: float = 0.015
    max_pixel_dropout: float = 0.05
    erase_probability: float = 0.2
    erase_size_px: tuple[int, int] = (6, 20)
    forearm_erase_probability: float = 0.4


def render_crop(
    model, config: ExampleConfig, seed: int, handedness: Handedness = Handedness.RIGHT
) -> dict[str, np.ndarray]:
    """One crop cut exactly as ``make_example`` cuts it, for a hand of the given side.

    depth (S, S) float32 as make_crop(..., RIGHT) gives it (a left hand stays a left hand);
    forearm (S, S) bool forearm pixels; parts (S, S) int8 part class (NUM_PART_CLASSES);
    right (bool); facing (float, > 0 when the palm faces the camera); along, across (2,)
    float32 2-D cue vectors (below; across is not trained on, it is there to check the
    network's own); finger_angle (radians in the image, x right, y down, wrist -> fingers).
    """
    pose_config = dataclasses.replace(
        config.scene.pose, left_hand_probability=1.0 if handedness == Handedness.LEFT else 0.0
    )
    scene = dataclasses.replace(config.scene, pose=pose_config)
    sample = render_sample(model, scene, seed)
    depth_m, centroid = measured_hand(sample)
    rng = np.random.default_rng([seed, 1])  # make_example's jitter stream
    centre = centroid + rng.normal(0.0, config.center_jitter_m, 3)
    crop = make_crop(depth_m, sample.intrinsics, centre, config.cube_size_m, crop_size=config.crop_size)
    labels = resample(sample.labels, crop.image_from_crop, config.crop_size, int(SceneLabel.BACKGROUND))
    rotation, translation = sample.pose.cam_from_hand[:3, :3], sample.pose.cam_from_hand[:3, 3]
    palm = rotation @ PALM_CENTRE_HAND_M + translation
    # Hand frame: +y out of the back of the hand, -z towards the fingers (a left hand mirrors x only).
    facing = float(rotation[:, 1] @ (palm / np.linalg.norm(palm)))
    fingers = -rotation[:, 2]
    # The 2-D cues, in the image (x right, y down): along = wrist -> middle knuckle, across =
    # little-finger knuckle -> index knuckle, each divided by its length had it lain in the
    # image plane, so a vector pointing at the camera is short (an unsure cue is a weak one).
    k = sample.intrinsics
    joints = sample.joints.astype(np.float64)
    uv = joints[:, :2] / joints[:, 2:3] * np.array([k.fx, k.fy])

    def planar(a: Joint, b: Joint) -> np.ndarray:
        full = np.linalg.norm(joints[b] - joints[a]) * k.fx / (0.5 * (joints[a, 2] + joints[b, 2]))
        return ((uv[b] - uv[a]) / max(full, 1e-9)).astype(np.float32)

    return {
        "depth": crop.depth,
        "forearm": labels == SceneLabel.FOREARM,
        "parts": _PART_CLASS_OF_LABEL[labels.astype(np.int64) + 1],
        "right": np.bool_(handedness == Handedness.RIGHT),
        "facing": np.float32(facing),
        "along": planar(Joint.WRIST, Joint.MIDDLE_FINGER_MCP),
        "across": planar(Joint.PINKY_MCP, Joint.INDEX_FINGER_MCP),
        "finger_angle": np.float32(math.atan2(fingers[1], fingers[0])),
        "seed": np.int64(seed),
    }


def render_set(
    config: DataConfig, stream_seed: int, count: int, progress: bool = True, desc: str = "rendering"
) -> dict[str, np.ndarray]:
    """Samples 0..count-1 of a stream; odd indices are left hands if config.render_left_hands."""
    from tracker.hand_model import HandModel

    model = HandModel.load()
    rows = []
    for i in tqdm(range(count), disable=not progress, desc=desc, unit="crop"):
        side = Handedness.LEFT if config.render_left_hands and i % 2 else Handedness.RIGHT
        rows.append(render_crop(model, config.example, sample_seed(stream_seed, i), side))
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def cached_set(
    cache_dir: Path | None,
    config: DataConfig,
    stream_seed: int,
    count: int,
    progress: bool = True,
    desc: str = "rendering",
) -> tuple[dict[str, np.ndarray], float]:
    """render_set, read from / written to ``cache_dir`` (keyed by the full config).

    Returns (data, seconds the rendering took, also when it was read back from the cache).
    """
    key = {"cache_format": 4, "stream": stream_seed, "count": count, "data": config_to_dict(config)}
    path = None if cache_dir is None else Path(cache_dir) / f"stream{stream_seed}_n{count}_{'lr' if config.render_left_hands else 'r'}.npz"
    return cached_arrays(path, key, lambda: render_set(config, stream_seed, count, progress, desc))


def cached_arrays(path: Path | None, key: dict, render) -> tuple[dict[str, np.ndarray], float]:
    """``render()``'s arrays, read back from ``path`` where it holds them under the same
    ``key`` (JSON-able), else rendered and written there (None: not cached). Returns (data,
    seconds the rendering took, also when read back)."""
    key_text = json.dumps(key, sort_keys=True)
    if path is not None and path.is_file():
        with np.load(path) as f:
            if str(f["key"]) == key_text:
                return {k: f[k] for k in f.files if k not in ("key", "render_seconds")}, float(f["render_seconds"])
    began = time.perf_counter()
    data = render()
    seconds = time.perf_counter() - began
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.npz")  # renamed into place: no half-written cache
        np.savez_compressed(partial, key=np.array(key_text), render_seconds=np.float64(seconds), **data)
        partial.replace(path)
    return data, seconds


def augment(
    batch: dict[str, torch.Tensor], config: AugmentConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A batch of rendered crops -> augmented network inputs and targets.

    In: depth (B, 1, S, S), forearm (B, 1, S, S) bool, parts (B, S, S) int8, right (B,) bool,
    facing (B,), along and across (B, 2). Out: depth, label (B,) float (1 = right), parts
    (B, S, S) long, facing, along, across.
    """
    depth = batch["depth"]
    b, _, s, _ = depth.shape

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=generator)

    drop_arm = (uniform(0, 1) < config.forearm_erase_probability)[:, None, None, None] & batch["forearm"]
    x = torch.where(drop_arm, torch.ones_like(depth), depth)
    parts = torch.where(drop_arm[:, 0], torch.zeros_like(batch["parts"]), batch["parts"]).float()[:, None]
    mirror = uniform(0, 1) < config.mirror_probability
    x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    parts = torch.where(mirror[:, None, None, None], parts.flip(-1), parts)
    label = (batch["right"] ^ mirror).float()

    # Rotation, scale and shift together; det > 0, so no mirroring sneaks in.
    angle = uniform(-math.pi, math.pi) if config.rotate else torch.zeros(b)
    scale = torch.exp(uniform(-math.log(config.max_scale), math.log(config.max_scale)))
    shift = uniform(-1, 1, b, 2) * (2 * config.max_shift_px / s)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [b, 2, s, s], align_corners=False)
    # Depth resampled around 0 so that the zero padding becomes background (1); parts pad
    # with class 0 (background). Nearest, as make_crop.
    both = F.grid_sample(torch.cat([x - 1, parts], 1), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    x, parts = both[:, :1] + 1, both[:, 1].round().long()

    foreground = x < 1
    # A hand drawn `scale` times larger is as much deeper in relief.
    offset = uniform(-config.max_depth_offset, config.max_depth_offset)[:, None, None, None]
    sigma = uniform(0, config.max_noise_sigma)[:, None, None, None]
    noise = torch.randn(x.shape, generator=generator) * sigma
    x = torch.where(foreground, x * scale[:, None, None, None] + offset + noise, x)
    x = torch.where((x > 1) | (x < -1), torch.ones_like(x), x)
    dropout = torch.rand(x.shape, generator=generator) < uniform(0, config.max_pixel_dropout)[:, None, None, None]
    x = torch.where(dropout, torch.ones_like(x), x)
    erase = uniform(0, 1) < config.erase_probability
    lo, hi = config.erase_size_px
    size = uniform(lo, hi, b, 2)
    corner = uniform(0, 1, b, 2) * (s - size)
    idx = torch.arange(s, dtype=torch.float32)
    rows = (idx[None] >= corner[:, 1:2]) & (idx[None] < corner[:, 1:2] + size[:, 1:2])
    cols = (idx[None] >= corner[:, 0:1]) & (idx[None] < corner[:, 0:1] + size[:, 0:1])
    box = erase[:, None, None] & rows[:, :, None] & cols[:, None, :]
    x = torch.where(box[:, None], torch.ones_like(x), x)
    # The 2-D cue vectors follow the image: mirrored, then rotated by the inverse of the
    # sampling rotation (the grid maps output pixels to input pixels). Mirroring does not
    # turn the palm away from the camera: facing keeps its sign.
    sign = torch.where(mirror, -1.0, 1.0)[:, None]
    rotate_back = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1) * scale[:, None, None]

    def follow(v: torch.Tensor) -> torch.Tensor:
        v = torch.cat([v[:, :1] * sign, v[:, 1:]], 1).float()
        return (rotate_back @ v[:, :, None])[:, :, 0]

    return {
        "depth": x.contiguous(),
        "label": label,
        "parts": parts,
        "facing": batch["facing"].float(),
        "along": follow(batch["along"]),
        "across": follow(batch["across"]),
    }


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    samples: int = 8000  # rendered training crops (each seen mirrored and not, at random)
    held_out_samples: int = 600  # rendered held-out crops; evaluated as-is and mirrored
    steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    eval_every: int = 250
    #: Weights of the regressed cues and of the part segmentation (see SideNet).
    parts_weight: float = 1.0
    cues_weight: float = 1.0
    seed: int = 0
    #: One thread: with a second busy process on two cores, two torch threads run several
    #: times slower than one (they spin-wait on each other).
    threads: int = 1
    network: SideNetConfig = field(default_factory=SideNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def learning_rate(config: TrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def compute_losses(network: SideNet, batch: dict[str, torch.Tensor], config: TrainConfig) -> dict[str, torch.Tensor]:
    """Side BCE, the regressed cues' MSE, part cross-entropy (soft targets on the part grid)."""
    logit, out = network.forward_all(batch["depth"])
    terms = {
        "side": F.binary_cross_entropy_with_logits(logit[:, 0], batch["label"]),
        "cues": F.mse_loss(
            torch.cat([out["facing"][:, None], out["along"]], 1),
            torch.cat([batch["facing"][:, None], batch["along"]], 1),
        ),
    }
    cell = batch["depth"].shape[-1] // out["part_logits"].shape[-1]
    # The share of each class among the cell's pixels, not one sampled pixel.
    share = F.avg_pool2d(F.one_hot(batch["parts"], NUM_PART_CLASSES).permute(0, 3, 1, 2).float(), cell)
    weights = torch.tensor(PART_CLASS_WEIGHTS)[None, :, None, None]
    terms["parts"] = -(weights * share * F.log_softmax(out["part_logits"], 1)).sum(1).mean()
    terms["total"] = terms["side"] + config.cues_weight * terms["cues"] + config.parts_weight * terms["parts"]
    return terms


def training_step(
    network: SideNet, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], config: TrainConfig
) -> dict[str, float]:
    network.train()
    terms = compute_losses(network, batch, config)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def both_flips(data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Held-out crops as rendered, then mirrored: (2N, S, S) depth and (2N,) bool right labels."""
    depth = data["depth"]
    return np.concatenate([depth, depth[..., ::-1]]).astype(np.float32), np.concatenate([data["right"], ~data["right"]])


@torch.no_grad()
def torch_logits(network: nn.Module, depth: np.ndarray, batch: int = 512) -> np.ndarray:
    """(N,) logits of a one-logit crop classifier (eval mode) on (N, S, S) crops."""
    network.eval()
    out = [
        network(torch.from_numpy(np.ascontiguousarray(depth[i : i + batch]))[:, None])[:, 0]
        for i in range(0, len(depth), batch)
    ]
    return torch.cat(out).numpy()


def train(config: TrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Render (or reuse the cache), train, export to OUT/export; returns the training summary."""
    threads = torch.get_num_threads()
    try:
        return _train(config, out_dir, progress)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process keeps its own


def _train(config: TrainConfig, out_dir: str | Path, progress: bool) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    train_data, train_render_s = cached_set(
        out_dir / "cache", config.data, TRAIN_STREAM_SEED, config.samples, progress, "rendering training crops"
    )
    # The held-out stream always has both sides rendered, whatever the training data.
    held_config = dataclasses.replace(config.data, render_left_hands=True)
    held_data, held_render_s = cached_set(
        out_dir / "cache",
        held_config,
        HELD_OUT_STREAM_SEED,
        config.held_out_samples,
        progress,
        "rendering held-out crops",
    )
    held_depth, held_right = both_flips(held_data)

    tensors = {
        "depth": torch.from_numpy(train_data["depth"])[:, None],
        "forearm": torch.from_numpy(train_data["forearm"])[:, None],
        "parts": torch.from_numpy(train_data["parts"]),
        "right": torch.from_numpy(train_data["right"]),
        "facing": torch.from_numpy(train_data["facing"]),
        "along": torch.from_numpy(train_data["along"]),
        "across": torch.from_numpy(train_data["across"]),
    }
    count = len(tensors["depth"])
    network = SideNet(config.network)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    metrics_path = out_dir / "metrics.csv"
    columns = ["step", "samples_seen", "lr", "train_side_loss", "train_parts_loss", "train_cues_loss"]
    with open(metrics_path, "w", newline="") as f:
        csv.writer(f).writerow([*columns, "held_out_accuracy", "held_out_loss"])
    order = torch.randperm(count, generator=generator)
    cursor, history, held_acc = 0, [], float("nan")
    began = time.perf_counter()
    bar = tqdm(range(config.steps), disable=not progress, desc="training", unit="step")
    for step in bar:
        if cursor + config.batch_size > count:
            order, cursor = torch.randperm(count, generator=generator), 0
        pick = order[cursor : cursor + config.batch_size]
        cursor += config.batch_size
        batch = augment({k: v[pick] for k, v in tensors.items()}, config.augment, generator)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        history.append(training_step(network, optimizer, batch, config))
        if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
            logits = torch_logits(network, held_depth)
            held_acc = float(np.mean((logits > 0) == held_right))
            held_loss = float(
                F.binary_cross_entropy_with_logits(
                    torch.from_numpy(logits), torch.from_numpy(held_right.astype(np.float32))
                )
            )
            recent = history[-config.eval_every :]
            with open(metrics_path, "a", newline="") as f:
                csv.writer(f).writerow(
                    [step + 1, (step + 1) * config.batch_size, f"{learning_rate(config, step):.3g}"]
                    + [f"{np.mean([h[k] for h in recent]):.4f}" for k in ("side", "parts", "cues")]
                    + [f"{held_acc:.4f}", f"{held_loss:.4f}"]
                )
        recent = history[-50:]
        bar.set_postfix(
            side=f"{np.mean([h['side'] for h in recent]):.3f}",
            parts=f"{np.mean([h['parts'] for h in recent]):.3f}",
            cues=f"{np.mean([h['cues'] for h in recent]):.3f}",
            held_acc=f"{held_acc:.3f}",
        )
    bar.close()
    train_s = time.perf_counter() - began
    network.eval()

    from tracker.machine import machine_info

    machine = machine_info()
    summary = {
        "train_stream_seed": TRAIN_STREAM_SEED,
        "held_out_stream_seed": HELD_OUT_STREAM_SEED,
        "rendered_training_crops": config.samples,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "samples_seen": config.steps * config.batch_size,
        "render_seconds": round(train_render_s + held_render_s, 1),
        "train_seconds": round(train_s, 1),
        "final_train_side_loss": round(float(np.mean([h["side"] for h in history[-100:]])), 4),
        "device": f"{machine['logical_cores']}-core CPU ({machine['cpu']}), {config.threads} torch threads",
        "git_commit": machine["git_commit"],
        "config": config_to_dict(config),
    }
    export_weights(
        network,
        out_dir / "export",
        training=summary,
        metrics={"held_out": held_out_metrics(torch_logits(network, held_data["depth"]), held_data, network=network)},
        cube_size_m=config.data.example.cube_size_m,
    )
    # The run's config and log go with the weights, under the names a weights folder keeps
    # them by (as in weights/side_classifier/): the export is the folder to copy there.
    shutil.copyfile(out_dir / "config.json", out_dir / "export" / "training_config.json")
    shutil.copyfile(metrics_path, out_dir / "export" / "training_metrics.csv")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ----------------------------------------------------------------------------- weights


def export_onnx(network: SideNet, path: Path) -> None:
    network = network.eval()
    s = network.config.crop_size
    torch.onnx.export(
        network,
        (torch.zeros(1, 1, s, s),),
        str(path),
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


def export_weights(
    network: SideNet, out_dir: str | Path, training: dict | None = None, metrics: dict | None = None, cube_size_m: float = DEFAULT_CUBE_SIZE_M
) -> dict:
    """Write side.pt, side.onnx and side.json into ``out_dir``; returns the manifest.
    ``cube_size_m``: the cube its crops were cut from in training, which a run cuts too."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    network = network.cpu().eval()
    torch.save({k: v.detach().clone() for k, v in network.state_dict().items()}, out_dir / STATE_DICT)
    export_onnx(network, out_dir / ONNX)
    s = network.config.crop_size
    manifest = {
        "format": FORMAT,
        "network": network.config.to_dict(),
        "parameters": count_parameters(network),
        "input": "the crop of tracker.crop.make_crop(depth_m, intrinsics, centre, "
        f"{cube_size_m}, Handedness.RIGHT): "
        "(1, 1, S, S) float32 in [-1, 1], background 1; output logit > 0: right hand",
        "cube_size_m": float(cube_size_m),
        "onnx": {
            "input": ONNX_INPUT,
            "input_shape": [1, 1, s, s],
            "output": ONNX_OUTPUT,
            "output_shape": [1, 1],
            "opset": ONNX_OPSET,
        },
        "files": {STATE_DICT: sha256_of(out_dir / STATE_DICT), ONNX: sha256_of(out_dir / ONNX)},
        "training": training or {},
        "metrics": metrics or {},
    }
    write_manifest(out_dir, manifest)
    return manifest


def write_manifest(directory: str | Path, manifest: dict, name: str = MANIFEST) -> None:
    # Renamed into place: `evaluate --write` rewrites the shipped manifest, and a crash
    # half-way must not leave a tracker that cannot start.
    path = Path(directory) / name
    partial = path.with_name(f".{name}.partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(partial, path)


def read_manifest(directory: str | Path, name: str, format_: str, what: str, train_command: str, config_type, files: tuple[str, ...]) -> dict:
    """A crop classifier's manifest ``name`` in ``directory``, checked for its ``format_``,
    a network config of ``config_type`` and checksums of ``files``; WeightsError otherwise
    (``what``: "side-classifier", ...; ``train_command``: what makes such weights)."""
    path = Path(directory) / name
    if not path.is_file():
        raise WeightsError(f"no {what} weights at {directory} ({name} missing); train them with {train_command}")
    try:
        manifest = json.loads(path.read_text())
        if manifest["format"] != format_:
            raise ValueError(f"format {manifest['format']!r}, expected {format_!r}")
        config_type.from_dict(manifest["network"])
        for file in files:
            manifest["files"][file]
        manifest["onnx"]["input"]
        # What a run reads from it: a wrong one would crop wrongly without a word.
        if manifest.get("cube_size_m") is not None:
            check_cube_size(manifest["cube_size_m"])
        crop_size = manifest["network"]["crop_size"]
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
            raise ValueError(f"'network.crop_size' must be a whole number of pixels, got {crop_size!r}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise WeightsError(f"{path}: not a valid {what} manifest ({exc!r})") from exc
    return manifest


def load_state(directory: str | Path, name: str, manifest: dict, network: nn.Module) -> nn.Module:
    """``network`` with the verified state dict ``name`` from ``directory``, in eval mode."""
    import io

    data = verified_path(directory, name, manifest).read_bytes()
    try:
        network.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    except Exception as exc:  # torch raises several types for bad archives
        raise WeightsError(f"{Path(directory) / name}: cannot load the state dict ({exc})") from exc
    return network.eval()


def load_manifest(directory: str | Path = SIDE_WEIGHTS_DIR) -> dict:
    return read_manifest(directory, MANIFEST, FORMAT, "side-classifier", "python -m tracker.side_classifier train", SideNetConfig, (STATE_DICT, ONNX))


def load_side_network(directory: str | Path = SIDE_WEIGHTS_DIR) -> tuple[SideNet, dict]:
    """The verified torch network (eval mode, CPU) and its manifest."""
    manifest = load_manifest(directory)
    return load_state(directory, STATE_DICT, manifest, SideNet(SideNetConfig.from_dict(manifest["network"]))), manifest


# ----------------------------------------------------------------------------- evaluation


def _accuracy(correct: np.ndarray) -> dict:
    return {"accuracy": round(float(np.mean(correct)), 4) if len(correct) else None, "crops": len(correct)}


def held_out_metrics(
    logits_as_is: np.ndarray, data: dict[str, np.ndarray], logits_fn=None, network: SideNet | None = None
) -> dict:
    """Accuracy of the held-out crops as rendered and mirrored, overall and by group, view and direction.

    ``logits_fn`` (or ``network``) computes the logits of the other variants (mirrored, forearm erased).
    """
    if logits_fn is None:
        logits_fn = lambda depth: torch_logits(network, depth)
    right = data["right"].astype(bool)
    depth = data["depth"]
    mirrored_logits = logits_fn(np.ascontiguousarray(depth[..., ::-1]))
    logits = np.concatenate([logits_as_is, mirrored_logits])
    truth = np.concatenate([right, ~right])
    correct = (logits > 0) == truth
    n = len(right)
    as_is, mirrored = correct[:n], correct[n:]
    no_arm_depth = np.where(data["forearm"], np.float32(1.0), depth)
    no_arm = np.concatenate([logits_fn(no_arm_depth), logits_fn(np.ascontiguousarray(no_arm_depth[..., ::-1]))])
    facing = np.concatenate([data["facing"], data["facing"]])
    angle = np.concatenate([data["finger_angle"], np.pi - data["finger_angle"]])  # mirroring flips x
    angle = np.degrees(np.arctan2(np.sin(angle), np.cos(angle)))
    direction = np.select(
        [(angle >= -135) & (angle < -45), (angle >= -45) & (angle < 45), (angle >= 45) & (angle < 135)],
        ["up", "right", "down"],
        "left",
    )
    eps = 1e-7
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    return {
        "stream_seed": HELD_OUT_STREAM_SEED,
        "rendered_crops": n,
        "evaluated_crops": 2 * n,
        "accuracy": round(float(correct.mean()), 4),
        "log_loss": round(float(-np.mean(np.where(truth, np.log(p + eps), np.log(1 - p + eps)))), 4),
        # Rendered left hands keep the sensor's shadow on the left; mirrored crops have it on
        # the right. Equal accuracy across the four groups means the noise side is not the cue.
        "by_group": {
            "rendered_right": _accuracy(as_is[right]),
            "rendered_left": _accuracy(as_is[~right]),
            "mirrored_right_(looks_left)": _accuracy(mirrored[right]),
            "mirrored_left_(looks_right)": _accuracy(mirrored[~right]),
        },
        "forearm_erased": _accuracy((no_arm > 0) == truth),
        "by_view": {
            "palm_towards_camera_(facing>0.5)": _accuracy(correct[facing > 0.5]),
            "edge_on": _accuracy(correct[np.abs(facing) <= 0.5]),
            "back_towards_camera_(facing<-0.5)": _accuracy(correct[facing < -0.5]),
        },
        "by_finger_direction_in_crop": {d: _accuracy(correct[direction == d]) for d in ("up", "right", "down", "left")},
    }


def hand_pixel_centre(source, frame_number: int, depth_m: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Centroid of the measured pixels of the hand itself (not the forearm) in a SyntheticSource frame."""
    from tracker.sources import render_hand_pose

    clean, _, _ = render_hand_pose(
        source.hand_model, source.pose_at(frame_number), source.intrinsics, source.depth_scale, forearm=False
    )
    clean_m = clean.astype(np.float32) * np.float32(source.depth_scale)
    # A hand pixel is measured where the noisy depth is near the clean hand-only depth (not
    # the forearm in front of it, not a dropout).
    mask = (clean_m > 0) & (depth_m > 0) & (np.abs(depth_m - clean_m) < 0.01)
    return hand_centroid(depth_m, mask, source.intrinsics, joints.mean(0))


def sequence_metrics(
    classifier: SideClassifier, seeds=tuple(range(10, 22)), frames: int = 150, progress: bool = True, vote_config=None
) -> dict:
    """Per-frame accuracy, and that of the live tracker's running vote, on SyntheticSource
    sequences of real left and right hands.

    Two crop centres: the centroid of the hand's measured pixels (as in training), and the
    live tracker's (``track_hand_center`` with the last centre as its prior). The vote
    (``tracker.side_vote.SideVote``) runs over the live crops and starts again where the
    segmentation loses the hand. ``HandTracker`` also starts it again when the network's
    estimate is not confident or the centre jumps more than 12 cm (another hand), unless the
    hand is found again within 200 ms near where it was lost
    (``TrackerConfig.resume_side_within_ms``); without the network here, those resets are
    left out, so these figures are for one hand tracked throughout.
    """
    from tracker.segment import track_hand_center
    from tracker.side_vote import SideVote, SideVoteConfig
    from tracker.sources import SyntheticSource

    sequences, per_frame, live_frame, vote_right, seg_missing = [], [], [], [], 0
    jobs = [(hand, seed) for hand in (Handedness.LEFT, Handedness.RIGHT) for seed in seeds]
    for hand, seed in tqdm(jobs, disable=not progress, desc="sequences", unit="seq"):
        source = SyntheticSource(seed=seed, max_frames=frames, hand=hand)
        want_right = hand == Handedness.RIGHT
        logits, live_logits, decided, previous, vote = [], [], [], None, SideVote(vote_config or SideVoteConfig())
        for i in range(frames):
            frame, joints = source.render(i)
            depth_m = frame.depth.astype(np.float32) * np.float32(frame.depth_scale)
            centre = hand_pixel_centre(source, i, depth_m, joints)
            logits.append(
                classifier.logit(classifier_crop(classifier, depth_m, frame.intrinsics, centre, DEFAULT_CUBE_SIZE_M))
            )
            previous = track_hand_center(depth_m, frame.intrinsics, previous)
            if previous is None:
                seg_missing += 1
                vote.reset()
                decided.append(None)
                continue
            live = classifier.logit(classifier_crop(classifier, depth_m, frame.intrinsics, previous, DEFAULT_CUBE_SIZE_M))
            live_logits.append(live)
            decided.append(vote.update(live) == Handedness.RIGHT)
        logits, live_logits = np.array(logits), np.array(live_logits)
        per_frame += list((logits > 0) == want_right)
        live_frame += list((live_logits > 0) == want_right)
        vote_right.append([d is not None and d == want_right for d in decided])
        # Changes of the reported side within a track (each one mirrors the drawn mesh).
        changes = sum(a is not None and b is not None and a != b for a, b in zip(decided, decided[1:]))
        sequences.append(
            {
                "hand": hand.value,
                "seed": seed,
                "frame_accuracy": round(float(np.mean((logits > 0) == want_right)), 4),
                "frame_accuracy_live_centre": round(float(np.mean((live_logits > 0) == want_right)), 4) if len(live_logits) else None,
                "mean_live_logit": round(float(live_logits.mean()), 3) if len(live_logits) else None,
                "vote_right_frames": int(sum(vote_right[-1])),
                "vote_right_at_end": bool(vote_right[-1][-1]),
                "side_changes": int(changes),
            }
        )
    vote = np.array(vote_right, float)
    at = sorted({0, 9, 29, 59, frames - 1} & set(range(frames)))
    return {
        "source": "tracker.sources.SyntheticSource(seed, max_frames, hand), left and right hand per seed",
        "seeds": list(seeds),
        "frames_per_sequence": frames,
        "frame_accuracy_hand_centroid": round(float(np.mean(per_frame)), 4),
        "frame_accuracy_live_centre": round(float(np.mean(live_frame)), 4) if live_frame else None,
        "frames_without_centre": seg_missing,
        "vote": {
            "note": "the side HandTracker reports: SideVote over the live-centre logits of the track so far",
            "switch_margin": (vote_config or SideVoteConfig()).switch_margin,
            "frame_accuracy": round(float(vote.mean()), 4),
            "accuracy_at_frame": {str(i + 1): round(float(vote[:, i].mean()), 4) for i in at},
            "sequences_right_at_end": f"{int(vote[:, -1].sum())}/{len(vote)}",
            "side_changes": int(sum(q["side_changes"] for q in sequences)),
            "most_side_changes_in_a_sequence": int(max(q["side_changes"] for q in sequences)),
        },
        "per_sequence": sequences,
    }


def real_frame_metrics(classifier: SideClassifier, folder: str | Path = REAL_FRAMES_DIR) -> dict:
    """The SR305 frames (all right hands): a check on real data, never used for tuning."""
    from tracker.segment import find_hand_center
    from tracker.sources import FolderSource

    source = FolderSource(folder)
    rows, missing = [], []
    for frame, path in zip(source.frames(), source.files):
        name = str(path.relative_to(source.path))
        depth_m = frame.depth.astype(np.float32) * np.float32(frame.depth_scale)
        centre = find_hand_center(depth_m, frame.intrinsics)
        if centre is None:
            missing.append(name)
            continue
        p = classifier.probability_right(classifier_crop(classifier, depth_m, frame.intrinsics, centre, DEFAULT_CUBE_SIZE_M))
        rows.append({"frame": name, "p_right": round(p, 4)})
    correct = [r["p_right"] > 0.5 for r in rows]
    return {
        "folder": str(Path(folder).name),
        "frames": len(source.files),
        "hand_centre_found": len(rows),
        "no_hand_centre": missing,
        "accuracy": round(float(np.mean(correct)), 4) if rows else None,
        "correct": f"{sum(correct)}/{len(rows)}",
        "per_frame": rows,
    }


def inference_ms(classifier: SideClassifier, crop: np.ndarray, repeats: int = 3000) -> dict:
    """Median and 90th percentile of one probability_right call, milliseconds."""
    for _ in range(200):
        classifier.probability_right(crop)
    times = np.empty(repeats)
    for i in range(repeats):
        t = time.perf_counter()
        classifier.probability_right(crop)
        times[i] = time.perf_counter() - t
    return {
        "median_ms": round(float(np.median(times) * 1e3), 4),
        "p90_ms": round(float(np.percentile(times, 90) * 1e3), 4),
        "threads": 1,
        "runtime": "onnxruntime CPU, batch 1",
    }


def evaluate(
    directory: str | Path = SIDE_WEIGHTS_DIR,
    held_out_samples: int = 600,
    seeds=tuple(range(10, 22)),
    frames: int = 150,
    cache_dir: Path | None = None,
    progress: bool = True,
    vote_config=None,
) -> dict:
    """All metrics of the shipped ONNX model (held-out stream, sequences, real frames, timing)."""
    classifier = SideClassifier.load(directory)
    data, _ = cached_set(
        cache_dir, DataConfig(), HELD_OUT_STREAM_SEED, held_out_samples, progress, "rendering held-out crops"
    )
    held = held_out_metrics(classifier.logits(data["depth"]), data, logits_fn=classifier.logits)
    return {
        "held_out": held,
        "sequences": sequence_metrics(classifier, seeds, frames, progress, vote_config),
        "real_sr305": _real_frame_metrics_or_why_not(classifier),
        "inference": inference_ms(classifier, data["depth"][0]),
    }


def _real_frame_metrics_or_why_not(classifier: SideClassifier) -> dict:
    """The real-frame check, or why it could not run (a checkout without the test frames):
    the other metrics, minutes of work by then, are not lost to it."""
    from tracker.sources import SourceError

    try:
        return real_frame_metrics(classifier)
    except SourceError as exc:
        print(f"warning: no real-frame check: {exc}", file=sys.stderr)
        return {"not_measured": str(exc)}


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracker.side_classifier", description="Right/left hand classifier on 64x64 depth crops."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="render synthetic crops (cached under OUT/cache), train, export to OUT/export")
    t.add_argument("--out", type=Path, required=True, help="run directory")
    t.add_argument("--samples", type=int, help=f"rendered training crops (default {TrainConfig.samples})")
    t.add_argument("--held-out", type=int, help=f"rendered held-out crops (default {TrainConfig.held_out_samples})")
    t.add_argument("--steps", type=int, help=f"optimisation steps (default {TrainConfig.steps})")
    t.add_argument("--batch-size", type=int, help=f"default {TrainConfig.batch_size}")
    t.add_argument("--lr", type=float, help=f"peak learning rate (default {TrainConfig.learning_rate})")
    t.add_argument("--threads", type=int, help=f"torch threads (default {TrainConfig.threads})")
    t.add_argument(
        "--right-hands-only",
        action="store_true",
        help="ablation: left examples only as mirrored right crops (learns the noise shortcut)",
    )
    t.add_argument(
        "--evaluate",
        action="store_true",
        help="afterwards run the full evaluation on the export and store it in its manifest",
    )
    e = sub.add_parser(
        "evaluate", help="held-out stream, synthetic sequences, real SR305 frames and timing of a weights directory"
    )
    e.add_argument(
        "--weights", type=Path, default=SIDE_WEIGHTS_DIR, help="directory with side.json (default %(default)s)"
    )
    e.add_argument(
        "--held-out", type=int, default=600, help="rendered held-out crops, each also mirrored (default %(default)s)"
    )
    e.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(range(10, 22)),
        help="SyntheticSource seeds, each as a left and a right hand (default 10-21)",
    )
    e.add_argument("--frames", type=int, default=150, help="frames per sequence (default %(default)s)")
    e.add_argument("--cache", type=Path, help="reuse / keep rendered held-out crops here")
    e.add_argument(
        "--switch-margin", type=float, metavar="M",
        help="the side vote's margin for the sequences (default: the tracker's, tracker.side_vote.SideVoteConfig)",
    )
    e.add_argument("--write", action="store_true", help="store the metrics in the manifest (checksums are unaffected)")
    e.add_argument(
        "--out", type=Path, metavar="FILE.json", dest="metrics_out",
        help="also write the metrics printed to this file, with the command, the machine and the weights' checksums",
    )
    args = parser.parse_args(argv)

    if args.command == "train":
        config = TrainConfig()
        overrides = {
            "samples": args.samples,
            "held_out_samples": args.held_out,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": args.lr,
            "threads": args.threads,
        }
        config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
        if args.right_hands_only:
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, render_left_hands=False))
        if min(config.samples, config.held_out_samples, config.steps, config.batch_size, config.threads) < 1:
            parser.error("--samples, --held-out, --steps, --batch-size and --threads must be >= 1")
        if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):  # NaN fails too
            parser.error(f"--lr must be a positive number, got {config.learning_rate}")
        if args.out.exists() and not args.out.is_dir():
            parser.error(f"--out {args.out} is a file, not a run directory")
        summary = train(config, args.out)
        print(
            f"trained {summary['steps']} steps ({summary['samples_seen']} samples) "
            f"in {summary['train_seconds'] / 60:.1f} min after "
            f"{summary['render_seconds'] / 60:.1f} min of rendering; weights in {args.out / 'export'}"
        )
        if args.evaluate:
            args.weights, args.write, args.held_out, args.seeds, args.frames, args.cache = (
                args.out / "export",
                True,
                config.held_out_samples,
                list(range(10, 22)),
                150,
                args.out / "cache",
            )
    if args.command == "evaluate" and min(args.held_out, args.frames) < 1:
        parser.error("--held-out and --frames must be >= 1")
    if args.command == "evaluate" and min(args.seeds) < 0:
        parser.error("--seeds must be 0 or more")
    if args.command == "evaluate" and args.switch_margin is not None and not (math.isfinite(args.switch_margin) and args.switch_margin >= 0):
        parser.error(f"--switch-margin must be a number of 0 or more, got {args.switch_margin}")
    if args.command == "evaluate" or getattr(args, "evaluate", False):
        try:
            from tracker.side_vote import SideVoteConfig

            margin = getattr(args, "switch_margin", None)
            vote_config = SideVoteConfig() if margin is None else SideVoteConfig(switch_margin=margin)
            if args.write and vote_config != SideVoteConfig():
                parser.error("--write stores the tracker's own vote; leave --switch-margin out")
            metrics = evaluate(args.weights, args.held_out, tuple(args.seeds), args.frames, args.cache, vote_config=vote_config)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        shown = {k: {kk: vv for kk, vv in v.items() if kk not in ("per_frame", "per_sequence")} for k, v in metrics.items()}
        print(json.dumps(shown, indent=2))
        if getattr(args, "metrics_out", None) is not None:
            from tracker.machine import machine_info

            record = {
                "benchmark": "side_vote",
                "command": ["python", "-m", "tracker.side_classifier", *(sys.argv[1:] if argv is None else argv)],
                "machine": machine_info(),
                "weights": {"dir": str(Path(args.weights).resolve()), "sha256": load_manifest(args.weights).get("files", {})},
                **shown,
            }
            args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
            args.metrics_out.write_text(json.dumps(record, indent=2) + "\n")
        if args.write:
            manifest = load_manifest(args.weights)
            manifest["metrics"] = metrics
            write_manifest(args.weights, manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
