"""``s3d-splat``: 3D Gaussian splatting as a nerfstudio model, rendered by :func:`scene3d.renderers.gaussians.rasterize`.

The model orchestrates; the maths lives in :mod:`scene3d.renderers.splats` (parameters, initialisation,
rendering, adding/removing Gaussians), :mod:`scene3d.methods.s3d_splat.densify` (gsplat's strategies, MCMC's torch
twin) and :mod:`scene3d.renderers.gaussians` (the rasterizer: gsplat on CUDA, scene3d's torch path elsewhere).
See this folder's README for what follows splatfacto / gsplat's ``simple_trainer`` and what deviates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.model_components import renderers
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor
from torch.nn import Parameter

from scene3d.core import metrics
from scene3d.renderers import splats
from scene3d.methods.s3d_splat.densify import make_strategy


@dataclass
class S3DSplatModelConfig(ModelConfig):
    """3D Gaussian splatting (Kerbl et al. 2023) on scene3d's rasterizer; defaults are splatfacto's."""

    _target: type = field(default_factory=lambda: S3DSplatModel)
    enable_collider: bool = False
    """Splats need no ray collider."""
    sh_degree: int = 3
    """Highest spherical-harmonics degree of the colours (0 = view-independent DC colour only)."""
    sh_degree_interval: int = 1000
    """Raise the SH degree in use by one every this many steps (3DGS's schedule), up to ``sh_degree``."""
    init: Literal["points", "random"] = "points"
    """Start from the dataset's point cloud (``points3D_xyz``; random when the dataset has none) or at random."""
    num_random: int = 50000
    """Gaussians of a random initialisation, uniform in the scene box."""
    max_init_points: int | None = None
    """Subsample the initial point cloud to at most this many points (``None``: all)."""
    init_opacity: float = 0.1
    """Initial opacity of every Gaussian."""
    background_color: Literal["dataset", "random", "black", "white"] = "dataset"
    """Background behind the splats: the dataset's ``background_color`` (black if it has none), or a fixed or
    per-step random colour. Images with an alpha channel are composited onto the same background."""
    ssim_lambda: float = 0.2
    """Weight λ of the D-SSIM term: loss = (1 − λ) L1 + λ (1 − SSIM)."""
    num_downscales: int = 0
    """Train at 1/2^d resolution first, doubling every ``resolution_schedule`` steps (splatfacto's schedule)."""
    resolution_schedule: int = 3000
    """Steps between resolution doublings."""
    rasterize_mode: Literal["classic", "antialiased"] = "classic"
    """``antialiased`` applies Mip-Splatting's opacity compensation (PLY exports then need an aware viewer)."""
    backend: Literal["auto", "cuda-lib", "torch"] = "auto"
    """Rasterizer: gsplat on CUDA and scene3d's torch rasterizer elsewhere (``auto``), or forced."""
    output_depth_during_training: bool = False
    """Also render depth while training (always rendered for evaluation and the viewer)."""
    strategy: Literal["default", "mcmc"] = "default"
    """Densification: gsplat's ``DefaultStrategy`` (clone/split/prune) or MCMC (relocate/add, capped)."""
    warmup_length: int = 500
    """DefaultStrategy / MCMC: no refinement before this step."""
    refine_every: int = 100
    """Refine every this many steps."""
    stop_split_at: int = 15000
    """Stop refining at this step."""
    reset_alpha_every: int = 30
    """DefaultStrategy: reset opacities every this many refinements."""
    cull_alpha_thresh: float = 0.1
    """DefaultStrategy: prune Gaussians with opacity below this."""
    cull_scale_thresh: float = 0.5
    """DefaultStrategy: prune Gaussians larger than this (× scene scale) after the first reset."""
    densify_grad_thresh: float = 0.0008
    """DefaultStrategy: densify where the mean screen-space gradient (NDC) exceeds this."""
    densify_size_thresh: float = 0.01
    """DefaultStrategy: below this size (× scene scale) Gaussians are cloned, above it split."""
    split_screen_size: float = 0.05
    """DefaultStrategy: split Gaussians covering more than this fraction of the screen."""
    cull_screen_size: float = 0.15
    """DefaultStrategy: prune Gaussians covering more than this fraction of the screen."""
    stop_screen_size_at: int = 4000
    """DefaultStrategy: stop the screen-size split/prune at this step."""
    use_absgrad: bool = True
    """DefaultStrategy: use AbsGS's absolute screen-space gradients."""
    mcmc_cap_max: int = 1_000_000
    """MCMC: most Gaussians."""
    mcmc_noise_lr: float = 5e5
    """MCMC: position-noise learning-rate factor."""
    mcmc_opacity_reg: float = 0.01
    """MCMC: weight of the mean-opacity regulariser."""
    mcmc_scale_reg: float = 0.01
    """MCMC: weight of the mean-scale regulariser."""


class S3DSplatModel(Model):
    """Gaussian splats rendered through ``rasterize``; ``gauss_params`` holds the raw parameters (see ``splats``)."""

    config: S3DSplatModelConfig

    def __init__(self, *args: Any, seed_points: tuple[Tensor, Tensor] | None = None, **kwargs: Any) -> None:
        self.seed_points = seed_points
        super().__init__(*args, **kwargs)

    def populate_modules(self) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(0)
        if cfg.init == "points" and self.seed_points is not None and len(self.seed_points[0]) > 3:
            xyz, rgb = self.seed_points
            if cfg.max_init_points is not None and len(xyz) > cfg.max_init_points:
                keep = torch.randperm(len(xyz), generator=gen)[: cfg.max_init_points]
                xyz, rgb = xyz[keep], (rgb[keep] if rgb is not None and len(rgb) else rgb)
            rgb = rgb if rgb is not None and len(rgb) == len(xyz) else None
            init = splats.init_from_points(xyz, rgb, cfg.sh_degree, init_opacity=cfg.init_opacity, generator=gen)
        else:
            init = splats.init_random(
                cfg.num_random, self.scene_box.aabb, cfg.sh_degree, init_opacity=cfg.init_opacity, generator=gen
            )
        self.gauss_params = torch.nn.ParameterDict({k: Parameter(init[k]) for k in splats.PARAM_NAMES})
        aabb = self.scene_box.aabb
        # gsplat's size thresholds are relative to the scene's size; splatfacto's scene_scale = 1 assumes nerfstudio's
        # [-1, 1] normalisation, which scene3d-data does not apply.
        self.scene_scale = float(0.5 * (aabb[1] - aabb[0]).max())
        metadata = self.kwargs.get("metadata") or {}
        bg = metadata.get("background_color")
        self.dataset_background = torch.zeros(3) if bg is None else torch.as_tensor(bg, dtype=torch.float32)
        self.crop_box: OrientedBox | None = None
        self.step = 0
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.info: Any = None
        self._make_strategy()

    def _make_strategy(self) -> None:
        cfg = self.config
        device = self.gauss_params["means"].device
        if cfg.strategy == "default":
            self.strategy = make_strategy(
                "default", device, prune_opa=cfg.cull_alpha_thresh, grow_grad2d=cfg.densify_grad_thresh,
                grow_scale3d=cfg.densify_size_thresh, grow_scale2d=cfg.split_screen_size,
                prune_scale3d=cfg.cull_scale_thresh, prune_scale2d=cfg.cull_screen_size,
                refine_scale2d_stop_iter=cfg.stop_screen_size_at, refine_start_iter=cfg.warmup_length,
                refine_stop_iter=cfg.stop_split_at, reset_every=cfg.reset_alpha_every * cfg.refine_every,
                refine_every=cfg.refine_every, pause_refine_after_reset=self.num_train_data + cfg.refine_every,
                absgrad=cfg.use_absgrad,
            )  # fmt: skip
            self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene_scale)
        else:
            self.strategy = make_strategy(
                "mcmc", device, cap_max=cfg.mcmc_cap_max, noise_lr=cfg.mcmc_noise_lr,
                refine_start_iter=cfg.warmup_length, refine_stop_iter=cfg.stop_split_at, refine_every=cfg.refine_every,
                min_opacity=cfg.cull_alpha_thresh,
            )  # fmt: skip
            self.strategy_state = self.strategy.initialize_state()

    # ---- parameters -------------------------------------------------------------------------------------------

    @property
    def num_points(self) -> int:
        return int(self.gauss_params["means"].shape[0])

    @property
    def means(self) -> Tensor:
        return self.gauss_params["means"]

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {name: [self.gauss_params[name]] for name in splats.PARAM_NAMES}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Resize the splat parameters to the checkpoint's count first, in place (optimizers keep pointing at them)."""
        n = state_dict["gauss_params.means"].shape[0]
        for p in self.gauss_params.values():
            if p.shape[0] != n:
                p.data = p.data.new_zeros((n, *p.shape[1:]))
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._make_strategy()  # its running statistics were per Gaussian
        return out

    def update_to_step(self, step: int) -> None:
        self.step = step

    # ---- training hooks ---------------------------------------------------------------------------------------

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> list[TrainingCallback]:
        return [
            TrainingCallback(
                [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                self._before_step,
                args=[training_callback_attributes.optimizers],
            ),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._after_step),
        ]

    def _before_step(self, optimizers: Optimizers, step: int) -> None:
        self.step = step
        self.optimizers = optimizers.optimizers

    def _after_step(self, step: int) -> None:
        """Densify after backward and the optimizer step (as gsplat's ``simple_trainer`` does)."""
        if self.info is None:
            return
        if self.config.strategy == "default":
            self.strategy.step_post_backward(
                self.gauss_params, self.optimizers, self.strategy_state, step, self.info, packed=False
            )
        else:
            lr = self.optimizers["means"].param_groups[0]["lr"]
            self.strategy.step_post_backward(self.gauss_params, self.optimizers, self.strategy_state, step, self.info, lr=lr)
        self.info = None

    # ---- rendering --------------------------------------------------------------------------------------------

    def active_sh_degree(self) -> int:
        return min(self.step // max(self.config.sh_degree_interval, 1), self.config.sh_degree)

    def _downscale(self) -> int:
        if not self.training:
            return 1
        return 2 ** max(self.config.num_downscales - self.step // self.config.resolution_schedule, 0)

    def _background(self) -> Tensor:
        if not self.training and renderers.BACKGROUND_COLOR_OVERRIDE is not None:
            return renderers.BACKGROUND_COLOR_OVERRIDE.to(self.device)
        kind = self.config.background_color
        if kind == "random":
            return torch.rand(3, device=self.device) if self.training else self.dataset_background.to(self.device)
        if kind == "white":
            return torch.ones(3, device=self.device)
        if kind == "black":
            return torch.zeros(3, device=self.device)
        return self.dataset_background.to(self.device)

    def set_crop(self, crop_box: OrientedBox | None) -> None:
        self.crop_box = crop_box

    def get_outputs(self, camera: Cameras) -> dict[str, Tensor]:  # type: ignore[override]
        """Render one camera: ``rgb`` [H, W, 3], ``depth`` (expected ray distance) and ``accumulation`` [H, W, 1]."""
        if not isinstance(camera, Cameras) or camera.shape != (1,):
            raise ValueError(f"s3d-splat renders one nerfstudio Cameras at a time, got {type(camera).__name__}")
        d = self._downscale()
        if d > 1:
            camera.rescale_output_resolution(1 / d)
        K = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        if d > 1:
            camera.rescale_output_resolution(d)
        viewmat = splats.viewmats_from_c2w(camera.camera_to_worlds.to(self.device))
        background = self._background()
        mask = None
        if self.crop_box is not None and not self.training:
            mask = self.crop_box.within(self.means).reshape(-1)
        want_depth = not self.training or self.config.output_depth_during_training
        render, alpha, meta = splats.render(
            self.gauss_params, viewmat, K, width, height, sh_degree=self.active_sh_degree(),
            background=background[None], render_mode="RGB+ED" if want_depth else "RGB",
            rasterize_mode=self.config.rasterize_mode, absgrad=self.training and self.config.use_absgrad,
            backend=self.config.backend, mask=mask,
        )  # fmt: skip
        if self.training and torch.is_grad_enabled():
            self.info = meta
            if self.config.strategy == "default":
                self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, meta)
        outputs = {"rgb": render[0, ..., :3].clamp(0.0, 1.0), "accumulation": alpha[0], "background": background}
        if want_depth:
            # expected z-depth to expected distance along the (unit) ray, nerfstudio's "depth"; empty pixels far
            z = render[0, ..., 3:4]
            ys, xs = torch.meshgrid(
                torch.arange(height, device=self.device, dtype=z.dtype) + 0.5,
                torch.arange(width, device=self.device, dtype=z.dtype) + 0.5,
                indexing="ij",
            )
            ray_len = torch.sqrt(1 + ((xs - K[0, 0, 2]) / K[0, 0, 0]) ** 2 + ((ys - K[0, 1, 2]) / K[0, 1, 1]) ** 2)
            depth = z * ray_len[..., None]
            far = depth.detach().max() if depth.numel() else depth.new_tensor(0.0)
            outputs["depth"] = torch.where(alpha[0] > 1e-4, depth, far)
        return outputs

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: OrientedBox | None = None) -> dict[str, Tensor]:
        """The viewer's, ``ns-render``'s and ``ns-eval``'s entry: one camera, optionally cropped to ``obb_box``."""
        was_training = self.training
        self.set_crop(obb_box)
        self.eval()  # full resolution, the viewer's or the dataset's background, no densification bookkeeping
        try:
            outputs = self.get_outputs(camera.to(self.device))
        finally:
            self.set_crop(None)
            self.train(was_training)
        outputs["background"] = outputs["background"].expand(*outputs["rgb"].shape[:2], 3)
        return outputs

    # ---- losses and metrics -----------------------------------------------------------------------------------

    def _target(self, image: Tensor, background: Tensor, size: tuple[int, int]) -> Tensor:
        """Ground truth as float RGB on the model's background, area-resized to the rendered size."""
        image = image.to(self.device)
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if image.shape[-1] == 4:
            image = image[..., :3] * image[..., 3:] + (1 - image[..., 3:]) * background.reshape(1, 1, 3)
        if tuple(image.shape[:2]) != size:
            image = F.interpolate(image.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)
        return image

    def _pair(self, outputs: dict[str, Any], batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        pred = outputs["rgb"]
        bg = outputs["background"].reshape(-1, 3)[0]
        return pred, self._target(batch["image"], bg, tuple(pred.shape[:2]))

    def get_metrics_dict(self, outputs, batch) -> dict[str, Tensor]:
        pred, gt = self._pair(outputs, batch)
        return {
            "psnr": metrics.psnr(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]),
            "gaussian_count": torch.tensor(float(self.num_points)),
        }

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, Tensor]:
        from pytorch_msssim import ssim

        pred, gt = self._pair(outputs, batch)
        if "mask" in batch:
            mask = self._target(batch["mask"].float(), torch.zeros(3, device=self.device), tuple(pred.shape[:2]))
            pred, gt = pred * mask, gt * mask
        l1 = (pred - gt).abs().mean()
        d_ssim = 1 - ssim(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None], data_range=1.0, size_average=True)
        lam = self.config.ssim_lambda
        losses = {"main_loss": (1 - lam) * l1 + lam * d_ssim}
        if self.config.strategy == "mcmc":
            losses["opacity_reg"] = self.config.mcmc_opacity_reg * torch.sigmoid(self.gauss_params["opacities"]).mean()
            losses["scale_reg"] = self.config.mcmc_scale_reg * torch.exp(self.gauss_params["scales"]).mean()
        return losses

    def get_image_metrics_and_images(self, outputs, batch) -> tuple[dict[str, float], dict[str, Tensor]]:
        pred, gt = self._pair(outputs, batch)
        a, b = pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None]
        out = {"psnr": float(metrics.psnr(a, b)), "ssim": float(metrics.ssim(a, b))}
        lp = metrics.lpips(a, b)
        if lp is not None:
            out["lpips"] = float(lp)
        return out, {"img": torch.cat([gt, pred], dim=1)}
