"""Image generation with a :class:`~scene3d.priors.diffusion.StableDiffusionPrior`: text-to-image, image-to-image,
inpainting (dedicated inpainting UNet, or mask blending for a plain UNet) and ControlNet-conditioned generation.

All share one denoising loop, :func:`denoise`, driven by the prior's own scheduler (DDIM, Euler, …) with
classifier-free guidance, an optional ControlNet input, and an ``on_step`` hook that can replace the latents
between steps (QNeRF's soft query guidance, MasaCtrl's step-dependent control). Randomness comes only from the
``generator`` argument: the same generator seed gives the same images.

Masks are ``[B, 1, H, W]`` in ``{0, 1}`` with **1 = generate** (diffusers' convention: white is repainted).

Example:
    >>> from scene3d.priors.loading import load_diffusion
    >>> sd = load_diffusion("tiny-random")
    >>> out = text_to_image(sd, "a chair", height=16, width=16, num_inference_steps=4,
    ...                     generator=torch.Generator().manual_seed(0))
    >>> tuple(out.images.shape), tuple(out.latents.shape)
    ((1, 3, 16, 16), (1, 4, 8, 8))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import CameraBatch
from scene3d.priors.diffusion import ControlInput, InpaintInput, StableDiffusionPrior, check_cameras
from scene3d.priors.text import PromptEmbeddings

StepHook = Callable[[int, Tensor, Tensor], Tensor | None]
"""``on_step(i, t, latents)`` runs before step ``i`` predicts noise; a returned tensor replaces the latents."""


@dataclass
class SamplingOutput:
    images: Float[Tensor, "B 3 H W"]
    """Decoded images in ``[0, 1]``."""
    latents: Float[Tensor, "B C h w"]
    """Final (clean) latents."""


@runtime_checkable
class SamplingAnswerer(Protocol):
    """A prior that answers the sampling operations itself instead of through the denoising loop.

    The ``groundtruth:`` twins implement it: their answer is the truth at the cameras, which no finite loop of a
    noise scheduler returns exactly. :func:`text_to_image`, :func:`image_to_image` and :func:`inpaint` check their
    arguments as usual, embed the prompts with ``prior.embed``, then hand over to these methods when the prior has
    them. The ControlNet input, initial ``latents``, ``on_step`` hooks and step counts have no effect on such a
    prior (documented by each twin).
    """

    def answer_text_to_image(
        self, embeddings: PromptEmbeddings, *, height: int, width: int, generator: torch.Generator | None,
        cameras: CameraBatch | None,
    ) -> SamplingOutput: ...

    def answer_image_to_image(
        self, images: Tensor, embeddings: PromptEmbeddings, *, strength: float, generator: torch.Generator | None,
        cameras: CameraBatch | None,
    ) -> SamplingOutput: ...

    def answer_inpaint(
        self, images: Tensor, mask: Tensor, embeddings: PromptEmbeddings, *, num_images_per_prompt: int,
        generator: torch.Generator | None, keep_unmasked: bool, cameras: CameraBatch | None,
    ) -> SamplingOutput: ...


def _noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32).to(device)


def _embeddings(prior: StableDiffusionPrior, prompts: str | list[str] | PromptEmbeddings, negative: str | list[str],
                per_prompt: int) -> PromptEmbeddings:
    emb = prompts if isinstance(prompts, PromptEmbeddings) else prior.embed(prompts, negative)
    return emb.repeat(per_prompt) if per_prompt > 1 else emb


def denoise(
    prior: StableDiffusionPrior,
    latents: Float[Tensor, "B C h w"],
    embeddings: PromptEmbeddings,
    *,
    num_inference_steps: int,
    guidance_scale: float = 7.5,
    start_index: int = 0,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    control: ControlInput | None = None,
    inpaint: InpaintInput | None = None,
    blend: tuple[Float[Tensor, "B 1 h w"], Float[Tensor, "B C h w"], Float[Tensor, "B C h w"]] | None = None,
    on_step: StepHook | None = None,
    cameras: CameraBatch | None = None,
) -> Float[Tensor, "B C h w"]:
    """Run the scheduler's reverse process from ``scheduler.timesteps[start_index]`` to the end.

    Args:
        latents: noisy latents at the first timestep, in the scheduler's own scale (``init_noise_sigma`` applied).
        embeddings: prompts (1 or ``B``), with their negative prompts for guidance.
        num_inference_steps: passed to ``scheduler.set_timesteps``.
        guidance_scale: classifier-free guidance ``s``.
        start_index: skip the first timesteps (image-to-image).
        generator: the only source of randomness (stochastic schedulers, DDIM ``eta > 0``).
        eta: DDIM's η (0 = deterministic); ignored by schedulers without it.
        control: ControlNet input, used at every step.
        inpaint: extra channels of a 9-channel inpainting UNet.
        blend: ``(mask, known_latents, noise)``: after each step, keep ``known_latents`` noised to the next
            timestep where ``mask`` is 0 (mask-blend inpainting with a plain UNet).
        on_step: hook called before each step's noise prediction (see :data:`StepHook`).
        cameras: the camera of each image (passed to :meth:`StableDiffusionPrior.predict_noise`).
    """
    check_cameras(cameras, latents.shape[0])
    scheduler = prior.scheduler
    scheduler.set_timesteps(num_inference_steps, device=prior.device)
    timesteps = scheduler.timesteps[start_index:]
    params = inspect.signature(scheduler.step).parameters
    step_kwargs = {"generator": generator} if "generator" in params else {}
    if "eta" in params:
        step_kwargs["eta"] = eta
    latents = latents.to(prior.device, torch.float32)
    for i, t in enumerate(timesteps):
        if on_step is not None:
            replaced = on_step(i, t, latents)
            latents = latents if replaced is None else replaced
        with torch.no_grad():
            model_in = scheduler.scale_model_input(latents, t)
            pred = prior.predict_noise(
                model_in, t, embeddings, guidance_scale, control=control, inpaint=inpaint, cameras=cameras
            )
        latents = scheduler.step(pred.raw, t, latents, **step_kwargs).prev_sample.float()
        if blend is not None:
            mask, known, noise = blend
            if i + 1 < len(timesteps):
                known = scheduler.add_noise(known, noise, timesteps[i + 1 : i + 2].expand(known.shape[0]))
            latents = mask * latents + (1.0 - mask) * known
    return latents


def _decode(prior: StableDiffusionPrior, latents: Tensor) -> Tensor:
    with torch.no_grad():
        return prior.decode_latents(latents)


def _check_size(prior: StableDiffusionPrior, height: int, width: int) -> None:
    f = prior.vae_scale_factor
    if height % f or width % f:
        raise ValueError(f"height and width must be multiples of the VAE factor {f}, got {height}x{width}")


def _check_control(control: ControlInput | None, batch: int, height: int, width: int) -> None:
    if control is not None and tuple(control.image.shape[-2:]) != (height, width):
        raise ValueError(f"control.image must be {height}x{width} (the output size), got {tuple(control.image.shape[-2:])}")
    if control is not None and control.image.shape[0] not in (1, batch):
        raise ValueError(f"control.image must hold 1 or {batch} images, got {control.image.shape[0]}")


def text_to_image(
    prior: StableDiffusionPrior,
    prompts: str | list[str] | PromptEmbeddings,
    *,
    negative_prompt: str | list[str] = "",
    height: int = 512,
    width: int = 512,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    num_images_per_prompt: int = 1,
    generator: torch.Generator | None = None,
    control: ControlInput | None = None,
    latents: Float[Tensor, "B C h w"] | None = None,
    on_step: StepHook | None = None,
    cameras: CameraBatch | None = None,
) -> SamplingOutput:
    """Sample images from text (SD; with ``control`` it is ControlNet-conditioned generation).

    ``latents`` (unit Gaussian) replaces the generator's initial noise, e.g. DDIM-inverted latents. ``cameras``
    (one per prompt, or one per image) are where the images are seen from: real models ignore them, methods
    always pass them (the ``groundtruth:`` twin renders its scene there).
    """
    _check_size(prior, height, width)
    emb = _embeddings(prior, prompts, negative_prompt, num_images_per_prompt)
    b = len(emb)
    check_cameras(cameras, b)
    _check_control(control, b, height, width)
    if isinstance(prior, SamplingAnswerer):
        return prior.answer_text_to_image(emb, height=height, width=width, generator=generator, cameras=cameras)
    f = prior.vae_scale_factor
    shape = (b, prior.latent_channels, height // f, width // f)
    init = _noise(shape, generator, prior.device) if latents is None else latents.to(prior.device, torch.float32)
    prior.scheduler.set_timesteps(num_inference_steps, device=prior.device)
    init = init * prior.scheduler.init_noise_sigma
    z = denoise(prior, init, emb, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                generator=generator, control=control, on_step=on_step, cameras=cameras)
    return SamplingOutput(_decode(prior, z), z)


def image_to_image(
    prior: StableDiffusionPrior,
    images: Float[Tensor, "B 3 H W"],
    prompts: str | list[str] | PromptEmbeddings,
    *,
    strength: float = 0.8,
    negative_prompt: str | list[str] = "",
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    generator: torch.Generator | None = None,
    control: ControlInput | None = None,
    cameras: CameraBatch | None = None,
) -> SamplingOutput:
    """SDEdit (Meng et al. 2022): noise the image's latents to ``strength·T`` and denoise them under the prompt.

    ``strength`` 0 returns the input (up to the VAE), 1 ignores it. Follows diffusers' img2img pipeline: the
    first ``(1 − strength)`` of the timesteps are skipped. ``cameras``: one per image (see :func:`text_to_image`).
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    h, w = images.shape[-2:]
    _check_size(prior, h, w)
    emb = _embeddings(prior, prompts, negative_prompt, 1)
    _check_control(control, images.shape[0], h, w)
    check_cameras(cameras, images.shape[0])
    if isinstance(prior, SamplingAnswerer):
        return prior.answer_image_to_image(images, emb, strength=strength, generator=generator, cameras=cameras)
    with torch.no_grad():
        init = prior.encode_images(images, generator=generator, sample=True)
    scheduler = prior.scheduler
    scheduler.set_timesteps(num_inference_steps, device=prior.device)
    start = num_inference_steps - min(num_inference_steps, int(num_inference_steps * strength))
    t_start = scheduler.timesteps[start : start + 1].expand(init.shape[0])
    noisy = scheduler.add_noise(init, _noise(tuple(init.shape), generator, prior.device), t_start)
    z = denoise(prior, noisy, emb, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                start_index=start, generator=generator, control=control, cameras=cameras)
    return SamplingOutput(_decode(prior, z), z)


def latent_mask(mask: Float[Tensor, "B 1 H W"], latent_hw: tuple[int, int]) -> Float[Tensor, "B 1 h w"]:
    """Downsample a pixel mask to latent size (nearest, as diffusers' inpainting pipelines do), values in {0, 1}."""
    return (F.interpolate(mask.float(), size=latent_hw, mode="nearest") >= 0.5).float()


def inpaint(
    prior: StableDiffusionPrior,
    images: Float[Tensor, "B 3 H W"],
    mask: Float[Tensor, "B 1 H W"],
    prompts: str | list[str] | PromptEmbeddings,
    *,
    method: Literal["auto", "unet", "blend"] = "auto",
    negative_prompt: str | list[str] = "",
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    num_images_per_prompt: int = 1,
    generator: torch.Generator | None = None,
    keep_unmasked: bool = True,
    cameras: CameraBatch | None = None,
) -> SamplingOutput:
    """Fill the masked region (mask 1) of ``images`` under the prompt.

    Args:
        method: ``unet``: a 9-channel inpainting UNet sees ``[x_t, mask, latents of the masked image]`` at every
            step (SD 2 inpainting; the masked image is the input with the hole set to 0.5 grey, as in diffusers).
            ``blend``: any UNet; after every step the known region is replaced by the input latents noised to the
            next timestep (blended latent diffusion; Avrahami et al. 2023). ``auto`` picks ``unet`` when the prior
            is an inpainting prior, else ``blend``.
        num_images_per_prompt: candidates per input image (Text2NeRF draws 20 and keeps the best by CLIP).
        keep_unmasked: paste the input pixels back outside the mask after decoding.
        cameras: one per input image (the ``k`` candidates of an image share its camera); see :func:`text_to_image`.
    """
    if mask.shape[0] != images.shape[0] or mask.shape[-2:] != images.shape[-2:] or mask.shape[1] != 1:
        raise ValueError(f"mask must have shape (B, 1, H, W) matching images {tuple(images.shape)}, got {tuple(mask.shape)}")
    use_unet = prior.is_inpainting if method == "auto" else method == "unet"
    if use_unet and not prior.is_inpainting:
        raise ValueError("method='unet' needs an inpainting prior (9-channel UNet); use method='blend'")
    if not use_unet and prior.is_inpainting:
        raise ValueError("method='blend' needs a plain text-to-image UNet; this prior is an inpainting prior")
    h, w = images.shape[-2:]
    _check_size(prior, h, w)
    k, b = num_images_per_prompt, images.shape[0]
    check_cameras(cameras, b)
    images_k, mask_k = images.repeat_interleave(k, 0), (mask >= 0.5).float().repeat_interleave(k, 0)
    emb = _embeddings(prior, prompts, negative_prompt, 1)
    if len(emb) not in (1, b):
        raise ValueError(f"give one prompt or {b} prompts (one per image), got {len(emb)}")
    if isinstance(prior, SamplingAnswerer):
        return prior.answer_inpaint(images, (mask >= 0.5).float(), emb.repeat(b // len(emb)),
                                    num_images_per_prompt=k, generator=generator, keep_unmasked=keep_unmasked,
                                    cameras=cameras)  # fmt: skip
    emb = emb.repeat(k * b // len(emb))
    f = prior.vae_scale_factor
    m_lat = latent_mask(mask_k, (h // f, w // f)).to(prior.device)
    shape = (images_k.shape[0], prior.latent_channels, h // f, w // f)
    noise = _noise(shape, generator, prior.device)
    prior.scheduler.set_timesteps(num_inference_steps, device=prior.device)
    init = noise * prior.scheduler.init_noise_sigma
    with torch.no_grad():
        if use_unet:
            masked = images_k * (1.0 - mask_k) + 0.5 * mask_k
            extra = InpaintInput(m_lat, prior.encode_images(masked))
            z = denoise(prior, init, emb, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                        generator=generator, inpaint=extra, cameras=cameras)
        else:
            known = prior.encode_images(images_k)
            z = denoise(prior, init, emb, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                        generator=generator, blend=(m_lat, known, noise), cameras=cameras)
    out = _decode(prior, z)
    if keep_unmasked:
        out = mask_k.to(out.device) * out + (1.0 - mask_k.to(out.device)) * images_k.to(out.device)
    return SamplingOutput(out, z)
