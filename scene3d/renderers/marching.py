"""Rendering rays of a radiance field with occupancy-grid marching (s3d-nerf, CLNeRF), free of nerfstudio.

For a batch of rays: march the occupancy grid (empty space skipped), evaluate the density at the kept intervals
without gradients and drop the ones behind opaque matter or nearly transparent, evaluate the field at the rest and
composite (NeRF Eq. 3) with the background filling the remaining transmittance:

    C = Σ_i w_i c_i + (1 − Σ_i w_i) · c_bg,   D = Σ_i w_i t_i / Σ_i w_i,   N = normalize(Σ_i w_i n_i),

with ``n_i = −∇σ / |∇σ|`` (only when asked: it needs a backward pass through the density).

Without gradients (evaluation, the viewer) the density and geometry features are computed once for all intervals
and the colour only where the sample is visible. Per-ray extra inputs (an appearance code per image, CLNeRF's
per-task embeddings) are gathered per sample by ray index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.core.backends import Backend
from scene3d.renderers.occupancy import OccupancyGrid, PackedSamples
from scene3d.renderers.volume import accumulate, alphas_from_densities, composite_packed, visibility_packed


@runtime_checkable
class MarchableField(Protocol):
    """What :func:`render_rays` needs of a field (:class:`scene3d.fields.radiance.RadianceField` has it)."""

    def density(self, positions: Tensor, density_extra: Tensor | None = None) -> Tensor:
        """σ at world positions ``(S, 3)`` → ``(S,)``."""
        ...

    def geometry(self, positions: Tensor, density_extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """σ ``(S,)`` and the geometry features for the colour head ``(S, F)``."""
        ...

    def color(self, directions: Tensor, features: Tensor, color_extra: Tensor | None = None) -> Tensor:
        """Colour ``(S, 3)`` from unit directions, geometry features and an optional extra input."""
        ...

    def density_gradient(self, positions: Tensor, density_extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """σ and ``∇σ`` with respect to the positions."""
        ...


@dataclass
class MarchSettings:
    """How rays are marched and pruned."""

    step_size: float
    """Distance between samples (Instant-NGP: the box diagonal / 1024)."""
    near_plane: float = 0.05
    """Rays start this far from their origin."""
    far_plane: float = 1e3
    """Rays end this far from their origin (and at the grid's outer box)."""
    cone_angle: float = 0.0
    """Step growth with distance (0: constant step; Instant-NGP uses 1/256 for large scenes)."""
    early_stop_eps: float = 1e-4
    """Drop samples whose transmittance is below this."""
    alpha_threshold: float = 0.01
    """Drop samples with α below this (capped by the grid's mean occupancy)."""
    backend: Backend = "auto"
    """``auto``: nerfacc marching and compositing on CUDA, torch elsewhere."""


@dataclass
class RayOutputs:
    """Per-ray results."""

    rgb: Float[Tensor, "R 3"]
    opacity: Float[Tensor, "R 1"]
    depth: Float[Tensor, "R 1"]
    """Expected distance along the ray, ``Σ w t / Σ w`` (0 where nothing was hit)."""
    normals: Float[Tensor, "R 3"] | None
    """Unit world-space normals (``None`` unless asked for)."""
    n_samples: int
    """Samples the field was evaluated at (with colour)."""


def _per_sample(extra: Tensor | None, ray_indices: Tensor) -> Tensor | None:
    return None if extra is None else extra[ray_indices]


def render_rays(
    field: MarchableField,
    grid: OccupancyGrid,
    origins: Float[Tensor, "R 3"],
    directions: Float[Tensor, "R 3"],
    march: MarchSettings,
    *,
    background: Float[Tensor, "*bg 3"],
    stratified: bool = False,
    density_extra: Float[Tensor, "R E"] | None = None,
    color_extra: Float[Tensor, "R F"] | None = None,
    with_normals: bool = False,
    t_min: Float[Tensor, " R"] | None = None,
    t_max: Float[Tensor, " R"] | None = None,
) -> RayOutputs:
    """Render rays (see the module docstring).

    Args:
        field: the radiance field.
        grid: the occupancy grid over the field's box.
        origins: ray origins.
        directions: unit ray directions.
        march: marching and pruning settings.
        background: ``(3,)`` or per-ray ``(R, 3)`` colour behind everything.
        stratified: jitter each ray's first sample (training).
        density_extra: per-ray extra input of the density head.
        color_extra: per-ray extra input of the colour head.
        with_normals: also composite density-gradient normals.
        t_min, t_max: optional per-ray distance bounds (a crop box), on top of the near/far planes.
    """
    n_rays = origins.shape[0]
    if directions.shape != origins.shape:
        raise ValueError(f"origins and directions must have the same shape, got {tuple(origins.shape)} and {tuple(directions.shape)}")

    def positions_of(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
        return origins[ray_indices] + directions[ray_indices] * (0.5 * (t_starts + t_ends))[:, None]

    def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
        positions = positions_of(t_starts, t_ends, ray_indices)
        return field.density(positions, _per_sample(density_extra, ray_indices))

    grad_mode = torch.is_grad_enabled()
    samples = grid.sample(
        origins, directions,
        near_plane=march.near_plane, far_plane=march.far_plane, step_size=march.step_size,
        cone_angle=march.cone_angle, stratified=stratified,
        # with gradients, prune first (cheap, no graph) then evaluate the survivors with gradients
        sigma_fn=sigma_fn if grad_mode else None,
        early_stop_eps=march.early_stop_eps, alpha_threshold=march.alpha_threshold, t_min=t_min, t_max=t_max,
        backend=march.backend,
    )  # fmt: skip
    ray_indices = samples.ray_indices
    positions = positions_of(samples.t_starts, samples.t_ends, ray_indices)
    density, features = field.geometry(positions, _per_sample(density_extra, ray_indices))
    if not grad_mode and len(samples) > 0:
        # one density pass: prune now, and shade only what is visible
        alphas = alphas_from_densities(density, samples.deltas)
        alpha_threshold = grid.capped_alpha_threshold(march.alpha_threshold)
        keep = visibility_packed(
            alphas, ray_indices, n_rays, early_stop_eps=march.early_stop_eps, alpha_threshold=alpha_threshold
        )
        samples, positions, density, features = samples.select(keep), positions[keep], density[keep], features[keep]
        ray_indices = samples.ray_indices
    rgb_samples = field.color(directions[ray_indices], features, _per_sample(color_extra, ray_indices))
    alphas = alphas_from_densities(density, samples.deltas)
    weights, _ = composite_packed(alphas, ray_indices, n_rays, backend=march.backend)
    opacity = accumulate(weights, None, ray_indices, n_rays)
    rgb = accumulate(weights, rgb_samples, ray_indices, n_rays) + (1.0 - opacity) * background
    depth = accumulate(weights, samples.mids[:, None], ray_indices, n_rays) / opacity.clamp_min(1e-10)
    normals = None
    if with_normals:
        normals = _normals(field, samples, positions, weights, density_extra, n_rays)
    return RayOutputs(rgb=rgb, opacity=opacity, depth=depth, normals=normals, n_samples=len(samples))


def _normals(
    field: MarchableField,
    samples: PackedSamples,
    positions: Tensor,
    weights: Tensor,
    density_extra: Tensor | None,
    n_rays: int,
) -> Tensor:
    """Composited ``−∇σ / |∇σ|`` at samples that carry weight (the others contribute nothing)."""
    weights = weights.detach()
    useful = weights > 1e-4
    normals = torch.zeros_like(positions)
    if bool(useful.any()):
        extra = _per_sample(density_extra, samples.ray_indices[useful])
        _, grad = field.density_gradient(positions[useful], extra)
        normals[useful] = -torch.nn.functional.normalize(grad, dim=-1)
    total = accumulate(weights, normals, samples.ray_indices, n_rays)
    return torch.nn.functional.normalize(total, dim=-1)
