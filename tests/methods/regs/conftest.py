"""A tiny stylized scene and a briefly trained s3d-splat run on it, shared by the ReGS end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on the shared 2-core machine, OpenMP's spinning second thread makes the torch rasterizer
    tens of times slower under load (measured: 0.12 s vs 3.1 s for the same two renders)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_splat(data: Path, out: Path, steps: int) -> Path:
    """Train ``s3d-splat-tiny`` for ``steps`` steps; returns the run folder (holding ``nerfstudio_models``)."""
    from scene3d.methods.s3d_splat.config import s3d_splat_tiny_config

    cfg = s3d_splat_tiny_config()
    cfg.pipeline.datamanager.data = data
    cfg.pipeline.model.max_init_points = 800
    cfg.output_dir = out
    cfg.vis = "tensorboard"
    cfg.max_num_iterations = steps
    cfg.steps_per_save = steps
    cfg.steps_per_eval_image = 10_000
    cfg.set_timestamp()
    cfg.save_config()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return cfg.get_base_dir()


@pytest.fixture(scope="session")
def stylized_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px, 12-view ``object`` scene rendered twice (original and stylized textures)."""
    from scene3d.datasets.synthetic import generate_scene

    return generate_scene("object", tmp_path_factory.mktemp("regs") / "scene", size=32, views=12, stylized=True)


@pytest.fixture(scope="session")
def splat_run(stylized_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An s3d-splat-tiny run of 60 steps on :func:`stylized_scene` (request it from ``data``-marked tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_splat(stylized_scene, tmp_path_factory.mktemp("splat"), 60)
    finally:
        torch.set_num_threads(before)
