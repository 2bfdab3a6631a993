"""The ReGS model: start from splat parameters, render diffuse colour, accumulate colour gradients, densify."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox

from scene3d.core.cameras import intrinsics_from_fov, look_at
from scene3d.methods.regs.model import ReGSModel, ReGSModelConfig
from scene3d.renderers.splats import PARAM_NAMES, random_quats, viewmats_from_c2w


def _splat(n: int = 300, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "means": torch.rand(n, 3, generator=g) * 1.6 - 0.8,
        "scales": torch.log(torch.rand(n, 3, generator=g) * 0.08 + 0.04),
        "quats": random_quats(n, g),
        "features_dc": torch.randn(n, 3, generator=g),
        "features_rest": torch.randn(n, 15, 3, generator=g),
        "opacities": torch.randn(n, 1, generator=g) + 1.0,
    }


def _model() -> ReGSModel:
    model = ReGSModelConfig(background_color="black").setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])), num_train_data=2, metadata={}
    )
    assert isinstance(model, ReGSModel)
    model.start_from(_splat())
    return model


def _cameras():
    K = intrinsics_from_fov(50.0, 16, 16)[None]
    vms = [viewmats_from_c2w(look_at(torch.tensor(e), torch.zeros(3))[None, :3, :4]) for e in ((0.3, -3.0, 1.2), (2.5, 1.0, 1.5))]
    return vms, K


def _loss_and_stats(model: ReGSModel, target_seed: int = 1):
    vms, K = _cameras()
    renders = [model.render(vm, K, 16, 16, torch.zeros(3), depth="accumulated") for vm in vms]
    target = torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(target_seed))
    loss = sum((r.rgb - target).abs().mean() + 0.1 * r.depth.mean() for r in renders)
    loss.backward()
    return renders


def test_start_zeroes_higher_sh_keeps_the_rest_and_records_the_source():
    model = _model()
    src = _splat()
    assert model.num_points == 300
    assert torch.all(model.gauss_params["features_rest"] == 0)
    assert model.gauss_params["features_rest"].shape == (300, 15, 3)  # the export layout of the source run
    assert not model.gauss_params["features_rest"].requires_grad
    for name in ("means", "scales", "quats", "features_dc", "opacities"):
        assert torch.equal(model.gauss_params[name].detach(), src[name])
        assert torch.equal(getattr(model, f"source_{name}"), src[name])
    assert set(model.get_param_groups()) == {"means", "scales", "quats", "features_dc", "opacities"}


def test_render_is_diffuse_colour_only_and_matches_the_source_at_start():
    model = _model()
    vms, K = _cameras()
    a = model.render(vms[0], K, 16, 16, torch.zeros(3), depth="accumulated")
    b = model.render_source(vms[0], K, 16, 16, torch.zeros(3), depth="accumulated")
    assert torch.allclose(a.rgb, b.rgb) and torch.allclose(a.depth, b.depth)
    assert float(a.alpha.detach().max()) > 0.5


@pytest.mark.parametrize("densify_by", ["color", "position"])
def test_selection_depends_only_on_the_chosen_gradient(densify_by: str):
    """Changing the positional gradients changes nothing under colour-guided densification (and the converse)."""
    base = _model()
    results = []
    for perturb in ("none", "position", "color"):
        model = copy.deepcopy(base)
        renders = _loss_and_stats(model)
        if perturb == "position":
            for r in renders:
                r.meta.means2d.grad = torch.rand_like(r.meta.means2d.grad) * 10.0
        if perturb == "color":
            model.gauss_params["features_dc"].grad = torch.rand_like(model.gauss_params["features_dc"].grad) * 10.0
        model.accumulate_stats(renders)
        opts = {k: torch.optim.Adam(p, lr=0.0) for k, p in model.get_param_groups().items()}
        threshold = float(model.stats.mean_color().quantile(0.8))
        position_threshold = float(model.stats.mean_position().quantile(0.8))
        n_split, _ = model.densify_and_prune(
            opts, densify_by=densify_by, threshold=threshold if perturb != "color" else 5.0,
            position_threshold=position_threshold if perturb != "position" else 5.0,
            min_opacity=0.0, prune_big=False, max_screen_radius=20.0, max_world_scale=0.1,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        assert n_split > 0
        results.append(model.gauss_params["means"].detach().clone())
    unperturbed, pos_changed, col_changed = results
    if densify_by == "color":
        assert torch.equal(unperturbed, pos_changed)
        assert not torch.equal(unperturbed, col_changed)
    else:
        assert torch.equal(unperturbed, col_changed)
        assert not torch.equal(unperturbed, pos_changed)


def test_a_split_budget_splits_exactly_that_many_by_the_chosen_gradient():
    counts = {}
    for mode, count in (("color", None), ("position", 7), ("color", 7), ("none", 7)):
        model = _model()
        model.accumulate_stats(_loss_and_stats(model))
        opts = {k: torch.optim.Adam(p, lr=0.0) for k, p in model.get_param_groups().items()}
        thr = float(model.stats.mean_color().quantile(0.9))
        counts[(mode, count)] = model.densify_and_prune(
            opts, densify_by=mode, threshold=thr, position_threshold=1e9, count=count, min_opacity=0.0,
            prune_big=False, max_screen_radius=20.0, max_world_scale=0.1,
        )[0]  # fmt: skip
        assert model.num_points == 300 + 8 * counts[(mode, count)]
        assert len(model.stats) == model.num_points and float(model.stats.count.sum()) == 0  # statistics restart
    assert counts[("color", None)] == 30  # the threshold at the 90 % quantile: 10 % of 300
    assert counts[("position", 7)] == counts[("color", 7)] == 7 and counts[("none", 7)] == 0


def test_accumulation_counts_gaussians_visible_in_any_render():
    model = _model()
    model.gauss_params["means"].data[0] = torch.tensor([50.0, 50.0, 50.0])  # outside both views
    renders = _loss_and_stats(model)
    model.accumulate_stats(renders)
    visible = torch.zeros(300, dtype=torch.bool)
    for r in renders:
        visible |= r.meta.radii[0] > 0
    assert torch.equal(model.stats.count > 0, visible)
    assert model.stats.count[0] == 0 and model.stats.color[0] == 0
    grad_norm = model.gauss_params["features_dc"].grad.norm(dim=-1)
    assert torch.allclose(model.stats.color[visible], grad_norm[visible])


def test_state_dict_round_trip_resizes_parameters_and_source():
    model = _model()
    opts = {k: torch.optim.Adam(p, lr=0.0) for k, p in model.get_param_groups().items()}
    model.accumulate_stats(_loss_and_stats(model))
    model.densify_and_prune(
        opts, densify_by="color", threshold=0.0, position_threshold=0.0, min_opacity=0.0,
        prune_big=False, max_screen_radius=20.0, max_world_scale=0.1,
    )  # fmt: skip
    state = model.state_dict()
    fresh = ReGSModelConfig().setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])), num_train_data=2, metadata={}
    )
    fresh.load_state_dict(state)
    assert fresh.num_points == model.num_points > 300
    assert fresh.source_means.shape == (300, 3)
    for name in PARAM_NAMES:
        assert torch.equal(fresh.gauss_params[name], model.gauss_params[name])
    assert math.isclose(float(fresh.gauss_params["features_rest"].abs().sum()), 0.0)
