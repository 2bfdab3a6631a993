"""Self-attention control in a diffusers UNet: record queries, inject queries (hard or soft), inject keys/values.

QNeRF (Patashnik et al. 2024) makes multi-view edits consistent through the *queries* of the UNet decoder's
self-attention layers (SD: 9 layers at 16, 32, 64 px with 320/640/1280 channels). MasaCtrl (Cao et al. 2023)
keeps a source image's appearance by letting the edit's self-attention queries attend to the *source* keys and
values. :class:`AttentionControl` installs one processor (:class:`ControlledAttnProcessor`, the computation of
diffusers' ``AttnProcessor2_0`` with hooks) on chosen layers and removes it afterwards:

* ``record_queries``: keep ``Q = to_q(h)``, ``[B, N, C]`` per layer (``N = h·w`` tokens of that layer);
* ``inject_queries``: replace ``Q`` by given tensors (hard injection);
* ``record_kv`` / ``inject_kv``: keep ``K, V`` of a source pass, then use them in a target pass (MasaCtrl's
  mutual self-attention ``softmax(Q_tgt K_srcᵀ/√d) V_src``); run both passes at the same timestep and batch layout.

:func:`soft_query_injection` is QNeRF's soft injection: one gradient step on the latent toward target queries,
``z ← z − α ∇_z Σ_l ‖q_l(z) − q̂_l‖²``.

Batches: with classifier-free guidance the UNet batch is ``[uncond; cond]`` (2B); recorded tensors hold the whole
UNet batch, and injected tensors whose batch divides it are repeated over it (a ``[B, N, C]`` target serves both
branches).

Example:
    >>> from scene3d.priors.loading import load_diffusion
    >>> sd = load_diffusion("tiny-random")
    >>> layers = self_attention_layers(sd.unet, "decoder")
    >>> with AttentionControl(sd.unet, layers, record_queries=True) as ctrl:
    ...     _ = sd.predict_noise(torch.randn(1, 4, 8, 8), 500, sd.embed("a chair"))
    >>> [tuple(ctrl.queries[name].shape) for name in layers]
    [(1, 16, 16), (1, 16, 16), (1, 64, 8), (1, 64, 8)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.priors.diffusion import StableDiffusionPrior
from scene3d.priors.text import PromptEmbeddings


def self_attention_layers(unet: nn.Module, part: Literal["decoder", "encoder", "mid", "all"] = "decoder") -> list[str]:
    """Names of the self-attention (``attn1``) modules of ``unet``, in forward order within ``part``."""
    prefix = {"decoder": ("up_blocks.",), "encoder": ("down_blocks.",), "mid": ("mid_block.",),
              "all": ("down_blocks.", "mid_block.", "up_blocks.")}[part]
    names = [name.removesuffix(".processor") for name in unet.attn_processors]
    return [n for n in names if n.endswith(".attn1") and n.startswith(prefix)]


def tokens_to_map(tokens: Float[Tensor, "B N C"], height: int, width: int) -> Float[Tensor, "B C h w"]:
    """Reshape a layer's ``[B, N, C]`` tokens to ``[B, C, h, w]`` given the latent (or image) size ``height × width``
    whose aspect ratio the layer keeps (``h·w = N``, ``h/w = height/width``)."""
    n = tokens.shape[1]
    factor = math.sqrt(height * width / n)
    h, w = round(height / factor), round(width / factor)
    if h * w != n:
        raise ValueError(f"{n} tokens do not form a grid with the aspect of {height}x{width}")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _match_batch(x: Tensor, batch: int, what: str) -> Tensor:
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ValueError(f"{what} has batch {x.shape[0]}, which does not divide the UNet batch {batch}")
    return x.repeat(batch // x.shape[0], *([1] * (x.ndim - 1)))


class ControlledAttnProcessor:
    """``AttnProcessor2_0``'s computation with the record/inject hooks of one :class:`AttentionControl` layer."""

    def __init__(self, control: AttentionControl, name: str) -> None:
        self.control = control
        self.name = name

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        ctrl = self.control
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b4, c4, h4, w4 = hidden_states.shape
            hidden_states = hidden_states.view(b4, c4, h4 * w4).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, seq = hidden_states.shape[0], context.shape[1]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, seq, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        elif encoder_hidden_states is None:
            context = hidden_states

        query = attn.to_q(hidden_states)
        if ctrl.inject_queries is not None and self.name in ctrl.inject_queries:
            query = _match_batch(ctrl.inject_queries[self.name], batch, f"inject_queries[{self.name}]").to(query)
        if ctrl.record_queries:
            ctrl.queries[self.name] = query if ctrl.keep_graph else query.detach()
        key, value = attn.to_k(context), attn.to_v(context)
        if ctrl.record_kv:
            ctrl.keys[self.name], ctrl.values[self.name] = key.detach(), value.detach()
        if ctrl.inject_kv:
            if self.name not in ctrl.keys:
                raise ValueError(f"inject_kv: no keys/values recorded for layer {self.name}; run a source pass first")
            key = _match_batch(ctrl.keys[self.name], batch, "recorded keys").to(key)
            value = _match_batch(ctrl.values[self.name], batch, "recorded values").to(value)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b4, c4, h4, w4)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class AttentionControl:
    """Context manager that installs :class:`ControlledAttnProcessor` on ``layers`` of ``unet`` and restores the
    previous processors on exit. The flags can be changed between UNet calls inside the block.

    Args:
        unet: a diffusers ``UNet2DConditionModel``.
        layers: attention module names (see :func:`self_attention_layers`); default: the decoder self-attention.
        record_queries: store each layer's queries in :attr:`queries` on every call.
        keep_graph: keep the recorded queries in the autograd graph (for soft injection).
        inject_queries: ``{layer: [B or B', N, C]}`` queries that replace the computed ones.
        record_kv: store keys and values in :attr:`keys` / :attr:`values`.
        inject_kv: use the stored keys and values instead of the computed ones (MasaCtrl).
    """

    def __init__(
        self,
        unet: nn.Module,
        layers: Sequence[str] | None = None,
        *,
        record_queries: bool = False,
        keep_graph: bool = False,
        inject_queries: Mapping[str, Tensor] | None = None,
        record_kv: bool = False,
        inject_kv: bool = False,
    ) -> None:
        self.unet = unet
        self.layers = list(layers) if layers is not None else self_attention_layers(unet, "decoder")
        known = {name.removesuffix(".processor") for name in unet.attn_processors}
        unknown = [name for name in self.layers if name not in known]
        if unknown:
            raise ValueError(f"layers not found among the UNet's attention modules: {unknown}")
        self.record_queries = record_queries
        self.keep_graph = keep_graph
        self.inject_queries = dict(inject_queries) if inject_queries is not None else None
        self.record_kv = record_kv
        self.inject_kv = inject_kv
        self.queries: dict[str, Tensor] = {}
        self.keys: dict[str, Tensor] = {}
        self.values: dict[str, Tensor] = {}
        self._saved: dict[str, Any] | None = None

    def __enter__(self) -> AttentionControl:
        self._saved = dict(self.unet.attn_processors)
        processors = dict(self._saved)
        for name in self.layers:
            processors[name + ".processor"] = ControlledAttnProcessor(self, name)
        self.unet.set_attn_processor(processors)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            self.unet.set_attn_processor(self._saved)
            self._saved = None


@dataclass
class SoftInjection:
    latents: Float[Tensor, "B C h w"]
    """``z − α ∇_z D`` (detached)."""
    distance: Float[Tensor, ""]
    """``D = Σ_l ‖q_l(z) − q̂_l‖²`` before the step."""


def query_distance(queries: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
    """``Σ_l ‖q_l − q̂_l‖²`` (squared Frobenius norms summed over the target layers)."""
    return sum(((queries[name].float() - target.float()) ** 2).sum() for name, target in targets.items())  # type: ignore[return-value]


def soft_query_injection(
    prior: StableDiffusionPrior,
    latents: Float[Tensor, "B C h w"],
    timestep: Tensor | int,
    embeddings: PromptEmbeddings,
    targets: Mapping[str, Float[Tensor, "B _N _C"]],
    *,
    step_size: float,
) -> SoftInjection:
    """QNeRF's soft query injection: ``z ← z − α ∇_z Σ_l ‖q_l(z) − q̂_l‖²`` with one conditional UNet pass.

    Args:
        latents: ``z_t`` of the views being edited.
        timestep: the current timestep.
        embeddings: the edit prompt(s).
        targets: ``{layer: q̂_l}``, e.g. queries volume-rendered from the query NeRF, one per edited view.
        step_size: ``α`` (the paper's value was not retrieved; tune per scale of ``D``).
    """
    z = latents.detach().float().requires_grad_(True)
    with torch.enable_grad(), AttentionControl(prior.unet, list(targets), record_queries=True, keep_graph=True) as ctrl:
        prior.predict_noise(z, timestep, embeddings)
        distance = query_distance(ctrl.queries, targets)
        (grad,) = torch.autograd.grad(distance, z)
    return SoftInjection((z - step_size * grad).detach(), distance.detach())
