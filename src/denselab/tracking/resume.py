"""``denselab-train resume=<run id>`` (or ``resume=last``): continue a run that did not finish.

The run is continued with its own settings, read back from the ``config.yaml`` it logged, so
the command needs nothing else; overrides on the command line may only change what does not
make it a different run (more epochs, where the data and store are, progress bar, figures).
Training goes on from the run's ``last.ckpt``: from the folder the run recorded (tag
``checkpoint_dir``) when it is on this machine, else from the copy logged to the run.
"""

from __future__ import annotations

import logging
import re
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf

from denselab.data.digest import DATA_TAG
from denselab.errors import CheckpointError, ConfigError, TrackingError
from denselab.overrides import override_keys
from denselab.tracking.holder import process_alive, refuse_live_holder
from denselab.tracking.runs import experiment_name, newest_run, tracking_uri
from denselab.tracking.store import Store, sqlite_path
from denselab.training.checkpoint_files import LAST, RESUME_ARTIFACT_DIR, checkpoint_run_id

log = logging.getLogger("denselab")

# Settings a resumed run may change: they say how long to train and where things are, not
# what is trained. A key names itself and everything below it.
MAY_CHANGE = (
    "resume",
    "rerun",
    "trainer.max_epochs",
    "trainer.enable_progress_bar",
    "trainer.accelerator",
    "trainer.devices",
    "tracking.uri",
    "tracking.skip_finished",
    "data.dir",
    "data.csv",
    "data.images",
    "data.mirrors",
    "data.system_dirs",
    "callbacks",
    "threads",
    "steps_per_batch",
)


def may_change(key: str) -> bool:
    """Whether a resumed run may change setting ``key`` (a dotted path): MAY_CHANGE names
    it, or a group above it."""
    return any(key == k or key.startswith(k + ".") for k in MAY_CHANGE)


@dataclass
class Resume:
    """A run to continue, and how."""

    run_id: str
    cfg: DictConfig  # the run's own settings, with the changes resume allows
    checkpoint: Optional[Path]  # what training continues from; None: from epoch 0
    checkpoint_dir: Path  # where the resumed run writes its checkpoints
    data_digest: Optional[str] = None  # what its data was (denselab.data.digest); None: unknown


def prepare_resume(
    cfg: DictConfig, overrides: Sequence[str], output_dir: Path, store: Optional[Store] = None
) -> Optional[Resume]:
    """The run ``cfg.resume`` names, checked and ready to continue; None without ``resume``.
    ``store``: where to look (default: the store of ``cfg``).

    Raises DenselabError, before any run changes, for a run that cannot be continued.
    """
    wanted = cfg.get("resume")
    if not wanted:
        return None
    store = store or Store(tracking_uri(cfg))
    uri = store.uri
    if not store.exists():
        raise TrackingError(
            f"resume={wanted} needs the MLflow store the run lives in, and there is none at "
            f"{sqlite_path(uri)}; start from the directory the run started in, or give "
            "tracking.uri=..."
        )
    client = store.client
    run = find_run(client, str(wanted), experiment_name(cfg), uri)
    run_id = run.info.run_id
    refuse_if_alive(run)
    run_cfg = run_config(client, run, cfg, overrides, uri, f"resume={wanted}")
    run_cfg.resume = run_id
    checkpoint, checkpoint_dir = locate_checkpoint(client, run, output_dir)
    digest = run.data.tags.get(DATA_TAG) or None
    return Resume(run_id, run_cfg, checkpoint, checkpoint_dir, digest)


def run_config(
    client: MlflowClient, run: Run, cfg: DictConfig, overrides: Sequence[str], uri: str, asked: str
) -> DictConfig:
    """The settings ``run`` logged, with the overrides MAY_CHANGE allows, in the store at
    ``uri`` wherever the command runs, and its data where it found it."""
    run_cfg = merged_config(logged_config(client, run, asked), cfg, overrides, asked)
    run_cfg.tracking.uri = uri  # the store it was found in, wherever the command runs
    start_dir = run.data.tags.get("start_dir")
    if (
        start_dir
        and not Path(run_cfg.data.dir).is_absolute()
        and "data.dir" not in override_keys(overrides)
    ):
        run_cfg.data.dir = str(Path(start_dir) / run_cfg.data.dir)  # the data it trained on
    return run_cfg


def refuse_other_data(resume: Resume, data_digest: str) -> None:
    """Refuse to continue a run on data other than what it trained on: the same settings on
    other images would be another run under the old one's name. A run from before data
    digests were recorded cannot be checked, and is continued."""
    if resume.data_digest and resume.data_digest != data_digest:
        raise ConfigError(
            f"resume={resume.run_id}: the data differs from what the run trained on (data "
            f"digest {data_digest} here, {resume.data_digest} in the run), so continuing would "
            "mix two datasets in one run; point data.dir at the run's data, or start a new run "
            "without resume=."
        )


def find_run(client: MlflowClient, wanted: str, experiment: str, uri: str) -> Run:
    """The run ``resume=`` names: an id, or ``last``, the newest unfinished run of
    ``experiment`` whose process is not alive."""
    if wanted == "last":
        found = client.get_experiment_by_name(experiment)
        run = found and newest_run(
            client,
            found.experiment_id,
            accept=lambda r: r.info.status != "FINISHED" and process_alive(r) is not True,
        )
        if run:
            return run
        raise ConfigError(
            f"resume=last found no unfinished run in experiment {experiment!r} of {uri}; "
            "name the run with resume=<run id>, or the experiment with data=... or "
            "tracking.experiment_name=..."
        )
    try:
        run = client.get_run(wanted)
    except MlflowException:
        run = None
    if run is None or run.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"resume={wanted}: there is no such run in the MLflow store at {uri}; copy the "
            "run id from the MLflow UI, or give the store it lives in with tracking.uri=..."
        )
    if run.info.status == "FINISHED":
        raise ConfigError(
            f"resume={wanted}: run {run.info.run_name!r} already FINISHED, so there is nothing "
            "to continue; start a new run instead (without resume=)."
        )
    return run


def refuse_if_alive(run: Run) -> None:
    refuse_live_holder(run, f"resume={run.info.run_id}")


# Where the classes a config names (``_target_``) lived before the subpackages: a run logged
# then names them so in its config.yaml, and resume instantiates what it names.
MOVED_TARGETS = {
    "denselab.model.": "denselab.training.module.",
    "denselab.run_logger.": "denselab.tracking.logger.",
    "denselab.checkpoints.": "denselab.training.checkpoints.",
    "denselab.callbacks.": "denselab.reporting.callbacks.",
    "denselab.hydra_callbacks.": "denselab.sweeps.hydra_hooks.",
    "denselab.cluster.": "denselab.sweeps.slurm.",
}


def current_targets(config: Any) -> Any:
    """``config`` (a plain container) with every ``_target_`` of a moved class renamed to
    where the class lives now."""
    if isinstance(config, dict):
        return {
            key: _moved(value) if key == "_target_" else current_targets(value)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [current_targets(value) for value in config]
    return config


def _moved(target: Any) -> Any:
    for old, new in MOVED_TARGETS.items():
        if isinstance(target, str) and target.startswith(old):
            return new + target[len(old) :]
    return target


def logged_config(client: MlflowClient, run: Run, asked: str = "") -> DictConfig:
    """The settings the run logged (``config.yaml``, interpolations resolved), with the
    classes it names where they live today. ``asked``: the command's words, for errors
    (default ``resume=<id>``)."""
    asked = asked or f"resume={run.info.run_id}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, "config.yaml", tmp)
        except (MlflowException, OSError):
            raise ConfigError(
                f"{asked}: the run logged no config.yaml (it stopped before its settings were "
                "recorded), so its settings are unknown; start a new run."
            ) from None
        logged = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        return OmegaConf.create(current_targets(logged))


def merged_config(
    run_cfg: DictConfig, cfg: DictConfig, overrides: Sequence[str], asked: str = ""
) -> DictConfig:
    """``run_cfg`` with the command line's overrides that MAY_CHANGE allows; any other one that
    changes a setting is refused, naming it. A top-level setting the run never had (added to
    denselab since, such as ``steps_per_batch``) is this command's. ``asked``: the command's
    words, for errors (default ``resume=<id>``)."""
    asked = asked or f"resume={cfg.resume}"
    merged = run_cfg.copy()
    for key in cfg:
        if key not in merged:  # a setting added to denselab since the run was made
            OmegaConf.update(merged, key, _as_container(cfg[key]), force_add=True)
    for key in override_keys(overrides):
        new = _as_container(OmegaConf.select(cfg, key))
        old = _as_container(OmegaConf.select(run_cfg, key))
        if may_change(key):
            if key == "trainer.max_epochs" and old is not None and new < old:
                raise ConfigError(
                    f"{asked} may raise trainer.max_epochs, not lower it "
                    f"(from {old} to {new}); leave it at {old} or more."
                )
            OmegaConf.update(merged, key, new, force_add=True)
            if key == "data.dir" and old is not None:
                _follow_the_folder(merged, str(old), str(new), override_keys(overrides))
        elif _what_is_trained(key, new) != _what_is_trained(key, old):
            fix = "resume=" if asked.startswith("resume=") else "rerun= (and set it there)"
            raise ConfigError(
                f"{asked} cannot change {key} (from {old} to {new}): that would "
                f"be a different run; drop the override, or start a new run without {fix}."
            )
    return merged


def _what_is_trained(key: str, value: Any) -> Any:
    """``value`` of ``key`` without what MAY_CHANGE: naming a whole group (``data=digits``)
    beside ``data.dir=...`` compares the group's other settings, not where its files are."""
    if not isinstance(value, dict):
        return value
    return {
        sub: _what_is_trained(f"{key}.{sub}", v)
        for sub, v in value.items()
        if not may_change(f"{key}.{sub}")
    }


def _follow_the_folder(
    merged: DictConfig, old_dir: str, new_dir: str, given: Sequence[str]
) -> None:
    """Files the run found under its old ``data.dir`` (an image table's ``csv`` and
    ``images``, logged as resolved paths) are looked for under the new one, unless the
    command names them itself. Whether it is the same data, the run's data digest decides."""
    prefix = old_dir.rstrip("/") + "/"
    for key, value in merged.data.items():
        if isinstance(value, str) and value.startswith(prefix) and f"data.{key}" not in given:
            merged.data[key] = str(Path(new_dir) / value[len(prefix) :])


def _as_container(value: Any) -> Any:
    if isinstance(value, DictConfig) or OmegaConf.is_list(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


def locate_checkpoint(
    client: MlflowClient, run: Run, output_dir: Path
) -> tuple[Optional[Path], Path]:
    """(checkpoint to continue from, folder to write to): the run's own folder where it is on
    this host, else the copy logged to the run, written on into this job's folder. A
    checkpoint that does not load (cut short by a crash mid-write, a disk error) is named
    and the next one tried; with none intact, the resume stops with the files tried."""
    run_id, tags = run.info.run_id, run.data.tags
    own_dir = Path(tags["checkpoint_dir"]) if tags.get("checkpoint_dir") else None
    damaged: list[str] = []
    if own_dir and tags.get("host") == socket.gethostname() and (own_dir / LAST).is_file():
        try:
            return _checked(own_dir / LAST, run_id), own_dir
        except CheckpointError as err:
            log.warning("%s Trying the copy logged to the run.", err)
            damaged.append(f"{own_dir / LAST} ({_why(err)})")
    new_dir = own_dir if damaged else output_dir / "checkpoints"
    try:
        copy = client.download_artifacts(run_id, f"{RESUME_ARTIFACT_DIR}/{LAST}", str(output_dir))
    except (MlflowException, OSError):
        if damaged:
            raise _no_intact_checkpoint(run_id, damaged + ["no copy logged to the run"]) from None
        log.warning(
            "Run %s has no checkpoint here (%s) nor a copy logged to it: it starts again from "
            "epoch 0, which gives the same result with the same seed.",
            run_id,
            own_dir / LAST if own_dir else "no folder recorded",
        )
        return None, new_dir
    try:
        checked = _checked(Path(copy), run_id)
    except CheckpointError as err:
        raise _no_intact_checkpoint(run_id, [*damaged, f"the logged copy ({_why(err)})"]) from None
    log.info("Continuing from the checkpoint copy logged to the run (%s)", copy)
    return checked, new_dir


def _why(err: CheckpointError) -> str:
    """What load_checkpoint found wrong, without the path it names first."""
    found = re.search(r"\((.*)\)", str(err))
    return found.group(1) if found else str(err)


def _no_intact_checkpoint(run_id: str, tried: list[str]) -> CheckpointError:
    return CheckpointError(
        f"resume={run_id}: no intact checkpoint to continue from (tried {'; '.join(tried)}); "
        "start the run anew without resume= (the same seed gives the same result), or use "
        "its model, which holds its best epoch's weights."
    )


def _checked(path: Path, run_id: str) -> Path:
    owner = checkpoint_run_id(path)
    if owner and owner != run_id:
        raise ConfigError(
            f"resume={run_id}: the checkpoint {path} belongs to run {owner}, not to this one; "
            "the run's checkpoint folder was reused, so resume that run instead."
        )
    return path
