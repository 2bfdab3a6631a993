"""Named presets of the pretrained models the methods use, and where a preset's files are found.

A preset names a Hugging Face id, the files a complete copy must hold, the files ``s3d models fetch`` downloads,
and the methods that use it. :func:`locate` finds a complete copy *offline*, in this order:

1. ``settings.models_dir/<preset name>/`` or ``settings.models_dir/<hf id>/`` (a local folder, real layout);
2. the Hugging Face cache (``huggingface_hub.snapshot_download(..., local_files_only=True)``).

Every required file is checked before anything is loaded, so a missing or partial model raises one
:class:`~scene3d.core.errors.ModelNotFoundError` (model id, the setting for a local copy, the fetch command) and
nothing is half-loaded.

Example:
    >>> PRESETS["sd21-base"].hf_id
    'stabilityai/stable-diffusion-2-1-base'
    >>> sorted({p.kind for p in PRESETS.values()})
    ['clip', 'controlnet', 'depth', 'diffusion', 'inpainting', 'normals', 'vgg']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scene3d.core.errors import ModelNotFoundError
from scene3d.priors.settings import MODELS_DIR_ENV, PriorSettings, revision_env_var

Kind = Literal["diffusion", "inpainting", "controlnet", "depth", "normals", "clip", "vgg"]

TINY_RANDOM = "tiny-random"
"""The preset name every loader accepts for its tiny, seeded, random-weight twin (no files, no network)."""

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = "https://download.pytorch.org/models/" + VGG16_FILE

# A "|" separates alternatives: any one of them makes the entry present.
_SD_FILES = (
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors|unet/diffusion_pytorch_model.bin",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors|vae/diffusion_pytorch_model.bin",
    "text_encoder/config.json",
    "text_encoder/model.safetensors|text_encoder/pytorch_model.bin",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json|tokenizer/tokenizer.json",
    "scheduler/scheduler_config.json",
)
_SD_FETCH = (
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/*",
    "scheduler/*",
)
_CONTROLNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors|diffusion_pytorch_model.bin")
_CONTROLNET_FETCH = ("config.json", "diffusion_pytorch_model.safetensors")


@dataclass(frozen=True)
class ModelPreset:
    """One pretrained model the priors can load."""

    name: str
    """Short name used in configs and on the command line (``s3d models fetch NAME``)."""
    hf_id: str
    """Hugging Face repository id (for ``vgg16``: torchvision's weight file name)."""
    kind: Kind
    """Which loader reads it (and what ``tiny-random`` builds in its place)."""
    used_by: tuple[str, ...]
    """ns-train methods that use it."""
    description: str
    """One line for ``s3d models list``."""
    required_files: tuple[str, ...]
    """Paths relative to the model folder that a complete copy holds (``a|b``: either)."""
    fetch_patterns: tuple[str, ...]
    """``allow_patterns`` for ``snapshot_download`` (skips EMA, fp16 and single-file checkpoints)."""
    revision: str = "main"
    """Default revision; override per preset with ``PriorSettings.revisions`` or ``$SCENE3D_REVISION_<NAME>``."""

    @property
    def revision_setting(self) -> str:
        return revision_env_var(self.name)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            "sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "diffusion", ("qnerf", "dreamspace"),
            "Stable Diffusion 1.5 text-to-image (base of the SD 1.5 ControlNets, MasaCtrl editing)",
            _SD_FILES, _SD_FETCH,
        ),
        ModelPreset(
            "sd21-base", "stabilityai/stable-diffusion-2-1-base", "diffusion", ("text2nerf", "dreampolish", "dreamspace"),
            "Stable Diffusion 2.1 base (512 px) text-to-image; SDS/VSD/DSD guidance",
            _SD_FILES, _SD_FETCH,
        ),
        ModelPreset(
            "sd2-inpainting", "stabilityai/stable-diffusion-2-inpainting", "inpainting", ("text2nerf", "dreamspace"),
            "Stable Diffusion 2 inpainting (9-channel UNet)",
            _SD_FILES, _SD_FETCH,
        ),
        ModelPreset(
            "controlnet-depth-sd15", "lllyasviel/control_v11f1p_sd15_depth", "controlnet", ("dreamspace", "qnerf"),
            "ControlNet 1.1 depth for SD 1.5",
            _CONTROLNET_FILES, _CONTROLNET_FETCH,
        ),
        ModelPreset(
            "controlnet-pose-sd15", "lllyasviel/control_v11p_sd15_openpose", "controlnet", ("qnerf",),
            "ControlNet 1.1 OpenPose for SD 1.5",
            _CONTROLNET_FILES, _CONTROLNET_FETCH,
        ),
        ModelPreset(
            "depth-anything-v2-small", "depth-anything/Depth-Anything-V2-Small-hf", "depth",
            ("text2nerf", "qnerf", "dreamspace"),
            "Depth Anything V2 small: monocular relative depth (transformers)",
            ("config.json", "model.safetensors|pytorch_model.bin", "preprocessor_config.json"),
            ("config.json", "model.safetensors", "preprocessor_config.json"),
        ),
        ModelPreset(
            "marigold-normals", "prs-eth/marigold-normals-v1-1", "normals", ("dreampolish",),
            "Marigold normals v1.1: diffusion-based surface-normal estimator",
            _SD_FILES, _SD_FETCH,
        ),
        ModelPreset(
            "clip-vit-b32", "openai/clip-vit-base-patch32", "clip", ("text2nerf", "blended-nerf"),
            "CLIP ViT-B/32 image and text encoders",
            (
                "config.json", "model.safetensors|pytorch_model.bin", "tokenizer_config.json",
                "vocab.json|tokenizer.json", "preprocessor_config.json",
            ),
            ("*.json", "*.txt", "model.safetensors"),
        ),
        ModelPreset(
            "vgg16", VGG16_FILE, "vgg", ("regs",),
            "torchvision VGG-16 ImageNet weights (features only are used)",
            (VGG16_FILE,), (VGG16_URL,),
        ),
    )
}


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name``; ``ValueError`` listing the known names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset '{name}'; expected one of {sorted(PRESETS)} or '{TINY_RANDOM}'")
    return PRESETS[name]


@dataclass(frozen=True)
class ModelLocation:
    """A complete local copy of a preset."""

    path: Path
    """Folder holding the model in its real on-disk layout."""
    source: Literal["local", "hf-cache", "torch-hub"]
    revision: str
    """The revision that was found: the snapshot's commit hash for the HF cache, ``local:<path>`` for a folder.
    Used in cache keys (text embeddings), so a moved branch never serves stale entries."""


def missing_files(folder: Path, required: tuple[str, ...]) -> list[str]:
    """Entries of ``required`` (``a|b`` alternatives) that ``folder`` lacks."""
    return [entry for entry in required if not any((folder / alt).is_file() for alt in entry.split("|"))]


def not_found(preset: ModelPreset, detail: str) -> ModelNotFoundError:
    """The one error for a preset that cannot be loaded offline."""
    return ModelNotFoundError(
        model_id=preset.hf_id if preset.kind != "vgg" else f"torchvision {preset.hf_id}",
        setting=f"${MODELS_DIR_ENV} (or --models-dir; a folder with '{preset.name}/' inside)",
        fetch_command=f"s3d models fetch {preset.name}",
        detail=detail,
    )


def _torch_hub_file(name: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / name


def locate(name: str, settings: PriorSettings | None = None) -> ModelLocation:
    """Find a complete offline copy of preset ``name`` (never touches the network).

    Raises:
        ModelNotFoundError: when no complete copy is found (the message says which files are missing, where it
            looked, the setting for a local copy and the fetch command).
        ValueError: for an unknown preset name.
    """
    preset = get_preset(name)
    settings = settings or PriorSettings()
    revision = settings.revision_for(name, preset.revision)
    looked: list[str] = []
    if settings.models_dir is not None:
        for candidate in (settings.models_dir / preset.name, settings.models_dir / preset.hf_id):
            if candidate.is_dir():
                missing = missing_files(candidate, preset.required_files)
                if missing:
                    raise not_found(preset, f"the local copy {candidate} is incomplete: missing {', '.join(missing)}")
                return ModelLocation(candidate, "local", f"local:{candidate.resolve()}")
            looked.append(str(candidate))
    if preset.kind == "vgg":
        hub_file = _torch_hub_file(preset.hf_id)
        if hub_file.is_file():
            return ModelLocation(hub_file.parent, "torch-hub", f"torch-hub:{preset.hf_id}")
        looked.append(str(hub_file))
        raise not_found(preset, "looked in " + ", ".join(looked))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(
            snapshot_download(
                preset.hf_id,
                revision=revision,
                cache_dir=settings.hf_cache_dir,
                local_files_only=True,
                allow_patterns=list(preset.fetch_patterns),
            )
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as err:
        where = ", ".join(looked + [f"the Hugging Face cache (revision '{revision}')"])
        raise not_found(preset, f"looked in {where}") from err
    missing = missing_files(snapshot, preset.required_files)
    if missing:
        raise not_found(preset, f"the cached snapshot {snapshot} is incomplete: missing {', '.join(missing)}")
    return ModelLocation(snapshot, "hf-cache", snapshot.name)


def fetch(name: str, settings: PriorSettings | None = None, to: Path | None = None) -> Path:
    """Download preset ``name`` (needs the network): into the HF cache, or into ``to/<name>/`` when given.

    ``vgg16`` is downloaded into the torch hub cache (or ``to/vgg16/``). Returns the folder that holds the model.
    """
    preset = get_preset(name)
    settings = settings or PriorSettings()
    if preset.kind == "vgg":
        import torch

        folder = (to / preset.name) if to is not None else _torch_hub_file(preset.hf_id).parent
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(VGG16_URL, str(folder / preset.hf_id), progress=True)
        return folder
    from huggingface_hub import snapshot_download

    path = snapshot_download(
        preset.hf_id,
        revision=settings.revision_for(name, preset.revision),
        cache_dir=settings.hf_cache_dir,
        local_dir=(to / preset.name) if to is not None else None,
        allow_patterns=list(preset.fetch_patterns),
    )
    return Path(path)
