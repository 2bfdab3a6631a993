"""EpiGRAF's patch-wise training: patch parameters, their annealed Beta schedule, real-patch extraction, patch cameras.

A patch is an ``r × r`` grid covering the square ``[o_x, o_x + s] × [o_y, o_y + s]`` of the image, in image units
(the image is ``[0, 1]²``, ``x`` to the right, ``y`` down). The centre of patch pixel ``(i, j)`` is the image point

    u = o_x + s (i + ½) / r,    v = o_y + s (j + ½) / r,

so ``s = 1, o = 0, r = R`` is exactly the full image's pixel grid (scene3d's pixel-centre convention). The
generator renders a patch by shooting rays through those points (:func:`patch_intrinsics`); real patches are cut
from the full image at the same points by bilinear ``grid_sample`` (:func:`extract_patches`).

Scales follow the paper's Beta schedule (§3.2, official ``patch_beta.yaml``):

    s = r/R + (1 − r/R) · X,   X ~ Beta(1, β(t)),   β(t) linear from 0.001 to 0.8 over the annealing horizon,

so early in training ``s ≈ 1`` (whole, low-resolution images) and later mass moves to small, detailed patches.
Offsets are uniform in ``[0, 1 − s]``; parameters are shared within groups (the discriminator's minibatch-std
groups, of 4).

Example:
    >>> import torch
    >>> sched = PatchScaleSchedule(min_scale=0.25, anneal_steps=100)
    >>> round(sched.beta(50), 4)
    0.4005
    >>> p = sched.sample(8, step=0, group_size=4, generator=torch.Generator().manual_seed(0))
    >>> bool((p.scales[:4] == p.scales[0]).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def linear_schedule(step: int | float, start: float, end: float, period: int | float) -> float:
    """``start`` at ``step ≤ 0``, ``end`` at ``step ≥ period``, linear in between (official ``linear_schedule``)."""
    if step >= period:
        return float(end)
    if step <= 0:
        return float(start)
    return float(start + (end - start) * step / period)


@dataclass(frozen=True)
class PatchParams:
    """Per-sample patch scale ``s`` and top-left offset ``(o_x, o_y)``, in image units."""

    scales: Float[Tensor, " B"]
    offsets: Float[Tensor, "B 2"]

    def as_condition(self) -> Float[Tensor, "B 3"]:
        """``[s, o_x, o_y]``: what the discriminator is conditioned on."""
        return torch.cat([self.scales[:, None], self.offsets], dim=1)

    @staticmethod
    def full(batch: int, device: torch.device | str = "cpu") -> PatchParams:
        """The whole image (``s = 1, o = 0``) for every sample."""
        return PatchParams(torch.ones(batch, device=device), torch.zeros(batch, 2, device=device))


@dataclass(frozen=True)
class PatchScaleSchedule:
    """``s = min_scale + (max_scale − min_scale) · Beta(1, β(t))`` with ``β(t)`` linear in the step.

    Attributes:
        min_scale: ``r / R``, the smallest patch (one patch pixel per image pixel).
        anneal_steps: iterations over which ``β`` goes from ``beta_start`` to ``beta_end``.
        beta_start, beta_end: the official 0.001 and 0.8.
        max_scale: 1 (whole image).
    """

    min_scale: float
    anneal_steps: int
    beta_start: float = 0.001
    beta_end: float = 0.8
    max_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.min_scale <= self.max_scale <= 1.0:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {self.min_scale} and {self.max_scale}")
        if self.beta_start <= 0 or self.beta_end <= 0:
            raise ValueError(f"beta must stay positive, got {self.beta_start} -> {self.beta_end}")
        if self.anneal_steps < 0:
            raise ValueError(f"anneal_steps must be >= 0, got {self.anneal_steps}")

    def beta(self, step: int | float) -> float:
        """``β(t)``."""
        return linear_schedule(step, self.beta_start, self.beta_end, self.anneal_steps)

    def sample(
        self,
        batch: int,
        step: int | float,
        *,
        group_size: int = 1,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> PatchParams:
        """Patch parameters for ``batch`` samples, shared within consecutive groups of ``group_size``."""
        if group_size < 1 or batch % group_size:
            raise ValueError(f"batch ({batch}) must be a multiple of group_size ({group_size})")
        groups = batch // group_size
        # Beta(1, b) by inversion: F(x) = 1 − (1 − x)^b, so X = 1 − U^(1/b) for U ~ U(0, 1)
        u = torch.rand(groups, generator=generator, dtype=torch.float64)
        x = 1.0 - u.clamp_min(1e-300) ** (1.0 / self.beta(step))
        scales = (self.min_scale + (self.max_scale - self.min_scale) * x).float()
        offsets = torch.rand(groups, 2, generator=generator) * (1.0 - scales)[:, None]
        return PatchParams(
            scales.repeat_interleave(group_size).to(device), offsets.repeat_interleave(group_size, dim=0).to(device)
        )


def patch_grid(params: PatchParams, resolution: int) -> Float[Tensor, "B r r 2"]:
    """Image-unit centres ``(u, v)`` of every patch pixel, rows first (``[b, j, i] = (u_i, v_j)``)."""
    device, dtype = params.scales.device, params.scales.dtype
    t = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution  # (r,)
    s = params.scales[:, None]
    u = params.offsets[:, 0:1] + s * t  # (B, r)
    v = params.offsets[:, 1:2] + s * t
    return torch.stack(torch.broadcast_tensors(u[:, None, :], v[:, :, None]), dim=-1)


def extract_patches(
    images: Float[Tensor, "B C H W"], params: PatchParams, resolution: int
) -> Float[Tensor, "B C r r"]:
    """Cut and resize patches from full images by bilinear sampling at the patch pixel centres.

    ``grid_sample`` with ``align_corners=False`` maps ``−1`` / ``+1`` to the image's outer edges, so the image
    point ``u`` is the grid coordinate ``2u − 1``. (The official code uses ``align_corners=True`` with rays through
    ``linspace(−1, 1)``, half a pixel off from the images' own pixel grid; see the README.)
    """
    if images.shape[0] != params.scales.shape[0]:
        raise ValueError(f"images and params must have the same batch size, got {images.shape[0]} and {params.scales.shape[0]}")
    grid = patch_grid(params, resolution).to(images.dtype) * 2.0 - 1.0
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def patch_intrinsics(
    K: Float[Tensor, "B 3 3"], image_size: int, params: PatchParams, resolution: int
) -> Float[Tensor, "B 3 3"]:
    """Pinhole intrinsics of an ``r × r`` camera whose pixel centres are the patch's points of the full image.

    Full-image pixel coordinates are ``x = R u``; patch pixel ``i`` sits at ``x = R (o_x + s (i + ½)/r)``, which is
    a camera with ``f' = f · r / (R s)`` and ``c' = (c − R o) · r / (R s)``. Rays from :func:`pinhole_rays` with
    ``K'`` at ``r × r`` are then exactly the patch's rays.
    """
    zoom = resolution / (image_size * params.scales)  # (B,)
    out = K.clone()
    out[:, 0, 0] = K[:, 0, 0] * zoom
    out[:, 1, 1] = K[:, 1, 1] * zoom
    out[:, 0, 2] = (K[:, 0, 2] - image_size * params.offsets[:, 0]) * zoom
    out[:, 1, 2] = (K[:, 1, 2] - image_size * params.offsets[:, 1]) * zoom
    return out
