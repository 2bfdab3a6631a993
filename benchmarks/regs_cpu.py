"""ReGS on the CPU: restyle a synthetic splat scene from one stylized reference view, three ways of densifying.

    .venv/bin/python benchmarks/regs_cpu.py [--quick] [--workdir DIR] [--threads N] [--retrain]

1. A synthetic ``object`` scene rendered twice (original and stylized textures on the same geometry,
   ``generate_scene(..., stylized=True)``), so every view has its true stylized render.
2. ``s3d-splat-tiny`` trained on the original images (cached in ``--workdir``; ``--retrain`` trains it again).
3. ``regs-tiny`` from that run with one stylized training view as the reference, three times: texture-guided
   densification (ReGS: DC-colour gradient), positional-gradient densification splitting exactly as many Gaussians
   at each step as the colour run did (so both end at a similar count), and no densification (pruning only).
4. For each, and for the unstylized source: PSNR of the reference view against the reference; PSNR and SSIM of every
   other view (ReGS never sees their stylized images) against its true stylized render; mean absolute z-depth change
   against the source Gaussians where the source has a surface (scene units and % of the scene box diagonal);
   Gaussian count; rendering FPS at 256² on this CPU (torch rasterizer, one thread unless ``--threads``).

The style losses use ``tiny-random`` VGG features unless VGG-16 weights are on disk (``s3d models fetch vgg16``);
the table says which. Last line: ``novel_psnr_color=<x> novel_psnr_position=<y> depth_change=<z>`` (PSNR in dB;
``depth_change``: the colour run's mean |Δz| as a fraction of the scene extent).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads cost more than rendering

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from scene3d.methods.regs.evaluate import StylizationScores, evaluate_pipeline  # noqa: E402
from scene3d.methods.regs.run import regs_run_config, stylized_object_scene, train_splat_tiny  # noqa: E402

SETTINGS = {
    # size, views, base splat steps, ReGS iterations, densify every / until (ReGS's 14 steps in the first half)
    "full": {"size": 48, "views": 30, "splat_steps": 800, "iterations": 1000, "every": 35, "until": 500},
    "quick": {"size": 32, "views": 20, "splat_steps": 400, "iterations": 600, "every": 21, "until": 300},
}


def _load() -> str:
    try:
        return "%.1f" % os.getloadavg()[0]
    except OSError:
        return "?"


def _vgg_name() -> str:
    """``vgg16`` when its weights are on disk, else ``tiny-random``."""
    from scene3d.core.errors import ModelNotFoundError
    from scene3d.priors.vgg import VGGFeatures

    try:
        VGGFeatures.from_pretrained("vgg16")
        return "vgg16"
    except (ModelNotFoundError, FileNotFoundError):
        return "tiny-random"


def _scene(workdir: Path, s: dict) -> Path:
    return stylized_object_scene(workdir / f"object_{s['size']}px_{s['views']}v", size=s["size"], views=s["views"])


def _splat_run(data: Path, workdir: Path, steps: int, retrain: bool) -> tuple[Path, str]:
    run = workdir / "splat" / data.name / "s3d-splat-tiny" / f"steps{steps}"
    if retrain and run.exists():
        shutil.rmtree(run)
    start = time.perf_counter()
    run, trained = train_splat_tiny(data, workdir / "splat", steps=steps, name=data.name)
    if trained:
        return run, f"trained now, {steps} steps in {time.perf_counter() - start:.0f} s"
    return run, f"{steps} steps, cached in {run}"


def _stylize(data: Path, run: Path, view: str, workdir: Path, s: dict, vgg: str, name: str, *, source: bool = False, **pipe):
    pipe.setdefault("seed", s["seed"])
    cfg = regs_run_config(
        data, run, data / "images_stylized" / f"{view}.png", view, workdir / "regs", experiment_name=data.name,
        timestamp=name, max_num_iterations=s["iterations"], vis="quiet", vgg=vgg, densify_every=s["every"],
        densify_until=s["until"], **pipe,
    )  # fmt: skip
    cfg.steps_per_save = s["iterations"]
    cfg.steps_per_eval_image = 10**9
    cfg.save_config()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    before = evaluate_pipeline(trainer.pipeline) if source else None
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return evaluate_pipeline(trainer.pipeline), before, seconds, trainer.pipeline.densify_history


def _row(name: str, sc: StylizationScores, seconds: float | None) -> str:
    t = "-" if seconds is None else f"{seconds:.0f}"
    return (
        f"| {name:<34} | {sc.reference_psnr:8.2f} | {sc.novel_psnr:10.2f} | {sc.novel_ssim:10.3f} | "
        f"{sc.depth_change:8.4f} ({100 * sc.depth_change_fraction:5.2f} %) | {sc.gaussians:9d} | {sc.fps:8.1f} | {t:>7} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="32 px, 20 views, 400 splat steps, 600 ReGS iterations")
    parser.add_argument("--seed", type=int, default=0, help="ReGS's seed (view sampling, split offsets)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scene3d-bench-regs"), help="data, runs, cache")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: best on a shared CPU)")
    parser.add_argument("--retrain", action="store_true", help="train the base splat run even if it is cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    s = {**SETTINGS["quick" if args.quick else "full"], "seed": args.seed}
    load_start, t0 = _load(), time.perf_counter()

    data = _scene(args.workdir, s)
    meta = json.loads((data / "transforms.json").read_text())
    train_names = [Path(f).stem for f in meta["train_filenames"]]
    view = train_names[3]
    run, run_note = _splat_run(data, args.workdir, s["splat_steps"], args.retrain)
    vgg = _vgg_name()

    color, source, t_color, history = _stylize(data, run, view, args.workdir, s, vgg, "color", source=True, densify_by="color")
    counts = tuple(n for _, n, _ in history)
    position, _, t_pos, _ = _stylize(
        data, run, view, args.workdir, s, vgg, "position", densify_by="position", split_counts=counts
    )
    none, _, t_none, _ = _stylize(data, run, view, args.workdir, s, vgg, "none", densify_by="none")
    assert source is not None

    print(f"ReGS on CPU ({'quick' if args.quick else 'full'}): synthetic object scene {s['size']}² px, {len(meta['frames'])} views "
          f"({len(train_names)} train); reference: the stylized render of training view {view}; novel views: the "
          f"{color.num_novel_views} others, against their true stylized renders")  # fmt: skip
    print(f"base: s3d-splat-tiny, {run_note}; ReGS: regs-tiny, {s['iterations']} iterations, densification every "
          f"{s['every']} until {s['until']}, seed {args.seed}; style features: {vgg}"
          + (" (no VGG-16 weights on this machine: random features, not VGG's)" if vgg == "tiny-random" else ""))  # fmt: skip
    print(f"CPU: {os.cpu_count()} cores shared with other jobs (load average {load_start} at start, {_load()} at end), "
          f"{args.threads} torch thread(s), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; total {time.perf_counter() - t0:.0f} s")  # fmt: skip
    print(f"colour-run splits per densification step: {list(counts)} (replayed by the positional run)")
    print()
    print("| densification                      | ref PSNR | novel PSNR | novel SSIM | depth change (extent)  | Gaussians | FPS@256² | train s |")
    print("|------------------------------------|---------:|-----------:|-----------:|-----------------------:|----------:|---------:|--------:|")
    print(_row("source (unstylized s3d-splat run)", source, None))
    print(_row("colour gradient (ReGS)", color, t_color))
    print(_row("positional gradient (same counts)", position, t_pos))
    print(_row("none (pruning only)", none, t_none))
    print()
    print(f"novel_psnr_color={color.novel_psnr:.2f} novel_psnr_position={position.novel_psnr:.2f} "
          f"depth_change={color.depth_change_fraction:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
