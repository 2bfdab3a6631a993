"""CLNeRF and its baselines on a synthetic changing scene, on the CPU, with the same code.

    .venv/bin/python benchmarks/clnerf_cpu.py [--quick] [--out DIR] [--threads N] [--iterations I] [--seed S]

The scene is scene3d's ``changing`` kind with 4 scans (step 1 recolours an object, step 2 moves it, step 3 adds an
object), each captured by its own cameras, in one world frame (``--quick``: 40 px, 24 views per scan, 200 steps per
scan, a smoke run whose models are far from converged; default: 48 px, 32 views, 1000 steps per scan). Every method
is ``clnerf-tiny`` (same field, renderer, datamanager, pipeline) trained on the 4 scans in one run, with these
settings:

    upper_bound          mode=joint: every scan's images at once, with per-scan embeddings, I steps (official UB:
                         one joint run as long as one scan's run)
    upper_bound_4x       the same with 4 x I steps (as many steps as a whole sequence of the other methods)
    naive                continual, no replay, no buffer, each scan fine-tunes the previous model
    experience_replay    continual, no generative replay, reservoir buffer of 10 real images, fine-tuning
    clnerf_k0_scratch    CLNeRF: generative replay, no stored image, each scan's model from scratch (official)
    clnerf_k0_previous   CLNeRF: generative replay, no stored image, each scan's model from the previous one
    clnerf_k10           CLNeRF with a reservoir of 10 real images (the released scripts), default init

After the last scan every scan's held-out views are rendered with that scan's id; the table gives PSNR and SSIM
per scan, their mean over the old scans (0-2), and the bytes each method keeps between scans (model weights,
the pose store when it replays, buffered images; the upper bound keeps every training image). Last line:
``clnerf_old_psnr=<x> upper_bound_old_psnr=<y> naive_old_psnr=<z>`` (CLNeRF: k = 0 with the default init).

Runs one after another in this process with the same seed (``--seed``: initialisation, ray draws, reservoir);
timings are wall-clock on a shared machine (the load average is printed). Torch uses ``--threads`` threads
(default 1: on the shared 2-core machine two threads contend with other processes and run small ops many times
slower).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep on a shared CPU

METHODS: dict[str, dict[str, object]] = {
    "upper_bound": {"mode": "joint"},
    "upper_bound_4x": {"mode": "joint"},
    "naive": {"generative_replay": False, "buffer_size": 0, "init": "previous"},
    "experience_replay": {"generative_replay": False, "buffer_size": 10, "init": "previous"},
    "clnerf_k0_scratch": {"generative_replay": True, "buffer_size": 0, "init": "scratch"},
    "clnerf_k0_previous": {"generative_replay": True, "buffer_size": 0, "init": "previous"},
    "clnerf_k10": {"generative_replay": True, "buffer_size": 10},
}


def _run(method: str, data: Path, out: Path, iterations: int, scans: int, seed: int) -> dict[str, object]:
    import torch
    from nerfstudio.utils import writer
    from nerfstudio.utils.rich_utils import CONSOLE

    from scene3d.methods.clnerf.config import clnerf_tiny_config
    from scene3d.methods.clnerf.runfolder import SCANS_JSON

    cfg = clnerf_tiny_config()
    cfg.machine.device_type = "cpu"
    cfg.vis = "tensorboard"
    cfg.logging.local_writer.enable = False
    cfg.pipeline.datamanager.data = data
    cfg.pipeline.model.backend = "torch"
    for key, value in METHODS[method].items():
        setattr(cfg.pipeline, key, value)
    joint = cfg.pipeline.mode == "joint"
    # official UB: one joint run as long as one scan's run; upper_bound_4x: as many steps as a whole sequence
    cfg.pipeline.iterations_per_scan = iterations * scans if method == "upper_bound_4x" else iterations
    cfg.steps_per_save = cfg.pipeline.iterations_per_scan
    cfg.output_dir, cfg.experiment_name, cfg.timestamp = out, method, f"seed{seed}"
    cfg.pipeline.seed = seed
    torch.manual_seed(seed)
    CONSOLE.quiet = True
    cfg.save_config()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    for event_writer in writer.EVENT_WRITERS:
        if hasattr(event_writer, "tb_writer"):
            event_writer.tb_writer.close()
    writer.EVENT_WRITERS.clear()
    pipeline = trainer.pipeline
    per_scan = pipeline.evaluate_scans()
    record = json.loads((trainer.base_dir / SCANS_JSON).read_text())
    kept = record["kept_between_scans"]
    if joint:
        dm = pipeline.datamanager
        sizes = dm.train_images.poses.sizes
        images = len(dm.train_images)
        kept_bytes = kept["model_bytes"] + int((sizes[:, 0] * sizes[:, 1] * 3).sum())
    else:
        images = kept["buffer_images"]
        poses = kept["pose_store_bytes"] if cfg.pipeline.generative_replay else 0
        kept_bytes = kept["model_bytes"] + poses + kept["buffer_bytes"]
    return {"per_scan": per_scan, "seconds": seconds, "bytes": kept_bytes, "images": images, "init": cfg.pipeline.init}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 px, 24 views, 200 steps per scan")
    parser.add_argument("--out", type=Path, default=None, help="keep the scene and runs here (default: a temp folder)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--iterations", type=int, default=None, help="steps per scan (default 1000, quick 200)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seed", type=int, default=0, help="initialisation, ray and reservoir seed (fixed scene)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from scene3d.datasets.synthetic import generate_scene
    from scene3d.methods.clnerf.pipeline import CLNeRFPipelineConfig

    size, views, iterations = (40, 24, 200) if args.quick else (48, 32, 1000)
    iterations = args.iterations or iterations
    scans = 4
    root = args.out or Path(tempfile.mkdtemp(prefix="clnerf_cpu_"))
    data = root / "scene"
    t0 = time.time()
    generate_scene("changing", data, size=size, views=views, steps=scans, seed=0)
    manifest = json.loads((data / "manifest.json").read_text())
    changes = [", ".join(f"{c['type']} {c['object']}" for c in s["changes"]) or "first scan" for s in manifest["steps"]]
    print(f"scene: {data} ({size} px, {views} views per scan, generated in {time.time() - t0:.0f} s)")
    for t, change in enumerate(changes):
        print(f"  scan {t}: {change}")
    default_init = CLNeRFPipelineConfig().init
    print(f"steps per scan: {iterations}; torch threads: {args.threads}; seed {args.seed}; load average "
          f"{os.getloadavg()[0]:.1f}; default init: {default_init}", flush=True)  # fmt: skip

    results = {}
    for method in args.methods:
        print(f"[{method}] training ... (load average {os.getloadavg()[0]:.1f})", flush=True)
        results[method] = _run(method, data, root / "runs", iterations, scans, args.seed)
        r = results[method]
        line = "  ".join(f"scan {s}: {m['psnr']:.2f} dB" for s, m in sorted(r["per_scan"].items()))
        print(f"[{method}] {r['seconds']:.0f} s; {line}", flush=True)

    old = list(range(scans - 1))
    header = f"{'method':<20}" + "".join(f"{'scan ' + str(s):>14}" for s in range(scans))
    header += f"{'old PSNR':>10}{'old SSIM':>10}{'kept bytes':>12}{'images':>8}{'train s':>9}"
    print()
    print("PSNR / SSIM on each scan's held-out views, rendered with its own scan id, after the last scan")
    print(header)
    print("-" * len(header))
    summary = {}
    for method, r in results.items():
        ps = r["per_scan"]
        cells = "".join(f"{ps[s]['psnr']:.2f}/{ps[s]['ssim']:.3f}".rjust(14) for s in range(scans))
        old_psnr = sum(ps[s]["psnr"] for s in old) / len(old)
        old_ssim = sum(ps[s]["ssim"] for s in old) / len(old)
        summary[method] = old_psnr
        row = f"{old_psnr:>10.2f}{old_ssim:>10.3f}{r['bytes']:>12,}{r['images']:>8}{r['seconds']:>9.0f}"
        print(f"{method:<20}{cells}{row}")
    print()
    clnerf_key = f"clnerf_k0_{default_init}"
    for name in ("clnerf_k0_scratch", "clnerf_k0_previous"):
        if name in summary and "upper_bound" in summary and "naive" in summary:
            print(f"{name}: {summary[name] - summary['upper_bound']:+.2f} dB vs upper bound, "
                  f"{summary[name] - summary['naive']:+.2f} dB vs naive fine-tuning (old scans)")  # fmt: skip
    if all(k in summary for k in (clnerf_key, "upper_bound", "naive")):
        print(f"clnerf_old_psnr={summary[clnerf_key]:.2f} upper_bound_old_psnr={summary['upper_bound']:.2f} "
              f"naive_old_psnr={summary['naive']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
