"""``s3d demo``: generate a synthetic object scene, train s3d-nerf-tiny on the CPU, evaluate, export.

    s3d demo [--out demo_output] [--iterations N] [--threads auto|N] [--size 128] [--views 100]

Stages, each a function of a :class:`DemoContext`, run in the order of :data:`STAGES`:

1. ``generate_data``   the ``object`` scene (:func:`scene3d.datasets.synthetic.generate_scene`) in ``OUT/data``;
2. ``train``           s3d-nerf-tiny through nerfstudio's trainer (scene3d's ``S3DTrainer``), run in ``OUT/runs``;
3. ``evaluate``        PSNR / SSIM (and LPIPS when its weights are present) on the held-out views against ground
                       truth, and ``OUT/eval_views.png`` (prediction over ground truth);
4. ``turntable``       ``OUT/turntable.mp4``, an orbit at the training cameras' distance and elevation;
5. ``export_mesh``     ``OUT/mesh.ply`` (rendered depth fused, colours as rendered; ``s3d export mesh`` does the same);
6. ``stylize``         ReGS: the scene restyled from one stylized reference view (``scene3d.methods.regs.demo``);
7. ``print_commands``  the commands to open the viewer on the run, re-export, render and evaluate.

A further step is one more function ``stage(ctx) -> None`` inserted into :data:`STAGES`; it finds the dataset, run
folder, config and trained pipeline in the context and adds its lines to ``ctx.summary``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class DemoContext:
    """What the stages share."""

    out: Path
    """The demo's output folder."""
    args: argparse.Namespace
    """The command-line options."""
    console: Any
    """The rich console everything prints to."""
    data: Path | None = None
    """The generated dataset."""
    config_path: Path | None = None
    """The trained run's ``config.yml``."""
    trainer: Any = None
    """nerfstudio's trainer after training (its ``pipeline`` holds the trained model)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Held-out metrics."""
    summary: list[tuple[str, str]] = field(default_factory=list)
    """``(what, where or value)`` lines printed at the end."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage."""


def choose_threads(requested: str) -> tuple[int, str]:
    """torch threads for this machine: ``auto`` leaves the cores other processes keep busy (1-minute load)."""
    cores = os.cpu_count() or 1
    if requested != "auto":
        n = int(requested)
        if n < 1:
            raise ValueError(f"--threads must be 'auto' or a positive integer, got {requested!r}")
        return n, f"{n} (as asked)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    # on a shared machine, more threads than idle cores makes every OpenMP region wait for descheduled threads
    n = max(1, min(cores, int(math.floor(cores - load + 0.5))))
    return n, f"{n} of {cores} cores (1-min load {load:.1f})"


# ------------------------------------------------------------------------------------------------ stages


def generate_data(ctx: DemoContext) -> None:
    """The synthetic ``object`` scene (reused when ``OUT/data`` already holds one with the same settings; an earlier one
    with other settings is replaced, file by file; ``OUT/data`` holding files scene3d did not write is refused)."""
    import json

    from scene3d.datasets.synthetic import generate_scene

    out = ctx.out / "data"
    meta_path = out / "transforms.json"
    a = ctx.args
    if meta_path.exists():
        info = json.loads(meta_path.read_text()).get("scene3d", {})
        if (info.get("kind"), info.get("size"), info.get("views"), info.get("seed")) == ("object", a.size, a.views, a.seed):
            ctx.console.print(f"[dim]reusing the scene in {out}[/dim]")
            ctx.data = out
            return
    # the generator replaces an earlier scene3d dataset there file by file and refuses a folder holding anything else
    with ctx.console.status(f"rendering the object scene ({a.views} views, {a.size} px) ..."):
        ctx.data = generate_scene("object", out, size=a.size, views=a.views, seed=a.seed)
    ctx.summary.append(("dataset", str(ctx.data)))


def train(ctx: DemoContext) -> None:
    """s3d-nerf-tiny on the CPU with a live progress bar (step, loss → PSNR, rays/s)."""
    import torch
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from scene3d.methods.common.trainer import seed_everything
    from scene3d.methods.s3d_nerf.config import s3d_nerf_tiny_config

    cfg = s3d_nerf_tiny_config()
    cfg.pipeline.datamanager.dataparser.data = ctx.data
    cfg.machine.device_type = "cpu"
    cfg.output_dir = ctx.out / "runs"
    cfg.experiment_name = "demo"
    cfg.vis = "tensorboard"
    cfg.logging.local_writer.enable = False  # the progress bar below replaces nerfstudio's stats table
    cfg.logging.profiler = "none"
    if ctx.args.iterations is not None:
        cfg.max_num_iterations = ctx.args.iterations
        cfg.optimizers["fields"]["scheduler"].max_steps = ctx.args.iterations
    cfg.set_timestamp()
    cfg.save_config()
    ctx.config_path = cfg.get_base_dir() / "config.yml"

    seed_everything(cfg.machine.seed)  # as ns-train does before setting up its trainer: the demo is reproducible
    trainer = cfg.setup(local_rank=0, world_size=1)
    with ctx.console.status("loading the dataset ..."):
        trainer.setup()
    model = trainer.pipeline.model
    columns = (
        TextColumn("[bold]training s3d-nerf-tiny"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    rays = [0]
    start = time.perf_counter()
    with Progress(*columns, console=ctx.console, transient=False) as progress:
        task = progress.add_task("train", total=cfg.max_num_iterations, stats="")

        def report(step: int) -> None:
            rays[0] += model.last_rays
            if step % 10 == 0 or step == cfg.max_num_iterations - 1:
                loss = float(model.last_rgb_loss) if model.last_rgb_loss is not None else float("nan")
                psnr = -10.0 * math.log10(max(loss, 1e-10))
                rate = rays[0] / max(time.perf_counter() - start, 1e-6)
                stats = f"train PSNR {psnr:5.2f} dB · {rate / 1000:5.1f}k rays/s · grid {model.occupancy_grid.occupied_fraction:4.0%}"
                progress.update(task, completed=step + 1, stats=stats)

        trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], report, update_every_num_iters=1))
        trainer.train()
        progress.update(task, completed=cfg.max_num_iterations)
    elapsed = time.perf_counter() - start
    ctx.trainer = trainer
    ctx.metrics["train_seconds"] = elapsed
    ctx.metrics["train_rays_per_s"] = rays[0] / max(elapsed, 1e-6)
    ctx.summary.append(("trained run", str(cfg.get_base_dir())))
    ctx.summary.append(("training", f"{cfg.max_num_iterations} steps in {elapsed:.0f} s, {ctx.metrics['train_rays_per_s']:.0f} rays/s, {torch.get_num_threads()} torch thread(s)"))


def evaluate(ctx: DemoContext) -> None:
    """Held-out PSNR / SSIM (/ LPIPS) against the ground-truth images, and a comparison sheet."""
    import imageio.v3 as iio
    import numpy as np
    import torch

    from scene3d.core import metrics

    pipeline = ctx.trainer.pipeline
    pipeline.eval()
    model = pipeline.model
    dataset = pipeline.datamanager.eval_dataset
    psnrs, ssims, lpipss, sheet = [], [], [], []
    with ctx.console.status("") as status:
        for i in range(len(dataset)):
            status.update(f"rendering held-out view {i + 1}/{len(dataset)} ...")
            camera = dataset.cameras[i : i + 1].to(model.device)
            out = model.get_outputs_for_camera(camera)
            gt = dataset.get_image_float32(i)[..., :3].to(model.device)
            pred_b, gt_b = out["rgb"].permute(2, 0, 1)[None].clamp(0, 1), gt.permute(2, 0, 1)[None]
            psnrs.append(float(metrics.psnr(pred_b, gt_b)))
            ssims.append(float(metrics.ssim(pred_b, gt_b)))
            lp = metrics.lpips(pred_b, gt_b)
            if lp is not None:
                lpipss.append(float(lp))
            if len(sheet) < 6:
                sheet.append(torch.cat([out["rgb"].clamp(0, 1), gt], dim=0))
    grid = (torch.cat(sheet, dim=1).cpu().numpy() * 255).round().astype(np.uint8)
    iio.imwrite(ctx.out / "eval_views.png", grid)
    ctx.metrics["psnr"] = sum(psnrs) / len(psnrs)
    ctx.metrics["ssim"] = sum(ssims) / len(ssims)
    line = f"PSNR {ctx.metrics['psnr']:.2f} dB · SSIM {ctx.metrics['ssim']:.3f}"
    if lpipss:
        ctx.metrics["lpips"] = sum(lpipss) / len(lpipss)
        line += f" · LPIPS {ctx.metrics['lpips']:.3f}"
    else:
        line += " · LPIPS skipped (no AlexNet weights offline)"
    ctx.console.print(f"[bold green]held-out views ({len(psnrs)}): {line}")
    ctx.summary.append(("held-out metrics", line))
    ctx.summary.append(("renders vs ground truth", str(ctx.out / "eval_views.png")))


def turntable(ctx: DemoContext) -> None:
    """An orbit video of the trained scene."""
    import torch

    from scene3d.export.turntable import orbit_from_cameras, render_frames, write_video

    if ctx.args.frames <= 0:
        return
    pipeline = ctx.trainer.pipeline
    model = pipeline.model
    cameras = pipeline.datamanager.train_dataset.cameras
    centre = model.field.aabb.mean(0).cpu()
    poses = orbit_from_cameras(cameras.camera_to_worlds, centre, ctx.args.frames)
    K = torch.tensor([[float(cameras.fx[0]), 0.0, float(cameras.cx[0])], [0.0, float(cameras.fy[0]), float(cameras.cy[0])], [0.0, 0.0, 1.0]])
    width, height = int(cameras.width[0]), int(cameras.height[0])

    def render(origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        return model.render(origins.to(model.device), directions.to(model.device), with_normals=False).rgb

    frames = []
    with ctx.console.status("") as status:
        for i, frame in enumerate(render_frames(render, poses, K, width, height)):
            status.update(f"rendering the turntable: frame {i + 1}/{len(poses)} ...")
            frames.append(frame)
    path = write_video(frames, ctx.out / "turntable.mp4", fps=24)
    ctx.summary.append(("turntable video", str(path)))


def export_mesh(ctx: DemoContext) -> None:
    """The surface the renders show (rendered depth of 32 training views fused), with rendered vertex colours."""
    from scene3d.export.mesh import Mesh, extract_mesh, to_dataset_frame, training_views, write_mesh

    pipeline = ctx.trainer.pipeline
    with ctx.console.status(f"extracting the mesh (32 views fused, marching cubes at {ctx.args.mesh_resolution}) ..."):
        mesh = extract_mesh(pipeline.model, training_views(pipeline), resolution=ctx.args.mesh_resolution)
        mesh = Mesh(to_dataset_frame(mesh.vertices, pipeline), mesh.faces, mesh.colors)
        path = write_mesh(mesh, ctx.out / "mesh.ply")
    ctx.summary.append(("mesh", f"{path} ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces)"))


def stylize(ctx: DemoContext) -> None:
    """ReGS: the demo scene restyled from one stylized reference view, scored and exported (``OUT/stylized.ply``)."""
    from scene3d.methods.regs.demo import stylize_stage

    stylize_stage(ctx)


def print_commands(ctx: DemoContext) -> None:
    """The summary and the exact commands to continue from the trained run."""
    from rich.table import Table

    table = Table(title="scene3d demo", show_header=False, expand=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # paths wrap instead of ending in "…"
    for what, value in ctx.summary:
        table.add_row(f"[bold]{what}", value)
    stage_times = " · ".join(f"{k} {v:.0f} s" for k, v in ctx.timings.items())
    table.add_row("[bold]time", stage_times)
    ctx.console.print(table)
    cfg = ctx.config_path
    commands = [
        ("open the viewer on the result", f"ns-viewer --load-config {cfg} --viewer.websocket-host 127.0.0.1"),
        ("re-export the mesh (.ply, .obj or .glb)", f"s3d export mesh --load-config {cfg} --out {ctx.out / 'mesh.glb'}"),
        ("render a video along the training cameras (needs ffmpeg on PATH)", f"ns-render interpolate --load-config {cfg} --output-path {ctx.out / 'interpolate.mp4'}"),
        ("evaluate on the held-out views", f"ns-eval --load-config {cfg} --output-path {ctx.out / 'eval.json'}"),
        ("export a point cloud", f"ns-export pointcloud --load-config {cfg} --output-dir {ctx.out / 'pointcloud'}"),
    ]  # fmt: skip
    for what, command in commands:
        ctx.console.print(f"[bold]{what}:[/bold]")
        ctx.console.print(f"  {command}", soft_wrap=True, highlight=False)


STAGES: list[Callable[[DemoContext], None]] = [generate_data, train, evaluate, turntable, export_mesh, stylize, print_commands]
"""The demo's stages, in order. Add a stage (e.g. stylization) by inserting a ``stage(ctx) -> None`` here."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="s3d demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")
    parser.add_argument("--iterations", type=int, default=None, help="training steps (default: s3d-nerf-tiny's)")
    parser.add_argument("--threads", default="auto", help="torch threads: auto (idle cores) or a number")
    parser.add_argument("--size", type=int, default=128, help="image size of the scene in pixels (default 128)")
    parser.add_argument("--views", type=int, default=100, help="views of the scene (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    parser.add_argument("--frames", type=int, default=48, help="turntable frames, 0 to skip (default 48)")
    parser.add_argument("--mesh-resolution", type=int, default=256, help="marching-cubes samples along the longest side")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the demo; returns the exit status."""
    args = parse_args(argv)
    # before torch starts OpenMP: waiting threads sleep instead of spinning (a shared CPU stays usable)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import warnings

    import torch
    from nerfstudio.utils.rich_utils import CONSOLE
    from rich.console import Console

    console = Console()
    threads, why = choose_threads(args.threads)
    torch.set_num_threads(threads)
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(out=args.out.resolve(), args=args, console=console)
    console.rule("[bold]scene3d demo: a NeRF of a synthetic scene, trained on this CPU")
    console.print(f"torch threads: {why}; output: {ctx.out}")
    start = time.perf_counter()
    was_quiet = CONSOLE.quiet
    with warnings.catch_warnings():
        # nerfstudio 1.1.5 on torch 2.14: one deprecation warning per ray batch (camera indexing) and one per logged
        # loss; deprecations in its own code (torch.jit.script, torch.cuda.amp); its 4 data-loader workers
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
        for start_of_message in ("`torch.jit.script` is deprecated", "`torch.cuda.amp.", "This DataLoader will create"):
            warnings.filterwarnings("ignore", message=re.escape(start_of_message))
        CONSOLE.quiet = True  # nerfstudio's own banners and paths: the demo reports every stage itself
        try:
            for stage in STAGES:
                t0 = time.perf_counter()
                stage(ctx)
                if stage is not print_commands:
                    ctx.timings[stage.__name__] = time.perf_counter() - t0
        finally:
            CONSOLE.quiet = was_quiet
    console.print(f"[dim]total {time.perf_counter() - start:.0f} s[/dim]")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
