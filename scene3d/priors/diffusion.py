"""The latent-diffusion prior: components in, latents, embeddings and noise predictions out.

:class:`StableDiffusionPrior` takes every component in its constructor (diffusers style); it never downloads.
Build one with :func:`scene3d.priors.loading.load_diffusion` (presets, local folders, ``tiny-random``) or pass your
own modules. The operations built on it (sampling, inversion, score distillation, attention control) are free
functions in their own modules.

Conventions (as in diffusers' Stable Diffusion pipelines):

* images are ``[B, 3, H, W]`` in ``[0, 1]``; the VAE sees ``2x − 1``;
* latents are ``[B, C, H/f, W/f]`` already multiplied by ``vae.config.scaling_factor`` (``f`` = 8 for SD, 2 for
  ``tiny-random``);
* ``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε`` (DDPM; ``ᾱ`` = ``scheduler.alphas_cumprod``); :meth:`predict_noise` takes
  ``x_t`` in this form and returns ε whatever the UNet predicts (ε, v or x_0);
* classifier-free guidance (Ho & Salimans 2022): ``ε̂ = ε(x_t; ∅) + s·(ε(x_t; y) − ε(x_t; ∅))``.

Example:
    >>> from scene3d.priors.loading import load_diffusion
    >>> sd = load_diffusion("tiny-random")
    >>> z = sd.encode_images(torch.rand(1, 3, 16, 16))
    >>> tuple(z.shape), tuple(sd.decode_latents(z).shape)
    ((1, 4, 8, 8), (1, 3, 16, 16))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import CameraBatch
from scene3d.priors.text import PromptEmbeddings, TextEmbedder


@dataclass
class NoisePrediction:
    """One UNet evaluation, with classifier-free guidance applied."""

    eps: Float[Tensor, "B C h w"]
    """Guided noise ``ε̂ = ε_∅ + s (ε_y − ε_∅)`` (equals ``eps_cond`` when no guidance was run), fp32."""
    eps_cond: Float[Tensor, "B C h w"]
    """``ε(x_t; y)``, fp32."""
    eps_uncond: Float[Tensor, "B C h w"] | None
    """``ε(x_t; ∅)`` (``None`` when only the conditional branch ran), fp32."""
    raw: Float[Tensor, "B C h w"]
    """The guided UNet output in the scheduler's own parametrization (ε, v or x_0): what ``scheduler.step`` takes."""


@dataclass
class ControlInput:
    """ControlNet conditioning for one call."""

    image: Float[Tensor, "B 3 H W"]
    """Conditioning image in ``[0, 1]`` (a depth map repeated to 3 channels, an OpenPose rendering, …), at image
    resolution (latent size × the VAE factor)."""
    scale: float = 1.0
    """``controlnet_conditioning_scale``: multiplies every residual."""


@dataclass
class InpaintInput:
    """Extra UNet input channels of an inpainting UNet (SD 2 inpainting: 4 + 1 + 4 = 9 channels)."""

    mask: Float[Tensor, "B 1 h w"]
    """1 where content is generated, 0 where it is kept, at latent resolution."""
    masked_image_latents: Float[Tensor, "B C h w"]
    """Latents of the image with the masked region set to 0 (grey in ``[0, 1]`` terms)."""


def check_cameras(cameras: CameraBatch | None, batch: int) -> None:
    """Raise ``ValueError`` unless ``cameras`` is ``None`` or can serve ``batch`` images (see
    :meth:`~scene3d.core.cameras.CameraBatch.expand_to`): a real model ignores cameras, but a method that passes the
    wrong ones fails here on a ``tiny-random`` run already, not first on a ``groundtruth:`` one."""
    if cameras is None:
        return
    if not isinstance(cameras, CameraBatch):
        raise ValueError(f"cameras must be a scene3d.core.cameras.CameraBatch or None, got {type(cameras).__name__}")
    if batch % len(cameras):
        raise ValueError(f"cameras hold {len(cameras)} cameras, which cannot serve a batch of {batch} images")


class StableDiffusionPrior:
    """A latent text-to-image diffusion model (SD 1.x / 2.x layout) made of injected components.

    Args:
        unet: ``UNet2DConditionModel`` (4 input channels, or 9 for an inpainting UNet).
        vae: ``AutoencoderKL``.
        text_encoder: ``CLIPTextModel``.
        tokenizer: ``CLIPTokenizer``.
        scheduler: a diffusers scheduler with ``alphas_cumprod`` (DDIM, Euler, …); sampling mutates its state.
        controlnet: optional ``ControlNetModel`` used when a call passes :class:`ControlInput`.
        model_id: names the weights (HF id or ``tiny-random``) in text-embedding cache keys.
        revision: the resolved revision (commit hash, ``local:<folder>``, ``seed<N>``), also in cache keys.
        text_cache_dir: on-disk text-embedding cache; ``None`` caches in memory only.
        execution_device: the device computations run on; ``None`` takes the UNet's. Set it when the weights are
            offloaded (they then live on the CPU or the meta device).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        text_encoder: torch.nn.Module,
        tokenizer: Any,
        scheduler: Any,
        *,
        controlnet: torch.nn.Module | None = None,
        model_id: str = "custom",
        revision: str = "",
        text_cache_dir: Path | None = None,
        execution_device: torch.device | None = None,
    ) -> None:
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.controlnet = controlnet
        self.model_id = model_id
        self.revision = revision
        self.execution_device = execution_device
        self.text = TextEmbedder(text_encoder, tokenizer, model_id=model_id, revision=revision, cache_dir=text_cache_dir)

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        if self.execution_device is not None:
            return self.execution_device
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.out_channels)

    @property
    def is_inpainting(self) -> bool:
        """Whether the UNet takes the 9-channel inpainting input (latents, mask, masked-image latents)."""
        return int(self.unet.config.in_channels) == 2 * self.latent_channels + 1

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.get("prediction_type", "epsilon"))

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def alphas_cumprod(self, device: torch.device | None = None) -> Float[Tensor, " T"]:
        """``ᾱ_t`` for ``t = 0 … T−1`` (fp32)."""
        return self.scheduler.alphas_cumprod.to(device=device or self.device, dtype=torch.float32)

    # ----------------------------------------------------------------------------------------------- text
    def embed(self, prompts: str | list[str], negative_prompts: str | list[str] = "") -> PromptEmbeddings:
        """Prompt embeddings on this prior's device and dtype (cached; see :class:`~scene3d.priors.text.TextEmbedder`)."""
        return self.text(prompts, negative_prompts).to(self.device, self.dtype)

    # ----------------------------------------------------------------------------------------------- latents
    def encode_images(
        self, images: Float[Tensor, "B 3 H W"], *, generator: torch.Generator | None = None, sample: bool = False
    ) -> Float[Tensor, "B C h w"]:
        """VAE-encode images in ``[0, 1]`` to scaled latents (differentiable).

        Args:
            images: ``H`` and ``W`` must be multiples of :attr:`vae_scale_factor`.
            generator: used when ``sample`` is true.
            sample: draw from the posterior instead of taking its mean (diffusers' pipelines sample for img2img;
                score distillation takes the mean).
        """
        f = self.vae_scale_factor
        if images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(f"images height and width must be multiples of {f}, got {tuple(images.shape[-2:])}")
        posterior = self.vae.encode((2.0 * images - 1.0).to(self.device, self.dtype)).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mean
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * self.vae.config.scaling_factor).float()

    def decode_latents(self, latents: Float[Tensor, "B C h w"]) -> Float[Tensor, "B 3 H W"]:
        """Decode scaled latents to images in ``[0, 1]`` (differentiable inside the range)."""
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = latents / self.vae.config.scaling_factor + shift
        images = self.vae.decode(z.to(self.device, self.dtype)).sample
        return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    # ----------------------------------------------------------------------------------------------- UNet
    def predict_noise(
        self,
        latents: Float[Tensor, "B C h w"],
        timesteps: Tensor | int,
        embeddings: PromptEmbeddings,
        guidance_scale: float = 1.0,
        *,
        with_uncond: bool = False,
        control: ControlInput | None = None,
        inpaint: InpaintInput | None = None,
        class_labels: Tensor | None = None,
        cameras: CameraBatch | None = None,
    ) -> NoisePrediction:
        """``ε̂(x_t; y)`` with classifier-free guidance, in one batched UNet call.

        Args:
            latents: ``x_t`` (already passed through ``scheduler.scale_model_input`` by a sampling loop).
            timesteps: one timestep for all, or ``[B]``.
            embeddings: ``B`` prompts (or 1, broadcast).
            guidance_scale: ``s``; the unconditional branch runs when ``s != 1`` or ``with_uncond``.
            control: ControlNet conditioning (needs :attr:`controlnet`).
            inpaint: mask and masked-image latents for a 9-channel inpainting UNet.
            class_labels: ``[B, ·]`` extra conditioning summed into the time embedding (the VSD camera pathway,
                see :mod:`scene3d.priors.lora`).
            cameras: the camera of each latent (1 or ``B``, or ``B/k`` for ``k`` candidates per camera). A real model
                ignores them; the ``groundtruth:`` twin predicts from the scene at these cameras. Methods always
                pass them.
        """
        b = latents.shape[0]
        check_cameras(cameras, b)
        if embeddings.cond.shape[0] not in (1, b):
            raise ValueError(f"embeddings must hold 1 or {b} prompts, got {embeddings.cond.shape[0]}")
        if self.is_inpainting and inpaint is None:
            raise ValueError("this UNet is an inpainting UNet (9 input channels): pass inpaint=InpaintInput(...)")
        if inpaint is not None and not self.is_inpainting:
            raise ValueError("inpaint was given but the UNet is not an inpainting UNet; use sampling.inpaint_blend")
        if control is not None and self.controlnet is None:
            raise ValueError("control was given but this prior has no controlnet")
        run_uncond = guidance_scale != 1.0 or with_uncond
        n = 2 if run_uncond else 1
        device, dtype = self.device, self.dtype

        def batch(x: Tensor) -> Tensor:
            return torch.cat([x] * n) if n > 1 else x

        context = embeddings.cond.expand(b, -1, -1)
        if run_uncond:
            context = torch.cat([embeddings.uncond.expand(b, -1, -1), context])
        t = torch.as_tensor(timesteps, device=device)
        t = (t.expand(b) if t.ndim == 0 else t).to(device)
        x_in = batch(latents.to(device, dtype))
        t_in = batch(t)
        context = context.to(device, dtype)
        unet_in = x_in
        if inpaint is not None:
            unet_in = torch.cat(
                [x_in, batch(inpaint.mask.to(device, dtype)), batch(inpaint.masked_image_latents.to(device, dtype))], 1
            )
        extra: dict[str, Any] = {}
        if control is not None:
            down, mid = self.controlnet(
                x_in, t_in, encoder_hidden_states=context,
                controlnet_cond=batch(control.image.to(device, dtype)),
                conditioning_scale=control.scale, return_dict=False,
            )
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        if class_labels is not None:
            extra["class_labels"] = batch(class_labels.to(device, dtype))
        out = self.unet(unet_in, t_in, encoder_hidden_states=context, return_dict=False, **extra)[0].float()
        if run_uncond:
            raw_uncond, raw_cond = out.chunk(2)
            raw = raw_uncond + guidance_scale * (raw_cond - raw_uncond)
        else:
            raw_uncond, raw_cond, raw = None, out, out
        x_t = latents.to(device).float()
        return NoisePrediction(
            eps=self.to_epsilon(raw, x_t, t),
            eps_cond=self.to_epsilon(raw_cond, x_t, t),
            eps_uncond=None if raw_uncond is None else self.to_epsilon(raw_uncond, x_t, t),
            raw=raw,
        )

    def to_epsilon(
        self, output: Float[Tensor, "B C h w"], x_t: Float[Tensor, "B C h w"], timesteps: Tensor
    ) -> Float[Tensor, "B C h w"]:
        """Convert a UNet output in the scheduler's parametrization to ε (linear, so CFG commutes with it)."""
        kind = self.prediction_type
        if kind == "epsilon":
            return output
        a = self.alphas_cumprod(output.device)[timesteps.long()].view(-1, 1, 1, 1)
        if kind == "v_prediction":  # v = √ᾱ ε − √(1−ᾱ) x_0  ⇒  ε = √ᾱ v + √(1−ᾱ) x_t
            return a.sqrt() * output + (1 - a).sqrt() * x_t
        if kind == "sample":  # x_0 given  ⇒  ε = (x_t − √ᾱ x_0) / √(1−ᾱ)
            return (x_t - a.sqrt() * output) / (1 - a).sqrt()
        raise ValueError(f"unsupported scheduler prediction_type '{kind}'")

    def add_noise(
        self, latents: Float[Tensor, "B C h w"], noise: Float[Tensor, "B C h w"], timesteps: Tensor
    ) -> Float[Tensor, "B C h w"]:
        """``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε`` (DDPM forward process) for ``timesteps`` ``[B]``."""
        a = self.alphas_cumprod(latents.device)[timesteps.long()].view(-1, 1, 1, 1)
        return a.sqrt() * latents + (1 - a).sqrt() * noise
