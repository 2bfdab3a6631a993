"""Fixtures of the prior tests: the tiny-random preset, in memory and saved in the real on-disk layout."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from scene3d.priors import PriorSettings, StableDiffusionPrior, load_diffusion, save_tiny_random


@pytest.fixture(scope="session", autouse=True)
def _text_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the default text-embedding cache out of the user's home during tests."""
    old = os.environ.get("SCENE3D_TEXT_CACHE_DIR")
    os.environ["SCENE3D_TEXT_CACHE_DIR"] = str(tmp_path_factory.mktemp("text-cache"))
    yield
    if old is None:
        os.environ.pop("SCENE3D_TEXT_CACHE_DIR", None)
    else:
        os.environ["SCENE3D_TEXT_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run in ~10 ms per UNet call on one thread; on the shared 2-core machine, torch's 2-thread
    kernels under load spin on synchronisation and run 10-50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cpu_settings(tmp_path_factory: pytest.TempPathFactory) -> PriorSettings:
    return PriorSettings(device="cpu", models_dir=None, text_cache_dir=tmp_path_factory.mktemp("emb"))


@pytest.fixture(scope="session")
def sd(cpu_settings: PriorSettings) -> StableDiffusionPrior:
    """The tiny text-to-image prior with a tiny ControlNet. Tests must leave it as they found it."""
    return load_diffusion("tiny-random", cpu_settings, controlnet="tiny-random")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every preset's tiny-random twin written in the real layout (``<folder>/<preset name>/``)."""
    return save_tiny_random(tmp_path_factory.mktemp("tiny-models"))
