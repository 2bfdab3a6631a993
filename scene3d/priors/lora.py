"""A LoRA copy of the UNet with camera conditioning: the variational score ε_ψ of VSD (ProlificDreamer) and of
DreamPolish's DSD.

ε_ψ(x_t; y, t, c) is the frozen pretrained UNet plus low-rank updates ``W x + (α/r)·B(A x)`` on every attention
projection (``to_q``, ``to_k``, ``to_v``, ``to_out.0``; Hu et al. 2022) and a camera embedding: the flattened
camera-to-world matrix ``c`` (16 numbers) goes through a 2-layer MLP and is added to the timestep embedding, the
UNet's ``class_embedding`` pathway, as ProlificDreamer and threestudio's VSD guidance do. ``B`` and the MLP's last
layer start at zero, so before training ε_ψ equals the pretrained ε_φ(x_t; y, t).

The updates are *forward hooks* on the base ``nn.Linear`` modules and live in their own module
(:class:`LoRAAdapter`): the pretrained UNet's parameters, module tree and state dict are untouched, an optimizer
over ``adapter.parameters()`` can only change the LoRA weights, and the hooks add nothing unless the adapter is
switched on (``with adapter.enabled(cameras): ...``). No peft dependency.

ε_ψ is trained with the ordinary diffusion loss on the current renders (detached), with the text dropped with
probability 0.1 as ProlificDreamer does: :meth:`VariationalScore.diffusion_loss`.

Example:
    >>> from scene3d.priors.loading import load_diffusion
    >>> sd = load_diffusion("tiny-random")
    >>> vsd_model = VariationalScore(sd, LoRAAdapter(sd.unet, rank=4))
    >>> opt = torch.optim.AdamW(vsd_model.adapter.parameters(), lr=1e-3)
    >>> loss = vsd_model.diffusion_loss(torch.randn(2, 4, 8, 8), sd.embed("a chair"), torch.eye(4).expand(2, 4, 4))
    >>> loss.backward(); opt.step()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.core.cameras import CameraBatch
from scene3d.priors.diffusion import StableDiffusionPrior
from scene3d.priors.text import PromptEmbeddings

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


class _CameraEmbedding(nn.Module):
    """``c`` (flattened 4×4) → time-embedding-sized vector; the last layer starts at zero."""

    def __init__(self, camera_dim: int, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(camera_dim, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, cameras: Tensor) -> Tensor:
        return self.mlp(cameras.to(self.mlp[0].weight.dtype))


class LoRAAdapter(nn.Module):
    """Low-rank updates of a UNet's attention projections plus a camera embedding, applied through hooks.

    Args:
        unet: the (frozen) ``UNet2DConditionModel`` to adapt; it is not modified except for the hooks.
        rank: ``r``.
        alpha: LoRA scale numerator; the update is multiplied by ``alpha / rank`` (default ``alpha = rank``).
        targets: suffixes of the ``nn.Linear`` module names to adapt.
        camera_dim: size of the camera vector (16 for a flattened 4×4); 0 disables camera conditioning.
        device: where the LoRA weights live; default the UNet's. Pass the prior's ``device`` when the UNet is
            offloaded (its parameters then sit on the CPU or the meta device).
    """

    def __init__(
        self,
        unet: nn.Module,
        rank: int = 4,
        alpha: float | None = None,
        targets: tuple[str, ...] = LORA_TARGETS,
        camera_dim: int = 16,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.rank = rank
        self.scale = (alpha if alpha is not None else rank) / rank
        self.down = nn.ModuleDict()
        self.up = nn.ModuleDict()
        self._unet = [unet]  # a list keeps the UNet out of this module's parameters and state dict
        self._active = False
        self._handles: list[Any] = []
        for name, module in unet.named_modules():
            if isinstance(module, nn.Linear) and name.endswith(targets):
                key = name.replace(".", "__")
                self.down[key] = nn.Linear(module.in_features, rank, bias=False)
                self.up[key] = nn.Linear(rank, module.out_features, bias=False)
                nn.init.kaiming_uniform_(self.down[key].weight, a=5**0.5)
                nn.init.zeros_(self.up[key].weight)
                self._handles.append(module.register_forward_hook(self._hook(key)))
        if not self.down:
            raise ValueError(f"no nn.Linear in the UNet matches targets {targets}")
        time_width = unet.time_embedding.linear_2.out_features
        self.camera = _CameraEmbedding(camera_dim, time_width) if camera_dim > 0 else None
        self.to(device=device if device is not None else next(unet.parameters()).device)

    @property
    def unet(self) -> nn.Module:
        return self._unet[0]

    def _hook(self, key: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
            if not self._active:
                return None
            down = self.down[key]
            delta = self.up[key](down(inputs[0].to(down.weight.dtype))) * self.scale
            return output + delta.to(output.dtype)

        return hook

    @contextmanager
    def enabled(self) -> Iterator[None]:
        """Switch the LoRA updates and the camera pathway on for the UNet calls inside the block."""
        unet = self.unet
        previous = unet.class_embedding
        if self.camera is not None:
            if previous is not None:
                raise ValueError("the UNet already has a class embedding; build the adapter with camera_dim=0")
            unet.class_embedding = self.camera
        self._active = True
        try:
            yield
        finally:
            self._active = False
            unet.class_embedding = previous

    def remove(self) -> None:
        """Detach the hooks from the UNet (the adapter can no longer be enabled)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class VariationalScore:
    """ε_ψ(x_t; y, t, c): the prior's UNet with a :class:`LoRAAdapter` switched on.

    Args:
        prior: the pretrained prior (ε_φ); its UNet stays frozen.
        adapter: the LoRA adapter attached to ``prior.unet``.
    """

    def __init__(self, prior: StableDiffusionPrior, adapter: LoRAAdapter) -> None:
        if adapter.unet is not prior.unet:
            raise ValueError("adapter must be attached to prior.unet")
        self.prior = prior
        self.adapter = adapter

    def _cameras(self, cameras: CameraBatch | Tensor | None, batch: int) -> Tensor | None:
        if self.adapter.camera is None:
            return None
        if isinstance(cameras, CameraBatch):
            cameras = cameras.expand_to(batch).c2w
        if cameras is None or cameras.shape[0] != batch:
            raise ValueError(f"cameras must hold {batch} camera-to-world matrices, got "
                             f"{None if cameras is None else tuple(cameras.shape)}")
        return cameras.reshape(batch, -1).float()

    def predict_noise(
        self,
        latents: Float[Tensor, "B C h w"],
        timesteps: Tensor | int,
        embeddings: PromptEmbeddings,
        cameras: CameraBatch | Float[Tensor, "B 4 4"] | None,
        guidance_scale: float = 1.0,
    ) -> Float[Tensor, "B C h w"]:
        """ε_ψ (fp32), with CFG ``guidance_scale`` (ProlificDreamer evaluates it at 1, the conditional branch)."""
        with self.adapter.enabled():
            return self.prior.predict_noise(
                latents, timesteps, embeddings, guidance_scale,
                class_labels=self._cameras(cameras, latents.shape[0]),
                cameras=cameras if isinstance(cameras, CameraBatch) else None,
            ).eps

    def diffusion_loss(
        self,
        latents: Float[Tensor, "B C h w"],
        embeddings: PromptEmbeddings,
        cameras: CameraBatch | Float[Tensor, "B 4 4"] | None,
        *,
        generator: torch.Generator | None = None,
        uncond_probability: float = 0.1,
    ) -> Float[Tensor, ""]:
        """``E_{t,ε} ||ε_ψ(√ᾱ_t x_0 + √(1−ᾱ_t) ε; y, t, c) − ε||²`` on detached render latents ``x_0``.

        ``t`` is uniform over all training timesteps; each sample's prompt is replaced by its negative (empty)
        prompt with probability ``uncond_probability`` so ε_ψ also learns the unconditional branch. The error is
        measured on ε whatever the scheduler's parametrization (for v-prediction this reweights the loss over t).
        """
        x0 = latents.detach().float().to(self.prior.device)
        b = x0.shape[0]
        gen_device = generator.device if generator is not None else torch.device("cpu")
        t = torch.randint(0, self.prior.num_train_timesteps, (b,), generator=generator, device=gen_device)
        noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0.device)
        drop = (torch.rand(b, generator=generator, device=gen_device) < uncond_probability).to(x0.device)
        cond = embeddings.cond.expand(b, -1, -1).to(x0.device)
        uncond = embeddings.uncond.expand(b, -1, -1).to(x0.device)
        context = PromptEmbeddings(torch.where(drop.view(-1, 1, 1), uncond, cond), uncond)
        t = t.to(x0.device)
        x_t = self.prior.add_noise(x0, noise, t)
        eps = self.predict_noise(x_t, t, context, cameras, guidance_scale=1.0)
        return F.mse_loss(eps, noise)
