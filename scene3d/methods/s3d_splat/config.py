"""``ns-train s3d-splat`` (splatfacto's settings) and ``ns-train s3d-splat-tiny`` (sized for a 2-core CPU).

    ns-train s3d-splat-tiny --data /tmp/object                        # scene3d-data is the default dataparser
    ns-train s3d-splat --data /data/scene --machine.device-type cuda  # gsplat on the GPU
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from scene3d.datasets.dataparser import Scene3DDataParserConfig
from scene3d.methods.common.trainer import S3DTrainerConfig
from scene3d.methods.s3d_splat.model import S3DSplatModelConfig


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    """nerfstudio's exponential decay with warmup, computed in Python floats.

    nerfstudio's computes the multiplier with numpy, so ``numpy.float64`` learning rates land in the optimizer and
    scheduler states, and ``torch.load(weights_only=True)`` then refuses the checkpoint.
    """

    def get_scheduler(self, optimizer: torch.optim.Optimizer, lr_init: float) -> torch.optim.lr_scheduler.LRScheduler:
        c = self.config
        lr_final = lr_init if c.lr_final is None else c.lr_final

        def multiplier(step: int) -> float:
            if step < c.warmup_steps:
                ramp = min(max(step / c.warmup_steps, 0.0), 1.0)
                if c.ramp == "cosine":
                    ramp = math.sin(0.5 * math.pi * ramp)
                lr = c.lr_pre_warmup + (lr_init - c.lr_pre_warmup) * ramp
            else:
                t = min(max((step - c.warmup_steps) / max(c.max_steps - c.warmup_steps, 1), 0.0), 1.0)
                lr = math.exp(math.log(lr_init) * (1 - t) + math.log(lr_final) * t)
            return float(lr / lr_init)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=multiplier)


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """:class:`FloatExponentialDecayScheduler`'s config (the fields of nerfstudio's exponential decay)."""

    _target: type = field(default_factory=lambda: FloatExponentialDecayScheduler)


def _datamanager() -> FullImageDatamanagerConfig:
    # cache_images="gpu" means "on the training device" (also the CPU); nerfstudio's "cpu" pins memory, which
    # needs CUDA.
    return FullImageDatamanagerConfig(
        dataparser=Scene3DDataParserConfig(load_3D_points=True), cache_images="gpu", cache_images_type="uint8"
    )


def _optimizers(means_lr: float, means_lr_final: float, max_steps: int, scale_lr: float = 0.005) -> dict:
    """splatfacto's per-parameter Adam settings; the mean's learning rate decays exponentially."""

    def adam(lr: float) -> dict:
        return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}

    return {
        "means": {
            "optimizer": AdamOptimizerConfig(lr=means_lr, eps=1e-15),
            "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=means_lr_final, max_steps=max_steps),
        },
        "features_dc": adam(0.0025),
        "features_rest": adam(0.0025 / 20),
        "opacities": adam(0.05),
        "scales": adam(scale_lr),
        "quats": adam(0.001),
    }


def s3d_splat_config() -> S3DTrainerConfig:
    """splatfacto's schedule and hyperparameters (30k steps, SH degree 3, DefaultStrategy with AbsGS)."""
    return S3DTrainerConfig(
        method_name="s3d-splat",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=30000,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(datamanager=_datamanager(), model=S3DSplatModelConfig()),
        optimizers=_optimizers(1.6e-4, 1.6e-6, 30000),
        vis="viewer",
    )


def s3d_splat_tiny_config() -> S3DTrainerConfig:
    """The same algorithm sized for a 2-core CPU: 800 steps, splatfacto's schedule compressed to fit.

    SH degree rises every 200 steps (3 from step 600); densification runs every 100 steps from step 200 to 600
    (AbsGS gradients, clone/split/prune, screen-size pruning), with one opacity reset at step 400; the means'
    learning rate decays over the 800 steps.
    """
    steps = 800
    model = S3DSplatModelConfig(
        sh_degree=3,
        sh_degree_interval=200,
        warmup_length=100,
        refine_every=100,
        stop_split_at=600,
        reset_alpha_every=4,
        stop_screen_size_at=600,
    )
    return S3DTrainerConfig(
        method_name="s3d-splat-tiny",
        steps_per_eval_image=200,
        steps_per_eval_batch=0,
        steps_per_save=400,
        steps_per_eval_all_images=0,
        max_num_iterations=steps,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(datamanager=_datamanager(), model=model),
        optimizers=_optimizers(1.6e-4 * 2, 1.6e-6 * 2, steps),
        vis="viewer",
    )


s3d_splat = MethodSpecification(
    config=s3d_splat_config(),
    description="3D Gaussian splatting on scene3d's rasterizer: gsplat on CUDA, pure torch on CPU",
)
s3d_splat_tiny = MethodSpecification(
    config=s3d_splat_tiny_config(),
    description="s3d-splat sized to train on a 2-core CPU in minutes",
)
