"""Prompt embeddings for classifier-free guidance, with an on-disk cache.

Encoding a prompt with SD's CLIP text encoder costs a forward pass of a 123M (SD 1.5) or 340M (SD 2) parameter
transformer; score distillation asks for the same prompts every step and every run. :class:`TextEmbedder` keeps
each result in memory and on disk, keyed by ``sha256(model id, revision, prompt, negative prompt, max length)``,
as threestudio's prompt processor does (its key is md5(model, prompt)); the revision in the key is the snapshot's
commit hash (or the local folder), so a moved branch or a different local copy never serves stale embeddings.

Example:
    >>> emb = embedder(["a red chair"], negative_prompts="blurry")   # doctest: +SKIP
    >>> emb.cond.shape, emb.uncond.shape                             # doctest: +SKIP
    (torch.Size([1, 77, 768]), torch.Size([1, 77, 768]))
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.core.checkpoint import atomic_torch_save, load_checkpoint
from scene3d.core.errors import RunFolderError

logger = logging.getLogger(__name__)


@dataclass
class PromptEmbeddings:
    """Text-encoder hidden states for ``B`` prompts and their negative (unconditional) prompts."""

    cond: Float[Tensor, "B L D"]
    """Embeddings of the prompts (``L`` tokens, width ``D``)."""
    uncond: Float[Tensor, "B L D"]
    """Embeddings of the negative prompts (the empty prompt by default): the CFG unconditional branch."""

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> PromptEmbeddings:
        return PromptEmbeddings(self.cond.to(device=device, dtype=dtype), self.uncond.to(device=device, dtype=dtype))

    def repeat(self, n: int) -> PromptEmbeddings:
        """Each prompt repeated ``n`` times (batch ``B·n``, prompt-major), e.g. for several samples per prompt."""
        return PromptEmbeddings(self.cond.repeat_interleave(n, 0), self.uncond.repeat_interleave(n, 0))

    def __len__(self) -> int:
        return int(self.cond.shape[0])


def cache_key(model_id: str, revision: str, prompt: str, negative_prompt: str, max_length: int) -> str:
    """Hex sha256 of everything that determines an embedding."""
    payload = json.dumps([model_id, revision, prompt, negative_prompt, max_length], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _as_list(value: str | list[str], n: int, name: str) -> list[str]:
    if isinstance(value, str):
        return [value] * n
    if len(value) != n:
        raise ValueError(f"{name} must be one string or {n} strings (one per prompt), got {len(value)}")
    return list(value)


class TextEmbedder:
    """Encodes prompts with a CLIP text encoder, caching results in memory and on disk.

    Args:
        text_encoder: a transformers ``CLIPTextModel`` (its ``last_hidden_state`` is the UNet's cross-attention
            context, as in diffusers' SD pipelines).
        tokenizer: the matching ``CLIPTokenizer``; prompts are padded/truncated to ``tokenizer.model_max_length``.
        model_id: identifies the weights in cache keys (the HF id, or ``tiny-random``).
        revision: the resolved revision (commit hash, ``local:<folder>``, or the tiny seed).
        cache_dir: folder for ``<key>.pt`` files; ``None`` keeps the cache in memory only.

    Attributes:
        hits: prompts served from the cache (memory or disk) so far.
        misses: prompts that ran the text encoder.
    """

    def __init__(
        self,
        text_encoder: torch.nn.Module,
        tokenizer: Any,
        *,
        model_id: str,
        revision: str,
        cache_dir: Path | None = None,
    ) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.revision = revision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, tuple[Tensor, Tensor]] = {}
        self.hits = 0
        self.misses = 0

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def encode(self, prompts: list[str]) -> Float[Tensor, "B L D"]:
        """Run the text encoder (no cache) on ``prompts``; returns fp32 hidden states on the CPU."""
        device = next(self.text_encoder.parameters()).device
        ids = self.tokenizer(
            prompts, padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        with torch.no_grad():
            hidden = self.text_encoder(ids)[0]
        return hidden.float().cpu()

    def _load(self, key: str) -> tuple[Tensor, Tensor] | None:
        if key in self._memory:
            return self._memory[key]
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            state = load_checkpoint(path)
        except RunFolderError as err:  # a torn or foreign file: recompute and overwrite it
            logger.warning("ignoring unreadable text-embedding cache file %s (%s)", path, err.problem)
            return None
        entry = (state["cond"], state["uncond"])
        self._memory[key] = entry
        return entry

    def _store(self, key: str, cond: Tensor, uncond: Tensor, prompt: str, negative: str) -> None:
        self._memory[key] = (cond, uncond)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(
                {"cond": cond, "uncond": uncond, "model_id": self.model_id, "revision": self.revision,
                 "prompt": prompt, "negative_prompt": negative},
                self.cache_dir / f"{key}.pt",
            )

    def __call__(self, prompts: str | list[str], negative_prompts: str | list[str] = "") -> PromptEmbeddings:
        """Embeddings of ``prompts`` (and ``negative_prompts``, one string for all or one per prompt).

        Returns fp32 tensors on the CPU; move them with :meth:`PromptEmbeddings.to`.
        """
        prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompt_list:
            raise ValueError("prompts must hold at least one prompt, got an empty list")
        negatives = _as_list(negative_prompts, len(prompt_list), "negative_prompts")
        keys = [cache_key(self.model_id, self.revision, p, n, self.max_length) for p, n in zip(prompt_list, negatives)]
        found = [self._load(k) for k in keys]
        todo = [i for i, entry in enumerate(found) if entry is None]
        self.hits += len(prompt_list) - len(todo)
        self.misses += len(todo)
        if todo:
            # one encoder pass for all missing prompts and their negatives
            hidden = self.encode([prompt_list[i] for i in todo] + [negatives[i] for i in todo])
            for j, i in enumerate(todo):
                cond, uncond = hidden[j : j + 1].clone(), hidden[len(todo) + j : len(todo) + j + 1].clone()
                self._store(keys[i], cond, uncond, prompt_list[i], negatives[i])
                found[i] = (cond, uncond)
        return PromptEmbeddings(
            cond=torch.cat([entry[0] for entry in found if entry is not None]),
            uncond=torch.cat([entry[1] for entry in found if entry is not None]),
        )

    def clear_memory(self) -> None:
        """Forget the in-memory entries (the disk cache stays)."""
        self._memory.clear()
