"""groundtruth: priors: renders at any camera, exactness with imperfections off, recorded imperfections, SDS to the
truth, the resolver and its errors. Uses the session's 48 px object scene (tests/datasets/conftest.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scene3d.core.cameras import CameraBatch, look_at
from scene3d.core.errors import DataError
from scene3d.datasets.gtpriors import GroundTruthOptions, Imperfections, render
from scene3d.datasets.gtpriors.diffusion import GroundTruthDiffusionPrior
from scene3d.datasets.gtpriors.imperfections import gaussian_blur
from scene3d.datasets.gtpriors.perception import GroundTruthCLIP, GroundTruthDepth, GroundTruthNormals
from scene3d.datasets.gtpriors.variants import look_for_prompt, shape_for_prompt
from scene3d.datasets.groundtruth import read_frame
from scene3d.datasets.stored import read_scene
from scene3d.methods.common.priors import resolve_prior
from scene3d.priors import (
    CLIPSimilarity,
    DepthEstimator,
    NormalEstimator,
    PriorSettings,
    StableDiffusionPrior,
    VGGFeatures,
    align_depth,
    image_to_image,
    inpaint,
    sds,
    text_to_image,
)

pytestmark = pytest.mark.data
EXACT = GroundTruthOptions(imperfections=Imperfections(enabled=False))
CPU = PriorSettings(device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _preset(folder: Path) -> str:
    return f"groundtruth:{folder}"


def _stored_cameras(folder: Path, indices: list[int]) -> CameraBatch:
    stored = read_scene(folder)
    return CameraBatch.pinhole(stored.c2w[indices], stored.K, stored.width, stored.height)


def _orbit(n: int, size: int, radius: float = 4.0) -> CameraBatch:
    angles = torch.linspace(0.3, 5.0, n)
    eyes = torch.stack([radius * torch.cos(angles), radius * torch.sin(angles), torch.full((n,), 2.2)], -1)
    return CameraBatch.from_fov(look_at(eyes, torch.tensor([0.0, 0.0, 0.3]).expand(n, 3)), 40.0, size, size)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10.0 * torch.log10(((a - b) ** 2).mean()))


# ------------------------------------------------------------------------------------------------ rendering
def test_render_at_stored_views_is_the_dataset(object_scene: Path):
    stored = read_scene(object_scene)
    cams = _stored_cameras(object_scene, [0, 5])
    for stylized in (False, True):
        out = render(stored.scene, cams, stylized=stylized, antialias=True)
        for j, i in enumerate([0, 5]):
            gt = read_frame(object_scene, i)
            rgb = np.round(out.rgb[j].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            assert np.array_equal(rgb, gt.stylized if stylized else gt.rgb)  # bit for bit
            assert np.abs(out.depth[j, 0].numpy() - gt.depth).max() <= 0.5e-3 + 1e-6  # the PNG's millimetres
            assert np.array_equal(out.mask[j, 0].numpy(), gt.mask)
            hit = gt.depth > 0
            cos = (out.normals[j].permute(1, 2, 0).numpy()[hit] * gt.normals[hit]).sum(-1)
            assert cos.min() > 0.99  # 8-bit normal PNG
    # one ray per pixel: depth, normals and masks are the same samples, colour differs at edges only
    aliased = render(stored.scene, cams, antialias=False)
    assert torch.equal(aliased.depth, out.depth) and torch.equal(aliased.mask, out.mask)
    assert _psnr(aliased.rgb, render(stored.scene, cams, antialias=True).rgb) > 20.0


def test_render_panorama_from_any_centre_agrees_with_pinhole_views(object_scene: Path):
    scene = read_scene(object_scene).scene
    centre = torch.tensor([0.4, -2.5, 1.2])
    pose = look_at(centre, centre + torch.tensor([0.0, 1.0, 0.0]))
    pano = render(scene, CameraBatch.equirectangular(pose, 64, 32), antialias=False)
    assert pano.hit.float().mean() > 0.05 and tuple(pano.rgb.shape) == (1, 3, 32, 64)
    # the panorama's middle row/column looks along −Z of the pose: a pinhole camera with that pose and an odd
    # size has its centre pixel on the same ray; equirect depth is distance along the ray = z-depth there
    pin = render(scene, CameraBatch.from_fov(pose, 30.0, 33, 33), antialias=False)
    origins, dirs = CameraBatch.equirectangular(pose, 64, 32).rays()
    # the equirect pixel whose direction is closest to the pinhole's centre ray
    centre_dir = -pose[:3, 2]
    row, col = divmod(int((dirs[0].reshape(-1, 3) @ centre_dir).argmax()), 64)
    angle = math.degrees(math.acos(min(1.0, float(dirs[0, row, col] @ centre_dir))))
    assert angle < 4.0
    assert abs(float(pano.depth[0, 0, row, col]) - float(pin.depth[0, 0, 16, 16])) < 0.15


# ------------------------------------------------------------------------------------------------ exactness
def test_every_operation_returns_the_truth_with_imperfections_off(object_scene: Path):
    preset = _preset(object_scene)
    sd = resolve_prior("diffusion", preset, CPU, groundtruth=EXACT)
    cams = _orbit(2, 32)
    truth = render(sd.source.base, cams, antialias=False)
    prompts = ["a tabletop scene"] * 2
    out = text_to_image(sd, prompts, height=32, width=32, cameras=cams)
    assert torch.equal(out.images, truth.rgb)
    # cameras at another resolution are scaled to the requested size
    assert torch.equal(text_to_image(sd, prompts, height=32, width=32, cameras=cams.scaled(64, 64)).images, truth.rgb)
    assert torch.equal(image_to_image(sd, torch.rand(2, 3, 32, 32), prompts, cameras=cams).images, truth.rgb)
    stylized = text_to_image(sd, ["a cartoon tabletop"] * 2, height=32, width=32, cameras=cams).images
    assert torch.equal(stylized, render(sd.source.base, cams, stylized=True, antialias=False).rgb)
    # inpainting: every candidate is the truth inside the mask and the input outside
    inp = resolve_prior("inpainting", preset, CPU, groundtruth=EXACT)
    assert inp.is_inpainting
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 4:20] = 1.0
    cands = inpaint(inp, images, mask, "a tabletop scene", num_images_per_prompt=3, cameras=cams).images
    expected = (mask * truth.rgb + (1 - mask) * images).repeat_interleave(3, 0)
    assert torch.equal(cands, expected)
    # noise prediction: x̂₀ = (x_t − √(1−ᾱ) ε̂)/√ᾱ is the truth at any guidance scale
    x0 = 2 * truth.rgb - 1
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([100, 700])
    a = sd.alphas_cumprod()[t].view(-1, 1, 1, 1)
    x_t = sd.add_noise(x0, noise, t)
    for scale in (1.0, 7.5, 100.0):
        eps = sd.predict_noise(x_t, t, sd.embed(prompts), scale, cameras=cams).eps
        torch.testing.assert_close((x_t - (1 - a).sqrt() * eps) / a.sqrt(), x0, atol=1e-4, rtol=0)
    # depth: Depth Anything's disparity, exactly 1 / z-depth (0 where nothing is hit)
    depth = resolve_prior("depth", preset, CPU, groundtruth=EXACT)(truth.rgb, cameras=cams)
    assert torch.equal(depth, torch.where(truth.hit, 1.0 / truth.depth.clamp_min(1e-6), 0.0))
    # normals: the world normals in each camera's frame
    normals = resolve_prior("normals", preset, CPU, groundtruth=EXACT)(truth.rgb, cameras=cams)
    n_cam = torch.einsum("bji,bjhw->bihw", cams.c2w[:, :3, :3], truth.normals)
    torch.testing.assert_close(normals[truth.hit.expand(-1, 3, -1, -1)], n_cam[truth.hit.expand(-1, 3, -1, -1)])
    # CLIP: the truth is as similar as can be
    clip = resolve_prior("clip", preset, CPU, groundtruth=EXACT)
    torch.testing.assert_close(clip.image_text_similarity(truth.rgb, prompts[0], cameras=cams), torch.ones(2, 1))


# ------------------------------------------------------------------------------------------------ imperfections
def test_depth_alignment_recovers_the_recorded_scale_and_shift(object_scene: Path):
    cams = _orbit(3, 40)
    clean = GroundTruthOptions(imperfections=Imperfections(depth_distortion=0.0, depth_noise=0.0, seed=3))
    # (options, relative tolerance on the scale, on the shift as a fraction of the median disparity, on depth);
    # with the default smooth distortion 1 + a·f (a = 0.1, |f| <= 1) the fitted scale absorbs part of f's mean
    defaults = GroundTruthOptions(imperfections=Imperfections(seed=3))
    cases = ((clean, 1e-4, 1e-4, 1e-3), (defaults, 2 * defaults.imperfections.depth_distortion, 0.3, 0.06))
    for options, scale_tol, shift_tol, depth_tol in cases:
        estimator = resolve_prior("depth", _preset(object_scene), CPU, groundtruth=options)
        truth = render(estimator.source.base, cams, antialias=False)
        pred = estimator(torch.zeros(3, 3, 40, 40), cameras=cams)
        draw = estimator.source.last("depth").draw
        assert float((draw.scale - 1).abs().min()) > 0.01 and float(draw.shift.abs().min()) > 0  # something hidden
        fit = align_depth(pred, truth.depth, truth.hit, space="disparity")
        # the fit maps the prediction s·d + b back onto d: scale 1/s, shift −b/s
        torch.testing.assert_close(fit.scale, 1.0 / draw.scale, rtol=scale_tol, atol=0.0)
        median = torch.stack([(1 / d[h]).median() for d, h in zip(truth.depth, truth.hit, strict=True)])
        assert bool(((fit.shift + draw.shift / draw.scale).abs() <= shift_tol * median).all())
        depth_error = ((fit.depth - truth.depth).abs() / truth.depth.clamp_min(1e-6))[truth.hit]
        assert float(depth_error.median()) < depth_tol
    # seeded: the same options and the same call order give the same draws; another seed, other draws
    from scene3d.datasets.gtpriors.source import GroundTruthSource

    stored = read_scene(object_scene)
    images = torch.zeros(3, 3, 40, 40)
    one = [GroundTruthDepth(GroundTruthSource(stored, defaults))(images, cameras=cams) for _ in range(2)]
    other = GroundTruthDepth(GroundTruthSource(stored, GroundTruthOptions(imperfections=Imperfections(seed=4))))
    assert torch.equal(one[0], one[1]) and not torch.equal(one[0], other(images, cameras=cams))


def test_clean_inpainting_candidate_is_ranked_first_by_the_clip_twin(object_scene: Path):
    inp = resolve_prior("inpainting", _preset(object_scene), CPU)
    clip = resolve_prior("clip", _preset(object_scene), CPU)
    cams = _orbit(3, 48)
    truth = render(inp.source.base, cams, antialias=False).rgb
    mask = torch.zeros(3, 1, 48, 48)
    mask[0, :, 10:40, 8:30] = 1
    mask[1, :, 0:24, :] = 1
    mask[2, :, 20:48, 20:48] = 1
    k = 6
    gen = torch.Generator().manual_seed(5)
    cands = inpaint(inp, truth * (1 - mask), mask, "a tabletop scene", num_images_per_prompt=k, cameras=cams,
                    generator=gen).images.view(3, k, 3, 48, 48)
    draw = inp.source.last("inpaint").draw
    for i in range(3):
        assert draw.perturbations[i].count("clean") == 1
        assert set(draw.perturbations[i]) == {"clean", "color_shift", "blur", "offset", "wrong_patch"}
        outside = (1 - mask[i]).bool().expand(3, -1, -1)
        assert all(torch.equal(c[outside], truth[i][outside]) for c in cands[i])  # the input untouched outside
        sims = clip.image_text_similarity(cands[i], "a tabletop scene", cameras=cams[i].expand_to(k))[:, 0]
        assert int(sims.argmax()) == draw.clean_index[i]
        assert float(sims.max() - sims.sort().values[-2]) > 1e-4  # clearly first, not a tie


def test_normals_carry_the_configured_angular_noise(object_scene: Path):
    cams = _orbit(2, 40)
    estimator = resolve_prior("normals", _preset(object_scene), CPU,
                              groundtruth=GroundTruthOptions(imperfections=Imperfections(normal_noise_deg=4.0, normal_bias_deg=0.0)))  # fmt: skip
    pred = estimator(torch.zeros(2, 3, 40, 40), cameras=cams)
    draw = estimator.source.last("normals").draw
    # per-axis tangential noise tan(σ): the angle is Rayleigh distributed, mean σ·√(π/2)
    assert 0.8 * 4.0 * math.sqrt(math.pi / 2) < float(draw.mean_error_deg.mean()) < 1.2 * 4.0 * math.sqrt(math.pi / 2)
    torch.testing.assert_close(pred.norm(dim=1), torch.ones(2, 40, 40))


# ------------------------------------------------------------------------------------------------ SDS
def test_sds_with_the_groundtruth_prior_drives_a_free_image_to_the_truth(object_scene: Path):
    sd = resolve_prior("diffusion", _preset(object_scene), CPU)  # default imperfections
    cams = _orbit(1, 48)
    truth = render(sd.source.base, cams, antialias=False).rgb
    emb = sd.embed("a tabletop scene")

    def optimise(steps: int, guidance: float) -> torch.Tensor:
        image = torch.full((1, 3, 48, 48), 0.5, requires_grad=True)
        opt = torch.optim.Adam([image], lr=0.02)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
        gen = torch.Generator().manual_seed(0)
        for _ in range(steps):
            out = sds(sd, sd.encode_images(image.clamp(0, 1)), emb, guidance_scale=guidance, cameras=cams, generator=gen)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            schedule.step()
        return image.detach().clamp(0, 1)

    # the gate (>= 30 dB at 150 steps); with the SDS step switched off (0 steps) the image stays grey (~10 dB)
    assert _psnr(optimise(150, 1.0), truth) >= 30.0
    # with CFG s > 1 the fixed point is the documented over-sharpened truth x + (s − 1)(x − blur(x))
    s = 7.5
    x = 2 * truth - 1
    fixed = (x + (s - 1) * (x - gaussian_blur(x, sd.uncond_sigma(48, 48))) + 1) / 2
    inside = (fixed > 0.02) & (fixed < 0.98)
    image = optimise(150, s)
    assert float(-10 * torch.log10(((image - fixed) ** 2)[inside].mean())) >= 30.0


# ------------------------------------------------------------------------------------------------ resolver
def test_groundtruth_presets_resolve_to_the_classes_methods_call(object_scene: Path):
    preset = _preset(object_scene)
    expected = {
        "diffusion": StableDiffusionPrior, "inpainting": StableDiffusionPrior, "controlnet": StableDiffusionPrior,
        "depth": DepthEstimator, "normals": NormalEstimator, "clip": CLIPSimilarity, "vgg": VGGFeatures,
    }  # fmt: skip
    for kind, cls in expected.items():
        assert isinstance(resolve_prior(kind, preset, CPU), cls), kind  # type: ignore[arg-type]
    assert isinstance(resolve_prior("diffusion", preset, CPU), GroundTruthDiffusionPrior)
    assert isinstance(resolve_prior("clip", preset, CPU), GroundTruthCLIP)
    assert isinstance(resolve_prior("normals", preset, CPU), GroundTruthNormals)
    assert resolve_prior("controlnet", preset, CPU).controlnet is not None
    # the twins of one dataset share one source (one ray caster, one record log)
    assert resolve_prior("depth", preset, CPU).source is resolve_prior("clip", preset, CPU).source
    with pytest.raises(ValueError, match="pass cameras="):
        resolve_prior("depth", preset, CPU)(torch.rand(1, 3, 16, 16))


def test_bad_groundtruth_paths_give_one_error_naming_path_and_what_is_missing(tmp_path: Path, object_scene: Path):
    with pytest.raises(DataError, match=r"nope: not found; expected a dataset folder written by `s3d data synth`"):
        resolve_prior("depth", f"groundtruth:{tmp_path / 'nope'}", CPU)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: field 'transforms.json': missing"):
        resolve_prior("diffusion", f"groundtruth:{tmp_path / 'empty'}", CPU)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "transforms.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(DataError, match=r"transforms.json: field 'scene3d': missing"):
        resolve_prior("clip", f"groundtruth:{plain}", CPU)
    root = tmp_path / "changing"
    (root / "step_00").mkdir(parents=True)
    (root / "manifest.json").write_text("{}")
    with pytest.raises(DataError, match=r"changing.*step_00"):
        resolve_prior("normals", f"groundtruth:{root}", CPU)
    meta = json.loads((object_scene / "transforms.json").read_text())
    meta["scene3d"]["objects"][1]["shape"] = "dodecahedron"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"scene3d.objects\[1\].*dodecahedron"):
        resolve_prior("diffusion", f"groundtruth:{broken}", CPU)


def test_keyword_rules_and_scene_variants(object_scene: Path):
    assert look_for_prompt("A Cartoon bedroom") and look_for_prompt("a room, stylized") and not look_for_prompt("a bedroom")
    assert shape_for_prompt("two red balls and a cube") == "sphere" and shape_for_prompt("a donut") == "torus"
    assert shape_for_prompt("a teapot") == "sphere"
    cams = _orbit(2, 40)
    box = ((-0.3, -0.3, 0.0), (0.3, 0.3, 0.6))
    sd = resolve_prior("diffusion", _preset(object_scene), CPU, groundtruth=GroundTruthOptions(insert_box=box))
    base = render(sd.source.base, cams, antialias=False)
    with_cube = text_to_image(sd, ["a wooden cube"] * 2, height=40, width=40, cameras=cams).images
    assert sd.source.last("text_to_image").targets[0].insert_shape == "box"
    cube = render(sd.source.scene_for(sd.source.target("a cube")), cams, antialias=False)
    assert torch.equal(with_cube, cube.rgb)
    changed = (cube.rgb != base.rgb).any(1, keepdim=True)
    # only where the inserted object is seen (or shadows) does the image change; the object is inside the box
    inserted = cube.object_ids == len(sd.source.base.objects)
    assert bool(inserted.any()) and bool(changed[inserted].all())
    verts = sd.source.scene_for(sd.source.target("a cube")).objects[-1].world_mesh.vertices
    assert (verts >= np.array(box[0]) - 1e-9).all() and (verts <= np.array(box[1]) + 1e-9).all()
    # a lone object: no ground, centred on the origin
    lone = resolve_prior("diffusion", _preset(object_scene), CPU, groundtruth=GroundTruthOptions(lone_object="auto"))
    scene = lone.source.base
    assert len(scene.objects) == 1 and scene.objects[0].foreground
    v = scene.objects[0].world_mesh.vertices
    np.testing.assert_allclose((v.min(0) + v.max(0)) / 2, 0.0, atol=1e-9)
    seen = render(scene, _orbit(2, 40, radius=2.5), antialias=False)
    assert bool(seen.hit.any()) and torch.equal(seen.hit, seen.mask)  # every surface seen is the object
    with pytest.raises(ValueError, match="not in the scene"):
        resolve_prior("depth", _preset(object_scene), CPU, groundtruth=GroundTruthOptions(lone_object="chair"))


def test_variational_score_twin_is_the_exact_score_of_the_last_render(object_scene: Path):
    from scene3d.methods.common.priors import variational_score
    from scene3d.priors import VariationalScore, dsd

    sd = resolve_prior("diffusion", _preset(object_scene), CPU)
    var = variational_score(sd, rank=4)
    assert isinstance(var, VariationalScore)
    cams = _orbit(2, 32)
    emb = sd.embed("a tabletop scene")
    gen = torch.Generator().manual_seed(0)
    z = sd.encode_images(torch.rand(2, 3, 32, 32, generator=gen))
    noise = torch.randn(2, 3, 32, 32, generator=gen)
    t = torch.tensor([300, 800])
    x_t = sd.add_noise(z, noise, t)
    # before it has seen a render at a camera, ε_ψ is the pretrained ε_φ (a zero-initialised LoRA)
    assert torch.equal(var.predict_noise(x_t, t, emb, cams), sd.predict_noise(x_t, t, emb, 1.0, cameras=cams).eps)
    loss = var.diffusion_loss(z, emb, cams.c2w, generator=gen)
    loss.backward()
    assert float(loss.detach()) == 0.0 and len(list(var.adapter.parameters())) == 1
    torch.testing.assert_close(var.predict_noise(x_t, t, emb, cams), noise, atol=1e-4, rtol=0)
    # DSD (λ_var = 1) with it drives a free image to the truth
    cam = cams[0]
    truth = render(sd.source.base, cam, antialias=False).rgb
    image = torch.full((1, 3, 32, 32), 0.5, requires_grad=True)
    opt = torch.optim.Adam([image], lr=0.02)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 120)
    for _ in range(120):
        latents = sd.encode_images(image.clamp(0, 1))
        var.diffusion_loss(latents, emb, cam)
        out = dsd(sd, var, latents, emb, cam, cfg_weight=0.0, variational_weight=1.0, generator=gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        schedule.step()
    assert _psnr(image.detach().clamp(0, 1), truth) >= 30.0
    # a real or tiny prior gets the LoRA variational score
    tiny = resolve_prior("diffusion", "tiny-random", CPU)
    lora = variational_score(tiny, rank=2)
    assert type(lora) is VariationalScore and lora.adapter.rank == 2
    lora.adapter.remove()
