"""A run's splits as MLflow datasets: read back through MlflowClient().get_run(id).inputs,
with their contexts and digests, which change with a pixel or the seed and stay otherwise;
and a sweep parent's sentence on whether its jobs saw the same data."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from denselab.data.digits import DigitsDataModule
from denselab.sweeps.summary import data_note
from denselab.tracking.datasets import split_datasets
from denselab.train import train


def inputs(store_uri: str, run_id: str) -> dict[str, dict]:
    """context -> the dataset's fields, as MLflow gives them back."""
    run = MlflowClient(store_uri).get_run(run_id)
    found = {}
    for item in run.inputs.dataset_inputs:
        (context,) = [t.value for t in item.tags if t.key == "mlflow.data.context"]
        found[context] = {
            "name": item.dataset.name,
            "digest": item.dataset.digest,
            "source_type": item.dataset.source_type,
            "source": json.loads(item.dataset.source),
            "profile": json.loads(item.dataset.profile),
            "schema": json.loads(item.dataset.schema),
        }
    return found


def test_each_split_is_a_dataset_of_the_run_whose_digest_follows_the_content(
    compose_cfg, tmp_path, store_uri
):
    settings = [
        "data=digits",
        f"tracking.uri={store_uri}",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "callbacks=none",
        "tracking.log_model=false",
    ]
    first = train(compose_cfg(settings), tmp_path / "a")
    seen = inputs(store_uri, first.run_id)
    assert set(seen) == {"training", "validation", "test"}
    digests = first.datamodule.split_digests()
    assert {c: seen[c]["digest"] for c in seen} == {
        "training": digests["train"], "validation": digests["val"], "test": digests["test"]
    }
    test = seen["test"]
    assert test["name"] == "digits" and test["source_type"] == "code"
    assert test["source"] == {"uri": "sklearn.datasets.load_digits"}
    assert test["profile"]["rows"] == len(first.datamodule.splits["test"])
    assert sum(test["profile"]["rows_per_class"].values()) == test["profile"]["rows"]
    assert test["profile"]["features_shape"][1:] == [8, 8] and "mlflow_tensorspec" in test["schema"]

    again = inputs(store_uri, train(compose_cfg(settings), tmp_path / "b").run_id)
    assert {c: d["digest"] for c, d in again.items()} == {c: d["digest"] for c, d in seen.items()}
    other_seed = inputs(store_uri, train(compose_cfg([*settings, "seed=7"]), tmp_path / "c").run_id)
    assert other_seed["test"]["digest"] == seen["test"]["digest"]  # the test split is fixed
    for context in ("training", "validation"):  # drawn with the seed
        assert other_seed[context]["digest"] != seen[context]["digest"]


def test_one_pixel_changes_its_splits_digest_only():
    data = DigitsDataModule(dir=".", seed=0)
    data.setup()
    before = {d.split: d.dataset.digest for d in split_datasets(data)}
    data.splits["test"].x[0, 0, 0] += 0.5
    data._digests = {}  # computed once per load: this load changed under it
    after = {d.split: d.dataset.digest for d in split_datasets(data)}
    assert after["test"] != before["test"]
    assert after["train"] == before["train"] and after["val"] == before["val"]


def row(name: str, training: str, validation: str = "v", test: str = "t") -> dict:
    return {
        "run_name": name,
        "datasets": {"training": training, "validation": validation, "test": test},
    }


def test_a_sweep_says_whether_its_jobs_saw_the_same_data():
    same = [row("a", "x"), row("b", "x"), row("c", "x")]
    assert data_note(same, ["optimizer.lr"]) == (
        "All 3 jobs saw the same data (each split's digest is equal)."
    )
    odd = [row("a", "x"), row("b", "y", test="u"), row("c", "x")]
    assert data_note(odd, ["data.dir"]) == (
        "Not all jobs saw the same data; training: b (not as most jobs); test: b (not as most "
        "jobs)."
    )
    tie = [row("a", "x"), row("b", "y")]
    assert data_note(tie, ["data.dir"]) == "Not all jobs saw the same data; training: a | b."
    seeds = [row("seed=1", "x", "v1"), row("seed=2", "y", "v2")]
    assert data_note(seeds, ["seed"]).startswith(
        "Not all jobs saw the same data (the validation split is drawn with each job's seed)"
    )
    # Jobs that failed before their data loaded say nothing, and are left out.
    assert data_note([*same, {"run_name": "d", "datasets": {}}], []).startswith("All 3 jobs")
    assert data_note([{"run_name": "d", "datasets": {}}], []) == ""


def test_the_runs_model_carries_its_scores_linked_to_their_splits(compose_cfg, tmp_path, store_uri):
    # MLflow 3 links a score to a dataset only as a logged model's metric.
    cfg = compose_cfg(
        ["data=digits", f"tracking.uri={store_uri}", "trainer.max_epochs=1", "callbacks=none",
         "trainer.enable_progress_bar=false"]
    )
    result = train(cfg, tmp_path / "out")
    client = MlflowClient(store_uri)
    run = client.get_run(result.run_id)
    (output,) = run.outputs.model_outputs
    linked = {m.key: m for m in client.get_logged_model(output.model_id).metrics}
    digests = result.datamodule.split_digests()
    assert {k: (m.dataset_name, m.dataset_digest) for k, m in linked.items()} == {
        "val/acc_best": ("digits", digests["val"]),
        "test/acc": ("digits", digests["test"]),
        "test/loss": ("digits", digests["test"]),
    }
    assert linked["test/acc"].value == run.data.metrics["test/acc"]
    assert len(client.get_metric_history(result.run_id, "test/acc")) == 1  # not doubled


def test_jobs_logging_the_same_dataset_at_once_all_succeed(tmp_path):
    # A sweep's parallel jobs share its fixed test split: MLflow looks the dataset up, then
    # inserts it, and without the store's lock one job failed on the unique constraint.
    import threading

    from denselab.tracking.logger import RunLogger

    data = DigitsDataModule(dir=".", seed=0)
    data.setup()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e")
    runs = [client.create_run(experiment).info.run_id for _ in range(6)]
    start, failures = threading.Barrier(len(runs)), []

    def log(run_id: str) -> None:
        start.wait()
        try:
            RunLogger(uri, run_id).datasets(data)
        except Exception as err:  # noqa: BLE001 - collected for the assertion
            failures.append(err)

    threads = [threading.Thread(target=log, args=(r,)) for r in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert all(len(client.get_run(r).inputs.dataset_inputs) == 3 for r in runs)
