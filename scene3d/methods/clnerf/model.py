"""CLNeRF's nerfstudio model: the NGPGv2 field, an occupancy grid, per-ray scan ids, CLNeRF's loss.

Which scan a ray renders: training rays carry ``metadata["scan_id"]``; held-out views carry their position in the
dataset (``metadata["scan_index"]``), mapped to a scan id through ``dataset_scan_ids`` (saved with the model); a
camera without either (the viewer, ``ns-render``) renders the scan chosen with the viewer's scan slider, by default
the latest scan.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.viewer.viewer_elements import ViewerSlider
from torch import Tensor
from torch.nn import Parameter

from scene3d.core.backends import Backend
from scene3d.core.metrics import psnr, ssim
from scene3d.methods.clnerf.field import CLNeRFField, CLNeRFFieldSpec, scene_cube
from scene3d.methods.clnerf.rendering import MarchSettings, clnerf_losses, march_settings, render_rays
from scene3d.methods.clnerf.viewer import ScanSlider
from scene3d.renderers.occupancy import OccupancyGrid


def bchw(image: Tensor) -> Tensor:
    """An ``(H, W, 3)`` image as the ``(1, 3, H, W)`` batch :mod:`scene3d.core.metrics` takes."""
    return image.permute(2, 0, 1)[None]


@dataclass
class CLNeRFModelConfig(ModelConfig):
    """NGPGv2 (official defaults) rendered through an occupancy grid."""

    _target: type = field(default_factory=lambda: CLNeRFModel)
    hash_levels: int = 16
    """Hash grid levels L."""
    hash_features: int = 2
    """Features per level F."""
    hash_log2_size: int = 19
    """log2 of the hash table size T."""
    hash_base_resolution: int = 16
    """Coarsest resolution N_min."""
    hash_max_resolution: float | None = None
    """Finest resolution N_max; None: the official 2048 * scale (scale = half side of the scene cube)."""
    density_hidden: int = 64
    """Width of the geometry MLP (1 hidden layer, 16 outputs)."""
    color_hidden: int = 64
    """Width of the colour MLP (2 hidden layers)."""
    appearance_dim: int = 48
    """Appearance embedding size per scan (official dim_a)."""
    geometry_dim: int = 16
    """Geometry embedding size per scan (official dim_g)."""
    grid_resolution: int = 128
    """Occupancy grid cells per axis (official 128)."""
    grid_over: Literal["cube", "scene_box"] = "cube"
    """What the occupancy grid (and so every sample) covers: the field's cube (official) or the dataset's scene box."""
    grid_levels: int | None = None
    """Occupancy cascades; None: the official 1 + ceil(log2(2 * scale)), at least 1."""
    render_step_size: float = math.sqrt(3) / 1024
    """Base marching step Δ (official sqrt(3)/1024 in the normalised scene)."""
    cone_angle: float = 1 / 256
    """Step growth c·t (official exp_step_factor: 1/256 on real scenes, 0 on synthetic ones)."""
    opacity_loss_weight: float = 1e-3
    """Weight of the opacity entropy loss (official lambda_opacity)."""
    grid_density_threshold: float = 0.01 * 1024 / math.sqrt(3)
    """A cell is occupied while its density exceeds min(mean density, this) (official 0.01 * MAX_SAMPLES / sqrt(3))."""
    grid_update_interval: int = 16
    """Occupancy grid refresh period (official update_interval)."""
    grid_warmup_steps: int = 256
    """Steps from each scan's start during which every cell is refreshed (official warmup_steps)."""
    background_color: tuple[float, float, float] | None = None
    """Colour behind the scene; None: the dataset's background colour, else black (official real scenes)."""
    backend: Backend = "auto"
    """Hash grid and marching backends: tiny-cuda-nn and nerfacc on CUDA ("auto"), or "torch"."""
    num_scans: int = 1
    """Rows of the embedding tables at construction (the pipeline grows them; checkpoints resize them on load)."""

    def field_spec(self) -> CLNeRFFieldSpec:
        """The field sizes of this config."""
        return CLNeRFFieldSpec(
            hash_levels=self.hash_levels, hash_features=self.hash_features, hash_log2_size=self.hash_log2_size,
            hash_base_resolution=self.hash_base_resolution, hash_max_resolution=self.hash_max_resolution,
            density_hidden=self.density_hidden, color_hidden=self.color_hidden, appearance_dim=self.appearance_dim,
            geometry_dim=self.geometry_dim, backend=self.backend,
        )  # fmt: skip


class CLNeRFModel(Model):
    """NGPGv2 with per-scan embeddings (module docstring)."""

    config: CLNeRFModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        aabb = self.scene_box.aabb.float()
        self.field = CLNeRFField(aabb, self.config.field_spec(), num_scans=self.config.num_scans)
        cube, scale = scene_cube(aabb)
        levels = self.config.grid_levels
        if levels is None:
            levels = max(1 + math.ceil(math.log2(max(2 * scale, 1e-9))), 1)
        levels = min(int(levels), 8)
        box = cube if self.config.grid_over == "cube" else aabb
        # level l covers the base box × 2^l: the outermost level is the cube (or scene box) (official cascades ×2)
        centre, half = (box[0] + box[1]) / 2, (box[1] - box[0]) / 2 / 2 ** (levels - 1)
        self.grid = OccupancyGrid(torch.cat([centre - half, centre + half]), resolution=self.config.grid_resolution, levels=levels)
        bg = self.config.background_color
        if bg is None:
            meta_bg = self.kwargs.get("metadata", {}).get("background_color")
            bg = (0.0, 0.0, 0.0) if meta_bg is None else tuple(float(v) for v in meta_bg)
        self.register_buffer("background", torch.tensor(bg, dtype=torch.float32))
        self.register_buffer("dataset_scan_ids", torch.arange(1, dtype=torch.long))
        self._scan_control = ScanSlider(self.config.num_scans)

    @property
    def scan_slider(self) -> ViewerSlider:
        """The viewer's scan slider (nerfstudio's viewer installs the ``ViewerElement`` attributes it finds)."""
        return self._scan_control.slider

    def set_viewer_scans(self, num_scans: int) -> None:
        """Let the viewer's slider span ``num_scans`` scans (before the viewer shows it)."""
        self._scan_control.rebuild(num_scans)

    # ------------------------------------------------------------------ scans
    @property
    def num_scans(self) -> int:
        """Scans the model can render (rows of its embedding tables)."""
        return self.field.num_scans

    def set_dataset_scan_ids(self, scan_ids: list[int]) -> None:
        """Scan id of each dataset position (for held-out views)."""
        self.dataset_scan_ids = torch.tensor(scan_ids, dtype=torch.long, device=self.background.device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "dataset_scan_ids")
        if isinstance(stored, Tensor) and stored.shape != self.dataset_scan_ids.shape:
            self.dataset_scan_ids = torch.zeros_like(stored, device=self.background.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._scan_control.rebuild(self.num_scans)
        return result

    def scan_ids_of(self, ray_bundle: RayBundle) -> Tensor:
        """The scan id of each ray (module docstring)."""
        n = ray_bundle.origins.reshape(-1, 3).shape[0]
        meta = ray_bundle.metadata or {}
        device = ray_bundle.origins.device
        if "scan_id" in meta:
            ids = meta["scan_id"].reshape(-1).long()
        elif "scan_index" in meta:
            ids = self.dataset_scan_ids.to(device)[meta["scan_index"].reshape(-1).long()]
        else:
            ids = torch.full((n,), self._scan_control.scan_id(self.num_scans), dtype=torch.long, device=device)
        return ids.to(device)

    # --------------------------------------------------------------- nerfstudio
    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {"fields": list(self.field.parameters())}

    def march_settings(self) -> MarchSettings:
        """The ray-marching settings of this config."""
        return march_settings(self.config.render_step_size, self.config.cone_angle, self.config.backend)

    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, Tensor]:  # type: ignore[override]
        shape = ray_bundle.origins.shape[:-1]
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        out = render_rays(
            self.field, self.grid, origins, directions, self.scan_ids_of(ray_bundle), self.background,
            self.march_settings(), stratified=self.training,
        )  # fmt: skip
        return {
            "rgb": out.rgb.reshape(*shape, 3),
            "accumulation": out.opacity.reshape(*shape, 1),
            "depth": out.depth.reshape(*shape, 1),
        }

    @torch.no_grad()
    def render_cameras(self, cameras: Cameras) -> list[Tensor]:
        """Colour images of flat cameras (each with ``metadata["scan_id"]``), rays batched across cameras."""
        bundles, shapes = [], []
        with warnings.catch_warnings():  # nerfstudio 1.1.5 indexes with a list of tensors, which torch 2.x warns about
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
            for i in range(cameras.shape[0]):
                bundle = cameras[i : i + 1].generate_rays(camera_indices=0, keep_shape=True)
                shapes.append(bundle.origins.shape[:2])
                bundles.append(bundle.flatten())
        origins = torch.cat([b.origins for b in bundles])
        directions = torch.cat([b.directions for b in bundles])
        scan_ids = torch.cat([b.metadata["scan_id"].reshape(-1) for b in bundles]).long()
        directions = directions / directions.norm(dim=-1, keepdim=True)
        chunk = self.config.eval_num_rays_per_chunk
        rgb = torch.cat([
            render_rays(self.field, self.grid, origins[i : i + chunk], directions[i : i + chunk], scan_ids[i : i + chunk],
                        self.background, self.march_settings(), stratified=False).rgb
            for i in range(0, origins.shape[0], chunk)
        ])  # fmt: skip
        sizes = [int(h) * int(w) for h, w in shapes]
        return [part.reshape(int(h), int(w), 3) for part, (h, w) in zip(rgb.split(sizes), shapes)]

    def get_metrics_dict(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        mse = ((outputs["rgb"].detach().clamp(0, 1) - batch["image"].to(outputs["rgb"])) ** 2).mean()
        return {"psnr": -10.0 * torch.log10(mse.clamp_min(1e-10))}

    def get_loss_dict(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor], metrics_dict: dict[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        losses = clnerf_losses(
            outputs["rgb"], batch["image"].to(outputs["rgb"]), outputs["accumulation"], self.config.opacity_loss_weight
        )
        return {"rgb_loss": losses.rgb, "opacity_loss": losses.opacity}

    def get_image_metrics_and_images(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        image = batch["image"][..., :3].to(outputs["rgb"])
        rgb = outputs["rgb"].clamp(0.0, 1.0)
        metrics = {"psnr": float(psnr(bchw(rgb), bchw(image))), "ssim": float(ssim(bchw(rgb), bchw(image)))}
        return metrics, {"img": torch.cat([image, rgb], dim=1), "accumulation": outputs["accumulation"]}

    @torch.no_grad()
    def update_grid(self, step_in_scan: int, *, open_during_warmup: bool = False) -> bool:
        """Refresh the occupancy grid (official: every 16 steps, all cells during warm-up, σ > min(mean σ, 5.9)).

        Cells are evaluated with a random scan id each (the official ``update_density_grid``), so the grid keeps
        what any scan has. With ``open_during_warmup`` every cell stays occupied until the warm-up ends (the
        densities are still tracked): a model continued from the previous scan has near-zero density where a new
        object appears, and a grid built from it would never let a ray sample there.
        """

        def occupancy(x: Tensor) -> Tensor:
            ids = torch.randint(0, self.num_scans, (x.shape[0],), device=x.device)
            return self.field.density(x, ids)

        updated = self.grid.update(
            step_in_scan, occupancy, occ_threshold=self.config.grid_density_threshold, ema_decay=0.95,
            warmup_steps=self.config.grid_warmup_steps, interval=self.config.grid_update_interval,
        )  # fmt: skip
        if updated and open_during_warmup and step_in_scan < self.config.grid_warmup_steps:
            self.grid.binaries.fill_(True)
        return updated

    @torch.no_grad()
    def reset_grid(self) -> None:
        """Mark every cell occupied and forget the densities (each scan starts its grid afresh, as the official code)."""
        self.grid.occs.zero_()
        self.grid.binaries.fill_(True)
