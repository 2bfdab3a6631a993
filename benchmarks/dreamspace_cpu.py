"""DreamSpace on the CPU with the ground-truth priors: retexture a synthetic room whose stylized look is known.

    .venv/bin/python benchmarks/dreamspace_cpu.py [--quick] [--workdir DIR] [--threads N]

1. A synthetic ``room`` (``generate_scene("room", ..., stylized=True)``): its mesh is DreamSpace's input (with the
   scan's albedo as vertex colours), its stylized texture set is the target.
2. ``dreamspace-tiny``'s stages at the sizes below, every prior ``groundtruth:`` the room with the stylized look and
   the twins' default imperfections (the panorama and the tiles answer with the stylized render at their camera,
   inpainting answers with candidates of which one is clean): once as configured, once with propagation switched
   off (``propagate=False``: the panorama's projection only, its mean colour elsewhere), as a user would run it.
3. Held-out interior views (cameras drawn like the dataset's interior views, from free points of the room looking at
   random points of it; DreamSpace never sees an image of the room): PSNR of 2 × 2-supersampled renders of each
   retextured room against the true stylized renders (2 × 2 anti-aliased, as the dataset's images).
4. ``texel_coverage``: fraction of the atlas' surface texels holding a colour at the end. ``seam_err``: mean absolute
   difference between the refined panorama's last and first columns, beside the mean difference between its
   neighbouring columns. Also: how often the interior views' candidate selection picked the twin's clean candidate.

Last line: ``psnr_interior=<dB> psnr_panorama_only=<dB> texel_coverage=<0..1> seam_err=<mean abs, 0..1>``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

SETTINGS = {
    # dataset size (the held-out views' side), interior views held out, pipeline sizes
    "full": {"size": 96, "held_out": 32, "coarse_height": 128, "fine_height": 512, "tile_size": 256,
             "atlas_resolution": 1024, "views": 8, "view_size": 192, "view_candidates": 16, "imitation_steps": 1000},
    "quick": {"size": 64, "held_out": 24, "coarse_height": 64, "fine_height": 256, "tile_size": 128,
              "atlas_resolution": 512, "views": 6, "view_size": 128, "view_candidates": 8, "imitation_steps": 300},
}  # fmt: skip
PIPELINE_KEYS = ("coarse_height", "fine_height", "tile_size", "atlas_resolution", "views", "view_size",
                 "view_candidates", "imitation_steps")  # fmt: skip
PROMPT = "a stylized room"


def _load() -> str:
    try:
        return "%.1f" % os.getloadavg()[0]
    except OSError:
        return "?"


def _run(data: Path, out: Path, settings: dict, *, propagate: bool):
    """Train dreamspace-tiny's stages at the benchmark's sizes with groundtruth priors; returns the trainer."""
    from scene3d.methods.common.trainer import seed_everything
    from scene3d.methods.dreamspace.config import dreamspace_tiny_config
    from scene3d.methods.dreamspace.pipeline import build_schedule

    seed_everything(0)
    cfg = dreamspace_tiny_config()
    pc = cfg.pipeline
    pc.datamanager.data = data
    pc.model.prompt = PROMPT
    preset = f"groundtruth:{data}"
    pc.diffusion = pc.controlnet = pc.inpainting = preset
    for key in PIPELINE_KEYS:
        setattr(pc, key, settings[key])
    pc.imitation_refresh = max(50, settings["imitation_steps"] // 4)
    pc.propagate = propagate
    cfg.max_num_iterations = build_schedule(pc).total_steps
    cfg.steps_per_save = cfg.max_num_iterations
    cfg.output_dir = out
    cfg.vis = "tensorboard"
    cfg.machine.device_type = "cpu"
    cfg.set_timestamp()
    cfg.timestamp += "-full" if propagate else "-panorama-only"
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return trainer


def _held_out_cameras(data: Path, count: int, size: int):
    """``count`` interior cameras drawn as the dataset's interior views are (another seed), and the true stylized
    renders there."""
    from scene3d.core.cameras import CameraBatch
    from scene3d.datasets.gtpriors.render import render
    from scene3d.datasets.room import room_cameras
    from scene3d.datasets.stored import read_scene
    from scene3d.datasets.synthetic import _rng

    scene = read_scene(data).scene
    rig = room_cameras(scene, count * 5 // 3 + 2, size, _rng(12345, 1))  # 2/5 centre views, the rest interior
    interior = [i for i, g in enumerate(rig.groups) if g == "interior"][:count]
    c2w = rig.c2w[interior]
    truth = render(scene, CameraBatch.pinhole(c2w, rig.K, size, size), stylized=True, antialias=True)
    return c2w, rig.K, truth.rgb.float()


def _candidate_accuracy(pipeline) -> tuple[int, int]:
    """(clean candidates chosen, interior views with several candidates), from the views' meta and the twin's
    records of its inpainting calls (the seam's call comes first)."""
    views = [f for f in pipeline.views.frames if f.get("stage") == "view"] if pipeline.views is not None else []
    twin = pipeline._priors.get("inpainting")
    records = [r for r in twin.source.records if r.operation == "inpaint"] if twin is not None else []
    draws = [r.draw for r in records if r.draw is not None and len(r.draw.clean_index) == 1]
    multi = [d for d in draws if len(d.perturbations[0]) > 1]
    chosen = [f["meta"]["candidate"] for f in views if "candidate" in f.get("meta", {})]
    if len(multi) != len(chosen):
        return 0, 0
    return sum(int(c == d.clean_index[0]) for c, d in zip(chosen, multi)), len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the dataset and runs here (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    settings = SETTINGS["quick" if args.quick else "full"]

    from scene3d.datasets.synthetic import generate_scene
    from scene3d.methods.dreamspace.evaluate import interior_psnr, pixel_sources, render_views
    from scene3d.methods.dreamspace.panorama import neighbour_difference, seam_error
    from scene3d.methods.dreamspace.stages import surface_sources
    from scene3d.methods.dreamspace.texturing import TexelSource, texel_coverage

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dreamspace-bench-"))
    data = work / f"room{settings['size']}"
    started = time.perf_counter()
    if not (data / "transforms.json").is_file():
        generate_scene("room", data, size=settings["size"], views=20, stylized=True, seed=0)
    c2w, K, targets = _held_out_cameras(data, settings["held_out"], settings["size"])

    rows, results, errors, where = [], {}, {}, None
    for propagate in (True, False):
        t0 = time.perf_counter()
        trainer = _run(data, work / "runs", settings, propagate=propagate)
        seconds = time.perf_counter() - t0
        pipeline = trainer.pipeline
        model = pipeline.model
        renders = render_views(model.raycaster(), model.atlas_uvs[model.atlas_faces], model.display, c2w, K,
                               settings["size"], settings["size"], background=model.background)  # fmt: skip
        mean_psnr, per_view = interior_psnr(renders, targets)
        if propagate:  # which texels the held-out pixels show, by what coloured them in the full run
            where = pixel_sources(model.raycaster(), model.atlas_uvs[model.atlas_faces], model.source, c2w, K,
                                  settings["size"], settings["size"])  # fmt: skip
        errors[propagate] = ((renders.clamp(0, 1) - targets) ** 2).mean(1)
        sources = surface_sources(pipeline)
        counts = {s.name.lower(): float((sources == s).float().mean()) for s in TexelSource}
        panorama = model.current_panorama().cpu()
        results[propagate] = {
            "psnr": mean_psnr, "worst": min(per_view), "coverage": texel_coverage(model.source, model.texels.mask),
            "seam": seam_error(panorama), "neighbour": neighbour_difference(panorama), "counts": counts,
            "seconds": seconds, "candidates": _candidate_accuracy(pipeline), "steps": pipeline.schedule.total_steps,
        }  # fmt: skip
        rows.append(("full (views + imitation)" if propagate else "panorama only", results[propagate]))

    print(f"\nDreamSpace, groundtruth priors (stylized room, {settings['size']} px held-out interior views x "
          f"{settings['held_out']}), {'quick' if args.quick else 'full'} settings; load {_load()}")  # fmt: skip
    print(f"{'run':<26}{'PSNR':>8}{'worst':>8}{'coverage':>10}{'panorama':>10}{'grazing':>9}{'inpainted':>11}"
          f"{'imitated':>10}{'mean fill':>11}{'seam':>8}{'neighb.':>9}{'steps':>7}{'time s':>8}")  # fmt: skip
    for name, r in rows:
        c = r["counts"]
        print(f"{name:<26}{r['psnr']:>8.2f}{r['worst']:>8.2f}{r['coverage']:>10.4f}{c['panorama']:>10.3f}"
              f"{c['grazing']:>9.3f}{c['inpainted']:>11.3f}{c['imitated']:>10.3f}{c['filled']:>11.3f}"
              f"{r['seam']:>8.4f}{r['neighbour']:>9.4f}{r['steps']:>7d}{r['seconds']:>8.1f}")  # fmt: skip
    print("held-out pixels by what coloured their texel in the full run: share, and MSE full / panorama only")
    for s in [*TexelSource, None]:
        sel = where == (-1 if s is None else int(s))
        if bool(sel.any()):
            name = "outside the room" if s is None else s.name.lower()
            print(f"  {name:<18}{float(sel.float().mean()):>8.3f}{float(errors[True][sel].mean()):>10.5f}"
                  f"{float(errors[False][sel].mean()):>10.5f}")  # fmt: skip
    right, total = results[True]["candidates"]
    print(f"interior-view inpainting: the most seamless candidate was the twin's clean one in {right} of {total} views")
    print(f"settings: {json.dumps(settings)}; total {time.perf_counter() - started:.0f} s")
    full = results[True]
    print(f"psnr_interior={full['psnr']:.2f} psnr_panorama_only={results[False]['psnr']:.2f} "
          f"texel_coverage={full['coverage']:.4f} seam_err={full['seam']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
