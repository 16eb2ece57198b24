"""MLflow: where runs are stored, the experiment, and the life of one run.

The default store is sqlite under ``./mlruns`` of the directory the command started in, so
every job of a sweep shares it. A fresh sqlite DB opened by several processes at once races
its schema migration, so every process creates or migrates the DB, and creates the
experiment, under the store's file lock (:mod:`denselab.tracking.store`).

A run records the host and process that run it (tags ``host``, ``pid``; in a SLURM job also
the job, ``slurm.*``: :func:`denselab.sweeps.slurm.scheduler_tags`) and, through
:class:`denselab.training.checkpoints.RunCheckpoint`, its checkpoint folder: what resume needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from mlflow import MlflowClient
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags
from omegaconf import DictConfig, OmegaConf
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError

from denselab.sweeps.slurm import scheduler_tags
from denselab.errors import RunStopped, TrackingError, first_line
from denselab.tracking.signals import signals_held
from denselab.tracking.store import (
    bound_http_waits,
    sqlite_path,
    store_lock,
    wait_for_sqlite_writers,
)

log = logging.getLogger(__name__)


def tracking_uri(cfg: DictConfig, start_dir: Optional[Path] = None) -> str:
    """``tracking.uri``, or the embedded sqlite store under ``<start_dir>/mlruns``."""
    if cfg.tracking.uri:
        return str(cfg.tracking.uri)
    root = (start_dir or Path.cwd()).resolve() / "mlruns"
    return f"sqlite:///{root / 'mlflow.db'}"


def experiment_name(cfg: DictConfig) -> str:
    return cfg.tracking.experiment_name or cfg.data.name


def run_name(cfg: DictConfig) -> str:
    """What ran, at a glance: ``mnist-mlp[128]-sgd``."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    shape = ",".join(str(s) for s in cfg.model.hidden_sizes)
    optimizer = cfg.optimizer._target_.rsplit(".", 1)[-1].lower()
    return f"{cfg.data.name}-mlp[{shape}]-{optimizer}"


def start_run(
    cfg: DictConfig,
    data_digest: str,
    overrides: Sequence[str] = (),
    resume_run_id: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    name: Optional[str] = None,
) -> tuple[MlflowClient, str, str]:
    """Create the run (and store and experiment where new), or take over ``resume_run_id``
    (checked by :func:`denselab.tracking.resume.prepare_resume`); returns (client, run id, uri).
    ``tags`` and ``name`` are a sweep's (parent, swept values), see denselab.sweeps.parent;
    ``data_digest`` the content of the data it trains on (denselab.data.digest)."""
    from denselab.data.digest import DATA_TAG
    from denselab.sweeps.parent import CONFIG_TAG, config_hash

    uri = tracking_uri(cfg)
    client = open_store(uri)
    process = {"host": socket.gethostname(), "pid": str(os.getpid()), **(tags or {})}
    process.update(scheduler_tags())  # the SLURM job that runs it now, and its log files
    # What a later sweep recognises this run by, and a resume checks its data against.
    process[CONFIG_TAG] = config_hash(cfg, data_digest)
    process[DATA_TAG] = data_digest
    if resume_run_id:
        client.update_run(resume_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        for key, value in process.items():
            client.set_tag(resume_run_id, key, value)
        client.set_tag(resume_run_id, "resumable", "false")
        return client, resume_run_id, uri
    with store_lock(uri):  # two processes must not both create the experiment
        experiment_id = get_or_create_experiment(client, experiment_name(cfg))
    tags = {"dataset": cfg.data.name, "model": f"mlp{list(cfg.model.hidden_sizes)}", **process}
    tags["start_dir"] = str(Path.cwd())  # what relative paths (data.dir) are relative to
    if overrides:
        tags["overrides"] = " ".join(overrides)
    commit = git_commit(Path(__file__).parent)  # denselab's own code, where it is a checkout
    if commit:
        tags["mlflow.source.git.commit"] = commit
    # MLflow's own context: the user, the source (the script) and its type, as fluent runs get.
    tags = resolve_tags(tags)
    run = client.create_run(experiment_id, run_name=name or run_name(cfg), tags=tags)
    return client, run.info.run_id, uri


def open_store(uri: str) -> MlflowClient:
    """A client on the store at ``uri``, created if it is a new sqlite file."""
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        wait_for_sqlite_writers()
    elif uri.startswith(("http://", "https://")):
        bound_http_waits()
        _check_server(uri)
    elif uri.startswith("postgresql"):
        _check_database(uri)
    elif uri.startswith("file:") or "://" not in uri:
        raise TrackingError(
            f"tracking.uri={uri} is a file store, which MLflow 3 no longer accepts; use "
            "sqlite:///<absolute path>/mlflow.db, or leave tracking.uri unset for ./mlruns."
        )
    try:
        with store_lock(uri):
            # Both create and migrate a new sqlite DB: the client opens its store at once.
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
    except (MlflowException, SQLAlchemyError) as err:
        if "Invalid Host header" in str(err):
            raise TrackingError(_host_refused(uri)) from None
        raise TrackingError(
            f"The MLflow store at {shown_uri(uri)} cannot be used ({first_line(err)}); check "
            "tracking.uri, or leave it unset to use ./mlruns."
        ) from None
    return client


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, creating (or restoring) it if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location(client.tracking_uri, name)
            )
        except MlflowException:
            # Another job created it between our look-up and create: use theirs.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def artifact_location(uri: str, experiment: str) -> Optional[str]:
    """Where a new experiment of a sqlite store keeps its runs' artifacts: beside the
    database, in a folder named for the experiment (``mlruns/digits/<run id>/artifacts``).
    MLflow's own default is ``./mlruns`` of whatever folder the process started in, which
    scatters a store's artifacts wherever commands run (and fails where that folder is not
    writable). None elsewhere: a server or database store decides its own."""
    db = sqlite_path(uri)
    if db is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("._") or "experiment"
    return (db.resolve().parent / folder).as_uri()


def server_answers(uri: str, timeout: float = 3) -> bool:
    """Whether the MLflow server at ``uri`` answers its health check within ``timeout`` s."""
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException:
        return False
    return True


def _check_server(uri: str) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when no server answers."""
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5)
    except requests.RequestException as err:
        raise TrackingError(
            f"No MLflow server answers at {uri} ({type(err).__name__}); start one with "
            "`make ui` or `mlflow server`, or leave tracking.uri unset to use ./mlruns."
        ) from None


def _host_refused(uri: str) -> str:
    """MLflow 3's server answers only requests addressed to localhost or a private IP unless
    told otherwise (its guard against DNS rebinding): /health passes, every call fails."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return (
        f"The MLflow server at {uri} refuses requests addressed to {host} (MLflow's guard "
        f"against DNS rebinding); start it with `--allowed-hosts {host}` (several names "
        "comma-separated), or address it by a name it allows."
    )


# Seconds one connection attempt to a database server may take (libpq's connect_timeout).
DATABASE_CONNECT_TIMEOUT_S = 10


def _check_database(uri: str) -> None:
    """Fail in seconds, not after MLflow's ~100 s of reconnecting and a traceback, when the
    database server does not answer: one attempt, bounded by connect_timeout (a
    ``?connect_timeout=`` of the user's own in the URI wins)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    url = sqlalchemy.make_url(uri)
    connect_args = (
        {} if "connect_timeout" in url.query else {"connect_timeout": DATABASE_CONNECT_TIMEOUT_S}
    )
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=NullPool)
    except (ImportError, NoSuchModuleError) as err:
        raise TrackingError(
            f"tracking.uri={shown_uri(uri)} needs a database driver that is not installed "
            f"({first_line(err)}); write postgresql+psycopg:// and `pip install "
            "'denselab[server]'`, or install that driver."
        ) from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        raise TrackingError(
            f"Cannot connect to the PostgreSQL database at {shown_uri(uri)} "
            f"({first_line(getattr(err, 'orig', None) or err)}); start the database server or "
            "correct tracking.uri (host, port, user, database), or leave tracking.uri unset to "
            "use ./mlruns."
        ) from None
    finally:
        engine.dispose()


def shown_uri(uri: str) -> str:
    """``uri`` fit to print: a database URI's password masked."""
    if "://" in uri and "@" in uri.split("://", 1)[1]:
        import sqlalchemy

        with contextlib.suppress(Exception):
            return sqlalchemy.make_url(uri).render_as_string(hide_password=True)
    return uri


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"hidden_sizes": [128]}}`` -> ``{"model.hidden_sizes": "[128]"}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, bool, str)) else str(value)
    return flat


# What says how a run is recorded, located or shown, not what was trained: no param of its
# own (config.yaml, logged to every run, holds the whole config).
PLUMBING_GROUPS = ("tracking", "logger", "checkpoint", "callbacks", "hydra")
PLUMBING_KEYS = (
    "data.dir",
    "data.csv",
    "data.images",
    "data.mirrors",
    "data.system_dirs",
    "data.eval_batch_size",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.num_sanity_val_steps",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
)


def run_params(cfg: DictConfig) -> dict[str, Any]:
    """The settings a person compares runs by: the data, the model, the optimizer (by class
    name, ``optimizer=SGD``), the trainer's settings that change the result, and the seed.
    No ``_target_``/``_partial_``, no unset values, no plumbing."""
    container = OmegaConf.to_container(cfg, resolve=True)
    flat = flatten({k: v for k, v in container.items() if k not in PLUMBING_GROUPS})
    params = {
        key: value
        for key, value in flat.items()
        if value is not None
        and key.rsplit(".", 1)[-1] not in ("_target_", "_partial_")
        and key not in PLUMBING_KEYS
        and not (key == "data.seed" and value == cfg.seed)  # the run's seed, said once
    }
    params["optimizer"] = cfg.optimizer._target_.rsplit(".", 1)[-1]
    return dict(sorted(params.items()))


def git_commit(directory: Path) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def resume_command(run_id: str, uri: str) -> str:
    """The command that continues run ``run_id`` of the store at ``uri``, from any directory."""
    return f"denselab-train resume={run_id} tracking.uri={uri}"


@contextlib.contextmanager
def run_status(
    client: MlflowClient, run_id: str, last_checkpoint: Optional[Path] = None
) -> Iterator[None]:
    """End the run FINISHED, FAILED on an error, KILLED on a stop signal, whatever raised where.

    ``last_checkpoint`` is where the run's last.ckpt is written: the closing sentence of a
    stopped run, or of one whose tracking server went away, says how to continue from it.
    Lightning turns Ctrl-C inside ``fit`` into ``SystemExit(1)``; both KeyboardInterrupt and
    SystemExit mean the user stopped the run.
    """
    uri = client.tracking_uri
    try:
        yield
    except RunStopped as stop:
        stop.run_id, stop.last_checkpoint = run_id, last_checkpoint
        stop.resume_command = resume_command(run_id, uri)
        if stop.resumable:
            client.set_tag(run_id, "resumable", "true")
        with signals_held():  # a signal now would leave the run RUNNING
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    except (KeyboardInterrupt, SystemExit):
        with signals_held():  # a signal now would leave the run RUNNING
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as err:
        with contextlib.suppress(Exception):
            err.run_id = run_id  # the error's run exists and ends FAILED: nothing more to record
        if uri.startswith(("http://", "https://")) and not server_answers(uri):
            # Every further call would wait out its retries again: say what to do instead.
            lost = TrackingError(_server_lost(uri, run_id, last_checkpoint))
            lost.run_id = run_id
            raise lost from err
        with contextlib.suppress(Exception):
            client.set_tag(run_id, "error", f"{type(err).__name__}: {first_line(err)}"[:5000])
        with signals_held():  # a signal now would leave the run RUNNING
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        with signals_held():  # a signal now would leave the run RUNNING
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


def _server_lost(uri: str, run_id: str, last_checkpoint: Optional[Path]) -> str:
    if last_checkpoint and last_checkpoint.is_file():
        saved = f"its last checkpoint is {last_checkpoint}"
    else:
        saved = "it had no checkpoint yet"
    return (
        f"The MLflow server at {uri} stopped answering, so run {run_id} still shows RUNNING "
        f"there and {saved}; once the server is back, continue it with "
        f"`{resume_command(run_id, uri)}`."
    )
