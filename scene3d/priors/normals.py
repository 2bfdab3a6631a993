"""Surface normals from an image with Marigold (Ke et al. 2024; ``prs-eth/marigold-normals-v1-1``).

Marigold is a latent-diffusion model fine-tuned from SD 2: its UNet takes the image latent concatenated with a
noisy normal-map latent (8 channels) and the embedding of the empty prompt, and a few DDIM steps denoise the
normal latent, which the VAE decodes to a 3-channel map in ``[−1, 1]`` that is normalised to unit length.
:class:`NormalEstimator` runs the same steps as diffusers' ``MarigoldNormalsPipeline`` (which we read), on
tensors instead of PIL images and with injected components. Deviations: the image is resized (not padded) to the
processing resolution, and there is no test-time ensembling (``ensemble_size`` 1).

Normals are in Marigold's camera frame: +X right, +Y up, +Z towards the viewer (OpenGL).

Example:
    >>> from scene3d.priors.loading import load_normals
    >>> normals = load_normals("tiny-random")(torch.rand(1, 3, 16, 16))
    >>> tuple(normals.shape), bool(torch.allclose(normals.norm(dim=1), torch.ones(1, 16, 16), atol=1e-4))
    ((1, 3, 16, 16), True)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import CameraBatch
from scene3d.priors.diffusion import check_cameras


class NormalEstimator:
    """Marigold normals with injected components.

    Args:
        unet: ``UNet2DConditionModel`` with 8 input channels (image latent + normal latent).
        vae: ``AutoencoderKL``.
        text_encoder: ``CLIPTextModel`` (only the empty prompt is ever encoded).
        tokenizer: ``CLIPTokenizer``.
        scheduler: the model's ``DDIMScheduler`` (v-prediction, trailing timesteps for v1-1).
        num_inference_steps: denoising steps (the model card's default: 4).
        processing_resolution: longer image side fed to the model (768 for v1-1).
        use_full_z_range: whether the decoded z channel spans ``[−1, 1]`` (else ``[0, 1]``).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        text_encoder: torch.nn.Module,
        tokenizer: Any,
        scheduler: Any,
        *,
        num_inference_steps: int = 4,
        processing_resolution: int = 768,
        use_full_z_range: bool = True,
    ) -> None:
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.num_inference_steps = num_inference_steps
        self.processing_resolution = processing_resolution
        self.use_full_z_range = use_full_z_range
        self._empty: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _empty_embedding(self) -> Tensor:
        if self._empty is None:
            ids = self.tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids.to(self.device)
            self._empty = self.text_encoder(ids)[0]
        return self._empty

    def processing_size(self, height: int, width: int) -> tuple[int, int]:
        """Longer side ``processing_resolution``, aspect kept, both multiples of the VAE factor."""
        scale = self.processing_resolution / max(height, width)
        f = self.vae_scale_factor
        return max(f, round(height * scale / f) * f), max(f, round(width * scale / f) * f)

    @torch.no_grad()
    def __call__(
        self,
        images: Float[Tensor, "B 3 H W"],
        *,
        generator: torch.Generator | None = None,
        cameras: CameraBatch | None = None,
    ) -> Float[Tensor, "B 3 H W"]:
        """Unit normals of images in ``[0, 1]`` at their resolution (not differentiable: a target for a loss).

        ``cameras`` (one per image) are ignored by the network; methods pass them so that the ``groundtruth:`` twin
        can answer.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        check_cameras(cameras, images.shape[0])
        h, w = images.shape[-2:]
        dtype = next(self.unet.parameters()).dtype
        x = F.interpolate(images.to(self.device, torch.float32), size=self.processing_size(h, w), mode="bilinear",
                          align_corners=False, antialias=True)
        scaling = self.vae.config.scaling_factor
        image_latent = self.vae.encode((2 * x - 1).to(dtype)).latent_dist.mode() * scaling
        noise = torch.randn(image_latent.shape, generator=generator, device=generator.device if generator else None,
                            dtype=torch.float32)
        pred = noise.to(self.device, dtype)
        context = self._empty_embedding().to(dtype).expand(images.shape[0], -1, -1)
        self.scheduler.set_timesteps(self.num_inference_steps, device=self.device)
        for t in self.scheduler.timesteps:
            out = self.unet(torch.cat([image_latent, pred], 1), t, encoder_hidden_states=context, return_dict=False)[0]
            pred = self.scheduler.step(out, t, pred, generator=generator).prev_sample
        normals = self.vae.decode(pred / scaling).sample.float().clamp(-1.0, 1.0)
        if not self.use_full_z_range:
            normals = torch.cat([normals[:, :2], normals[:, 2:] * 0.5 + 0.5], 1)
        normals = F.interpolate(normals, size=(h, w), mode="bilinear", align_corners=False)
        return F.normalize(normals, dim=1, eps=1e-6)
