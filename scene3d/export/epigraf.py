"""Export a trained EpiGRAF generator's instance: a coloured mesh (marching cubes of the density) and a turntable.

    s3d export epigraf --load-config outputs/.../config.yml --seed 3 [--truncation 0.7] [--out DIR]

For the latent ``z = randn(seed)`` (StyleGAN's seed convention) the EMA generator's tri-plane is computed once;
its softplus density is sampled on a grid over the tri-plane cube, the iso-surface is extracted by marching
cubes (scikit-image), and each vertex takes the field's colour at its position (EpiGRAF has no view dependence).
The level defaults to the density at which one render-sample interval is half opaque,
``ln 2 · (S_c + S_f) / (far − near)``, the scale at which the renderer itself turns density into surfaces.
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
from scene3d.core.errors import RunFolderError

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

    config_path = Path(config_path)
    if not config_path.is_file():
        raise RunFolderError(config_path, "config file does not exist (pass the run's config.yml)")
    config = yaml.load(config_path.read_text(encoding="utf-8"), Loader=yaml.Loader)
    if getattr(config, "method_name", None) not in ("epigraf", "epigraf-tiny"):
        raise RunFolderError(config_path, f"is a {getattr(config, 'method_name', '?')} run, not an EpiGRAF one")
    if data is not None:
        config.pipeline.datamanager.data = Path(data)
    ckpt_dir = config_path.parent / config.relative_model_dir
    ckpt = latest_checkpoint(ckpt_dir)
    pipeline = config.pipeline.setup(device=device, test_mode="inference")
    state = load_checkpoint(ckpt)
    pipeline.load_pipeline(state["pipeline"], state["step"])
    pipeline.eval()
    return LoadedRun(config=config, pipeline=pipeline, step=int(state["step"]), checkpoint=ckpt)


def default_threshold(model) -> float:  # noqa: ANN001
    """``ln 2 · (S_c + S_f) / mean(far − near)``: one render-sample interval half opaque (module docstring)."""
    info = model.kwargs["metadata"]["epigraf"]
    span = float((info.far - info.near).mean())
    samples = model.config.num_coarse_samples + model.config.num_fine_samples
    return math.log(2.0) * samples / span


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
    level = default_threshold(model) if threshold is None else float(threshold)
    if not sigma.min() < level < sigma.max():
        raise ValueError(
            f"threshold {level:.3g} is outside the density range [{sigma.min():.3g}, {sigma.max():.3g}] of seed {seed}: "
            "no surface (train longer, or pass --threshold)"
        )
    s = model.cube_scale
    verts, faces, _, _ = marching_cubes(sigma, level=level, spacing=(2 * s / (resolution - 1),) * 3)
    verts = verts - s
    pts = torch.from_numpy(verts.astype(np.float32)).to(planes.device)
    rgb, _ = model.generator_ema.field(planes, pts[None], s)
    colors = ((rgb[0].clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    info = model.kwargs["metadata"]["epigraf"]
    world = verts / info.world_scale + np.asarray(info.world_center)
    # marching cubes on an (x, y, z) grid with increasing axes gives faces wound inward for a density (high inside)
    return Mesh(vertices=world.astype(np.float32), faces=faces[:, ::-1].astype(np.int64).copy(), colors=colors)


@torch.no_grad()
def turntable(
    model, seed: int, *, truncation_psi: float = 0.7, frames: int = 60, size: int | None = None  # noqa: ANN001
) -> np.ndarray:
    """``(frames, H, W, 3)`` uint8 views of instance ``seed`` orbiting at the dataset's mean distance and pitch."""
    from scene3d.methods.epigraf.rendering import camera_angles, orbit_c2w

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
    parser.add_argument("--threshold", type=float, default=None, help="density level (default: see module doc)")
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
