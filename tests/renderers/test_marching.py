"""render_rays: the evaluation path (one density pass) equals the training path (prune, then shade)."""

from __future__ import annotations

import pytest
import torch

from scene3d.fields.hash_grid import HashGridEncoding
from scene3d.fields.radiance import RadianceField
from scene3d.renderers.marching import MarchSettings, render_rays
from scene3d.renderers.occupancy import OccupancyGrid

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def blob_field() -> RadianceField:
    torch.manual_seed(0)
    enc = HashGridEncoding(n_levels=4, log2_hashmap_size=12, base_resolution=4, max_resolution=32, backend="torch")
    field = RadianceField(BOX, enc, density_hidden=16, color_hidden=16, color_extra_dim=2)
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)
    return field


def rays(n: int = 200):
    g = torch.Generator().manual_seed(1)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3
    targets = torch.rand(n, 3, generator=g) - 0.5
    return origins, torch.nn.functional.normalize(targets - origins, dim=-1)


def test_eval_and_training_paths_agree():
    field, grid = blob_field(), OccupancyGrid(BOX.reshape(-1), resolution=16)
    grid.update(0, lambda x: field.density(x) * 0.02)
    o, d = rays()
    march = MarchSettings(step_size=0.02, alpha_threshold=0.01, early_stop_eps=1e-3, backend="torch")
    extra = torch.randn(o.shape[0], 2)
    bg = torch.tensor([0.2, 0.4, 0.6])
    train = render_rays(field, grid, o, d, march, background=bg, color_extra=extra)
    assert train.rgb.requires_grad
    with torch.no_grad():
        ev = render_rays(field, grid, o, d, march, background=bg, color_extra=extra, with_normals=True)
    assert ev.n_samples == train.n_samples > 0
    torch.testing.assert_close(ev.rgb, train.rgb.detach())
    torch.testing.assert_close(ev.opacity, train.opacity.detach())
    torch.testing.assert_close(ev.depth, train.depth.detach())
    assert ev.normals is not None and ev.normals.shape == (o.shape[0], 3)
    hit = ev.opacity[:, 0] > 0.5
    torch.testing.assert_close(ev.normals[hit].norm(dim=-1), torch.ones(int(hit.sum())), atol=1e-4, rtol=0)


def test_empty_grid_shows_the_background_and_crop_bounds_apply():
    field, grid = blob_field(), OccupancyGrid(BOX.reshape(-1), resolution=8)
    o, d = rays(20)
    march = MarchSettings(step_size=0.05, backend="torch")
    bg, extra = torch.tensor([0.1, 0.9, 0.3]), torch.zeros(20, 2)
    with torch.no_grad():
        full = render_rays(field, grid, o, d, march, background=bg, color_extra=extra)
        cropped = render_rays(field, grid, o, d, march, background=bg, color_extra=extra, t_min=torch.zeros(20),
                              t_max=torch.full((20,), 0.5))
        grid.binaries[:] = False
        empty = render_rays(field, grid, o, d, march, background=bg, color_extra=extra)
    assert full.n_samples > 0 and cropped.n_samples == 0 and empty.n_samples == 0
    torch.testing.assert_close(empty.rgb, bg.expand(20, 3))
    torch.testing.assert_close(cropped.rgb, bg.expand(20, 3))
    assert bool((empty.depth == 0).all()) and bool((empty.opacity == 0).all())


@pytest.mark.gpu(backends=("nerfacc",))
def test_nerfacc_backend_renders_what_the_torch_path_renders_on_cuda():
    field = blob_field().cuda()
    grid = OccupancyGrid(BOX.reshape(-1), resolution=16).cuda()
    grid.update(0, lambda x: field.density(x) * 0.02)
    o, d = (t.cuda() for t in rays(500))
    extra = torch.randn(o.shape[0], 2, device="cuda")
    bg = torch.tensor([0.2, 0.4, 0.6], device="cuda")
    out = {}
    for backend in ("auto", "torch"):  # auto: nerfacc marching and compositing on CUDA
        march = MarchSettings(step_size=0.02, alpha_threshold=0.0, early_stop_eps=1e-4, backend=backend)
        with torch.no_grad():
            out[backend] = render_rays(field, grid, o, d, march, background=bg, color_extra=extra)
    # nerfacc's DDA and the torch twin may disagree on samples within float32 rounding of a cell face
    assert abs(out["auto"].n_samples - out["torch"].n_samples) <= 0.002 * out["torch"].n_samples
    torch.testing.assert_close(out["auto"].rgb, out["torch"].rgb, atol=2e-3, rtol=0)
    torch.testing.assert_close(out["auto"].opacity, out["torch"].opacity, atol=2e-3, rtol=0)
