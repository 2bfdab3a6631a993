"""EpiGRAF's pipeline: one training iteration is the official sequence of phases, each with its own optimizer step.

    Gmain  G ← Adam step on softplus(−D(G(z)))                                   (every iteration)
    Dmain  D ← Adam step on softplus(D(G(z))) + softplus(−D(x))                  (every iteration)
    Dreg   D ← Adam step on γ/2 ‖∇D(x)‖² · k                                      (every k-th iteration, lazy R1)
    EMA    G_ema ← β G_ema + (1 − β) G

Each phase draws its own latents and dataset poses (as the official training loop does), non-finite gradients
are zeroed (official ``nan_to_num``), and only the phase's network requires gradients. :class:`S3DTrainer` calls
:meth:`EpiGRAFPipeline.train_iteration` instead of nerfstudio's single forward/backward/step; the G and D
optimizers live in nerfstudio's ``Optimizers`` (param groups ``generator`` and ``discriminator``), so they are
checkpointed and resumed with the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor

from scene3d.core.errors import SettingsError
from scene3d.methods.epigraf.datamanager import EpiGRAFDataManager, EpiGRAFDataManagerConfig
from scene3d.methods.epigraf.model import EpiGRAFModel, EpiGRAFModelConfig


@dataclass
class EpiGRAFPipelineConfig(VanillaPipelineConfig):
    """EpiGRAF's datamanager and model, trained by alternating G and D phases."""

    _target: type = field(default_factory=lambda: EpiGRAFPipeline)
    datamanager: EpiGRAFDataManagerConfig = field(default_factory=EpiGRAFDataManagerConfig)
    """Collections of posed images."""
    model: EpiGRAFModelConfig = field(default_factory=EpiGRAFModelConfig)
    """G, D, G_ema and the GAN hyperparameters."""


def _step(optimizers: Optimizers, name: str, module: torch.nn.Module, loss: Tensor) -> None:
    optimizer = optimizers.optimizers[name]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for p in module.parameters():
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
    optimizers.optimizer_step(name)


class EpiGRAFPipeline(VanillaPipeline):
    """Runs EpiGRAF's GAN phases (module docstring)."""

    config: EpiGRAFPipelineConfig
    datamanager: EpiGRAFDataManager
    _model: EpiGRAFModel

    def __init__(
        self,
        config: EpiGRAFPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if world_size > 1:
            raise NotImplementedError("EpiGRAF's pipeline runs on one device (no DDP)")
        batch = config.datamanager.images_per_batch
        group = min(config.model.mbstd_group_size, batch)
        if batch % group:
            raise SettingsError(
                "--pipeline.datamanager.images-per-batch",
                f"({batch}) must be a multiple of the minibatch-std group ({group}, --pipeline.model.mbstd-group-size)",
            )
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)

    def _z(self, batch: int) -> Tensor:
        return torch.randn(batch, self.model.config.z_dim, device=self.device)

    def train_iteration(
        self, step: int, optimizers: Optimizers, grad_scaler: torch.amp.GradScaler | None = None
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """One iteration of Gmain, Dmain, (Dreg) and the EMA update; returns ``(loss, loss_dict, metrics_dict)``."""
        model: EpiGRAFModel = self.model
        dm = self.datamanager
        real = dm.next_real(step)
        batch = real.images.shape[0]
        G, D = model.generator, model.discriminator

        # Gmain
        G.requires_grad_(True)
        D.requires_grad_(False)
        fake = dm.next_fake_conditions(batch)
        g_out = model.generator_phase(step, self._z(batch), fake.labels, fake.views, fake.camera)
        _step(optimizers, "generator", G, g_out["loss"])

        # Dmain
        G.requires_grad_(False)
        D.requires_grad_(True)
        fake = dm.next_fake_conditions(batch)
        d_out = model.discriminator_phase(
            step, real.images, real.labels, real.camera, self._z(batch), fake.labels, fake.views, fake.camera
        )
        _step(optimizers, "discriminator", D, d_out["loss"])

        loss_dict = {"generator": g_out["loss"].detach(), "discriminator": d_out["loss"].detach()}
        metrics = {
            "score_fake_G": g_out["fake_score"], "score_real": d_out["real_score"], "score_fake_D": d_out["fake_score"],
            "patch_beta": torch.tensor(model.patch_schedule.beta(step)),
            "density_noise_std": torch.tensor(model.ray_settings(step, training=True).density_noise_std),
        }
        # Dreg (lazy R1)
        interval = model.config.r1_interval
        if model.config.r1_gamma > 0 and interval > 0 and step % interval == 0:
            r1_out = model.r1_phase(step, real.images, real.labels, real.camera)
            _step(optimizers, "discriminator", D, r1_out["loss"])
            loss_dict["r1"] = r1_out["loss"].detach()
            metrics["r1_penalty"] = r1_out["r1_penalty"]
        D.requires_grad_(False)
        G.requires_grad_(True)

        model.update_ema(step, batch)
        total = loss_dict["generator"] + loss_dict["discriminator"]
        return total, loss_dict, metrics

    def get_average_eval_image_metrics(self, *args: object, **kwargs: object) -> dict[str, float]:
        raise NotImplementedError(
            "EpiGRAF has no evaluation split: measure it with benchmarks/epigraf_cpu.py (FID/KID or sliced Wasserstein)"
        )
