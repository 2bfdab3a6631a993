"""CLNeRF's pipeline: scans trained one after another with generative replay (paper Sec. 3, official
``train_ngpgv2_CLNerf.py`` run once per task).

A run trains the scans of its dataset in order (one scan for an incremental run, every scan of a changing scene or
WAT scene for a sequence run), ``iterations_per_scan`` steps each, after the scans of ``previous_run`` if given.
Scan ``t`` (its id counts every scan the run and its predecessors have seen) starts with:

1. **replay targets**: every stored pose of scans ``< t`` is rendered by the model as trained up to scan ``t − 1``
   with that pose's own scan id, except the poses whose real image the reservoir holds;
2. **the model for scan t**: the previous model (``init="previous"``, the default, chosen by measurement) or a fresh
   initialisation (``init="scratch"``, the official code); the embedding tables grow to ``t + 1`` rows; the occupancy
   grid, the Adam state and the cosine learning-rate schedule (to ``lr / 30``) restart;
3. **the training images**: scan ``t``'s real images, the replay renders and the buffered real images; rays are
   drawn uniformly over them, each with its image's scan id;
4. **the carried state**: scan ``t``'s poses join the pose store and are offered to the reservoir (which is then
   what scan ``t + 1`` replays from).

Baselines use the same code: ``generative_replay=False`` with ``buffer_size=0`` is naive fine-tuning (with
``init="previous"``), with ``buffer_size=k`` experience replay; ``mode="joint"`` trains every scan of the dataset at
once with its embeddings (the upper bound). Only poses, the buffer and the model are kept between scans; the run
folder records them (:mod:`scene3d.methods.clnerf.runfolder`). A previous run's folder is only read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from scene3d.core.errors import DataError, RunFolderError, SettingsError
from scene3d.core.metrics import psnr, ssim
from scene3d.methods.clnerf.datamanager import CLNeRFDataManager, CLNeRFDataManagerConfig, cameras_from_poses
from scene3d.methods.clnerf.field import CLNeRFField
from scene3d.methods.clnerf.frames import FrameStats, check_scan_sequence, frame_stats
from scene3d.methods.clnerf.model import CLNeRFModel, CLNeRFModelConfig, bchw
from scene3d.methods.clnerf.replay import (
    PoseStore,
    ReservoirBuffer,
    plan_replay,
    render_replay_targets,
    reservoir_update,
)
from scene3d.methods.clnerf.runfolder import (
    CarriedState,
    PreviousRun,
    ScanRecord,
    StepRange,
    build_record,
    load_previous_run,
    model_nbytes,
    save_state,
    write_record,
)

logger = logging.getLogger(__name__)


@dataclass
class CLNeRFPipelineConfig(VanillaPipelineConfig):
    """Continual training over scans with generative replay (module docstring)."""

    _target: type = field(default_factory=lambda: CLNeRFPipeline)
    datamanager: CLNeRFDataManagerConfig = field(default_factory=CLNeRFDataManagerConfig)
    """The scans and the ray batches."""
    model: CLNeRFModelConfig = field(default_factory=CLNeRFModelConfig)
    """NGPGv2 and its renderer."""
    previous_run: Path | None = None
    """A finished clnerf run folder to continue from: its model, pose store and buffer are carried over (read only)."""
    allow_incomplete_previous_run: bool = False
    """Continue from a previous run whose training did not finish (its latest checkpoint)."""
    iterations_per_scan: int = 20000
    """Training steps per scan (official: 20 epochs of 1000). The run lasts iterations_per_scan x scans."""
    mode: Literal["continual", "joint"] = "continual"
    """continual: scans one after another (CLNeRF and the CL baselines); joint: every scan at once (upper bound)."""
    init: Literal["scratch", "previous"] = "previous"
    """Each scan's model starts from the previous scan's model (default: measured better on old scans, see the README)
    or from a fresh initialisation (scratch: the official code)."""
    generative_replay: bool = True
    """Train old poses on renders of the previous model (CLNeRF); False: naive fine-tuning / experience replay."""
    buffer_size: int = 0
    """Real images kept by reservoir sampling (the paper's claim: 0; the released scripts: 10)."""
    lr_final_ratio: float = 1.0 / 30.0
    """Cosine annealing of each scan's learning rate down to lr x this (official lr/30)."""
    seed: int = 0
    """Seed of the reservoir and of the ray sampling."""
    max_scale_ratio: float = 2.0
    """Frame check: largest ratio of camera spreads between a new scan and the stored scans."""
    max_offset: float = 1.0
    """Frame check: largest camera-centroid offset, in scene sizes."""
    max_up_angle_deg: float = 60.0
    """Frame check: largest turn of the mean camera up vector, in degrees."""


class CLNeRFPipeline(VanillaPipeline):
    """Runs CLNeRF's continual protocol inside nerfstudio's trainer (module docstring)."""

    config: CLNeRFPipelineConfig
    datamanager: CLNeRFDataManager
    _model: CLNeRFModel

    def __init__(
        self,
        config: CLNeRFPipelineConfig,
        device: str | torch.device,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if world_size > 1:
            raise NotImplementedError("CLNeRF's pipeline runs on one device (no DDP)")
        if config.iterations_per_scan < 1:
            raise SettingsError("--pipeline.iterations-per-scan", f"must be >= 1, got {config.iterations_per_scan}")
        if config.buffer_size < 0:
            raise SettingsError("--pipeline.buffer-size", f"must be >= 0, got {config.buffer_size}")
        if not 0.0 < config.lr_final_ratio <= 1.0:
            raise SettingsError("--pipeline.lr-final-ratio", f"must be in (0, 1], got {config.lr_final_ratio}")
        if config.mode == "joint" and config.previous_run is not None:
            raise SettingsError("--pipeline.mode", "joint trains every scan at once; it cannot continue a previous run (--pipeline.previous-run)")
        previous = None
        if test_mode == "val" and config.previous_run is not None:
            # read (and check) the previous run before any data is loaded: a bad folder fails fast
            previous = load_previous_run(config.previous_run, allow_incomplete=config.allow_incomplete_previous_run)
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.previous: PreviousRun | None = previous
        self.run_dir: Path | None = None
        self.method_name = "clnerf"
        self._phase = -1
        self._optimizer_phase = -1
        self._complete = False
        self._generator = torch.Generator().manual_seed(config.seed)
        self.datamanager._generator.manual_seed(config.seed)
        dm = self.datamanager
        base = previous.state.num_scans if previous is not None else 0
        self.scan_ids = [base + k for k in range(dm.num_scans)]
        signature = config.model.field_spec().signature()
        if previous is not None:
            self._check_previous(previous, signature)
            self.model.load_state_dict(previous.model_state)  # the previous cube, grid and tables first
        self.model.set_dataset_scan_ids(self.scan_ids)
        self.model.set_viewer_scans(base + dm.num_scans)
        if test_mode != "val":
            return  # viewing / evaluating: the checkpoint brings the weights and tables
        if previous is not None:
            self.carried = CarriedState(
                poses=previous.state.poses, buffer=previous.state.buffer, buffer_images=dict(previous.state.buffer_images),
                frame=previous.state.frame, model_signature=signature, scans=list(previous.state.scans),
            )  # fmt: skip
        else:
            self.carried = CarriedState(
                poses=PoseStore.empty(), buffer=ReservoirBuffer.empty(config.buffer_size), buffer_images={},
                frame=None, model_signature=signature,
            )  # fmt: skip
        self._check_frames()
        self.step_ranges: list[StepRange] = []
        self._begin_scan(0)

    # ------------------------------------------------------------------ checks
    def _check_previous(self, previous: PreviousRun, signature: dict[str, Any]) -> None:
        if previous.state.model_signature != signature:
            raise RunFolderError(
                previous.run_dir,
                f"was trained with model sizes {previous.state.model_signature}; this run has {signature}: continue "
                "with the same method (clnerf or clnerf-tiny) and model settings",
            )
        if previous.state.buffer.capacity != self.config.buffer_size:
            raise SettingsError(
                "--pipeline.buffer-size",
                f"is {self.config.buffer_size} but the previous run {previous.run_dir} kept a buffer of "
                f"{previous.state.buffer.capacity}; pass --pipeline.buffer-size {previous.state.buffer.capacity}"
            )
        if previous.record.get("settings", {}).get("mode") == "joint":
            raise RunFolderError(previous.run_dir, "is a joint (upper-bound) run; continue from a continual run")

    def _check_frames(self) -> None:
        """Every scan of the dataset against every stored pose and the dataset's earlier scans (frames.py)."""
        dm = self.datamanager
        meta = dm.train_dataparser_outputs.metadata
        boxes, declared, index = meta["clnerf_scene_boxes"], meta["clnerf_declared_boxes"], meta["clnerf_scan_index"]
        c2w_all = dm.train_dataset.cameras.camera_to_worlds
        scans = []
        for k in range(dm.num_scans):
            c2w = c2w_all[index == k]
            if len(c2w) == 0:
                raise DataError(Path(dm.scans[k].source), None, "the scan has no training images")
            scans.append((c2w, boxes[k] if bool(declared[k]) else None))
        stored_box = self.carried.frame.scene_box if self.carried.frame is not None else None
        bad, check, self._stored_box = check_scan_sequence(
            self.carried.poses.camera_to_worlds, stored_box, scans, max_scale_ratio=self.config.max_scale_ratio,
            max_offset=self.config.max_offset, max_up_angle_deg=self.config.max_up_angle_deg,
        )  # fmt: skip
        if bad is not None and check is not None:
            raise DataError(
                Path(dm.scans[bad].source), None,
                "its cameras are not in the world frame and scale of the scans before it: " + "; ".join(check.problems)
                + ". Register every scan in one frame (one COLMAP model or a shared alignment); see "
                "scene3d/methods/clnerf/README.md",
            )  # fmt: skip

    # ------------------------------------------------------------------ scans
    @property
    def total_iterations(self) -> int:
        """Steps of this run: ``iterations_per_scan`` per scan (one phase in joint mode)."""
        phases = 1 if self.config.mode == "joint" else self.datamanager.num_scans
        return phases * self.config.iterations_per_scan

    def _render_poses(self, poses: PoseStore) -> list[Tensor]:
        """Render poses, each with its own scan id (``poses.scan_ids``), in eval mode."""
        return self.model.render_cameras(cameras_from_poses(poses, self.device))

    @torch.no_grad()
    def render_replay(self, indices: list[int] | tuple[int, ...]) -> list[Tensor]:
        """Generative replay: the stored poses ``indices`` rendered by the current model, each with its scan id."""
        was_training = self.model.training
        self.model.eval()
        try:
            return render_replay_targets(self.carried.poses, indices, self._render_poses)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def _fresh_field(self) -> None:
        """Re-initialise every weight of the field in place (same cube; parameters keep their identity)."""
        current: CLNeRFField = self.model.field
        fresh = CLNeRFField(current.radiance.aabb.detach().cpu(), current.spec, num_scans=current.num_scans)
        self.model.field.load_state_dict(fresh.state_dict())

    def _begin_scan(self, k: int) -> None:
        """Set up scan ``k`` of the dataset (module docstring, steps 1–4)."""
        cfg, dm, model = self.config, self.datamanager, self.model
        first = k * cfg.iterations_per_scan
        if cfg.mode == "joint":
            model.field.grow(len(self.scan_ids))
            if cfg.init == "scratch":
                self._fresh_field()
            poses, images = PoseStore.empty(), []
            for j, scan_id in enumerate(self.scan_ids):
                p, ims = dm.scan_train_views(j, scan_id)
                poses, images = poses.append(p), images + ims
                self._add_scan_record(j, scan_id, len(p))
            self.carried.poses = poses
            dm.set_training_images(poses, images, ["new"] * len(images))
            self.step_ranges.append(StepRange(-1, first, first + cfg.iterations_per_scan - 1, tuple(self.scan_ids)))
            self._after_scan_setup()
            return
        t = self.scan_ids[k]
        store, buffer = self.carried.poses, self.carried.buffer
        plan = plan_replay(store.scan_ids, buffer.keys, t, generative=cfg.generative_replay)
        renders = self.render_replay(plan.rendered) if plan.rendered else []
        if cfg.init == "scratch" or t == 0:
            model.field.grow(t + 1)
            self._fresh_field()
        else:
            model.field.grow(t + 1, init="copy_last")
        new_poses, new_images = dm.scan_train_views(k, t)
        poses = new_poses
        images = list(new_images)
        sources = ["new"] * len(new_images)
        if plan.rendered:
            poses = poses.append(store.select(torch.tensor(plan.rendered)))
            images += renders
            sources += ["replay"] * len(renders)
        if plan.buffered:
            poses = poses.append(store.select(torch.tensor(plan.buffered)))
            images += [self.carried.buffer_images[i] for i in plan.buffered]
            sources += ["buffer"] * len(plan.buffered)
        dm.set_training_images(poses, images, sources)
        logger.info(
            "scan %d: %d new images, %d replay renders, %d buffered real images", t, len(new_images), len(renders),
            len(plan.buffered),
        )  # fmt: skip
        # the carried state after scan t: its poses stored, offered to the reservoir
        offset = len(store)
        new_keys = list(range(offset, offset + len(new_poses)))
        self.carried.poses = store.append(new_poses)
        self.carried.buffer = reservoir_update(buffer, new_keys, self._generator)
        kept = set(self.carried.buffer.keys)
        images_by_key = {**self.carried.buffer_images, **dict(zip(new_keys, new_images))}
        self.carried.buffer_images = {key: images_by_key[key] for key in kept}
        self._add_scan_record(k, t, len(new_poses))
        self.step_ranges.append(StepRange(t, first, first + cfg.iterations_per_scan - 1, tuple(range(t + 1))))
        self._after_scan_setup()

    def _add_scan_record(self, k: int, scan_id: int, num_poses: int) -> None:
        scan = self.datamanager.scans[k]
        self.carried.scans.append(
            ScanRecord(
                scan_id=scan_id, source=scan.source, name=scan.name, num_train_poses=num_poses,
                num_eval_views=len(self.datamanager.scan_eval_indices(k)),
                trained_in=str(self.run_dir) if self.run_dir is not None else "",
            )  # fmt: skip
        )

    def _after_scan_setup(self) -> None:
        self.model.reset_grid()
        stats = frame_stats(self.carried.poses.camera_to_worlds)
        self.carried.frame = FrameStats(stats.centroid, stats.spread, stats.up, stats.num_cameras, self._stored_box)
        if self.run_dir is not None:
            self._write_run_files("training")

    # --------------------------------------------------------------- run folder
    def settings(self) -> dict[str, Any]:
        """The continual-learning settings, for the record."""
        c = self.config
        return {
            "mode": c.mode, "init": c.init, "generative_replay": c.generative_replay, "buffer_size": c.buffer_size,
            "iterations_per_scan": c.iterations_per_scan, "lr_final_ratio": c.lr_final_ratio, "seed": c.seed,
        }  # fmt: skip

    def _write_run_files(self, status: str) -> None:
        assert self.run_dir is not None
        save_state(self.run_dir, self.carried)
        write_record(
            self.run_dir,
            build_record(
                method_name=self.method_name, status=status, state=self.carried, step_ranges=self.step_ranges,
                previous_run=None if self.previous is None else self.previous.run_dir, settings=self.settings(),
                model_bytes=model_nbytes(self.model.state_dict()),
            ),  # fmt: skip
        )

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> list[TrainingCallback]:
        """Learn the run folder, write the carried state and the record, and fix the run length."""
        trainer = training_callback_attributes.trainer
        if trainer is not None and self.test_mode == "val":
            self.run_dir = Path(trainer.base_dir)
            self.method_name = trainer.config.method_name
            if trainer.config.max_num_iterations != self.total_iterations:
                CONSOLE.print(
                    f"[yellow]{self.method_name} trains its own schedule: --pipeline.iterations-per-scan "
                    f"{self.config.iterations_per_scan} x {self.total_iterations // max(1, self.config.iterations_per_scan)} "
                    f"phase(s) (one per scan) = {self.total_iterations} steps; --max-num-iterations {trainer.config.max_num_iterations} "
                    "is replaced (set --pipeline.iterations-per-scan to change the length)."
                )
                trainer.config.max_num_iterations = self.total_iterations
            self.carried.scans = [
                s if s.trained_in else ScanRecord(**{**s.__dict__, "trained_in": str(self.run_dir)}) for s in self.carried.scans
            ]
            self._write_run_files("training")
            callbacks = [
                TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._save_at_scan_end, args=[trainer])
            ]
            return callbacks + super().get_training_callbacks(training_callback_attributes)
        return super().get_training_callbacks(training_callback_attributes)

    def _save_at_scan_end(self, trainer: Any, step: int) -> None:
        """A checkpoint at the last step of every scan but the run's last (the trainer saves that one)."""
        last_of_scan = (step + 1) % self.config.iterations_per_scan == 0
        if last_of_scan and step + 1 < self.total_iterations:
            trainer.save_checkpoint(step)

    def load_pipeline(self, loaded_state: dict[str, Any], step: int) -> None:
        """Load a checkpoint to view or evaluate it; resuming a CLNeRF training run is not supported."""
        if self.test_mode == "val":
            raise RunFolderError(
                Path("--load-dir"),
                "resuming a CLNeRF run mid-scan is not supported; start a new run with --pipeline.previous-run "
                "pointing at a finished run",
            )
        super().load_pipeline(loaded_state, step)

    # ----------------------------------------------------------------- training
    def _lr_factor(self, local_step: int) -> float:
        """Cosine annealing from 1 to ``lr_final_ratio`` over a scan (official ``CosineAnnealingLR(lr/30)``)."""
        progress = min(local_step / max(self.config.iterations_per_scan, 1), 1.0)
        r = self.config.lr_final_ratio
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def train_iteration(
        self, step: int, optimizers: Optimizers, grad_scaler: torch.amp.GradScaler | None = None
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """One step: a new scan's setup at its first step, the grid refresh, the lr, one Adam step."""
        cfg = self.config
        phases = 1 if cfg.mode == "joint" else self.datamanager.num_scans
        k = min(step // cfg.iterations_per_scan, phases - 1)
        if k != self._phase:
            if k > 0:
                self._begin_scan(k)
            self._phase = k
        optimizer = optimizers.optimizers["fields"]
        if self._optimizer_phase != k:
            optimizer.state.clear()  # a fresh Adam per scan, as the official run per task
            for group in optimizer.param_groups:
                group.setdefault("clnerf_base_lr", group["lr"])
            self._optimizer_phase = k
        local = step - k * cfg.iterations_per_scan
        continued = cfg.mode == "continual" and cfg.init == "previous" and self.scan_ids[k] > 0
        self.model.update_grid(local, open_during_warmup=continued)
        factor = self._lr_factor(local)
        for group in optimizer.param_groups:
            group["lr"] = group["clnerf_base_lr"] * factor
        ray_bundle, batch = self.datamanager.next_train(step)
        outputs = self.model(ray_bundle)
        metrics = self.model.get_metrics_dict(outputs, batch)
        loss_dict = self.model.get_loss_dict(outputs, batch, metrics)
        loss = loss_dict["rgb_loss"] + loss_dict["opacity_loss"]
        optimizers.zero_grad_all()
        if grad_scaler is not None:
            grad_scaler.scale(loss).backward()
            optimizers.optimizer_scaler_step_all(grad_scaler)
            grad_scaler.update()
        else:
            loss.backward()
            optimizers.optimizer_step_all()
        metrics["lr"] = torch.tensor(optimizer.param_groups[0]["lr"])
        metrics["scan_id"] = torch.tensor(float(self.scan_ids[k] if cfg.mode == "continual" else -1))
        if step == self.total_iterations - 1 and self.run_dir is not None and not self._complete:
            self._complete = True
            self._write_run_files("complete")
        return loss.detach(), {k_: v.detach() for k_, v in loss_dict.items()}, metrics

    # ------------------------------------------------------------------- eval
    @torch.no_grad()
    def evaluate_scans(self, max_views_per_scan: int | None = None) -> dict[int, dict[str, float]]:
        """PSNR and SSIM of every held-out view, rendered with its own scan id, averaged per scan id."""
        dm = self.datamanager
        was_training = self.model.training
        self.model.eval()
        per_scan: dict[int, dict[str, list[float]]] = {}
        try:
            # the scan ids saved with the model (a loaded checkpoint knows them even when no previous run is read)
            for k, scan_id in enumerate(self.model.dataset_scan_ids.tolist()):
                views = dm.scan_eval_indices(k)[:max_views_per_scan]
                for i in views:
                    camera, batch = dm.eval_view(i)
                    camera.metadata = {"scan_id": torch.full((1, 1), scan_id, device=self.device)}
                    rgb = self.model.render_cameras(camera)[0].clamp(0, 1)
                    entry = per_scan.setdefault(scan_id, {"psnr": [], "ssim": []})
                    pred, target = bchw(rgb), bchw(batch["image"])
                    entry["psnr"].append(float(psnr(pred, target)))
                    entry["ssim"].append(float(ssim(pred, target)))
        finally:
            self.model.train(was_training)
        return {s: {m: sum(v) / len(v) for m, v in d.items()} for s, d in per_scan.items() if d["psnr"]}

    def get_average_eval_image_metrics(
        self, step: int | None = None, output_path: Path | None = None, get_std: bool = False
    ) -> dict[str, float]:
        """Mean PSNR/SSIM over every held-out view (each with its scan id), and per scan id."""
        per_scan = self.evaluate_scans()
        out: dict[str, float] = {}
        for scan_id, m in per_scan.items():
            out[f"psnr_scan_{scan_id}"] = m["psnr"]
            out[f"ssim_scan_{scan_id}"] = m["ssim"]
        if per_scan:
            out["psnr"] = sum(m["psnr"] for m in per_scan.values()) / len(per_scan)
            out["ssim"] = sum(m["ssim"] for m in per_scan.values()) / len(per_scan)
        return out
