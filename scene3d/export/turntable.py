"""Turntable videos: a camera circling a scene, rendered in chunks and written as MP4 (imageio-ffmpeg's ffmpeg).

The orbit is fitted to a dataset's cameras: it circles the scene box's centre about world up (+Z) at the
cameras' median distance and elevation, looking at the centre, with the dataset's intrinsics.

Example:
    >>> import torch
    >>> c2w = orbit_poses(torch.zeros(3), radius=4.0, elevation_deg=30.0, frames=8)
    >>> tuple(c2w.shape), round(float(c2w[0, :3, 3].norm()), 3)
    ((8, 4, 4), 4.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import look_at, pinhole_rays

RenderFn = Callable[[Tensor, Tensor], Tensor]
"""``render(origins (n, 3), directions (n, 3)) -> rgb (n, 3)`` in [0, 1]."""


def orbit_poses(
    centre: Float[Tensor, "3"], *, radius: float, elevation_deg: float, frames: int, start_deg: float = 0.0
) -> Float[Tensor, "N 4 4"]:
    """Camera-to-world matrices (OpenGL axes) of ``frames`` cameras on a circle about +Z, looking at ``centre``."""
    if frames < 1 or radius <= 0:
        raise ValueError(f"need frames >= 1 and radius > 0, got {frames} and {radius}")
    azimuth = torch.deg2rad(start_deg + torch.arange(frames, dtype=torch.float32) * 360.0 / frames)
    elevation = math.radians(elevation_deg)
    offsets = torch.stack(
        [torch.cos(azimuth) * math.cos(elevation), torch.sin(azimuth) * math.cos(elevation),
         torch.full_like(azimuth, math.sin(elevation))], dim=-1,
    )  # fmt: skip
    eyes = centre.float() + radius * offsets
    return look_at(eyes, centre.float().expand_as(eyes))


def orbit_from_cameras(
    camera_to_worlds: Float[Tensor, "C 3 4"], centre: Float[Tensor, "3"], frames: int
) -> Float[Tensor, "N 4 4"]:
    """An orbit at the median distance and elevation of the given cameras around ``centre``."""
    offsets = camera_to_worlds[:, :3, 3].float() - centre.float()
    radius = float(offsets.norm(dim=-1).median())
    elevation = float(torch.rad2deg(torch.asin((offsets[:, 2] / offsets.norm(dim=-1)).clamp(-1, 1))).median())
    start = float(torch.rad2deg(torch.atan2(offsets[0, 1], offsets[0, 0])))
    return orbit_poses(centre, radius=radius, elevation_deg=elevation, frames=frames, start_deg=start)


@torch.no_grad()
def render_frames(
    render: RenderFn,
    camera_to_worlds: Float[Tensor, "N 4 4"],
    intrinsics: Float[Tensor, "3 3"],
    width: int,
    height: int,
    *,
    chunk: int = 1 << 14,
) -> Iterator[np.ndarray]:
    """Yield each view as an ``(H, W, 3)`` uint8 image, rendering ``chunk`` rays at a time."""
    for c2w in camera_to_worlds:
        origins, directions = pinhole_rays(c2w, intrinsics, width, height)
        origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
        rgb = torch.cat([render(origins[i : i + chunk], directions[i : i + chunk]) for i in range(0, origins.shape[0], chunk)])
        yield (rgb.reshape(height, width, 3).clamp(0, 1) * 255).round().byte().cpu().numpy()


def write_video(frames: Iterator[np.ndarray] | list[np.ndarray], path: str | Path, *, fps: int = 24) -> Path:
    """Write frames as an H.264 MP4 (through imageio-ffmpeg, which brings its own ffmpeg binary)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=fps, macro_block_size=1, quality=8) as writer:
        for frame in frames:
            writer.append_data(frame)
    return path
