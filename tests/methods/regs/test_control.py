"""Texture-guided control: the 9-way structured split, selection by colour gradient, threshold schedule, pruning."""

from __future__ import annotations

import math

import pytest
import torch

from scene3d.methods.regs import control
from scene3d.renderers.splats import PARAM_NAMES, random_quats
from scene3d.renderers.gaussians_project import quat_to_rotmat


def _params(n: int, seed: int = 0) -> torch.nn.ParameterDict:
    g = torch.Generator().manual_seed(seed)
    raw = {
        "means": torch.randn(n, 3, generator=g),
        "scales": torch.log(torch.rand(n, 3, generator=g) * 0.2 + 0.01),
        "quats": random_quats(n, g),
        "features_dc": torch.randn(n, 3, generator=g),
        "features_rest": torch.zeros(n, 3, 3),
        "opacities": torch.randn(n, 1, generator=g),
    }
    return torch.nn.ParameterDict({k: torch.nn.Parameter(raw[k]) for k in PARAM_NAMES})


def _adam(params) -> dict[str, torch.optim.Optimizer]:
    opts = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    for p in params.values():
        p.grad = torch.randn_like(p)
    for o in opts.values():
        o.step()
    return opts


@pytest.mark.parametrize("k", [0, 1, 3, 9, 10])
def test_count_after_split_is_n_minus_k_plus_9k(k: int):
    n = 20
    params = _params(n)
    opts = _adam(params)
    selected = torch.zeros(n, dtype=torch.bool)
    selected[torch.randperm(n)[:k]] = True
    assert control.split_gaussians(params, opts, selected, generator=torch.Generator().manual_seed(1)) == k
    for name, p in params.items():
        assert p.shape[0] == n - k + 9 * k, name
        # optimizer state follows its parameter: survivors keep theirs, children start at zero
        state = opts[name].state[p]
        assert state["exp_avg"].shape == p.shape
        if k:
            assert torch.all(state["exp_avg"][n - k :] == 0)


def test_children_inside_parent_3sigma_ellipsoid_one_at_mean_and_scaled_by_7_2():
    params = _params(12, seed=3)
    opts = _adam(params)
    before = {k: v.detach().clone() for k, v in params.items()}
    selected = torch.zeros(12, dtype=torch.bool)
    selected[[2, 5, 11]] = True
    control.split_gaussians(params, opts, selected, generator=torch.Generator().manual_seed(7))
    survivors = 12 - 3
    children = params["means"].detach()[survivors:].view(3, 9, 3)
    child_scales = torch.exp(params["scales"].detach()[survivors:]).view(3, 9, 3)
    for j, parent in enumerate([2, 5, 11]):
        mu = before["means"][parent]
        sigma = torch.exp(before["scales"][parent])
        rot = quat_to_rotmat(before["quats"][parent])
        local = (children[j] - mu) @ rot  # into the parent's frame: Rᵀ (x − μ)
        mahalanobis = ((local / sigma) ** 2).sum(-1).sqrt()
        assert torch.all(mahalanobis <= 3.0), mahalanobis
        assert torch.allclose(children[j][8], mu, atol=1e-6)  # the centre child
        assert int((mahalanobis < 1e-6).sum()) == 1
        # the 8 others sit in 8 distinct octants of the parent's frame
        octants = {tuple((local[c] > 0).tolist()) for c in range(8)}
        assert len(octants) == 8
        assert torch.allclose(child_scales[j], sigma.expand(9, 3) / 7.2, rtol=1e-5)
        # colour, opacity and rotation are copied
        for name in ("features_dc", "opacities", "quats"):
            got = params[name].detach()[survivors + 9 * j : survivors + 9 * (j + 1)]
            assert torch.equal(got, before[name][parent].expand_as(got)), name
    # the parents are gone, the others kept in order
    keep = [i for i in range(12) if i not in (2, 5, 11)]
    assert torch.equal(params["means"].detach()[:survivors], before["means"][keep])


def test_threshold_schedule_values():
    base, total = 5e-5, 3000
    assert control.densify_threshold(0, total, base) == pytest.approx(base)
    assert control.densify_threshold(1500, total, base) == pytest.approx(base * 0.5**1.1)
    assert control.densify_threshold(300, total, base) == pytest.approx(base * 0.9**1.1)
    knee = total * (1 - 0.2 ** (1 / 1.1))  # (1 − t/T)^1.1 = 0.2
    assert control.densify_threshold(math.ceil(knee) + 1, total, base) == pytest.approx(0.2 * base)
    assert control.densify_threshold(total, total, base) == pytest.approx(0.2 * base)
    assert control.densify_threshold(2 * total, total, base) == pytest.approx(0.2 * base)
    values = [control.densify_threshold(t, total, base) for t in range(0, total + 1, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    with pytest.raises(ValueError, match="total_steps"):
        control.densify_threshold(1, 0, base)


def test_selection_is_threshold_on_the_mean_over_visible_iterations():
    stats = control.GradientStats.zeros(4)
    visible = torch.tensor([True, True, False, True])
    stats.add(torch.tensor([1.0, 3.0, 100.0, 0.0]), torch.zeros(4), visible, torch.zeros(4))
    stats.add(torch.tensor([3.0, 3.0, 100.0, 0.0]), torch.zeros(4), torch.tensor([True, False, False, True]), torch.zeros(4))
    assert torch.allclose(stats.mean_color(), torch.tensor([2.0, 3.0, 0.0, 0.0]))
    assert control.select_for_split(stats.mean_color(), 2.0).tolist() == [True, True, False, False]
    assert control.select_top(torch.tensor([0.1, 0.9, 0.5, 0.7]), 2).tolist() == [False, True, False, True]


def test_prune_mask_transparent_and_oversized():
    op = torch.tensor([0.001, 0.5, 0.5, 0.5])
    radii = torch.tensor([1.0, 25.0, 1.0, 1.0])
    scales = torch.tensor([[0.01] * 3, [0.01] * 3, [0.5, 0.01, 0.01], [0.01] * 3])
    assert control.prune_mask(op, 0.005).tolist() == [True, False, False, False]
    got = control.prune_mask(op, 0.005, max_radii=radii, max_screen_radius=20.0, scales=scales, max_world_scale=0.4)
    assert got.tolist() == [True, True, True, False]


def test_split_rejects_a_wrong_mask():
    params = _params(5)
    with pytest.raises(ValueError, match="selected"):
        control.split_gaussians(params, {}, torch.ones(4, dtype=torch.bool))
