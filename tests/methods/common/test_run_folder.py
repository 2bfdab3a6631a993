"""S3DTrainer tells a RunFolderAware pipeline its run folder and the resumed run's folder before loading."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from scene3d.core.checkpoint import atomic_torch_save
from scene3d.methods.common.trainer import RunFolderAware, S3DTrainer


class _Pipeline(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Path, Path | None]] = []
        self.loaded_step: int | None = None

    def attach_run_folder(self, run_dir: Path, resumed_run_dir: Path | None) -> None:
        assert self.loaded_step is None, "the run folder must be attached before the checkpoint is loaded"
        self.calls.append((run_dir, resumed_run_dir))

    def load_pipeline(self, state: dict, step: int) -> None:
        self.loaded_step = step


def _trainer(base_dir: Path, load_dir: Path | None = None, load_checkpoint: Path | None = None) -> S3DTrainer:
    trainer = S3DTrainer.__new__(S3DTrainer)
    trainer.config = SimpleNamespace(load_dir=load_dir, load_checkpoint=load_checkpoint, load_step=None, load_scheduler=True)
    trainer.base_dir = base_dir
    trainer.pipeline = _Pipeline()
    trainer.optimizers = SimpleNamespace(load_optimizers=lambda s: None, load_schedulers=lambda s: None)
    trainer.grad_scaler = SimpleNamespace(load_state_dict=lambda s: None)
    return trainer


def _checkpoint(run: Path, step: int) -> Path:
    path = run / "nerfstudio_models" / f"step-{step:09d}.ckpt"
    atomic_torch_save({"step": step, "pipeline": {}, "optimizers": {}, "schedulers": {}, "scalers": {}}, path)
    return path


def test_fresh_run_is_told_its_folder_only(tmp_path: Path):
    trainer = _trainer(tmp_path / "new")
    assert isinstance(trainer.pipeline, RunFolderAware)
    trainer._load_checkpoint()
    assert trainer.pipeline.calls == [(tmp_path / "new", None)]


@pytest.mark.parametrize("form", ["run folder", "checkpoint folder", "checkpoint file"])
def test_resumed_run_is_told_the_old_folder_first(tmp_path: Path, form: str):
    old = tmp_path / "old"
    ckpt = _checkpoint(old, 7)
    if form == "checkpoint file":
        trainer = _trainer(tmp_path / "new", load_checkpoint=ckpt)
    else:
        trainer = _trainer(tmp_path / "new", load_dir=old if form == "run folder" else old / "nerfstudio_models")
    trainer._load_checkpoint()
    assert trainer.pipeline.calls == [(tmp_path / "new", old)]
    assert trainer.pipeline.loaded_step == 7 and trainer._start_step == 8
