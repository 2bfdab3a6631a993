"""VGG-16 feature pyramids and nearest-neighbour feature matching (ReGS's style losses).

:class:`VGGFeatures` is torchvision's ``vgg16().features`` layer list (same indices, so torchvision's state dict
loads as is) with ImageNet normalisation in front. It returns, for each requested *block*, the ReLU outputs of that
block concatenated along channels, exactly as ReGS (``utils/nnfm.py``, inherited from ARF) builds its NNFM
features::

    block 0: relu1_1, relu1_2              (features[1], [3])         64·2  = 128 channels, H   × W
    block 1: relu2_1, relu2_2              (features[6], [8])         128·2 = 256 channels, H/2 × W/2
    block 2: relu3_1, relu3_2, relu3_3     (features[11], [13], [15]) 256·3 = 768 channels, H/4 × W/4
    block 3: relu4_1, relu4_2, relu4_3     (features[18], [20], [22]) 512·3 = 1536 ch,     H/8 × W/8
    block 4: relu5_1, relu5_2, relu5_3     (features[25], [27], [29]) 512·3 = 1536 ch,     H/16 × W/16

Blocks are numbered from 0 as in ReGS's ``block_indexes`` (its default ``blocks=[2, 3, 4]`` is relu3_x, relu4_x,
relu5_x). ``tiny-random`` keeps every index and pooling step but few channels.

Example:
    >>> vgg = VGGFeatures.tiny_random(seed=0)
    >>> feats = vgg(torch.rand(1, 3, 32, 32), blocks=(2, 3, 4))
    >>> [tuple(f.shape) for f in feats]
    [(1, 24, 8, 8), (1, 48, 4, 4), (1, 48, 2, 2)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

VGG16_CHANNELS: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
"""torchvision's configuration "D" (VGG-16): conv widths, ``M`` = 2×2 max-pool."""
TINY_CHANNELS: tuple[int | str, ...] = (4, 4, "M", 8, 8, "M", 8, 8, 8, "M", 16, 16, 16, "M", 16, 16, 16, "M")
"""The same layer structure with few channels (``tiny-random``)."""

BLOCK_RELUS: tuple[tuple[int, ...], ...] = ((1, 3), (6, 8), (11, 13, 15), (18, 20, 22), (25, 27, 29))
"""Indices into ``features`` of each block's ReLUs (ReGS/ARF ``block_indexes``)."""


def _make_features(channels: Sequence[int | str]) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for c in channels:
        if c == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, int(c), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            c_in = int(c)
    return nn.Sequential(*layers)


class VGGFeatures(nn.Module):
    """VGG-16 ``features`` with ImageNet normalisation; returns per-block ReLU feature maps.

    Args:
        features: a ``nn.Sequential`` laid out like torchvision's ``vgg16().features`` (31 layers).

    The module is frozen (``requires_grad=False``, eval mode); gradients still flow to the *input images*.
    """

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        if len(features) != 31:
            raise ValueError(f"features must have torchvision's VGG-16 layout (31 layers), got {len(features)}")
        self.features = features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def tiny_random(cls, seed: int = 0) -> VGGFeatures:
        """Same block structure, few channels, seeded random weights (no files, no network)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(_make_features(TINY_CHANNELS))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "vgg16", settings: object | None = None) -> VGGFeatures:
        """torchvision's ImageNet VGG-16 weights (``vgg16-397923af.pth``), loaded with ``weights_only=True``.

        Args:
            name_or_path: ``"vgg16"`` (looked up in ``$SCENE3D_MODELS_DIR/vgg16/`` then the torch hub cache,
                ``$TORCH_HOME/hub/checkpoints``), ``"tiny-random"``, or the path of a state-dict file.
            settings: a :class:`~scene3d.priors.settings.PriorSettings` (models folder, tiny seed).

        Raises:
            ModelNotFoundError: when the weights are not on disk (``s3d models fetch vgg16`` downloads them).
        """
        from scene3d.priors.presets import TINY_RANDOM, VGG16_FILE, locate
        from scene3d.priors.settings import PriorSettings

        settings = settings if isinstance(settings, PriorSettings) else PriorSettings()
        if str(name_or_path) == TINY_RANDOM:
            return cls.tiny_random(settings.tiny_seed)
        path = Path(name_or_path)
        if not path.is_file():
            path = locate(str(name_or_path), settings).path / VGG16_FILE
        state = torch.load(path, map_location="cpu", weights_only=True)
        feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        # channel widths from the checkpoint, so a tiny-random file saved in this layout loads too
        widths: list[int | str] = []
        index = 0  # position in ``features``: a conv and its ReLU take two slots, a pool one
        for c in VGG16_CHANNELS:
            widths.append("M" if c == "M" else int(feats[f"{index}.weight"].shape[0]))
            index += 1 if c == "M" else 2
        model = cls(_make_features(widths))
        model.features.load_state_dict(feats)
        return model

    def save(self, path: str | Path) -> None:
        """Write the weights as torchvision does (``features.<i>.weight``), so :meth:`from_pretrained` reads them."""
        from scene3d.core.checkpoint import atomic_torch_save

        atomic_torch_save({f"features.{k}": v for k, v in self.features.state_dict().items()}, path)

    def forward(
        self, images: Float[Tensor, "B 3 H W"], blocks: Sequence[int] = (2, 3, 4)
    ) -> list[Float[Tensor, "B _C _h _w"]]:
        """Per-block features of images in ``[0, 1]``, in the order of ``blocks`` (each ``[B, C_b, H_b, W_b]``)."""
        if not blocks or any(b not in range(5) for b in blocks):
            raise ValueError(f"blocks must be a non-empty subset of 0..4, got {tuple(blocks)}")
        wanted = {i for b in blocks for i in BLOCK_RELUS[b]}
        last = max(wanted)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        outputs: dict[int, Tensor] = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                outputs[i] = x
            if i == last:
                break
        return [torch.cat([outputs[i] for i in BLOCK_RELUS[b]], dim=1) for b in blocks]


@dataclass
class FeatureMatch:
    """Nearest neighbours of query features among reference features (cosine distance)."""

    index: Int[Tensor, "B N"]
    """Index into the reference's ``M`` positions of each query position's nearest neighbour."""
    distance: Float[Tensor, "B N"]
    """Its cosine distance ``1 − cos`` (0 = same direction, 2 = opposite)."""


def nearest_feature_match(
    query: Float[Tensor, "B C N"], reference: Float[Tensor, "B C M"], *, chunk: int = 4096
) -> FeatureMatch:
    """For every query feature, the reference feature with the smallest cosine distance (ARF/Ref-NPR NNFM).

    Query positions are processed ``chunk`` at a time so the ``N × M`` distance matrix never has to fit whole.
    """
    if query.shape[:2] != reference.shape[:2]:
        raise ValueError(f"query and reference must share B and C, got {tuple(query.shape)} and {tuple(reference.shape)}")
    ref = F.normalize(reference, dim=1, eps=1e-8)
    indices, distances = [], []
    for start in range(0, query.shape[-1], chunk):
        q = F.normalize(query[..., start : start + chunk], dim=1, eps=1e-8)
        dist = 1.0 - torch.einsum("bcn,bcm->bnm", q, ref)
        d, i = dist.min(dim=-1)
        indices.append(i)
        distances.append(d)
    return FeatureMatch(torch.cat(indices, -1), torch.cat(distances, -1))


def gather_features(features: Float[Tensor, "B C M"], index: Int[Tensor, "B N"]) -> Float[Tensor, "B C N"]:
    """``features[:, :, index]`` per batch item (e.g. style features at the content→template matches)."""
    return torch.gather(features, 2, index.unsqueeze(1).expand(-1, features.shape[1], -1))


def nnfm_loss(features: Float[Tensor, "B C H W"], style: Float[Tensor, "B C H2 W2"]) -> Float[Tensor, ""]:
    """Nearest-neighbour feature matching loss (ARF, Zhang et al. 2022, Eq. 2): mean over positions of the
    cosine distance from each feature to its nearest style feature. The match is not differentiated through."""
    f, s = features.flatten(2), style.flatten(2)
    with torch.no_grad():
        match = nearest_feature_match(f, s)
    target = gather_features(s, match.index)
    return (1.0 - F.cosine_similarity(f, target, dim=1, eps=1e-8)).mean()
