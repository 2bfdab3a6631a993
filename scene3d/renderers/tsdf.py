"""Truncated signed-distance fusion of depth maps, and the colour the views show at surface points.

A surface seen in depth maps is recovered by projective TSDF fusion (Curless & Levoy 1996, "A volumetric method
for building complex models from range images"; the projective form of KinectFusion, Newcombe et al. 2011). Each
grid point ``x`` is projected into every view; with ``z(x)`` its depth in that camera and ``D`` the view's depth at
that pixel, the view observes

    d = clamp((D − z(x)) / τ, −1, 1)            where the pixel is a surface (opacity ≥ ``min_opacity``)
    d = +1                                      where the pixel shows nothing (free space all along the ray)

and nothing where ``D − z(x) < −τ`` (hidden behind the surface) or outside the image. The fused value is the mean
of the observations (each weighs 1); its zero level set, extracted by marching cubes on the cubes whose eight
corners were observed, is the surface: positive in front, negative just behind. ``τ`` is the truncation distance.

Rendered depth maps of radiance fields are the intended input (``s3d export mesh``): the depth is the expected
ray-termination depth and the opacity the accumulated alpha, so a surface the field renders semi-transparent (a
light floor the field half-blends with a light background) is still a surface where the renders put it, and a
faint floater seen against the background by other views is voted away.

:func:`view_colors` gives each point the colour of the views that see it (in the image, at a pixel whose depth is
within ``τ`` of the point's and whose opacity is at least ``min_opacity``), weighted by how squarely each view faces
the surface when normals are given: the colour the renders show there.

Example:
    >>> import torch
    >>> from scene3d.core.cameras import intrinsics_from_fov
    >>> c2w = torch.eye(4); c2w[2, 3] = 2.0                     # looking down −Z at the plane z = 0
    >>> K = intrinsics_from_fov(40.0, 16, 16)
    >>> view = DepthView(torch.full((16, 16, 3), 0.5), torch.ones(16, 16), torch.full((16, 16), 2.0), c2w, K)
    >>> lower, upper = torch.tensor([-0.3, -0.3, -0.2]), torch.tensor([0.3, 0.3, 0.2])
    >>> values, counts = fuse_tsdf([view], lower, upper, (5, 5, 5), truncation=0.3)
    >>> [round(float(v), 2) for v in values[2, 2]]               # along z through the centre: the plane at z = 0
    [-0.67, -0.33, 0.0, 0.33, 0.67]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import project_pinhole


@dataclass(frozen=True)
class DepthView:
    """One view's colour, opacity and depth images with its pinhole camera."""

    rgb: Float[Tensor, "H W 3"]
    """Colour as the view shows it (for a radiance field: the render, background included), in ``[0, 1]``."""
    opacity: Float[Tensor, "H W"]
    """How much of each pixel is surface (accumulated alpha), in ``[0, 1]``."""
    depth: Float[Tensor, "H W"]
    """z-depth along the camera's optical axis (not the distance along the ray), in the world's units."""
    c2w: Float[Tensor, "4 4"]
    """Camera-to-world, OpenGL axes (the camera looks along −Z)."""
    K: Float[Tensor, "3 3"]
    """Pinhole intrinsics; pixel ``(row, col)`` has its centre at ``(col + 0.5, row + 0.5)``."""

    def __post_init__(self) -> None:
        h, w = self.opacity.shape
        if self.rgb.shape != (h, w, 3) or self.depth.shape != (h, w):
            raise ValueError(
                f"rgb must be (H, W, 3) and depth (H, W) with opacity's (H, W) = {(h, w)}, got rgb "
                f"{tuple(self.rgb.shape)} and depth {tuple(self.depth.shape)}"
            )
        if self.c2w.shape != (4, 4) or self.K.shape != (3, 3):
            raise ValueError(f"c2w must be (4, 4) and K (3, 3), got {tuple(self.c2w.shape)} and {tuple(self.K.shape)}")


def _lookup(view: DepthView, points: Float[Tensor, "N 3"]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For each point: whether it projects into the image in front of the camera, the flat pixel index, its
    z-depth and the view's depth minus it (``D − z``)."""
    h, w = view.opacity.shape
    uv, z = project_pinhole(points, view.c2w.to(points), view.K.to(points))
    u, v = uv[:, 0], uv[:, 1]
    inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pixel = v.floor().long().clamp(0, h - 1) * w + u.floor().long().clamp(0, w - 1)
    gap = view.depth.reshape(-1).to(points)[pixel] - z
    return inside, pixel, z, gap


@torch.no_grad()
def fuse_tsdf(
    views: Sequence[DepthView],
    lower: Float[Tensor, "3"],
    upper: Float[Tensor, "3"],
    shape: tuple[int, int, int],
    *,
    truncation: float,
    min_opacity: float = 0.1,
    chunk: int = 1 << 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ``views`` on a regular ``shape`` grid spanning ``[lower, upper]`` (corners included, (x, y, z) order).

    Returns:
        The fused truncated signed distance in units of ``truncation`` (float32, ``+1`` where no view observed the
        point) and how many views observed each point (int32), both of ``shape``.
    """
    if truncation <= 0:
        raise ValueError(f"truncation must be positive, got {truncation}")
    if not 0.0 < min_opacity <= 1.0:
        raise ValueError(f"min_opacity must be in (0, 1], got {min_opacity}")
    if not views:
        raise ValueError("views must hold at least one view")
    device = lower.device
    axes = [torch.linspace(float(lower[i]), float(upper[i]), shape[i], device=device) for i in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    total = torch.zeros(points.shape[0], device=device)
    counts = torch.zeros(points.shape[0], dtype=torch.int32, device=device)
    for start in range(0, points.shape[0], chunk):
        part = points[start : start + chunk]
        for view in views:
            inside, pixel, _, gap = _lookup(view, part)
            surface = view.opacity.reshape(-1).to(part)[pixel] >= min_opacity
            d = torch.where(surface, (gap / truncation).clamp(-1.0, 1.0), torch.ones_like(gap))
            seen = inside & (~surface | (gap >= -truncation))
            total[start : start + chunk] += torch.where(seen, d, torch.zeros_like(d))
            counts[start : start + chunk] += seen.int()
    values = torch.where(counts > 0, total / counts.clamp_min(1), torch.ones_like(total))
    return values.reshape(shape).cpu().numpy().astype(np.float32), counts.reshape(shape).cpu().numpy()


def observed_cubes(counts: np.ndarray) -> np.ndarray:
    """Marching-cubes mask of the cubes whose eight corners were all observed (a surface is never drawn against
    points no view saw, e.g. under a floor or inside an object).

    scikit-image (0.26) reads the flag of the cube spanning ``[i, i + 1] × [j, j + 1] × [k, k + 1]`` at
    ``mask[i + 1, j + 1, k + 1]`` (checked in ``tests/renderers/test_tsdf.py``), so that is where it is set.
    """
    observed = counts > 0
    nx, ny, nz = observed.shape
    cube = np.ones((nx - 1, ny - 1, nz - 1), dtype=bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                cube &= observed[dx : dx + nx - 1, dy : dy + ny - 1, dz : dz + nz - 1]
    mask = np.zeros_like(observed)
    mask[1:, 1:, 1:] = cube
    return mask


@torch.no_grad()
def view_colors(
    points: Float[Tensor, "N 3"],
    views: Sequence[DepthView],
    *,
    truncation: float,
    min_opacity: float = 0.1,
    normals: Float[Tensor, "N 3"] | None = None,
) -> tuple[Float[Tensor, "N 3"], Tensor]:
    """Colour of the views that see each point, and how many views see it (points no view sees get black and 0).

    With ``normals`` (unit, outward), each view's colour weighs the cosine between the normal and the direction to
    the camera, and views behind the surface (cosine ≤ 0) do not count: a grazing view, whose ray skims the surface
    and half shows what lies beyond, counts little. Without, every view weighs 1.
    """
    total = torch.zeros(points.shape[0], 3, dtype=points.dtype, device=points.device)
    weight = torch.zeros(points.shape[0], dtype=points.dtype, device=points.device)
    seen = torch.zeros(points.shape[0], dtype=torch.int32, device=points.device)
    for view in views:
        inside, pixel, _, gap = _lookup(view, points)
        visible = inside & (view.opacity.reshape(-1).to(points)[pixel] >= min_opacity) & (gap.abs() < truncation)
        w = visible.to(points.dtype)
        if normals is not None:
            to_camera = torch.nn.functional.normalize(view.c2w[:3, 3].to(points) - points, dim=-1)
            cos = (normals * to_camera).sum(-1)
            visible = visible & (cos > 0)
            w = torch.where(visible, cos, torch.zeros_like(cos))
        total += w[:, None] * view.rgb.reshape(-1, 3).to(points)[pixel]
        weight += w
        seen += visible.int()
    return total / weight.clamp_min(1e-12)[:, None], seen
