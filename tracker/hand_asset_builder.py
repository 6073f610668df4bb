"""Converts the WebXR generic hand (.glb) into the project's hand-model asset.

Run once (re-runnable, deterministic) to produce ``weights/hand_model.npz``, which
``tracker.hand_model.HandModel`` loads at run time:

    python -m tracker.hand_asset_builder            # weights/webxr-generic-hand/right.glb -> weights/

What it does: welds the glTF's UV-seam duplicates by position, expresses everything in the
hand frame (the wrist joint's bind frame), keeps the 25-joint skin and its LBS weights,
labels each vertex with one of 16 rigid parts, and computes each vertex's 2-D coordinate
on the 16 x 16 mesh grid. For the mesh grid it builds two candidates, the paper's MDS
embedding of geodesic distances and the glb's own UV layout, scores both by how many
vertex pairs that lie more than 2 cm apart on the surface fall within one grid cell of
each other (such pairs are indistinguishable to the network) and by how many triangles
straddle a gap between layout islands (a seam, where the ground-truth map is
discontinuous), and keeps the better one: the fewest far pairs in one cell among the
embeddings without torn faces.
The scores are written to ``weights/hand_model_report.json`` with a picture of both
embeddings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from tracker.gltf import GlbError, read_glb_skinned_mesh
from tracker.skeleton import (
    NUM_PARTS,
    SKIN_JOINT_NAMES,
    SKIN_JOINT_PARENTS,
    SKIN_JOINT_PART,
    HandPart,
)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_GLB = WEIGHTS_DIR / "webxr-generic-hand" / "right.glb"
DEFAULT_ASSET = WEIGHTS_DIR / "hand_model.npz"
ASSET_FORMAT_VERSION = 1
MESH_GRID_SIZE = 16
#: Pairs further apart than this on the surface must not share a grid cell.
FAR_APART_GEODESIC_M = 0.02


def weld_by_position(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices with identical positions.

    positions: (N, 3) float32. Returns (first, welded_of): first (V,) int64 index of the first
    glTF vertex of each welded vertex, in order of first appearance; welded_of (N,) int64
    welded index of every glTF vertex.
    """
    _, first, inverse = np.unique(positions, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first, kind="stable")  # keep the file's vertex order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse]


def check_closed_manifold(faces: np.ndarray, n_vertices: int) -> dict:
    """Edge/face/Euler statistics; raises if the welded mesh is not one closed manifold."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique_edges, counts = np.unique(edges, axis=0, return_counts=True)
    n_components, _ = connected_components(_adjacency(unique_edges, n_vertices, None), directed=False)
    stats = {
        "vertices": int(n_vertices),
        "edges": int(len(unique_edges)),
        "faces": int(len(faces)),
        "euler_characteristic": int(n_vertices - len(unique_edges) + len(faces)),
        "boundary_edges": int(np.sum(counts == 1)),
        "non_manifold_edges": int(np.sum(counts > 2)),
        "components": int(n_components),
    }
    if stats["boundary_edges"] or stats["non_manifold_edges"] or n_components != 1:
        raise GlbError(f"the welded hand mesh is not one closed manifold: {stats}")
    return stats


def _adjacency(edges: np.ndarray, n: int, lengths: np.ndarray | None):
    w = np.ones(len(edges)) if lengths is None else lengths
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    cols = np.concatenate([edges[:, 1], edges[:, 0]])
    return coo_matrix((np.concatenate([w, w]), (rows, cols)), shape=(n, n)).tocsr()


def geodesic_distances(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, V) float64 shortest-path distances along mesh edges, metres.

    Edge paths overestimate true geodesics by a few per cent, which is immaterial for
    ranking embeddings and for a 2 cm threshold.
    """
    edges = np.unique(np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1), axis=0)
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    return dijkstra(_adjacency(edges, len(vertices), lengths), directed=False)


def classical_mds(distances: np.ndarray, dims: int = 2) -> np.ndarray:
    """Torgerson MDS: (V, V) distances -> (V, dims) coordinates."""
    n = len(distances)
    centering = np.eye(n) - 1.0 / n
    gram = -0.5 * centering @ (distances**2) @ centering
    eigval, eigvec = np.linalg.eigh(gram)
    top = np.argsort(eigval)[::-1][:dims]
    vectors = eigvec[:, top]
    # Eigenvector signs are arbitrary per LAPACK build; pin them so the asset is reproducible.
    vectors *= np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(dims)])
    return vectors * np.sqrt(np.maximum(eigval[top], 0.0))


def smacof_mds(distances: np.ndarray, init: np.ndarray, iterations: int = 300) -> tuple[np.ndarray, float]:
    """Metric MDS by stress majorisation (Guttman transform), from ``init``.

    Returns (coordinates (V, 2), normalised stress sqrt(sum (d_ij - |x_i - x_j|)^2 / sum d_ij^2)).
    """
    x = init.copy()
    n = len(distances)
    for _ in range(iterations):
        dx = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
        ratio = np.divide(distances, dx, out=np.zeros_like(distances), where=dx > 1e-12)
        b = -ratio
        b[np.diag_indices(n)] = ratio.sum(axis=1)
        x = b @ x / n
    dx = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
    stress = float(np.sqrt(np.sum((distances - dx) ** 2) / np.sum(distances**2)))
    return x, stress


def to_mesh_grid(coords: np.ndarray, grid_size: int = MESH_GRID_SIZE) -> np.ndarray:
    """Scale each axis of (V, 2) coordinates to fill [0.5, grid_size - 0.5] (grid units).

    Grid cell n covers [n, n + 1); filling the grid per axis uses every cell, so both
    candidate embeddings are judged at their best resolution.
    """
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    return (0.5 + (coords - lo) / (hi - lo) * (grid_size - 1.0)).astype(np.float32)


def score_embedding(grid_coords: np.ndarray, geodesic: np.ndarray, faces: np.ndarray) -> dict:
    """How well (V, 2) grid coordinates separate the surface.

    far_pairs_within_one_cell: vertex pairs > 2 cm apart on the surface that lie < 1 cell
    apart on the grid. torn_faces: triangles with an edge longer than 2 cells; the
    ground-truth mesh coordinate of a pixel on such a face is interpolated across empty
    grid space (a UV seam), so a network regressing it sees a discontinuity.
    """
    d_grid = np.linalg.norm(grid_coords[:, None, :] - grid_coords[None, :, :], axis=-1)
    upper = np.triu(np.ones_like(geodesic, dtype=bool), k=1)
    far = upper & (geodesic > FAR_APART_GEODESIC_M)
    clash = far & (d_grid < 1.0)
    return {
        "far_pairs": int(far.sum()),
        "far_pairs_within_one_cell": int(clash.sum()),
        "fraction": float(clash.sum() / max(far.sum(), 1)),
        "vertices_in_a_clash": int(np.any(clash | clash.T, axis=1).sum()),
        "occupied_cells": int(len(np.unique(np.floor(grid_coords).astype(int), axis=0))),
        "torn_faces": int(np.sum(_longest_face_edge(grid_coords, faces) > 2.0)),
    }


def _longest_face_edge(coords: np.ndarray, faces: np.ndarray) -> np.ndarray:
    corners = coords[faces]
    return np.linalg.norm(corners - corners[:, [1, 2, 0]], axis=-1).max(axis=1)


def choose_embedding(scores: dict[str, dict]) -> str:
    """Fewest far pairs in one cell among the embeddings that tear no face, else overall."""
    continuous = [k for k, s in scores.items() if s["torn_faces"] == 0] or list(scores)
    return min(continuous, key=lambda k: scores[k]["far_pairs_within_one_cell"])


def _save_embedding_figure(path: Path, embeddings: dict[str, np.ndarray], parts: np.ndarray, scores: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(embeddings), figsize=(6 * len(embeddings), 6))
    for ax, (name, coords) in zip(np.atleast_1d(axes), embeddings.items()):
        ax.scatter(coords[:, 0], coords[:, 1], c=parts, cmap="tab20", s=6, vmin=0, vmax=19)
        ax.set_xlim(0, MESH_GRID_SIZE)
        ax.set_ylim(MESH_GRID_SIZE, 0)
        ax.set_xticks(range(MESH_GRID_SIZE + 1))
        ax.set_yticks(range(MESH_GRID_SIZE + 1))
        ax.grid(True, lw=0.4)
        ax.set_aspect("equal")
        s = scores[name]
        ax.set_title(
            f"{name}: {s['far_pairs_within_one_cell']} far pairs in one cell ({100 * s['fraction']:.2f} %), "
            f"{s['torn_faces']} torn faces",
            fontsize=10,
        )
    fig.suptitle("Mesh-grid embeddings (colour = hand part)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def build_hand_asset(glb_path: Path, asset_path: Path, report_path: Path | None, figure_path: Path | None) -> dict:
    mesh = read_glb_skinned_mesh(glb_path)
    if sorted(mesh.joint_names) != sorted(SKIN_JOINT_NAMES):
        raise GlbError(
            f"{glb_path}: expected the 25 joints of the WebXR generic hand, found "
            f"{len(mesh.joint_names)}: {list(mesh.joint_names)[:6]}..."
        )
    # Reorder the skin to the project's joint order.
    file_index = {name: i for i, name in enumerate(mesh.joint_names)}
    order = np.array([file_index[n] for n in SKIN_JOINT_NAMES])
    to_project = np.empty(len(order), dtype=np.int32)
    to_project[order] = np.arange(len(order))
    model_from_joint = mesh.model_from_joint[order]
    bind_error = float(np.abs(model_from_joint @ mesh.inverse_bind[order] - np.eye(4)).max())
    if bind_error > 1e-4:
        raise GlbError(f"{glb_path}: inverse bind matrices disagree with the bind pose by {bind_error:.2g}")

    first, welded_of = weld_by_position(mesh.positions)
    faces = welded_of[mesh.triangles].astype(np.int32)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])]
    topology = check_closed_manifold(faces, len(first))

    hand_from_model = np.linalg.inv(model_from_joint[0])
    positions = mesh.positions[first].astype(np.float64)
    template = (positions @ hand_from_model[:3, :3].T + hand_from_model[:3, 3]).astype(np.float32)
    hand_from_joint_bind = hand_from_model[None] @ model_from_joint

    n_vertices = len(first)
    skin_weights = np.zeros((n_vertices, len(SKIN_JOINT_NAMES)), dtype=np.float64)
    rows = np.repeat(np.arange(n_vertices), 4)
    np.add.at(skin_weights, (rows, to_project[mesh.joints[first]].reshape(-1)), mesh.weights[first].reshape(-1))
    skin_weights /= skin_weights.sum(axis=1, keepdims=True)

    part_weights = skin_weights @ np.eye(NUM_PARTS)[SKIN_JOINT_PART]
    vertex_part = np.argmax(part_weights, axis=1).astype(np.int8)

    geodesic = geodesic_distances(template.astype(np.float64), faces)
    mds_init = classical_mds(geodesic)
    mds, stress = smacof_mds(geodesic, mds_init)
    uv = mesh.uv[first] if mesh.uv is not None else None
    candidates = {"mds": to_mesh_grid(mds)}
    if uv is not None:
        candidates["uv"] = to_mesh_grid(uv * np.array([1.0, -1.0]))  # glTF v runs downwards
    scores = {name: score_embedding(c, geodesic, faces) for name, c in candidates.items()}
    chosen = choose_embedding(scores)

    asset_path.parent.mkdir(parents=True, exist_ok=True)
    glb_sha256 = hashlib.sha256(Path(glb_path).read_bytes()).hexdigest()
    # Written beside it and renamed into place: a crash half-way keeps the old asset whole.
    partial_asset = asset_path.with_name(f".{asset_path.stem}.partial.npz")
    try:
        np.savez_compressed(
            partial_asset,
            format_version=np.int32(ASSET_FORMAT_VERSION),
            source_sha256=np.array(glb_sha256),
            template_vertices=template,
            faces=faces,
            skin_joint_names=np.array(SKIN_JOINT_NAMES),
            skin_joint_parents=SKIN_JOINT_PARENTS,
            hand_from_joint_bind=hand_from_joint_bind.astype(np.float32),
            skin_weights=skin_weights.astype(np.float32),
            vertex_part=vertex_part,
            skin_joint_part=SKIN_JOINT_PART,
            part_names=np.array([p.name for p in HandPart]),
            mesh_coords=candidates[chosen],
            mesh_coords_source=np.array(chosen),
            mesh_grid_size=np.int32(MESH_GRID_SIZE),
        )
        os.replace(partial_asset, asset_path)
    finally:
        partial_asset.unlink(missing_ok=True)  # a failed write (a full disk) leaves nothing behind
    report = {
        "source": str(Path(glb_path).name),
        "source_sha256": glb_sha256,
        "topology": topology,
        "inverse_bind_max_error": bind_error,
        "vertices_per_part": {p.name: int(np.sum(vertex_part == p)) for p in HandPart},
        "mds_normalised_stress": stress,
        "mesh_grid_size": MESH_GRID_SIZE,
        "far_apart_geodesic_m": FAR_APART_GEODESIC_M,
        "embedding_scores": scores,
        "chosen_embedding": chosen,
    }
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    if figure_path is not None:
        _save_embedding_figure(figure_path, candidates, vertex_part, scores)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracker.hand_asset_builder",
        description="Convert the WebXR generic hand .glb into the tracker's hand-model asset "
        "(welded mesh, skin, part labels, mesh-grid coordinates).",
    )
    parser.add_argument("--glb", type=Path, default=DEFAULT_GLB, help="input right-hand .glb (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_ASSET, help="output .npz (default: %(default)s)")
    parser.add_argument("--report", type=Path, help="embedding comparison JSON (default: beside --out, NAME_report.json)")
    parser.add_argument("--figure", type=Path, help="embedding comparison PNG (default: beside --out, NAME_embeddings.png)")
    args = parser.parse_args(argv)
    # Beside the asset they describe: an asset written elsewhere leaves the shipped one's alone.
    if args.report is None:
        args.report = args.out.with_name(args.out.stem + "_report.json")
    if args.figure is None:
        args.figure = args.out.with_name(args.out.stem + "_embeddings.png")
    try:
        report = build_hand_asset(args.glb, args.out, args.report, args.figure)
    except GlbError as exc:
        parser.exit(2, f"error: {exc}\n")
    for name, s in report["embedding_scores"].items():
        print(
            f"{name:>4}: {s['far_pairs_within_one_cell']:6d} of {s['far_pairs']} vertex pairs > "
            f"{100 * FAR_APART_GEODESIC_M:.0f} cm apart share a grid cell ({100 * s['fraction']:.3f} %), "
            f"{s['occupied_cells']} cells used, {s['torn_faces']} faces torn across > 2 cells"
        )
    print(f"kept: {report['chosen_embedding']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
