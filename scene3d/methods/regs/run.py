"""Run ReGS from Python (what ``ns-train regs-tiny ...`` does), for the benchmark and the demo's stylization step.

Example:
    >>> cfg = regs_run_config("/tmp/scene", "outputs/scene/s3d-splat-tiny/RUN", "/tmp/scene/images_stylized/frame_00003.png",
    ...                       "frame_00003", "outputs")  # doctest: +SKIP
    >>> trainer = train(cfg)  # doctest: +SKIP
    >>> scores = evaluate_pipeline(trainer.pipeline)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scene3d.methods.common.trainer import S3DTrainer, S3DTrainerConfig, seed_everything
from scene3d.methods.regs.config import regs_config, regs_tiny_config
from scene3d.methods.regs.evaluate import StylizationScores, evaluate_pipeline


def regs_run_config(
    data: str | Path,
    splat_run: str | Path,
    reference_image: str | Path,
    reference_view: str,
    output_dir: str | Path,
    *,
    tiny: bool = True,
    experiment_name: str | None = None,
    timestamp: str | None = None,
    max_num_iterations: int | None = None,
    vis: str = "tensorboard",
    **pipeline: Any,
) -> S3DTrainerConfig:
    """``regs-tiny`` (or ``regs``) set up as ``ns-train`` would be with these flags; ``pipeline`` overrides fields of
    :class:`~scene3d.methods.regs.pipeline.ReGSPipelineConfig` (``densify_by="position"``, ...). ``vis="quiet"``:
    no viewer, stats table or profiler output."""
    cfg = regs_tiny_config() if tiny else regs_config()
    cfg.data = Path(data)
    cfg.pipeline.datamanager.data = Path(data)
    cfg.output_dir = Path(output_dir)
    cfg.load_dir = Path(splat_run)
    if vis == "quiet":
        quiet(cfg)
    else:
        cfg.vis = vis  # type: ignore[assignment]
    if experiment_name is not None:
        cfg.experiment_name = experiment_name
    if max_num_iterations is not None:
        cfg.max_num_iterations = max_num_iterations
    cfg.pipeline = dataclasses.replace(
        cfg.pipeline, reference_image=Path(reference_image), reference_view=str(reference_view), **pipeline
    )
    if timestamp is None:
        cfg.set_timestamp()
    else:
        cfg.timestamp = timestamp
    return cfg


def quiet(config: S3DTrainerConfig) -> S3DTrainerConfig:
    """No viewer, no stats table, no profiler report (for scripted runs that print their own summary)."""
    config.vis = "tensorboard"  # type: ignore[assignment]
    config.logging.local_writer.enable = False
    config.logging.profiler = "none"
    return config


def stylized_object_scene(out: str | Path, *, size: int, views: int, seed: int = 0) -> Path:
    """The synthetic ``object`` scene with its stylized twin renders (reused when ``out`` already holds it)."""
    import json

    from scene3d.datasets.synthetic import generate_scene

    out = Path(out)
    meta = out / "transforms.json"
    if meta.is_file():
        info = json.loads(meta.read_text(encoding="utf-8")).get("scene3d", {})
        if (info.get("kind"), info.get("size"), info.get("views"), info.get("seed"), info.get("stylized")) == (
            "object", size, views, seed, True,
        ):  # fmt: skip
            return out
    return generate_scene("object", out, size=size, views=views, seed=seed, stylized=True)


def train_splat_tiny(
    data: str | Path, output_dir: str | Path, *, steps: int, name: str, max_init_points: int | None = 2000
) -> tuple[Path, bool]:
    """An ``s3d-splat-tiny`` run of ``steps`` steps on ``data`` in ``output_dir/name/s3d-splat-tiny/steps<N>``
    (reused when it has a checkpoint), started from at most ``max_init_points`` of the dataset's points (a scene
    of a few thousand Gaussians, what ``regs-tiny`` is sized for). Returns the run folder and whether it was trained
    now."""
    from scene3d.core.checkpoint import checkpoint_steps
    from scene3d.methods.s3d_splat.config import s3d_splat_tiny_config

    cfg = quiet(s3d_splat_tiny_config())
    cfg.pipeline.datamanager.data = Path(data)
    cfg.pipeline.model.max_init_points = max_init_points  # type: ignore[attr-defined]
    cfg.output_dir = Path(output_dir)
    cfg.experiment_name = name
    cfg.timestamp = f"steps{steps}"
    cfg.max_num_iterations = steps
    cfg.steps_per_save = steps
    cfg.steps_per_eval_image = 10**9
    run = cfg.get_base_dir()
    if (run / "nerfstudio_models").is_dir() and checkpoint_steps(run / "nerfstudio_models"):
        return run, False
    train(cfg)
    return run, True


def train(config: S3DTrainerConfig) -> S3DTrainer:
    """Set up and run the trainer (saves ``config.yml`` and checkpoints under the run folder); returns it."""
    config.save_config()
    seed_everything(config.machine.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    assert isinstance(trainer, S3DTrainer)
    trainer.setup()
    trainer.train()
    return trainer


@dataclass
class StylizedRun:
    """A finished ReGS run."""

    config_path: Path
    """Its ``config.yml`` (for ``ns-viewer --load-config``, ``s3d export splat --load-config``)."""
    scores: StylizationScores
    trainer: S3DTrainer


def run_and_score(config: S3DTrainerConfig, *, fps_size: int = 256) -> StylizedRun:
    """Train a ReGS config and score it against the dataset's true stylized renders."""
    trainer = train(config)
    return StylizedRun(config.get_base_dir() / "config.yml", evaluate_pipeline(trainer.pipeline, fps_size=fps_size), trainer)
