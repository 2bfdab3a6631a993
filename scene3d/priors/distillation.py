"""Score distillation: SDS (DreamFusion), VSD (ProlificDreamer) and DSD (DreamPolish), as gradients on latents.

Each function takes latents ``z = E(g(θ))`` that carry the graph back to the 3D parameters θ, noises a *detached*
copy to ``x_t = √ᾱ_t z + √(1−ᾱ_t) ε`` at a sampled timestep, and forms a per-pixel gradient ``G`` without
back-propagating through the UNet. The returned ``loss`` is the stop-gradient surrogate

    loss = ½ Σ ‖z − sg(z − G)‖² / B        ⇒        ∂loss/∂z = G / B

so ``loss.backward()`` delivers ``G`` (averaged over the batch) to θ, with optimizers and grad scalers working as
usual (threestudio's formulation).

* **SDS** (Poole et al. 2023, Eq. 3): ``G = w(t) (ε̂_φ(x_t; y, t) − ε)`` with CFG ``ε̂ = ε_∅ + s (ε_y − ε_∅)``.
* **VSD** (Wang et al. 2023, ProlificDreamer): ``G = w(t) (ε̂_φ(x_t; y, t) − ε_ψ(x_t; y, t, c))``, ε_ψ a LoRA
  copy trained on the renders (:mod:`scene3d.priors.lora`).
* **DSD** (Cheng et al. 2024, DreamPolish, arXiv 2411.01602): see :func:`dsd` for the form used and what is
  inferred.

Timesteps come from a :class:`TimestepSchedule` (range, annealing); ``w(t)`` from :func:`timestep_weight`.

Example:
    >>> from scene3d.priors.loading import load_diffusion
    >>> sd = load_diffusion("tiny-random")
    >>> z = sd.encode_images(torch.rand(1, 3, 16, 16, requires_grad=True))
    >>> out = sds(sd, z, sd.embed("a chair"), guidance_scale=100.0, generator=torch.Generator().manual_seed(0))
    >>> out.loss.backward()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scene3d.core.cameras import CameraBatch
from scene3d.priors.diffusion import ControlInput, StableDiffusionPrior, check_cameras
from scene3d.priors.lora import VariationalScore
from scene3d.priors.text import PromptEmbeddings

Weighting = Literal["sds", "uniform", "fantasia3d"]


@dataclass
class TimestepSchedule:
    """Which diffusion timesteps score distillation samples, as fractions of ``T`` (1000 for SD).

    ``t ~ U[min_ratio·T, hi(step)·T]`` where the upper bound ``hi`` anneals from ``max_ratio`` to
    ``max_ratio_end`` over ``anneal_steps`` optimisation steps:

    * ``none``: ``hi = max_ratio`` (DreamFusion: U[0.02, 0.98]);
    * ``linear``: linear decay;
    * ``sqrt``: ``hi = max_ratio − (max_ratio − max_ratio_end)·√(step/anneal_steps)`` (fast early decay, as
      threestudio's ``sqrt_anneal``);
    * ``step``: ``max_ratio`` until ``anneal_steps``, then ``max_ratio_end`` (ProlificDreamer: 0.98 → 0.5 after
      5,000 steps).
    """

    min_ratio: float = 0.02
    """Lower bound of ``t / T``."""
    max_ratio: float = 0.98
    """Upper bound of ``t / T`` at step 0."""
    anneal: Literal["none", "linear", "sqrt", "step"] = "none"
    """How the upper bound moves with the optimisation step."""
    max_ratio_end: float = 0.5
    """Upper bound once annealed."""
    anneal_steps: int = 5000
    """Steps over which (or after which, for ``step``) the upper bound anneals."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_ratio <= min(self.max_ratio, self.max_ratio_end) or max(self.max_ratio, self.max_ratio_end) > 1.0:
            raise ValueError(
                f"need 0 <= min_ratio <= max_ratio, max_ratio_end <= 1, got {self.min_ratio}, {self.max_ratio}, "
                f"{self.max_ratio_end}"
            )
        if self.anneal_steps <= 0:
            raise ValueError(f"anneal_steps must be positive, got {self.anneal_steps}")

    def upper(self, step: int) -> float:
        """The upper bound ``hi(step)`` as a fraction of ``T``."""
        progress = min(max(step, 0) / self.anneal_steps, 1.0)
        drop = self.max_ratio - self.max_ratio_end
        if self.anneal == "linear":
            return self.max_ratio - drop * progress
        if self.anneal == "sqrt":
            return self.max_ratio - drop * progress**0.5
        if self.anneal == "step":
            return self.max_ratio if step < self.anneal_steps else self.max_ratio_end
        return self.max_ratio

    def bounds(self, step: int, num_train_timesteps: int) -> tuple[int, int]:
        """Inclusive integer range ``[lo, hi]`` of timesteps at ``step``."""
        lo = int(round(self.min_ratio * (num_train_timesteps - 1)))
        hi = int(round(self.upper(step) * (num_train_timesteps - 1)))
        return lo, max(lo, hi)

    def sample(
        self, step: int, batch: int, num_train_timesteps: int, generator: torch.Generator | None = None
    ) -> Int[Tensor, " B"]:
        """``batch`` timesteps drawn uniformly from :meth:`bounds` (on the generator's device)."""
        lo, hi = self.bounds(step, num_train_timesteps)
        device = generator.device if generator is not None else torch.device("cpu")
        return torch.randint(lo, hi + 1, (batch,), generator=generator, device=device)


def timestep_weight(alphas_cumprod_t: Float[Tensor, " B"], kind: Weighting = "sds") -> Float[Tensor, " B"]:
    """``w(t)``: ``sds`` = 1 − ᾱ_t (DreamFusion's σ_t²), ``uniform`` = 1, ``fantasia3d`` = √ᾱ_t (1 − ᾱ_t)."""
    if kind == "sds":
        return 1.0 - alphas_cumprod_t
    if kind == "uniform":
        return torch.ones_like(alphas_cumprod_t)
    if kind == "fantasia3d":
        return alphas_cumprod_t.sqrt() * (1.0 - alphas_cumprod_t)
    raise ValueError(f"weighting must be one of 'sds', 'uniform', 'fantasia3d', got '{kind}'")


@dataclass
class DistillationOutput:
    """One score-distillation evaluation."""

    loss: Float[Tensor, ""]
    """Surrogate whose gradient w.r.t. the latents is ``grad / B``."""
    grad: Float[Tensor, "B C h w"]
    """``G``, the per-sample gradient on the latents (detached, fp32)."""
    timesteps: Int[Tensor, " B"]
    noise: Float[Tensor, "B C h w"]
    """ε added to the latents."""
    noisy_latents: Float[Tensor, "B C h w"]
    """``x_t``."""
    eps_pred: Float[Tensor, "B C h w"]
    """The guided pretrained prediction ε̂_φ(x_t; y, t)."""


@dataclass
class _Noised:
    t: Tensor
    noise: Tensor
    x_t: Tensor
    w: Tensor


def _noise_latents(
    prior: StableDiffusionPrior,
    latents: Tensor,
    timesteps: Tensor | int | None,
    noise: Tensor | None,
    schedule: TimestepSchedule | None,
    step: int,
    weighting: Weighting,
    generator: torch.Generator | None,
) -> _Noised:
    b = latents.shape[0]
    device = prior.device
    if timesteps is None:
        timesteps = (schedule or TimestepSchedule()).sample(step, b, prior.num_train_timesteps, generator)
    t = torch.as_tensor(timesteps).long().to(device).expand(b)
    if noise is None:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(latents.shape, generator=generator, device=gen_device, dtype=torch.float32)
    noise = noise.to(device, torch.float32)
    x_t = prior.add_noise(latents.detach().float().to(device), noise, t)
    w = timestep_weight(prior.alphas_cumprod(device)[t], weighting).view(-1, 1, 1, 1)
    return _Noised(t, noise, x_t, w)


def _output(latents: Tensor, grad: Tensor, noised: _Noised, eps_pred: Tensor, grad_clip: float | None) -> DistillationOutput:
    grad = torch.nan_to_num(grad.detach())
    if grad_clip is not None:
        grad = grad.clamp(-grad_clip, grad_clip)
    z = latents.float()
    target = (z - grad.to(z.device)).detach()
    loss = 0.5 * ((z - target) ** 2).sum() / z.shape[0]
    return DistillationOutput(loss, grad, noised.t, noised.noise, noised.x_t, eps_pred.detach())


def sds(
    prior: StableDiffusionPrior,
    latents: Float[Tensor, "B C h w"],
    embeddings: PromptEmbeddings,
    *,
    guidance_scale: float = 100.0,
    timesteps: Int[Tensor, " B"] | int | None = None,
    noise: Float[Tensor, "B C h w"] | None = None,
    schedule: TimestepSchedule | None = None,
    step: int = 0,
    weighting: Weighting = "sds",
    generator: torch.Generator | None = None,
    grad_clip: float | None = None,
    control: ControlInput | None = None,
    cameras: CameraBatch | None = None,
) -> DistillationOutput:
    """Score Distillation Sampling (DreamFusion, Poole et al. 2023, Eq. 3)::

        ∇_θ L_SDS = E_{t,ε}[ w(t) (ε̂_φ(x_t; y, t) − ε) ∂z/∂θ ],   ε̂_φ = ε_φ(x_t; ∅) + s (ε_φ(x_t; y) − ε_φ(x_t; ∅))

    Args:
        latents: ``[B, C, h, w]`` latents of the renders, carrying the graph to θ.
        embeddings: 1 or ``B`` prompts (view-dependent prompts: one per render).
        guidance_scale: CFG scale ``s`` (DreamFusion uses 100).
        timesteps: fixed timesteps (one, or ``[B]``); otherwise drawn from ``schedule`` at ``step``.
        noise: fixed ε; otherwise drawn from ``generator``.
        weighting: ``w(t)`` (see :func:`timestep_weight`).
        grad_clip: clamp ``G`` elementwise (threestudio's ``grad_clip``).
        control: ControlNet conditioning for the pretrained prediction.
        cameras: the camera of each render (passed to :meth:`StableDiffusionPrior.predict_noise`; real models
            ignore them, the ``groundtruth:`` twin's x̂₀ is its scene seen from them).
    """
    check_cameras(cameras, latents.shape[0])
    noised = _noise_latents(prior, latents, timesteps, noise, schedule, step, weighting, generator)
    with torch.no_grad():
        eps = prior.predict_noise(noised.x_t, noised.t, embeddings, guidance_scale, control=control, cameras=cameras).eps
    return _output(latents, noised.w * (eps - noised.noise), noised, eps, grad_clip)


def vsd(
    prior: StableDiffusionPrior,
    variational: VariationalScore,
    latents: Float[Tensor, "B C h w"],
    embeddings: PromptEmbeddings,
    cameras: CameraBatch | Float[Tensor, "B 4 4"] | None,
    *,
    guidance_scale: float = 7.5,
    lora_guidance_scale: float = 1.0,
    timesteps: Int[Tensor, " B"] | int | None = None,
    noise: Float[Tensor, "B C h w"] | None = None,
    schedule: TimestepSchedule | None = None,
    step: int = 0,
    weighting: Weighting = "sds",
    generator: torch.Generator | None = None,
    grad_clip: float | None = None,
) -> DistillationOutput:
    """Variational Score Distillation (ProlificDreamer, Wang et al. 2023)::

        ∇_θ L_VSD = E_{t,ε,c}[ w(t) (ε̂_φ(x_t; y, t) − ε_ψ(x_t; y, t, c)) ∂z/∂θ ]

    ε_ψ is ``variational`` (LoRA + camera ``c``), evaluated with ``lora_guidance_scale`` (1 in ProlificDreamer).
    Train it between steps with ``variational.diffusion_loss(latents.detach(), embeddings, cameras)``.

    ``cameras``: a :class:`~scene3d.core.cameras.CameraBatch` (its ``c2w`` conditions ε_ψ and the whole batch goes
    to the prior, as in :func:`sds`) or, as before, bare ``[B, 4, 4]`` camera-to-world matrices.
    """
    batch = cameras if isinstance(cameras, CameraBatch) else None
    check_cameras(batch, latents.shape[0])
    noised = _noise_latents(prior, latents, timesteps, noise, schedule, step, weighting, generator)
    with torch.no_grad():
        eps = prior.predict_noise(noised.x_t, noised.t, embeddings, guidance_scale, cameras=batch).eps
        eps_var = variational.predict_noise(noised.x_t, noised.t, embeddings, cameras, lora_guidance_scale)
    return _output(latents, noised.w * (eps - eps_var), noised, eps, grad_clip)


def dsd(
    prior: StableDiffusionPrior,
    variational: VariationalScore | None,
    latents: Float[Tensor, "B C h w"],
    embeddings: PromptEmbeddings,
    cameras: CameraBatch | Float[Tensor, "B 4 4"] | None,
    *,
    cfg_weight: float = 7.5,
    variational_weight: float = 1.0,
    timesteps: Int[Tensor, " B"] | int | None = None,
    noise: Float[Tensor, "B C h w"] | None = None,
    schedule: TimestepSchedule | None = None,
    step: int = 0,
    weighting: Weighting = "sds",
    generator: torch.Generator | None = None,
    grad_clip: float | None = None,
) -> DistillationOutput:
    """Domain Score Distillation (DreamPolish, Cheng et al. 2024, arXiv 2411.01602), **inferred form**::

        G = w(t) [ ε_φ(x_t; y) + λ_cfg (ε_φ(x_t; y) − ε_φ(x_t; ∅)) − ((1 − λ_var) ε + λ_var ε_ψ(x_t; y, c)) ]

    What is known and what is inferred. The paper's DSD equation itself (and its number) could not be retrieved
    here: no official code exists, and only the abstract and figure captions were readable. The abstract says DSD
    guides the renders toward a domain drawing on both classifier-free guidance and a variational distribution,
    "both imperative domains", without "excessively high CFG weights"; the Fig. 3 caption says "(a) vanilla SDS
    only has guidance on zero-mean noise; (b) VSD and BSD use a variational domain; (c) DSD provides guidance
    directions toward the unconditional image domain and the variational domain". The form above is our reading:

    * the *unconditional-image-domain* direction is the CFG term ``λ_cfg (ε_y − ε_∅)`` with a moderate weight
      (``λ_cfg = s − 1`` reproduces CFG scale ``s``);
    * the *variational-domain* direction replaces SDS's zero-mean-noise reference ε by the LoRA score ε_ψ, in
      proportion ``λ_var`` (``ε_ψ`` is trained exactly as in VSD, camera-conditioned).

    Hence ``λ_var = 0`` is SDS with CFG scale ``1 + λ_cfg`` (ε_ψ is not evaluated, ``variational`` may be
    ``None``) and ``λ_var = 1`` is VSD with the same CFG. ``λ_var`` and ``λ_cfg`` defaults (1, 7.5) are ours.

    Args:
        variational: ε_ψ; required unless ``variational_weight == 0``.
        cfg_weight: ``λ_cfg``.
        variational_weight: ``λ_var`` in ``[0, 1]``.
        cameras: a :class:`~scene3d.core.cameras.CameraBatch` or bare ``[B, 4, 4]`` matrices (see :func:`vsd`).
    """
    if not 0.0 <= variational_weight <= 1.0:
        raise ValueError(f"variational_weight must be in [0, 1], got {variational_weight}")
    if variational_weight > 0 and variational is None:
        raise ValueError("variational_weight > 0 needs a VariationalScore (the LoRA model ε_ψ)")
    batch = cameras if isinstance(cameras, CameraBatch) else None
    check_cameras(batch, latents.shape[0])
    noised = _noise_latents(prior, latents, timesteps, noise, schedule, step, weighting, generator)
    with torch.no_grad():
        pred = prior.predict_noise(noised.x_t, noised.t, embeddings, 1.0 + cfg_weight, cameras=batch)
        reference = noised.noise
        if variational_weight > 0:
            eps_var = variational.predict_noise(noised.x_t, noised.t, embeddings, cameras)  # type: ignore[union-attr]
            reference = (1.0 - variational_weight) * noised.noise + variational_weight * eps_var
    # ε_y + λ_cfg (ε_y − ε_∅) is CFG at scale 1 + λ_cfg, which predict_noise already formed as pred.eps
    return _output(latents, noised.w * (pred.eps - reference), noised, pred.eps, grad_clip)
