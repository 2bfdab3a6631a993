"""Moving colour between images and the room's texture atlas, and rendering the textured room at any camera.

* :func:`project_panorama` / :func:`project_view` back-project an image onto the atlas: every surface texel
  (:class:`~scene3d.renderers.atlas.AtlasTexels`) that the camera sees (nothing of the room in between, facing the
  camera) takes the image's colour where it projects. A texel seen at a grazing angle is stretched over many texels
  and smeared by the generator, so only *confident* texels are textured: those whose surface faces the camera with
  ``cos θ ≥ min_cos``. The rest are left to the propagation stages (the paper's "confident regions" for inpainting
  from interior viewpoints; the imitating network for everything left).
* :func:`render_texture` renders the textured mesh: ray casting (:class:`~scene3d.renderers.mesh.MeshRaycaster`),
  UVs interpolated at the hits, a bilinear texture look-up; where a ray escapes, the background colour.
* :class:`TexelSource` tells, per texel, what coloured it; :func:`texel_coverage` is the fraction coloured.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from scene3d.core.cameras import equirect_pixels, project_pinhole
from scene3d.renderers.atlas import AtlasTexels, sample_texture
from scene3d.renderers.mesh import MeshHits, MeshRaycaster, interpolate

from scene3d.methods.dreamspace.panorama import sample_equirect


class TexelSource(IntEnum):
    """What coloured a texel (stored per texel as an int8 image, in the checkpoint)."""

    EMPTY = 0
    PANORAMA = 1
    """Back-projected from the panorama at the centre."""
    INPAINTED = 2
    """Back-projected from an inpainted interior view."""
    IMITATED = 3
    """Predicted by the imitating network."""
    FILLED = 4
    """The panorama's mean colour (propagation switched off)."""
    GRAZING = 5
    """Seen from the centre at a grazing angle only: the panorama's colour, kept unless an interior view textures the
    texel (not imitated, not used to train the imitating network)."""


def needs_texture(source: Tensor) -> Tensor:
    """Texels an interior view should texture: empty, or coloured only at a grazing angle."""
    return (source == TexelSource.EMPTY) | (source == TexelSource.GRAZING)


@dataclass(frozen=True)
class Projection:
    """Colours an image gives the texels it confidently sees."""

    colors: Float[Tensor, "T 3"]
    """Colour per texel (0 where not seen)."""
    seen: Bool[Tensor, " T"]
    """Texels the camera sees confidently."""
    cosine: Float[Tensor, " T"]
    """``|cos θ|`` between each texel's normal and the direction to the camera."""


def facing_cosine(
    positions: Float[Tensor, "N 3"], normals: Float[Tensor, "N 3"], centre: Float[Tensor, "3"]
) -> Float[Tensor, " N"]:
    """``|cos θ| = |n · (c − p)| / |c − p|`` of surface points towards ``centre``.

    The sign is dropped: scans are not reliably wound, and a surface's hidden side is excluded by the occlusion test
    (inside a room, the segment to the back of a piece of furniture crosses its front), not by its normal."""
    to_centre = centre.to(positions) - positions
    return (normals * to_centre).sum(-1).abs() / to_centre.norm(dim=-1).clamp_min(1e-9)


def confident_mask(
    raycaster: MeshRaycaster,
    positions: Float[Tensor, "N 3"],
    normals: Float[Tensor, "N 3"],
    c2w: Float[Tensor, "4 4"],
    *,
    min_cos: float,
    frame: tuple[Float[Tensor, "3 3"], int, int] | None = None,
) -> tuple[Bool[Tensor, " N"], Float[Tensor, " N"]]:
    """Which surface points the camera at ``c2w`` sees confidently (facing it at ``|cos θ| ≥ min_cos``, nothing of
    the room in between, and inside its image when ``frame = (K, width, height)`` of a pinhole camera), and every
    point's ``|cos θ|``."""
    centre = c2w[:3, 3].float()
    cosine = facing_cosine(positions.float(), normals.float(), centre)
    ok = cosine >= min_cos
    if frame is not None:
        K, width, height = frame
        ok &= MeshRaycaster.frustum(positions.float(), c2w[None].float(), K.float(), width, height)[0]
    candidates = torch.nonzero(ok).squeeze(-1)
    if candidates.numel():
        visible = raycaster.visibility(positions[candidates].float(), centre[None])[0]
        ok[candidates[~visible.to(ok.device)]] = False
    return ok, cosine


def project_panorama(
    raycaster: MeshRaycaster,
    texels: AtlasTexels,
    panorama: Float[Tensor, "3 H W"],
    c2w: Float[Tensor, "4 4"],
    *,
    min_cos: float,
) -> Projection:
    """Back-project an equirectangular panorama taken at ``c2w``'s centre onto the texels it confidently sees."""
    centre = c2w[:3, 3].float()
    seen, cosine = confident_mask(raycaster, texels.positions, texels.normals, c2w, min_cos=min_cos)
    colors = torch.zeros(texels.count, 3)
    index = torch.nonzero(seen).squeeze(-1)
    if index.numel():
        d_cam = (texels.positions[index].float() - centre) @ c2w[:3, :3].float()
        uv = equirect_pixels(d_cam, panorama.shape[2], panorama.shape[1])
        colors[index] = sample_equirect(panorama.float(), uv).clamp(0.0, 1.0)
    return Projection(colors=colors, seen=seen, cosine=cosine)


def project_view(
    raycaster: MeshRaycaster,
    texels: AtlasTexels,
    image: Float[Tensor, "3 H W"],
    c2w: Float[Tensor, "4 4"],
    K: Float[Tensor, "3 3"],
    *,
    min_cos: float,
    restrict: Bool[Tensor, " T"] | None = None,
) -> Projection:
    """Back-project a pinhole image onto the texels it confidently sees inside its frame (``restrict``: only those
    texels are considered, e.g. the ones still empty)."""
    _, h, w = image.shape
    seen, cosine = confident_mask(raycaster, texels.positions, texels.normals, c2w, min_cos=min_cos, frame=(K, w, h))
    if restrict is not None:
        seen &= restrict
    colors = torch.zeros(texels.count, 3)
    index = torch.nonzero(seen).squeeze(-1)
    if index.numel():
        uv, _ = project_pinhole(texels.positions[index].float()[None], c2w[None].float(), K[None].float())
        grid = torch.stack([uv[0, :, 0] / w * 2.0 - 1.0, uv[0, :, 1] / h * 2.0 - 1.0], -1).reshape(1, 1, -1, 2)
        sampled = torch.nn.functional.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="border",
                                                  align_corners=False)[0, :, 0].T  # fmt: skip
        colors[index] = sampled.clamp(0.0, 1.0)
    return Projection(colors=colors, seen=seen, cosine=cosine)


def texel_coverage(source: Tensor, surface: Bool[Tensor, "H W"]) -> float:
    """Fraction of the surface texels that hold a colour (any source but :attr:`TexelSource.EMPTY`)."""
    return float(((source != TexelSource.EMPTY) & surface).sum()) / max(int(surface.sum()), 1)


@dataclass(frozen=True)
class TexturedRender:
    """A render of the textured room."""

    rgb: Float[Tensor, "*batch 3"]
    depth: Float[Tensor, "*batch"]
    """Distance along the (unit) ray; 0 where it escaped."""
    mask: Bool[Tensor, "*batch"]
    """Rays that hit the room."""
    normals: Float[Tensor, "*batch 3"]
    """Unit normals facing the ray; 0 where it escaped."""
    hits: MeshHits


def render_texture(
    raycaster: MeshRaycaster,
    corner_uvs: Float[Tensor, "F 3 2"],
    texture: Float[Tensor, "H W 3"],
    origins: Float[Tensor, "*batch 3"],
    directions: Float[Tensor, "*batch 3"],
    *,
    background: Float[Tensor, "3"],
) -> TexturedRender:
    """Render the textured mesh along rays (module docstring)."""
    hits = raycaster.cast(origins, directions)
    uv = interpolate(hits, corner_uvs)
    rgb = sample_texture(texture.to(uv), uv)
    rgb = torch.where(hits.mask[..., None], rgb, background.to(rgb).expand_as(rgb))
    depth = torch.where(hits.mask, hits.distance, torch.zeros_like(hits.distance))
    normals = torch.where(hits.front_facing[..., None], hits.normals, -hits.normals) * hits.mask[..., None]
    return TexturedRender(rgb=rgb, depth=depth, mask=hits.mask, normals=normals, hits=hits)


def panorama_only_texture(
    texture: Float[Tensor, "H W 3"], source: Tensor, surface: Bool[Tensor, "H W"]
) -> Float[Tensor, "H W 3"]:
    """The texture with propagation switched off: the panorama's texels as they are, every other surface texel the
    mean colour of the panorama's texels (a neutral fill, kinder to the baseline than black)."""
    from_panorama = ((source == TexelSource.PANORAMA) | (source == TexelSource.GRAZING)) & surface
    if not bool(from_panorama.any()):
        return torch.full_like(texture, 0.5)
    mean = texture[from_panorama].mean(0)
    return torch.where(from_panorama[..., None], texture, mean.expand_as(texture))
