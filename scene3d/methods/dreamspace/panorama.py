"""DreamSpace's panorama from the room's centre: geometry, coarse generation with a seamless wrap, tile refinement.

The paper (Yang et al., IEEE VR 2024, Sec. "coarse-to-fine panoramic texture generation") imagines a stylized 360°
panorama from the centre of the captured room, aligned to the room twice: by its *geometry* (the panorama's depth
conditions a depth ControlNet) and by its *texture* (the scan's own colours, seen from the centre, start the
generation, SDEdit-style). Then it refines the panorama at a higher resolution. No code was released; what the
paper leaves open is decided here (the method README lists each decision):

* **Geometry** (:func:`panorama_geometry`): one equirectangular ray cast of the room mesh from the centre gives the
  distance, normals and hit mask of every pixel, and the scan's colours there (:func:`scan_colors`).
* **Coarse** (:func:`coarse_panorama`): ControlNet-depth generation at ``H × 2H`` (the paper's 512 × 1024); when the
  scan has colours, image-to-image from their panorama with ``texture_strength`` (1 ignores them).
* **Seamless wrap** (:func:`close_seam`): a panorama generated as a flat image does not continue across its left and
  right edges. It is rolled by half its width, so the seam runs down the middle, and a band around the seam is
  inpainted from both sides, then rolled back. The camera passed to the prior is turned with the roll
  (:func:`rolled_camera`), so a prior that answers from the scene (``groundtruth:``) is asked about the right view.
* **Fine** (:func:`tile_cameras`, :func:`render_tile`, :func:`blend_tile`): the coarse panorama is upsampled, then
  refined tile by tile: pinhole tiles from the centre, in rings of yaw that wrap around the room plus the two poles,
  overlapping their neighbours. Each tile is cut from the current fine panorama, refined by image-to-image under the
  tile's depth (ControlNet), and blended back with weights that fall to zero at the tile's border, so overlaps fade
  into each other and later tiles start from what earlier ones made. Tiles are perspective images (what Stable
  Diffusion was trained on) rather than crops of the distorted equirectangular image; a tile across the seam is an
  ordinary tile, so the refinement keeps the wrap closed.

:func:`seam_error` measures the wrap: the mean absolute difference between the first and last columns, to compare
with :func:`neighbour_difference`, the mean difference between neighbouring columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from scene3d.core.cameras import CameraBatch, equirect_pixels, equirect_rays, intrinsics_from_fov, project_pinhole
from scene3d.priors.diffusion import ControlInput, StableDiffusionPrior
from scene3d.priors.sampling import image_to_image, inpaint, text_to_image
from scene3d.renderers.mesh import MeshHits, MeshRaycaster, interpolate


@dataclass(frozen=True)
class PanoramaGeometry:
    """The room seen from the centre, per panorama pixel."""

    distance: Float[Tensor, "H W"]
    """Distance along the ray to the first surface (0 where the ray escapes, e.g. through a hole in a scan)."""
    normals: Float[Tensor, "H W 3"]
    """Unit world normals of the surfaces seen, turned towards the centre (0 where the ray escapes)."""
    mask: Bool[Tensor, "H W"]
    """Rays that hit the room."""


def panorama_camera(centre: Float[Tensor, "3"]) -> Float[Tensor, "4 4"]:
    """The panorama's camera-to-world at ``centre``: the middle column looks along world +Y, up is +Z (the synthetic
    ``room``'s ``panorama_pose``)."""
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    c2w[:3, 3] = centre.float()
    return c2w


def rotation_y(angle: float) -> Float[Tensor, "3 3"]:
    """Rotation by ``angle`` (radians) about the camera's +Y (up) axis."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_x(angle: float) -> Float[Tensor, "3 3"]:
    """Rotation by ``angle`` (radians) about the camera's +X (right) axis; positive turns the view up."""
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rolled_camera(c2w: Float[Tensor, "4 4"], shift: int, width: int) -> Float[Tensor, "4 4"]:
    """The camera whose equirectangular panorama is ``torch.roll(panorama, shift, dims=-1)`` of ``c2w``'s.

    Column ``u`` of the rolled image shows longitude ``φ − Δ`` of the original (``Δ = 2π · shift / W``); since
    ``R_y(Δ) d(φ) = d(φ − Δ)`` for the directions ``d`` of :func:`scene3d.core.cameras.equirect_directions`, the
    rolled camera is ``c2w · R_y(Δ)``.
    """
    out = c2w.clone()
    out[:3, :3] = c2w[:3, :3] @ rotation_y(2.0 * math.pi * shift / width).to(c2w)
    return out


def panorama_geometry(
    raycaster: MeshRaycaster, c2w: Float[Tensor, "4 4"], width: int, height: int
) -> tuple[PanoramaGeometry, MeshHits]:
    """Distance, normals and hit mask of the equirectangular panorama at ``c2w`` (and the raw hits)."""
    hits = raycaster.cast_equirect(c2w, width, height)
    distance = torch.where(hits.mask, hits.distance, torch.zeros_like(hits.distance))
    facing = torch.where(hits.front_facing[..., None], hits.normals, -hits.normals)
    normals = torch.where(hits.mask[..., None], facing, torch.zeros_like(facing))
    return PanoramaGeometry(distance=distance, normals=normals, mask=hits.mask), hits


def depth_control(distance: Float[Tensor, "*batch H W"], mask: Bool[Tensor, "*batch H W"]) -> Float[Tensor, "*batch 3 H W"]:
    """ControlNet-depth conditioning image: inverse depth normalised per image to [0, 1] (near = white, as the
    MiDaS-style maps the depth ControlNets were trained on), 0 where nothing was hit, repeated to 3 channels.

    The 2nd and 98th percentiles of the inverse depth map to 0 and 1, so one very close surface does not wash out
    the rest."""
    inv = torch.where(mask, 1.0 / distance.clamp_min(1e-6), torch.zeros_like(distance))
    flat_inv, flat_mask = inv.reshape(-1, *inv.shape[-2:]), mask.reshape(-1, *mask.shape[-2:])
    out = torch.zeros_like(flat_inv)
    for index in range(flat_inv.shape[0]):
        values = flat_inv[index][flat_mask[index]]
        if values.numel() == 0:
            continue
        lo, hi = torch.quantile(values, 0.02), torch.quantile(values, 0.98)
        out[index] = ((flat_inv[index] - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0) * flat_mask[index]
    out = out.reshape(inv.shape)
    return out.unsqueeze(-3).expand(*out.shape[:-2], 3, *out.shape[-2:])


def scan_colors(hits: MeshHits, corner_colors: Float[Tensor, "F 3 3"] | None) -> Float[Tensor, "*batch 3"] | None:
    """The scan's colours at the hits (``None`` for a scan without colours); 0.5 grey where a ray escaped."""
    if corner_colors is None:
        return None
    return interpolate(hits, corner_colors, fill=0.5).clamp(0.0, 1.0)


def sample_equirect(panorama: Float[Tensor, "C H W"], uv: Float[Tensor, "*batch 2"]) -> Float[Tensor, "*batch C"]:
    """Bilinear look-up of an equirectangular image at continuous pixel coordinates (pixel centres at +0.5), wrapping
    around horizontally (the left and right edges are neighbours) and clamping at the poles."""
    c, h, w = panorama.shape
    padded = torch.cat([panorama[..., -1:], panorama, panorama[..., :1]], dim=-1)  # one wrapped column each side
    u = torch.remainder(uv[..., 0], w) + 1.0
    grid = torch.stack([2.0 * u / (w + 2) - 1.0, 2.0 * uv[..., 1] / h - 1.0], dim=-1)
    out = F.grid_sample(padded[None], grid.reshape(1, 1, -1, 2).to(panorama.dtype), mode="bilinear",
                        padding_mode="border", align_corners=False)  # fmt: skip
    return out[0, :, 0].T.reshape(*uv.shape[:-1], c)


def resize_equirect(panorama: Float[Tensor, "C H W"], height: int, width: int) -> Float[Tensor, "C h w"]:
    """Resample an equirectangular image to another size, bilinear with the horizontal wrap (no seam appears)."""
    v, u = torch.meshgrid(
        (torch.arange(height, dtype=torch.float32, device=panorama.device) + 0.5) * panorama.shape[1] / height,
        (torch.arange(width, dtype=torch.float32, device=panorama.device) + 0.5) * panorama.shape[2] / width,
        indexing="ij",
    )
    return sample_equirect(panorama, torch.stack([u, v], -1)).permute(2, 0, 1)


def seam_band(height: int, width: int, fraction: float) -> Bool[Tensor, "H W"]:
    """Mask of a vertical band ``fraction`` of the width wide, centred on the middle column (where the seam lies
    after rolling by half the width)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"seam band fraction must be in (0, 1), got {fraction}")
    half = max(1, round(fraction * width / 2))
    cols = torch.arange(width)
    band = (cols >= width // 2 - half) & (cols < width // 2 + half)
    return band[None, :].expand(height, width)


def seam_error(panorama: Float[Tensor, "C H W"]) -> float:
    """Mean absolute difference between the last and the first column (the wrap)."""
    return float((panorama[..., -1] - panorama[..., 0]).abs().mean())


def neighbour_difference(panorama: Float[Tensor, "C H W"]) -> float:
    """Mean absolute difference between neighbouring columns inside the image (what a seam is compared to)."""
    return float((panorama[..., 1:] - panorama[..., :-1]).abs().mean())


@dataclass(frozen=True)
class TileLayout:
    """Pinhole tiles from the centre that cover the panorama with overlap."""

    rings: tuple[tuple[float, int], ...] = ((0.0, 8), (50.0, 6), (-50.0, 6))
    """``(pitch in degrees, number of tiles)`` per ring of yaw; a ring's tiles are evenly spaced all around."""
    poles: bool = True
    """Add one tile looking straight up and one straight down."""
    fov_deg: float = 90.0
    """Field of view of every (square) tile."""


def tile_cameras(c2w: Float[Tensor, "4 4"], layout: TileLayout) -> Float[Tensor, "N 4 4"]:
    """Camera-to-world of every tile: ``c2w · R_y(yaw) · R_x(pitch)`` (yaw about the panorama's up, pitch about the
    tile's right axis), rings in order, then the poles."""
    tiles = []
    pitches = [(p, n) for p, n in layout.rings] + ([(90.0, 1), (-90.0, 1)] if layout.poles else [])
    for pitch, count in pitches:
        if count < 1:
            raise ValueError(f"a tile ring needs at least one tile, got {count} at pitch {pitch}")
        for k in range(count):
            out = c2w.clone()
            yaw = 2.0 * math.pi * k / count
            out[:3, :3] = c2w[:3, :3] @ rotation_y(yaw).to(c2w) @ rotation_x(math.radians(pitch)).to(c2w)
            tiles.append(out)
    return torch.stack(tiles)


def tile_intrinsics(layout: TileLayout, size: int) -> Float[Tensor, "3 3"]:
    """Intrinsics of a ``size × size`` tile."""
    return intrinsics_from_fov(layout.fov_deg, size, size)


def render_tile(
    panorama: Float[Tensor, "C H W"], pano_c2w: Float[Tensor, "4 4"], tile_c2w: Float[Tensor, "4 4"],
    K: Float[Tensor, "3 3"], size: int,
) -> Float[Tensor, "C size size"]:  # fmt: skip
    """The pinhole tile's view of the panorama (both cameras at the same centre): each tile pixel's direction, in the
    panorama's camera axes, looked up in the panorama."""
    from scene3d.core.cameras import pinhole_rays

    _, directions = pinhole_rays(tile_c2w.float(), K.float(), size, size)
    d_cam = directions @ pano_c2w[:3, :3].float()  # world -> panorama camera (row vectors: d R)
    uv = equirect_pixels(d_cam, panorama.shape[2], panorama.shape[1])
    return sample_equirect(panorama, uv).permute(2, 0, 1)


def tile_weight_image(size: int) -> Float[Tensor, "size size"]:
    """Blending weight over a tile: ``(1 − |x|)(1 − |y|)`` in normalised coordinates, 1 in the centre, 0 at the
    border, so overlapping tiles fade into each other."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    w = 1.0 - t.abs()
    return w[:, None] * w[None, :]


def blend_tile(
    color_sum: Float[Tensor, "C H W"], weight_sum: Float[Tensor, "H W"], tile: Float[Tensor, "C s s"],
    pano_c2w: Float[Tensor, "4 4"], tile_c2w: Float[Tensor, "4 4"], K: Float[Tensor, "3 3"],
) -> tuple[Float[Tensor, "C H W"], Float[Tensor, "H W"]]:  # fmt: skip
    """Add a refined tile into the panorama's running weighted sums: every panorama pixel whose direction falls in
    the tile takes the tile's colour there (bilinear) with the tile's border-fading weight."""
    _, h, w = color_sum.shape
    size = tile.shape[-1]
    origins, directions = equirect_rays(pano_c2w.float(), w, h)
    points = (origins + directions).reshape(1, -1, 3)  # a point along each panorama ray (both share the centre)
    uv, z = project_pinhole(points, tile_c2w.float()[None], K.float()[None])
    uv, z = uv[0], z[0]
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= size) & (uv[:, 1] >= 0) & (uv[:, 1] <= size)
    grid = (uv / size * 2.0 - 1.0).reshape(1, 1, -1, 2)
    colors = F.grid_sample(tile[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0]
    weights = F.grid_sample(tile_weight_image(size)[None, None], grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)[0, 0, 0]  # fmt: skip
    weights = torch.where(inside, weights, torch.zeros_like(weights)).reshape(h, w)
    return color_sum + colors.reshape(-1, h, w) * weights, weight_sum + weights


def panorama_cameras(c2w: Float[Tensor, "4 4"], width: int, height: int) -> CameraBatch:
    """One equirectangular camera (for the priors' ``cameras=``)."""
    return CameraBatch.equirectangular(c2w[None].float(), width, height)


@dataclass(frozen=True)
class SamplingSettings:
    """How each prior call samples (shared by the coarse panorama, the seam, the tiles and the inpainted views)."""

    steps: int = 50
    """Denoising steps (DDIM-like schedulers of the presets)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance."""
    negative_prompt: str = ""
    """Negative prompt of every call."""


def coarse_panorama(
    prior: StableDiffusionPrior,
    prompt: str,
    control: Float[Tensor, "3 H W"],
    cue: Float[Tensor, "3 H W"] | None,
    camera: CameraBatch,
    *,
    sampling: SamplingSettings,
    texture_strength: float,
    control_scale: float,
    generator: torch.Generator,
) -> Float[Tensor, "3 H W"]:
    """The coarse panorama: depth-ControlNet generation (geometry cue), started from the scan's colours with SDEdit
    strength ``texture_strength`` when it has any (texture cue; 1.0 ignores them)."""
    control_in = ControlInput(control[None].to(prior.device), scale=control_scale)
    if cue is not None and texture_strength < 1.0:
        out = image_to_image(
            prior, cue[None].to(prior.device), prompt, strength=texture_strength, negative_prompt=sampling.negative_prompt,
            num_inference_steps=sampling.steps, guidance_scale=sampling.guidance_scale, generator=generator,
            control=control_in, cameras=camera,
        )  # fmt: skip
    else:
        out = text_to_image(
            prior, prompt, negative_prompt=sampling.negative_prompt, height=control.shape[1], width=control.shape[2],
            num_inference_steps=sampling.steps, guidance_scale=sampling.guidance_scale, generator=generator,
            control=control_in, cameras=camera,
        )  # fmt: skip
    return out.images[0].float().cpu().clamp(0.0, 1.0)


Inpaint = Callable[[Float[Tensor, "3 H W"], Float[Tensor, "1 H W"], CameraBatch], Float[Tensor, "3 H W"]]
"""``fill(image, mask, camera)``: the image with the masked region (1) filled in, seen from ``camera``."""


def prior_inpainter(
    inpainter: StableDiffusionPrior, prompt: str, *, sampling: SamplingSettings, generator: torch.Generator
) -> Inpaint:
    """An :data:`Inpaint` that asks an inpainting prior (SD 2 inpainting, ``tiny-random``, ``groundtruth:``)."""

    def fill(image: Tensor, mask: Tensor, camera: CameraBatch) -> Tensor:
        out = inpaint(
            inpainter, image[None].to(inpainter.device), mask[None].to(inpainter.device), prompt,
            negative_prompt=sampling.negative_prompt, num_inference_steps=sampling.steps,
            guidance_scale=sampling.guidance_scale, generator=generator, cameras=camera,
        )  # fmt: skip
        return out.images[0].float().cpu().clamp(0.0, 1.0)

    return fill


def close_seam(
    panorama: Float[Tensor, "3 H W"], c2w: Float[Tensor, "4 4"], fill: Inpaint, *, band_fraction: float
) -> Float[Tensor, "3 H W"]:
    """Make the panorama continue across its left/right edges: roll it by half its width (the seam now runs down the
    middle), inpaint a band of ``band_fraction`` of the width around it from both sides with ``fill``, roll back.
    ``fill`` is asked at the rolled camera (:func:`rolled_camera`)."""
    _, h, w = panorama.shape
    shift = w // 2
    rolled = torch.roll(panorama, shift, dims=-1)
    mask = seam_band(h, w, band_fraction).float()[None]
    filled = fill(rolled, mask, panorama_cameras(rolled_camera(c2w, shift, w), w, h))
    return torch.roll(filled, -shift, dims=-1)


def refine_tile(
    prior: StableDiffusionPrior,
    tile: Float[Tensor, "3 s s"],
    control: Float[Tensor, "3 s s"],
    camera: CameraBatch,
    prompt: str,
    *,
    strength: float,
    control_scale: float,
    sampling: SamplingSettings,
    generator: torch.Generator,
) -> Float[Tensor, "3 s s"]:
    """One fine tile: image-to-image of the tile cut from the current panorama (SDEdit ``strength``) under the tile's
    depth (ControlNet), so detail is added at the fine resolution while the coarse layout is kept."""
    out = image_to_image(
        prior, tile[None].to(prior.device), prompt, strength=strength, negative_prompt=sampling.negative_prompt,
        num_inference_steps=sampling.steps, guidance_scale=sampling.guidance_scale, generator=generator,
        control=ControlInput(control[None].to(prior.device), scale=control_scale), cameras=camera,
    )  # fmt: skip
    return out.images[0].float().cpu().clamp(0.0, 1.0)
