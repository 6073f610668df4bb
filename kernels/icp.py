"""Articulated ICP: the online refinement's Gauss-Newton steps (numba, inference side).

The refit leaves the hand as 16 per-part similarity transforms (``kernels.refit``). The
online refinement moves each part by a small rigid motion about its own centre so that the
skinned mesh meets the measured hand points better, point to plane (the ICP data term of
Dual Grid Net §4.1, here solved per frame rather than used as a training loss), while a
prior holds the parts near the network's pose and the parts that meet at a joint together.

Per part p the unknowns are (omega_p, tau_p): a rotation vector and a translation (camera
frame, radians and metres), applied as x -> R(omega_p) (x - c_p) + c_p + tau_p to the part's
posed points, c_p the part's centre. A vertex moves with the blend of its parts' motions, so
its derivative is sum_p w_vp [-[y_vp - c_p]x, I] with y_vp = T_p template_v.

The kernels accumulate the normal equations H delta = -g directly (each residual touches at
most four parts on the shipped hand model), so no Jacobian matrix is ever built;
``refine_part_transforms`` runs the whole loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from kernels.lbs import linear_blend_skinning

#: Unknowns per part: rotation vector (3) and translation (3).
PART_DOF = 6


@njit(cache=True, nogil=True)
def crop_pixel_points(depth, hand_probability, min_probability, max_points, mirrored, focal, cx, cy, centre_depth, half_cube_m, cam_from_crop):
    """(N, 3) float64 camera-frame points (metres) of a crop's pixels with a depth inside the
    cube (-1 < depth < 1) and ``hand_probability`` above ``min_probability``, at most
    ``max_points`` of them, evenly spread over them in row order.

    depth: (S, S) float32 normalised crop depth (``HandCrop.depth``); hand_probability:
    (S, S) float32; mirrored: the crop is a left hand's, mirrored in x (its camera is not);
    focal, cx, cy: the crop's virtual pinhole camera in crop pixels; centre_depth: the cube
    centre's depth along that camera's axis, metres; half_cube_m: half the cube's edge;
    cam_from_crop: (3, 3) float64 rotation from the crop's axes to the camera's."""
    size = depth.shape[0]
    index = np.empty(size * size, np.int64)
    count = 0
    for r in range(size):
        for c in range(size):
            d = depth[r, c]
            if -1.0 < d < 1.0 and hand_probability[r, c] > min_probability:
                index[count] = r * size + c
                count += 1
    if count > max_points:
        # As np.linspace(0, count - 1, max_points) truncated; each taken index lies at or
        # after its slot, so the list thins in place.
        if max_points > 1:
            step = (count - 1) / (max_points - 1)
            for k in range(max_points - 1):
                index[k] = index[int(k * step)]
            index[max_points - 1] = index[count - 1]
        count = max_points  # one point: the first
    points = np.empty((count, 3))
    for k in range(count):
        r = index[k] // size
        column = index[k] % size
        z = centre_depth + depth[r, column] * half_cube_m
        u = size - 1 - column if mirrored else column
        x = (u - cx) / focal * z
        y = (r - cy) / focal * z
        for a in range(3):
            points[k, a] = cam_from_crop[a, 0] * x + cam_from_crop[a, 1] * y + cam_from_crop[a, 2] * z
    return points


@njit(cache=True, nogil=True)
def vertex_normals(vertices, faces):
    """(V, 3) float64 unit normals, area-weighted over each vertex's faces.

    vertices: (V, 3) float32/64 metres; faces: (F, 3) int32 with outward winding. A vertex
    of no face, or of faces with no area, gets a zero normal."""
    normals = np.zeros((vertices.shape[0], 3))
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        e1x, e1y, e1z = vertices[b, 0] - vertices[a, 0], vertices[b, 1] - vertices[a, 1], vertices[b, 2] - vertices[a, 2]
        e2x, e2y, e2z = vertices[c, 0] - vertices[a, 0], vertices[c, 1] - vertices[a, 1], vertices[c, 2] - vertices[a, 2]
        nx, ny, nz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
        for v in (a, b, c):
            normals[v, 0] += nx
            normals[v, 1] += ny
            normals[v, 2] += nz
    for v in range(vertices.shape[0]):
        length = np.sqrt(normals[v, 0] ** 2 + normals[v, 1] ** 2 + normals[v, 2] ** 2)
        if length > 0.0:
            normals[v] /= length
    return normals


@njit(cache=True, nogil=True)
def nearest_front_vertices(points, vertices, normals, max_distance_m):
    """For each point the nearest vertex facing the camera, or -1 beyond ``max_distance_m``
    (``nearest_front_vertices_from`` with no guesses).

    points: (N, 3) float64 camera frame metres; vertices: (V, 3) float64 same frame;
    normals: (V, 3) float64 unit outward normals. A vertex faces the camera (at the origin)
    where its normal points against its ray: the depth camera sees only that side, so a
    measured point never belongs on the back of the mesh (Dual Grid Net §4.1, after Tkach
    et al.). The camera-facing vertices are sorted by x, and each point's search runs out
    from its own x until the x distance alone exceeds the best match: a hand spans ~10 cm in
    x and a match lies a few mm away, so a few dozen of the ~600 are looked at.
    Returns (N,) int64."""
    return nearest_front_vertices_from(points, vertices, normals, max_distance_m, np.full(points.shape[0], -1, np.int64))


@njit(cache=True, nogil=True)
def nearest_front_vertices_from(points, vertices, normals, max_distance_m, guesses):
    """``nearest_front_vertices``, each point's search starting from a guess: ``guesses``
    (N,) int64, a vertex per point or -1. A guess that faces the camera and lies within
    ``max_distance_m`` bounds the search from the start, so a point whose last match moved
    a little looks at a handful of vertices; the nearest is found all the same (a guess at
    the same distance as another vertex is kept)."""
    front_all = np.empty(vertices.shape[0], np.int64)
    count = 0
    for v in range(vertices.shape[0]):
        if normals[v, 0] * vertices[v, 0] + normals[v, 1] * vertices[v, 1] + normals[v, 2] * vertices[v, 2] < 0.0:
            front_all[count] = v
            count += 1
    front = front_all[:count]
    order = np.argsort(vertices[front, 0])
    front = front[order]
    xs = vertices[front, 0].copy()
    matches = np.full(points.shape[0], -1, np.int64)
    limit = max_distance_m * max_distance_m
    for i in range(points.shape[0]):
        best = limit
        g = guesses[i]
        if g >= 0 and normals[g, 0] * vertices[g, 0] + normals[g, 1] * vertices[g, 1] + normals[g, 2] * vertices[g, 2] < 0.0:
            d = (vertices[g, 0] - points[i, 0]) ** 2 + (vertices[g, 1] - points[i, 1]) ** 2 + (vertices[g, 2] - points[i, 2]) ** 2
            if d < best:
                best = d
                matches[i] = g
        start = np.searchsorted(xs, points[i, 0])
        # Outwards on both sides at once would interleave; one side, then the other, is as good.
        for direction in (1, -1):
            c = start if direction == 1 else start - 1
            while 0 <= c < count:
                dx = xs[c] - points[i, 0]
                if dx * dx >= best:
                    break
                v = front[c]
                dy = vertices[v, 1] - points[i, 1]
                dz = vertices[v, 2] - points[i, 2]
                d = dx * dx + dy * dy + dz * dz
                if d < best:
                    best = d
                    matches[i] = v
                c += direction
    return matches


@njit(cache=True, nogil=True)
def point_to_plane_normal_equations(points, matches, vertices, normals, template, vertex_parts, vertex_part_weights,
                                    transforms, part_centres, huber_m, weight, hessian, gradient):
    """Add the point-to-plane ICP term to ``hessian`` and ``gradient``; returns its cost.

    Residual per matched point: r = n_k . (v_k - x), weighted by ``weight`` and robustly by
    a Huber weight (1 within ``huber_m``, huber_m / |r| beyond: iteratively reweighted least
    squares, so a stray point pulls with a bounded force).
    points: (N, 3) float64; matches: (N,) int64 vertex per point or -1 (skipped);
    vertices, normals: (V, 3) float64 the current skinned mesh and its unit normals;
    template: (V, 3) float64 rest vertices; vertex_parts: (V, K) int64 the parts moving each
    vertex, -1 padded; vertex_part_weights: (V, K) float64 their blend weights;
    transforms: (P, 4, 4) float64 current camera_from_template per part;
    part_centres: (P, 3) float64 each part's centre, about which it rotates;
    hessian: (6P, 6P) float64 and gradient: (6P,) float64, added to in place.
    Cost: sum of weight * rho(r) with rho the Huber function (r^2 / 2 inside).

    A residual's derivative depends on its vertex alone (n_k and the vertex's parts), so
    the points are summed per vertex first (their weights, and weights times residuals) and
    each matched vertex's outer product is added once: a vertex takes several points where
    the hand is near, and its 24 x 24 product is most of the work."""
    cost = 0.0
    vertex_weight = np.zeros(vertices.shape[0])
    vertex_weighted_residual = np.zeros(vertices.shape[0])
    for i in range(points.shape[0]):
        k = matches[i]
        if k < 0:
            continue
        r = normals[k, 0] * (vertices[k, 0] - points[i, 0]) + normals[k, 1] * (vertices[k, 1] - points[i, 1]) + normals[k, 2] * (vertices[k, 2] - points[i, 2])
        magnitude = abs(r)
        if magnitude <= huber_m:
            robust = 1.0
            cost += weight * 0.5 * r * r
        else:
            robust = huber_m / magnitude
            cost += weight * huber_m * (magnitude - 0.5 * huber_m)
        vertex_weight[k] += weight * robust
        vertex_weighted_residual[k] += weight * robust * r
    k_max = vertex_parts.shape[1]
    rows = np.zeros((k_max, PART_DOF))
    for k in range(vertices.shape[0]):
        w = vertex_weight[k]
        if w == 0.0:
            continue
        wr = vertex_weighted_residual[k]
        nx, ny, nz = normals[k, 0], normals[k, 1], normals[k, 2]
        tx, ty, tz = template[k, 0], template[k, 1], template[k, 2]
        count = 0
        for a in range(k_max):
            p = vertex_parts[k, a]
            if p < 0:
                break
            count += 1
            blend = vertex_part_weights[k, a]
            t = transforms[p]
            # y - c: the vertex as this part alone places it, from the part's centre
            ax = t[0, 0] * tx + t[0, 1] * ty + t[0, 2] * tz + t[0, 3] - part_centres[p, 0]
            ay = t[1, 0] * tx + t[1, 1] * ty + t[1, 2] * tz + t[1, 3] - part_centres[p, 1]
            az = t[2, 0] * tx + t[2, 1] * ty + t[2, 2] * tz + t[2, 3] - part_centres[p, 2]
            # d r / d omega = (y - c) x n; d r / d tau = n
            rows[a, 0] = blend * (ay * nz - az * ny)
            rows[a, 1] = blend * (az * nx - ax * nz)
            rows[a, 2] = blend * (ax * ny - ay * nx)
            rows[a, 3] = blend * nx
            rows[a, 4] = blend * ny
            rows[a, 5] = blend * nz
        for a in range(count):
            base_a = PART_DOF * vertex_parts[k, a]
            for da in range(PART_DOF):
                gradient[base_a + da] += rows[a, da] * wr
                scaled = w * rows[a, da]
                # The product is symmetric: each pair of unknowns is worked out once.
                for db in range(da, PART_DOF):
                    value = scaled * rows[a, db]
                    hessian[base_a + da, base_a + db] += value
                    if db != da:
                        hessian[base_a + db, base_a + da] += value
                for b in range(a + 1, count):
                    base_b = PART_DOF * vertex_parts[k, b]
                    for db in range(PART_DOF):
                        value = scaled * rows[b, db]
                        hessian[base_a + da, base_b + db] += value
                        hessian[base_b + db, base_a + da] += value
    return cost


@njit(cache=True, nogil=True)
def joint_link_normal_equations(link_parts, link_points, transforms, part_centres, weight, hessian, gradient):
    """Add the term that holds two parts together where they meet; returns its cost.

    For each link (parent part a, child part b, the joint's rest position j) the residual is
    T_a j - T_b j (3 rows, metres): where the two parts place their shared joint.
    link_parts: (L, 2) int64; link_points: (L, 3) float64 rest positions; transforms,
    part_centres, hessian, gradient as in ``point_to_plane_normal_equations``."""
    cost = 0.0
    for link in range(link_parts.shape[0]):
        ends = np.zeros((2, 3))
        for e in range(2):
            t = transforms[link_parts[link, e]]
            for r in range(3):
                ends[e, r] = t[r, 0] * link_points[link, 0] + t[r, 1] * link_points[link, 1] + t[r, 2] * link_points[link, 2] + t[r, 3]
        residual = ends[0] - ends[1]
        cost += weight * 0.5 * (residual[0] ** 2 + residual[1] ** 2 + residual[2] ** 2)
        # Jacobian (3, 12): d(R(w)(y - c))/dw = -[y - c]x; the child's end enters with a minus.
        jac = np.zeros((3, 2 * PART_DOF))
        for e in range(2):
            sign = 1.0 if e == 0 else -1.0
            p = link_parts[link, e]
            ax = ends[e, 0] - part_centres[p, 0]
            ay = ends[e, 1] - part_centres[p, 1]
            az = ends[e, 2] - part_centres[p, 2]
            base = PART_DOF * e
            # -[a]x = [[0, az, -ay], [-az, 0, ax], [ay, -ax, 0]]
            jac[0, base + 1] = sign * az
            jac[0, base + 2] = -sign * ay
            jac[1, base + 0] = -sign * az
            jac[1, base + 2] = sign * ax
            jac[2, base + 0] = sign * ay
            jac[2, base + 1] = -sign * ax
            for r in range(3):
                jac[r, base + 3 + r] = sign
        for ea in range(2):
            pa = link_parts[link, ea]
            for da in range(PART_DOF):
                col_a = PART_DOF * ea + da
                for r in range(3):
                    gradient[PART_DOF * pa + da] += weight * jac[r, col_a] * residual[r]
                for eb in range(2):
                    pb = link_parts[link, eb]
                    for db in range(PART_DOF):
                        col_b = PART_DOF * eb + db
                        total = 0.0
                        for r in range(3):
                            total += jac[r, col_a] * jac[r, col_b]
                        hessian[PART_DOF * pa + da, PART_DOF * pb + db] += weight * total
    return cost


@njit(cache=True, nogil=True)
def apply_part_motions(transforms, part_centres, delta):
    """(P, 4, 4) float64: each part's transform moved by its (omega, tau) from ``delta``
    ((6P,) float64), rotating about its centre: T -> [R | c - R c + tau] T."""
    out = np.empty_like(transforms)
    for p in range(transforms.shape[0]):
        wx, wy, wz = delta[PART_DOF * p], delta[PART_DOF * p + 1], delta[PART_DOF * p + 2]
        angle = np.sqrt(wx * wx + wy * wy + wz * wz)
        rotation = np.eye(3)
        if angle > 1e-15:
            kx, ky, kz = wx / angle, wy / angle, wz / angle
            s, c = np.sin(angle), 1.0 - np.cos(angle)
            rotation[0, 0] = 1.0 - c * (ky * ky + kz * kz)
            rotation[0, 1] = -s * kz + c * kx * ky
            rotation[0, 2] = s * ky + c * kx * kz
            rotation[1, 0] = s * kz + c * kx * ky
            rotation[1, 1] = 1.0 - c * (kx * kx + kz * kz)
            rotation[1, 2] = -s * kx + c * ky * kz
            rotation[2, 0] = -s * ky + c * kx * kz
            rotation[2, 1] = s * kx + c * ky * kz
            rotation[2, 2] = 1.0 - c * (kx * kx + ky * ky)
        motion = np.eye(4)
        motion[:3, :3] = rotation
        for r in range(3):
            motion[r, 3] = part_centres[p, r] + delta[PART_DOF * p + 3 + r]
            for c2 in range(3):
                motion[r, 3] -= rotation[r, c2] * part_centres[p, c2]
        out[p] = motion @ transforms[p]
    return out


@njit(cache=True, nogil=True)
def solve_positive_definite(matrix, vector):
    """x with matrix @ x = vector, for a symmetric positive definite (n, n) float64 matrix
    (Cholesky, then two triangular solves): the Gauss-Newton system, whose prior makes it
    so, in half the time of a general solve."""
    lower = np.linalg.cholesky(matrix)
    n = vector.shape[0]
    y = np.empty(n)
    for i in range(n):
        total = vector[i]
        for k in range(i):
            total -= lower[i, k] * y[k]
        y[i] = total / lower[i, i]
    x = np.empty(n)
    for i in range(n - 1, -1, -1):
        total = y[i]
        for k in range(i + 1, n):
            total -= lower[k, i] * x[k]
        x[i] = total / lower[i, i]
    return x


@njit(cache=True, nogil=True)
def refine_part_transforms(points, transforms, vertices, faces, template, vertex_parts, vertex_blend, vertex_part_weights,
                           part_rest_centres, link_parts, link_points, prior, iterations, weight, link_weight, huber_m, max_distance_m):
    """The online refinement's Gauss-Newton loop: ``iterations`` steps, each matching the
    points anew (``nearest_front_vertices``), adding the point-to-plane and joint-link terms
    and a prior on each part's total motion (``prior``: (6P,) float64 inverse variances of
    rotation, rad^-2, and translation, m^-2), solving, and moving the parts.

    points: (N, 3) float64; transforms: (P, 4, 4) float64 camera_from_template to start
    from; vertices: (V, 3) float64 the mesh they skin to; faces: (F, 3) int32;
    vertex_part_weights: (V, P) float64 (the other arrays as in the kernels above);
    weight: the point term's weight; link_weight: the link term's. Returns (transforms,
    vertices, the points matched on the first step, the steps taken): a step with no point
    matched ends the loop."""
    dof = prior.shape[0]
    parts = transforms.shape[0]
    total = np.zeros(dof)
    matched_first = 0
    steps = 0
    # Each step's matches start from the last step's: the mesh moved by millimetres.
    matches = np.full(points.shape[0], -1, np.int64)
    for step in range(iterations):
        normals = vertex_normals(vertices, faces)
        matches = nearest_front_vertices_from(points, vertices, normals, max_distance_m, matches)
        matched = 0
        for i in range(matches.shape[0]):
            if matches[i] >= 0:
                matched += 1
        if step == 0:
            matched_first = matched
        if matched == 0:
            break
        centres = np.empty((parts, 3))
        for p in range(parts):
            for r in range(3):
                centres[p, r] = transforms[p, r, 3]
                for c in range(3):
                    centres[p, r] += transforms[p, r, c] * part_rest_centres[p, c]
        hessian = np.zeros((dof, dof))
        gradient = np.empty(dof)
        for d in range(dof):
            hessian[d, d] = prior[d]
            gradient[d] = prior[d] * total[d]
        point_to_plane_normal_equations(points, matches, vertices, normals, template, vertex_parts, vertex_blend, transforms, centres, huber_m, weight, hessian, gradient)
        joint_link_normal_equations(link_parts, link_points, transforms, centres, link_weight, hessian, gradient)
        delta = -solve_positive_definite(hessian, gradient)
        total += delta
        transforms = apply_part_motions(transforms, centres, delta)
        vertices = linear_blend_skinning(template, vertex_part_weights, transforms)
        steps += 1
    return transforms, vertices, matched_first, steps
