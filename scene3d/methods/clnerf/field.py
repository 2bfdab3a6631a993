"""CLNeRF's radiance field (official ``models/networks.py::NGPGv2``) on scene3d's shared field layer.

For a point ``x`` of the scene cube, a unit direction ``d`` and a scan id ``t``:

    h = MLP_σ([hash(x̂), g_t]),   σ = trunc_exp(h₀),   c = sigmoid(MLP_c([SH₄(d), h₁…h₁₅, a_t])),

with ``g_t ∈ ℝ^16`` the geometry embedding and ``a_t ∈ ℝ^48`` the appearance embedding of scan ``t`` (paper
Sec. 3.3). Both tables have one row per scan seen and grow by one row per scan (:class:`ScanEmbedding`); old rows
are kept. The hash grid is :class:`~scene3d.fields.hash_grid.HashGridEncoding` (tiny-cuda-nn on CUDA, torch on CPU)
with ``L = 16, F = 2, T = 2^19, N_min = 16`` and the growth ``b = exp(ln(2048·scale / 16) / 15)`` of the cube's
half side ``scale`` at paper scale; the heads are :class:`~scene3d.fields.radiance.RadianceField`'s.

Example:
    >>> import torch
    >>> f = CLNeRFField(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), CLNeRFFieldSpec(hash_levels=2, hash_log2_size=10,
    ...     hash_max_resolution=32, backend="torch"), num_scans=2)
    >>> out = f(torch.zeros(4, 3), torch.tensor([[0.0, 0, -1]]).expand(4, 3), torch.tensor([0, 1, 1, 0]))
    >>> out.density.shape, out.rgb.shape, f.num_scans
    (torch.Size([4]), torch.Size([4, 3]), 2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from scene3d.core.backends import Backend
from scene3d.fields.hash_grid import HashGridEncoding
from scene3d.fields.radiance import FieldOutputs, RadianceField


@dataclass(frozen=True)
class CLNeRFFieldSpec:
    """Sizes of the field (the official values are the defaults)."""

    hash_levels: int = 16
    hash_features: int = 2
    hash_log2_size: int = 19
    hash_base_resolution: int = 16
    hash_max_resolution: float | None = None
    """``N_max``; ``None`` uses the official ``2048 · scale`` (``scale`` = half side of the scene cube)."""
    density_hidden: int = 64
    density_layers: int = 1
    geo_feat_dim: int = 15
    """Geometry features to the colour head; the density MLP has ``1 + geo_feat_dim`` = 16 outputs (official)."""
    color_hidden: int = 64
    color_layers: int = 2
    appearance_dim: int = 48
    geometry_dim: int = 16
    backend: Backend = "auto"

    def signature(self) -> dict[str, Any]:
        """The sizes that must match for a checkpoint to load (everything but the backend)."""
        sig = asdict(self)
        sig.pop("backend")
        return sig


class ScanEmbedding(nn.Module):
    """A per-scan embedding table ``(num_scans, dim)`` that grows by rows and keeps the old ones.

    Rows start as ``N(0, 1)`` (``nn.Embedding``'s initialisation, as the official code). Growing keeps the
    ``Parameter`` object (its data is replaced), so an optimizer holding it stays valid; its optimizer state must be
    reset by the caller. Loading a state dict with another number of rows resizes the table first.
    """

    def __init__(self, num_scans: int, dim: int) -> None:
        super().__init__()
        if num_scans < 1 or dim < 1:
            raise ValueError(f"num_scans and dim must be >= 1, got {num_scans} and {dim}")
        self.weight = nn.Parameter(torch.randn(num_scans, dim))

    @property
    def num_scans(self) -> int:
        """Rows in the table."""
        return int(self.weight.shape[0])

    def forward(self, scan_ids: Int[Tensor, " S"]) -> Float[Tensor, "S D"]:
        """The rows of ``scan_ids``."""
        return self.weight[scan_ids]

    @torch.no_grad()
    def grow(self, num_scans: int, init: Literal["random", "copy_last"] = "random") -> None:
        """Add rows up to ``num_scans`` (``random``: ``N(0, 1)``; ``copy_last``: the last existing row)."""
        old = self.num_scans
        if num_scans < old:
            raise ValueError(f"an embedding table only grows: has {old} rows, asked for {num_scans}")
        if num_scans == old:
            return
        w = self.weight.data
        if init == "copy_last":
            new = w[-1:].expand(num_scans - old, -1).clone()
        else:
            new = torch.randn(num_scans - old, w.shape[1], device=w.device, dtype=w.dtype)
        self.weight.data = torch.cat([w, new])

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "weight")
        if isinstance(stored, Tensor) and stored.ndim == 2 and stored.shape[0] != self.num_scans:
            self.weight.data = torch.zeros(stored.shape[0], self.weight.shape[1], device=self.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def scene_cube(aabb: Float[Tensor, "2 3"]) -> tuple[Float[Tensor, "2 3"], float]:
    """The cube around a box (same centre, half side = the largest half extent) and its half side ``scale``."""
    aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
    centre = (aabb[0] + aabb[1]) / 2
    scale = float((aabb[1] - aabb[0]).max() / 2)
    if not scale > 0:
        raise ValueError(f"scene box must have a positive extent, got {aabb.tolist()}")
    return torch.stack([centre - scale, centre + scale]), scale


class CLNeRFField(nn.Module):
    """NGPGv2: hash grid, geometry and appearance embeddings per scan (module docstring).

    Args:
        aabb: the scene box; the field spans the cube around it (official ``[−scale, scale]³``).
        spec: sizes.
        num_scans: rows of the embedding tables.
    """

    def __init__(self, aabb: Float[Tensor, "2 3"], spec: CLNeRFFieldSpec, num_scans: int = 1) -> None:
        super().__init__()
        cube, scale = scene_cube(aabb)
        self.spec = spec
        self.scale = scale
        n_max = spec.hash_max_resolution if spec.hash_max_resolution is not None else 2048.0 * scale
        n_max = max(float(n_max), float(spec.hash_base_resolution))
        growth = 1.0 if spec.hash_levels == 1 else math.exp(math.log(n_max / spec.hash_base_resolution) / (spec.hash_levels - 1))
        encoding = HashGridEncoding(
            n_levels=spec.hash_levels, features_per_level=spec.hash_features, log2_hashmap_size=spec.hash_log2_size,
            base_resolution=spec.hash_base_resolution, per_level_scale=growth, backend=spec.backend,
        )  # fmt: skip
        self.radiance = RadianceField(
            cube, encoding, geo_feat_dim=spec.geo_feat_dim, density_hidden=spec.density_hidden,
            density_layers=spec.density_layers, color_hidden=spec.color_hidden, color_layers=spec.color_layers,
            sh_degree=3, density_extra_dim=spec.geometry_dim, color_extra_dim=spec.appearance_dim,
        )  # fmt: skip
        self.geometry_embedding = ScanEmbedding(num_scans, spec.geometry_dim)
        self.appearance_embedding = ScanEmbedding(num_scans, spec.appearance_dim)

    @property
    def num_scans(self) -> int:
        """Scans the embedding tables hold."""
        return self.appearance_embedding.num_scans

    def grow(self, num_scans: int, init: Literal["random", "copy_last"] = "random") -> None:
        """Grow both embedding tables to ``num_scans`` rows (old rows kept)."""
        self.geometry_embedding.grow(num_scans, init)
        self.appearance_embedding.grow(num_scans, init)

    def check_ids(self, scan_ids: Tensor) -> None:
        """Raise ``ValueError`` unless every id has a row in the embedding tables."""
        if scan_ids.numel() and (int(scan_ids.min()) < 0 or int(scan_ids.max()) >= self.num_scans):
            raise ValueError(f"scan ids must be in [0, {self.num_scans}), got [{int(scan_ids.min())}, {int(scan_ids.max())}]")

    def density(self, positions: Float[Tensor, "S 3"], scan_ids: Int[Tensor, " S"]) -> Float[Tensor, " S"]:
        """σ at world positions with the geometry embedding of each sample's scan."""
        self.check_ids(scan_ids)
        return self.radiance.density(positions, self.geometry_embedding(scan_ids))

    def forward(
        self, positions: Float[Tensor, "S 3"], directions: Float[Tensor, "S 3"], scan_ids: Int[Tensor, " S"]
    ) -> FieldOutputs:
        """σ and colour of samples, each with its scan's embeddings."""
        self.check_ids(scan_ids)
        return self.radiance(
            positions, directions, self.geometry_embedding(scan_ids), self.appearance_embedding(scan_ids)
        )
