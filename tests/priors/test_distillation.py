"""SDS, VSD and DSD gradients, timestep schedules and weights."""

from __future__ import annotations

import pytest
import torch

from scene3d.priors import (
    LoRAAdapter,
    StableDiffusionPrior,
    TimestepSchedule,
    VariationalScore,
    dsd,
    sds,
    timestep_weight,
    vsd,
)


def _latents(sd: StableDiffusionPrior) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    return images, sd.encode_images(images)


def test_sds_gradient_is_weighted_cfg_residual(sd: StableDiffusionPrior):
    images, z = _latents(sd)
    z.retain_grad()
    emb = sd.embed(["a chair", "a lamp"], "blurry")
    t = torch.tensor([100, 850])
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = sds(sd, z, emb, guidance_scale=30.0, timesteps=t, noise=noise, weighting="sds")
    out.loss.backward()
    # independent reference: separate conditional and unconditional UNet passes, CFG by hand
    a = sd.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * z.detach() + (1 - a).sqrt() * noise
    with torch.no_grad():
        eps_y = sd.unet(x_t, t, encoder_hidden_states=emb.cond).sample
        eps_0 = sd.unet(x_t, t, encoder_hidden_states=emb.uncond).sample
    expected = (1 - a) * (eps_0 + 30.0 * (eps_y - eps_0) - noise)
    # one batched pass vs two separate passes round differently (~1e-6), and CFG at s = 30 multiplies that
    torch.testing.assert_close(out.grad, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z.grad, expected / 2, rtol=1e-4, atol=1e-4)  # the surrogate averages over B
    assert images.grad is not None and images.grad.abs().sum() > 0  # reaches the renders through the VAE
    torch.testing.assert_close(out.noisy_latents, x_t)


def test_sds_is_deterministic_given_a_generator(sd: StableDiffusionPrior):
    _, z = _latents(sd)
    emb = sd.embed("a chair")
    runs = [sds(sd, z, emb, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0].grad, runs[1].grad) and torch.equal(runs[0].timesteps, runs[1].timesteps)
    clipped = sds(sd, z, emb, generator=torch.Generator().manual_seed(7), grad_clip=0.01)
    assert clipped.grad.abs().max() <= 0.01


@pytest.fixture(scope="module")
def variational(sd: StableDiffusionPrior):
    adapter = LoRAAdapter(sd.unet, rank=2)
    with torch.no_grad():  # a trained-looking ε_ψ: non-zero LoRA and camera pathway
        for p in adapter.up.parameters():
            p.normal_(std=0.05)
        adapter.camera.mlp[2].weight.normal_(std=0.05)
    yield VariationalScore(sd, adapter)
    adapter.remove()


def test_dsd_reduces_to_sds_without_its_variational_term(sd: StableDiffusionPrior, variational: VariationalScore):
    _, z = _latents(sd)
    emb, cams = sd.embed("a chair", "blurry"), torch.eye(4).expand(2, 4, 4)
    kw = dict(timesteps=torch.tensor([300, 700]), noise=torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2)))
    reference = sds(sd, z, emb, guidance_scale=7.5, **kw)
    for model in (variational, None):
        out = dsd(sd, model, z, emb, cams, cfg_weight=6.5, variational_weight=0.0, **kw)
        torch.testing.assert_close(out.grad, reference.grad, rtol=1e-6, atol=1e-6)
    # and to VSD (same CFG) with the variational term fully on
    full = dsd(sd, variational, z, emb, cams, cfg_weight=6.5, variational_weight=1.0, **kw)
    torch.testing.assert_close(full.grad, vsd(sd, variational, z, emb, cams, guidance_scale=7.5, **kw).grad)
    assert not torch.allclose(full.grad, reference.grad)
    with pytest.raises(ValueError, match="needs a VariationalScore"):
        dsd(sd, None, z, emb, cams, variational_weight=0.5)


def test_vsd_gradient_uses_the_variational_score(sd: StableDiffusionPrior, variational: VariationalScore):
    _, z = _latents(sd)
    emb, cams = sd.embed("a chair"), torch.eye(4).expand(2, 4, 4)
    t, noise = torch.tensor([500, 500]), torch.randn(2, 4, 8, 8)
    out = vsd(sd, variational, z, emb, cams, guidance_scale=7.5, timesteps=t, noise=noise)
    eps_psi = variational.predict_noise(out.noisy_latents, t, emb, cams)
    w = 1 - sd.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(out.grad, w * (out.eps_pred - eps_psi))


def test_timestep_schedule_annealing():
    assert TimestepSchedule().bounds(0, 1000) == (20, 979)
    linear = TimestepSchedule(anneal="linear", max_ratio_end=0.5, anneal_steps=100)
    assert linear.upper(0) == pytest.approx(0.98) and linear.upper(50) == pytest.approx(0.74)
    assert linear.upper(500) == pytest.approx(0.5)
    sqrt = TimestepSchedule(anneal="sqrt", max_ratio_end=0.5, anneal_steps=100)
    assert sqrt.upper(25) == pytest.approx(0.98 - 0.48 * 0.5)
    step = TimestepSchedule(anneal="step", anneal_steps=5000)
    assert step.upper(4999) == 0.98 and step.upper(5000) == 0.5
    t = linear.sample(100, 512, 1000, torch.Generator().manual_seed(0))
    lo, hi = linear.bounds(100, 1000)
    assert t.min() >= lo and t.max() <= hi and hi == 500
    with pytest.raises(ValueError):
        TimestepSchedule(min_ratio=0.6, max_ratio=0.5)


def test_timestep_weights():
    a = torch.tensor([0.25, 0.81])
    torch.testing.assert_close(timestep_weight(a, "sds"), torch.tensor([0.75, 0.19]))
    torch.testing.assert_close(timestep_weight(a, "uniform"), torch.ones(2))
    torch.testing.assert_close(timestep_weight(a, "fantasia3d"), torch.tensor([0.5 * 0.75, 0.9 * 0.19]))
