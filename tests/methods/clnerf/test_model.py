"""CLNeRF's field and model: growing embeddings, per-ray scan ids, replay renders, the viewer slider, paper scale,
and an appearance-only change carried by the appearance embedding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nerfstudio.cameras.rays import RayBundle

from scene3d.methods.clnerf.datamanager import cameras_from_poses
from scene3d.methods.clnerf.field import CLNeRFField, CLNeRFFieldSpec, ScanEmbedding
from scene3d.methods.clnerf.rendering import clnerf_losses, opacity_entropy

SPEC = CLNeRFFieldSpec(hash_levels=2, hash_log2_size=10, hash_max_resolution=32.0, density_hidden=16, color_hidden=16,
                       appearance_dim=8, geometry_dim=4, backend="torch")  # fmt: skip
BOX = torch.tensor([[-1.0, -1, -1], [1, 1, 1]])


def test_embedding_table_grows_and_keeps_old_rows() -> None:
    field = CLNeRFField(BOX, SPEC, num_scans=2)
    param = field.appearance_embedding.weight
    old_a = param.detach().clone()
    old_g = field.geometry_embedding.weight.detach().clone()
    field.grow(4, init="copy_last")
    assert field.num_scans == 4
    assert field.appearance_embedding.weight is param  # an optimizer holding it stays valid
    assert torch.equal(field.appearance_embedding.weight[:2], old_a)
    assert torch.equal(field.geometry_embedding.weight[:2], old_g)
    assert torch.equal(field.appearance_embedding.weight[3], old_a[1])  # copy_last
    field.grow(5)  # random new row, old rows untouched
    assert torch.equal(field.appearance_embedding.weight[:2], old_a)
    with pytest.raises(ValueError, match="only grows"):
        field.grow(3)


def test_state_dict_with_more_scans_resizes_the_tables() -> None:
    big = CLNeRFField(BOX, SPEC, num_scans=3)
    small = CLNeRFField(BOX, SPEC, num_scans=1)
    small.load_state_dict(big.state_dict())
    assert small.num_scans == 3
    assert torch.equal(small.geometry_embedding.weight, big.geometry_embedding.weight)
    emb = ScanEmbedding(2, 3)
    with pytest.raises(ValueError, match="num_scans and dim"):
        ScanEmbedding(0, 3)
    assert emb(torch.tensor([1, 0])).shape == (2, 3)


def test_each_sample_uses_its_own_scans_embeddings() -> None:
    field = CLNeRFField(BOX, SPEC, num_scans=3)
    with torch.no_grad():
        field.appearance_embedding.weight[1] += 5.0
        field.geometry_embedding.weight[2] += 5.0
    x = torch.rand(6, 3) * 1.6 - 0.8
    d = torch.nn.functional.normalize(torch.randn(6, 3), dim=-1)
    mixed = field(x, d, torch.tensor([0, 1, 2, 0, 1, 2]))
    for scan in range(3):
        alone = field(x, d, torch.full((6,), scan))
        rows = torch.arange(6)[torch.tensor([0, 1, 2, 0, 1, 2]) == scan]
        assert torch.allclose(mixed.rgb[rows], alone.rgb[rows])
        assert torch.allclose(mixed.density[rows], alone.density[rows])
    other = field(x, d, torch.full((6,), 1))
    assert not torch.allclose(other.rgb[[0, 3]], mixed.rgb[[0, 3]])  # scan 1's appearance differs from scan 0's
    with pytest.raises(ValueError, match="scan ids"):
        field(x, d, torch.full((6,), 3))


def test_losses_are_mse_plus_weighted_opacity_entropy() -> None:
    rgb, target = torch.zeros(4, 3), torch.full((4, 3), 0.5)
    opacity = torch.tensor([[0.0], [1.0], [0.5], [0.5]])
    losses = clnerf_losses(rgb, target, opacity, opacity_weight=1e-3)
    assert torch.isclose(losses.rgb, torch.tensor(0.25))
    expected = 1e-3 * (2 * 0.5 * torch.log(torch.tensor(2.0))) / 4
    assert torch.isclose(losses.opacity, expected, atol=1e-8)
    assert torch.isclose(losses.total, losses.rgb + losses.opacity)
    assert float(opacity_entropy(torch.tensor(1.0))) < 1e-6


def test_replay_renders_use_each_poses_own_scan_id(sphere_scans: Path, micro) -> None:
    """The pipeline's replay render of a stored pose equals the model's render of that pose with the pose's scan id."""
    pipe = micro.train(micro.config(sphere_scans, iterations=2))
    model = pipe.model
    assert model.num_scans == 3
    with torch.no_grad():  # make the scans look clearly different
        model.field.appearance_embedding.weight[1] += 3.0
        model.field.appearance_embedding.weight[2] -= 3.0
    store = pipe.carried.poses
    picks = [int(store.indices_of_scans([s])[0]) for s in range(3)]
    renders = pipe.render_replay(picks)
    model.eval()
    for index, image in zip(picks, renders):
        own = int(store.scan_ids[index])
        per_id = {}
        for scan in range(3):
            one = store.select(torch.tensor([index]))
            cam = cameras_from_poses(one)
            cam.metadata = {"scan_id": torch.full((1, 1), scan)}
            with torch.no_grad():
                per_id[scan] = model.get_outputs_for_camera(cam)["rgb"]
        expected = (per_id[own].clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        assert torch.equal(image, expected)
        for scan in range(3):
            if scan != own:
                assert (image.float() - (per_id[scan].clamp(0, 1) * 255)).abs().mean() > 1.0


def test_rays_without_a_scan_id_render_the_viewer_sliders_scan(sphere_scans: Path, micro) -> None:
    pipe = micro.train(micro.config(sphere_scans, iterations=1))
    model = pipe.model
    slider = model.scan_slider
    assert (slider.min, slider.max, slider.default_value) == (0, 2, 2)
    # nerfstudio's viewer installs the ViewerElements it finds on the pipeline: the slider is one of them
    from nerfstudio.viewer.utils import parse_object
    from nerfstudio.viewer.viewer_elements import ViewerElement

    assert any(element is slider for _, element in parse_object(pipe, ViewerElement, "Custom Elements"))
    rays = RayBundle(origins=torch.tensor([[0.0, -2.5, 0.3]]), directions=torch.tensor([[0.0, 1.0, -0.1]]),
                     pixel_area=torch.ones(1, 1))  # fmt: skip
    assert model.scan_ids_of(rays).tolist() == [2]
    slider.value = 0  # what the viewer's slider does
    assert model.scan_ids_of(rays).tolist() == [0]
    rays.metadata = {"scan_index": torch.tensor([[1]])}  # a held-out view of the dataset's second scan
    assert model.scan_ids_of(rays).tolist() == [1]
    rays.metadata = {"scan_id": torch.tensor([[2]])}
    assert model.scan_ids_of(rays).tolist() == [2]


def test_paper_scale_clnerf_constructs_and_runs_one_step_on_cpu(sphere_scans: Path) -> None:
    """``clnerf`` as registered (L=16, F=2, T=2^19, 64-wide MLPs, 48/16-d embeddings, 128³ cascades, Δ=√3/1024),
    with 64 rays instead of 8192 so the step fits a CPU test. The step is step 1 of the scan: the occupancy
    warm-up refresh of step 0 (all 128³ cells of every cascade) takes minutes on a CPU and is not run here."""
    from nerfstudio.engine.optimizers import Optimizers

    from scene3d.methods.clnerf.config import clnerf_config

    cfg = clnerf_config()
    cfg.pipeline.datamanager.data = sphere_scans / "scan_0"
    cfg.pipeline.datamanager.train_num_rays_per_batch = 64
    cfg.pipeline.model.backend = "torch"
    pipe = cfg.pipeline.setup(device="cpu", test_mode="val")
    enc = pipe.model.field.radiance.encoding
    assert (enc.layout.n_levels, enc.layout.features_per_level, enc.layout.log2_hashmap_size) == (16, 2, 19)
    assert pipe.model.field.appearance_embedding.weight.shape == (1, 48)
    assert pipe.model.field.geometry_embedding.weight.shape == (1, 16)
    assert cfg.pipeline.iterations_per_scan == 20000 and cfg.optimizers["fields"]["optimizer"].lr == 1e-2
    optimizers = Optimizers(cfg.optimizers, pipe.get_param_groups())
    before = pipe.model.field.radiance.density_mlp.net[0].weight.detach().clone()
    loss, losses, metrics = pipe.train_iteration(1, optimizers, None)
    assert torch.isfinite(loss)
    assert not torch.equal(before, pipe.model.field.radiance.density_mlp.net[0].weight)


def test_appearance_only_change_is_carried_by_the_appearance_embedding(sphere_scans: Path, micro) -> None:
    """Scans 0 and 1 show one sphere in two colours: renders of a view with either scan id share their geometry
    (opacity and depth) and differ in colour, each with its own scan's colour."""
    cfg = micro.config(sphere_scans, iterations=150)
    cfg.pipeline.datamanager.dataparser.scans = (0, 1)
    pipe = micro.train(cfg)
    model = pipe.model
    model.eval()
    camera, batch = pipe.datamanager.eval_view(pipe.datamanager.scan_eval_indices(0)[0])
    outs = {}
    for scan in (0, 1):
        camera.metadata = {"scan_id": torch.full((1, 1), scan)}
        with torch.no_grad():
            outs[scan] = model.get_outputs_for_camera(camera)
    acc0, acc1 = outs[0]["accumulation"][..., 0], outs[1]["accumulation"][..., 0]
    fg = (acc0 > 0.5) & (acc1 > 0.5)
    sphere = batch["image"].sum(-1) < 2.9  # not the white background
    assert fg.sum() > 0.5 * sphere.sum(), "the sphere was not learned"
    # same geometry: opacity and depth agree
    assert (acc0 - acc1).abs().mean() < 0.05
    depth_gap = (outs[0]["depth"][..., 0] - outs[1]["depth"][..., 0])[fg].abs().mean()
    assert depth_gap < 0.05 * 2.5  # cameras are 2.5 from the sphere's centre
    # different appearance: red-dominant with scan 0's embedding, blue-dominant with scan 1's
    rgb0, rgb1 = outs[0]["rgb"][fg], outs[1]["rgb"][fg]
    assert float((rgb0[:, 0] - rgb0[:, 2]).mean()) > 0.2
    assert float((rgb1[:, 2] - rgb1[:, 0]).mean()) > 0.2
