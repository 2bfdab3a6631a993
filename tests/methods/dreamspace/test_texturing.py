"""Back-projection to the atlas with visibility, rendering the textured room, interior viewpoints, imitation."""

from __future__ import annotations

import pytest
import torch

from scene3d.core.cameras import equirect_rays, intrinsics_from_fov, look_at
from scene3d.core.metrics import psnr as image_psnr
from scene3d.methods.dreamspace.imitation import TextureField, imitation_loss, sample_batch
from scene3d.methods.dreamspace.panorama import panorama_camera
from scene3d.methods.dreamspace.texturing import (
    TexelSource,
    panorama_only_texture,
    project_panorama,
    project_view,
    render_texture,
    texel_coverage,
)
from scene3d.methods.dreamspace.viewpoints import free_positions, select_viewpoint
from scene3d.renderers.atlas import fill_gutters

from .conftest import CENTRE, color_of

pytestmark = pytest.mark.data


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR of two sets of colours ``(..., 3)`` (scene3d's image PSNR on them laid out as one image column)."""
    as_image = lambda x: x.reshape(-1, 3).T[None, :, :, None]  # noqa: E731
    return float(image_psnr(as_image(pred), as_image(target)))


def true_panorama(room, c2w: torch.Tensor, width: int, height: int) -> torch.Tensor:
    origins, directions = equirect_rays(c2w, width, height)
    hits = room.raycaster.cast(origins, directions)
    return color_of(hits.points).permute(2, 0, 1)


def test_panorama_projection_textures_what_the_centre_sees(textured_room) -> None:
    c2w = panorama_camera(CENTRE)
    texels = textured_room.texels
    proj = project_panorama(textured_room.raycaster, texels, true_panorama(textured_room, c2w, 256, 128), c2w,
                            min_cos=0.2)  # fmt: skip
    truth = color_of(texels.positions)
    assert float((proj.colors[proj.seen] - truth[proj.seen]).abs().mean()) < 0.01
    # the wall behind the box (y = 2, low, near x = 0) is hidden from the centre; the wall beside it is not
    p = texels.positions
    behind = (p[:, 1] > 1.99) & (p[:, 0].abs() < 0.2) & (p[:, 2] < 0.5)
    beside = (p[:, 1] > 1.99) & (p[:, 0].abs() > 1.2) & (p[:, 2] > 1.0) & (p[:, 2] < 2.0)
    assert behind.any() and not proj.seen[behind].any()
    assert proj.seen[beside].all()
    # the floor right below the centre faces it; grazing texels (cos < min_cos) are left out
    assert proj.seen[proj.cosine > 0.5].float().mean() > 0.8
    assert not proj.seen[proj.cosine < 0.2].any()


def test_view_projection_and_rendering_round_trip(textured_room) -> None:
    room, texels = textured_room, textured_room.texels
    c2w = look_at(torch.tensor([1.5, -1.5, 1.2]), torch.tensor([0.0, 1.0, 0.5]))
    K = intrinsics_from_fov(70.0, 64, 64)
    # a texture holding the true colours renders the true colours
    texture = fill_gutters(texels.to_image(color_of(texels.positions)), texels.mask)
    from scene3d.core.cameras import pinhole_rays

    origins, directions = pinhole_rays(c2w, K, 64, 64)
    out = render_texture(room.raycaster, room.atlas.corner_uvs, texture, origins, directions,
                         background=torch.zeros(3))  # fmt: skip
    assert out.mask.all()
    assert psnr(out.rgb, color_of(out.hits.points)) > 35.0
    # and projecting that render back gives the texels it sees their colours
    proj = project_view(room.raycaster, texels, out.rgb.permute(2, 0, 1), c2w, K, min_cos=0.3)
    assert int(proj.seen.sum()) > 500
    assert float((proj.colors[proj.seen] - color_of(texels.positions[proj.seen])).abs().mean()) < 0.02
    only_empty = torch.zeros(texels.count, dtype=torch.bool)
    only_empty[:100] = True
    assert not (project_view(room.raycaster, texels, out.rgb.permute(2, 0, 1), c2w, K, min_cos=0.3,
                             restrict=only_empty).seen & ~only_empty).any()  # fmt: skip


def test_interior_viewpoint_sees_what_the_centre_did_not(textured_room) -> None:
    room, texels = textured_room, textured_room.texels
    c2w = panorama_camera(CENTRE)
    seen_centre = project_panorama(room.raycaster, texels, torch.zeros(3, 64, 128), c2w, min_cos=0.2).seen
    needed = ~seen_centre
    g = torch.Generator().manual_seed(0)
    bounds = torch.tensor([[-2.0, -2.0, 0.0], [2.0, 2.0, 3.0]])
    eyes = free_positions(room.raycaster, bounds, 12, g, clearance=0.3)
    assert eyes.shape[0] >= 6
    inside_box = (eyes[:, 0].abs() < 0.8) & ((eyes[:, 1] - 1.0).abs() < 0.55) & (eyes[:, 2] < 1.3)
    assert not inside_box.any() and (eyes[:, 2] > 0.3).all() and (eyes[:, 2] < 2.7).all()
    K = intrinsics_from_fov(70.0, 48, 48)
    view = select_viewpoint(room.raycaster, texels, needed, eyes, K, 48, g, min_cos=0.3)
    assert view is not None and view.gain > 50
    assert not (view.seen & ~needed).any()  # it only claims texels still needed
    # a random camera from the same eyes sees fewer of them: the search chooses
    random_c2w = look_at(eyes[0], torch.tensor([0.0, 0.0, 1.0]))
    from scene3d.methods.dreamspace.viewpoints import confident_sight

    idx = torch.nonzero(needed).squeeze(-1)
    assert int(confident_sight(room.raycaster, texels, idx, random_c2w, K, 48, min_cos=0.3).sum()) < view.gain
    # when nothing is needed there is no viewpoint
    assert select_viewpoint(room.raycaster, texels, torch.zeros_like(needed), eyes, K, 48, g, min_cos=0.3) is None


def test_imitating_network_reproduces_known_texels_and_fills_masked_ones(textured_room) -> None:
    """Trained on the texels outside a hole (a 1 m patch of wall), the texture field reproduces them and predicts
    the hole's colours well above chance; with training switched off (0 steps) both gates fail."""
    texels = textured_room.texels
    p, n = texels.positions, texels.normals
    truth = color_of(p)
    hole = (p[:, 0] > 1.99) & ((p[:, 1] - 0.3).abs() < 0.5) & ((p[:, 2] - 1.4).abs() < 0.5)
    known = torch.nonzero(~hole).squeeze(-1)
    assert 50 < int(hole.sum()) < 0.1 * texels.count

    def fit(steps: int) -> TextureField:
        torch.manual_seed(0)
        field = TextureField(torch.tensor([[-2.0, -2.0, 0.0], [2.0, 2.0, 3.0]]), n_frequencies=4, hidden_dim=64,
                             n_hidden_layers=2)  # fmt: skip
        opt = torch.optim.Adam(field.parameters(), lr=5e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            batch = known[sample_batch(known.numel(), 1024, g)]
            loss = imitation_loss(field, p[batch], n[batch], truth[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return field

    trained, untrained = fit(200), fit(0)
    psnr_known = psnr(trained.predict(p[known], n[known]), truth[known])
    psnr_hole = psnr(trained.predict(p[hole], n[hole]), truth[hole])
    off_known = psnr(untrained.predict(p[known], n[known]), truth[known])
    off_hole = psnr(untrained.predict(p[hole], n[hole]), truth[hole])
    print(f"imitation PSNR known {psnr_known:.1f} dB hole {psnr_hole:.1f} dB; untrained {off_known:.1f} / {off_hole:.1f}"
          f"; mean fill of the hole {psnr(truth[known].mean(0).expand(int(hole.sum()), 3), truth[hole]):.1f} dB")
    mean_fill = psnr(truth[known].mean(0).expand(int(hole.sum()), 3), truth[hole])  # the trivial way to fill it
    assert psnr_known > 30.0 and psnr_hole > 24.0 and psnr_hole > mean_fill + 6.0
    assert off_known < 20.0 and off_hole < 20.0


def test_panorama_only_texture_and_coverage() -> None:
    texture = torch.rand(4, 4, 3)
    source = torch.zeros(4, 4, dtype=torch.int8)
    source[:2] = TexelSource.PANORAMA
    surface = torch.ones(4, 4, dtype=torch.bool)
    surface[3, 3] = False
    out = panorama_only_texture(texture, source, surface)
    torch.testing.assert_close(out[:2], texture[:2])
    torch.testing.assert_close(out[2, 0], texture[:2].reshape(-1, 3).mean(0))
    assert texel_coverage(source, surface) == pytest.approx(8 / 15)
