"""Render a synthetic scene at any camera: :func:`render` (pinhole or equirectangular :class:`CameraBatch`).

The generator's own ray caster and shading (:class:`~scene3d.datasets.raycast.SceneRaycaster`) are used, so a render
at a stored view of a dataset is that view's image, depth, normals and mask (tested bit for bit). Colour is
anti-aliased over 2×2 sub-pixel rays and rounded to 8 bits, as the dataset's images are; ``antialias=False`` shades
the pixel-centre rays only (about 4× fewer rays). Depth, normals and masks are exact samples at the pixel centre.

Example:
    >>> from scene3d.datasets.stored import read_scene
    >>> stored = read_scene("/tmp/scene")  # doctest: +SKIP
    >>> out = render(stored.scene, CameraBatch.pinhole(stored.c2w[:1], stored.K, stored.width, stored.height))  # doctest: +SKIP
    >>> out.rgb.shape  # doctest: +SKIP
    torch.Size([1, 3, 128, 128])
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from scene3d.core.cameras import CameraBatch, equirect_directions, pinhole_rays
from scene3d.datasets.raycast import SceneRaycaster, to_uint8
from scene3d.datasets.scene import Scene

_SUBPIXEL = (-0.25, 0.25)  # as the generator's anti-aliasing (raycast._SUBPIXEL)
_RAYCASTERS: weakref.WeakKeyDictionary[Scene, SceneRaycaster] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class GroundTruthRender:
    """What a scene looks like from a batch of cameras (all on the CPU, float32 unless said)."""

    rgb: Float[Tensor, "B 3 H W"]
    """Colour in [0, 1], 8-bit values (``k / 255``), as the dataset's images."""
    depth: Float[Tensor, "B 1 H W"]
    """Pinhole: z-depth (along the camera's −Z) in metres; equirectangular: distance along the ray. 0 where the ray
    hits nothing."""
    normals: Float[Tensor, "B 3 H W"]
    """World-frame unit normals facing the camera; 0 where the ray hits nothing."""
    mask: Bool[Tensor, "B 1 H W"]
    """Foreground objects (not ground, walls, ceiling, background)."""
    hit: Bool[Tensor, "B 1 H W"]
    """Any surface (``depth > 0``)."""
    object_ids: Int[Tensor, "B 1 H W"]
    """Index into ``scene.objects`` of the surface at the pixel centre, −1 where the ray hits nothing."""


def raycaster_for(scene: Scene) -> SceneRaycaster:
    """The scene's ray caster, built once per scene object (its meshes and BVH) and kept while the scene lives."""
    caster = _RAYCASTERS.get(scene)
    if caster is None:
        caster = _RAYCASTERS[scene] = SceneRaycaster(scene)
    return caster


def _subpixel_rays(cameras: CameraBatch) -> tuple[np.ndarray, np.ndarray]:
    """``[4, B·H·W, 3]`` origins and directions of the 2×2 anti-aliasing rays of every pixel."""
    if cameras.model == "pinhole":
        assert cameras.K is not None
        sets = []
        for dy in _SUBPIXEL:
            for dx in _SUBPIXEL:
                K = cameras.K.float().clone()
                K[:, 0, 2] -= dx  # moving the principal point by -dx moves every ray through u + 0.5 + dx
                K[:, 1, 2] -= dy
                sets.append(pinhole_rays(cameras.c2w.float(), K, cameras.width, cameras.height))
        origins = torch.stack([o for o, _ in sets]).reshape(4, -1, 3)
        directions = torch.stack([d for _, d in sets]).reshape(4, -1, 3)
        return origins.numpy(), directions.numpy()
    # a panorama: the 2x finer grid, whose 2x2 blocks share the pixel's centre (as SceneRaycaster.render_equirect)
    h, w = cameras.height, cameras.width
    fine = equirect_directions(2 * w, 2 * h)  # (2H, 2W, 3)
    rot = cameras.c2w[:, :3, :3].float()
    d = torch.einsum("bij,hwj->bhwi", rot, fine)  # (B, 2H, 2W, 3)
    blocks = d.reshape(-1, h, 2, w, 2, 3).permute(2, 4, 0, 1, 3, 5).reshape(4, -1, 3)
    origins = cameras.c2w[:, None, None, :3, 3].float().expand(-1, h, w, 3).reshape(1, -1, 3).expand(4, -1, 3)
    return np.ascontiguousarray(origins.numpy()), np.ascontiguousarray(blocks.numpy())


def render(
    scene: Scene, cameras: CameraBatch, *, stylized: bool = False, antialias: bool = True
) -> GroundTruthRender:
    """Colour (the normal or the stylized look), depth, normals and masks of ``scene`` seen from ``cameras``.

    Args:
        scene: a synthetic scene (e.g. ``read_scene(path).scene``, or a variant of it); its ray caster is built on
            the first render and reused while the scene object lives.
        cameras: pinhole or equirectangular cameras.
        stylized: shade with the ``--stylized`` texture set (stylized textures, toon shading).
        antialias: average colour over 2×2 sub-pixel rays (the dataset's images are); ``False`` shades the pixel
            centres only.
    """
    caster = raycaster_for(scene)
    b, h, w = len(cameras), cameras.height, cameras.width
    cams = cameras.to("cpu")
    origins, directions = cams.rays()
    o = origins.float().reshape(-1, 3).numpy()
    d = directions.float().reshape(-1, 3).numpy()
    hits = caster.trace(o, d)
    if cams.model == "pinhole":
        forward = -cams.c2w[:, :3, 2].float().numpy()
        z = hits.t * np.einsum("mj,mj->m", d[hits.index], forward[hits.index // (h * w)])
    else:
        z = hits.t
    depth = hits.dense(z.astype(np.float32), 0.0)
    ids = hits.dense(hits.object_ids, -1)
    normals = hits.dense(hits.normals.astype(np.float32), 0.0)
    fg = np.zeros(len(ids), dtype=bool)
    fg[hits.index] = caster.foreground[hits.object_ids]
    if antialias:
        sub_o, sub_d = _subpixel_rays(cams)
        color = caster.supersampled(sub_o, sub_d, (stylized,))[0]
    else:
        color = caster.shade_hits(hits, d, stylized=stylized)
    rgb = torch.from_numpy(to_uint8(color).reshape(b, h, w, 3)).permute(0, 3, 1, 2).float() / 255.0
    return GroundTruthRender(
        rgb=rgb.contiguous(),
        depth=torch.from_numpy(depth.reshape(b, 1, h, w)),
        normals=torch.from_numpy(normals.reshape(b, h, w, 3)).permute(0, 3, 1, 2).contiguous(),
        mask=torch.from_numpy(fg.reshape(b, 1, h, w)),
        hit=torch.from_numpy((ids >= 0).reshape(b, 1, h, w)),
        object_ids=torch.from_numpy(ids.reshape(b, 1, h, w)),
    )
