import json
import struct
from pathlib import Path

import numpy as np
import pytest

from tracker.gltf import GlbError, read_glb_skinned_mesh
from tracker.hand_asset_builder import DEFAULT_ASSET, DEFAULT_GLB, build_hand_asset, main
from tracker.hand_model import HandModel, HandModelError
from tracker.skeleton import NUM_PARTS


def _glb(doc: dict, binary: bytes) -> bytes:
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    binary += b"\0" * (-len(binary) % 4)
    body = struct.pack("<I4s", len(js), b"JSON") + js + struct.pack("<I4s", len(binary), b"BIN\0") + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


def _one_triangle_skinned_glb(modify=None) -> bytes:
    """A one-triangle, one-bone skinned mesh; ``modify(doc)`` may damage its JSON first."""
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32).tobytes()
    joints = np.zeros((3, 4), np.uint8).tobytes()
    weights = np.tile(np.array([1, 0, 0, 0], np.float32), (3, 1)).tobytes()
    indices = np.array([0, 1, 2, 0], np.uint16).tobytes()  # padded to 4 bytes
    uv = np.array([[0, 0], [255, 0], [0, 51]], np.uint8).tobytes() + b"\0\0"  # padded to 4 bytes
    binary = positions + joints + weights + indices + uv
    views, offset = [], 0
    for chunk in (positions, joints, weights, indices, uv):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(chunk)})
        offset += len(chunk)
    doc = {
        "asset": {"version": "2.0"},
        "nodes": [{"name": "bone"}, {"name": "mesh", "mesh": 0, "skin": 0}],
        "skins": [{"joints": [0]}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "JOINTS_0": 1, "WEIGHTS_0": 2}, "indices": 3}]}],
        "accessors": [
            {"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3"},
            {"bufferView": 1, "componentType": 5121, "count": 3, "type": "VEC4"},
            {"bufferView": 2, "componentType": 5126, "count": 3, "type": "VEC4"},
            {"bufferView": 3, "componentType": 5123, "count": 3, "type": "SCALAR"},
        ],
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary)}],
    }
    if modify is not None:
        modify(doc)
    return _glb(doc, binary)


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    # Through the command line: its report and figure go beside the asset it writes, not
    # over the shipped asset's.
    out = tmp_path_factory.mktemp("asset")
    assert main(["--out", str(out / "hand.npz")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["hand.npz", "hand_embeddings.png", "hand_report.json"]
    return out / "hand.npz", json.loads((out / "hand_report.json").read_text())


def test_converter_reproduces_the_committed_asset(rebuilt):
    path, _ = rebuilt
    with np.load(path) as new, np.load(DEFAULT_ASSET) as committed:
        assert set(new.files) == set(committed.files)
        for key in new.files:
            # 1e-5: the same float64 maths on another BLAS may differ in the last float32 bits.
            if new[key].dtype.kind == "f":
                np.testing.assert_allclose(new[key], committed[key], atol=1e-5, err_msg=key)
            else:
                np.testing.assert_array_equal(new[key], committed[key], err_msg=key)


def test_welded_mesh_is_the_documented_closed_manifold(rebuilt):
    _, report = rebuilt
    topology = report["topology"]
    assert (topology["vertices"], topology["edges"], topology["faces"]) == (1159, 3471, 2314)
    assert topology["euler_characteristic"] == 2 and topology["boundary_edges"] == 0


def test_embedding_comparison_is_reported_and_the_choice_is_consistent(rebuilt):
    _, report = rebuilt
    scores = report["embedding_scores"]
    assert set(scores) == {"mds", "uv"}
    chosen = scores[report["chosen_embedding"]]
    assert chosen["torn_faces"] == 0
    for s in scores.values():
        assert 0 < s["far_pairs_within_one_cell"] < s["far_pairs"]


def test_asset_contents(hand_model):
    m = hand_model
    assert m.template_vertices.shape == (1159, 3) and m.faces.shape == (2314, 3)
    assert set(np.unique(m.vertex_part)) == set(range(NUM_PARTS))
    assert np.all((m.mesh_coords >= 0) & (m.mesh_coords < 16))
    # A hand is roughly 18-20 cm from wrist to middle fingertip: the asset is in metres.
    extent = m.template_vertices.max(0) - m.template_vertices.min(0)
    assert 0.15 < extent.max() < 0.25


def test_missing_glb(tmp_path):
    with pytest.raises(GlbError, match="not found"):
        build_hand_asset(tmp_path / "nope.glb", tmp_path / "out.npz", None, None)


def test_truncated_glb(tmp_path):
    bad = tmp_path / "truncated.glb"
    bad.write_bytes(DEFAULT_GLB.read_bytes()[:5000])
    with pytest.raises(GlbError, match="truncated"):
        build_hand_asset(bad, tmp_path / "out.npz", None, None)


def test_not_a_glb(tmp_path):
    bad = tmp_path / "text.glb"
    bad.write_text("hello, I am not a mesh but I am long enough")
    with pytest.raises(GlbError, match="not a binary glTF"):
        build_hand_asset(bad, tmp_path / "out.npz", None, None)


def test_wrong_glb_is_rejected_with_the_reason(tmp_path, capsys):
    other = tmp_path / "triangle.glb"
    other.write_bytes(_one_triangle_skinned_glb())
    with pytest.raises(GlbError, match="expected the 25 joints"):
        build_hand_asset(other, tmp_path / "out.npz", None, None)
    # The command line turns it into a one-line error and exit status 2, not a traceback.
    with pytest.raises(SystemExit) as exit_info:
        main(["--glb", str(other), "--out", str(tmp_path / "out.npz")])
    assert exit_info.value.code == 2
    assert "expected the 25 joints" in capsys.readouterr().err


def _with_normalised_uv(doc):
    doc["accessors"].append({"bufferView": 4, "componentType": 5121, "normalized": True, "count": 3, "type": "VEC2"})
    doc["meshes"][0]["primitives"][0]["attributes"]["TEXCOORD_0"] = 4


def test_normalised_integer_texture_coordinates_are_read_as_fractions(tmp_path):
    path = tmp_path / "uv.glb"
    path.write_bytes(_one_triangle_skinned_glb(_with_normalised_uv))
    mesh = read_glb_skinned_mesh(path)
    np.testing.assert_allclose(mesh.uv, [[0, 0], [1, 0], [0, 0.2]], atol=1e-7)


def _cycle(doc):
    doc["nodes"][0]["children"] = [1]
    doc["nodes"][1]["children"] = [0]


def _two_parents(doc):
    doc["nodes"].append({"name": "other", "children": [0]})
    doc["nodes"][1]["children"] = [0]


def _past_its_view(doc):
    doc["accessors"][0]["count"] = 4  # the next view's bytes, still inside the chunk


def _no_count(doc):
    del doc["accessors"][0]["count"]


def _negative_count(doc):
    doc["accessors"][0]["count"] = -1


def _mesh_index_out_of_range(doc):
    doc["nodes"][1]["mesh"] = 5


def _skin_joint_out_of_range(doc):
    doc["skins"][0]["joints"] = [7]


def _inverse_bind_matrices_not_one_per_joint(doc):
    doc["bufferViews"].append({"buffer": 0, "byteOffset": 0, "byteLength": doc["buffers"][0]["byteLength"]})
    doc["accessors"].append({"bufferView": len(doc["bufferViews"]) - 1, "componentType": 5126, "count": 1, "type": "MAT4"})
    doc["nodes"].append({"name": "second bone"})
    doc["nodes"][0]["children"] = [2]
    doc["skins"][0] = {"joints": [0, 2], "inverseBindMatrices": len(doc["accessors"]) - 1}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_inverse_bind_matrices_not_one_per_joint, "2 joints but 1 inverse bind matrices"),
        (_cycle, "do not form a tree|cycle"),
        (_two_parents, "do not form a tree"),
        (_past_its_view, "past the end of its buffer view"),
        (_no_count, "no valid count"),
        (_negative_count, "no valid count"),
        (_mesh_index_out_of_range, "malformed glTF structure"),
        (_skin_joint_out_of_range, "malformed glTF structure"),
    ],
)
def test_a_malformed_glb_structure_is_a_clear_error(tmp_path, damage, message):
    path = tmp_path / "bad.glb"
    path.write_bytes(_one_triangle_skinned_glb(damage))
    with pytest.raises(GlbError, match=message):
        read_glb_skinned_mesh(path)


def test_missing_asset(tmp_path):
    with pytest.raises(HandModelError, match="not found.*hand_asset_builder"):
        HandModel.load(tmp_path / "missing.npz")


def test_truncated_asset(tmp_path):
    bad = tmp_path / "hand.npz"
    bad.write_bytes(Path(DEFAULT_ASSET).read_bytes()[:2000])
    with pytest.raises(HandModelError, match="corrupt or truncated"):
        HandModel.load(bad)


def test_asset_missing_a_field(tmp_path):
    with np.load(DEFAULT_ASSET) as data:
        arrays = {k: data[k] for k in data.files if k != "skin_weights"}
    np.savez(tmp_path / "hand.npz", **arrays)
    with pytest.raises(HandModelError, match="skin_weights"):
        HandModel.load(tmp_path / "hand.npz")


def test_asset_with_nan(tmp_path):
    with np.load(DEFAULT_ASSET) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["template_vertices"] = arrays["template_vertices"].copy()
    arrays["template_vertices"][3, 1] = np.nan
    np.savez(tmp_path / "hand.npz", **arrays)
    with pytest.raises(HandModelError, match="NaN"):
        HandModel.load(tmp_path / "hand.npz")


def _damaged_asset(tmp_path, field, damage):
    with np.load(DEFAULT_ASSET) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[field] = damage(arrays[field].copy())
    np.savez(tmp_path / "hand.npz", **arrays)
    return tmp_path / "hand.npz"


def _set(index, value):
    def damage(array):
        array[index] = value
        return array

    return damage


@pytest.mark.parametrize(
    "field, damage, message",
    [
        # -1 would index part 15 from the end in both refits and pull the pinky's fit off.
        ("vertex_part", _set(0, -1), "vertex_part must be"),
        ("vertex_part", lambda part: np.where(part == 15, 14, part), "at least 3 vertices"),
        ("skin_joint_part", _set(5, 9), "skin_joint_part differs"),
        # The thumb's metacarpal hung from a joint posed after it: posed at the origin.
        ("skin_joint_parents", _set(2, 5), "skin_joint_parents differs"),
    ],
)
def test_asset_with_bad_part_labels(tmp_path, field, damage, message):
    with pytest.raises(HandModelError, match=message):
        HandModel.load(_damaged_asset(tmp_path, field, damage))


def test_a_failed_write_keeps_the_old_asset_and_leaves_no_partial_file(tmp_path, monkeypatch):
    from tracker import hand_asset_builder

    asset = tmp_path / "hand.npz"
    asset.write_bytes(b"the earlier asset")
    # The embedding's slow refinement is not what this is about.
    monkeypatch.setattr(hand_asset_builder, "smacof_mds", lambda geodesic, init: (init, 0.0))

    def disk_full(path, **arrays):
        Path(path).write_bytes(b"half an arch")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hand_asset_builder.np, "savez_compressed", disk_full)
    with pytest.raises(OSError, match="No space"):
        build_hand_asset(DEFAULT_GLB, asset, None, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hand.npz"] and asset.read_bytes() == b"the earlier asset"
