"""The ``tiny-random`` preset: every component with tiny, seeded random weights, built from configs offline.

The architectures are the real ones (diffusers ``UNet2DConditionModel``/``AutoencoderKL``/``ControlNetModel``,
transformers ``CLIPTextModel``/``CLIPModel``/``DepthAnythingForDepthEstimation``, torchvision's VGG-16 layer
layout), shrunk: a 3-level UNet with cross-attention in the two outer levels (so it has decoder self-attention at
two resolutions, like SD's three), a 2-level VAE (latents are images / 2), a 2-layer text encoder with a 16-token
byte-level tokenizer. The tokenizer is written to a folder and read back with ``CLIPTokenizer.from_pretrained``
(docs/design.md, "Tests").

:func:`save_tiny_random` writes the whole set in the real on-disk layout, one folder per preset name, so that
``PriorSettings(models_dir=folder)`` loads it through the same code path as downloaded weights.

Example:
    >>> from scene3d.priors.tiny import save_tiny_random
    >>> save_tiny_random(tmp_path)                        # doctest: +SKIP
    >>> load_diffusion("sd15", PriorSettings(models_dir=tmp_path))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from scene3d.priors.vgg import VGGFeatures

TOKENIZER_MAX_LENGTH = 16
TEXT_WIDTH = 16
LATENT_SIZE = 8
"""Default latent side of ``tiny-random`` (images of 16 × 16)."""

_M = TypeVar("_M")

SD_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}
"""Stable Diffusion's noise schedule (as in its ``scheduler_config.json``)."""


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block and restore the caller's generator state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _frozen(module: _M) -> _M:
    module.requires_grad_(False)  # type: ignore[attr-defined]
    module.eval()  # type: ignore[attr-defined]
    return module


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: 256 printable characters, one per byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_tokenizer_files(folder: Path) -> None:
    """Write a byte-level CLIP BPE vocabulary (514 tokens, no merges) as ``vocab.json`` + ``merges.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in _bytes_to_unicode():
            vocab[ch + suffix] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def tiny_tokenizer(folder: Path | None = None) -> Any:
    """A ``CLIPTokenizer`` over the byte-level vocabulary, ``model_max_length`` 16; saved to ``folder`` if given."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        target = folder or Path(tmp)
        write_tokenizer_files(target)
        tokenizer = CLIPTokenizer.from_pretrained(str(target), model_max_length=TOKENIZER_MAX_LENGTH)
        if folder is not None:
            tokenizer.save_pretrained(str(folder))
    return tokenizer


def _text_config() -> dict[str, Any]:
    return {
        "vocab_size": 514, "hidden_size": TEXT_WIDTH, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "max_position_embeddings": TOKENIZER_MAX_LENGTH, "projection_dim": TEXT_WIDTH,
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
    }


def tiny_text_encoder(seed: int = 0) -> torch.nn.Module:
    from transformers import CLIPTextConfig, CLIPTextModel

    with _seeded(seed):
        return _frozen(CLIPTextModel(CLIPTextConfig(**_text_config())))


def tiny_unet(seed: int = 0, in_channels: int = 4) -> torch.nn.Module:
    """3 levels (8, 16, 32 channels), cross-attention in levels 0–1: 4 decoder self-attention layers at 2 sizes."""
    from diffusers import UNet2DConditionModel

    with _seeded(seed + 1):
        return _frozen(
            UNet2DConditionModel(
                sample_size=LATENT_SIZE, in_channels=in_channels, out_channels=4,
                block_out_channels=(8, 16, 32), layers_per_block=1, norm_num_groups=4,
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=TEXT_WIDTH, attention_head_dim=2,
            )
        )


def tiny_vae(seed: int = 0) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    with _seeded(seed + 2):
        return _frozen(
            AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                sample_size=2 * LATENT_SIZE,
            )
        )


def tiny_scheduler(**overrides: Any) -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(**{**SD_SCHEDULER_CONFIG, **overrides})


def tiny_controlnet(unet: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A ControlNet copied from ``unet`` whose zero-initialised convolutions (the residual outputs and the last
    layer of the conditioning encoder) get small random weights, so the control image changes the output, as it
    does with a trained ControlNet."""
    from diffusers import ControlNetModel

    with _seeded(seed + 3):
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16))
        zero_convs = [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]
        for conv in zero_convs:
            torch.nn.init.normal_(conv.weight, std=0.1)
        return _frozen(net)


def tiny_depth_model(seed: int = 0) -> torch.nn.Module:
    """Depth Anything (DINOv2 backbone + DPT head) with a 4-layer, 16-wide backbone; patch 14."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, image_size=28,
        patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, patch_size=14, neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8, head_hidden_size=8, depth_estimation_type="relative",
    )
    with _seeded(seed + 4):
        return _frozen(DepthAnythingForDepthEstimation(config))


DEPTH_PREPROCESSOR: dict[str, Any] = {
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "size": {"height": 28, "width": 28},
    "ensure_multiple_of": 14, "keep_aspect_ratio": True, "do_normalize": True, "do_resize": True,
    "image_processor_type": "DPTImageProcessor",
}

MARIGOLD_OPTIONS: dict[str, Any] = {
    "prediction_type": "normals", "use_full_z_range": True, "default_denoising_steps": 2,
    "default_processing_resolution": 16,
}


def tiny_clip_model(seed: int = 0) -> torch.nn.Module:
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=_text_config(),
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    with _seeded(seed + 5):
        return _frozen(CLIPModel(config))


CLIP_PREPROCESSOR: dict[str, Any] = {
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32}, "image_processor_type": "CLIPImageProcessor",
}


def _model_index(class_name: str, **extra: Any) -> dict[str, Any]:
    import diffusers

    return {
        "_class_name": class_name, "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"], **extra,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def _save_depth(folder: Path, seed: int) -> None:
    tiny_depth_model(seed).save_pretrained(folder)
    _write_json(folder / "preprocessor_config.json", DEPTH_PREPROCESSOR)


def _save_clip(folder: Path, seed: int) -> None:
    tiny_clip_model(seed).save_pretrained(folder)
    tiny_tokenizer(folder)
    _write_json(folder / "preprocessor_config.json", CLIP_PREPROCESSOR)


def _save_vgg(folder: Path, seed: int) -> None:
    from scene3d.priors.presets import VGG16_FILE

    folder.mkdir(parents=True, exist_ok=True)
    VGGFeatures.tiny_random(seed).save(folder / VGG16_FILE)


def _save_sd(folder: Path, seed: int, kind: str) -> None:
    """An SD-layout folder: text-to-image (4-channel UNet), inpainting (9) or Marigold normals (8)."""
    in_channels, class_name, extra, scheduler = {
        "diffusion": (4, "StableDiffusionPipeline", {"safety_checker": [None, None]}, tiny_scheduler()),
        "inpainting": (9, "StableDiffusionInpaintPipeline", {"safety_checker": [None, None]}, tiny_scheduler()),
        "normals": (
            8, "MarigoldNormalsPipeline", MARIGOLD_OPTIONS,
            tiny_scheduler(prediction_type="v_prediction", timestep_spacing="trailing"),
        ),
    }[kind]
    folder.mkdir(parents=True, exist_ok=True)
    tiny_unet(seed, in_channels=in_channels).save_pretrained(folder / "unet")
    tiny_vae(seed).save_pretrained(folder / "vae")
    tiny_text_encoder(seed).save_pretrained(folder / "text_encoder")
    tiny_tokenizer(folder / "tokenizer")
    scheduler.save_pretrained(folder / "scheduler")
    _write_json(folder / "model_index.json", _model_index(class_name, **extra))


def save_tiny_random(folder: str | Path, seed: int = 0) -> Path:
    """Write every preset's ``tiny-random`` twin under ``folder/<preset name>/`` in the real on-disk layout.

    ``sd15`` and ``sd21-base`` hold the same tiny text-to-image model, ``sd2-inpainting`` its 9-channel twin,
    ``controlnet-*`` ControlNets made from that UNet, and so on. Returns ``folder``.
    """
    from scene3d.priors.presets import PRESETS

    root = Path(folder)
    for preset in PRESETS.values():
        target = root / preset.name
        if preset.kind in ("diffusion", "inpainting", "normals"):
            _save_sd(target, seed, preset.kind)
        elif preset.kind == "controlnet":
            tiny_controlnet(tiny_unet(seed), seed).save_pretrained(target)
        elif preset.kind == "depth":
            _save_depth(target, seed)
        elif preset.kind == "clip":
            _save_clip(target, seed)
        else:
            _save_vgg(target, seed)
    return root
