"""The MLflow store: opened in seconds or refused in a sentence, shared by many processes
(locked creation, waiting writers, bounded HTTP), and the experiment runs go to.

The default store is sqlite under ``./mlruns`` of the directory the command started in, so
every job of a sweep shares it. A fresh sqlite DB opened by several processes at once races
its schema migration, so every process creates or migrates the DB, and creates the
experiment, under the store's file lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
from pathlib import Path
from typing import Callable, Iterator, Optional, Union
from urllib.parse import urlsplit

import requests
import sqlalchemy
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from denselab.errors import TrackingError, first_line
from denselab.tracking import faults

# MLflow's own defaults (120 s a request, 7 retries, backoff factor 2) let one call to a dead
# server retry for minutes. These ride out a restart of a few seconds (retries after 0, 2, 4
# and 8 s) and give up within about 20 s on a server that refuses connections, 45 s on one
# that hangs; a user's own setting of any of them wins.
HTTP_WAITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "6",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
# How long a writer waits for another process's sqlite write before failing: sqlite's
# default of 5 s is too short for a dozen jobs starting at once on two cores.
SQLITE_BUSY_TIMEOUT_S = 60
# How long a process waits for another one to create or migrate the store.
STORE_LOCK_TIMEOUT_S = 300


class Store:
    """The MLflow store at ``uri`` as one command uses it: opened once, when first needed
    (a resume, a sweep job, the run), so that a command that fails before then creates
    nothing."""

    def __init__(self, uri: str):
        self.uri = uri
        self._client: Optional[MlflowClient] = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = open_store(self.uri)
        return self._client

    def exists(self) -> bool:
        """False for a sqlite store whose file is not there yet; True otherwise."""
        db = sqlite_path(self.uri)
        return db is None or db.is_file()


def bound_http_waits() -> None:
    """Bound every HTTP call MLflow makes to a tracking server (read at each request)."""
    for name, value in HTTP_WAITS.items():
        os.environ.setdefault(name, value)


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///`` URI, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :].split("?", 1)[0])
    return None


_busy_timeout_set = False


def wait_for_sqlite_writers() -> None:
    """Make every sqlite connection of this process wait for other writers instead of
    failing at once with "database is locked" (once per process, on all SQLAlchemy engines)."""
    global _busy_timeout_set
    if _busy_timeout_set:
        return
    @event.listens_for(Engine, "connect")
    def _busy_timeout(dbapi_connection, connection_record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")

    _busy_timeout_set = True


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold the store's file lock (sqlite stores only): creating or migrating a fresh sqlite
    DB from several processes at once races MLflow's schema migration and can break it."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock, Timeout

    db.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(db) + ".lock", timeout=STORE_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise TrackingError(
            f"Waited {STORE_LOCK_TIMEOUT_S} s for another process to finish creating the MLflow "
            f"store {db}; if no denselab process is running, delete {db}.lock and start again."
        ) from None
    try:
        yield
    finally:
        lock.release()


def open_store(uri: str) -> MlflowClient:
    """A client on the store at ``uri``, created if it is a new sqlite file."""
    # MLflow logs every failed database write with its traceback before raising it; denselab
    # says each such failure in one sentence (here, start_run, run_status), which the
    # traceback would bury. Set here, after Hydra's logging setup resets child loggers.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        with faults.told(folder, "making the MLflow store's folder", TrackingError):
            folder.mkdir(parents=True, exist_ok=True)
        wait_for_sqlite_writers()
    elif uri.startswith(("http://", "https://")):
        refuse_credentials(uri)
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
    except (MlflowException, SQLAlchemyError, OSError) as err:
        fault = faults.machine_fault(err)
        if fault is not None:
            where = faults.where(fault, sqlite_path(uri))
            said = faults.before_run_sentence(fault, where, "opening the MLflow store")
            raise TrackingError(said) from None
        refused = refusal(err, uri)
        if refused:
            raise TrackingError(refused) from None
        raise TrackingError(
            f"The MLflow store at {shown_uri(uri)} cannot be used ({first_line(err)}); check "
            "tracking.uri, or leave it unset to use ./mlruns."
        ) from None
    return client


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, creating (or restoring) it if needed, under the
    store's lock: two processes must not both create it."""
    with store_lock(client.tracking_uri), refusals_said(client.tracking_uri, name):
        return _get_or_create_experiment(client, name)


def _get_or_create_experiment(client: MlflowClient, name: str) -> str:
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


def health_problem(uri: str, timeout: float = 5) -> Optional[str]:
    """Why the MLflow server at ``uri`` does not answer its health check within ``timeout``
    s (the error's name); None when it answers."""
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as err:
        return type(err).__name__
    return None


def _check_server(uri: str) -> None:
    """Fail in seconds, not after MLflow's minutes of retries, when no server answers."""
    problem = health_problem(uri)
    if problem:
        raise TrackingError(
            f"No MLflow server answers at {uri} ({problem}); start one there with "
            "`mlflow server`, or leave tracking.uri unset to use ./mlruns."
        )


def refusal(err: BaseException, uri: str, experiment: Optional[str] = None) -> Optional[str]:
    """The sentence for an MLflow server's refusal behind ``err``: of the host name it was
    addressed by, of the credentials (HTTP 401: none, or a wrong user or password), or of a
    permission (HTTP 403, on ``experiment`` where known); None for any other error. MLflow's
    client raises MlflowException for both statuses, with error_code UNAUTHENTICATED or
    PERMISSION_DENIED (the basic-auth app answers in plain text, not JSON)."""
    if not isinstance(err, MlflowException) or not uri.startswith(("http://", "https://")):
        return None
    if "Invalid Host header" in str(err):
        return _host_refused(uri)
    status = err.get_http_status_code()
    if status == 401:
        return _credentials_refused(uri)
    if status == 403:
        return _permission_refused(uri, experiment)
    return None


@contextlib.contextmanager
def refusals_said(
    uri: str, experiment: Union[str, Callable[[], str], None] = None
) -> Iterator[None]:
    """Turn an MLflow server's refusal inside the block into a TrackingError of one sentence
    (see :func:`refusal`); other errors pass unchanged. ``experiment``: the name of the
    experiment written to, or a function that finds it (called on a refusal only)."""
    try:
        yield
    except MlflowException as err:
        name = experiment() if callable(experiment) else experiment
        refused = refusal(err, uri, name)
        if refused is None:
            raise
        raise TrackingError(refused) from None


# Where MLflow's client finds a server's user and password, after the environment.
CREDENTIALS_FILE = "~/.mlflow/credentials"
CREDENTIALS_FIX = (
    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or mlflow_tracking_username "
    f"and mlflow_tracking_password under [mlflow] in {CREDENTIALS_FILE})"
)


def _credentials_refused(uri: str) -> str:
    from mlflow.utils.credentials import read_mlflow_creds  # as MLflow's client reads them

    creds = read_mlflow_creds()
    if not creds.username:
        given = "a token" if os.environ.get("MLFLOW_TRACKING_TOKEN") else "none were given"
    elif not creds.password:
        given = f"user {creds.username}, without a password"
    else:
        given = f"user {creds.username}"
    return (
        f"The MLflow server at {shown_uri(uri)} refused the credentials ({given}): set "
        f"{CREDENTIALS_FIX} to a user of its basic-auth and that user's password."
    )


def _permission_refused(uri: str, experiment: Optional[str]) -> str:
    from mlflow.utils.credentials import read_mlflow_creds

    user = read_mlflow_creds().username
    who = f"User {user}" if user else "A client without credentials"
    if experiment is None:
        return (
            f"{who} is refused by the MLflow server at {shown_uri(uri)} (permission denied): "
            "ask the server's admin for the permission this needs."
        )
    return (
        f"{who} may not write to experiment {experiment} on {shown_uri(uri)}: ask the "
        "server's admin for EDIT permission."
    )


def refuse_credentials(uri: str) -> None:
    """Refuse a server URI that holds a user or password: the URI is logged, printed and
    recorded with the run (its resume command, its config), so credentials travel apart,
    where MLflow's client reads them."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return
    bare = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
    raise TrackingError(
        f"tracking.uri={shown_uri(uri)} holds credentials, which would be written wherever "
        "the URI is (logs, the run's config and tags); give the server's address alone "
        f"(tracking.uri={bare}) and the user and password in {CREDENTIALS_FIX}."
    )


def _host_refused(uri: str) -> str:
    """MLflow 3's server answers only requests addressed to localhost or a private IP unless
    told otherwise (its guard against DNS rebinding): /health passes, every call fails."""
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


# The password of a URI (``scheme://user:password@``) anywhere in a text.
_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")


def shown_uri(uri: str) -> str:
    """``uri`` fit to print: its password masked (a database's, or a server's)."""
    if "://" in uri and "@" in uri.split("://", 1)[1] and not uri.startswith("http"):
        with contextlib.suppress(Exception):
            return sqlalchemy.make_url(uri).render_as_string(hide_password=True)
    return hide_passwords(uri)


def hide_passwords(text: str) -> str:
    """``text`` (a command line, overrides, a config) with the password of every URI in it
    masked: ``postgresql://mlflow:***@host/db``."""
    return _PASSWORD.sub(r"\g<head>***@", text)
