"""nerfstudio model of EpiGRAF: holds G, D and the EMA of G, runs each GAN phase's loss, and renders for the viewer.

The maths lives in nerfstudio-free modules (``generator``, ``discriminator``, ``patches``, ``rendering``, ``gan``);
this class wires them to the config and to the dataset's geometry, and exposes:

* ``generator_phase`` / ``discriminator_phase`` / ``r1_phase`` / ``update_ema``: the official training phases
  (Gmain, Dmain, Dreg) that :class:`~scene3d.methods.epigraf.pipeline.EpiGRAFPipeline` steps in turn;
* ``get_outputs_for_camera``: the EMA generator's radiance field for the viewer's seed and truncation ψ
  (``Custom Elements`` in the viewer's control panel), rendered inside the tri-plane cube.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.viewer.viewer_elements import ViewerControl, ViewerNumber, ViewerSlider
from torch import Tensor
from torch.nn import Parameter

from scene3d.core.errors import SettingsError
from scene3d.methods.epigraf.data import ImageCollection
from scene3d.methods.epigraf.discriminator import PatchDiscriminator
from scene3d.methods.epigraf.gan import (
    Views,
    discriminate,
    discriminator_loss,
    ema_beta,
    generator_loss,
    r1_penalty,
    render_fake_patches,
    update_ema,
)
from scene3d.methods.epigraf.generator import TriPlaneGenerator
from scene3d.methods.epigraf.patches import PatchParams, PatchScaleSchedule, extract_patches, linear_schedule
from scene3d.renderers.hierarchical import RaySettings, ray_cube_bounds, render_rays


@dataclass
class EpiGRAFModelConfig(ModelConfig):
    """EpiGRAF's networks and training hyperparameters. Defaults are the paper scale (official ``epigraf.yaml``,
    ``base.yaml``, ``patch_beta.yaml``), with its kimg-based schedules converted to iterations at batch 64."""

    _target: type = field(default_factory=lambda: EpiGRAFModel)
    enable_collider: bool = False
    """Unused: rays are bounded by the dataset's near/far (training) or the tri-plane cube (viewer)."""
    z_dim: int = 512
    """Latent size."""
    w_dim: int = 512
    """Intermediate latent size."""
    mapping_layers: int = 2
    """Depth of G's mapping network (official map_depth)."""
    triplane_resolution: int = 512
    """Tri-plane side T."""
    triplane_channels: int = 32
    """Features per plane C."""
    g_channel_base: int = 32768
    """Synthesis channels at resolution res: min(g_channel_base // res, g_channel_max)."""
    g_channel_max: int = 512
    """See g_channel_base."""
    mlp_hidden: int = 64
    """Hidden units of the tri-plane MLP."""
    mlp_layers: int = 2
    """Layers of the tri-plane MLP."""
    use_noise: bool = True
    """StyleGAN per-pixel noise in the synthesis network."""
    num_coarse_samples: int = 48
    """Evenly spaced samples per ray."""
    num_fine_samples: int = 48
    """Importance samples per ray."""
    background: Literal["auto", "last-sample", "constant"] = "auto"
    """'last-sample': the last sample absorbs what is left (official, no background net); 'constant': composite
    over the dataset's background_color (white if none); 'auto': 'constant' when the dataset declares a
    background_color, else 'last-sample'."""
    density_noise_std: float = 1.0
    """Initial std of the noise on raw density (annealed linearly to 0)."""
    density_noise_steps: int = 78_125
    """Iterations over which the density noise fades (official 5,000 kimg at batch 64)."""
    patch_resolution: int = 64
    """r: side of the rendered patches."""
    beta_start: float = 0.001
    """β of Beta(1, β) for the patch scale at the start."""
    beta_end: float = 0.8
    """β at the end of the annealing."""
    patch_anneal_steps: int = 156_250
    """Iterations over which β anneals (official 10,000 kimg at batch 64)."""
    d_channel_base: int = 16384
    """D channels at resolution res: min(d_channel_base // res, d_channel_max) (official cbase 32768 · fmaps 0.5)."""
    d_channel_max: int = 512
    """See d_channel_base."""
    mbstd_group_size: int = 4
    """D's minibatch-std group; patch parameters are shared within these groups."""
    d_scale_aware: bool = True
    """Condition D on the patch parameters (hyper-modulation + projection). False: plain StyleGAN2 D."""
    d_patch_embed_dim: int = 256
    """Learned-embedding size of D's patch-parameter encoder."""
    d_hyper_dim: int = 512
    """Size of D's modulation code."""
    d_camera_cond: bool = False
    """Also condition D's output on camera (yaw, pitch)."""
    d_camera_cond_drop_p: float = 0.5
    """Dropout on D's camera embedding."""
    use_labels: bool = False
    """Condition G and D on the dataset's class labels (dataset.json 'labels')."""
    r1_gamma: float = 0.1
    """R1 weight γ (README: 0.05 everywhere, 0.1 ~10% better FID on FFHQ)."""
    r1_interval: int = 16
    """Lazy R1: applied every this many iterations with weight r1_interval (the D optimizer's lr and betas are
    scaled by r1_interval / (r1_interval + 1) in the method config, as StyleGAN2 does)."""
    blur_sigma: float = 10.0
    """Initial σ (pixels of the patch) of the Gaussian blur on D's inputs."""
    blur_fade_steps: int = 3_125
    """Iterations over which the blur fades to 0 (official 200 kimg at batch 64)."""
    ema_images: float = 20_000.0
    """Half-life of G's EMA in images (official ema_kimg = batch · 0.3125)."""
    ema_rampup: float = 0.05
    """EMA half-life ramp-up: min(ema_images, images_seen · ema_rampup)."""
    fused_modconv: bool = False
    """Modulated convs as one grouped convolution in training (official: only at inference, as it is slower on
    GPUs); False scales activations around a shared convolution. The same maths either way."""
    viewer_seed: int = 0
    """Seed of the latent the viewer shows at start."""
    viewer_truncation: float = 0.7
    """Truncation ψ the viewer starts with (the official visualisations use 0.7)."""


class EpiGRAFModel(Model):
    """G, D and G_ema for a dataset with the geometry in ``metadata['epigraf']`` (an :class:`ImageCollection`)."""

    config: EpiGRAFModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        info: ImageCollection = self.kwargs["metadata"]["epigraf"]
        cfg = self.config
        self.image_size = info.resolution
        self.cube_scale = info.cube_scale
        self.label_dim = info.labels.shape[1] if cfg.use_labels else 0
        if cfg.use_labels and self.label_dim == 0:
            raise SettingsError("--pipeline.model.use-labels", f"is set but {info.description} has no 'labels'")
        if cfg.patch_resolution > info.resolution:
            raise SettingsError("--pipeline.model.patch-resolution", f"{cfg.patch_resolution} exceeds the images' resolution {info.resolution}")
        mode = cfg.background
        if mode == "auto":
            mode = "constant" if info.background is not None else "last-sample"
        self.background: Literal["last-sample", "constant"] = mode
        bg = info.background or (1.0, 1.0, 1.0)
        self.background_rgb = (2 * bg[0] - 1, 2 * bg[1] - 1, 2 * bg[2] - 1)
        self.generator = TriPlaneGenerator(
            z_dim=cfg.z_dim, w_dim=cfg.w_dim, c_dim=self.label_dim, mapping_layers=cfg.mapping_layers,
            triplane_resolution=cfg.triplane_resolution, triplane_channels=cfg.triplane_channels,
            channel_base=cfg.g_channel_base, channel_max=cfg.g_channel_max, mlp_hidden=cfg.mlp_hidden,
            mlp_layers=cfg.mlp_layers, use_noise=cfg.use_noise,
        )
        self.discriminator = PatchDiscriminator(
            image_resolution=info.resolution, patch_resolution=cfg.patch_resolution, channel_base=cfg.d_channel_base,
            channel_max=cfg.d_channel_max, c_dim=self.label_dim, mbstd_group_size=cfg.mbstd_group_size,
            scale_aware=cfg.d_scale_aware, patch_embed_dim=cfg.d_patch_embed_dim, hyper_dim=cfg.d_hyper_dim,
            camera_cond=cfg.d_camera_cond, camera_cond_drop_p=cfg.d_camera_cond_drop_p,
        )
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.patch_schedule = PatchScaleSchedule(
            min_scale=cfg.patch_resolution / info.resolution, anneal_steps=cfg.patch_anneal_steps,
            beta_start=cfg.beta_start, beta_end=cfg.beta_end,
        )
        self.viewer_control = ViewerControl()
        self.viewer_seed = ViewerNumber("Seed", cfg.viewer_seed, cb_hook=self._rerender, hint="latent z = randn(seed)")
        self.viewer_psi = ViewerSlider(
            "Truncation psi", cfg.viewer_truncation, 0.0, 1.0, 0.05, cb_hook=self._rerender, hint="w = w_avg + psi (w - w_avg)"
        )

    # ------------------------------------------------------------------------------------------------ training

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {"generator": list(self.generator.parameters()), "discriminator": list(self.discriminator.parameters())}

    def ray_settings(self, step: int, *, training: bool) -> RaySettings:
        """Sampling for training (stratified, random importance samples, annealed density noise) or evaluation."""
        noise = linear_schedule(step, self.config.density_noise_std, 0.0, self.config.density_noise_steps) if training else 0.0
        return RaySettings(
            num_coarse=self.config.num_coarse_samples, num_fine=self.config.num_fine_samples,
            background=self.background, background_rgb=self.background_rgb, density_noise_std=noise,
            stratified=training, deterministic_fine=not training,
        )

    def blur_sigma(self, step: int) -> float:
        return linear_schedule(step, self.config.blur_sigma, 0.0, self.config.blur_fade_steps) if self.config.blur_fade_steps > 0 else 0.0

    def sample_patch_params(self, batch: int, step: int) -> PatchParams:
        return self.patch_schedule.sample(batch, step, group_size=min(self.config.mbstd_group_size, batch), device=self.device)

    def _fake(self, step: int, z: Tensor, c: Tensor, views: Views, params: PatchParams, *, update_w_avg: bool) -> Tensor:
        return render_fake_patches(
            self.generator, z, c, views, params, image_size=self.image_size, patch_resolution=self.config.patch_resolution,
            cube_scale=self.cube_scale, rays=self.ray_settings(step, training=True), update_w_avg=update_w_avg,
            fused_modconv=self.config.fused_modconv,
        ).images

    def generator_phase(self, step: int, z: Tensor, c: Tensor, views: Views, camera: Tensor) -> dict[str, Tensor]:
        """Gmain: ``softplus(−D(G(z)))`` on freshly rendered patches; gradients for G."""
        params = self.sample_patch_params(z.shape[0], step)
        fake = self._fake(step, z, c, views, params, update_w_avg=False)
        logits = discriminate(self.discriminator, fake, params, c, camera, self.blur_sigma(step))
        return {"loss": generator_loss(logits), "fake_score": logits.detach().mean()}

    def discriminator_phase(
        self, step: int, real: Tensor, real_c: Tensor, real_camera: Tensor, z: Tensor, c: Tensor, views: Views,
        camera: Tensor,
    ) -> dict[str, Tensor]:
        """Dmain: ``softplus(D(G(z))) + softplus(−D(x))`` with real patches cut at independently drawn params."""
        params_fake = self.sample_patch_params(z.shape[0], step)
        with torch.no_grad():
            fake = self._fake(step, z, c, views, params_fake, update_w_avg=True)
        blur = self.blur_sigma(step)
        fake_logits = discriminate(self.discriminator, fake, params_fake, c, camera, blur)
        params_real = self.sample_patch_params(real.shape[0], step)
        real_patches = extract_patches(real, params_real, self.config.patch_resolution)
        real_logits = discriminate(self.discriminator, real_patches, params_real, real_c, real_camera, blur)
        return {
            "loss": discriminator_loss(real_logits, fake_logits),
            "real_score": real_logits.detach().mean(),
            "fake_score": fake_logits.detach().mean(),
        }

    def r1_phase(self, step: int, real: Tensor, real_c: Tensor, real_camera: Tensor) -> dict[str, Tensor]:
        """Dreg: lazy R1, ``γ/2 ‖∇D‖² · r1_interval`` on real patches."""
        params = self.sample_patch_params(real.shape[0], step)
        patches = extract_patches(real, params, self.config.patch_resolution).detach().requires_grad_(True)
        logits = discriminate(self.discriminator, patches, params, real_c, real_camera, self.blur_sigma(step))
        penalty = r1_penalty(logits, patches)
        loss = (penalty * (self.config.r1_gamma / 2)).mean() * self.config.r1_interval
        return {"loss": loss, "r1_penalty": penalty.detach().mean()}

    @torch.no_grad()
    def update_ema(self, step: int, batch: int) -> None:
        """G_ema ← EMA of G after iteration ``step`` (images seen before it: ``step · batch``)."""
        beta = ema_beta(batch, step * batch, self.config.ema_images, self.config.ema_rampup)
        update_ema(self.generator_ema, self.generator, beta)

    # --------------------------------------------------------------------------------------------- evaluation

    def _rerender(self, _element: object) -> None:
        viewer = getattr(self.viewer_control, "viewer", None)
        if viewer is not None:
            viewer._trigger_rerender()

    @torch.no_grad()
    def planes_for_seed(self, seed: int, truncation_psi: float, label: Tensor | None = None) -> Tensor:
        """Tri-planes of ``G_ema`` for the latent ``z = randn(seed)`` (StyleGAN's seed convention, on CPU)."""
        z = torch.randn(1, self.config.z_dim, generator=torch.Generator().manual_seed(int(seed))).to(self.device)
        c = None
        if self.label_dim > 0:
            c = label if label is not None else torch.nn.functional.one_hot(torch.tensor([0]), self.label_dim).float()
            c = c.to(self.device)
        return self.generator_ema.planes(z, c, truncation_psi=float(truncation_psi), noise_mode="const")

    @torch.no_grad()
    def render_rays_from_planes(
        self, planes: Tensor, origins: Tensor, directions: Tensor, chunk: int | None = None
    ) -> dict[str, Tensor]:
        """Render rays ``(N, 3)`` of one tri-plane inside its cube; ``rgb`` in ``[0, 1]``, ``depth`` (distance)."""
        directions = directions / directions.norm(dim=-1, keepdim=True)
        chunk = chunk or self.config.eval_num_rays_per_chunk
        settings = self.ray_settings(0, training=False)
        bg = (torch.tensor(self.background_rgb, device=origins.device) + 1) / 2
        outs: dict[str, list[Tensor]] = {"rgb": [], "depth": [], "accumulation": []}
        for i in range(0, origins.shape[0], chunk):
            o, d = origins[i : i + chunk], directions[i : i + chunk]
            t0, t1, hit = ray_cube_bounds(o, d, self.cube_scale)
            out = render_rays(
                lambda p: self.generator_ema.field(planes, p, self.cube_scale), o[None], d[None], t0[None], t1[None],
                settings,
            )
            rgb = ((out.rgb[0] + 1) / 2).clamp(0, 1)
            rgb = torch.where(hit[:, None], rgb, bg.expand_as(rgb))
            outs["rgb"].append(rgb)
            outs["depth"].append(torch.where(hit, out.depth[0], t1)[:, None])
            outs["accumulation"].append(torch.where(hit, out.opacity[0], torch.zeros_like(t1))[:, None])
        return {k: torch.cat(v) for k, v in outs.items()}

    def get_outputs(self, ray_bundle: RayBundle | Cameras) -> dict[str, Tensor]:
        """The viewer's seed rendered along ``ray_bundle`` (flat bundles of rays)."""
        if isinstance(ray_bundle, Cameras):
            raise TypeError("EpiGRAFModel.get_outputs takes a RayBundle; use get_outputs_for_camera for cameras")
        planes = self.planes_for_seed(int(self.viewer_seed.value), float(self.viewer_psi.value))
        shape = ray_bundle.origins.shape[:-1]
        out = self.render_rays_from_planes(planes, ray_bundle.origins.reshape(-1, 3), ray_bundle.directions.reshape(-1, 3))
        return {k: v.reshape(*shape, v.shape[-1]) for k, v in out.items()}

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: object = None) -> dict[str, Tensor]:
        """Render one camera for the viewer: the tri-planes are computed once per frame, not per chunk."""
        bundle = camera.generate_rays(camera_indices=0, keep_shape=True)
        height, width = bundle.origins.shape[:2]
        planes = self.planes_for_seed(int(self.viewer_seed.value), float(self.viewer_psi.value))
        out = self.render_rays_from_planes(
            planes, bundle.origins.reshape(-1, 3).to(self.device), bundle.directions.reshape(-1, 3).to(self.device)
        )
        return {k: v.reshape(height, width, -1) for k, v in out.items()}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, Tensor]:  # noqa: ANN001
        raise NotImplementedError("EpiGRAF trains through EpiGRAFPipeline.train_iteration (alternating G/D phases)")

    def get_image_metrics_and_images(self, outputs, batch):  # noqa: ANN001, ANN201
        return {}, {"img": outputs["rgb"]}
