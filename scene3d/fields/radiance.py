"""A radiance field from reusable parts: a position encoding, a density head and a colour head.

The layout is Instant-NGP's (and nerfacto's): for a world point ``x`` in the scene box and a view direction ``d``,

    h = MLP_σ([enc(x̂), e_σ]),   σ = exp(h₀) (truncated gradient),   c = sigmoid(MLP_c([SH(d), h₁…, e_c])),

with ``x̂ ∈ [0, 1]³`` the point normalised to the box and ``e_σ``, ``e_c`` optional per-sample extra inputs
(CLNeRF's per-task geometry and appearance embeddings, an appearance code per image, …). Outside the box σ = 0.
The encoding is any module mapping ``[0, 1]³`` to features with an ``out_dim``
(:class:`~scene3d.fields.hash_grid.HashGridEncoding`, :class:`~scene3d.fields.tensorf.TensorVMEncoding`).

Example:
    >>> import torch
    >>> from scene3d.fields.hash_grid import HashGridEncoding
    >>> enc = HashGridEncoding(n_levels=4, log2_hashmap_size=12, max_resolution=64, backend="torch")
    >>> field = RadianceField(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), enc, color_extra_dim=8)
    >>> out = field(torch.zeros(5, 3), torch.tensor([[0.0, 0, 1]]).expand(5, 3), color_extra=torch.zeros(5, 8))
    >>> out.density.shape, out.rgb.shape
    (torch.Size([5]), torch.Size([5, 3]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from scene3d.fields.activations import trunc_exp
from scene3d.fields.encodings import sh_dim, spherical_harmonics
from scene3d.fields.mlp import MLP


@runtime_checkable
class PositionEncoding(Protocol):
    """A module encoding points of ``[0, 1]³`` as ``out_dim`` features."""

    out_dim: int

    def __call__(self, x: Tensor) -> Tensor: ...


@dataclass
class FieldOutputs:
    """What a radiance field returns per sample."""

    density: Float[Tensor, " S"]
    """σ ≥ 0 (0 outside the scene box)."""
    rgb: Float[Tensor, "S 3"]
    """Colour in [0, 1]."""
    features: Float[Tensor, "S G"]
    """Geometry features passed to the colour head."""


class RadianceField(nn.Module):
    """σ(x) and c(x, d) with an encoding, a density MLP and a colour MLP (see the module docstring).

    Args:
        aabb: the scene box ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` that the encoding spans.
        encoding: position encoding of ``[0, 1]³`` (a :class:`PositionEncoding`).
        geo_feat_dim: geometry features passed from the density head to the colour head.
        density_hidden, density_layers: width and hidden layers of the density MLP.
        color_hidden, color_layers: width and hidden layers of the colour MLP.
        sh_degree: spherical-harmonics degree of the direction encoding (3: 16 values).
        density_extra_dim: size of the optional per-sample extra input of the density MLP.
        color_extra_dim: size of the optional per-sample extra input of the colour MLP.
        density_bias: initial bias of the density pre-activation (σ starts near ``exp(density_bias)``).
        density_blob_scale: scale ``a`` of a fixed "density blob" added to the pre-activation,
            ``a · (1 − |x − c| / std)`` with ``c`` the box centre (Magic3D's and threestudio's ``blob_magic3d``):
            object-centric text-to-3D starts from a dense ball instead of empty space. 0 (default): none.
        density_blob_std: the blob's radius ``std`` in world units.
        with_color: build the colour head; ``False`` leaves a density field with geometry features only
            (:meth:`geometry`, :meth:`density`), for heads of other kinds on the shared density (QNeRF's query
            heads); :meth:`color` and :meth:`forward` then raise.
    """

    def __init__(
        self,
        aabb: Float[Tensor, "2 3"],
        encoding: nn.Module,
        *,
        geo_feat_dim: int = 15,
        density_hidden: int = 64,
        density_layers: int = 1,
        color_hidden: int = 64,
        color_layers: int = 2,
        sh_degree: int = 3,
        density_extra_dim: int = 0,
        color_extra_dim: int = 0,
        density_bias: float = 0.0,
        density_blob_scale: float = 0.0,
        density_blob_std: float = 0.5,
        with_color: bool = True,
    ) -> None:
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
        if not bool((aabb[1] > aabb[0]).all()):
            raise ValueError(f"aabb must be [[min], [max]] with max > min, got {aabb.tolist()}")
        if not isinstance(encoding, PositionEncoding):
            raise ValueError(f"encoding must be a module with an out_dim, got {type(encoding).__name__}")
        if density_blob_std <= 0:
            raise ValueError(f"density_blob_std must be positive, got {density_blob_std}")
        self.register_buffer("aabb", aabb)
        self.encoding = encoding
        self.density_blob_scale = density_blob_scale
        self.density_blob_std = density_blob_std
        self.geo_feat_dim = geo_feat_dim
        self.sh_degree = sh_degree
        self.density_extra_dim = density_extra_dim
        self.color_extra_dim = color_extra_dim
        self.density_mlp = MLP(encoding.out_dim + density_extra_dim, density_hidden, density_layers, 1 + geo_feat_dim)
        self.color_mlp: MLP | None = None
        if with_color:
            self.color_mlp = MLP(
                sh_dim(sh_degree) + geo_feat_dim + color_extra_dim, color_hidden, color_layers, 3, out_activation="sigmoid"
            )
        with torch.no_grad():
            last = self.density_mlp.net[-2]
            assert isinstance(last, nn.Linear)
            if last.bias is not None:
                last.bias[0] = density_bias

    def normalize(self, positions: Float[Tensor, "S 3"]) -> tuple[Float[Tensor, "S 3"], Bool[Tensor, " S"]]:
        """Positions mapped to ``[0, 1]³`` over the box, and whether each lies inside it."""
        unit = (positions - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((unit >= 0.0) & (unit <= 1.0)).all(-1)
        return unit.clamp(0.0, 1.0), inside

    def _check_extra(self, extra: Tensor | None, dim: int, n: int, name: str) -> None:
        if dim == 0:
            if extra is not None:
                raise ValueError(f"{name} was given but the field was built with {name}_dim=0")
        elif extra is None or extra.shape != (n, dim):
            got = None if extra is None else tuple(extra.shape)
            raise ValueError(f"{name} must have shape ({n}, {dim}), got {got}")

    def geometry(
        self, positions: Float[Tensor, "S 3"], density_extra: Float[Tensor, "S E"] | None = None
    ) -> tuple[Float[Tensor, " S"], Float[Tensor, "S G"]]:
        """Density σ and geometry features at world positions."""
        self._check_extra(density_extra, self.density_extra_dim, positions.shape[0], "density_extra")
        unit, inside = self.normalize(positions)
        h = self.encoding(unit)
        if density_extra is not None:
            h = torch.cat([h, density_extra], dim=-1)
        h = self.density_mlp(h)
        pre = h[:, 0]
        if self.density_blob_scale != 0.0:
            radius = (positions - self.aabb.mean(0)).norm(dim=-1)
            pre = pre + self.density_blob_scale * (1.0 - radius / self.density_blob_std)
        density = trunc_exp(pre) * inside
        return density, h[:, 1:]

    def density(
        self, positions: Float[Tensor, "S 3"], density_extra: Float[Tensor, "S E"] | None = None
    ) -> Float[Tensor, " S"]:
        """Density σ at world positions (what occupancy grids and mesh extraction query)."""
        return self.geometry(positions, density_extra)[0]

    def color(
        self,
        directions: Float[Tensor, "S 3"],
        features: Float[Tensor, "S G"],
        color_extra: Float[Tensor, "S E"] | None = None,
    ) -> Float[Tensor, "S 3"]:
        """Colour for unit view directions and geometry features."""
        if self.color_mlp is None:
            raise ValueError("this field was built with with_color=False: it has no colour head")
        self._check_extra(color_extra, self.color_extra_dim, directions.shape[0], "color_extra")
        parts = [spherical_harmonics(directions, self.sh_degree), features]
        if color_extra is not None:
            parts.append(color_extra)
        return self.color_mlp(torch.cat(parts, dim=-1))

    def forward(
        self,
        positions: Float[Tensor, "S 3"],
        directions: Float[Tensor, "S 3"],
        density_extra: Float[Tensor, "S E"] | None = None,
        color_extra: Float[Tensor, "S F"] | None = None,
    ) -> FieldOutputs:
        """Density and colour at positions seen from directions."""
        density, features = self.geometry(positions, density_extra)
        return FieldOutputs(density=density, rgb=self.color(directions, features, color_extra), features=features)

    def density_gradient(
        self, positions: Float[Tensor, "S 3"], density_extra: Float[Tensor, "S E"] | None = None
    ) -> tuple[Float[Tensor, " S"], Float[Tensor, "S 3"]]:
        """Density and its spatial gradient ``∇σ`` (autograd; works inside ``torch.no_grad``).

        Normals are ``−∇σ / |∇σ|``.
        """
        with torch.enable_grad():
            x = positions.detach().requires_grad_(True)
            density = self.density(x, density_extra)
            (grad,) = torch.autograd.grad(density.sum(), x)
        return density.detach(), grad
