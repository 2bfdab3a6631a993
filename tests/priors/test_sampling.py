"""Latents, text-to-image, image-to-image, inpainting (both ways) and ControlNet: shapes and determinism."""

from __future__ import annotations

import pytest
import torch

from scene3d.priors import (
    ControlInput,
    PriorSettings,
    StableDiffusionPrior,
    image_to_image,
    inpaint,
    load_inpainting,
    text_to_image,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_latent_encode_decode_shapes_and_gradient(sd: StableDiffusionPrior):
    images = torch.rand(2, 3, 16, 24, requires_grad=True)
    z = sd.encode_images(images)
    assert z.shape == (2, 4, 8, 12)
    out = sd.decode_latents(z)
    assert out.shape == (2, 3, 16, 24) and 0.0 <= out.min() and out.max() <= 1.0
    z.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert torch.equal(sd.encode_images(images), z)  # posterior mean: deterministic
    sampled = [sd.encode_images(images, sample=True, generator=gen(0)) for _ in range(2)]
    assert torch.equal(*sampled) and not torch.equal(sampled[0], z)
    with pytest.raises(ValueError, match="multiples of 2"):
        sd.encode_images(torch.rand(1, 3, 15, 16))


def test_text_to_image_shapes_and_determinism(sd: StableDiffusionPrior):
    kw = dict(height=16, width=16, num_inference_steps=4, num_images_per_prompt=2)
    a = text_to_image(sd, ["a chair", "a lamp"], generator=gen(0), **kw)
    assert a.images.shape == (4, 3, 16, 16) and a.latents.shape == (4, 4, 8, 8)
    b = text_to_image(sd, ["a chair", "a lamp"], generator=gen(0), **kw)
    c = text_to_image(sd, ["a chair", "a lamp"], generator=gen(1), **kw)
    assert torch.equal(a.images, b.images) and not torch.equal(a.latents, c.latents)


def test_controlnet_conditioning_changes_the_sample(sd: StableDiffusionPrior):
    kw = dict(height=16, width=16, num_inference_steps=3)
    depth = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 3, 16, 16)
    plain = text_to_image(sd, "a room", generator=gen(0), **kw)
    a = text_to_image(sd, "a room", generator=gen(0), control=ControlInput(depth), **kw)
    b = text_to_image(sd, "a room", generator=gen(0), control=ControlInput(depth), **kw)
    flipped = text_to_image(sd, "a room", generator=gen(0), control=ControlInput(depth.flip(-1)), **kw)
    assert torch.equal(a.latents, b.latents)
    assert not torch.allclose(a.latents, plain.latents) and not torch.allclose(a.latents, flipped.latents)
    off = text_to_image(sd, "a room", generator=gen(0), control=ControlInput(depth, scale=0.0), **kw)
    torch.testing.assert_close(off.latents, plain.latents)
    with pytest.raises(ValueError, match="control.image must be 16x16"):
        text_to_image(sd, "a room", control=ControlInput(torch.rand(1, 3, 8, 8)), **kw)


def test_image_to_image(sd: StableDiffusionPrior):
    image = torch.rand(1, 3, 16, 16, generator=gen(5))
    a = image_to_image(sd, image, "a chair", strength=0.5, num_inference_steps=6, generator=gen(0))
    b = image_to_image(sd, image, "a chair", strength=0.5, num_inference_steps=6, generator=gen(0))
    assert a.images.shape == (1, 3, 16, 16) and torch.equal(a.images, b.images)
    with pytest.raises(ValueError, match="strength"):
        image_to_image(sd, image, "a chair", strength=0.0)


def _mask() -> torch.Tensor:
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 6:14] = 1.0
    return mask


def test_inpainting_blend_with_a_plain_unet(sd: StableDiffusionPrior):
    images, mask = torch.rand(2, 3, 16, 16, generator=gen(3)), _mask()
    out = inpaint(sd, images, mask, "a vase", num_inference_steps=4, num_images_per_prompt=3, generator=gen(0))
    assert out.images.shape == (6, 3, 16, 16)
    keep = (1 - mask).bool().expand(2, 3, 16, 16).repeat_interleave(3, 0)
    assert torch.equal(out.images[keep], images.repeat_interleave(3, 0)[keep])
    # the final latents keep the known region exactly (blended at every step, the last with the clean latents)
    known = sd.encode_images(images).repeat_interleave(3, 0)
    m = (torch.nn.functional.interpolate(mask, size=(8, 8)) < 0.5).expand(2, 4, 8, 8).repeat_interleave(3, 0)
    torch.testing.assert_close(out.latents[m], known[m])
    again = inpaint(sd, images, mask, "a vase", num_inference_steps=4, num_images_per_prompt=3, generator=gen(0))
    assert torch.equal(out.images, again.images)
    assert not torch.equal(out.images[0], out.images[1])  # candidates differ


def test_inpainting_with_an_inpainting_unet(cpu_settings: PriorSettings):
    ip = load_inpainting("tiny-random", cpu_settings)
    images, mask = torch.rand(2, 3, 16, 16, generator=gen(3)), _mask()
    out = inpaint(ip, images, mask, ["a vase", "a cat"], num_inference_steps=4, generator=gen(0))
    again = inpaint(ip, images, mask, ["a vase", "a cat"], num_inference_steps=4, generator=gen(0))
    assert out.images.shape == (2, 3, 16, 16) and torch.equal(out.images, again.images)
    keep = (1 - mask).bool().expand(2, 3, 16, 16)
    assert torch.equal(out.images[keep], images[keep])
    with pytest.raises(ValueError, match="method='blend' needs a plain"):
        inpaint(ip, images, mask, "a vase", method="blend")
