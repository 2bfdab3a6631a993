"""Scoring a DreamSpace texture against true renders (the benchmark's measurements, usable on any run).

:func:`render_views` renders the textured room at pinhole cameras with ``supersample × supersample`` rays per pixel
averaged, as the synthetic datasets' images are anti-aliased (2 × 2): a one-ray render of a sharp texture would
lose PSNR to aliasing that says nothing about the texture. :func:`interior_psnr` is the mean PSNR over views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import pinhole_rays
from scene3d.core.metrics import psnr
from scene3d.renderers.mesh import MeshRaycaster

from scene3d.methods.dreamspace.texturing import render_texture


@torch.no_grad()
def render_views(
    raycaster: MeshRaycaster,
    corner_uvs: Float[Tensor, "F 3 2"],
    texture: Float[Tensor, "H W 3"],
    c2w: Float[Tensor, "C 4 4"],
    K: Float[Tensor, "3 3"],
    width: int,
    height: int,
    *,
    supersample: int = 2,
    background: Float[Tensor, "3"] | None = None,
) -> Float[Tensor, "C 3 height width"]:
    """Renders of the textured room, ``supersample²`` rays per pixel averaged (the pixel's sub-grid centres)."""
    s = int(supersample)
    Ks = K.float().clone()
    Ks[:2] *= s  # the same field of view on an s-times finer pixel grid
    background = torch.zeros(3) if background is None else background
    out = []
    for m in c2w.float():
        origins, directions = pinhole_rays(m, Ks, width * s, height * s)
        rgb = render_texture(raycaster, corner_uvs, texture, origins, directions, background=background).rgb
        out.append(F.avg_pool2d(rgb.permute(2, 0, 1)[None], s)[0] if s > 1 else rgb.permute(2, 0, 1))
    return torch.stack(out)


def interior_psnr(renders: Float[Tensor, "C 3 H W"], targets: Float[Tensor, "C 3 H W"]) -> tuple[float, list[float]]:
    """Mean over views of the per-view PSNR (dB), and the per-view values."""
    values = [float(psnr(r[None].clamp(0, 1), t[None])) for r, t in zip(renders, targets)]
    return sum(values) / len(values), values


@torch.no_grad()
def pixel_sources(
    raycaster: MeshRaycaster,
    corner_uvs: Float[Tensor, "F 3 2"],
    source: Tensor,
    c2w: Float[Tensor, "C 4 4"],
    K: Float[Tensor, "3 3"],
    width: int,
    height: int,
) -> Tensor:
    """:class:`~scene3d.methods.dreamspace.texturing.TexelSource` of the texel under each pixel centre (``-1`` where
    the ray leaves the room), shape ``(C, H, W)``: where a view's error comes from."""
    from scene3d.renderers.mesh import interpolate

    h_tex, w_tex = source.shape
    out = []
    for m in c2w.float():
        origins, directions = pinhole_rays(m, K.float(), width, height)
        hits = raycaster.cast(origins, directions)
        uv = interpolate(hits, corner_uvs)
        col = (uv[..., 0] * w_tex).long().clamp(0, w_tex - 1)
        row = ((1.0 - uv[..., 1]) * h_tex).long().clamp(0, h_tex - 1)
        out.append(torch.where(hits.mask, source[row, col].long(), torch.full_like(row, -1)))
    return torch.stack(out)
