"""Every prior operation the methods call takes ``cameras=`` (a CameraBatch); real and tiny models ignore it."""

from __future__ import annotations

import pytest
import torch

from scene3d.core.cameras import CameraBatch, look_at
from scene3d.priors import (
    LoRAAdapter,
    PriorSettings,
    StableDiffusionPrior,
    VariationalScore,
    dsd,
    image_to_image,
    inpaint,
    load_clip,
    load_depth,
    load_inpainting,
    load_normals,
    sds,
    text_to_image,
    vsd,
)


def _cameras(n: int, size: int = 16) -> CameraBatch:
    angles = torch.linspace(0, 3.0, n)
    eyes = torch.stack([3 * torch.cos(angles), 3 * torch.sin(angles), torch.ones(n)], -1)
    return CameraBatch.from_fov(look_at(eyes, torch.zeros(n, 3)), 50.0, size, size)


def test_diffusion_operations_ignore_cameras(sd: StableDiffusionPrior, cpu_settings: PriorSettings):
    emb = sd.embed("a chair")
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = sd.predict_noise(z, 500, emb, 7.5)
    with_cams = sd.predict_noise(z, 500, emb, 7.5, cameras=_cameras(2))
    assert torch.equal(plain.eps, with_cams.eps)
    with pytest.raises(ValueError, match="cannot serve a batch of 2"):
        sd.predict_noise(z, 500, emb, 7.5, cameras=_cameras(3))

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(1)

    a = text_to_image(sd, "a chair", height=16, width=16, num_inference_steps=2, num_images_per_prompt=2, generator=gen())
    b = text_to_image(sd, "a chair", height=16, width=16, num_inference_steps=2, num_images_per_prompt=2,
                      generator=gen(), cameras=_cameras(1))
    assert torch.equal(a.images, b.images)
    img = torch.rand(2, 3, 16, 16, generator=gen())
    a = image_to_image(sd, img, "a chair", strength=0.5, num_inference_steps=2, generator=gen())
    b = image_to_image(sd, img, "a chair", strength=0.5, num_inference_steps=2, generator=gen(), cameras=_cameras(2))
    assert torch.equal(a.images, b.images)
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    inp = load_inpainting("tiny-random", cpu_settings)
    a = inpaint(inp, img, mask, "a chair", num_inference_steps=2, num_images_per_prompt=3, generator=gen())
    b = inpaint(inp, img, mask, "a chair", num_inference_steps=2, num_images_per_prompt=3, generator=gen(),
                cameras=_cameras(2))
    assert torch.equal(a.images, b.images) and a.images.shape[0] == 6
    with pytest.raises(ValueError, match="cannot serve"):
        inpaint(inp, img, mask, "a chair", num_inference_steps=2, generator=gen(), cameras=_cameras(3))

    cams = _cameras(2)
    a = sds(sd, z, emb, timesteps=300, generator=gen())
    b = sds(sd, z, emb, timesteps=300, generator=gen(), cameras=cams)
    assert torch.equal(a.grad, b.grad)
    variational = VariationalScore(sd, LoRAAdapter(sd.unet, rank=2))
    try:
        # vsd / dsd take the CameraBatch where they took bare c2w matrices: the LoRA sees the same cameras
        a = vsd(sd, variational, z, emb, cams.c2w, timesteps=300, generator=gen())
        b = vsd(sd, variational, z, emb, cams, timesteps=300, generator=gen())
        assert torch.equal(a.grad, b.grad)
        a = dsd(sd, variational, z, emb, cams.c2w, timesteps=300, generator=gen())
        b = dsd(sd, variational, z, emb, cams, timesteps=300, generator=gen())
        assert torch.equal(a.grad, b.grad)
        loss_a = variational.diffusion_loss(z, emb, cams.c2w, generator=gen())
        loss_b = variational.diffusion_loss(z, emb, cams, generator=gen())
        assert torch.equal(loss_a, loss_b)
    finally:
        variational.adapter.remove()


def test_perception_operations_ignore_cameras(cpu_settings: PriorSettings):
    images = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    cams = _cameras(2, 28)
    depth = load_depth("tiny-random", cpu_settings)
    assert torch.equal(depth(images), depth(images, cameras=cams))
    normals = load_normals("tiny-random", cpu_settings)
    a = normals(images, generator=torch.Generator().manual_seed(2))
    b = normals(images, generator=torch.Generator().manual_seed(2), cameras=cams)
    assert torch.equal(a, b)
    clip = load_clip("tiny-random", cpu_settings)
    assert torch.equal(clip.image_text_similarity(images, ["a chair", "a lamp"]),
                       clip.image_text_similarity(images, ["a chair", "a lamp"], cameras=cams))
    assert torch.equal(clip.text_loss(images, "a chair"), clip.text_loss(images, "a chair", cameras=cams))
    with pytest.raises((ValueError, TypeError), match="CameraBatch"):
        depth(images, cameras=cams.c2w)  # type: ignore[arg-type]
