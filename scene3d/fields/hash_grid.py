"""Multiresolution hash encoding (Instant-NGP, Müller et al. 2022, Sec. 3), tiny-cuda-nn or pure torch.

A point ``x ∈ [0, 1]³`` is encoded at ``L`` grid levels of growing resolution. Level ``l`` has the scale
(tiny-cuda-nn's ``grid_scale``; Eq. 2 and 3 of the paper up to tcnn's ``−1`` / ``+0.5`` alignment)

    s_l = N_min · b^l − 1,   b = exp((ln N_max − ln N_min) / (L − 1)),   res_l = ⌈s_l⌉ + 1,

and a table of ``T_l = min(res_l³ rounded up to 8, 2^log2_T)`` feature vectors of ``F`` entries. The point's
grid position ``p = s_l x + 0.5`` selects the 8 corners ``⌊p⌋ + {0, 1}³``; a corner's table index is the dense
index ``c_x + c_y res_l + c_z res_l²`` where the level fits its table, else the spatial hash (Eq. 4)
``(c_x · 1 ⊕ c_y · 2654435761 ⊕ c_z · 805459861) mod T``. The level's output is the trilinear interpolation of
the 8 corner features; the encoding concatenates the levels (``L · F`` values, level-major).

The parameter layout (one flat vector, level offsets as above) is tiny-cuda-nn's, so a :class:`HashGridEncoding`
checkpoint loads on either backend, and :func:`hash_grid_encode` (the torch twin) reproduces tcnn's forward and
gradients (``tests/fields/test_hash_grid.py``, ``gpu`` marker).

CPU speed: the corners are kept as separate contiguous ``[level, point]`` blocks (elementwise operations on them
are many times faster than broadcasts over a tiny ``[..., 8]`` dimension), corner indices are sums (dense) or
XORs (hashed) of per-axis terms, features are gathered as one 8-byte element per corner (``F = 2`` viewed as
``complex64``), indices and weights are computed without autograd, and the backward is one ``index_add_`` per
corner into the table.

Example:
    >>> import torch
    >>> enc = HashGridEncoding(n_levels=4, log2_hashmap_size=12, base_resolution=8, max_resolution=64)
    >>> enc(torch.rand(10, 3)).shape
    torch.Size([10, 8])
    >>> # CLNeRF / ngp_pl: L=16, F=2, T=2^19, N_min=16, growth from the scene scale
    >>> b = growth_factor(16, 2048 * 0.5, 16)
    >>> HashGridEncoding(per_level_scale=b, backend="torch").layout.resolutions[-1]
    1025
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.core.backends import Backend, check_backend, use_cuda_lib

PRIMES: tuple[int, int, int] = (1, 2654435761, 805459861)
"""tiny-cuda-nn's ``coherent_prime_hash`` factors for x, y, z."""


def growth_factor(base_resolution: float | int, max_resolution: float | int, n_levels: int) -> float:
    """The per-level scale ``b = exp((ln N_max − ln N_min) / (L − 1))`` (paper Eq. 3); 1 for a single level."""
    if base_resolution <= 0 or max_resolution < base_resolution:
        raise ValueError(
            f"need 0 < base_resolution <= max_resolution, got {base_resolution} and {max_resolution}"
        )
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    return 1.0 if n_levels == 1 else math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))


@dataclass(frozen=True)
class HashGridLayout:
    """Per-level scales, resolutions and table sizes/offsets, exactly as tiny-cuda-nn lays out its parameters."""

    n_levels: int
    features_per_level: int
    log2_hashmap_size: int
    base_resolution: int
    per_level_scale: float
    scales: tuple[float, ...]
    """``s_l`` (float32 values, as tcnn computes them)."""
    resolutions: tuple[int, ...]
    """``res_l = ⌈s_l⌉ + 1``."""
    sizes: tuple[int, ...]
    """Table entries of each level."""
    offsets: tuple[int, ...]
    """First table entry of each level, plus the total at the end (``n_levels + 1`` values)."""

    @classmethod
    def create(
        cls, n_levels: int, features_per_level: int, log2_hashmap_size: int, base_resolution: int, per_level_scale: float | int
    ) -> HashGridLayout:
        """Compute the layout; validates every argument."""
        if n_levels < 1:
            raise ValueError(f"n_levels must be >= 1, got {n_levels}")
        if features_per_level not in (1, 2, 4, 8):
            raise ValueError(f"features_per_level must be 1, 2, 4 or 8 (as tiny-cuda-nn), got {features_per_level}")
        if not 4 <= log2_hashmap_size <= 30:
            raise ValueError(f"log2_hashmap_size must be in [4, 30], got {log2_hashmap_size}")
        if base_resolution < 2:
            raise ValueError(f"base_resolution must be >= 2, got {base_resolution}")
        if per_level_scale < 1.0:
            raise ValueError(f"per_level_scale must be >= 1, got {per_level_scale}")
        log2_scale = np.float32(np.log2(np.float32(per_level_scale)))
        hashmap = 1 << log2_hashmap_size
        scales, resolutions, sizes, offsets = [], [], [], [0]
        for level in range(n_levels):
            scale = np.float32(np.exp2(np.float32(level) * log2_scale) * np.float32(base_resolution) - np.float32(1.0))
            res = int(math.ceil(float(scale))) + 1
            size = min(-(-(res**3) // 8) * 8, hashmap)
            scales.append(float(scale))
            resolutions.append(res)
            sizes.append(size)
            offsets.append(offsets[-1] + size)
        return cls(
            n_levels, features_per_level, log2_hashmap_size, base_resolution, float(per_level_scale),
            tuple(scales), tuple(resolutions), tuple(sizes), tuple(offsets),
        )  # fmt: skip

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector: table entries × features."""
        return self.offsets[-1] * self.features_per_level

    @property
    def out_dim(self) -> int:
        """``L · F``."""
        return self.n_levels * self.features_per_level

    def is_dense(self, level: int) -> bool:
        """Whether the level indexes its table densely (no hashing, no collisions)."""
        return self.sizes[level] >= self.resolutions[level] ** 3

    def tcnn_config(self) -> dict[str, Any]:
        """The tiny-cuda-nn ``encoding_config`` with this layout."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": "Linear",
        }


@dataclass(frozen=True)
class _Constants:
    """Per-device constants of a layout. Dense levels always come first (resolutions grow with the level)."""

    n_dense: int
    scales: Tensor  # [L] float32
    dense_res: Tensor  # [Ld, 1] int64
    dense_offsets: Tensor  # [Ld, 1]
    dense_ends: Tensor  # [Ld, 1]: offset + size; tcnn's `index % size` wraps the top border back
    dense_sizes: Tensor  # [Ld, 1]
    hash_offsets: Tensor  # [Lh, 1]


@lru_cache(maxsize=64)
def _constants(layout: HashGridLayout, device: torch.device) -> _Constants:
    dense = [lv for lv in range(layout.n_levels) if layout.is_dense(lv)]
    assert dense == list(range(len(dense))), "dense levels must precede hashed ones"

    def column(values: list[int]) -> Tensor:
        return torch.tensor(values, dtype=torch.int64, device=device).view(-1, 1)

    hashed = range(len(dense), layout.n_levels)
    return _Constants(
        n_dense=len(dense),
        scales=torch.tensor(layout.scales, dtype=torch.float32, device=device),
        dense_res=column([layout.resolutions[lv] for lv in dense]),
        dense_offsets=column([layout.offsets[lv] for lv in dense]),
        dense_ends=column([layout.offsets[lv] + layout.sizes[lv] for lv in dense]),
        dense_sizes=column([layout.sizes[lv] for lv in dense]),
        hash_offsets=column([layout.offsets[lv] for lv in hashed]),
    )


def _corner_terms(lo: tuple[Tensor, ...], hi: tuple[Tensor, ...], corner: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pick the x, y, z terms of corner ``corner`` (bit ``d`` set = upper corner along axis ``d``)."""
    return (hi[0] if corner & 1 else lo[0]), (hi[1] if corner & 2 else lo[1]), (hi[2] if corner & 4 else lo[2])


@dataclass
class _Corners:
    """Table rows and trilinear weights of the 8 corners, as lists of contiguous ``[levels, N]`` blocks.

    A CPU runs elementwise operations on contiguous blocks many times faster than broadcasts over tiny inner
    dimensions (``[N, L, 8]``), so nothing is stacked: ``index[g][k]`` holds corner ``k`` of level group ``g``
    (dense levels first, then hashed ones; level offsets included) and ``weights[k]`` covers all levels.
    """

    groups: list[slice]
    index: list[list[Tensor]]
    weights: list[Tensor]
    frac: Tensor  # [3, L, N] fractional grid positions
    scales: Tensor  # [L]


def _corners(x: Tensor, layout: HashGridLayout) -> _Corners:
    const = _constants(layout, x.device)
    mask = (1 << layout.log2_hashmap_size) - 1
    pos = x.T.contiguous()[:, None, :] * const.scales[None, :, None].to(x.dtype) + 0.5  # [3, L, N]
    floor = pos.floor()
    frac = pos - floor
    cell = floor.to(torch.int64)
    nd = const.n_dense
    groups, index = [], []
    if nd:
        # dense index c_x + c_y res + c_z res² (+ level offset) from per-axis terms of the lower/upper corners;
        # tcnn's `index % size` only bites at the top border, where one subtraction does it
        c = cell[:, :nd]
        res, res2 = const.dense_res, const.dense_res * const.dense_res
        lo = (c[0] + const.dense_offsets, c[1] * res, c[2] * res2)
        hi = (lo[0] + 1, lo[1] + res, lo[2] + res2)
        dense = []
        for k in range(8):
            a, b, d = _corner_terms(lo, hi, k)
            i = a + b + d
            dense.append(torch.where(i >= const.dense_ends, i - const.dense_sizes, i))
        groups.append(slice(0, nd))
        index.append(dense)
    if nd < layout.n_levels:
        # spatial hash (c_x·1 ⊕ c_y·π₂ ⊕ c_z·π₃) mod T; products mod T are exact in int64
        c = cell[:, nd:]
        lo = (c[0], c[1] * PRIMES[1], c[2] * PRIMES[2])
        hi = tuple((lo[d] + PRIMES[d]) & mask for d in range(3))
        lo = tuple(t & mask for t in lo)
        hashed = []
        for k in range(8):
            a, b, d = _corner_terms(lo, hi, k)
            hashed.append((a ^ b ^ d) + const.hash_offsets)
        groups.append(slice(nd, layout.n_levels))
        index.append(hashed)
    lower = 1.0 - frac
    wxy = [(frac[0] if k & 1 else lower[0]) * (frac[1] if k & 2 else lower[1]) for k in range(4)]
    weights = [wxy[k & 3] * (frac[2] if k & 4 else lower[2]) for k in range(8)]
    return _Corners(groups, index, weights, frac, const.scales.to(x.dtype))


_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _table(params: Tensor, features: int) -> Tensor:
    """The parameter vector as gatherable rows: ``F = 2`` → one complex number per entry (one 8-byte gather)."""
    if features % 2 == 0:
        table = params.view(_COMPLEX[params.dtype]).view(-1, features // 2)
        return table[:, 0] if features == 2 else table
    return params.view(-1, features)


def _gather(table: Tensor, index: Tensor, features: int) -> Tensor:
    """Rows of ``table`` (from :func:`_table`) at ``index [l, N]`` as real ``[l, N, F]``."""
    rows = table.index_select(0, index.reshape(-1))
    rows = torch.view_as_real(rows) if rows.is_complex() else rows
    return rows.reshape(*index.shape, features)


def _as_rows(src: Tensor, features: int) -> Tensor:
    """Real ``[..., F]`` values as rows matching :func:`_table` (the inverse view of :func:`_gather`)."""
    src = src.reshape(-1, features)
    if features % 2 == 0:
        src = src.view(_COMPLEX[src.dtype])
        return src[:, 0] if features == 2 else src
    return src


class _HashGridInterpolation(torch.autograd.Function):
    """``Σ_corners w · table[index]`` per level; gradients for the table and (when asked) for ``x``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, params: Tensor, layout: HashGridLayout) -> Tensor:  # type: ignore[override]
        features = layout.features_per_level
        n = x.shape[0]
        with torch.no_grad():
            corners = _corners(x, layout)
            table = _table(params, features)
            out = x.new_zeros(layout.n_levels, n, features)
            for levels, index in zip(corners.groups, corners.index):
                block = out[levels]
                for k in range(8):
                    block.addcmul_(_gather(table, index[k], features), corners.weights[k][levels, :, None])
        ctx.layout = layout
        ctx.corners = corners
        ctx.save_for_backward(params)
        return out.permute(1, 0, 2).reshape(n, layout.out_dim)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        (params,) = ctx.saved_tensors
        layout: HashGridLayout = ctx.layout
        corners: _Corners = ctx.corners
        features = layout.features_per_level
        n = grad_out.shape[0]
        grad = grad_out.reshape(n, layout.n_levels, features).permute(1, 0, 2).contiguous()  # [L, N, F]
        grad_params = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_params = torch.zeros_like(params)
            grad_table = _table(grad_params, features)
            for levels, index in zip(corners.groups, corners.index):
                for k in range(8):
                    src = corners.weights[k][levels, :, None] * grad[levels]
                    grad_table.index_add_(0, index[k].reshape(-1), _as_rows(src, features))
        if ctx.needs_input_grad[0]:
            table = _table(params, features)
            # <corner feature, grad> per corner: [L, N] each
            dots = [torch.cat([(_gather(table, index[k], features) * grad[levels]).sum(-1)
                               for levels, index in zip(corners.groups, corners.index)]) for k in range(8)]  # fmt: skip
            frac = corners.frac
            lower = 1.0 - frac
            per_axis = []
            for axis in range(3):
                total = torch.zeros_like(dots[0])
                for k in range(8):
                    # ∂w_k/∂p_axis: ±1 along `axis` times the other two axes' linear weights
                    term = dots[k] if k & (1 << axis) else -dots[k]
                    for other in range(3):
                        if other != axis:
                            term = term * (frac[other] if k & (1 << other) else lower[other])
                    total = total + term
                per_axis.append((total * corners.scales[:, None]).sum(0))  # ∂p/∂x = s_l, summed over levels
            grad_x = torch.stack(per_axis, dim=-1)
        return grad_x, grad_params, None


def hash_grid_encode(
    x: Float[Tensor, "N 3"], params: Float[Tensor, " P"], layout: HashGridLayout
) -> Float[Tensor, "N D"]:
    """Encode points ``x ∈ [0, 1]³`` with the hash grid ``params`` (tcnn layout): the pure-torch twin of tcnn.

    Differentiable in ``params`` and in ``x`` (first order). Points outside ``[0, 1]³`` are clamped onto it (tcnn
    wraps their grid coordinates instead); callers mask them.
    """
    if x.ndim != 2 or x.shape[-1] != 3:
        raise ValueError(f"x must have shape (N, 3), got {tuple(x.shape)}")
    if params.shape != (layout.n_params,):
        raise ValueError(f"params must have shape ({layout.n_params},) for this layout, got {tuple(params.shape)}")
    if x.shape[0] == 0:
        return x.new_zeros(0, layout.out_dim) + params.sum() * 0
    if params.dtype not in _COMPLEX:
        raise ValueError(f"params must be float32 or float64, got {params.dtype}")
    # tcnn wraps coordinates outside [0, 1] into other cells; the twin clamps them (callers keep x inside)
    return _HashGridInterpolation.apply(x.to(params.dtype).clamp(0.0, 1.0), params, layout)


class HashGridEncoding(nn.Module):
    """Instant-NGP hash encoding as a module: tiny-cuda-nn on CUDA, :func:`hash_grid_encode` elsewhere.

    Args:
        n_levels: ``L``.
        features_per_level: ``F`` (1, 2, 4 or 8).
        log2_hashmap_size: ``log2 T``.
        base_resolution: ``N_min``.
        max_resolution: ``N_max``, used when ``per_level_scale`` is not given.
        per_level_scale: the growth ``b`` directly (e.g. CLNeRF's ``exp(ln(2048·scale/16)/15)``).
        init_scale: parameters start uniform in ``[−init_scale, init_scale]`` (tcnn's ``1e-4``).
        backend: ``"auto"``, ``"cuda-lib"`` (tiny-cuda-nn) or ``"torch"``.
    """

    def __init__(
        self,
        *,
        n_levels: int = 16,
        features_per_level: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 2048,
        per_level_scale: float | int | None = None,
        init_scale: float | int = 1e-4,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        check_backend(backend)
        if per_level_scale is None:
            per_level_scale = growth_factor(base_resolution, max_resolution, n_levels)
        self.layout = HashGridLayout.create(
            n_levels, features_per_level, log2_hashmap_size, base_resolution, per_level_scale
        )
        self.backend = backend
        self.params = nn.Parameter(torch.empty(self.layout.n_params).uniform_(-init_scale, init_scale))
        self._tcnn: Any = None  # the tiny-cuda-nn module, built on first CUDA call; not a registered submodule

    @property
    def out_dim(self) -> int:
        """Output features per point, ``L · F``."""
        return self.layout.out_dim

    def forward(self, x: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch D"]:
        """Encode ``x ∈ [0, 1]³``."""
        if x.shape[-1] != 3:
            raise ValueError(f"x must have a last dimension of 3, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, 3)
        if use_cuda_lib(self.backend, flat.device, "tinycudann"):
            out = self._tcnn_encode(flat)
        else:
            out = hash_grid_encode(flat, self.params, self.layout)
        return out.reshape(*x.shape[:-1], self.out_dim)

    def _tcnn_encode(self, x: Tensor) -> Tensor:
        if self._tcnn is None:
            import tinycudann as tcnn

            module = tcnn.Encoding(3, self.layout.tcnn_config(), dtype=torch.float32)
            object.__setattr__(self, "_tcnn", module)
        # tcnn's module reads `self.params`; hand it ours so gradients, optimisers and checkpoints see one tensor
        self._tcnn.params = self.params
        return self._tcnn(x.float().contiguous()).float()

    def extra_repr(self) -> str:
        lay = self.layout
        return (
            f"L={lay.n_levels}, F={lay.features_per_level}, T=2^{lay.log2_hashmap_size}, "
            f"N_min={lay.base_resolution}, b={lay.per_level_scale:.4f}, res={lay.resolutions[0]}..{lay.resolutions[-1]}, "
            f"backend={self.backend}"
        )
