import torch

from scene3d.renderers.volume import accumulate, alphas_from_densities, composite_dense, composite_packed


def test_dense_matches_hand_computed_two_samples():
    alphas = torch.tensor([[0.5, 0.5]])
    weights, trans = composite_dense(alphas)
    torch.testing.assert_close(trans, torch.tensor([[1.0, 0.5]]))
    torch.testing.assert_close(weights, torch.tensor([[0.5, 0.25]]))


def test_packed_equals_dense_on_ragged_rays():
    g = torch.Generator().manual_seed(0)
    counts = [3, 0, 5, 1]
    sigmas = torch.rand(sum(counts), generator=g, dtype=torch.float64) * 5
    deltas = torch.rand(sum(counts), generator=g, dtype=torch.float64) * 0.3
    ray_indices = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    alphas = alphas_from_densities(sigmas, deltas)
    weights, trans = composite_packed(alphas, ray_indices, len(counts))
    start = 0
    for r, c in enumerate(counts):
        if c == 0:
            continue
        w_dense, t_dense = composite_dense(alphas[start : start + c][None])
        torch.testing.assert_close(weights[start : start + c], w_dense[0])
        torch.testing.assert_close(trans[start : start + c], t_dense[0])
        start += c
    opacity = accumulate(weights, None, ray_indices, len(counts))
    assert opacity[1].item() == 0.0
    assert torch.all(opacity <= 1.0 + 1e-9)


def test_packed_gradients_match_dense():
    alphas = torch.tensor([0.2, 0.7, 0.4], dtype=torch.float64, requires_grad=True)
    w_packed, _ = composite_packed(alphas, torch.zeros(3, dtype=torch.long), 1)
    (g_packed,) = torch.autograd.grad((w_packed * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum(), alphas)
    w_dense, _ = composite_dense(alphas[None])
    (g_dense,) = torch.autograd.grad((w_dense[0] * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum(), alphas)
    torch.testing.assert_close(g_packed, g_dense)
