"""Occupancy-grid marching against a literal per-ray reference, refresh, pruning, and nerfacc (gpu)."""

from __future__ import annotations

import math

import pytest
import torch

from scene3d.renderers import occupancy
from scene3d.renderers.occupancy import OccupancyGrid, march_grid, occupied, ray_aabb_intersect

AABB = torch.tensor([-1.0, -1.0, -0.5, 1.0, 1.0, 0.5])


def random_rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    targets = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([2.0, 2.0, 1.0])
    return origins, torch.nn.functional.normalize(targets - origins, dim=-1)


def reference_march(o, d, binaries, aabbs, near, far, step, cone):
    """nerfacc's marching written as a loop per ray: t_{k+1} = t_k + clamp(c t_k, Δ, ∞), keep occupied mid-points."""
    rays, starts, ends = [], [], []
    t_in, t_out, hit = ray_aabb_intersect(o, d, aabbs[-1:])
    for r in range(o.shape[0]):
        if not bool(hit[r, 0]):
            continue
        t0, t1 = max(float(t_in[r, 0]), near), min(float(t_out[r, 0]), far)
        t = near
        while True:
            dt = min(max(t * cone, step), 1e10)
            mid = t + 0.5 * dt
            if mid >= t1:
                break
            if mid >= t0:
                p = (o[r] + d[r] * mid)[None]
                if bool(occupied(p, binaries, aabbs)[0]):
                    rays.append(r), starts.append(t), ends.append(t + dt)
            t += dt
    return torch.tensor(rays, dtype=torch.long), torch.tensor(starts, dtype=torch.float64), torch.tensor(ends, dtype=torch.float64)


def random_grid(res=(8, 8, 4), levels=1, p=0.3, seed=0) -> OccupancyGrid:
    grid = OccupancyGrid(AABB, resolution=res, levels=levels)
    g = torch.Generator().manual_seed(seed)
    grid.binaries = torch.rand(grid.binaries.shape, generator=g) < p
    return grid


@pytest.mark.parametrize("cone", [0.0, 0.05])
@pytest.mark.parametrize("levels", [1, 2])
def test_march_matches_reference(cone, levels):
    grid = random_grid(levels=levels)
    o, d = random_rays(40)
    near, far, step = 0.1, 8.0, 0.07
    ref_rays, ref_starts, ref_ends = reference_march(o.double(), d.double(), grid.binaries, grid.aabbs.double(), near, far, step, cone)
    s = march_grid(o.double(), d.double(), grid.binaries, grid.aabbs.double(), torch.full((40,), near, dtype=torch.float64),
                   torch.full((40,), far, dtype=torch.float64), step_size=step, cone_angle=cone, backend="torch")
    assert len(ref_rays) > 100
    assert torch.equal(s.ray_indices, ref_rays)
    torch.testing.assert_close(s.t_starts, ref_starts.double(), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(s.t_ends, ref_ends.double(), atol=1e-9, rtol=1e-9)


def test_march_chunks_give_the_same_samples(monkeypatch):
    grid = random_grid(p=0.6)
    o, d = random_rays(64, seed=3)
    near, far = torch.zeros(64), torch.full((64,), 9.0)
    whole = march_grid(o, d, grid.binaries, grid.aabbs, near, far, step_size=0.05, backend="torch")
    monkeypatch.setattr(occupancy, "MAX_CANDIDATES", 37)
    parts = march_grid(o, d, grid.binaries, grid.aabbs, near, far, step_size=0.05, backend="torch")
    assert torch.equal(whole.ray_indices, parts.ray_indices)
    assert torch.equal(whole.t_starts, parts.t_starts)


def test_missing_rays_and_empty_grid():
    grid = OccupancyGrid(AABB, resolution=4)
    o = torch.tensor([[5.0, 5.0, 5.0], [0.0, -3.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s = grid.sample(o, d, step_size=0.1)
    assert set(s.ray_indices.tolist()) == {1}
    grid.binaries[:] = False
    assert len(grid.sample(o, d, step_size=0.1)) == 0


def test_cascade_levels_cover_the_outer_box():
    grid = OccupancyGrid(AABB, resolution=4, levels=2)
    grid.binaries[:] = False
    grid.binaries[1] = True  # only the outer level is occupied
    inner, outer, beyond = torch.tensor([[0.1, 0.1, 0.1]]), torch.tensor([[1.5, 0.0, 0.0]]), torch.tensor([[2.5, 0, 0]])
    assert not bool(grid.query(inner)[0]) and bool(grid.query(outer)[0]) and not bool(grid.query(beyond)[0])
    torch.testing.assert_close(grid.aabbs[1], torch.tensor([-2.0, -2.0, -1.0, 2.0, 2.0, 1.0]))


def test_update_finds_a_sphere():
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=16)
    centres = grid.cell_centres().reshape(-1, 3)

    def occupancy_fn(x):
        return (x.norm(dim=-1) < 0.5).float() * 10.0

    assert grid.update(0, occupancy_fn, warmup_steps=256)
    assert not grid.update(3, occupancy_fn, interval=16)
    truth = centres.norm(dim=-1) < 0.5 - 2 / 16 * math.sqrt(3)  # cells entirely inside the sphere
    assert bool(grid.binaries.reshape(-1)[truth].all())
    far_cells = centres.norm(dim=-1) > 0.5 + 2 / 16 * math.sqrt(3)
    assert not bool(grid.binaries.reshape(-1)[far_cells].any())
    # after warm-up only part of the cells is refreshed, and decayed occupancy is kept by max
    before = grid.occs.clone()
    grid.update(512, lambda x: torch.zeros(x.shape[0]), warmup_steps=256, ema_decay=0.5)
    assert bool((grid.occs <= before).all()) and bool((grid.occs >= 0.5 * before - 1e-6).all())


def test_sampling_prunes_behind_an_opaque_wall():
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=8)
    o, d = torch.tensor([[-3.0, 0.1, 0.1]]), torch.tensor([[1.0, 0.0, 0.0]])

    def sigma_fn(t0, t1, rays):
        x = o[rays, 0] + d[rays, 0] * (t0 + t1) / 2
        return torch.where(x > 0.0, torch.full_like(x, 100.0), torch.full_like(x, 0.0))

    grid.occs.fill_(1.0)  # a well-occupied grid: the α threshold is not capped
    every = grid.sample(o, d, step_size=0.02)
    pruned = grid.sample(o, d, step_size=0.02, sigma_fn=sigma_fn, early_stop_eps=1e-4, alpha_threshold=0.01)
    assert len(every) == 100
    # α = 1 − e^{−2} per sample behind x = 0: T < 1e-4 after 5 samples, so only ~5 survive
    assert 3 <= len(pruned) <= 6
    assert float(pruned.t_starts.min()) >= 2.98


def test_capped_alpha_threshold_keeps_a_uniform_young_field():
    grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=8)
    step = 0.02
    grid.update(0, lambda x: torch.full((x.shape[0],), 0.4 * step))  # uniform σ = 0.4
    o, d = torch.tensor([[-3.0, 0.1, 0.1]]), torch.tensor([[1.0, 0.0, 0.0]])
    samples = grid.sample(o, d, step_size=step, sigma_fn=lambda a, b, r: torch.full_like(a, 0.4), alpha_threshold=0.01)
    assert len(samples) > 50


@pytest.mark.gpu(backends=("nerfacc",))
def test_nerfacc_marching_matches_torch_twin():
    grid = random_grid(res=(32, 32, 16), levels=2, p=0.2).cuda()
    o, d = random_rays(2000, seed=5)
    o, d = o.cuda(), d.cuda()
    near, far = torch.full((2000,), 0.05, device="cuda"), torch.full((2000,), 20.0, device="cuda")
    for cone in (0.0, 1 / 256):
        a = march_grid(o, d, grid.binaries, grid.aabbs, near, far, step_size=0.01, cone_angle=cone, backend="cuda-lib")
        b = march_grid(o, d, grid.binaries, grid.aabbs, near, far, step_size=0.01, cone_angle=cone, backend="torch")
        # nerfacc walks cells with a DDA in float32; the twin looks each mid-point up: they may disagree only for
        # mid-points within float32 rounding of a cell face, a tiny fraction
        key_a = set(zip(a.ray_indices.tolist(), [round(t, 3) for t in a.t_starts.tolist()]))
        key_b = set(zip(b.ray_indices.tolist(), [round(t, 3) for t in b.t_starts.tolist()]))
        assert len(key_a ^ key_b) <= 0.002 * max(len(key_a), 1)
