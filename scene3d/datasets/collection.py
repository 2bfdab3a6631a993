"""The ``collection`` kind: many instances of one parametric shape family, each from random poses (a 3D-GAN set).

Every instance is a superquadric (:func:`scene3d.datasets.shapes.superquadric`) with random semi-axes and
exponents (spheres, boxes, cylinders, octahedra and everything between), a random two-colour texture and a random
yaw, centred on the origin. Each is seen from ``views`` cameras at uniformly random positions on a sphere of
:data:`CAMERA_RADIUS` (elevations within ±:data:`MAX_ELEVATION_DEG`), looking at the origin with a
:data:`FOV_DEG` vertical field of view, on a white background. Every frame carries its ``instance_id``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from scene3d.core.cameras import intrinsics_from_fov, look_at
from scene3d.datasets.layouts import held_out_indices
from scene3d.datasets.materials import MATTE, Light, random_texture, stylize_texture
from scene3d.datasets.scene import Scene, SceneObject
from scene3d.datasets.shapes import rotation_z

CAMERA_RADIUS = 3.5
"""Distance of every camera from the origin, metres."""
FOV_DEG = 30.0
"""Vertical (= horizontal) field of view of every camera."""
MAX_ELEVATION_DEG = 80.0
"""Cameras stay within this elevation of the horizon (``look_at`` is undefined straight up or down)."""
OBJECT_RADIUS = 0.96
"""Every instance lies inside the sphere of this radius around the origin (semi-axes ≤ 0.55)."""
SHAPE_PARAMS = {"scale": (0.3, 0.55), "eps1": (0.25, 1.6), "eps2": (0.25, 1.6)}
"""Uniform ranges of the superquadric parameters."""
LIGHT = Light("directional", (0.36, -0.48, 0.8), 0.45)
BACKGROUND = (1.0, 1.0, 1.0)


def instance(rng: np.random.Generator, index: int) -> SceneObject:
    """Instance ``index``: random superquadric parameters, texture and yaw."""
    lo, hi = SHAPE_PARAMS["scale"]
    params = {
        "scale": [round(float(rng.uniform(lo, hi)), 4) for _ in range(3)],
        "eps1": round(float(rng.uniform(*SHAPE_PARAMS["eps1"])), 4),
        "eps2": round(float(rng.uniform(*SHAPE_PARAMS["eps2"])), 4),
    }
    texture = random_texture(rng, scale_range=(0.12, 0.3))
    return SceneObject(
        name=f"instance_{index:05d}",
        shape="superquadric",
        params=params,
        rotation=rotation_z(float(rng.uniform(0, 2 * math.pi))),
        translation=np.zeros(3),
        texture=texture,
        material=MATTE,
        stylized_texture=stylize_texture(texture, rng),
    )


def sphere_poses(n: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` cameras uniformly distributed (by area) on the sphere band, looking at the origin."""
    z_max = math.sin(math.radians(MAX_ELEVATION_DEG))
    z = rng.uniform(-z_max, z_max, size=n)
    phi = rng.uniform(0, 2 * math.pi, size=n)
    r = np.sqrt(1 - z**2)
    eye = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1) * CAMERA_RADIUS
    return look_at(torch.tensor(eye, dtype=torch.float32), torch.zeros(n, 3))


def generate_collection(out: Path, *, size: int, views: int, seed: int, stylized: bool, instances: int) -> None:
    """Write the ``collection`` kind into ``out`` (see :func:`scene3d.datasets.synthetic.generate_scene`)."""
    from scene3d.datasets.raycast import SceneRaycaster
    from scene3d.datasets.synthetic import _rng, scene3d_block
    from scene3d.datasets.writer import DatasetWriter, write_meshes

    K = intrinsics_from_fov(FOV_DEG, size, size)
    writer = DatasetWriter(out, size, size, K, stylized=stylized)
    shape_rng, camera_rng = _rng(seed, 0), _rng(seed, 1)
    records = []
    for i in range(instances):
        obj = instance(shape_rng, i)
        scene = Scene(objects=(obj,), light=LIGHT, background_color=BACKGROUND)
        raycaster = SceneRaycaster(scene)
        poses = sphere_poses(views, camera_rng)
        writer.add_views(raycaster, poses, [{"instance_id": i}] * views)
        write_meshes(out / "meshes", scene, merged=False)
        records.append({"instance_id": i, "mesh_file": f"meshes/{obj.name}.ply", **obj.to_json()})
    total = instances * views
    r = OBJECT_RADIUS
    writer.finish(
        held_out_indices(total, 0.1),
        {
            "scene_box": [[-r, -r, -r], [r, r, r]],
            "background_color": list(BACKGROUND),
            "scene3d": scene3d_block(
                "collection",
                seed,
                size,
                views,
                stylized,
                instances=instances,
                views_per_instance=views,
                shape_family="superquadric",
                shape_params={k: list(v) for k, v in SHAPE_PARAMS.items()},
                camera={
                    "distribution": "uniform on the sphere band |elevation| <= max_elevation_deg, facing the origin",
                    "radius": CAMERA_RADIUS,
                    "fov_deg": FOV_DEG,
                    "max_elevation_deg": MAX_ELEVATION_DEG,
                    "up": [0.0, 0.0, 1.0],
                },
                object_radius=OBJECT_RADIUS,
                light=LIGHT.to_json(),
                objects=records,
            ),
        },
    )
