"""Same scene or another: a copy of a dataset elsewhere is the same scene; moved cameras are another."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from scene3d.datasets.identity import dataset_fingerprint


def _write(folder: Path, shift: float = 0.0) -> Path:
    folder.mkdir(parents=True)
    frames = [{"file_path": f"images/frame_{i:05d}.png", "transform_matrix": [[1, 0, 0, i + shift], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]}
              for i in range(3)]  # fmt: skip
    (folder / "transforms.json").write_text(json.dumps({"fl_x": 40.0, "fl_y": 40.0, "cx": 16, "cy": 16, "w": 32, "h": 32, "frames": frames}))
    return folder


def test_a_copy_is_the_same_scene_and_moved_cameras_are_not(tmp_path: Path) -> None:
    a = _write(tmp_path / "a")
    copy = tmp_path / "elsewhere" / "a"
    shutil.copytree(a, copy)
    meta = json.loads((copy / "transforms.json").read_text())
    (copy / "transforms.json").write_text(json.dumps(meta, indent=4))  # rewritten by another writer
    assert dataset_fingerprint(a) == dataset_fingerprint(copy) == dataset_fingerprint(copy / "transforms.json")
    assert dataset_fingerprint(_write(tmp_path / "b", shift=0.1)) != dataset_fingerprint(a)
    assert dataset_fingerprint(tmp_path / "missing") is None
