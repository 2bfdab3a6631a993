"""Binning for the torch Gaussian rasterizer: which tiles each projected Gaussian can blend into, front to back.

Each Gaussian is paired with the ``tile_size``² pixel tiles its footprint touches. The footprint is the
intersection of gsplat's (the pixels of the 16-px tiles its 3σ-radius box touches, which gsplat evaluates) with the
exact bounding box of the region where ``α >= 1/255`` (half-widths ``sqrt(2 ln(255 o) Σ_xx)``), so no pixel gsplat
would blend is dropped and most that it would skip are never evaluated. Pairs are made for the Gaussians in depth
order (equal depths in index order, as gsplat's stable radix sort) and stably sorted by tile, a depth slice at a
time (:func:`bin_slice`), so tiles that are already opaque can be left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

GSPLAT_TILE = 16
"""The tile size gsplat 1.4.0 bins with: the set of pixels it evaluates per Gaussian depends on it."""


@dataclass
class TileGrid:
    """The tiles of all cameras in one index space: tile ``t`` is camera ``t // (ty·tx)``, row, column."""

    tile_size: int
    tiles_x: int
    tiles_y: int
    n_cameras: int

    @property
    def n_tiles(self) -> int:
        return self.n_cameras * self.tiles_x * self.tiles_y


@dataclass
class Footprints:
    """Each visible Gaussian's rectangle of tiles, listed front to back."""

    grid: TileGrid
    order: Int[Tensor, " V"]
    """Visible-Gaussian indices by depth (equal depths in index order, as gsplat's stable radix sort)."""
    base: Int[Tensor, " V"]
    """Top-left tile of each rectangle (in ``order``)."""
    nx: Int[Tensor, " V"]
    """Rectangle width in tiles (in ``order``; 0 when the Gaussian covers no pixel)."""
    counts: Int[Tensor, " V"]
    """Tiles per rectangle (in ``order``)."""


@dataclass
class TileBins:
    """Gaussian/tile pairs of a depth slice, sorted by tile and front to back within each tile."""

    gauss: Int[Tensor, " M"]
    """Index into the visible-Gaussian arrays, per pair."""
    start: Int[Tensor, " T"]
    """First pair of each tile."""
    count: Int[Tensor, " T"]
    """Number of pairs of each tile."""


@torch.no_grad()
def footprints(
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
) -> Footprints:
    """The tiles each visible Gaussian can blend into (see the module docstring), Gaussians front to back."""
    grid = TileGrid(tile_size, -(-width // tile_size), -(-height // tile_size), n_cameras)
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
    # (index_select, not x[idx], throughout: on CPU advanced indexing is an order of magnitude slower)
    order = torch.argsort(depths, stable=True)
    nx = torch.where(seen, tx1 - tx0, torch.zeros_like(tx0)).index_select(0, order)
    ny = torch.where(seen, ty1 - ty0, torch.zeros_like(ty0)).index_select(0, order)
    base = (camera_ids.long() * (grid.tiles_x * grid.tiles_y) + ty0 * grid.tiles_x + tx0).index_select(0, order)
    return Footprints(grid, order, base, nx, nx * ny)


@torch.no_grad()
def bin_slice(fp: Footprints, lo: int, hi: int, alive: Tensor | None = None) -> TileBins:
    """Pairs of the Gaussians ``lo:hi`` (in depth order) with their tiles, dropping tiles where ``alive`` is false.

    The pairs are made front to back and stably sorted by tile, so each tile's list stays in depth order.
    """
    device = fp.order.device
    n_tiles = fp.grid.n_tiles
    counts = fp.counts[lo:hi]
    total = int(counts.sum())
    slot = torch.repeat_interleave(torch.arange(lo, hi, device=device), counts)  # position in depth order
    local = torch.arange(total, device=device) - (torch.cumsum(counts, 0) - counts).index_select(0, slot - lo)
    nx = fp.nx.index_select(0, slot)
    row = torch.div(local, nx, rounding_mode="floor")
    tile = fp.base.index_select(0, slot) + row * fp.grid.tiles_x + (local - row * nx)
    if alive is not None:
        keep = alive.index_select(0, tile)
        tile, slot = tile[keep], slot[keep]
    key = tile.int() if n_tiles < 2**31 else tile  # a 32-bit sort is several times faster
    order = torch.sort(key, stable=True).indices
    count = torch.bincount(tile, minlength=n_tiles)
    start = torch.cumsum(count, 0) - count
    return TileBins(fp.order.index_select(0, slot.index_select(0, order)), start, count)


def bin_gaussians(*args, **kwargs) -> TileBins:
    """All pairs at once: :func:`footprints` (same arguments) then :func:`bin_slice` over every Gaussian."""
    fp = footprints(*args, **kwargs)
    return bin_slice(fp, 0, len(fp.order))
