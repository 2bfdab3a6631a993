"""The ``room`` kind: a furnished box room seen from its centre (perspective views all around plus an
equirectangular panorama with its depth) and from interior viewpoints.

The room is centred on the origin in x and y, floor at ``z = 0``. Walls, floor and ceiling are one-sided grids
facing inwards (not foreground); furniture (bed, cabinet, table with legs, stool, lamp, ball) is foreground.
A point light under the ceiling casts the shadows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scene3d.core.cameras import fibonacci_sphere, intrinsics_from_fov, look_at
from scene3d.datasets.layouts import CameraRig, background_surface, held_out_indices
from scene3d.datasets.materials import GLOSSY, MATTE, Light, Texture, hsv_color, random_texture, stylize_texture
from scene3d.datasets.scene import Scene, SceneObject
from scene3d.datasets.shapes import rotation_x, rotation_z

EYE_HEIGHT = 1.5
"""Height of the centre viewpoint and the panorama, metres."""


def _piece(
    rng: np.random.Generator,
    name: str,
    shape: str,
    params: dict[str, Any],
    centre: list[float],
    *,
    texture: Texture | None = None,
    glossy: bool = False,
    yaw: float = 0.0,
) -> SceneObject:
    tex = texture or random_texture(rng, scale_range=(0.12, 0.3))
    return SceneObject(
        name=name,
        shape=shape,
        params=params,
        rotation=rotation_z(yaw),
        translation=np.asarray(centre, dtype=np.float64),
        texture=tex,
        material=GLOSSY if glossy else MATTE,
        stylized_texture=stylize_texture(tex, rng),
    )


def _shell(rng: np.random.Generator, sx: float, sy: float, h: float) -> list[SceneObject]:
    """Floor, ceiling and four walls, each a one-sided grid facing into the room."""
    wood = Texture("stripes", hsv_color(0.08, 0.45, 0.62), hsv_color(0.07, 0.5, 0.48), scale=0.25, axis=0)
    ceiling_tex = Texture("solid", hsv_color(0.1, 0.05, 0.93), hsv_color(0.1, 0.05, 0.93))
    hue = float(rng.random())

    def surface(name: str, size: list[float], rot: np.ndarray, centre: list[float], tex: Texture) -> SceneObject:
        params = {"size": size, "cell": 0.25}
        return background_surface(name, "plane", params, tex, rng, rotation=rot, translation=tuple(centre))

    def wall_tex(i: int) -> Texture:
        kind = ("waves", "solid", "stripes", "checker")[i]
        return Texture(kind, hsv_color(hue + 0.15 * i, 0.22, 0.85), hsv_color(hue + 0.15 * i + 0.05, 0.3, 0.72),
                       scale=0.35, axis=0)  # fmt: skip

    upright = rotation_x(-math.pi / 2)  # plane normal +Z -> +Y, plane's local y -> world -z
    walls = [
        ("wall_south", [sx, h], rotation_z(0.0) @ upright, [0.0, -sy / 2, h / 2]),  # faces +Y
        ("wall_north", [sx, h], rotation_z(math.pi) @ upright, [0.0, sy / 2, h / 2]),  # faces -Y
        ("wall_west", [sy, h], rotation_z(-math.pi / 2) @ upright, [-sx / 2, 0.0, h / 2]),  # faces +X
        ("wall_east", [sy, h], rotation_z(math.pi / 2) @ upright, [sx / 2, 0.0, h / 2]),  # faces -X
    ]
    return [
        surface("floor", [sx, sy], np.eye(3), [0.0, 0.0, 0.0], wood),
        surface("ceiling", [sx, sy], rotation_x(math.pi), [0.0, 0.0, h], ceiling_tex),
        *[surface(n, s, r, c, wall_tex(i)) for i, (n, s, r, c) in enumerate(walls)],
    ]


def room_scene(rng: np.random.Generator) -> Scene:
    """A room of seeded size (5-6.5 m × 4-5.5 m × 2.6-3 m) with furniture along the walls and a central table."""
    sx, sy, h = (round(float(rng.uniform(lo, hi)), 3) for lo, hi in ((5.0, 6.5), (4.0, 5.5), (2.6, 3.0)))
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 3)  # noqa: E731
    bed = [u(1.8, 2.1), u(1.3, 1.6), u(0.45, 0.55)]
    bed_x = -sx / 2 + 0.1 + bed[0] / 2 + u(0.0, 0.4)
    cab = [u(0.45, 0.6), u(0.9, 1.2), u(1.5, 2.0)]
    table = [u(1.0, 1.3), u(0.7, 0.9)]
    tx, ty = u(0.6, 1.1), u(0.5, 0.9)
    leg_h = u(0.68, 0.75)
    top_t = 0.06
    furniture = [
        _piece(rng, "bed", "box", {"extents": bed}, [bed_x, -sy / 2 + bed[1] / 2 + 0.05, bed[2] / 2]),
        _piece(rng, "cabinet", "box", {"extents": cab}, [sx / 2 - cab[0] / 2 - 0.05, u(-0.8, 0.2), cab[2] / 2]),
        _piece(rng, "table_top", "box", {"extents": [*table, top_t]}, [tx, ty, leg_h + top_t / 2]),
    ]
    for i, (lx, ly) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        furniture.append(
            _piece(rng, f"table_leg_{i}", "box", {"extents": [0.06, 0.06, leg_h]},
                   [tx + lx * (table[0] / 2 - 0.08), ty + ly * (table[1] / 2 - 0.08), leg_h / 2],
                   texture=furniture[-1].texture if i else None)  # fmt: skip
        )
    r_ball = u(0.1, 0.16)
    stool_h = u(0.4, 0.5)
    pole_h = u(1.2, 1.5)
    lamp_xy = [-sx / 2 + 0.45, sy / 2 - 0.45]
    pot_h = u(0.35, 0.5)
    furniture += [
        _piece(rng, "ball", "sphere", {"radius": r_ball}, [tx + 0.2, ty - 0.1, leg_h + top_t + r_ball], glossy=True),
        _piece(rng, "stool", "cylinder", {"radius": u(0.17, 0.22), "height": stool_h},
               [tx - table[0] / 2 - 0.45, ty - 0.2, stool_h / 2]),  # fmt: skip
        _piece(rng, "lamp_pole", "cylinder", {"radius": 0.03, "height": pole_h}, [*lamp_xy, pole_h / 2]),
        _piece(rng, "lamp_shade", "cone", {"radius": 0.25, "height": 0.35}, [*lamp_xy, pole_h + 0.1]),
        # cones are centred on their mid-height: z = height / 2 rests the pot on the floor
        _piece(rng, "plant_pot", "cone", {"radius": u(0.18, 0.24), "height": pot_h},
               [sx / 2 - 0.4, sy / 2 - 0.4, pot_h / 2], yaw=u(0, 3.1)),  # fmt: skip
    ]
    light = Light("point", (round(u(-0.5, 0.5), 3), round(u(-0.5, 0.5), 3), round(h - 0.35, 3)), 0.55)
    return Scene(
        objects=(*_shell(rng, sx, sy, h), *furniture),
        light=light,
        background_color=(0.0, 0.0, 0.0),
        extra={"room_size": [sx, sy, h]},
    )


def _inside_furniture(scene: Scene, point: np.ndarray, margin: float) -> bool:
    for obj in scene.objects:
        if not obj.foreground:
            continue
        v = obj.world_mesh.vertices
        if ((point >= v.min(0) - margin) & (point <= v.max(0) + margin)).all():
            return True
    return False


def room_cameras(scene: Scene, n: int, size: int, rng: np.random.Generator, *, fov_deg: float = 65.0) -> CameraRig:
    """``max(1, 2n/5)`` views from the room centre all around (a Fibonacci band of ±30° elevation), the rest from
    random free interior viewpoints looking at random points of the room."""
    sx, sy, h = scene.extra["room_size"]
    centre = torch.tensor([0.0, 0.0, EYE_HEIGHT])
    n_centre = max(1, (2 * n) // 5)
    dirs = fibonacci_sphere(n_centre, min_elevation_deg=-30.0, max_elevation_deg=30.0)
    c2w = [look_at(centre.expand(n_centre, 3), centre + dirs)]
    eyes, targets = [], []
    while len(eyes) < n - n_centre:
        eye = np.array([rng.uniform(-sx / 2 + 0.6, sx / 2 - 0.6), rng.uniform(-sy / 2 + 0.6, sy / 2 - 0.6),
                        rng.uniform(1.1, 1.9)])  # fmt: skip
        target = np.array([rng.uniform(-sx / 2, sx / 2), rng.uniform(-sy / 2, sy / 2), rng.uniform(0.2, h - 0.4)])
        d = target - eye
        if np.linalg.norm(d) < 1.5 or abs(d[2]) / np.linalg.norm(d) > 0.6 or _inside_furniture(scene, eye, 0.25):
            continue
        eyes.append(eye)
        targets.append(target)
    if eyes:
        eye_t = torch.tensor(np.array(eyes), dtype=torch.float32)
        c2w.append(look_at(eye_t, torch.tensor(np.array(targets), dtype=torch.float32)))
    groups = ("centre",) * n_centre + ("interior",) * (n - n_centre)
    K = intrinsics_from_fov(fov_deg, size, size)
    return CameraRig(c2w=torch.cat(c2w), K=K, width=size, height=size, groups=groups)


def panorama_pose() -> torch.Tensor:
    """The panorama's camera-to-world: at the centre viewpoint, looking along +Y (the panorama's middle column),
    up +Z."""
    centre = torch.tensor([0.0, 0.0, EYE_HEIGHT])
    return look_at(centre, centre + torch.tensor([0.0, 1.0, 0.0]))


def generate_room(out: Path, *, size: int, views: int, seed: int, stylized: bool) -> None:
    """Write the ``room`` kind into ``out`` (see :func:`scene3d.datasets.synthetic.generate_scene`)."""
    from scene3d.datasets.raycast import SceneRaycaster
    from scene3d.datasets.synthetic import POINTS, _rng, scene3d_block
    from scene3d.datasets.writer import DatasetWriter, box_json, encode_depth, save_png, write_meshes

    scene = room_scene(_rng(seed, 0))
    rig = room_cameras(scene, views, size, _rng(seed, 1))
    raycaster = SceneRaycaster(scene)
    writer = DatasetWriter(out, size, size, rig.K, stylized=stylized)
    assert rig.groups is not None
    writer.add_rig(raycaster, rig, [{"view_group": g} for g in rig.groups])
    pose = panorama_pose()
    pano_rgb, pano_styl, pano_dist = raycaster.render_equirect(pose, 2 * size, size, stylized=stylized)
    save_png(out / "panorama.png", pano_rgb)
    save_png(out / "panorama_depth.png", encode_depth(pano_dist))
    panorama = {
        "file_path": "panorama.png",
        "depth_file_path": "panorama_depth.png",
        "transform_matrix": pose.tolist(),
        "w": 2 * size,
        "h": size,
        "projection": "equirectangular (scene3d.core.cameras.equirect_directions), rotated by transform_matrix",
        "depth_encoding": "uint16 PNG, distance along the ray (not z-depth) in millimetres, 0 = no surface",
    }
    if pano_styl is not None:
        save_png(out / "panorama_stylized.png", pano_styl)
        panorama["stylized_file_path"] = "panorama_stylized.png"
    meshes = write_meshes(out / "meshes", scene)
    ply = writer.write_points(raycaster, POINTS["room"], _rng(seed, 2))
    sx, sy, h = scene.extra["room_size"]
    writer.finish(
        held_out_indices(views, 0.1),
        {
            "ply_file_path": ply,
            "scene_box": box_json(scene.bounds(), 0.05),
            "background_color": list(scene.background_color),
            "panorama": panorama,
            "scene3d": scene3d_block(
                "room", seed, size, views, stylized,
                room_size=[sx, sy, h],
                centre_viewpoint=[0.0, 0.0, EYE_HEIGHT],
                room_meshes=[m["file"] for m in meshes if not m["foreground"]],
                light=scene.light.to_json(),
                meshes=meshes,
                objects=[o.to_json() for o in scene.objects],
            ),  # fmt: skip
        },
    )
