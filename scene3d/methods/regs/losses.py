"""ReGS's loss terms, as pure functions, and their weighting in one place (``train_ref.py``).

    L = 1 · L_rec + 2 · L_pseudo + 10 · L_depth + 1 · L_style + 0 · L_tv

* ``L_rec``: the reference view's render against the stylized reference, ``0.8 · L1 + 0.2 · (1 − SSIM)``;
* ``L_pseudo``: L1 between the sampled view's render and the reference forward-warped into it, on the warped
  pixels only (:mod:`scene3d.methods.regs.warp`);
* ``L_depth``: L1 between the sampled view's depth and the original Gaussians' depth of that view;
* ``L_style``: the cached NNFM + colour-patch loss, then online NNFM × 0.2 (:mod:`scene3d.methods.regs.matching`);
* ``L_tv``: total variation of the sampled render (weight 0 in ReGS, kept as a setting).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.methods.regs.warp import WarpCorrespondence


@dataclass(frozen=True)
class LossWeights:
    """The weights of ReGS's loss terms (``loss = 1*loss_rec + 2*loss_ref + 10*loss_depth + 1*s_loss + 0*tv``)."""

    reconstruction: float = 1.0
    pseudo: float = 2.0
    depth: float = 10.0
    style: float = 1.0
    tv: float = 0.0


@dataclass
class ReGSLosses:
    """The unweighted terms of one iteration."""

    reconstruction: Float[Tensor, ""]
    pseudo: Float[Tensor, ""]
    depth: Float[Tensor, ""]
    style: Float[Tensor, ""]
    tv: Float[Tensor, ""]

    def weighted(self, weights: LossWeights) -> dict[str, Tensor]:
        """Each term times its weight, keyed ``<term>_loss`` (what nerfstudio logs and sums)."""
        return {f"{f.name}_loss": getattr(self, f.name) * getattr(weights, f.name) for f in fields(self)}

    def total(self, weights: LossWeights) -> Float[Tensor, ""]:
        return torch.stack(list(self.weighted(weights).values())).sum()


def ssim(a: Float[Tensor, "H W 3"], b: Float[Tensor, "H W 3"]) -> Float[Tensor, ""]:
    """SSIM with a Gaussian window of 11 px, σ 1.5 (3DGS's ``ssim``), differentiable."""
    from pytorch_msssim import ssim as _ssim

    return _ssim(a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None], data_range=1.0, size_average=True)


def reconstruction_loss(
    render: Float[Tensor, "H W 3"], reference: Float[Tensor, "H W 3"], ssim_lambda: float = 0.2
) -> Float[Tensor, ""]:
    """``(1 − λ) · L1 + λ · (1 − SSIM)`` between the reference view's render and the stylized reference."""
    if render.shape != reference.shape:
        raise ValueError(f"render and reference must have the same shape, got {tuple(render.shape)} and {tuple(reference.shape)}")
    l1 = (render - reference).abs().mean()
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - ssim(render, reference))


def pseudo_view_loss(
    render: Float[Tensor, "H W 3"], reference: Float[Tensor, "H2 W2 3"], corr: WarpCorrespondence
) -> Float[Tensor, ""]:
    """L1 between a view's render and the warped reference on the pixels that received a reference colour (0 if
    none did)."""
    if render.shape[:2] != (corr.height, corr.width):
        raise ValueError(f"render must be {corr.height}x{corr.width} to match the warp, got {tuple(render.shape[:2])}")
    if len(corr) == 0:
        return render.sum() * 0.0
    pred = render.reshape(-1, 3)[corr.target_pixels]
    target = reference.reshape(-1, 3)[corr.source_pixels]
    return (pred - target).abs().mean()


def depth_loss(depth: Float[Tensor, "H W"], target: Float[Tensor, "H W"]) -> Float[Tensor, ""]:
    """Mean absolute difference between a rendered depth and the original Gaussians' depth of the same view."""
    return (depth - target).abs().mean()


def tv_loss(render: Float[Tensor, "H W 3"]) -> Float[Tensor, ""]:
    """``(mean (Δ_y)² + mean (Δ_x)²) / 2`` of the render (ReGS's optional ``img_tv_loss``)."""
    dy = (render[1:] - render[:-1]).pow(2).mean()
    dx = (render[:, 1:] - render[:, :-1]).pow(2).mean()
    return (dx + dy) / 2.0
