"""DreamSpace's pipeline: the stages of the paper as a staged schedule, one trainer step per generation step.

=================  =====  ==============================================================================================
stage              steps  what it does
=================  =====  ==============================================================================================
``geometry``       1      unwrap the room into a texture atlas (xatlas), bake the texels, cast the panorama's geometry
``coarse``         1      the coarse panorama (depth ControlNet + the scan's colours), then its seam closed
``tile``           n      one fine tile each: cut from the panorama, refined (image-to-image + depth), blended back
``project``        1      the fine panorama back-projected onto the texels the centre sees confidently
``view``           k      one interior viewpoint each: chosen where surfaces are needed, rendered, inpainted, projected
``imitate``        m      the imitating network trained on the coloured texels (the only gradient steps)
``finish``         1      the texels still empty filled by the network, gutters filled: the final texture
=================  =====  ==============================================================================================

With ``propagate=False`` the ``view`` and ``imitate`` stages are left out and ``finish`` fills the texels the panorama
did not reach with its mean colour (the "panorama only" baseline of the benchmark).

Generated views (the tiles and the inpainted interior views) go into the run's ``generated_views`` store and the
viewer as frustums; a resumed run reuses them instead of generating again. The coarse and fine panoramas, the
texture and a walk-through camera path are written into the run folder as they are made. Every prior call gets
its cameras (``CameraBatch``): equirectangular for the panorama and its seam, pinhole for tiles and views.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor

from scene3d.core.cameras import CameraBatch, intrinsics_from_fov
from scene3d.core.checkpoint import atomic_open
from scene3d.datasets.gtpriors.options import GroundTruthOptions
from scene3d.methods.common.priors import is_groundtruth, resolve_prior
from scene3d.methods.common.schedule import Stage, StagedSchedule
from scene3d.methods.common.viewer import GenerationViewer
from scene3d.methods.common.views import FOLDER_NAME, GeneratedView, GeneratedViewStore
from scene3d.priors.settings import PriorSettings

from scene3d.methods.dreamspace import stages
from scene3d.methods.dreamspace.datamanager import DreamSpaceDataManagerConfig
from scene3d.methods.dreamspace.model import DreamSpaceModel, DreamSpaceModelConfig
from scene3d.methods.dreamspace.panorama import SamplingSettings, TileLayout

logger = logging.getLogger(__name__)


@dataclass
class DreamSpacePipelineConfig(VanillaPipelineConfig):
    """DreamSpace (Yang et al., IEEE VR 2024): retexture a room mesh from a text prompt through a 360° panorama."""

    _target: type = field(default_factory=lambda: DreamSpacePipeline)
    datamanager: DreamSpaceDataManagerConfig = field(default_factory=DreamSpaceDataManagerConfig)
    """Where the room comes from."""
    model: DreamSpaceModelConfig = field(default_factory=DreamSpaceModelConfig)
    """The textured room and its imitating network (the prompt is ``--prompt``)."""
    negative_prompt: str = "blurry, distorted, text, watermark"
    """Negative prompt of every diffusion call."""
    diffusion: str = "sd15"
    """Text-to-image preset the depth ControlNet runs on (the ControlNet's base), or ``tiny-random`` /
    ``groundtruth:PATH``."""
    controlnet: str = "controlnet-depth-sd15"
    """Depth ControlNet preset (geometry cue of the panorama and the tiles), or ``tiny-random`` / ``groundtruth:PATH``."""
    inpainting: str = "sd2-inpainting"
    """Inpainting preset (the panorama's seam, the interior views), or ``tiny-random`` / ``groundtruth:PATH``."""
    prior_settings: PriorSettings = field(default_factory=PriorSettings)
    """Where the pretrained models come from and how they run (device, precision, offload)."""
    groundtruth: GroundTruthOptions = field(default_factory=lambda: GroundTruthOptions(look="stylized"))
    """Scene variant and imperfections of ``groundtruth:`` presets (the stylized texture set is the target)."""
    seed: int = 0
    """Seed of every generation step (step ``s`` draws from seed + s)."""
    steps: int = 50
    """Denoising steps of every diffusion call."""
    guidance_scale: float = 7.5
    """Classifier-free guidance of every diffusion call."""
    atlas_resolution: int = 2048
    """Texture atlas size (texels a side, about; xatlas sizes it to the packed charts)."""
    atlas_padding: int = 2
    """Texels between charts (bilinear filtering needs at least 1)."""
    coarse_height: int = 512
    """Height of the coarse panorama (its width is twice this): the paper's 512 × 1024."""
    fine_height: int = 1024
    """Height of the refined panorama (width twice this)."""
    texture_strength: float = 0.9
    """SDEdit strength of the coarse panorama from the scan's colours (texture cue): 1.0 ignores the colours."""
    control_scale: float = 1.0
    """ControlNet conditioning scale (geometry cue)."""
    seam_band: float = 0.125
    """Width of the band inpainted across the panorama's left/right seam, as a fraction of its width."""
    tile_size: int = 512
    """Side of the refinement tiles, pixels."""
    tile_strength: float = 0.4
    """SDEdit strength of the tile refinement (low: keep the coarse layout, add detail)."""
    tile_layout: TileLayout = field(default_factory=TileLayout)
    """Where the tiles look: rings of yaw at given pitches, the poles, their field of view."""
    panorama_min_cos: float = 0.25
    """Texels the centre sees at a grazing angle (|cos θ| below this) are left for the interior views (with
    ``propagate=False`` the panorama takes every texel it sees)."""
    propagate: bool = True
    """Texture what the centre does not see (interior views, imitating network); False: the panorama only."""
    views: int = 8
    """Interior viewpoints (at most; the search stops when no candidate adds texels)."""
    view_size: int = 512
    """Side of the interior views, pixels."""
    view_fov: float = 70.0
    """Field of view of the interior views, degrees."""
    view_min_cos: float = 0.35
    """Interior views texture only texels they see with |cos θ| at least this ("confident regions")."""
    view_candidates: int = 32
    """Candidate eye positions tried per interior view."""
    view_clearance: float = 0.3
    """Candidate eyes keep this distance (metres) from every surface."""
    inpaint_candidates: int = 4
    """Inpainting candidates per interior view; the one whose border with the known pixels is the most seamless is
    kept (its index and every candidate's score are stored with the view)."""
    imitation_steps: int = 2000
    """Gradient steps of the imitating network."""
    imitation_batch: int = 16384
    """Coloured texels per imitation step."""
    imitation_refresh: int = 200
    """Refresh the displayed texture (the network's predictions in the gaps) every this many imitation steps."""
    run_outputs: Literal["write", "skip"] = "write"
    """Write the panoramas, the texture and the walk-through camera path into the run folder (``skip``: keep only
    checkpoints, for tests)."""

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(steps=self.steps, guidance_scale=self.guidance_scale, negative_prompt=self.negative_prompt)


def build_schedule(config: DreamSpacePipelineConfig) -> StagedSchedule:
    """The stage sequence of the module docstring for ``config``."""
    n_tiles = len(stages.tile_list(config.tile_layout))
    out = [Stage("geometry", 1, label="room geometry and texture atlas"),
           Stage("coarse", 1, label="coarse panorama")]  # fmt: skip
    out += [Stage("tile", 1, label=f"fine tile {k + 1} of {n_tiles}") for k in range(n_tiles)]
    out.append(Stage("project", 1, label="panorama onto the atlas"))
    if config.propagate:
        out += [Stage("view", 1, label=f"interior view {k + 1} of {config.views}") for k in range(config.views)]
        out.append(Stage("imitate", max(1, config.imitation_steps), label="imitating network"))
    out.append(Stage("finish", 1, label="final texture"))
    return StagedSchedule.of(out)


class DreamSpacePipeline(VanillaPipeline):
    """Runs the stages (module docstring); ``train_iteration`` replaces nerfstudio's forward/backward step."""

    config: DreamSpacePipelineConfig
    model: DreamSpaceModel

    def __init__(self, config: DreamSpacePipelineConfig, device: str | torch.device, test_mode: str = "val", world_size: int = 1,
                 local_rank: int = 0, grad_scaler=None) -> None:  # noqa: ANN001  # fmt: skip
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.schedule = build_schedule(config)
        self.generation_viewer = GenerationViewer(title="DreamSpace")
        self.views: GeneratedViewStore | None = None
        self.run_dir: Path | None = None
        self.stage_counts: dict[str, int] = {}
        self._priors: dict[str, object] = {}
        self._propagation_over = False
        if test_mode == "val":  # training: find every model now, before any compute
            self.check_priors()

    # ------------------------------------------------------------------ priors
    def check_priors(self) -> None:
        """Fail now, naming the model and ``s3d models fetch``, if a real preset is not available offline."""
        from scene3d.priors.presets import TINY_RANDOM, locate

        if not self.model.config.prompt and not all(is_groundtruth(p) for p in self._presets().values()):
            raise ValueError("DreamSpace needs a text prompt: --prompt \"a japanese tea room\"")
        for preset in self._presets().values():
            if preset != TINY_RANDOM and not is_groundtruth(preset):
                locate(preset, self.config.prior_settings)

    def _presets(self) -> dict[str, str]:
        return {"controlnet": self.config.controlnet, "inpainting": self.config.inpainting, "diffusion": self.config.diffusion}

    def prior(self, kind: Literal["controlnet", "inpainting"]):  # noqa: ANN201
        """The ControlNet (on its base) or the inpainting prior, loaded on first use."""
        if kind not in self._priors:
            settings, gt = self.config.prior_settings, self.config.groundtruth
            if kind == "controlnet":
                base = None if is_groundtruth(self.config.controlnet) else self.config.diffusion
                self._priors[kind] = resolve_prior("controlnet", self.config.controlnet, settings, base=base, groundtruth=gt)
            else:
                self._priors[kind] = resolve_prior("inpainting", self.config.inpainting, settings, groundtruth=gt)
        return self._priors[kind]

    @property
    def prompt(self) -> str:
        return self.model.config.prompt or ""

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.config.seed + step)

    # ------------------------------------------------------------------ run folder
    def attach_run_folder(self, run_dir: Path, resumed_run_dir: Path | None) -> None:
        """Open the generated-view store (copying a resumed run's views) and draw the views made so far."""
        self.run_dir = Path(run_dir)
        copy_from = None if resumed_run_dir is None else Path(resumed_run_dir) / FOLDER_NAME
        self.views = GeneratedViewStore.open(self.run_dir / FOLDER_NAME, copy_from=copy_from)
        for view in self.views.views():
            self.generation_viewer.add_view(view)

    def stored_view(self, stage: str, index: int) -> GeneratedView | None:
        """The view a stage made before the run was interrupted, if the store has it."""
        if self.views is None:
            return None
        for frame_index, frame in enumerate(self.views.frames):
            meta = frame.get("meta", {})
            if frame.get("stage") == stage and meta.get("index") == index:
                return self.views.view(frame_index)
        return None

    def store_view(self, view: GeneratedView) -> GeneratedView:
        if self.views is not None:
            view = self.views.append(view)
        self.generation_viewer.add_view(view)
        return view

    def write_image(self, name: str, image: Tensor) -> None:
        """An image ``(3, H, W)`` or ``(H, W, 3)`` in [0, 1] as ``<run>/<name>`` (atomic), when outputs are written."""
        if self.run_dir is None or self.config.run_outputs == "skip":
            return
        from PIL import Image

        hwc = image.permute(1, 2, 0) if image.shape[0] == 3 and image.shape[-1] != 3 else image
        array = (hwc.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
        with atomic_open(self.run_dir / name, "wb") as f:
            Image.fromarray(np.ascontiguousarray(array)).save(f, format="PNG")

    def write_camera_path(self) -> None:
        """``<run>/camera_paths/walkthrough.json``: the walk-through for ``ns-render camera-path``."""
        if self.run_dir is None or self.config.run_outputs == "skip":
            return
        from scene3d.methods.dreamspace.datamanager import WALK_FOV, WALK_HEIGHT, WALK_WIDTH

        c2w = self.datamanager.walkthrough
        loop = torch.cat([c2w, c2w[:1]])
        seconds = 2.0 * len(c2w)
        path = {
            "camera_type": "perspective", "render_height": WALK_HEIGHT, "render_width": WALK_WIDTH, "seconds": seconds,
            "camera_path": [{"camera_to_world": m.flatten().tolist(), "fov": WALK_FOV, "aspect": WALK_WIDTH / WALK_HEIGHT}
                            for m in stages.smooth_loop(loop, 8)],
        }  # fmt: skip
        with atomic_open(self.run_dir / "camera_paths" / "walkthrough.json", "w") as f:
            f.write(json.dumps(path, indent=1) + "\n")

    # ------------------------------------------------------------------ training
    def get_param_groups(self) -> dict[str, list]:
        return self.model.get_param_groups()

    def train_iteration(self, step: int, optimizers, grad_scaler):  # noqa: ANN001, ANN201
        """One step of the stage holding ``step`` (module docstring)."""
        position = self.schedule.at(step)
        stage = position.stage
        metrics: dict[str, Tensor] = {}
        loss = torch.zeros((), device=self.device)
        if position.finished:
            self.generation_viewer.set_status(self.schedule.status(step))
            return loss, {}, metrics
        index = sum(1 for s in self.schedule.stages[: position.index] if s.kind == stage.kind)  # k-th of its kind
        self.generation_viewer.set_status(self.schedule.status(step, stages.ACTIVITY[stage.kind]))
        if stage.kind == "imitate":
            loss = stages.imitation_step(self, step, position.step_in_stage, optimizers)
            return loss, {"imitation": loss.detach()}, metrics
        handler = getattr(stages, f"run_{stage.kind}")
        metrics = handler(self, step, index) or {}
        return loss, {}, {k: torch.as_tensor(v) for k, v in metrics.items()}

    def get_training_callbacks(self, training_callback_attributes):  # noqa: ANN001, ANN201
        return []

    def get_eval_loss_dict(self, step: int):  # noqa: ANN201
        return {}, {}, {}

    def get_eval_image_metrics_and_images(self, step: int):  # noqa: ANN201
        return {}, {}

    def get_average_eval_image_metrics(self, step=None, output_path=None, get_std=False):  # noqa: ANN001, ANN201
        return {}
