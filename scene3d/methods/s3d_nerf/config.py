"""``ns-train s3d-nerf`` (Instant-NGP scale, for a GPU) and ``ns-train s3d-nerf-tiny`` (the same algorithm for a CPU).

Both read scene3d datasets through the ``scene3d-data`` dataparser by default (``ns-train s3d-nerf-tiny
--data DIR``; runs land in ``outputs/<DIR's name>/s3d-nerf-tiny/<timestamp>``) and train under :class:`~scene3d.methods.common.trainer.S3DTrainerConfig`.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import LoggingConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from scene3d.datasets.dataparser import Scene3DDataParserConfig
from scene3d.methods.common.trainer import S3DTrainerConfig
from scene3d.methods.s3d_nerf.model import S3DNerfModelConfig
from scene3d.methods.s3d_nerf.schedule import StepDecaySchedulerConfig


def _trainer(
    name: str, model: S3DNerfModelConfig, *, iterations: int, rays: int, lr: float, save_every: int,
    eval_image_every: int,
) -> S3DTrainerConfig:  # fmt: skip
    return S3DTrainerConfig(
        method_name=name,
        steps_per_save=save_every,
        steps_per_eval_batch=0,
        steps_per_eval_image=eval_image_every,
        steps_per_eval_all_images=0,
        max_num_iterations=iterations,
        mixed_precision=False,
        save_only_latest_checkpoint=True,
        pipeline=VanillaPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=Scene3DDataParserConfig(),
                train_num_rays_per_batch=rays,
                eval_num_rays_per_batch=rays,
            ),
            model=model,
        ),
        optimizers={
            "fields": {
                "optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
                "scheduler": StepDecaySchedulerConfig(max_steps=iterations),
            }
        },
        logging=LoggingConfig(steps_per_log=50),
        vis="viewer",
    )


def s3d_nerf_config() -> S3DTrainerConfig:
    """Paper scale: Instant-NGP's field (L=16, F=2, T=2^19, N_min=16, N_max=2048, 64-wide heads), 128³ grid,
    1024 steps per box diagonal, 2^18 samples per batch, 30k iterations."""
    return _trainer(
        "s3d-nerf", S3DNerfModelConfig(), iterations=30_000, rays=4096, lr=1e-2,
        save_every=2000, eval_image_every=500,
    )  # fmt: skip


def s3d_nerf_tiny_config() -> S3DTrainerConfig:
    """CPU scale: the same algorithm with a smaller field, grid, step count and sample budget (a few minutes)."""
    model = S3DNerfModelConfig(
        hash_levels=8,
        hash_log2_size=17,
        hash_max_resolution=512,
        density_hidden=32,
        color_hidden=32,
        geo_feat_dim=15,
        grid_resolution=96,
        steps_per_diagonal=384,
        occ_warmup_steps=64,
        occ_update_interval=16,
        target_samples_per_batch=1 << 16,
        max_rays_per_batch=1 << 13,
        eval_num_rays_per_chunk=1 << 13,
    )
    return _trainer(
        "s3d-nerf-tiny", model, iterations=800, rays=2048, lr=1e-2, save_every=200,
        eval_image_every=0,
    )  # fmt: skip


s3d_nerf = MethodSpecification(
    config=s3d_nerf_config(),
    description="s3d-nerf: hash-grid NeRF with occupancy-grid marching (Instant-NGP scale; tiny-cuda-nn/nerfacc on CUDA)",
)
s3d_nerf_tiny = MethodSpecification(
    config=s3d_nerf_tiny_config(),
    description="s3d-nerf-tiny: the same NeRF sized to train on a CPU in minutes (pure torch)",
)
