"""Packed compositing at training-batch scale, visibility pruning, and the nerfacc twin (gpu)."""

from __future__ import annotations

import pytest
import torch

from scene3d.renderers.volume import composite_dense, composite_packed, visibility_packed


def test_packed_transmittance_stays_exact_over_many_opaque_rays():
    """Thousands of opaque rays drive the running log-sum to ~1e6; T must still match ray-by-ray cumprod."""
    n_rays, per_ray = 4096, 24
    g = torch.Generator().manual_seed(0)
    alphas = torch.rand(n_rays, per_ray, generator=g) * 0.3
    alphas[:, 10:] = 1.0  # opaque from the 11th sample on
    ray_indices = torch.arange(n_rays).repeat_interleave(per_ray)
    weights, trans = composite_packed(alphas.reshape(-1), ray_indices, n_rays, backend="torch")
    w_dense, t_dense = composite_dense(alphas.double())
    torch.testing.assert_close(trans.view(n_rays, per_ray).double(), t_dense, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights.view(n_rays, per_ray).double(), w_dense, atol=1e-6, rtol=1e-5)


def test_visibility_drops_occluded_and_transparent_samples():
    alphas = torch.tensor([0.001, 0.5, 0.9, 0.5, 0.5, 0.2, 0.0, 0.3])
    ray_indices = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    keep = visibility_packed(alphas, ray_indices, 2, early_stop_eps=0.04, alpha_threshold=0.01)
    # ray 0: T = 1, 0.999, 0.4995, 0.04995, 0.025 -> the last is occluded, the first transparent
    assert keep.tolist() == [False, True, True, True, False, True, False, True]


@pytest.mark.gpu(backends=("nerfacc",))
def test_nerfacc_compositing_matches_torch_twin():
    counts = torch.randint(0, 40, (3000,))
    ray_indices = torch.repeat_interleave(torch.arange(3000), counts).cuda()
    alphas = torch.rand(int(counts.sum()), device="cuda", requires_grad=True)
    values = torch.rand(alphas.shape[0], device="cuda")
    w_a, t_a = composite_packed(alphas, ray_indices, 3000, backend="cuda-lib")
    (g_a,) = torch.autograd.grad((w_a * values).sum(), alphas)
    w_b, t_b = composite_packed(alphas, ray_indices, 3000, backend="torch")
    (g_b,) = torch.autograd.grad((w_b * values).sum(), alphas)
    # nerfacc takes a float32 cumulative product; the twin a float64 log-sum: agreement to float32 rounding
    torch.testing.assert_close(t_a, t_b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w_a, w_b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_a, g_b, atol=1e-4, rtol=1e-3)
