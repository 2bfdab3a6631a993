"""s3d-splat's pure pieces: initialisation, camera conversion, Gaussian add/remove with optimizer state, MCMC's
torch relocation twin, and gsplat's DefaultStrategy running on CPU tensors."""

from __future__ import annotations

import math

import pytest
import torch

from scene3d.core.cameras import look_at
from scene3d.methods.s3d_splat import densify
from scene3d.renderers.splats import (
    PARAM_NAMES,
    append_gaussians,
    init_from_points,
    init_random,
    remove_gaussians,
    render,
    viewmats_from_c2w,
)
from scene3d.renderers.gaussians_project import sh_to_rgb


def _params_and_adam(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(n, 3, generator=g)
    init = init_from_points(xyz, torch.randint(0, 256, (n, 3), generator=g, dtype=torch.uint8), sh_degree=1, generator=g)
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v) for k, v in init.items()})
    opts = {k: torch.optim.Adam([p], lr=1e-2) for k, p in params.items()}
    loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in params.values())
    loss.backward()
    for o in opts.values():
        o.step()
    return params, opts


def test_init_from_points_follows_3dgs():
    xyz = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0], [1.0, 1.0, 1.0]])
    rgb = torch.tensor([[255, 0, 0]] * 5, dtype=torch.uint8)
    p = init_from_points(xyz, rgb, sh_degree=2, init_opacity=0.1)
    # point 0's three nearest neighbours are at 1, sqrt(3) and 2
    torch.testing.assert_close(p["scales"][0], torch.full((3,), math.log((1 + math.sqrt(3) + 2) / 3)))
    torch.testing.assert_close(sh_to_rgb(p["features_dc"][0]), torch.tensor([1.0, 0.0, 0.0]))
    assert p["features_rest"].shape == (5, 8, 3) and float(p["features_rest"].abs().max()) == 0.0
    torch.testing.assert_close(torch.sigmoid(p["opacities"]), torch.full((5, 1), 0.1))
    torch.testing.assert_close(p["quats"].norm(dim=-1), torch.ones(5))


def test_random_init_fills_the_box():
    aabb = torch.tensor([[-1.0, 0.0, 2.0], [1.0, 0.5, 3.0]])
    p = init_random(500, aabb, sh_degree=0, init_opacity=0.3, generator=torch.Generator().manual_seed(1))
    assert p["means"].shape == (500, 3) and p["features_rest"].shape == (500, 0, 3)
    assert bool(((p["means"] >= aabb[0]) & (p["means"] <= aabb[1])).all())
    torch.testing.assert_close(torch.sigmoid(p["opacities"]), torch.full((500, 1), 0.3))


def test_viewmats_from_c2w_is_the_opencv_inverse():
    c2w = look_at(torch.tensor([[2.0, -3.0, 1.0], [0.5, 0.2, 4.0]]), torch.zeros(2, 3))
    vm = viewmats_from_c2w(c2w[:, :3])
    expected = torch.linalg.inv(c2w @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])))
    torch.testing.assert_close(vm, expected, rtol=1e-5, atol=1e-5)
    # a point in front of an OpenGL camera (−z) has positive OpenCV depth
    assert float((vm[0] @ torch.tensor([0.0, 0.0, 0.0, 1.0]))[2]) > 0


def test_append_and_remove_keep_adam_state_in_step():
    params, opts = _params_and_adam()
    before = {k: opts[k].state[params[k]]["exp_avg"].clone() for k in PARAM_NAMES}
    new = {k: torch.zeros(3, *v.shape[1:]) for k, v in params.items()}
    append_gaussians(params, opts, new)
    for k in PARAM_NAMES:
        p = params[k]
        assert p.shape[0] == 43 and opts[k].param_groups[0]["params"][0] is p
        state = opts[k].state[p]
        torch.testing.assert_close(state["exp_avg"][:40], before[k])
        assert float(state["exp_avg"][40:].abs().max()) == 0.0 and state["exp_avg_sq"].shape == p.shape
    mask = torch.zeros(43, dtype=torch.bool)
    mask[[0, 5, 41]] = True
    remove_gaussians(params, opts, mask)
    keep = [i for i in range(40) if i not in (0, 5)]
    for k in PARAM_NAMES:
        assert params[k].shape[0] == 40
        torch.testing.assert_close(opts[k].state[params[k]]["exp_avg"][:38], before[k][keep])
    # the optimizers still step the new parameters
    sum(p.sum() for p in params.values()).backward()
    for o in opts.values():
        o.step()
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        remove_gaussians(params, opts, torch.zeros(3, dtype=torch.bool))


def test_relocation_matches_the_mcmc_formula():
    binoms = densify.binomial_table()
    opac = torch.tensor([0.3, 0.9, 0.05, 0.6], dtype=torch.float64)
    scales = torch.rand(4, 3, dtype=torch.float64) + 0.1
    ratios = torch.tensor([1, 2, 5, 60])
    new_o, new_s = densify.relocation_scales(opac, scales, ratios, binoms.double())
    for j in range(4):
        n = min(int(ratios[j]), densify.N_MAX)
        o2 = 1 - (1 - float(opac[j])) ** (1 / n)
        denom = sum(
            math.comb(i - 1, k) * (-1) ** k / math.sqrt(k + 1) * o2 ** (k + 1) for i in range(1, n + 1) for k in range(i)
        )
        assert abs(float(new_o[j]) - o2) < 1e-12
        torch.testing.assert_close(new_s[j], float(opac[j]) / denom * scales[j])
    torch.testing.assert_close(new_s[0], scales[0])  # n = 1 changes nothing


def test_torch_mcmc_strategy_relocates_dead_and_adds_gaussians():
    params, opts = _params_and_adam(n=50)
    with torch.no_grad():
        params["opacities"][:10] = -10.0  # dead
    strategy = densify.make_strategy("mcmc", "cpu", cap_max=60, refine_start_iter=0, refine_every=1, min_opacity=0.005)
    assert isinstance(strategy, densify.TorchMCMCStrategy)
    state = strategy.initialize_state()
    means_before = params["means"].detach().clone()
    strategy.step_post_backward(params, opts, state, step=1, info={}, lr=1e-3)
    assert params["means"].shape[0] == 52  # 5 % more, under the cap
    assert float(torch.sigmoid(params["opacities"][:50]).min()) > 0.005  # no dead Gaussian is left
    assert not torch.equal(params["means"][:50], means_before)  # noise moved (near-)transparent ones
    for k in PARAM_NAMES:
        assert opts[k].state[params[k]]["exp_avg"].shape == params[k].shape


def test_gsplat_default_strategy_densifies_on_cpu():
    params, opts = _params_and_adam(n=60)
    strategy = densify.make_strategy("default", "cpu", refine_start_iter=0, refine_every=1, grow_grad2d=0.0, reset_every=1000)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmat = viewmats_from_c2w(look_at(torch.tensor([0.5, -3.0, 1.0]), torch.full((3,), 0.5))[None, :3])
    K = torch.tensor([[[40.0, 0, 24], [0, 40.0, 24], [0, 0, 1]]])
    rgb, _, meta = render(params, viewmat, K, 48, 48, sh_degree=1, absgrad=strategy.absgrad, backend="torch")
    strategy.step_pre_backward(params, opts, state, 1, meta)
    rgb.mean().backward()
    strategy.step_post_backward(params, opts, state, 1, meta, packed=False)
    assert params["means"].shape[0] > 60  # every visible Gaussian with a gradient was cloned or split
    for k in PARAM_NAMES:
        assert opts[k].state[params[k]]["exp_avg"].shape == params[k].shape
