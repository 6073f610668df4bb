"""Tests for kernels/raster.py (synthetic-data depth rasteriser).

All inputs are tiny synthetic meshes built here. Tolerance rationale used
throughout: depths are stored as float32, whose relative spacing is 2^-23
(1.2e-7), i.e. ~6e-8 m at 0.5 m; barycentrics are float32 too. Geometric
checks therefore use 1e-6 m (over 10x that rounding) unless stated.
"""

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from kernels.raster import (
    composite_ellipsoid,
    composite_plane,
    dominant_vertex_labels,
    interpolate_attributes,
    rasterize_mesh,
    render_mesh,
    visible_vertices,
)

FX, FY, CX, CY = 600.0, 610.0, 160.0, 120.0
H, W = 240, 320


def project(p):
    p = np.asarray(p, np.float64)
    return np.stack([FX * p[..., 0] / p[..., 2] + CX,
                     FY * p[..., 1] / p[..., 2] + CY], axis=-1)


def unproject(u, v, z):
    """Camera-frame point on the ray through pixel centre (u, v) at depth z."""
    z = np.asarray(z, np.float64)
    return np.stack([(u - CX) / FX * z, (v - CY) / FY * z, z], axis=-1)


def backproject_image(depth):
    vv, uu = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    return unproject(uu, vv, depth)


def empty_buffers(h=H, w=W):
    return (np.zeros((h, w), np.float32), np.full((h, w), -1, np.int32),
            np.zeros((h, w, 3), np.float32))


def uv_sphere(radius, center, n_stacks, n_slices):
    """Closed UV sphere with poles on the camera y axis.

    V = (n_stacks - 1) * n_slices + 2, F = 2 * n_slices * (n_stacks - 1).
    """
    verts = [(0.0, -1.0, 0.0)]
    for i in range(1, n_stacks):
        theta = np.pi * i / n_stacks
        for j in range(n_slices):
            phi = 2.0 * np.pi * j / n_slices
            verts.append((np.sin(theta) * np.cos(phi), -np.cos(theta),
                          np.sin(theta) * np.sin(phi)))
    verts.append((0.0, 1.0, 0.0))
    verts = np.asarray(verts) * radius + np.asarray(center)

    def ring(i, j):
        return 1 + (i - 1) * n_slices + (j % n_slices)

    faces = []
    south = len(verts) - 1
    for j in range(n_slices):
        faces.append((0, ring(1, j + 1), ring(1, j)))
        faces.append((south, ring(n_stacks - 1, j), ring(n_stacks - 1, j + 1)))
    for i in range(1, n_stacks - 1):
        for j in range(n_slices):
            a, b = ring(i, j), ring(i, j + 1)
            c, d = ring(i + 1, j), ring(i + 1, j + 1)
            faces.append((a, b, d))
            faces.append((a, d, c))
    return verts, np.asarray(faces, np.int32)


def plane_distance(points, faces_v):
    """Unsigned distance of points (N,3) to the planes of triangles (N,3,3)."""
    n = np.cross(faces_v[:, 1] - faces_v[:, 0], faces_v[:, 2] - faces_v[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    return np.abs(np.einsum("ij,ij->i", points - faces_v[:, 0], n))


def inside_triangle_reference(uv, h=H, w=W, margin_px=1e-4):
    """Independent coverage: pixel centres strictly inside the projected
    triangle (either winding). Also returns the centres within margin_px of
    an edge line, where the tie rule decides and no exact answer exists."""
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    signed = []
    near = np.zeros((h, w), bool)
    for k in range(3):
        a, b = uv[k], uv[(k + 1) % 3]
        e = (b[0] - a[0]) * (vv - a[1]) - (b[1] - a[1]) * (uu - a[0])
        signed.append(e)
        near |= np.abs(e) / np.hypot(*(b - a)) < margin_px
    signed = np.stack(signed)
    inside = np.all(signed > 0, axis=0) | np.all(signed < 0, axis=0)
    return inside, near


# --------------------------------------------------------------- triangles


def test_fronto_parallel_triangle_depth_coverage_barycentrics():
    # Second triangle runs off the left/top image border (bbox clipping).
    tris = [
        np.array([[-0.1003, -0.0501, 0.5], [0.0507, -0.0707, 0.5],
                  [0.0101, 0.0603, 0.5]]),
        np.array([[-0.1803, -0.1501, 0.5], [-0.0307, -0.1207, 0.5],
                  [-0.1401, 0.0103, 0.5]]),
    ]
    for verts in tris:
        faces = np.array([[0, 1, 2]], np.int32)
        depth, fidx, bary = render_mesh(verts, faces, FX, FY, CX, CY, H, W)
        uv = project(verts)
        inside, ambiguous = inside_triangle_reference(uv)
        assert not ambiguous.any()  # vertices chosen off the pixel lattice
        covered = fidx >= 0
        assert inside.sum() > 100
        np.testing.assert_array_equal(covered, inside)
        assert np.all(depth[~covered] == 0)
        # 0.5 is exact in float32 and the perspective-correct depth of a
        # constant-z triangle is 0.5 up to float64 rounding.
        np.testing.assert_allclose(depth[covered], 0.5, rtol=0, atol=1e-6)
        b = bary[covered].astype(np.float64)
        assert np.all(b >= 0)
        # float32 rounding of three weights: a few 1e-8.
        np.testing.assert_allclose(b.sum(axis=1), 1.0, atol=1e-6)
        # The weights reproduce the pixel centre, both as a 3-D point and in
        # screen space (equal for a fronto-parallel triangle). float32
        # weights times ~300 px coordinates: ~1e-4 px worst case.
        vv, uu = np.nonzero(covered)
        p3 = b @ verts
        np.testing.assert_allclose(project(p3), np.stack([uu, vv], 1), atol=1e-3)
        np.testing.assert_allclose(b @ uv, np.stack([uu, vv], 1), atol=1e-3)


def test_tilted_plane_backprojection_on_plane():
    normal = np.array([0.35, -0.25, -1.0])
    normal /= np.linalg.norm(normal)
    p0 = np.array([0.01, -0.02, 0.6])
    # Quad on the plane, two triangles, seen obliquely.
    e1 = np.cross(normal, [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    corners = np.array([p0 + 0.12 * (s * e1 + t * e2)
                        for s, t in [(-1, -1), (1, -1), (1, 1), (-1, 1)]])
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    depth, fidx, _ = render_mesh(corners, faces, FX, FY, CX, CY, H, W)
    covered = fidx >= 0
    assert covered.sum() > 1000
    pts = backproject_image(depth)[covered]
    dist = np.abs((pts - p0) @ normal)
    # float32 depth at 0.6 m: half-ulp 3e-8 m, so 1e-6 m has ample margin.
    assert dist.max() < 1e-6


def test_shared_edge_through_pixel_centres_leaves_no_hole():
    # A square whose diagonal passes exactly through pixel centres (k, k):
    # without an inclusive tie rule those centres could be claimed by
    # neither triangle.
    z = 0.5
    uv = np.array([[40.0, 30.0], [140.0, 30.0], [140.0, 130.0], [40.0, 130.0]])
    verts = unproject(uv[:, 0], uv[:, 1], np.full(4, z))
    for faces in (np.array([[0, 1, 2], [0, 2, 3]], np.int32),
                  np.array([[0, 2, 3], [2, 0, 1]], np.int32)):
        _, fidx, _ = render_mesh(verts, faces, FX, FY, CX, CY, H, W)
        # The outer border pixels lie exactly on the boundary and may go
        # either way under rounding; the interior must be fully covered.
        assert np.all(fidx[31:130, 41:140] >= 0)
        diag = np.arange(41, 140)
        assert np.all(fidx[diag - 10, diag] >= 0)
        assert not np.any(fidx[:29] >= 0) and not np.any(fidx[:, 142:] >= 0)


def test_near_plane_skips_triangle():
    verts = np.array([[-0.05, -0.05, 0.3], [0.05, -0.05, 0.3], [0.0, 0.05, 0.04]])
    faces = np.array([[0, 1, 2]], np.int32)
    _, fidx, _ = render_mesh(verts, faces, FX, FY, CX, CY, H, W, near_m=0.05)
    assert not np.any(fidx >= 0)
    # A NaN vertex (e.g. a failed pose) skips its triangles, not the mesh.
    verts = np.vstack([verts[:2], [[np.nan, 0.0, 0.3]], [[0.0, 0.05, 0.3]]])
    faces = np.array([[0, 1, 2], [0, 1, 3]], np.int32)
    _, fidx, _ = render_mesh(verts, faces, FX, FY, CX, CY, H, W)
    assert np.all(fidx[fidx >= 0] == 1) and np.any(fidx == 1)


def test_faces_naming_missing_vertices_are_an_error_not_a_read_past_the_array():
    verts = np.array([[0.0, 0.0, 0.5], [0.01, 0.0, 0.5], [0.0, 0.01, 0.5]])
    with pytest.raises(ValueError, match=r"faces name vertices 0\.\.5000, but there are 3 vertices"):
        render_mesh(verts, np.array([[0, 1, 5000]]), FX, FY, CX, CY, H, W)
    with pytest.raises(ValueError, match="faces must be"):
        render_mesh(verts, np.array([0, 1, 2]), FX, FY, CX, CY, H, W)
    with pytest.raises(ValueError, match="vertices must be"):
        render_mesh(verts[:, :2], np.array([[0, 1, 2]]), FX, FY, CX, CY, H, W)
    _, fidx, _ = render_mesh(verts, np.zeros((0, 3), np.int32), FX, FY, CX, CY, H, W)  # no faces: nothing drawn
    assert not np.any(fidx >= 0)


def test_buffer_shape_mismatch_raises():
    verts = np.array([[0.0, 0.0, 0.5], [0.01, 0.0, 0.5], [0.0, 0.01, 0.5]])
    faces = np.array([[0, 1, 2]], np.int32)
    d, f, b = empty_buffers(H, W)
    with pytest.raises(ValueError):
        rasterize_mesh(verts, faces, FX, FY, CX, CY, H + 1, W, 0.05, d, f, b, 0)


# ------------------------------------------------------------------ z-buffer


def test_zbuffer_nearer_wins_regardless_of_order_and_face_offset():
    near_tri = np.array([[-0.08, -0.06, 0.5], [0.05, -0.06, 0.5], [-0.02, 0.07, 0.5]])
    far_tri = np.array([[-0.05, -0.09, 0.6], [0.10, -0.02, 0.6], [0.0, 0.09, 0.6]])
    face = np.array([[0, 1, 2]], np.int32)

    results = []
    for order in ((near_tri, 0), (far_tri, 1)), ((far_tri, 1), (near_tri, 0)):
        d, f, b = empty_buffers()
        for verts, offset in order:
            # Two separate meshes composited via face_offset.
            rasterize_mesh(verts, face, FX, FY, CX, CY, H, W, 0.05, d, f, b, offset)
        results.append((d, f, b))
    (d1, f1, b1), (d2, f2, b2) = results
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(b1, b2)

    near_only, _ = inside_triangle_reference(project(near_tri))
    far_only, _ = inside_triangle_reference(project(far_tri))
    overlap = near_only & far_only
    assert overlap.sum() > 500
    assert np.all(f1[overlap] == 0) and np.allclose(d1[overlap], 0.5)
    assert np.all(f1[far_only & ~near_only] == 1)
    np.testing.assert_allclose(d1[far_only & ~near_only], 0.6, atol=1e-6)

    # Same scene as one two-face mesh, both face orders.
    verts = np.vstack([near_tri, far_tri])
    for faces, near_id in ((np.array([[0, 1, 2], [3, 4, 5]], np.int32), 0),
                           (np.array([[3, 4, 5], [0, 1, 2]], np.int32), 1)):
        d, f, _ = render_mesh(verts, faces, FX, FY, CX, CY, H, W)
        np.testing.assert_array_equal(d, d1)
        assert np.all(f[overlap] == near_id)


# ------------------------------------------------------------------- sphere

SPHERE_C = np.array([0.0, 0.0, 0.4])
SPHERE_R = 0.05


@pytest.fixture(scope="module")
def sphere_render():
    verts, faces = uv_sphere(SPHERE_R, SPHERE_C, 24, 50)
    depth, fidx, bary = render_mesh(verts, faces, FX, FY, CX, CY, H, W)
    return verts, faces, depth, fidx, bary


def test_sphere_backprojection_on_reported_face(sphere_render):
    verts, faces, depth, fidx, bary = sphere_render
    covered = fidx >= 0
    pts = backproject_image(depth)[covered]
    tri = verts[faces[fidx[covered]]]
    # The raster's contract is < 1e-5 m; the float32 depth alone allows ~3e-8 m.
    assert plane_distance(pts, tri).max() < 1e-6
    # The barycentrics put the point inside that face, at that same place.
    p_interp = np.einsum("ni,nij->nj", bary[covered].astype(np.float64), tri)
    assert np.abs(p_interp - pts).max() < 1e-6
    # And it is the nearest surface: within the sphere shell, front half.
    r = np.linalg.norm(pts - SPHERE_C, axis=1)
    assert r.max() < SPHERE_R + 1e-6
    assert np.all(pts[:, 2] < SPHERE_C[2])


def test_sphere_silhouette(sphere_render):
    verts, faces, depth, fidx, _ = sphere_render
    covered = fidx >= 0
    # Exact reference: a convex mesh projects to the convex hull of its
    # projected vertices, so the covered set must equal the hull's pixel
    # centres (up to centres within 1e-4 px of a hull edge).
    uv = project(verts)
    hull = ConvexHull(uv)
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    q = np.stack([uu.ravel(), vv.ravel()], 1)
    signed = q @ hull.equations[:, :2].T + hull.equations[:, 2]
    inside = np.all(signed < -1e-4, axis=1).reshape(H, W)
    boundary = np.all(signed < 1e-4, axis=1).reshape(H, W) & ~inside
    assert np.all(covered[inside])
    assert not np.any(covered[~inside & ~boundary])
    # Approximate reference: the analytic sphere projects to a disc of
    # radius f r / sqrt(D^2 - r^2) (centred on the axis). The inscribed
    # 48-gon outline loses ~0.3-1% area and pixel counting adds ~0.5%
    # noise (perimeter ~480 px against ~18000 px^2), so allow 2.5% below
    # and 0.5% above.
    rho2 = FX * FY * SPHERE_R**2 / (SPHERE_C[2]**2 - SPHERE_R**2)
    ratio = covered.sum() / (np.pi * rho2)
    assert 0.975 < ratio < 1.005, ratio


def test_interpolate_attributes_positions(sphere_render):
    verts, faces, depth, fidx, bary = sphere_render
    out = np.empty((H, W, 3), np.float32)
    interpolate_attributes(fidx, bary, faces, verts, out)
    covered = fidx >= 0
    assert np.all(np.isnan(out[~covered]))
    pts = backproject_image(depth)[covered]
    # float32 output and weights at ~0.4 m: ~1e-7 m rounding.
    assert np.abs(out[covered] - pts).max() < 1e-6

    # Composited with a backdrop quad (face_offset = F): attributes of one
    # mesh are NaN on the other's pixels.
    d, f, b = depth.copy(), fidx.copy(), bary.copy()
    quad = unproject(np.array([0.0, W - 1.0, W - 1.0, 0.0]),
                     np.array([0.0, 0.0, H - 1.0, H - 1.0]), np.full(4, 0.7))
    quad_faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    offset = len(faces)
    rasterize_mesh(quad, quad_faces, FX, FY, CX, CY, H, W, 0.05, d, f, b, offset)
    np.testing.assert_array_equal(f[covered], fidx[covered])
    quad_px = f >= offset
    assert quad_px.sum() > 0.9 * (H * W - covered.sum())
    out_q = np.empty((H, W, 1), np.float32)
    interpolate_attributes(f - offset, b, quad_faces, quad[:, 2:3], out_q)
    assert np.all(np.isnan(out_q[covered]))
    np.testing.assert_allclose(out_q[quad_px, 0], 0.7, atol=1e-6)
    out_s = np.empty((H, W, 3), np.float32)
    interpolate_attributes(f, b, faces, verts, out_s)
    assert np.all(np.isnan(out_s[quad_px]))
    np.testing.assert_array_equal(out_s[covered], out[covered])


def test_dominant_vertex_labels():
    verts = np.array([[-0.1003, -0.0501, 0.5], [0.0507, -0.0707, 0.5],
                      [0.0101, 0.0603, 0.5]])
    faces = np.array([[0, 1, 2]], np.int32)
    labels = np.array([3, 7, 11], np.int16)
    _, fidx, bary = render_mesh(verts, faces, FX, FY, CX, CY, H, W)
    out = np.zeros((H, W), np.int16)
    dominant_vertex_labels(fidx, bary, faces, labels, out)
    covered = fidx >= 0
    np.testing.assert_array_equal(out[covered], labels[np.argmax(bary[covered], axis=1)])
    assert np.all(out[~covered] == -1)
    assert set(np.unique(out[covered])) == {3, 7, 11}
    # Pixel next to each vertex carries that vertex's label.
    for k, (u, v) in enumerate(project(verts)):
        centroid = project(verts.mean(0))
        u_in, v_in = np.round(np.array([u, v]) + 0.1 * (centroid - [u, v])).astype(int)
        assert out[v_in, u_in] == labels[k]
    # Out-of-range face indices (another composited mesh) give -1.
    dominant_vertex_labels(np.where(covered, 5, -1).astype(np.int32), bary, faces,
                           labels, out)
    assert np.all(out == -1)


def test_visible_vertices(sphere_render):
    verts, faces, _, fidx, _ = sphere_render
    vis = visible_vertices(fidx, faces, len(verts))
    assert vis.dtype == np.bool_ and vis.shape == (len(verts),)
    # Exact: on a convex closed mesh a vertex all of whose faces face away
    # from the camera (camera at the origin) cannot be seen.
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    cen = tri.mean(1)
    n *= np.sign(np.einsum("ij,ij->i", n, cen - SPHERE_C))[:, None]
    front_face = np.einsum("ij,ij->i", n, cen) < 0
    has_front = np.zeros(len(verts), bool)
    has_front[faces[front_face].ravel()] = True
    assert not np.any(vis[~has_front])
    assert (~has_front).sum() > 400  # the whole back half
    # Vertices clearly facing the camera (faces several px wide) are seen.
    radial = (verts - SPHERE_C) / SPHERE_R
    view = verts / np.linalg.norm(verts, axis=1, keepdims=True)
    facing = np.einsum("ij,ij->i", radial, view) < -0.5
    assert facing.sum() > 150
    assert np.all(vis[facing])
    # Face indices outside faces are ignored.
    assert not visible_vertices(np.full((4, 4), len(faces), np.int32), faces,
                                len(verts)).any()


# -------------------------------------------------------------- distractors


def test_composite_plane_fronto_parallel_and_range():
    d = np.zeros((H, W), np.float32)
    lab = np.full((H, W), -1, np.int16)
    composite_plane(np.array([0.1, 0.2, 0.8]), np.array([0.0, 0.0, -2.0]),
                    FX, FY, CX, CY, d, lab, 5, 1.0)
    # 0.8 as float32 is the exact expected value.
    assert np.all(d == np.float32(0.8)) and np.all(lab == 5)
    # Beyond max_depth_m: nothing written.
    d2 = np.zeros((H, W), np.float32)
    lab2 = np.full((H, W), -1, np.int16)
    composite_plane(np.array([0.0, 0.0, 0.8]), np.array([0.0, 0.0, 1.0]),
                    FX, FY, CX, CY, d2, lab2, 5, 0.7)
    assert np.all(d2 == 0) and np.all(lab2 == -1)


def test_composite_plane_tilted_exact_and_horizon():
    # A floor-like plane below the camera (y down), tilted towards it, cut
    # at 1.5 m: the upper image rows see it beyond range or not at all.
    point = np.array([0.0, 0.15, 0.0])
    normal = np.array([0.0, -1.0, -0.1])
    d = np.zeros((H, W), np.float32)
    lab = np.full((H, W), -1, np.int16)
    composite_plane(point, normal, FX, FY, CX, CY, d, lab, 2, 1.5)
    hit = d > 0
    assert hit.sum() > 1000 and not hit.all()
    pts = backproject_image(d)[hit]
    n = normal / np.linalg.norm(normal)
    assert np.abs((pts - point) @ n).max() < 1e-6
    assert d.max() <= np.float32(1.5) and np.all(lab[hit] == 2)
    assert np.all(lab[~hit] == -1)


def test_composite_sphere_depth_and_surface():
    d = np.zeros((H, W), np.float32)
    lab = np.full((H, W), -1, np.int16)
    center = np.array([0.0, 0.0, 0.5])
    composite_ellipsoid(center, np.eye(3), np.full(3, 0.05), FX, FY, CX, CY, d, lab, 9)
    # Centre pixel ray is the optical axis: front surface at z = 0.45.
    assert d[int(CY), int(CX)] == np.float32(0.45)
    hit = d > 0
    pts = backproject_image(d)[hit]
    assert np.abs(np.linalg.norm(pts - center, axis=1) - 0.05).max() < 1e-6
    assert np.all(pts[:, 2] < center[2]) and np.all(lab[hit] == 9)
    # Silhouette of a sphere: disc of radius f r / sqrt(D^2 - r^2).
    rho2 = FX * FY * 0.05**2 / (0.5**2 - 0.05**2)
    assert abs(hit.sum() / (np.pi * rho2) - 1) < 0.01


def test_composite_rotated_ellipsoid_front_surface():
    ang = 0.6
    rot = np.array([[np.cos(ang), 0.0, np.sin(ang)], [0.0, 1.0, 0.0],
                    [-np.sin(ang), 0.0, np.cos(ang)]])
    rot = rot @ np.array([[1.0, 0.0, 0.0], [0.0, np.cos(0.4), -np.sin(0.4)],
                          [0.0, np.sin(0.4), np.cos(0.4)]])
    center = np.array([0.03, -0.02, 0.45])
    radii = np.array([0.08, 0.03, 0.05])
    d = np.zeros((H, W), np.float32)
    lab = np.full((H, W), -1, np.int16)
    composite_ellipsoid(center, rot, radii, FX, FY, CX, CY, d, lab, 4)
    hit = d > 0
    assert hit.sum() > 2000
    pts = backproject_image(d)[hit]
    q = (pts - center) @ rot / radii  # ellipsoid frame, unit sphere
    # |q| = 1 on the surface; 1e-6 m depth error / 0.03 m radius ~ 3e-5.
    assert np.abs(np.linalg.norm(q, axis=1) - 1).max() < 1e-4
    # Front surface: outward normal points towards the camera.
    normal = (q / radii) @ rot.T
    assert np.all(np.einsum("ij,ij->i", normal, pts) < 1e-9)


def test_distractor_occlusion_rule_with_mesh():
    quad_uv = np.array([[100.0, 60.0], [220.0, 60.0], [220.0, 180.0], [100.0, 180.0]])
    quad = unproject(quad_uv[:, 0], quad_uv[:, 1], np.full(4, 0.5))
    faces = np.array([[0, 1, 2], [0, 2, 3]], np.int32)
    depth, fidx, bary = render_mesh(quad, faces, FX, FY, CX, CY, H, W)
    mesh_px = fidx >= 0
    lab = np.full((H, W), -1, np.int16)

    # Plane behind the mesh: fills only the empty pixels.
    composite_plane(np.array([0.0, 0.0, 0.6]), np.array([0.0, 0.0, 1.0]),
                    FX, FY, CX, CY, depth, lab, 1, 2.0)
    np.testing.assert_allclose(depth[mesh_px], 0.5, atol=1e-6)
    assert np.all(lab[mesh_px] == -1)
    assert np.all(depth[~mesh_px] == np.float32(0.6)) and np.all(lab[~mesh_px] == 1)

    # Ellipsoid straddling the mesh: wins only where it is nearer.
    before = depth.copy()
    composite_ellipsoid(np.array([0.0, 0.0, 0.52]), np.eye(3), np.full(3, 0.04),
                        FX, FY, CX, CY, depth, lab, 2)
    won = lab == 2
    assert won.sum() > 100
    assert np.all(depth[won] < before[won])
    assert np.all(depth[~won] == before[~won])
    pts = backproject_image(depth)[won]
    assert np.all(np.linalg.norm(pts - [0, 0, 0.52], axis=1) < 0.04 + 1e-6)

    # Recommended order (distractors first, then meshes): the mesh claims
    # only the pixels where it is nearer, so face_index stays consistent.
    d2 = np.zeros((H, W), np.float32)
    lab2 = np.full((H, W), -1, np.int16)
    composite_ellipsoid(np.array([0.0, 0.0, 0.52]), np.eye(3), np.full(3, 0.04),
                        FX, FY, CX, CY, d2, lab2, 2)
    f2 = np.full((H, W), -1, np.int32)
    b2 = np.zeros((H, W, 3), np.float32)
    rasterize_mesh(quad, faces, FX, FY, CX, CY, H, W, 0.05, d2, f2, b2, 0)
    np.testing.assert_array_equal(d2, np.where(lab == 1, 0, depth))
    np.testing.assert_array_equal(f2 >= 0, mesh_px & ~won)
