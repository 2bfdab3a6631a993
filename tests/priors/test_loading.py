"""Loading a saved tiny-random set goes through the real loaders and gives the in-memory set's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scene3d.priors import (
    ControlInput,
    InpaintInput,
    PriorSettings,
    StableDiffusionPrior,
    load_clip,
    load_depth,
    load_diffusion,
    load_inpainting,
    load_normals,
    load_vgg,
)


@pytest.fixture(scope="module")
def from_disk(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> PriorSettings:
    return PriorSettings(device="cpu", models_dir=tiny_folder, text_cache_dir=tmp_path_factory.mktemp("emb"))


def test_saved_layout_is_the_real_one(tiny_folder: Path):
    for sub in ("unet/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json", "model_index.json"):
        assert (tiny_folder / "sd21-base" / sub).is_file(), sub
    assert (tiny_folder / "sd2-inpainting/tokenizer/merges.txt").read_text().startswith("#version: 0.2")
    assert (tiny_folder / "controlnet-depth-sd15/diffusion_pytorch_model.safetensors").is_file()
    assert (tiny_folder / "depth-anything-v2-small/preprocessor_config.json").is_file()
    assert (tiny_folder / "vgg16/vgg16-397923af.pth").is_file()


def test_diffusion_from_disk_matches_memory(sd: StableDiffusionPrior, from_disk: PriorSettings):
    disk = load_diffusion("sd21-base", from_disk, controlnet="controlnet-pose-sd15")
    assert disk.model_id == "stabilityai/stable-diffusion-2-1-base" and disk.revision.startswith("local:")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    control = ControlInput(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    a = sd.predict_noise(x, 700, sd.embed(["a red chair", "a lamp"], "blurry"), 7.5, control=control)
    b = disk.predict_noise(x, 700, disk.embed(["a red chair", "a lamp"], "blurry"), 7.5, control=control)
    assert torch.equal(a.eps, b.eps)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sd.decode_latents(sd.encode_images(image)), disk.decode_latents(disk.encode_images(image)))


def test_inpainting_from_disk_matches_memory(cpu_settings: PriorSettings, from_disk: PriorSettings):
    mem, disk = load_inpainting("tiny-random", cpu_settings), load_inpainting("sd2-inpainting", from_disk)
    assert mem.is_inpainting and disk.is_inpainting
    for module in ("unet", "vae", "text_encoder"):
        a_state, b_state = getattr(mem, module).state_dict(), getattr(disk, module).state_dict()
        assert a_state.keys() == b_state.keys()
        assert all(torch.equal(a_state[k], b_state[k]) for k in a_state), module
    x = torch.randn(1, 4, 8, 8)
    extra = InpaintInput(torch.ones(1, 1, 8, 8), torch.randn(1, 4, 8, 8))
    # bit-identical weights; the outputs agree to float rounding (CPU kernels may order sums differently for the
    # freshly constructed and the safetensors-loaded tensors: differences seen ~1e-6)
    torch.testing.assert_close(
        mem.predict_noise(x, 10, mem.embed("a"), inpaint=extra).eps,
        disk.predict_noise(x, 10, disk.embed("a"), inpaint=extra).eps,
        rtol=1e-5, atol=1e-5,
    )
    with pytest.raises(ValueError, match="inpainting UNet"):
        mem.predict_noise(x, 10, mem.embed("a"))


def test_other_models_from_disk_match_memory(cpu_settings: PriorSettings, from_disk: PriorSettings):
    image = torch.rand(2, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    assert torch.equal(load_depth("tiny-random", cpu_settings)(image), load_depth("depth-anything-v2-small", from_disk)(image))
    n_mem = load_normals("tiny-random", cpu_settings)(image[:, :, :16, :16], generator=torch.Generator().manual_seed(0))
    n_disk = load_normals("marigold-normals", from_disk)(image[:, :, :16, :16], generator=torch.Generator().manual_seed(0))
    assert torch.equal(n_mem, n_disk)
    clip_mem, clip_disk = load_clip("tiny-random", cpu_settings), load_clip("clip-vit-b32", from_disk)
    assert clip_disk.image_size == 32
    assert torch.equal(clip_mem.image_text_similarity(image, ["a", "b c"]), clip_disk.image_text_similarity(image, ["a", "b c"]))
    for a, b in zip(load_vgg("tiny-random", cpu_settings)(image[..., :32, :32]), load_vgg("vgg16", from_disk)(image[..., :32, :32])):
        assert torch.equal(a, b)


def test_attention_slicing_keeps_outputs(cpu_settings: PriorSettings, sd: StableDiffusionPrior):
    sliced = load_diffusion("tiny-random", PriorSettings(device="cpu", attention_slicing="max",
                                                         text_cache_dir=cpu_settings.text_cache_dir))
    x = torch.randn(2, 4, 8, 8)
    emb = sd.embed("a chair")
    torch.testing.assert_close(sliced.predict_noise(x, 300, emb, 5.0).eps, sd.predict_noise(x, 300, emb, 5.0).eps)
