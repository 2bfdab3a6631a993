"""Triangle meshes of the primitives the synthetic scenes are built from, in object-local coordinates.

Every builder returns a :class:`TriMesh` with per-vertex shading normals. Curved surfaces get smooth normals;
vertices are split along sharp creases (box edges, cylinder rims) so that interpolating the vertex normals at a ray
hit gives the true normal on flat faces and a smooth one on curved faces. Closed shapes sit centred on the origin;
:func:`rest_on_ground` lifts a posed mesh so that its lowest point touches ``z = 0``.

trimesh is imported inside the functions so that importing this module stays light.

Example:
    >>> mesh = build_shape("sphere", {"radius": 0.5})
    >>> mesh.vertices.shape[1], mesh.faces.shape[1]
    (3, 3)
"""

from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from jaxtyping import Float, Int

SHAPES = ("box", "sphere", "cylinder", "cone", "torus", "capsule", "superquadric", "plane", "disk")
"""Names :func:`build_shape` accepts."""

_CREASE_ANGLE_RAD = math.radians(35.0)


@dataclass(frozen=True)
class TriMesh:
    """A triangle mesh with per-vertex unit shading normals (float64 vertices, int64 faces)."""

    vertices: Float[np.ndarray, "V 3"]
    faces: Int[np.ndarray, "F 3"]
    normals: Float[np.ndarray, "V 3"]

    def transformed(self, rotation: Float[np.ndarray, "3 3"], translation: Float[np.ndarray, "3"]) -> TriMesh:
        """The mesh moved by ``x -> rotation @ x + translation``."""
        return TriMesh(
            vertices=self.vertices @ rotation.T + translation,
            faces=self.faces,
            normals=self.normals @ rotation.T,
        )

    def face_areas(self) -> Float[np.ndarray, " F"]:
        """Area of each triangle."""
        tri = self.vertices[self.faces]
        return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)


def _from_trimesh(mesh: object, crease_angle: float = _CREASE_ANGLE_RAD) -> TriMesh:
    """Split ``mesh`` along creases sharper than ``crease_angle`` and take its angle-weighted vertex normals."""
    from trimesh import graph

    smooth = graph.smooth_shade(mesh, angle=crease_angle, facet_minarea=None)
    normals = np.asarray(smooth.vertex_normals, dtype=np.float64)
    return TriMesh(
        vertices=np.asarray(smooth.vertices, dtype=np.float64),
        faces=np.asarray(smooth.faces, dtype=np.int64),
        normals=normals / np.linalg.norm(normals, axis=-1, keepdims=True).clip(1e-12),
    )


def _signed_power(x: Float[np.ndarray, "*shape"], e: float) -> Float[np.ndarray, "*shape"]:
    return np.sign(x) * np.abs(x) ** e


def superquadric(
    scale: tuple[float, float, float], eps1: float, eps2: float, *, rings: int = 24, segments: int = 32
) -> TriMesh:
    """A superquadric ellipsoid ``|x/a|^(2/e2) + |y/b|^(2/e2))^(e2/e1) + |z/c|^(2/e1) = 1``.

    ``eps1`` shapes the vertical profile and ``eps2`` the horizontal cross-section: 1 gives round, values near 0
    give box-like, 2 gives diamond-like. One continuous family covers spheres, boxes, cylinders and octahedra.
    """
    import trimesh

    if min(scale) <= 0 or eps1 <= 0 or eps2 <= 0:
        raise ValueError(f"superquadric needs positive scale and exponents, got scale={scale}, eps=({eps1}, {eps2})")
    eta = np.linspace(-math.pi / 2, math.pi / 2, rings + 1)[1:-1]  # latitudes without the poles
    omega = np.linspace(-math.pi, math.pi, segments, endpoint=False)
    ce, se = np.cos(eta)[:, None], np.sin(eta)[:, None]
    co, so = np.cos(omega)[None, :], np.sin(omega)[None, :]
    a, b, c = scale
    x = a * _signed_power(ce, eps1) * _signed_power(co, eps2)
    y = b * _signed_power(ce, eps1) * _signed_power(so, eps2)
    z = c * _signed_power(se, eps1) * np.ones_like(co)
    ring_vertices = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    vertices = np.concatenate([ring_vertices, [[0.0, 0.0, -c], [0.0, 0.0, c]]], axis=0)
    south, north = len(ring_vertices), len(ring_vertices) + 1
    faces = []
    for i in range(rings - 2):
        for j in range(segments):
            j1 = (j + 1) % segments
            p00, p01 = i * segments + j, i * segments + j1
            p10, p11 = (i + 1) * segments + j, (i + 1) * segments + j1
            faces += [[p00, p01, p11], [p00, p11, p10]]
    top = (rings - 2) * segments
    for j in range(segments):
        j1 = (j + 1) % segments
        faces.append([south, j1, j])
        faces.append([north, top + j, top + j1])
    mesh = trimesh.Trimesh(vertices=vertices, faces=np.asarray(faces, dtype=np.int64), process=False)
    return _from_trimesh(mesh)


def grid_plane(size_x: float, size_y: float, cell: float) -> TriMesh:
    """A flat rectangle in the ``z = 0`` plane, centred on the origin, normal +Z, split into cells of ~``cell``."""
    nx = max(1, int(math.ceil(size_x / cell)))
    ny = max(1, int(math.ceil(size_y / cell)))
    xs = np.linspace(-size_x / 2, size_x / 2, nx + 1)
    ys = np.linspace(-size_y / 2, size_y / 2, ny + 1)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    vertices = np.stack([gx, gy, np.zeros_like(gx)], axis=-1).reshape(-1, 3)
    idx = np.arange((nx + 1) * (ny + 1)).reshape(ny + 1, nx + 1)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)], axis=0).astype(np.int64)
    normals = np.tile([0.0, 0.0, 1.0], (len(vertices), 1))
    return TriMesh(vertices=vertices.astype(np.float64), faces=faces, normals=normals)


def grid_disk(radius: float, cell: float) -> TriMesh:
    """A flat disk in the ``z = 0`` plane, centred on the origin, normal +Z, in rings of width ~``cell``."""
    rings = max(1, int(math.ceil(radius / cell)))
    segments = max(16, int(math.ceil(2 * math.pi * radius / cell)))
    vertices = [[0.0, 0.0, 0.0]]
    for r in range(1, rings + 1):
        rad = radius * r / rings
        ang = np.linspace(0, 2 * math.pi, segments, endpoint=False)
        vertices += np.stack([rad * np.cos(ang), rad * np.sin(ang), np.zeros(segments)], -1).tolist()
    faces = []
    for j in range(segments):
        faces.append([0, 1 + j, 1 + (j + 1) % segments])
    for r in range(1, rings):
        base_in, base_out = 1 + (r - 1) * segments, 1 + r * segments
        for j in range(segments):
            j1 = (j + 1) % segments
            faces += [[base_in + j, base_out + j, base_out + j1], [base_in + j, base_out + j1, base_in + j1]]
    v = np.asarray(vertices, dtype=np.float64)
    return TriMesh(vertices=v, faces=np.asarray(faces, dtype=np.int64), normals=np.tile([0.0, 0.0, 1.0], (len(v), 1)))


def build_shape(shape: str, params: Mapping[str, Any]) -> TriMesh:
    """Build one primitive in object-local coordinates.

    Args:
        shape: one of :data:`SHAPES`.
        params: the shape's parameters: ``box`` ``extents`` [x, y, z]; ``sphere`` ``radius``; ``cylinder`` /
            ``cone`` / ``capsule`` ``radius``, ``height``; ``torus`` ``major``, ``minor``; ``superquadric``
            ``scale`` [a, b, c], ``eps1``, ``eps2``; ``plane`` ``size`` [x, y], ``cell``; ``disk`` ``radius``,
            ``cell``. Closed shapes are centred on the origin (the cone from ``z = -height/2`` to ``+height/2``).
    """
    import trimesh
    from trimesh import creation

    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    p = params
    if shape == "plane":
        sx, sy = p["size"]
        return grid_plane(float(sx), float(sy), float(p.get("cell", 0.25)))
    if shape == "disk":
        return grid_disk(float(p["radius"]), float(p.get("cell", 0.25)))
    if shape == "superquadric":
        a, b, c = p["scale"]
        return superquadric((float(a), float(b), float(c)), float(p["eps1"]), float(p["eps2"]))
    if shape == "box":
        mesh = creation.box(extents=np.asarray(p["extents"], dtype=np.float64))
    elif shape == "sphere":
        mesh = creation.uv_sphere(radius=float(p["radius"]), count=[32, 48])
    elif shape == "cylinder":
        mesh = creation.cylinder(radius=float(p["radius"]), height=float(p["height"]), sections=48)
    elif shape == "cone":
        h = float(p["height"])
        mesh = creation.cone(radius=float(p["radius"]), height=h, sections=48)
        mesh.apply_translation([0.0, 0.0, -h / 2])
    elif shape == "capsule":
        mesh = creation.capsule(radius=float(p["radius"]), height=float(p["height"]), count=[32, 32])
    else:  # torus
        mesh = creation.torus(
            major_radius=float(p["major"]), minor_radius=float(p["minor"]), major_sections=48, minor_sections=24
        )
    mesh = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=True)
    return _from_trimesh(mesh)


def rotation_z(angle_rad: float) -> Float[np.ndarray, "3 3"]:
    """Rotation by ``angle_rad`` about +Z."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_x(angle_rad: float) -> Float[np.ndarray, "3 3"]:
    """Rotation by ``angle_rad`` about +X."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rest_on_ground(
    mesh: TriMesh, rotation: Float[np.ndarray, "3 3"], xy: tuple[float, float], z0: float = 0.0
) -> Float[np.ndarray, "3"]:
    """The translation that puts the rotated ``mesh`` at ``xy`` with its lowest vertex on ``z = z0``."""
    lowest = float((mesh.vertices @ rotation.T)[:, 2].min())
    return np.array([xy[0], xy[1], z0 - lowest])


MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")
"""File types :func:`read_mesh_file` reads (through trimesh)."""


def read_mesh_file(path: str | Path) -> tuple[Float[np.ndarray, "V 3"], Int[np.ndarray, "F 3"]]:
    """The vertices and triangles of a user's mesh file (OBJ, PLY, GLB/glTF, OFF, STL), all its parts merged.

    Raises:
        DataError: naming the file, when it is missing, of an unknown type, unreadable, or holds no triangles.
    """
    import trimesh

    from scene3d.core.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "mesh file not found")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise DataError(path, None, f"unsupported mesh file type {path.suffix!r}; expected one of {MESH_SUFFIXES}")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as err:  # trimesh raises many types (ValueError, KeyError, struct.error, ...) on bad files
        raise DataError(path, None, f"cannot read the mesh: {type(err).__name__}: {err}") from err
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if faces.ndim != 2 or faces.shape[-1] != 3 or len(faces) == 0 or len(vertices) == 0:
        raise DataError(path, None, "the file holds no triangles (an empty or non-mesh file)")
    if not np.isfinite(vertices).all():
        raise DataError(path, None, "the mesh has non-finite vertex coordinates")
    return vertices, faces


def smooth_mesh(vertices: Float[np.ndarray, "V 3"], faces: Int[np.ndarray, "F 3"]) -> TriMesh:
    """A :class:`TriMesh` of arbitrary triangles with the primitives' normals: duplicate vertices merged, then split
    along creases sharper than 35°, angle-weighted smooth normals elsewhere."""
    import trimesh

    return _from_trimesh(trimesh.Trimesh(vertices=vertices, faces=faces, process=True))
