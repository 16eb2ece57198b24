"""A run's life in MLflow: its names, its creation or takeover by this process, and its end
(FINISHED, FAILED on an error, KILLED on a stop signal), whatever raised where.

A run records who holds it (:mod:`denselab.tracking.holder`), what it is (its config hash and
data digest: :mod:`denselab.tracking.params`) and, through
:class:`denselab.training.checkpoints.RunCheckpoint`, its checkpoint folder: what resume needs.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence

from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.tracking.context.registry import resolve_tags
from omegaconf import DictConfig

from denselab.data.digest import DATA_TAG
from denselab.errors import HolderError, RunStopped, TrackingError, first_line
from denselab.tracking import faults
from denselab.tracking.holder import holder_tags, refuse_live_holder
from denselab.tracking.params import CONFIG_TAG, config_hash
from denselab.tracking.signals import signals_held
from denselab.tracking.store import (
    Store,
    get_or_create_experiment,
    health_problem,
    hide_passwords,
    refusals_said,
    shown_uri,
    sqlite_path,
    store_lock,
)


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
    store: Optional[Store] = None,
) -> tuple[MlflowClient, str, str]:
    """Create the run (and store and experiment where new), or take over ``resume_run_id``
    (checked by :func:`denselab.tracking.resume.prepare_resume`); returns (client, run id,
    uri). ``tags`` and ``name`` are a sweep job's (parent, swept values); ``data_digest`` the
    content of the data it trains on (:mod:`denselab.data.digest`); ``store`` where (default:
    the store of ``cfg``)."""
    store = store or Store(tracking_uri(cfg))
    with faults.told(sqlite_path(store.uri), "writing to the MLflow store", TrackingError):
        return _start_run(cfg, data_digest, store, overrides, resume_run_id, tags, name)


def _start_run(cfg, data_digest, store, overrides, resume_run_id, tags, name):
    client, uri = store.client, store.uri
    # What a later sweep recognises this run by, and a resume checks its data against.
    identity = {CONFIG_TAG: config_hash(cfg, data_digest), DATA_TAG: data_digest}
    if resume_run_id:
        take_over(client, resume_run_id, {**(tags or {}), **identity, "resumable": "false"})
        return client, resume_run_id, uri
    experiment_id = get_or_create_experiment(client, experiment_name(cfg))
    run_tags = {
        "dataset": cfg.data.name,
        "model": f"mlp{list(cfg.model.hidden_sizes)}",
        **holder_tags(),
        **(tags or {}),
        **identity,
        "start_dir": str(Path.cwd()),  # what relative paths (data.dir) are relative to
    }
    if overrides:
        run_tags["overrides"] = " ".join(overrides)
    commit = git_commit(Path(__file__).parent)  # denselab's own code, where it is a checkout
    if commit:
        run_tags["mlflow.source.git.commit"] = commit
    return client, create_run(client, experiment_id, name or run_name(cfg), run_tags), uri


def create_run(client: MlflowClient, experiment_id: str, name: str, tags: dict) -> str:
    """A new RUNNING run with ``tags`` (any URI's password in them masked) and MLflow's own
    context (the user, the source and its type, as fluent runs get); returns its id. A
    server's refusal (credentials, permission) is a TrackingError, and no run exists."""
    tags = {key: hide_passwords(str(value)) for key, value in tags.items()}
    named = functools.partial(_experiment_called, client, experiment_id)
    with refusals_said(client.tracking_uri, named):
        run = client.create_run(experiment_id, run_name=name, tags=resolve_tags(tags))
    return run.info.run_id


def _experiment_called(client: MlflowClient, experiment_id: str) -> str:
    """The name of experiment ``experiment_id`` for a sentence; its id where it cannot be
    read."""
    with contextlib.suppress(Exception):
        return client.get_experiment(experiment_id).name
    return experiment_id


def take_over(
    client: MlflowClient,
    run_id: str,
    tags: Optional[Mapping[str, str]] = None,
    asked: str = "",
    unknown_refused: bool = True,
    finished_refused: bool = True,
) -> None:
    """Make ``run_id`` RUNNING again, held by this process (and ``tags``); refused with
    HolderError, the run untouched, while another process holds it (see
    :func:`denselab.tracking.holder.refuse_live_holder`; ``asked`` names what asked). On a
    sqlite store the look and the claim are one step under the store's lock, so of two
    processes that take over one run at once, exactly one does; on a server, a claim tag is
    written, given time to be overwritten by a rival, and read back. With
    ``finished_refused``, a run another process finished meanwhile is refused too."""
    asked = asked or f"resume={run_id}"
    named = functools.partial(_experiment_of_run, client, run_id)
    with store_lock(client.tracking_uri), refusals_said(client.tracking_uri, named):
        run = client.get_run(run_id)
        refuse_live_holder(run, asked, unknown_refused)
        if finished_refused and run.info.status == "FINISHED":
            raise HolderError(
                f"{asked}: run {run_id} FINISHED meanwhile (another process continued it); "
                "nothing is left to continue."
            )
        if sqlite_path(client.tracking_uri) is None:
            _claim(client, run_id, asked, unknown_refused)
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        for key, value in {**holder_tags(), **(tags or {})}.items():
            client.set_tag(run_id, key, hide_passwords(str(value)))


def _experiment_of_run(client: MlflowClient, run_id: str) -> str:
    with contextlib.suppress(Exception):
        return _experiment_called(client, client.get_run(run_id).info.experiment_id)
    return f"(the one of run {run_id})"


CLAIM_TAG = "claim"
CLAIM_SETTLE_S = 1.0  # longer than a rival's look, claim and write on a working server


def _claim(client: MlflowClient, run_id: str, asked: str, unknown_refused: bool) -> None:
    # A server has no lock to hold: of two processes that both saw the run free, the one
    # whose claim is overwritten steps back, and so does one that finds the run held again.
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    client.set_tag(run_id, CLAIM_TAG, token)
    time.sleep(CLAIM_SETTLE_S)
    run = client.get_run(run_id)
    refuse_live_holder(run, asked, unknown_refused)
    if run.data.tags.get(CLAIM_TAG) != token:
        raise HolderError(
            f"{asked}: another process took run {run_id} over at the same moment "
            f"({run.data.tags.get(CLAIM_TAG)}); it continues the run, so this one stops."
        )


def newest_run(
    client: MlflowClient,
    experiment_id: str,
    filter_string: str = "",
    accept: Optional[Callable[[Run], bool]] = None,
) -> Optional[Run]:
    """The newest run of the experiment that matches ``filter_string`` (and ``accept``, a
    test MLflow's filter cannot say); None if there is none."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=1 if accept is None else 1000,
            page_token=token,
        )
        for run in page:
            if accept is None or accept(run):
                return run
        token = page.token
        if accept is None or not token:
            return None


def end_run(client: MlflowClient, run_id: str, status: str) -> None:
    """End the run FINISHED, FAILED or KILLED, with stop signals held back meanwhile: one that
    cut the write would leave the run RUNNING."""
    with signals_held():
        client.set_terminated(run_id, status)


def git_commit(directory: Path) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def resume_command(run_id: str, uri: str) -> str:
    """The command that continues run ``run_id`` of the store at ``uri``, from any directory
    (a database's password masked: it is printed and logged)."""
    return f"denselab-train resume={run_id} tracking.uri={shown_uri(uri)}"


# MLflow 3.17's UI opens an experiment on its GenAI dashboard unless the address asks for
# the classic runs table and run pages; a fresh browser profile has no choice stored yet.
CLASSIC_VIEW = "workflowType=machine_learning"
UI_PORT = 5000  # where `mlflow ui` serves by default


def ui_address(tracking_uri: str, page: str) -> str:
    """Where a person opens ``page`` (``experiments/1/runs/<id>``) of the store at
    ``tracking_uri`` in MLflow's UI, in the classic view: on the server itself for an
    http(s) store, else on `mlflow ui`, with the command that serves this very store."""
    view = f"#/{page}?{CLASSIC_VIEW}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{view}"
    return f"http://127.0.0.1:{UI_PORT}/{view} (serve it with `{ui_command(tracking_uri)}`)"


def ui_command(tracking_uri: str) -> str:
    """The command that serves MLflow's UI over the store at ``tracking_uri``, from any
    folder (a database's password masked)."""
    return f"mlflow ui --backend-store-uri {shown_uri(tracking_uri)}"


def run_address(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where a person opens the run (a sweep's parent run too)."""
    return ui_address(tracking_uri, f"experiments/{experiment_id}/runs/{run_id}")


def experiment_address(tracking_uri: str, experiment_id: str) -> str:
    """Where a person opens the experiment's runs table."""
    return ui_address(tracking_uri, f"experiments/{experiment_id}")


def model_address(tracking_uri: str, name: str, version: str) -> str:
    """Where a person opens a registered model's version."""
    return ui_address(tracking_uri, f"models/{name}/versions/{version}")


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
        with faults.space_reserved(sqlite_path(uri)):
            yield
    except RunStopped as stop:
        stop.ended_run(run_id, resume_command(run_id, uri), last_checkpoint)
        if stop.resumable:
            client.set_tag(run_id, "resumable", "true")
        end_run(client, run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    except (KeyboardInterrupt, SystemExit):
        end_run(client, run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as err:
        if uri.startswith(("http://", "https://")) and health_problem(uri, timeout=3):
            # Every further call would wait out its retries again: say what to do instead.
            raise TrackingError(_server_lost(uri, run_id, last_checkpoint)) from err
        fault = faults.machine_fault(err)
        if fault is not None:
            raise TrackingError(_end_on_fault(client, run_id, fault)) from err
        with contextlib.suppress(Exception):
            client.set_tag(run_id, "error", f"{type(err).__name__}: {first_line(err)}"[:5000])
        end_run(client, run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        end_run(client, run_id, RunStatus.to_string(RunStatus.FINISHED))


def _end_on_fault(client: MlflowClient, run_id: str, fault: faults.Fault) -> str:
    """End a run that met a fault of the machine KILLED and resumable (it is not the run's
    fault: once fixed, it goes on from its checkpoint); the sentence that says so."""
    faults.give_back_reserve()  # a full disk: room for the store to record the end
    try:
        client.set_tag(run_id, "error", f"{fault.kind}: {fault.detail}"[:5000])
        client.set_tag(run_id, "resumable", "true")
        end_run(client, run_id, RunStatus.to_string(RunStatus.KILLED))
        ended = "ended KILLED"
    except Exception:
        ended = "still shows RUNNING (the store could not record its end)"
    uri = client.tracking_uri
    place = faults.where(fault, sqlite_path(uri))
    return faults.fault_sentence(fault, place, ended, run_id, resume_command(run_id, uri))


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
