"""Small datasets in the exact real file formats, a local HTTP server to serve them, and the
real servers runs talk to: `mlflow server`, PostgreSQL."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator, NoReturn, Optional, Sequence

import numpy as np
import pytest
from PIL import Image

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def write_idx(path: Path, array: np.ndarray) -> None:
    """A uint8 array as a gzipped IDX file: magic 0x000008NN, NN int32 sizes, the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">i", 0x00000800 | array.ndim)
    header += struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def learnable_digits(n: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 images whose class is a bright horizontal band (rows 2k..2k+3), in noise.

    A linear model separates them easily, so a short training must beat chance by far.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n).astype(np.uint8)
    images = rng.integers(0, 90, size=(n, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):
        row = 2 * int(label) + 2
        images[i, row : row + 4, 4:24] = rng.integers(180, 256, size=(4, 20))
    return images, labels


def write_mnist(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = learnable_digits(n_train, seed)
    x_test, y_test = learnable_digits(n_test, seed + 1)
    for name, array in zip(MNIST_FILES, (x_train, y_train, x_test, y_test)):
        write_idx(folder / name, array)
    return folder


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _CutOffHandler(_QuietHandler):
    """Promises the whole file, sends half, and hangs up: an interrupted download."""

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


@contextmanager
def serve(folder: Path, cut_off: bool = False) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 at a free port; yields the base URL."""
    handler = functools.partial(_CutOffHandler if cut_off else _QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def mlflow_server(
    folder: Path,
    timeout: float = 120,
    backend_store_uri: Optional[str] = None,
    artifacts_destination: Optional[Path] = None,
    port: int = 0,
    allowed_hosts: Optional[str] = None,
    app_name: Optional[str] = None,
    env: Optional[dict] = None,
) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (see :func:`start_mlflow_server`); yields its URL."""
    proc, url = start_mlflow_server(
        folder,
        port=port,
        timeout=timeout,
        backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination,
        allowed_hosts=allowed_hosts,
        app_name=app_name,
        env=env,
    )
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def console_script(name: str = "denselab-train") -> str:
    """The installed console script beside this interpreter (the real entry point)."""
    return str(Path(sys.executable).parent / name)


def run_cli(
    args: Sequence[str], cwd: Path, timeout: float = 600, env: Optional[dict] = None
) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.run(
        [console_script(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


# -- Oxford Flowers-17 in its real layout ----------------------------------------------

FLOWERS_PER_CLASS = 80
FLOWERS_CLASSES = 17
# One colour per class, far apart, so a test can tell a decoded photo's class by its colour.
FLOWERS_COLOURS = np.array(
    [[(k * 37) % 256, (k * 91 + 60) % 256, (k * 151 + 120) % 256] for k in range(FLOWERS_CLASSES)],
    dtype=np.uint8,
)


def flowers_mode(image_id: int) -> str:
    """Most photos are RGB; some are grayscale or CMYK, as real collections have."""
    return {7: "L", 13: "CMYK"}.get(image_id % 40, "RGB")


def fake_flower(image_id: int, short_side: int, rng: np.random.Generator) -> Image.Image:
    """A photo of its class's colour with some texture, in landscape or portrait shape."""
    long_side = int(short_side * rng.uniform(1.0, 1.5))
    h, w = (short_side, long_side) if image_id % 2 else (long_side, short_side)
    colour = FLOWERS_COLOURS[(image_id - 1) // FLOWERS_PER_CLASS].astype(np.int16)
    noise = rng.normal(0, 6, size=(h, w, 3)).astype(np.int16)
    pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(flowers_mode(image_id))


def write_flowers_archive(path: Path, short_side: int = 24, seed: int = 0) -> Path:
    """17flowers.tgz as the real one: jpg/image_0001.jpg .. jpg/image_1360.jpg + files.txt."""
    import io
    import tarfile

    rng = np.random.default_rng(seed)
    n = FLOWERS_PER_CLASS * FLOWERS_CLASSES
    names = [f"image_{i:04d}.jpg" for i in range(1, n + 1)]
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("jpg")
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for image_id, name in enumerate(names, start=1):
            buf = io.BytesIO()
            fake_flower(image_id, short_side, rng).save(buf, "JPEG", quality=85)
            add_bytes(tar, f"jpg/{name}", buf.getvalue())
        add_bytes(tar, "jpg/files.txt", "\n".join(names).encode())
    return path


def add_bytes(tar, name: str, data: bytes) -> None:
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def flowers_split_ids(seed: int = 0) -> dict[str, np.ndarray]:
    """datasplits.mat's content: per split k, 40 trn / 20 val / 20 tst ids of each class."""
    rng = np.random.default_rng(seed)
    splits: dict[str, list] = {f"{p}{k}": [] for k in (1, 2, 3) for p in ("trn", "val", "tst")}
    for k in (1, 2, 3):
        for c in range(FLOWERS_CLASSES):
            ids = rng.permutation(np.arange(1, FLOWERS_PER_CLASS + 1)) + c * FLOWERS_PER_CLASS
            splits[f"trn{k}"] += list(ids[:40])
            splits[f"val{k}"] += list(ids[40:60])
            splits[f"tst{k}"] += list(ids[60:])
    # MATLAB stores them as 1 x n rows of doubles
    return {key: np.array(sorted(ids), dtype=np.float64)[None, :] for key, ids in splits.items()}


def write_flowers(folder: Path, short_side: int = 24, seed: int = 0) -> Path:
    """17flowers.tgz and datasplits.mat in ``folder``, in the real files' layout."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    write_flowers_archive(folder / "17flowers.tgz", short_side, seed)
    savemat(folder / "datasplits.mat", flowers_split_ids(seed))
    return folder


# -- the course's image table: metadata CSV + .npy -------------------------------------

TABLE_NAMES = ("circle", "square", "star", "heart")


def write_image_table(
    folder: Path, n_train: int = 240, n_valid: int = 80, n_test: int = 80, seed: int = 0
) -> tuple[Path, Path, np.ndarray]:
    """metadata.csv + images.npy: 4 learnable classes labelled 1..4 with names, test labels
    hidden (empty class). Returns the two paths and every row's true label (1..4)."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    n = n_train + n_valid + n_test
    images, labels = learnable_digits(n, seed, num_classes=len(TABLE_NAMES))
    labels = labels.astype(np.int64) + 1
    split = ["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test
    shown = [s != "test" for s in split]
    table = pd.DataFrame(
        {
            "obs_id": [f"obs{i:04d}" for i in range(n)],
            "train_id": split,
            "class": [str(v) if show else "" for v, show in zip(labels, shown)],
            "class_name": [TABLE_NAMES[v - 1] if show else "" for v, show in zip(labels, shown)],
        }
    )
    table.to_csv(folder / "metadata.csv", index=False)
    np.save(folder / "images.npy", images)
    return folder / "metadata.csv", folder / "images.npy", labels


# -- trained networks without training (issue 10: predict, load, serving) ---------------


def write_checkpoint(
    path: Path,
    input_shape: Sequence[int] = (28, 28),
    class_names: Sequence[str] = tuple(str(d) for d in range(10)),
    hidden_sizes: Sequence[int] = (16,),
    seed: int = 0,
) -> Path:
    """A checkpoint in the layout Lightning writes for denselab's MLPClassifier (state_dict
    with the ``net.`` prefix, hyper_parameters), with random weights."""
    import math

    import torch

    from denselab.training.network import build_mlp

    torch.manual_seed(seed)
    net = build_mlp(math.prod(input_shape), list(hidden_sizes), len(class_names))
    hparams = {
        "input_shape": tuple(input_shape),
        "num_classes": len(class_names),
        "hidden_sizes": list(hidden_sizes),
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": False,
        "loss": "cross_entropy",
        "class_names": list(class_names),
    }
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": 0}, path)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def refused_port() -> Iterator[int]:
    """A port of 127.0.0.1 where nothing listens for as long as the context lasts: bound by
    this process and never listened on, so connections are refused and no other process (a
    server of a test in the other worker) can take it meanwhile."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def write_pngs(folder: Path, images: np.ndarray, labels: Sequence[int]) -> list[Path]:
    """One PNG per image, named <index>_<label>.png, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        paths.append(folder / f"{i:05d}_{int(label)}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


# -- runs that something happens to: signals, lost servers, parallel starts ------------


def start_cli(args: Sequence[str], cwd: Path, env: Optional[dict] = None) -> subprocess.Popen:
    """The console script in the background, stdout and stderr merged into one pipe."""
    full_env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    full_env.update(env or {})
    return subprocess.Popen(
        [console_script(), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )


def wait_for_file(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 180) -> Path:
    """The first file under ``root`` matching ``pattern`` (a glob), once it exists; fails
    if ``proc`` ends first. Checkpoints are renamed into place whole, so one that exists
    is complete."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process ended (rc {proc.returncode}) first:\n{output[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern} under {root} after {timeout} s")
        time.sleep(0.05)


def stop_and_time(proc: subprocess.Popen, signum: int, timeout: float = 120) -> tuple[str, float]:
    """Send ``signum``; returns (the process's whole output, seconds from signal to exit)."""
    start = time.monotonic()
    os.kill(proc.pid, signum)
    output, _ = proc.communicate(timeout=timeout)
    return output, time.monotonic() - start


# The most a prompt answer (a stop signal obeyed, a dead store named) may take in a test: far
# above what it takes here (0.1-9 s), so that a machine twice as slow or busy with the other
# test worker still meets it; speed goals live in bench/, not in tests.
PROMPT_S = 60


def unavailable(reason: str, fix: str) -> NoReturn:
    """Skip a test whose real engine (a server, a cluster, a browser, a dataset) cannot run
    here; under CI fail it instead: CI must run every one of them, root or not, lock or not."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test, but {reason}; {fix} (see .ci/run).")
    pytest.skip(f"{reason}; {fix}")


class PortTaken(RuntimeError):
    """Another process bound the port between our choosing it and the server binding it."""


# A free port is chosen by binding port 0 and closing it; another process (a test in the
# other worker) may take it before the server binds it: the start is tried again, on another.
PORT_TRIES = 5


def port_taken(log: str) -> bool:
    return "address already in use" in log.lower() or "could not bind" in log.lower()


def listens_on(group: int, port: int) -> bool:
    """Whether a process of process group ``group`` listens on 127.0.0.1:``port`` (Linux):
    a server that answers there may be another worker's that took the port first."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(address.split(":")[1], 16) == port:  # 0A: LISTEN
            inodes.add(f"socket:[{inode}]")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != group:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return False


def start_mlflow_server(
    folder: Path,
    port: int = 0,
    timeout: float = 120,
    backend_store_uri: Optional[str] = None,
    artifacts_destination: Optional[Path] = None,
    allowed_hosts: Optional[str] = None,
    app_name: Optional[str] = None,
    env: Optional[dict] = None,
):
    """A real `mlflow server` that serves its artifacts; by default over a sqlite store and
    an artifact folder in ``folder`` (kept between restarts), answering requests addressed
    to localhost and private IPs (MLflow's default; ``allowed_hosts``: its --allowed-hosts,
    where ``{port}`` stands for the port). ``port`` 0: a free one, another if it was taken
    first; a given port that is taken raises PortTaken. ``app_name``: its --app-name
    (``basic-auth``: access control), ``env``: added to its environment (the auth app's
    MLFLOW_AUTH_CONFIG_PATH, MLFLOW_FLASK_SERVER_SECRET_KEY). Returns (process, url) once
    it answers. Stop it with os.killpg(proc.pid, ...)."""
    for attempt in range(1 if port else PORT_TRIES):
        try:
            return _start_mlflow_server(
                folder, port or free_port(), timeout, backend_store_uri, artifacts_destination,
                allowed_hosts, app_name, env,
            )
        except PortTaken:
            if port or attempt == PORT_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _start_mlflow_server(
    folder: Path,
    port: int,
    timeout: float,
    backend_store_uri: Optional[str],
    artifacts_destination: Optional[Path],
    allowed_hosts: Optional[str],
    app_name: Optional[str] = None,
    env: Optional[dict] = None,
):
    import requests

    folder.mkdir(parents=True, exist_ok=True)
    backend_store_uri = backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}"
    artifacts_destination = artifacts_destination or folder / "artifacts"
    allowed = allowed_hosts.format(port=port) if allowed_hosts else None
    # Appended to, not replaced: a restarted server's log follows the first one's.
    log_path = folder / "server.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [
            console_script("mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend_store_uri,
            "--artifacts-destination",
            str(artifacts_destination),
            # One worker: the default four import MLflow four times over on a small machine.
            "--workers",
            "1",
            *(["--allowed-hosts", allowed] if allowed else []),
            *(["--app-name", app_name] if app_name else []),
        ],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # No job runner: its seven huey consumers (GenAI jobs denselab never submits) import
        # MLflow seven times over at start and hold up the stop by seconds on a small machine.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
    )
    log.close()  # the server holds its own copy of the file
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                if listens_on(proc.pid, port):
                    return proc, url
                raise PortTaken(f"another server answers on port {port}")
        except requests.RequestException:
            pass
        except PortTaken:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            raise
        if proc.poll() is not None or time.monotonic() > deadline:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            with open(log_path, "rb") as f:
                f.seek(log_start)
                tail = f.read().decode(errors="replace")[-3000:]
            if port_taken(tail):
                raise PortTaken(f"port {port} was taken before mlflow server bound it")
            raise RuntimeError(f"mlflow server did not start on port {port}:\n{tail}")
        time.sleep(0.5)


def start_model_server(model_uri: str, cwd: Path, tracking_uri: str, timeout: float = 180):
    """A real ``mlflow models serve`` of ``model_uri`` on a free port of 127.0.0.1 (another
    if it was taken first); returns (process, url) once it answers /ping. Stop it with
    os.killpg(proc.pid, ...)."""
    import requests

    # mlflow execs `uvicorn` by name: the venv's bin must be on PATH, as after `activate`
    bin_dir = os.path.dirname(console_script("mlflow"))
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    for attempt in range(PORT_TRIES):
        port = free_port()
        proc = subprocess.Popen(
            [console_script("mlflow"), "models", "serve", "-m", model_uri,
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout
        taken = False
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/ping", timeout=2).ok:
                    if listens_on(proc.pid, port):
                        return proc, url
                    taken = True  # another worker's server answers there
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        said = proc.stderr.read().decode(errors="replace")[-2000:]
        if not (taken or port_taken(said)) or attempt == PORT_TRIES - 1:
            raise RuntimeError(f"mlflow models serve did not answer on port {port}:\n{said}")
    raise AssertionError("unreachable")


def metric_steps(client, run_id: str, key: str) -> list[int]:
    """The steps of a metric's history, in logging order (repeats and gaps show)."""
    return [m.step for m in client.get_metric_history(run_id, key)]


# -- a team's tracking store: a real PostgreSQL ------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "mlflow"


@contextmanager
def postgres_server(folder: Path, database: str = "mlflowdb", timeout: float = 60) -> Iterator[str]:
    """A real PostgreSQL 15 on 127.0.0.1 at a free port, holding one empty database; yields
    its ``postgresql+psycopg://`` URI and always stops the server. Its log is copied to
    ``folder/postgres.log``. Skips the test where the server binaries are missing."""
    postgres_or_skip()
    folder.mkdir(parents=True, exist_ok=True)
    # The cluster gets a short folder of its own: a unix socket's path must fit in 107 bytes,
    # and the postgres user (initdb refuses root) cannot enter pytest's 0700 temp folders.
    root = Path(tempfile.mkdtemp(prefix="denselab-pg-"))
    try:
        try:
            _init_postgres(root, timeout)
            for attempt in range(PORT_TRIES):
                port = free_port()
                try:
                    _start_postgres(root, port, database, timeout)
                    break
                except PortTaken:
                    if attempt == PORT_TRIES - 1:
                        raise
            yield f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}/{database}"
        finally:
            _stop_postgres(root / "data", timeout)
    finally:
        if (root / "postgres.log").is_file():
            shutil.copyfile(root / "postgres.log", folder / "postgres.log")
        shutil.rmtree(root, ignore_errors=True)


def postgres_or_skip() -> None:
    if not (PG_BIN / "initdb").is_file():
        unavailable(f"PostgreSQL 15 is not installed in {PG_BIN}", "apt-get install postgresql-15")


def _init_postgres(root: Path, timeout: float) -> None:
    """initdb in ``root``/data, owned by the user the server runs as."""
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    try:
        _as_cluster_owner(
            [PG_BIN / "initdb", "-D", root / "data", "-U", PG_USER, "--auth=trust", "--no-sync"],
            timeout,
        )
    except subprocess.CalledProcessError as err:
        output = (err.output or b"").decode(errors="replace")[-3000:]
        raise RuntimeError(f"PostgreSQL's initdb failed ({err.cmd}):\n{output}") from None


def _start_postgres(root: Path, port: int, database: str, timeout: float) -> None:
    """Start the cluster in ``root``/data on ``port`` and create ``database``; PortTaken when
    another process bound the port first."""
    data, log = root / "data", root / "postgres.log"
    # fsync off: MLflow's schema migration commits hundreds of times; a test DB is scratch.
    options = f"-k {shlex.quote(str(root))} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off"
    log_start = log.stat().st_size if log.exists() else 0
    try:
        _as_cluster_owner(
            [PG_BIN / "pg_ctl", "-D", data, "-l", log, "-o", options]
            + ["-w", "-t", int(timeout), "start"],
            timeout + 10,
        )
    except subprocess.CalledProcessError as err:
        said = log.read_bytes()[log_start:].decode(errors="replace") if log.exists() else ""
        if port_taken(said):
            raise PortTaken(f"port {port} was taken before PostgreSQL bound it") from None
        output = (err.output or b"").decode(errors="replace")[-3000:]
        raise RuntimeError(f"PostgreSQL did not start ({err.cmd}):\n{output}{said}") from None
    try:
        subprocess.run(
            [PG_BIN / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, database],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    except subprocess.CalledProcessError as err:
        output = (err.output or b"").decode(errors="replace")[-3000:]
        raise RuntimeError(f"PostgreSQL's createdb failed ({err.cmd}):\n{output}") from None


def _as_cluster_owner(argv: Sequence, timeout: float) -> None:
    """Run a PostgreSQL server tool as the user that owns the cluster: the `postgres` system
    user when this is root, since initdb and postgres refuse to run as root."""
    argv = [str(a) for a in argv]
    if os.geteuid() == 0:
        argv = ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(argv)]
    # Output to a file, not a pipe: the server pg_ctl starts could keep a pipe open for good.
    with tempfile.TemporaryFile() as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        if result.returncode != 0:
            out.seek(0)
            raise subprocess.CalledProcessError(result.returncode, argv, output=out.read())


def _stop_postgres(data: Path, timeout: float) -> None:
    """pg_ctl's fast shutdown; where that fails, SIGQUIT (immediate shutdown) to the
    postmaster, so nothing is left running either way."""
    pid_file = data / "postmaster.pid"
    if not pid_file.is_file():
        return
    with suppress(subprocess.SubprocessError):
        _as_cluster_owner([PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], timeout)
    if pid_file.is_file():
        with suppress(OSError, ValueError, IndexError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)


def sweep_runs(client, experiment: str = "digits") -> tuple[list, list]:
    """(parents, children) of the experiment's sweeps: runs tagged ``sweep=parent``, and
    runs that name a parent (``mlflow.parentRunId``)."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children
