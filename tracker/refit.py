"""Refit (Dual Grid Net §3.4): initial vertices P_s -> refined vertices P_r and 21 keypoints.

For each of the 16 rigid parts, the least-squares similarity transform from the template's
part vertices to P_s (Umeyama; never a reflection): by SVD in the torch twin, by Horn's
quaternion eigenvector, the same optimum, in the numba kernel (``kernels.refit``); then
linear blend skinning of the template with those transforms, using the model's skin
weights summed per part. Keypoints are skinned the same way from their rest positions: a
keypoint where two bones meet (a knuckle) takes the mean of the two parts' transforms, a
fingertip or the wrist its one part's.

``Refit.fit`` runs on the host (numba kernels, for inference); ``Refit.fit_torch`` is the
differentiable batched twin used in training. Both agree to float precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kernels.lbs import linear_blend_skinning
from kernels.refit import fit_part_transforms
from tracker.hand_model import HandModel
from tracker.skeleton import KEYPOINT_SKIN_JOINT_INDEX, NUM_PARTS, SKIN_JOINT_PARENTS, SKIN_JOINT_PART


@dataclass(frozen=True)
class RefitResult:
    """vertices: (V, 3) float32 P_r; joints: (21, 3) float32; part_transforms: (16, 4, 4)
    float64 frame_from_template similarity per part (same frame as P_s)."""

    vertices: np.ndarray
    joints: np.ndarray
    part_transforms: np.ndarray


def keypoint_part_weights() -> np.ndarray:
    """(21, 16) float64: which parts' transforms move each keypoint."""
    weights = np.zeros((len(KEYPOINT_SKIN_JOINT_INDEX), NUM_PARTS))
    for k, joint in enumerate(KEYPOINT_SKIN_JOINT_INDEX):
        parts = {int(SKIN_JOINT_PART[joint])}
        parent = SKIN_JOINT_PARENTS[joint]
        if parent >= 0:
            parts.add(int(SKIN_JOINT_PART[parent]))
        for p in parts:
            weights[k, p] = 1.0 / len(parts)
    return weights


class Refit:
    """Per-part similarity fit of the template to predicted vertices, then skinning."""

    def __init__(self, model: HandModel) -> None:
        self.template = model.template_vertices.astype(np.float64)
        self.vertex_part = model.vertex_part.astype(np.int64)
        self.vertex_part_weights = model.skin_weights.astype(np.float64) @ np.eye(NUM_PARTS)[model.joint_part]
        self.keypoint_rest = model.hand_from_joint_bind[KEYPOINT_SKIN_JOINT_INDEX, :3, 3].astype(np.float64)
        self.keypoint_part_weights = keypoint_part_weights()
        self._torch_cache: dict = {}

    def fit(self, predicted_vertices: np.ndarray) -> RefitResult:
        """(V, 3) P_s (any frame, metres or normalised units) -> RefitResult in that frame."""
        p = np.asarray(predicted_vertices, np.float64)
        if p.shape != self.template.shape:
            raise ValueError(f"expected ({len(self.template)}, 3) vertices, got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError("predicted vertices contain NaN/inf")
        transforms = fit_part_transforms(self.template, p, self.vertex_part, NUM_PARTS)
        # Skinning with per-part weights and transforms is the same blend as with per-joint ones.
        vertices = linear_blend_skinning(self.template, self.vertex_part_weights, transforms)
        joints = linear_blend_skinning(self.keypoint_rest, self.keypoint_part_weights, transforms)
        return RefitResult(vertices.astype(np.float32), joints.astype(np.float32), transforms)

    def _constants(self, device, dtype):
        key = (str(device), dtype)
        if key not in self._torch_cache:
            t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
            one_hot = np.eye(NUM_PARTS)[self.vertex_part]  # (V, P)
            self._torch_cache[key] = {
                "template": t(self.template),
                "membership": t(one_hot / one_hot.sum(0, keepdims=True)),  # per-part means
                "one_hot": t(one_hot),
                "vertex_weights": t(self.vertex_part_weights),
                "keypoint_rest": t(self.keypoint_rest),
                "keypoint_weights": t(self.keypoint_part_weights),
            }
        return self._torch_cache[key]

    def fit_torch(self, predicted_vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, V, 3) P_s -> (P_r (B, V, 3), joints (B, 21, 3), transforms (B, 16, 4, 4)).

        Differentiable. The SVDs run in float64: their gradients divide by differences of
        singular values, which float32 resolves poorly for thin finger parts.
        """
        dtype = predicted_vertices.dtype
        p = predicted_vertices.to(torch.float64)
        c = self._constants(p.device, torch.float64)
        q = c["template"]
        mu_p = torch.einsum("vk,bvc->bkc", c["membership"], p)  # (B, P, 3)
        mu_q = torch.einsum("vk,vc->kc", c["membership"], q)  # (P, 3)
        dq = q[None, :, None, :] - mu_q[None, None]  # (1, V, P, 3) centred template per part
        dp = p[:, :, None, :] - mu_p[:, None]  # (B, V, P, 3)
        w = c["membership"][None, :, :, None]
        cov = torch.einsum("bvkr,bvkc->bkrc", dp * w, dq.expand_as(dp))  # (B, P, 3, 3)
        var_q = (dq * dq * w).sum(dim=(1, 3))  # (1, P)
        u, sigma, vh = torch.linalg.svd(cov)
        det = torch.det(u) * torch.det(vh)
        d = torch.stack([torch.ones_like(det), torch.ones_like(det), torch.sign(det) + (det == 0).to(det.dtype)], -1)
        rotation = u @ torch.diag_embed(d) @ vh
        scale = (sigma * d).sum(-1) / var_q.clamp_min(1e-12)  # (B, P)
        linear = scale[..., None, None] * rotation
        translation = mu_p - (linear @ mu_q[None, ..., None])[..., 0]
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=p.dtype, device=p.device).expand(*linear.shape[:2], 1, 4)
        transforms = torch.cat([torch.cat([linear, translation[..., None]], -1), bottom], -2)

        def skin(points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            moved = torch.einsum("bkrc,nc->bnkr", linear, points) + translation[:, None]  # (B, N, P, 3)
            return torch.einsum("nk,bnkr->bnr", weights, moved)

        vertices = skin(q, c["vertex_weights"])
        joints = skin(c["keypoint_rest"], c["keypoint_weights"])
        return vertices.to(dtype), joints.to(dtype), transforms.to(dtype)
