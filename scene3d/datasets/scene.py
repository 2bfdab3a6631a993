"""The description of a synthetic scene: posed, textured primitives, a light and a background colour.

A :class:`Scene` is plain data (no open3d object), so layouts can be built, edited (the ``changing`` kind moves,
recolours, adds and removes objects) and written to JSON before anything is rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
from jaxtyping import Float

from scene3d.datasets.materials import MATTE, TOON, Color, Light, Material, Texture
from scene3d.datasets.shapes import TriMesh, build_shape


@dataclass(frozen=True, eq=False)
class SceneObject:
    """One posed primitive with its normal and its stylized look.

    Attributes:
        name: unique within the scene (also the mesh file's stem).
        shape: a :data:`scene3d.datasets.shapes.SHAPES` name.
        params: the shape's parameters (see :func:`scene3d.datasets.shapes.build_shape`).
        rotation: object-to-world rotation.
        translation: object-to-world translation (world = rotation @ local + translation).
        texture: the normal look.
        material: the normal reflectance.
        stylized_texture: the look of the ``--stylized`` renders.
        stylized_material: the reflectance of the ``--stylized`` renders.
        foreground: whether the object belongs to the foreground masks (ground, walls and ceilings do not).
        mesh: the object-local mesh itself, for ``shape == "mesh"`` (a user's mesh; ``params`` then name the file
            it was read from). Primitives leave it ``None`` and are built from ``shape`` and ``params``.
    """

    name: str
    shape: str
    params: dict[str, Any]
    rotation: Float[np.ndarray, "3 3"]
    translation: Float[np.ndarray, "3"]
    texture: Texture
    material: Material = MATTE
    stylized_texture: Texture | None = None
    stylized_material: Material = TOON
    foreground: bool = True
    mesh: TriMesh | None = None

    def __post_init__(self) -> None:
        if (self.shape == "mesh") != (self.mesh is not None):
            raise ValueError(f"object {self.name!r}: a mesh is given exactly when shape is 'mesh', got shape {self.shape!r}")

    @cached_property
    def local_mesh(self) -> TriMesh:
        """The mesh in object-local coordinates."""
        return self.mesh if self.mesh is not None else build_shape(self.shape, self.params)

    @cached_property
    def world_mesh(self) -> TriMesh:
        """The mesh in world coordinates."""
        return self.local_mesh.transformed(self.rotation, self.translation)

    def moved(self, rotation: Float[np.ndarray, "3 3"], translation: Float[np.ndarray, "3"]) -> SceneObject:
        """A copy at a new pose (the cached meshes are rebuilt)."""
        return replace(self, rotation=rotation, translation=translation)

    def look(self, stylized: bool) -> tuple[Texture, Material]:
        """The texture and material of the normal or the stylized renders."""
        if stylized:
            return (self.stylized_texture or self.texture), self.stylized_material
        return self.texture, self.material

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (as written into ``transforms.json``'s ``scene3d.objects``)."""
        return {
            "name": self.name,
            "shape": self.shape,
            "params": self.params,
            "rotation": np.round(self.rotation, 9).tolist(),
            "translation": np.round(self.translation, 9).tolist(),
            "texture": self.texture.to_json(),
            "material": self.material.to_json(),
            "stylized_texture": None if self.stylized_texture is None else self.stylized_texture.to_json(),
            "stylized_material": self.stylized_material.to_json(),
            "foreground": self.foreground,
            "mesh_file": f"meshes/{self.name}.ply",
        }


@dataclass(frozen=True, eq=False)
class Scene:
    """Objects, light and background of one synthetic scene (one time step of a ``changing`` scene)."""

    objects: tuple[SceneObject, ...]
    light: Light
    background_color: Color
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [o.name for o in self.objects]
        if len(set(names)) != len(names):
            raise ValueError(f"scene object names must be unique, got {names}")

    def bounds(self) -> Float[np.ndarray, "2 3"]:
        """Axis-aligned bounds ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` of every object."""
        verts = np.concatenate([o.world_mesh.vertices for o in self.objects], axis=0)
        return np.stack([verts.min(axis=0), verts.max(axis=0)])

    def replace_object(self, name: str, new: SceneObject | None) -> Scene:
        """A copy with object ``name`` replaced by ``new`` (``None`` removes it)."""
        objects = tuple(new if o.name == name else o for o in self.objects if o.name != name or new is not None)
        return replace(self, objects=objects)

    def with_object(self, new: SceneObject) -> Scene:
        """A copy with ``new`` added."""
        return replace(self, objects=(*self.objects, new))


def footprint_radius(obj: SceneObject) -> float:
    """Radius of the object's footprint on the ground plane (for non-overlapping placement)."""
    verts = obj.local_mesh.vertices @ obj.rotation.T
    return float(np.linalg.norm(verts[:, :2], axis=-1).max())


def place_without_overlap(
    rng: np.random.Generator,
    radii: list[float],
    occupied: list[tuple[float, float, float]],
    *,
    area_radius: float,
    gap: float = 0.08,
    tries: int = 400,
) -> list[tuple[float, float]] | None:
    """Positions in a disk of ``area_radius`` for footprints of ``radii`` that overlap neither each other nor the
    ``occupied`` (x, y, radius) circles; ``None`` when no such placement was found within ``tries``."""
    placed = list(occupied)
    positions: list[tuple[float, float]] = []
    for radius in radii:
        for _ in range(tries):
            r = area_radius * math.sqrt(float(rng.random()))
            a = 2.0 * math.pi * float(rng.random())
            x, y = r * math.cos(a), r * math.sin(a)
            if math.hypot(x, y) + radius > area_radius + radius * 0.5:
                continue
            if all(math.hypot(x - px, y - py) >= radius + pr + gap for px, py, pr in placed):
                placed.append((x, y, radius))
                positions.append((round(x, 6), round(y, 6)))
                break
        else:
            return None
    return positions
