"""Contact sheets of synthetic samples, for looking at the data rather than reading it.

    python -m tracker.synth.contact_sheet --out sheet.png --count 8 --seed 0
    python -m tracker.synth.contact_sheet --out sheet.png --shard data/shard-00000.npz

One row per sample: the whole frame (depth colour map, crop box), the hand crop with the
ground-truth skeleton drawn on the depth, the ground-truth mesh coordinates as colour
(red = grid u, green = grid v), and the part labels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from tracker.types import JOINT_PARENT_INDEX, CameraIntrinsics, Joint

PANEL = 220
#: BGR colour per finger for skeleton drawing (thumb, index, middle, ring, pinky).
FINGER_COLOURS = [(60, 60, 230), (60, 200, 60), (230, 160, 40), (200, 60, 200), (40, 200, 230)]


def project(points_cam_m: np.ndarray, intrinsics: CameraIntrinsics) -> np.ndarray:
    """(N, 3) camera-frame metres -> (N, 2) float64 pixels (pinhole)."""
    z = points_cam_m[:, 2]
    return np.stack(
        [intrinsics.fx * points_cam_m[:, 0] / z + intrinsics.cx, intrinsics.fy * points_cam_m[:, 1] / z + intrinsics.cy],
        axis=1,
    )


def colourise_depth(depth_m: np.ndarray, near_m: float, far_m: float) -> np.ndarray:
    """(H, W) float metres -> (H, W, 3) uint8 BGR turbo colour map, red near, blue far;
    no data (0, negative or NaN) is black. A range under a millimetre is widened to one,
    beyond ``near_m``.

    In few passes, most of them OpenCV's: the live overlay colours every frame. The map's
    level is 255 (far - d) / (far - near) rounded down and saturated into 0..255 (OpenCV
    rounds to nearest: hence the not quite half a level off). Depth is clamped to ``far``
    and taken from it first, so that the absolute value OpenCV takes changes nothing, and
    so that no large offset costs float32 its precision.
    """
    depth = np.asarray(depth_m, np.float32)
    span = max(float(far_m) - float(near_m), 1e-3)
    far = np.float32(float(near_m) + span)
    levels = cv2.convertScaleAbs(far - np.minimum(depth, far), alpha=255.0 / span, beta=-0.499)
    image = cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)
    return cv2.bitwise_and(image, image, mask=(depth > 0).view(np.uint8))


def colourise_mesh_coords(mesh_coords: np.ndarray, grid_size: int = 16) -> np.ndarray:
    """(H, W, 2) grid units (NaN = none) -> (H, W, 3) uint8 BGR: red = u, green = v."""
    valid = np.all(np.isfinite(mesh_coords), axis=-1)
    safe = np.where(valid[..., None], mesh_coords, 0.0)
    image = np.zeros(mesh_coords.shape[:2] + (3,), np.uint8)
    image[..., 2] = (255 * safe[..., 0] / grid_size).astype(np.uint8)
    image[..., 1] = (255 * safe[..., 1] / grid_size).astype(np.uint8)
    image[..., 0] = np.where(valid, 90, 0)
    return image


def colourise_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) int labels (-1 = background) -> (H, W, 3) uint8 BGR, one colour per label."""
    rng = np.random.default_rng(7)
    palette = rng.integers(60, 255, size=(64, 3)).astype(np.uint8)
    image = palette[np.clip(labels, 0, 63)]
    image[labels < 0] = 0
    return image


def draw_skeleton(image: np.ndarray, joints_uv: np.ndarray, offset=(0.0, 0.0), scale: float = 1.0) -> None:
    """Draw the 21-keypoint skeleton (pixels (21, 2)) onto a BGR image in place."""
    uv = (np.asarray(joints_uv) - np.asarray(offset)) * scale
    pts = [tuple(int(round(c)) for c in p) for p in uv]
    for j in Joint:
        parent = JOINT_PARENT_INDEX[j]
        if parent >= 0:
            colour = FINGER_COLOURS[(int(j) - 1) // 4]
            cv2.line(image, pts[parent], pts[j], colour, 2, cv2.LINE_AA)
    for j in Joint:
        cv2.circle(image, pts[j], 3, (255, 255, 255), -1, cv2.LINE_AA)


def _crop_box(joints_uv: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    pts = joints_uv
    if mask.any():
        vs, us = np.nonzero(mask)
        pts = np.vstack([pts, np.stack([us, vs], 1)])
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    side = max(float((hi - lo).max()) * 1.3, 24.0)
    return centre[0] - side / 2, centre[1] - side / 2, side


def _crop(image: np.ndarray, box, interpolation=cv2.INTER_NEAREST) -> np.ndarray:
    x0, y0, side = box
    s = PANEL / side
    affine = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]])
    return cv2.warpAffine(image, affine, (PANEL, PANEL), flags=interpolation, borderValue=(0, 0, 0))


def sample_row(depth_m, mask, mesh_coords, labels, joints_cam_m, intrinsics: CameraIntrinsics, title: str) -> np.ndarray:
    """One contact-sheet row (PANEL x 4*PANEL x 3 uint8 BGR) for a single sample."""
    joints_uv = project(joints_cam_m, intrinsics)
    hand_z = float(np.median(joints_cam_m[:, 2]))
    box = _crop_box(joints_uv, mask)
    full = colourise_depth(depth_m, hand_z - 0.3, hand_z + 1.0)
    x0, y0, side = box
    cv2.rectangle(full, (int(x0), int(y0)), (int(x0 + side), int(y0 + side)), (255, 255, 255), 2)
    h, w = depth_m.shape
    thumb_scale = PANEL / max(h, w)
    full = cv2.resize(full, (int(w * thumb_scale), int(h * thumb_scale)), interpolation=cv2.INTER_AREA)
    full_panel = np.zeros((PANEL, PANEL, 3), np.uint8)
    full_panel[(PANEL - full.shape[0]) // 2 :][: full.shape[0], : full.shape[1]] = full
    crop_depth = _crop(colourise_depth(depth_m, hand_z - 0.12, hand_z + 0.12), box)
    draw_skeleton(crop_depth, joints_uv, offset=(x0, y0), scale=PANEL / side)
    panels = [
        full_panel,
        crop_depth,
        _crop(colourise_mesh_coords(mesh_coords), box),
        _crop(colourise_labels(labels), box),
    ]
    row = np.hstack(panels)
    cv2.putText(row, title, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return row


def write_contact_sheet(rows: list[np.ndarray], path: str | Path) -> Path:
    header = np.zeros((22, PANEL * 4, 3), np.uint8)
    for i, name in enumerate(("frame (depth)", "crop + true skeleton", "mesh coords (R=u, G=v)", "part labels")):
        cv2.putText(header, name, (i * PANEL + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (220, 220, 220), 1, cv2.LINE_AA)
    sheet = np.vstack([header, *rows])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"OpenCV could not write {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    from tracker.synth.dataset import ShardError, iter_shard_samples, sample_seed
    from tracker.synth.scene import SceneConfig, render_sample
    from tracker.hand_model import HandModel

    parser = argparse.ArgumentParser(
        prog="python -m tracker.synth.contact_sheet",
        description="Write a PNG contact sheet of synthetic samples: depth, skeleton, mesh coordinates, parts.",
    )
    parser.add_argument("--out", type=Path, default=Path("out/synthetic_contact_sheet.png"), help="PNG to write")
    parser.add_argument("--count", type=int, default=8, help="number of samples (rows)")
    parser.add_argument(
        "--seed", type=int, default=0,
        help="sample stream: the first COUNT samples that python -m tracker.synth.dataset --seed SEED writes (default %(default)s)",
    )
    parser.add_argument("--shard", type=Path, help="read samples from a generated shard instead of rendering")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        parser.error(f"--out {args.out}: give a .png (or .jpg) file")
    rows = []
    if args.shard is not None:
        try:
            for i, s in zip(range(args.count), iter_shard_samples(args.shard)):
                rows.append(sample_row(s["depth_m"], s["mask"], s["mesh_coords"], s["labels"], s["joints"], s["intrinsics"], f"seed {s['seed']}"))
        except ShardError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        model = HandModel.load()
        for index in range(args.count):
            s = render_sample(model, SceneConfig(), sample_seed(args.seed, index))
            depth_m = s.depth.astype(np.float32) * s.depth_scale
            rows.append(sample_row(depth_m, s.mask, s.mesh_coords, s.labels, s.joints, s.intrinsics, f"seed {s.seed}"))
    try:
        path = write_contact_sheet(rows, args.out)
    except OSError as exc:  # a folder of that name, no permission, a full disk
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({len(rows)} samples)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
