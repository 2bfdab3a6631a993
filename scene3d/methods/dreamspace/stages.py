"""The work of each DreamSpace stage (see :mod:`scene3d.methods.dreamspace.pipeline`), one trainer step at a time.

Each ``run_<kind>(pipeline, step, index)`` does the ``index``-th step of its kind and returns metrics to log; the
math is in :mod:`.panorama`, :mod:`.texturing`, :mod:`.viewpoints` and :mod:`.imitation`. Every generation step
draws from its own seeded generator (``seed + step``), so a resumed run makes the same images.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from scene3d.core.cameras import CameraBatch, intrinsics_from_fov, pinhole_rays
from scene3d.methods.common.views import GeneratedView
from scene3d.priors.sampling import inpaint
from scene3d.renderers.atlas import fill_gutters, unwrap
from scene3d.renderers.mesh import interpolate

from scene3d.methods.dreamspace.imitation import imitation_loss, sample_batch
from scene3d.methods.dreamspace.panorama import (
    TileLayout,
    blend_tile,
    close_seam,
    coarse_panorama,
    depth_control,
    neighbour_difference,
    panorama_camera,
    panorama_cameras,
    panorama_geometry,
    prior_inpainter,
    refine_tile,
    render_tile,
    resize_equirect,
    scan_colors,
    seam_error,
    tile_cameras,
    tile_intrinsics,
)
from scene3d.methods.dreamspace.texturing import (
    TexelSource,
    needs_texture,
    project_panorama,
    project_view,
    render_texture,
    texel_coverage,
)
from scene3d.methods.dreamspace.viewpoints import free_positions, select_viewpoint

if TYPE_CHECKING:
    from scene3d.methods.dreamspace.pipeline import DreamSpacePipeline

logger = logging.getLogger(__name__)

ACTIVITY = {
    "geometry": "unwrapping", "coarse": "generating", "tile": "refining", "project": "projecting",
    "view": "inpainting", "imitate": "training", "finish": "filling",
}  # fmt: skip
"""What the status line says a stage is doing."""


def tile_list(layout: TileLayout) -> list[tuple[float, int]]:
    """One entry per tile of ``layout`` (for counting stages without building cameras)."""
    tiles = [(pitch, k) for pitch, count in layout.rings for k in range(count)]
    return tiles + ([(90.0, 0), (-90.0, 0)] if layout.poles else [])


def smooth_loop(c2w: Float[Tensor, "N 4 4"], steps: int) -> Float[Tensor, "M 4 4"]:
    """Poses interpolated between consecutive ``c2w`` (positions linearly, rotations by slerp; nerfstudio's)."""
    from nerfstudio.cameras.camera_utils import get_interpolated_poses_many

    K = torch.eye(3).expand(len(c2w), 3, 3)
    poses, _ = get_interpolated_poses_many(c2w[:, :3, :4].float(), K, steps_per_transition=steps)
    out = torch.eye(4).repeat(len(poses), 1, 1)
    out[:, :3, :4] = poses.float()
    return out


# ---------------------------------------------------------------------- shared helpers
def surface_sources(p: DreamSpacePipeline) -> Tensor:
    """:class:`TexelSource` of every surface texel."""
    texels = p.model.texels
    return p.model.source[texels.rows, texels.cols]


def set_texels(p: DreamSpacePipeline, seen: Bool[Tensor, " T"], colors: Float[Tensor, "T 3"], source: TexelSource) -> None:
    """Colour the texels ``seen`` and record their source."""
    texels, model = p.model.texels, p.model
    rows, cols = texels.rows[seen.to(texels.rows.device)], texels.cols[seen.to(texels.rows.device)]
    model.texture[rows, cols] = colors[seen].to(model.texture)
    model.source[rows, cols] = int(source)


def refresh_display(p: DreamSpacePipeline, *, use_network: bool) -> None:
    """The displayed texture: the coloured texels, the imitating network's prediction (or grey) in the gaps, and
    the gutters around the charts filled so bilinear look-ups at chart borders stay on the chart's colours."""
    model, texels = p.model, p.model.texels
    colors = model.texture[texels.rows, texels.cols].clone()
    empty = surface_sources(p) == TexelSource.EMPTY
    if bool(empty.any()):
        if use_network:
            colors[empty] = model.imitation.predict(texels.positions[empty].to(model.device),
                                                    texels.normals[empty].to(model.device)).to(colors)  # fmt: skip
        else:
            colors[empty] = 0.5
    image = texels.to_image(colors)
    model.display = fill_gutters(image, texels.mask.to(image.device), iterations=2 * p.config.atlas_padding + 2)


def _generator(p: DreamSpacePipeline, step: int) -> torch.Generator:
    return p.generator(step)


# ---------------------------------------------------------------------- stages
def run_geometry(p: DreamSpacePipeline, step: int, index: int) -> dict[str, float]:
    """Unwrap the room into the texture atlas and bake its texels; set up the panorama's buffers."""
    model, cfg = p.model, p.config
    atlas = unwrap(model.room_vertices.cpu(), model.room_faces.cpu(), resolution=cfg.atlas_resolution,
                   padding=cfg.atlas_padding)  # fmt: skip
    model.set_atlas(atlas)
    model.panorama_c2w = panorama_camera(model.centre.cpu()).to(model.device)
    h, w = cfg.fine_height, 2 * cfg.fine_height
    model.panorama = torch.zeros(3, h, w, device=model.device)
    model.panorama_weight = torch.zeros(h, w, device=model.device)
    texels = model.texels
    logger.info("atlas %dx%d, %d surface texels, %d faces", atlas.width, atlas.height, texels.count, len(atlas.faces))
    return {"surface_texels": float(texels.count)}


def run_coarse(p: DreamSpacePipeline, step: int, index: int) -> dict[str, float]:
    """The coarse panorama from the centre (geometry and texture cues), its seam closed (:mod:`.panorama`)."""
    model, cfg = p.model, p.config
    c2w = model.panorama_c2w.cpu()
    h, w = cfg.coarse_height, 2 * cfg.coarse_height
    geometry, hits = panorama_geometry(model.raycaster(), c2w.to(model.device), w, h)
    control = depth_control(geometry.distance, geometry.mask).cpu()
    corner_colors = None if float(model.room_colors[0, 0]) < 0 else model.room_colors[model.room_faces]
    cue = scan_colors(hits, corner_colors)
    cue = None if cue is None else cue.permute(2, 0, 1).cpu()
    generator = _generator(p, step)
    coarse = coarse_panorama(
        p.prior("controlnet"), p.prompt, control, cue, panorama_cameras(c2w, w, h), sampling=cfg.sampling(),
        texture_strength=cfg.texture_strength, control_scale=cfg.control_scale, generator=generator,
    )  # fmt: skip
    before = seam_error(coarse)
    fill = prior_inpainter(p.prior("inpainting"), p.prompt, sampling=cfg.sampling(), generator=generator)
    coarse = close_seam(coarse, c2w, fill, band_fraction=cfg.seam_band)
    model.coarse = resize_equirect(coarse, cfg.fine_height, 2 * cfg.fine_height).to(model.device)
    p.write_image("coarse_panorama.png", coarse)
    if cue is not None:
        p.write_image("scan_panorama.png", cue)
    return {"coarse_seam_before": before, "coarse_seam": seam_error(coarse), "coarse_neighbour": neighbour_difference(coarse)}


def run_tile(p: DreamSpacePipeline, step: int, index: int) -> dict[str, float]:
    """Refine fine tile ``index`` and blend it into the fine panorama (:mod:`.panorama`)."""
    model, cfg = p.model, p.config
    c2w = model.panorama_c2w.cpu()
    tile_c2w = tile_cameras(c2w, cfg.tile_layout)[index]
    size = cfg.tile_size
    K = tile_intrinsics(cfg.tile_layout, size)
    stored = p.stored_view("tile", index)
    if stored is not None:
        tile = stored.rgb.permute(2, 0, 1).float()
    else:
        cut = render_tile(model.current_panorama().cpu(), c2w, tile_c2w, K, size)
        hits = model.raycaster().cast_pinhole(tile_c2w.to(model.device), K.to(model.device), size, size)
        z = hits.z_depth(tile_c2w.to(model.device))
        control = depth_control(torch.where(hits.mask, z, torch.zeros_like(z)), hits.mask).cpu()
        camera = CameraBatch.pinhole(tile_c2w[None], K, size, size)
        tile = refine_tile(
            p.prior("controlnet"), cut, control, camera, p.prompt, strength=cfg.tile_strength,
            control_scale=cfg.control_scale, sampling=cfg.sampling(), generator=_generator(p, step),
        )  # fmt: skip
        p.store_view(GeneratedView(rgb=tile.permute(1, 2, 0), c2w=tile_c2w, K=K, depth=z.cpu(), stage="tile",
                                   meta={"index": index}))  # fmt: skip
    color_sum, weight_sum = blend_tile(model.panorama.cpu(), model.panorama_weight.cpu(), tile, c2w, tile_c2w, K)
    model.panorama, model.panorama_weight = color_sum.to(model.device), weight_sum.to(model.device)
    return {}


def run_project(p: DreamSpacePipeline, step: int, index: int) -> dict[str, float]:
    """Back-project the fine panorama onto the texels the centre sees confidently."""
    model, cfg = p.model, p.config
    panorama = model.current_panorama().cpu()
    texels = model.texels
    projection = project_panorama(model.raycaster(), texels, panorama, model.panorama_c2w.cpu(), min_cos=0.0)
    confident = projection.seen & (projection.cosine >= cfg.panorama_min_cos)
    set_texels(p, confident, projection.colors, TexelSource.PANORAMA)
    # grazing texels keep the panorama's colour as a fallback (all of them count as the panorama's without
    # propagation: nothing else will colour them)
    grazing = projection.seen & ~confident
    set_texels(p, grazing, projection.colors, TexelSource.GRAZING if cfg.propagate else TexelSource.PANORAMA)
    refresh_display(p, use_network=False)
    p.write_image("panorama.png", panorama)
    coverage = texel_coverage(model.source, texels.mask.to(model.source.device))
    logger.info("panorama textured %.1f%% of the surface texels", 100 * coverage)
    return {"coverage": coverage, "seam": seam_error(panorama), "neighbour": neighbour_difference(panorama)}


def boundary_discontinuity(image: Float[Tensor, "3 H W"], mask: Bool[Tensor, "H W"]) -> float:
    """Mean colour step across the mask's border (4-neighbour pairs with one pixel in and one out): how visibly an
    inpainted region stands out from the known pixels around it."""
    steps = []
    for dim in (1, 2):
        a, b = image.narrow(dim, 0, image.shape[dim] - 1), image.narrow(dim, 1, image.shape[dim] - 1)
        ma, mb = mask.narrow(dim - 1, 0, mask.shape[dim - 1] - 1), mask.narrow(dim - 1, 1, mask.shape[dim - 1] - 1)
        across = ma ^ mb
        if bool(across.any()):
            steps.append((a - b).abs().mean(0)[across])
    return float(torch.cat(steps).mean()) if steps else 0.0


def run_view(p: DreamSpacePipeline, step: int, index: int) -> dict[str, float]:
    """Interior view ``index``: choose it where texels are still needed, render what is known, inpaint the
    confident gaps, project the result onto those texels."""
    model, cfg = p.model, p.config
    if p._propagation_over:
        return {}
    texels, raycaster = model.texels, model.raycaster()
    needed = needs_texture(surface_sources(p)).cpu()
    size = cfg.view_size
    K = intrinsics_from_fov(cfg.view_fov, size, size)
    stored = p.stored_view("view", index)
    if stored is not None:
        c2w, image = stored.c2w, stored.rgb.permute(2, 0, 1).float()
    else:
        generator = _generator(p, step)
        eyes = free_positions(raycaster, model.room.bounds, cfg.view_candidates, generator, clearance=cfg.view_clearance)
        viewpoint = select_viewpoint(raycaster, texels, needed, eyes, K, size, generator, min_cos=cfg.view_min_cos)
        if viewpoint is None:
            logger.info("no interior viewpoint adds texels: %d needed texels left to the imitating network",
                        int(needed.sum()))  # fmt: skip
            p._propagation_over = True
            return {}
        c2w = viewpoint.c2w
        known, mask = view_inputs(p, c2w, K, size)
        if not bool(mask.any()):
            return {}
        image, chosen, scores = inpaint_view(p, known, mask, c2w, K, generator)
        meta = {"index": index, "candidate": chosen, "boundary_scores": [round(x, 5) for x in scores]}
        p.store_view(GeneratedView(rgb=image.permute(1, 2, 0), c2w=c2w, K=K, mask=mask, stage="view", meta=meta))
    projection = project_view(raycaster, texels, image, c2w, K, min_cos=cfg.view_min_cos, restrict=needed)
    set_texels(p, projection.seen, projection.colors, TexelSource.INPAINTED)
    refresh_display(p, use_network=False)
    coverage = texel_coverage(model.source, texels.mask.to(model.source.device))
    return {"view_gain": float(projection.seen.sum()), "coverage": coverage}


def view_inputs(
    p: DreamSpacePipeline, c2w: Float[Tensor, "4 4"], K: Float[Tensor, "3 3"], size: int
) -> tuple[Float[Tensor, "3 H W"], Bool[Tensor, "H W"]]:
    """The room as textured so far seen from ``c2w``, and the pixels to inpaint: surfaces whose texel is still
    empty (or only seen at a grazing angle) and that the view sees confidently, grown by one pixel so the inpainting
    blends into the border."""
    model, cfg = p.model, p.config
    origins, directions = pinhole_rays(c2w.to(model.device), K.to(model.device), size, size)
    render = render_texture(model.raycaster(), model.atlas_uvs[model.atlas_faces], model.display, origins, directions,
                            background=model.background)  # fmt: skip
    hits = render.hits
    uv = interpolate(hits, model.atlas_uvs[model.atlas_faces])
    h, w = model.texture.shape[:2]
    col = (uv[..., 0] * w).long().clamp(0, w - 1)
    row = ((1.0 - uv[..., 1]) * h).long().clamp(0, h - 1)
    empty = needs_texture(model.source[row, col])
    cos = (hits.normals * hits.directions).sum(-1).abs()
    mask = hits.mask & empty & (cos >= cfg.view_min_cos)
    mask = F.max_pool2d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0.5
    return render.rgb.permute(2, 0, 1).cpu(), (mask & hits.mask).cpu()


def inpaint_view(
    p: DreamSpacePipeline, known: Float[Tensor, "3 H W"], mask: Bool[Tensor, "H W"], c2w: Float[Tensor, "4 4"],
    K: Float[Tensor, "3 3"], generator: torch.Generator,
) -> tuple[Float[Tensor, "3 H W"], int, list[float]]:  # fmt: skip
    """Inpaint the view's gaps; with several candidates, keep the one whose border with the known pixels is the most
    seamless (:func:`boundary_discontinuity`). Returns the image, its candidate index and every candidate's score."""
    cfg = p.config
    prior = p.prior("inpainting")
    size = known.shape[-1]
    out = inpaint(
        prior, known[None].to(prior.device), mask[None, None].float().to(prior.device), p.prompt,
        negative_prompt=cfg.negative_prompt, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
        num_images_per_prompt=cfg.inpaint_candidates, generator=generator,
        cameras=CameraBatch.pinhole(c2w[None], K, size, size),
    )  # fmt: skip
    candidates = out.images.float().cpu().clamp(0.0, 1.0)
    scores = [boundary_discontinuity(c, mask) for c in candidates]
    chosen = int(np.argmin(scores))
    return candidates[chosen], chosen, scores


def imitation_step(p: DreamSpacePipeline, step: int, step_in_stage: int, optimizers) -> Tensor:  # noqa: ANN001
    """One gradient step of the imitating network on a batch of coloured texels."""
    model, cfg = p.model, p.config
    texels = model.texels
    if step_in_stage == 0 or getattr(p, "_imitation_index", None) is None:
        sources = surface_sources(p)  # the confident texels: the panorama's and the inpainted views'
        p._imitation_index = torch.nonzero((sources == TexelSource.PANORAMA) | (sources == TexelSource.INPAINTED)).squeeze(-1)
        for optimizer in optimizers.optimizers.values():
            optimizer.state.clear()  # the stage starts from fresh moments
    index = p._imitation_index
    if index.numel() == 0:
        return torch.zeros((), device=model.device)
    batch = index[sample_batch(index.numel(), cfg.imitation_batch, _generator(p, step), index.device)]
    rows, cols = texels.rows[batch], texels.cols[batch]
    loss = imitation_loss(model.imitation, texels.positions[batch].to(model.device), texels.normals[batch].to(model.device),
                          model.texture[rows, cols])  # fmt: skip
    optimizers.zero_grad_all()
    loss.backward()
    optimizers.optimizer_step_all()
    optimizers.scheduler_step_all(step)
    last = step_in_stage + 1 == p.schedule.at(step).stage.steps
    if (step_in_stage + 1) % max(1, cfg.imitation_refresh) == 0 or last:
        refresh_display(p, use_network=True)
    return loss.detach()


def run_finish(p: DreamSpacePipeline, step: int, index: int) -> dict[str, float]:
    """Fill every texel still empty (the imitating network; the panorama's mean colour with propagation off) and
    the gutters: the final texture."""
    model, cfg = p.model, p.config
    texels = model.texels
    empty = (surface_sources(p) == TexelSource.EMPTY).cpu()
    if bool(empty.any()):
        if cfg.propagate:
            colors = torch.zeros(texels.count, 3)
            colors[empty] = model.imitation.predict(texels.positions[empty].to(model.device),
                                                    texels.normals[empty].to(model.device)).cpu()  # fmt: skip
            set_texels(p, empty, colors, TexelSource.IMITATED)
        else:
            filled = ~empty
            mean = model.texture[texels.rows[filled], texels.cols[filled]].mean(0) if bool(filled.any()) else None
            colors = torch.full((texels.count, 3), 0.5) if mean is None else mean.cpu().expand(texels.count, 3).clone()
            set_texels(p, empty, colors, TexelSource.FILLED)
    refresh_display(p, use_network=cfg.propagate)
    coverage = texel_coverage(model.source, texels.mask.to(model.source.device))
    p.write_image("texture.png", model.display)
    p.write_camera_path()
    counts = torch.bincount(surface_sources(p).long().cpu(), minlength=len(TexelSource))
    logger.info("final texture: %s", ", ".join(f"{s.name.lower()} {100 * int(counts[s]) / texels.count:.1f}%"
                                                 for s in TexelSource if s != TexelSource.EMPTY))  # fmt: skip
    return {"coverage": coverage}
