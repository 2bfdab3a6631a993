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
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """CLNeRF's tests train small fields: on the shared 2-core machine two torch threads contend with other
    processes and run each small op 10-50x slower than one thread does (measured), so these tests use one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def _look_at(eye: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world looking at the origin, world up +Z."""
    forward = -eye / np.linalg.norm(eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, eye
    return c2w


def write_sphere_scan(
    out: Path, colour: tuple[float, float, float], *, azimuth_offset: float = 0.0, views: int = 10, size: int = 24,
    radius: float = 0.5, centre: tuple[float, float, float] = (0.0, 0.0, 0.0), held_out: int = 2,
) -> Path:
    """A scene3d-style nerfstudio dataset of a Lambert-shaded sphere on white, from cameras orbiting the origin.

    Rendered analytically (no open3d). Scans with different ``colour`` and the same ``radius``/``centre`` differ in
    appearance only; each scan has its own cameras (``azimuth_offset``). The last ``held_out`` views are held out.
    """
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    focal = 0.5 * size / np.tan(np.radians(20.0))
    light = np.array([0.4, -0.3, 0.85])
    light /= np.linalg.norm(light)
    frames = []
    for i in range(views):
        az = azimuth_offset + 2 * np.pi * i / views
        el = np.radians(20.0 + 25.0 * (i % 3) / 2)
        eye = 2.5 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        c2w = _look_at(eye)
        v, u = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
        d_cam = np.stack([(u - size / 2) / focal, -(v - size / 2) / focal, -np.ones_like(u)], -1)
        d = d_cam @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = eye - np.asarray(centre)
        b = (d * o).sum(-1)
        disc = b * b - ((o * o).sum() - radius**2)
        t = -b - np.sqrt(np.clip(disc, 0, None))
        hit = (disc > 0) & (t > 0)
        n = (o + d * t[..., None]) / radius
        shade = 0.35 + 0.65 * np.clip(n @ light, 0, None)
        rgb = np.where(hit[..., None], shade[..., None] * np.asarray(colour), 1.0)
        name = f"images/frame_{i:05d}.png"
        Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(out / name)
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    names = [f["file_path"] for f in frames]
    meta = {
        "camera_model": "OPENCV", "fl_x": focal, "fl_y": focal, "cx": size / 2, "cy": size / 2, "w": size, "h": size,
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "frames": frames,
        "train_filenames": names[: views - held_out], "val_filenames": names[views - held_out :],
        "test_filenames": names[views - held_out :],
        "scene_box": [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], "background_color": [1.0, 1.0, 1.0],
    }  # fmt: skip
    (out / "transforms.json").write_text(json.dumps(meta))
    return out


SPHERE_COLOURS = ((0.9, 0.3, 0.2), (0.2, 0.4, 0.9), (0.3, 0.8, 0.3))


@pytest.fixture(scope="session")
def sphere_scans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three scans of one sphere, recoloured between scans (appearance-only changes), as sub-folders scan_0..2."""
    root = tmp_path_factory.mktemp("spheres")
    for t, colour in enumerate(SPHERE_COLOURS):
        write_sphere_scan(root / f"scan_{t}", colour, azimuth_offset=0.4 * t)
    return root


class Micro:
    """Micro-sized CLNeRF configs and a training loop without nerfstudio's Trainer (the ``micro`` fixture)."""

    @staticmethod
    def config(data: Path, iterations: int = 40, **pipeline: object):
        """clnerf-tiny shrunk further (4-level 2^10 hash grid, 16-wide MLPs, 8/4-d embeddings, 16³ grid, 256 rays)."""
        from scene3d.methods.clnerf.config import clnerf_tiny_config

        cfg = clnerf_tiny_config()
        cfg.machine.device_type = "cpu"
        cfg.vis = "tensorboard"
        cfg.pipeline.datamanager.data = Path(data)
        cfg.pipeline.datamanager.train_num_rays_per_batch = 256
        m = cfg.pipeline.model
        m.hash_levels, m.hash_log2_size, m.hash_base_resolution, m.hash_max_resolution = 4, 10, 8, 64.0
        m.density_hidden, m.color_hidden, m.appearance_dim, m.geometry_dim = 16, 16, 8, 4
        m.grid_resolution, m.grid_warmup_steps, m.render_step_size, m.backend = 16, 32, 0.04, "torch"
        cfg.pipeline.iterations_per_scan = iterations
        for key, value in pipeline.items():
            setattr(cfg.pipeline, key, value)
        return cfg

    @staticmethod
    def train(cfg):
        """Build the pipeline and run every step of its scans (no run folder, no checkpoints)."""
        from nerfstudio.engine.optimizers import Optimizers

        pipe = cfg.pipeline.setup(device="cpu", test_mode="val")
        optimizers = Optimizers(cfg.optimizers, pipe.get_param_groups())
        for step in range(pipe.total_iterations):
            pipe.train_iteration(step, optimizers, None)
        return pipe

    @staticmethod
    def run(cfg, out: Path, name: str):
        """Train through nerfstudio's (scene3d's) trainer into ``out/name/<method>/run``; returns the run folder."""
        cfg.output_dir = Path(out)
        cfg.experiment_name = name
        cfg.timestamp = "run"
        cfg.save_config()
        from nerfstudio.utils import writer

        trainer = cfg.setup(local_rank=0, world_size=1)
        trainer.setup()
        trainer.train()
        # ns-train runs one trainer per process; here the next run would append to this run's event file
        for event_writer in writer.EVENT_WRITERS:
            if hasattr(event_writer, "tb_writer"):
                event_writer.tb_writer.close()
        writer.EVENT_WRITERS.clear()
        writer.EVENT_STORAGE.clear()
        return trainer.base_dir


@pytest.fixture(scope="session")
def micro() -> Micro:
    """:class:`Micro`."""
    return Micro()
