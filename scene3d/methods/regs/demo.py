"""The demo's stylization step (``s3d demo``): the demo scene restyled by ReGS from one stylized reference view.

:func:`stylize_stage` is one stage of :mod:`scene3d.cli.demo` (``stage(ctx) -> None``). It renders the demo's
``object`` scene (same kind and seed) a second time with its stylized textures at a CPU-friendly size, trains
``s3d-splat-tiny`` on the original look, restyles it with ``regs-tiny`` from the stylized render of one training view,
scores every other view against its true stylized render, and exports the stylized splats
(``OUT/stylized.ply``). Everything lives under ``OUT/stylized/``; a second run reuses the scene and the splat run.
"""

from __future__ import annotations

import time
from typing import Any

SIZE = 48
"""Image size of the stylization scene (px)."""
VIEWS = 30
"""Its number of views."""
SPLAT_STEPS = 800
"""s3d-splat-tiny steps of the scene to restyle."""
ITERATIONS: int | None = None
"""regs-tiny iterations (``None``: regs-tiny's own, 1,000)."""


def stylize_stage(ctx: Any) -> None:
    """ReGS on the demo scene; adds its lines to ``ctx.summary`` and ``ctx.metrics`` (see the module docstring)."""
    import json
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    from scene3d.export.splat import write_splats
    from scene3d.methods.common.trainer import seed_everything
    from scene3d.methods.regs.evaluate import evaluate_pipeline
    from scene3d.methods.regs.run import regs_run_config, stylized_object_scene, train_splat_tiny
    from scene3d.renderers.splats import PARAM_NAMES

    out = ctx.out / "stylized"
    seed = int(getattr(ctx.args, "seed", 0))
    with ctx.console.status(f"rendering the demo scene twice, original and stylized ({VIEWS} views, {SIZE} px) ..."):
        data = stylized_object_scene(out / "data", size=SIZE, views=VIEWS, seed=seed)
    start = time.perf_counter()
    with ctx.console.status(f"training s3d-splat-tiny on the original look ({SPLAT_STEPS} steps) ..."):
        splat_run, _ = train_splat_tiny(data, out / "runs", steps=SPLAT_STEPS, name="splat")
    splat_seconds = time.perf_counter() - start

    meta = json.loads((data / "transforms.json").read_text(encoding="utf-8"))
    view = Path(meta["train_filenames"][3]).stem
    cfg = regs_run_config(
        data, splat_run, data / "images_stylized" / f"{view}.png", view, out / "runs", experiment_name="regs",
        vis="quiet", max_num_iterations=ITERATIONS,
    )  # fmt: skip
    cfg.steps_per_eval_image = 10**9
    cfg.save_config()
    seed_everything(cfg.machine.seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    with ctx.console.status("loading the splat run and pre-computing ReGS's targets ..."):
        trainer.setup()
    columns = (
        TextColumn("[bold]stylizing with regs-tiny"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
    )  # fmt: skip
    start = time.perf_counter()
    with Progress(*columns, console=ctx.console) as progress:
        task = progress.add_task("regs", total=cfg.max_num_iterations, stats="")
        model = trainer.pipeline.model

        def report(step: int) -> None:
            if step % 25 == 0 or step == cfg.max_num_iterations - 1:
                progress.update(task, completed=step + 1, stats=f"{model.num_points} Gaussians")

        after = [TrainingCallbackLocation.AFTER_TRAIN_ITERATION]
        trainer.callbacks.append(TrainingCallback(after, report, update_every_num_iters=1))
        trainer.train()
        progress.update(task, completed=cfg.max_num_iterations)
    regs_seconds = time.perf_counter() - start

    with ctx.console.status("scoring the stylized views against their true stylized renders ..."):
        scores = evaluate_pipeline(trainer.pipeline)
    params = {k: model.gauss_params[k].detach().cpu() for k in PARAM_NAMES}
    ply = write_splats(params, ctx.out / "stylized.ply")
    config_path = cfg.get_base_dir() / "config.yml"
    line = (
        f"novel-view PSNR {scores.novel_psnr:.2f} dB / SSIM {scores.novel_ssim:.3f} against the true stylized renders "
        f"({scores.num_novel_views} views; reference view {scores.reference_psnr:.2f} dB), depth change "
        f"{100 * scores.depth_change_fraction:.2f} % of the scene extent, {scores.gaussians} Gaussians"
    )
    ctx.console.print(f"[bold green]stylized (ReGS): {line}")
    for what, command in (
        ("view the stylized scene", f"ns-viewer --load-config {config_path} --viewer.websocket-host 127.0.0.1"),
        ("re-export it (.ply or .splat)", f"s3d export splat --load-config {config_path} --out {ctx.out / 'stylized.splat'}"),
    ):
        ctx.console.print(f"[bold]{what}:[/bold]\n  {command}", soft_wrap=True, highlight=False)
    ctx.metrics["stylized_novel_psnr"] = scores.novel_psnr
    ctx.metrics["stylized_reference_psnr"] = scores.reference_psnr
    ctx.summary.append(("stylized scene (ReGS)", line))
    timing = (
        f"s3d-splat-tiny {splat_seconds:.0f} s, regs-tiny {cfg.max_num_iterations} iterations {regs_seconds:.0f} s "
        f"(style features: {trainer.pipeline.config.vgg})"
    )
    ctx.summary.append(("stylization time", timing))
    ctx.summary.append(("stylized splats", str(ply)))
    ctx.summary.append(("stylized run (ns-viewer --load-config)", str(config_path)))
