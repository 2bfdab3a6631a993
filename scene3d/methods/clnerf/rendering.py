"""Rendering rays of a CLNeRF field through an occupancy grid (the official ``models/rendering_NGPA.py``).

Each ray marches through the occupied cells of the grid (step ``Δ`` growing as ``c·t`` with the cone angle ``c``,
official ``exp_step_factor``), samples behind opaque matter (transmittance below ``1e-4``) are dropped after one
density evaluation without gradients, and the rest are composited with NeRF's quadrature (NeRF Eq. 3) by the shared
:mod:`scene3d.renderers.marching` (as for ``s3d-nerf``; nerfacc on CUDA, torch elsewhere):

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

from scene3d.core.backends import Backend
from scene3d.methods.clnerf.field import CLNeRFField
from scene3d.renderers import marching
from scene3d.renderers.marching import MarchSettings, RayOutputs
from scene3d.renderers.occupancy import OccupancyGrid

NEAR_DISTANCE = 0.01
"""Official ``NEAR_DISTANCE``: samples start this far from the camera."""


def march_settings(step_size: float, cone_angle: float = 0.0, backend: Backend = "auto") -> MarchSettings:
    """The official marching: step ``Δ`` (``√3/1024`` of the cube at paper scale), cone ``1/256`` on real scenes and
    0 on synthetic ones, ``NEAR_DISTANCE``, samples dropped below transmittance ``10⁻⁴`` (official ``T_threshold``)
    and no α threshold."""
    return MarchSettings(
        step_size=step_size, near_plane=NEAR_DISTANCE, far_plane=1e10, cone_angle=cone_angle, early_stop_eps=1e-4,
        alpha_threshold=0.0, backend=backend,
    )  # fmt: skip


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
) -> RayOutputs:
    """Render rays, each with its own scan's embeddings (module docstring).

    The shared :func:`scene3d.renderers.marching.render_rays` does the marching and compositing; the scan's
    geometry and appearance embeddings are its per-ray density and colour inputs.

    Args:
        field: the CLNeRF field.
        grid: occupancy grid over the field's cube.
        origins: ray origins.
        directions: unit ray directions.
        scan_ids: the scan id each ray renders.
        background: colour behind the scene.
        settings: marching settings (:func:`march_settings`).
        stratified: jitter each ray's first sample (training).
    """
    n_rays = origins.shape[0]
    if scan_ids.shape != (n_rays,):
        raise ValueError(f"scan_ids must have shape ({n_rays},), got {tuple(scan_ids.shape)}")
    field.check_ids(scan_ids)
    return marching.render_rays(
        field.radiance, grid, origins, directions, settings, background=background.to(origins), stratified=stratified,
        density_extra=field.geometry_embedding(scan_ids), color_extra=field.appearance_embedding(scan_ids),
    )  # fmt: skip


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
