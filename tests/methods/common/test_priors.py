"""resolve_prior: one resolver for real presets, tiny-random and groundtruth:PATH."""

from __future__ import annotations

import pytest

from scene3d.core.errors import ModelNotFoundError
from scene3d.methods.common.priors import resolve_prior
from scene3d.priors import (
    CLIPSimilarity,
    DepthEstimator,
    NormalEstimator,
    PriorSettings,
    StableDiffusionPrior,
    VGGFeatures,
)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> PriorSettings:
    return PriorSettings(device="cpu", models_dir=None, text_cache_dir=tmp_path_factory.mktemp("emb"),
                         hf_cache_dir=tmp_path_factory.mktemp("empty-hf-cache"))


def test_tiny_random_resolves_to_the_classes_methods_call(settings: PriorSettings):
    expected = {
        "diffusion": StableDiffusionPrior, "inpainting": StableDiffusionPrior, "controlnet": StableDiffusionPrior,
        "depth": DepthEstimator, "normals": NormalEstimator, "clip": CLIPSimilarity, "vgg": VGGFeatures,
    }  # fmt: skip
    for kind, cls in expected.items():
        assert isinstance(resolve_prior(kind, "tiny-random", settings), cls), kind  # type: ignore[arg-type]
    assert resolve_prior("inpainting", "tiny-random", settings).is_inpainting
    assert resolve_prior("controlnet", "tiny-random", settings).controlnet is not None
    assert resolve_prior("diffusion", "tiny-random", settings).controlnet is None


def test_real_presets_go_through_the_loaders(settings: PriorSettings):
    with pytest.raises(ModelNotFoundError, match="s3d models fetch sd21-base"):
        resolve_prior("diffusion", "sd21-base", settings)
    with pytest.raises(ModelNotFoundError, match="s3d models fetch sd15"):  # the ControlNet's base model is checked
        resolve_prior("controlnet", "controlnet-depth-sd15", settings)
    with pytest.raises(ValueError, match="is a depth model, not a diffusion model"):
        resolve_prior("diffusion", "depth-anything-v2-small", settings)
    with pytest.raises((ValueError, TypeError), match="kind must be one of|upscaler"):
        resolve_prior("upscaler", "tiny-random", settings)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="base only applies"):
        resolve_prior("depth", "tiny-random", settings, base="sd15")
