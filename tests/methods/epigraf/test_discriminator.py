"""The scale-aware patch discriminator and the GAN losses."""

import torch

from scene3d.methods.epigraf.discriminator import PatchDiscriminator, minibatch_stddev
from scene3d.methods.epigraf.gan import discriminator_loss, ema_beta, generator_loss, r1_penalty, update_ema
from scene3d.methods.epigraf.layers import FourierScalarEncoder
from scene3d.methods.epigraf.patches import PatchParams


def _d(**kw) -> PatchDiscriminator:
    torch.manual_seed(0)
    return PatchDiscriminator(image_resolution=64, patch_resolution=16, channel_base=512, channel_max=32,
                              patch_embed_dim=16, hyper_dim=32, **kw)


def test_depth_matches_a_full_resolution_discriminator():
    d = _d()
    assert d.num_start_blocks == 2  # log2(64 / 16)
    downs = [b.conv1.down for b in d.blocks]
    assert downs == [False, False, True, True]  # 16 -> 16 -> 16 -> 8 -> 4


def test_output_changes_with_patch_params_through_the_modulation():
    d = _d().eval()
    img = torch.randn(4, 3, 16, 16)
    p1 = PatchParams(torch.full((4,), 1.0), torch.zeros(4, 2))
    p2 = PatchParams(torch.full((4,), 0.25), torch.tensor([[0.5, 0.1]]).expand(4, 2))
    assert not torch.allclose(d(img, p1), d(img, p2))
    # the hyper-modulation itself is live: block features differ with the code alone
    codes = [d.hyper_mapping(None, d.patch_encoder(p.as_condition())) for p in (p1, p2)]
    feats = [d.blocks[0](None, img, c) for c in codes]
    assert (feats[0] - feats[1]).abs().mean() > 1e-3
    # ... and a plain (not scale-aware) discriminator ignores the patch parameters
    plain = _d(scale_aware=False).eval()
    torch.testing.assert_close(plain(img, p1), plain(img, p2))


def test_gradients_reach_the_modulation_affines():
    d = _d()
    img = torch.randn(4, 3, 16, 16)
    p = PatchParams(torch.rand(4) * 0.5 + 0.5, torch.rand(4, 2) * 0.2)
    d(img, p).sum().backward()
    for block in d.blocks:
        assert block.conv1.affine.weight.grad is not None and block.conv1.affine.weight.grad.abs().sum() > 0


def test_patch_encoder_matches_the_official_dimensions():
    enc = FourierScalarEncoder(3, 1000.0, 256)
    # 2^ceil(log2 1000) = 1024 -> 10 frequencies, sin and cos, plus a 256-d embedding, for each of 3 scalars
    assert enc.out_dim == 3 * (20 + 256)
    assert enc(torch.rand(5, 3)).shape == (5, enc.out_dim)


def test_minibatch_std_uses_consecutive_groups():
    x = torch.zeros(4, 1, 2, 2)
    x[:2] = torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1)  # group 0 varies, group 1 is constant
    y = minibatch_stddev(x, 2)[:, 1, 0, 0]
    assert torch.allclose(y[:2], torch.ones(2), atol=1e-3) and torch.allclose(y[2:], torch.zeros(2), atol=1e-3)


def test_losses_and_r1():
    d = _d()
    real = torch.randn(4, 3, 16, 16, requires_grad=True)
    p = PatchParams.full(4)
    logits = d(real, p)
    penalty = r1_penalty(logits, real)
    assert penalty.shape == (4,) and torch.isfinite(penalty).all() and (penalty > 0).all()
    penalty.mean().backward()
    assert all(q.grad is not None for q in d.blocks[0].conv0.parameters())
    zero = torch.zeros(3)
    torch.testing.assert_close(generator_loss(zero), torch.log(torch.tensor(2.0)))
    torch.testing.assert_close(discriminator_loss(zero, zero), 2 * torch.log(torch.tensor(2.0)))


def test_ema():
    assert ema_beta(64, 0, 20000.0) == 0.0  # first step copies
    assert abs(ema_beta(64, 10_000_000, 20000.0) - 0.5 ** (64 / 20000)) < 1e-12
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    old = a.weight.detach().clone()
    update_ema(a, b, 0.25)
    torch.testing.assert_close(a.weight, 0.25 * old + 0.75 * b.weight)
    update_ema(a, b, 0.0)
    torch.testing.assert_close(a.weight, b.weight)
