"""A new generated scene replaces only the files of the earlier scene3d dataset in its folder (nothing else).

The datasets here are written by hand in the generator's layout (no rendering, no open3d); ``test_cli.py`` and
``tests/cli/test_demo_output.py`` do the same through the real generator and ``s3d demo``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scene3d.core.errors import OutputFolderError
from scene3d.datasets.ownership import clear_generated, generated_files


def _dataset(folder: Path, frames: int = 3) -> Path:
    """A scene3d-style dataset: frames with image/depth/mask, meshes (plus the unlisted merged mesh), points."""
    folder.mkdir(parents=True)
    entries = []
    for i in range(frames):
        for sub in ("images", "depths", "masks"):
            (folder / sub).mkdir(exist_ok=True)
            (folder / sub / f"frame_{i:05d}.png").write_bytes(b"png")
        entries.append({"file_path": f"images/frame_{i:05d}.png", "depth_file_path": f"depths/frame_{i:05d}.png",
                        "mask_path": f"masks/frame_{i:05d}.png"})  # fmt: skip
    (folder / "meshes").mkdir()
    for name in ("ground", "object_00", "scene"):
        (folder / "meshes" / f"{name}.ply").write_bytes(b"ply")
    (folder / "points3d.ply").write_bytes(b"ply")
    meta = {"frames": entries, "ply_file_path": "points3d.ply", "train_filenames": [entries[0]["file_path"]],
            "scene3d": {"kind": "object", "meshes": [{"name": n, "file": f"meshes/{n}.ply"} for n in ("ground", "object_00")]}}  # fmt: skip
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


def test_the_generated_files_are_the_ones_the_dataset_names(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    owned = {p.relative_to(data.resolve()).as_posix() for p in generated_files(data)}
    assert owned == {"transforms.json", "points3d.ply", "meshes/ground.ply", "meshes/object_00.ply", "meshes/scene.ply"} | {
        f"{sub}/frame_{i:05d}.png" for sub in ("images", "depths", "masks") for i in range(3)
    }
    assert generated_files(tmp_path) is None


def test_a_users_file_inside_the_dataset_is_never_removed(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    (data / "images" / "my_photo.jpg").write_text("mine")
    before = sorted(p for p in data.rglob("*"))
    with pytest.raises(OutputFolderError, match=r"did not write.*images/my_photo\.jpg.*nothing was removed"):
        clear_generated(data)
    assert sorted(p for p in data.rglob("*")) == before  # not one file removed
    assert (data / "images" / "my_photo.jpg").read_text() == "mine"


def test_an_earlier_dataset_is_replaced_and_files_beside_it_are_kept(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    (data / "notes.txt").write_text("mine")
    (data / "runs").mkdir()
    (data / "runs" / "log.txt").write_text("mine")
    clear_generated(data)
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == ["notes.txt", "runs", "runs/log.txt"]


def test_a_folder_without_a_scene3d_dataset_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.png").write_bytes(b"png")
    (data / "transforms.json").write_text(json.dumps({"frames": []}))  # someone else's dataset
    with pytest.raises(OutputFolderError, match="holds no scene3d dataset"):
        clear_generated(data)
    assert (data / "images" / "a.png").exists() and (data / "transforms.json").exists()
    with pytest.raises(OutputFolderError, match="is a file"):
        clear_generated(data / "transforms.json")


def test_a_changing_scene_is_replaced_step_by_step(tmp_path: Path) -> None:
    root = tmp_path / "changing"
    root.mkdir()
    for step in ("step_00", "step_01"):
        _dataset(root / step)
    (root / "manifest.json").write_text(json.dumps({"kind": "changing", "steps": ["step_00", "step_01"]}))
    (root / "step_01" / "normals").mkdir()
    (root / "step_01" / "normals" / "extra.png").write_bytes(b"user")
    with pytest.raises(OutputFolderError, match="step_01/normals/extra.png"):
        clear_generated(root)
    (root / "step_01" / "normals" / "extra.png").unlink()
    clear_generated(root)
    assert list(root.iterdir()) == []
