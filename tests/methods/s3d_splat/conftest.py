"""A tiny splat-rendered dataset for s3d-splat's tests (no open3d): a random Gaussian scene seen from a ring of
cameras, written as a scene3d-data dataset with a coloured point cloud. Fixtures only (markers live in
tests/conftest.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scene3d.core.cameras import intrinsics_from_fov, look_at
from scene3d.renderers.splats import viewmats_from_c2w
from scene3d.renderers.gaussians import rasterize


def write_splat_dataset(out: Path, *, n_views: int = 10, size: int = 32, n_gaussians: int = 400, seed: int = 0) -> Path:
    """Render a random splat blob over a grey background from ``n_views`` ring cameras; every 5th view held out."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n_gaussians, 3, generator=g) - 0.5) * torch.tensor([1.2, 1.2, 0.8])
    colors = torch.rand(n_gaussians, 3, generator=g)
    scales = torch.full((n_gaussians, 3), 0.06)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n_gaussians, 1)
    opac = torch.full((n_gaussians,), 0.8)
    angles = torch.linspace(0, 2 * math.pi, n_views + 1)[:-1]
    eyes = torch.stack([3 * torch.cos(angles), 3 * torch.sin(angles), torch.full_like(angles, 1.5)], dim=-1)
    c2w = look_at(eyes, torch.zeros(3).expand(n_views, 3))
    K = intrinsics_from_fov(40.0, size, size)
    bg = [0.5, 0.5, 0.5]
    rgb, _, _ = rasterize(
        means, quats, scales, opac, colors, viewmats_from_c2w(c2w[:, :3]), K.expand(n_views, 3, 3), size, size,
        backgrounds=torch.tensor([bg]).expand(n_views, 3), backend="torch",
    )  # fmt: skip
    (out / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(n_views):
        name = f"images/frame_{i:03d}.png"
        Image.fromarray((rgb[i].clamp(0, 1) * 255).round().byte().numpy()).save(out / name)
        frames.append({"file_path": name, "transform_matrix": c2w[i].tolist()})
    names = [f["file_path"] for f in frames]
    held = names[::5]
    pts = np.concatenate([means.numpy(), (colors.numpy() * 255).round()], axis=1)
    header = f"ply\nformat ascii 1.0\nelement vertex {n_gaussians}\nproperty float x\nproperty float y\nproperty float z\n"
    header += "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    lines = [f"{p[0]:.6f} {p[1]:.6f} {p[2]:.6f} {int(p[3])} {int(p[4])} {int(p[5])}" for p in pts]
    (out / "points3d.ply").write_text(header + "\n".join(lines) + "\n")
    meta = {
        "camera_model": "OPENCV", "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]),
        "cy": float(K[1, 2]), "w": size, "h": size, "frames": frames, "background_color": bg,
        "scene_box": [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], "ply_file_path": "points3d.ply",
        "train_filenames": [n for n in names if n not in held], "val_filenames": held, "test_filenames": held,
    }  # fmt: skip
    (out / "transforms.json").write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def splat_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_splat_dataset(tmp_path_factory.mktemp("splat") / "scene")
