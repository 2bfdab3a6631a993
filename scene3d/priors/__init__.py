"""scene3d's diffusion-prior module: every pretrained model the methods use, behind one offline-safe interface.

Components are constructor arguments; loading is a separate factory (:mod:`scene3d.priors.loading`) that reads a
named preset (:data:`PRESETS`) from a local folder or the Hugging Face cache, or builds the ``tiny-random`` twin
with tiny seeded random weights. Importing this package needs only torch: diffusers, transformers and
huggingface_hub are imported inside the functions that read or build models. Nothing here imports nerfstudio.

See ``scene3d/priors/README.md`` for the presets table, the operations and the equations.

Example:
    >>> from scene3d.priors import load_diffusion, sds
    >>> sd = load_diffusion("tiny-random")
    >>> z = sd.encode_images(torch.rand(1, 3, 16, 16)).requires_grad_(True)   # doctest: +SKIP
    >>> sds(sd, z, sd.embed("a chair")).loss.backward()                         # doctest: +SKIP
"""

from scene3d.priors.attention import (
    AttentionControl,
    SoftInjection,
    query_distance,
    self_attention_layers,
    soft_query_injection,
    tokens_to_map,
)
from scene3d.priors.clip import CLIPSimilarity
from scene3d.priors.depth import DepthAlignment, DepthEstimator, align_depth
from scene3d.priors.diffusion import ControlInput, InpaintInput, NoisePrediction, StableDiffusionPrior
from scene3d.priors.distillation import DistillationOutput, TimestepSchedule, dsd, sds, timestep_weight, vsd
from scene3d.priors.inversion import InversionOutput, ddim_invert, ddim_sample
from scene3d.priors.loading import (
    load,
    load_clip,
    load_controlnet,
    load_depth,
    load_diffusion,
    load_inpainting,
    load_normals,
    load_vgg,
)
from scene3d.priors.lora import LoRAAdapter, VariationalScore
from scene3d.priors.normals import NormalEstimator
from scene3d.priors.presets import PRESETS, TINY_RANDOM, ModelLocation, ModelPreset, fetch, locate
from scene3d.priors.sampling import SamplingOutput, denoise, image_to_image, inpaint, text_to_image
from scene3d.priors.settings import PriorSettings
from scene3d.priors.text import PromptEmbeddings, TextEmbedder
from scene3d.priors.tiny import save_tiny_random
from scene3d.priors.vgg import FeatureMatch, VGGFeatures, gather_features, nearest_feature_match, nnfm_loss

__all__ = [
    "PRESETS",
    "TINY_RANDOM",
    "AttentionControl",
    "CLIPSimilarity",
    "ControlInput",
    "DepthAlignment",
    "DepthEstimator",
    "DistillationOutput",
    "FeatureMatch",
    "InpaintInput",
    "InversionOutput",
    "LoRAAdapter",
    "ModelLocation",
    "ModelPreset",
    "NoisePrediction",
    "NormalEstimator",
    "PriorSettings",
    "PromptEmbeddings",
    "SamplingOutput",
    "SoftInjection",
    "StableDiffusionPrior",
    "TextEmbedder",
    "TimestepSchedule",
    "VGGFeatures",
    "VariationalScore",
    "align_depth",
    "ddim_invert",
    "ddim_sample",
    "denoise",
    "dsd",
    "fetch",
    "gather_features",
    "image_to_image",
    "inpaint",
    "load",
    "load_clip",
    "load_controlnet",
    "load_depth",
    "load_diffusion",
    "load_inpainting",
    "load_normals",
    "load_vgg",
    "locate",
    "nearest_feature_match",
    "nnfm_loss",
    "query_distance",
    "save_tiny_random",
    "sds",
    "self_attention_layers",
    "soft_query_injection",
    "text_to_image",
    "timestep_weight",
    "tokens_to_map",
    "vsd",
]
