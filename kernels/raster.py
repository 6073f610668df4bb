"""Depth rasteriser for synthetic data: renders the posed hand mesh, the
forearm and analytic distractors (planes, ellipsoids) into one depth image
with per-pixel ground truth (face index, perspective-correct barycentrics,
labels).

It is the renderer behind the synthetic training and test data, so it aims
at geometric exactness rather than speed tricks: every covered pixel's
back-projection ``((u - cx) / fx * z, (v - cy) / fy * z, z)`` lies on the
surface that was rendered there, to float32 precision of the stored depth.

Conventions
-----------
* Camera frame: OpenCV / RealSense (x right, y down, z forward), metres.
* Pinhole projection ``u = fx * x / z + cx``, ``v = fy * y / z + cy``.
* Pixel centres are at integer coordinates: pixel ``(u, v)`` (column ``u``,
  row ``v``, stored at ``[v, u]``) samples the ray through ``(u, v)``
  exactly; there is no anti-aliasing and no half-pixel offset.
* ``depth_m`` stores the camera-frame z coordinate of the surface (what a
  depth camera reports), not the length along the ray. 0 means empty and
  is treated as +inf by every depth test.

Compositing
-----------
All writers share one z-buffer (``depth_m``) and only write where they are
strictly nearer than what is there (or where it is empty), so the final
image does not depend on draw order, except for exact depth ties.

``rasterize_mesh`` writes ``face_index`` / ``barycentric``; the analytic
distractors write ``labels`` and do not touch the mesh buffers. To keep
``face_index`` consistent with the final depth, composite the distractors
FIRST and the meshes afterwards: a mesh then only claims pixels where it is
nearer than the distractor, and ``face_index >= 0`` exactly marks pixels
whose visible surface is a mesh. (If a distractor is drawn after a mesh,
pixels it wins keep a stale ``face_index``.)

All kernels are pure ``numba.njit`` functions without state or I/O; only
``render_mesh`` is a plain-Python convenience wrapper that allocates.
"""

import numba
import numpy as np

# Tolerance of the inside test, in pixels of distance to an edge. Rounding
# of the float64 edge functions is ~1e-13 px, so 1e-6 px makes a pixel
# centre exactly on a shared edge count for both triangles (no cracks); the
# resulting overlap is resolved by the z-test and is geometrically harmless.
_EDGE_EPS_PX = 1e-6

# Triangles whose projected area is below this (px^2) are seen edge-on;
# their neighbours cover the same pixels and their barycentrics would be
# ill-conditioned, so they are skipped.
_MIN_AREA_PX2 = 1e-12


@numba.njit(cache=True)
def rasterize_mesh(vertices_cam_m, faces, fx, fy, cx, cy, height, width,
                   near_m, depth_m, face_index, barycentric, face_offset):
    """Z-buffer rasterise a triangle mesh into caller-provided buffers.

    Call repeatedly on the same buffers to composite several meshes (hand,
    forearm); give each mesh a distinct ``face_offset`` so ``face_index``
    stays unambiguous. No back-face culling: the meshes are closed and the
    depth test picks the visible surface.

    Triangles with ANY vertex at ``z <= near_m`` are skipped entirely (no
    near-plane clipping); for hand-tracking ranges this never removes a
    visible surface, and it keeps the projection finite. Triangles with a
    NaN vertex, or seen exactly edge-on (projected area < 1e-12 px^2), are
    skipped too.

    Coverage: pixel centres inside the projected triangle, with a 1e-6 px
    inclusive tolerance so that centres on a shared edge are never left
    empty. Depth and barycentrics are perspective-correct: with screen-space
    barycentrics ``s_i``, ``b_i = (s_i / z_i) / sum_j(s_j / z_j)`` and
    ``z = 1 / sum_j(s_j / z_j)``, i.e. the exact ray/triangle-plane
    intersection.

    Parameters
    ----------
    vertices_cam_m : (V, 3) float64 or float32
        Vertex positions in the camera frame, metres.
    faces : (F, 3) int32 (any integer dtype works)
        Vertex indices per triangle.
    fx, fy, cx, cy : float
        Pinhole intrinsics, pixels.
    height, width : int
        Image size in pixels; must match the buffers.
    near_m : float
        Near distance, metres (see above).
    depth_m : (H, W) float32, modified in place
        Camera-frame z of the nearest surface, metres; 0 = empty.
    face_index : (H, W) int32, modified in place
        ``face_offset + f`` of the visible face; -1 = empty.
    barycentric : (H, W, 3) float32, modified in place
        Perspective-correct barycentric weights of the visible face's three
        vertices (in ``faces[f]`` order), non-negative, summing to 1. Only
        meaningful where ``face_index >= 0``.
    face_offset : int
        Added to the local face index before it is stored.

    Returns
    -------
    None
    """
    if (depth_m.shape[0] != height or depth_m.shape[1] != width
            or face_index.shape[0] != height or face_index.shape[1] != width
            or barycentric.shape[0] != height
            or barycentric.shape[1] != width or barycentric.shape[2] != 3):
        raise ValueError("rasterize_mesh: buffer shapes do not match (height, width)")

    n_vertices = vertices_cam_m.shape[0]
    # Project every vertex once, in float64, so that triangles sharing a
    # vertex see bit-identical screen coordinates (needed for the crack-free
    # shared-edge rule).
    pu = np.empty(n_vertices, np.float64)
    pv = np.empty(n_vertices, np.float64)
    pz = np.empty(n_vertices, np.float64)
    for i in range(n_vertices):
        x = np.float64(vertices_cam_m[i, 0])
        y = np.float64(vertices_cam_m[i, 1])
        z = np.float64(vertices_cam_m[i, 2])
        pz[i] = z
        if z > near_m:
            pu[i] = fx * x / z + cx
            pv[i] = fy * y / z + cy
        else:
            pu[i] = 0.0
            pv[i] = 0.0

    w_max = np.float64(width - 1)
    h_max = np.float64(height - 1)

    for f in range(faces.shape[0]):
        i0 = faces[f, 0]
        i1 = faces[f, 1]
        i2 = faces[f, 2]
        z0 = pz[i0]
        z1 = pz[i1]
        z2 = pz[i2]
        # Written as 'not >' so NaN vertices are skipped as well.
        if not (z0 > near_m and z1 > near_m and z2 > near_m):
            continue
        u0 = pu[i0]
        v0 = pv[i0]
        u1 = pu[i1]
        v1 = pv[i1]
        u2 = pu[i2]
        v2 = pv[i2]

        area = (u1 - u0) * (v2 - v0) - (v1 - v0) * (u2 - u0)
        if not (abs(area) >= _MIN_AREA_PX2 and np.isfinite(area)):
            continue
        inv_area = 1.0 / area
        # Edge tolerances in edge-function units (|edge| * distance), so the
        # tie rule means the same pixel distance for every triangle.
        sgn = 1.0 if area > 0.0 else -1.0
        tol0 = _EDGE_EPS_PX * np.sqrt((u2 - u1) ** 2 + (v2 - v1) ** 2)
        tol1 = _EDGE_EPS_PX * np.sqrt((u0 - u2) ** 2 + (v0 - v2) ** 2)
        tol2 = _EDGE_EPS_PX * np.sqrt((u1 - u0) ** 2 + (v1 - v0) ** 2)

        # Clip the bounding box in float before converting to int, so far
        # off-screen vertices cannot overflow the integer conversion.
        umin_f = np.ceil(min(u0, u1, u2) - _EDGE_EPS_PX)
        umax_f = np.floor(max(u0, u1, u2) + _EDGE_EPS_PX)
        vmin_f = np.ceil(min(v0, v1, v2) - _EDGE_EPS_PX)
        vmax_f = np.floor(max(v0, v1, v2) + _EDGE_EPS_PX)
        if umin_f > w_max or vmin_f > h_max or umax_f < 0.0 or vmax_f < 0.0:
            continue
        umin = int(max(umin_f, 0.0))
        umax = int(min(umax_f, w_max))
        vmin = int(max(vmin_f, 0.0))
        vmax = int(min(vmax_f, h_max))

        iz0 = 1.0 / z0
        iz1 = 1.0 / z1
        iz2 = 1.0 / z2
        for v in range(vmin, vmax + 1):
            pvf = np.float64(v)
            for u in range(umin, umax + 1):
                puf = np.float64(u)
                # Each edge function is taken relative to one of the edge's
                # own endpoints, so the two triangles sharing an edge
                # evaluate it to (almost) exact negatives of each other.
                e0 = (u2 - u1) * (pvf - v1) - (v2 - v1) * (puf - u1)
                e1 = (u0 - u2) * (pvf - v2) - (v0 - v2) * (puf - u2)
                e2 = (u1 - u0) * (pvf - v0) - (v1 - v0) * (puf - u0)
                if e0 * sgn < -tol0 or e1 * sgn < -tol1 or e2 * sgn < -tol2:
                    continue
                # Clamp the tolerance band so the stored weights stay a
                # convex combination (the shift is <= 1e-6 px).
                s0 = max(e0 * inv_area, 0.0)
                s1 = max(e1 * inv_area, 0.0)
                s2 = max(e2 * inv_area, 0.0)
                s_sum = s0 + s1 + s2
                l0 = s0 * iz0
                l1 = s1 * iz1
                l2 = s2 * iz2
                l_sum = l0 + l1 + l2
                # s_sum / l_sum rather than 1 / l_sum keeps z exact if the
                # clamp made the screen weights sum slightly off 1.
                z = s_sum / l_sum
                cur = depth_m[v, u]
                if cur != 0.0 and z >= cur:
                    continue
                depth_m[v, u] = z
                face_index[v, u] = face_offset + f
                inv_l = 1.0 / l_sum
                barycentric[v, u, 0] = l0 * inv_l
                barycentric[v, u, 1] = l1 * inv_l
                barycentric[v, u, 2] = l2 * inv_l


def render_mesh(vertices_cam_m, faces, fx, fy, cx, cy, height, width, near_m=0.05):
    """Render one mesh into fresh buffers (plain-Python convenience wrapper).

    Parameters
    ----------
    vertices_cam_m : (V, 3) float64 or float32
        Vertex positions in the camera frame, metres.
    faces : (F, 3) int32
        Vertex indices per triangle.
    fx, fy, cx, cy : float
        Pinhole intrinsics, pixels.
    height, width : int
        Image size, pixels.
    near_m : float
        Triangles with any vertex at z <= near_m are skipped, metres.

    Returns
    -------
    depth_m : (H, W) float32
        Camera-frame z, metres; 0 = empty.
    face_index : (H, W) int32
        Visible face index; -1 = empty.
    barycentric : (H, W, 3) float32
        Perspective-correct barycentrics of the visible face (0 where empty).
    """
    height = int(height)
    width = int(width)
    vertices_cam_m = np.ascontiguousarray(vertices_cam_m)
    faces = np.ascontiguousarray(faces, dtype=np.int32)
    # The compiled rasteriser reads vertices by index unchecked: a face naming a vertex that
    # is not there would read past the array instead of failing.
    if vertices_cam_m.ndim != 2 or vertices_cam_m.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got shape {vertices_cam_m.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got shape {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices_cam_m)):
        raise ValueError(
            f"faces name vertices {faces.min()}..{faces.max()}, but there are {len(vertices_cam_m)} vertices"
        )
    depth_m = np.zeros((height, width), np.float32)
    face_index = np.full((height, width), -1, np.int32)
    barycentric = np.zeros((height, width, 3), np.float32)
    rasterize_mesh(vertices_cam_m,
                   faces,
                   float(fx), float(fy), float(cx), float(cy), height, width,
                   float(near_m), depth_m, face_index, barycentric, 0)
    return depth_m, face_index, barycentric


@numba.njit(cache=True)
def interpolate_attributes(face_index, barycentric, faces, vertex_attributes, out):
    """Interpolate per-vertex attributes at every covered pixel.

    ``out[v, u] = sum_i barycentric[v, u, i] * vertex_attributes[faces[f, i]]``
    with ``f = face_index[v, u]``. Pixels with ``f < 0`` or
    ``f >= len(faces)`` get NaN: empty pixels, and pixels of another mesh
    composited into the same buffers (pass ``face_index - face_offset`` of
    this mesh, so the other meshes' faces fall out of range).

    Parameters
    ----------
    face_index : (H, W) int32
        Face index local to ``faces``; out-of-range = not this mesh.
    barycentric : (H, W, 3) float32
        Perspective-correct barycentrics from ``rasterize_mesh``.
    faces : (F, 3) int32
        Triangles of the mesh whose attributes are interpolated.
    vertex_attributes : (V, C) float32 or float64
        Per-vertex attributes, any units (e.g. positions in metres give the
        3-D surface point seen by each pixel).
    out : (H, W, C) float32, modified in place
        Interpolated attributes, same units; NaN where not covered.

    Returns
    -------
    None
    """
    height = face_index.shape[0]
    width = face_index.shape[1]
    n_channels = vertex_attributes.shape[1]
    if (out.shape[0] != height or out.shape[1] != width
            or out.shape[2] != n_channels):
        raise ValueError("interpolate_attributes: out must be (H, W, C)")
    n_faces = faces.shape[0]
    for v in range(height):
        for u in range(width):
            f = face_index[v, u]
            if f < 0 or f >= n_faces:
                for c in range(n_channels):
                    out[v, u, c] = np.nan
                continue
            b0 = np.float64(barycentric[v, u, 0])
            b1 = np.float64(barycentric[v, u, 1])
            b2 = np.float64(barycentric[v, u, 2])
            i0 = faces[f, 0]
            i1 = faces[f, 1]
            i2 = faces[f, 2]
            for c in range(n_channels):
                out[v, u, c] = (b0 * vertex_attributes[i0, c]
                                + b1 * vertex_attributes[i1, c]
                                + b2 * vertex_attributes[i2, c])


@numba.njit(cache=True)
def dominant_vertex_labels(face_index, barycentric, faces, vertex_labels, out):
    """Per-pixel label of the visible face's vertex with the largest weight.

    Labels are categorical (e.g. hand part), so they are not interpolated:
    each pixel takes the label of its nearest vertex in barycentric terms
    (ties go to the earlier vertex of the face).

    Parameters
    ----------
    face_index : (H, W) int32
        Face index local to ``faces``; ``< 0`` or ``>= len(faces)`` = not
        this mesh.
    barycentric : (H, W, 3) float32
        Barycentrics from ``rasterize_mesh``.
    faces : (F, 3) int32
        Triangles of the labelled mesh.
    vertex_labels : (V,) int16
        Label per vertex.
    out : (H, W) int16, modified in place
        Label per pixel; -1 where not covered by this mesh.

    Returns
    -------
    None
    """
    height = face_index.shape[0]
    width = face_index.shape[1]
    if out.shape[0] != height or out.shape[1] != width:
        raise ValueError("dominant_vertex_labels: out must be (H, W)")
    n_faces = faces.shape[0]
    for v in range(height):
        for u in range(width):
            f = face_index[v, u]
            if f < 0 or f >= n_faces:
                out[v, u] = -1
                continue
            best = 0
            if barycentric[v, u, 1] > barycentric[v, u, best]:
                best = 1
            if barycentric[v, u, 2] > barycentric[v, u, best]:
                best = 2
            out[v, u] = vertex_labels[faces[f, best]]


@numba.njit(cache=True)
def visible_vertices(face_index, faces, n_vertices):
    """Vertices used by at least one face that covers at least one pixel.

    Parameters
    ----------
    face_index : (H, W) int32
        Face index local to ``faces``; ``< 0`` or ``>= len(faces)`` ignored.
    faces : (F, 3) int32
        Triangles of the mesh.
    n_vertices : int
        Number of vertices V of the mesh.

    Returns
    -------
    visible : (V,) bool
        True for vertices of a face that owns some pixel.
    """
    n_faces = faces.shape[0]
    face_seen = np.zeros(n_faces, np.bool_)
    for v in range(face_index.shape[0]):
        for u in range(face_index.shape[1]):
            f = face_index[v, u]
            if f >= 0 and f < n_faces:
                face_seen[f] = True
    visible = np.zeros(n_vertices, np.bool_)
    for f in range(n_faces):
        if face_seen[f]:
            visible[faces[f, 0]] = True
            visible[faces[f, 1]] = True
            visible[faces[f, 2]] = True
    return visible


@numba.njit(cache=True)
def composite_plane(point_m, normal, fx, fy, cx, cy, depth_m, labels, label,
                    max_depth_m):
    """Composite an infinite plane (e.g. table, wall) into the z-buffer.

    Each pixel's ray ``z * ((u - cx) / fx, (v - cy) / fy, 1)`` is
    intersected exactly with the plane; where ``0 < z <= max_depth_m`` and
    the pixel is empty or farther, depth and label are written.
    ``face_index`` / ``barycentric`` are not touched (see module docstring
    for the compositing order).

    Parameters
    ----------
    point_m : (3,) float
        A point on the plane, camera frame, metres.
    normal : (3,) float
        Plane normal (any length, either sign), camera frame.
    fx, fy, cx, cy : float
        Pinhole intrinsics, pixels.
    depth_m : (H, W) float32, modified in place
        Camera-frame z, metres; 0 = empty.
    labels : (H, W) int16, modified in place
        Per-pixel label; set to ``label`` where the plane wins.
    label : int
        Label of this plane.
    max_depth_m : float
        Farthest z at which the plane is drawn, metres (models the
        sensor's range / cuts the plane at the horizon).

    Returns
    -------
    None
    """
    height = depth_m.shape[0]
    width = depth_m.shape[1]
    if labels.shape[0] != height or labels.shape[1] != width:
        raise ValueError("composite_plane: labels must match depth_m")
    nx = np.float64(normal[0])
    ny = np.float64(normal[1])
    nz = np.float64(normal[2])
    n_dot_p = (nx * np.float64(point_m[0]) + ny * np.float64(point_m[1])
               + nz * np.float64(point_m[2]))
    lab = np.int16(label)
    for v in range(height):
        dy = (v - cy) / fy
        for u in range(width):
            dx = (u - cx) / fx
            denom = nx * dx + ny * dy + nz
            if denom == 0.0:
                continue
            z = n_dot_p / denom
            if not (z > 0.0 and z <= max_depth_m):
                continue
            cur = depth_m[v, u]
            if cur != 0.0 and z >= cur:
                continue
            depth_m[v, u] = z
            labels[v, u] = lab


@numba.njit(cache=True)
def composite_ellipsoid(center_m, cam_from_ellipsoid_rotation, radii_m, fx, fy,
                        cx, cy, depth_m, labels, label):
    """Composite a solid ellipsoid (e.g. another object) into the z-buffer.

    The ellipsoid is ``{p : |R^T (p - c) / r| = 1}`` with ``R`` the rotation
    from the ellipsoid frame to the camera frame. Each pixel takes the
    nearest intersection of its ray with positive z (the front surface; if
    the camera is inside, the surface ahead), solved in closed form; where
    the pixel is empty or farther, depth and label are written.
    ``face_index`` / ``barycentric`` are not touched.

    Parameters
    ----------
    center_m : (3,) float
        Ellipsoid centre, camera frame, metres.
    cam_from_ellipsoid_rotation : (3, 3) float
        Rotation matrix whose columns are the ellipsoid axes in the camera
        frame (``p_cam = R @ p_ell + center``).
    radii_m : (3,) float
        Semi-axis lengths along the ellipsoid's x, y, z axes, metres.
    fx, fy, cx, cy : float
        Pinhole intrinsics, pixels.
    depth_m : (H, W) float32, modified in place
        Camera-frame z, metres; 0 = empty.
    labels : (H, W) int16, modified in place
        Per-pixel label; set to ``label`` where the ellipsoid wins.
    label : int
        Label of this ellipsoid.

    Returns
    -------
    None
    """
    height = depth_m.shape[0]
    width = depth_m.shape[1]
    if labels.shape[0] != height or labels.shape[1] != width:
        raise ValueError("composite_ellipsoid: labels must match depth_m")
    # Work in the unit-sphere frame q = diag(1/r) R^T p, where the ray
    # z * d becomes z * a and the centre becomes b: solve |z a - b|^2 = 1.
    m = np.empty((3, 3), np.float64)
    b = np.empty(3, np.float64)
    for k in range(3):
        inv_r = 1.0 / np.float64(radii_m[k])
        for j in range(3):
            m[k, j] = np.float64(cam_from_ellipsoid_rotation[j, k]) * inv_r
        b[k] = (m[k, 0] * np.float64(center_m[0]) + m[k, 1] * np.float64(center_m[1])
                + m[k, 2] * np.float64(center_m[2]))
    c_coef = b[0] * b[0] + b[1] * b[1] + b[2] * b[2] - 1.0
    lab = np.int16(label)
    for v in range(height):
        dy = (v - cy) / fy
        for u in range(width):
            dx = (u - cx) / fx
            a0 = m[0, 0] * dx + m[0, 1] * dy + m[0, 2]
            a1 = m[1, 0] * dx + m[1, 1] * dy + m[1, 2]
            a2 = m[2, 0] * dx + m[2, 1] * dy + m[2, 2]
            a_coef = a0 * a0 + a1 * a1 + a2 * a2
            b_coef = a0 * b[0] + a1 * b[1] + a2 * b[2]
            disc = b_coef * b_coef - a_coef * c_coef
            if disc < 0.0:
                continue
            # Cancellation-free roots of a z^2 - 2 b z + c = 0.
            sq = np.sqrt(disc)
            q = b_coef + sq if b_coef >= 0.0 else b_coef - sq
            if q == 0.0:
                continue
            r0 = q / a_coef
            r1 = c_coef / q
            z_lo = min(r0, r1)
            z_hi = max(r0, r1)
            if z_lo > 0.0:
                z = z_lo
            elif z_hi > 0.0:
                z = z_hi
            else:
                continue
            cur = depth_m[v, u]
            if cur != 0.0 and z >= cur:
                continue
            depth_m[v, u] = z
            labels[v, u] = lab
