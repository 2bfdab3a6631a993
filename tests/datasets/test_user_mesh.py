"""`s3d data synth --mesh`: a user's OBJ / PLY / GLB as the object, normalised to the scene's scale, and one clear
error for a mesh that cannot be read; `s3d models check groundtruth:PATH`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from scene3d.cli.main import main
from scene3d.core.errors import DataError

pytestmark = pytest.mark.data


def _torus_files(folder: Path) -> dict[str, Path]:
    import trimesh

    mesh = trimesh.creation.torus(major_radius=3.0, minor_radius=1.0, major_sections=24, minor_sections=12)
    mesh.apply_translation([10.0, -4.0, 2.0])  # far from the origin, 8 units wide: normalisation must undo it
    files = {}
    for suffix in ("obj", "ply", "glb"):
        files[suffix] = folder / f"torus.{suffix}"
        mesh.export(files[suffix])
    return files


def test_synth_with_a_user_mesh_renders_it_as_the_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from scene3d.core.cameras import CameraBatch
    from scene3d.datasets.gtpriors import render
    from scene3d.datasets.groundtruth import read_frame
    from scene3d.datasets.layouts import USER_MESH_SIZE
    from scene3d.datasets.stored import read_scene

    files = _torus_files(tmp_path)
    out = tmp_path / "scene"
    args = ["data", "synth", "--kind", "object", "--out", str(out), "--size", "32", "--views", "3"]
    assert main([*args, "--mesh", str(files["ply"]), "--mesh-up", "z"]) == 0
    capsys.readouterr()
    meta = json.loads((out / "transforms.json").read_text())
    objects = meta["scene3d"]["objects"]
    assert [o["name"] for o in objects] == ["ground", "user_mesh"] and objects[1]["shape"] == "mesh"
    assert (out / objects[1]["params"]["file"]).is_file()
    assert objects[1]["params"]["source_sha256"] == hashlib.sha256(files["ply"].read_bytes()).hexdigest()
    stored = read_scene(out)
    verts = stored.scene.objects[1].world_mesh.vertices
    extent = verts.max(0) - verts.min(0)
    assert abs(extent.max() - USER_MESH_SIZE) < 1e-5 and abs(verts[:, 2].min()) < 1e-5  # scaled, on the ground
    np.testing.assert_allclose((verts.max(0) + verts.min(0))[:2] / 2, 0.0, atol=1e-5)
    # the torus lies flat (z up): 8 x 8 x 2 units become 1.2 x 1.2 x 0.3 m
    assert abs(extent[2] - 0.3) < 0.01
    # re-rendered from the dataset (through the normalised copy in meshes/), it is the stored image, bit for bit
    cams = CameraBatch.pinhole(stored.c2w, stored.K, stored.width, stored.height)
    rgb = render(stored.scene, cams, antialias=True).rgb
    for i in range(3):
        image = np.round(rgb[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        assert np.array_equal(image, read_frame(out, i).rgb)
        assert read_frame(out, i).mask.any()
    # OBJ and GLB are read too (Y up by default for them: the torus then stands upright)
    from scene3d.datasets.synthetic import _read_user_mesh

    for suffix in ("obj", "glb"):
        local, faces, _, _ = _read_user_mesh("object", files[suffix], "auto")
        assert len(faces) == 24 * 12 * 2
        assert abs((local.max(0) - local.min(0))[2] - USER_MESH_SIZE) < 1e-5
    assert main(["models", "check", f"groundtruth:{out}"]) == 0
    assert "every twin ran" in capsys.readouterr().out


def test_an_unreadable_mesh_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from scene3d.datasets.synthetic import generate_scene

    bad = tmp_path / "broken.glb"
    bad.write_bytes(b"not a glb file")
    empty = tmp_path / "empty.obj"
    empty.write_text("# no faces here\n")
    for path, problem in ((bad, "cannot read the mesh"), (empty, "holds no triangles"),
                          (tmp_path / "missing.ply", "mesh file not found"), (tmp_path / "a.fbx", "unsupported")):  # fmt: skip
        if path.suffix == ".fbx":
            path.write_text("x")
        with pytest.raises(DataError, match=problem) as info:
            generate_scene("object", tmp_path / "out", size=32, views=2, mesh=path)
        assert info.value.path == path
    assert not (tmp_path / "out").exists()  # checked before anything is written
    assert main(["data", "synth", "--kind", "object", "--out", str(tmp_path / "o"), "--mesh", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("s3d data synth: ") and str(bad) in err and "cannot read the mesh" in err
    with pytest.raises(ValueError, match="kinds 'object' and 'forward'"):
        generate_scene("room", tmp_path / "room", size=32, views=2, mesh=tmp_path / "missing.ply")
