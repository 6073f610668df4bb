"""Tells whether the crop the tracker found shows a hand at all: a small CNN on the side
classifier's 64 x 64 crop (by default; see ``DataConfig.out_of_image``).

The confidence (``tracker.confidence``) asks whether the depth bears the fitted mesh out.
The end of an arm whose hand is out of view, hidden or nearer than the sensor measures
bears a mesh out as well as a hand does: the network, which only knows hands, fits one
there, and the tracker reported a hand on the arm. This classifier decides from the depth
alone, so the tracker drops such a crop (``TrackerConfig.min_hand_probability``).

    python -m tracker.presence train --out runs/presence --evaluate
    python -m tracker.presence evaluate --weights weights/presence --write

Training data are rendered scenes, each crop cut where the tracker's segmentation finds
the "hand" (``track_hand_center`` with no prior) and as the side classifier's crop
(``make_crop`` camera frame, the far face past the image's edge unless
``DataConfig.out_of_image`` says otherwise, unmirrored), so the classifier
sees what the tracker gives it:

* ``hand``: the hand network's scenes (hand, arm, desk or wall, body, stereo noise);
* ``arm``: the same kind of scenes drawn without their hand (``SceneConfig.hand``): arm,
  desk, body and noise drawn alike, so nothing but the hand tells the two kinds apart;
* ``object``: balls, heads, boxes, tubes and boards alone over nothing, a wall or a desk.

A ``hand`` crop is a positive when its centre lies within ``DataConfig.positive_within_m``
of the visible hand's centroid and it holds a hand pixel, a negative when it holds no hand
pixel (the segmentation took the body or the desk), and left out in between (it took the
arm, and the crop shows part of the hand). Augmentation mirrors, turns, shifts and scales
crops, moves them in depth, adds noise and dropouts, and blanks a half-plane as the
image's edge does, so an arm running out of the image is a negative and a hand with half
of it past the edge is still a positive. ``DataConfig.edge_cut_probability`` (off by
default) also cuts hand scenes by the image's edge before the segmentation looks at them,
as a camera cuts a hand that leaves its view: the segmentation then centres the crop on
what is left, further up the arm than the half-plane above, which cuts a crop already
centred on the whole hand. ``DataConfig.out_of_image`` (the far face by default) can
instead mark what lies past the image's edge in the crops, the half-plane too; the
manifest records it, and a run cuts the classifier's crops alike
(``tracker.side_inference.classifier_crop``). Streams 5 (training) and 6 (held out): 1-4
are the hand network's and the side classifier's; 5 also draws the 8-bit network's
calibration crops, hand scenes of another kind, for another model.

The held-out metrics leave out what training leaves out, hand-scene crops between
positive and negative (the segmentation on the arm, part of the hand in the crop), which
are among the hardest at run time; ``benchmarks/confidence_separation.py`` measures the
classifier as the tracker uses it. Training segments a 0.8 m window around the hand
without a prior; a run segments whole frames, with the last hand centre as the prior
inside a track. The scene cache is keyed by the data config only: a change to how crops
are rendered or labelled must bump ``CACHE_FORMAT``.

Weights (``weights/presence/``): ``presence.pt``, ``presence.onnx`` and the manifest
``presence.json`` (checksums, training summary, held-out metrics), loaded as the side
classifier's are (``tracker.side_inference.HandPresence``).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import multiprocessing
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from kernels.raster import composite_ellipsoid, composite_plane, rasterize_mesh
from kernels.sensor_noise import apply_stereo_noise
from tracker.crop import CROP_SIZE, DEFAULT_CUBE_SIZE_M, OUT_OF_IMAGE_DEPTH, OutOfImage, make_crop, resample
from tracker.machine import machine_info
from tracker.segment import SegmentConfig, track_hand_center
from tracker.side_classifier import (
    StagesConfig,
    _conv,
    cached_arrays,
    count_parameters,
    load_state,
    read_manifest,
    torch_logits,
    write_manifest,
)
from tracker.side_inference import PRESENCE_ONNX, PRESENCE_ONNX_INPUT, PRESENCE_ONNX_OUTPUT, HandPresence
from tracker.synth.dataset import config_to_dict, sample_seed
from tracker.synth.scene import SceneConfig, forearm_mesh, render_sample
from tracker.training_data import hand_centroid
from tracker.types import CameraIntrinsics, Handedness
from tracker.weights import WEIGHTS_DIR, WeightsError, sha256_of

PRESENCE_WEIGHTS_DIR = WEIGHTS_DIR / "presence"
MANIFEST = "presence.json"
STATE_DICT = "presence.pt"
ONNX_OPSET = 17
FORMAT = "dgn-hand-presence/1"

TRAIN_STREAM_SEED = 5
HELD_OUT_STREAM_SEED = 6
KINDS = ("hand", "arm", "object")
#: Bumped with every change to what ``render_crop`` makes of a config (see the module docstring).
CACHE_FORMAT = 2
#: Share of each kind among the rendered crops, in this order (repeating): hands half.
KIND_CYCLE = ("hand", "arm", "hand", "object")


# ----------------------------------------------------------------------------- network


@dataclass(frozen=True)
class PresenceNetConfig(StagesConfig):
    """Conv stages as (out_channels, kernel, stride), then average and max pooling (where in
    the crop the evidence lies does not matter) and a small head."""

    stages: tuple[tuple[int, int, int], ...] = ((16, 5, 2), (32, 3, 2), (32, 3, 1), (64, 3, 2), (64, 3, 1), (96, 3, 2))
    hidden: int = 32
    crop_size: int = CROP_SIZE


class PresenceNet(nn.Module):
    """(B, 1, S, S) crop -> (B, 1) logit, > 0: a hand."""

    def __init__(self, config: PresenceNetConfig = PresenceNetConfig()) -> None:
        super().__init__()
        self.config = config
        layers, channels = [], 1
        for out, kernel, step in config.stages:
            layers.append(_conv(channels, out, kernel, step))
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * channels, config.hidden), nn.ReLU(inplace=True), nn.Linear(config.hidden, 1))

    def forward(self, depth: torch.Tensor) -> torch.Tensor:
        x = self.features(depth)
        return self.head(torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], 1))


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataConfig:
    #: The hand network's scenes, rendered as a 0.8 m window around the palm (wide enough
    #: for the segmentation to wander up an arm without its hand). Their desk or wall lies
    #: 8 cm or more behind the wrist (``SceneConfig.table_distance_m``); from right behind
    #: the hand on (``--table-distance 0 0.4``) the classifier kept more hands a few
    #: centimetres before a wall and fewer elsewhere (``docs/network.md``, "Hand or no hand").
    scene: SceneConfig = field(default_factory=lambda: dataclasses.replace(SceneConfig(), render_window_m=0.8))
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    cube_size_m: float = DEFAULT_CUBE_SIZE_M
    crop_size: int = CROP_SIZE
    positive_within_m: float = 0.05
    #: Objects alone: distance from the camera and what lies behind them.
    object_depth_m: tuple[float, float] = (0.25, 1.0)
    object_window_m: float = 0.8
    #: Share of the hand scenes whose image ends inside the hand (``cut_at_image_edge``),
    #: before the segmentation looks for it, which then finds what is left: the share of
    #: the hand's pixels left in view is drawn from ``edge_cut_keep``, or is none at all
    #: with ``edge_cut_whole_hand`` (an arm whose hand is past the edge: a negative, or, cut
    #: from the arm's side, the body or nothing). The side is drawn at random. Off for the
    #: shipped weights: at 0.25 it kept more hands cut by the edge and fewer before a wall
    #: (``docs/network.md``, "Hand or no hand"). The held-out scenes are never cut.
    edge_cut_probability: float = 0.0
    edge_cut_keep: tuple[float, float] = (0.5, 0.95)
    edge_cut_whole_hand: float = 0.25
    #: What the crops show past the image's edge (``tracker.crop.OutOfImage``): the far
    #: face, as for background, or a mark of its own, so that an arm running out of the
    #: image is told from one that ends there. Recorded in the manifest: a run cuts the
    #: classifier's crops as it was trained. The far face for the shipped weights: marked,
    #: it kept one point more of the hands cut by the edge, let no fewer arms through, and
    #: lost as many or more hands before a wall (``docs/network.md``, "Hand or no hand").
    out_of_image: OutOfImage = OutOfImage.FAR


def _box_mesh(half_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64) * half_sizes
    quads = ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3))
    faces = [(a, b, c) for a, b, c, d in quads] + [(a, c, d) for a, b, c, d in quads]
    return corners, np.asarray(faces, np.int32)


def object_scene(rng: np.random.Generator, config: DataConfig) -> tuple[np.ndarray, CameraIntrinsics, np.ndarray]:
    """One or two things that are not hands, alone over nothing, a wall or a desk, with the
    scenes' sensor noise: ((H, W) float32 depth, metres, 0 = nothing; the window's
    intrinsics; the whole sensor's intrinsics)."""
    sensor = config.scene.camera.sample(rng)
    z0 = rng.uniform(*config.object_depth_m)
    x0, y0 = rng.uniform(-0.25, 0.25, 2) * z0
    u0, v0 = sensor.fx * x0 / z0 + sensor.cx, sensor.fy * y0 / z0 + sensor.cy
    half = 0.5 * sensor.fx * config.object_window_m / z0
    xa, xb = int(np.clip(u0 - half, 0, sensor.width - 1)), int(np.clip(u0 + half, 1, sensor.width))
    ya, yb = int(np.clip(v0 - half, 0, sensor.height - 1)), int(np.clip(v0 + half, 1, sensor.height))
    k = CameraIntrinsics(max(xb - xa, 1), max(yb - ya, 1), sensor.fx, sensor.fy, sensor.cx - xa, sensor.cy - ya)
    h, w = k.height, k.width
    depth = np.zeros((h, w), np.float32)
    labels = np.zeros((h, w), np.int16)
    face_index = np.full((h, w), -1, np.int32)
    bary = np.zeros((h, w, 3), np.float32)
    intr = (k.fx, k.fy, k.cx, k.cy)
    background = rng.integers(3)  # nothing, a wall, a desk
    if background == 1:
        normal = Rotation.from_euler("xy", rng.uniform(-30, 30, 2), degrees=True).apply([0.0, 0.0, -1.0])
        composite_plane(np.array([x0, y0, z0 + rng.uniform(0.05, 1.2)]), normal, *intr, depth, labels, 1, config.scene.max_depth_m)
    elif background == 2:
        normal = Rotation.from_euler("xz", rng.uniform(-35, 35, 2), degrees=True).apply([0.0, -1.0, 0.0])
        composite_plane(np.array([x0, y0 + rng.uniform(0.03, 0.3), z0]), normal, *intr, depth, labels, 1, config.scene.max_depth_m)
    faces_so_far = 0
    for i in range(1 + int(rng.uniform() < 0.3)):
        centre = np.array([x0, y0, z0]) + (rng.normal(0.0, 0.12, 3) if i else 0.0)
        rotation = Rotation.random(random_state=rng).as_matrix()
        kind = rng.integers(5)
        if kind <= 1:  # a ball, or a head-sized one
            radii = rng.uniform(0.025, 0.07, 3) if kind == 0 else rng.uniform(0.07, 0.13, 3)
            composite_ellipsoid(centre, rotation, radii, *intr, depth, labels, 2)
            continue
        if kind == 2:  # a box
            vertices, faces = _box_mesh(rng.uniform(0.015, 0.1, 3))
        elif kind == 3:  # a tube: a bar, a bottle, an arm
            r = rng.uniform(0.015, 0.05)
            vertices, faces = forearm_mesh(rng.uniform(0.1, 0.6), (r, r * rng.uniform(0.6, 1.0)), (r, r), cap_wrist=True)
            vertices = vertices - np.array([0.0, 0.0, rng.uniform(0.0, 0.1)])
        else:  # a board, a book, a phone
            vertices, faces = _box_mesh(np.array([rng.uniform(0.03, 0.15), rng.uniform(0.05, 0.2), rng.uniform(0.004, 0.02)]))
        vertices = vertices @ rotation.T + centre
        rasterize_mesh(vertices, faces, *intr, h, w, config.scene.near_m, depth, face_index, bary, faces_so_far)
        faces_so_far += len(faces)
    if rng.uniform() < config.scene.noise_probability:
        depth = apply_stereo_noise(depth, k.fx, config.scene.noise, rng)
    depth = np.where((depth < 0) | (depth > config.scene.max_depth_m), 0.0, depth)
    # As the scenes: whole depth units of the camera.
    scale = config.scene.camera.depth_scale_m
    return (np.round(depth / scale) * scale).astype(np.float32), k, sensor


def cut_at_image_edge(
    depth_m: np.ndarray, intrinsics: CameraIntrinsics, sensor: CameraIntrinsics, hand_mask: np.ndarray, side: int, keep: float
) -> tuple[np.ndarray, CameraIntrinsics, CameraIntrinsics, np.ndarray] | None:
    """The image's edge moved into the hand from one side (0 left, 1 right, 2 top, 3 bottom),
    so that a share ``keep`` of its pixels stays in view (0: none, the cut just past the
    hand): (depth, window intrinsics, sensor intrinsics, hand mask) of the frame a camera
    with that edge would give. ``depth_m`` is a window of ``sensor`` (``intrinsics`` its
    own); the cut window stays a window of the cut sensor. None where nothing of the
    window is left."""
    if side not in (0, 1, 2, 3) or not 0 <= keep <= 1:
        raise ValueError(f"a cut from side 0-3 keeping a share in [0, 1], not side {side}, share {keep}")
    v, u = np.nonzero(hand_mask)
    if not len(u):
        return depth_m, intrinsics, sensor, hand_mask
    height, width = depth_m.shape
    along = np.sort(u if side < 2 else v)
    dropped = int(round((1 - keep) * len(along)))
    if side in (0, 2):  # what lies at or past the cut stays
        cut = int(along[dropped]) if dropped < len(along) else int(along[-1]) + 1
        lo, hi = cut, (width if side == 0 else height)
    else:
        cut = int(along[len(along) - 1 - dropped]) + 1 if dropped < len(along) else int(along[0])
        lo, hi = 0, cut
    if hi <= lo:
        return None
    # The window's pixel (x, y) is the sensor's (x + ox, y + oy).
    ox, oy = round(sensor.cx - intrinsics.cx), round(sensor.cy - intrinsics.cy)
    if side < 2:
        window = (slice(None), slice(lo, hi))
        cut_intrinsics = dataclasses.replace(intrinsics, width=hi - lo, cx=intrinsics.cx - lo)
        cut_sensor = dataclasses.replace(sensor, width=sensor.width - ox - lo, cx=sensor.cx - ox - lo) if side == 0 else dataclasses.replace(sensor, width=ox + hi)
    else:
        window = (slice(lo, hi), slice(None))
        cut_intrinsics = dataclasses.replace(intrinsics, height=hi - lo, cy=intrinsics.cy - lo)
        cut_sensor = dataclasses.replace(sensor, height=sensor.height - oy - lo, cy=sensor.cy - oy - lo) if side == 2 else dataclasses.replace(sensor, height=oy + hi)
    return np.ascontiguousarray(depth_m[window]), cut_intrinsics, cut_sensor, np.ascontiguousarray(hand_mask[window])


def render_crop(model, config: DataConfig, seed: int, kind: str) -> dict[str, np.ndarray] | None:
    """One crop of ``kind`` cut where the segmentation finds the hand (None: where it finds
    nothing, or a ``hand`` crop between positive and negative, see the module docstring).

    depth (S, S) float32 as ``make_crop(..., RIGHT, out_of_image=config.out_of_image)`` gives
    it; hand (S, S) bool hand pixels;
    label float32 (1: a hand); kind int8 (index in KINDS); seed.
    """
    hand_mask = None
    if kind == "object":
        depth_m, intrinsics, sensor = object_scene(np.random.default_rng([seed, 2]), config)
    else:
        sample = render_sample(model, dataclasses.replace(config.scene, hand=kind == "hand"), seed)
        depth_m = sample.depth.astype(np.float32) * np.float32(sample.depth_scale)
        intrinsics, sensor = sample.intrinsics, sample.sensor
        if kind == "hand":
            hand_mask = sample.mask
            cut = np.random.default_rng([seed, 3])
            if cut.uniform() < config.edge_cut_probability:
                keep = 0.0 if cut.uniform() < config.edge_cut_whole_hand else cut.uniform(*config.edge_cut_keep)
                frame = cut_at_image_edge(depth_m, intrinsics, sensor or intrinsics, hand_mask, int(cut.integers(4)), keep)
                if frame is None:
                    return None
                depth_m, intrinsics, sensor, hand_mask = frame
    centre = track_hand_center(depth_m, intrinsics, None, config.segment)
    if centre is None:
        return None
    crop = make_crop(
        depth_m, intrinsics, centre, config.cube_size_m, Handedness.RIGHT, crop_size=config.crop_size, out_of_image=config.out_of_image, sensor=sensor
    )
    hand = np.zeros(crop.depth.shape, bool)
    label = 0.0
    if hand_mask is not None:
        hand = resample(hand_mask, crop.image_from_crop, config.crop_size, 0).astype(bool) & crop.measured
        centroid = hand_centroid(depth_m, hand_mask, intrinsics, sample.joints.mean(0))
        # A hand pixel in the crop too: with almost none in view the centroid is the joints'.
        if hand.any() and np.linalg.norm(centre - centroid) <= config.positive_within_m:
            label = 1.0
        elif hand.any():
            return None
    return {"depth": crop.depth, "hand": hand, "label": np.float32(label), "kind": np.int8(KINDS.index(kind)), "seed": np.int64(seed)}


def _render_chunk(args) -> list[dict]:
    config, stream_seed, indices = args
    from tracker.hand_model import HandModel

    model = HandModel.load()
    rows = []
    for i in indices:
        row = render_crop(model, config, sample_seed(stream_seed, i), KIND_CYCLE[i % len(KIND_CYCLE)])
        if row is not None:
            rows.append(row)
    return rows


def render_set(config: DataConfig, stream_seed: int, count: int, workers: int = 2, progress: bool = True, desc: str = "rendering") -> dict[str, np.ndarray]:
    """Crops of samples 0..count-1 of a stream (kinds as KIND_CYCLE; fewer crops than
    samples, see ``render_crop``), rendered in ``workers`` processes."""
    chunks = [(config, stream_seed, range(a, min(a + 100, count))) for a in range(0, count, 100)]
    rows: list[dict] = []
    bar = tqdm(total=count, disable=not progress, desc=desc, unit="scene")
    if workers <= 1:
        for chunk in chunks:
            rows += _render_chunk(chunk)
            bar.update(len(chunk[2]))
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for chunk, part in zip(chunks, pool.imap(_render_chunk, chunks)):
                rows += part
                bar.update(len(chunk[2]))
    bar.close()
    if not rows:
        raise ValueError(f"no crop in samples 0..{count - 1} of stream {stream_seed}: the segmentation found nothing to crop")
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def held_out_data(config: DataConfig) -> DataConfig:
    """The held-out scenes' config for a run on ``config``: no scene cut by the image's edge
    (``edge_cut_probability``), so that runs with and without the cuts are measured alike."""
    return dataclasses.replace(config, edge_cut_probability=0.0)


def cached_set(cache_dir: Path | None, config: DataConfig, stream_seed: int, count: int, workers: int = 2, progress: bool = True, desc: str = "rendering") -> tuple[dict[str, np.ndarray], float]:
    """render_set, read from / written to ``cache_dir`` (keyed by the full config); returns
    (data, seconds the rendering took)."""
    key = {"cache_format": CACHE_FORMAT, "stream": stream_seed, "count": count, "data": config_to_dict(config)}
    path = None if cache_dir is None else Path(cache_dir) / f"presence_stream{stream_seed}_n{count}.npz"
    return cached_arrays(path, key, lambda: render_set(config, stream_seed, count, workers, progress, desc))


@dataclass(frozen=True)
class AugmentConfig:
    mirror_probability: float = 0.5
    max_shift_px: float = 4.0
    max_scale: float = 1.1
    max_depth_offset: float = 0.12  # crop units (1 = 13 cm): the segmentation's error in z
    max_noise_sigma: float = 0.015
    max_pixel_dropout: float = 0.05
    #: A half-plane of the crop past the image's edge; a positive keeps at least
    #: ``edge_keep_hand`` of its hand pixels (else it is left whole): a hand half out of
    #: view is still one to track.
    edge_probability: float = 0.4
    edge_keep_hand: float = 0.5


def augment(
    depth: torch.Tensor, hand: torch.Tensor, label: torch.Tensor, config: AugmentConfig, generator: torch.Generator,
    out_of_image: OutOfImage = OutOfImage.FAR,
) -> torch.Tensor:
    """(B, 1, S, S) crops and (B, 1, S, S) bool hand pixels -> augmented (B, 1, S, S) crops.
    ``out_of_image``: what the crops show past the image's edge; with ``MARKED`` the marked
    pixels move with the crop and keep their mark (no depth offset, noise or dropout), and
    the half-plane standing for the image's edge is marked too."""
    b, _, s, _ = depth.shape
    marked = OutOfImage(out_of_image) == OutOfImage.MARKED
    unseen_value = OUT_OF_IMAGE_DEPTH if marked else 1.0

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=generator)

    mirror = (uniform(0, 1) < config.mirror_probability)[:, None, None, None]
    x = torch.where(mirror, depth.flip(-1), depth)
    hand = torch.where(mirror, hand.flip(-1), hand).float()
    angle = uniform(-math.pi, math.pi)
    scale = torch.exp(uniform(-math.log(config.max_scale), math.log(config.max_scale)))
    shift = uniform(-1, 1, b, 2) * (2 * config.max_shift_px / s)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [b, 2, s, s], align_corners=False)
    # Around 0, so the zero padding becomes background (1); nearest, as make_crop.
    both = F.grid_sample(torch.cat([x - 1, hand], 1), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    unseen = torch.zeros_like(both[:, 1:], dtype=torch.bool)
    if marked:
        # What lies past the image reaches the crop's border, as a turn must keep it: the
        # corners it brings in beside a marked border are marked, not background.
        unseen = F.grid_sample((x == OUT_OF_IMAGE_DEPTH).float(), grid, mode="nearest", padding_mode="border", align_corners=False) > 0.5
    x, hand = both[:, :1] + 1, both[:, 1:] > 0.5
    x = torch.where(unseen, torch.full_like(x, OUT_OF_IMAGE_DEPTH), x)
    foreground = (x < 1) & ~unseen
    x = torch.where(foreground, x * scale[:, None, None, None] + uniform(-config.max_depth_offset, config.max_depth_offset)[:, None, None, None], x)
    x = x + torch.randn(x.shape, generator=generator) * uniform(0, config.max_noise_sigma)[:, None, None, None] * foreground
    x = torch.where(foreground & ((x < -1) | (x > 1)), torch.ones_like(x), x)
    drop = torch.rand(x.shape, generator=generator) < uniform(0, config.max_pixel_dropout)[:, None, None, None]
    x = torch.where(drop & ~unseen, torch.ones_like(x), x)
    # The image's edge: a half-plane at a random direction and offset shows what is past it.
    centres = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    direction = uniform(-math.pi, math.pi)
    offset = uniform(-0.3, 0.9)[:, None, None]
    past = (xx[None] * torch.cos(direction)[:, None, None] + yy[None] * torch.sin(direction)[:, None, None]) > offset
    hand_pixels = hand[:, 0].sum(dim=(1, 2)).float()
    kept = (hand[:, 0] & ~past).sum(dim=(1, 2)).float()
    apply = (uniform(0, 1) < config.edge_probability) & ((label < 0.5) | (kept >= config.edge_keep_hand * hand_pixels))
    return torch.where(apply[:, None, None, None] & past[:, None], torch.full_like(x, unseen_value), x)


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    samples: int = 12000
    held_out_samples: int = 1200
    steps: int = 3000
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    eval_every: int = 250
    seed: int = 0
    render_workers: int = 2
    network: PresenceNetConfig = field(default_factory=PresenceNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


def metrics_of(logits: np.ndarray, data: dict[str, np.ndarray]) -> dict:
    """Per kind (and hand crops by label): crops, share called a hand (logit > 0), quantiles
    of P(hand); overall accuracy."""
    probability = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    called = logits > 0
    label = data["label"] > 0.5
    out: dict = {"crops": int(len(logits)), "accuracy": float((called == label).mean())}
    groups = {"hands": label, "arms": data["kind"] == KINDS.index("arm"), "objects": data["kind"] == KINDS.index("object"),
              "hand_scenes_without_hand_in_crop": (data["kind"] == KINDS.index("hand")) & ~label}
    for name, chosen in groups.items():
        if chosen.any():
            q = np.quantile(probability[chosen], [0.05, 0.25, 0.5, 0.75, 0.95])
            out[name] = {"crops": int(chosen.sum()), "called_hand": float(called[chosen].mean()),
                         "probability_quantiles_5_25_50_75_95": [round(float(v), 4) for v in q]}
    return out


def train(config: TrainConfig, out_dir: Path, progress: bool = True) -> tuple[PresenceNet, dict]:
    if config.data.crop_size != config.network.crop_size:
        raise ValueError(f"crops of {config.data.crop_size} pixels for a network of {config.network.crop_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "training_config.json").write_text(json.dumps(config_to_dict(config), indent=2) + "\n")
    cache = out_dir / "cache"
    data, render_train = cached_set(cache, config.data, TRAIN_STREAM_SEED, config.samples, config.render_workers, progress, "rendering training scenes")
    # Held out as the shipped weights are, whatever the training scenes' cuts: comparable.
    held, render_held = cached_set(cache, held_out_data(config.data), HELD_OUT_STREAM_SEED, config.held_out_samples, config.render_workers, progress, "rendering held-out scenes")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    network = PresenceNet(config.network)
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)

    def rate(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        t = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
    depth = torch.from_numpy(data["depth"].astype(np.float32))[:, None]
    hand = torch.from_numpy(data["hand"])[:, None]
    label = torch.from_numpy(data["label"].astype(np.float32))
    # Positives and negatives drawn equally often, whatever their counts.
    weights = torch.where(label > 0.5, 0.5 / max(float((label > 0.5).sum()), 1.0), 0.5 / max(float((label < 0.5).sum()), 1.0))
    log_path = out_dir / "training_metrics.csv"
    began = time.perf_counter()
    with open(log_path, "w", newline="") as log:
        writer = csv.writer(log)
        writer.writerow(["step", "samples", "learning_rate", "loss", "held_out_accuracy", "held_out_hands_called", "held_out_arms_called", "held_out_objects_called"])
        bar = tqdm(range(config.steps), disable=not progress, desc="training", unit="step")
        running = None
        for step in bar:
            network.train()
            index = torch.multinomial(weights, config.batch_size, replacement=True, generator=generator)
            x = augment(depth[index], hand[index], label[index], config.augment, generator, config.data.out_of_image)
            loss = F.binary_cross_entropy_with_logits(network(x)[:, 0], label[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            value = loss.item()
            running = value if running is None else 0.95 * running + 0.05 * value
            bar.set_postfix(loss=f"{running:.4f}", steps_per_s=f"{(step + 1) / (time.perf_counter() - began):.1f}")
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                m = metrics_of(torch_logits(network, held["depth"]), held)
                called = [f"{m[group]['called_hand']:.4f}" if group in m else "" for group in ("hands", "arms", "objects")]  # a small held-out set may lack a kind
                writer.writerow([step + 1, (step + 1) * config.batch_size, f"{scheduler.get_last_lr()[0]:.3g}", f"{running:.4f}", f"{m['accuracy']:.4f}", *called])
                log.flush()
    summary = {
        "scenes": config.samples, "crops": int(len(label)), "positives": int((label > 0.5).sum()), "steps": config.steps,
        "samples_seen": config.steps * config.batch_size, "render_seconds": round(render_train + render_held, 1),
        "train_seconds": round(time.perf_counter() - began, 1), "machine": machine_info(),
    }
    return network.eval(), summary


# ----------------------------------------------------------------------------- weights


def export_weights(
    network: PresenceNet, out_dir: str | Path, training: dict | None = None, metrics: dict | None = None, cube_size_m: float = DEFAULT_CUBE_SIZE_M,
    out_of_image: OutOfImage = OutOfImage.FAR,
) -> dict:
    """Write presence.pt, presence.onnx and presence.json into ``out_dir``; returns the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    network = network.cpu().eval()
    torch.save({k: v.detach().clone() for k, v in network.state_dict().items()}, out_dir / STATE_DICT)
    s = network.config.crop_size
    torch.onnx.export(network, (torch.zeros(1, 1, s, s),), str(out_dir / PRESENCE_ONNX), input_names=[PRESENCE_ONNX_INPUT],
                      output_names=[PRESENCE_ONNX_OUTPUT], opset_version=ONNX_OPSET, dynamo=False)
    out_of_image = OutOfImage(out_of_image)
    marked = out_of_image == OutOfImage.MARKED
    manifest = {
        "format": FORMAT,
        "network": network.config.to_dict(),
        "parameters": count_parameters(network),
        "input": f"the crop of tracker.crop.make_crop(depth_m, intrinsics, centre, {cube_size_m}, Handedness.RIGHT"
        + (", out_of_image=OutOfImage.MARKED)" if marked else ") (the side classifier's)")
        + ": (1, 1, S, S) float32 in [-1, 1], background 1"
        + (f", past the image's edge {OUT_OF_IMAGE_DEPTH:g}" if marked else "")
        + "; output logit > 0: a hand",
        "cube_size_m": cube_size_m,
        "onnx": {"input": PRESENCE_ONNX_INPUT, "input_shape": [1, 1, s, s], "output": PRESENCE_ONNX_OUTPUT, "output_shape": [1, 1], "opset": ONNX_OPSET},
        "files": {STATE_DICT: sha256_of(out_dir / STATE_DICT), PRESENCE_ONNX: sha256_of(out_dir / PRESENCE_ONNX)},
        "training": training or {},
        "metrics": metrics or {},
    }
    if marked:  # absent means the far face (``tracker.side_inference.out_of_image_in``)
        manifest["out_of_image"] = out_of_image.value
    write_manifest(out_dir, manifest, MANIFEST)
    return manifest


def load_manifest(directory: str | Path = PRESENCE_WEIGHTS_DIR) -> dict:
    return read_manifest(directory, MANIFEST, FORMAT, "hand-presence", "python -m tracker.presence train", PresenceNetConfig, (STATE_DICT, PRESENCE_ONNX))


def load_network(directory: str | Path = PRESENCE_WEIGHTS_DIR) -> tuple[PresenceNet, dict]:
    """The verified torch network (eval mode, CPU) and its manifest."""
    manifest = load_manifest(directory)
    return load_state(directory, STATE_DICT, manifest, PresenceNet(PresenceNetConfig.from_dict(manifest["network"]))), manifest


# ----------------------------------------------------------------------------- command line


def evaluate(directory: Path, config: TrainConfig, cache_dir: Path | None, progress: bool = True) -> dict:
    """Held-out metrics of the weights in ``directory``: the torch network, and the ONNX
    one onnxruntime runs, on the same crops."""
    # Both checked before any scene is rendered: a damaged file fails at once.
    network, _ = load_network(directory)
    classifier = HandPresence.load(directory)
    # The crops as the weights were trained on them, whatever ``config`` says.
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, out_of_image=classifier.out_of_image, cube_size_m=classifier.cube_size_m or config.data.cube_size_m)
    )
    held, _ = cached_set(cache_dir, held_out_data(config.data), HELD_OUT_STREAM_SEED, config.held_out_samples, config.render_workers, progress, "rendering held-out scenes")
    logits = torch_logits(network, held["depth"])
    onnx_logits = classifier.logits(held["depth"])
    out = metrics_of(logits, held)
    out["onnx_max_logit_difference"] = float(np.abs(onnx_logits - logits).max())
    out["held_out"] = {"stream_seed": HELD_OUT_STREAM_SEED, "scenes": config.held_out_samples}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracker.presence", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="render scenes, train, export the weights to OUT/export")
    t.add_argument("--out", type=Path, required=True, help="run directory: config, loss log, scene cache, weights")
    t.add_argument("--samples", type=int, default=TrainConfig.samples, help="training scenes (default %(default)s)")
    t.add_argument("--held-out", type=int, default=TrainConfig.held_out_samples, help="held-out scenes (default %(default)s)")
    t.add_argument("--steps", type=int, default=TrainConfig.steps, help="optimiser steps (default %(default)s)")
    t.add_argument("--workers", type=int, default=TrainConfig.render_workers, help="rendering processes (default %(default)s)")
    t.add_argument("--seed", type=int, default=TrainConfig.seed, help="the network's initial weights and the order and augmentation of its crops (default %(default)s)")
    t.add_argument(
        "--edge-cut-probability", type=float, default=DataConfig.edge_cut_probability,
        help="share of the hand scenes cut by the image's edge before they are segmented (default %(default)s; see DataConfig)",
    )
    t.add_argument(
        "--out-of-image", choices=[o.value for o in OutOfImage], default=DataConfig.out_of_image.value,
        help="what the crops show past the image's edge: the far face, as background, or a mark of its own (default %(default)s; see DataConfig)",
    )
    t.add_argument(
        "--table-distance", type=float, nargs=2, default=list(SceneConfig.table_distance_m), metavar=("MIN", "MAX"),
        help="how far behind the wrist the hand scenes' desk or wall lies, metres, before it is moved back clear of the hand (default %(default)s)",
    )
    t.add_argument("--evaluate", action="store_true", help="write the held-out metrics into the manifest")
    e = sub.add_parser("evaluate", help="held-out metrics of a weights folder")
    e.add_argument("--weights", type=Path, default=PRESENCE_WEIGHTS_DIR, help="weights folder (default: the shipped one)")
    e.add_argument("--cache", type=Path, default=None, help="scene cache folder (default: render afresh)")
    e.add_argument("--held-out", type=int, default=TrainConfig.held_out_samples, help="held-out scenes (default %(default)s)")
    e.add_argument("--write", action="store_true", help="store the metrics in the folder's manifest")
    args = parser.parse_args(argv)
    if args.command == "train" and min(args.samples, args.held_out, args.steps, args.workers) < 1:
        parser.error("--samples, --held-out, --steps and --workers must be at least 1")
    if args.command == "train" and not 0 <= args.edge_cut_probability <= 1:
        parser.error(f"--edge-cut-probability must be in [0, 1], not {args.edge_cut_probability}")
    if args.command == "train" and not 0 <= args.table_distance[0] <= args.table_distance[1]:
        parser.error(f"--table-distance must be MIN MAX with 0 <= MIN <= MAX, not {args.table_distance}")
    if args.command == "train" and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a run directory")
    if args.command == "evaluate" and args.held_out < 1:
        parser.error("--held-out must be at least 1")
    try:
        if args.command == "train":
            data = DataConfig()
            data = dataclasses.replace(
                data, edge_cut_probability=args.edge_cut_probability, out_of_image=OutOfImage(args.out_of_image),
                scene=dataclasses.replace(data.scene, table_distance_m=tuple(args.table_distance)),
            )
            config = dataclasses.replace(TrainConfig(), samples=args.samples, held_out_samples=args.held_out, steps=args.steps, render_workers=args.workers, seed=args.seed, data=data)
            network, summary = train(config, args.out)
            weights_dir = args.out / "export"  # where every trainer here exports
            manifest = export_weights(network, weights_dir, summary, cube_size_m=config.data.cube_size_m, out_of_image=config.data.out_of_image)
            # The run's config and log go with the weights, as weights/presence/ keeps them:
            # the export is the folder to copy there.
            for name in ("training_config.json", "training_metrics.csv"):
                shutil.copyfile(args.out / name, weights_dir / name)
            (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")  # as the other trainers leave it
            if args.evaluate:
                manifest["metrics"] = evaluate(weights_dir, config, args.out / "cache")
                write_manifest(weights_dir, manifest, MANIFEST)
                print(json.dumps(manifest["metrics"], indent=2))
            print(f"weights written to {weights_dir}")
        else:
            config = dataclasses.replace(TrainConfig(), held_out_samples=args.held_out)
            metrics = evaluate(args.weights, config, args.cache)
            print(json.dumps(metrics, indent=2))
            if args.write:
                manifest = load_manifest(args.weights)
                manifest["metrics"] = metrics
                write_manifest(args.weights, manifest, MANIFEST)
    except WeightsError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
