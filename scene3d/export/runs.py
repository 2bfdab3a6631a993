"""A trained run, read from its ``config.yml``: checked in a fraction of a second, loaded only when it is right.

``s3d export`` (and any command that takes ``--load-config``) first calls :func:`read_run`, which parses the YAML
without building a single object (nerfstudio writes its configs as ``!!python/object`` tags; here those become plain
dicts, so nothing is imported and no model is set up), then :func:`require_method`. A missing file, a file that is
not a nerfstudio config, a run of a method the command cannot use, or a run without a checkpoint is one
:class:`~scene3d.core.errors.RunFolderError`, before torch, nerfstudio or the dataset load. :func:`load_pipeline`
then sets the run up, with its checkpoints found beside ``config.yml`` (nerfstudio's ``eval_setup`` looks for them
under the ``output_dir`` the run was started with, relative to the folder it was started from).

Example:
    >>> run = read_run("outputs/object/s3d-nerf-tiny/2024-01-01_000000/config.yml")  # doctest: +SKIP
    >>> require_method(run, SPLAT_METHODS, "s3d export splat")  # doctest: +SKIP
    RunFolderError: ...: is an s3d-nerf-tiny run (a NeRF); `s3d export splat` exports Gaussian splat runs ...
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scene3d.core.checkpoint import checkpoint_steps
from scene3d.core.errors import RunFolderError

NERF_METHODS = frozenset({"s3d-nerf", "s3d-nerf-tiny"})
"""Runs whose model has a density field with an occupancy grid (``s3d export mesh``)."""
SPLAT_METHODS = frozenset({"s3d-splat", "s3d-splat-tiny", "regs", "regs-tiny", "splatfacto", "splatfacto-big", "splatfacto-w-light"})
"""Runs whose model holds Gaussian splats (``s3d export splat``)."""
EPIGRAF_METHODS = frozenset({"epigraf", "epigraf-tiny"})
"""EpiGRAF runs (``s3d export epigraf``)."""
DREAMSPACE_METHODS = frozenset({"dreamspace", "dreamspace-tiny"})
"""Runs whose model is a textured room mesh (``s3d export dreamspace``)."""

_KINDS = (
    (NERF_METHODS, "a NeRF", "s3d export mesh"),
    (SPLAT_METHODS, "Gaussian splats", "s3d export splat"),
    (EPIGRAF_METHODS, "a 3D GAN", "s3d export epigraf"),
    (DREAMSPACE_METHODS, "a retextured room", "s3d export dreamspace"),
    (frozenset({"clnerf", "clnerf-tiny"}), "a continual NeRF", "ns-export / ns-render"),
)


@dataclass(frozen=True)
class RunInfo:
    """What ``config.yml`` says about a run, without loading it."""

    config_path: Path
    """The run's ``config.yml``."""
    method_name: str
    """The ``ns-train`` method it was trained with."""
    checkpoint_dir: Path
    """``nerfstudio_models/`` beside ``config.yml``."""
    data: Path | None
    """The dataset it was trained on (as given to ``ns-train``; relative paths are relative to where it ran)."""
    tree: Mapping[str, Any]
    """The whole config as plain dicts (``__type__`` holds each object's class path)."""

    @property
    def run_dir(self) -> Path:
        """The run folder (the one holding ``config.yml``)."""
        return self.config_path.parent

    @property
    def checkpoint_steps(self) -> list[int]:
        """Steps of the checkpoints in :attr:`checkpoint_dir` (empty when there are none)."""
        return checkpoint_steps(self.checkpoint_dir) if self.checkpoint_dir.is_dir() else []


def _plain_loader() -> type:
    import yaml

    class PlainLoader(yaml.SafeLoader):
        """YAML with nerfstudio's python tags read as plain data: nothing is imported or constructed."""

    def python_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        kind, _, target = suffix.partition(":")
        if isinstance(node, yaml.MappingNode):
            value = loader.construct_mapping(node, deep=True)
            return {"__type__": target, **value} if kind == "object" else value
        if isinstance(node, yaml.SequenceNode):
            items = loader.construct_sequence(node, deep=True)
            if target in ("pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.Path"):
                return Path(*[str(i) for i in items]) if items else Path(".")
            return tuple(items) if kind == "tuple" else items
        return target if kind == "name" else loader.construct_scalar(node)

    PlainLoader.add_multi_constructor("tag:yaml.org,2002:python/", python_tag)
    return PlainLoader


def read_run(config_path: str | Path) -> RunInfo:
    """Parse a run's ``config.yml`` as plain data (fast; nothing is imported) and find its checkpoint folder.

    Raises:
        RunFolderError: the file does not exist, is a folder, or is not a nerfstudio run config.
    """
    import yaml

    path = Path(config_path)
    if path.is_dir():
        hint = " (pass the config.yml inside it)" if (path / "config.yml").is_file() else ""
        raise RunFolderError(path, f"is a folder, not a run's config.yml{hint}")
    if not path.is_file():
        raise RunFolderError(path, "does not exist; pass the config.yml of a trained run (outputs/<experiment>/<method>/<timestamp>/config.yml)")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_plain_loader())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RunFolderError(path, f"is not a YAML file ({type(err).__name__})") from err
    if not isinstance(tree, dict) or not isinstance(tree.get("method_name"), str):
        raise RunFolderError(path, "is not a nerfstudio run config (it has no method_name); pass the config.yml ns-train wrote")
    relative = tree.get("relative_model_dir") or Path("nerfstudio_models")
    return RunInfo(
        config_path=path,
        method_name=tree["method_name"],
        checkpoint_dir=path.parent / Path(relative),
        data=_data_path(tree),
        tree=tree,
    )


def _data_path(tree: Mapping[str, Any]) -> Path | None:
    datamanager = (tree.get("pipeline") or {}).get("datamanager") or {}
    for candidate in (datamanager.get("data"), (datamanager.get("dataparser") or {}).get("data"), tree.get("data")):
        if isinstance(candidate, Path) and str(candidate) not in ("", "."):
            return candidate
    return None


def require_method(run: RunInfo, methods: Collection[str], command: str, *, needs_checkpoint: bool = True) -> None:
    """Raise one clear error unless ``run`` is of one of ``methods`` and (``needs_checkpoint``) holds a checkpoint.

    Runs of methods scene3d does not know are let through (a method built on one of ``methods`` under another name);
    the command checks the loaded model then.
    """
    if run.method_name not in methods:
        for kind_methods, what, use in _KINDS:
            if run.method_name in kind_methods:
                raise RunFolderError(
                    run.config_path,
                    f"is a {run.method_name} run ({what}); `{command}` exports runs of {', '.join(sorted(methods))}"
                    + ("" if use == command else f". For this run use `{use}`"),
                )
    if needs_checkpoint and not run.checkpoint_steps:
        raise RunFolderError(
            run.checkpoint_dir,
            "holds no step-*.ckpt checkpoint (the run stopped before its first save); train it longer or resume it",
        )


def load_pipeline(run: RunInfo, *, test_mode: str = "inference") -> tuple[Any, Any, Path, int]:
    """nerfstudio's ``eval_setup`` for ``run``, with the checkpoints taken from beside ``config.yml``.

    Returns ``(config, pipeline, checkpoint_path, step)`` like ``eval_setup``.
    """
    from nerfstudio.utils.eval_utils import eval_setup

    checkpoint_dir = run.checkpoint_dir.resolve()

    def beside_config(config: Any) -> Any:
        # get_checkpoint_dir() is base_dir / relative_model_dir; an absolute right-hand side wins the join
        config.relative_model_dir = checkpoint_dir
        return config

    return eval_setup(run.config_path, test_mode=test_mode, update_config_callback=beside_config)
