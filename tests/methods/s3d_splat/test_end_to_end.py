"""s3d-splat-tiny through nerfstudio's trainer on CPU: train with densification, save, resume, reload as ns-eval,
ns-render and the viewer do, export; and the paper-scale s3d-splat constructs and runs a step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scene3d.core.checkpoint import checkpoint_steps, load_checkpoint
from scene3d.methods.s3d_splat.config import s3d_splat_config, s3d_splat_tiny_config


def _trainer(data: Path, out: Path, iterations: int, load_dir: Path | None = None, strategy: str = "default"):
    cfg = s3d_splat_tiny_config()
    cfg.pipeline.datamanager.data = data
    cfg.machine.device_type = "cpu"
    cfg.output_dir = out
    cfg.vis = "tensorboard"
    cfg.max_num_iterations = iterations
    cfg.steps_per_save = 6
    cfg.steps_per_eval_image = 5
    model = cfg.pipeline.model
    model.strategy = strategy
    model.warmup_length, model.refine_every, model.sh_degree_interval, model.reset_alpha_every = 1, 2, 2, 100
    model.densify_grad_thresh = 1e-6  # densify every seen Gaussian: the count must change
    # splatfacto pauses refinement for (train views + refine_every) = 10 steps after each opacity reset (step 0)
    cfg.load_dir = load_dir
    cfg.set_timestamp()
    cfg.timestamp = cfg.timestamp + ("-resumed" if load_dir else "") + strategy
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return cfg, trainer


@pytest.fixture(scope="module")
def trained(splat_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """13 steps of s3d-splat-tiny with densification at steps 10 and 12; config.yml saved."""
    cfg, _ = _trainer(splat_dataset, tmp_path_factory.mktemp("run") / "out", 13)
    cfg.save_config()
    return cfg


@pytest.mark.slow
def test_train_densify_save_resume_eval_render_export(trained, splat_dataset: Path, tmp_path: Path):
    from nerfstudio.cameras.cameras import Cameras
    from nerfstudio.data.scene_box import OrientedBox
    from nerfstudio.model_components.renderers import background_color_override_context
    from nerfstudio.utils.eval_utils import eval_setup

    from scene3d.cli.export import main as export_main
    from scene3d.export.splat import read_ply

    cfg = trained
    base = cfg.get_base_dir()
    ckpt_dir = base / cfg.relative_model_dir
    assert checkpoint_steps(ckpt_dir) == [12]
    state = load_checkpoint(ckpt_dir / "step-000000012.ckpt")  # weights_only=True
    n_saved = state["pipeline"]["_model.gauss_params.means"].shape[0]
    assert n_saved > 400, "densification should have added Gaussians to the 400 initial points"
    assert state["optimizers"]["means"]["state"][0]["exp_avg"].shape == (n_saved, 3)

    # resume: the parameters are resized in place so the restored Adam states fit them
    cfg2, trainer2 = _trainer(splat_dataset, tmp_path / "resumed", 4, load_dir=ckpt_dir)
    assert trainer2._start_step == 13
    assert checkpoint_steps(cfg2.get_base_dir() / cfg2.relative_model_dir) == [16]

    # ns-eval / ns-render / viewer: load from config.yml, render through get_outputs_for_camera
    _, pipeline, _, step = eval_setup(base / "config.yml", test_mode="test")
    assert step == 12 and pipeline.model.num_points == n_saved and pipeline.model.active_sh_degree() == 3
    metrics = pipeline.get_average_eval_image_metrics()
    assert 5.0 < metrics["psnr"] < 100.0 and "ssim" in metrics
    cameras: Cameras = pipeline.datamanager.eval_dataset.cameras
    out = pipeline.model.get_outputs_for_camera(cameras[0:1])
    assert out["rgb"].shape == (32, 32, 3) and out["depth"].shape == (32, 32, 1)
    assert bool(torch.isfinite(out["depth"]).all()) and float(out["accumulation"].max()) > 0.5
    # a crop box holding no Gaussian, with the viewer's background override: the background only
    empty = OrientedBox(R=torch.eye(3), T=torch.tensor([50.0, 50.0, 50.0]), S=torch.ones(3))
    with background_color_override_context(torch.tensor([1.0, 0.0, 0.0])):
        cropped = pipeline.model.get_outputs_for_camera(cameras[0:1], obb_box=empty)
    torch.testing.assert_close(cropped["rgb"], torch.tensor([1.0, 0.0, 0.0]).expand(32, 32, 3))

    # export the run's splats and reload them
    assert export_main(["splat", "--load-config", str(base / "config.yml"), "--out", str(tmp_path / "s.ply")]) == 0
    ply = read_ply(tmp_path / "s.ply")
    torch.testing.assert_close(ply["means"], state["pipeline"]["_model.gauss_params.means"])
    assert export_main(["splat", "--load-config", str(base / "config.yml"), "--out", str(tmp_path / "s.splat")]) == 0
    assert (tmp_path / "s.splat").stat().st_size == 32 * n_saved


def _one_output(trainer):
    camera, batch = trainer.pipeline.datamanager.next_train(0)
    return trainer.pipeline.model(camera), batch


@pytest.mark.slow
def test_mcmc_strategy_trains_on_cpu(splat_dataset: Path, tmp_path: Path):
    cfg, trainer = _trainer(splat_dataset, tmp_path / "out", 4, strategy="mcmc")
    model = trainer.pipeline.model
    assert type(model.strategy).__name__ == "TorchMCMCStrategy"
    assert model.num_points == 420  # steps 0..3, one refinement (step 2): 5 % more Gaussians
    state = load_checkpoint(cfg.get_base_dir() / cfg.relative_model_dir / "step-000000003.ckpt")
    assert state["pipeline"]["_model.gauss_params.opacities"].shape == (420, 1)
    assert {"opacity_reg", "scale_reg"} <= set(model.get_loss_dict(*_one_output(trainer)))


def test_paper_scale_constructs_and_runs_one_step_on_cpu(splat_dataset: Path):
    from nerfstudio.engine.optimizers import Optimizers

    cfg = s3d_splat_config()
    assert cfg.method_name == "s3d-splat" and cfg.max_num_iterations == 30000
    assert type(cfg.pipeline.datamanager.dataparser).__name__ == "Scene3DDataParserConfig"
    cfg.pipeline.datamanager.data = splat_dataset
    pipeline = cfg.pipeline.setup(device="cpu", test_mode="val")
    optimizers = Optimizers(cfg.optimizers, pipeline.get_param_groups())
    pipeline.train()
    _, loss_dict, _ = pipeline.get_train_loss_dict(0)
    loss = sum(loss_dict.values())
    loss.backward()
    optimizers.optimizer_step_all()
    assert bool(torch.isfinite(loss)) and pipeline.model.gauss_params["means"].grad is not None


@pytest.mark.slow
@pytest.mark.browser
def test_ns_viewer_shows_the_splats(trained, browser):
    """The real ``ns-viewer`` on a trained run, in headless Chromium: the page shows the rendered splats."""
    port = browser.free_port()
    cmd = [sys.executable, "-m", "nerfstudio.scripts.viewer.run_viewer", "--load-config", str(trained.get_base_dir() / "config.yml"),
           "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        browser.wait_until_listening(proc, port, timeout_s=120)
        browser.open(port)
        verdict = browser.wait_for_scene("s3d_splat/ns_viewer.png", timeout_s=120)
        assert "differ" in verdict
    finally:
        proc.kill()
        proc.wait()
