"""``ns-train regs`` (ReGS's official settings) and ``ns-train regs-tiny`` (the same algorithm sized for a CPU).

    ns-train regs --data DATA --load-dir SPLAT_RUN \\
        --pipeline.reference-image style.png --pipeline.reference-view frame_00003
    ns-train regs-tiny --data DATA --load-dir SPLAT_RUN --pipeline.reference-folder REF_CASE

``SPLAT_RUN`` is an ``s3d-splat`` / ``s3d-splat-tiny`` run on the same data (its run folder or its
``nerfstudio_models``); a ``regs`` run given as ``--load-dir`` resumes.
"""

from __future__ import annotations

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from scene3d.methods.common.trainer import S3DTrainerConfig
from scene3d.methods.regs.model import ReGSModelConfig
from scene3d.methods.regs.pipeline import ReGSPipelineConfig


def _optimizers() -> dict:
    """ReGS's learning rates (``arguments/__init__.py``), constant: 3DGS's position lr 1.6e-6 (init = final), features
    0.0025, opacity 0.05, scaling 0.005, rotation 0.001; Adam with ε = 1e-15. (3DGS multiplies the position lr by
    its camera extent; splatfacto and s3d-splat do not, and neither does this.)"""

    def adam(lr: float) -> dict:
        return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}

    return {
        "means": adam(1.6e-6),
        "features_dc": adam(0.0025),
        "opacities": adam(0.05),
        "scales": adam(0.005),
        "quats": adam(0.001),
    }


def regs_config() -> S3DTrainerConfig:
    """ReGS as released: 3,000 iterations, densification every 100 until 1,500, τ₀ = 5e-5 (``demo.sh``), VGG-16."""
    return S3DTrainerConfig(
        method_name="regs",
        steps_per_eval_image=500,
        steps_per_eval_batch=0,
        steps_per_save=1000,
        steps_per_eval_all_images=0,
        max_num_iterations=3000,
        mixed_precision=False,
        pipeline=ReGSPipelineConfig(model=ReGSModelConfig()),
        optimizers=_optimizers(),
        vis="viewer",
    )


TINY_STEPS = 1000
"""regs-tiny's iterations (ReGS: 3,000). With ReGS's learning rates a DC colour moves at most ~0.0007 per step, so
a full change of colour needs several hundred steps; fewer iterations would not reach the style."""


def regs_tiny_config() -> S3DTrainerConfig:
    """The same algorithm for a 2-core CPU: 1,000 iterations with 14 densification steps (every 35 until 500, as
    ReGS's 14 every 100 until 1,500 of 3,000), tiny-random VGG features (no weights offline), a colour threshold
    for scenes of a few thousand Gaussians (whose per-Gaussian gradients are ~100× those of a 1M-Gaussian scene) and a
    z-test tolerance for ~50-px images (README: "regs-tiny")."""
    return S3DTrainerConfig(
        method_name="regs-tiny",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=100,
        steps_per_eval_all_images=0,
        max_num_iterations=TINY_STEPS,
        mixed_precision=False,
        pipeline=ReGSPipelineConfig(
            model=ReGSModelConfig(),
            vgg="tiny-random",
            densify_every=35,
            densify_until=500,
            densify_grad_threshold=5e-3,
            pseudo_depth_tolerance=0.02,
            prune_big_after=TINY_STEPS,
        ),
        optimizers=_optimizers(),
        vis="viewer",
    )


regs = MethodSpecification(
    config=regs_config(),
    description="ReGS (Mei et al., NeurIPS 2024): restyle an s3d-splat scene from one stylized reference view",
)
regs_tiny = MethodSpecification(
    config=regs_tiny_config(),
    description="ReGS sized to run on a 2-core CPU in minutes (tiny-random VGG)",
)
