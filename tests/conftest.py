from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence

import pytest
from hydra import compose, initialize_config_module
from mlflow import MlflowClient
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).parent))

from helpers import unavailable, write_mnist  # noqa: E402
from slurm import slurm_cluster  # noqa: E402, F401  (a fixture: a real one-node SLURM)

from denselab.config import register_schemas  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# Where a test file starts in `make test`'s two workers (pytest-xdist, --dist loadfile: each
# file runs whole in one worker, so a module's cluster or server starts once): the longest
# first, SLURM's (minutes of waiting on its time limits), the sweeps' and the team server's,
# then files with slow tests, then the rest, to fill in at the end.
FIRST_FILES = (
    "test_slurm.py", "test_search.py", "test_sweep.py", "test_sweep_rules.py", "test_team_server.py"
)


def _start_order(item: pytest.Item) -> int:
    if item.path.name in FIRST_FILES:
        return FIRST_FILES.index(item.path.name)
    return len(FIRST_FILES) + (0 if item.get_closest_marker("slow") else 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_start_order)  # stable: within each part, the files' own order


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    """Small MNIST-format files with a learnable pattern (600 train, 200 test)."""
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, created and migrated once per session: MLflow's schema
    migration costs seconds, a file copy nothing."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture
def store_uri(tmp_path, migrated_store) -> str:
    """A fresh, empty sqlite store of this test's own under tmp_path/mlruns."""
    path = tmp_path / "mlruns" / "mlflow.db"
    path.parent.mkdir()
    shutil.copyfile(migrated_store, path)
    return f"sqlite:///{path}"


@pytest.fixture
def compose_cfg() -> Callable[[Sequence[str]], DictConfig]:
    """The real config from conf/, composed with overrides as the console script would."""
    register_schemas()

    def _compose(overrides: Sequence[str] = ()) -> DictConfig:
        with initialize_config_module(config_module="denselab.conf", version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


@pytest.fixture
def fixture_overrides(mnist_dir, store_uri) -> list[str]:
    """Overrides that train quickly on the fixture MNIST files, offline, into a temp store."""
    return [
        f"data.dir={mnist_dir}",
        "data.mirrors=[]",
        f"tracking.uri={store_uri}",
        "trainer.enable_progress_bar=false",
    ]


def only_run(uri: str, experiment: str = "mnist"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} missing"
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def no_runs(uri: str) -> None:
    """Nothing was recorded in the store at ``uri``: no run at all (and so none RUNNING)."""
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        return
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids) if ids else []
    assert not runs, [(r.info.run_name, r.info.status) for r in runs]


def fashion_mnist_or_skip() -> Path:
    if all(
        (FASHION_DIR / f).is_file()
        for f in (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        )
    ):
        return FASHION_DIR
    unavailable("Debian's dataset-fashion-mnist is not installed",
                "apt-get install dataset-fashion-mnist")
