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
  ``kv_layers`` names the layers these act on when they differ from the query layers (MasaCtrl injects from the
  decoder's finer levels on, QNeRF records queries at all nine decoder layers: one control serves both).

:func:`soft_query_injection` is QNeRF's soft injection: one gradient step on the latent toward target queries,
``z ← z − α ∇_z Σ_l ‖q_l(z) − q̂_l‖²`` (or the scale-free Polyak step, see its ``rule``), optionally with a
ControlNet input and inside an active control that injects source keys/values, as QNeRF's MasaCtrl edit needs.

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

from scene3d.core.cameras import CameraBatch
from scene3d.priors.diffusion import ControlInput, StableDiffusionPrior
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
        on_queries, on_kv = self.name in ctrl.query_layer_set, self.name in ctrl.kv_layer_set
        if on_queries and ctrl.inject_queries is not None and self.name in ctrl.inject_queries:
            query = _match_batch(ctrl.inject_queries[self.name], batch, f"inject_queries[{self.name}]").to(query)
        if on_queries and ctrl.record_queries:
            ctrl.queries[self.name] = query if ctrl.keep_graph else query.detach()
        key, value = attn.to_k(context), attn.to_v(context)
        if on_kv and ctrl.record_kv:
            ctrl.keys[self.name], ctrl.values[self.name] = key.detach(), value.detach()
        if on_kv and ctrl.inject_kv:
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
        layers: attention module names (see :func:`self_attention_layers`) whose queries are recorded or injected;
            default: the decoder self-attention.
        record_queries: store each layer's queries in :attr:`queries` on every call.
        keep_graph: keep the recorded queries in the autograd graph (for soft injection).
        inject_queries: ``{layer: [B or B', N, C]}`` queries that replace the computed ones.
        record_kv: store keys and values in :attr:`keys` / :attr:`values`.
        inject_kv: use the stored keys and values instead of the computed ones (MasaCtrl).
        kv_layers: the layers ``record_kv`` / ``inject_kv`` act on; default: ``layers``.
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
        kv_layers: Sequence[str] | None = None,
    ) -> None:
        self.unet = unet
        self.layers = list(layers) if layers is not None else self_attention_layers(unet, "decoder")
        self.kv_layers = list(kv_layers) if kv_layers is not None else list(self.layers)
        known = {name.removesuffix(".processor") for name in unet.attn_processors}
        unknown = [name for name in [*self.layers, *self.kv_layers] if name not in known]
        if unknown:
            raise ValueError(f"layers not found among the UNet's attention modules: {unknown}")
        self.query_layer_set, self.kv_layer_set = frozenset(self.layers), frozenset(self.kv_layers)
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
        for name in dict.fromkeys([*self.layers, *self.kv_layers]):
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
    """``z − α ∇_z D`` (or the Polyak step; detached)."""
    distance: Float[Tensor, ""]
    """``D = Σ_l ‖q_l(z) − q̂_l‖²`` before the step."""
    distances: Float[Tensor, " B"]
    """``D_b``, each latent's share of ``D`` (the UNet treats the latents of a batch independently)."""
    step: Float[Tensor, " B"]
    """The multiplier of ``∇_z D`` applied to each latent (``α`` for ``rule="gradient"``)."""


SoftInjectionRule = Literal["gradient", "polyak"]


def query_distance(queries: Mapping[str, Tensor], targets: Mapping[str, Tensor], *, per_sample: bool = False) -> Tensor:
    """``Σ_l ‖q_l − q̂_l‖²`` (squared Frobenius norms summed over the target layers); ``per_sample``: one sum per
    batch element, ``[B]``."""
    total: Tensor | int = 0
    for name, target in targets.items():
        sq = (queries[name].float() - target.float()) ** 2
        total = total + (sq.flatten(1).sum(1) if per_sample else sq.sum())
    return total  # type: ignore[return-value]


def soft_query_injection(
    prior: StableDiffusionPrior,
    latents: Float[Tensor, "B C h w"],
    timestep: Tensor | int,
    embeddings: PromptEmbeddings,
    targets: Mapping[str, Float[Tensor, "B _N _C"]],
    *,
    step_size: float,
    rule: SoftInjectionRule = "gradient",
    control: ControlInput | None = None,
    cameras: CameraBatch | None = None,
    attention: AttentionControl | None = None,
) -> SoftInjection:
    """QNeRF's soft query injection: ``z ← z − α ∇_z Σ_l ‖q_l(z) − q̂_l‖²`` with one conditional UNet pass.

    Args:
        latents: ``z_t`` of the views being edited.
        timestep: the current timestep.
        embeddings: the edit prompt(s).
        targets: ``{layer: q̂_l}``, e.g. queries volume-rendered from the query NeRF, one per edited view.
        step_size: ``α`` (the paper's value was not retrieved; see ``rule``).
        rule: ``"gradient"``: the paper's step ``z − α ∇D``, whose useful ``α`` depends on the scale of ``D``
            (the UNet, the resolution, the number of layers). ``"polyak"``: ``z − α · D / ‖∇D‖² · ∇D`` (Polyak's
            step size): ``α`` is the fraction of ``D`` that the linearised step removes, the same for every UNet.
        control: ControlNet input of the pass (the queries of a ControlNet-guided edit depend on it).
        cameras: the camera of each latent (passed to ``predict_noise``).
        attention: an entered :class:`AttentionControl` on ``prior.unet`` to record the queries with, e.g. one that
            injects a source pass's keys/values (MasaCtrl); its query layers must include the targets' layers.
            Its flags are restored afterwards. Default: a control of its own on the targets' layers.
    """
    if step_size < 0:
        raise ValueError(f"step_size must be >= 0, got {step_size}")
    if rule not in ("gradient", "polyak"):
        raise ValueError(f"rule must be 'gradient' or 'polyak', got {rule!r}")
    if attention is None:
        with AttentionControl(prior.unet, list(targets)) as own:
            return soft_query_injection(prior, latents, timestep, embeddings, targets, step_size=step_size, rule=rule,
                                        control=control, cameras=cameras, attention=own)  # fmt: skip
    missing = [name for name in targets if name not in attention.query_layer_set]
    if missing:
        raise ValueError(f"attention does not control the queries of target layers {missing}")
    z = latents.detach().float().requires_grad_(True)
    saved = (attention.record_queries, attention.keep_graph, attention.inject_queries)
    attention.record_queries, attention.keep_graph, attention.inject_queries = True, True, None
    try:
        with torch.enable_grad():
            prior.predict_noise(z, timestep, embeddings, control=control, cameras=cameras)
            distances = query_distance(attention.queries, targets, per_sample=True)
            (grad,) = torch.autograd.grad(distances.sum(), z)
    finally:
        attention.record_queries, attention.keep_graph, attention.inject_queries = saved
        attention.queries = {k: v.detach() for k, v in attention.queries.items()}
    distances = distances.detach()
    if rule == "polyak":  # per latent: the batch's latents do not interact in the UNet
        step = step_size * distances / grad.flatten(1).square().sum(1).clamp_min(1e-30)
    else:
        step = torch.full_like(distances, float(step_size))
    moved = z.detach() - step.view(-1, *([1] * (z.ndim - 1))) * grad
    return SoftInjection(moved, distances.sum(), distances, step)
