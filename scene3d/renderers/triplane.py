"""Tri-plane feature sampling: features of 3D points read bilinearly from three axis-aligned feature planes.

A tri-plane (EG3D, Chan et al. 2022; EpiGRAF, Skorokhodov et al. 2022) stores a scene as three 2D feature maps
``F_xy, F_xz, F_yz`` spanning the cube ``[−s, s]³``. The feature of a point ``p`` is an aggregate (EpiGRAF: the
mean) of the three bilinear look-ups of its projections:

    f(p) = ⅓ (F_xy(p_x, p_y) + F_xz(p_x, p_z) + F_yz(p_y, p_z)),   p ← p / s.

Plane axes follow EpiGRAF's official code (``tri_plane_renderer``): in each plane the first named coordinate
indexes the width (``grid_sample``'s x), the second the height; ``−1`` and ``+1`` are the centres of the border
texels (``align_corners=True``). Points outside the cube read zeros.

Example:
    >>> import torch
    >>> planes = torch.ones(1, 3, 4, 8, 8)
    >>> sample_triplane(planes, torch.zeros(1, 5, 3)).shape
    torch.Size([1, 5, 4])
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

PLANE_AXES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))
"""For each plane, the point coordinates used as (width, height) look-up coordinates: xy, xz, yz."""


def sample_triplane(
    planes: Float[Tensor, "B 3 C H W"],
    points: Float[Tensor, "B N 3"],
    *,
    cube_scale: float = 1.0,
    reduce: Literal["mean", "sum", "concat"] = "mean",
) -> Float[Tensor, "B N _"]:
    """Bilinear tri-plane features of ``points``.

    Args:
        planes: ``B`` tri-planes, each three ``C``-channel planes (xy, xz, yz).
        points: world-space points; the planes span ``[−cube_scale, cube_scale]³``.
        cube_scale: half the side of the cube the planes cover.
        reduce: how the three look-ups combine: ``"mean"`` (EpiGRAF, EG3D), ``"sum"``, or ``"concat"``
            (``3C`` channels, plane order xy, xz, yz).

    Returns:
        ``(B, N, C)`` features (``(B, N, 3C)`` for ``"concat"``).
    """
    if planes.shape[0] != points.shape[0]:
        raise ValueError(f"planes and points must have the same batch size, got {planes.shape[0]} and {points.shape[0]}")
    if cube_scale <= 0:
        raise ValueError(f"cube_scale must be positive, got {cube_scale}")
    batch, _, channels, height, width = planes.shape
    num_points = points.shape[1]
    coords = points / cube_scale
    # (B, 3, N, 2): per plane, the two coordinates it is indexed by
    grid = torch.stack([coords[..., list(axes)] for axes in PLANE_AXES], dim=1)
    sampled = F.grid_sample(
        planes.reshape(batch * 3, channels, height, width),
        grid.reshape(batch * 3, 1, num_points, 2).to(planes.dtype),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )  # (B*3, C, 1, N)
    per_plane = sampled.reshape(batch, 3, channels, num_points).permute(0, 1, 3, 2)  # (B, 3, N, C)
    if reduce == "mean":
        return per_plane.mean(dim=1)
    if reduce == "sum":
        return per_plane.sum(dim=1)
    if reduce == "concat":
        return per_plane.permute(0, 2, 1, 3).reshape(batch, num_points, 3 * channels)
    raise ValueError(f"reduce must be 'mean', 'sum' or 'concat', got {reduce!r}")
