"""Mesh-against-depth agreement counts in a hand crop (numba, host side).

The tracker's confidence (``tracker.confidence``) renders each frame's hand mesh into the
network's 64 x 64 crop and compares it with the crop's depth, on the tracker's thread, after
the network: one fused pass keeps that to about the rendering's own cost rather than a
dozen array operations on top of it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels.raster import rasterize_mesh

#: Triangles with a vertex this near the virtual camera are skipped (as ``render_mesh``).
NEAR_M = 0.05


@njit(cache=True, nogil=True)
def agreement_counts(vertices_virtual_m, faces, focal, cx, cy, mirrored, crop_depth, hand_probability, inside, centre_depth_m, half_cube_m, tolerance_m):
    """(mesh_pixels, confirmed_pixels, hand_pixels, hand_pixels_covered), int64.

    vertices_virtual_m: (V, 3) float64 mesh in the crop's virtual camera frame, metres;
    faces: (F, 3) int32; focal, cx, cy: that camera in crop pixels; mirrored: the crop is
    the mirror image (a left hand), so is the render (column i -> S - 1 - i);
    crop_depth: (S, S) float32 normalised crop depth ((d - centre_depth_m) / half_cube_m;
    measured only strictly inside (-1, 1)); hand_probability: (S, S) float32 (hand where
    > 0.5); inside: (S, S) bool, crop pixels inside the image (the rest are left out of
    the mesh's pixels). A mesh pixel is confirmed where the measured depth lies within
    tolerance_m of the rendered one.
    """
    size = crop_depth.shape[0]
    mesh_depth = np.zeros((size, size), np.float32)
    face = np.full((size, size), -1, np.int32)
    barycentric = np.zeros((size, size, 3), np.float32)
    rasterize_mesh(vertices_virtual_m, faces, focal, focal, cx, cy, size, size, NEAR_M, mesh_depth, face, barycentric, 0)
    mesh_pixels = confirmed = hand_pixels = covered_hand = 0
    for row in range(size):
        for col in range(size):
            source = size - 1 - col if mirrored else col
            covered = face[row, source] >= 0 and inside[row, col]
            value = crop_depth[row, col]
            measured = value > -1.0 and value < 1.0
            if covered:
                mesh_pixels += 1
                if measured and abs(centre_depth_m + value * half_cube_m - mesh_depth[row, source]) <= tolerance_m:
                    confirmed += 1
            if measured and hand_probability[row, col] > 0.5:
                hand_pixels += 1
                if covered:
                    covered_hand += 1
    return mesh_pixels, confirmed, hand_pixels, covered_hand
