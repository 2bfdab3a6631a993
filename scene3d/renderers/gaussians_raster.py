"""Tile-based front-to-back alpha compositing of projected 2D Gaussians, in pure torch, with a hand-written backward.

This is the last stage of :func:`scene3d.renderers.gaussians.rasterize` on its torch backend. Per pixel ``p`` and
the Gaussians ``i`` sorted front to back (gsplat 1.4.0's ``rasterize_to_pixels`` conventions):

    σ_i = ½ (a dx² + c dy²) + b dx dy,    d = μ_i − (p + 0.5),    α_i = min(0.999, o_i exp(−σ_i)),
    a Gaussian with σ_i < 0 or α_i < 1/255 is skipped,
    T_i = ∏_{j<i} (1 − α_j),   C = Σ_i T_i α_i c_i,   A = 1 − T_final,

and compositing stops at the first Gaussian that would bring ``T`` to ``<= 1e-4`` (that Gaussian is excluded).

How it is computed:

* **Binning.** Each Gaussian is paired with the ``tile_size``² pixel tiles its footprint touches. The footprint is
  the intersection of gsplat's (the pixels of the 16-px tiles its 3σ-radius box touches, which gsplat evaluates)
  with the exact bounding box of the region where ``α >= 1/255`` (half-widths ``sqrt(2 ln(255 o) Σ_xx)``), so no
  pixel gsplat would blend is dropped and most that it would skip are never evaluated. Pairs are sorted once by
  the key ``tile << 32 | float32 depth bits`` (stable, so equal depths keep index order, as gsplat's radix sort).
* **Rounds.** Tiles are processed together, ``batch`` Gaussians per tile per round, as dense ``[tiles, batch,
  pixels]`` blocks: transmittance is ``exp`` of an exclusive cumulative sum of ``log(1 − α)`` along the batch, carried
  across rounds; a pixel is done once the running sum drops to ``log(1e-4)``, a tile once all its pixels are.
  Memory is bounded by splitting a round's tiles into chunks of at most ``max_block`` elements.
* **Backward** (``torch.autograd.Function``) replays the same rounds front to back, recomputing ``α``, and uses
  ``∂L/∂α_i = T_i (c_i·g) − (S_after_i − T_final g_A) / (1 − α_i)`` where ``S_after_i`` (the colour behind ``i``
  dotted with the output gradient) is the pixel's total minus a running prefix sum. Nothing per pair is stored.
  Like gsplat, no gradient flows through ``α`` where ``o exp(−σ) > 0.999``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
LOG_T_MIN = math.log(T_MIN)
GSPLAT_TILE = 16
"""The tile size gsplat 1.4.0 bins with: the set of pixels it evaluates per Gaussian depends on it."""


@dataclass
class TileBins:
    """Gaussian/tile pairs sorted front to back within each tile (tiles of all cameras in one index space)."""

    tile_size: int
    tiles_x: int
    tiles_y: int
    n_cameras: int
    gauss: Int[Tensor, " M"]
    """Index into the visible-Gaussian arrays, per pair, sorted by (camera, tile, depth)."""
    start: Int[Tensor, " T"]
    """First pair of each tile (``T = n_cameras · tiles_y · tiles_x``)."""
    count: Int[Tensor, " T"]
    """Number of pairs of each tile."""


@torch.no_grad()
def bin_gaussians(
    means2d: Float[Tensor, "V 2"],
    covars2d: Float[Tensor, "V 3"],
    opacities: Float[Tensor, " V"],
    radii: Int[Tensor, " V"],
    depths: Float[Tensor, " V"],
    camera_ids: Int[Tensor, " V"],
    n_cameras: int,
    width: int,
    height: int,
    tile_size: int,
) -> TileBins:
    """Pair visible Gaussians with the tiles their footprint touches (see the module docstring), sorted by depth."""
    device = means2d.device
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    mx, my = means2d[:, 0], means2d[:, 1]
    r = radii.to(means2d.dtype)
    # gsplat's box: whole 16-px tiles overlapping the radius box, clamped to the image.
    g16x, g16y = -(-width // GSPLAT_TILE), -(-height // GSPLAT_TILE)
    x_lo = torch.floor((mx - r) / GSPLAT_TILE).clamp(0, g16x) * GSPLAT_TILE
    x_hi = (torch.ceil((mx + r) / GSPLAT_TILE).clamp(0, g16x) * GSPLAT_TILE).clamp(max=width)
    y_lo = torch.floor((my - r) / GSPLAT_TILE).clamp(0, g16y) * GSPLAT_TILE
    y_hi = (torch.ceil((my + r) / GSPLAT_TILE).clamp(0, g16y) * GSPLAT_TILE).clamp(max=height)
    # The box of pixel centres with α >= 1/255: σ <= τ = ln(255 o)  <=>  |dx| <= sqrt(2 τ Σ_xx). A small margin
    # keeps it conservative under rounding; pixels in it are still tested against 1/255 when blended.
    tau = torch.log((opacities * 255.0).clamp_min(1e-30))
    seen = tau >= 0
    half_x = torch.sqrt(2.0 * tau.clamp_min(0) * covars2d[:, 0]) * 1.001 + 0.01
    half_y = torch.sqrt(2.0 * tau.clamp_min(0) * covars2d[:, 2]) * 1.001 + 0.01
    x_lo = torch.maximum(x_lo, torch.ceil(mx - half_x - 0.5))
    x_hi = torch.minimum(x_hi, torch.floor(mx + half_x - 0.5) + 1)
    y_lo = torch.maximum(y_lo, torch.ceil(my - half_y - 0.5))
    y_hi = torch.minimum(y_hi, torch.floor(my + half_y - 0.5) + 1)
    seen &= (x_hi > x_lo) & (y_hi > y_lo)
    tx0 = torch.div(x_lo, tile_size, rounding_mode="floor").long()
    tx1 = torch.div(x_hi - 1, tile_size, rounding_mode="floor").long() + 1
    ty0 = torch.div(y_lo, tile_size, rounding_mode="floor").long()
    ty1 = torch.div(y_hi - 1, tile_size, rounding_mode="floor").long() + 1
    nx = torch.where(seen, tx1 - tx0, torch.zeros_like(tx0))
    ny = torch.where(seen, ty1 - ty0, torch.zeros_like(ty0))
    counts = nx * ny
    n_tiles = n_cameras * tiles_x * tiles_y
    total = int(counts.sum())
    if total == 0:
        empty = torch.zeros(n_tiles, dtype=torch.long, device=device)
        return TileBins(tile_size, tiles_x, tiles_y, n_cameras, torch.zeros(0, dtype=torch.long, device=device), empty, empty)
    gauss = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(total, device=device) - first[gauss]
    nx_g = nx[gauss]
    tile = (
        camera_ids.long()[gauss] * (tiles_x * tiles_y)
        + (ty0[gauss] + local // nx_g) * tiles_x
        + (tx0[gauss] + local % nx_g)
    )
    # Positive float32 depths sort like their bit patterns read as integers.
    depth_bits = depths.float().contiguous().view(torch.int32).long()
    key = (tile << 32) | depth_bits[gauss]
    key, order = torch.sort(key, stable=True)
    count = torch.bincount(tile, minlength=n_tiles)
    start = torch.cumsum(count, 0) - count
    return TileBins(tile_size, tiles_x, tiles_y, n_cameras, gauss[order], start, count)


@dataclass
class _Schedule:
    """The rounds the forward pass ran, replayed by the backward pass."""

    batches: list[int]
    """Gaussians per tile in each round (``batch``, or fewer when no tile has that many left)."""
    rounds: Int[Tensor, " T"]
    """How many rounds each tile took part in."""


def _pixel_basis(tile_size: int, like: Tensor) -> Tensor:
    """``[6, P]`` monomials ``(1, x, y, x², y², xy)`` of each pixel centre relative to its tile's centre."""
    r = torch.arange(tile_size, device=like.device, dtype=like.dtype) + 0.5 - 0.5 * tile_size
    x, y = r.repeat(tile_size), r.repeat_interleave(tile_size)
    return torch.stack([torch.ones_like(x), x, y, x * x, y * y, x * y])


def _tile_centres(bins: TileBins, tiles: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Pixel coordinates of the centre of each tile in ``tiles``: ``[A]`` each."""
    in_cam = tiles % (bins.tiles_x * bins.tiles_y)
    half = 0.5 * bins.tile_size
    return (
        ((in_cam % bins.tiles_x) * bins.tile_size).to(dtype) + half,
        ((in_cam // bins.tiles_x) * bins.tile_size).to(dtype) + half,
    )


class _Block:
    """One chunk of one round: ``A`` tiles × ``B`` Gaussians × ``P`` pixels, with α recomputed from the inputs.

    ``log(o) − σ`` is a quadratic in the pixel's offset ``(x, y)`` from the tile centre, so for all pixels at once it
    is one matrix product ``K [A, B, 6] @ basis [6, P]``: with ``(u, v) = μ − tile centre`` (so ``d = (u − x, v − y)``),

        log o − σ = (log o − ½a u² − ½c v² − b u v) + (a u + b v) x + (c v + b u) y − ½a x² − ½c y² − b x y.

    Padding slots (a tile with fewer than ``B`` Gaussians left) get ``log o = −inf``, so ``α = 0`` there.
    """

    def __init__(self, bins: TileBins, tiles: Tensor, first: int, batch: int, means2d, conics, opacities, basis):
        count = bins.count[tiles]
        j = torch.arange(batch, device=tiles.device)
        valid = (first + j)[None, :] < count[:, None]  # [A, B]
        pair = (bins.start[tiles][:, None] + first + j[None, :]).clamp(max=max(len(bins.gauss) - 1, 0))
        self.gauss = torch.where(valid, bins.gauss[pair], torch.zeros_like(pair))  # [A, B]
        cx, cy = _tile_centres(bins, tiles, means2d.dtype)
        mean = means2d[self.gauss]
        self.u, self.v = mean[..., 0] - cx[:, None], mean[..., 1] - cy[:, None]  # [A, B]
        con = conics[self.gauss]
        self.a, self.b, self.c = con[..., 0], con[..., 1], con[..., 2]
        u, v, a, b, c = self.u, self.v, self.a, self.b, self.c
        log_o = torch.where(valid, torch.log(opacities[self.gauss]), torch.full_like(u, -math.inf))
        coef = torch.stack(
            [
                log_o - (0.5 * a * u * u + 0.5 * c * v * v + b * u * v),
                a * u + b * v,
                c * v + b * u,
                -0.5 * a,
                -0.5 * c,
                -b,
            ],
            dim=-1,
        )
        self.opac = opacities[self.gauss]
        self.raw = torch.exp(torch.matmul(coef, basis))  # o · exp(−σ), [A, B, P]
        alpha = self.raw.clamp(max=ALPHA_MAX)
        self.alpha = torch.where(alpha >= ALPHA_MIN, alpha, torch.zeros_like(alpha))  # skipped Gaussians: α = 0
        self.log1m = torch.log1p(-self.alpha)

    def transmittance(self, carry: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Running log-T including each Gaussian, whether it is before the pixel's stop, and T before it."""
        incl = torch.cumsum(self.log1m, dim=1).add_(carry[:, None, :])
        before_stop = incl > LOG_T_MIN
        trans = torch.exp(incl - self.log1m)
        return incl, before_stop, trans


def _chunks(active: Tensor, batch: int, pixels: int, max_block: int) -> list[Tensor]:
    per = max(1, max_block // (batch * pixels))
    return list(active.split(per)) if len(active) > per else [active]


def composite_forward(
    bins: TileBins,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    init_log_t: Tensor,
    batch: int,
    max_block: int,
) -> tuple[Tensor, Tensor, _Schedule]:
    """Colours ``[T, P, D]`` (no background) and final transmittance ``[T, P]`` per tile pixel."""
    n_tiles, pixels = init_log_t.shape
    basis = _pixel_basis(bins.tile_size, means2d)
    # one extra colour channel of ones accumulates Σ w = 1 − T_final
    colors1 = torch.cat([colors, torch.ones_like(colors[:, :1])], dim=-1)
    out = colors.new_zeros(n_tiles, pixels, colors.shape[-1] + 1)
    carry = init_log_t.clone()  # running Σ log(1 − α) over every Gaussian so far, past the stop or not
    rounds = torch.zeros(n_tiles, dtype=torch.long, device=means2d.device)
    active = torch.nonzero(bins.count > 0).squeeze(1)
    first, batches = 0, []
    while len(active):
        size = min(batch, int(bins.count[active].max()) - first)
        batches.append(size)
        for tiles in _chunks(active, size, pixels, max_block):
            blk = _Block(bins, tiles, first, size, means2d, conics, opacities, basis)
            incl, before_stop, trans = blk.transmittance(carry[tiles])
            w = torch.where(before_stop, blk.alpha * trans, torch.zeros_like(trans))
            out[tiles] += torch.bmm(w.transpose(1, 2), colors1[blk.gauss])
            carry[tiles] = incl[:, -1, :]
        rounds[active] += 1
        first += size
        more = (bins.count[active] > first) & (carry[active] > LOG_T_MIN).any(dim=1)
        active = active[more]
    return out[..., :-1], 1.0 - out[..., -1], _Schedule(batches, rounds)


def composite_backward(
    bins: TileBins,
    schedule: _Schedule,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    init_log_t: Tensor,
    out: Tensor,
    t_final: Tensor,
    grad_out: Tensor,
    grad_alpha: Tensor,
    max_block: int,
    absgrad: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Gradients for ``means2d``, ``conics``, ``opacities``, ``colors`` (and Σ|∂L/∂μ₂| per pixel if ``absgrad``)."""
    n_tiles, pixels = init_log_t.shape
    basis = _pixel_basis(bins.tile_size, means2d)
    x, y = basis[1], basis[2]
    v_means = torch.zeros_like(means2d)
    v_conics = torch.zeros_like(conics)
    v_opac = torch.zeros_like(opacities)
    v_colors = torch.zeros_like(colors)
    v_abs = torch.zeros_like(means2d) if absgrad else None
    s_total = (out * grad_out).sum(-1)  # Σ_i w_i (c_i · g) per pixel
    a_term = t_final * grad_alpha  # ∂L/∂α_i gets + T_final g_A / (1 − α_i)
    carry = init_log_t.clone()
    prefix = torch.zeros_like(s_total)
    first = 0
    for r, size in enumerate(schedule.batches):
        active = torch.nonzero(schedule.rounds > r).squeeze(1)
        for tiles in _chunks(active, size, pixels, max_block):
            blk = _Block(bins, tiles, first, size, means2d, conics, opacities, basis)
            incl, before_stop, trans = blk.transmittance(carry[tiles])
            carry[tiles] = incl[:, -1, :]
            zero = torch.zeros_like(trans)
            w = torch.where(before_stop, blk.alpha * trans, zero)
            g = grad_out[tiles]  # [A, P, D]
            v_colors.index_add_(0, blk.gauss.reshape(-1), torch.bmm(w, g).reshape(-1, g.shape[-1]))
            cg = torch.bmm(colors[blk.gauss], g.transpose(1, 2))  # c_i · g, [A, B, P]
            run = torch.cumsum(w * cg, dim=1).add_(prefix[tiles][:, None, :])
            prefix[tiles] = run[:, -1, :]
            # ∂L/∂α_i = T_i (c_i·g) − (S_after_i − T_final g_A) / (1 − α_i),   S_after_i = S_total − run_i
            v_alpha = trans * cg - (s_total[tiles][:, None, :] - run - a_term[tiles][:, None, :]) / (1.0 - blk.alpha)
            # no gradient through skipped Gaussians, past the stop, or where α was clamped at 0.999
            live = before_stop & (blk.alpha > 0) & (blk.raw <= ALPHA_MAX)
            # ∂L/∂σ = −o e^{−σ} ∂L/∂α; keep q = −∂L/∂σ
            q = torch.where(live, blk.raw * v_alpha, zero)
            m = torch.matmul(q, basis.T)  # Σ_p q (1, x, y, x², y², xy), [A, B, 6]
            u, v = blk.u, blk.v
            s_dx = u * m[..., 0] - m[..., 1]  # Σ_p q dx with dx = u − x
            s_dy = v * m[..., 0] - m[..., 2]
            s_dxx = u * u * m[..., 0] - 2 * u * m[..., 1] + m[..., 3]
            s_dyy = v * v * m[..., 0] - 2 * v * m[..., 2] + m[..., 4]
            s_dxy = u * v * m[..., 0] - u * m[..., 2] - v * m[..., 1] + m[..., 5]
            ids = blk.gauss.reshape(-1)
            # ∂σ/∂μ = (a dx + b dy, b dx + c dy);  ∂σ/∂(a, b, c) = (½dx², dx dy, ½dy²)
            v_mu = torch.stack([blk.a * s_dx + blk.b * s_dy, blk.b * s_dx + blk.c * s_dy], dim=-1)
            v_means.index_add_(0, ids, -v_mu.reshape(-1, 2))
            v_con = torch.stack([0.5 * s_dxx, s_dxy, 0.5 * s_dyy], dim=-1)
            v_conics.index_add_(0, ids, -v_con.reshape(-1, 3))
            # ∂α/∂o = e^{−σ} = raw / o
            v_opac.index_add_(0, ids, (m[..., 0] / blk.opac).reshape(-1))
            if v_abs is not None:
                dx = blk.u[..., None] - x
                dy = blk.v[..., None] - y
                gx = (q * (blk.a[..., None] * dx + blk.b[..., None] * dy)).abs().sum(-1)
                gy = (q * (blk.b[..., None] * dx + blk.c[..., None] * dy)).abs().sum(-1)
                v_abs.index_add_(0, ids, torch.stack([gx, gy], dim=-1).reshape(-1, 2))
        first += size
    return v_means, v_conics, v_opac, v_colors, v_abs


def tiles_to_image(x: Tensor, bins: TileBins, width: int, height: int) -> Tensor:
    """``[T, P, D]`` tile layout to ``[C, H, W, D]`` images."""
    ts = bins.tile_size
    x = x.reshape(bins.n_cameras, bins.tiles_y, bins.tiles_x, ts, ts, x.shape[-1])
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(bins.n_cameras, bins.tiles_y * ts, bins.tiles_x * ts, -1)
    return x[:, :height, :width]


def image_to_tiles(x: Tensor, bins: TileBins) -> Tensor:
    """``[C, H, W, D]`` images to the ``[T, P, D]`` tile layout (zero padding past the image)."""
    ts = bins.tile_size
    c, h, w, d = x.shape
    pad = x.new_zeros(c, bins.tiles_y * ts, bins.tiles_x * ts, d)
    pad[:, :h, :w] = x
    pad = pad.reshape(c, bins.tiles_y, ts, bins.tiles_x, ts, d).permute(0, 1, 3, 2, 4, 5)
    return pad.reshape(c * bins.tiles_y * bins.tiles_x, ts * ts, d)


class CompositeTiles(torch.autograd.Function):
    """Differentiable tile compositing of visible Gaussians: returns ``(colors [C,H,W,D], alphas [C,H,W,1])``."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, bins, width, height, batch, max_block, absgrad_target):
        # pixels past the image edge (tile padding) start "done" (log T = -inf) and never composite
        inside = image_to_tiles(means2d.new_ones(bins.n_cameras, height, width, 1), bins)[..., 0]
        init_log_t = torch.where(inside > 0, torch.zeros_like(inside), torch.full_like(inside, -math.inf))
        out, t_final, schedule = composite_forward(bins, means2d, conics, opacities, colors, init_log_t, batch, max_block)
        ctx.save_for_backward(means2d, conics, opacities, colors, out, t_final, init_log_t)
        ctx.bins, ctx.schedule, ctx.max_block = bins, schedule, max_block
        ctx.width, ctx.height, ctx.absgrad_target = width, height, absgrad_target
        alphas = 1.0 - t_final
        return tiles_to_image(out, bins, width, height), tiles_to_image(alphas[..., None], bins, width, height)

    @staticmethod
    def backward(ctx, grad_colors, grad_alphas):
        means2d, conics, opacities, colors, out, t_final, init_log_t = ctx.saved_tensors
        bins = ctx.bins
        g = image_to_tiles(grad_colors.contiguous(), bins)
        g_a = image_to_tiles(grad_alphas.contiguous(), bins)[..., 0]
        target = ctx.absgrad_target
        v_means, v_conics, v_opac, v_colors, v_abs = composite_backward(
            bins, ctx.schedule, means2d, conics, opacities, colors, init_log_t, out, t_final, g, g_a,
            ctx.max_block, target is not None,
        )  # fmt: skip
        if target is not None:
            target(v_abs)
        return v_means, v_conics, v_opac, v_colors, None, None, None, None, None, None
