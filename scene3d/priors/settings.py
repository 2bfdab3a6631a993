"""Settings shared by every prior loader: where models live, which revision, device and precision.

Every field has an environment-variable default so that a whole run (ns-train, ``s3d models``) can be pointed at
local copies without touching configs:

=============================  ======================================================================
``SCENE3D_MODELS_DIR``         a folder holding local copies, one sub-folder per preset name (``sd15/``) or
                               per Hugging Face id (``stable-diffusion-v1-5/stable-diffusion-v1-5/``)
``SCENE3D_REVISION_<NAME>``    the revision (branch, tag or commit) of preset ``NAME`` (upper case, ``-`` → ``_``),
                               e.g. ``SCENE3D_REVISION_SD21_BASE=5ede9e4b…``
``SCENE3D_TEXT_CACHE_DIR``     the on-disk text-embedding cache (default ``~/.cache/scene3d/text-embeddings``)
``HF_HOME`` / ``HF_HUB_CACHE``  the Hugging Face cache, as Hugging Face defines it
=============================  ======================================================================

Example:
    >>> s = PriorSettings(device="cpu", dtype="fp16")
    >>> s.torch_device(), s.torch_dtype()   # half precision is a CUDA setting; the CPU computes in fp32
    (device(type='cpu'), torch.float32)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

logger = logging.getLogger(__name__)

MODELS_DIR_ENV = "SCENE3D_MODELS_DIR"
TEXT_CACHE_ENV = "SCENE3D_TEXT_CACHE_DIR"
REVISION_ENV_PREFIX = "SCENE3D_REVISION_"

_warned: set[str] = set()


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def revision_env_var(preset_name: str) -> str:
    """The environment variable that overrides a preset's revision: ``sd21-base`` → ``SCENE3D_REVISION_SD21_BASE``."""
    return REVISION_ENV_PREFIX + preset_name.upper().replace("-", "_")


def default_text_cache_dir() -> Path:
    """``$SCENE3D_TEXT_CACHE_DIR``, else ``~/.cache/scene3d/text-embeddings``."""
    return _env_path(TEXT_CACHE_ENV) or Path.home() / ".cache" / "scene3d" / "text-embeddings"


@dataclass
class PriorSettings:
    """Where pretrained models come from and how they run."""

    models_dir: Path | None = field(default_factory=lambda: _env_path(MODELS_DIR_ENV))
    """Folder of local copies (one sub-folder per preset name or per Hugging Face id); checked before the HF cache.
    Default: ``$SCENE3D_MODELS_DIR``."""
    hf_cache_dir: Path | None = None
    """Hugging Face hub cache to read; ``None`` uses Hugging Face's own default (``$HF_HUB_CACHE``, ``$HF_HOME``)."""
    revisions: dict[str, str] = field(default_factory=dict)
    """Per-preset revision overrides (branch, tag or commit), e.g. ``{"sd15": "451f4fe1…"}``. Falls back to
    ``$SCENE3D_REVISION_<NAME>``, then to the preset's own revision."""
    text_cache_dir: Path | None = None
    """On-disk text-embedding cache; ``None`` uses ``$SCENE3D_TEXT_CACHE_DIR`` or ``~/.cache/scene3d/text-embeddings``."""
    device: str = "auto"
    """``auto`` (CUDA when present, else CPU), or any torch device string."""
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    """Weights and activations. ``auto``: fp16 on CUDA, fp32 on CPU. Half precision on a CPU falls back to fp32."""
    cpu_offload: bool = False
    """Sequential CPU offload (accelerate): weights stay in CPU memory and move to the GPU one module at a time.
    Slow, but runs SD on a few GB of GPU memory. Ignored (with a warning) when the device is the CPU."""
    attention_slicing: Literal["off", "auto", "max"] | int = "off"
    """Compute attention in slices to save memory (diffusers ``set_attention_slice``): ``auto`` halves the heads,
    ``max`` does one slice at a time, an int sets the slice size."""
    scheduler: Literal["ddim", "euler"] = "ddim"
    """Noise scheduler built from the model's saved scheduler config. DDIM is needed for inversion."""
    tiny_seed: int = 0
    """Seed of the ``tiny-random`` preset's weights."""

    def revision_for(self, preset_name: str, default: str) -> str:
        """The revision to load for ``preset_name``: ``revisions``, then the environment, then ``default``."""
        if preset_name in self.revisions:
            return self.revisions[preset_name]
        return os.environ.get(revision_env_var(preset_name), "").strip() or default

    def torch_device(self) -> torch.device:
        """The execution device (``auto`` → ``cuda`` when available, else ``cpu``)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        """fp16/bf16 on CUDA when asked (``auto`` → fp16), always fp32 on other devices."""
        device = self.torch_device()
        if device.type != "cuda":
            if self.dtype in ("fp16", "bf16"):
                _warn_once(f"dtype={self.dtype} on {device.type}: half precision is a CUDA setting; using fp32")
            return torch.float32
        return {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[self.dtype]

    def resolved_text_cache_dir(self) -> Path:
        return self.text_cache_dir or default_text_cache_dir()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
