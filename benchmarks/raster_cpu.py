"""CPU timings of scene3d's torch Gaussian rasterizer (``rasterize(..., backend="torch")``).

    .venv/bin/python benchmarks/raster_cpu.py [--quick] [--threads N]

For N in {10k, 100k, 1M} Gaussians at 256² and 512² it prints forward and forward+backward milliseconds (median
of the repeats), and the speed-up over the dense brute-force reference (every Gaussian against every pixel,
``scene3d.renderers.gaussians_reference``). The dense reference only fits in memory for a subset of the
Gaussians: it is timed on ``n_dense`` of them (the fast path too, on the same subset: "measured" speed-up) and its
time, exactly linear in N, scaled to the full N ("extrapolated" speed-up). The column "CPU/100k·256²" is the
forward+backward CPU time divided by N/100k and by the image area over 256²: constant when the cost grows linearly in
Gaussians and in pixels. "f+b CPU ms" is the process CPU time (all threads) of the forward+backward pass: on a
shared machine it shows the work done when the wall time mostly shows the wait. The last line is
``fwd_bwd_ms_100k_256=<x> speedup_vs_dense=<y>`` (y: extrapolated, 100k at 256²).

Scene (``random_gaussians``): means uniform in [-1, 1]³ seen from 2.5 units with a 60° field of view (the cube
fills the image), log-uniform scales 0.005-0.03, opacities 0.1-0.9, SH degree 3, random rotations; the loss is
a fixed random linear function of colour and alpha. The projected size of a Gaussian grows with the image, so
per-pixel work is the same at both sizes.

libgomp's threads spin while they wait; on a shared, oversubscribed CPU that costs several times the work itself,
so this script sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it. Timings on a shared machine are
noisy: the load average before and after is printed with the table.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import argparse  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from scene3d.renderers.gaussians import rasterize  # noqa: E402
from scene3d.renderers.gaussians_reference import random_gaussians, rasterize_reference  # noqa: E402

ARGS = ("means", "quats", "scales", "opacities", "colors")
DENSE_BUDGET = 2.0e7
"""Largest Gaussians × pixels the dense reference is timed on (its autograd graph holds ~10 such tensors)."""


def _time(fn, scene, size: int, repeats: int, backward: bool) -> tuple[float, float]:
    """Median wall and process-CPU milliseconds of ``fn`` (and its backward) over ``repeats`` runs after a warm-up."""
    g = torch.Generator().manual_seed(1)
    w = torch.randn(1, size, size, 3, generator=g)
    wall, cpu = [], []
    for i in range(repeats + 1):
        inputs = {k: (v.detach().requires_grad_(backward) if k in ARGS else v) for k, v in scene.items()}
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.set_grad_enabled(backward):
            rgb, alpha = fn(**inputs, width=size, height=size, sh_degree=3)[:2]
            if backward:
                ((rgb * w).sum() + alpha.sum()).backward()
        if i:
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def _fast(**kw):
    return rasterize(**kw, backend="torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one timed repeat, dense reference on fewer Gaussians")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    budget = DENSE_BUDGET / (4 if args.quick else 1)
    load0 = os.getloadavg()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"{os.cpu_count()} CPUs, load average {load0[0]:.2f}"
    )
    header = (
        f"{'N':>9} {'size':>5} {'fwd ms':>9} {'fwd+bwd ms':>11} {'f+b CPU ms':>11} {'CPU/100k·256²':>13} "
        f"{'n_dense':>8} {'dense f+b':>10} {'fast f+b':>9} {'measured':>9} {'extrap.':>9}"
    )
    print(header)
    print("-" * len(header))
    last = {}
    for size in (256, 512):
        for n in (10_000, 100_000, 1_000_000):
            scene = random_gaussians(n, size, size, sh_degree=3, seed=0)
            fwd, _ = _time(_fast, scene, size, repeats, backward=False)
            both, both_cpu = _time(_fast, scene, size, repeats, backward=True)
            n_dense = int(min(n, budget // (size * size)))
            sub = random_gaussians(n_dense, size, size, sh_degree=3, seed=0)
            dense, _ = _time(rasterize_reference, sub, size, repeats, backward=True)
            fast_sub, _ = _time(_fast, sub, size, repeats, backward=True)
            extrapolated = dense * n / n_dense / both
            # fwd+bwd CPU ms per 100k Gaussians per 256² of image: constant if the cost is linear in both (CPU time:
            # on a shared machine it moves far less with the load than the wall time does)
            per = both_cpu / (n / 1e5) / (size * size / 256**2)
            print(
                f"{n:>9,} {size:>5} {fwd:>9.1f} {both:>11.1f} {both_cpu:>11.1f} {per:>13.1f} "
                f"{n_dense:>8,} {dense:>10.1f} {fast_sub:>9.1f} {dense / fast_sub:>8.1f}x {extrapolated:>8.0f}x"
            )
            if n == 100_000 and size == 256:
                last = {"fwd_bwd": both, "speedup": extrapolated}
    load1 = os.getloadavg()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"load average {load0[0]:.2f} -> {load1[0]:.2f}; peak RSS {peak:.2f} GiB")
    print(f"fwd_bwd_ms_100k_256={last['fwd_bwd']:.1f} speedup_vs_dense={last['speedup']:.0f}")


if __name__ == "__main__":
    main()
