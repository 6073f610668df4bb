"""Minimal reader for binary glTF 2.0 (.glb) skinned meshes.

Used only by the hand-asset converter (``tracker.hand_asset_builder``): it pulls the one
skinned triangle mesh and its skin out of a .glb and checks everything it relies on, so a
truncated, corrupt or unexpected file fails with a message that says what is wrong.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_GLB_MAGIC = b"glTF"
_CHUNK_JSON = b"JSON"
_CHUNK_BIN = b"BIN\x00"
_COMPONENT_DTYPES = {
    5120: np.int8,
    5121: np.uint8,
    5122: np.int16,
    5123: np.uint16,
    5125: np.uint32,
    5126: np.float32,
}
_TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


class GlbError(ValueError):
    """The file is not a readable binary glTF skinned mesh."""


@dataclass(frozen=True)
class GlbSkinnedMesh:
    """The first skinned mesh primitive of a .glb, in the file's own (model) frame.

    positions: (N, 3) float32 metres; normals: (N, 3) float32; uv: (N, 2) float32 or None.
    joints: (N, 4) int32 indices into joint_names; weights: (N, 4) float32.
    triangles: (F, 3) int32 vertex indices.
    joint_names: the skin's joints in skin order.
    model_from_joint: (J, 4, 4) float64 bind-pose joint transforms in the model frame.
    inverse_bind: (J, 4, 4) float64 the skin's inverse bind matrices.
    """

    positions: np.ndarray
    normals: np.ndarray
    uv: np.ndarray | None
    joints: np.ndarray
    weights: np.ndarray
    triangles: np.ndarray
    joint_names: tuple[str, ...]
    model_from_joint: np.ndarray
    inverse_bind: np.ndarray


def _quat_xyzw_to_matrix(q) -> np.ndarray:
    x, y, z, w = (float(c) for c in q)
    n = x * x + y * y + z * z + w * w
    if n < 1e-12:
        raise GlbError("a node has a zero-length rotation quaternion")
    s = 2.0 / n
    return np.array(
        [
            [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
            [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
            [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
        ]
    )


def _node_local_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.array(node["matrix"], dtype=np.float64).reshape(4, 4).T
    m = np.eye(4)
    r = _quat_xyzw_to_matrix(node.get("rotation", (0, 0, 0, 1)))
    s = np.array(node.get("scale", (1, 1, 1)), dtype=np.float64)
    m[:3, :3] = r * s[None, :]
    m[:3, 3] = node.get("translation", (0, 0, 0))
    return m


def _split_chunks(data: bytes, path: Path) -> tuple[dict, bytes]:
    if len(data) < 20:
        raise GlbError(f"{path}: file is {len(data)} bytes, too short for a .glb header")
    magic, version, length = struct.unpack_from("<4sII", data, 0)
    if magic != _GLB_MAGIC:
        raise GlbError(f"{path}: not a binary glTF file (magic {magic!r}, expected b'glTF')")
    if version != 2:
        raise GlbError(f"{path}: glTF version {version} is not supported (need 2)")
    if length != len(data):
        raise GlbError(
            f"{path}: header says {length} bytes but the file has {len(data)}; "
            "the file is truncated or corrupt"
        )
    offset = 12
    chunks = {}
    while offset < len(data):
        if offset + 8 > len(data):
            raise GlbError(f"{path}: truncated chunk header at byte {offset}")
        chunk_len, chunk_type = struct.unpack_from("<I4s", data, offset)
        start, end = offset + 8, offset + 8 + chunk_len
        if end > len(data):
            raise GlbError(f"{path}: chunk {chunk_type!r} runs past the end of the file")
        chunks.setdefault(chunk_type, data[start:end])
        offset = end
    if _CHUNK_JSON not in chunks:
        raise GlbError(f"{path}: no JSON chunk")
    try:
        doc = json.loads(chunks[_CHUNK_JSON].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GlbError(f"{path}: the JSON chunk is not valid JSON ({exc})") from exc
    return doc, chunks.get(_CHUNK_BIN, b"")


def read_glb_skinned_mesh(path: str | Path) -> GlbSkinnedMesh:
    """Read the first skinned mesh of a .glb file; raise GlbError with the reason otherwise."""
    path = Path(path)
    if not path.is_file():
        raise GlbError(f"{path}: file not found")
    doc, binary = _split_chunks(path.read_bytes(), path)

    def accessor(index: int) -> np.ndarray:
        try:
            acc = doc["accessors"][index]
            view = doc["bufferViews"][acc["bufferView"]]
            dtype = np.dtype(_COMPONENT_DTYPES[acc["componentType"]])
            width = _TYPE_SIZES[acc["type"]]
        except (KeyError, IndexError, TypeError) as exc:
            raise GlbError(f"{path}: accessor {index} is malformed ({exc!r})") from exc
        if view.get("byteStride", dtype.itemsize * width) != dtype.itemsize * width:
            raise GlbError(f"{path}: interleaved buffer views are not supported")
        if view.get("buffer", 0) != 0:
            raise GlbError(f"{path}: accessor {index} reads an external buffer; only the .glb's own is supported")
        items, view_start, view_length, offset = (acc.get("count"), view.get("byteOffset", 0), view.get("byteLength"), acc.get("byteOffset", 0))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (items, view_start, view_length, offset)):
            raise GlbError(f"{path}: accessor {index} has no valid count, byteOffset or byteLength")
        count = items * width
        start = view_start + offset
        # Within its own view, not merely inside the chunk: past the view lie other arrays.
        if offset + count * dtype.itemsize > view_length or view_start + view_length > len(binary):
            raise GlbError(f"{path}: accessor {index} reads past the end of its buffer view or of the binary chunk")
        arr = np.frombuffer(binary, dtype=dtype, count=count, offset=start)
        if acc.get("normalized") and dtype.kind in "iu":  # glTF's normalised integers stand for [0, 1] (or [-1, 1])
            arr = np.maximum(arr.astype(np.float32) / np.iinfo(dtype).max, -1.0)
        return arr.reshape(items, width) if width > 1 else arr.copy()

    try:
        return _skinned_mesh(doc, accessor, path)
    except GlbError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:  # a structure the format does not allow
        raise GlbError(f"{path}: malformed glTF structure ({type(exc).__name__}: {exc})") from exc


def _skinned_mesh(doc: dict, accessor, path: Path) -> GlbSkinnedMesh:
    meshes = doc.get("meshes", [])
    skins = doc.get("skins", [])
    nodes = doc.get("nodes", [])
    mesh_node_indices = [i for i, n in enumerate(nodes) if "mesh" in n and "skin" in n]
    if not meshes or not skins or not mesh_node_indices:
        raise GlbError(f"{path}: no skinned mesh found (meshes={len(meshes)}, skins={len(skins)})")
    mesh_node = nodes[mesh_node_indices[0]]
    prim = meshes[mesh_node["mesh"]]["primitives"][0]
    if prim.get("mode", 4) != 4:
        raise GlbError(f"{path}: primitive mode {prim.get('mode')} is not a triangle list")
    attrs = prim.get("attributes", {})
    required = ("POSITION", "JOINTS_0", "WEIGHTS_0")
    missing = [a for a in required if a not in attrs]
    if missing or "indices" not in prim:
        raise GlbError(f"{path}: mesh lacks {missing or ['indices']}; a skinned, indexed mesh is needed")

    positions = accessor(attrs["POSITION"]).astype(np.float32)
    n = len(positions)
    normals = accessor(attrs["NORMAL"]).astype(np.float32) if "NORMAL" in attrs else np.zeros_like(positions)
    uv = accessor(attrs["TEXCOORD_0"]).astype(np.float32) if "TEXCOORD_0" in attrs else None
    joints = accessor(attrs["JOINTS_0"]).astype(np.int32)
    weights = accessor(attrs["WEIGHTS_0"])
    if weights.dtype != np.float32:
        raise GlbError(f"{path}: normalised-integer skin weights are not supported")
    indices = accessor(prim["indices"]).astype(np.int64)
    if len(indices) % 3:
        raise GlbError(f"{path}: index count {len(indices)} is not a multiple of 3")
    triangles = indices.reshape(-1, 3)
    if triangles.size and (triangles.min() < 0 or triangles.max() >= n):
        raise GlbError(f"{path}: triangle indices out of range")
    if not np.all(np.isfinite(positions)) or not np.all(np.isfinite(weights)):
        raise GlbError(f"{path}: NaN/inf in vertex data")

    skin = skins[mesh_node["skin"]]
    joint_nodes = skin["joints"]
    if joints.max() >= len(joint_nodes):
        raise GlbError(f"{path}: vertex joint index beyond the skin's {len(joint_nodes)} joints")
    names = tuple(nodes[i].get("name", f"joint{i}") for i in joint_nodes)

    # World transforms of every node (the skin's joints may be nested or flat).
    parent = {}
    for i, node in enumerate(nodes):
        for c in node.get("children", []):
            if c in parent or c == i or not 0 <= c < len(nodes):
                raise GlbError(f"{path}: node {c} is a child of node {i} but the nodes do not form a tree")
            parent[c] = i

    def world(i: int) -> np.ndarray:
        m = _node_local_matrix(nodes[i])
        seen = {i}
        while i in parent:
            i = parent[i]
            if i in seen:
                raise GlbError(f"{path}: the node hierarchy has a cycle through node {i}")
            seen.add(i)
            m = _node_local_matrix(nodes[i]) @ m
        return m

    model_from_joint = np.stack([world(i) for i in joint_nodes])
    # Mesh vertices live in the mesh node's frame; express joints in that frame too.
    mesh_world = world(mesh_node_indices[0])
    model_from_joint = np.linalg.inv(mesh_world)[None] @ model_from_joint
    if "inverseBindMatrices" in skin:
        inverse_bind = accessor(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
        inverse_bind = inverse_bind.astype(np.float64)
        if len(inverse_bind) != len(joint_nodes):  # one per joint, in the skin's joint order
            raise GlbError(f"{path}: the skin has {len(joint_nodes)} joints but {len(inverse_bind)} inverse bind matrices")
    else:
        inverse_bind = np.linalg.inv(model_from_joint)
    return GlbSkinnedMesh(
        positions=positions,
        normals=normals,
        uv=uv,
        joints=joints,
        weights=weights.astype(np.float32),
        triangles=triangles.astype(np.int32),
        joint_names=names,
        model_from_joint=model_from_joint,
        inverse_bind=inverse_bind,
    )
