"""Template-correspondence matching (cached NNFM, colour patches) and online NNFM, with tiny random VGG features."""

from __future__ import annotations

import pytest
import torch

from scene3d.methods.regs import matching
from scene3d.priors.vgg import VGGFeatures


@pytest.fixture(scope="module")
def vgg() -> VGGFeatures:
    return VGGFeatures.tiny_random(seed=0)


def _image(seed: int, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")[0].permute(1, 2, 0) * 0.85


def test_matching_the_template_against_itself_is_the_identity(vgg):
    style, template = _image(0), _image(1)
    targets = matching.StyleTargets.compute(vgg, style, template)
    m = matching.match_view(targets, vgg, template)
    for b in targets.blocks:
        n = targets.template_features[b].shape[-1]
        feats = torch.nn.functional.normalize(targets.template_features[b], dim=1)
        sim = feats[0].T @ feats[0]
        unique = (sim - torch.eye(n)).amax(dim=1) < 1 - 1e-6  # positions whose feature has no exact twin
        assert torch.equal(m.nnfm_index[b][0][unique], torch.arange(n)[unique])
    assert torch.all(m.patch_index >= 0) and torch.allclose(m.patch_weight, torch.ones_like(m.patch_weight), atol=1e-5)


def test_cached_losses_pull_toward_the_style_at_the_template_match(vgg):
    style, template = _image(0), _image(1)
    targets = matching.StyleTargets.compute(vgg, style, template)
    m = matching.match_view(targets, vgg, template)
    # a render equal to the style at the template's view: every cached target is met exactly
    feats = matching.render_features(vgg, style, targets.blocks)
    assert float(matching.cached_nnfm_loss(targets, m, feats)) == pytest.approx(0.0, abs=1e-5)
    assert float(matching.patch_color_loss(targets, m, style)) == pytest.approx(0.0, abs=1e-7)
    # a render equal to the content is far from it, and the gradient of the loss points toward the style
    render = template.clone().requires_grad_(True)
    loss = matching.cached_nnfm_loss(targets, m, matching.render_features(vgg, render, targets.blocks))
    loss = loss + matching.patch_color_loss(targets, m, render)
    assert float(loss.detach()) > 0.01
    loss.backward()
    stepped = (template - 0.5 * render.grad / render.grad.abs().max()).detach()
    after = matching.cached_nnfm_loss(targets, m, matching.render_features(vgg, stepped, targets.blocks))
    after = after + matching.patch_color_loss(targets, m, stepped)
    assert float(after) < float(loss.detach())


def test_patch_colour_loss_by_hand(vgg):
    style, template = _image(0, 32), _image(1, 32)
    targets = matching.StyleTargets.compute(vgg, style, template)  # 32 px: a 2x2 coarse grid
    m = matching.ViewMatches(
        nnfm_index={},
        patch_index=torch.tensor([[3, -1, 0, 1]]),
        patch_weight=torch.tensor([[0.5, 0.0, 1.0, 0.8]]),
    )
    render = torch.rand(32, 32, 3) * 0.8
    out = matching.coarse(render.permute(2, 0, 1)[None])[0].reshape(3, 4)  # the render's 2x2 grid
    cs = targets.coarse_style[0]  # [3, 4]
    expected = (
        0.5 * (cs[:, 3] - out[:, 0]).pow(2).mean()  # cell 0 matched to reference cell 3, weight 0.5
        + 0.0  # cell 1: no match
        + 1.0 * (cs[:, 0] - out[:, 2]).pow(2).mean()
        + 0.8 * (cs[:, 1] - out[:, 3]).pow(2).mean()
    ) / 4 * 15
    assert float(matching.patch_color_loss(targets, m, render)) == pytest.approx(float(expected), rel=1e-5)
    # near-white render cells (mean > 0.9) are left out
    assert float(matching.patch_color_loss(targets, m, torch.full((32, 32, 3), 0.95))) == 0.0


def test_far_block4_matches_are_dropped(vgg):
    style, template = _image(0), _image(1)
    targets = matching.StyleTargets.compute(vgg, style, template)
    none = matching.match_view(targets, vgg, template, max_distance=-1.0)
    assert torch.all(none.patch_index == -1) and torch.all(none.patch_weight == 0)
    assert float(matching.patch_color_loss(targets, none, template)) == 0.0


def test_online_nnfm_is_zero_on_the_style_and_positive_elsewhere(vgg):
    style = _image(0)
    other = torch.rand(48, 48, 3, generator=torch.Generator().manual_seed(5))  # noise: unlike any style feature
    targets = matching.StyleTargets.compute(vgg, style, _image(1))
    on_style = float(matching.online_nnfm_loss(targets, matching.render_features(vgg, style, targets.blocks)))
    assert on_style == pytest.approx(0.0, abs=1e-5)
    assert float(matching.online_nnfm_loss(targets, matching.render_features(vgg, other, targets.blocks))) > 1e-3


def test_size_checks(vgg):
    with pytest.raises((ValueError, TypeError), match="(same shape|template)"):  # the shape checker is first in tests
        matching.StyleTargets.compute(vgg, _image(0, 32), _image(1, 48))
    with pytest.raises(ValueError, match="at least 16"):
        matching.coarse(torch.rand(1, 3, 8, 8))
