"""The ``groundtruth:`` twin of :class:`~scene3d.priors.StableDiffusionPrior`: an image-space denoiser whose x̂₀ is
the scene's render at the camera.

* **VAE**: the identity in image space, ``latents = 2·image − 1`` (3 channels, factor 1), so ``encode_images`` /
  ``decode_latents`` are exact inverses on ``[0, 1]``.
* **Text**: ``embed(prompt)`` records the prompt's target (look and scene variant, by the keyword rules of
  :mod:`.variants`) as a code in ``PromptEmbeddings.cond``; the negative prompt is the unconditional branch.
* **Noise prediction** (SDS, VSD, DSD, sampling loops) at timestep t, with ᾱ = SD's ``alphas_cumprod``::

      ε_y(x_t) = (x_t − √ᾱ_t x̂₀_y) / √(1 − ᾱ_t),   x̂₀_y = 2·render(camera, prompt's target) − 1
      ε_∅(x_t) = (x_t − √ᾱ_t x̂₀_∅) / √(1 − ᾱ_t),   x̂₀_∅ = G_σ * x̂₀_y   (a Gaussian blur, σ = uncond_blur · side)

  so the conditional score points exactly at the truth, and classifier-free guidance
  ``ε̂ = ε_∅ + s(ε_y − ε_∅)`` has the direction ``x̂₀_y − x̂₀_∅`` (the detail the blur removed). SDS with it has the
  gradient ``G = w(t) √ᾱ/√(1−ᾱ) [(z − x̂₀_y) + (s − 1)(x̂₀_∅ − x̂₀_y)]``: at ``s = 1`` it pulls a render to the truth;
  at ``s > 1`` its fixed point is ``x̂₀_y + (s − 1)(x̂₀_y − x̂₀_∅)``, the truth over-sharpened, the image-space
  analogue of the over-saturation that large CFG gives real SDS. With imperfections off, ``x̂₀_∅ = x̂₀_y`` and any
  ``s`` gives the truth.
* **Sampling** (text-to-image, image-to-image, inpainting): answered directly
  (:class:`~scene3d.priors.sampling.SamplingAnswerer`) with the truth at the cameras; inpainting returns ``k``
  candidates of which exactly one is clean (:func:`.imperfections.plan_candidates`).

What it cannot do: attention-level operations on the UNet (``AttentionControl``, query injection, LoRA adapters
for VSD's ε_ψ) need a real network; the twin's UNet is a placeholder that raises when called directly.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.core.cameras import CameraBatch
from scene3d.datasets.gtpriors.imperfections import InpaintDraw, gaussian_blur, perturb_fill, plan_candidates
from scene3d.datasets.gtpriors.source import GroundTruthSource, Target, needs_cameras
from scene3d.priors.diffusion import ControlInput, InpaintInput, NoisePrediction, StableDiffusionPrior, check_cameras
from scene3d.priors.sampling import SamplingOutput
from scene3d.priors.text import PromptEmbeddings


class _Posterior:
    """A point-mass posterior: ``mean``, ``mode()`` and ``sample()`` are the input."""

    def __init__(self, x: Tensor) -> None:
        self.mean = x

    def mode(self) -> Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        return self.mean


class IdentityVAE(nn.Module):
    """diffusers ``AutoencoderKL``'s interface with the identity as encoder and decoder (images in ``[−1, 1]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(block_out_channels=(3,), scaling_factor=1.0, shift_factor=None, latent_channels=3)
        self._anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def encode(self, x: Tensor) -> SimpleNamespace:
        return SimpleNamespace(latent_dist=_Posterior(x))

    def decode(self, z: Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=z)


class GroundTruthUNet(nn.Module):
    """The twin's UNet slot: carries the channel layout (``config``) and the device; it is never run. The noise
    prediction needs the cameras, which a UNet call does not carry: use ``prior.predict_noise(..., cameras=)``."""

    def __init__(self, inpainting: bool) -> None:
        super().__init__()
        self.config = SimpleNamespace(in_channels=7 if inpainting else 3, out_channels=3, sample_size=64)
        self._anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        raise RuntimeError(
            "the groundtruth denoiser is not a network: its prediction depends on the cameras, so call "
            "prior.predict_noise(..., cameras=CameraBatch) (attention control and LoRA need a real UNet)"
        )


class _NullTextEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self._anchor = nn.Parameter(torch.zeros(()), requires_grad=False)


class GroundTruthDiffusionPrior(StableDiffusionPrior):
    """A :class:`StableDiffusionPrior` answering from a synthetic scene (module docstring).

    Args:
        source: the scene, variant and imperfections (shared with the other twins of the dataset).
        inpainting: lay out the UNet slot as an inpainting UNet (``is_inpainting``), as ``load_inpainting`` would.
        controlnet: carry a ControlNet slot, so ``control=`` is accepted (and has no effect: the truth already has
            the scene's geometry).
        device: where latents and outputs go (the renders are made on the CPU).
    """

    def __init__(
        self,
        source: GroundTruthSource,
        *,
        inpainting: bool = False,
        controlnet: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        from diffusers import DDIMScheduler

        from scene3d.priors.tiny import SD_SCHEDULER_CONFIG

        device = torch.device(device)
        unet, vae = GroundTruthUNet(inpainting).to(device), IdentityVAE().to(device)
        super().__init__(
            unet, vae, _NullTextEncoder(), None, DDIMScheduler.from_config(SD_SCHEDULER_CONFIG),
            controlnet=_NullTextEncoder() if controlnet else None,
            model_id=f"groundtruth:{source.stored.folder}", revision="groundtruth", text_cache_dir=None,
            execution_device=device,
        )  # fmt: skip
        self.source = source
        self._targets: list[Target] = []

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    # ------------------------------------------------------------------------------------------ text
    def embed(self, prompts: str | list[str], negative_prompts: str | list[str] = "") -> PromptEmbeddings:
        """Codes of the prompts' targets (look, variant); the negative prompts mark the unconditional branch."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        codes = []
        for prompt in prompts:
            target = self.source.target(prompt)
            if target not in self._targets:
                self._targets.append(target)
            codes.append(float(self._targets.index(target)))
        cond = torch.tensor(codes, device=self.device).view(-1, 1, 1)
        return PromptEmbeddings(cond, torch.full_like(cond, -1.0))

    def targets_of(self, embeddings: PromptEmbeddings, batch: int) -> list[Target]:
        """The target of each of ``batch`` images (a code < 0, an unconditional row, means the empty prompt)."""
        codes = embeddings.cond.reshape(embeddings.cond.shape[0], -1)[:, 0].expand(batch) if len(embeddings) == 1 \
            else embeddings.cond.reshape(batch, -1)[:, 0]  # fmt: skip
        out = []
        for code in codes.tolist():
            index = int(round(code))
            out.append(self._targets[index] if 0 <= index < len(self._targets) else self.source.target(""))
        return out

    # ------------------------------------------------------------------------------------------ truth
    def truth(self, cameras: CameraBatch, targets: list[Target], height: int, width: int) -> Float[Tensor, "B 3 H W"]:
        """The targets' renders in ``[0, 1]`` at ``cameras`` imaged at ``height × width``, on :attr:`device`."""
        cams = cameras if (cameras.width, cameras.height) == (width, height) else cameras.scaled(width, height)
        return self.source.render_targets(cams, targets).rgb.to(self.device)

    def uncond_sigma(self, height: int, width: int) -> float:
        imperfections = self.source.options.imperfections
        return imperfections.uncond_blur * max(height, width) if imperfections.enabled else 0.0

    # ------------------------------------------------------------------------------------------ noise
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
        """ε from x̂₀ = the render at ``cameras`` (module docstring); ``inpaint``, ``control`` and ``class_labels``
        are accepted and have no effect."""
        b, c, h, w = latents.shape
        if c != 3:
            raise ValueError(f"groundtruth latents are images in [-1, 1] with 3 channels, got {c} channels")
        if embeddings.cond.shape[0] not in (1, b):
            raise ValueError(f"embeddings must hold 1 or {b} prompts, got {embeddings.cond.shape[0]}")
        if control is not None and self.controlnet is None:
            raise ValueError("control was given but this prior has no controlnet")
        check_cameras(cameras, b)
        cams = needs_cameras(cameras, "noise prediction").expand_to(b)
        x0_cond = 2.0 * self.truth(cams, self.targets_of(embeddings, b), h, w) - 1.0
        t = torch.as_tensor(timesteps, device=self.device).long()
        t = t.expand(b) if t.ndim == 0 else t
        a = self.alphas_cumprod(self.device)[t].view(-1, 1, 1, 1)
        x_t = latents.to(self.device).float()
        eps_cond = (x_t - a.sqrt() * x0_cond) / (1.0 - a).sqrt()
        if guidance_scale == 1.0 and not with_uncond:
            return NoisePrediction(eps=eps_cond, eps_cond=eps_cond, eps_uncond=None, raw=eps_cond)
        x0_uncond = gaussian_blur(x0_cond, self.uncond_sigma(h, w))
        eps_uncond = (x_t - a.sqrt() * x0_uncond) / (1.0 - a).sqrt()
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        return NoisePrediction(eps=eps, eps_cond=eps_cond, eps_uncond=eps_uncond, raw=eps)

    # ------------------------------------------------------------------------------------------ sampling
    def answer_text_to_image(
        self, embeddings: PromptEmbeddings, *, height: int, width: int, generator: torch.Generator | None,
        cameras: CameraBatch | None,
    ) -> SamplingOutput:
        """The prompts' targets rendered at the cameras (``height × width``); exact (no imperfection)."""
        b = len(embeddings)
        cams = needs_cameras(cameras, "text-to-image").expand_to(b)
        targets = self.targets_of(embeddings, b)
        images = self.truth(cams, targets, height, width)
        _, call, seed = self.source.generator("text_to_image", generator)
        self.source.record("text_to_image", call, seed, targets, None)
        return SamplingOutput(images, 2.0 * images - 1.0)

    def answer_image_to_image(
        self, images: Tensor, embeddings: PromptEmbeddings, *, strength: float, generator: torch.Generator | None,
        cameras: CameraBatch | None,
    ) -> SamplingOutput:
        """The prompts' targets at the cameras, at the input's size, whatever the strength (the truth is what an
        ideal edit reaches)."""
        b, _, h, w = images.shape
        cams = needs_cameras(cameras, "image-to-image").expand_to(b)
        targets = self.targets_of(embeddings, b)
        out = self.truth(cams, targets, h, w).to(images.device)
        _, call, seed = self.source.generator("image_to_image", generator)
        self.source.record("image_to_image", call, seed, targets, {"strength": strength})
        return SamplingOutput(out, 2.0 * out - 1.0)

    def _shifted(self, cameras: CameraBatch, generator: torch.Generator) -> tuple[CameraBatch, list[float]]:
        """The cameras moved by ``inpaint_offset_px`` pixels in a random image direction."""
        angle = float(torch.rand(1, generator=generator)) * 2.0 * math.pi
        px = self.source.options.imperfections.inpaint_offset_px
        dx, dy = px * math.cos(angle), px * math.sin(angle)
        if cameras.K is not None:
            K = cameras.K.clone()
            K[:, 0, 2] -= dx  # the principal point moves against the image content
            K[:, 1, 2] -= dy
            return CameraBatch(cameras.c2w, K, cameras.width, cameras.height, cameras.model), [dx, dy]
        # a panorama: turn about its own up axis by dx pixels of longitude
        yaw = dx * 2.0 * math.pi / cameras.width
        c, s = math.cos(yaw), math.sin(yaw)
        rot = torch.tensor([[c, 0.0, s, 0.0], [0.0, 1.0, 0.0, 0.0], [-s, 0.0, c, 0.0], [0.0, 0.0, 0.0, 1.0]])
        return CameraBatch(cameras.c2w @ rot.to(cameras.c2w), None, cameras.width, cameras.height, cameras.model), [dx, 0.0]

    def answer_inpaint(
        self, images: Tensor, mask: Tensor, embeddings: PromptEmbeddings, *, num_images_per_prompt: int,
        generator: torch.Generator | None, keep_unmasked: bool, cameras: CameraBatch | None,
    ) -> SamplingOutput:
        """``k`` candidates per image: the truth inside the mask, the input outside; with imperfections on, exactly
        one candidate is clean and the others carry one seeded perturbation each (recorded as an
        :class:`~.imperfections.InpaintDraw`)."""
        b, _, h, w = images.shape
        k = num_images_per_prompt
        cams = needs_cameras(cameras, "inpainting").expand_to(b)
        if (cams.width, cams.height) != (w, h):
            cams = cams.scaled(w, h)
        targets = self.targets_of(embeddings, b)
        truth = self.source.render_targets(cams, targets).rgb
        settings = self.source.options.imperfections
        gen, call, seed = self.source.generator("inpaint", generator)
        gen_cpu = gen if gen.device.type == "cpu" else torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        src, m = images.detach().cpu().float(), mask.detach().cpu().float()
        out, cleans, kinds_all, details_all = [], [], [], []
        for i in range(b):
            clean, kinds = plan_candidates(k, gen_cpu) if settings.enabled else (0, ["clean"] * k)
            shifted = None
            if "offset" in kinds:
                moved, vector = self._shifted(cams[i], gen_cpu)
                shifted = self.source.render_targets(moved, [targets[i]]).rgb[0]
            details = []
            for kind in kinds:
                fill, detail = perturb_fill(truth[i], shifted, m[i], kind, settings, gen_cpu)
                if kind == "offset":
                    detail["offset_vector_px"] = vector
                out.append(m[i] * fill + (1.0 - m[i]) * src[i])
                details.append(detail)
            cleans.append(clean)
            kinds_all.append(kinds)
            details_all.append(details)
        self.source.record("inpaint", call, seed, targets, InpaintDraw(cleans, kinds_all, details_all))
        result = torch.stack(out).to(images.device)
        return SamplingOutput(result, 2.0 * result - 1.0)
