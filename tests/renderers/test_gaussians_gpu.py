"""On a CUDA machine: the torch rasterizer against gsplat's CUDA kernels (forward and gradients), and MCMC's torch
relocation twin against gsplat's ``compute_relocation`` kernel."""

from __future__ import annotations

import pytest
import torch

from scene3d.renderers.gaussians import rasterize
from scene3d.renderers.gaussians_reference import random_gaussians

ARGS = ("means", "quats", "scales", "opacities", "colors")


def _scene(sh_degree, n=2000, size=96, n_cameras=2):
    s = random_gaussians(n, size, size, n_cameras=n_cameras, sh_degree=sh_degree, scale_range=(0.01, 0.1), seed=4)
    return {k: v.cuda().requires_grad_(k in ARGS) for k, v in s.items()}


def _run(scene, backend, size, **kw):
    rgb, alpha, meta = rasterize(**scene, width=size, height=size, backend=backend, **kw)
    meta["means2d"].retain_grad()
    g = torch.Generator(device="cuda").manual_seed(0)
    loss = (rgb * torch.randn(rgb.shape, generator=g, device="cuda")).sum() + (alpha * 0.5).sum()
    grads = torch.autograd.grad(loss, [scene[k] for k in ARGS], allow_unused=True, retain_graph=True)
    loss.backward()
    return rgb.detach(), alpha.detach(), grads, meta


@pytest.mark.gpu(backends=("gsplat",))
@pytest.mark.parametrize(
    "kw",
    [
        {"sh_degree": 3},
        {"sh_degree": None, "rasterize_mode": "antialiased"},
        {"sh_degree": 1, "render_mode": "RGB+ED", "backgrounds": "grey"},
        {"sh_degree": 0, "render_mode": "D", "absgrad": True},
    ],
    ids=["sh3", "antialiased", "rgb+ed", "depth-absgrad"],
)
def test_torch_path_matches_gsplat_on_cuda(kw):
    kw = dict(kw)
    size = 96
    scene = _scene(kw["sh_degree"])
    if kw.get("backgrounds") == "grey":
        kw["backgrounds"] = torch.full((2, 3), 0.5, device="cuda")
    rgb_t, alpha_t, g_t, meta_t = _run(scene, "torch", size, **kw)
    rgb_c, alpha_c, g_c, meta_c = _run(scene, "cuda-lib", size, **kw)
    assert meta_c.backend == "cuda-lib" and meta_t.backend == "torch"
    assert torch.equal(meta_t.radii, meta_c.radii.to(torch.int32))
    # gsplat compiles with fast math (__expf) and sums in another order, so a pixel whose α sits at the 1/255
    # cut-off or whose T sits at the 1e-4 stop can flip: bound the worst pixel loosely and the mean tightly.
    for a, b in ((rgb_t, rgb_c), (alpha_t, alpha_c)):
        diff = (a - b).abs()
        assert float(diff.max()) < 2e-2 and float(diff.mean()) < 1e-4, (float(diff.max()), float(diff.mean()))
    # gradients: the same flips perturb a few entries; compare whole gradient vectors
    for name, a, b in zip(ARGS, g_t, g_c):
        if b is None:
            assert a is None or float(a.abs().max()) == 0.0
            continue
        rel = float((a - b).norm() / b.norm().clamp_min(1e-12))
        assert rel < 1e-2, (name, rel)
    rel = (meta_t["means2d"].grad - meta_c["means2d"].grad).norm() / meta_c["means2d"].grad.norm()
    assert float(rel) < 1e-2
    if kw.get("absgrad"):
        rel = (meta_t["means2d"].absgrad - meta_c["means2d"].absgrad).norm() / meta_c["means2d"].absgrad.norm()
        assert float(rel) < 1e-2


@pytest.mark.gpu(backends=("gsplat",))
def test_auto_backend_uses_gsplat_on_cuda():
    scene = _scene(None, n=50)
    _, _, meta = rasterize(**scene, width=32, height=32)
    assert meta.backend == "cuda-lib" and "isect_ids" in meta


@pytest.mark.gpu(backends=("gsplat",))
def test_relocation_twin_matches_gsplat_kernel():
    from gsplat.relocation import compute_relocation

    from scene3d.methods.s3d_splat.densify import binomial_table, relocation_scales

    g = torch.Generator(device="cuda").manual_seed(0)
    opac = torch.rand(500, device="cuda", generator=g) * 0.98 + 0.01
    scales = torch.rand(500, 3, device="cuda", generator=g) + 0.01
    ratios = torch.randint(1, 60, (500,), device="cuda", generator=g)
    binoms = binomial_table().cuda()
    o_c, s_c = compute_relocation(opac, scales, ratios.clone(), binoms)
    o_t, s_t = relocation_scales(opac, scales, ratios, binoms)
    torch.testing.assert_close(o_t, o_c, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s_t, s_c, rtol=1e-4, atol=1e-6)
