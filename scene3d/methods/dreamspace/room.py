"""The room DreamSpace retextures: its mesh (with the scan's colours, when it has them) and the centre viewpoint.

:func:`load_room` reads what ``--data`` names:

* a mesh file (``.ply``, ``.obj``, ``.glb``/``.gltf``, ``.off``, ``.stl``): a scan, or ``s3d export mesh`` of a
  trained run. Vertex colours, or a texture sampled at the vertices, are the scan's colours (the texture cue); glTF
  files are turned from their +Y up to scene3d's +Z up;
* a dataset folder written by ``s3d data synth`` (its ``transforms.json`` lists the meshes): the merged
  ``meshes/scene.ply`` (walls, floor, ceiling and furniture, with albedo vertex colours) and the centre viewpoint
  stored there.

Bad input gives one clear error or warning each (:func:`check_room`): a mesh with no faces or non-finite vertices
(error), duplicate vertices and degenerate faces (merged and dropped, with a warning), non-manifold edges (warning:
xatlas and the visibility tests still run, but charts may be poor), more faces than ``max_faces`` (decimated with
open3d's quadric decimation, with a warning), and a centre outside the room or inside an object (error, with how
many rays from it escaped or hit the back of a surface).

Example:
    >>> room = load_room("data/room")  # doctest: +SKIP
    >>> room.centre, room.colors is not None  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from scene3d.core.cameras import Z_UP_TO_Y_UP, fibonacci_sphere
from scene3d.core.errors import DataError
from scene3d.renderers.mesh import MeshRaycaster

logger = logging.getLogger(__name__)

MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".off", ".stl")


@dataclass(frozen=True)
class Room:
    """A room mesh in scene3d's frame (+Z up, metres) and the viewpoint its panorama is generated from."""

    vertices: Float[Tensor, "V 3"]
    faces: Int[Tensor, "F 3"]
    colors: Float[Tensor, "V 3"] | None
    """The scan's colours in [0, 1] (the texture cue), or ``None`` for an uncoloured mesh."""
    centre: Float[Tensor, "3"]
    """The panorama's viewpoint: inside the room, in free space."""
    source: str
    """What was read (for messages)."""

    @property
    def bounds(self) -> Float[Tensor, "2 3"]:
        """Axis-aligned bounding box ``[min, max]``."""
        return torch.stack([self.vertices.min(0).values, self.vertices.max(0).values])


@dataclass(frozen=True)
class RoomChecks:
    """Limits for :func:`check_room`."""

    max_faces: int = 200_000
    """Meshes with more faces are decimated to this many (quadric decimation), with a warning."""
    max_escape_fraction: float = 0.25
    """The centre is outside the room when more than this fraction of rays from it hit nothing (a scan may have
    holes: a missing ceiling lets up to half the rays out, so the default allows a fair share)."""
    max_backface_fraction: float = 0.5
    """The centre is inside an object (or outside a closed room) when more than this fraction of the rays that hit
    something hit the back of a surface (rooms face inwards, furniture outwards)."""


def _read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    import trimesh

    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as err:  # noqa: BLE001 (trimesh raises many kinds; the message names the file)
        raise DataError(path, None, f"cannot be read as a mesh ({type(err).__name__}: {err})") from err
    if not isinstance(mesh, trimesh.Trimesh):
        raise DataError(path, None, "holds no triangle mesh (a point cloud? DreamSpace needs the room's surfaces)")
    if path.suffix.lower() in (".glb", ".gltf"):
        mesh.apply_transform(Z_UP_TO_Y_UP.numpy().T)  # glTF's +Y up to scene3d's +Z up
    colors = None
    kind = mesh.visual.kind
    if kind == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    elif kind == "texture":
        try:
            colors = np.asarray(mesh.visual.to_color().vertex_colors, dtype=np.float32)[:, :3] / 255.0
        except Exception as err:  # noqa: BLE001 (a texture without an image: no colours, the mesh is still usable)
            logger.warning("%s: its texture cannot be sampled (%s); using the mesh without colours", path, err)
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64), colors


def load_room(
    data: str | Path, *, centre: tuple[float, float, float] | None = None, checks: RoomChecks | None = None
) -> Room:
    """Read the room named by ``--data`` (module docstring), check it and place its centre viewpoint.

    Args:
        data: a mesh file, or a dataset folder written by ``s3d data synth``.
        centre: the panorama's viewpoint; ``None``: the dataset's stored centre, else :func:`default_centre`.
        checks: limits of the input checks.

    Raises:
        DataError: for an unreadable or empty mesh, a folder that is neither, or a centre outside the room.
    """
    path = Path(data)
    stored_centre = None
    if path.is_dir():
        meta_path = path / "transforms.json"
        if not meta_path.is_file():
            raise DataError(path, None, f"is a folder without transforms.json; give a mesh file ({', '.join(MESH_SUFFIXES)}) "
                            "or a dataset written by `s3d data synth`")  # fmt: skip
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        block = meta.get("scene3d", {})
        if not block.get("meshes"):
            raise DataError(meta_path, "scene3d.meshes", "missing: the dataset has no meshes (give a mesh file instead)")
        mesh_path = path / "meshes" / "scene.ply"
        if not mesh_path.is_file():
            raise DataError(mesh_path, None, "missing (the dataset's merged mesh)")
        if "centre_viewpoint" in block:
            stored_centre = tuple(float(c) for c in block["centre_viewpoint"])
        vertices, faces, colors = _read_mesh(mesh_path)
    elif path.is_file():
        if path.suffix.lower() not in MESH_SUFFIXES:
            raise DataError(path, None, f"is not a mesh file: expected one of {', '.join(MESH_SUFFIXES)}")
        vertices, faces, colors = _read_mesh(path)
        mesh_path = path
    else:
        raise DataError(path, None, "does not exist")
    vertices, faces, colors = check_room(vertices, faces, colors, source=str(mesh_path), checks=checks or RoomChecks())
    v = torch.from_numpy(vertices.astype(np.float32))
    f = torch.from_numpy(faces.astype(np.int64))
    c = None if colors is None else torch.from_numpy(colors.astype(np.float32))
    where = centre if centre is not None else stored_centre
    point = torch.tensor(where, dtype=torch.float32) if where is not None else default_centre(v, f)
    check_centre(MeshRaycaster(v, f, backend="open3d"), point, checks or RoomChecks(), source=str(mesh_path))
    return Room(vertices=v, faces=f, colors=c, centre=point, source=str(mesh_path))


def check_room(
    vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, *, source: str, checks: RoomChecks
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate and clean a room mesh (module docstring); returns the cleaned ``(vertices, faces, colors)``.

    Raises:
        DataError: for a mesh without faces or with non-finite vertices.
    """
    if faces.ndim != 2 or len(faces) == 0:
        raise DataError(source, None, "the mesh has no faces: DreamSpace textures surfaces (is it a point cloud?)")
    if not np.isfinite(vertices).all():
        raise DataError(source, None, "the mesh has non-finite vertex coordinates")
    import trimesh

    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if colors is not None:
        mesh.visual.vertex_colors = np.clip(np.round(colors * 255), 0, 255).astype(np.uint8)
    n_v, n_f = len(mesh.vertices), len(mesh.faces)
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    if len(mesh.faces) == 0:
        raise DataError(source, None, "every face of the mesh is degenerate (zero area)")
    if len(mesh.vertices) < n_v:  # normal in formats that split vertices at creases or UV seams
        logger.info("%s: merged %d duplicate vertices", source, n_v - len(mesh.vertices))
    if len(mesh.faces) < n_f:
        logger.warning("%s: dropped %d degenerate or repeated faces", source, n_f - len(mesh.faces))
    edges = np.sort(mesh.edges, axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    non_manifold = int((counts > 2).sum())
    if non_manifold:
        logger.warning("%s: %d non-manifold edges (shared by more than two faces); texturing goes on, but the atlas "
                       "charts may be poor there", source, non_manifold)  # fmt: skip
    colored = colors is not None
    if len(mesh.faces) > checks.max_faces:
        mesh = decimate(mesh, checks.max_faces, source=source)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    colors = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0 if colored else None
    return vertices, faces, colors


def decimate(mesh, max_faces: int, *, source: str):  # noqa: ANN001, ANN201 (trimesh in, trimesh out)
    """``mesh`` (trimesh) reduced to at most ``max_faces`` by open3d's quadric decimation, vertex colours kept."""
    import open3d as o3d
    import trimesh

    logger.warning("%s: %d faces is more than max_faces=%d; decimating (quadric) to %d faces", source,
                   len(mesh.faces), max_faces, max_faces)  # fmt: skip
    legacy = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(mesh.vertices, np.float64)), o3d.utility.Vector3iVector(np.asarray(mesh.faces, np.int32))
    )
    colored = mesh.visual.kind == "vertex"
    if colored:
        legacy.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.visual.vertex_colors, np.float64)[:, :3] / 255.0)
    small = legacy.simplify_quadric_decimation(target_number_of_triangles=int(max_faces))
    small.remove_degenerate_triangles()
    small.remove_unreferenced_vertices()
    out = trimesh.Trimesh(np.asarray(small.vertices), np.asarray(small.triangles), process=False)
    if colored and small.has_vertex_colors():
        out.visual.vertex_colors = np.clip(np.round(np.asarray(small.vertex_colors) * 255), 0, 255).astype(np.uint8)
    return out


def default_centre(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "3"]:
    """The bounding box's centre in x and y, at eye height (1.5 m above the floor, or mid-height in a low room),
    moved to the nearest free point of a small grid around it if furniture stands there."""
    lo, hi = vertices.min(0).values, vertices.max(0).values
    z = lo[2] + min(1.5, 0.5 * float(hi[2] - lo[2]))
    centre = torch.stack([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, z])
    raycaster = MeshRaycaster(vertices, faces, backend="open3d")
    offsets = torch.stack(torch.meshgrid(*(torch.linspace(-0.25, 0.25, 5),) * 2, indexing="ij"), -1).reshape(-1, 2)
    offsets = offsets[offsets.norm(dim=-1).argsort()] * (hi[:2] - lo[:2])
    for offset in offsets:
        candidate = centre + torch.cat([offset, torch.zeros(1)])
        escaped, backfacing = ray_statistics(raycaster, candidate)
        if escaped < 0.05 and backfacing < 0.05:
            return candidate
    return centre


def ray_statistics(raycaster: MeshRaycaster, point: Float[Tensor, "3"], n_rays: int = 512) -> tuple[float, float]:
    """Fractions of rays from ``point`` (uniform over the sphere) that hit nothing, and of the hits that reach the
    back of a surface."""
    directions = fibonacci_sphere(n_rays)
    hits = raycaster.cast(point.float().expand_as(directions), directions)
    escaped = float((~hits.mask).float().mean())
    hit = int(hits.mask.sum())
    backfacing = float((hits.mask & ~hits.front_facing).sum()) / max(hit, 1)
    return escaped, backfacing


def check_centre(raycaster: MeshRaycaster, centre: Float[Tensor, "3"], checks: RoomChecks, *, source: str) -> None:
    """Raise :class:`DataError` when ``centre`` is outside the room or inside an object (:class:`RoomChecks`)."""
    escaped, backfacing = ray_statistics(raycaster, centre)
    where = f"centre {tuple(round(float(c), 3) for c in centre)}"
    if escaped > checks.max_escape_fraction:
        raise DataError(source, "centre", f"{where} is outside the room: {100 * escaped:.0f}% of the rays from it hit "
                        "nothing (pass --pipeline.centre X Y Z inside the room)")  # fmt: skip
    if backfacing > checks.max_backface_fraction:
        raise DataError(source, "centre", f"{where} is inside an object or outside the room: {100 * backfacing:.0f}% "
                        "of the surfaces seen from it face away (pass --pipeline.centre X Y Z in the room's free "
                        "space; a scan wound inside out would give the same)")  # fmt: skip
