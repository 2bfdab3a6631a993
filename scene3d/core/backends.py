"""Choosing between a CUDA library (tiny-cuda-nn, nerfacc, ...) and scene3d's pure-torch twin, per call.

``"auto"`` uses the CUDA library when the inputs are on a CUDA device and the library imports, else the torch
twin (with one warning per library when CUDA is present but the library is not); ``"torch"`` always uses the
twin; ``"cuda-lib"`` demands the library and CUDA inputs. Nothing here imports a CUDA library at import time.
"""

from __future__ import annotations

import importlib
import logging
from typing import Literal

import torch

logger = logging.getLogger(__name__)

Backend = Literal["auto", "cuda-lib", "torch"]
"""A backend setting: ``"auto"`` | ``"cuda-lib"`` | ``"torch"``."""

BACKENDS: tuple[str, ...] = ("auto", "cuda-lib", "torch")
_import_failures: dict[str, str] = {}


def check_backend(backend: str, name: str = "backend") -> None:
    """Raise ``ValueError`` unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"{name} must be one of {BACKENDS}, got {backend!r}")


def library_available(module: str) -> bool:
    """Whether ``module`` imports; the first failure per module is logged once (the error is kept, not hidden)."""
    if module in _import_failures:
        return False
    try:
        importlib.import_module(module)
    except ImportError as err:
        _import_failures[module] = f"{type(err).__name__}: {err}"
        logger.warning("%s cannot be imported (%s); using scene3d's torch twin on CUDA", module, err)
        return False
    return True


def use_cuda_lib(backend: str, device: torch.device, module: str) -> bool:
    """Resolve ``backend`` for inputs on ``device``: ``True`` means call the CUDA library ``module``.

    Raises:
        ValueError: for an unknown backend, or ``"cuda-lib"`` with inputs that are not on a CUDA device.
        ImportError: for ``"cuda-lib"`` when ``module`` does not import.
    """
    check_backend(backend)
    if backend == "torch":
        return False
    if backend == "cuda-lib":
        if device.type != "cuda":
            raise ValueError(f"backend='cuda-lib' ({module}) needs CUDA tensors, got tensors on {device}")
        importlib.import_module(module)
        return True
    return device.type == "cuda" and library_available(module)
