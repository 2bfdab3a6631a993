"""s3d-nerf-tiny through nerfstudio's trainer on CPU: train, save, resume, reload as ns-eval / ns-render / the viewer
do, render with a crop box and a background override, build a point cloud as ns-export does; and the paper-scale
s3d-nerf constructs and runs a step."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from scene3d.core.checkpoint import checkpoint_steps, load_checkpoint
from scene3d.methods.s3d_nerf.config import s3d_nerf_config, s3d_nerf_tiny_config

pytestmark = pytest.mark.data


def _trainer(data: Path, out: Path, iterations: int, load_dir: Path | None = None):
    cfg = s3d_nerf_tiny_config()
    cfg.pipeline.datamanager.dataparser.data = data
    cfg.machine.device_type = "cpu"
    cfg.output_dir = out
    cfg.vis = "tensorboard"
    cfg.max_num_iterations = iterations
    cfg.steps_per_save = 10
    cfg.pipeline.model.occ_warmup_steps = 8
    cfg.pipeline.model.occ_update_interval = 4
    cfg.pipeline.model.grid_resolution = 32  # the 32-px scene needs no finer grid; refreshes stay cheap
    cfg.load_dir = load_dir
    cfg.set_timestamp()
    cfg.timestamp += "-resumed" if load_dir else ""
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return cfg, trainer


@pytest.fixture(scope="module")
def trained(object_scene: Path, tmp_path_factory: pytest.TempPathFactory):
    """25 steps of s3d-nerf-tiny on the 32-px object scene; config.yml saved."""
    cfg, trainer = _trainer(object_scene, tmp_path_factory.mktemp("run") / "out", 25)
    cfg.save_config()
    return cfg, trainer


@pytest.mark.slow
def test_train_save_resume(trained, object_scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cfg, trainer = trained
    ckpt_dir = cfg.get_base_dir() / cfg.relative_model_dir
    assert checkpoint_steps(ckpt_dir) == [24]
    state = load_checkpoint(ckpt_dir / "step-000000024.ckpt")  # weights_only=True
    assert "_model.field.encoding.params" in state["pipeline"]
    assert "_model.occupancy_grid.binaries" in state["pipeline"]
    model = trainer.pipeline.model
    assert 0.0 < model.occupancy_grid.occupied_fraction < 1.0, "the grid should have been refreshed"
    # the dynamic batch moved away from the configured 2048 rays
    assert trainer.pipeline.datamanager.train_pixel_sampler.num_rays_per_batch != 2048

    capsys.readouterr()
    cfg2, trainer2 = _trainer(object_scene, tmp_path / "resumed", 5, load_dir=ckpt_dir)
    assert trainer2._start_step == 25
    # --max-num-iterations on resume: 5 more steps, and the progress line / ETA count to step 30, not to 5
    from nerfstudio.utils import writer

    assert writer.GLOBAL_BUFFER["max_iter"] == 30
    assert "Training 5 more steps, from step 25 to 29" in " ".join(capsys.readouterr().out.split())
    assert checkpoint_steps(cfg2.get_base_dir() / cfg2.relative_model_dir) == [29]
    resumed = trainer2.pipeline.model.state_dict()["field.encoding.params"]
    assert not torch.equal(resumed, state["pipeline"]["_model.field.encoding.params"])


@pytest.mark.slow
def test_reload_eval_render_crop_pointcloud(trained):
    from nerfstudio.data.scene_box import OrientedBox
    from nerfstudio.exporter.exporter_utils import generate_point_cloud
    from nerfstudio.model_components.renderers import background_color_override_context
    from nerfstudio.utils.eval_utils import eval_setup

    cfg, _ = trained
    _, pipeline, _, step = eval_setup(cfg.get_base_dir() / "config.yml", test_mode="test")
    assert step == 24
    metrics = pipeline.get_average_eval_image_metrics()
    assert 5.0 < metrics["psnr"] < 100.0 and 0.0 < metrics["ssim"] <= 1.0
    pipeline.eval()  # nerfstudio's get_average_eval_image_metrics leaves the pipeline in training mode
    model = pipeline.model
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    out = model.get_outputs_for_camera(camera)
    assert set(out) >= {"rgb", "depth", "accumulation", "normals"}
    assert out["rgb"].shape == (32, 32, 3) and out["depth"].shape == (32, 32, 1) and out["normals"].shape == (32, 32, 3)
    assert float(out["normals"].min()) >= 0.0 and float(out["normals"].max()) <= 1.0
    assert bool(torch.isfinite(out["depth"]).all())
    # nothing inside a far-away crop box; the viewer's background override shows instead
    empty = OrientedBox(R=torch.eye(3), T=torch.tensor([50.0, 50.0, 50.0]), S=torch.ones(3))
    with background_color_override_context(torch.tensor([1.0, 0.0, 0.0])):
        cropped = model.get_outputs_for_camera(camera, obb_box=empty)
    torch.testing.assert_close(cropped["rgb"], torch.tensor([1.0, 0.0, 0.0]).expand(32, 32, 3))
    # `s3d export mesh` on the run
    from scene3d.cli.export import main as export_main

    mesh_path = cfg.get_base_dir() / "mesh.obj"
    assert export_main(["mesh", "--load-config", str(cfg.get_base_dir() / "config.yml"), "--out", str(mesh_path),
                        "--resolution", "24"]) == 0  # fmt: skip
    assert mesh_path.read_text().count("\nf ") > 10
    # what `ns-export pointcloud` runs, with the model's normals
    pipeline.datamanager.train_pixel_sampler.num_rays_per_batch = 512
    pcd = generate_point_cloud(pipeline, num_points=200, remove_outliers=False, normal_output_name="normals")
    assert len(pcd.points) >= 200 and pcd.has_normals()


def test_paper_scale_constructs_and_runs_one_step_on_cpu(object_scene: Path):
    from nerfstudio.engine.optimizers import Optimizers

    cfg = s3d_nerf_config()
    assert cfg.method_name == "s3d-nerf" and cfg.max_num_iterations == 30000
    assert type(cfg.pipeline.datamanager.dataparser).__name__ == "Scene3DDataParserConfig"
    model_cfg = cfg.pipeline.model
    assert (model_cfg.hash_levels, model_cfg.hash_features, model_cfg.hash_log2_size) == (16, 2, 19)
    assert model_cfg.steps_per_diagonal == 1024 and model_cfg.grid_resolution == 128
    cfg.pipeline.datamanager.dataparser.data = object_scene
    cfg.pipeline.datamanager.train_num_rays_per_batch = 256  # the step, not the batch, is what is checked
    pipeline = cfg.pipeline.setup(device="cpu", test_mode="val")
    optimizers = Optimizers(cfg.optimizers, pipeline.get_param_groups())
    pipeline.train()
    model = pipeline.model
    model.occupancy_grid.update(0, lambda x: model.field.density(x) * model.step_size, chunk=1 << 18)
    _, loss_dict, metrics = pipeline.get_train_loss_dict(0)
    loss = sum(loss_dict.values())
    loss.backward()
    optimizers.optimizer_step_all()
    assert bool(torch.isfinite(loss)) and float(metrics["num_samples_per_batch"]) > 0
    assert model.field.encoding.params.grad is not None


@pytest.mark.slow
@pytest.mark.browser
def test_ns_viewer_renders_the_run(trained, browser):
    """The real ``ns-viewer`` on the trained run, in headless Chromium: the page shows the rendered scene."""
    import subprocess
    import sys

    cfg, _ = trained
    port = browser.free_port()
    cmd = [sys.executable, "-m", "nerfstudio.scripts.viewer.run_viewer", "--load-config", str(cfg.get_base_dir() / "config.yml"),
           "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        browser.wait_until_listening(proc, port, timeout_s=120)
        browser.open(port)
        verdict = browser.wait_for_scene("s3d_nerf/ns_viewer.png", timeout_s=180)
        assert "differ" in verdict
    finally:
        proc.kill()
        proc.wait()
