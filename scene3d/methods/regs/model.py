"""The ReGS model: an ``s3d-splat`` scene restricted to its diffuse colour, plus the original Gaussians it started from.

It orchestrates; the maths lives in :mod:`~scene3d.methods.regs.control` (texture-guided splitting and pruning),
:mod:`scene3d.renderers.splats` (parameter layout, rendering, optimizer-preserving add/remove) and
:func:`scene3d.renderers.gaussians.rasterize`.

* ``gauss_params`` has s3d-splat's layout and names (so ``s3d export splat``, the viewer and checkpoints read it as
  a splat scene). ``features_rest`` keeps the source run's SH size but is zero and frozen: ReGS renders the DC
  colour only (``restore_for_sty`` zeroes the higher SH, ``diffuse_render``).
* ``source_*`` buffers hold the original Gaussians (DC colour only) the stylization started from. They travel in the
  checkpoint, so a resumed run recomputes the same geometry targets and warps, and they give the depth-change metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.model_components import renderers
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor
from torch.nn import Parameter

from scene3d.core import metrics
from scene3d.methods.regs import control
from scene3d.renderers import splats
from scene3d.renderers.gaussians import RasterMeta

TRAINED = ("means", "scales", "quats", "features_dc", "opacities")
"""The parameters ReGS optimises (``features_rest`` stays zero)."""
SOURCE = ("means", "scales", "quats", "features_dc", "opacities")
"""The original Gaussians kept as ``source_<name>`` buffers."""


@dataclass
class ReGSModelConfig(ModelConfig):
    """How the stylized splats render; ReGS's losses, schedule and densification are pipeline settings."""

    _target: type = field(default_factory=lambda: ReGSModel)
    enable_collider: bool = False
    """Splats need no ray collider."""
    background_color: Literal["random", "dataset", "black", "white"] = "random"
    """Background of the training renders: ReGS draws a random colour every iteration (``bg = torch.rand(3)``);
    ``dataset`` uses the dataset's background colour. Evaluation and the viewer use the dataset's."""
    rasterize_mode: Literal["classic", "antialiased"] = "classic"
    """Keep the source run's mode (``classic`` for s3d-splat's default)."""
    backend: Literal["auto", "cuda-lib", "torch"] = "auto"
    """Rasterizer: gsplat on CUDA, scene3d's torch rasterizer elsewhere (``auto``), or forced."""


@dataclass
class SplatRender:
    """One camera's render (training layout: no clamping, so gradients pass everywhere)."""

    rgb: Float[Tensor, "H W 3"]
    depth: Float[Tensor, "H W"] | None
    """Accumulated z-depth ``Σ wᵢ zᵢ`` (ReGS's ``depth_render`` on a black background), when asked for."""
    alpha: Float[Tensor, "H W"]
    meta: RasterMeta


class ReGSModel(Model):
    """Diffuse-colour Gaussian splats stylized by the ReGS pipeline (see the module docstring)."""

    config: ReGSModelConfig

    def __init__(self, *args: Any, seed_points: object = None, **kwargs: Any) -> None:
        # the dataset's point cloud is not used: ReGS starts from a trained splat run
        super().__init__(*args, **kwargs)

    def populate_modules(self) -> None:
        empty = {
            "means": torch.zeros(0, 3),
            "scales": torch.zeros(0, 3),
            "quats": torch.zeros(0, 4),
            "features_dc": torch.zeros(0, 3),
            "features_rest": torch.zeros(0, 0, 3),
            "opacities": torch.zeros(0, 1),
        }
        self.gauss_params = torch.nn.ParameterDict(
            {k: Parameter(empty[k], requires_grad=k != "features_rest") for k in splats.PARAM_NAMES}
        )
        for name in SOURCE:
            self.register_buffer(f"source_{name}", empty[name].clone())
        metadata = self.kwargs.get("metadata") or {}
        bg = metadata.get("background_color")
        self.dataset_background = torch.zeros(3) if bg is None else torch.as_tensor(bg, dtype=torch.float32)
        aabb = self.scene_box.aabb
        self.scene_extent = float((aabb[1] - aabb[0]).norm())
        self.stats = control.GradientStats.zeros(0)
        self.crop_box: OrientedBox | None = None
        self.eval_stylized: list[Tensor | None] | None = None
        """Stylized ground truth of the eval views, when the dataset has it (set by the pipeline)."""

    # ---- parameters -------------------------------------------------------------------------------------------

    @property
    def num_points(self) -> int:
        return int(self.gauss_params["means"].shape[0])

    @property
    def has_source(self) -> bool:
        return int(self.source_means.shape[0]) > 0

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {name: [self.gauss_params[name]] for name in TRAINED}

    def source_params(self) -> dict[str, Tensor]:
        """The original Gaussians in the splat layout (``features_rest`` empty)."""
        out = {name: getattr(self, f"source_{name}") for name in SOURCE}
        out["features_rest"] = out["features_dc"].new_zeros(out["features_dc"].shape[0], 0, 3)
        return out

    @torch.no_grad()
    def start_from(self, params: Mapping[str, Tensor]) -> None:
        """Take a splat scene's raw parameters as the starting point (``restore_for_sty``): higher SH zeroed and
        frozen, everything else copied; the same Gaussians become the ``source``. Parameters are resized in place
        so optimizers built before keep pointing at them."""
        missing = [k for k in splats.PARAM_NAMES if k not in params]
        if missing:
            raise ValueError(f"params must hold every splat parameter, missing {missing}")
        n = int(params["means"].shape[0])
        for name in splats.PARAM_NAMES:
            value = params[name].detach().to(self.device, torch.float32)
            if value.shape[0] != n:
                raise ValueError(f"params['{name}'] has {value.shape[0]} rows, params['means'] has {n}")
            if name == "features_rest":
                value = torch.zeros_like(value)
            self.gauss_params[name].data = value.clone()
            self.gauss_params[name].grad = None
        for name in SOURCE:
            setattr(self, f"source_{name}", params[name].detach().to(self.device, torch.float32).clone())
        self.reset_stats()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        """Resize the splat parameters and the source buffers to the checkpoint's counts first, in place."""
        for name in splats.PARAM_NAMES:
            key = f"gauss_params.{name}"
            if key in state_dict:
                p = self.gauss_params[name]
                if p.shape != state_dict[key].shape:
                    p.data = p.data.new_zeros(state_dict[key].shape)
        for name in SOURCE:
            key = f"source_{name}"
            if key in state_dict:
                setattr(self, key, getattr(self, key).new_zeros(state_dict[key].shape))
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.reset_stats()
        return out

    def reset_stats(self) -> None:
        self.stats = control.GradientStats.zeros(self.num_points, self.device)

    # ---- texture-guided control -------------------------------------------------------------------------------

    @torch.no_grad()
    def accumulate_stats(self, renders: list[SplatRender]) -> None:
        """After ``backward``: add ``‖∂L/∂f_dc‖`` (and the positional gradient, for the ablation) to every Gaussian
        visible in any of ``renders`` (ReGS: the sampled view ∪ the reference view)."""
        n = self.num_points
        if len(self.stats) != n:
            self.reset_stats()
        grad = self.gauss_params["features_dc"].grad
        color = control.color_gradient_norm(grad) if grad is not None else torch.zeros(n, device=self.device)
        position = torch.zeros(n, device=self.device)
        visible = torch.zeros(n, dtype=torch.bool, device=self.device)
        radii = torch.zeros(n, device=self.device)
        for r in renders:
            g = r.meta.means2d.grad
            if g is not None:
                position += control.position_gradient_norm(g, r.meta.width, r.meta.height)
            rad = r.meta.radii.max(dim=0).values.float()
            visible |= rad > 0
            radii = torch.maximum(radii, rad)
        self.stats.add(color, position, visible, radii)

    @torch.no_grad()
    def densify_and_prune(
        self,
        optimizers: Mapping[str, torch.optim.Optimizer],
        *,
        densify_by: Literal["color", "position", "none"],
        threshold: float,
        position_threshold: float,
        count: int | None = None,
        min_opacity: float,
        prune_big: bool,
        max_screen_radius: float,
        max_world_scale: float,
        generator: torch.Generator | None = None,
    ) -> tuple[int, int]:
        """One densification step (``color_densify_by_split``): split the selected Gaussians into 9, then prune
        transparent (and, with ``prune_big``, oversized) ones; statistics restart. Returns (split, pruned).

        Selection: the mean gradient of ``densify_by`` (DC colour or screen position) at least its threshold, or,
        with ``count``, the ``count`` Gaussians of highest mean gradient (an ablation budget).
        """
        if densify_by == "none":
            selected = torch.zeros(self.num_points, dtype=torch.bool, device=self.device)
        else:
            score = self.stats.mean_color() if densify_by == "color" else self.stats.mean_position()
            if count is not None:
                selected = control.select_top(score, count)
            else:
                selected = control.select_for_split(score, threshold if densify_by == "color" else position_threshold)
        max_radii = self.stats.max_radii
        n_split = control.split_gaussians(self.gauss_params, optimizers, selected, generator=generator)
        # survivors keep their screen radii, children start at 0 (appended after the survivors)
        max_radii = torch.cat([max_radii[~selected], max_radii.new_zeros(n_split * control.NUM_CHILDREN)])
        prune = control.prune_mask(
            torch.sigmoid(self.gauss_params["opacities"]).squeeze(-1),
            min_opacity,
            max_radii=max_radii,
            max_screen_radius=max_screen_radius if prune_big else None,
            scales=torch.exp(self.gauss_params["scales"]),
            max_world_scale=max_world_scale * self.scene_extent,
        )
        n_pruned = int(prune.sum())
        if n_pruned and n_pruned < self.num_points:
            splats.remove_gaussians(self.gauss_params, optimizers, prune)
        self.reset_stats()
        return n_split, n_pruned

    # ---- rendering --------------------------------------------------------------------------------------------

    def _render(
        self,
        params: Mapping[str, Tensor] | torch.nn.ParameterDict,
        viewmat: Float[Tensor, "1 4 4"],
        K: Float[Tensor, "1 3 3"],
        width: int,
        height: int,
        background: Float[Tensor, "3"],
        *,
        depth: Literal["none", "accumulated", "expected"],
        mask: Bool[Tensor, " N"] | None = None,
    ) -> SplatRender:
        dc_only = {**params, "features_rest": params["features_rest"][:, :0]}
        mode = {"none": "RGB", "accumulated": "RGB+D", "expected": "RGB+ED"}[depth]
        out, alpha, meta = splats.render(
            dc_only, viewmat, K, width, height, sh_degree=0, background=background[None].to(viewmat),
            render_mode=mode, rasterize_mode=self.config.rasterize_mode, backend=self.config.backend, mask=mask,
        )  # fmt: skip
        return SplatRender(
            rgb=out[0, ..., :3], depth=None if depth == "none" else out[0, ..., 3], alpha=alpha[0, ..., 0], meta=meta
        )

    def render(
        self,
        viewmat: Float[Tensor, "1 4 4"],
        K: Float[Tensor, "1 3 3"],
        width: int,
        height: int,
        background: Float[Tensor, "3"],
        *,
        depth: Literal["none", "accumulated", "expected"] = "none",
    ) -> SplatRender:
        """Render the stylized Gaussians (DC colour); in training mode ``meta.means2d`` keeps its gradient."""
        r = self._render(self.gauss_params, viewmat, K, width, height, background, depth=depth)
        if self.training and r.meta.means2d.requires_grad:
            r.meta.means2d.retain_grad()
        return r

    @torch.no_grad()
    def render_source(
        self,
        viewmat: Float[Tensor, "1 4 4"],
        K: Float[Tensor, "1 3 3"],
        width: int,
        height: int,
        background: Float[Tensor, "3"],
        *,
        depth: Literal["none", "accumulated", "expected"] = "accumulated",
    ) -> SplatRender:
        """Render the original Gaussians (DC colour): ReGS's content renders and geometry targets."""
        return self._render(self.source_params(), viewmat, K, width, height, background, depth=depth)

    def training_background(self, generator: torch.Generator | None = None) -> Tensor:
        """The background of one training iteration (``random``: a fresh colour from ``generator`` each call)."""
        kind = self.config.background_color
        if kind == "random":
            return torch.rand(3, generator=generator).to(self.device)
        if kind == "white":
            return torch.ones(3, device=self.device)
        if kind == "black":
            return torch.zeros(3, device=self.device)
        return self.dataset_background.to(self.device)

    def _eval_background(self) -> Tensor:
        if renderers.BACKGROUND_COLOR_OVERRIDE is not None:
            return renderers.BACKGROUND_COLOR_OVERRIDE.to(self.device)
        return self.dataset_background.to(self.device)

    def get_outputs(self, camera: Cameras) -> dict[str, Tensor]:  # type: ignore[override]
        """Render one camera for the viewer / ``ns-render`` / eval: ``rgb``, ``depth`` (distance along the ray, as
        nerfstudio shows it) and ``accumulation``."""
        if not isinstance(camera, Cameras) or camera.shape != (1,):
            raise ValueError(f"regs renders one nerfstudio Cameras at a time, got {type(camera).__name__}")
        K = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        viewmat = splats.viewmats_from_c2w(camera.camera_to_worlds.to(self.device))
        background = self._eval_background()
        mask = None
        if self.crop_box is not None:
            mask = self.crop_box.within(self.gauss_params["means"]).reshape(-1)
        r = self._render(self.gauss_params, viewmat, K, width, height, background, depth="expected", mask=mask)
        ys, xs = torch.meshgrid(
            torch.arange(height, device=self.device, dtype=torch.float32) + 0.5,
            torch.arange(width, device=self.device, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        ray_len = torch.sqrt(1 + ((xs - K[0, 0, 2]) / K[0, 0, 0]) ** 2 + ((ys - K[0, 1, 2]) / K[0, 1, 1]) ** 2)
        assert r.depth is not None
        dist = r.depth * ray_len
        far = dist.detach().max() if dist.numel() else dist.new_tensor(0.0)
        return {
            "rgb": r.rgb.clamp(0.0, 1.0),
            "depth": torch.where(r.alpha > 1e-4, dist, far)[..., None],
            "accumulation": r.alpha[..., None],
            "background": background,
        }

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: OrientedBox | None = None) -> dict[str, Tensor]:
        """The viewer's, ``ns-render``'s and ``ns-eval``'s entry: one camera, optionally cropped to ``obb_box``."""
        self.crop_box = obb_box
        try:
            outputs = self.get_outputs(camera.to(self.device))
        finally:
            self.crop_box = None
        outputs["background"] = outputs["background"].expand(*outputs["rgb"].shape[:2], 3)
        return outputs

    # ---- metrics ----------------------------------------------------------------------------------------------

    def _gt(self, image: Tensor, background: Tensor) -> Tensor:
        image = image.to(self.device)
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if image.shape[-1] == 4:
            image = image[..., :3] * image[..., 3:] + (1 - image[..., 3:]) * background.reshape(1, 1, 3)
        return image

    def get_metrics_dict(self, outputs, batch) -> dict[str, Tensor]:
        return {"gaussian_count": torch.tensor(float(self.num_points))}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, Tensor]:
        """Only for nerfstudio's optional eval-batch loss: L1 to the *original* image (how far the look moved).
        ReGS's own losses are computed by :class:`~scene3d.methods.regs.pipeline.ReGSPipeline`."""
        gt = self._gt(batch["image"], outputs["background"].reshape(-1, 3)[0])
        return {"content_l1": (outputs["rgb"] - gt).abs().mean()}

    def get_image_metrics_and_images(self, outputs, batch) -> tuple[dict[str, float], dict[str, Tensor]]:
        """PSNR/SSIM against the stylized ground truth when the dataset has it (``psnr``), and against the original
        image (``psnr_content``: how far the look moved)."""
        pred = outputs["rgb"]
        bg = outputs["background"].reshape(-1, 3)[0]
        content = self._gt(batch["image"], bg)
        a = pred.permute(2, 0, 1)[None]
        out = {"psnr_content": float(metrics.psnr(a, content.permute(2, 0, 1)[None])), "gaussian_count": float(self.num_points)}
        images = {"img": torch.cat([content, pred], dim=1)}
        idx = int(batch["image_idx"]) if "image_idx" in batch else -1
        stylized = self.eval_stylized[idx] if self.eval_stylized is not None and 0 <= idx < len(self.eval_stylized) else None
        if stylized is not None and stylized.shape == pred.shape:
            b = stylized.to(self.device).permute(2, 0, 1)[None]
            out["psnr"] = float(metrics.psnr(a, b))
            out["ssim"] = float(metrics.ssim(a, b))
            images["img"] = torch.cat([stylized.to(self.device), pred], dim=1)
        return out, images
