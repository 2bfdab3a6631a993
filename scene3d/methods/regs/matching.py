"""Ref-NPR-style template-correspondence matching and ReGS's style losses (``utils/nnfm.py``, ``CachedNNFMLoss``).

Before training, every view's *content* render (the original Gaussians, DC colour) is matched, in VGG-16 feature
space, against the content render of the reference view (the *template*):

* blocks 2 and 3 (relu3_x, relu4_x): each content feature's nearest template feature by cosine distance; the
  *style* feature (the stylized reference's feature) at that position becomes its target (cached NNFM);
* block 4 (relu5_x, 1/16 resolution): the same match, kept only where the cosine distance is ``<= 0.6`` and
  weighted by ``1 − distance``; it drives the colour-patch loss against the reference image downsampled 16×.

During training (``forward`` of ``CachedNNFMLoss``), for the first 70 % of the iterations::

    L_style = Σ_{b ∈ {2,3}} mean_p (1 − cos(F_b(render)_p, F_b(style)_{m_b(p)}))          (cached NNFM)
            + 15 · mean_p [m_4(p) ≥ 0] [mean_c c(render)_p ≤ 0.9] w(p) · mean_c (c(style)_{m_4(p)} − c(render)_p)²

with ``c`` the image downsampled 16× (colour patches)

and afterwards ``0.2 · Σ_{b ∈ {2,3}} NNFM(F_b(render), F_b(style))`` (online NNFM: nearest *style* feature of
each render feature). The nearest-neighbour search and NNFM are :mod:`scene3d.priors.vgg`'s.

Example:
    >>> import torch
    >>> from scene3d.priors.vgg import VGGFeatures
    >>> vgg = VGGFeatures.tiny_random(seed=0)
    >>> style, content = torch.rand(32, 32, 3), torch.rand(32, 32, 3)
    >>> cache = StyleTargets.compute(vgg, style, content)
    >>> m = match_view(cache, vgg, content)
    >>> float(patch_color_loss(cache, m, style)) == 0.0  # the template itself: every match is exact
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from scene3d.priors.vgg import VGGFeatures, gather_features, nearest_feature_match, nnfm_loss

NNFM_BLOCKS: tuple[int, ...] = (2, 3)
"""VGG blocks of the (cached and online) NNFM loss (ReGS: ``blocks=[2, 3, 4]`` with block 4 reserved for colour)."""
PATCH_BLOCK = 4
"""VGG block whose matches drive the colour-patch loss (relu5_x, 1/16 of the image size)."""
PATCH_DOWNSAMPLE = 16
"""The colour-patch loss compares images downsampled by this factor (the block-4 grid)."""
PATCH_MAX_DISTANCE = 0.6
"""Block-4 matches farther than this cosine distance count as no match (``argmin_cos_distance_thre``)."""
PATCH_WEIGHT = 15.0
"""ReGS's constant factor on the colour-patch term (``torch.mean(loss_patch) * 15``)."""
PATCH_WHITE_CUTOFF = 0.9
"""Coarse render pixels brighter than this (mean over channels) are left out of the colour-patch term."""


def _chw(image: Float[Tensor, "H W 3"]) -> Float[Tensor, "1 3 H W"]:
    return image.permute(2, 0, 1)[None]


def coarse(image: Float[Tensor, "1 3 H W"], factor: int = PATCH_DOWNSAMPLE) -> Float[Tensor, "1 3 h w"]:
    """Bilinear, antialiased, corner-aligned downsampling to ``(H // factor, W // factor)`` (ReGS's coarse image)."""
    h, w = image.shape[-2] // factor, image.shape[-1] // factor
    if h < 1 or w < 1:
        raise ValueError(f"images must be at least {factor} px on each side, got {tuple(image.shape[-2:])}")
    return F.interpolate(image, (h, w), mode="bilinear", antialias=True, align_corners=True)


@dataclass
class StyleTargets:
    """Features of the stylized reference and of its content template, computed once before training."""

    style_features: dict[int, Float[Tensor, "1 _C _M"]]
    """Per NNFM block, the stylized reference's features, flattened (``M`` positions)."""
    template_features: dict[int, Float[Tensor, "1 _C _M"]]
    """Per block (NNFM blocks and the patch block), the template (reference-view content render) features."""
    coarse_style: Float[Tensor, "1 3 Mp"]
    """The stylized reference downsampled 16×, flattened: the colours the patch matches point at."""
    blocks: tuple[int, ...]
    """The NNFM blocks."""

    @classmethod
    @torch.no_grad()
    def compute(
        cls,
        vgg: VGGFeatures,
        style: Float[Tensor, "H W 3"],
        template: Float[Tensor, "H W 3"],
        blocks: Sequence[int] = NNFM_BLOCKS,
    ) -> StyleTargets:
        """Features of the stylized reference ``style`` and of the template (its view's content render)."""
        if style.shape != template.shape:
            raise ValueError(f"style and template must have the same shape, got {tuple(style.shape)} and {tuple(template.shape)}")
        blocks = tuple(blocks)
        all_blocks = (*blocks, PATCH_BLOCK)
        s_feats = vgg(_chw(style), blocks=blocks)
        t_feats = vgg(_chw(template), blocks=all_blocks)
        return cls(
            style_features={b: f.flatten(2) for b, f in zip(blocks, s_feats, strict=True)},
            template_features={b: f.flatten(2) for b, f in zip(all_blocks, t_feats, strict=True)},
            coarse_style=coarse(_chw(style)).flatten(2),
            blocks=blocks,
        )


@dataclass
class ViewMatches:
    """One view's cached template correspondences (``compute_cache`` for one content render)."""

    nnfm_index: dict[int, Int[Tensor, "1 _N"]]
    """Per NNFM block, for each content feature, the index of its nearest template feature."""
    patch_index: Int[Tensor, "1 Np"]
    """Block-4 nearest template position, ``-1`` where the cosine distance exceeds 0.6."""
    patch_weight: Float[Tensor, "1 Np"]
    """``1 − distance`` of each block-4 match (0 where there is none)."""


@torch.no_grad()
def match_view(
    targets: StyleTargets, vgg: VGGFeatures, content: Float[Tensor, "H W 3"], *, max_distance: float = PATCH_MAX_DISTANCE
) -> ViewMatches:
    """Match a view's content render against the template: nearest neighbours per NNFM block, thresholded at block 4."""
    all_blocks = (*targets.blocks, PATCH_BLOCK)
    feats = vgg(_chw(content), blocks=all_blocks)
    index = {}
    for b, f in zip(targets.blocks, feats, strict=False):
        index[b] = nearest_feature_match(f.flatten(2), targets.template_features[b]).index
    m = nearest_feature_match(feats[-1].flatten(2), targets.template_features[PATCH_BLOCK])
    good = m.distance <= max_distance
    return ViewMatches(
        nnfm_index=index,
        patch_index=torch.where(good, m.index, torch.full_like(m.index, -1)),
        patch_weight=torch.where(good, 1.0 - m.distance, torch.zeros_like(m.distance)),
    )


def cosine_distance(a: Float[Tensor, "1 C N"], b: Float[Tensor, "1 C N"]) -> Float[Tensor, ""]:
    """Mean over positions of ``1 − cos`` between two feature sets of the same layout (ReGS's ``cos_loss``)."""
    return (1.0 - F.cosine_similarity(a, b, dim=1, eps=1e-8)).mean()


def cached_nnfm_loss(
    targets: StyleTargets, matches: ViewMatches, render_features: dict[int, Float[Tensor, "1 _C _h _w"]]
) -> Float[Tensor, ""]:
    """``Σ_b mean_p (1 − cos(F_b(render)_p, F_b(style)_{m_b(p)}))`` over the NNFM blocks (the cached matches)."""
    total = render_features[targets.blocks[0]].new_zeros(())
    for b in targets.blocks:
        target = gather_features(targets.style_features[b], matches.nnfm_index[b])
        total = total + cosine_distance(render_features[b].flatten(2), target)
    return total


def patch_color_loss(
    targets: StyleTargets, matches: ViewMatches, render: Float[Tensor, "H W 3"], *, weight: float = PATCH_WEIGHT
) -> Float[Tensor, ""]:
    """ReGS's colour-patch term: the coarse render pulled toward the coarse reference colour at its block-4 match.

    Unmatched positions and near-white render positions (mean > 0.9) contribute 0; the rest are weighted by
    ``1 − distance``; the mean runs over all positions, times ``weight`` (15).
    """
    out = coarse(_chw(render)).flatten(2)  # [1, 3, Np]
    if out.shape[-1] != matches.patch_index.shape[-1]:
        raise ValueError(
            f"the render's coarse grid has {out.shape[-1]} cells but the view's matches have {matches.patch_index.shape[-1]}"
        )
    idx = matches.patch_index.clamp_min(0)
    related = gather_features(targets.coarse_style, idx)
    per_cell = ((related - out) ** 2).mean(dim=1)  # [1, Np]
    keep = (matches.patch_index >= 0) & (out.mean(dim=1) <= PATCH_WHITE_CUTOFF)
    return (per_cell * keep * matches.patch_weight).mean() * weight


def online_nnfm_loss(
    targets: StyleTargets, render_features: dict[int, Float[Tensor, "1 _C _h _w"]]
) -> Float[Tensor, ""]:
    """``Σ_b NNFM(F_b(render), F_b(style))``: each render feature against its nearest style feature (ARF)."""
    total = render_features[targets.blocks[0]].new_zeros(())
    for b in targets.blocks:
        total = total + nnfm_loss(render_features[b], targets.style_features[b][..., None])
    return total


def render_features(
    vgg: VGGFeatures, render: Float[Tensor, "H W 3"], blocks: Sequence[int]
) -> dict[int, Float[Tensor, "1 _C _h _w"]]:
    """VGG features of a render (with gradients to the render) for the given blocks."""
    blocks = tuple(blocks)
    return dict(zip(blocks, vgg(_chw(render), blocks=blocks), strict=True))
