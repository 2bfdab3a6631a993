"""epigraf-tiny through nerfstudio's trainer: train a few GAN iterations, save, resume, reload, render and export."""

from pathlib import Path

import numpy as np
import pytest
import torch

from scene3d.core.checkpoint import checkpoint_steps, load_checkpoint
from scene3d.methods.epigraf.config import epigraf_tiny_config


def _trainer(data: Path, out: Path, iterations: int, load_dir: Path | None = None):
    cfg = epigraf_tiny_config()
    cfg.pipeline.datamanager.data = data
    cfg.pipeline.datamanager.images_per_batch = 4
    cfg.output_dir = out
    cfg.vis = "tensorboard"
    cfg.max_num_iterations = iterations
    cfg.steps_per_save = 2
    cfg.load_dir = load_dir
    cfg.set_timestamp()
    cfg.timestamp = cfg.timestamp + ("-resumed" if load_dir else "")
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return cfg, trainer


@pytest.mark.slow
def test_train_save_resume_reload_render_export(collection_dir: Path, tmp_path: Path):
    from scene3d.export.epigraf import extract_mesh, load_run, turntable, write_ply, write_video

    cfg, trainer = _trainer(collection_dir, tmp_path / "out", 3)
    base = cfg.get_base_dir()
    ckpt_dir = base / cfg.relative_model_dir
    assert checkpoint_steps(ckpt_dir) == [2]
    state = load_checkpoint(ckpt_dir / "step-000000002.ckpt")  # weights_only=True
    assert set(state["optimizers"]) == {"generator", "discriminator"}
    assert any(k.startswith("_model.generator_ema.") for k in state["pipeline"])
    cfg.save_config()

    # resume: optimizer state and weights come back, training continues from step 3
    cfg2, trainer2 = _trainer(collection_dir, tmp_path / "out", 2, load_dir=ckpt_dir)
    assert trainer2._start_step == 3
    assert checkpoint_steps(cfg2.get_base_dir() / cfg2.relative_model_dir) == [4]

    # reload the first run from its config.yml and render / export one instance
    run = load_run(base / "config.yml")
    assert run.step == 2
    ema_saved = state["pipeline"]["_model.generator_ema.decoder.layers.0.weight"]
    torch.testing.assert_close(run.model.generator_ema.decoder.layers[0].weight, ema_saved)
    frames = turntable(run.model, 3, frames=2, size=16)
    assert frames.shape == (2, 16, 16, 3) and frames.dtype == np.uint8
    planes = run.model.planes_for_seed(3, 0.7)
    from scene3d.export.epigraf import density_grid

    grid = density_grid(run.model, planes, 24)
    mesh = extract_mesh(run.model, 3, resolution=24, threshold=float(np.quantile(grid, 0.7)))
    assert len(mesh.faces) > 0 and mesh.colors.shape == (len(mesh.vertices), 3)
    write_ply(mesh, tmp_path / "m.ply")
    write_video(frames, tmp_path / "t.mp4")
    assert (tmp_path / "m.ply").stat().st_size > 0 and (tmp_path / "t.mp4").stat().st_size > 0

    # the command line, with its default iso-level (the density at the rendered surface)
    from scene3d.cli.main import main

    out = tmp_path / "exports"
    argv = ["export", "epigraf", "--load-config", str(base / "config.yml"), "--seed", "3", "--out", str(out),
            "--resolution", "24", "--frames", "3", "--size", "16"]
    assert main(argv) == 0
    import trimesh

    mesh = trimesh.load(out / "seed3.ply")
    assert len(mesh.faces) > 0 and mesh.visual.vertex_colors.shape[0] == len(mesh.vertices)
    assert (out / "seed3_turntable.mp4").stat().st_size > 0
