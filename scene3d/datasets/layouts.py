"""Scene layouts and camera rigs of the synthetic kinds: ``object``, ``forward``, ``room`` and ``collection``.

Every function takes a seeded ``numpy.random.Generator`` and is deterministic. World up is +Z, units are metres,
cameras are OpenGL camera-to-world matrices from :func:`scene3d.core.cameras.look_at`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import fibonacci_sphere, intrinsics_from_fov, look_at
from scene3d.datasets.materials import (
    GLOSSY,
    MATTE,
    Light,
    Texture,
    hsv_color,
    random_texture,
    stylize_texture,
)
from scene3d.datasets.scene import Scene, SceneObject, footprint_radius, place_without_overlap
from scene3d.datasets.shapes import TriMesh, rest_on_ground, rotation_x, rotation_z

OBJECT_SHAPES = ("box", "sphere", "cylinder", "cone", "torus", "capsule")
OBJECT_BACKGROUND = (0.93, 0.95, 0.97)


class NoRoomError(RuntimeError):
    """The objects do not fit on the ground without overlapping."""


@dataclass(frozen=True)
class CameraRig:
    """Poses and shared intrinsics of a set of views.

    Attributes:
        c2w: camera-to-world matrices, OpenGL axes.
        K: pinhole intrinsics shared by every view.
        width: image width in pixels.
        height: image height in pixels.
        groups: an optional label per view (the ``room`` kind's ``centre`` / ``interior`` views).
    """

    c2w: Float[Tensor, "C 4 4"]
    K: Float[Tensor, "3 3"]
    width: int
    height: int
    groups: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return int(self.c2w.shape[0])


def held_out_indices(n: int, fraction: float = 0.1, *, every: int | None = None) -> list[int]:
    """Evenly spread evaluation views: every ``every``-th view when given, else ``max(1, round(n·fraction))``
    views; always leaves at least one training view. Needs ``n >= 2``."""
    if n < 2:
        raise ValueError(f"a dataset needs at least 2 views (one to train, one to evaluate), got {n}")
    if every is not None:
        picks = list(range(every // 2, n, every)) or [n // 2]
    else:
        k = max(1, round(n * fraction))
        picks = sorted({int((i + 0.5) * n / k) for i in range(k)})
    return [p for p in picks if p < n][: n - 1]


def _random_object(rng: np.random.Generator, shape: str, name: str, *, scale_range: tuple[float, float]) -> SceneObject:
    """An object of ``shape`` with random size and texture at the origin (not yet placed)."""
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 4)  # noqa: E731
    rotation = np.eye(3)
    if shape == "box":
        params = {"extents": [u(0.35, 0.7), u(0.35, 0.7), u(0.3, 0.7)]}
    elif shape == "sphere":
        params = {"radius": u(0.22, 0.38)}
    elif shape == "cylinder":
        params = {"radius": u(0.15, 0.3), "height": u(0.4, 0.9)}
    elif shape == "cone":
        params = {"radius": u(0.2, 0.35), "height": u(0.5, 0.9)}
    elif shape == "torus":
        params = {"major": u(0.25, 0.35), "minor": u(0.08, 0.12)}
        if rng.random() < 0.5:
            rotation = rotation_x(math.pi / 2)  # standing on its rim
    elif shape == "capsule":
        params = {"radius": u(0.13, 0.22), "height": u(0.3, 0.6)}
    else:
        raise ValueError(f"unknown object shape {shape!r}")
    rotation = rotation_z(float(rng.uniform(0, 2 * math.pi))) @ rotation
    texture = random_texture(rng, scale_range=scale_range)
    return SceneObject(
        name=name,
        shape=shape,
        params=params,
        rotation=rotation,
        translation=np.zeros(3),
        texture=texture,
        material=MATTE,
        stylized_texture=stylize_texture(texture, rng),
    )


def random_objects_on_ground(
    rng: np.random.Generator,
    count: int,
    *,
    area_radius: float,
    centre: tuple[float, float] = (0.0, 0.0),
    occupied: list[tuple[float, float, float]] | None = None,
    name_start: int = 0,
    scale_range: tuple[float, float] = (0.2, 0.35),
    glossy: int = 1,
) -> list[SceneObject]:
    """``count`` random objects resting on ``z = 0`` without overlap; ``glossy`` of them get the glossy material.

    When ``count`` objects do not fit, objects are dropped until they do (:class:`NoRoomError` when not even one
    fits). Shapes cycle through a seeded permutation of :data:`OBJECT_SHAPES`, so up to six objects are all different.
    """
    order = [OBJECT_SHAPES[i] for i in rng.permutation(len(OBJECT_SHAPES))]
    objects = [
        _random_object(rng, order[i % len(order)], f"object_{name_start + i:02d}", scale_range=scale_range)
        for i in range(count)
    ]
    occ = [(x - centre[0], y - centre[1], r) for x, y, r in (occupied or [])]
    for _ in range(20):
        positions = place_without_overlap(rng, [footprint_radius(o) for o in objects], occ, area_radius=area_radius)
        if positions is not None:
            break
        objects = objects[:-1] if len(objects) > 1 else objects  # too crowded: drop one and retry
    else:
        raise NoRoomError(f"could not place {len(objects)} object(s) without overlap in radius {area_radius}")
    glossy_ids = set(rng.permutation(len(objects))[:glossy].tolist())
    placed = []
    for i, (obj, (x, y)) in enumerate(zip(objects, positions, strict=True)):
        t = rest_on_ground(obj.local_mesh, obj.rotation, (x + centre[0], y + centre[1]))
        placed.append(replace(obj, translation=np.round(t, 6), material=GLOSSY if i in glossy_ids else MATTE))
    return placed


def background_surface(
    name: str,
    shape: str,
    params: dict[str, Any],
    texture: Texture,
    rng: np.random.Generator,
    *,
    rotation: np.ndarray | None = None,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> SceneObject:
    """A background surface (ground, wall, ceiling): matte, not in the foreground masks."""
    return SceneObject(
        name=name,
        shape=shape,
        params=params,
        rotation=np.eye(3) if rotation is None else rotation,
        translation=np.asarray(translation, dtype=np.float64),
        texture=texture,
        material=MATTE,
        stylized_texture=stylize_texture(texture, rng),
        foreground=False,
    )


def unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    """``v`` normalised, rounded to 6 decimals."""
    n = math.sqrt(sum(c * c for c in v))
    return (round(v[0] / n, 6), round(v[1] / n, 6), round(v[2] / n, 6))


def _neutral_checker(rng: np.random.Generator, scale: float) -> Texture:
    hue = float(rng.random())
    return Texture("checker", hsv_color(hue, 0.12, 0.86), hsv_color(hue, 0.2, 0.68), scale=scale)


def _sun(rng: np.random.Generator, elevation_deg: float, ambient: float) -> Light:
    az = float(rng.uniform(0, 2 * math.pi))
    el = math.radians(elevation_deg)
    v = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
    return Light("directional", unit(v), ambient)


# ---------------------------------------------------------------------------------------------------- object
def object_scene(rng: np.random.Generator, *, num_objects: int = 5) -> Scene:
    """An object group on a finite ground (a disk or a square, seeded) under a sun with soft ambient light."""
    if rng.random() < 0.5:
        shape, params = "disk", {"radius": 2.2, "cell": 0.25}
    else:
        shape, params = "plane", {"size": [4.0, 4.0], "cell": 0.25}
    ground = background_surface("ground", shape, params, _neutral_checker(rng, 0.5), rng)
    objects = random_objects_on_ground(rng, num_objects, area_radius=1.3)
    return Scene(objects=(ground, *objects), light=_sun(rng, 55.0, 0.4), background_color=OBJECT_BACKGROUND)


def orbit_cameras(
    n: int,
    size: int,
    rng: np.random.Generator,
    *,
    radius: float = 4.0,
    target: tuple[float, float, float] = (0.0, 0.0, 0.3),
    elevation_deg: tuple[float, float] = (15.0, 60.0),
    fov_deg: float = 40.0,
    azimuth_offset: float | None = None,
) -> CameraRig:
    """``n`` cameras spread evenly (Fibonacci) over an upper-hemisphere band around ``target``, 360° around."""
    dirs = fibonacci_sphere(n, min_elevation_deg=elevation_deg[0], max_elevation_deg=elevation_deg[1]).double()
    offset = float(rng.uniform(0, 2 * math.pi)) if azimuth_offset is None else azimuth_offset
    c, s = math.cos(offset), math.sin(offset)
    rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    tgt = torch.tensor(target, dtype=torch.float64)
    eye = dirs @ rot.T * radius + tgt
    c2w = look_at(eye.float(), tgt.float().expand(n, 3))
    return CameraRig(c2w=c2w, K=intrinsics_from_fov(fov_deg, size, size), width=size, height=size)


# ---------------------------------------------------------------------------------------------------- forward
def forward_scene(rng: np.random.Generator) -> Scene:
    """A tabletop-like arrangement in front of a back wall, for forward-facing (LLFF-like) captures."""
    ground_params = {"size": [8.0, 6.0], "cell": 0.25}
    ground_tex = _neutral_checker(rng, 0.5)
    ground = background_surface("ground", "plane", ground_params, ground_tex, rng, translation=(0.0, -0.4, 0.0))
    hue = float(rng.random())
    wall_tex = Texture("waves", hsv_color(hue, 0.25, 0.85), hsv_color(hue + 0.08, 0.35, 0.7), scale=0.4, axis=0)
    wall = background_surface(
        "back_wall", "plane", {"size": [8.0, 4.0], "cell": 0.25}, wall_tex, rng,
        rotation=rotation_x(math.pi / 2), translation=(0.0, 2.6, 2.0),
    )  # fmt: skip
    objects = random_objects_on_ground(rng, 6, area_radius=1.45, centre=(0.0, 0.7))
    light = Light("directional", unit((-0.45, -0.6, 0.66)), 0.4)
    return Scene(objects=(ground, wall, *objects), light=light, background_color=OBJECT_BACKGROUND)


def forward_cameras(n: int, size: int, rng: np.random.Generator, *, fov_deg: float = 50.0) -> CameraRig:
    """``n`` cameras on a jittered grid in the plane ``y = -2.3`` (1.2 m × 0.6 m), all looking at one focus point."""
    cols = max(1, math.ceil(math.sqrt(n * 2.0)))
    rows = math.ceil(n / cols)
    eyes = []
    for i in range(n):
        r, c = divmod(i, cols)
        jx, jz = rng.uniform(-0.3, 0.3, size=2)
        x = -0.6 + 1.2 * (c + 0.5 + jx) / cols
        z = 0.9 + 0.6 * (r + 0.5 + jz) / rows
        eyes.append([x, -2.3, z])
    eye = torch.tensor(eyes, dtype=torch.float32)
    focus = torch.tensor([0.0, 0.9, 0.35]).expand(n, 3)
    return CameraRig(c2w=look_at(eye, focus), K=intrinsics_from_fov(fov_deg, size, size), width=size, height=size)


# ---------------------------------------------------------------------------------------------------- user mesh
USER_MESH_NAME = "user_mesh"
"""Name (and mesh-file stem) of the object made from ``--mesh``."""
USER_MESH_SIZE = 1.2
"""Longest side, in metres, of a user's mesh once normalised to the scene's scale (the primitives of the ``object``
and ``forward`` kinds are 0.4–0.7 m; their group spans ~2.6 m)."""


def normalise_mesh(
    vertices: Float[np.ndarray, "V 3"], *, up: str = "z", size: float = USER_MESH_SIZE
) -> tuple[Float[np.ndarray, "V 3"], float]:
    """Object-local vertices of a user's mesh at the scene's scale: rotated so ``up`` becomes +Z, its bounding box
    centred on the origin and its longest side ``size`` metres. Returns the vertices and the scale applied.

    Vertices are rounded to float32 (the precision of the mesh files), so what is rendered is exactly what a
    dataset's mesh file stores.
    """
    if up not in ("y", "z"):
        raise ValueError(f"up must be 'y' or 'z', got {up!r}")
    v = vertices @ rotation_x(math.pi / 2).T if up == "y" else vertices.copy()  # +Y -> +Z
    lo, hi = v.min(axis=0), v.max(axis=0)
    extent = float((hi - lo).max())
    if extent <= 0.0:
        raise ValueError("the mesh is a single point; it has no size to normalise")
    scale = size / extent
    v = (v - (lo + hi) / 2.0) * scale
    return v.astype(np.float32).astype(np.float64), scale


def user_mesh_object(
    mesh: TriMesh, rng: np.random.Generator, *, xy: tuple[float, float], source_sha256: str, scale: float
) -> SceneObject:
    """The object a user's (normalised, object-local) mesh becomes: a random solid texture (and its stylized
    counterpart), matte, resting on ``z = 0`` at ``xy``. ``params`` record the file it is rebuilt from, the source
    file's sha256 and the scale applied (not the source's name: every string in ``transforms.json`` that names a
    file in the dataset folder counts as the dataset's own, see :mod:`scene3d.datasets.ownership`)."""
    texture = random_texture(rng)
    obj = SceneObject(
        name=USER_MESH_NAME,
        shape="mesh",
        params={"file": f"meshes/{USER_MESH_NAME}_source.ply", "source_sha256": source_sha256, "scale": round(scale, 9)},
        rotation=np.eye(3),
        translation=np.zeros(3),
        texture=texture,
        material=MATTE,
        stylized_texture=stylize_texture(texture, rng),
        mesh=mesh,
    )
    return replace(obj, translation=np.round(rest_on_ground(mesh, obj.rotation, xy), 6))


def with_user_mesh(scene: Scene, obj: SceneObject) -> Scene:
    """``scene`` with its foreground objects replaced by ``obj`` (ground, walls, light and background kept)."""
    return replace(scene, objects=(*(o for o in scene.objects if not o.foreground), obj))
