"""Train epigraf-tiny on a synthetic collection on the CPU and measure what EpiGRAF claims.

    .venv/bin/python benchmarks/epigraf_cpu.py [--quick] [--data DIR] [--iterations N] [--out DIR]

1. Distribution distance between generated and real images over training. FID and KID with Inception-v3 when its
   torchvision weights are already in the torch hub cache (never downloaded); always a sliced Wasserstein distance
   (SWD) on image patches: 7×7 patches of a Laplacian pyramid (64², 32², 16²), as in Karras et al. 2018 (PGGAN),
   except that both sets are normalised with the real set's statistics so colour shifts count. ×10³, lower is
   better. Generated images are full renders of the EMA generator at random dataset poses (fixed across the run).
2. Multi-view consistency: two views 20° apart of the same generated instance; view B is warped into view A
   through A's rendered depth and compared photometrically (mean |Δ| in 8-bit levels over pixels both views see).
   References: the same warp on the dataset's own renders with their ground-truth depth, and the error without
   warping.
3. Patch-wise training cost: wall time per image of one training iteration (G and D phases, no R1) rendering
   r × r patches against rendering and discriminating the full R × R image (r = R, D at full resolution), measured
   alternately in this process. EpiGRAF's point is a cost ~ (R/r)² lower.

Last line: ``swd_start=<x> swd_end=<y> patch_speedup=<z>``. Sample grids and the training curve are written to
``--out``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scene3d.core.cameras import pinhole_rays
from scene3d.methods.epigraf.gan import Views, render_patches
from scene3d.methods.epigraf.patches import PatchParams
from scene3d.core.cameras import camera_angles, orbit_c2w

# ------------------------------------------------------------------------------------------------------- SWD


def _laplacian_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    pyramid, current = [], images
    for _ in range(levels - 1):
        down = F.avg_pool2d(current, 2)
        pyramid.append(current - F.interpolate(down, scale_factor=2, mode="bilinear", align_corners=False))
        current = down
    pyramid.append(current)
    return pyramid


def _patch_descriptors(level: torch.Tensor, per_image: int, gen: torch.Generator, size: int = 7) -> torch.Tensor:
    n, c, h, w = level.shape
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=gen)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=gen)
    patches = level.unfold(2, size, 1).unfold(3, size, 1)  # (n, c, h', w', size, size)
    idx = torch.arange(n)[:, None]
    desc = patches.permute(0, 2, 3, 1, 4, 5)[idx, ys, xs]  # (n, per_image, c, size, size)
    return desc.reshape(n * per_image, c, size * size)


def swd(real: torch.Tensor, fake: torch.Tensor, *, seed: int = 0, per_image: int = 64, levels: int = 3,
        directions: int = 256) -> float:
    """Sliced Wasserstein distance ×10³ between 7×7 Laplacian-pyramid patches of two image sets in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for lr, lf in zip(_laplacian_pyramid(real, levels), _laplacian_pyramid(fake, levels)):
        dr = _patch_descriptors(lr, per_image, gen)
        df = _patch_descriptors(lf, per_image, gen)
        mean = dr.mean(dim=(0, 2), keepdim=True)
        std = dr.std(dim=(0, 2), keepdim=True).clamp_min(1e-6)
        dr = ((dr - mean) / std).flatten(1)
        df = ((df - mean) / std).flatten(1)
        n = min(len(dr), len(df))
        dirs = torch.randn(dr.shape[1], directions, generator=gen)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pr = torch.sort(dr[:n] @ dirs, dim=0).values
        pf = torch.sort(df[:n] @ dirs, dim=0).values
        total += float((pr - pf).abs().mean())
    return 1e3 * total / levels


# ---------------------------------------------------------------------------------------------- FID / KID


def inception_features_fn():  # noqa: ANN201
    """A function images [0,1] → 2048-d Inception-v3 pool features, or None when the weights are not cached."""
    import torchvision

    weights = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        return None
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
    net.fc = torch.nn.Identity()
    net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]

    @torch.no_grad()
    def features(images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        return torch.cat([net((x[i : i + 16] - mean) / std) for i in range(0, len(x), 16)])

    return features


def fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    eig = torch.linalg.eigvals(ca @ cb).real.clamp_min(0)
    return float((mu_a - mu_b).square().sum() + ca.trace() + cb.trace() - 2 * eig.sqrt().sum())


def kid(a: torch.Tensor, b: torch.Tensor) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (Bińkowski et al. 2018)."""
    a, b = a.double(), b.double()
    d = a.shape[1]
    k = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    m, n = len(a), len(b)
    kaa, kbb, kab = k(a, a), k(b, b), k(a, b)
    return float((kaa.sum() - kaa.diag().sum()) / (m * (m - 1)) + (kbb.sum() - kbb.diag().sum()) / (n * (n - 1)) - 2 * kab.mean())


# ---------------------------------------------------------------------------------------------- rendering


@torch.no_grad()
def render_full(model, z: torch.Tensor, views: Views, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """EMA-generator renders in [0, 1], with depth and opacity, of latents ``z`` from ``views``."""
    G = model.generator_ema
    out_img, out_depth, out_opacity = [], [], []
    for i in range(0, len(z), 8):
        sub = Views(views.c2w[i : i + 8], views.K[i : i + 8], views.near[i : i + 8], views.far[i : i + 8])
        planes = G.planes(z[i : i + 8], None, noise_mode="const")
        r = render_patches(
            G, planes, sub, PatchParams.full(len(sub.c2w)), image_size=size, patch_resolution=size,
            cube_scale=model.cube_scale, rays=model.ray_settings(0, training=False),
        )
        out_img.append(((r.images + 1) / 2).clamp(0, 1))
        out_depth.append(r.depth)
        out_opacity.append(r.opacity)
    return torch.cat(out_img), torch.cat(out_depth), torch.cat(out_opacity)


def warp_error(img_a, depth_a, valid_a, c2w_a, img_b, depth_b, c2w_b, K, size: int) -> float:  # noqa: ANN001
    """Mean |A − B warped into A| (8-bit levels) over pixels of A whose surface point B sees unoccluded.

    ``depth_*`` are distances along the (unit) rays.
    """
    o, d = pinhole_rays(c2w_a, K, size, size)
    pts = o + d * depth_a[..., None]  # (H, W, 3)
    w2c = torch.linalg.inv(c2w_b)
    cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
    zc = -cam[..., 2]
    u = K[0, 0] * cam[..., 0] / zc + K[0, 2]
    v = -K[1, 1] * cam[..., 1] / zc + K[1, 2]
    grid = torch.stack([u / size * 2 - 1, v / size * 2 - 1], dim=-1)[None]
    warped = F.grid_sample(img_b[None], grid, align_corners=False)[0]
    depth_at = F.grid_sample(depth_b[None, None], grid, align_corners=False)[0, 0]
    dist_b = (pts - c2w_b[:3, 3]).norm(dim=-1)
    inside = (u > 0.5) & (u < size - 0.5) & (v > 0.5) & (v < size - 0.5) & (zc > 0)
    visible = (depth_at - dist_b).abs() < 0.02
    mask = valid_a & inside & visible
    if int(mask.sum()) < 10:
        return float("nan")
    return float((img_a - warped).abs().mean(dim=0)[mask].mean() * 255)


def generated_consistency(model, info, seeds: int, size: int) -> tuple[float, float]:  # noqa: ANN001
    """(warped error, unwarped error on the same pixels) for ``seeds`` instances seen from two views 20° apart."""
    pitch = float(camera_angles(info.c2w)[:, 1].mean())
    radius = float(info.c2w[:, :3, 3].norm(dim=-1).mean())
    K = info.intrinsics[0]
    errs, raw = [], []
    gen = torch.Generator().manual_seed(123)
    for s in range(seeds):
        yaw = float(torch.rand(1, generator=gen) * 2 * math.pi - math.pi)
        c2w = orbit_c2w(torch.tensor([yaw, yaw + math.radians(20)]), torch.full((2,), pitch), radius)
        views = Views(c2w, K.expand(2, 3, 3), info.near[:2].clone(), info.far[:2].clone())
        z = torch.randn(1, model.config.z_dim, generator=torch.Generator().manual_seed(1000 + s)).expand(2, -1)
        img, depth, opacity = render_full(model, z, views, size)
        mask = opacity[0] > 0.5
        errs.append(warp_error(img[0], depth[0], mask, c2w[0], img[1], depth[1], c2w[1], K, size))
        if bool(mask.any()):  # the same pixels compared without warping: what the warp has to explain
            raw.append(float((img[0] - img[1]).abs().mean(dim=0)[mask].mean() * 255))
    return float(np.nanmean(errs)), float(np.mean(raw)) if raw else float("nan")


def dataset_consistency(info, pairs: int, max_angle_deg: float = 40.0) -> tuple[float, float]:  # noqa: ANN001
    """The same warp error on the dataset's own renders with ground-truth depth: (mean error, mean angle).

    Uses pairs of views of one instance at most ``max_angle_deg`` apart (the generated pairs are 20° apart).
    """
    import itertools
    import json

    from PIL import Image

    meta = json.loads(info.description.read_text())
    by_name = {f["file_path"]: f for f in meta["frames"]}
    if info.instance_ids is None or "depth_file_path" not in next(iter(by_name.values())):
        return float("nan"), float("nan")
    size = info.resolution
    ids = info.instance_ids.tolist()
    groups: dict[int, list[int]] = {}
    for i, inst in enumerate(ids):
        groups.setdefault(inst, []).append(i)

    def load(i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img = info.load_image(i).float() / 255
        zdepth = np.asarray(Image.open(info.root / by_name[info.names[i]]["depth_file_path"]), dtype=np.float64) * 1e-3
        _, d = pinhole_rays(info.c2w[i], info.intrinsics[i], size, size)
        forward = -info.c2w[i, :3, 2]
        dist = torch.from_numpy(zdepth).float() * info.world_scale / (d @ forward).clamp_min(1e-6)
        return img, dist, torch.from_numpy(zdepth > 0)

    errs, angles = [], []
    for members in groups.values():
        for a, b in itertools.combinations(members, 2):
            pa, pb = info.c2w[a, :3, 3], info.c2w[b, :3, 3]
            cosine = float((pa @ pb) / (pa.norm() * pb.norm()))
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
            if angle > max_angle_deg:
                continue
            (ia, da, va), (ib, db, _) = load(a), load(b)
            errs.append(warp_error(ia, da, va, info.c2w[a], ib, db, info.c2w[b], info.intrinsics[a], size))
            angles.append(angle)
            break
        if len(errs) >= pairs:
            break
    if not errs:
        return float("nan"), float("nan")
    return float(np.nanmean(errs)), float(np.mean(angles))


# ---------------------------------------------------------------------------------------------- training


def build(data: Path, patch_resolution: int | None, batch: int | None):  # noqa: ANN201
    """epigraf-tiny's pipeline and optimizers (optionally at another patch resolution or batch)."""
    from nerfstudio.engine.optimizers import Optimizers

    from scene3d.methods.epigraf.config import epigraf_tiny_config

    cfg = epigraf_tiny_config()
    cfg.pipeline.datamanager.data = data
    if batch is not None:
        cfg.pipeline.datamanager.images_per_batch = batch
    if patch_resolution is not None:
        cfg.pipeline.model.patch_resolution = patch_resolution
    pipe = cfg.pipeline.setup(device="cpu", test_mode="val")
    return cfg, pipe, Optimizers(cfg.optimizers, pipe.get_param_groups())


def time_per_image(pipe_opts: dict[str, tuple], reps: int, batch: int) -> dict[str, tuple[float, float]]:  # noqa: ANN001
    """Median (wall, process CPU) seconds per image of a training iteration (no R1 step), measured alternately."""
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in pipe_opts}
    step = 1
    for _ in range(reps):
        for name, (pipe, opt) in pipe_opts.items():
            if step % 16 == 0:
                step += 1
            wall, cpu = time.perf_counter(), time.process_time()
            pipe.train_iteration(step, opt, None)
            times[name].append(((time.perf_counter() - wall) / batch, (time.process_time() - cpu) / batch))
        step += 1
    out = {}
    for name, values in times.items():
        values = values[1:]  # the first iteration of a fresh pipeline warms up allocators
        out[name] = (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
    return out


def save_grid(images: torch.Tensor, path: Path, cols: int = 8) -> None:
    from PIL import Image

    n = len(images) // cols * cols
    x = (images[:n] * 255).round().byte().permute(0, 2, 3, 1).numpy()
    rows = [np.concatenate(list(x[i : i + cols]), axis=1) for i in range(0, n, cols)]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute of training)")
    parser.add_argument("--data", type=Path, default=None, help="an existing collection (default: generate one)")
    parser.add_argument("--iterations", type=int, default=None, help="training iterations (default 600, quick 150)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "epigraf_cpu_benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared CPU, threads waiting on each other dominate)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    iterations = args.iterations or (150 if args.quick else 600)
    evals = 3 if args.quick else 6
    n_eval = 64 if args.quick else 128
    threads = torch.get_num_threads()

    data = args.data
    if data is None:
        from scene3d.datasets.synthetic import generate_scene

        data = args.out / "collection"
        if not (data / "transforms.json").is_file():
            t = time.perf_counter()
            generate_scene("collection", data, size=64, instances=120 if args.quick else 200, views=4, seed=args.seed)
            print(f"generated the synthetic collection in {time.perf_counter() - t:.1f} s: {data}")
    cfg, pipe, opt = build(data, None, None)
    batch = cfg.pipeline.datamanager.images_per_batch
    model, info = pipe.model, pipe.datamanager.collection
    size, r = info.resolution, cfg.pipeline.model.patch_resolution
    print(f"epigraf-tiny on {len(info)} images of {size}x{size}; patches {r}x{r}; batch {batch}; "
          f"{iterations} iterations; CPU, {threads} torch threads; load average {_load()}")

    # fixed evaluation set: latents, poses and real images
    g = torch.Generator().manual_seed(args.seed + 1)
    z_eval = torch.randn(n_eval, model.config.z_dim, generator=g)
    pose_idx = torch.randint(len(info), (n_eval,), generator=g)
    views_eval = Views(info.c2w[pose_idx], info.intrinsics[pose_idx], info.near[pose_idx], info.far[pose_idx])
    real_idx = torch.randperm(len(info), generator=g)[:n_eval]
    real = torch.stack([info.load_image(int(i)) for i in real_idx]).float() / 255
    inception = inception_features_fn()
    real_feats = inception(real) if inception is not None else None
    if inception is None:
        print("Inception-v3 weights not in the torch hub cache: FID/KID skipped, sliced Wasserstein distance only")

    def evaluate(step: int) -> dict[str, float]:
        fake, _, _ = render_full(model, z_eval, views_eval, size)
        row = {"step": step, "swd": swd(real, fake, seed=args.seed)}
        if inception is not None:
            ff = inception(fake)
            row.update(fid=fid(real_feats, ff), kid=kid(real_feats, ff))
        return row

    checkpoints = sorted({round(iterations * k / evals) for k in range(1, evals + 1)})
    curve = [evaluate(0)]
    save_grid(render_full(model, z_eval[:32], Views(*[t[:32] for t in (views_eval.c2w, views_eval.K, views_eval.near, views_eval.far)]), size)[0], args.out / "samples_start.png")
    print(_fmt(curve[-1]))
    t0 = time.perf_counter()
    for step in range(iterations):
        pipe.train_iteration(step, opt, None)
        if step + 1 in checkpoints:
            curve.append(evaluate(step + 1))
            print(_fmt(curve[-1]) + f"  ({time.perf_counter() - t0:.0f} s of training)")
    train_s = time.perf_counter() - t0
    save_grid(render_full(model, z_eval[:32], Views(*[t[:32] for t in (views_eval.c2w, views_eval.K, views_eval.near, views_eval.far)]), size)[0], args.out / "samples_end.png")
    save_grid(real[:32], args.out / "real.png")
    with open(args.out / "curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(curve[-1]))
        writer.writeheader()
        writer.writerows(curve)

    warped, unwarped = generated_consistency(model, info, 8, size)
    reference, ref_angle = dataset_consistency(info, 16)
    print(f"multi-view consistency (mean |A - warp(B)|, 8-bit levels): generated, views 20 deg apart: {warped:.2f} "
          f"(unwarped {unwarped:.2f}); dataset renders with ground-truth depth, views {ref_angle:.0f} deg apart "
          f"on average: {reference:.2f}")

    # patch-wise vs full-resolution training cost, same process, alternating
    _, full_pipe, full_opt = build(data, size, batch)
    reps = 5 if args.quick else 9
    per_image = time_per_image({"patch": (pipe, opt), "full": (full_pipe, full_opt)}, reps, batch)
    speedup = per_image["full"][0] / per_image["patch"][0]
    cpu_speedup = per_image["full"][1] / per_image["patch"][1]
    target = (size / r) ** 2 / 2
    print(f"training time per image (median of {reps - 1}): patch {r}x{r} {per_image['patch'][0] * 1e3:.1f} ms wall "
          f"({per_image['patch'][1] * 1e3:.1f} ms CPU), full {size}x{size} {per_image['full'][0] * 1e3:.1f} ms wall "
          f"({per_image['full'][1] * 1e3:.1f} ms CPU) -> patch-wise {speedup:.1f}x cheaper in wall time, "
          f"{cpu_speedup:.1f}x in CPU time (target >= (R/r)^2/2 = {target:.0f})")
    print(f"training: {iterations} iterations in {train_s:.0f} s; outputs in {args.out}")
    print(f"swd_start={curve[0]['swd']:.2f} swd_end={curve[-1]['swd']:.2f} patch_speedup={speedup:.2f}")
    return 0


def _fmt(row: dict[str, float]) -> str:
    return "step {:>5}: ".format(row["step"]) + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "step")


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
