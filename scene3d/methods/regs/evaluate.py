"""How well a ReGS run restyled its scene: against the true stylized renders, in depth, and in speed.

Used by ``benchmarks/regs_cpu.py`` and the demo's stylization step. With a synthetic dataset generated with
``--stylized`` every view has its true stylized render, so every view except the reference is a *novel* view for the
style (ReGS never sees their stylized images).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from scene3d.core import metrics
from scene3d.methods.regs import reference
from scene3d.methods.regs.model import ReGSModel


@dataclass
class StylizationScores:
    """What ``benchmarks/regs_cpu.py`` prints for one run."""

    reference_psnr: float
    """PSNR of the reference view's render against the reference image (dB)."""
    novel_psnr: float
    """Mean PSNR over the other views against their true stylized renders (dB)."""
    novel_ssim: float
    """Mean SSIM over the same views."""
    depth_change: float
    """Mean |z_stylized − z_original| over pixels where the original has a surface (scene units)."""
    depth_change_fraction: float
    """``depth_change`` over the scene extent (the diagonal of the dataset's scene box)."""
    gaussians: int
    fps: float
    """Renders per second at ``fps_size``² on this machine (one camera, DC colour)."""
    fps_size: int
    num_novel_views: int


def _psnr_ssim(pred: Tensor, target: Tensor) -> tuple[float, float]:
    a, b = pred.clamp(0, 1).permute(2, 0, 1)[None], target.permute(2, 0, 1)[None]
    return float(metrics.psnr(a, b)), float(metrics.ssim(a, b))


def _expected_depth(model: ReGSModel, viewmat: Tensor, K: Tensor, w: int, h: int, source: bool) -> tuple[Tensor, Tensor]:
    black = torch.zeros(3, device=viewmat.device)
    render = model.render_source if source else model.render
    r = render(viewmat, K, w, h, black, depth="expected")
    assert r.depth is not None
    return r.depth.detach(), r.alpha.detach()


@torch.no_grad()
def measure_fps(
    model: ReGSModel, viewmat: Tensor, K: Tensor, width: int, height: int, size: int = 256, repeats: int = 3
) -> float:
    """Renders per second of the stylized scene at ``size × size`` (intrinsics scaled from ``width × height``)."""
    scale = torch.tensor([size / width, size / height, 1.0], device=K.device).reshape(1, 3, 1)
    K_big = K * scale
    bg = torch.zeros(3, device=K.device)
    model.render(viewmat, K_big, size, size, bg)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        model.render(viewmat, K_big, size, size, bg)
    return repeats / (time.perf_counter() - start)


@torch.no_grad()
def evaluate_views(
    model: ReGSModel,
    viewmats: Tensor,
    Ks: Tensor,
    sizes: list[tuple[int, int]],
    stylized: list[Tensor],
    *,
    reference_image: Tensor,
    reference_camera: tuple[Tensor, Tensor, int, int],
    reference_index: int,
    scene_extent: float,
    fps_size: int = 256,
) -> StylizationScores:
    """Score a stylized model on views with true stylized renders (``stylized[i]`` for view ``i``, ``[H, W, 3]``).

    The reference camera ``(viewmat [1,4,4], K [1,3,3], width, height)`` is scored against ``reference_image``;
    ``reference_index`` (``-1`` if none) is the reference among the views, left out of the novel-view means.
    Renders use the dataset background, as the ground truth does.
    """
    was_training = model.training
    model.eval()
    bg = model.dataset_background.to(viewmats.device)
    psnrs, ssims, dz, n_px = [], [], 0.0, 0
    ref_vm, ref_K, ref_w, ref_h = reference_camera
    ref_psnr = _psnr_ssim(model.render(ref_vm, ref_K, ref_w, ref_h, bg).rgb, reference_image.to(viewmats.device))[0]
    for i, (w, h) in enumerate(sizes):
        vm, K = viewmats[i : i + 1], Ks[i : i + 1]
        if i != reference_index:
            p, s = _psnr_ssim(model.render(vm, K, w, h, bg).rgb, stylized[i].to(viewmats.device))
            psnrs.append(p)
            ssims.append(s)
        z_new, _ = _expected_depth(model, vm, K, w, h, source=False)
        z_old, a_old = _expected_depth(model, vm, K, w, h, source=True)
        surface = a_old > 0.5
        dz += float((z_new - z_old).abs()[surface].sum())
        n_px += int(surface.sum())
    fps = measure_fps(model, ref_vm, ref_K, ref_w, ref_h, size=fps_size)
    model.train(was_training)
    depth_change = dz / max(n_px, 1)
    return StylizationScores(
        reference_psnr=ref_psnr,
        novel_psnr=sum(psnrs) / max(len(psnrs), 1),
        novel_ssim=sum(ssims) / max(len(ssims), 1),
        depth_change=depth_change,
        depth_change_fraction=depth_change / scene_extent,
        gaussians=model.num_points,
        fps=fps,
        fps_size=fps_size,
        num_novel_views=len(psnrs),
    )


def evaluate_pipeline(pipeline, *, fps_size: int = 256) -> StylizationScores:
    """Score a trained ReGS pipeline on every dataset view (train and eval splits) that has a stylized render."""
    from scene3d.renderers import splats

    model: ReGSModel = pipeline.model
    if pipeline.reference is None:
        pipeline.reference = pipeline.load_reference()
    ref = pipeline.reference
    bg = model.dataset_background.tolist()
    viewmats, Ks, sizes, images, ref_index = [], [], [], [], -1
    for split, dataset in (("train", pipeline.datamanager.train_dataset), ("eval", pipeline.datamanager.eval_dataset)):
        files = dataset.metadata.get("stylized_filenames")
        if not files:
            raise ValueError(f"the {split} split has no stylized renders (generate the dataset with --stylized)")
        cams = dataset.cameras
        for i, f in enumerate(files):
            if split == "train" and i == ref.train_index:
                ref_index = len(images)
            viewmats.append(splats.viewmats_from_c2w(cams.camera_to_worlds[i : i + 1].float()))
            Ks.append(cams.get_intrinsics_matrices()[i : i + 1].float())
            sizes.append((int(cams.width[i]), int(cams.height[i])))
            images.append(reference.read_image(f, bg))
    device = model.device
    aabb = pipeline.datamanager.train_dataset.scene_box.aabb
    return evaluate_views(
        model,
        torch.cat(viewmats).to(device),
        torch.cat(Ks).to(device),
        sizes,
        images,
        reference_image=ref.image,
        reference_camera=(ref.viewmat, ref.K, ref.width, ref.height),
        reference_index=ref_index,
        scene_extent=float((aabb[1] - aabb[0]).norm()),
        fps_size=fps_size,
    )
