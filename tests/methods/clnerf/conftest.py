"""Fixtures for CLNeRF's tests: a tiny synthetic ``changing`` scene and the same captures in the WAT layout.

Both need the synthetic generator (open3d): request them from ``data``-marked tests only. Markers live in
tests/conftest.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def changing_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px ``changing`` scene: 3 steps (recolour, then move) of 10 views each."""
    from scene3d.datasets.synthetic import generate_scene

    return generate_scene("changing", tmp_path_factory.mktemp("changing") / "scene", size=32, views=10, steps=3, seed=0)


def write_wat(changing: Path, out: Path) -> Path:
    """The captures of a changing scene in the official WAT layout: ``images/<capture>/``, one COLMAP model.

    Camera ``i`` of step ``t`` becomes ``images/t<t>/frame_<i>.png``; poses are written as COLMAP world-to-camera
    (OpenCV axes) and the points of every step's ``points3d.ply`` as the model's 3D points.
    """
    from nerfstudio.data.utils import colmap_parsing_utils as colmap

    from scene3d.datasets.dataparser import _read_ply_points

    manifest = json.loads((changing / "manifest.json").read_text())
    sparse = out / "sparse" / "0"
    sparse.mkdir(parents=True)
    images, points, image_id = {}, {}, 1
    meta0 = json.loads((changing / manifest["steps"][0]["folder"] / "transforms.json").read_text())
    camera = colmap.Camera(id=1, model="PINHOLE", width=meta0["w"], height=meta0["h"],
                           params=np.array([meta0["fl_x"], meta0["fl_y"], meta0["cx"], meta0["cy"]]))  # fmt: skip
    for step in manifest["steps"]:
        folder = changing / step["folder"]
        meta = json.loads((folder / "transforms.json").read_text())
        capture = f"t{step['step']}"
        (out / "images" / capture).mkdir(parents=True)
        for frame in meta["frames"]:
            name = f"{capture}/{Path(frame['file_path']).name}"
            shutil.copy(folder / frame["file_path"], out / "images" / name)
            c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
            c2w[:3, 1:3] *= -1.0  # OpenGL -> OpenCV camera axes
            w2c = np.linalg.inv(c2w)
            images[image_id] = colmap.Image(
                id=image_id, qvec=colmap.rotmat2qvec(w2c[:3, :3]), tvec=w2c[:3, 3], camera_id=1, name=name,
                xys=np.zeros((0, 2)), point3D_ids=np.zeros(0, dtype=np.int64),
            )  # fmt: skip
            image_id += 1
        xyz, _ = _read_ply_points(folder / meta["ply_file_path"])
        for p in xyz[:: max(1, len(xyz) // 500)]:
            pid = len(points) + 1
            points[pid] = colmap.Point3D(id=pid, xyz=p.astype(np.float64), rgb=np.zeros(3, dtype=np.uint8), error=0.0,
                                         image_ids=np.zeros(0, dtype=np.int32), point2D_idxs=np.zeros(0, dtype=np.int32))  # fmt: skip
    colmap.write_cameras_binary({1: camera}, sparse / "cameras.bin")
    colmap.write_images_binary(images, sparse / "images.bin")
    colmap.write_points3D_binary(points, sparse / "points3D.bin")
    return out


@pytest.fixture(scope="session")
def wat_scene(changing_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`write_wat` of :func:`changing_scene`."""
    return write_wat(changing_scene, tmp_path_factory.mktemp("wat") / "scene")
