"""Training examples for Dual Grid Net, rendered on the fly in data-loader workers.

Each example is one synthetic sample (``tracker.synth.scene``) cut to the network input
exactly as the live pipeline cuts a camera frame (``tracker.crop``), with the ground truth
moved into the crop: the mesh-coordinate map and hand mask resampled like the depth, the
vertices and keypoints in crop-normalised coordinates. The crop centre is the centroid of
the visible hand points, jittered, so the network learns to tolerate the segmentation's
centring error.

Sample i of a stream has seed ``sample_seed(stream_seed, i)``; the indices are dealt out to
(rank, worker) pairs, the stream's lanes, round-robin, so a run is reproducible. Lanes run
at their own pace, so a resumed run restarts each where it had got to (``StreamLanes``),
and no sample is drawn twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tracker.crop import CROP_SIZE, DEFAULT_CUBE_SIZE_M, BackgroundPlane, CropFrame, OutOfImage, camera_to_crop, make_crop, resample
from tracker.hand_model import HandModel
from tracker.synth.dataset import sample_seed
from tracker.synth.scene import SceneConfig, SyntheticSample, render_sample


@dataclass(frozen=True)
class ExampleConfig:
    scene: SceneConfig = field(default_factory=lambda: dataclasses.replace(SceneConfig(), render_window_m=0.45))
    cube_size_m: float = DEFAULT_CUBE_SIZE_M
    #: Standard deviation of the crop-centre jitter per axis, metres (segmentation error).
    center_jitter_m: float = 0.01
    crop_size: int = CROP_SIZE
    #: The crop's axes (``tracker.crop``): the ray frame shows a hand and its targets the same
    #: wherever it is in the image. Weights record theirs; ones from before it was a choice
    #: were trained in the camera frame.
    crop_frame: CropFrame = CropFrame.RAY
    #: What the crop shows past the image's edge (``tracker.crop``). Weights record theirs;
    #: ones from before it was a choice were trained with the far face there.
    out_of_image: OutOfImage = OutOfImage.FAR


def example_config_for(manifest: dict) -> ExampleConfig:
    """The examples a set of weights was trained on: their crop size, cube, crop frame and
    what their crops showed past the image's edge (evaluation and calibration crops must
    be cut the same way)."""
    from tracker.weights import crop_frame_of, out_of_image_of

    return ExampleConfig(
        crop_size=int(manifest["network"]["crop_size"]),
        cube_size_m=float(manifest["cube_size_m"]),
        crop_frame=crop_frame_of(manifest),
        out_of_image=out_of_image_of(manifest),
    )


def hand_centroid(depth_m: np.ndarray, mask: np.ndarray, intrinsics, fallback: np.ndarray) -> np.ndarray:
    """(3,) mean camera-frame point of the measured hand pixels (fallback if too few)."""
    valid = mask & (depth_m > 0)
    if valid.sum() < 10:
        return np.asarray(fallback, np.float64)
    v, u = np.nonzero(valid)
    z = depth_m[v, u].astype(np.float64)
    return np.array([((u - intrinsics.cx) / intrinsics.fx * z).mean(), ((v - intrinsics.cy) / intrinsics.fy * z).mean(), z.mean()])


def measured_hand(sample: SyntheticSample) -> tuple[np.ndarray, np.ndarray]:
    """The sample's depth, (H, W) float32 metres, and the centroid of its measured hand
    pixels, (3,) float64 camera frame (the joints' mean where too few are measured): the
    crop centre before any jitter."""
    depth_m = sample.depth.astype(np.float32) * np.float32(sample.depth_scale)
    return depth_m, hand_centroid(depth_m, sample.mask, sample.intrinsics, sample.joints.mean(0))


def make_example(model: HandModel, config: ExampleConfig, seed: int) -> dict[str, np.ndarray]:
    """One training example (numpy), see the module docstring.

    depth (1, S, S) float32 network input; mesh_coords (2, S, S) float32 grid units (0 off
    the hand); coords_valid (1, S, S) float32, 1 where the hand is seen and measured;
    hand_mask (1, S, S) float32 ground-truth hand pixels; vertices (V, 3), joints (21, 3)
    float32 crop-normalised; cube_size_m, center_cam_m; seed.
    """
    return example_from_sample(render_sample(model, config.scene, seed), config, seed)


def example_from_sample(
    sample: SyntheticSample, config: ExampleConfig, seed: int, background_plane: BackgroundPlane | None = None
) -> dict[str, np.ndarray]:
    """``make_example`` for an already rendered sample (its seed also draws the jitter).
    ``background_plane``: clear a wall or table behind the hand from the crop, as the
    tracker does (evaluation); training crops keep it."""
    depth_m, centroid = measured_hand(sample)
    rng = np.random.default_rng([seed, 1])
    centre = centroid + rng.normal(0.0, config.center_jitter_m, 3)
    # A left hand is mirrored into the right-hand network, targets with it, as at inference.
    crop = make_crop(
        depth_m, sample.intrinsics, centre, config.cube_size_m, sample.pose.handedness, crop_size=config.crop_size, frame=config.crop_frame,
        out_of_image=config.out_of_image, sensor=sample.sensor, background_plane=background_plane,
    )
    coords = resample(sample.mesh_coords, crop.image_from_crop, config.crop_size, (np.nan, np.nan, np.nan, np.nan))
    mask = resample(sample.mask, crop.image_from_crop, config.crop_size, 0)
    valid = mask & np.all(np.isfinite(coords), axis=-1) & crop.measured
    return {
        "depth": crop.depth[None],
        "mesh_coords": np.where(valid[..., None], coords, 0.0).transpose(2, 0, 1).astype(np.float32),
        "coords_valid": valid[None].astype(np.float32),
        # Hand where the camera measured it: the clean render's mask also covers the holes,
        # dropouts and shadows the noise made, which the mask head would learn to call hand.
        "hand_mask": (mask & crop.measured)[None].astype(np.float32),
        "vertices": camera_to_crop(sample.vertices, crop),
        "joints": camera_to_crop(sample.joints, crop),
        "cube_size_m": np.float32(config.cube_size_m),
        "center_cam_m": crop.center_cam_m,
        "seed": np.int64(seed),
    }


class SyntheticStream(IterableDataset):
    """Endless stream of examples for one (rank, world size), from sample index ``start``,
    or with ``lane_starts`` (one per lane, rank-major) from where each lane had got to.
    Each example carries its stream index (``index``)."""

    def __init__(
        self, config: ExampleConfig, stream_seed: int, start: int = 0, rank: int = 0, world_size: int = 1, lane_starts: list[int] | None = None
    ) -> None:
        self.config, self.stream_seed, self.start = config, stream_seed, start
        self.rank, self.world_size = rank, world_size
        self.lane_starts = None if lane_starts is None else [int(i) for i in lane_starts]

    def __iter__(self):
        info = get_worker_info()
        workers = info.num_workers if info else 1
        worker = info.id if info else 0
        lanes = self.world_size * workers
        lane = self.rank * workers + worker
        model = HandModel.load()
        if self.lane_starts is not None and len(self.lane_starts) != lanes:
            raise ValueError(f"{len(self.lane_starts)} lane starts for {lanes} lanes")
        index = self.start + lane if self.lane_starts is None else self.lane_starts[lane]
        while True:
            example = make_example(model, self.config, sample_seed(self.stream_seed, index))
            yield {**{k: torch.as_tensor(v) for k, v in example.items()}, "index": torch.tensor(index, dtype=torch.int64)}
            index += lanes


class StreamLanes:
    """How far each lane of a training stream has been taken: the next index of each.

    Lane ``l`` of a stream from ``start`` with ``lanes`` lanes draws start + l, start + l +
    lanes, ... The training loop reports the indices it took (``update``); a checkpoint keeps
    ``next`` so that a resumed run continues each lane exactly, and ``end`` is the first
    index no lane has reached (where a later fine-tune's stream begins).
    """

    def __init__(self, start: int, lanes: int, next_index: list[int] | None = None) -> None:
        self.start, self.lanes = int(start), int(lanes)
        self.next = np.arange(self.start, self.start + self.lanes, dtype=np.int64) if next_index is None else np.array(next_index, np.int64)
        if self.next.shape != (self.lanes,):
            raise ValueError(f"{self.next.shape[0]} lane positions for {self.lanes} lanes")

    def update(self, indices) -> None:
        indices = np.asarray(indices, np.int64).ravel()
        if indices.size:
            np.maximum.at(self.next, (indices - self.start) % self.lanes, indices + self.lanes)

    @property
    def end(self) -> int:
        """One past the largest index any lane has drawn (start when none has)."""
        return int(max(self.start, (self.next - self.lanes).max() + 1))

    def to_dict(self) -> dict:
        return {"start": self.start, "lanes": self.lanes, "next": self.next.tolist()}

    @classmethod
    def resumed(cls, saved: dict | None, start: int, lanes: int) -> "StreamLanes | None":
        """The lanes a checkpoint recorded, if it recorded these lanes of this stream."""
        if not saved or int(saved.get("start", -1)) != start or int(saved.get("lanes", -1)) != lanes:
            return None
        return cls(start, lanes, saved["next"])


def fixed_examples(config: ExampleConfig, stream_seed: int, count: int) -> dict[str, torch.Tensor]:
    """A fixed batch of ``count`` examples (held-out sets, tests)."""
    if count < 1:
        raise ValueError(f"a batch needs at least one example, not {count}")
    model = HandModel.load()
    examples = [make_example(model, config, sample_seed(stream_seed, i)) for i in range(count)]
    return {k: torch.as_tensor(np.stack([e[k] for e in examples])) for k in examples[0]}
