"""Factories: a preset name (or ``tiny-random``) in, a ready prior out. The only place that reads weights.

Each loader first :func:`~scene3d.priors.presets.locate`\\ s a complete offline copy (so a missing model raises one
:class:`~scene3d.core.errors.ModelNotFoundError` before anything is built), then reads every component with its
library's ``from_pretrained(folder, local_files_only=True)``, freezes it and places it on the configured device
and precision (fp16/bf16 on CUDA, fp32 on CPU; optional sequential CPU offload and attention slicing).

``tiny-random`` builds the same classes with tiny seeded random weights (:mod:`scene3d.priors.tiny`) and goes
through the same placement.

Example:
    >>> sd = load_diffusion("tiny-random")
    >>> sd.unet.config.in_channels, load_inpainting("tiny-random").unet.config.in_channels
    (4, 9)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from scene3d.priors.clip import CLIPSimilarity
from scene3d.priors.depth import DepthEstimator
from scene3d.priors.diffusion import StableDiffusionPrior
from scene3d.priors.normals import NormalEstimator
from scene3d.priors.presets import TINY_RANDOM, Kind, ModelLocation, get_preset, locate
from scene3d.priors.settings import PriorSettings
from scene3d.priors.vgg import VGGFeatures

logger = logging.getLogger(__name__)


def _location(name: str, kind: Kind, settings: PriorSettings) -> ModelLocation:
    preset = get_preset(name)
    if preset.kind != kind:
        raise ValueError(f"preset '{name}' is a {preset.kind} model, not a {kind} model")
    return locate(name, settings)


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    module.eval()
    return module


def place(modules: list[torch.nn.Module], settings: PriorSettings) -> torch.device:
    """Cast ``modules`` to the configured dtype and put them on the device (or offload them); returns the
    execution device."""
    device, dtype = settings.torch_device(), settings.torch_dtype()
    offload = settings.cpu_offload and device.type == "cuda"
    if settings.cpu_offload and not offload:
        logger.warning("cpu_offload is a CUDA setting; running on %s without offload", device)
    for module in modules:
        if next(module.parameters()).dtype != dtype:
            module.to(dtype=dtype)
        if offload:
            from accelerate import cpu_offload

            cpu_offload(module, execution_device=device)
        else:
            module.to(device)
    return device


def _slice_attention(unet: Any, settings: PriorSettings) -> None:
    if settings.attention_slicing != "off":
        unet.set_attention_slice(settings.attention_slicing)


def _scheduler(folder: Path | None, settings: PriorSettings) -> Any:
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[settings.scheduler]
    if folder is None:
        from scene3d.priors.tiny import SD_SCHEDULER_CONFIG

        return cls.from_config(SD_SCHEDULER_CONFIG)
    return cls.from_pretrained(str(folder), subfolder="scheduler", local_files_only=True)


def _sd_components(folder: Path) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = str(folder)
    return {
        "unet": UNet2DConditionModel.from_pretrained(path, subfolder="unet", local_files_only=True),
        "vae": AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True),
        "text_encoder": CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True),
        "tokenizer": CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True),
    }


def _tiny_sd_components(settings: PriorSettings, in_channels: int) -> dict[str, Any]:
    from scene3d.priors import tiny

    seed = settings.tiny_seed
    return {
        "unet": tiny.tiny_unet(seed, in_channels=in_channels),
        "vae": tiny.tiny_vae(seed),
        "text_encoder": tiny.tiny_text_encoder(seed),
        "tokenizer": tiny.tiny_tokenizer(),
    }


def _build_prior(name: str, kind: Kind, settings: PriorSettings, controlnet: str | None) -> StableDiffusionPrior:
    if name == TINY_RANDOM:
        parts = _tiny_sd_components(settings, in_channels=9 if kind == "inpainting" else 4)
        scheduler, model_id, revision = _scheduler(None, settings), TINY_RANDOM, f"seed{settings.tiny_seed}"
    else:
        loc = _location(name, kind, settings)
        if controlnet and controlnet != TINY_RANDOM:
            _location(controlnet, "controlnet", settings)  # a missing ControlNet fails before the UNet is read
        parts = _sd_components(loc.path)
        scheduler, model_id, revision = _scheduler(loc.path, settings), get_preset(name).hf_id, loc.revision
    net = load_controlnet(controlnet, settings, unet=parts["unet"]) if controlnet else None
    modules = [parts["unet"], parts["vae"], parts["text_encoder"]] + ([net] if net is not None else [])
    for module in modules:
        _freeze(module)
    device = place(modules, settings)
    _slice_attention(parts["unet"], settings)
    return StableDiffusionPrior(
        **parts, scheduler=scheduler, controlnet=net, model_id=model_id, revision=revision,
        text_cache_dir=settings.resolved_text_cache_dir(), execution_device=device,
    )


def load_diffusion(
    name: str = "sd21-base", settings: PriorSettings | None = None, *, controlnet: str | None = None
) -> StableDiffusionPrior:
    """A text-to-image prior (``sd15``, ``sd21-base`` or ``tiny-random``), optionally with a ControlNet preset.

    Raises:
        ModelNotFoundError: the model (or the ControlNet) is not available offline.
    """
    return _build_prior(name, "diffusion", settings or PriorSettings(), controlnet)


def load_inpainting(name: str = "sd2-inpainting", settings: PriorSettings | None = None) -> StableDiffusionPrior:
    """An inpainting prior with a 9-channel UNet (``sd2-inpainting`` or ``tiny-random``)."""
    return _build_prior(name, "inpainting", settings or PriorSettings(), None)


def load_controlnet(
    name: str = "controlnet-depth-sd15", settings: PriorSettings | None = None, *, unet: torch.nn.Module | None = None
) -> torch.nn.Module:
    """A ``ControlNetModel`` (``controlnet-depth-sd15``, ``controlnet-pose-sd15`` or ``tiny-random``).

    ``tiny-random`` is made from the tiny UNet (``unet``, default: a fresh ``tiny-random`` UNet) so the two fit.
    The returned module is frozen but not placed; :func:`load_diffusion` (``controlnet=``) places it.
    """
    settings = settings or PriorSettings()
    if name == TINY_RANDOM:
        from scene3d.priors import tiny

        return _freeze(tiny.tiny_controlnet(unet if unet is not None else tiny.tiny_unet(settings.tiny_seed), settings.tiny_seed))
    loc = _location(name, "controlnet", settings)
    from diffusers import ControlNetModel

    return _freeze(ControlNetModel.from_pretrained(str(loc.path), local_files_only=True))


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_depth(name: str = "depth-anything-v2-small", settings: PriorSettings | None = None) -> DepthEstimator:
    """A monocular depth estimator (``depth-anything-v2-small`` or ``tiny-random``)."""
    settings = settings or PriorSettings()
    if name == TINY_RANDOM:
        from scene3d.priors import tiny

        model, prep = tiny.tiny_depth_model(settings.tiny_seed), tiny.DEPTH_PREPROCESSOR
    else:
        loc = _location(name, "depth", settings)
        from transformers import AutoModelForDepthEstimation

        model = AutoModelForDepthEstimation.from_pretrained(str(loc.path), local_files_only=True)
        prep = _read_json(loc.path / "preprocessor_config.json")
    place([_freeze(model)], settings)
    size = prep.get("size", {})
    return DepthEstimator(
        model,
        image_mean=tuple(prep.get("image_mean", (0.485, 0.456, 0.406))),
        image_std=tuple(prep.get("image_std", (0.229, 0.224, 0.225))),
        input_size=int(min(size.values())) if isinstance(size, dict) and size else 518,
        multiple_of=int(prep.get("ensure_multiple_of", 14)),
    )


def load_normals(name: str = "marigold-normals", settings: PriorSettings | None = None) -> NormalEstimator:
    """Marigold normals (``marigold-normals`` or ``tiny-random``)."""
    settings = settings or PriorSettings()
    if name == TINY_RANDOM:
        from scene3d.priors import tiny

        parts = _tiny_sd_components(settings, in_channels=8)
        scheduler = tiny.tiny_scheduler(prediction_type="v_prediction", timestep_spacing="trailing")
        options = tiny.MARIGOLD_OPTIONS
    else:
        loc = _location(name, "normals", settings)
        parts = _sd_components(loc.path)
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_pretrained(str(loc.path), subfolder="scheduler", local_files_only=True)
        options = _read_json(loc.path / "model_index.json")
    place([_freeze(parts["unet"]), _freeze(parts["vae"]), _freeze(parts["text_encoder"])], settings)
    return NormalEstimator(
        **parts, scheduler=scheduler,
        num_inference_steps=int(options.get("default_denoising_steps") or 4),
        processing_resolution=int(options.get("default_processing_resolution") or 768),
        use_full_z_range=bool(options.get("use_full_z_range", True)),
    )


def load_clip(name: str = "clip-vit-b32", settings: PriorSettings | None = None) -> CLIPSimilarity:
    """CLIP similarity (``clip-vit-b32`` or ``tiny-random``)."""
    settings = settings or PriorSettings()
    if name == TINY_RANDOM:
        from scene3d.priors import tiny

        model, tokenizer, prep = tiny.tiny_clip_model(settings.tiny_seed), tiny.tiny_tokenizer(), tiny.CLIP_PREPROCESSOR
    else:
        loc = _location(name, "clip", settings)
        from transformers import CLIPModel, CLIPTokenizer

        model = CLIPModel.from_pretrained(str(loc.path), local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(str(loc.path), local_files_only=True)
        prep = _read_json(loc.path / "preprocessor_config.json")
    place([_freeze(model)], settings)
    crop = prep.get("crop_size", model.config.vision_config.image_size)
    return CLIPSimilarity(
        model, tokenizer,
        image_size=int(crop["height"] if isinstance(crop, dict) else crop),
        image_mean=tuple(prep.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
        image_std=tuple(prep.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
    )


def load_vgg(name: str = "vgg16", settings: PriorSettings | None = None) -> VGGFeatures:
    """VGG-16 features (``vgg16`` or ``tiny-random``), placed on the configured device (always fp32)."""
    settings = settings or PriorSettings()
    model = VGGFeatures.from_pretrained(name, settings)
    return model.to(settings.torch_device())


LOADERS = {
    "diffusion": load_diffusion, "inpainting": load_inpainting, "controlnet": load_controlnet,
    "depth": load_depth, "normals": load_normals, "clip": load_clip, "vgg": load_vgg,
}


def load(name: str, settings: PriorSettings | None = None) -> Any:
    """Load any preset with the loader of its kind (what ``s3d models check --load`` does)."""
    return LOADERS[get_preset(name).kind](name, settings)
