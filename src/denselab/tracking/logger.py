"""The one writer of an MLflow run: Lightning's logger, plus figures, tables and files.

train.py and the callbacks write to the run only through :class:`RunLogger`: metrics (with
the epoch as MLflow's step), params, tags, and artifacts. It goes through the logger's own
client and run id: fluent ``mlflow.log_*`` would silently open a second run. It also keeps
the metrics it wrote, per epoch, so that figures never read them back from the store.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from denselab.tracking.datasets import split_datasets
from denselab.tracking.signals import signals_held
from denselab.tracking.store import sqlite_path, store_lock

DPI = 100
DATASET_TRIES = 3
SYSTEM_PREFIX = "system/"  # MLflow's system metrics (denselab.tracking.system_metrics)
# A model's scores, by the split each was computed on (denselab.tracking.datasets).
MODEL_SCORES = {"val/acc_best": "val", "test/acc": "test", "test/loss": "test"}



def float32_exact(value: Any) -> float:
    """The shortest decimal that is the same float32: Lightning hands metrics over as float32
    tensors, and 0.8 would otherwise read 0.800000011920929 in MLflow."""
    value = float(value)
    return float(str(np.float32(value))) if np.isfinite(value) else value


def float32_shortest(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each column of float32 values (scores computed in torch) written as
    the shortest decimals that are those values: 0.68, not 0.6800000071525574."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype.kind != "f":
            continue
        values = out[column].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if np.array_equal(finite.astype(np.float32).astype(np.float64), finite):
            out[column] = [float32_exact(v) for v in values]
    return out


def _signals_held_on_sqlite(write: Callable) -> Callable:
    """Run a write to a local sqlite store with stop signals held back, delivered after it.
    A signal raises wherever Python is, also inside SQLAlchemy mid-transaction, which can
    leave this process's own connection holding the database's lock: the run's end could
    then not be written (``database is locked``). A sqlite write takes milliseconds; a
    server's may hang, so for servers the signal still lands at once."""

    @functools.wraps(write)
    def held(self: "RunLogger", *args: Any, **kwargs: Any) -> Any:
        with signals_held() if self.local_database else contextlib.nullcontext():
            return write(self, *args, **kwargs)

    return held


class RunLogger(MLFlowLogger):
    """MLFlowLogger on an existing run whose metric steps are epochs.

    Lightning adds the current ``epoch`` to every metrics dict it logs; it becomes the step,
    so MLflow's charts read per epoch.
    """

    # A (metric, step) point the run already holds is not logged again: a resumed run trains
    # the epoch it was stopped in once more, and its history must not show that epoch twice.
    # denselab.training.checkpoints.RunCheckpoint relies on it to send an epoch's metrics ahead of
    # Lightning, before the epoch's checkpoint.
    drops_repeated_points = True

    def __init__(self, tracking_uri: str, run_id: str, **kwargs: Any):
        super().__init__(tracking_uri=tracking_uri, run_id=run_id, **kwargs)
        self._history: dict[int, dict[str, float]] = defaultdict(dict)
        self._loaded = False  # the points a resumed run already has: read once, lazily
        self.figure_paths: list[str] = []  # what this run shows, for its description
        self.description_notes: list[str] = []  # lines its description ends with
        self._datasets: dict = {}  # split -> its MLflow dataset, once logged
        self._latest: dict = {}  # metric key -> its newest point (mlflow Metric)

    @property
    def tracking_uri(self) -> str:
        return self._tracking_uri

    @property
    def local_database(self) -> bool:
        """Whether the run's store is a sqlite file (its writes are held, see _whole)."""
        return sqlite_path(self._tracking_uri) is not None

    # -- metrics -----------------------------------------------------------------------

    @rank_zero_only
    @_signals_held_on_sqlite
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        self._load_history()
        metrics = {k: float32_exact(v) for k, v in metrics.items()}
        epoch = metrics.pop("epoch", None)
        step = int(epoch) if epoch is not None else (step or 0)
        if self._history and any(key.startswith("test/") for key in metrics):
            # Testing comes after the last epoch, and Lightning counts one past it: the
            # scores of the final weights belong beside that epoch's on the charts.
            step = max(self._history)
        new = {k: v for k, v in metrics.items() if k not in self._history.get(step, {})}
        if new:
            # MLFlowLogger.log_metrics, keeping each point's timestamp (denselab's keys need
            # none of its renaming): link_model_scores logs the very same points again.
            from mlflow.entities import Metric

            timestamp = int(time.time() * 1000)
            points = [Metric(key, value, timestamp, step) for key, value in new.items()]
            self.experiment.log_batch(self.run_id, metrics=points, **self._log_batch_kwargs)
            self._history[step].update(new)
            self._latest.update({point.key: point for point in points})

    @rank_zero_only
    @_signals_held_on_sqlite
    def datasets(self, data) -> None:
        """Log the splits of the set-up datamodule ``data`` as the run's MLflow datasets
        (denselab.tracking.datasets). A resumed run's datasets are already there: MLflow
        keeps one input of each."""
        made = split_datasets(data)
        inputs = [d.as_input() for d in made]
        for attempt in range(1, DATASET_TRIES + 1):
            try:
                # MLflow looks a dataset up, then inserts it: parallel jobs logging the same
                # one (a sweep's fixed test split) race to insert it, and one fails on the
                # database's unique constraint. A sqlite store's lock orders them; on a server
                # the next try finds the row the other wrote.
                with store_lock(self._tracking_uri):
                    self.experiment.log_inputs(self.run_id, datasets=inputs)
                break
            except Exception as err:
                if attempt == DATASET_TRIES or "unique" not in str(err).lower():
                    raise
                time.sleep(0.2 * attempt)
        self._datasets = {d.split: d.dataset for d in made}

    @rank_zero_only
    @_signals_held_on_sqlite
    def link_model_scores(self, model_id: str) -> None:
        """The model's scores (``val/acc_best``, ``test/acc``, ``test/loss``: the run's last
        points) as the logged model's metrics, each linked to the split's dataset it was
        computed on: where MLflow 3 links a score to a dataset. The same points again, so
        the run's own histories keep one point a step."""
        from mlflow.entities import Metric

        self._load_history()
        points = []
        for key, split in MODEL_SCORES.items():
            dataset, last = self._datasets.get(split), self._latest.get(key)
            if dataset is not None and last is not None:
                points.append(
                    Metric(
                        key, last.value, last.timestamp, last.step, model_id=model_id,
                        dataset_name=dataset.name, dataset_digest=dataset.digest,
                    )
                )
        if points:
            self.experiment.log_batch(self.run_id, metrics=points)

    def finalize(self, status: str = "success") -> None:
        # The run's end (FINISHED, FAILED, KILLED) is set once, by tracking.runs.run_status,
        # after testing and reporting; Lightning would mark it FINISHED when fit ends, before
        # the test, and FAILED when a stop signal arrives.
        pass

    def _load_history(self) -> None:
        """What the run already holds (a resumed run has its first epochs), read once."""
        if self._loaded:
            return
        self._loaded = True
        client, run_id = self.experiment, self.run_id
        for key in client.get_run(run_id).data.metrics:
            if key.startswith(SYSTEM_PREFIX):
                continue  # the machine's samples (tracking.system_metrics), not training's
            for point in client.get_metric_history(run_id, key):
                self._history[point.step][key] = point.value
                held = self._latest.get(key)
                if held is None or (point.step, point.timestamp) > (held.step, held.timestamp):
                    self._latest[key] = point

    def history(self, keys: Sequence[str]) -> pd.DataFrame:
        """The values of ``keys`` this run logged, one column each, indexed by epoch."""
        self._load_history()
        frame = pd.DataFrame.from_dict(self._history, orient="index")
        frame = frame.reindex(columns=list(keys)).dropna(how="all").sort_index()
        return frame

    # -- params and tags ---------------------------------------------------------------

    @rank_zero_only
    @_signals_held_on_sqlite
    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams(params)

    @_signals_held_on_sqlite
    def tag(self, key: str, value: str) -> None:
        self.experiment.set_tag(self.run_id, key, value)

    def describe(self, markdown: str) -> None:
        """The run's description, shown on its Overview page in the MLflow UI."""
        self.tag("mlflow.note.content", markdown)

    # -- artifacts ---------------------------------------------------------------------

    @_signals_held_on_sqlite
    def figure(self, fig: Figure, name: str) -> None:
        path = f"figures/{name}.png"
        self.experiment.log_figure(self.run_id, fig, path, save_kwargs={"dpi": DPI})
        self.figure_paths.append(path)

    @_signals_held_on_sqlite
    def table(self, frame: pd.DataFrame, name: str) -> None:
        self.experiment.log_table(self.run_id, float32_shortest(frame), f"tables/{name}.json")

    @_signals_held_on_sqlite
    def csv(self, frame: pd.DataFrame, name: str) -> None:
        self.experiment.log_text(self.run_id, frame.to_csv(), f"tables/{name}.csv")

    @_signals_held_on_sqlite
    def text(self, text: str, path: str) -> None:
        self.experiment.log_text(self.run_id, text, path)

    @_signals_held_on_sqlite
    def image(self, image: np.ndarray, key: str, step: int) -> None:
        """One image of an MLflow image series (``key``, step = epoch)."""
        self.experiment.log_image(self.run_id, image, key=key, step=step)

    @_signals_held_on_sqlite
    def file(self, path: str | Path, folder: str) -> None:
        self.experiment.log_artifact(self.run_id, str(path), folder)

    def artifacts(self, made: Any) -> None:
        """Everything one figure or table maker produced: its ``figures``, ``tables`` and
        ``csvs`` by name (a :class:`denselab.reporting.artifacts.Artifacts`)."""
        for name, fig in made.figures.items():
            self.figure(fig, name)
        for name, frame in made.tables.items():
            self.table(frame, name)
        for name, frame in made.csvs.items():
            self.csv(frame, name)

    def model(self, save: Callable[[str, Any], None], name: str = "model") -> str:
        """Log an MLflow model of this run (``runs:/<run id>/<name>``); returns its model id.

        ``save(path, mlflow_model)`` writes the model's folder, e.g. with
        ``mlflow.pyfunc.save_model(path, mlflow_model=mlflow_model, ...)``. This is what
        ``mlflow.<flavor>.log_model`` does, but through this run's client: the fluent call
        would use the global tracking URI and the default experiment.
        """
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        client = self.experiment
        logged = client.create_logged_model(
            experiment_id=self.experiment_id, name=name, source_run_id=self.run_id
        )
        try:
            client.log_outputs(self.run_id, [LoggedModelOutput(logged.model_id, step=0)])
            mlflow_model = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=self.run_id,
                model_id=logged.model_id,
            )
            with tempfile.TemporaryDirectory() as tmp:
                path = str(Path(tmp) / name)
                save(path, mlflow_model)
                client.log_model_artifacts(logged.model_id, path)
        except BaseException:
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return logged.model_id
