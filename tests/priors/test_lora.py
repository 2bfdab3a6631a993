"""The LoRA variational model: starts equal to the base, trains without touching the base weights."""

from __future__ import annotations

import pytest
import torch

from scene3d.priors import LoRAAdapter, PriorSettings, VariationalScore, load_diffusion


@pytest.fixture()
def prior(cpu_settings: PriorSettings):
    return load_diffusion("tiny-random", cpu_settings)


def test_lora_update_leaves_base_weights_bit_identical(prior):
    base = {k: v.clone() for k, v in prior.unet.state_dict().items()}
    adapter = LoRAAdapter(prior.unet, rank=4)
    model = VariationalScore(prior, adapter)
    emb, cams = prior.embed("a chair"), torch.eye(4).expand(2, 4, 4).clone()
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([400, 400])
    eps_base = prior.predict_noise(x, t, emb).eps
    # zero-initialised B and camera layer: ε_ψ = ε_φ before training
    torch.testing.assert_close(model.predict_noise(x, t, emb, cams), eps_base)
    optimizer = torch.optim.Adam(adapter.parameters(), lr=1e-2)
    latents = torch.randn(2, 4, 8, 8)
    for i in range(3):
        loss = model.diffusion_loss(latents, emb, cams, generator=torch.Generator().manual_seed(i))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = prior.unet.state_dict()
    assert after.keys() == base.keys()
    assert all(torch.equal(after[k], base[k]) for k in base)
    assert all(p.grad is None for p in prior.unet.parameters())
    # the LoRA copy moved, the base prediction did not, and the camera now matters
    assert not torch.allclose(model.predict_noise(x, t, emb, cams), eps_base)
    assert torch.equal(prior.predict_noise(x, t, emb).eps, eps_base)
    other_cams = cams.clone()
    other_cams[:, :3, 3] = torch.tensor([0.0, 0.0, 3.0])
    assert not torch.allclose(model.predict_noise(x, t, emb, cams), model.predict_noise(x, t, emb, other_cams))
    adapter.remove()
    assert prior.unet.class_embedding is None


def test_adapter_validates(prior):
    adapter = LoRAAdapter(prior.unet, rank=2)
    model = VariationalScore(prior, adapter)
    with pytest.raises(ValueError, match="cameras must hold 1"):
        model.predict_noise(torch.randn(1, 4, 8, 8), 10, prior.embed("a"), None)
    adapter.remove()
    with pytest.raises(ValueError, match="rank"):
        LoRAAdapter(prior.unet, rank=0)
