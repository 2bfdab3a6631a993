"""The ``groundtruth:`` twin of VSD's / DSD's variational score ε_ψ (a LoRA copy of the UNet on a real prior).

ε_ψ models the distribution of the current renders at camera c. A LoRA learns it from the renders through the
diffusion loss; the twin holds it exactly. It is the ideal variational model for one particle per camera: the last
render ``z_c`` passed to :meth:`diffusion_loss` at that camera, with ``ε_ψ(x_t; c) = (x_t − √ᾱ z_c)/√(1 − ᾱ)``.
At a camera it has not seen, it is the pretrained ε_φ, as a zero-initialised LoRA is. Its training loss is
therefore 0. VSD with it is SDS with the noise replaced by the exact noise of the last render.

Build it with :func:`scene3d.methods.common.priors.variational_score`, which gives a LoRA
:class:`~scene3d.priors.lora.VariationalScore` for real and ``tiny-random`` priors.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.core.cameras import CameraBatch
from scene3d.priors.diffusion import StableDiffusionPrior
from scene3d.priors.lora import VariationalScore
from scene3d.priors.text import PromptEmbeddings

MEMORY = 4096
"""Renders kept (one per camera, the newest)."""


class OracleAdapter(nn.Module):
    """Stands where a :class:`~scene3d.priors.lora.LoRAAdapter` stands: ``parameters()`` for an optimizer (one
    parameter that never receives a gradient), ``enabled()`` and ``remove()`` doing nothing."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros((), device=device))
        self.camera = None

    @contextmanager
    def enabled(self) -> Iterator[None]:
        yield

    def remove(self) -> None:
        """Nothing to detach."""


def _keys(cameras: CameraBatch | Tensor | None, batch: int) -> list[str]:
    if cameras is None:
        raise ValueError("a groundtruth variational score is per camera: pass the cameras of the renders")
    c2w = (cameras.expand_to(batch).c2w if isinstance(cameras, CameraBatch) else cameras).detach().float().cpu()
    if c2w.shape[0] != batch:
        raise ValueError(f"cameras must hold {batch} camera-to-world matrices, got {tuple(c2w.shape)}")
    return [hashlib.sha1(m.numpy().tobytes()).hexdigest() for m in c2w]


class GroundTruthVariationalScore(VariationalScore):
    """ε_ψ of a ``groundtruth:`` prior: the exact score of the last render at each camera (module docstring)."""

    def __init__(self, prior: StableDiffusionPrior) -> None:  # noqa: D107 (no LoRA adapter to attach)
        self.prior = prior
        self.adapter = OracleAdapter(prior.device)  # type: ignore[assignment]
        self._renders: OrderedDict[str, Tensor] = OrderedDict()

    def predict_noise(
        self,
        latents: Float[Tensor, "B C h w"],
        timesteps: Tensor | int,
        embeddings: PromptEmbeddings,
        cameras: CameraBatch | Float[Tensor, "B 4 4"] | None,
        guidance_scale: float = 1.0,
    ) -> Float[Tensor, "B C h w"]:
        """ε_ψ: from the camera's last render where there is one, else the pretrained ε_φ (at ``guidance_scale``)."""
        b = latents.shape[0]
        keys = _keys(cameras, b)
        batch = cameras if isinstance(cameras, CameraBatch) else None
        eps = self.prior.predict_noise(latents, timesteps, embeddings, guidance_scale, cameras=batch).eps
        t = torch.as_tensor(timesteps, device=eps.device).long()
        t = t.expand(b) if t.ndim == 0 else t
        a = self.prior.alphas_cumprod(eps.device)[t].view(-1, 1, 1, 1)
        x_t = latents.to(eps.device).float()
        for i, key in enumerate(keys):
            render = self._renders.get(key)
            if render is not None and render.shape == x_t.shape[1:]:
                eps[i] = (x_t[i] - a[i].sqrt() * render.to(eps.device)) / (1.0 - a[i]).sqrt()
        return eps

    def diffusion_loss(
        self,
        latents: Float[Tensor, "B C h w"],
        embeddings: PromptEmbeddings,
        cameras: CameraBatch | Float[Tensor, "B 4 4"] | None,
        *,
        generator: torch.Generator | None = None,
        uncond_probability: float = 0.1,
    ) -> Float[Tensor, ""]:
        """Remember each render at its camera; the ideal model's loss, 0 (with a graph, so ``backward()`` works)."""
        for key, render in zip(_keys(cameras, latents.shape[0]), latents.detach().float(), strict=True):
            self._renders[key] = render.cpu()
            self._renders.move_to_end(key)
        while len(self._renders) > MEMORY:
            self._renders.popitem(last=False)
        return self.adapter.unused * 0.0
