"""The ReGS pipeline: restyle a trained ``s3d-splat`` scene from one stylized reference view (``train_ref.py``).

``ns-train regs --data DATA --load-dir SPLAT_RUN --pipeline.reference-image IMG --pipeline.reference-view NAME``

1. **Start** (:meth:`ReGSPipeline.warm_start`, called by ``S3DTrainer`` for ``--load-dir``): the splat run's
   Gaussians become both the scene to stylize and the frozen *source*; higher SH are zeroed (diffuse colour only).
   A ReGS run given as ``--load-dir`` is resumed instead.
2. **Pre-computation** (:meth:`ReGSPipeline.prepare`, before the first iteration): from the source Gaussians, every
   training view's depth (the geometry target) and content render; the reference view's depth, back-projected and
   forward-warped with a z-test into every view (pseudo-targets and their masks); the template matches of every
   content render against the reference view's (cached NNFM, colour patches).
3. **Iterations** (:meth:`ReGSPipeline.train_iteration`, replacing nerfstudio's): a random training view other than
   the reference and a random background; ``1·L_rec + 2·L_pseudo + 10·L_depth + 1·L_style``; backward; the DC-colour
   gradient norms accumulated over the visible Gaussians; every 100 iterations until 1,500 the texture-guided split
   and pruning; then the optimizer step (3DGS's order: densify before the step).

All settings are ReGS's official values unless the field's docstring says otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from nerfstudio.data.datamanagers.base_datamanager import DataManagerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.models.base_model import ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor

from scene3d.core import metrics
from scene3d.core.errors import RunFolderError, SettingsError
from scene3d.datasets.dataparser import Scene3DDataParserConfig
from scene3d.methods.regs import control, losses, matching, reference, warp
from scene3d.methods.regs.model import ReGSModel, ReGSModelConfig
from scene3d.renderers import splats

logger = logging.getLogger(__name__)


def _datamanager() -> FullImageDatamanagerConfig:
    # ReGS uses the cameras of the training views (and the eval images for metrics); cache_images="gpu" means "on
    # the training device" (nerfstudio's "cpu" pins memory, which needs CUDA).
    return FullImageDatamanagerConfig(
        dataparser=Scene3DDataParserConfig(load_3D_points=False), cache_images="gpu", cache_images_type="uint8"
    )


@dataclass
class ReGSPipelineConfig(VanillaPipelineConfig):
    """ReGS's reference, losses, schedule and texture-guided control (defaults: the official code)."""

    _target: type = field(default_factory=lambda: ReGSPipeline)
    datamanager: DataManagerConfig = field(default_factory=_datamanager)
    """The dataset the splat run was trained on (``--data``); its training cameras are the views ReGS samples."""
    model: ModelConfig = field(default_factory=ReGSModelConfig)
    """How the stylized splats render."""
    reference_image: Path | None = None
    """The stylized reference: one training view restyled, at that view's size (8/16-bit; alpha is composited over
    the dataset background)."""
    reference_view: str | None = None
    """Which training view the reference restyles: image name (``frame_00003``, ``frame_00003.png``) or index."""
    reference_folder: Path | None = None
    """Instead of the two above: a Ref-NPR-style folder (``data_config.json`` + ``style.png``, or ``camera.json``)."""
    vgg: str = "vgg16"
    """VGG-16 weights for the style losses: ``vgg16`` (torchvision's ImageNet weights via ``s3d models fetch vgg16``),
    a state-dict path, or ``tiny-random`` (offline tests; no real style features); ``groundtruth:PATH`` also
    gives the tiny-random VGG (features are not a prediction with a truth). Resolved by ``resolve_prior("vgg", …)``."""
    reconstruction_weight: float = 1.0
    """Weight of L_rec (reference view vs reference image)."""
    pseudo_weight: float = 2.0
    """Weight of L_pseudo (sampled view vs the depth-warped reference)."""
    depth_weight: float = 10.0
    """Weight of L_depth (sampled view's depth vs the original depth)."""
    style_weight: float = 1.0
    """Weight of L_style (template-matched NNFM + colour patches, then online NNFM)."""
    tv_weight: float = 0.0
    """Weight of the render's total variation (0 in ReGS)."""
    ssim_lambda: float = 0.2
    """D-SSIM share of L_rec: ``(1 − λ) L1 + λ (1 − SSIM)``."""
    online_style_after: float = 0.7
    """Fraction of the iterations after which the style loss switches from cached matching to online NNFM."""
    online_style_weight: float = 0.2
    """Factor on the online NNFM loss."""
    patch_max_distance: float = matching.PATCH_MAX_DISTANCE
    """Block-4 matches farther than this cosine distance are no match for the colour-patch loss."""
    densify_by: Literal["color", "position", "none"] = "color"
    """Which gradient selects the Gaussians to split: ReGS's DC colour (texture-guided), 3DGS's positional
    (screen-space) gradient, or none (only pruning); the last two are for the ablation."""
    split_counts: tuple[int, ...] = ()
    """Ablation budget: when set, the k-th densification step splits exactly ``split_counts[k]`` Gaussians (0 once
    the list is used up), those of highest gradient by ``densify_by``, instead of thresholding. Replaying a colour
    run's counts in a positional run compares the two criteria at the same Gaussian count."""
    densify_grad_threshold: float = 5e-5
    """τ₀ of the colour-gradient threshold τ₀·max(0.2, (1 − t/T)^1.1) (``demo.sh``: 5e-5; the README: 3e-5)."""
    position_grad_threshold: float = 2e-4
    """Positional-gradient threshold (3DGS's 2e-4, NDC units), same schedule, for ``densify_by=position``."""
    densify_from: int = 0
    """Densify at iterations after this one (iterations count from 1, as in the official loop)..."""
    densify_every: int = 100
    """...every this many iterations..."""
    densify_until: int = 1500
    """...and before this one; gradient statistics are gathered until then too."""
    min_opacity: float = 0.005
    """Prune Gaussians more transparent than this at each densification step."""
    prune_big_after: int = 3000
    """Also prune oversized Gaussians at densification steps after this iteration (ReGS ties it to the opacity-reset
    interval, 3,000, so with its schedule this never happens)."""
    max_screen_radius: float = 20.0
    """Oversized: a screen radius above this many pixels..."""
    max_world_scale: float = 0.1
    """...or a largest σ above this fraction of the camera extent."""
    pseudo_depth_tolerance: float = 1e-3
    """z-test of the forward warp: a reference point is visible where its depth <= the view's depth + this."""
    view_cos_threshold: float = 0.01
    """Warp only points whose viewing directions from the two cameras have a cosine above this (``mask_by_cos``)."""
    reference_alpha_threshold: float = 0.5
    """Reference pixels whose source render is less opaque than this are not back-projected (they have no surface;
    ReGS's scenes have none such)."""
    schedule_steps: int | None = None
    """T of the threshold schedule and of the style switch; ``None``: the step training ends at (the trainer's
    ``max_num_iterations``, plus the step a resumed run starts from)."""
    seed: int = 0
    """Seeds the view sampling, the random backgrounds and the split offsets."""


@dataclass
class Reference:
    """The stylized reference and its camera."""

    image: Tensor  # [H, W, 3] float
    viewmat: Tensor  # [1, 4, 4] world-to-camera, OpenCV axes
    K: Tensor  # [1, 3, 3]
    width: int
    height: int
    train_index: int | None
    """Its index among the training views (``None`` for a camera given with a reference folder)."""
    name: str


@dataclass
class ReGSCache:
    """What ReGS pre-computes once from the source Gaussians."""

    viewmats: Tensor  # [V, 4, 4]
    Ks: Tensor  # [V, 3, 3]
    sizes: list[tuple[int, int]]  # (width, height) per view
    depth_targets: list[Tensor]  # per view [H, W], accumulated z-depth of the source (depth_stack)
    warps: list[warp.WarpCorrespondence]
    targets: matching.StyleTargets
    matches: list[matching.ViewMatches]
    candidates: Tensor  # training views that may be sampled (all but the reference)


class _Holder:
    """Keeps a module out of the pipeline's state dict (the VGG weights do not belong in every checkpoint)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module


class ReGSPipeline(VanillaPipeline):
    """nerfstudio pipeline running ReGS's iteration (see the module docstring)."""

    config: ReGSPipelineConfig

    def __init__(
        self,
        config: ReGSPipelineConfig,
        device: str | torch.device,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.cache: ReGSCache | None = None
        self._vgg: _Holder | None = None
        self.total_steps = config.schedule_steps or 3000
        self.generator = torch.Generator().manual_seed(config.seed)
        self.densify_history: list[tuple[int, int, int]] = []
        """(iteration, Gaussians split, Gaussians pruned) of each densification step of this process."""
        # training (``val``) needs the reference now, so a bad one fails before anything runs; viewers and exports
        # (``test`` / ``inference``) do not
        self.reference = self.load_reference() if test_mode == "val" else None
        self._attach_eval_stylized()

    @property
    def regs_model(self) -> ReGSModel:
        model = self.model
        assert isinstance(model, ReGSModel)
        return model

    @property
    def loss_weights(self) -> losses.LossWeights:
        c = self.config
        return losses.LossWeights(c.reconstruction_weight, c.pseudo_weight, c.depth_weight, c.style_weight, c.tv_weight)

    # ---- inputs -----------------------------------------------------------------------------------------------

    def _train_cameras(self) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        cams = self.datamanager.train_dataset.cameras  # type: ignore[attr-defined]
        viewmats = splats.viewmats_from_c2w(cams.camera_to_worlds.float()).to(self.device)
        Ks = cams.get_intrinsics_matrices().float().to(self.device)
        sizes = [(int(w), int(h)) for w, h in zip(cams.width.reshape(-1), cams.height.reshape(-1), strict=True)]
        return viewmats, Ks, sizes

    def load_reference(self) -> Reference:
        """Resolve the reference view and read the reference image (all checks happen here, before training).

        Raises:
            ValueError: when no reference (or two) is given, or the view does not exist.
            DataError: naming the image or reference-folder file that is missing, malformed or the wrong size.
        """
        c = self.config
        if c.reference_folder is not None and (c.reference_image is not None or c.reference_view is not None):
            raise SettingsError(
                "--pipeline.reference-folder",
                "give either --pipeline.reference-folder or --pipeline.reference-image with --pipeline.reference-view, not both",
            )
        outputs = self.datamanager.train_dataparser_outputs  # type: ignore[attr-defined]
        filenames = [str(f) for f in outputs.image_filenames]
        viewmats, Ks, sizes = self._train_cameras()
        bg = self.regs_model.dataset_background.tolist()
        if c.reference_folder is not None:
            spec = reference.read_reference_folder(c.reference_folder)
            image_path = spec.image
            if spec.camera is not None:
                cam = spec.camera
                c2w = cam.c2w.clone()
                c2w[:3, :4] = outputs.dataparser_transform.float() @ c2w
                c2w[:3, 3] *= float(outputs.dataparser_scale)
                viewmat = splats.viewmats_from_c2w(c2w[None, :3, :4]).to(self.device)
                K = cam.K[None].to(self.device)
                width, height, index, name = cam.width, cam.height, None, f"{reference.CAMERA_FILE} of {c.reference_folder}"
            elif spec.train_index is not None:
                index = reference.resolve_view(spec.train_index, filenames)
                viewmat, K, (width, height) = viewmats[index : index + 1], Ks[index : index + 1], sizes[index]
                name = Path(filenames[index]).name
            else:
                eval_cams = self.datamanager.eval_dataset.cameras  # type: ignore[attr-defined]
                eval_outputs = self.datamanager.eval_dataset._dataparser_outputs  # type: ignore[attr-defined]
                eval_files = [str(f) for f in eval_outputs.image_filenames]
                j = reference.resolve_view(int(spec.test_index or 0), eval_files)
                viewmat = splats.viewmats_from_c2w(eval_cams.camera_to_worlds[j : j + 1].float()).to(self.device)
                K = eval_cams.get_intrinsics_matrices()[j : j + 1].float().to(self.device)
                width, height = int(eval_cams.width[j]), int(eval_cams.height[j])
                index, name = None, f"test view {Path(eval_files[j]).name}"
        elif c.reference_image is not None:
            if c.reference_view is None:
                raise SettingsError("--pipeline.reference-view", "must name the training view the reference restyles (name or index)")
            image_path = c.reference_image
            index = reference.resolve_view(c.reference_view, filenames)
            viewmat, K, (width, height) = viewmats[index : index + 1], Ks[index : index + 1], sizes[index]
            name = Path(filenames[index]).name
        else:
            raise SettingsError(
                "--pipeline.reference-image",
                "regs needs a stylized reference: --pipeline.reference-image IMG --pipeline.reference-view NAME, "
                "or --pipeline.reference-folder DIR",
            )
        image = reference.load_reference_image(image_path, width, height, f"'{name}'", bg).to(self.device)
        return Reference(image=image, viewmat=viewmat, K=K, width=width, height=height, train_index=index, name=name)

    def _attach_eval_stylized(self) -> None:
        """Give the model the eval views' stylized ground truth when the dataset has it (synthetic ``--stylized``)."""
        dataset = getattr(self.datamanager, "eval_dataset", None)
        files = None if dataset is None else dataset.metadata.get("stylized_filenames")
        if files:
            bg = self.regs_model.dataset_background.tolist()
            self.regs_model.eval_stylized = [reference.read_image(f, bg) for f in files]

    def vgg(self) -> torch.nn.Module:
        if self._vgg is None:
            from scene3d.methods.common.priors import is_groundtruth, resolve_prior

            self._vgg = _Holder(resolve_prior("vgg", self.config.vgg).to(self.device))
            if self.config.vgg == "tiny-random" or is_groundtruth(self.config.vgg):
                logger.warning("regs: style losses use tiny-random VGG features (offline test setting, not VGG-16)")
        return self._vgg.module

    # ---- start / resume ---------------------------------------------------------------------------------------

    def warm_start(self, state: dict, path: Path) -> bool:
        """Take an ``s3d-splat`` checkpoint as the scene to stylize (``True``), or let a ReGS checkpoint resume
        (``False``).

        Raises:
            RunFolderError: when the checkpoint holds no Gaussian splat parameters, or the splat run was trained on
                another scene than ``--data``.
        """
        pipe = {k.removeprefix("module."): v for k, v in state.get("pipeline", {}).items()}
        if "_model.source_means" in pipe:
            return False
        keys = {name: f"_model.gauss_params.{name}" for name in splats.PARAM_NAMES}
        if not all(k in pipe for k in keys.values()):
            run = path.parent.parent if path.parent.name == "nerfstudio_models" else path
            raise RunFolderError(
                run,
                "is not an s3d-splat run: its checkpoint holds no Gaussian splat parameters (gauss_params.*); "
                "regs starts from a scene trained with `ns-train s3d-splat` (or s3d-splat-tiny) on the same data",
            )
        self._check_same_scene(path.parent.parent if path.parent.name == "nerfstudio_models" else path.parent)
        self.regs_model.start_from({name: pipe[k] for name, k in keys.items()})
        self.cache = None
        return True

    def _check_same_scene(self, run: Path) -> None:
        """Refuse a splat run trained on another scene than ``--data``: ReGS restyles the scene the run learned,
        from that scene's cameras and images (a copy of the same dataset elsewhere is the same scene).

        Raises:
            RunFolderError: the run's ``config.yml`` names a dataset whose frames differ from ``--data``'s.
        """
        from scene3d.datasets.identity import dataset_fingerprint
        from scene3d.export.runs import read_run

        ours = Path(self.datamanager.config.dataparser.data)  # type: ignore[attr-defined]
        if not (run / "config.yml").is_file():
            logger.warning("regs: %s has no config.yml; cannot check that it was trained on %s", run, ours)
            return
        theirs = read_run(run / "config.yml").data
        if theirs is None or not theirs.exists():
            logger.warning("regs: the dataset %s was trained on (%s) is gone; cannot check it is %s", run, theirs, ours)
            return
        if theirs.resolve() == ours.resolve():
            return
        mine, other = dataset_fingerprint(ours), dataset_fingerprint(theirs)
        if mine is not None and mine == other:
            return
        raise RunFolderError(
            run,
            f"was trained on {theirs}, another scene than --data {ours} (other frames or cameras); regs restyles the "
            f"scene a splat run learned: pass --data {theirs}, or train s3d-splat on {ours} first",
        )

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> list[TrainingCallback]:
        trainer = training_callback_attributes.trainer
        if self.config.schedule_steps is None and trainer is not None:
            # nerfstudio runs max_num_iterations more steps after the step it resumes from
            self.total_steps = int(getattr(trainer, "_start_step", 0)) + int(trainer.config.max_num_iterations)
        if not self.regs_model.has_source:
            raise SettingsError("--load-dir", "regs stylizes a trained splat scene: pass the s3d-splat run as --load-dir RUN")
        self.prepare()
        return super().get_training_callbacks(training_callback_attributes)

    # ---- pre-computation --------------------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(self) -> ReGSCache:
        """ReGS's pre-computation from the source Gaussians (module docstring, step 2)."""
        if self.reference is None:
            self.reference = self.load_reference()
        model, ref, c = self.regs_model, self.reference, self.config
        if not model.has_source:
            raise SettingsError("--load-dir", "regs has no source Gaussians yet: pass the s3d-splat run as --load-dir RUN")
        viewmats, Ks, sizes = self._train_cameras()
        black = torch.zeros(3, device=self.device)
        centers = torch.stack([warp.camera_center(v) for v in viewmats])
        model.scene_extent = 1.1 * float((centers - centers.mean(0)).norm(dim=-1).max())  # 3DGS's cameras_extent

        r = model.render_source(ref.viewmat, ref.K, ref.width, ref.height, black, depth="accumulated")
        assert r.depth is not None
        ref_valid = r.alpha > c.reference_alpha_threshold
        ref_depth = torch.where(ref_valid, r.depth / r.alpha.clamp_min(1e-10), torch.zeros_like(r.depth))
        points = warp.backproject_depth(ref_depth, ref.viewmat[0], ref.K[0])
        ref_center = warp.camera_center(ref.viewmat[0])
        vgg = self.vgg()
        targets = matching.StyleTargets.compute(vgg, ref.image, r.rgb)

        depth_targets, warps, matches = [], [], []
        for i, (w, h) in enumerate(sizes):
            s = model.render_source(viewmats[i : i + 1], Ks[i : i + 1], w, h, black, depth="accumulated")
            assert s.depth is not None
            depth_targets.append(s.depth)
            surface = s.alpha > c.reference_alpha_threshold
            expected = torch.where(surface, s.depth / s.alpha.clamp_min(1e-10), torch.zeros_like(s.depth))
            seen = warp.view_cosine_mask(points, ref_center, warp.camera_center(viewmats[i]), c.view_cos_threshold)
            valid = ref_valid.reshape(-1) & seen
            warps.append(
                warp.forward_warp(points, valid, viewmats[i], Ks[i], w, h, expected, depth_tolerance=c.pseudo_depth_tolerance)
            )
            matches.append(matching.match_view(targets, vgg, s.rgb, max_distance=c.patch_max_distance))
        candidates = torch.tensor([i for i in range(len(sizes)) if i != ref.train_index], dtype=torch.long)
        if len(candidates) == 0:
            raise SettingsError("--pipeline.reference-view", "regs needs at least one training view besides the reference view")
        self.cache = ReGSCache(viewmats, Ks, sizes, depth_targets, warps, targets, matches, candidates)
        coverage = sum(len(wp) for wp in warps) / max(1, sum(w * h for w, h in sizes))
        logger.info("regs: %d views, pseudo-targets cover %.1f%% of their pixels", len(sizes), 100 * coverage)
        return self.cache

    # ---- one iteration ----------------------------------------------------------------------------------------

    def style_loss(self, iteration: int, render: Tensor, view: int) -> Tensor:
        """Cached NNFM + colour patches for the first 70 % of iterations, then 0.2 × online NNFM."""
        assert self.cache is not None
        if self.config.style_weight == 0:
            return render.sum() * 0.0
        blocks = self.cache.targets.blocks
        feats = matching.render_features(self.vgg(), render, blocks)
        if iteration < self.total_steps * self.config.online_style_after:
            m = self.cache.matches[view]
            targets = self.cache.targets
            return matching.cached_nnfm_loss(targets, m, feats) + matching.patch_color_loss(targets, m, render)
        return self.config.online_style_weight * matching.online_nnfm_loss(self.cache.targets, feats)

    def compute_losses(self, iteration: int, view: int) -> tuple[losses.ReGSLosses, list, dict[str, Tensor]]:
        """Render the reference view and ``view``; ReGS's loss terms (unweighted), the renders and metrics."""
        cache = self.cache if self.cache is not None else self.prepare()
        model, ref, c = self.regs_model, self.reference, self.config
        assert ref is not None
        bg = model.training_background(self.generator)
        ref_r = model.render(ref.viewmat, ref.K, ref.width, ref.height, bg)
        w, h = cache.sizes[view]
        view_r = model.render(cache.viewmats[view : view + 1], cache.Ks[view : view + 1], w, h, bg, depth="accumulated")
        assert view_r.depth is not None
        terms = losses.ReGSLosses(
            reconstruction=losses.reconstruction_loss(ref_r.rgb, ref.image, c.ssim_lambda),
            pseudo=losses.pseudo_view_loss(view_r.rgb, ref.image, cache.warps[view]),
            depth=losses.depth_loss(view_r.depth, cache.depth_targets[view]),
            style=self.style_loss(iteration, view_r.rgb, view),
            tv=losses.tv_loss(view_r.rgb) if c.tv_weight else view_r.rgb.sum() * 0.0,
        )
        with torch.no_grad():
            a = ref_r.rgb.clamp(0, 1).permute(2, 0, 1)[None]
            stats = {
                "psnr_reference": metrics.psnr(a, ref.image.permute(2, 0, 1)[None]),
                "gaussian_count": torch.tensor(float(model.num_points)),
                "pseudo_pixels": torch.tensor(len(cache.warps[view]) / float(w * h)),
            }
        return terms, [view_r, ref_r], stats

    def sample_view(self) -> int:
        assert self.cache is not None
        j = int(torch.randint(len(self.cache.candidates), (1,), generator=self.generator))
        return int(self.cache.candidates[j])

    def train_iteration(
        self, step: int, optimizers: Optimizers, grad_scaler: torch.amp.GradScaler
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """One ReGS iteration (``S3DTrainer`` calls this instead of nerfstudio's forward/backward/step)."""
        if self.cache is None:
            self.prepare()
        c, model = self.config, self.regs_model
        iteration = step + 1  # the official loop counts from 1
        optimizers.zero_grad_all()
        terms, renders, stats = self.compute_losses(iteration, self.sample_view())
        weights = self.loss_weights
        total = terms.total(weights)
        total.backward()
        if iteration < c.densify_until:
            model.accumulate_stats(renders)
            if iteration > c.densify_from and iteration % c.densify_every == 0:
                event = iteration // c.densify_every - c.densify_from // c.densify_every - 1
                count = None
                if c.split_counts:
                    count = c.split_counts[event] if event < len(c.split_counts) else 0
                n_split, n_pruned = model.densify_and_prune(
                    optimizers.optimizers,
                    densify_by=c.densify_by,
                    threshold=control.densify_threshold(iteration, self.total_steps, c.densify_grad_threshold),
                    position_threshold=control.densify_threshold(iteration, self.total_steps, c.position_grad_threshold),
                    count=count,
                    min_opacity=c.min_opacity,
                    prune_big=iteration > c.prune_big_after,
                    max_screen_radius=c.max_screen_radius,
                    max_world_scale=c.max_world_scale,
                    generator=self.generator,
                )
                stats["split"] = torch.tensor(float(n_split))
                stats["pruned"] = torch.tensor(float(n_pruned))
                self.densify_history.append((iteration, n_split, n_pruned))
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
        return total.detach(), {k: v.detach() for k, v in terms.weighted(weights).items()}, stats
