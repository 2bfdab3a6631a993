"""The text-embedding cache: keyed by model, revision, prompt and negative prompt; memory and disk."""

from __future__ import annotations

from pathlib import Path

import torch

from scene3d.priors import StableDiffusionPrior, TextEmbedder


def _embedder(sd: StableDiffusionPrior, cache: Path, model_id: str = "tiny-random", revision: str = "seed0") -> TextEmbedder:
    return TextEmbedder(sd.text_encoder, sd.tokenizer, model_id=model_id, revision=revision, cache_dir=cache)


def test_second_call_hits_and_changed_prompt_misses(sd: StableDiffusionPrior, tmp_path: Path):
    emb = _embedder(sd, tmp_path)
    first = emb(["a red chair", "a lamp"], "blurry")
    assert (emb.hits, emb.misses) == (0, 2)
    assert first.cond.shape == (2, 16, 16) and first.uncond.shape == (2, 16, 16)
    second = emb(["a red chair", "a lamp"], "blurry")
    assert (emb.hits, emb.misses) == (2, 2)
    assert torch.equal(first.cond, second.cond) and torch.equal(first.uncond, second.uncond)
    emb(["a red chair"], "blurry")
    assert (emb.hits, emb.misses) == (3, 2)
    emb(["a blue chair"], "blurry")  # changed prompt
    assert (emb.hits, emb.misses) == (3, 3)
    emb(["a red chair"], "")  # changed negative prompt
    assert (emb.hits, emb.misses) == (3, 4)
    # the cached values are the text encoder's
    assert torch.equal(second.cond[:1], emb.encode(["a red chair"]))
    assert torch.equal(second.uncond[:1], emb.encode(["blurry"]))


def test_disk_cache_survives_a_new_embedder_and_is_keyed_by_model(sd: StableDiffusionPrior, tmp_path: Path):
    _embedder(sd, tmp_path)(["a red chair"], "blurry")
    assert len(list(tmp_path.glob("*.pt"))) == 1
    fresh = _embedder(sd, tmp_path)
    fresh(["a red chair"], "blurry")
    assert (fresh.hits, fresh.misses) == (1, 0)
    other_model = _embedder(sd, tmp_path, model_id="stabilityai/stable-diffusion-2-1-base")
    other_model(["a red chair"], "blurry")
    assert (other_model.hits, other_model.misses) == (0, 1)
    other_revision = _embedder(sd, tmp_path, revision="seed1")
    other_revision(["a red chair"], "blurry")
    assert (other_revision.hits, other_revision.misses) == (0, 1)
    assert len(list(tmp_path.glob("*.pt"))) == 3


def test_torn_cache_file_is_recomputed(sd: StableDiffusionPrior, tmp_path: Path):
    emb = _embedder(sd, tmp_path)
    reference = emb("a chair").cond
    (path,) = tmp_path.glob("*.pt")
    path.write_bytes(b"not a checkpoint")
    fresh = _embedder(sd, tmp_path)
    assert torch.equal(fresh("a chair").cond, reference) and fresh.misses == 1


def test_prior_embed_puts_embeddings_on_the_prior(sd: StableDiffusionPrior):
    emb = sd.embed("a chair")
    assert emb.cond.device == sd.device and emb.cond.dtype == sd.dtype
