"""Meshes from radiance fields: the surface the renders show, fused from rendered depth, coloured as rendered.

    s3d export mesh --load-config outputs/.../config.yml --out scene.glb [--resolution 256] [--views 32]
                    [--min-opacity 0.1]

The model renders up to ``--views`` training cameras (colour, opacity, expected depth); their depth maps are fused
into a truncated signed-distance grid over the scene box (:mod:`scene3d.renderers.tsdf`; pixels at least
``--min-opacity`` opaque are surface at their depth, fainter ones free space) whose zero level is extracted by
marching cubes; each vertex takes the colour of the rendered pixels that see it (background included: the colour
the views show), each view weighted by how squarely it faces the surface. Vertices are written in the dataset's own frame (the dataparser's transform and scale
undone).

Why not a density iso-surface: a radiance field may render a surface semi-transparent where its colour resembles the
background (seen: the light squares of a checker floor against a light background, accumulated opacity ≈ 0.5, the
background blended in making up the colour). Its density there lies below any level that keeps the opaque parts,
so those squares became holes; and removing the background from the render (``(rgb − (1 − α) b) / α``) gave the
field's own darker colour instead of the colour the views show. Fusing the rendered depth puts the surface where
the renders put it, and the rendered colour is what the views show (``benchmarks/mesh_export.py`` measures both
against the synthetic scene's truth).

Formats (trimesh): ``.ply`` binary with per-vertex RGBA, ``.obj`` with per-vertex colours (``v x y z r g b``,
read by MeshLab and Blender), ``.glb`` with a ``COLOR_0`` attribute, turned to glTF's +Y up (``(x, y, z) →
(x, z, −y)``; ``s3d view`` turns it back).

Works for any model with ``field.aabb`` (the scene box) and ``render(origins, directions, with_normals=False)``
returning ``rgb``, ``opacity`` and ``depth`` (s3d-nerf; methods built on it).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scene3d.core.cameras import pinhole_rays
from scene3d.core.checkpoint import atomic_write
from scene3d.core.cameras import Z_UP_TO_Y_UP
from scene3d.renderers import isosurface
from scene3d.renderers.tsdf import DepthView, fuse_tsdf, observed_cubes, view_colors

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


@dataclass(frozen=True)
class PinholeCamera:
    """A view to render for fusion: OpenGL camera-to-world, intrinsics and image size."""

    c2w: Tensor
    """(4, 4)."""
    K: Tensor
    """(3, 3); pixel centres at ``+0.5``."""
    width: int
    height: int


@torch.no_grad()
def render_view(model, camera: PinholeCamera, *, chunk: int = 1 << 13) -> DepthView:  # noqa: ANN001
    """The model's render of ``camera``: colour (background included, as the view shows it), opacity, z-depth."""
    device = model.field.aabb.device
    c2w, K = camera.c2w.to(device).float(), camera.K.to(device).float()
    origins, directions = pinhole_rays(c2w, K, camera.width, camera.height)
    origins, directions = origins.reshape(-1, 3), directions.reshape(-1, 3)
    rgb, opacity, depth = [], [], []
    for start in range(0, origins.shape[0], chunk):
        out = model.render(origins[start : start + chunk], directions[start : start + chunk], with_normals=False)
        rgb.append(out.rgb)
        opacity.append(out.opacity[:, 0])
        depth.append(out.depth[:, 0])
    forward = -c2w[:3, 2]
    z = torch.cat(depth) * (directions @ forward)  # distance along the unit ray -> depth along the optical axis
    h, w = camera.height, camera.width
    return DepthView(
        rgb=torch.cat(rgb).reshape(h, w, 3).clamp(0.0, 1.0), opacity=torch.cat(opacity).reshape(h, w),
        depth=z.reshape(h, w), c2w=c2w, K=K,
    )  # fmt: skip


def training_views(pipeline, max_views: int = 32, max_size: int = 512) -> list[PinholeCamera]:  # noqa: ANN001
    """Up to ``max_views`` evenly spread training cameras (pinhole ones), scaled down to at most ``max_size`` px.

    Lens distortion is not modelled (the fused depth is projected with the pinhole part): one warning if the
    cameras have some.
    """
    from nerfstudio.cameras.cameras import CameraType

    cameras = pipeline.datamanager.train_dataset.cameras
    pinhole = [i for i in range(len(cameras)) if int(cameras.camera_type[i]) == CameraType.PERSPECTIVE.value]
    if not pinhole:
        raise ValueError("the run has no pinhole (perspective) training camera to render the mesh from")
    if cameras.distortion_params is not None and bool(cameras.distortion_params[pinhole].abs().max() > 0):
        logger.warning("the training cameras have lens distortion; the mesh export treats them as pinhole cameras")
    picked = [pinhole[int(round(i))] for i in np.linspace(0, len(pinhole) - 1, min(max_views, len(pinhole)))]
    views = []
    for i in picked:
        w, h = int(cameras.width[i]), int(cameras.height[i])
        scale = min(1.0, max_size / max(w, h))
        c2w = torch.eye(4)
        c2w[:3, :] = cameras.camera_to_worlds[i].cpu()
        K = torch.tensor(
            [[float(cameras.fx[i]) * scale, 0.0, float(cameras.cx[i]) * scale],
             [0.0, float(cameras.fy[i]) * scale, float(cameras.cy[i]) * scale], [0.0, 0.0, 1.0]]
        )  # fmt: skip
        views.append(PinholeCamera(c2w, K, max(1, round(w * scale)), max(1, round(h * scale))))
    return views


def extract_mesh(
    model,  # noqa: ANN001
    cameras: list[PinholeCamera],
    *,
    resolution: int = 256,
    min_opacity: float = 0.1,
    truncation_cells: float = 4.0,
) -> Mesh:
    """The surface a model's renders show, fused from its depth in ``cameras`` (module docstring), in its frame.

    Args:
        model: an s3d-nerf-like model (``field.aabb``, ``render``), in eval mode.
        cameras: the views to render and fuse (e.g. :func:`training_views`).
        resolution: grid samples along the longest side of the scene box.
        min_opacity: a pixel at least this opaque is a surface at its depth; a fainter one is free space.
        truncation_cells: the TSDF truncation distance, in grid cells.
    """
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    if truncation_cells <= 0:
        raise ValueError(f"truncation_cells must be positive, got {truncation_cells}")
    if not cameras:
        raise ValueError("cameras must hold at least one camera")
    aabb = model.field.aabb
    views = [render_view(model, camera) for camera in cameras]
    shape = grid_shape(aabb, resolution)
    truncation = truncation_cells * float((aabb[1] - aabb[0]).max()) / (resolution - 1)
    values, counts = fuse_tsdf(views, aabb[0], aabb[1], shape, truncation=truncation, min_opacity=min_opacity)
    try:
        verts, faces = isosurface.marching_cubes(values, aabb[0], aabb[1], 0.0, inside="low", mask=observed_cubes(counts))
    except ValueError as err:
        raise ValueError(f"no surface in the renders ({err}): train longer, or lower --min-opacity") from None
    if len(faces) == 0:
        raise ValueError("no surface in the renders: train longer, or lower --min-opacity")
    import trimesh

    points = torch.from_numpy(verts).to(aabb.device)
    normals = torch.from_numpy(np.asarray(trimesh.Trimesh(verts, faces, process=False).vertex_normals, dtype=np.float32))
    normals = torch.nn.functional.normalize(normals.to(aabb.device), dim=-1)
    colors, seen = view_colors(points, views, truncation=truncation, min_opacity=min_opacity, normals=normals)
    colors, seen = colors.cpu().numpy(), seen.cpu().numpy() > 0
    if not seen.any():
        raise ValueError("no vertex is seen by the views: nothing to colour the mesh with")
    if not seen.all():  # hidden from every view (under the floor, in a crease): the nearest seen vertex's colour
        from scipy.spatial import cKDTree

        _, nearest = cKDTree(verts[seen]).query(verts[~seen])
        colors[~seen] = colors[seen][nearest]
    return Mesh(vertices=verts, faces=faces, colors=(colors * 255.0).round().astype(np.uint8))


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
    parser.add_argument("--views", type=int, default=32, help="training views rendered and fused (32)")
    parser.add_argument("--min-opacity", type=float, default=0.1, help="opacity from which a pixel is a surface (0.1)")
    args = parser.parse_args(argv)
    if args.out.suffix.lower() not in FORMATS:
        parser.error(f"--out must end in one of {FORMATS}, got {args.out.name!r}")

    from scene3d.export.runs import NERF_METHODS, load_pipeline, read_run, require_method

    run = read_run(args.load_config)  # one clear error for a wrong path or method before anything loads
    require_method(run, NERF_METHODS, "s3d export mesh")
    _, pipeline, _, step = load_pipeline(run)
    model = pipeline.model
    for attribute in ("field", "render"):
        if not hasattr(model, attribute):
            raise ValueError(f"{type(model).__name__} has no {attribute!r}: `s3d export mesh` exports s3d-nerf-like runs")
    model.eval()
    cameras = training_views(pipeline, max_views=args.views)
    mesh = extract_mesh(model, cameras, resolution=args.resolution, min_opacity=args.min_opacity)
    mesh = Mesh(to_dataset_frame(mesh.vertices, pipeline), mesh.faces, mesh.colors)
    write_mesh(mesh, args.out)
    logger.info("wrote %s (%d vertices, %d faces) from step %d", args.out, len(mesh.vertices), len(mesh.faces), step)
    return 0
