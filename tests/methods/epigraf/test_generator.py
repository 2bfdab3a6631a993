"""The generator's layers, its patch rendering against its full rendering, and the volume rendering."""

import math

import pytest
import torch

from scene3d.core.cameras import intrinsics_from_fov
from scene3d.methods.epigraf.gan import Views, render_patches
from scene3d.methods.epigraf.generator import TriPlaneGenerator
from scene3d.methods.epigraf.layers import MappingNetwork, modulated_conv2d, upsample2d
from scene3d.methods.epigraf.patches import PatchParams, extract_patches
from scene3d.core.cameras import camera_angles, orbit_c2w
from scene3d.renderers.hierarchical import RaySettings, ray_cube_bounds, render_rays

R = 32


def _setup(batch: int = 2):
    torch.manual_seed(0)
    G = TriPlaneGenerator(z_dim=16, w_dim=16, triplane_resolution=16, triplane_channels=4, channel_base=256,
                          channel_max=16, mlp_hidden=16).eval()
    planes = G.planes(torch.randn(batch, 16), noise_mode="const")
    c2w = orbit_c2w(torch.tensor([0.3, -1.2])[:batch], torch.tensor([1.1, 1.6])[:batch], 1.0)
    K = intrinsics_from_fov(30.0, R, R).expand(batch, 3, 3)
    views = Views(c2w=c2w, K=K, near=torch.full((batch,), 0.75), far=torch.full((batch,), 1.25))
    settings = RaySettings(num_coarse=12, num_fine=12, background="constant")
    return G, planes, views, settings


def _render(G, planes, views, settings, params, r):
    return render_patches(G, planes, views, params, image_size=R, patch_resolution=r, cube_scale=0.5, rays=settings)


def test_full_patch_is_the_full_image():
    G, planes, views, settings = _setup()
    full = _render(G, planes, views, settings, PatchParams.full(2), R)
    again = _render(G, planes, views, settings, PatchParams(torch.ones(2), torch.zeros(2, 2)), R)
    torch.testing.assert_close(full.images, again.images)
    assert full.images.shape == (2, 3, R, R)
    assert full.images.std() > 1e-3  # not a constant image


def test_patch_render_equals_the_patch_cut_from_the_full_render():
    G, planes, views, settings = _setup()
    full = _render(G, planes, views, settings, PatchParams.full(2), R).images
    # aligned: s = 1/2, r = 8 -> patch pixels every 2 image pixels; o = (m - 1/2)/R puts their centres on pixel centres
    aligned = PatchParams(torch.full((2,), 0.5), torch.tensor([[7.5 / R, 3.5 / R], [12.5 / R, 0.5 / R]]))
    patch = _render(G, planes, views, settings, aligned, 8).images
    cut = extract_patches(full, aligned, 8)
    # the same rays: equal up to float32 summation order in the compositing
    torch.testing.assert_close(patch, cut, atol=1e-4, rtol=0)
    # arbitrary scale and offset: the cut interpolates the full render bilinearly between pixel centres
    odd = PatchParams(torch.tensor([0.61, 0.37]), torch.tensor([[0.123, 0.301], [0.55, 0.071]]))
    patch = _render(G, planes, views, settings, odd, 8).images
    cut = extract_patches(full, odd, 8)
    err = (patch - cut).abs()
    scale = full.amax() - full.amin()
    # bilinear tolerance: well inside the full render's own neighbour differences (a patch cut 2 pixels off gives a
    # mean error of ~0.016 here, 5x the bound)
    neighbour = (full[..., 1:, :] - full[..., :-1, :]).abs().amax()
    assert err.max() <= 0.25 * neighbour
    assert err.mean() < 0.005 * scale


def test_training_settings_are_stochastic_and_eval_settings_are_not():
    G, planes, views, settings = _setup()
    p = PatchParams.full(2)
    a = _render(G, planes, views, settings, p, 8).images
    b = _render(G, planes, views, settings, p, 8).images
    assert torch.equal(a, b)
    train = RaySettings(num_coarse=12, num_fine=12, density_noise_std=1.0, stratified=True, deterministic_fine=False)
    c = _render(G, planes, views, train, p, 8).images
    d = _render(G, planes, views, train, p, 8).images
    assert not torch.equal(c, d)


def test_volume_rendering_of_an_opaque_ball():
    def field(pts):
        inside = (pts.norm(dim=-1) < 0.3).float()
        return torch.tensor([1.0, -1.0, -1.0]).expand(*pts.shape[:-1], 3), 400.0 * inside - 200.0

    o = torch.tensor([[[0.0, 0.0, 1.0], [0.5, 0.0, 1.0]]])
    d = torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]])
    near, far = torch.full((1, 2), 0.5), torch.full((1, 2), 1.5)
    out = render_rays(field, o, d, near, far, RaySettings(num_coarse=48, num_fine=48, background="constant"))
    assert out.opacity[0, 0] > 0.99 and out.opacity[0, 1] < 0.01
    # density 200 inside: the termination distance past the surface at 0.7 is exponential with mean 1/200
    assert out.depth[0, 0] == pytest.approx(0.7 + 1 / 200, abs=0.01)
    torch.testing.assert_close(out.rgb[0, 0], torch.tensor([1.0, -1.0, -1.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(out.rgb[0, 1], torch.ones(3), atol=0.02, rtol=0)  # white background
    # importance sampling concentrates samples at the surface: the depth is sharper than coarse-only sampling
    coarse = render_rays(field, o, d, near, far, RaySettings(num_coarse=8, num_fine=0, background="constant"))
    fine = render_rays(field, o, d, near, far, RaySettings(num_coarse=8, num_fine=32, background="constant"))
    assert abs(fine.depth[0, 0] - 0.705) < abs(coarse.depth[0, 0] - 0.705)


def test_modulated_conv_fused_equals_unfused_and_upsampling_keeps_constants():
    x, w, s = torch.randn(3, 4, 8, 8), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    for up in (False, True):
        torch.testing.assert_close(modulated_conv2d(x, w, s, up=up, fused=True), modulated_conv2d(x, w, s, up=up, fused=False), atol=1e-5, rtol=1e-5)
    ones = upsample2d(torch.ones(1, 1, 6, 6))
    torch.testing.assert_close(ones[..., 2:-2, 2:-2], torch.ones(1, 1, 8, 8))


def test_truncation_pulls_w_to_its_mean():
    m = MappingNetwork(8, 0, 8)
    m.w_avg.copy_(torch.randn(8))
    z = torch.randn(3, 8)
    torch.testing.assert_close(m(z, truncation_psi=0.0), m.w_avg.expand(3, 8))
    w = m(z)
    torch.testing.assert_close(m(z, truncation_psi=0.5), m.w_avg + 0.5 * (w - m.w_avg))


def test_orbit_cameras_and_angles_round_trip():
    yaw, pitch = torch.tensor([0.4, -2.0, 3.0]), torch.tensor([0.3, 1.5, 2.8])
    c2w = orbit_c2w(yaw, pitch, 1.0)
    torch.testing.assert_close(camera_angles(c2w), torch.stack([yaw, pitch], -1))
    # cameras look at the origin: the -Z axis points from the eye to the origin
    forward = -c2w[:, :3, 2]
    torch.testing.assert_close(forward, -c2w[:, :3, 3] / c2w[:, :3, 3].norm(dim=-1, keepdim=True))
    assert torch.allclose(torch.det(c2w[:, :3, :3]), torch.ones(3))
    # official placement rotated to +Z up: pitch 0 is straight above
    assert orbit_c2w(torch.tensor([0.0]), torch.tensor([1e-5]), 1.0)[0, 2, 3] > 0.999


def test_ray_cube_bounds():
    o = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [5.0, 5.0, 2.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    t0, t1, hit = ray_cube_bounds(o, d, 0.5)
    torch.testing.assert_close(t0[:2], torch.tensor([1.5, 0.0]))
    torch.testing.assert_close(t1[:2], torch.tensor([2.5, 0.5]))
    assert hit.tolist() == [True, True, False]
    assert math.isfinite(float(t1[2]))
