"""Presets and offline loading: where models are found, and the one error when they are not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from scene3d.core.errors import ModelNotFoundError
from scene3d.priors import PRESETS, PriorSettings, load_diffusion, load_vgg, locate
from scene3d.priors.presets import get_preset

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_presets_cover_every_model_the_methods_use():
    ids = {p.hf_id for p in PRESETS.values()}
    for hf_id in (
        "stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-2-1-base",
        "stabilityai/stable-diffusion-2-inpainting", "lllyasviel/control_v11f1p_sd15_depth",
        "lllyasviel/control_v11p_sd15_openpose", "depth-anything/Depth-Anything-V2-Small-hf",
        "prs-eth/marigold-normals-v1-1", "openai/clip-vit-base-patch32", "vgg16-397923af.pth",
    ):
        assert hf_id in ids
    methods = {m for p in PRESETS.values() for m in p.used_by}
    assert {"text2nerf", "blended-nerf", "qnerf", "dreampolish", "dreamspace", "regs"} <= methods
    assert PRESETS["sd21-base"].revision_setting == "SCENE3D_REVISION_SD21_BASE"
    with pytest.raises(ValueError, match="unknown model preset 'sd99'"):
        get_preset("sd99")


def test_missing_model_raises_one_error_naming_id_setting_and_fetch(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch hub cache, whatever this machine has
    settings = PriorSettings(device="cpu", models_dir=tmp_path / "none", hf_cache_dir=tmp_path / "hf")
    with pytest.raises(ModelNotFoundError) as info:
        load_diffusion("sd21-base", settings)
    err = info.value
    assert err.model_id == "stabilityai/stable-diffusion-2-1-base"
    assert "SCENE3D_MODELS_DIR" in err.setting and err.fetch_command == "s3d models fetch sd21-base"
    for text in ("stabilityai/stable-diffusion-2-1-base", "SCENE3D_MODELS_DIR", "s3d models fetch sd21-base"):
        assert text in str(err)
    with pytest.raises(ModelNotFoundError, match="s3d models fetch vgg16"):
        load_vgg("vgg16", settings)


def test_missing_controlnet_fails_before_the_unet_is_read(tiny_folder: Path, tmp_path: Path, monkeypatch):
    import scene3d.priors.loading as loading

    models = tmp_path / "models"
    shutil.copytree(tiny_folder / "sd15", models / "sd15")
    read: list[str] = []
    monkeypatch.setattr(loading, "_sd_components", lambda folder: read.append(str(folder)))
    settings = PriorSettings(device="cpu", models_dir=models, hf_cache_dir=tmp_path / "hf")
    with pytest.raises(ModelNotFoundError, match="lllyasviel/control_v11f1p_sd15_depth"):
        load_diffusion("sd15", settings, controlnet="controlnet-depth-sd15")
    assert read == []  # nothing half-loaded


def test_incomplete_local_copy_names_the_missing_file(tiny_folder: Path, tmp_path: Path):
    models = tmp_path / "models"
    shutil.copytree(tiny_folder / "sd15", models / "sd15")
    (models / "sd15" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="incomplete: missing unet/diffusion_pytorch_model"):
        load_diffusion("sd15", PriorSettings(device="cpu", models_dir=models))


def _fake_hf_cache(cache: Path, hf_id: str, source: Path, ref: str = "main") -> Path:
    """The hub cache layout: models--org--name/{refs/<ref>, snapshots/<commit>/...}."""
    repo = cache / ("models--" + hf_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / ref).write_text(COMMIT)
    shutil.copytree(source, repo / "snapshots" / COMMIT)
    return repo


def test_loads_from_the_hugging_face_cache_offline(tiny_folder: Path, tmp_path: Path, monkeypatch):
    cache = tmp_path / "hf"
    _fake_hf_cache(cache, "stable-diffusion-v1-5/stable-diffusion-v1-5", tiny_folder / "sd15")
    settings = PriorSettings(device="cpu", models_dir=None, hf_cache_dir=cache, text_cache_dir=tmp_path / "emb")
    loc = locate("sd15", settings)
    assert loc.source == "hf-cache" and loc.revision == COMMIT
    sd = load_diffusion("sd15", settings)
    assert sd.model_id == "stable-diffusion-v1-5/stable-diffusion-v1-5" and sd.revision == COMMIT
    # the revision setting is honoured: an uncached revision is missing, by name in the message
    monkeypatch.setenv("SCENE3D_REVISION_SD15", "v2-branch")
    with pytest.raises(ModelNotFoundError, match="revision 'v2-branch'"):
        locate("sd15", settings)
    assert locate("sd15", PriorSettings(hf_cache_dir=cache, revisions={"sd15": "main"})).revision == COMMIT


def test_half_precision_is_a_cuda_setting():
    settings = PriorSettings(device="cpu", dtype="bf16")
    assert settings.torch_dtype() == torch.float32
    if torch.cuda.is_available():
        assert PriorSettings(device="cuda").torch_dtype() == torch.float16
