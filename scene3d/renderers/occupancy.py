"""Occupancy-grid empty-space skipping (Instant-NGP, Müller et al. 2022, Sec. 4; nerfacc's ``OccGridEstimator``).

A binary grid over the scene box (optionally cascades of boxes growing ×2) marks the cells that may hold density.
Rays march with a fixed step (or a step growing with distance, ``cone_angle``); a sample interval is kept when its
mid-point falls in an occupied cell. The grid is refreshed during training from the field's density as an EMA:

    occ_c ← max(γ · occ_c, σ(x_c) · Δt),   occupied_c = occ_c ≥ min(mean(occ), τ),

at all cells during warm-up and afterwards at a random quarter of the cells plus up to as many occupied ones
(nerfacc's schedule, with the fraction configurable). Optional pruning then drops samples behind opaque matter
(transmittance below ``early_stop_eps``) and near-transparent ones (``α < alpha_threshold``), after one density
evaluation without gradients.

:class:`OccupancyGrid` keeps nerfacc's buffer names and layout (``resolution``, ``aabbs``, ``occs``, ``binaries``),
so its state loads on either backend; :func:`march_grid` is the torch twin of ``nerfacc.grid.traverse_grids``
(``tests/renderers/test_occupancy.py``, ``gpu`` marker).

Example:
    >>> import torch
    >>> grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), resolution=16)
    >>> grid.binaries[:] = False                            # a new grid starts fully occupied
    >>> grid.binaries[:, 4:12, 4:12, 4:12] = True          # a cube of side 1 in the middle
    >>> o, d = torch.tensor([[-3.0, 0, 0]]), torch.tensor([[1.0, 0, 0]])
    >>> s = grid.sample(o, d, near_plane=0.0, far_plane=10.0, step_size=0.1)
    >>> round(float(s.t_starts.min()), 2), round(float(s.t_ends.max()), 2), len(s.ray_indices)
    (2.5, 3.5, 10)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from scene3d.core.backends import Backend, check_backend, use_cuda_lib
from scene3d.renderers.volume import alphas_from_densities, visibility_packed

MAX_CANDIDATES = 1 << 22
"""Largest number of candidate intervals the torch marcher holds at once (bounds its memory to ~200 MB)."""

SigmaFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``sigma_fn(t_starts, t_ends, ray_indices) -> densities``, as nerfacc's ``sampling`` takes it."""


@dataclass
class PackedSamples:
    """Intervals along rays in the packed layout: ``ray_indices`` sorted, intervals ordered along each ray."""

    ray_indices: Int[Tensor, " n"]
    t_starts: Float[Tensor, " n"]
    t_ends: Float[Tensor, " n"]
    n_rays: int

    def __len__(self) -> int:
        return int(self.ray_indices.shape[0])

    @property
    def deltas(self) -> Float[Tensor, " n"]:
        """Interval lengths ``δ``."""
        return self.t_ends - self.t_starts

    @property
    def mids(self) -> Float[Tensor, " n"]:
        """Interval mid-points (where the field is evaluated)."""
        return 0.5 * (self.t_starts + self.t_ends)

    def positions(self, origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"]) -> Float[Tensor, "n 3"]:
        """World positions of the mid-points."""
        return origins[self.ray_indices] + directions[self.ray_indices] * self.mids[:, None]

    def select(self, mask: Bool[Tensor, " n"]) -> PackedSamples:
        """The intervals where ``mask`` holds (order, and so the packed layout, preserved)."""
        return PackedSamples(self.ray_indices[mask], self.t_starts[mask], self.t_ends[mask], self.n_rays)


def ray_aabb_intersect(
    origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"], aabbs: Float[Tensor, "m 6"]
) -> tuple[Float[Tensor, "R m"], Float[Tensor, "R m"], Bool[Tensor, "R m"]]:
    """Slab test: entry and exit distances of each ray through each box, and whether it hits (ahead of it)."""
    inv = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t1 = (aabbs[None, :, :3] - origins[:, None, :]) * inv[:, None, :]
    t2 = (aabbs[None, :, 3:] - origins[:, None, :]) * inv[:, None, :]
    t_min = torch.minimum(t1, t2).amax(-1)
    t_max = torch.maximum(t1, t2).amin(-1)
    return t_min, t_max, (t_max > t_min) & (t_max > 0)


def _step_schedule(
    near: Tensor, step_size: float | int, cone_angle: float | int
) -> tuple[Callable[[Tensor, Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]:
    """Closed forms of nerfacc's marching ``t_{k+1} = t_k + clamp(c·t_k, Δ, ∞)``, ``t_0 = near``, per ray.

    Returns ``t_of(k, rays)`` (start of interval ``k``) and ``first_mid_at_or_after(t, rays)`` (the first ``k``
    whose mid-point ``t_k + dt_k / 2`` is ``≥ t``).
    """
    if cone_angle <= 0.0:

        def t_of(k: Tensor, rays: Tensor) -> Tensor:
            return near[rays] + k * step_size

        def first_k(t: Tensor, rays: Tensor) -> Tensor:
            return torch.ceil((t - near[rays]) / step_size - 0.5)

        return t_of, first_k
    # linear steps of Δ while c·t < Δ (t < Δ / c), then geometric growth t_{k+1} = (1 + c) t_k
    growth = math.log1p(cone_angle)
    n_linear = torch.ceil((step_size / cone_angle - near) / step_size).clamp_min(0.0)
    t_switch = near + n_linear * step_size

    def t_of(k: Tensor, rays: Tensor) -> Tensor:
        k_lin = n_linear[rays]
        linear = near[rays] + k * step_size
        geometric = t_switch[rays] * torch.exp((k - k_lin).clamp_min(0.0) * growth)
        return torch.where(k < k_lin, linear, geometric)

    def first_k(t: Tensor, rays: Tensor) -> Tensor:
        k_lin = n_linear[rays]
        linear = torch.ceil((t - near[rays]) / step_size - 0.5)
        # geometric mids are t_k (1 + c/2)
        ratio = (t / (t_switch[rays] * (1.0 + 0.5 * cone_angle))).clamp_min(1e-30)
        geometric = k_lin + torch.ceil(torch.log(ratio) / growth).clamp_min(0.0)
        return torch.where(linear < k_lin, linear, geometric)

    return t_of, first_k


def occupied(
    positions: Float[Tensor, "n 3"], binaries: Bool[Tensor, "m X Y Z"], aabbs: Float[Tensor, "m 6"]
) -> Bool[Tensor, " n"]:
    """Whether each point lies in an occupied cell of the finest cascade level that contains it."""
    base_min, base_max = aabbs[0, :3], aabbs[0, 3:]
    res = torch.tensor(binaries.shape[1:], device=positions.device)
    unit = (positions - base_min) / (base_max - base_min)  # base box -> [0, 1]^3
    level = torch.zeros(positions.shape[0], dtype=torch.int64, device=positions.device)
    if binaries.shape[0] > 1:
        # level l covers [0.5 - 2^(l-1), 0.5 + 2^(l-1)]: the smallest l with max |unit - 0.5| <= 2^(l-1)
        extent = (unit - 0.5).abs().amax(-1).clamp_min(1e-12)
        level = torch.ceil(torch.log2(extent) + 1.0).clamp_min(0).to(torch.int64)
    inside = level < binaries.shape[0]
    level = level.clamp_max(binaries.shape[0] - 1)
    scale = torch.exp2(level.to(positions.dtype))[:, None]
    cell_f = ((unit - 0.5) / scale + 0.5) * res
    inside &= ((cell_f >= 0) & (cell_f < res)).all(-1)
    cell = cell_f.to(torch.int64).clamp(min=torch.zeros_like(res), max=res - 1)
    flat = ((level * res[0] + cell[:, 0]) * res[1] + cell[:, 1]) * res[2] + cell[:, 2]
    return binaries.reshape(-1)[flat] & inside


def _march_grid_torch(
    origins: Tensor, directions: Tensor, binaries: Tensor, aabbs: Tensor, near_planes: Tensor, far_planes: Tensor,
    step_size: float | int, cone_angle: float | int,
) -> PackedSamples:  # fmt: skip
    n_rays, device = origins.shape[0], origins.device
    t_enter, t_exit, hit = ray_aabb_intersect(origins, directions, aabbs[-1:])
    t0 = torch.maximum(t_enter[:, 0], near_planes)
    t1 = torch.minimum(t_exit[:, 0], far_planes)
    all_rays = torch.arange(n_rays, device=device)
    t_of, first_k = _step_schedule(near_planes, step_size, cone_angle)
    k_start = first_k(t0, all_rays)
    k_end = first_k(t1, all_rays)  # exclusive: mid-points must stay < t1
    counts = torch.where(hit[:, 0] & (t1 > t0), (k_end - k_start).clamp_min(0), torch.zeros_like(k_start))
    counts = counts.to(torch.int64)
    ends = torch.cumsum(counts, 0)
    pieces = []
    first = 0
    while first < n_rays:
        # a run of rays whose candidates fit MAX_CANDIDATES (at least one ray)
        done = int(ends[first - 1]) if first > 0 else 0
        last = int(torch.searchsorted(ends, done + MAX_CANDIDATES, right=True))
        last = min(max(last, first + 1), n_rays)
        rays = torch.repeat_interleave(all_rays[first:last], counts[first:last])
        k = k_start[rays] + (torch.arange(rays.shape[0], device=device) - (ends[rays] - counts[rays]) + done)
        t_lo = t_of(k, rays)
        t_hi = t_of(k + 1, rays)
        mids = 0.5 * (t_lo + t_hi)
        keep = occupied(origins[rays] + directions[rays] * mids[:, None], binaries, aabbs)
        pieces.append((rays[keep], t_lo[keep], t_hi[keep]))
        first = last
    if not pieces:
        empty = origins.new_zeros(0)
        return PackedSamples(torch.zeros(0, dtype=torch.int64, device=device), empty, empty, n_rays)
    rays, t_lo, t_hi = (torch.cat(parts) for parts in zip(*pieces))
    return PackedSamples(rays, t_lo.to(origins.dtype), t_hi.to(origins.dtype), n_rays)


def march_grid(
    origins: Float[Tensor, "R 3"],
    directions: Float[Tensor, "R 3"],
    binaries: Bool[Tensor, "m X Y Z"],
    aabbs: Float[Tensor, "m 6"],
    near_planes: Float[Tensor, " R"],
    far_planes: Float[Tensor, " R"],
    *,
    step_size: float | int,
    cone_angle: float | int = 0.0,
    backend: Backend = "auto",
) -> PackedSamples:
    """Intervals along each ray whose mid-points fall in occupied cells (``nerfacc.grid.traverse_grids``).

    Interval ``k`` of a ray spans ``[t_k, t_{k+1})`` with ``t_0 = near`` and ``t_{k+1} = t_k + clamp(c t_k, Δ,
    ∞)`` (``c = cone_angle``, ``Δ = step_size``); it is kept when its mid-point lies inside the outermost box,
    between the near and far planes, and in an occupied cell.

    Args:
        origins: ray origins.
        directions: unit ray directions (``t`` is a distance).
        binaries: occupancy per cascade level; level ``l`` covers ``aabbs[l]``.
        aabbs: ``(xmin, ymin, zmin, xmax, ymax, zmax)`` per level, each twice the previous one about its centre.
        near_planes, far_planes: per-ray distance bounds.
        step_size: ``Δ``.
        cone_angle: ``c``; 0 for a constant step.
        backend: ``"auto"`` (nerfacc on CUDA), ``"cuda-lib"`` or ``"torch"``.
    """
    if origins.shape != directions.shape or origins.ndim != 2 or origins.shape[-1] != 3:
        raise ValueError(f"origins and directions must both have shape (R, 3), got {tuple(origins.shape)} and {tuple(directions.shape)}")
    if binaries.ndim != 4 or aabbs.shape != (binaries.shape[0], 6):
        raise ValueError(f"binaries must be (m, X, Y, Z) and aabbs (m, 6), got {tuple(binaries.shape)} and {tuple(aabbs.shape)}")
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if use_cuda_lib(backend, origins.device, "nerfacc"):
        from nerfacc.grid import traverse_grids

        intervals, samples = traverse_grids(
            origins.contiguous(), directions.contiguous(), binaries.contiguous(), aabbs.contiguous(),
            near_planes=near_planes.contiguous(), far_planes=far_planes.contiguous(), step_size=step_size,
            cone_angle=cone_angle,
        )  # fmt: skip
        return PackedSamples(
            samples.ray_indices.long(), intervals.vals[intervals.is_left], intervals.vals[intervals.is_right],
            origins.shape[0],
        )  # fmt: skip
    with torch.no_grad():
        return _march_grid_torch(
            origins, directions, binaries, aabbs, near_planes, far_planes, step_size, cone_angle
        )


class OccupancyGrid(nn.Module):
    """A (cascaded) binary occupancy grid over a box, refreshed from a density field during training.

    Args:
        aabb: the scene box, ``(6,)`` as ``(xmin, ymin, zmin, xmax, ymax, zmax)`` or ``(2, 3)``.
        resolution: cells per axis (an int, or one per axis for elongated boxes).
        levels: cascade levels; level ``l`` covers the box scaled ``2^l`` about its centre (unbounded scenes).

    A new grid is fully occupied (nerfacc's starts empty), so a model renders before its first refresh.
    """

    def __init__(self, aabb: Tensor, resolution: int | tuple[int, int, int] = 128, levels: int = 1) -> None:
        super().__init__()
        aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(-1)
        if aabb.shape != (6,) or not bool((aabb[3:] > aabb[:3]).all()):
            raise ValueError(f"aabb must hold (xmin, ymin, zmin, xmax, ymax, zmax) with max > min, got {aabb.tolist()}")
        res = (resolution,) * 3 if isinstance(resolution, int) else tuple(int(r) for r in resolution)
        if len(res) != 3 or min(res) < 1:
            raise ValueError(f"resolution must be a positive int or three of them, got {resolution!r}")
        if not 1 <= levels <= 8:
            raise ValueError(f"levels must be in [1, 8] (nerfacc's limit), got {levels}")
        centre, half = (aabb[:3] + aabb[3:]) / 2, (aabb[3:] - aabb[:3]) / 2
        aabbs = torch.stack([torch.cat([centre - half * 2**lv, centre + half * 2**lv]) for lv in range(levels)])
        self.levels = levels
        self.cells_per_level = res[0] * res[1] * res[2]
        self.register_buffer("resolution", torch.tensor(res, dtype=torch.int32))
        self.register_buffer("aabbs", aabbs)
        self.register_buffer("occs", torch.zeros(levels * self.cells_per_level))
        self.register_buffer("binaries", torch.ones(levels, *res, dtype=torch.bool))

    @property
    def occupied_fraction(self) -> float:
        """Fraction of occupied cells."""
        return float(self.binaries.float().mean())

    def capped_alpha_threshold(self, alpha_threshold: float | int) -> float:
        """``alpha_threshold`` capped at half the α of the mean cell occupancy.

        nerfacc caps it at the mean occupancy itself; but occupancy is ``σΔt`` and ``α = 1 − exp(−σΔt) < σΔt``,
        so in a nearly uniform field (right after initialisation) every sample would fall under the cap and be
        skipped. Half of the mean's α keeps the fog of a young field.
        """
        mean_alpha = -math.expm1(-float(self.occs.mean()))
        return min(alpha_threshold, 0.5 * mean_alpha)

    def query(self, positions: Float[Tensor, "n 3"]) -> Bool[Tensor, " n"]:
        """Whether points lie in occupied cells."""
        return occupied(positions, self.binaries, self.aabbs)

    def cell_centres(self, level: int = 0) -> Float[Tensor, "X Y Z 3"]:
        """World positions of the cell centres of one level."""
        res = self.resolution.tolist()
        axes = [(torch.arange(r, device=self.aabbs.device) + 0.5) / r for r in res]
        unit = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
        box = self.aabbs[level]
        return box[:3] + unit * (box[3:] - box[:3])

    @torch.no_grad()
    def update(
        self,
        step: int,
        occupancy_fn: Callable[[Tensor], Tensor],
        *,
        occ_threshold: float | int = 0.01,
        ema_decay: float | int = 0.95,
        warmup_steps: int = 256,
        interval: int = 16,
        cells_fraction: float | int = 0.25,
        chunk: int = 1 << 16,
    ) -> bool:
        """Refresh the grid every ``interval`` steps (nerfacc's ``update_every_n_steps``); returns whether it did.

        Args:
            step: the training step.
            occupancy_fn: ``positions (n, 3) -> occupancy (n,)``, typically ``σ(x) · step_size``.
            occ_threshold: ``τ``; a cell is occupied above ``min(mean occupancy, τ)``.
            ema_decay: ``γ``.
            warmup_steps: before this step every cell is evaluated at each refresh.
            interval: refresh period in steps.
            cells_fraction: after warm-up, this fraction of the cells uniformly plus as many occupied ones.
            chunk: points per ``occupancy_fn`` call.
        """
        if step % interval != 0:
            return False
        res = self.resolution.to(torch.int64)
        device = self.occs.device
        n_cells = self.cells_per_level
        for level in range(self.levels):
            if step < warmup_steps:
                cells = torch.arange(n_cells, device=device)
            else:
                n = max(1, int(n_cells * cells_fraction))
                uniform = torch.randint(n_cells, (n,), device=device)
                occupied_cells = torch.nonzero(self.binaries[level].reshape(-1))[:, 0]
                if occupied_cells.numel() > n:
                    occupied_cells = occupied_cells[torch.randint(occupied_cells.numel(), (n,), device=device)]
                cells = torch.cat([uniform, occupied_cells])
            coords = torch.stack([cells // (res[1] * res[2]), (cells // res[2]) % res[1], cells % res[2]], -1)
            unit = (coords + torch.rand(coords.shape, device=device)) / res
            box = self.aabbs[level]
            points = box[:3] + unit * (box[3:] - box[:3])
            occ = torch.cat([occupancy_fn(part).reshape(-1) for part in points.split(chunk)])
            ids = level * n_cells + cells
            self.occs[ids] = torch.maximum(self.occs[ids] * ema_decay, occ.to(self.occs.dtype))
        threshold = torch.clamp(self.occs.mean(), max=occ_threshold)
        # `>=` where nerfacc has `>`: a perfectly uniform field (all cells at the mean) stays occupied instead of
        # becoming empty, which would stop all rendering and so all learning
        self.binaries = (self.occs >= threshold).view(self.binaries.shape)
        return True

    def sample(
        self,
        origins: Float[Tensor, "R 3"],
        directions: Float[Tensor, "R 3"],
        *,
        near_plane: float | int = 0.0,
        far_plane: float | int = 1e10,
        step_size: float | int = 1e-3,
        cone_angle: float | int = 0.0,
        stratified: bool = False,
        sigma_fn: SigmaFn | None = None,
        early_stop_eps: float | int = 1e-4,
        alpha_threshold: float | int = 0.0,
        t_min: Float[Tensor, " R"] | None = None,
        t_max: Float[Tensor, " R"] | None = None,
        backend: Backend = "auto",
    ) -> PackedSamples:
        """March rays through the grid (nerfacc's ``OccGridEstimator.sampling``, same arguments and meaning).

        With ``sigma_fn`` the kept intervals are pruned once more after evaluating their density without
        gradients: those with transmittance below ``early_stop_eps`` and those with ``α < alpha_threshold``
        (capped, see :meth:`capped_alpha_threshold`, so a young, nearly uniform field still yields samples).
        ``stratified`` jitters each ray's start by up to one step (training).
        """
        check_backend(backend)
        near = torch.full_like(origins[:, 0], near_plane)
        far = torch.full_like(origins[:, 0], far_plane)
        if t_min is not None:
            near = torch.maximum(near, t_min)
        if t_max is not None:
            far = torch.minimum(far, t_max)
        if stratified:
            near = near + torch.rand_like(near) * step_size
        samples = march_grid(
            origins, directions, self.binaries, self.aabbs, near, far,
            step_size=step_size, cone_angle=cone_angle, backend=backend,
        )  # fmt: skip
        if sigma_fn is not None and len(samples) > 0 and (alpha_threshold > 0.0 or early_stop_eps > 0.0):
            alpha_threshold = self.capped_alpha_threshold(alpha_threshold)
            with torch.no_grad():
                sigmas = sigma_fn(samples.t_starts, samples.t_ends, samples.ray_indices)
                if sigmas.shape != samples.t_starts.shape:
                    raise ValueError(f"sigma_fn must return shape ({len(samples)},), got {tuple(sigmas.shape)}")
                alphas = alphas_from_densities(sigmas, samples.deltas)
                keep = visibility_packed(
                    alphas, samples.ray_indices, samples.n_rays,
                    early_stop_eps=early_stop_eps, alpha_threshold=alpha_threshold,
                )  # fmt: skip
            samples = samples.select(keep)
        return samples
