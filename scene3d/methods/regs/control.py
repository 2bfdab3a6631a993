"""Texture-guided Gaussian control (ReGS §3.2; ``densify_and_split_color`` / ``color_densify_by_split``).

3DGS densifies where the *positional* (screen-space) gradient is large: where geometry is missing. ReGS keeps the
geometry and needs more Gaussians where the *texture* of the reference is finer than the Gaussians that carry it,
so it accumulates the norm of the gradient of each Gaussian's DC colour, ``‖∂L/∂f_dc‖``, over the iterations in which
it is visible (in the sampled view or in the reference view), and every 100 iterations replaces each Gaussian whose
average is at least the scheduled threshold

    τ(t) = τ₀ · max(0.2, (1 − t / T)^1.1)        (τ₀ = 3e-5 in the README, 5e-5 in ``demo.sh``)

by **9 children** (structured densification): 8 placed along the octant directions ``(±1, ±1, ±1)/√3``, each
component scaled by ``|ε|``, ``ε ~ N(0, σ)`` (σ the parent's per-axis scale) and rotated by the parent's rotation,
plus 1 at the parent's centre; every child has scale ``σ / (0.8 · 9) = σ / 7.2`` and copies the parent's colour,
opacity and rotation; the parent is removed. After the split, Gaussians with opacity below 0.005 are pruned (and,
once past ``prune_big_after``, those larger than 20 px on screen or 0.1 × the scene extent); opacities are never
reset.

The official code assigns the octant directions by ``row mod 9`` over the children of *all* parents stacked
parent-block by parent-block, which gives one parent nine distinct directions only when the number of parents is
prime to 9. Here each parent gets all eight octants and the centre (the paper's description).

All functions are pure or act on a splat parameter dict through :mod:`scene3d.renderers.splats`'s
optimizer-preserving :func:`~scene3d.renderers.splats.append_gaussians` /
:func:`~scene3d.renderers.splats.remove_gaussians`.

Example:
    >>> import torch
    >>> means, scales = torch.zeros(2, 3), torch.full((2, 3), 0.1)
    >>> quats = torch.tensor([[1.0, 0, 0, 0]] * 2)
    >>> child_means, child_scales = structured_children(means, scales, quats, generator=torch.Generator().manual_seed(0))
    >>> tuple(child_means.shape), round(float(child_scales[0, 0]), 5)
    ((18, 3), 0.01389)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from scene3d.renderers.splats import Params, append_gaussians, remove_gaussians
from scene3d.renderers.gaussians_project import quat_to_rotmat

NUM_CHILDREN = 9
"""Children per split Gaussian: 8 octants and the centre."""
CHILD_SCALE_DIVISOR = 0.8 * NUM_CHILDREN
"""Child scale = parent scale / (0.8 · N) = / 7.2."""


def child_directions(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Float[Tensor, "9 3"]:
    """The 8 unit octant directions ``(±1, ±1, ±1)/√3`` (ReGS's order) and the zero vector for the centre child."""
    d = torch.tensor(
        [[1, 1, 1], [-1, -1, -1], [1, -1, 1], [-1, 1, -1], [1, 1, -1], [-1, -1, 1], [1, -1, -1], [-1, 1, 1], [0, 0, 0]],
        dtype=dtype,
        device=device,
    )
    d[:8] /= math.sqrt(3.0)
    return d


def densify_threshold(step: int, total_steps: int, base: float) -> float:
    """ReGS's scheduled threshold ``base · max(0.2, (1 − step/total)^1.1)`` (``grad_schedule`` in ``train_ref.py``)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    frac = min(max(step / total_steps, 0.0), 1.0)
    return base * max(0.2, (1.0 - frac) ** 1.1)


@dataclass
class GradientStats:
    """Per-Gaussian densification statistics accumulated between two densification steps.

    ``color`` is ReGS's criterion (``xyz_gradient_accum`` filled with ``‖∂L/∂f_dc‖``); ``position`` is 3DGS's
    (the screen-space positional gradient, NDC-normalised as gsplat does), kept for the ablation; both count the
    same visible iterations. ``max_radii`` is the largest screen radius seen (for pruning big Gaussians).
    """

    color: Float[Tensor, " N"]
    position: Float[Tensor, " N"]
    count: Float[Tensor, " N"]
    max_radii: Float[Tensor, " N"]

    @classmethod
    def zeros(cls, n: int, device: torch.device | str | None = None) -> GradientStats:
        z = torch.zeros(n, device=device)
        return cls(color=z.clone(), position=z.clone(), count=z.clone(), max_radii=z.clone())

    def __len__(self) -> int:
        return int(self.color.shape[0])

    @torch.no_grad()
    def add(
        self,
        color_norm: Float[Tensor, " N"],
        position_norm: Float[Tensor, " N"],
        visible: Bool[Tensor, " N"],
        radii: Float[Tensor, " N"],
    ) -> None:
        """Accumulate one iteration's gradient norms on the visible Gaussians (``add_densification_stats``)."""
        if visible.shape != self.color.shape:
            raise ValueError(f"visible must have shape ({len(self)},), got {tuple(visible.shape)}")
        self.color[visible] += color_norm[visible]
        self.position[visible] += position_norm[visible]
        self.count[visible] += 1
        self.max_radii[visible] = torch.maximum(self.max_radii[visible], radii[visible].to(self.max_radii.dtype))

    def mean_color(self) -> Float[Tensor, " N"]:
        """Average colour-gradient norm (0 for Gaussians never visible)."""
        return torch.where(self.count > 0, self.color / self.count.clamp_min(1), torch.zeros_like(self.color))

    def mean_position(self) -> Float[Tensor, " N"]:
        """Average positional-gradient norm (0 for Gaussians never visible)."""
        return torch.where(self.count > 0, self.position / self.count.clamp_min(1), torch.zeros_like(self.position))


def color_gradient_norm(features_dc_grad: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
    """``‖∂L/∂f_dc‖`` per Gaussian (ReGS's texture cue)."""
    return features_dc_grad.norm(dim=-1)


def position_gradient_norm(means2d_grad: Float[Tensor, "C N 2"], width: int, height: int) -> Float[Tensor, " N"]:
    """3DGS's screen-space positional gradient norm, in NDC units (pixels × (W/2, H/2), as gsplat), summed over
    cameras."""
    scale = torch.tensor([width / 2.0, height / 2.0], dtype=means2d_grad.dtype, device=means2d_grad.device)
    return (means2d_grad * scale).norm(dim=-1).sum(dim=0)


def select_for_split(mean_grad: Float[Tensor, " N"], threshold: float) -> Bool[Tensor, " N"]:
    """Gaussians whose averaged gradient is at least ``threshold`` (``padded_grad >= thres``)."""
    return mean_grad >= threshold


def select_top(score: Float[Tensor, " N"], k: int) -> Bool[Tensor, " N"]:
    """The ``k`` Gaussians of highest score (ties by index), for a densification budget set elsewhere."""
    out = torch.zeros_like(score, dtype=torch.bool)
    k = max(0, min(int(k), score.shape[0]))
    if k:
        out[torch.topk(score, k, sorted=False).indices] = True
    return out


def structured_children(
    means: Float[Tensor, "K 3"],
    scales: Float[Tensor, "K 3"],
    quats: Float[Tensor, "K 4"],
    *,
    generator: torch.Generator | None = None,
) -> tuple[Float[Tensor, "K9 3"], Float[Tensor, "K9 3"]]:
    """Means and scales (σ, not log) of the 9 children of each parent, parent-major (rows ``9p .. 9p + 8``).

    Child ``j`` of parent ``p``: ``μ_p + R_p (|ε| ∘ d_j)`` with ``ε ~ N(0, diag σ_p)`` and ``d_j`` the octant
    direction (``d_8 = 0``, the centre); scale ``σ_p / 7.2``.
    """
    k = means.shape[0]
    dirs = child_directions(means.device, means.dtype)  # [9, 3]
    noise = torch.randn((k, NUM_CHILDREN, 3), generator=generator, device="cpu" if generator is not None else means.device)
    eps = noise.to(device=means.device, dtype=means.dtype) * scales[:, None, :]
    local = eps.abs() * dirs[None]  # [K, 9, 3]
    rot = quat_to_rotmat(quats)  # [K, 3, 3], normalised inside
    offsets = torch.einsum("kij,kcj->kci", rot, local)
    child_means = (means[:, None, :] + offsets).reshape(-1, 3)
    child_scales = (scales / CHILD_SCALE_DIVISOR)[:, None, :].expand(k, NUM_CHILDREN, 3).reshape(-1, 3)
    return child_means, child_scales


@torch.no_grad()
def split_gaussians(
    params: Params,
    optimizers: Mapping[str, torch.optim.Optimizer],
    selected: Bool[Tensor, " N"],
    *,
    generator: torch.Generator | None = None,
) -> int:
    """Replace each selected Gaussian by its 9 structured children (``densify_and_split_color``); returns how many
    parents were split. The count goes from ``n`` to ``n − k + 9k``; children are appended after the survivors and
    start with zero optimizer state, as in 3DGS."""
    n = params["means"].shape[0]
    if selected.shape != (n,) or selected.dtype != torch.bool:
        raise ValueError(f"selected must be a bool tensor of shape ({n},), got {selected.dtype} {tuple(selected.shape)}")
    k = int(selected.sum())
    if k == 0:
        return 0
    idx = selected.nonzero(as_tuple=True)[0]
    child_means, child_scales = structured_children(
        params["means"][idx], torch.exp(params["scales"][idx]), params["quats"][idx], generator=generator
    )
    new = {
        name: p.detach()[idx].repeat_interleave(NUM_CHILDREN, dim=0)
        for name, p in params.items()
        if name not in ("means", "scales")
    }
    new["means"] = child_means
    new["scales"] = torch.log(child_scales)
    append_gaussians(params, optimizers, new)
    remove_gaussians(params, optimizers, torch.cat([selected, selected.new_zeros(k * NUM_CHILDREN)]))
    return k


def prune_mask(
    opacities: Float[Tensor, " N"],
    min_opacity: float,
    *,
    max_radii: Float[Tensor, " N"] | None = None,
    max_screen_radius: float | None = None,
    scales: Float[Tensor, "N 3"] | None = None,
    max_world_scale: float | None = None,
) -> Bool[Tensor, " N"]:
    """Gaussians to prune: opacity below ``min_opacity``; with ``max_screen_radius``, also those whose largest screen
    radius exceeds it (px) or whose largest axis σ exceeds ``max_world_scale`` (``color_densify_by_split``)."""
    mask = opacities < min_opacity
    if max_screen_radius is not None:
        if max_radii is None or scales is None or max_world_scale is None:
            raise ValueError("max_screen_radius needs max_radii, scales and max_world_scale as well")
        mask = mask | (max_radii > max_screen_radius) | (scales.max(dim=-1).values > max_world_scale)
    return mask
