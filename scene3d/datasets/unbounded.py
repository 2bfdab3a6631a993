"""The ``unbounded`` kind: an object group on a ground that runs out to a far, textured environment, filmed along a
handheld-style path, as a phone capture of an object in a park would be.

Layout (world up +Z, metres, objects centred on the origin):

* the object group of the ``object`` kind (5 primitives, one glossy) on a checkered ground patch (disk, r = 2.2 m);
* mid-field pillars and cones ("trees") 5–12 m away, and blocks ("buildings") with window stripes 18–30 m away;
* a wide ground disk out to the environment (smooth waves, 1 cm below the patch);
* the environment: an inward-facing sphere of radius :data:`ENVIRONMENT_RADIUS` (≥ 20× the object group's radius)
  with a sky gradient (horizon to zenith) and soft bands, so every ray ends on a surface: there is no background
  colour, and ``transforms.json`` has no ``background_color``;
* a point light high inside the environment (a sun: it casts the shadows; a directional light outside the sphere
  would be shadowed by it).

Cameras walk one loop around the group at 3.3–4.6 m (radius and height wander smoothly, eye height 1.3–1.9 m)
looking at the group with a wandering target, plus per-frame jitter: ±2 cm position, ±1.5° look direction and
±2° roll, as a hand holds a phone. The jittered poses are the exact poses the views were rendered from (ground
truth); ``scene_box`` is the region the cameras move in and look at (the cameras and the object group, padded),
not the bounds of every surface: what lies beyond it is the far field.

``points3d.ply`` is COLMAP-like: points back-projected from random pixels of the training views (so their density
follows what the images see, far field included), coloured from the images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from scene3d.core.cameras import intrinsics_from_fov, look_at
from scene3d.datasets.layouts import CameraRig, background_surface, held_out_indices, random_objects_on_ground
from scene3d.datasets.materials import MATTE, Light, Texture, hsv_color, random_texture, stylize_texture
from scene3d.datasets.scene import Scene, SceneObject
from scene3d.datasets.shapes import rest_on_ground, rotation_z

ENVIRONMENT_RADIUS = 36.0
"""Radius of the environment sphere, metres (24× the object group's ~1.5 m radius)."""
GROUP_RADIUS = 1.5
"""Radius of the object group on its patch, metres (objects are placed within 1.3 m)."""
FOV_DEG = 60.0
"""Vertical field of view of the handheld camera (a phone's main camera)."""
assert ENVIRONMENT_RADIUS >= 20 * GROUP_RADIUS


def unbounded_scene(rng: np.random.Generator) -> Scene:
    """The object group, mid- and far-field structures, the wide ground and the environment sphere."""
    hue = float(rng.random())
    patch_tex = Texture("checker", hsv_color(hue, 0.12, 0.86), hsv_color(hue, 0.2, 0.68), scale=0.5)
    patch = background_surface("ground_patch", "disk", {"radius": 2.2, "cell": 0.25}, patch_tex, rng)
    grass = Texture("waves", hsv_color(0.27 + 0.05 * float(rng.random()), 0.35, 0.55),
                    hsv_color(0.22, 0.3, 0.42), scale=2.5, axis=int(rng.integers(2)))  # fmt: skip
    ground = background_surface(
        "ground", "disk", {"radius": ENVIRONMENT_RADIUS, "cell": 1.0}, grass, rng, translation=(0.0, 0.0, -0.01)
    )
    sky = Texture("gradient", hsv_color(0.58, 0.12, 0.95), hsv_color(0.6, 0.55, 0.85), scale=9.0, axis=2)
    environment = background_surface("environment", "sphere", {"radius": ENVIRONMENT_RADIUS}, sky, rng)
    objects = random_objects_on_ground(rng, 5, area_radius=1.3)
    far: list[SceneObject] = []
    # mid field: pillars and cones at 5-12 m
    for i in range(6):
        angle = 2 * math.pi * (i + float(rng.uniform(-0.3, 0.3))) / 6
        dist = float(rng.uniform(5.0, 12.0))
        shape = ("cylinder", "cone")[i % 2]
        height = round(float(rng.uniform(1.5, 4.0)), 3)
        params = {"radius": round(float(rng.uniform(0.25, 0.6)), 3), "height": height}
        far.append(_standing(rng, f"mid_{i:02d}", shape, params, angle, dist, scale=(0.3, 0.8)))
    # far field: blocks with window stripes at 18-30 m
    for i in range(8):
        angle = 2 * math.pi * (i + float(rng.uniform(-0.35, 0.35))) / 8
        dist = float(rng.uniform(18.0, 30.0))
        extents = [round(float(rng.uniform(3.0, 7.0)), 3), round(float(rng.uniform(3.0, 7.0)), 3),
                   round(float(rng.uniform(4.0, 12.0)), 3)]  # fmt: skip
        h = float(rng.random())
        windows = Texture("stripes", hsv_color(h, 0.25, 0.8), hsv_color(h + 0.1, 0.35, 0.5), scale=1.0, axis=2)
        far.append(_standing(rng, f"far_{i:02d}", "box", {"extents": extents}, angle, dist, texture=windows))
    sun_az = float(rng.uniform(0, 2 * math.pi))
    sun = (0.45 * ENVIRONMENT_RADIUS * math.cos(sun_az), 0.45 * ENVIRONMENT_RADIUS * math.sin(sun_az), 0.6 * ENVIRONMENT_RADIUS)
    light = Light("point", (round(sun[0], 4), round(sun[1], 4), round(sun[2], 4)), 0.45)
    return Scene(objects=(environment, ground, patch, *objects, *far), light=light, background_color=(0.0, 0.0, 0.0))


def _standing(
    rng: np.random.Generator,
    name: str,
    shape: str,
    params: dict,
    angle: float,
    dist: float,
    *,
    texture: Texture | None = None,
    scale: tuple[float, float] = (0.5, 1.5),
) -> SceneObject:
    """A background structure resting on the ground at polar position (``angle``, ``dist``)."""
    tex = texture or random_texture(rng, patterns=("stripes", "waves", "gradient", "solid"), scale_range=scale)
    obj = SceneObject(
        name=name, shape=shape, params=params, rotation=rotation_z(float(rng.uniform(0, 2 * math.pi))),
        translation=np.zeros(3), texture=tex, material=MATTE, stylized_texture=stylize_texture(tex, rng),
        foreground=False,
    )  # fmt: skip
    t = rest_on_ground(obj.local_mesh, obj.rotation, (dist * math.cos(angle), dist * math.sin(angle)))
    return obj.moved(obj.rotation, np.round(t, 6))


def handheld_cameras(n: int, size: int, rng: np.random.Generator) -> CameraRig:
    """One loop around the group: smooth wander of radius, height and target, plus per-frame hand jitter."""
    phase = float(rng.uniform(0, 2 * math.pi))
    u = np.arange(n) / n
    az = phase + 2 * math.pi * u
    wobble = rng.uniform(0, 2 * math.pi, size=4)
    radius = 3.95 + 0.65 * np.sin(2 * math.pi * 2 * u + wobble[0])
    height = 1.6 + 0.3 * np.sin(2 * math.pi * 3 * u + wobble[1])
    eye = np.stack([radius * np.cos(az), radius * np.sin(az), height], axis=-1)
    target = np.stack(
        [0.3 * np.sin(2 * math.pi * u + wobble[2]), 0.3 * np.cos(2 * math.pi * 2 * u + wobble[3]), np.full(n, 0.35)],
        axis=-1,
    )
    eye = eye + rng.normal(0.0, 0.02, size=eye.shape).clip(-0.04, 0.04)  # hand jitter: ±2 cm
    look = target - eye
    dist = np.linalg.norm(look, axis=-1, keepdims=True)
    look = look + dist * rng.normal(0.0, math.radians(1.5), size=look.shape)  # ±1.5° look direction
    c2w = look_at(torch.from_numpy(eye).float(), torch.from_numpy(eye + look).float())
    roll = torch.from_numpy(rng.normal(0.0, math.radians(2.0), size=n)).float()  # ±2° roll about the view axis
    c, s = torch.cos(roll), torch.sin(roll)
    rz = torch.zeros(n, 3, 3)
    rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1.0
    c2w[:, :3, :3] = c2w[:, :3, :3] @ rz
    return CameraRig(c2w=c2w, K=intrinsics_from_fov(FOV_DEG, size, size), width=size, height=size)


def region_of_interest(scene: Scene, rig: CameraRig, pad: float = 0.25) -> list[list[float]]:
    """``scene_box``: the bounds of the camera centres and the foreground objects, grown by ``pad`` metres."""
    fg = np.concatenate([o.world_mesh.vertices for o in scene.objects if o.foreground], axis=0)
    pts = np.concatenate([fg, rig.c2w[:, :3, 3].double().numpy()], axis=0)
    lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    lo[2] = min(lo[2], -pad)
    return [np.round(lo, 3).tolist(), np.round(hi, 3).tolist()]


def image_points(
    renders: list, rig: CameraRig, train: list[int], count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` points back-projected from random pixels of the training views: positions, normals, colours."""
    from scene3d.core.cameras import pinhole_rays

    views = rng.choice(np.asarray(train), size=count)
    rows = rng.integers(0, rig.height, size=count)
    cols = rng.integers(0, rig.width, size=count)
    xyz, normals, rgb = np.zeros((count, 3), np.float32), np.zeros((count, 3), np.float32), np.zeros((count, 3), np.uint8)
    for v in np.unique(views).tolist():
        sel = np.flatnonzero(views == v)
        origins, dirs = pinhole_rays(rig.c2w[v : v + 1].float(), rig.K.float()[None], rig.width, rig.height)
        o = origins.reshape(rig.height, rig.width, 3).numpy()[rows[sel], cols[sel]]
        d = dirs.reshape(rig.height, rig.width, 3).numpy()[rows[sel], cols[sel]]
        forward = -rig.c2w[v, :3, 2].float().numpy()
        z = renders[v].depth[rows[sel], cols[sel]]
        xyz[sel] = o + d * (z / (d @ forward))[:, None]
        normals[sel] = renders[v].normals[rows[sel], cols[sel]]
        rgb[sel] = renders[v].rgb[rows[sel], cols[sel]]
    return xyz, normals, rgb


def generate_unbounded(out: Path, *, size: int, views: int, seed: int, stylized: bool) -> None:
    """Render the ``unbounded`` kind into ``out`` (see the module docstring)."""
    from scene3d.datasets.raycast import SceneRaycaster
    from scene3d.datasets.synthetic import POINTS, _rng, scene3d_block
    from scene3d.datasets.writer import DatasetWriter, write_meshes, write_point_ply

    scene = unbounded_scene(_rng(seed, 0))
    rig = handheld_cameras(views, size, _rng(seed, 1))
    held = held_out_indices(views, 0.1)
    raycaster = SceneRaycaster(scene)
    writer = DatasetWriter(out, rig.width, rig.height, rig.K, stylized=stylized)
    renders = writer.add_views(raycaster, rig.c2w)
    meshes = write_meshes(out / "meshes", scene)
    train = [i for i in range(views) if i not in set(held)]
    xyz, normals, rgb = image_points(renders, rig, train, POINTS["unbounded"], _rng(seed, 2))
    write_point_ply(out / "points3d.ply", xyz, normals, rgb)
    writer.finish(
        held,
        {
            "ply_file_path": "points3d.ply",
            "scene_box": region_of_interest(scene, rig),
            "scene3d": scene3d_block(
                "unbounded", seed, size, views, stylized,
                light=scene.light.to_json(), meshes=meshes, objects=[o.to_json() for o in scene.objects],
                environment_radius=ENVIRONMENT_RADIUS, group_radius=GROUP_RADIUS,
            ),  # fmt: skip
        },
    )
