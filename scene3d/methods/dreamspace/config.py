"""``ns-train dreamspace`` (the paper's scale: SD 1.5 + depth ControlNet, SD 2 inpainting) and ``ns-train
dreamspace-tiny`` (the same stages sized for a CPU, ``tiny-random`` priors).

    ns-train dreamspace --data ROOM --prompt "a japanese tea room"
    ns-train dreamspace-tiny --data ROOM --prompt "a japanese tea room"
    ns-train dreamspace-tiny --data data/room --pipeline.diffusion groundtruth:data/room \\
        --pipeline.controlnet groundtruth:data/room --pipeline.inpainting groundtruth:data/room

``ROOM`` is a mesh file (a scan, ``s3d export mesh`` of a trained run) or a dataset written by ``s3d data synth``.
"""

from __future__ import annotations

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from scene3d.methods.common.trainer import S3DTrainerConfig
from scene3d.methods.dreamspace.datamanager import DreamSpaceDataManagerConfig
from scene3d.methods.dreamspace.model import DreamSpaceModelConfig
from scene3d.methods.dreamspace.panorama import TileLayout
from scene3d.methods.dreamspace.pipeline import DreamSpacePipelineConfig, build_schedule

TINY = "tiny-random"


def _optimizers(lr: float) -> dict:
    """Adam on the imitating network, constant rate (its stage resets the moments)."""
    return {"imitation": {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15), "scheduler": None}}


def _trainer(name: str, pipeline: DreamSpacePipelineConfig, steps_per_save: int, lr: float) -> S3DTrainerConfig:
    return S3DTrainerConfig(
        method_name=name,
        steps_per_eval_image=0,
        steps_per_eval_batch=0,
        steps_per_eval_all_images=0,
        steps_per_save=steps_per_save,
        max_num_iterations=build_schedule(pipeline).total_steps,
        mixed_precision=False,
        pipeline=pipeline,
        optimizers=_optimizers(lr),
        vis="viewer",
    )


def dreamspace_config() -> S3DTrainerConfig:
    """The paper's scale: a 512 × 1024 coarse panorama (SD 1.5 + ControlNet 1.1 depth), refined at 1024 × 2048 in 22
    tiles of 512², 8 interior views inpainted at 512² (SD 2 inpainting), a 2048² atlas, 2,000 imitation steps."""
    return _trainer("dreamspace", DreamSpacePipelineConfig(), steps_per_save=500, lr=5e-3)


def dreamspace_tiny_config() -> S3DTrainerConfig:
    """Every stage, sized for a 2-core CPU: 32 × 64 coarse panorama, 64 × 128 fine one in 8 tiles of 32², 3 interior
    views of 48², a ~128² atlas, 150 imitation steps, tiny-random priors (8 denoising steps)."""
    pipeline = DreamSpacePipelineConfig(
        datamanager=DreamSpaceDataManagerConfig(max_faces=20_000, walkthrough_views=8),
        model=DreamSpaceModelConfig(imitation_frequencies=6, imitation_hidden_dim=64, imitation_layers=2,
                                    eval_num_rays_per_chunk=1 << 14),  # fmt: skip
        diffusion=TINY, controlnet=TINY, inpainting=TINY,
        steps=8, atlas_resolution=128, coarse_height=32, fine_height=64,
        tile_size=32, tile_layout=TileLayout(rings=((0.0, 6),), poles=True, fov_deg=90.0),
        views=3, view_size=48, view_candidates=8, inpaint_candidates=2,
        imitation_steps=150, imitation_batch=2048, imitation_refresh=50,
    )  # fmt: skip
    return _trainer("dreamspace-tiny", pipeline, steps_per_save=50, lr=5e-3)


dreamspace = MethodSpecification(
    config=dreamspace_config(),
    description="DreamSpace (Yang et al., IEEE VR 2024): retexture a room mesh from a text prompt via a 360° panorama",
)
dreamspace_tiny = MethodSpecification(
    config=dreamspace_tiny_config(),
    description="DreamSpace sized to run on a 2-core CPU in minutes (tiny-random priors)",
)
