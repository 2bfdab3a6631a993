"""The ``changing`` kind: an object scene captured at ``steps`` time steps while it changes (CLNeRF's setting).

Step 0 is an ``object`` layout. Each later step applies changes to the previous one, cycling through
``recolour`` (appearance only: new texture, same geometry), ``move`` (geometry: new position and yaw), ``appear``
(a new object) and ``vanish`` (an object is removed); with ``steps == 2`` step 1 both recolours one object and
moves another. Every step is captured by its own cameras (a different azimuth offset, elevation band and radius)
into its own nerfstudio dataset ``out/step_XX/``; ground, light, background, world frame, scale and ``scene_box``
are shared by all steps. ``out/manifest.json`` lists the steps, their folders and what changed in each.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from scene3d.datasets.layouts import (
    NoRoomError,
    held_out_indices,
    object_scene,
    orbit_cameras,
    random_objects_on_ground,
)
from scene3d.datasets.materials import random_texture, stylize_texture
from scene3d.datasets.scene import Scene, footprint_radius, place_without_overlap
from scene3d.datasets.shapes import rest_on_ground, rotation_z

CHANGE_CYCLE = ("recolour", "move", "appear", "vanish")
AREA_RADIUS = 1.3


def _occupied(scene: Scene, exclude: str | None = None) -> list[tuple[float, float, float]]:
    return [
        (float(o.translation[0]), float(o.translation[1]), footprint_radius(o))
        for o in scene.objects
        if o.foreground and o.name != exclude
    ]


def _apply(scene: Scene, change: str, rng: np.random.Generator, next_index: int) -> tuple[Scene, dict[str, Any]]:
    """One change of type ``change``; returns the new scene and its manifest record."""
    movable = [o for o in scene.objects if o.foreground]
    if change == "vanish" and len(movable) < 2:
        change = "appear"
    if change == "recolour":
        obj = movable[int(rng.integers(len(movable)))]
        texture = random_texture(rng, scale_range=(0.18, 0.32))
        new = replace(obj, texture=texture, stylized_texture=stylize_texture(texture, rng))
        record = {"from": obj.texture.to_json(), "to": texture.to_json()}
        return scene.replace_object(obj.name, new), _record(change, obj.name, False, record)
    if change == "move":
        for _ in range(20):
            obj = movable[int(rng.integers(len(movable)))]
            rotation = rotation_z(float(rng.uniform(0.5, 2 * math.pi - 0.5))) @ obj.rotation
            moved = replace(obj, rotation=rotation)
            spot = place_without_overlap(
                rng, [footprint_radius(moved)], _occupied(scene, obj.name), area_radius=AREA_RADIUS
            )
            if spot is not None:
                t = np.round(rest_on_ground(moved.local_mesh, rotation, spot[0]), 6)
                moved = replace(moved, translation=t)
                record = {"from": obj.translation.tolist(), "to": t.tolist()}
                return scene.replace_object(obj.name, moved), _record(change, obj.name, True, record)
        return _apply(scene, "vanish", rng, next_index)  # no free spot anywhere: something vanishes instead
    if change == "appear":
        try:
            (new,) = random_objects_on_ground(
                rng, 1, area_radius=AREA_RADIUS, occupied=_occupied(scene), name_start=next_index, glossy=0
            )
        except NoRoomError:  # the ground is full: something vanishes instead
            return _apply(scene, "vanish", rng, next_index)
        return scene.with_object(new), _record(change, new.name, True, {"shape": new.shape})
    if change == "vanish":
        obj = movable[int(rng.integers(len(movable)))]
        return scene.replace_object(obj.name, None), _record(change, obj.name, True, {"shape": obj.shape})
    raise ValueError(f"unknown change {change!r}")


def _record(change: str, name: str, geometry: bool, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": change, "object": name, "geometry_changed": geometry, "appearance_only": not geometry, **extra}


def changing_scenes(rng: np.random.Generator, steps: int) -> list[tuple[Scene, list[dict[str, Any]]]]:
    """The scene of every step and the changes that led to it (none for step 0)."""
    scene = object_scene(rng, num_objects=4)
    next_index = 4
    out: list[tuple[Scene, list[dict[str, Any]]]] = [(scene, [])]
    for step in range(1, steps):
        if steps == 2:
            plan = ["recolour", "move"]
        elif step <= len(CHANGE_CYCLE):
            plan = [CHANGE_CYCLE[step - 1]]
        else:
            plan = [CHANGE_CYCLE[int(rng.integers(len(CHANGE_CYCLE)))]]
        records = []
        for change in plan:
            scene, record = _apply(scene, change, rng, next_index)
            if record["type"] == "appear":
                next_index += 1
            records.append(record)
        out.append((scene, records))
    return out


def generate_changing(out: Path, *, size: int, views: int, seed: int, stylized: bool, steps: int) -> None:
    """Write the ``changing`` kind into ``out`` (see :func:`scene3d.datasets.synthetic.generate_scene`)."""
    from scene3d.datasets.raycast import SceneRaycaster
    from scene3d.datasets.synthetic import GENERATOR_VERSION, POINTS, _rng, scene3d_block
    from scene3d.datasets.writer import DatasetWriter, box_json, write_meshes

    history = changing_scenes(_rng(seed, 0), steps)
    bounds = np.stack([s.bounds() for s, _ in history])
    scene_box = box_json(np.stack([bounds[:, 0].min(0), bounds[:, 1].max(0)]), 0.05)
    background = list(history[0][0].background_color)
    camera_rng = _rng(seed, 1)
    manifest_steps = []
    for step, (scene, changes) in enumerate(history):
        folder = f"step_{step:02d}"
        rig = orbit_cameras(
            views,
            size,
            camera_rng,
            radius=round(float(camera_rng.uniform(3.8, 4.3)), 4),
            elevation_deg=(round(float(camera_rng.uniform(12, 20)), 3), round(float(camera_rng.uniform(55, 65)), 3)),
        )
        raycaster = SceneRaycaster(scene)
        writer = DatasetWriter(out / folder, size, size, rig.K, stylized=stylized)
        writer.add_rig(raycaster, rig, [{"time_step": step}] * views)
        meshes = write_meshes(out / folder / "meshes", scene)
        ply = writer.write_points(raycaster, POINTS["changing"], _rng(seed, 100 + step))
        names = [o.name for o in scene.objects]
        writer.finish(
            held_out_indices(views, 0.1),
            {
                "ply_file_path": ply,
                "scene_box": scene_box,
                "background_color": background,
                "scene3d": scene3d_block(
                    "changing",
                    seed,
                    size,
                    views,
                    stylized,
                    time_step=step,
                    num_steps=steps,
                    manifest="../manifest.json",
                    changes=changes,
                    light=scene.light.to_json(),
                    meshes=meshes,
                    objects=[o.to_json() for o in scene.objects],
                ),
            },
        )
        manifest_steps.append(
            {
                "step": step,
                "folder": folder,
                "transforms": f"{folder}/transforms.json",
                "num_views": views,
                "changes": changes,
                "geometry_changed": any(c["geometry_changed"] for c in changes),
                "appearance_changed": bool(changes),
                "objects": names,
            }
        )
    manifest = {
        "kind": "changing",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "views_per_step": views,
        "num_steps": steps,
        "stylized": stylized,
        "world_frame": "shared by every step: metres, +Z up, OpenGL camera-to-world; no per-step normalisation",
        "scene_box": scene_box,
        "background_color": background,
        "steps": manifest_steps,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
