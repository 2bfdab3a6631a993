"""``ns-train clnerf`` (paper scale) and ``ns-train clnerf-tiny`` (the same algorithm sized for a 2-core CPU).

    ns-train clnerf --data scans/2024-01                                   # first scan
    ns-train clnerf --data scans/2024-02 --pipeline.previous-run outputs/2024-01/clnerf/<time>
    ns-train clnerf --data /data/WAT/breville --pipeline.model.cone-angle 0.00390625   # every capture in one run
    ns-train clnerf-tiny --data /tmp/changing                              # a synthetic changing scene, on a CPU
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from scene3d.methods.clnerf.datamanager import CLNeRFDataManagerConfig
from scene3d.methods.clnerf.dataparser import CLNeRFDataParserConfig
from scene3d.methods.clnerf.model import CLNeRFModelConfig
from scene3d.methods.clnerf.pipeline import CLNeRFPipelineConfig
from scene3d.methods.common.trainer import S3DTrainerConfig


@dataclass
class CLNeRFAdamConfig(OptimizerConfig):
    """Adam with eps 1e-15 (official FusedAdam); the pipeline anneals its lr per scan."""

    _target: type = torch.optim.Adam
    lr: float = 1e-2
    """Initial learning rate of each scan (official 1e-2 on WAT)."""
    eps: float = 1e-15
    """Adam's epsilon (official 1e-15)."""


def clnerf_config() -> S3DTrainerConfig:
    """Paper scale (official WAT settings): NGPGv2 with L=16, F=2, T=2^19, 64-wide MLPs, 48/16-d embeddings,
    128³ occupancy cascades, batch 8192, Adam lr 1e-2 annealed to lr/30, 20,000 steps per scan, generative replay,
    no stored images; each scan continues the previous model (--pipeline.init scratch: the official fresh model)."""
    iterations = 20000
    return S3DTrainerConfig(
        method_name="clnerf",
        steps_per_save=2000,
        steps_per_eval_batch=0,
        steps_per_eval_image=5000,
        steps_per_eval_all_images=0,
        max_num_iterations=iterations,
        mixed_precision=False,
        pipeline=CLNeRFPipelineConfig(
            datamanager=CLNeRFDataManagerConfig(dataparser=CLNeRFDataParserConfig(), train_num_rays_per_batch=8192),
            model=CLNeRFModelConfig(),
            iterations_per_scan=iterations,
        ),
        optimizers={"fields": {"optimizer": CLNeRFAdamConfig(lr=1e-2), "scheduler": None}},
        vis="viewer",
    )


def clnerf_tiny_config() -> S3DTrainerConfig:
    """CPU scale: the same algorithm (hash grid, embeddings, occupancy grid, replay, reservoir, frame checks) with a
    6-level 2^13 hash grid, 32-wide MLPs, a 32³ grid over the scene box, 1024 rays per step and 1000 steps per scan
    (the setting benchmarks/clnerf_cpu.py measures)."""
    iterations = 1000
    return S3DTrainerConfig(
        method_name="clnerf-tiny",
        steps_per_save=0,  # the pipeline saves at the end of every scan, the trainer at the end of the run
        steps_per_eval_batch=0,
        steps_per_eval_image=0,
        steps_per_eval_all_images=0,
        max_num_iterations=iterations,
        mixed_precision=False,
        pipeline=CLNeRFPipelineConfig(
            datamanager=CLNeRFDataManagerConfig(dataparser=CLNeRFDataParserConfig(), train_num_rays_per_batch=1024),
            model=CLNeRFModelConfig(
                hash_levels=6, hash_log2_size=13, hash_base_resolution=8, hash_max_resolution=128.0,
                density_hidden=32, color_hidden=32, grid_resolution=32, grid_levels=1, grid_over="scene_box",
                render_step_size=0.05, cone_angle=0.0, grid_warmup_steps=256, eval_num_rays_per_chunk=1 << 14,
            ),  # fmt: skip
            iterations_per_scan=iterations,
        ),
        optimizers={"fields": {"optimizer": CLNeRFAdamConfig(lr=1e-2), "scheduler": None}},
        vis="viewer",
    )


clnerf = MethodSpecification(
    config=clnerf_config(),
    description="CLNeRF: one NeRF kept up to date over scans of a changing scene, generative replay (paper scale)",
)
clnerf_tiny = MethodSpecification(
    config=clnerf_tiny_config(), description="CLNeRF at CPU scale (small hash grid and MLPs, 1000 steps per scan)"
)
