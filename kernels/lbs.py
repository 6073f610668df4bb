"""Forward kinematics and linear blend skinning of the hand model (numba, host side).

Used wherever a posed hand mesh is needed off the training graph: the synthetic data
generator, the refit at inference and the tests. ``tracker.hand_model`` wraps these
kernels and holds a torch twin for training; both follow the same maths:

    hand_from_joint[j] = hand_from_joint[parent] @ offset(parent_from_joint_bind[j], length[parent])
                         @ local_rotation[j]
    skin[j]            = hand_from_joint[j] @ diag(thick[j], thick[j], length[j]) @ joint_from_hand_bind[j]
    vertex             = sum_j weight[v, j] * skin[j] @ template_vertex

Bones run along each joint's local -z (WebXR hand convention), so a bone's length scale
acts on z and its thickness scale on x and y; a length scale also stretches the offset to
the child joints.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def forward_kinematics(parents, parent_from_joint_bind, local_rotations, length_scales):
    """Posed joint frames in the hand frame.

    parents: (J,) int32, parents[j] < j, -1 for the root.
    parent_from_joint_bind: (J, 4, 4) float64 bind transform of each joint in its parent's
        frame (the root's is its bind transform in the hand frame).
    local_rotations: (J, 3, 3) float64 rotation of each joint relative to its bind pose, in
        the joint's own frame.
    length_scales: (J,) float64 bone length scale per joint (1 = template).
    Returns hand_from_joint: (J, 4, 4) float64.
    """
    n = parents.shape[0]
    out = np.zeros((n, 4, 4))
    for j in range(n):
        local = parent_from_joint_bind[j].copy()
        p = parents[j]
        if p >= 0:
            local[:3, 3] *= length_scales[p]
        bind_rotation = local[:3, :3].copy()  # contiguous for numba's matmul
        local[:3, :3] = bind_rotation @ local_rotations[j]
        if p >= 0:
            out[j] = out[p] @ local
        else:
            out[j] = local
    return out


@njit(cache=True)
def skinning_transforms(hand_from_joint, joint_from_hand_bind, length_scales, thickness_scales):
    """(J, 4, 4) float64 skinning matrices mapping template (bind) points to posed points.

    hand_from_joint: (J, 4, 4) float64 posed frames; joint_from_hand_bind: (J, 4, 4) float64
    inverse bind; length_scales, thickness_scales: (J,) float64.
    """
    n = hand_from_joint.shape[0]
    out = np.empty((n, 4, 4))
    for j in range(n):
        scale = np.eye(4)
        scale[0, 0] = thickness_scales[j]
        scale[1, 1] = thickness_scales[j]
        scale[2, 2] = length_scales[j]
        out[j] = hand_from_joint[j] @ scale @ joint_from_hand_bind[j]
    return out


@njit(cache=True, nogil=True)
def linear_blend_skinning(template_vertices, skin_weights, skin_transforms):
    """Blend per-joint transforms of the template vertices.

    template_vertices: (V, 3) float32/64 metres; skin_weights: (V, J) float32/64, rows sum to
    1; skin_transforms: (J, 4, 4) float64. Returns (V, 3) float64 metres.
    """
    n_vertices = template_vertices.shape[0]
    n_joints = skin_weights.shape[1]
    out = np.zeros((n_vertices, 3))
    for v in range(n_vertices):
        x, y, z = template_vertices[v, 0], template_vertices[v, 1], template_vertices[v, 2]
        for j in range(n_joints):
            w = skin_weights[v, j]
            if w == 0.0:
                continue
            t = skin_transforms[j]
            out[v, 0] += w * (t[0, 0] * x + t[0, 1] * y + t[0, 2] * z + t[0, 3])
            out[v, 1] += w * (t[1, 0] * x + t[1, 1] * y + t[1, 2] * z + t[1, 3])
            out[v, 2] += w * (t[2, 0] * x + t[2, 1] * y + t[2, 2] * z + t[2, 3])
    return out


@njit(cache=True)
def transform_points(dst_from_src, points):
    """Apply a (4, 4) float64 rigid/affine transform to (N, 3) points -> (N, 3) float64."""
    n = points.shape[0]
    out = np.empty((n, 3))
    for i in range(n):
        for r in range(3):
            out[i, r] = (
                dst_from_src[r, 0] * points[i, 0]
                + dst_from_src[r, 1] * points[i, 1]
                + dst_from_src[r, 2] * points[i, 2]
                + dst_from_src[r, 3]
            )
    return out
