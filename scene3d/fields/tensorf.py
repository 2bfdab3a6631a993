"""TensoRF's vector-matrix (VM) factorised grid (Chen et al., ECCV 2022, Sec. 4.1 / Eq. 3) as a position encoding.

A feature grid ``G ∈ R^{C×X×Y×Z}`` is factorised into three plane-line pairs,

    G(x) = ⊕_m  M_m(x_{a_m}, x_{b_m}) ⊙ v_m(x_{c_m}),   (a, b, c) ∈ {(x, y, z), (x, z, y), (y, z, x)},

each plane ``M_m ∈ R^{C×R×R}`` and line ``v_m ∈ R^{C×R}`` read by (bi)linear interpolation; the three ``C``-vectors
are concatenated (``3C`` features; TensoRF then applies an appearance basis matrix, here the MLP that follows
plays that role). Interpolation is ``grid_sample`` (one fused kernel per call on a CPU, forward and backward), so
the encoding is pure torch on every device.

Deviation from TensoRF: one fixed resolution (TensoRF grows its grids during training and splits density and
appearance tensors); this module is the building block, the schedule belongs to the method using it.

Example:
    >>> import torch
    >>> TensorVMEncoding(components=4, resolution=32)(torch.rand(10, 3)).shape
    torch.Size([10, 12])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

PLANES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))
"""Axes (grid_sample x, y) of each plane; the matching line runs along the remaining axis."""
LINES: tuple[int, ...] = (2, 1, 0)


class TensorVMEncoding(nn.Module):
    """VM-factorised feature grid over ``[0, 1]³``: ``3 · components`` features per point.

    Args:
        components: ``C``, channels per plane-line pair.
        resolution: ``R``, plane and line resolution.
        init_scale: parameters start as ``init_scale · N(0, 1)`` (TensoRF's 0.1).
    """

    def __init__(self, *, components: int = 16, resolution: int = 128, init_scale: float = 0.1) -> None:
        super().__init__()
        if components < 1 or resolution < 2:
            raise ValueError(f"components must be >= 1 and resolution >= 2, got {components} and {resolution}")
        self.planes = nn.Parameter(init_scale * torch.randn(3, components, resolution, resolution))
        self.lines = nn.Parameter(init_scale * torch.randn(3, components, resolution, 1))
        self.out_dim = 3 * components

    def forward(self, x: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch D"]:
        """Encode points of ``[0, 1]³``."""
        if x.shape[-1] != 3:
            raise ValueError(f"x must have a last dimension of 3, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, 3) * 2.0 - 1.0
        n = flat.shape[0]
        plane_xy = torch.stack([flat[:, list(axes)] for axes in PLANES])[:, :, None, :]  # [3, N, 1, 2]
        line_t = flat[:, list(LINES)].T  # [3, N]
        line_xy = torch.stack([torch.zeros_like(line_t), line_t], dim=-1)[:, :, None, :]
        plane_feat = F.grid_sample(self.planes, plane_xy, mode="bilinear", align_corners=True)[..., 0]
        line_feat = F.grid_sample(self.lines, line_xy, mode="bilinear", align_corners=True)[..., 0]
        out = (plane_feat * line_feat).permute(2, 0, 1).reshape(n, self.out_dim)
        return out.reshape(*x.shape[:-1], self.out_dim)
