"""The torch Gaussian rasterizer against a dense brute-force reference, gsplat's own torch pieces, and invariants."""

from __future__ import annotations

import math

import pytest
import torch

import scene3d.renderers.gaussians as gaussians
from scene3d.renderers.gaussians import rasterize
from scene3d.renderers.gaussians_project import eval_sh, project_gaussians, quat_to_rotmat
from scene3d.renderers.gaussians_reference import project_reference, random_gaussians, rasterize_reference

ARGS = ("means", "quats", "scales", "opacities", "colors")


def _scene(n=80, width=37, height=23, n_cameras=2, sh_degree=None, dtype=torch.float64, seed=0, **kw):
    kw.setdefault("scale_range", (0.02, 0.6))
    kw.setdefault("opacity_range", (0.05, 0.99))
    s = random_gaussians(n, width, height, n_cameras=n_cameras, sh_degree=sh_degree, seed=seed, dtype=dtype, **kw)
    for k in ARGS:
        s[k].requires_grad_(True)
    return s


def _grads(fn, scene, width, height, seed=1, **kw):
    """Images and the gradients of a fixed random linear function of them."""
    rgb, alpha = fn(**scene, width=width, height=height, **kw)[:2]
    g = torch.Generator().manual_seed(seed)
    loss = (rgb * torch.randn(rgb.shape, generator=g, dtype=rgb.dtype)).sum()
    loss = loss + (alpha * torch.randn(alpha.shape, generator=g, dtype=alpha.dtype)).sum()
    grads = torch.autograd.grad(loss, [scene[k] for k in ARGS], allow_unused=True)
    return rgb.detach(), alpha.detach(), grads


@torch.no_grad()
def _sequential(scene, width, height, cam=0):
    """gsplat's per-pixel loop, literally: sort by depth, blend front to back, stop before T would drop to 1e-4."""
    means2d, cov2, depths, radii, _ = project_reference(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], width, height, 0.3, 0.01, 1e10, 0.0
    )
    conics = torch.linalg.inv(cov2)
    order = sorted(range(len(depths[cam])), key=lambda i: float(depths[cam, i]))
    img = torch.zeros(height, width, 3, dtype=torch.float64)
    acc = torch.zeros(height, width, dtype=torch.float64)
    for py in range(height):
        for px in range(width):
            t = 1.0
            for i in order:
                r = int(radii[cam, i])
                if r <= 0:
                    continue
                mx, my = (float(v) for v in means2d[cam, i])
                tx0, tx1 = max(0, math.floor((mx - r) / 16)), math.ceil((mx + r) / 16)
                ty0, ty1 = max(0, math.floor((my - r) / 16)), math.ceil((my + r) / 16)
                if not (tx0 <= px // 16 < tx1 and ty0 <= py // 16 < ty1):
                    continue
                a, b, c = float(conics[cam, i, 0, 0]), float(conics[cam, i, 0, 1]), float(conics[cam, i, 1, 1])
                dx, dy = mx - (px + 0.5), my - (py + 0.5)
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(0.999, float(scene["opacities"][i]) * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if t * (1 - alpha) <= 1e-4:
                    break
                img[py, px] += alpha * t * scene["colors"][i]
                t *= 1 - alpha
            acc[py, px] = 1 - t
    return img, acc


def test_dense_reference_is_gsplats_sequential_loop():
    scene = _scene(n=25, width=20, height=18, n_cameras=1, scale_range=(0.2, 0.8), opacity_range=(0.6, 1.0))
    img, acc = _sequential(scene, 20, 18)
    rgb, alpha = rasterize_reference(**scene, width=20, height=18)
    assert float(acc.max()) > 0.99, "the scene should contain saturated pixels (early termination)"
    torch.testing.assert_close(rgb[0].detach(), img, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha[0, ..., 0].detach(), acc, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"rasterize_mode": "antialiased"},
        {"render_mode": "RGB+ED", "backgrounds": "random"},
        {"render_mode": "RGB+D"},
        {"render_mode": "D"},
        {"render_mode": "ED"},
        {"sh_degree": 0},
        {"sh_degree": 3, "backgrounds": "random"},
        {"per_camera_colors": True},
        {"radius_clip": 2.0, "eps2d": 0.1, "near_plane": 2.0},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default",
)
def test_torch_rasterizer_matches_dense_reference_float64(kw):
    kw = dict(kw)
    width, height = 37, 23
    scene = _scene(sh_degree=kw.get("sh_degree"))
    if kw.pop("per_camera_colors", False):
        scene["colors"] = torch.rand(2, 80, 3, dtype=torch.float64, requires_grad=True)
    if kw.get("backgrounds") == "random":
        kw["backgrounds"] = torch.rand(2, 3, dtype=torch.float64)
    rgb, alpha, grads = _grads(rasterize, scene, width, height, backend="torch", **kw)
    rgb_ref, alpha_ref, grads_ref = _grads(rasterize_reference, scene, width, height, **kw)
    assert float(alpha.max()) > 0.5
    torch.testing.assert_close(rgb, rgb_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(alpha, alpha_ref, rtol=1e-9, atol=1e-9)
    for name, g, g_ref in zip(ARGS, grads, grads_ref):
        if g_ref is None:
            assert g is None or float(g.abs().max()) == 0.0, name
            continue
        assert float(g_ref.abs().max()) > 0, name
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-9 * float(g_ref.abs().max()), msg=name)


def test_torch_rasterizer_matches_dense_reference_float32():
    width, height = 64, 48
    scene = _scene(n=300, width=width, height=height, n_cameras=1, sh_degree=2, dtype=torch.float32)
    rgb, alpha, grads = _grads(rasterize, scene, width, height, backend="torch", sh_degree=2)
    rgb_ref, alpha_ref, grads_ref = _grads(rasterize_reference, scene, width, height, sh_degree=2)
    # float32: the fast path evaluates exp(log o − σ) as a matrix product over tile-centred coordinates, so its
    # rounding differs from the reference's at the 1e-6 relative level; errors stay well under 1e-4.
    torch.testing.assert_close(rgb, rgb_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alpha, alpha_ref, rtol=1e-4, atol=1e-5)
    for name, g, g_ref in zip(ARGS, grads, grads_ref):
        scale = float(g_ref.abs().max())
        assert float((g - g_ref).abs().max()) <= 1e-3 * scale, name


@pytest.mark.parametrize(
    "tile_size,batch,max_block,cache_bytes,slice_pairs",
    [(4, 8, 1 << 22, 0, 1 << 21), (8, 3, 200, 60_000, 7), (16, 64, 1 << 22, 1 << 30, 50)],
    ids=["no-cache", "chunked-partly-cached-sliced", "big-tiles-sliced"],
)
def test_result_does_not_depend_on_tiling(monkeypatch, tile_size, batch, max_block, cache_bytes, slice_pairs):
    """Tile size, batch, chunking, depth slicing and how much of the forward pass the backward pass reuses change
    nothing."""
    width, height = 37, 23
    scene = _scene()
    base = _grads(rasterize, scene, width, height, backend="torch")
    monkeypatch.setattr(gaussians, "TILE_SIZE", tile_size)
    monkeypatch.setattr(gaussians, "BATCH", batch)
    monkeypatch.setattr(gaussians, "MAX_BLOCK", max_block)
    monkeypatch.setattr(gaussians, "CACHE_BYTES", cache_bytes)
    monkeypatch.setattr(gaussians, "SLICE_PAIRS", slice_pairs)
    other = _grads(rasterize, scene, width, height, backend="torch")
    torch.testing.assert_close(other[0], base[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(other[1], base[1], rtol=1e-10, atol=1e-10)
    for g, g0 in zip(other[2], base[2]):
        torch.testing.assert_close(g, g0, rtol=1e-8, atol=1e-10)


def test_depth_slices_skip_hidden_gaussians_exactly(monkeypatch):
    """Gaussians behind tiles that are already opaque are never binned, and the images and gradients still match
    the dense reference."""
    import scene3d.renderers.gaussians_raster as raster

    width, height = 24, 20
    behind = _scene(n=60, width=width, height=height, n_cameras=1, distance=4.0)
    g = torch.linspace(-1.2, 1.2, 5)
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(25, 2).repeat(3, 1)
    z = torch.tensor([-2.0, -1.9, -1.8]).repeat_interleave(25)[:, None]
    wall = {  # three layers of big, nearly opaque Gaussians right in front of the camera: an opaque wall
        "means": torch.cat([xy, z], dim=1), "quats": torch.tensor([[1.0, 0, 0, 0]]).repeat(75, 1),
        "scales": torch.full((75, 3), 0.6), "opacities": torch.full((75,), 0.999),
        "colors": torch.rand(75, 3, generator=torch.Generator().manual_seed(3)),
    }  # fmt: skip
    scene = {k: torch.cat([wall[k].double(), behind[k].detach()]).requires_grad_(True) for k in ARGS}
    scene |= {"viewmats": behind["viewmats"], "Ks": behind["Ks"]}
    made, kept = [], []
    original = raster.bin_slice

    def counting(fp, lo, hi, alive=None):
        bins = original(fp, lo, hi, alive)
        made.append(int(fp.counts[lo:hi].sum()))
        kept.append(len(bins.gauss))
        return bins

    monkeypatch.setattr(raster, "bin_slice", counting)
    monkeypatch.setattr(gaussians, "SLICE_PAIRS", 10)
    rgb, alpha, grads = _grads(rasterize, scene, width, height, backend="torch")
    rgb_ref, alpha_ref, grads_ref = _grads(rasterize_reference, scene, width, height)
    assert sum(kept) < sum(made), "some pairs behind opaque tiles should have been dropped"
    torch.testing.assert_close(rgb, rgb_ref, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(alpha, alpha_ref, rtol=1e-9, atol=1e-9)
    for name, g, g_ref in zip(ARGS, grads, grads_ref):
        # (isotropic wall Gaussians: the quaternion gradient is 0 up to rounding, so the tolerance has a floor)
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-9 * max(float(g_ref.abs().max()), 1e-3), msg=name)


def test_gradcheck_float64_tiny():
    scene = _scene(n=5, width=10, height=9, n_cameras=1, sh_degree=1, scale_range=(0.2, 0.5), opacity_range=(0.3, 0.9))
    inputs = tuple(scene[k] for k in ARGS)
    # gradcheck costs one backward pass per output: check 4 fixed random projections of the images instead
    weights = torch.randn(4, 9, 10, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def fn(means, quats, scales, opacities, colors):
        rgb, alpha, _ = rasterize(
            means, quats, scales, opacities, colors, scene["viewmats"], scene["Ks"], 10, 9,
            sh_degree=1, render_mode="RGB+ED", backgrounds=torch.tensor([[0.2, 0.3, 0.4]], dtype=torch.float64),
            backend="torch",
        )  # fmt: skip
        return (torch.cat([rgb, alpha], dim=-1)[0] * weights).sum(dim=(1, 2, 3))

    assert float(rasterize(*inputs, scene["viewmats"], scene["Ks"], 10, 9, sh_degree=1)[1].max()) > 0.5
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_projection_and_sh_match_gsplat_torch_reference():
    """gsplat's pure-torch ``_fully_fused_projection`` and ``_spherical_harmonics`` run on CPU: compare with them."""
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    s = random_gaussians(400, 64, 48, n_cameras=3, scale_range=(0.01, 0.5), seed=3)
    covars, _ = torch_impl._quat_scale_to_covar_preci(s["quats"], s["scales"], compute_preci=False)
    radii, means2d, depths, conics, comp = torch_impl._fully_fused_projection(
        s["means"], covars, s["viewmats"], s["Ks"], 64, 48, calc_compensations=True
    )
    proj = project_gaussians(s["means"], s["quats"], s["scales"], s["viewmats"], s["Ks"], 64, 48, compensate=True)
    ok = radii > 0
    assert int(ok.sum()) > 300 and torch.equal(proj.radii, radii.to(torch.int32))
    torch.testing.assert_close(proj.means2d[ok], means2d[ok])
    torch.testing.assert_close(proj.depths, depths)
    torch.testing.assert_close(proj.conics[ok], conics[ok], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(proj.compensations[ok], comp[ok], rtol=1e-4, atol=1e-5)
    dirs, coeffs = torch.randn(50, 3), torch.randn(50, 25, 3)
    for degree in range(5):
        torch.testing.assert_close(eval_sh(degree, dirs, coeffs), torch_impl._spherical_harmonics(degree, dirs, coeffs))


def _one(mean, scale, opacity, color, dtype=torch.float64):
    return {
        "means": torch.tensor([mean], dtype=dtype), "quats": torch.tensor([[1.0, 0, 0, 0]], dtype=dtype),
        "scales": torch.full((1, 3), scale, dtype=dtype), "opacities": torch.tensor([opacity], dtype=dtype),
        "colors": torch.tensor([color], dtype=dtype),
    }  # fmt: skip


def _cat(*gs):
    return {k: torch.cat([g[k] for g in gs]) for k in gs[0]}


def _camera(width=16, height=16, f=20.0, dtype=torch.float64):
    K = torch.tensor([[[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]], dtype=dtype)
    return {"viewmats": torch.eye(4, dtype=dtype)[None], "Ks": K, "width": width, "height": height}


def test_compositing_stops_before_transmittance_reaches_1e_4_and_clamps_alpha():
    # Three wide Gaussians centred on pixel (8, 8): α = o at that pixel centre.
    def on_pixel(z):  # projects onto the centre (8.5, 8.5) of pixel (8, 8) with f = 20, c = 8
        return [0.5 * z / 20, 0.5 * z / 20, z]

    front = _one(on_pixel(2.0), 1.0, 0.995, [1.0, 0.0, 0.0])
    middle = _one(on_pixel(3.0), 1.0, 0.995, [0.0, 1.0, 0.0])
    back = _one(on_pixel(4.0), 1.0, 1.0, [0.0, 0.0, 1.0])
    rgb, alpha, _ = rasterize(**_cat(front, middle, back), **_camera(), backend="torch")
    # T: 1 → 0.005; the middle Gaussian would take it to 2.5e-5 <= 1e-4, so it and all behind it are skipped.
    torch.testing.assert_close(rgb[0, 8, 8], torch.tensor([0.995, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(alpha[0, 8, 8, 0], torch.tensor(0.995, dtype=torch.float64))
    rgb, alpha, _ = rasterize(**back, **_camera(), backend="torch")  # opacity 1 is clamped to α = 0.999
    torch.testing.assert_close(alpha[0, 8, 8, 0], torch.tensor(0.999, dtype=torch.float64))


def test_faint_gaussians_are_skipped():
    faint = _one([0.0, 0.0, 2.0], 1.0, 0.9 / 255, [1.0, 1.0, 1.0])
    rgb, alpha, meta = rasterize(**faint, **_camera(), backend="torch")
    assert int(meta.radii[0, 0]) > 0 and float(alpha.abs().max()) == 0.0 and float(rgb.abs().max()) == 0.0


def test_empty_scene_renders_the_background_and_backpropagates():
    scene = {k: v[:0].clone().requires_grad_(True) for k, v in _one([0.0, 0.0, 2.0], 1.0, 0.5, [1, 1, 1]).items()}
    bg = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    rgb, alpha, meta = rasterize(**scene, **_camera(), backgrounds=bg, backend="torch")
    assert rgb.shape == (1, 16, 16, 3) and float(alpha.detach().abs().max()) == 0.0
    torch.testing.assert_close(rgb.detach(), bg[:, None, None, :].expand(1, 16, 16, 3))
    rgb.sum().backward()
    assert scene["means"].grad is not None and scene["means"].grad.shape == (0, 3)
    assert meta.radii.shape == (1, 0) and meta.means2d.shape == (1, 0, 2)


def test_gaussian_behind_the_camera_contributes_nothing():
    behind = _one([0.0, 0.0, -2.0], 1.0, 0.9, [1.0, 1.0, 1.0])
    rgb, alpha, meta = rasterize(**behind, **_camera(), backend="torch")
    assert int(meta.radii[0, 0]) == 0 and float(alpha.abs().max()) == 0.0


def test_camera_that_sees_nothing_renders_background():
    scene = _scene(n=30, n_cameras=1)
    away = torch.eye(4, dtype=torch.float64)[None].clone()
    away[0, 2, 3] = -5.0  # the cube is now behind this camera
    bg = torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64)
    rgb, alpha, meta = rasterize(**{k: scene[k] for k in ARGS}, viewmats=away, Ks=scene["Ks"], width=37, height=23,
                                 backgrounds=bg, backend="torch")  # fmt: skip
    assert int(meta.radii.max()) == 0 and float(alpha.abs().max()) == 0.0
    torch.testing.assert_close(rgb, bg[:, None, None, :].expand_as(rgb))
    rgb.sum().backward()
    assert float(scene["means"].grad.abs().max()) == 0.0


def test_permuting_gaussians_of_distinct_depths_changes_nothing():
    width, height = 37, 23
    scene = _scene()
    rgb, alpha, grads = _grads(rasterize, scene, width, height, backend="torch")
    perm = torch.randperm(80, generator=torch.Generator().manual_seed(5))
    permuted = {k: (v.detach()[perm].requires_grad_(True) if k in ARGS else v) for k, v in scene.items()}
    rgb_p, alpha_p, grads_p = _grads(rasterize, permuted, width, height, backend="torch")
    torch.testing.assert_close(rgb_p, rgb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alpha_p, alpha, rtol=1e-12, atol=1e-12)
    for g, g_p in zip(grads, grads_p):
        torch.testing.assert_close(g_p, g[perm], rtol=1e-9, atol=1e-12)


def test_unnormalised_quaternions_render_like_normalised_ones():
    scene = _scene(n=20)
    args = {k: v.detach() for k, v in scene.items()}
    a = rasterize(**args, width=37, height=23, backend="torch")[0]
    args["quats"] = args["quats"] * torch.linspace(0.01, 100.0, 20, dtype=torch.float64)[:, None]
    b = rasterize(**args, width=37, height=23, backend="torch")[0]
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(quat_to_rotmat(args["quats"]) @ quat_to_rotmat(args["quats"]).transpose(-1, -2),
                               torch.eye(3, dtype=torch.float64).expand(20, 3, 3))  # fmt: skip


def test_zero_scales_render_a_blur_sized_dot():
    dot = _one([0.0, 0.0, 2.0], 0.0, 0.8, [1.0, 1.0, 1.0])
    for k in ARGS:
        dot[k].requires_grad_(True)
    rgb, alpha, meta = rasterize(**dot, **_camera(), backend="torch")
    # Σ₂ = eps2d I: a 0.3 px² Gaussian, radius ceil(3 sqrt(0.3 + 0.1)) = 2 px, α = 0.8 at the centre pixel
    assert int(meta.radii[0, 0]) == 2
    # the mean projects to (8, 8), pixel (8, 8)'s centre is 0.5 px away on each axis: σ = ½ (0.25 + 0.25) / 0.3
    expected = torch.tensor(0.8 * math.exp(-0.5 * 0.5 / 0.3), dtype=torch.float64)
    torch.testing.assert_close(alpha[0, 8, 8, 0].detach(), expected)
    (rgb.sum() + alpha.sum()).backward()
    assert all(bool(torch.isfinite(dot[k].grad).all()) for k in ARGS)


def test_meta_serves_gsplat_default_strategy():
    strategy_mod = pytest.importorskip("gsplat.strategy")
    width, height = 37, 23
    scene = _scene(n=50, dtype=torch.float32)
    _, _, meta = rasterize(**scene, width=width, height=height, backend="torch", absgrad=True)
    for key in ("means2d", "radii", "width", "height", "n_cameras", "gaussian_ids"):
        assert key in meta
    assert meta["gaussian_ids"] is None and meta["n_cameras"] == 2
    strategy = strategy_mod.DefaultStrategy(absgrad=True)
    raw = {"means": scene["means"], "quats": scene["quats"], "scales": scene["scales"].log(),
           "opacities": torch.logit(scene["opacities"])}  # fmt: skip
    params = {k: torch.nn.Parameter(v.detach().clone()) for k, v in raw.items()}
    opts = {k: torch.optim.Adam([p]) for k, p in params.items()}
    rgb, alpha, meta = rasterize(
        params["means"], params["quats"], params["scales"].exp(), torch.sigmoid(params["opacities"]),
        scene["colors"].detach(), scene["viewmats"], scene["Ks"], width, height, backend="torch", absgrad=True,
    )  # fmt: skip
    state = strategy.initialize_state()
    strategy.step_pre_backward(params, opts, state, 0, meta)
    rgb.sum().backward()
    grad, absgrad = meta["means2d"].grad, meta["means2d"].absgrad
    assert grad.shape == absgrad.shape == (2, 50, 2)
    assert bool((absgrad >= grad.abs() - 1e-6).all()) and float(absgrad.max()) > 0
    strategy.step_post_backward(params, opts, state, 0, meta)
    assert state["count"].shape == (50,) and float(state["count"].max()) == 2.0
