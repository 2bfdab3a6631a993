"""CPU ray casting of a :class:`~scene3d.datasets.scene.Scene` with open3d's ``RaycastingScene``.

One :class:`SceneRaycaster` per scene holds the Embree BVH of every object's world-space mesh. Rays come from
:mod:`scene3d.core.cameras` (pixel centres at +0.5, OpenGL camera axes), so the depth, normals and masks rendered
here line up with the rays nerfstudio's ``Cameras.generate_rays`` makes for the same ``transforms.json``.

Colour images are anti-aliased with 2×2 ordered-grid supersampling (sub-pixel offsets ±0.25 px, averaged in linear
[0, 1] before 8-bit rounding); depth, normals and masks come from the single pixel-centre ray, so they are exact
samples at the pixel centre.

open3d is imported inside :class:`SceneRaycaster`, so importing this module stays light.
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
    """First hits of a batch of rays (misses: ``object_ids == -1``, ``t = inf``, zero normals)."""

    t: Float[np.ndarray, " N"]
    object_ids: Int[np.ndarray, " N"]
    points: Float[np.ndarray, "N 3"]
    normals: Float[np.ndarray, "N 3"]
    """Interpolated shading normals, unit, turned to face the ray origin."""
    geometric_normals: Float[np.ndarray, "N 3"]
    """Triangle normals, unit, turned to face the ray origin."""


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
        import open3d as o3d

        self.scene = scene
        self._o3d = o3d
        self._rc = o3d.t.geometry.RaycastingScene()
        corner_normals, offsets = [], [0]
        for index, obj in enumerate(scene.objects):
            mesh = obj.world_mesh
            gid = self._rc.add_triangles(
                o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32))
            )
            if gid != index:
                raise RuntimeError(f"open3d gave geometry id {gid} to object {index}")
            corner_normals.append(mesh.normals[mesh.faces])
            offsets.append(offsets[-1] + len(mesh.faces))
        self._corner_normals = np.concatenate(corner_normals, axis=0)  # (F_total, 3, 3)
        self._face_offsets = np.asarray(offsets[:-1], dtype=np.int64)
        self._rotations = np.stack([o.rotation for o in scene.objects])
        self._translations = np.stack([o.translation for o in scene.objects])
        self._foreground = np.asarray([o.foreground for o in scene.objects], dtype=bool)
        self._background = np.asarray(scene.background_color, dtype=np.float64)

    # ------------------------------------------------------------------ tracing
    def trace(self, origins: Float[np.ndarray, "N 3"], directions: Float[np.ndarray, "N 3"]) -> Hits:
        """First hits of rays with unit ``directions``."""
        rays = np.concatenate([origins, directions], axis=-1).astype(np.float32)
        out = self._rc.cast_rays(self._o3d.core.Tensor(rays))
        t = out["t_hit"].numpy().astype(np.float64)
        gid = out["geometry_ids"].numpy().astype(np.int64)
        hit = gid != int(self._rc.INVALID_ID)
        object_ids = np.where(hit, gid, -1)
        points = np.zeros_like(origins, dtype=np.float64)
        normals = np.zeros_like(points)
        geo = np.zeros_like(points)
        if hit.any():
            d = directions[hit].astype(np.float64)
            points[hit] = origins[hit] + t[hit, None] * d
            prim = out["primitive_ids"].numpy()[hit].astype(np.int64)
            uv = out["primitive_uvs"].numpy()[hit].astype(np.float64)
            corners = self._corner_normals[self._face_offsets[gid[hit]] + prim]  # (M, 3, 3)
            bary = np.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], axis=-1)
            n = np.einsum("mk,mkj->mj", bary, corners)
            n /= np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-12)
            g = out["primitive_normals"].numpy()[hit].astype(np.float64)
            # One-sided surfaces (ground, walls) may be seen from behind: make both normals face the viewer.
            flip = np.where((g * d).sum(-1) > 0, -1.0, 1.0)[:, None]
            geo[hit] = g * flip
            n = n * flip
            n = np.where(((n * d).sum(-1) > 0)[:, None], geo[hit], n)  # shading normal behind a grazing hit
            normals[hit] = n
        return Hits(t=np.where(hit, t, np.inf), object_ids=object_ids, points=points, normals=normals, geometric_normals=geo)

    def _light_visibility(self, hits: Hits) -> tuple[Float[np.ndarray, "N 3"], Bool[np.ndarray, " N"]]:
        """Unit direction towards the light and shadow-ray visibility at every hit (misses: visible)."""
        light = self.scene.light
        hit = hits.object_ids >= 0
        start = hits.points + _SHADOW_OFFSET * hits.geometric_normals
        if light.kind == "directional":
            to_light = np.broadcast_to(np.asarray(light.vector, dtype=np.float64), start.shape).copy()
            to_light /= np.linalg.norm(to_light, axis=-1, keepdims=True)
            rays = np.concatenate([start[hit], to_light[hit]], axis=-1)
            tfar = float("inf")
        else:
            span = np.asarray(light.vector, dtype=np.float64)[None] - start
            to_light = span / np.linalg.norm(span, axis=-1, keepdims=True).clip(1e-12)
            rays = np.concatenate([start[hit], span[hit]], axis=-1)
            tfar = 1.0  # direction length is the unit: stop at the light
        visible = np.ones(len(start), dtype=bool)
        if len(rays):
            occluded = self._rc.test_occlusions(self._o3d.core.Tensor(rays.astype(np.float32)), tfar=tfar).numpy()
            visible[hit] = ~occluded
        return to_light, visible

    # ------------------------------------------------------------------ shading
    def shade_hits(self, hits: Hits, directions: Float[np.ndarray, "N 3"], *, stylized: bool) -> Float[np.ndarray, "N 3"]:
        """Colour in [0, 1] of every ray: the shaded surface, or the background colour where the ray missed."""
        return self._shade(hits, directions, self._light_visibility(hits), stylized=stylized)

    def _shade(
        self,
        hits: Hits,
        directions: Float[np.ndarray, "N 3"],
        light: tuple[Float[np.ndarray, "N 3"], Bool[np.ndarray, " N"]],
        *,
        stylized: bool,
        highlights: bool = True,
    ) -> Float[np.ndarray, "N 3"]:
        to_light, visible = light
        color = np.broadcast_to(self._background, hits.points.shape).copy()
        hit = hits.object_ids >= 0
        if not hit.any():
            return color
        ids = hits.object_ids[hit]
        albedo = np.zeros((len(ids), 3))
        specular, shininess, toon = np.zeros(len(ids)), np.ones(len(ids)), np.zeros(len(ids))
        for index, obj in enumerate(self.scene.objects):
            sel = ids == index
            if not sel.any():
                continue
            texture, material = obj.look(stylized)
            local = (hits.points[hit][sel] - obj.translation) @ obj.rotation  # R^T (p - t), row-vector form
            albedo[sel] = evaluate_texture(texture, local)
            specular[sel] = material.specular if highlights else 0.0
            shininess[sel], toon[sel] = material.shininess, material.toon_levels
        color[hit] = shade(
            albedo,
            hits.normals[hit],
            to_light[hit],
            -directions[hit].astype(np.float64),
            visible[hit],
            self.scene.light.ambient,
            specular,
            shininess,
            toon,
        )
        return color

    def _supersampled(
        self, origins: Float[np.ndarray, "S N 3"], directions: Float[np.ndarray, "S N 3"], stylized_too: bool
    ) -> tuple[Float[np.ndarray, "N 3"], Float[np.ndarray, "N 3"] | None]:
        """Mean colour over ``S`` sub-pixel rays per pixel (and the stylized colour, when asked)."""
        s, n = origins.shape[:2]
        o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
        hits = self.trace(o, d)
        light = self._light_visibility(hits)
        rgb = self._shade(hits, d, light, stylized=False).reshape(s, n, 3).mean(axis=0)
        styl = self._shade(hits, d, light, stylized=True).reshape(s, n, 3).mean(axis=0) if stylized_too else None
        return rgb, styl

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
        origins, dirs = pinhole_rays(c2w, K, width, height)
        o = origins.reshape(-1, 3).double().numpy()
        d = dirs.reshape(-1, 3).double().numpy()
        hits = self.trace(o, d)
        forward = -c2w[:3, 2].double().numpy()
        hit = hits.object_ids >= 0
        depth = np.where(hit, np.where(hit, hits.t, 0.0) * (d @ forward), 0.0)
        mask = hit & self._foreground[np.maximum(hits.object_ids, 0)]

        sub_o, sub_d = [], []
        for dy in _SUBPIXEL:
            for dx in _SUBPIXEL:
                # Moving the principal point by (-dx, -dy) moves every ray through (u + 0.5 + dx, v + 0.5 + dy).
                K_sub = K.clone()
                K_sub[0, 2] -= dx
                K_sub[1, 2] -= dy
                so, sd = pinhole_rays(c2w, K_sub, width, height)
                sub_o.append(so.reshape(-1, 3).double().numpy())
                sub_d.append(sd.reshape(-1, 3).double().numpy())
        rgb, styl = self._supersampled(np.stack(sub_o), np.stack(sub_d), stylized)
        return ViewRender(
            rgb=to_uint8(rgb).reshape(height, width, 3),
            rgb_stylized=None if styl is None else to_uint8(styl).reshape(height, width, 3),
            depth=depth.reshape(height, width),
            normals=hits.normals.reshape(height, width, 3),
            mask=mask.reshape(height, width),
            object_ids=hits.object_ids.reshape(height, width),
        )

    def render_equirect(
        self, c2w: Float[torch.Tensor, "4 4"], width: int, height: int
    ) -> tuple[UInt8[np.ndarray, "H W 3"], Float[np.ndarray, "H W"]]:
        """An equirectangular panorama from ``c2w``'s centre (directions from
        :func:`scene3d.core.cameras.equirect_directions`, rotated by ``c2w``) and its ray distance in metres
        (0 where the ray misses). Colour is averaged over a 2× finer grid, whose 2×2 blocks share the pixel's
        centre in longitude and latitude."""
        rot = c2w[:3, :3].double().numpy()
        centre = c2w[:3, 3].double().numpy()
        d = equirect_directions(width, height).reshape(-1, 3).double().numpy() @ rot.T
        hits = self.trace(np.broadcast_to(centre, d.shape).copy(), d)
        distance = np.where(hits.object_ids >= 0, np.where(hits.object_ids >= 0, hits.t, 0.0), 0.0)
        fine = equirect_directions(2 * width, 2 * height).double().numpy() @ rot.T  # (2H, 2W, 3)
        blocks = fine.reshape(height, 2, width, 2, 3).transpose(1, 3, 0, 2, 4).reshape(4, -1, 3)
        rgb, _ = self._supersampled(np.broadcast_to(centre, blocks.shape).copy(), blocks, False)
        return to_uint8(rgb).reshape(height, width, 3), distance.reshape(height, width)

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
        hits = Hits(
            t=np.zeros(count),
            object_ids=owner[faces],
            points=points,
            normals=normals,
            geometric_normals=normals,
        )
        matte = self._shade(hits, -normals, self._light_visibility(hits), stylized=False, highlights=False)
        return points, normals, to_uint8(matte)


def to_uint8(color: Float[np.ndarray, "*shape 3"]) -> UInt8[np.ndarray, "*shape 3"]:
    """Round colours in [0, 1] to 8 bits."""
    return np.clip(np.round(color * 255.0), 0, 255).astype(np.uint8)
