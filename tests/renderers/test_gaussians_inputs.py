"""``rasterize`` on bad input: a ValueError that names the argument, never a crash deep inside or a NaN image."""

from __future__ import annotations

import math

import pytest
import torch

from scene3d.renderers.gaussians import RasterMeta, rasterize
from scene3d.renderers.gaussians_reference import random_gaussians


def _args(n=6, n_cameras=2):
    s = random_gaussians(n, 16, 12, n_cameras=n_cameras, scale_range=(0.05, 0.3))
    return s | {"width": 16, "height": 12}


def _with(**changes):
    args = _args()
    for k, fn in changes.items():
        args[k] = fn(args[k])
    return args


def _nan_row(t):
    t = t.clone()
    t[2, 0] = math.nan
    return t


def _inf_row(t):
    t = t.clone()
    t[1, 1] = math.inf
    return t


def _zero_row(t):
    t = t.clone()
    t[3] = 0
    return t


def _neg(t):
    t = t.clone()
    t[0, 2] = -0.1
    return t


@pytest.mark.parametrize(
    "args,match",
    [
        (_with(means=_nan_row), "means must be finite"),
        (_with(means=_inf_row), "means must be finite"),
        (_with(scales=_neg), "scales must be >= 0"),
        (_with(scales=_inf_row), "scales must be finite"),
        (_with(quats=_zero_row), "quats must be non-zero"),
        (_with(opacities=lambda t: torch.where(torch.arange(6) == 2, math.nan, t)), "opacities must be finite"),
        (_with(colors=_nan_row), "colors must be finite"),
        (_with(quats=lambda t: t[:-1]), r"quats must have shape \(6, 4\)"),
        (_with(scales=lambda t: t[:, :2]), r"scales must have shape \(6, 3\)"),
        (_with(opacities=lambda t: t[:, None]), r"opacities must have shape \(6,\)"),
        (_with(colors=lambda t: t[:4]), "colors must have shape"),
        (_with(means=lambda t: t[:, :2]), r"means must have shape \(N, 3\)"),
        (_with(Ks=lambda t: t[:1]), r"Ks must have shape \(2, 3, 3\)"),
        (_with(viewmats=lambda t: t[:, :3]), r"viewmats must have shape \(C, 4, 4\)"),
        (_with(viewmats=lambda t: t[:0], Ks=lambda t: t[:0]), "at least one camera"),
        (_with(viewmats=_inf_row), "viewmats must be finite"),
        (_with(Ks=lambda t: t * torch.tensor([-1.0, 1, 1])[:, None]), "positive focal lengths"),
        (_with(width=lambda w: 0), "width must be a positive int"),
        (_with(height=lambda h: 12.0), "height must be a positive int"),
        (_with(colors=lambda t: t.double()), "colors has dtype torch.float64"),
        (_with(means=lambda t: t.long()), "means must be a floating-point tensor"),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        rasterize(**args, backend="torch")


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"render_mode": "RGBD"}, "render_mode must be one of"),
        ({"rasterize_mode": "mip"}, "rasterize_mode must be"),
        ({"backend": "cuda"}, "backend must be"),
        ({"near_plane": 0.0}, "near_plane"),
        ({"near_plane": 5.0, "far_plane": 1.0}, "near_plane"),
        ({"eps2d": -0.1}, "eps2d"),
        ({"sh_degree": 1}, "SH coefficients"),
        ({"backgrounds": torch.zeros(2, 4)}, r"backgrounds must have shape \(2, 3\)"),
        ({"backgrounds": torch.zeros(1, 3)}, r"backgrounds must have shape \(2, 3\)"),
    ],
)
def test_bad_options_raise_a_value_error(kw, match):
    with pytest.raises(ValueError, match=match):
        rasterize(**_args(), **kw)


def test_sh_degree_needs_enough_coefficients():
    args = _args()
    args["colors"] = torch.zeros(6, 4, 3)
    with pytest.raises(ValueError, match=r"sh_degree=2 needs K >= 9"):
        rasterize(**args, sh_degree=2)
    with pytest.raises(ValueError, match=r"sh_degree must be None or in 0..4"):
        rasterize(**args, sh_degree=5)
    rgb, _, _ = rasterize(**args, sh_degree=1)  # K = 4 is enough for degree 1
    assert bool(torch.isfinite(rgb).all())


def test_cuda_lib_backend_on_cpu_tensors_is_a_value_error():
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        rasterize(**_args(), backend="cuda-lib")


def test_degenerate_but_valid_inputs_give_finite_images_and_gradients():
    """Huge, tiny, far, near-plane-straddling and edge-on Gaussians: finite values everywhere."""
    s = _args(n=6, n_cameras=1)
    s["means"] = torch.tensor(
        [[0.0, 0.0, 0.0], [0.0, 0.0, -2.49], [0.0, 0.0, 1e6], [5.0, 0.0, 0.0], [0.1, 0.1, 0.1], [0.0, 0.0, -2.5]]
    )
    s["scales"] = torch.tensor([[1e3, 1e3, 1e3], [1e-8, 1e-8, 1e-8], [1.0, 1.0, 1.0], [1e-3, 10.0, 1e-3],
                                [0.0, 0.0, 0.0], [0.1, 0.1, 0.1]])  # fmt: skip
    for k in ("means", "quats", "scales", "opacities", "colors"):
        s[k].requires_grad_(True)
    for mode in ("classic", "antialiased"):
        rgb, alpha, meta = rasterize(**s, rasterize_mode=mode, render_mode="RGB+ED")
        assert bool(torch.isfinite(rgb).all()) and bool(torch.isfinite(alpha).all())
        (rgb.sum() + alpha.sum()).backward()
        for k in ("means", "quats", "scales", "opacities", "colors"):
            assert bool(torch.isfinite(s[k].grad).all()), (mode, k)
            s[k].grad = None
        # the Gaussian at the camera centre (z = 0 < near_plane) is culled
        assert int(meta.radii[0, 5]) == 0


def test_meta_reads_like_gsplats_dict():
    _, _, meta = rasterize(**_args())
    assert isinstance(meta, RasterMeta)
    assert meta["width"] == 16 and meta["height"] == 12 and meta["n_cameras"] == 2
    assert "radii" in meta and "isect_ids" not in meta and meta.get("isect_ids") is None
    assert meta["radii"].dtype == torch.int32 and meta["radii"].shape == (2, 6)
    with pytest.raises(KeyError):
        meta["nonsense"]
