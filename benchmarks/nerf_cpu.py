"""s3d-nerf-tiny vs nerfstudio's nerfacto (``implementation=torch``) on the CPU, for the same wall time.

    .venv/bin/python benchmarks/nerf_cpu.py [--quick] [--seconds S] [--threads auto|N] [--data DIR]

Both train on the same synthetic ``object`` scene (scene3d's generator; ``--quick``: 64 px, 40 views, 60 s each;
default: the demo scene, 128 px, 100 views, 300 s each), through the same ``scene3d-data`` dataparser and
nerfstudio's ``VanillaDataManager``, with the same training loop (pipeline step, optimizer step, scheduler step,
the model's own callbacks) and the same torch thread count, one method per child process, one after the other.
Reported per method: training rays/s (rays in the batches trained in the wall time), held-out PSNR/SSIM on the
test views after training (rendering time not counted), the peak resident memory of its process. Last line:
``ratio_rays_per_s=<s3d/nerfacto> psnr_s3d=<x> psnr_nerfacto=<y>``.

nerfacto is run as configured by nerfstudio (proposal sampling, camera optimizer, 4096 rays per batch), except
``implementation="torch"``, mixed precision off (CPU), and its LPIPS metric: nerfacto's constructor builds an
LPIPS module that downloads AlexNet weights, which fails offline, so this benchmark replaces that one metric with
a stub before constructing it (LPIPS is not reported for either method).

Timings are wall-clock on whatever else the machine runs: the 1-minute load average before each run is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads sleep on a shared CPU


def _threads(requested: str) -> int:
    cores = os.cpu_count() or 1
    if requested != "auto":
        return max(1, int(requested))
    return max(1, min(cores, int(math.floor(cores - os.getloadavg()[0] + 0.5))))


def _stub_nerfacto_lpips() -> None:
    """Replace torchmetrics' LPIPS class, which nerfacto imports inside ``populate_modules`` (its constructor
    downloads AlexNet weights), by a module that returns NaN."""
    import torch
    import torchmetrics.image.lpip

    class NoLPIPS(torch.nn.Module):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__()

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return torch.tensor(float("nan"))

    torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity = NoLPIPS  # type: ignore[misc]


def _config(method: str, data: Path):
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig

    from scene3d.datasets.dataparser import Scene3DDataParserConfig

    if method == "s3d":
        from scene3d.methods.s3d_nerf.config import s3d_nerf_tiny_config

        cfg = s3d_nerf_tiny_config()
    else:
        from nerfstudio.configs.method_configs import method_configs

        _stub_nerfacto_lpips()
        cfg = method_configs["nerfacto"]
        cfg.pipeline.model.implementation = "torch"
        cfg.mixed_precision = False
        # the same data path as s3d-nerf-tiny (nerfacto's default ParallelDataManager spawns workers)
        dm = cfg.pipeline.datamanager
        cfg.pipeline.datamanager = VanillaDataManagerConfig(
            train_num_rays_per_batch=dm.train_num_rays_per_batch, eval_num_rays_per_batch=dm.eval_num_rays_per_batch
        )
    cfg.pipeline.datamanager.dataparser = Scene3DDataParserConfig(data=data)
    cfg.machine.device_type = "cpu"
    return cfg


def child(method: str, data: Path, seconds: float, threads: int, eval_views: int) -> dict:
    """Train one method for ``seconds`` of wall time, then evaluate; runs in its own process."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation
    from nerfstudio.engine.optimizers import Optimizers

    from scene3d.core import metrics

    cfg = _config(method, data)
    pipeline = cfg.pipeline.setup(device="cpu", test_mode="test", world_size=1, local_rank=0)
    optimizers = Optimizers(cfg.optimizers, pipeline.get_param_groups())
    grad_scaler = torch.amp.GradScaler("cpu", enabled=False)
    attrs = TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=grad_scaler, pipeline=pipeline, trainer=None)
    callbacks = pipeline.get_training_callbacks(attrs)
    sampler = pipeline.datamanager.train_pixel_sampler
    pipeline.train()
    rays, step = 0, 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for cb in callbacks:
            cb.run_callback_at_location(step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        batch_rays = sampler.num_rays_per_batch
        optimizers.zero_grad_all()
        _, loss_dict, _ = pipeline.get_train_loss_dict(step)
        sum(loss_dict.values()).backward()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
        for cb in callbacks:
            cb.run_callback_at_location(step, TrainingCallbackLocation.AFTER_TRAIN_ITERATION)
        rays += batch_rays
        step += 1
    elapsed = time.perf_counter() - start

    pipeline.eval()
    dataset = pipeline.datamanager.eval_dataset
    picked = sorted({round(i * (len(dataset) - 1) / max(eval_views - 1, 1)) for i in range(min(eval_views, len(dataset)))})
    psnrs, ssims = [], []
    for i in picked:
        with torch.no_grad():
            out = pipeline.model.get_outputs_for_camera(dataset.cameras[i : i + 1])
        gt = dataset.get_image_float32(i)[..., :3]
        a, b = out["rgb"].permute(2, 0, 1)[None].clamp(0, 1), gt.permute(2, 0, 1)[None]
        psnrs.append(float(metrics.psnr(a, b)))
        ssims.append(float(metrics.ssim(a, b)))
    return {
        "method": method, "steps": step, "seconds": elapsed, "rays": rays, "rays_per_s": rays / elapsed,
        "psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims), "eval_views": len(picked),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": threads,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px, 40 views, 60 s per method")
    parser.add_argument("--seconds", type=float, default=None, help="training wall time per method")
    parser.add_argument("--threads", default="auto", help="torch threads (auto: the cores not kept busy by others)")
    parser.add_argument("--data", type=Path, default=None, help="an existing scene3d dataset instead of generating one")
    parser.add_argument("--eval-views", type=int, default=None, help="held-out views rendered per method")
    parser.add_argument("--child", choices=["s3d", "nerfacto"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    size, views, seconds, eval_views = (64, 40, 60.0, 4) if args.quick else (128, 100, 300.0, 10)
    seconds = args.seconds or seconds
    eval_views = args.eval_views or eval_views
    threads = _threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child, args.data, seconds, threads, eval_views)), flush=True)
        return 0

    data = args.data
    if data is None:
        from scene3d.datasets.synthetic import generate_scene

        data = Path(os.environ.get("TMPDIR", "/tmp")) / f"s3d-bench-object-{size}px-{views}v"
        if not (data / "transforms.json").exists():
            print(f"generating the object scene ({views} views, {size} px) in {data} ...", flush=True)
            generate_scene("object", data, size=size, views=views, seed=0)
    print(f"scene: {data}; {seconds:.0f} s of training per method; {threads} torch thread(s); OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}", flush=True)  # fmt: skip
    print("nerfacto: implementation=torch, mixed precision off, VanillaDataManager, its LPIPS metric stubbed out "
          "(the constructor would download AlexNet weights); LPIPS not reported", flush=True)  # fmt: skip
    results = {}
    for method in ("s3d", "nerfacto"):
        load = os.getloadavg()[0]
        cmd = [sys.executable, __file__, "--child", method, "--data", str(data), "--seconds", str(seconds),
               "--threads", str(threads), "--eval-views", str(eval_views)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"{method} run failed with exit status {proc.returncode}")
        r = json.loads(lines[-1])
        r["load_before"] = load
        results[method] = r
        name = "s3d-nerf-tiny" if method == "s3d" else "nerfacto (torch)"
        print(f"{name:17s} steps={r['steps']:5d} rays/s={r['rays_per_s']:9.1f} held-out PSNR={r['psnr']:6.2f} "
              f"SSIM={r['ssim']:.3f} ({r['eval_views']} views) peak_mem={r['peak_rss_mib']:.0f} MiB "
              f"load_before={load:.1f}", flush=True)  # fmt: skip
    s, n = results["s3d"], results["nerfacto"]
    print(f"ratio_rays_per_s={s['rays_per_s'] / n['rays_per_s']:.1f} psnr_s3d={s['psnr']:.2f} psnr_nerfacto={n['psnr']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
