"""Bad input to CLNeRF: a scan in another frame or scale, a scan without images, a missing or foreign previous run,
an unfinished or incompatible previous run, resuming. Each is one clear error, and the previous run is never
modified."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scene3d.core.errors import DataError, RunFolderError
from scene3d.methods.clnerf.runfolder import SCANS_JSON


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (names relative to it)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(sphere_scans: Path, micro, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished micro clnerf-tiny run on the first sphere scan, trained through scene3d's nerfstudio trainer."""
    return micro.run(micro.config(sphere_scans / "scan_0", iterations=3), tmp_path_factory.mktemp("runs"), "first")


def _transform_scan(src: Path, dst: Path, *, scale: float = 1.0, rotate_x_deg: float = 0.0) -> Path:
    """A copy of a scan with every camera rotated about the world x axis and its position scaled."""
    shutil.copytree(src, dst)
    meta = json.loads((dst / "transforms.json").read_text())
    a = np.radians(rotate_x_deg)
    rot = np.eye(4)
    rot[1:3, 1:3] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    for frame in meta["frames"]:
        c2w = rot @ np.asarray(frame["transform_matrix"])
        c2w[:3, 3] *= scale
        frame["transform_matrix"] = c2w.tolist()
    meta.pop("scene_box")
    (dst / "transforms.json").write_text(json.dumps(meta))
    return dst


def _setup(cfg):
    return cfg.pipeline.setup(device="cpu", test_mode="val")


def test_a_scan_in_another_scale_or_frame_is_refused(first_run: Path, sphere_scans: Path, micro, tmp_path: Path) -> None:
    before = folder_digest(first_run)
    scaled = _transform_scan(sphere_scans / "scan_1", tmp_path / "scaled", scale=4.0)
    with pytest.raises(DataError, match="another scale") as err:
        _setup(micro.config(scaled, previous_run=first_run))
    assert str(scaled) in str(err.value)
    rotated = _transform_scan(sphere_scans / "scan_1", tmp_path / "rotated", rotate_x_deg=120.0)
    with pytest.raises(DataError, match="another orientation"):
        _setup(micro.config(rotated, previous_run=first_run))
    shifted = tmp_path / "shifted"
    shutil.copytree(sphere_scans / "scan_1", shifted)
    meta = json.loads((shifted / "transforms.json").read_text())
    for frame in meta["frames"]:
        frame["transform_matrix"][0][3] += 10.0
    meta["scene_box"] = [[9.0, -1.0, -1.0], [11.0, 1.0, 1.0]]
    (shifted / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="another origin"):
        _setup(micro.config(shifted, previous_run=first_run))
    # the same place scanned again along another path is accepted
    _setup(micro.config(sphere_scans / "scan_1", previous_run=first_run))
    assert folder_digest(first_run) == before


def test_a_scan_without_images_is_refused(first_run: Path, micro, tmp_path: Path) -> None:
    empty = tmp_path / "empty_scan"
    empty.mkdir()
    (empty / "transforms.json").write_text(json.dumps({"camera_model": "OPENCV", "fl_x": 20.0, "frames": []}))
    before = folder_digest(first_run)
    with pytest.raises(DataError, match="no images"):
        _setup(micro.config(empty, previous_run=first_run))
    assert folder_digest(first_run) == before


def test_a_missing_or_foreign_previous_run_is_refused(first_run: Path, sphere_scans: Path, micro, tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="does not exist"):
        _setup(micro.config(sphere_scans / "scan_1", previous_run=tmp_path / "nope"))
    foreign = tmp_path / "outputs" / "splat" / "s3d-splat" / "2024"
    (foreign / "nerfstudio_models").mkdir(parents=True)
    (foreign / "config.yml").write_text("!!python/object:x\nmethod_name: s3d-splat\n")
    with pytest.raises(RunFolderError, match="trained by method 's3d-splat'"):
        _setup(micro.config(sphere_scans / "scan_1", previous_run=foreign))
    with pytest.raises(RunFolderError, match="not a CLNeRF run folder"):
        _setup(micro.config(sphere_scans / "scan_1", previous_run=tmp_path))
    # the run folder's config.yml or checkpoint folder name the same run
    pipe = _setup(micro.config(sphere_scans / "scan_1", previous_run=first_run / "nerfstudio_models"))
    assert pipe.scan_ids == [1]


def test_an_unfinished_or_incompatible_previous_run_is_refused(first_run: Path, sphere_scans: Path, micro, tmp_path: Path) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(first_run, unfinished)
    record = json.loads((unfinished / SCANS_JSON).read_text())
    record["status"] = "training"
    (unfinished / SCANS_JSON).write_text(json.dumps(record))
    with pytest.raises(RunFolderError, match="did not finish"):
        _setup(micro.config(sphere_scans / "scan_1", previous_run=unfinished))
    pipe = _setup(micro.config(sphere_scans / "scan_1", previous_run=unfinished, allow_incomplete_previous_run=True))
    assert pipe.model.num_scans == 2
    before = folder_digest(first_run)
    bigger = micro.config(sphere_scans / "scan_1", previous_run=first_run)
    bigger.pipeline.model.hash_levels = 5
    with pytest.raises(RunFolderError, match="model sizes"):
        _setup(bigger)
    with pytest.raises(ValueError, match="buffer-size"):
        _setup(micro.config(sphere_scans / "scan_1", previous_run=first_run, buffer_size=3))
    assert folder_digest(first_run) == before


def test_resuming_a_clnerf_run_mid_scan_is_refused(first_run: Path, sphere_scans: Path, micro) -> None:
    pipe = _setup(micro.config(sphere_scans / "scan_0"))
    with pytest.raises(RunFolderError, match="not supported"):
        pipe.load_pipeline({}, 1)
