"""Self-attention control: query capture and injection (QNeRF), key/value injection (MasaCtrl)."""

from __future__ import annotations

import pytest
import torch

from scene3d.priors import (
    AttentionControl,
    StableDiffusionPrior,
    query_distance,
    self_attention_layers,
    soft_query_injection,
    tokens_to_map,
)


def _inputs(seed: int) -> torch.Tensor:
    return torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(seed))


def test_query_capture_shapes_per_layer(sd: StableDiffusionPrior):
    layers = self_attention_layers(sd.unet, "decoder")
    # like SD's 3 x 3 decoder self-attention layers, the tiny UNet has 2 levels x 2 layers, coarse to fine
    assert len(layers) == 4 and all(name.startswith("up_blocks.") and name.endswith("attn1") for name in layers)
    emb = sd.embed("a chair")
    with AttentionControl(sd.unet, layers, record_queries=True) as ctrl:
        sd.predict_noise(_inputs(0), 500, emb, guidance_scale=3.0)  # CFG: the UNet batch is 2 x 2
    expected = [(4, 24, 16), (4, 24, 16), (4, 96, 8), (4, 96, 8)]  # (batch, h*w tokens, channels)
    assert [tuple(ctrl.queries[name].shape) for name in layers] == expected
    assert tokens_to_map(ctrl.queries[layers[0]], 8, 12).shape == (4, 16, 4, 6)
    assert tokens_to_map(ctrl.queries[layers[-1]], 8, 12).shape == (4, 8, 8, 12)


def test_injecting_captured_queries_reproduces_output_and_others_change_it(sd: StableDiffusionPrior):
    layers = self_attention_layers(sd.unet)
    emb, x, other = sd.embed("a chair"), _inputs(0), _inputs(1)
    processors_before = dict(sd.unet.attn_processors)
    reference = sd.predict_noise(x, 500, emb).eps
    with AttentionControl(sd.unet, layers, record_queries=True) as ctrl:
        assert torch.equal(sd.predict_noise(x, 500, emb).eps, reference)  # the processor itself changes nothing
        own = dict(ctrl.queries)
        sd.predict_noise(other, 500, emb)
        foreign = dict(ctrl.queries)
    assert dict(sd.unet.attn_processors) == processors_before  # restored on exit
    with AttentionControl(sd.unet, layers, inject_queries=own):
        assert torch.equal(sd.predict_noise(x, 500, emb).eps, reference)
    with AttentionControl(sd.unet, layers, inject_queries=foreign):
        assert not torch.allclose(sd.predict_noise(x, 500, emb).eps, reference, atol=1e-4)
    # batch-B targets serve both CFG branches
    with AttentionControl(sd.unet, layers, record_queries=True) as ctrl:
        guided = sd.predict_noise(x, 500, emb, guidance_scale=3.0).eps
        both = dict(ctrl.queries)
    half = {k: v[2:] for k, v in both.items()}
    with AttentionControl(sd.unet, layers, inject_queries=half):
        assert not torch.equal(sd.predict_noise(x, 500, emb, guidance_scale=3.0).eps, guided)
    with AttentionControl(sd.unet, layers, inject_queries=both):
        assert torch.equal(sd.predict_noise(x, 500, emb, guidance_scale=3.0).eps, guided)


def test_masactrl_key_value_injection(sd: StableDiffusionPrior):
    layers = self_attention_layers(sd.unet)[2:]
    emb, source, target = sd.embed("a cat"), _inputs(2), _inputs(3)
    reference = sd.predict_noise(target, 400, emb).eps
    with AttentionControl(sd.unet, layers, record_kv=True) as ctrl:
        sd.predict_noise(target, 400, emb)  # its own keys/values: injecting them changes nothing
        ctrl.record_kv, ctrl.inject_kv = False, True
        assert torch.equal(sd.predict_noise(target, 400, emb).eps, reference)
        ctrl.record_kv, ctrl.inject_kv = True, False
        sd.predict_noise(source, 400, emb)  # source pass
        ctrl.record_kv, ctrl.inject_kv = False, True
        edited = sd.predict_noise(target, 400, emb).eps
    assert not torch.allclose(edited, reference, atol=1e-4)
    with pytest.raises(ValueError, match="no keys/values recorded"):
        with AttentionControl(sd.unet, layers, inject_kv=True):
            sd.predict_noise(target, 400, emb)


def test_soft_query_injection_step_reduces_the_query_distance(sd: StableDiffusionPrior):
    layers = self_attention_layers(sd.unet)
    emb, x = sd.embed("a chair"), _inputs(4)
    with AttentionControl(sd.unet, layers, record_queries=True) as ctrl:
        sd.predict_noise(_inputs(5), 600, emb)
        targets = dict(ctrl.queries)
    step = soft_query_injection(sd, x, 600, emb, targets, step_size=1e-3)
    assert step.latents.shape == x.shape and not step.latents.requires_grad
    with AttentionControl(sd.unet, layers, record_queries=True) as ctrl:
        sd.predict_noise(step.latents, 600, emb)
        after = query_distance(ctrl.queries, targets)
    assert after < step.distance
    with pytest.raises(ValueError, match="not found"):
        AttentionControl(sd.unet, ["up_blocks.9.attn1"])


def test_kv_layers_apart_from_query_layers(sd: StableDiffusionPrior):
    layers = self_attention_layers(sd.unet)
    queries_at, kv_at = layers[:2], layers[2:]
    emb, source, target = sd.embed("a cat"), _inputs(6), _inputs(7)
    with AttentionControl(sd.unet, queries_at, record_queries=True, record_kv=True, kv_layers=kv_at) as ctrl:
        sd.predict_noise(source, 400, emb)
        assert sorted(ctrl.queries) == sorted(queries_at) and sorted(ctrl.keys) == sorted(kv_at)
        ctrl.record_kv, ctrl.inject_kv = False, True
        injected = sd.predict_noise(target, 400, emb).eps
    with AttentionControl(sd.unet, kv_at, record_kv=True) as ctrl:  # the same injection with one layer list
        sd.predict_noise(source, 400, emb)
        ctrl.record_kv, ctrl.inject_kv = False, True
        assert torch.equal(sd.predict_noise(target, 400, emb).eps, injected)


def test_soft_injection_with_control_inside_a_kv_injecting_control(sd: StableDiffusionPrior):
    """QNeRF's guided step: the natural queries come from the ControlNet-guided pass that attends to the source's
    keys/values; the step lowers the distance measured in that same pass, for both step rules."""
    from scene3d.core.cameras import CameraBatch
    from scene3d.priors import ControlInput

    layers = self_attention_layers(sd.unet)
    emb, source, x = sd.embed(["a cat", "a dog"]), _inputs(8), _inputs(9)
    control = ControlInput(torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0)))
    cameras = CameraBatch.from_fov(torch.eye(4).expand(2, 4, 4), 50.0, 24, 16)
    with AttentionControl(sd.unet, layers, kv_layers=layers[2:], record_kv=True) as ctrl:
        sd.predict_noise(source, 600, emb)
        ctrl.record_kv, ctrl.inject_kv = False, True
        ctrl.record_queries = True
        sd.predict_noise(_inputs(10), 600, emb, control=control)
        targets = {k: v.clone() for k, v in ctrl.queries.items()}
        ctrl.record_queries = False
        for rule, alpha in (("gradient", 1e-3), ("polyak", 0.3)):
            step = soft_query_injection(sd, x, 600, emb, targets, step_size=alpha, rule=rule, control=control,
                                        cameras=cameras, attention=ctrl)  # fmt: skip
            assert not ctrl.record_queries and ctrl.inject_kv  # the control's flags are as they were
            ctrl.record_queries = True
            sd.predict_noise(step.latents, 600, emb, control=control)
            after = query_distance(ctrl.queries, targets, per_sample=True)
            ctrl.record_queries = False
            assert bool((after < step.distances).all()), (rule, after, step.distances)
            assert torch.allclose(step.distances.sum(), step.distance)
        # Polyak: alpha is the fraction of D the linearised step removes, per latent
        assert step.step.shape == (2,) and not torch.equal(step.step[0], step.step[1])
    without_control = soft_query_injection(sd, x, 600, emb, targets, step_size=1e-3)
    assert not torch.allclose(without_control.distance, step.distance)
    with pytest.raises(ValueError, match="does not control the queries"):
        with AttentionControl(sd.unet, layers[:1]) as ctrl:
            soft_query_injection(sd, x, 600, emb, targets, step_size=1e-3, attention=ctrl)
