"""DreamSpace's panorama: geometry from the centre, the rolled camera, the seam, tiles and their blending."""

from __future__ import annotations

import math

import pytest
import torch

from scene3d.core.cameras import CameraBatch, equirect_rays
from scene3d.methods.dreamspace.panorama import (
    TileLayout,
    blend_tile,
    close_seam,
    depth_control,
    neighbour_difference,
    panorama_camera,
    panorama_geometry,
    render_tile,
    resize_equirect,
    rolled_camera,
    seam_band,
    seam_error,
    tile_cameras,
    tile_intrinsics,
)

from .conftest import CENTRE, color_of

pytestmark = pytest.mark.data


def test_rolling_the_panorama_is_turning_the_camera(textured_room) -> None:
    c2w = panorama_camera(CENTRE)
    geo, hits = panorama_geometry(textured_room.raycaster, c2w, 64, 32)
    assert geo.mask.all() and (geo.distance > 0).all()
    for shift in (16, 5, -9):
        rolled, rolled_hits = panorama_geometry(textured_room.raycaster, rolled_camera(c2w, shift, 64), 64, 32)
        same = torch.roll(hits.triangle, shift, dims=-1) == rolled_hits.triangle
        assert float(same.float().mean()) > 0.98  # rays through shared edges may name either neighbour
        torch.testing.assert_close(torch.roll(geo.distance, shift, -1), rolled.distance, atol=1e-4, rtol=0)
    # normals face the centre
    to_centre = CENTRE - hits.points
    assert ((geo.normals * to_centre).sum(-1) > 0).all()


def test_depth_control_is_bright_near_and_dark_far(textured_room) -> None:
    geo, _ = panorama_geometry(textured_room.raycaster, panorama_camera(CENTRE), 64, 32)
    control = depth_control(geo.distance, geo.mask)
    assert control.shape == (3, 32, 64) and 0 <= float(control.min()) and float(control.max()) <= 1
    near, far = geo.distance.argmin(), geo.distance.argmax()
    assert control[0].flatten()[near] > 0.9 and control[0].flatten()[far] < 0.1


def harmonic_fill(image: torch.Tensor, mask: torch.Tensor, camera: CameraBatch) -> torch.Tensor:
    """A stand-in inpainter that continues the image smoothly into the hole (Jacobi iterations of Laplace's equation):
    what a good inpainting model does at the least."""
    assert camera.model == "equirectangular" and camera.width == image.shape[-1]
    out, hole = image.clone(), mask[0] > 0.5
    for _ in range(2000):
        padded = torch.nn.functional.pad(out[None], (1, 1, 1, 1), mode="replicate")[0]
        average = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]) / 4
        out = torch.where(hole, average, image)
    return out


def test_closing_the_seam_makes_the_wrap_continuous() -> None:
    """A panorama generated as a flat image continues smoothly inside, but its left and right edges do not meet
    (here: a periodic pattern squeezed to 90 % of the turn). Inpainting the band across the wrap brings the seam
    down to the step between neighbouring columns; with the seam closing switched off, the gate fails."""
    h, w = 16, 64
    lon = torch.linspace(0.0, 0.9 * 2 * math.pi, w)[None, :]
    lat = torch.linspace(-1.2, 1.2, h)[:, None]
    flat = torch.stack([0.5 + 0.3 * torch.sin(3 * lon + lat), 0.5 + 0.2 * torch.cos(2 * lon - lat),
                        0.5 + 0.1 * torch.sin(5 * lon) * torch.cos(lat)])  # fmt: skip
    assert seam_error(flat) > 2 * neighbour_difference(flat)  # switched off: the gate fails
    closed = close_seam(flat, panorama_camera(CENTRE), harmonic_fill, band_fraction=0.25)
    assert seam_error(closed) <= neighbour_difference(closed)
    # only the band around the wrap changed
    band = torch.roll(seam_band(h, w, 0.25), -w // 2, dims=-1)
    assert torch.equal(closed[:, ~band], flat[:, ~band])
    assert band[:, 0].all() and band[:, -1].all() and not band[:, w // 2].any()


def test_resize_keeps_the_wrap(textured_room) -> None:
    pano = torch.rand(3, 8, 16)
    big = resize_equirect(pano, 16, 32)
    # the first column of the upsampled image blends the last and first columns of the small one
    torch.testing.assert_close(big[:, :, 0].mean(), (0.75 * pano[:, :, 0] + 0.25 * pano[:, :, -1]).mean(), atol=0.02,
                               rtol=0)  # fmt: skip
    assert seam_error(big) < 0.6 * seam_error(pano) + neighbour_difference(pano)


def test_tiles_cover_the_sphere_and_blend_back_to_the_panorama() -> None:
    """A smooth panorama cut into the default tiles and blended back is itself (up to resampling)."""
    h, w, size = 32, 64, 48
    c2w = panorama_camera(CENTRE)
    _, directions = equirect_rays(c2w, w, h)
    pano = color_of(CENTRE + 2.0 * directions).permute(2, 0, 1)
    layout = TileLayout()
    tiles = tile_cameras(c2w, layout)
    assert tiles.shape == (22, 4, 4)
    torch.testing.assert_close(tiles[:, :3, 3], CENTRE.expand(22, 3))
    K = tile_intrinsics(layout, size)
    color_sum, weight_sum = torch.zeros(3, h, w), torch.zeros(h, w)
    for tile_c2w in tiles:
        tile = render_tile(pano, c2w, tile_c2w, K, size)
        assert tile.shape == (3, size, size)
        color_sum, weight_sum = blend_tile(color_sum, weight_sum, tile, c2w, tile_c2w, K)
    assert (weight_sum > 0).all()  # every panorama pixel lies in some tile
    back = color_sum / weight_sum
    assert float((back - pano).abs().mean()) < 0.01
    # the first tile of the horizontal ring looks where the panorama's middle column does
    forward = -tiles[0, :3, 2]
    torch.testing.assert_close(forward, -c2w[:3, 2])
    up = -tile_cameras(c2w, TileLayout(rings=(), poles=True))[0, :3, 2]
    torch.testing.assert_close(up, torch.tensor([0.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    assert math.isclose(float(K[0, 0]), size / 2, rel_tol=1e-5)  # 90° field of view
