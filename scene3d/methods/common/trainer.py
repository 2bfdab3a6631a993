"""The trainer every scene3d method runs under: nerfstudio's, with safe checkpoints.

nerfstudio 1.1.5's trainer writes checkpoints in place (a run killed mid-write leaves a torn file that resume then
chokes on) and reloads them with a bare ``torch.load``. :class:`S3DTrainer` changes only that:

* checkpoints are written to a temporary file beside the checkpoint folder and renamed into it, so the folder only
  ever holds complete checkpoints; older ones are deleted after the new one is in place; the temporary file a run
  killed mid-save leaves behind is removed when the next run starts in that folder or resumes from it;
* what is written is checked to load with ``torch.load(weights_only=True)`` (current torch's default, which
  ``ns-viewer``, ``ns-eval``, ``ns-render`` and ``ns-export`` use), and resume loads it that way;
* resume ignores stray files in the checkpoint folder and names the folder in its error when it holds nothing;
* a pipeline that needs more than one optimisation step per iteration (a GAN's alternating G and D steps) may
  define ``train_iteration(step, optimizers, grad_scaler)`` (see :class:`CustomIteration`), which then replaces
  nerfstudio's single forward/backward/step;
* a pipeline that starts a *new* run from another method's trained run (ReGS from an ``s3d-splat`` run, given as
  ``--load-dir``) may define ``warm_start(state, path)`` (see :class:`WarmStart`): when it takes the checkpoint,
  training starts at step 0 with fresh optimizers instead of resuming;
* ``--load-dir`` may name the run folder itself (the one holding ``nerfstudio_models/``);
* a pipeline that keeps files of its own in the run folder (the generated views of a generation method) may
  define ``attach_run_folder(run_dir, resumed_run_dir)`` (see :class:`RunFolderAware`): it is told the run folder,
  and the folder of the run being resumed, before any checkpoint is loaded;
* a browser that connects to the live viewer starts a little behind the first training camera, looking at the
  scene box's centre (nerfstudio's default viewpoint assumes scenes scaled into [-1, 1]; scene3d keeps datasets in their own
  units, so that default can sit inside the scene);
* on a CPU the viewer's "Max res" starts at 256 px rather than 512 (a quarter of the rays per frame), so frames
  arrive in seconds while training shares the two cores; the slider still goes up to 2048;
* every method runs on this machine's device by default (CUDA if present, else the CPU; nerfstudio's is CUDA);
* under ``ns-train``, scene3d's own input errors (:class:`~scene3d.core.errors.Scene3DError`: bad data, a missing
  pretrained model, a bad setting, a wrong run folder) end the run with that one line instead of a traceback
  (``SCENE3D_TRACEBACK=1`` shows it), and nerfstudio's config dump is printed once the pipeline is set up, so a run
  that fails setting up does not bury its error under it;
* when training ends with the viewer open, the message says how to exit and which flag exits by itself
  (``--viewer.quit-on-train-completion True``), and Ctrl-C then ends ``ns-train`` cleanly (exit 0, no traceback);
* a resumed run (``--load-dir``) trains ``--max-num-iterations`` more steps, as nerfstudio does, and says so; its
  progress line and ETA count to the step it will end at (nerfstudio's count to ``max_num_iterations`` alone).

Importing this module also hides the warnings that nerfstudio 1.1.5's own code triggers on current torch (list
indexing in its cameras, ``torch.cuda.amp`` in its trainer and activations, ``float()`` of losses in its writer):
they fill the start of every run, and a user can do nothing about them. The filter applies to warnings raised from
nerfstudio's modules only.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from nerfstudio.engine.optimizers import Optimizers

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from scene3d.core.checkpoint import (
    atomic_torch_save,
    checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    to_plain,
)
from scene3d.core.errors import RunFolderError, Scene3DError

_NERFSTUDIO_ON_NEW_TORCH = (
    "Using a non-tuple sequence for multidimensional indexing",  # cameras.py indexes with lists
    "`torch.cuda.amp.",  # GradScaler in its trainer, custom_fwd/custom_bwd in its activations
    "Converting a tensor with requires_grad=True to a scalar",  # its writer logs losses with float(tensor)
)
for _message in _NERFSTUDIO_ON_NEW_TORCH:
    warnings.filterwarnings("ignore", message=_message, module=r"nerfstudio\.")


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators, as ``ns-train`` does before it sets up a trainer (the trainer
    itself does not): code that builds a trainer from a config (the demo, benchmarks) calls this first."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def local_viewer() -> ViewerConfig:
    """nerfstudio's viewer settings, bound to 127.0.0.1 rather than every interface (nerfstudio's 0.0.0.0)."""
    return ViewerConfig(websocket_host="127.0.0.1", num_rays_per_chunk=1 << 14)


def local_machine() -> MachineConfig:
    """nerfstudio's machine settings on this machine's device: CUDA when there is one, else the CPU (nerfstudio
    defaults to CUDA, so on a CPU-only machine every ``ns-train`` would otherwise need ``--machine.device-type cpu``)."""
    return MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu")


@runtime_checkable
class CustomIteration(Protocol):
    """A pipeline that runs its own training iteration (e.g. alternating GAN steps).

    It zeroes, steps and schedules the optimizers it uses itself, and returns what nerfstudio's
    ``Trainer.train_iteration`` returns: ``(loss, loss_dict, metrics_dict)`` for logging.
    """

    def train_iteration(
        self, step: int, optimizers: Optimizers, grad_scaler: torch.amp.GradScaler
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]: ...


@runtime_checkable
class WarmStart(Protocol):
    """A pipeline that can start a new run from another method's checkpoint.

    ``warm_start`` receives the loaded checkpoint (``state["pipeline"]`` is the other run's pipeline state) and its
    path. It returns ``True`` when it took the checkpoint as its starting point (the trainer then starts at step 0
    and loads no optimizer state), ``False`` when the checkpoint is its own and should be resumed as usual, and
    raises (``RunFolderError``) when it can use neither.
    """

    def warm_start(self, state: dict, path: Path) -> bool: ...


@runtime_checkable
class RunFolderAware(Protocol):
    """A pipeline that writes files of its own into the run folder and reads them back on resume.

    ``attach_run_folder`` is called once, before the checkpoint (if any) is loaded, with this run's folder and the
    folder of the run that ``--load-dir`` / ``--load-checkpoint`` resumes (``None`` for a fresh run; the same folder
    when the resumed run had the same timestamp). The resumed run's folder must only be read.
    """

    def attach_run_folder(self, run_dir: Path, resumed_run_dir: Path | None) -> None: ...


@dataclass
class S3DTrainerConfig(TrainerConfig):
    """nerfstudio's ``TrainerConfig`` with scene3d's trainer, this machine's device and a viewer bound to localhost."""

    _target: type = field(default_factory=lambda: S3DTrainer)
    machine: MachineConfig = field(default_factory=local_machine)
    """Device settings; the default is CUDA where present, else the CPU (``--machine.device-type`` overrides)."""
    viewer: ViewerConfig = field(default_factory=local_viewer)
    """Viewer settings; ``--viewer.websocket-host 0.0.0.0`` serves it to other machines."""

    def print_to_terminal(self) -> None:
        """``ns-train`` calls this first: scene3d's errors become one line, and the config dump waits for setup.

        The dump is printed by :meth:`S3DTrainer.setup` once the pipeline (dataset, model, priors) is set up, so a
        run that fails there ends with its one-line error rather than after the ~200-line dump.
        """
        global _print_config_after_setup
        install_error_hook("ns-train")
        _print_config_after_setup = True


_print_config_after_setup = False  # set by S3DTrainerConfig.print_to_terminal (ns-train); read by S3DTrainer.setup


def install_error_hook(program: str) -> None:
    """Make an uncaught :class:`~scene3d.core.errors.Scene3DError` print ``PROGRAM: error: MESSAGE`` and exit 1.

    Every other exception keeps Python's (or the previous hook's) report. ``SCENE3D_TRACEBACK=1`` keeps the
    traceback for scene3d's errors too. Installing twice is harmless.
    """
    previous = sys.excepthook
    if getattr(previous, "scene3d_program", None) is not None:
        return

    def hook(exc_type, exc, tb) -> None:  # noqa: ANN001 - sys.excepthook's signature
        if isinstance(exc, Scene3DError) and os.environ.get("SCENE3D_TRACEBACK", "") in ("", "0"):
            sys.stderr.write(f"{program}: error: {exc}\n")
            sys.stderr.flush()
            return
        previous(exc_type, exc, tb)

    hook.scene3d_program = program  # type: ignore[attr-defined]
    sys.excepthook = hook


class S3DTrainer(Trainer):
    """nerfstudio's trainer with atomic, weights-only checkpoints (see the module docstring)."""

    config: S3DTrainerConfig

    def setup(self, test_mode: str = "val") -> None:  # type: ignore[override]
        """nerfstudio's setup, then a starting viewpoint for every browser that connects to the viewer."""
        super().setup(test_mode=test_mode)
        if _print_config_after_setup and self.local_rank == 0:
            TrainerConfig.print_to_terminal(self.config)  # deferred by S3DTrainerConfig.print_to_terminal
        if self._start_step > 0:
            end = self._start_step + self.config.max_num_iterations
            CONSOLE.print(
                f"Training {self.config.max_num_iterations} more steps, from step {self._start_step} to {end - 1} "
                "(--max-num-iterations counts the steps of this run)."
            )
            # nerfstudio's progress line and ETA count to max_num_iterations from 0; this run ends at `end`
            from nerfstudio.utils import writer

            writer.GLOBAL_BUFFER["max_iter"] = end
        for folder in (self.base_dir, self.checkpoint_dir):  # a run started again in its own folder
            remove_stale_temporaries(folder)
        server = getattr(self.viewer_state, "viser_server", None)
        if server is not None:
            server.on_client_connect(self._frame_scene)
            if self.device == "cpu":
                self.viewer_state.control_panel._max_res.value = 256

    def _frame_scene(self, client) -> None:
        from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        dataset = getattr(pipeline.datamanager, "train_dataset", None)
        if dataset is None or len(dataset.cameras) == 0:
            return
        first = dataset.cameras.camera_to_worlds[0, :3, 3].double()
        target = dataset.scene_box.aabb.double().mean(dim=0)
        if torch.linalg.norm(target - first) < 1e-6:
            return
        eye = first + 0.2 * (first - target)  # a step back, so the first camera's own frustum is not in the way
        client.camera.position = (eye * VISER_NERFSTUDIO_SCALE_RATIO).numpy()
        client.camera.look_at = (target * VISER_NERFSTUDIO_SCALE_RATIO).numpy()
        client.camera.up_direction = (0.0, 0.0, 1.0)

    def _train_complete_viewer(self) -> None:
        """Keep the viewer up after training, as nerfstudio does, until Ctrl-C, which then ends the run cleanly."""
        if not (self.config.is_viewer_enabled() or self.config.is_viewer_legacy_enabled()):
            return
        CONSOLE.print(
            "Training finished; the viewer stays open until Ctrl-C. To exit when training ends (scripts), pass "
            "--viewer.quit-on-train-completion True, or train without the viewer: --vis tensorboard.",
            justify="center",
        )
        try:
            super()._train_complete_viewer()
        except KeyboardInterrupt:
            CONSOLE.print("Viewer closed.")

    def train_iteration(self, step: int):  # type: ignore[override]
        """nerfstudio's iteration, or the pipeline's own when it implements :class:`CustomIteration`."""
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        if isinstance(pipeline, CustomIteration):
            return pipeline.train_iteration(step, self.optimizers, self.grad_scaler)
        return super().train_iteration(step)

    def save_checkpoint(self, step: int) -> None:
        """Write ``step-XXXXXXXXX.ckpt`` atomically, then drop older checkpoints if only the latest is kept."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path: Path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        state = to_plain({
            "step": step,
            "pipeline": pipeline.state_dict(),
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        })
        # The temporary file lives in the run folder, not the checkpoint folder: nerfstudio's own loaders parse
        # every name in the checkpoint folder as a step number.
        atomic_torch_save(state, ckpt_path, tmp_dir=self.checkpoint_dir.parent)
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("step-*.ckpt"):
                if old != ckpt_path:
                    old.unlink()

    def _load_checkpoint(self) -> None:
        """Resume from ``--load-dir`` (latest or ``--load-step``) or ``--load-checkpoint``, weights only."""
        load_dir, load_file = self.config.load_dir, self.config.load_checkpoint
        if load_dir is not None and (Path(load_dir) / "nerfstudio_models").is_dir():
            load_dir = Path(load_dir) / "nerfstudio_models"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        if isinstance(pipeline, RunFolderAware):
            resumed = Path(load_dir).parent if load_dir is not None else None
            if resumed is None and load_file is not None:
                resumed = Path(load_file).parent.parent
            pipeline.attach_run_folder(Path(self.base_dir), resumed)
        if load_dir is not None:
            if self.config.load_step is None:
                load_path = latest_checkpoint(load_dir)
            else:
                load_path = Path(load_dir) / f"step-{self.config.load_step:09d}.ckpt"
                if not load_path.is_file():
                    raise RunFolderError(
                        load_dir, f"has no checkpoint for step {self.config.load_step}; it has {checkpoint_steps(load_dir)}"
                    )
        elif load_file is not None:
            load_path = Path(load_file)
        else:
            CONSOLE.print("No checkpoint to load, so training from scratch.")
            return
        for folder in (load_path.parent, load_path.parent.parent):  # what a save killed mid-write left there
            remove_stale_temporaries(folder)
        state = load_checkpoint(load_path)
        if isinstance(pipeline, WarmStart) and pipeline.warm_start(state, load_path):
            CONSOLE.print(f"Started a new run from {load_path} (its step {state['step']}).")
            return
        self._start_step = state["step"] + 1
        self.pipeline.load_pipeline(state["pipeline"], state["step"])
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        CONSOLE.print(f"Resumed from {load_path} (step {state['step']}).")
