"""Direction and low-frequency encodings: real spherical harmonics and sinusoidal (NeRF) encodings.

Both are cheap elementwise maps and run in torch on every device.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)  # fmt: skip


def sh_dim(degree: int) -> int:
    """Number of real SH coefficients up to ``degree``: ``(degree + 1)²``."""
    return (degree + 1) ** 2


def spherical_harmonics(directions: Float[Tensor, "*batch 3"], degree: int) -> Float[Tensor, "*batch C"]:
    """Real spherical harmonics ``Y_ℓm(d)`` for ``ℓ ≤ degree ≤ 3`` of unit directions (3DGS / Plenoxels basis).

    ``degree = 3`` (16 values) is Instant-NGP's direction encoding (tiny-cuda-nn calls it ``degree: 4``).

    Example:
        >>> import torch
        >>> spherical_harmonics(torch.tensor([[0.0, 0.0, 1.0]]), 1)
        tensor([[ 0.2821, -0.0000,  0.4886, -0.0000]])
    """
    if not 0 <= degree <= 3:
        raise ValueError(f"degree must be in [0, 3], got {degree}")
    if directions.shape[-1] != 3:
        raise ValueError(f"directions must have a last dimension of 3, got shape {tuple(directions.shape)}")
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [
            SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy),
        ]  # fmt: skip
        if degree >= 3:
            out += [
                SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy),
            ]  # fmt: skip
    return torch.stack(out, dim=-1)


def frequency_encoding(
    x: Float[Tensor, "*batch D"], n_frequencies: int, *, include_input: bool = True
) -> Float[Tensor, "*batch E"]:
    """NeRF's positional encoding ``(x, sin(2^k π x), cos(2^k π x))_{k < n_frequencies}`` (Mildenhall et al., Eq. 4).

    Example:
        >>> import torch
        >>> frequency_encoding(torch.zeros(2, 3), 4).shape
        torch.Size([2, 27])
    """
    if n_frequencies < 0:
        raise ValueError(f"n_frequencies must be >= 0, got {n_frequencies}")
    freqs = torch.pi * 2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)
    scaled = (x[..., None] * freqs).flatten(-2)
    parts = [x] if include_input else []
    return torch.cat(parts + [torch.sin(scaled), torch.cos(scaled)], dim=-1)
