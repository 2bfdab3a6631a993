"""CLIP image–text and image–image similarity as differentiable losses (Blended-NeRF, Text2NeRF selection).

Images go through CLIP's own preprocessing re-implemented with torch ops (resize the shorter side to the model's
input size, centre crop, normalise), so gradients reach the rendered pixels; transformers' image processor works
on PIL/numpy and would cut the graph. Similarities are cosines of the projected embeddings; CLIP's logit is
``100 · cos``, so Blended-NeRF's ``L_CLIP = 1 − logit/100`` is :meth:`CLIPSimilarity.text_loss`.

Example:
    >>> from scene3d.priors.loading import load_clip
    >>> clip = load_clip("tiny-random")
    >>> clip.image_text_similarity(torch.rand(2, 3, 40, 48), ["a chair", "a lamp"]).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import CameraBatch
from scene3d.priors.diffusion import check_cameras

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPSimilarity:
    """Cosine similarities between images and texts under a transformers ``CLIPModel``.

    Args:
        model: ``CLIPModel`` (vision and text towers with their projections).
        tokenizer: its ``CLIPTokenizer``.
        image_size: the vision tower's input side (224 for ViT-B/32).
        image_mean: normalisation mean (the model's ``preprocessor_config.json``).
        image_std: normalisation std.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        image_size: int = 224,
        image_mean: tuple[float, float, float] = CLIP_MEAN,
        image_std: tuple[float, float, float] = CLIP_STD,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self._text_cache: dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 S S"]:
        """Resize the shorter side to ``image_size`` (bicubic), centre-crop, normalise; differentiable."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        s = self.image_size
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        x = F.interpolate(images.to(self.device, torch.float32), size=(nh, nw), mode="bicubic", align_corners=False)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[..., top : top + s, left : left + s]
        mean = torch.tensor(self.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode_images(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B D"]:
        """Unit-length image embeddings of images in ``[0, 1]`` (differentiable)."""
        dtype = next(self.model.parameters()).dtype
        pooled = self.model.vision_model(pixel_values=self.preprocess(images).to(dtype)).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def encode_texts(self, texts: list[str]) -> Float[Tensor, "T D"]:
        """Unit-length text embeddings (no gradient; cached per text)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            tokens = self.tokenizer(missing, padding=True, truncation=True, return_tensors="pt").to(self.device)
            with torch.no_grad():
                pooled = self.model.text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).pooler_output
                emb = F.normalize(self.model.text_projection(pooled).float(), dim=-1)
            self._text_cache.update(zip(missing, emb))
        return torch.stack([self._text_cache[t] for t in texts])

    def image_text_similarity(
        self, images: Float[Tensor, "B 3 H W"], texts: str | list[str], *, cameras: CameraBatch | None = None
    ) -> Float[Tensor, "B T"]:
        """``cos(E_img(image_b), E_txt(text_t))`` for every pair.

        ``cameras`` (one per image) are ignored by CLIP; methods pass them so that the ``groundtruth:`` twin can
        compare each image with its scene seen from that camera.
        """
        check_cameras(cameras, images.shape[0])
        texts = [texts] if isinstance(texts, str) else texts
        return self.encode_images(images) @ self.encode_texts(texts).T

    def image_image_similarity(
        self, images: Float[Tensor, "B 3 H W"], references: Float[Tensor, "R 3 H2 W2"]
    ) -> Float[Tensor, "B R"]:
        """``cos(E_img(image_b), E_img(reference_r))`` for every pair (Text2NeRF ranks inpainting candidates by it)."""
        return self.encode_images(images) @ self.encode_images(references).T

    def text_loss(
        self, images: Float[Tensor, "B 3 H W"], text: str, *, cameras: CameraBatch | None = None
    ) -> Float[Tensor, ""]:
        """``mean_b (1 − cos(image_b, text))``: Blended-NeRF's ``L_CLIP = 1 − logit/100``."""
        return (1.0 - self.image_text_similarity(images, text, cameras=cameras)[:, 0]).mean()
