"""s3d-nerf as a nerfstudio model: a hash-grid (or TensoRF) radiance field rendered with occupancy-grid marching.

The model only orchestrates: the field is :class:`~scene3d.fields.radiance.RadianceField`, the grid
:class:`~scene3d.renderers.occupancy.OccupancyGrid`, and rendering :func:`~scene3d.renderers.marching.render_rays`.
On top it adds what training needs: the occupancy refresh before each iteration, a batch size that follows a
sample budget (Instant-NGP's dynamic batch: rays per step grow as empty space is carved out), the background colour
of the dataset, metrics (LPIPS only when its weights are on disk), and chunked full-image rendering for the viewer,
``ns-render``, ``ns-eval`` and ``ns-export``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components import renderers as nerfstudio_renderers
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor
from torch.nn import Parameter

from scene3d.core import metrics
from scene3d.core.backends import Backend, check_backend
from scene3d.fields.hash_grid import HashGridEncoding
from scene3d.fields.radiance import RadianceField
from scene3d.fields.tensorf import TensorVMEncoding
from scene3d.renderers.marching import MarchSettings, RayOutputs, render_rays
from scene3d.renderers.occupancy import OccupancyGrid

logger = logging.getLogger(__name__)


@dataclass
class S3DNerfModelConfig(ModelConfig):
    """s3d-nerf settings (defaults: paper scale, Instant-NGP's; ``s3d-nerf-tiny`` overrides them for a CPU)."""

    _target: type = field(default_factory=lambda: S3DNerfModel)
    enable_collider: bool = False
    """Unused: rays are clipped by the occupancy grid's box and the near/far planes below."""
    encoding: Literal["hash", "tensorf"] = "hash"
    """Position encoding: Instant-NGP hash grid, or TensoRF's vector-matrix factorisation."""
    hash_levels: int = 16
    """Hash grid levels ``L``."""
    hash_features: int = 2
    """Features per level ``F``."""
    hash_log2_size: int = 19
    """``log2 T``, table entries per level."""
    hash_base_resolution: int = 16
    """Coarsest grid resolution ``N_min``."""
    hash_max_resolution: int = 2048
    """Finest grid resolution ``N_max``."""
    tensorf_components: int = 16
    """TensoRF channels per plane-line pair (3× this many features)."""
    tensorf_resolution: int = 128
    """TensoRF plane and line resolution."""
    geo_feat_dim: int = 15
    """Geometry features passed from the density head to the colour head."""
    density_hidden: int = 64
    """Width of the density MLP."""
    density_layers: int = 1
    """Hidden layers of the density MLP."""
    color_hidden: int = 64
    """Width of the colour MLP."""
    color_layers: int = 2
    """Hidden layers of the colour MLP."""
    sh_degree: int = 3
    """Spherical-harmonics degree of the view-direction encoding."""
    density_bias: float = -1.0
    """Initial density pre-activation bias (σ starts near exp(bias): a light fog, cheap to march through)."""
    grid_resolution: int = 128
    """Occupancy cells along the longest side of the scene box (other sides get cubic cells)."""
    grid_levels: int = 1
    """Occupancy cascade levels (1 for a bounded scene box)."""
    steps_per_diagonal: int = 1024
    """Marching step = scene box diagonal / this (Instant-NGP: 1024)."""
    cone_angle: float = 0.0
    """Step growth with distance (0 for object scenes; 1/256 for large ones)."""
    near_plane: float = 0.05
    """Rays start this far from the camera."""
    far_plane: float = 1e3
    """Rays end this far from the camera."""
    alpha_threshold: float = 0.01
    """Skip samples with α below this."""
    early_stop_eps: float = 1e-4
    """Stop rays once their transmittance falls below this."""
    occ_update_interval: int = 16
    """Refresh the occupancy grid every this many steps."""
    occ_warmup_steps: int = 256
    """Before this step every cell is refreshed; after it, a fraction of them."""
    occ_cells_fraction: float = 0.25
    """Fraction of cells refreshed per update after warm-up (plus as many occupied ones)."""
    occ_threshold: float = 0.01
    """Occupancy (σ·step) above which a cell counts as occupied."""
    occ_ema_decay: float = 0.95
    """EMA decay of the cell occupancies."""
    target_samples_per_batch: int = 1 << 18
    """Dynamic batch: rays per step are set so that about this many samples are shaded (0 disables)."""
    max_rays_per_batch: int = 1 << 16
    """Upper bound of the dynamic batch."""
    background_color: Literal["dataset", "white", "black", "random"] = "dataset"
    """Colour behind the scene: the dataset's ``background_color`` (white when it has none), a fixed one, or
    random per ray during training (forces empty space to stay transparent; evaluation then uses the dataset's)."""
    predict_normals: bool = True
    """Render a ``normals`` output (from the density gradient) at evaluation; ``ns-export pointcloud`` reads it."""
    backend: Backend = "auto"
    """``auto``: tiny-cuda-nn hash grid and nerfacc marching/compositing on CUDA, pure torch elsewhere."""
    eval_num_rays_per_chunk: int = 1 << 14
    """Rays rendered per chunk for full images (viewer, ns-render, ns-eval)."""


class S3DNerfModel(Model):
    """The s3d-nerf model (see the module docstring)."""

    config: S3DNerfModelConfig

    def populate_modules(self) -> None:
        """Build the field, the occupancy grid and the metrics from the config and the scene box."""
        super().populate_modules()
        cfg = self.config
        check_backend(cfg.backend, "backend")
        aabb = self.scene_box.aabb.float()
        extent = aabb[1] - aabb[0]
        if cfg.encoding == "hash":
            encoding: torch.nn.Module = HashGridEncoding(
                n_levels=cfg.hash_levels, features_per_level=cfg.hash_features, log2_hashmap_size=cfg.hash_log2_size,
                base_resolution=cfg.hash_base_resolution, max_resolution=cfg.hash_max_resolution, backend=cfg.backend,
            )  # fmt: skip
        elif cfg.encoding == "tensorf":
            encoding = TensorVMEncoding(components=cfg.tensorf_components, resolution=cfg.tensorf_resolution)
        else:
            raise ValueError(f"encoding must be 'hash' or 'tensorf', got {cfg.encoding!r}")
        self.field = RadianceField(
            aabb, encoding, geo_feat_dim=cfg.geo_feat_dim, density_hidden=cfg.density_hidden,
            density_layers=cfg.density_layers, color_hidden=cfg.color_hidden, color_layers=cfg.color_layers,
            sh_degree=cfg.sh_degree, density_bias=cfg.density_bias,
        )  # fmt: skip
        cell = float(extent.max()) / cfg.grid_resolution
        resolution = tuple(max(1, math.ceil(float(e) / cell - 1e-6)) for e in extent)
        self.occupancy_grid = OccupancyGrid(aabb.reshape(-1), resolution=resolution, levels=cfg.grid_levels)  # type: ignore[arg-type]
        self.step_size = float(extent.norm()) / cfg.steps_per_diagonal
        self.march = MarchSettings(
            step_size=self.step_size, near_plane=cfg.near_plane, far_plane=cfg.far_plane, cone_angle=cfg.cone_angle,
            early_stop_eps=cfg.early_stop_eps, alpha_threshold=cfg.alpha_threshold, backend=cfg.backend,
        )  # fmt: skip
        self.register_buffer("background", self._dataset_background(), persistent=False)
        self.last_samples = 0
        """Samples shaded in the last training batch."""
        self.last_rays = 0
        """Rays in the last training batch."""
        self.last_rgb_loss: Tensor | None = None
        """The last training batch's photometric MSE (detached; for progress displays)."""

    def _dataset_background(self) -> Tensor:
        cfg = self.config
        if cfg.background_color == "black":
            return torch.zeros(3)
        if cfg.background_color == "white":
            return torch.ones(3)
        metadata = self.kwargs.get("metadata") or {}
        colour = metadata.get("background_color")
        if colour is None:
            return torch.ones(3)
        return torch.as_tensor(colour, dtype=torch.float32).reshape(3)

    # ---------------------------------------------------------------- training hooks

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> list[TrainingCallback]:
        """Occupancy refresh before each iteration; dynamic batch size after it."""
        cfg = self.config
        step_size = self.step_size

        def update_grid(step: int) -> None:
            self.occupancy_grid.update(
                step, lambda x: self.field.density(x) * step_size, occ_threshold=cfg.occ_threshold,
                ema_decay=cfg.occ_ema_decay, warmup_steps=cfg.occ_warmup_steps, interval=cfg.occ_update_interval,
                cells_fraction=cfg.occ_cells_fraction,
            )  # fmt: skip

        callbacks = [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], update_grid, update_every_num_iters=1)
        ]
        sampler = getattr(getattr(training_callback_attributes.pipeline, "datamanager", None), "train_pixel_sampler", None)
        if cfg.target_samples_per_batch > 0 and sampler is not None:

            def resize_batch(step: int) -> None:
                if self.last_samples > 0 and self.last_rays > 0:
                    rays = self.last_rays * cfg.target_samples_per_batch / self.last_samples
                    rays = int(min(max(rays, 256), cfg.max_rays_per_batch))
                    sampler.set_num_rays_per_batch(rays)

            callbacks.append(
                TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], resize_batch, update_every_num_iters=1)
            )
        return callbacks

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        """One group, ``fields``."""
        return {"fields": list(self.field.parameters())}

    # ---------------------------------------------------------------- rendering

    def render(
        self,
        origins: Tensor,
        directions: Tensor,
        background: Tensor | None = None,
        *,
        t_min: Tensor | None = None,
        t_max: Tensor | None = None,
        with_normals: bool | None = None,
    ) -> RayOutputs:
        """Render rays (world frame) with this model's settings; used by ``get_outputs`` and scene3d's exporters."""
        if with_normals is None:
            with_normals = self.config.predict_normals and not self.training
        return render_rays(
            self.field, self.occupancy_grid, origins, directions, self.march,
            background=self.background if background is None else background,
            stratified=self.training, with_normals=with_normals, t_min=t_min, t_max=t_max,
        )  # fmt: skip

    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, Tensor]:  # type: ignore[override]
        """rgb, accumulation, depth (and normals in [0, 1] at evaluation) for a ray bundle.

        Honours the bundle's ``nears``/``fars`` (the viewer's crop box) and, outside training, nerfstudio's
        background override (the viewer's background colour control).
        """
        shape = ray_bundle.origins.shape[:-1]
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        background = self.background
        if self.training and self.config.background_color == "random":
            background = torch.rand_like(origins)
        override = nerfstudio_renderers.BACKGROUND_COLOR_OVERRIDE
        if not self.training and override is not None:
            background = torch.as_tensor(override, dtype=origins.dtype, device=origins.device).reshape(3)
        t_min = None if ray_bundle.nears is None else ray_bundle.nears.reshape(-1)
        t_max = None if ray_bundle.fars is None else ray_bundle.fars.reshape(-1)
        out = self.render(origins, directions, background, t_min=t_min, t_max=t_max)
        outputs = {
            "rgb": out.rgb.reshape(*shape, 3),
            "accumulation": out.opacity.reshape(*shape, 1),
            "depth": out.depth.reshape(*shape, 1),
        }
        if out.normals is not None:
            outputs["normals"] = ((out.normals + 1.0) / 2.0).reshape(*shape, 3)
        if self.training:
            outputs["background"] = background.expand_as(origins).reshape(*shape, 3)
            self.last_samples, self.last_rays = out.n_samples, origins.shape[0]
        return outputs

    def get_rgba_image(self, outputs: dict[str, Tensor], output_name: str = "rgb") -> Tensor:
        """Foreground colour (background removed) with the accumulation as alpha (``ns-export pointcloud``)."""
        rgb = outputs[output_name]
        acc = outputs[output_name.replace("rgb", "accumulation")]
        foreground = (rgb - (1.0 - acc) * self.background.to(rgb)) / acc.clamp_min(1e-6)
        return torch.cat([foreground.clamp(0.0, 1.0), acc], dim=-1)

    # ---------------------------------------------------------------- losses and metrics

    def _target(self, batch: dict[str, Any], background: Tensor) -> Tensor:
        image = batch["image"].to(self.device)
        if image.shape[-1] == 4:  # RGBA: composite on the same background as the prediction
            return image[..., :3] * image[..., 3:] + background * (1.0 - image[..., 3:])
        return image[..., :3]

    def get_loss_dict(self, outputs: dict[str, Tensor], batch: dict[str, Any], metrics_dict: dict | None = None) -> dict[str, Tensor]:
        """Photometric MSE."""
        target = self._target(batch, outputs.get("background", self.background))
        loss = torch.nn.functional.mse_loss(outputs["rgb"], target)
        self.last_rgb_loss = loss.detach()
        return {"rgb_loss": loss}

    def get_metrics_dict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> dict[str, Tensor]:
        """Training PSNR of the batch, samples per batch and rays per batch."""
        target = self._target(batch, outputs.get("background", self.background))
        mse = torch.mean((outputs["rgb"].detach() - target) ** 2)
        return {
            "psnr": -10.0 * torch.log10(mse.clamp_min(1e-10)),
            "num_samples_per_batch": torch.tensor(float(self.last_samples)),
            "num_rays_per_batch": torch.tensor(float(self.last_rays)),
            "occupied_fraction": torch.tensor(self.occupancy_grid.occupied_fraction),
        }

    def get_image_metrics_and_images(
        self, outputs: dict[str, Tensor], batch: dict[str, Any]
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        """PSNR, SSIM (and LPIPS when its weights are present) of a full image, plus comparison images."""
        gt = self._target(batch, self.background)
        rgb = outputs["rgb"]
        pred_b, gt_b = rgb.permute(2, 0, 1)[None].clamp(0, 1), gt.permute(2, 0, 1)[None]
        metrics_dict = {"psnr": float(metrics.psnr(pred_b, gt_b)), "ssim": float(metrics.ssim(pred_b, gt_b))}
        lp = metrics.lpips(pred_b, gt_b)
        if lp is not None:
            metrics_dict["lpips"] = float(lp)
        acc = colormaps.apply_colormap(outputs["accumulation"])
        depth = colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"])
        images = {"img": torch.cat([gt, rgb], dim=1), "accumulation": acc, "depth": depth}
        return metrics_dict, images
