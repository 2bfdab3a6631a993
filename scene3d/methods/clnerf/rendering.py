"""Rendering rays of a CLNeRF field through an occupancy grid (the official ``models/rendering_NGPA.py``).

Each ray marches through the occupied cells of the grid (step ``Δ`` growing as ``c·t`` with the cone angle ``c``,
official ``exp_step_factor``), samples behind opaque matter (transmittance below ``1e-4``) are dropped after one
density evaluation without gradients, and the rest are composited with NeRF's quadrature (NeRF Eq. 3):

    C = Σ_i T_i α_i c_i + (1 − O) · c_bg,   O = Σ_i T_i α_i,

where every sample is evaluated with its ray's scan id. The losses are CLNeRF's (official ``losses.py``):

    L = mean ‖C − C_gt‖² + λ_o · mean(−O log O),   λ_o = 10⁻³   (opacity entropy: opacities towards 0 or 1).

Example:
    >>> import torch
    >>> opacity_entropy(torch.tensor([0.0, 1.0])).tolist()  # doctest: +ELLIPSIS
    [..., ...]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scene3d.methods.clnerf.field import CLNeRFField
from scene3d.renderers.occupancy import OccupancyGrid
from scene3d.renderers.volume import accumulate, alphas_from_densities, composite_packed

NEAR_DISTANCE = 0.01
"""Official ``NEAR_DISTANCE``: samples start this far from the camera."""


@dataclass(frozen=True)
class MarchSettings:
    """How rays are marched (official: ``Δ = √3/1024``, cone ``1/256`` on real scenes, 0 on synthetic ones)."""

    step_size: float
    cone_angle: float = 0.0
    near: float = NEAR_DISTANCE
    early_stop_eps: float = 1e-4
    """Official ``T_threshold``."""


@dataclass
class RenderOutputs:
    """Per-ray results."""

    rgb: Float[Tensor, "R 3"]
    opacity: Float[Tensor, "R 1"]
    depth: Float[Tensor, "R 1"]
    num_samples: int


def render_rays(
    field: CLNeRFField,
    grid: OccupancyGrid,
    origins: Float[Tensor, "R 3"],
    directions: Float[Tensor, "R 3"],
    scan_ids: Int[Tensor, " R"],
    background: Float[Tensor, "3"],
    settings: MarchSettings,
    *,
    stratified: bool,
) -> RenderOutputs:
    """Render rays, each with its own scan's embeddings (module docstring).

    Args:
        field: the CLNeRF field.
        grid: occupancy grid over the field's cube.
        origins: ray origins.
        directions: unit ray directions.
        scan_ids: the scan id each ray renders.
        background: colour behind the scene.
        settings: marching settings.
        stratified: jitter each ray's first sample (training).
    """
    n_rays = origins.shape[0]
    if scan_ids.shape != (n_rays,):
        raise ValueError(f"scan_ids must have shape ({n_rays},), got {tuple(scan_ids.shape)}")

    def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
        mids = 0.5 * (t_starts + t_ends)
        positions = origins[ray_indices] + directions[ray_indices] * mids[:, None]
        return field.density(positions, scan_ids[ray_indices])

    samples = grid.sample(
        origins, directions, near_plane=settings.near, step_size=settings.step_size, cone_angle=settings.cone_angle,
        stratified=stratified, sigma_fn=sigma_fn, early_stop_eps=settings.early_stop_eps,
    )  # fmt: skip
    rays = samples.ray_indices
    out = field(samples.positions(origins, directions), directions[rays], scan_ids[rays])
    alphas = alphas_from_densities(out.density, samples.deltas)
    weights, _ = composite_packed(alphas, rays, n_rays)
    rgb = accumulate(weights, out.rgb, rays, n_rays)
    opacity = accumulate(weights, None, rays, n_rays)
    depth = accumulate(weights, samples.mids[:, None], rays, n_rays)
    rgb = rgb + background.to(rgb) * (1.0 - opacity)
    return RenderOutputs(rgb=rgb, opacity=opacity, depth=depth, num_samples=len(samples))


def opacity_entropy(opacity: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """``−O log O`` with the official ``+1e-10`` (pushes opacities to 0 or 1 against floaters)."""
    o = opacity + 1e-10
    return -o * torch.log(o)


@dataclass
class CLNeRFLosses:
    """CLNeRF's loss terms, weighted; ``total`` is what is minimised."""

    rgb: Tensor
    opacity: Tensor

    @property
    def total(self) -> Tensor:
        """Sum of the weighted terms."""
        return self.rgb + self.opacity


def clnerf_losses(
    rgb: Float[Tensor, "R 3"], target: Float[Tensor, "R 3"], opacity: Float[Tensor, "R 1"], opacity_weight: float = 1e-3
) -> CLNeRFLosses:
    """``mean‖C − C_gt‖²`` and ``λ_o · mean(−O log O)`` (official ``NeRFLoss``, distortion weight 0)."""
    return CLNeRFLosses(rgb=((rgb - target) ** 2).mean(), opacity=opacity_weight * opacity_entropy(opacity).mean())
