"""EpiGRAF's nerfstudio pipeline: GAN phases, R1's reach, EMA, viewer rendering, batch checks, paper-scale step."""

from pathlib import Path

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.optimizers import Optimizers

from scene3d.core.errors import DataError
from scene3d.methods.epigraf.config import epigraf_config, epigraf_tiny_config


def _pipeline(data: Path, *, batch: int = 4, config=None):
    cfg = config or epigraf_tiny_config()
    cfg.pipeline.datamanager.data = data
    cfg.pipeline.datamanager.images_per_batch = batch
    pipe = cfg.pipeline.setup(device="cpu", test_mode="val")
    return cfg, pipe, Optimizers(cfg.optimizers, pipe.get_param_groups())


def test_gan_iterations_update_g_d_and_the_ema(collection_dir: Path):
    cfg, pipe, opt = _pipeline(collection_dir)
    model = pipe.model
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    for step in range(2):  # step 0 runs R1 and copies G into the EMA; step 1 leaves the EMA lagging
        loss, losses, metrics = pipe.train_iteration(step, opt, None)
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))
    # EMA: copied at step 0, then lagging behind G
    lag = [not torch.equal(a, b) for a, b in zip(model.generator_ema.parameters(), model.generator.parameters())]
    assert any(lag)
    assert all(not p.requires_grad for p in model.generator_ema.parameters())
    assert metrics["patch_beta"] > cfg.pipeline.model.beta_start


def test_r1_is_finite_and_its_gradient_reaches_d_only(collection_dir: Path):
    _, pipe, _ = _pipeline(collection_dir)
    model = pipe.model
    real = pipe.datamanager.next_real(0)
    model.generator.requires_grad_(True)
    model.discriminator.requires_grad_(True)
    out = model.r1_phase(0, real.images, real.labels, real.camera)
    assert torch.isfinite(out["loss"]) and out["r1_penalty"] > 0
    out["loss"].backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.discriminator.parameters())


def test_generator_phase_gradient_reaches_g(collection_dir: Path):
    _, pipe, _ = _pipeline(collection_dir)
    model, dm = pipe.model, pipe.datamanager
    model.discriminator.requires_grad_(False)
    fake = dm.next_fake_conditions(4)
    out = model.generator_phase(0, torch.randn(4, model.config.z_dim), fake.labels, fake.views, fake.camera)
    out["loss"].backward()
    assert model.generator.synthesis.blocks[0].const.grad.abs().sum() > 0
    assert model.generator.decoder.layers[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.discriminator.parameters())


def test_viewer_renders_the_chosen_seed(collection_dir: Path):
    _, pipe, _ = _pipeline(collection_dir)
    model = pipe.model.eval()
    cams = pipe.datamanager.train_dataset.cameras
    camera = Cameras(camera_to_worlds=cams.camera_to_worlds[:1], fx=cams.fx[:1] / 2, fy=cams.fy[:1] / 2,
                     cx=cams.cx[:1] / 2, cy=cams.cy[:1] / 2, width=16, height=16)
    out = model.get_outputs_for_camera(camera)
    assert out["rgb"].shape == (16, 16, 3) and out["depth"].shape == (16, 16, 1)
    assert out["rgb"].min() >= 0 and out["rgb"].max() <= 1
    model.viewer_seed.value = 1
    other = model.get_outputs_for_camera(camera)
    assert not torch.allclose(out["rgb"], other["rgb"])
    model.viewer_psi.value = 0.0  # psi = 0: every seed is the mean latent
    a = model.get_outputs_for_camera(camera)["rgb"]
    model.viewer_seed.value = 7
    torch.testing.assert_close(model.get_outputs_for_camera(camera)["rgb"], a)


def test_batch_checks(collection_dir: Path):
    with pytest.raises(DataError, match=r"transforms\.json.*holds 16 images, fewer than one batch \(32\)"):
        _pipeline(collection_dir, batch=32)
    with pytest.raises(ValueError, match="multiple of the minibatch-std group"):
        _pipeline(collection_dir, batch=6)


def test_paper_scale_constructs_and_runs_one_step_on_cpu(tmp_path: Path):
    """The real epigraf architecture (tri-plane 512²×32, r = 64 on 128² images, 48 + 48 samples) at batch 1.

    One G phase (forward and backward through the 512² synthesis network) and one D phase: ~25 s on one shared
    CPU thread."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import write_collection

    data = write_collection(tmp_path / "c128", n=2, size=128)
    cfg = epigraf_config()
    cfg.pipeline.model.mbstd_group_size = 1
    _, pipe, opt = _pipeline(data, batch=1, config=cfg)
    m = pipe.model
    assert m.generator.synthesis.resolution == 512 and m.generator.synthesis.plane_channels == 32
    assert m.config.num_coarse_samples == 48 and m.config.num_fine_samples == 48 and m.config.patch_resolution == 64
    assert m.discriminator.num_start_blocks == 1
    loss, losses, _ = pipe.train_iteration(1, opt, None)  # step 1: Gmain + Dmain (R1 runs at multiples of 16)
    assert torch.isfinite(loss) and set(losses) == {"generator", "discriminator"}


def test_uncached_images_stream_through_a_data_loader(collection_dir: Path):
    cfg = epigraf_tiny_config()
    cfg.pipeline.datamanager.cache_bytes = 0  # force decoding per batch
    cfg.pipeline.datamanager.num_workers = 0
    _, pipe, _ = _pipeline(collection_dir, config=cfg)
    dm = pipe.datamanager
    assert dm._cache is None
    real = dm.next_real(0)
    assert real.images.shape == (4, 3, 32, 32) and real.images.min() >= -1 and real.images.max() <= 1
    assert real.views.c2w.shape == (4, 4, 4) and real.camera.shape == (4, 2)
