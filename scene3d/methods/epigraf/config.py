"""``ns-train epigraf`` (paper scale) and ``ns-train epigraf-tiny`` (the same algorithm sized for a 2-core CPU).

    ns-train epigraf --data /data/ffhq512            # dataset.json layout (set --pipeline.datamanager.dataparser.fov-deg)
    ns-train epigraf-tiny --data /tmp/collection     # scene3d's synthetic collection (transforms.json)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nerfstudio.engine.optimizers import OptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from scene3d.methods.common.trainer import S3DTrainerConfig
from scene3d.methods.epigraf.datamanager import EpiGRAFDataManagerConfig, EpiGRAFDataParserConfig
from scene3d.methods.epigraf.model import EpiGRAFModelConfig
from scene3d.methods.epigraf.pipeline import EpiGRAFPipelineConfig


@dataclass
class GANAdamConfig(OptimizerConfig):
    """Adam with StyleGAN's betas (0, 0.99) and eps 1e-8 (nerfstudio's AdamOptimizerConfig has no betas)."""

    _target: type = torch.optim.Adam
    lr: float = 0.002
    """Learning rate."""
    eps: float = 1e-8
    """Adam's epsilon."""
    betas: tuple[float, float] = (0.0, 0.99)
    """Adam's betas."""


def lazy_regularized(lr: float, betas: tuple[float, float], interval: int) -> GANAdamConfig:
    """StyleGAN2's lazy-regularisation correction: lr · k/(k+1), betas^(k/(k+1)) for a net regularised every k steps."""
    ratio = interval / (interval + 1) if interval > 0 else 1.0
    return GANAdamConfig(lr=lr * ratio, betas=(betas[0] ** ratio, betas[1] ** ratio))


def _optimizers(g_lr: float, d_lr: float, r1_interval: int) -> dict:
    return {
        "generator": {"optimizer": GANAdamConfig(lr=g_lr), "scheduler": None},
        "discriminator": {"optimizer": lazy_regularized(d_lr, (0.0, 0.99), r1_interval), "scheduler": None},
    }


def epigraf_config() -> S3DTrainerConfig:
    """Paper scale: tri-plane 512²×32, r = 64, 48 + 48 samples, batch 64, the official lrs and schedules.

    The official budget is 50,000 kimg = 781,250 iterations at batch 64.
    """
    model = EpiGRAFModelConfig()
    return S3DTrainerConfig(
        method_name="epigraf",
        steps_per_save=2000,
        steps_per_eval_batch=0,
        steps_per_eval_image=0,
        steps_per_eval_all_images=0,
        max_num_iterations=781_250,
        mixed_precision=False,
        pipeline=EpiGRAFPipelineConfig(
            datamanager=EpiGRAFDataManagerConfig(dataparser=EpiGRAFDataParserConfig(), images_per_batch=64),
            model=model,
        ),
        optimizers=_optimizers(0.0025, 0.002, model.r1_interval),
        vis="viewer",
    )


def epigraf_tiny_config() -> S3DTrainerConfig:
    """CPU scale: tri-plane 32²×8, r = 16 (on 64² images), 8 + 8 samples, batch 16, small G and D.

    Every step of the algorithm is kept (mapping, StyleGAN2 synthesis, tri-plane MLP, coarse + importance
    sampling, density noise, Beta patch schedule, scale-aware D with hyper-modulation, NS loss, lazy R1, blur,
    EMA); schedules are shortened to the run (anneal β over 1,000 iterations, density noise over 1,000, blur
    σ = 10 · r/64 over 100) and the EMA half-life to 400 images.
    """
    r1_interval = 16
    model = EpiGRAFModelConfig(
        z_dim=64, w_dim=64, triplane_resolution=32, triplane_channels=8, g_channel_base=1024, g_channel_max=32,
        mlp_hidden=32, num_coarse_samples=8, num_fine_samples=8, patch_resolution=16, density_noise_steps=1000,
        patch_anneal_steps=1000, d_channel_base=1024, d_channel_max=64, d_patch_embed_dim=32, d_hyper_dim=64,
        blur_sigma=2.5, blur_fade_steps=100, ema_images=400.0, r1_interval=r1_interval,
    )
    return S3DTrainerConfig(
        method_name="epigraf-tiny",
        steps_per_save=500,
        steps_per_eval_batch=0,
        steps_per_eval_image=0,
        steps_per_eval_all_images=0,
        max_num_iterations=2000,
        mixed_precision=False,
        pipeline=EpiGRAFPipelineConfig(
            datamanager=EpiGRAFDataManagerConfig(
                dataparser=EpiGRAFDataParserConfig(), images_per_batch=16, num_workers=0
            ),
            model=model,
        ),
        optimizers=_optimizers(0.0025, 0.002, r1_interval),
        vis="viewer",
    )


epigraf = MethodSpecification(config=epigraf_config(), description="EpiGRAF: a 3D-aware GAN trained patch-wise (paper scale)")
epigraf_tiny = MethodSpecification(
    config=epigraf_tiny_config(), description="EpiGRAF at CPU scale (tri-plane 32x8, 16x16 patches of 64x64 images)"
)
