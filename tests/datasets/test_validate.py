"""validate_dataset: one DataError naming the file and the field for every kind of bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scene3d.core.errors import DataError
from scene3d.datasets.validate import DatasetSummary, validate_dataset

pytestmark = pytest.mark.data


@pytest.fixture()
def scene(object_scene: Path, tmp_path: Path) -> Path:
    """A private copy of the shared object scene, to break."""
    return Path(shutil.copytree(object_scene, tmp_path / "scene"))


def _edit(scene: Path, change: Callable[[dict], None]) -> None:
    tf = scene / "transforms.json"
    meta = json.loads(tf.read_text())
    change(meta)
    tf.write_text(json.dumps(meta))


def test_good_dataset_summary(object_scene: Path) -> None:
    s = validate_dataset(object_scene)
    assert isinstance(s, DatasetSummary)
    assert (s.kind, s.num_frames, s.width, s.height) == ("object", 12, 48, 48)
    assert s.num_train + s.num_val == 12 and s.num_val >= 1 and s.num_test >= 1
    assert s.has_depth and s.has_normals and s.has_masks and s.has_stylized
    assert s.num_points == 20000 and s.scene_box is not None and s.background_color is not None
    assert validate_dataset(object_scene / "transforms.json") == s
    assert "48x48" in s.describe()


def _expect(scene: Path, path: Path, field: str | None, words: str) -> None:
    with pytest.raises(DataError) as info:
        validate_dataset(scene)
    err = info.value
    assert err.path == path, str(err)
    assert err.field == field, str(err)
    assert words in str(err), str(err)
    assert str(path) in str(err) and (field is None or field in str(err))


def test_missing_and_malformed_transforms(scene: Path) -> None:
    tf = scene / "transforms.json"
    tf.write_text('{"frames": [')
    _expect(scene, tf, None, "not valid JSON")
    tf.write_text("[1, 2]")
    _expect(scene, tf, None, "JSON object")
    tf.unlink()
    _expect(scene, tf, None, "does not exist")


def test_missing_fields(scene: Path) -> None:
    tf = scene / "transforms.json"
    _edit(scene, lambda m: m.pop("fl_x"))
    _expect(scene, tf, "fl_x", "missing")
    _edit(scene, lambda m: m.update(fl_x=100.0) or m["frames"][2].pop("transform_matrix"))
    _expect(scene, tf, "frames[2].transform_matrix", "missing")


def test_missing_files(scene: Path) -> None:
    (scene / "images" / "frame_00003.png").unlink()
    _expect(scene, scene / "images" / "frame_00003.png", "frames[3].file_path", "does not exist")
    shutil.copy(scene / "images" / "frame_00004.png", scene / "images" / "frame_00003.png")
    (scene / "depths" / "frame_00007.png").unlink()
    _expect(scene, scene / "depths" / "frame_00007.png", "frames[7].depth_file_path", "does not exist")
    shutil.copy(scene / "depths" / "frame_00004.png", scene / "depths" / "frame_00007.png")
    (scene / "masks" / "frame_00001.png").unlink()
    _expect(scene, scene / "masks" / "frame_00001.png", "frames[1].mask_path", "does not exist")


def test_image_size_mismatch(scene: Path) -> None:
    img = scene / "images" / "frame_00005.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(img)
    _expect(scene, img, "frames[5].file_path", "40x40")
    shutil.copy(scene / "images" / "frame_00004.png", img)
    _edit(scene, lambda m: m.update(w=64))
    _expect(scene, scene / "images" / "frame_00000.png", "frames[0].file_path", "w x h is 64x48")
    _edit(scene, lambda m: m.update(w=48))
    mask = scene / "masks" / "frame_00002.png"
    Image.fromarray(np.zeros((48, 47), np.uint8)).save(mask)
    _expect(scene, mask, "frames[2].mask_path", "47x48")


def test_bad_poses(scene: Path) -> None:
    tf = scene / "transforms.json"
    _edit(scene, lambda m: m["frames"][3]["transform_matrix"][0].__setitem__(3, float("nan")))
    _expect(scene, tf, "frames[3].transform_matrix", "non-finite")
    _edit(scene, lambda m: m["frames"][3]["transform_matrix"][0].__setitem__(3, 1.0))

    def scale_rotation(m: dict) -> None:
        mat = np.asarray(m["frames"][6]["transform_matrix"])
        mat[:3, :3] *= 2.0
        m["frames"][6]["transform_matrix"] = mat.tolist()

    _edit(scene, scale_rotation)
    _expect(scene, tf, "frames[6].transform_matrix", "not rigid")

    def shear(m: dict) -> None:
        mat = np.eye(4)
        mat[0, 1] = 0.3
        m["frames"][6]["transform_matrix"] = mat.tolist()

    _edit(scene, shear)
    _expect(scene, tf, "frames[6].transform_matrix", "not rigid")
    _edit(scene, lambda m: m["frames"][6].update(transform_matrix=[[1, 0, 0], [0, 1, 0]]))
    _expect(scene, tf, "frames[6].transform_matrix", "4x4")


def test_splits(scene: Path) -> None:
    tf = scene / "transforms.json"
    _edit(scene, lambda m: m.update(val_filenames=[]))
    _expect(scene, tf, "val_filenames", "empty")
    _edit(scene, lambda m: m.update(val_filenames=["images/nope.png"]))
    _expect(scene, tf, "val_filenames[0]", "not the file_path of any frame")
    _edit(scene, lambda m: m.pop("val_filenames"))
    _expect(scene, tf, "val_filenames", "missing")


def test_unreadable_and_wrong_bit_depth(scene: Path) -> None:
    depth = scene / "depths" / "frame_00000.png"
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(depth)  # 8-bit: wrong
    _expect(scene, depth, "frames[0].depth_file_path", "16-bit")
    depth.write_bytes(b"not a png at all")
    _expect(scene, depth, "frames[0].depth_file_path", "unreadable")
    shutil.copy(scene / "depths" / "frame_00001.png", depth)
    img = scene / "images" / "frame_00009.png"
    img.write_bytes(b"\x89PNG broken")
    _expect(scene, img, "frames[9].file_path", "unreadable")


def test_other_top_level_fields(scene: Path) -> None:
    tf = scene / "transforms.json"
    _edit(scene, lambda m: m.update(scene_box=[[0, 0, 0], [-1, 1, 1]]))
    _expect(scene, tf, "scene_box", "below maximum")
    _edit(scene, lambda m: m.update(scene_box=[[0, 0, 0], [1, 1, 1]], background_color=[0, 2, 0]))
    _expect(scene, tf, "background_color", "[0, 1]")
    _edit(scene, lambda m: m.update(background_color=[0, 1, 0], camera_model="EQUIRECTANGULAR"))
    _expect(scene, tf, "camera_model", "must be one of")
    _edit(scene, lambda m: m.update(camera_model="OPENCV"))
    (scene / "points3d.ply").unlink()
    _expect(scene, scene / "points3d.ply", "ply_file_path", "does not exist")


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        validate_dataset(tmp_path / "nothing")
