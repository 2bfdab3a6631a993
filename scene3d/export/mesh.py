"""Meshes from radiance fields: marching cubes of the density, vertex colours as rendered, PLY / OBJ / GLB.

    s3d export mesh --load-config outputs/.../config.yml --out scene.glb [--resolution 256] [--threshold 10]

The density σ is sampled on a grid over the scene box (cells the occupancy grid marks empty are skipped: σ = 0
there), the iso-surface ``σ = level`` is extracted by marching cubes (scikit-image), and each vertex takes the
colour the model renders looking at it along its inward normal from just outside, with the background removed
(``(rgb − (1 − α) b) / α``): the weight-averaged colour of the soft density shell a camera would see. The level
defaults to the median density at the rendered surface (the expected ray-termination points of the opaque pixels
of the training views), so the mesh sits where the renders put the surface. Vertices are written in the dataset's
own frame (the dataparser's transform and scale undone).

Formats (trimesh): ``.ply`` binary with per-vertex RGBA, ``.obj`` with per-vertex colours (``v x y z r g b``,
read by MeshLab and Blender), ``.glb`` with a ``COLOR_0`` attribute, turned to glTF's +Y up (``(x, y, z) →
(x, z, −y)``; ``s3d view`` turns it back).

Works for any model with ``field`` (a :class:`~scene3d.fields.radiance.RadianceField`), ``occupancy_grid`` and
``render(origins, directions, background)`` (s3d-nerf; methods built on it).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scene3d.core.checkpoint import atomic_write
from scene3d.core.cameras import Z_UP_TO_Y_UP
from scene3d.renderers import isosurface

logger = logging.getLogger(__name__)

FORMATS = (".ply", ".obj", ".glb")


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh with per-vertex colours."""

    vertices: np.ndarray
    """(V, 3) float32."""
    faces: np.ndarray
    """(F, 3) int64, counter-clockwise seen from outside."""
    colors: np.ndarray
    """(V, 3) uint8."""


def grid_shape(aabb: Tensor, resolution: int) -> tuple[int, int, int]:
    """Samples per axis: ``resolution`` along the longest side of the box, the same spacing on the others."""
    return isosurface.grid_shape(aabb[0], aabb[1], resolution)


def density_grid(
    density_fn: Callable[[Tensor], Tensor],
    aabb: Tensor,
    shape: tuple[int, int, int],
    *,
    occupied_fn: Callable[[Tensor], Tensor] | None = None,
    chunk: int = 1 << 16,
) -> np.ndarray:
    """σ on a regular ``shape`` grid spanning ``aabb`` (corners included), (x, y, z) order, float32.

    ``occupied_fn`` (e.g. an occupancy grid's ``query``) skips points it marks empty (σ = 0 there).
    """
    return isosurface.sample_grid(density_fn, aabb[0], aabb[1], shape, skip_fn=occupied_fn, fill=0.0, chunk=chunk)


def marching_cubes(sigma: np.ndarray, aabb: Tensor, level: float) -> tuple[np.ndarray, np.ndarray]:
    """World-space vertices and outward-wound faces of the ``σ = level`` surface of a :func:`density_grid`."""
    if not float(sigma.min()) < level < float(sigma.max()):
        raise ValueError(
            f"threshold {level:.4g} is outside the density range [{sigma.min():.4g}, {sigma.max():.4g}]: no surface "
            "(train longer, or pass another --threshold)"
        )
    return isosurface.marching_cubes(sigma, aabb[0], aabb[1], level, inside="high")


@torch.no_grad()
def surface_level(model, origins: Tensor, directions: Tensor, *, chunk: int = 1 << 14) -> float:  # noqa: ANN001
    """Median density at the expected ray-termination points of the opaque rays (opacity > 0.5)."""
    points = []
    for start in range(0, origins.shape[0], chunk):
        out = model.render(origins[start : start + chunk], directions[start : start + chunk], with_normals=False)
        opaque = out.opacity[:, 0] > 0.5
        points.append(origins[start : start + chunk][opaque] + directions[start : start + chunk][opaque] * out.depth[opaque])
    surface = torch.cat(points)
    if surface.shape[0] == 0:
        raise ValueError("no opaque pixel in the views: the model renders nothing (train longer, or pass --threshold)")
    return float(model.field.density(surface).median())


@torch.no_grad()
def rendered_colors(
    model, vertices: np.ndarray, faces: np.ndarray, *, offset: float, chunk: int = 1 << 14  # noqa: ANN001
) -> np.ndarray:
    """uint8 colours rendered looking at each vertex along its inward normal from ``offset`` outside it."""
    import trimesh

    normals = np.asarray(trimesh.Trimesh(vertices, faces, process=False).vertex_normals, dtype=np.float32)
    device = model.field.aabb.device
    pts, nrm = torch.from_numpy(vertices).to(device), torch.from_numpy(normals).to(device)
    nrm = torch.nn.functional.normalize(nrm, dim=-1)
    background = model.background
    colors = []
    for start in range(0, pts.shape[0], chunk):
        p, n = pts[start : start + chunk], nrm[start : start + chunk]
        out = model.render(p + n * offset, -n, with_normals=False)
        alpha = out.opacity
        rgb = (out.rgb - (1.0 - alpha) * background) / alpha.clamp_min(1e-3)
        # where nothing opaque was hit (thin or grazing parts), the field's own colour at the vertex
        _, features = model.field.geometry(p)
        own = model.field.color(-n, features)
        colors.append(torch.where(alpha > 0.05, rgb, own).clamp(0.0, 1.0))
    return (torch.cat(colors) * 255.0).round().byte().cpu().numpy()


def training_rays(pipeline, max_rays: int = 1 << 16, max_cameras: int = 16) -> tuple[Tensor, Tensor]:  # noqa: ANN001
    """Rays of up to ``max_cameras`` evenly spread training cameras, subsampled evenly to at most ``max_rays``."""
    cameras = pipeline.datamanager.train_dataset.cameras
    picked = torch.linspace(0, len(cameras) - 1, min(max_cameras, len(cameras))).round().long()
    cameras = cameras[picked].to(pipeline.model.device)
    bundle = cameras.generate_rays(camera_indices=torch.arange(len(cameras))[:, None].to(pipeline.model.device))
    origins, directions = bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3)
    step = max(1, origins.shape[0] // max_rays)
    return origins[::step], directions[::step]


def extract_mesh(
    model,  # noqa: ANN001
    *,
    resolution: int = 256,
    threshold: float | None = None,
    level_rays: tuple[Tensor, Tensor] | None = None,
) -> Mesh:
    """Marching cubes of a model's density, coloured as rendered (module docstring), in the model's frame.

    Args:
        model: an s3d-nerf-like model (``field``, ``occupancy_grid``, ``render``), in eval mode.
        resolution: grid samples along the longest side of the scene box.
        threshold: the iso-level σ; ``None`` picks :func:`surface_level` on ``level_rays``.
        level_rays: ``(origins, directions)`` used to pick the level (e.g. :func:`training_rays`).
    """
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    if threshold is None:
        if level_rays is None:
            raise ValueError("either threshold or level_rays must be given")
        threshold = surface_level(model, *level_rays)
        logger.info("iso-level: median density at the rendered surface, %.4g", threshold)
    aabb = model.field.aabb
    shape = grid_shape(aabb, resolution)
    with torch.no_grad():
        sigma = density_grid(model.field.density, aabb, shape, occupied_fn=model.occupancy_grid.query)
    verts, faces = marching_cubes(sigma, aabb, float(threshold))
    spacing = float((aabb[1] - aabb[0]).max()) / (resolution - 1)
    colors = rendered_colors(model, verts, faces, offset=2.0 * spacing)
    return Mesh(vertices=verts, faces=faces, colors=colors)


def write_mesh(mesh: Mesh, path: str | Path) -> Path:
    """Write ``mesh`` as ``.ply``, ``.obj`` or ``.glb`` (by the suffix), atomically."""
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"mesh file must end in one of {FORMATS}, got {path.name!r}")
    alpha = np.full((len(mesh.colors), 1), 255, dtype=np.uint8)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=np.hstack([mesh.colors, alpha]), process=False)
    if suffix == ".glb":  # glTF is +Y up (scene3d.export.textured writes its GLBs the same way)
        tm.apply_transform(Z_UP_TO_Y_UP.numpy())
    data = tm.export(file_type=suffix[1:], include_color=True) if suffix == ".obj" else tm.export(file_type=suffix[1:])
    blob = data.encode("utf-8") if isinstance(data, str) else data
    atomic_write(path, lambda f: f.write(blob))
    return path


def to_dataset_frame(vertices: np.ndarray, pipeline) -> np.ndarray:  # noqa: ANN001
    """Undo the dataparser's transform and scale (identity for scene3d datasets)."""
    outputs = pipeline.datamanager.train_dataparser_outputs
    poses = torch.eye(4)[None, :3, :].repeat(vertices.shape[0], 1, 1)
    poses[:, :3, 3] = torch.from_numpy(vertices)
    return outputs.transform_poses_to_original_space(poses)[:, :3, 3].numpy().astype(np.float32)


def main(argv: list[str]) -> int:
    """``s3d export mesh``: write a coloured mesh of a trained s3d-nerf run; returns the exit status."""
    parser = argparse.ArgumentParser(prog="s3d export mesh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-config", type=Path, required=True, help="the run's config.yml")
    parser.add_argument("--out", type=Path, required=True, help=f"output file, one of {', '.join(FORMATS)}")
    parser.add_argument("--resolution", type=int, default=256, help="grid samples along the longest side (256)")
    parser.add_argument("--threshold", type=float, default=None, help="iso-level of σ (default: at the rendered surface)")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() not in FORMATS:
        parser.error(f"--out must end in one of {FORMATS}, got {args.out.name!r}")

    from scene3d.export.runs import NERF_METHODS, load_pipeline, read_run, require_method

    run = read_run(args.load_config)  # one clear error for a wrong path or method before anything loads
    require_method(run, NERF_METHODS, "s3d export mesh")
    _, pipeline, _, step = load_pipeline(run)
    model = pipeline.model
    for attribute in ("field", "occupancy_grid", "render"):
        if not hasattr(model, attribute):
            raise ValueError(f"{type(model).__name__} has no {attribute!r}: `s3d export mesh` exports s3d-nerf-like runs")
    model.eval()
    level_rays = None if args.threshold is not None else training_rays(pipeline)
    mesh = extract_mesh(model, resolution=args.resolution, threshold=args.threshold, level_rays=level_rays)
    mesh = Mesh(to_dataset_frame(mesh.vertices, pipeline), mesh.faces, mesh.colors)
    write_mesh(mesh, args.out)
    logger.info("wrote %s (%d vertices, %d faces) from step %d", args.out, len(mesh.vertices), len(mesh.faces), step)
    return 0
