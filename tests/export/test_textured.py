"""Textured mesh writers: the GLB's fields read back by hand and by trimesh, OBJ + MTL + PNG, no overwriting."""

from __future__ import annotations

import json
import struct
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from scene3d.export.textured import TexturedMesh, glb_bytes, write_panorama, write_textured_mesh


def quad() -> TexturedMesh:
    rng = np.random.default_rng(0)
    return TexturedMesh(
        vertices=np.array([[0, 0, 0], [2, 0, 0], [2, 0, 1], [0, 0, 1]], np.float32),  # a wall in the x-z plane
        faces=np.array([[0, 1, 2], [0, 2, 3]]),
        uvs=np.array([[0.1, 0.2], [0.9, 0.2], [0.9, 0.8], [0.1, 0.8]], np.float32),
        texture=rng.integers(0, 256, (8, 16, 3), dtype=np.uint8),
    )


def read_glb(data: bytes) -> tuple[dict, bytes]:
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_len, json_type = struct.unpack_from("<II", data, 12)
    assert json_type == 0x4E4F534A
    document = json.loads(data[20 : 20 + json_len])
    bin_len, bin_type = struct.unpack_from("<II", data, 20 + json_len)
    assert bin_type == 0x004E4942
    return document, data[28 + json_len : 28 + json_len + bin_len]


def test_glb_fields(tmp_path: Path) -> None:
    from PIL import Image

    mesh = quad()
    doc, binary = read_glb(glb_bytes(mesh))
    views = doc["bufferViews"]

    def view(i: int, dtype: str, width: int) -> np.ndarray:
        v = views[i]
        return np.frombuffer(binary[v["byteOffset"] : v["byteOffset"] + v["byteLength"]], dtype).reshape(-1, width)

    np.testing.assert_array_equal(view(0, "<f4", 3), mesh.vertices)
    np.testing.assert_allclose(view(1, "<f4", 2), np.stack([mesh.uvs[:, 0], 1 - mesh.uvs[:, 1]], -1))  # top-left origin
    np.testing.assert_array_equal(view(2, "<u4", 3), mesh.faces)
    png = views[doc["images"][0]["bufferView"]]
    image = np.array(Image.open(BytesIO(binary[png["byteOffset"] : png["byteOffset"] + png["byteLength"]])))
    np.testing.assert_array_equal(image, mesh.texture)
    material = doc["materials"][0]
    assert material["doubleSided"] and "KHR_materials_unlit" in material["extensions"]
    assert doc["accessors"][0]["max"] == [2.0, 0.0, 1.0]
    assert all(v["byteOffset"] % 4 == 0 for v in views)


def test_glb_reads_back_upright_with_its_texture(tmp_path: Path) -> None:
    import trimesh

    mesh = quad()
    (path,) = write_textured_mesh(mesh, tmp_path / "room.glb")
    loaded = trimesh.load(path, force="mesh")
    # glTF is +Y up: scene3d's (x, y, z) reads back as (x, z, -y)
    expected = mesh.vertices[:, [0, 2, 1]] * np.array([1, 1, -1], np.float32)
    np.testing.assert_allclose(np.sort(loaded.vertices, axis=0), np.sort(expected, axis=0), atol=1e-6)
    np.testing.assert_array_equal(np.array(loaded.visual.material.baseColorTexture)[..., :3], mesh.texture)
    # trimesh converts glTF UVs back to the OBJ convention: the same UV at the same corner
    order = [int(np.argmin(np.abs(loaded.vertices - p).sum(1))) for p in expected]
    np.testing.assert_allclose(loaded.visual.uv[order], mesh.uvs, atol=1e-6)


def test_obj_mtl_png(tmp_path: Path) -> None:
    import trimesh

    mesh = quad()
    paths = write_textured_mesh(mesh, tmp_path / "room.obj")
    assert [p.name for p in paths] == ["room.obj", "room.mtl", "room.png"]
    assert "map_Kd room.png" in (tmp_path / "room.mtl").read_text()
    loaded = trimesh.load(tmp_path / "room.obj", force="mesh", process=False)
    np.testing.assert_allclose(loaded.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_allclose(loaded.visual.uv, mesh.uvs, atol=1e-6)
    np.testing.assert_array_equal(np.array(loaded.visual.material.image)[..., :3], mesh.texture)


def test_nothing_is_overwritten_unless_asked(tmp_path: Path) -> None:
    mesh = quad()
    (tmp_path / "room.mtl").write_text("mine")
    with pytest.raises(FileExistsError, match="room.mtl"):
        write_textured_mesh(mesh, tmp_path / "room.obj")
    assert not (tmp_path / "room.obj").exists() and (tmp_path / "room.mtl").read_text() == "mine"
    write_textured_mesh(mesh, tmp_path / "room.obj", overwrite=True)
    assert (tmp_path / "room.mtl").read_text() != "mine"
    with pytest.raises(ValueError, match="end in"):
        write_textured_mesh(mesh, tmp_path / "room.ply")


def test_panorama_and_bad_meshes(tmp_path: Path) -> None:
    from PIL import Image

    pano = np.random.default_rng(1).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    path = write_panorama(pano, tmp_path / "pano.png")
    np.testing.assert_array_equal(np.array(Image.open(path)), pano)
    with pytest.raises(ValueError, match="H, 2H"):
        write_panorama(pano[:, :8], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="faces"):
        TexturedMesh(quad().vertices, np.zeros((0, 3), np.int64), quad().uvs, quad().texture)
    with pytest.raises((ValueError, TypeError)):  # TypeError: the runtime shape checker sees it first
        TexturedMesh(quad().vertices, quad().faces, quad().uvs[:2], quad().texture)
