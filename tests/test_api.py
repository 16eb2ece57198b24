"""`from denselab import fit, load`: in-process runs, the same errors, and README's example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from denselab import fit, load
from denselab.errors import ConfigError

README = Path(__file__).parents[1] / "README.md"


def test_importing_denselab_and_its_api_loads_no_torch():
    code = (
        "import sys; from denselab import fit, load; import denselab.api; "
        "assert 'torch' not in sys.modules and 'mlflow' not in sys.modules, 'heavy import'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow  # a whole in-process run, model logged
def test_fit_logs_the_same_run_and_returns_what_it_made(
    fixture_overrides, store_uri, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    result = fit(*fixture_overrides, "trainer.max_epochs=1", "callbacks=none")

    run = MlflowClient(store_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert result.metrics["test/acc"] == pytest.approx(run.data.metrics["test/acc"])
    assert run.data.tags["overrides"].endswith("trainer.max_epochs=1 callbacks=none")
    assert result.datamodule.input_shape == (28, 28)
    assert list((result.output_dir / "checkpoints").glob("best-*.ckpt"))
    assert result.output_dir.is_relative_to(tmp_path / "outputs")

    clf = load(result.model_uri, tracking_uri=store_uri)
    x = result.datamodule.splits["test"].x.numpy()
    np.testing.assert_array_equal(
        clf.probabilities(x), result.classifier().probabilities(x)
    )  # the logged model is the network in memory
    assert clf.classes == [str(d) for d in range(10)]


FIT_IN_A_SCRIPT = """
import sys
from denselab import fit
fit("data=digits", "trainer.max_epochs=1", "callbacks=none", "tracking.log_model=false",
    f"tracking.uri={sys.argv[1]}", "trainer.enable_progress_bar=false")
"""


@pytest.mark.slow  # a whole run in a fresh process
def test_fit_in_a_script_says_what_the_command_says(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-c", FIT_IN_A_SCRIPT, store],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert "[denselab] Accuracy by split (best checkpoint)" in said
    assert "[denselab] The run in the MLflow UI: http://127.0.0.1:5000/#/experiments/" in said


def process_state() -> dict:
    """What a caller's process holds that a fit must not change."""
    import logging
    import os
    import warnings

    import mlflow
    import torch

    loggers = [("", logging.getLogger()), *logging.root.manager.loggerDict.items()]
    return {
        "environment": dict(os.environ),
        "tracking uri": mlflow.get_tracking_uri(),
        "registry uri": mlflow.get_registry_uri(),
        "active run": mlflow.active_run(),
        "loggers": {
            name: (logger.level, list(logger.handlers), logger.propagate, logger.disabled)
            for name, logger in loggers
            if isinstance(logger, logging.Logger)
        },
        "warning filters": list(warnings.filters),
        "torch threads": torch.get_num_threads(),
    }


@pytest.mark.slow  # a whole in-process run
def test_fit_and_load_leave_the_callers_process_as_they_found_it(mnist_dir, store_uri, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'notebook.db'}")  # the notebook's own store
    try:
        before = process_state()
        result = fit(
            f"data.dir={mnist_dir}", f"tracking.uri={store_uri}", "trainer.max_epochs=1",
            "callbacks=none", "tracking.log_model=false", "trainer.enable_progress_bar=false",
            output_dir=tmp_path / "out",
        )
        after_fit = process_state()
        (checkpoint,) = (tmp_path / "out" / "checkpoints").glob("best-*.ckpt")
        load(checkpoint).predict(result.datamodule.splits["test"].x.numpy()[:3])
        after_load = process_state()
    finally:
        mlflow.set_tracking_uri(None)
    assert result.metrics["test/acc"] > 0.1
    for after in (after_fit, after_load):
        for key, value in before.items():
            if key == "loggers":  # loggers the fit's imports made are new, not changed
                assert {name: after[key][name] for name in value} == value
            else:
                assert after[key] == value, key


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["optimizer.lr=0"], r"^optimizer.lr must be a positive number \(got 0.0\); use e.g."),
        (["data=nope"], r"Could not find 'data/nope'.*denselab-train --cfg job"),
        (["model.hidden_sizes=[abc]"], r"do not compose into a config"),
    ],
)
def test_fit_raises_the_commands_sentences(overrides, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=words):
        fit(*overrides)
    assert not (tmp_path / "mlruns").exists()  # stopped before any run


def readme_python_example() -> str:
    text = README.read_text()
    section = text.split("## Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readmes_python_example_runs_from_plain_python(tmp_path):
    code = readme_python_example()
    assert "from denselab import fit, load" in code
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probability" in result.stdout and "'9']" in result.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert int(client.get_model_version_by_alias("digits", "champion").version) == 1
