"""Tiny posed image collections for EpiGRAF's tests, rendered analytically (no open3d): shaded spheres of random
size and colour on a white background, seen from random poses on a sphere. Fixtures only (markers live in
tests/conftest.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scene3d.core.cameras import intrinsics_from_fov, pinhole_rays
from scene3d.core.cameras import orbit_c2w


def render_sphere(c2w: torch.Tensor, K: torch.Tensor, size: int, radius: float, color: np.ndarray) -> np.ndarray:
    """uint8 (size, size, 3) image of a Lambert-shaded sphere at the origin over white."""
    o, d = pinhole_rays(c2w, K, size, size)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - radius**2
    disc = b * b - c
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp_min(0))
    n = o + d * t[..., None]
    n = n / n.norm(dim=-1, keepdim=True)
    light = torch.tensor([0.3, -0.5, 0.8])
    shade = 0.35 + 0.65 * (n @ (light / light.norm())).clamp_min(0)
    rgb = torch.where(hit[..., None], shade[..., None] * torch.from_numpy(color).float(), torch.ones(3))
    return (rgb.clamp(0, 1) * 255).round().byte().numpy()


def write_collection(
    out: Path, *, n: int = 16, size: int = 32, seed: int = 0, layout: str = "nerfstudio", fov_deg: float = 30.0
) -> Path:
    """Write ``n`` posed sphere images in the nerfstudio (transforms.json) or official (dataset.json) layout."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    K = intrinsics_from_fov(fov_deg, size, size)
    yaw = torch.from_numpy(rng.uniform(-math.pi, math.pi, n)).float()
    pitch = torch.from_numpy(rng.uniform(0.4, 2.0, n)).float()
    c2w = orbit_c2w(yaw, pitch, 1.0 if layout == "official" else 3.0)
    frames, angles = [], {}
    (out / "images").mkdir(exist_ok=True)
    for i in range(n):
        radius = (0.12 if layout == "official" else 0.4) * rng.uniform(0.7, 1.0)
        img = render_sphere(c2w[i], K, size, radius, rng.uniform(0.1, 0.9, 3))
        name = f"images/img_{i:03d}.png"
        Image.fromarray(img).save(out / name)
        frames.append({"file_path": name, "transform_matrix": c2w[i].tolist(), "instance_id": i // 2})
        angles[name] = [float(yaw[i]), float(pitch[i]), 0.0]
    if layout == "official":
        (out / "dataset.json").write_text(json.dumps({"camera_angles": angles, "labels": {k: i % 3 for i, k in enumerate(angles)}}))
    else:
        meta = {
            "camera_model": "OPENCV", "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]),
            "cy": float(K[1, 2]), "w": size, "h": size, "frames": frames, "background_color": [1.0, 1.0, 1.0],
            "scene_box": [[-0.45, -0.45, -0.45], [0.45, 0.45, 0.45]],
        }
        (out / "transforms.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread for these tests: on the shared 2-core machine, two threads spend most of a small GAN
    iteration waiting on each other (measured 0.4 s vs 11 s per epigraf-tiny iteration under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def collection_dir(tmp_path: Path) -> Path:
    return write_collection(tmp_path / "collection", n=16, size=32)


@pytest.fixture
def official_dir(tmp_path: Path) -> Path:
    return write_collection(tmp_path / "official", n=12, size=32, layout="official", fov_deg=12.0)
