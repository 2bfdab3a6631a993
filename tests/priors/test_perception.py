"""Depth (with alignment), normals, CLIP similarity and VGG feature pyramids."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scene3d.core.errors import ModelNotFoundError
from scene3d.priors import (
    PriorSettings,
    VGGFeatures,
    align_depth,
    gather_features,
    load_clip,
    load_depth,
    load_normals,
    nearest_feature_match,
    nnfm_loss,
)


def test_depth_alignment_recovers_a_known_scale_and_shift():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(2, 1, 12, 16, generator=g) + 0.5
    target = torch.stack([2.5 * pred[0] + 0.7, 0.4 * pred[1] + 3.0])
    mask = torch.rand(2, 1, 12, 16, generator=g) < 0.3  # sparse known depth
    target_noisy = torch.where(mask, target, torch.full_like(target, 1e3))  # garbage outside the mask is ignored
    fit = align_depth(pred, target_noisy, mask)
    torch.testing.assert_close(fit.scale, torch.tensor([2.5, 0.4]))
    torch.testing.assert_close(fit.shift, torch.tensor([0.7, 3.0]))
    torch.testing.assert_close(fit.depth, target)
    # disparity space: the prediction is an affine map of 1/depth
    disparity = 0.2 * (1.0 / target) - 0.05
    fit = align_depth(disparity, target, torch.ones_like(mask), space="disparity")
    torch.testing.assert_close(fit.scale, torch.tensor([5.0, 5.0]))
    torch.testing.assert_close(fit.shift, torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(fit.depth, target)
    with pytest.raises(ValueError, match="at least 2 valid pixels"):
        align_depth(pred, target, torch.zeros_like(mask))


def test_depth_estimator_shape_gradient_determinism(cpu_settings: PriorSettings):
    depth = load_depth("tiny-random", cpu_settings)
    assert depth.network_size(480, 640) == (28, 42)
    images = torch.rand(2, 3, 30, 40, requires_grad=True)
    out = depth(images)
    assert out.shape == (2, 1, 30, 40) and torch.equal(out, depth(images))
    out.mean().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_normals_are_unit_vectors_and_seeded(cpu_settings: PriorSettings):
    normals = load_normals("tiny-random", cpu_settings)
    images = torch.rand(2, 3, 20, 24)
    a = normals(images, generator=torch.Generator().manual_seed(0))
    b = normals(images, generator=torch.Generator().manual_seed(0))
    c = normals(images, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 20, 24) and torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(2, 20, 24))


def test_clip_similarities_are_differentiable_cosines(cpu_settings: PriorSettings):
    clip = load_clip("tiny-random", cpu_settings)
    images = torch.rand(3, 3, 40, 56, requires_grad=True)
    sim = clip.image_text_similarity(images, ["a red chair", "a lamp"])
    assert sim.shape == (3, 2) and bool((sim.abs() <= 1 + 1e-6).all())
    loss = clip.text_loss(images, "a red chair")
    torch.testing.assert_close(loss, (1 - sim[:, 0]).mean())
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    self_sim = clip.image_image_similarity(images.detach(), images.detach())
    assert self_sim.shape == (3, 3)
    torch.testing.assert_close(self_sim.diagonal(), torch.ones(3))


def test_vgg_pyramid_blocks_and_weights_file(tmp_path: Path):
    vgg = VGGFeatures.tiny_random(seed=0)
    images = torch.rand(2, 3, 64, 48, requires_grad=True)
    feats = vgg(images, blocks=(2, 3, 4))
    # ReGS's blocks: concatenated ReLUs of VGG blocks 3, 4, 5 (0-indexed 2, 3, 4) at 1/4, 1/8, 1/16 size
    assert [tuple(f.shape) for f in feats] == [(2, 24, 16, 12), (2, 48, 8, 6), (2, 48, 4, 3)]
    assert [tuple(f.shape) for f in vgg(images, blocks=(0, 1))] == [(2, 8, 64, 48), (2, 16, 32, 24)]
    feats[0].mean().backward()
    assert images.grad is not None and all(not p.requires_grad for p in vgg.parameters())
    vgg.save(tmp_path / "vgg16-397923af.pth")
    state = torch.load(tmp_path / "vgg16-397923af.pth", weights_only=True)
    assert "features.28.weight" in state  # torchvision's key layout
    loaded = VGGFeatures.from_pretrained(tmp_path / "vgg16-397923af.pth")
    for a, b in zip(loaded(images.detach()), vgg(images.detach())):
        assert torch.equal(a, b)
    with pytest.raises(ModelNotFoundError, match="s3d models fetch vgg16"):
        VGGFeatures.from_pretrained("vgg16", PriorSettings(models_dir=tmp_path / "none"))
    with pytest.raises(ValueError, match="blocks"):
        vgg(images, blocks=(5,))


def test_nearest_feature_matching_finds_permuted_features():
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(2, 8, 50, generator=g)
    perm = torch.randperm(50, generator=g)[:30]
    query = 3.0 * reference[:, :, perm]  # cosine distance ignores the scale
    match = nearest_feature_match(query, reference, chunk=7)
    assert torch.equal(match.index, perm.expand(2, -1))
    torch.testing.assert_close(match.distance, torch.zeros(2, 30), atol=1e-5, rtol=0)
    torch.testing.assert_close(gather_features(reference, match.index), reference[:, :, perm])
    feats = reference[:, :, :36].reshape(2, 8, 6, 6)
    assert nnfm_loss(feats, reference.reshape(2, 8, 5, 10)) < 1e-5
