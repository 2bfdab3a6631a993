"""Export a trained EpiGRAF generator's instance: a coloured mesh (marching cubes of the density) and a turntable.

    s3d export epigraf --load-config outputs/.../config.yml --seed 3 [--truncation 0.7] [--out DIR]

For the latent ``z = randn(seed)`` (StyleGAN's seed convention) the EMA generator's tri-plane is computed once;
its softplus density is sampled on a grid over the tri-plane cube, the iso-surface is extracted by marching
cubes (scikit-image), and each vertex takes the colour rendered along its inward normal (EpiGRAF has no view
dependence, so one direction suffices).
The level defaults to the median density at the rendered surface (the expected ray-termination points of the
opaque pixels of a few views), so the mesh's surface is where the renders put it; ``--threshold`` overrides it
(the official ``extract_geometry.py`` uses a fixed level, 25 on raw density).
Vertices are written in the dataset's own world frame (the dataparser's normalisation undone). The turntable
orbits the object at the dataset's mean camera distance and elevation, with its intrinsics.

Outputs in ``--out`` (default: the run folder ``exports/``): ``seed<N>.ply`` and ``seed<N>_turntable.mp4``.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scene3d.core.cameras import pinhole_rays
from scene3d.core.checkpoint import latest_checkpoint, load_checkpoint
from scene3d.renderers.hierarchical import ray_cube_bounds, render_rays

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRun:
    """A trained EpiGRAF run: its config, pipeline (weights loaded) and the step of the checkpoint."""

    config: object
    pipeline: object
    step: int
    checkpoint: Path

    @property
    def model(self):  # noqa: ANN201 - an EpiGRAFModel (nerfstudio import kept out of the signature)
        return self.pipeline.model


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh with per-vertex colours."""

    vertices: np.ndarray
    """(V, 3) float32, in the dataset's world frame."""
    faces: np.ndarray
    """(F, 3) int64."""
    colors: np.ndarray
    """(V, 3) uint8."""


def load_run(config_path: str | Path, *, data: str | Path | None = None, device: str = "cpu") -> LoadedRun:
    """Set up the pipeline of ``config.yml`` (no images decoded) and load its latest checkpoint, weights only.

    Args:
        config_path: the run's ``config.yml``.
        data: the dataset, when it has moved since training (the model needs its geometry: image size, cube).
        device: where to put the networks.
    """
    import yaml

    from scene3d.export.runs import EPIGRAF_METHODS, read_run, require_method

    config_path = Path(config_path)
    run = read_run(config_path)  # one clear error for a wrong path or method before anything loads
    require_method(run, EPIGRAF_METHODS, "s3d export epigraf")
    config = yaml.load(config_path.read_text(encoding="utf-8"), Loader=yaml.Loader)
    if data is not None:
        config.pipeline.datamanager.data = Path(data)
    ckpt = latest_checkpoint(run.checkpoint_dir)
    pipeline = config.pipeline.setup(device=device, test_mode="inference")
    state = load_checkpoint(ckpt)
    pipeline.load_pipeline(state["pipeline"], state["step"])
    pipeline.eval()
    return LoadedRun(config=config, pipeline=pipeline, step=int(state["step"]), checkpoint=ckpt)


@torch.no_grad()
def surface_threshold(model, planes: torch.Tensor, *, views: int = 8, size: int = 32) -> float:  # noqa: ANN001
    """The median density at the rendered surface: expected ray-termination points of the opaque pixels
    (opacity > 0.5) of ``views`` orbit views, so the iso-surface passes where the renders put the surface."""
    from scene3d.core.cameras import camera_angles, orbit_c2w

    info = model.kwargs["metadata"]["epigraf"]
    K = info.intrinsics[0].clone()
    K[:2] *= size / info.resolution
    pitch = float(camera_angles(info.c2w)[:, 1].mean())
    radius = float(info.c2w[:, :3, 3].norm(dim=-1).mean())
    yaws = torch.linspace(-math.pi, math.pi, views + 1)[:-1]
    pitches = pitch + 0.4 * torch.sin(torch.arange(views) * 2.0)  # vary the elevation a little
    c2w = orbit_c2w(yaws, pitches, radius)
    o, d = pinhole_rays(c2w, K.expand(views, 3, 3), size, size)
    o, d = o.reshape(-1, 3).to(planes.device), d.reshape(-1, 3).to(planes.device)
    out = model.render_rays_from_planes(planes, o, d)
    opaque = out["accumulation"][:, 0] > 0.5
    if int(opaque.sum()) == 0:
        raise ValueError("the instance renders fully transparent: no surface (train longer, or pass --threshold)")
    points = o[opaque] + d[opaque] * out["depth"][opaque]
    _, sigma = model.generator_ema.field(planes, points[None], model.cube_scale)
    return float(torch.nn.functional.softplus(sigma[0]).median())


@torch.no_grad()
def density_grid(model, planes: torch.Tensor, resolution: int, chunk: int = 1 << 16) -> np.ndarray:  # noqa: ANN001
    """Softplus density of the EMA generator on a ``resolution³`` grid spanning the tri-plane cube (x, y, z order)."""
    s = model.cube_scale
    lin = torch.linspace(-s, s, resolution, device=planes.device)
    grid = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), dim=-1).reshape(-1, 3)
    out = []
    for i in range(0, grid.shape[0], chunk):
        _, sigma = model.generator_ema.field(planes, grid[None, i : i + chunk], s)
        out.append(torch.nn.functional.softplus(sigma[0]))
    return torch.cat(out).reshape(resolution, resolution, resolution).cpu().numpy()


@torch.no_grad()
def extract_mesh(
    model, seed: int, *, truncation_psi: float = 0.7, resolution: int = 128, threshold: float | None = None  # noqa: ANN001
) -> Mesh:
    """Marching cubes of the density of instance ``seed``, coloured by the field (module docstring)."""
    from skimage.measure import marching_cubes

    planes = model.planes_for_seed(seed, truncation_psi)
    sigma = density_grid(model, planes, resolution)
    level = surface_threshold(model, planes) if threshold is None else float(threshold)
    if not sigma.min() < level < sigma.max():
        raise ValueError(
            f"threshold {level:.3g} is outside the density range [{sigma.min():.3g}, {sigma.max():.3g}] of seed {seed}: "
            "no surface (train longer, or pass --threshold)"
        )
    s = model.cube_scale
    verts, faces, _, _ = marching_cubes(sigma, level=level, spacing=(2 * s / (resolution - 1),) * 3)
    verts = verts - s
    # marching cubes on an (x, y, z) grid with increasing axes gives faces wound inward for a density (high inside)
    faces = faces[:, ::-1].astype(np.int64).copy()
    colors = vertex_colors(model, planes, verts, faces, depth=2 * 2 * s / (resolution - 1))
    info = model.kwargs["metadata"]["epigraf"]
    world = verts / info.world_scale + np.asarray(info.world_center)
    return Mesh(vertices=world.astype(np.float32), faces=faces, colors=colors)


@torch.no_grad()
def vertex_colors(model, planes: torch.Tensor, verts: np.ndarray, faces: np.ndarray, depth: float) -> np.ndarray:  # noqa: ANN001
    """uint8 colours as rendered looking at each vertex along its inward normal, from ``depth`` outside it to the
    far side of the tri-plane cube.

    The colour field varies across the surface's soft density shell; what a camera sees is its weight-averaged
    colour along the ray, so that is what each vertex takes (the object's own colour, without the background:
    ``(rgb − (1 − α) b) / α``; the field's colour at the vertex where nothing is opaque).
    """
    import trimesh

    normals = torch.from_numpy(np.asarray(trimesh.Trimesh(verts, faces, process=False).vertex_normals, dtype=np.float32))
    pts = torch.from_numpy(verts.astype(np.float32))
    origins = (pts + normals * depth).to(planes.device)
    directions = (-normals).to(planes.device)
    settings = model.ray_settings(0, training=False)
    _, far, _ = ray_cube_bounds(origins, directions, model.cube_scale)
    out = render_rays(
        lambda p: model.generator_ema.field(planes, p, model.cube_scale), origins[None], directions[None],
        torch.zeros_like(far)[None], far[None], settings,
    )
    rgb, alpha = out.rgb[0], out.opacity[0, :, None]
    if settings.background == "constant":
        rgb = rgb - (1 - alpha) * torch.tensor(settings.background_rgb, device=rgb.device)
    rgb = rgb / alpha.clamp_min(1e-3)
    at_vertex, _ = model.generator_ema.field(planes, pts[None].to(planes.device), model.cube_scale)
    rgb = torch.where(alpha > 0.05, rgb, at_vertex[0])
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()


@torch.no_grad()
def turntable(
    model, seed: int, *, truncation_psi: float = 0.7, frames: int = 60, size: int | None = None  # noqa: ANN001
) -> np.ndarray:
    """``(frames, H, W, 3)`` uint8 views of instance ``seed`` orbiting at the dataset's mean distance and pitch."""
    from scene3d.core.cameras import camera_angles, orbit_c2w

    info = model.kwargs["metadata"]["epigraf"]
    size = size or info.resolution
    K = info.intrinsics[0].clone()
    K[:2] *= size / info.resolution
    pitch = float(camera_angles(info.c2w)[:, 1].mean())
    radius = float(info.c2w[:, :3, 3].norm(dim=-1).mean())
    yaws = torch.linspace(-math.pi, math.pi, frames + 1)[:-1]
    c2w = orbit_c2w(yaws, torch.full_like(yaws, pitch), radius)
    planes = model.planes_for_seed(seed, truncation_psi)
    images = []
    for i in range(frames):
        o, d = pinhole_rays(c2w[i], K, size, size)
        out = model.render_rays_from_planes(planes, o.reshape(-1, 3).to(planes.device), d.reshape(-1, 3).to(planes.device))
        images.append((out["rgb"].reshape(size, size, 3) * 255).round().byte().cpu().numpy())
    return np.stack(images)


def write_ply(mesh: Mesh, path: Path) -> None:
    """Binary PLY with per-vertex RGB colours."""
    import trimesh

    path.parent.mkdir(parents=True, exist_ok=True)
    alpha = np.full((len(mesh.colors), 1), 255, dtype=np.uint8)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=np.hstack([mesh.colors, alpha]), process=False)
    path.write_bytes(tm.export(file_type="ply"))


def write_video(frames: np.ndarray, path: Path, fps: int = 24) -> None:
    """MP4 (H.264 through imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimwrite(path, list(frames), fps=fps, macro_block_size=1)


def main(argv: list[str]) -> int:
    """``s3d export epigraf``: write ``seed<N>.ply`` and ``seed<N>_turntable.mp4``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="s3d export epigraf", description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-config", type=Path, required=True, help="the run's config.yml")
    parser.add_argument("--seed", type=int, default=0, help="latent seed: z = randn(seed) (default 0)")
    parser.add_argument("--truncation", type=float, default=0.7, help="truncation psi (default 0.7)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: <run>/exports)")
    parser.add_argument("--resolution", type=int, default=128, help="marching-cubes grid side (default 128)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="density level (default: the median density at the rendered surface)")
    parser.add_argument("--frames", type=int, default=60, help="turntable frames (default 60)")
    parser.add_argument("--size", type=int, default=None, help="turntable image side (default: dataset resolution)")
    parser.add_argument("--data", type=Path, default=None, help="dataset path, if it moved since training")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = load_run(args.load_config, data=args.data, device=device)
    out = args.out or args.load_config.parent / "exports"
    mesh = extract_mesh(run.model, args.seed, truncation_psi=args.truncation, resolution=args.resolution, threshold=args.threshold)
    ply = out / f"seed{args.seed}.ply"
    write_ply(mesh, ply)
    video = out / f"seed{args.seed}_turntable.mp4"
    write_video(turntable(run.model, args.seed, truncation_psi=args.truncation, frames=args.frames, size=args.size), video)
    logger.info("step %d, seed %d: %s (%d vertices, %d faces), %s", run.step, args.seed, ply, len(mesh.vertices), len(mesh.faces), video)
    return 0
