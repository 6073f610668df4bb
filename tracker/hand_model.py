"""The rigged hand model: loads the asset and poses it (numba on the host, torch for training).

Everything that needs a hand surface goes through ``HandModel``: the synthetic data
generator, the refit after the network, the training losses and the viewer. The asset is
``weights/hand_model.npz``, built from the WebXR generic hand by
``python -m tracker.hand_asset_builder`` (MIT, (c) 2019 Amazon; licence in
``weights/webxr-generic-hand/LICENSE.md``).

Pose parameters:

* ``local_rotations``: (J, 3, 3) rotation of each of the J = 25 skin joints relative to its
  bind pose, in the joint's own frame (see ``tracker.skeleton`` for the axis convention).
* ``bone_scales``: (J, 2) per joint [length scale, thickness scale], 1 = template.
* ``cam_from_hand``: (4, 4) rigid transform of the hand frame (wrist bind frame) into the
  camera frame, metres.

Left hands are the right-hand model mirrored in the hand frame's x (the lateral axis).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels.lbs import forward_kinematics, linear_blend_skinning, skinning_transforms, transform_points
from tracker.skeleton import (
    KEYPOINT_SKIN_JOINT_INDEX,
    NUM_PARTS,
    NUM_SKIN_JOINTS,
    SKIN_JOINT_NAMES,
    SKIN_JOINT_PARENTS,
    SKIN_JOINT_PART,
)
from tracker.types import Handedness

DEFAULT_ASSET = Path(__file__).resolve().parent.parent / "weights" / "hand_model.npz"
ASSET_FORMAT_VERSION = 1
_REQUIRED_KEYS = (
    "format_version",
    "template_vertices",
    "faces",
    "skin_joint_names",
    "skin_joint_parents",
    "hand_from_joint_bind",
    "skin_weights",
    "vertex_part",
    "skin_joint_part",
    "mesh_coords",
    "mesh_grid_size",
)
#: Mirrors the hand frame's lateral axis: right hand <-> left hand.
MIRROR_X = np.diag([-1.0, 1.0, 1.0, 1.0])


class HandModelError(ValueError):
    """The hand-model asset is missing, corrupt or inconsistent."""


@dataclass(frozen=True)
class PosedHand:
    """A posed hand mesh.

    vertices: (V, 3) float32 metres in the frame cam_from_hand maps to (camera frame).
    joints: (21, 3) float32 keypoints in Joint (MediaPipe) order, same frame.
    cam_from_joint: (25, 4, 4) float32 posed skin-joint frames (proper rotations also for a
        left hand: mirrored as S @ T @ S).
    faces: (F, 3) int32 with outward winding for this handedness.
    """

    vertices: np.ndarray
    joints: np.ndarray
    cam_from_joint: np.ndarray
    faces: np.ndarray


class HandModel:
    """The template mesh, its skeleton and skin; poses it into any frame."""

    def __init__(self, arrays: dict[str, np.ndarray], source: str = "<memory>", sha256: str | None = None) -> None:
        self.source = source
        #: SHA-256 of the file the arrays were read from (None: made in memory). Weights
        #: record it, so that they are only used with the model they were trained with.
        self.sha256 = sha256
        try:
            self.template_vertices = np.ascontiguousarray(arrays["template_vertices"], dtype=np.float32)
            self.faces = np.ascontiguousarray(arrays["faces"], dtype=np.int32)
            self.skin_weights = np.ascontiguousarray(arrays["skin_weights"], dtype=np.float32)
            self.joint_parents = np.ascontiguousarray(arrays["skin_joint_parents"], dtype=np.int32)
            self.hand_from_joint_bind = np.ascontiguousarray(arrays["hand_from_joint_bind"], dtype=np.float64)
            self.vertex_part = np.ascontiguousarray(arrays["vertex_part"], dtype=np.int8)
            self.joint_part = np.ascontiguousarray(arrays["skin_joint_part"], dtype=np.int32)
            self.mesh_coords = np.ascontiguousarray(arrays["mesh_coords"], dtype=np.float32)
            self.mesh_grid_size = int(arrays["mesh_grid_size"])
            names = tuple(str(n) for n in arrays["skin_joint_names"])
        except KeyError as exc:
            raise HandModelError(f"{source}: hand model asset lacks {exc}") from exc
        self._validate(names)
        parents = self.joint_parents
        parent_from_joint = self.hand_from_joint_bind.copy()
        for j in range(NUM_SKIN_JOINTS):
            if parents[j] >= 0:
                parent_from_joint[j] = np.linalg.inv(self.hand_from_joint_bind[parents[j]]) @ self.hand_from_joint_bind[j]
        self.parent_from_joint_bind = np.ascontiguousarray(parent_from_joint)
        self.joint_from_hand_bind = np.ascontiguousarray(np.linalg.inv(self.hand_from_joint_bind))
        self.keypoint_skin_joint = KEYPOINT_SKIN_JOINT_INDEX
        self.faces_mirrored = np.ascontiguousarray(self.faces[:, ::-1])
        self._torch_cache: dict = {}

    @property
    def num_vertices(self) -> int:
        return len(self.template_vertices)

    def _validate(self, names: tuple[str, ...]) -> None:
        v = len(self.template_vertices)
        checks = [
            (names == SKIN_JOINT_NAMES, f"skin joints {names[:3]}... are not the expected WebXR hand joints"),
            (self.template_vertices.shape == (v, 3) and v > 0, "template_vertices must be (V, 3)"),
            (self.faces.ndim == 2 and self.faces.shape[1] == 3, "faces must be (F, 3)"),
            (self.faces.size > 0 and 0 <= self.faces.min() and self.faces.max() < v, "face indices out of range"),
            (self.skin_weights.shape == (v, NUM_SKIN_JOINTS), "skin_weights must be (V, 25)"),
            (np.allclose(self.skin_weights.sum(axis=1), 1.0, atol=1e-4), "skin weights do not sum to 1"),
            (self.hand_from_joint_bind.shape == (NUM_SKIN_JOINTS, 4, 4), "hand_from_joint_bind must be (25, 4, 4)"),
            (
                self.vertex_part.shape == (v,) and 0 <= self.vertex_part.min() and self.vertex_part.max() < NUM_PARTS,
                "vertex_part must be (V,) in 0..15",
            ),
            # The refit fits a similarity per part, which needs three points; with fewer the
            # numba and torch refits would part ways (identity vs a singular SVD).
            (
                self.vertex_part.shape == (v,) and np.bincount(self.vertex_part.clip(0), minlength=NUM_PARTS).min() >= 3,
                "every one of the 16 parts needs at least 3 vertices in vertex_part",
            ),
            # Vertices are fitted with this table and keypoints with the code's: they must agree.
            (np.array_equal(self.joint_part, SKIN_JOINT_PART), "skin_joint_part differs from tracker.skeleton.SKIN_JOINT_PART"),
            # Posing walks the asset's tree and the refit's keypoints the code's; forward
            # kinematics also needs every parent before its child.
            (
                np.array_equal(self.joint_parents, SKIN_JOINT_PARENTS),
                "skin_joint_parents differs from tracker.skeleton.SKIN_JOINT_PARENTS",
            ),
            (self.mesh_coords.shape == (v, 2), "mesh_coords must be (V, 2)"),
            (
                bool(np.all(self.mesh_coords >= 0) and np.all(self.mesh_coords < self.mesh_grid_size)),
                "mesh_coords fall outside the mesh grid",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise HandModelError(f"{self.source}: {message}")
        for name in ("template_vertices", "skin_weights", "hand_from_joint_bind", "mesh_coords"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise HandModelError(f"{self.source}: {name} contains NaN/inf")

    @classmethod
    def load(cls, path: str | Path = DEFAULT_ASSET) -> "HandModel":
        path = Path(path)
        hint = "rebuild it with `python -m tracker.hand_asset_builder`"
        if not path.is_file():
            raise HandModelError(f"hand model asset not found at {path}; {hint}")
        try:
            # Read once: the checksum is of exactly the bytes the arrays came from.
            content = path.read_bytes()
            with np.load(io.BytesIO(content), allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
            raise HandModelError(f"{path}: hand model asset is corrupt or truncated ({exc}); {hint}") from exc
        missing = [k for k in _REQUIRED_KEYS if k not in arrays]
        if missing:
            raise HandModelError(f"{path}: not a hand model asset (missing {missing}); {hint}")
        if int(arrays["format_version"]) != ASSET_FORMAT_VERSION:
            raise HandModelError(
                f"{path}: asset format {int(arrays['format_version'])}, this code reads {ASSET_FORMAT_VERSION}; {hint}"
            )
        return cls(arrays, source=str(path), sha256=hashlib.sha256(content).hexdigest())

    # ------------------------------------------------------------------ host (numba) posing

    def rest_rotations(self) -> np.ndarray:
        """(25, 3, 3) float64 identity local rotations: the bind pose."""
        return np.tile(np.eye(3), (NUM_SKIN_JOINTS, 1, 1))

    def faces_for(self, handedness: Handedness) -> np.ndarray:
        """(F, 3) int32 faces with outward winding for the given hand."""
        return self.faces if Handedness(handedness) == Handedness.RIGHT else self.faces_mirrored

    def pose(
        self,
        local_rotations: np.ndarray | None = None,
        bone_scales: np.ndarray | None = None,
        cam_from_hand: np.ndarray | None = None,
        handedness: Handedness = Handedness.RIGHT,
    ) -> PosedHand:
        """Pose the template (see the module docstring for the parameters); None = rest/identity."""
        rotations = self.rest_rotations() if local_rotations is None else np.asarray(local_rotations, np.float64)
        scales = np.ones((NUM_SKIN_JOINTS, 2)) if bone_scales is None else np.asarray(bone_scales, np.float64)
        cam_from_hand = np.eye(4) if cam_from_hand is None else np.asarray(cam_from_hand, np.float64)
        if rotations.shape != (NUM_SKIN_JOINTS, 3, 3):
            raise ValueError(f"local_rotations must be (25, 3, 3), got {rotations.shape}")
        if scales.shape != (NUM_SKIN_JOINTS, 2):
            raise ValueError(f"bone_scales must be (25, 2) [length, thickness], got {scales.shape}")
        if cam_from_hand.shape != (4, 4):
            raise ValueError(f"cam_from_hand must be (4, 4), got {cam_from_hand.shape}")
        for name, arr in (("local_rotations", rotations), ("bone_scales", scales), ("cam_from_hand", cam_from_hand)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} contains NaN/inf")
        linear = cam_from_hand[:3, :3]
        # A rotation, perhaps with one scale (a similarity: the refit's own transforms). A
        # reflection would give a left hand's shape with a right hand's face winding (inside
        # out) and joint frames that are not rotations: a left hand is asked for by name.
        squared_scale = float(np.trace(linear.T @ linear)) / 3.0
        if not (squared_scale > 0 and np.allclose(linear.T @ linear, squared_scale * np.eye(3), atol=1e-4 * squared_scale)) or np.linalg.det(linear) <= 0:
            raise ValueError(
                "cam_from_hand must be a rotation, or one with a single scale, and a translation (not a reflection, "
                "a shear or scales that differ by axis); for a left hand give handedness=Handedness.LEFT"
            )
        length = np.ascontiguousarray(scales[:, 0])
        thickness = np.ascontiguousarray(scales[:, 1])
        hand_from_joint = forward_kinematics(self.joint_parents, self.parent_from_joint_bind, rotations, length)
        skin = skinning_transforms(hand_from_joint, self.joint_from_hand_bind, length, thickness)
        if Handedness(handedness) == Handedness.LEFT:
            cam_from_model = cam_from_hand @ MIRROR_X
            cam_from_joint = cam_from_model @ hand_from_joint @ MIRROR_X
        else:
            cam_from_model = cam_from_hand
            cam_from_joint = cam_from_model @ hand_from_joint
        vertices_hand = linear_blend_skinning(self.template_vertices, self.skin_weights, skin)
        vertices = transform_points(cam_from_model, vertices_hand)
        joints = transform_points(cam_from_model, hand_from_joint[self.keypoint_skin_joint, :3, 3].copy())
        return PosedHand(
            vertices=vertices.astype(np.float32),
            joints=joints.astype(np.float32),
            cam_from_joint=cam_from_joint.astype(np.float32),
            faces=self.faces_for(handedness),
        )

    # ------------------------------------------------------------------ torch twin (training)

    def _torch_constants(self, device, dtype):
        import torch

        key = (str(device), dtype)
        if key not in self._torch_cache:
            as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
            self._torch_cache[key] = {
                "template": as_tensor(self.template_vertices),
                "weights": as_tensor(self.skin_weights),
                "parent_from_joint": as_tensor(self.parent_from_joint_bind),
                "joint_from_hand": as_tensor(self.joint_from_hand_bind),
                "mirror": as_tensor(MIRROR_X),
            }
        return self._torch_cache[key]

    def pose_torch(self, local_rotations, bone_scales=None, cam_from_hand=None, mirror=None):
        """Differentiable batched twin of ``pose``.

        local_rotations: (B, 25, 3, 3) tensor; bone_scales: (B, 25, 2) or None;
        cam_from_hand: (B, 4, 4) or None; mirror: (B,) bool tensor (True = left hand) or None.
        Returns (vertices (B, V, 3), joints (B, 21, 3)) in the dtype/device of local_rotations.
        """
        import torch

        rot = local_rotations
        batch, device, dtype = rot.shape[0], rot.device, rot.dtype
        c = self._torch_constants(device, dtype)
        if bone_scales is None:
            bone_scales = torch.ones(batch, NUM_SKIN_JOINTS, 2, device=device, dtype=dtype)
        length, thickness = bone_scales[..., 0], bone_scales[..., 1]
        frames = []
        for j in range(NUM_SKIN_JOINTS):
            local = c["parent_from_joint"][j].expand(batch, 4, 4)
            p = int(self.joint_parents[j])
            top = torch.cat([local[:, :3, :3] @ rot[:, j], local[:, :3, 3:] * (length[:, p, None, None] if p >= 0 else 1.0)], dim=2)
            local = torch.cat([top, local[:, 3:, :]], dim=1)
            frames.append(frames[p] @ local if p >= 0 else local)
        hand_from_joint = torch.stack(frames, dim=1)  # (B, J, 4, 4)
        scale = torch.stack([thickness, thickness, length, torch.ones_like(length)], dim=-1)
        skin = hand_from_joint * scale[:, :, None, :] @ c["joint_from_hand"]  # column scaling == @ diag
        blended = torch.einsum("vj,bjrc->bvrc", c["weights"], skin[:, :, :3, :])  # (B, V, 3, 4)
        vertices = blended[..., :3] @ c["template"][None, :, :, None] + blended[..., 3:]
        vertices = vertices[..., 0]
        joints = hand_from_joint[:, torch.as_tensor(self.keypoint_skin_joint, device=device), :3, 3]
        cam_from_model = torch.eye(4, device=device, dtype=dtype).expand(batch, 4, 4) if cam_from_hand is None else cam_from_hand
        if mirror is not None:
            cam_from_model = torch.where(mirror[:, None, None], cam_from_model @ c["mirror"], cam_from_model)
        r, t = cam_from_model[:, None, :3, :3], cam_from_model[:, None, :3, 3]
        vertices = (r @ vertices[..., None])[..., 0] + t
        joints = (r @ joints[..., None])[..., 0] + t
        return vertices, joints
