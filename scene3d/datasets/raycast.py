"""CPU ray casting of a :class:`~scene3d.datasets.scene.Scene` with open3d's ``RaycastingScene``.

One :class:`SceneRaycaster` per scene holds the Embree BVH of every object's world-space mesh. Rays come from
:mod:`scene3d.core.cameras` (pixel centres at +0.5, OpenGL camera axes), so the depth, normals and masks rendered
here line up with the rays nerfstudio's ``Cameras.generate_rays`` makes for the same ``transforms.json``.

Colour images are anti-aliased with 2×2 ordered-grid supersampling (sub-pixel offsets ±0.25 px, averaged in linear
[0, 1] before 8-bit rounding); depth, normals and masks come from the single pixel-centre ray, so they are exact
samples at the pixel centre. Arithmetic is float32 (depth error ≪ the 1 mm of the depth PNGs).

The ray casting itself is :class:`scene3d.renderers.mesh.MeshRaycaster` (open3d's Embree ``RaycastingScene``, one
geometry per object), which imports open3d on first use, so importing this module stays light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, UInt8

from scene3d.core.cameras import equirect_directions, pinhole_rays
from scene3d.datasets.materials import evaluate_texture, shade
from scene3d.datasets.scene import Scene

_SHADOW_OFFSET = 2e-3  # metres along the geometric normal: keeps shadow rays off their own triangle
_SUBPIXEL = (-0.25, 0.25)


@dataclass(frozen=True)
class Hits:
    """The rays of a batch of ``count`` that hit a surface (index ``index`` into the batch), and their hits."""

    count: int
    index: Int[np.ndarray, " M"]
    t: Float[np.ndarray, " M"]
    """Distance along the (unit) ray."""
    object_ids: Int[np.ndarray, " M"]
    """Index into ``scene.objects``."""
    points: Float[np.ndarray, "M 3"]
    normals: Float[np.ndarray, "M 3"]
    """Shading normals (interpolated on curved faces), unit, turned to face the ray origin."""
    geometric_normals: Float[np.ndarray, "M 3"]
    """Triangle normals, unit, turned to face the ray origin."""

    def dense(self, values: np.ndarray, fill: float | int) -> np.ndarray:
        """Scatter per-hit ``values`` into a ``count``-long array holding ``fill`` where rays missed."""
        out = np.full((self.count, *values.shape[1:]), fill, dtype=values.dtype)
        out[self.index] = values
        return out


@dataclass(frozen=True)
class ViewRender:
    """Everything rendered for one pinhole view."""

    rgb: UInt8[np.ndarray, "H W 3"]
    rgb_stylized: UInt8[np.ndarray, "H W 3"] | None
    depth: Float[np.ndarray, "H W"]
    """z-depth in metres (distance along the camera's −Z axis); 0 where the ray misses."""
    normals: Float[np.ndarray, "H W 3"]
    """World-space unit normals facing the camera; 0 where the ray misses."""
    mask: Bool[np.ndarray, "H W"]
    """True on foreground objects."""
    object_ids: Int[np.ndarray, "H W"]
    """Index into ``scene.objects`` of the object seen at the pixel centre, −1 where the ray misses."""


class SceneRaycaster:
    """Ray-casts and shades one scene.

    Args:
        scene: the scene to render; its meshes are built (or taken from their cache) once, here.
    """

    def __init__(self, scene: Scene) -> None:
        from scene3d.renderers.mesh import MeshRaycaster

        self.scene = scene
        meshes = [obj.world_mesh for obj in scene.objects]
        self._rc = MeshRaycaster.from_parts(
            [(torch.from_numpy(m.vertices.astype(np.float32)), torch.from_numpy(m.faces.astype(np.int64)))
             for m in meshes],  # fmt: skip
            backend="open3d",
        )
        corner_normals = [m.normals[m.faces] for m in meshes]
        corners = np.concatenate(corner_normals, axis=0)  # (F_total, 3 corners, 3)
        self._corner_normals = corners.astype(np.float32)
        # Faces whose three vertex normals agree are flat: their shading normal is the triangle normal.
        self._curved_face = np.abs(corners - corners.mean(axis=1, keepdims=True)).max(axis=(1, 2)) > 1e-6
        self._foreground = np.asarray([o.foreground for o in scene.objects], dtype=bool)
        self._background = np.asarray(scene.background_color, dtype=np.float32)
        # material tables indexed [stylized][object]
        looks = [[o.look(stylized)[1] for o in scene.objects] for stylized in (False, True)]
        self._specular = np.asarray([[m.specular for m in row] for row in looks], np.float32)
        self._shininess = np.asarray([[m.shininess for m in row] for row in looks], np.float32)
        self._toon = np.asarray([[m.toon_levels for m in row] for row in looks], np.float32)

    @property
    def foreground(self) -> Bool[np.ndarray, " O"]:
        """Whether each object of the scene belongs to the foreground masks."""
        return self._foreground

    # ------------------------------------------------------------------ tracing
    def trace(self, origins: Float[np.ndarray, "N 3"], directions: Float[np.ndarray, "N 3"]) -> Hits:
        """First hits of rays with unit ``directions``."""
        hits = self._rc.cast(
            torch.from_numpy(np.ascontiguousarray(origins, np.float32)),
            torch.from_numpy(np.ascontiguousarray(directions, np.float32)),
        )
        hit = hits.mask.numpy()
        index = np.flatnonzero(hit)
        face = hits.triangle.numpy()[index]
        ids = self._rc.part_of(hits.triangle[hits.mask]).numpy()
        t = hits.distance.numpy()[index]
        d = hits.directions.numpy()[index]
        points = hits.origins.numpy()[index] + t[:, None] * d
        geo = hits.normals.numpy()[index]
        # One-sided surfaces (ground, walls) may be seen from behind: make the normals face the viewer.
        flip = np.where(np.einsum("mj,mj->m", geo, d) > 0, np.float32(-1), np.float32(1))[:, None]
        geo *= flip
        normals = geo.copy()
        curved = np.flatnonzero(self._curved_face[face])
        if len(curved):
            bary = hits.barycentrics.numpy()[index[curved]]
            n = np.einsum("mk,mkj->mj", bary, self._corner_normals[face[curved]])
            n *= flip[curved] / np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-12)
            # a shading normal that points away from the viewer (grazing hit on a coarse mesh): use the triangle's
            behind = np.einsum("mj,mj->m", n, d[curved]) > 0
            n[behind] = geo[curved][behind]
            normals[curved] = n
        return Hits(
            count=len(hit), index=index, t=t, object_ids=ids, points=points, normals=normals, geometric_normals=geo
        )

    def _light_visibility(self, hits: Hits) -> tuple[Float[np.ndarray, "M 3"], Bool[np.ndarray, " M"]]:
        """Unit direction towards the light and shadow-ray visibility at every hit."""
        light = self.scene.light
        start = hits.points + np.float32(_SHADOW_OFFSET) * hits.geometric_normals
        vector = np.asarray(light.vector, dtype=np.float32)
        if light.kind == "directional":
            to_light = np.broadcast_to(vector / np.linalg.norm(vector), start.shape)
            span, tfar = to_light, float("inf")
        else:
            span = vector[None] - start
            to_light = span / np.linalg.norm(span, axis=-1, keepdims=True).clip(1e-12)
            tfar = 1.0  # the direction's length is the unit: stop at the light
        if not len(start):
            return np.zeros((0, 3), np.float32), np.zeros(0, dtype=bool)
        occluded = self._rc.occluded(
            torch.from_numpy(np.ascontiguousarray(start, np.float32)),
            torch.from_numpy(np.ascontiguousarray(span, np.float32)),
            t_far=tfar,
        ).numpy()
        return np.ascontiguousarray(to_light), ~occluded

    # ------------------------------------------------------------------ shading
    def shade_hits(
        self, hits: Hits, directions: Float[np.ndarray, "N 3"], *, stylized: bool
    ) -> Float[np.ndarray, "N 3"]:
        """Colour in [0, 1] of every ray of the batch: the shaded surface, or the background colour."""
        colors = self._shade(hits, directions[hits.index], self._light_visibility(hits), stylized=stylized)
        out = np.broadcast_to(self._background, (hits.count, 3)).copy()
        out[hits.index] = colors
        return out

    def _shade(
        self,
        hits: Hits,
        hit_directions: Float[np.ndarray, "M 3"],
        light: tuple[Float[np.ndarray, "M 3"], Bool[np.ndarray, " M"]],
        *,
        stylized: bool,
        highlights: bool = True,
    ) -> Float[np.ndarray, "M 3"]:
        """Shaded colour of every hit."""
        to_light, visible = light
        ids = hits.object_ids
        albedo = np.zeros((len(ids), 3), dtype=np.float32)
        for index in np.unique(ids).tolist():
            obj = self.scene.objects[index]
            sel = np.flatnonzero(ids == index)
            local = (hits.points[sel] - obj.translation.astype(np.float32)) @ obj.rotation.astype(np.float32)
            albedo[sel] = evaluate_texture(obj.look(stylized)[0], local)
        look = int(stylized)
        specular = self._specular[look][ids] if highlights else np.zeros(len(ids), np.float32)
        return shade(
            albedo,
            hits.normals,
            to_light,
            -hit_directions,
            visible,
            self.scene.light.ambient,
            specular,
            self._shininess[look][ids],
            self._toon[look][ids],
        )

    def supersampled(
        self,
        origins: Float[np.ndarray, "S N 3"],
        directions: Float[np.ndarray, "S N 3"],
        looks: tuple[bool, ...] = (False,),
    ) -> list[Float[np.ndarray, "N 3"]]:
        """Mean colour in [0, 1] over ``S`` sub-pixel rays per pixel, for each look (``False`` = the normal
        textures, ``True`` = the stylized set); the rays are traced and shadow-tested once for all looks."""
        s, n = origins.shape[:2]
        d = directions.reshape(-1, 3)
        hits = self.trace(origins.reshape(-1, 3), d)
        light = self._light_visibility(hits)
        d_hit = d[hits.index]
        results = []
        for stylized in looks:
            color = np.broadcast_to(self._background, (hits.count, 3)).copy()
            color[hits.index] = self._shade(hits, d_hit, light, stylized=stylized)
            results.append(color.reshape(s, n, 3).mean(axis=0))
        return results

    def _supersampled(
        self, origins: Float[np.ndarray, "S N 3"], directions: Float[np.ndarray, "S N 3"], stylized_too: bool
    ) -> tuple[Float[np.ndarray, "N 3"], Float[np.ndarray, "N 3"] | None]:
        """Mean colour over ``S`` sub-pixel rays per pixel (and the stylized colour, when asked)."""
        colors = self.supersampled(origins, directions, (False, True) if stylized_too else (False,))
        return colors[0], (colors[1] if stylized_too else None)

    # ------------------------------------------------------------------ cameras
    def render_pinhole(
        self,
        c2w: Float[torch.Tensor, "4 4"],
        K: Float[torch.Tensor, "3 3"],
        width: int,
        height: int,
        *,
        stylized: bool = False,
    ) -> ViewRender:
        """Render one pinhole view (OpenGL camera-to-world ``c2w``, intrinsics ``K``)."""
        return self.render_pinhole_batch(c2w[None], K, width, height, stylized=stylized)[0]

    def render_pinhole_batch(
        self,
        c2w: Float[torch.Tensor, "C 4 4"],
        K: Float[torch.Tensor, "3 3"],
        width: int,
        height: int,
        *,
        stylized: bool = False,
    ) -> list[ViewRender]:
        """Render ``C`` pinhole views sharing intrinsics ``K`` in one pass (fewer, larger ray batches)."""
        # Per camera five ray sets: the pixel centres, then 2x2 sub-pixel offsets for anti-aliasing. Moving the
        # principal point by (-dx, -dy) moves every ray through (u + 0.5 + dx, v + 0.5 + dy).
        sets = 1 + len(_SUBPIXEL) ** 2
        Ks = K.float().expand(sets, 3, 3).clone()
        for i, (dy, dx) in enumerate((dy, dx) for dy in _SUBPIXEL for dx in _SUBPIXEL):
            Ks[1 + i, 0, 2] -= dx
            Ks[1 + i, 1, 2] -= dy
        n_cam, n_pix = c2w.shape[0], width * height
        origins, dirs = pinhole_rays(
            c2w.float()[:, None].expand(n_cam, sets, 4, 4), Ks.expand(n_cam, sets, 3, 3), width, height
        )
        all_o = origins.reshape(n_cam, sets, n_pix, 3).numpy()
        all_d = dirs.reshape(n_cam, sets, n_pix, 3).numpy()
        d = all_d[:, 0].reshape(-1, 3)
        hits = self.trace(all_o[:, 0].reshape(-1, 3), d)
        forward = -c2w[:, :3, 2].float().numpy()  # (C, 3)
        cam = hits.index // n_pix
        z = hits.t * np.einsum("mj,mj->m", d[hits.index], forward[cam])
        depth = hits.dense(z, 0.0)
        object_ids = hits.dense(hits.object_ids, -1)
        mask = object_ids >= 0
        mask[mask] = self._foreground[object_ids[mask]]
        normals = hits.dense(hits.normals, 0.0)
        sub_o = all_o[:, 1:].transpose(1, 0, 2, 3).reshape(sets - 1, -1, 3)
        sub_d = all_d[:, 1:].transpose(1, 0, 2, 3).reshape(sets - 1, -1, 3)
        rgb, styl = self._supersampled(sub_o, sub_d, stylized)
        shape = (n_cam, height, width)
        rgb8 = to_uint8(rgb).reshape(*shape, 3)
        styl8 = None if styl is None else to_uint8(styl).reshape(*shape, 3)
        return [
            ViewRender(
                rgb=rgb8[i],
                rgb_stylized=None if styl8 is None else styl8[i],
                depth=depth.reshape(shape)[i],
                normals=normals.reshape(*shape, 3)[i],
                mask=mask.reshape(shape)[i],
                object_ids=object_ids.reshape(shape)[i],
            )
            for i in range(n_cam)
        ]

    def render_equirect(
        self, c2w: Float[torch.Tensor, "4 4"], width: int, height: int, *, stylized: bool = False
    ) -> tuple[UInt8[np.ndarray, "H W 3"], UInt8[np.ndarray, "H W 3"] | None, Float[np.ndarray, "H W"]]:
        """An equirectangular panorama from ``c2w``'s centre: colour, stylized colour (or ``None``) and the ray
        distance in metres (0 where the ray misses).

        Directions come from :func:`scene3d.core.cameras.equirect_directions` rotated by ``c2w``. Colour is
        averaged over a 2× finer grid, whose 2×2 blocks share the pixel's centre in longitude and latitude.
        """
        rot = c2w[:3, :3].float().numpy()
        centre = c2w[:3, 3].float().numpy()
        d = equirect_directions(width, height).reshape(-1, 3).numpy() @ rot.T
        hits = self.trace(np.broadcast_to(centre, d.shape), d)
        distance = hits.dense(hits.t, 0.0)
        fine = equirect_directions(2 * width, 2 * height).numpy() @ rot.T  # (2H, 2W, 3)
        blocks = fine.reshape(height, 2, width, 2, 3).transpose(1, 3, 0, 2, 4).reshape(4, -1, 3)
        rgb, styl = self._supersampled(np.broadcast_to(centre, blocks.shape), blocks, stylized)
        return (
            to_uint8(rgb).reshape(height, width, 3),
            None if styl is None else to_uint8(styl).reshape(height, width, 3),
            distance.reshape(height, width),
        )

    # ------------------------------------------------------------------ points
    def sample_surface_points(
        self, count: int, rng: np.random.Generator
    ) -> tuple[Float[np.ndarray, "N 3"], Float[np.ndarray, "N 3"], UInt8[np.ndarray, "N 3"]]:
        """``count`` points sampled uniformly by area on every surface: positions, unit normals and colours.

        Colours are the diffuse shading of the normal look (ambient + key light with shadows, no highlight), as a
        photo would show them, which is what splat initialisation from a point cloud expects.
        """
        meshes = [o.world_mesh for o in self.scene.objects]
        areas = np.concatenate([m.face_areas() for m in meshes])
        owner = np.concatenate([np.full(len(m.faces), i, dtype=np.int64) for i, m in enumerate(meshes)])
        local_face = np.concatenate([np.arange(len(m.faces), dtype=np.int64) for m in meshes])
        faces = rng.choice(len(areas), size=count, p=areas / areas.sum())
        r1, r2 = np.sqrt(rng.random(count)), rng.random(count)
        bary = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=-1)
        points, normals = np.zeros((count, 3)), np.zeros((count, 3))
        for i, mesh in enumerate(meshes):
            sel = owner[faces] == i
            if not sel.any():
                continue
            tri = mesh.faces[local_face[faces[sel]]]
            points[sel] = (bary[sel, :, None] * mesh.vertices[tri]).sum(axis=1)
            n = (bary[sel, :, None] * mesh.normals[tri]).sum(axis=1)
            normals[sel] = n / np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-12)
        points32, normals32 = points.astype(np.float32), normals.astype(np.float32)
        hits = Hits(
            count=count,
            index=np.arange(count),
            t=np.zeros(count, np.float32),
            object_ids=owner[faces],
            points=points32,
            normals=normals32,
            geometric_normals=normals32,
        )
        matte = self._shade(hits, -normals32, self._light_visibility(hits), stylized=False, highlights=False)
        return points32, normals32, to_uint8(matte)


def to_uint8(color: Float[np.ndarray, "*shape 3"]) -> UInt8[np.ndarray, "*shape 3"]:
    """Round colours in [0, 1] to 8 bits."""
    return np.clip(np.round(color * 255.0), 0, 255).astype(np.uint8)
