"""Hand-offs between DreamPolish's geometry stages that keep the shape: NeRF → NeuS → DMTet.

DreamPolish builds geometry progressively, NeRF → NeuS → DMTet (Fig. 2); each stage starts from the previous
one's shape. The paper does not say how (no code was released); the hand-offs here follow threestudio's
conversions (DreamCraft3D / Magic3D), made explicit:

**NeRF → NeuS** (:func:`density_to_sdf`). The density field's surface is its iso-surface ``σ = τ``, with ``τ`` the
median density at the expected ray-termination points of the reference view's opaque pixels
(:func:`surface_density_level`: the level at which the renders put the surface, as ``s3d export mesh`` picks it).
Marching cubes of ``σ`` on a grid gives that surface as a mesh; the target SDF of a point is its distance to the
mesh, negative where ``σ > τ``:

    f*(x) = sign(τ − σ(x)) · dist(x, {σ = τ}).

The SDF field is fitted to ``f*`` by regression (L1) at points drawn near the surface (surface samples plus
Gaussian offsets) and uniformly in the bounding sphere, while its albedo branch is fitted to the NeRF's colour at
the surface seen from outside along the normal. threestudio converts a NeRF to DMTet by copying ``−(σ − τ)`` to the
grid (a level set, not a distance); NeuS needs a true distance (its opacity depends on ``s·f``), hence the fit.

**NeuS → DMTet** (:meth:`scene3d.fields.dmtet.DMTet.set_sdf`): the SDF field evaluated at the tetrahedral grid's
vertices, zero deformation (threestudio's ``TetrahedraSDFGrid.create_from`` of an implicit SDF). The albedo field
is kept as the mesh's texture field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.fields.sdf import SDFField
from scene3d.renderers import isosurface

logger = logging.getLogger(__name__)


def surface_density_level(
    density_fn: Callable[[Tensor], Tensor],
    origins: Float[Tensor, "R 3"],
    directions: Float[Tensor, "R 3"],
    depth: Float[Tensor, " R"],
    opacity: Float[Tensor, " R"],
    *,
    min_opacity: float = 0.5,
) -> float:
    """Median density at the expected termination points ``o + D d`` of the rays with opacity above ``min_opacity``.

    Raises:
        ValueError: no ray is opaque enough (the density field renders nothing).
    """
    opaque = opacity > min_opacity
    if not bool(opaque.any()):
        raise ValueError(
            f"no ray reaches opacity {min_opacity}: the density field renders nothing, so it has no surface to hand over"
        )
    points = origins[opaque] + directions[opaque] * depth[opaque, None]
    with torch.no_grad():
        return float(density_fn(points).median())


@dataclass
class LevelSurface:
    """A field's iso-surface as a mesh, for distance queries."""

    vertices: np.ndarray
    """(V, 3) float32."""
    faces: np.ndarray
    """(F, 3) int64, outward."""


def density_surface(
    density_fn: Callable[[Tensor], Tensor],
    lower: Float[Tensor, "3"],
    upper: Float[Tensor, "3"],
    level: float,
    resolution: int,
) -> LevelSurface:
    """Marching cubes of ``σ = level`` on a ``resolution``-per-side grid over the box."""
    shape = isosurface.grid_shape(lower, upper, resolution)
    values = isosurface.sample_grid(density_fn, lower, upper, shape)
    verts, faces = isosurface.marching_cubes(values, lower, upper, level, inside="high")
    return LevelSurface(verts, faces)


class SurfaceDistance:
    """Unsigned distance to a triangle mesh (open3d's ``RaycastingScene.compute_distance``, imported on first use)."""

    def __init__(self, surface: LevelSurface) -> None:
        import open3d as o3d

        self._o3d = o3d
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(
            o3d.core.Tensor(surface.vertices.astype(np.float32)), o3d.core.Tensor(surface.faces.astype(np.uint32))
        )

    def __call__(self, points: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
        q = self._o3d.core.Tensor(points.detach().float().cpu().numpy())
        return torch.from_numpy(self._scene.compute_distance(q).numpy()).to(points.device)


@dataclass
class HandoffReport:
    """How well the SDF field took the density field's shape."""

    level: float
    """The density iso-level ``τ`` handed over."""
    sdf_error: float
    """Mean ``|f − f*|`` at the last batch's near-surface points (world units)."""
    color_error: float
    """Mean squared albedo error at the last batch's surface points."""


def density_to_sdf(
    sdf_field: SDFField,
    density_fn: Callable[[Tensor], Tensor],
    color_fn: Callable[[Tensor, Tensor], Tensor],
    level: float,
    *,
    center: Float[Tensor, "3"],
    radius: float,
    resolution: int = 64,
    steps: int = 300,
    batch: int = 4096,
    lr: float = 1e-2,
    surface_noise: float = 0.02,
    generator: torch.Generator | None = None,
) -> HandoffReport:
    """Fit ``sdf_field`` to the density field's iso-surface and colours (module docstring, NeRF → NeuS).

    Args:
        sdf_field: the NeuS field; all its parameters are fitted.
        density_fn: σ at world points.
        color_fn: ``(points, view directions) → rgb`` of the density field.
        level: the iso-level ``τ`` (:func:`surface_density_level`).
        center, radius: the bounding sphere (points are drawn inside it; the grid spans its box).
        resolution: marching-cubes grid samples per side.
        steps, batch, lr: the regression (Adam).
        surface_noise: standard deviation of the near-surface offsets, in units of ``radius``.

    Raises:
        ValueError: the density field has no surface at ``level`` inside the sphere.
    """
    device = sdf_field.aabb.device
    center = center.to(device)
    lower, upper = center - radius, center + radius
    surface = density_surface(density_fn, lower, upper, level, resolution)
    if len(surface.faces) == 0:
        raise ValueError(f"the density field has no surface at level {level:.4g}")
    distance = SurfaceDistance(surface)
    import trimesh

    mesh = trimesh.Trimesh(surface.vertices, surface.faces, process=False)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    on_surface, face_index = trimesh.sample.sample_surface(mesh, max(4 * batch, 20000), seed=seed)
    on_surface = torch.from_numpy(np.asarray(on_surface, dtype=np.float32)).to(device)
    normals = torch.from_numpy(np.asarray(mesh.face_normals[face_index], dtype=np.float32)).to(device)
    with torch.no_grad():
        # the density field's colour, seen from just outside along the normal
        surface_rgb = color_fn(on_surface, -normals).clamp(0.0, 1.0)

    def targets(points: Tensor) -> Tensor:
        with torch.no_grad():
            unsigned = distance(points)
            inside = density_fn(points) > level
            return torch.where(inside, -unsigned, unsigned)

    optimizer = torch.optim.Adam(sdf_field.parameters(), lr=lr)
    sdf_error = color_error = float("nan")
    for _ in range(steps):
        pick = torch.randint(0, on_surface.shape[0], (batch,), generator=generator).to(device)
        near = on_surface[pick[: batch // 2]] + surface_noise * radius * torch.randn(batch // 2, 3, generator=generator).to(device)
        uniform = center + radius * _in_ball(batch - batch // 2, generator).to(device)
        points = torch.cat([near, uniform])
        target = targets(points)
        sdf, _ = sdf_field.sdf_and_features(points)
        loss_sdf = (sdf - target).abs().mean()
        surf_pick = pick[batch // 2 :]
        albedo = sdf_field.albedo(on_surface[surf_pick])
        loss_color = ((albedo - surface_rgb[surf_pick]) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        (loss_sdf + loss_color).backward()
        optimizer.step()
        sdf_error = float((sdf[: batch // 2] - target[: batch // 2]).detach().abs().mean())
        color_error = float(loss_color.detach())
    logger.info("NeRF → NeuS: level %.4g, |f − f*| %.4f near the surface, albedo MSE %.4f", level, sdf_error, color_error)
    return HandoffReport(level=level, sdf_error=sdf_error, color_error=color_error)


def _in_ball(n: int, generator: torch.Generator | None) -> Tensor:
    """``n`` points uniform in the unit ball."""
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
    r = torch.rand(n, 1, generator=generator) ** (1.0 / 3.0)
    return direction * r
