"""NeuS opacity (Eq. 13) and the bounding-sphere sampler."""

from __future__ import annotations

import torch

from scene3d.renderers.neus import inv_sharpness, neus_alphas, sphere_bounds, stratified_samples
from scene3d.renderers.volume import composite_dense


def _render_depth(sdf_fn, origins, directions, sharpness, n=128):
    t_near, t_far, hit = sphere_bounds(origins, directions, torch.zeros(3), 1.0)
    edges = stratified_samples(t_near, t_far, n)
    points = origins[:, None] + directions[:, None] * edges[..., None]
    weights, _ = composite_dense(neus_alphas(sdf_fn(points), torch.tensor(sharpness)))
    mids = 0.5 * (edges[:, 1:] + edges[:, :-1])
    return (weights * mids).sum(-1), weights.sum(-1), hit


def test_sphere_bounds():
    o = torch.tensor([[0.0, -3.0, 0.0], [0.0, -3.0, 2.0]])
    d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    t_near, t_far, hit = sphere_bounds(o, d, torch.zeros(3), 1.0)
    assert hit.tolist() == [True, False]
    torch.testing.assert_close(t_near[0], torch.tensor(2.0))
    torch.testing.assert_close(t_far[0], torch.tensor(4.0))
    assert float(t_far[1] - t_near[1]) == 0.0


def test_weights_concentrate_at_the_zero_level_set_as_sharpness_grows():
    # a sphere of radius 0.5 seen from 3 units: the surface is at t = 2.5 on the central ray
    o = torch.tensor([[0.0, -3.0, 0.0]])
    d = torch.tensor([[0.0, 1.0, 0.0]])
    sphere = lambda p: p.norm(dim=-1) - 0.5  # noqa: E731
    errors = []
    for s in (20.0, 200.0, 2000.0):
        depth, opacity, _ = _render_depth(sphere, o, d, s)
        errors.append(abs(float(depth[0] / opacity[0]) - 2.5))
        assert float(opacity[0]) > 0.95
    assert errors[0] > errors[1] > errors[2] and errors[2] < 2e-3


def test_rays_that_miss_stay_transparent():
    o = torch.tensor([[0.0, -3.0, 0.8]])
    d = torch.tensor([[0.0, 1.0, 0.0]])
    _, opacity, hit = _render_depth(lambda p: p.norm(dim=-1) - 0.5, o, d, 500.0)
    # the official 1e-5 in the ratio leaves ~1e-5 per section: 128 sections give ~1e-3
    assert bool(hit[0]) and float(opacity[0]) < 3e-3


def test_sharpness_parametrisation():
    assert torch.isclose(inv_sharpness(torch.tensor(0.3)), torch.exp(torch.tensor(3.0)))
