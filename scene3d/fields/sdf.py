"""A signed distance field with a colour branch, on any position encoding (NeuS's geometry, a mesh's texture).

For a world point ``x`` in the scene box,

    [f̃, h] = MLP_f(enc(x̂)),   f(x) = f̃ + b(x),   c(x) = sigmoid(MLP_c(h)),

with ``x̂ ∈ [0, 1]³`` the point normalised to the box, ``h`` the geometry features and ``b`` an analytic base shape
(threestudio's ``sdf_bias``; here a sphere ``|x − o| − r`` or nothing), so that an untrained field is already a
valid SDF whose zero level set is that sphere. Inside is ``f < 0``. The colour depends on position only (a diffuse
albedo): the same field then textures a mesh, which has no view direction to offer at a texel.

The spatial gradient ``∇f`` (normals, the eikonal term) is taken by finite differences on the tetrahedron stencil
``k ∈ {(1,−1,−1), (−1,−1,1), (−1,1,−1), (1,1,1)}``::

    ∇f(x) ≈ Σ_k k · f(x + ε k) / (4 ε),

four field evaluations, exact for linear ``f`` (Instant-NSR's and threestudio's choice for hash-grid SDFs: it
needs no double backward through the encoding, and ``ε`` of about a finest-level cell keeps it smooth).

Example:
    >>> import torch
    >>> from scene3d.fields.hash_grid import HashGridEncoding
    >>> enc = HashGridEncoding(n_levels=4, log2_hashmap_size=12, max_resolution=64, backend="torch")
    >>> field = SDFField(torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), enc, sphere_radius=0.5)
    >>> sdf, features = field.sdf_and_features(torch.zeros(3, 3))
    >>> bool((sdf < 0).all()), tuple(field.color(features).shape)
    (True, (3, 3))
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from scene3d.fields.mlp import MLP
from scene3d.fields.radiance import PositionEncoding

_STENCIL = torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, 1.0, 1.0]])


class SDFField(nn.Module):
    """Signed distance and albedo from an encoding, an SDF MLP and a colour MLP (see the module docstring).

    Args:
        aabb: the box ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` the encoding spans.
        encoding: position encoding of ``[0, 1]³``.
        geo_feat_dim: geometry features passed to the colour head.
        hidden, layers: width and hidden layers of the SDF MLP.
        color_hidden, color_layers: width and hidden layers of the colour MLP.
        sphere_radius: radius of the base sphere ``b(x) = |x − centre| − r`` (``None``: no base shape).
        sphere_center: its centre (default: the box centre).
        fd_epsilon: finite-difference step of :meth:`gradient`, in world units.
    """

    def __init__(
        self,
        aabb: Float[Tensor, "2 3"],
        encoding: nn.Module,
        *,
        geo_feat_dim: int = 15,
        hidden: int = 64,
        layers: int = 1,
        color_hidden: int = 64,
        color_layers: int = 1,
        sphere_radius: float | None = 0.5,
        sphere_center: tuple[float, float, float] | None = None,
        fd_epsilon: float = 1e-2,
    ) -> None:
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
        if not bool((aabb[1] > aabb[0]).all()):
            raise ValueError(f"aabb must be [[min], [max]] with max > min, got {aabb.tolist()}")
        if not isinstance(encoding, PositionEncoding):
            raise ValueError(f"encoding must be a module with an out_dim, got {type(encoding).__name__}")
        if fd_epsilon <= 0:
            raise ValueError(f"fd_epsilon must be positive, got {fd_epsilon}")
        self.register_buffer("aabb", aabb)
        center = aabb.mean(0) if sphere_center is None else torch.tensor(sphere_center, dtype=torch.float32)
        self.register_buffer("sphere_center", center)
        self.sphere_radius = sphere_radius
        self.fd_epsilon = fd_epsilon
        self.encoding = encoding
        self.geo_feat_dim = geo_feat_dim
        self.sdf_mlp = MLP(encoding.out_dim, hidden, layers, 1 + geo_feat_dim)
        self.color_mlp = MLP(geo_feat_dim, color_hidden, color_layers, 3, out_activation="sigmoid")
        with torch.no_grad():
            # start from the base shape exactly: the SDF output's last layer is zero
            last = self.sdf_mlp.net[-2]
            assert isinstance(last, nn.Linear)
            last.weight[0].zero_()
            if last.bias is not None:
                last.bias[0] = 0.0

    def normalize(self, positions: Float[Tensor, "S 3"]) -> tuple[Float[Tensor, "S 3"], Bool[Tensor, " S"]]:
        """Positions mapped to ``[0, 1]³`` over the box (clamped), and whether each lies inside it."""
        unit = (positions - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((unit >= 0.0) & (unit <= 1.0)).all(-1)
        return unit.clamp(0.0, 1.0), inside

    def base(self, positions: Float[Tensor, "S 3"]) -> Float[Tensor, " S"]:
        """The analytic base shape ``b(x)``."""
        if self.sphere_radius is None:
            return positions.new_zeros(positions.shape[0])
        return (positions - self.sphere_center).norm(dim=-1) - self.sphere_radius

    def sdf_and_features(self, positions: Float[Tensor, "S 3"]) -> tuple[Float[Tensor, " S"], Float[Tensor, "S G"]]:
        """``f(x)`` and the geometry features ``h``."""
        unit, _ = self.normalize(positions)
        h = self.sdf_mlp(self.encoding(unit))
        return h[:, 0] + self.base(positions), h[:, 1:]

    def sdf(self, positions: Float[Tensor, "S 3"]) -> Float[Tensor, " S"]:
        """``f(x)``."""
        return self.sdf_and_features(positions)[0]

    def color(self, features: Float[Tensor, "S G"]) -> Float[Tensor, "S 3"]:
        """Albedo in ``[0, 1]`` from geometry features."""
        return self.color_mlp(features)

    def albedo(self, positions: Float[Tensor, "S 3"]) -> Float[Tensor, "S 3"]:
        """Albedo at world positions (what a mesh's texture samples)."""
        return self.color(self.sdf_and_features(positions)[1])

    def gradient(self, positions: Float[Tensor, "S 3"]) -> Float[Tensor, "S 3"]:
        """``∇f`` by the four-point tetrahedron stencil (module docstring); differentiable in the parameters."""
        eps = self.fd_epsilon
        stencil = _STENCIL.to(positions)
        offsets = (positions[:, None, :] + eps * stencil[None]).reshape(-1, 3)
        values = self.sdf(offsets).reshape(-1, 4, 1)
        return (values * stencil[None]).sum(1) / (4.0 * eps)
