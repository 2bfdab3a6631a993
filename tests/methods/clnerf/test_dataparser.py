"""``clnerf-data``: changing scenes, one nerfstudio dataset per scan, folders of scans, the WAT layout, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from scene3d.core.errors import DataError
from scene3d.methods.clnerf.dataparser import CLNeRFDataParserConfig, detect_layout
from scene3d.methods.clnerf.wat import read_wat

pytestmark = pytest.mark.data


def _outputs(data: Path, split: str = "train", **kwargs):
    return CLNeRFDataParserConfig(data=data, **kwargs).setup().get_dataparser_outputs(split=split)


def _split_sizes(folder: Path) -> tuple[int, int]:
    meta = json.loads((folder / "transforms.json").read_text())
    return len(meta["train_filenames"]), len(meta["test_filenames"])


def test_changing_root_reads_every_step_as_a_scan_in_one_frame(changing_scene: Path) -> None:
    assert detect_layout(changing_scene) == "changing"
    out = _outputs(changing_scene)
    sizes = [_split_sizes(changing_scene / f"step_{t:02d}") for t in range(3)]
    counts = torch.bincount(out.metadata["clnerf_scan_index"]).tolist()
    assert counts == [s[0] for s in sizes]
    assert [s.name for s in out.metadata["clnerf_scans"]] == ["step_00", "step_01", "step_02"]
    assert out.cameras.shape[0] == len(out.image_filenames) == sum(counts)
    # the same world frame: poses are the files' own (no re-centring)
    meta = json.loads((changing_scene / "step_01" / "transforms.json").read_text())
    first = next(f for f in meta["frames"] if f["file_path"] == meta["train_filenames"][0])
    k = counts[0]
    assert torch.allclose(out.cameras.camera_to_worlds[k], torch.tensor(first["transform_matrix"])[:3], atol=1e-5)
    assert torch.allclose(out.scene_box.aabb, torch.tensor(meta["scene_box"]))
    test = _outputs(changing_scene, "test")
    assert torch.bincount(test.metadata["clnerf_scan_index"]).tolist() == [s[1] for s in sizes]


def test_scan_selection_and_single_scan_folders(changing_scene: Path, tmp_path: Path) -> None:
    out = _outputs(changing_scene, scans=(2,))
    assert out.metadata["clnerf_scan_index"].unique().tolist() == [0]
    assert out.metadata["clnerf_scans"][0].name == "step_02"
    single = _outputs(changing_scene / "step_01")
    assert detect_layout(changing_scene / "step_01") == "nerfstudio"
    assert single.metadata["clnerf_scans"][0].name == "step_01"
    assert len(single.image_filenames) == _split_sizes(changing_scene / "step_01")[0]
    with pytest.raises(DataError, match="scans"):
        _outputs(changing_scene, scans=(3,))
    # a folder of per-scan datasets, in name order
    root = tmp_path / "my_scans"
    root.mkdir()
    for name, step in (("2024-01", "step_00"), ("2024-02", "step_02")):
        (root / name).symlink_to(changing_scene / step, target_is_directory=True)
    assert detect_layout(root) == "folders"
    folders = _outputs(root)
    assert [s.name for s in folders.metadata["clnerf_scans"]] == ["2024-01", "2024-02"]


def test_a_users_dataset_without_split_lists_holds_out_every_8th_image(changing_scene: Path, tmp_path: Path) -> None:
    scan = tmp_path / "scan"
    shutil.copytree(changing_scene / "step_00", scan)
    meta = json.loads((scan / "transforms.json").read_text())
    for key in ("train_filenames", "val_filenames", "test_filenames", "scene_box"):
        meta.pop(key)
    (scan / "transforms.json").write_text(json.dumps(meta))
    train, test = _outputs(scan), _outputs(scan, "test")
    n = len(meta["frames"])
    assert len(test.image_filenames) == len(range(0, n, 8))
    assert len(train.image_filenames) == n - len(test.image_filenames)
    # no normalisation: cameras stay where the file puts them
    c2w = torch.tensor(meta["frames"][1]["transform_matrix"])[:3]
    assert torch.allclose(train.cameras.camera_to_worlds[0], c2w, atol=1e-5)
    centres = train.cameras.camera_to_worlds[:, :, 3]
    assert bool((train.scene_box.aabb[0] <= centres.min(0).values).all())


def test_bad_inputs_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        _outputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no scan"):
        _outputs(tmp_path / "empty")
    (tmp_path / "noimages").mkdir()
    (tmp_path / "noimages" / "transforms.json").write_text(json.dumps({"fl_x": 10, "frames": []}))
    with pytest.raises(DataError, match="no images"):
        _outputs(tmp_path / "noimages")


def test_wat_layout_official_split_and_normalisation(wat_scene: Path, changing_scene: Path) -> None:
    assert detect_layout(wat_scene) == "wat"
    wat = read_wat(wat_scene, scale=8.0)
    assert [s.name for s in wat.scans] == ["t0", "t1", "t2"]
    per_scan = np.bincount(wat.task_ids).tolist()
    assert per_scan == [10, 10, 10]
    # held out: each capture's first image and every 8th after it
    for t in range(3):
        held = np.nonzero(wat.held_out[wat.task_ids == t])[0].tolist()
        assert held == [0, 8]
    # a similarity transform of the originals: pairwise camera distances scale by one factor, relative rotations kept
    frames = []
    for t in range(3):
        meta = json.loads((changing_scene / f"step_{t:02d}" / "transforms.json").read_text())
        frames += [np.asarray(f["transform_matrix"])[:3] for f in meta["frames"]]
    orig = np.stack(frames)
    new = wat.camera_to_worlds.astype(np.float64)
    d_orig = np.linalg.norm(orig[:, None, :, 3] - orig[None, :, :, 3], axis=-1)
    d_new = np.linalg.norm(new[:, None, :, 3] - new[None, :, :, 3], axis=-1)
    mask = d_orig > 1e-3
    ratio = d_new[mask] / d_orig[mask]
    assert ratio.std() < 1e-4 * ratio.mean()
    rel_orig = np.einsum("iba,jbc->ijac", orig[:, :, :3], orig[:, :, :3])
    rel_new = np.einsum("iba,jbc->ijac", new[:, :, :3], new[:, :, :3])
    assert np.allclose(rel_orig, rel_new, atol=1e-4)
    # official scale: cameras lie well inside the [-8, 8]^3 cube
    assert np.abs(new[:, :, 3]).max() < 8.0
    out = _outputs(wat_scene, "test")
    assert torch.bincount(out.metadata["clnerf_scan_index"]).tolist() == [2, 2, 2]
    assert torch.allclose(out.scene_box.aabb, torch.tensor([[-8.0] * 3, [8.0] * 3]))
    assert torch.equal(out.metadata["background_color"], torch.zeros(3))


def test_wat_missing_image_is_a_data_error(wat_scene: Path, tmp_path: Path) -> None:
    broken = tmp_path / "wat"
    shutil.copytree(wat_scene, broken)
    victim = next((broken / "images" / "t1").iterdir())
    victim.unlink()
    with pytest.raises(DataError, match="missing"):
        read_wat(broken)
