"""dreamspace-tiny through nerfstudio: part of a run in-process, killed after the first interior view, resumed and
finished by ``ns-train`` in a subprocess (the generated views are reused, not made again); then the checkpoint
(weights only, no empty texel), a reload that renders, ``s3d export dreamspace`` (GLB, OBJ, panorama) and
``ns-render`` of the walk-through. Also: the paper-scale config runs a step on CPU, bad input fails early, and a
``gpu`` step with full-size random-weight SD 1.5 + ControlNet + SD 2 inpainting components in fp16."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scene3d.core.checkpoint import checkpoint_steps, load_checkpoint
from scene3d.methods.dreamspace.config import dreamspace_config, dreamspace_tiny_config
from scene3d.methods.dreamspace.pipeline import build_schedule

pytestmark = pytest.mark.data

PROMPT = "a japanese tea room"
FAST = {"views": 2, "imitation_steps": 40, "imitation_refresh": 20}
"""Fewer interior views and imitation steps than dreamspace-tiny's, so the test stays short (every stage runs)."""


@pytest.fixture(scope="session")
def room_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32-px synthetic ``room`` with its stylized look (the meshes are what DreamSpace reads)."""
    from scene3d.datasets.synthetic import generate_scene

    return generate_scene("room", tmp_path_factory.mktemp("room") / "scene", size=32, views=10, stylized=True)


def _tiny(room: Path, out: Path):
    cfg = dreamspace_tiny_config()
    cfg.pipeline.datamanager.data = room
    cfg.pipeline.model.prompt = PROMPT
    for key, value in FAST.items():
        setattr(cfg.pipeline, key, value)
    cfg.output_dir = out
    cfg.vis = "tensorboard"
    cfg.machine.device_type = "cpu"
    cfg.max_num_iterations = build_schedule(cfg.pipeline).total_steps
    cfg.set_timestamp()
    return cfg


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


@pytest.mark.slow
def test_tiny_run_resumes_then_saves_reloads_renders_and_exports(room_scene: Path, tmp_path: Path) -> None:
    from nerfstudio.utils.eval_utils import eval_setup

    from scene3d.cli.export import main as export_main
    from scene3d.methods.dreamspace.texturing import TexelSource
    from scene3d.renderers.atlas import Atlas, rasterize_atlas

    # 1. in-process, stopped after the first interior view (geometry, coarse, 8 tiles, projection, view 1)
    cfg = _tiny(room_scene, tmp_path / "out")
    schedule = build_schedule(cfg.pipeline)
    first_view = [s.kind for s in schedule.stages].index("view")
    cfg.max_num_iterations = first_view + 1
    cfg.steps_per_save = first_view + 1
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    run1 = cfg.get_base_dir()
    stored = json.loads((run1 / "generated_views" / "transforms.json").read_text())["frames"]
    assert [f["stage"] for f in stored] == ["tile"] * 8 + ["view"]
    assert (run1 / "coarse_panorama.png").is_file() and (run1 / "panorama.png").is_file()

    # 2. resumed and finished by ns-train (a subprocess), with the same settings; nerfstudio runs
    # --max-num-iterations more steps after the resumed one
    total = schedule.total_steps
    cmd = [_bin("ns-train"), "dreamspace-tiny", "--data", str(room_scene), "--prompt", PROMPT,
           "--output-dir", str(tmp_path / "out"), "--timestamp", "resumed", "--vis", "tensorboard",
           "--machine.device-type", "cpu", "--max-num-iterations", str(total - first_view - 1), "--steps-per-save", "1000",
           "--load-dir", str(run1 / "nerfstudio_models"),
           *[a for k, v in FAST.items() for a in (f"--pipeline.{k.replace('_', '-')}", str(v))]]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run2 = run1.parent / "resumed"
    frames = json.loads((run2 / "generated_views" / "transforms.json").read_text())["frames"]
    stages = [f["stage"] for f in frames]
    assert stages[:9] == ["tile"] * 8 + ["view"] and stages.count("tile") == 8  # reused, not generated again
    assert 1 <= stages.count("view") <= FAST["views"]
    for name in ("coarse_panorama.png", "panorama.png"):
        assert not (run2 / name).exists()  # made before the resume: in the first run's folder only
    assert (run2 / "texture.png").is_file() and (run2 / "camera_paths" / "walkthrough.json").is_file()

    # 3. the checkpoint: weights only; the final atlas has no empty texel
    ckpt_dir = run2 / "nerfstudio_models"
    assert checkpoint_steps(ckpt_dir) == [total - 1]
    state = load_checkpoint(ckpt_dir / f"step-{total - 1:09d}.ckpt")["pipeline"]
    source = state["_model.source"]
    atlas = Atlas(vertices=state["_model.atlas_vertices"], faces=state["_model.atlas_faces"],
                  uvs=state["_model.atlas_uvs"], source_vertex=state["_model.atlas_source"],
                  height=source.shape[0], width=source.shape[1])  # fmt: skip
    texels = rasterize_atlas(atlas)
    surface = source[texels.rows, texels.cols]
    assert int((surface == TexelSource.EMPTY).sum()) == 0
    for kind in (TexelSource.PANORAMA, TexelSource.INPAINTED, TexelSource.IMITATED):
        assert int((surface == kind).sum()) > 0, kind

    # 4. reloaded as ns-render / ns-viewer do, it renders a walk-through camera inside the room
    config_path = run2 / "config.yml"
    _, pipeline, _, step = eval_setup(config_path, test_mode="inference")
    assert step == total - 1
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    out = pipeline.model.get_outputs_for_camera(camera)
    assert out["rgb"].shape == (480, 640, 3) and float(out["accumulation"].mean()) > 0.99
    assert 0.0 <= float(out["rgb"].min()) and float(out["rgb"].max()) <= 1.0 and float(out["rgb"].std()) > 0.01

    # 5. s3d export dreamspace: GLB (s3d view opens it: tests/viewer) and the panorama (the OBJ + MTL + PNG writer
    # is tested in tests/export/test_textured.py)
    import trimesh

    glb, pano = tmp_path / "room.glb", tmp_path / "pano.png"
    assert export_main(["dreamspace", "--load-config", str(config_path), "--out", str(glb), "--panorama", str(pano)]) == 0
    mesh = trimesh.load(glb, force="mesh")
    assert len(mesh.faces) == len(atlas.faces) and mesh.visual.material.baseColorTexture is not None
    from PIL import Image

    assert Image.open(pano).size == (128, 64)
    with pytest.raises(FileExistsError):
        export_main(["dreamspace", "--load-config", str(config_path), "--out", str(glb)])

    # 6. ns-render of the walk-through camera path the run wrote
    if shutil.which("ffmpeg") is None:
        pytest.fail("ns-render needs ffmpeg (apt-get install ffmpeg)")
    from nerfstudio.scripts.render import RenderCameraPath

    video = tmp_path / "walk.mp4"
    RenderCameraPath(load_config=config_path, output_path=video, downscale_factor=8,
                     camera_path_filename=run2 / "camera_paths" / "walkthrough.json").main()  # fmt: skip
    assert video.is_file() and video.stat().st_size > 1000


def test_paper_scale_constructs_and_runs_a_step_on_cpu(room_scene: Path) -> None:
    """dreamspace as configured (2048² atlas, 512 × 1024 panorama, 22 tiles, 8 views, 2,000 imitation steps) with
    tiny-random priors: the geometry step and one imitation step on CPU."""
    from nerfstudio.engine.optimizers import Optimizers

    from scene3d.methods.dreamspace import stages
    from scene3d.methods.dreamspace.texturing import TexelSource

    cfg = dreamspace_config()
    pc = cfg.pipeline
    assert cfg.method_name == "dreamspace" and (pc.diffusion, pc.controlnet, pc.inpainting) == (
        "sd15", "controlnet-depth-sd15", "sd2-inpainting")  # fmt: skip
    assert (pc.coarse_height, pc.fine_height, pc.atlas_resolution, pc.tile_size, pc.views) == (512, 1024, 2048, 512, 8)
    assert cfg.max_num_iterations == build_schedule(pc).total_steps == 1 + 1 + 22 + 1 + 8 + 2000 + 1
    pc.diffusion = pc.controlnet = pc.inpainting = "tiny-random"
    pc.datamanager.data = room_scene
    pc.model.prompt = PROMPT
    pc.run_outputs = "skip"
    pipeline = pc.setup(device="cpu", test_mode="val")
    optimizers = Optimizers(cfg.optimizers, pipeline.get_param_groups())
    pipeline.train_iteration(0, optimizers, None)
    model = pipeline.model
    assert model.has_atlas and min(model.texture.shape[:2]) > 1500
    # one imitating-network step at the paper's batch on texels given a colour
    texels = model.texels
    seen = torch.zeros(texels.count, dtype=torch.bool)
    seen[::3] = True
    stages.set_texels(pipeline, seen, torch.rand(texels.count, 3), TexelSource.PANORAMA)
    step = [s.kind for s in pipeline.schedule.stages].index("imitate") + sum(
        1 for s in pipeline.schedule.stages if s.kind != "imitate" and s.kind != "finish") * 0  # fmt: skip
    loss = stages.imitation_step(pipeline, step, 0, optimizers)
    assert bool(torch.isfinite(loss)) and float(loss) > 0
    assert all(p.grad is not None for p in model.imitation.parameters())


def test_bad_input_fails_before_any_compute(room_scene: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    import trimesh

    from scene3d.core.errors import DataError, ModelNotFoundError
    from scene3d.methods.dreamspace.room import RoomChecks, load_room
    from scene3d.priors.settings import PriorSettings

    # a mesh with no faces (a point cloud), a missing file, a folder that is not a dataset
    trimesh.PointCloud(np.random.default_rng(0).random((50, 3))).export(tmp_path / "points.ply")
    with pytest.raises(DataError, match="no triangle mesh|no faces"):
        load_room(tmp_path / "points.ply")
    with pytest.raises(DataError, match="does not exist"):
        load_room(tmp_path / "missing.ply")
    with pytest.raises(DataError, match="transforms.json"):
        load_room(tmp_path)
    # a centre outside the room, and one inside the bed
    with pytest.raises(DataError, match="outside the room"):
        load_room(room_scene, centre=(0.0, 0.0, 10.0))
    meta = json.loads((room_scene / "transforms.json").read_text())
    bed = next(o for o in meta["scene3d"]["objects"] if o["name"] == "bed")
    with pytest.raises(DataError, match="inside an object"):
        load_room(room_scene, centre=tuple(bed["translation"]))
    # a huge mesh is decimated, with a warning; non-manifold edges are reported
    with caplog.at_level(logging.WARNING, logger="scene3d.methods.dreamspace.room"):
        room = load_room(room_scene, checks=RoomChecks(max_faces=4000))
    assert len(room.faces) <= 4000 and room.colors is not None and "decimating" in caplog.text
    box = trimesh.creation.box()
    fin = trimesh.Trimesh(np.vstack([box.vertices, [[0.0, 0.0, 2.0]]]), np.vstack([box.faces, [[0, 1, 8]]]))
    fin.export(tmp_path / "fin.ply")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scene3d.methods.dreamspace.room"), pytest.raises(DataError):
        load_room(tmp_path / "fin.ply", centre=(0.0, 0.0, 0.0))  # the box is closed: its inside is "inside an object"
    assert "non-manifold" in caplog.text
    # a real model that is not on this machine: one error naming it and `s3d models fetch`, before any compute
    cfg = dreamspace_config()
    cfg.pipeline.datamanager.data = room_scene
    cfg.pipeline.model.prompt = PROMPT
    cfg.pipeline.prior_settings = PriorSettings(models_dir=tmp_path / "no-models", hf_cache_dir=tmp_path / "no-cache")
    with pytest.raises(ModelNotFoundError, match="s3d models fetch controlnet-depth-sd15"):
        cfg.pipeline.setup(device="cpu", test_mode="val")
    # no prompt
    cfg = dreamspace_tiny_config()
    cfg.pipeline.datamanager.data = room_scene
    with pytest.raises(ValueError, match="prompt"):
        cfg.pipeline.setup(device="cpu", test_mode="val")


def _full_size_sd(kind: str, device: str):
    """Random-weight components with the real architectures (SD 1.5 + ControlNet 1.1, or SD 2 inpainting) in fp16:
    the memory and the code paths of the real models, without their weights."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from scene3d.priors.diffusion import StableDiffusionPrior
    from scene3d.priors.tiny import tiny_scheduler, tiny_tokenizer

    width, layers, heads = (768, 12, 12) if kind == "controlnet" else (1024, 23, 16)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4 if kind == "controlnet" else 9, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=width,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        attention_head_dim=8 if kind == "controlnet" else (5, 10, 20, 20),
        use_linear_projection=kind != "controlnet",
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512,
    )  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=4 * width,
                                        num_hidden_layers=layers, num_attention_heads=heads,
                                        max_position_embeddings=77))  # fmt: skip
    controlnet = ControlNetModel.from_unet(unet) if kind == "controlnet" else None
    modules = [m for m in (unet, vae, text, controlnet) if m is not None]
    for module in modules:
        module.to(device=device, dtype=torch.float16).requires_grad_(False).eval()
    return StableDiffusionPrior(unet, vae, text, tiny_tokenizer(), tiny_scheduler(), controlnet=controlnet,
                                execution_device=torch.device(device))  # fmt: skip


@pytest.mark.gpu
def test_paper_scale_stages_on_cuda_with_full_size_fp16_components(room_scene: Path) -> None:
    """dreamspace's settings on CUDA (the mesh ray casting on its torch path), with full-size random-weight fp16
    components in place of the downloaded models: geometry, the 512 × 1024 coarse panorama with its seam, a
    512² tile, the projection and an interior view (2 denoising steps each)."""
    from nerfstudio.engine.optimizers import Optimizers

    cfg = dreamspace_config()
    pc = cfg.pipeline
    pc.diffusion = pc.controlnet = pc.inpainting = "tiny-random"  # replaced below, before any prior is used
    pc.datamanager.data = room_scene
    pc.model.prompt = PROMPT
    pc.run_outputs = "skip"
    pc.steps = 2
    pipeline = pc.setup(device="cuda", test_mode="val")
    pipeline._priors["controlnet"] = _full_size_sd("controlnet", "cuda")
    pipeline._priors["inpainting"] = _full_size_sd("inpainting", "cuda")
    optimizers = Optimizers(cfg.optimizers, pipeline.get_param_groups())
    kinds = [s.kind for s in pipeline.schedule.stages]
    for step in (0, 1, 2, kinds.index("project"), kinds.index("view")):
        pipeline.train_iteration(step, optimizers, None)
    model = pipeline.model
    assert model.raycaster().device.type == "cuda" and model.display.device.type == "cuda"
    assert model.coarse.shape == (3, 1024, 2048) and bool(torch.isfinite(model.coarse).all())
    assert float(model.panorama_weight.max()) > 0
    out = model.get_outputs_for_camera(pipeline.datamanager.eval_dataset.cameras[0:1].to("cuda"))
    assert out["rgb"].shape == (480, 640, 3) and float(out["accumulation"].mean()) > 0.99
