"""Tile-based front-to-back alpha compositing of projected 2D Gaussians, in pure torch, with a hand-written backward.

This is the last stage of :func:`scene3d.renderers.gaussians.rasterize` on its torch backend. Per pixel ``p`` and
the Gaussians ``i`` sorted front to back (gsplat 1.4.0's ``rasterize_to_pixels`` conventions):

    σ_i = ½ (a dx² + c dy²) + b dx dy,    d = μ_i − (p + 0.5),    α_i = min(0.999, o_i exp(−σ_i)),
    a Gaussian with σ_i < 0 or α_i < 1/255 is skipped,
    T_i = ∏_{j<i} (1 − α_j),   C = Σ_i T_i α_i c_i,   A = 1 − T_final,

and compositing stops at the first Gaussian that would bring ``T`` to ``<= 1e-4`` (that Gaussian is excluded).

How it is computed:

* **Binning** (:mod:`scene3d.renderers.gaussians_binning`): Gaussian/tile pairs, sorted front to back per tile.
* **Depth slices.** Gaussians are binned a slice at a time, front to back (about ``slice_pairs`` pairs per slice),
  and a slice's pairs on tiles that are already opaque are dropped before sorting: behind opaque layers little is
  ever binned.
* **Rounds.** Tiles are processed together, ``batch`` Gaussians per tile per round, as dense ``[tiles, batch,
  pixels]`` blocks: transmittance is ``exp`` of an exclusive cumulative sum of ``log(1 − α)`` along the batch, carried
  across rounds; a pixel is done once the running sum drops to ``log(1e-4)``, a tile once all its pixels are.
  ``log(o) − σ`` over a block is one matrix product (see :class:`_Block`). Memory is bounded by splitting a round's
  tiles into chunks of at most ``max_block`` elements.
* **Backward** (``torch.autograd.Function``) replays the same blocks front to back and uses
  ``∂L/∂α_i = T_i (c_i·g) − (S_after_i − T_final g_A) / (1 − α_i)`` where ``S_after_i`` (the colour behind ``i``
  dotted with the output gradient) is the pixel's total minus a running prefix sum; the per-pixel sums over
  ``∂L/∂σ`` that the mean and conic gradients need are moments, one matrix product per block. The forward pass
  keeps ``(o e^{−σ}, α, T)`` of its first blocks, up to ``cache_bytes``, and the backward pass recomputes the rest.
  Like gsplat, no gradient flows through ``α`` where ``o exp(−σ) > 0.999``.
* **CPU notes.** ``index_select`` instead of ``x[idx]``, ``threshold``/``clamp``/multiplications instead of
  ``where``/``masked_fill``, and 32-bit sort keys: each is several times faster in torch on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from scene3d.renderers.gaussians_binning import Footprints, TileBins, TileGrid, bin_slice

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
LOG_T_MIN = math.log(T_MIN)


@dataclass
class _Slice:
    """One depth slice as the forward pass ran it; the backward pass replays it."""

    bins: TileBins
    batches: list[int]
    """Gaussians per tile in each round (``batch``, or fewer when no tile has that many left)."""
    rounds: Int[Tensor, " T"]
    """How many rounds each tile took part in."""


@dataclass
class _Replay:
    """Everything the backward pass needs to replay the forward pass's blocks in order."""

    slices: list[_Slice]
    cache: list[tuple[Tensor, Tensor, Tensor]]
    """(raw, α, T) of the first blocks, in order, while they fitted in the cache budget."""
    carry_after_cache: Tensor | None
    """The running log-T per tile pixel after the cached blocks (``None`` when every block is cached)."""


def _pixel_basis(tile_size: int, like: Tensor) -> Tensor:
    """``[6, P]`` monomials ``(1, x, y, x², y², xy)`` of each pixel centre relative to its tile's centre."""
    r = torch.arange(tile_size, device=like.device, dtype=like.dtype) + 0.5 - 0.5 * tile_size
    x, y = r.repeat(tile_size), r.repeat_interleave(tile_size)
    return torch.stack([torch.ones_like(x), x, y, x * x, y * y, x * y])


def _tile_centres(grid: TileGrid, tiles: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Pixel coordinates of the centre of each tile in ``tiles``: ``[A]`` each."""
    in_cam = tiles % (grid.tiles_x * grid.tiles_y)
    half = 0.5 * grid.tile_size
    return (
        ((in_cam % grid.tiles_x) * grid.tile_size).to(dtype) + half,
        ((in_cam // grid.tiles_x) * grid.tile_size).to(dtype) + half,
    )


def _below(x: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` value below ``x``."""
    t = torch.tensor(x, dtype=dtype)
    return float(torch.nextafter(t, torch.zeros_like(t)))


def _above(x: float, dtype: torch.dtype) -> float:
    """The smallest ``dtype`` value above ``x``."""
    t = torch.tensor(x, dtype=dtype)
    return float(torch.nextafter(t, torch.ones_like(t)))


def _pack(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor) -> Tensor:
    """One row per visible Gaussian, so a round gathers once: ``[mx, my, a, b, c, log o, o, colour...]``."""
    return torch.cat([means2d, conics, torch.log(opacities)[:, None], opacities[:, None], colors], dim=1)


class _Block:
    """One chunk of one round: ``A`` tiles × ``B`` Gaussians × ``P`` pixels, with α recomputed from the inputs.

    ``log(o) − σ`` is a quadratic in the pixel's offset ``(x, y)`` from the tile centre, so for all pixels at once it
    is one matrix product ``K [A, B, 6] @ basis [6, P]``: with ``(u, v) = μ − tile centre`` (so ``d = (u − x, v − y)``),

        log o − σ = (log o − ½a u² − ½c v² − b u v) + (a u + b v) x + (c v + b u) y − ½a x² − ½c y² − b x y.

    Padding slots (a tile with fewer than ``B`` Gaussians left) get ``log o = −inf``, so ``α = 0`` there. The
    conics are positive definite (the blur keeps them so), so gsplat's ``σ < 0`` test never fires and is omitted.
    """

    def __init__(
        self, grid: TileGrid, bins: TileBins, tiles: Tensor, first: int, batch: int, packed: Tensor, basis: Tensor,
        cached=None,
    ):  # fmt: skip
        a_n = len(tiles)
        j = torch.arange(first, first + batch, device=tiles.device)
        valid = j[None, :] < bins.count.index_select(0, tiles)[:, None]  # [A, B]
        pair = (bins.start.index_select(0, tiles)[:, None] + j[None, :]).clamp_(max=max(len(bins.gauss) - 1, 0))
        # [A, B]; padding slots repeat a real Gaussian with α forced to 0
        self.gauss = bins.gauss.index_select(0, pair.reshape(-1)).reshape(a_n, batch)
        rows = packed.index_select(0, self.gauss.reshape(-1)).reshape(a_n, batch, -1)
        cx, cy = _tile_centres(grid, tiles, packed.dtype)
        self.u, self.v = rows[..., 0] - cx[:, None], rows[..., 1] - cy[:, None]
        self.a, self.b, self.c = rows[..., 2], rows[..., 3], rows[..., 4]
        self.opac = rows[..., 6]
        self.colors = rows[..., 7:]  # [A, B, D]
        if cached is not None:  # (raw, alpha, trans) kept by the forward pass
            self.raw, self.alpha, self.trans = cached
            return
        u, v, a, b, c = self.u, self.v, self.a, self.b, self.c
        lx, ly = a * u + b * v, b * u + c * v  # ½a u² + ½c v² + b u v = ½ (u lx + v ly)
        log_o = rows[..., 5].masked_fill(~valid, -math.inf)
        coef = torch.stack([log_o - 0.5 * (u * lx + v * ly), lx, ly, -0.5 * a, -0.5 * c, -b], dim=-1)
        self.raw = torch.matmul(coef, basis).exp_()  # o · exp(−σ), [A, B, P]
        # α = min(0.999, raw), and 0 for skipped Gaussians (α < 1/255): threshold keeps values > the float just
        # below 1/255 (masked_fill / where are several times slower than threshold and clamp on CPU)
        self.alpha = F.threshold(self.raw.clamp(max=ALPHA_MAX), _below(ALPHA_MIN, packed.dtype), 0.0)
        self.trans = None

    def weights(self, carry: Tensor) -> tuple[Tensor, Tensor]:
        """Blend weights ``w = α T`` and the running log-transmittance including each Gaussian; sets ``trans``, the
        transmittance ``T`` before each Gaussian (0 past each pixel's stop, so ``w`` is 0 there too)."""
        log1m = torch.neg(self.alpha).log1p_()
        incl = torch.cumsum(log1m, dim=1).add_(carry[:, None, :])
        # log T before each Gaussian, −inf once the running log T has reached log(1e-4) (the pixel has stopped)
        self.trans = F.threshold(incl, LOG_T_MIN, -math.inf).sub_(log1m).exp_()
        return torch.mul(self.alpha, self.trans), incl


def _cumulative(sizes: list[int]) -> list[int]:
    """Offsets ``[0, s0, s0 + s1, ...]`` (one per size)."""
    out, acc = [], 0
    for size in sizes:
        out.append(acc)
        acc += size
    return out


def _chunks(active: Tensor, batch: int, pixels: int, max_block: int) -> list[Tensor]:
    per = max(1, max_block // (batch * pixels))
    return list(active.split(per)) if len(active) > per else [active]


def composite_forward(
    fp: Footprints,
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    init_log_t: Tensor,
    batch: int,
    max_block: int,
    cache_bytes: int = 0,
    slice_pairs: int = 1 << 22,
) -> tuple[Tensor, Tensor, _Replay]:
    """Colours ``[T, P, D]`` (no background) and final transmittance ``[T, P]`` per tile pixel.

    Gaussians are binned in depth slices of about ``slice_pairs`` pairs, each only onto the tiles still open, so
    Gaussians behind opaque layers are seldom binned. Up to ``cache_bytes`` of per-block (raw, α, T) are kept for
    the backward pass, which recomputes the rest.
    """
    grid = fp.grid
    n_tiles, pixels = init_log_t.shape
    basis = _pixel_basis(grid.tile_size, means2d)
    # one extra colour channel of ones accumulates Σ w = 1 − T_final
    packed = _pack(means2d, conics, opacities, torch.cat([colors, torch.ones_like(colors[:, :1])], dim=-1))
    out = colors.new_zeros(n_tiles, pixels, colors.shape[-1] + 1)
    carry = init_log_t.clone()  # running Σ log(1 − α) over every Gaussian so far, past the stop or not
    replay = _Replay([], [], None)
    # slice boundaries in depth order: about slice_pairs pairs each
    ends = torch.cumsum(fp.counts, 0)
    total = int(ends[-1]) if len(ends) else 0
    marks = torch.arange(slice_pairs, max(total, slice_pairs), slice_pairs, device=ends.device)
    bounds = sorted({0, len(fp.counts), *torch.searchsorted(ends, marks, right=True).tolist()})
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        alive = (carry > LOG_T_MIN).any(dim=1)
        if not bool(alive.any()):
            break
        bins = bin_slice(fp, lo, hi, alive if lo else None)
        rounds = torch.zeros(n_tiles, dtype=torch.long, device=means2d.device)
        active = torch.nonzero(bins.count > 0).squeeze(1)
        first, batches = 0, []
        while len(active):
            size = min(batch, int(bins.count.index_select(0, active).max()) - first)
            batches.append(size)
            for tiles in _chunks(active, size, pixels, max_block):
                block_bytes = 3 * len(tiles) * size * pixels * means2d.element_size()
                if replay.carry_after_cache is None and block_bytes > cache_bytes:
                    replay.carry_after_cache = carry.clone()  # the backward pass recomputes from this block on
                blk = _Block(grid, bins, tiles, first, size, packed, basis)
                w, incl = blk.weights(carry.index_select(0, tiles))
                out.index_add_(0, tiles, torch.bmm(w.transpose(1, 2), blk.colors))
                carry.index_copy_(0, tiles, incl[:, -1, :])
                if replay.carry_after_cache is None:
                    cache_bytes -= block_bytes
                    replay.cache.append((blk.raw, blk.alpha, blk.trans))
            rounds.index_add_(0, active, torch.ones_like(active))
            first += size
            more = bins.count.index_select(0, active) > first
            active = active[more & (carry.index_select(0, active) > LOG_T_MIN).any(dim=1)]
        replay.slices.append(_Slice(bins, batches, rounds))
    return out[..., :-1], 1.0 - out[..., -1], replay


def composite_backward(
    grid: TileGrid,
    replay: _Replay,
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
    n_ch = colors.shape[-1]
    basis = _pixel_basis(grid.tile_size, means2d)
    packed = _pack(means2d, conics, opacities, colors)
    # per Gaussian: ∂L/∂(mx, my, a, b, c, o, colour...) and, for absgrad, Σ|∂L/∂μ| per axis
    grads = means2d.new_zeros(len(means2d), 6 + n_ch + (2 if absgrad else 0))
    # ∂L/∂α_i = T_i (c_i·g) − (S_after_i − T_final g_A) / (1 − α_i) with S_after_i = S_total − run_i, where run_i
    # is the running Σ_{j<=i} w_j (c_j·g) and S_total = Σ_i w_i (c_i·g) = out · g, so
    # ∂L/∂α_i = T_i (c_i·g) + (run_i − k) / (1 − α_i) with k = S_total − T_final g_A.
    k_term = (out * grad_out).sum(-1) - t_final * grad_alpha
    carry = init_log_t.clone()
    prefix = torch.zeros_like(k_term)
    n_block = 0
    blocks = (
        (sl.bins, first, size, tiles)
        for sl in replay.slices
        for r, (first, size) in enumerate(zip(_cumulative(sl.batches), sl.batches))
        for tiles in _chunks(torch.nonzero(sl.rounds > r).squeeze(1), size, pixels, max_block)
    )
    for bins, first, size, tiles in blocks:
        cached = replay.cache[n_block] if n_block < len(replay.cache) else None
        n_block += 1
        blk = _Block(grid, bins, tiles, first, size, packed, basis, cached)
        if cached is None:
            if n_block == len(replay.cache) + 1 and replay.carry_after_cache is not None:
                carry = replay.carry_after_cache.clone()  # the running log-T after the cached blocks
            w, incl = blk.weights(carry.index_select(0, tiles))
            carry.index_copy_(0, tiles, incl[:, -1, :])
        else:
            w = torch.mul(blk.alpha, blk.trans)
        trans = blk.trans
        g = grad_out.index_select(0, tiles)  # [A, P, D]
        v_col = torch.bmm(w, g)  # [A, B, D]
        cg = torch.bmm(blk.colors, g.transpose(1, 2))  # c_i · g, [A, B, P]
        run = torch.mul(w, cg).cumsum_(dim=1).add_(prefix.index_select(0, tiles)[:, None, :])
        prefix.index_copy_(0, tiles, run[:, -1, :])
        v_alpha = run.sub_(k_term.index_select(0, tiles)[:, None, :]).div_(torch.rsub(blk.alpha, 1.0)).addcmul_(trans, cg)
        # no gradient through skipped Gaussians or past the stop (both have w = 0, so sign(w) = 0 there), nor
        # where α was clamped at 0.999: −threshold(−raw) keeps raw <= 0.999 and zeroes the rest
        raw_ok = F.threshold(torch.neg(blk.raw), -_above(ALPHA_MAX, blk.raw.dtype), 0.0).neg_()
        q = v_alpha.mul_(raw_ok).mul_(torch.sign(w))  # q = o e^{−σ} ∂L/∂α = −∂L/∂σ
        m = torch.matmul(q, basis.T)  # Σ_p q (1, x, y, x², y², xy), [A, B, 6]
        u, v, a, b, c = blk.u, blk.v, blk.a, blk.b, blk.c
        m0, mx, my = m[..., 0], m[..., 1], m[..., 2]
        s_dx = u * m0 - mx  # Σ_p q dx with dx = u − x
        s_dy = v * m0 - my
        s_dxx = u * u * m0 - 2 * u * mx + m[..., 3]
        s_dyy = v * v * m0 - 2 * v * my + m[..., 4]
        s_dxy = u * v * m0 - u * my - v * mx + m[..., 5]
        # ∂σ/∂μ = (a dx + b dy, b dx + c dy); ∂σ/∂(a, b, c) = (½dx², dx dy, ½dy²); ∂α/∂o = e^{−σ} = raw / o
        cols = [
            -(a * s_dx + b * s_dy), -(b * s_dx + c * s_dy), -0.5 * s_dxx, -s_dxy, -0.5 * s_dyy, m0 / blk.opac
        ]  # fmt: skip
        parts = [torch.stack(cols, dim=-1), v_col]
        if absgrad:
            dx = blk.u[..., None] - basis[1]
            dy = blk.v[..., None] - basis[2]
            gx = (q * (a[..., None] * dx + b[..., None] * dy)).abs_().sum(-1)
            gy = (q * (b[..., None] * dx + c[..., None] * dy)).abs_().sum(-1)
            parts.append(torch.stack([gx, gy], dim=-1))
        grads.index_add_(0, blk.gauss.reshape(-1), torch.cat(parts, dim=-1).reshape(-1, grads.shape[1]))
    v_abs = grads[:, 6 + n_ch :] if absgrad else None
    return grads[:, 0:2], grads[:, 2:5], grads[:, 5], grads[:, 6 : 6 + n_ch], v_abs


def tiles_to_image(x: Tensor, grid: TileGrid, width: int, height: int) -> Tensor:
    """``[T, P, D]`` tile layout to ``[C, H, W, D]`` images."""
    ts = grid.tile_size
    x = x.reshape(grid.n_cameras, grid.tiles_y, grid.tiles_x, ts, ts, x.shape[-1])
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(grid.n_cameras, grid.tiles_y * ts, grid.tiles_x * ts, -1)
    return x[:, :height, :width]


def image_to_tiles(x: Tensor, grid: TileGrid) -> Tensor:
    """``[C, H, W, D]`` images to the ``[T, P, D]`` tile layout (zero padding past the image)."""
    ts = grid.tile_size
    c, h, w, d = x.shape
    pad = x.new_zeros(c, grid.tiles_y * ts, grid.tiles_x * ts, d)
    pad[:, :h, :w] = x
    pad = pad.reshape(c, grid.tiles_y, ts, grid.tiles_x, ts, d).permute(0, 1, 3, 2, 4, 5)
    return pad.reshape(c * grid.tiles_y * grid.tiles_x, ts * ts, d)


class CompositeTiles(torch.autograd.Function):
    """Differentiable tile compositing of visible Gaussians: returns ``(colors [C,H,W,D], alphas [C,H,W,1])``."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, fp, width, height, options, absgrad_target):
        """``options``: (batch, max_block, cache_bytes, slice_pairs), see :func:`composite_forward`."""
        batch, max_block, cache_bytes, slice_pairs = options
        grid = fp.grid
        # pixels past the image edge (tile padding) start "done" (log T = -inf) and never composite
        inside = image_to_tiles(means2d.new_ones(grid.n_cameras, height, width, 1), grid)[..., 0]
        init_log_t = torch.where(inside > 0, torch.zeros_like(inside), torch.full_like(inside, -math.inf))
        # the cache only pays off when a backward pass follows
        cache_bytes = cache_bytes if any(ctx.needs_input_grad[:4]) else 0
        out, t_final, replay = composite_forward(
            fp, means2d, conics, opacities, colors, init_log_t, batch, max_block, cache_bytes, slice_pairs
        )
        ctx.save_for_backward(means2d, conics, opacities, colors, out, t_final, init_log_t)
        ctx.grid, ctx.replay, ctx.max_block, ctx.absgrad_target = grid, replay, max_block, absgrad_target
        alphas = 1.0 - t_final
        return tiles_to_image(out, grid, width, height), tiles_to_image(alphas[..., None], grid, width, height)

    @staticmethod
    def backward(ctx, grad_colors, grad_alphas):
        means2d, conics, opacities, colors, out, t_final, init_log_t = ctx.saved_tensors
        grid = ctx.grid
        g = image_to_tiles(grad_colors.contiguous(), grid)
        g_a = image_to_tiles(grad_alphas.contiguous(), grid)[..., 0]
        target = ctx.absgrad_target
        v_means, v_conics, v_opac, v_colors, v_abs = composite_backward(
            grid, ctx.replay, means2d, conics, opacities, colors, init_log_t, out, t_final, g, g_a,
            ctx.max_block, target is not None,
        )  # fmt: skip
        if target is not None:
            target(v_abs)
        return v_means, v_conics, v_opac, v_colors, None, None, None, None, None
