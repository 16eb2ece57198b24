"""The run's figures and tables as functions of evaluations: no Lightning, no MLflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from denselab.reporting import artifacts as report
from denselab.reporting.evaluation import Evaluation, LabelledImages

NAMES = ("zero", "one", "two")


def evaluation(split: str, probs, targets, seed: int = 0) -> Evaluation:
    probs = np.asarray(probs, dtype=np.float32)
    images = np.random.default_rng(seed).random((len(probs), 4, 4)).astype(np.float32)
    return Evaluation(split, probs, np.asarray(targets), images, NAMES, loss=0.5)


VAL = evaluation(
    "val",
    [[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]],
    [0, 1, 1, 2, 2],
)
TEST = evaluation("test", [[0.1, 0.2, 0.7], [0.05, 0.9, 0.05]], [0, 1], seed=1)


def test_an_evaluation_scores_itself():
    assert list(VAL.predicted) == [0, 1, 0, 2, 1]
    assert VAL.accuracy == pytest.approx(3 / 5) and len(VAL) == 5


def test_confusion_counts_and_pairs_of_one_split():
    made = report.confusion(VAL, top_k=5)
    assert set(made.figures) == {"confusion_matrix_val"}
    counts = made.csvs["confusion_matrix_val"]
    assert counts.to_numpy().tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert list(counts.index) == list(NAMES) == list(counts.columns)
    pairs = made.tables["most_confused_val"]
    assert list(pairs["mistake"]) == ["one taken for zero", "two taken for one"]
    assert list(pairs["count"]) == [1, 1]
    assert "accuracy 60.0%" in made.figures["confusion_matrix_val"].texts[0].get_text()


def test_class_metrics_of_one_split():
    table = report.class_metrics(VAL).tables["class_metrics_val"]
    assert list(table["class"]) == list(NAMES)
    assert table["recall"].to_numpy() == pytest.approx([1.0, 0.5, 0.5])
    assert list(table["support"]) == [1, 2, 2]


def test_typical_examples_span_the_splits_given():
    made = report.typical_examples([VAL, TEST], mistakes=16)
    mistakes = made.tables["confident_mistakes"]
    # Wrong: val 2 (0.6), test 0 (0.7), val 4 (0.6): most confident first, split and index kept.
    assert list(zip(mistakes["split"], mistakes["index"])) == [("test", 0), ("val", 2), ("val", 4)]
    assert list(mistakes["true"]) == ["zero", "one", "two"]
    assert list(mistakes["predicted"]) == ["two", "zero", "one"]
    assert set(made.figures) == {"typical_examples", "confident_mistakes"}
    # Every class's most typical image: zero from val 0 (0.9), one from test 1, two val 3.
    fig = made.figures["typical_examples"]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:3] == ["zero\np = 0.900", "one\np = 0.900", "two\np = 0.800"]


def test_no_mistakes_means_no_mistakes_figure():
    perfect = evaluation("test", [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]], [0, 1])
    made = report.typical_examples([perfect], mistakes=4)
    assert "confident_mistakes" not in made.figures
    assert made.tables["confident_mistakes"].empty


def test_class_samples_show_each_class():
    data = LabelledImages(np.random.default_rng(0).random((30, 4, 4)), np.arange(30) % 3, NAMES)
    made = report.class_samples(data, per_class=2, seed=0)
    assert set(made.figures) == {"class_samples"}


def test_one_class_alone_is_drawn_ten_to_a_row_as_the_courses_digit_2():
    data = LabelledImages(np.random.default_rng(0).random((300, 4, 4)), np.arange(300) % 3, NAMES)
    fig = report.class_samples(data, per_class=60, seed=0, classes=[2]).figures["class_samples"]
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == [NAMES[2], "", "", "", "", ""]
    grid = ax.get_images()[0].get_array()
    assert grid.shape[:2] == (2 + 6 * (4 + 2), 2 + 10 * (4 + 2))  # 6 rows of 10, 2-pixel gaps
    assert fig.get_suptitle() == f"60 random training images of class {NAMES[2]}"


def test_weight_tiles_are_class_templates_without_a_hidden_layer():
    weights = np.arange(3 * 16, dtype=np.float32).reshape(3, 16)
    tiles, titles, title = report.weight_tiles(weights, (4, 4), NAMES, False, hidden_units=2)
    assert tiles.shape == (3, 4, 4) and titles == list(NAMES) and "no hidden layer" in title
    assert tiles[1, 0, 0] == 16  # row 1 reshaped to the image
    tiles, titles, _ = report.weight_tiles(weights, (4, 4), NAMES, True, hidden_units=2)
    assert tiles.shape == (2, 4, 4) and titles == ["unit 0", "unit 1"]
    assert report.weights_image(tiles).ndim == 3


def test_training_curves_need_some_history():
    assert report.training_curves(pd.DataFrame()).figures == {}
    history = pd.DataFrame({"train/loss": [1.0, 0.5], "val/loss": [1.1, 0.7]}, index=[0, 1])
    assert set(report.training_curves(history).figures) == {"training_curves"}


def test_the_run_logger_keeps_the_history_it_wrote(store_uri):
    from denselab.tracking.logger import RunLogger
    from denselab.tracking.store import get_or_create_experiment, open_store

    client = open_store(store_uri)
    run_id = client.create_run(get_or_create_experiment(client, "x")).info.run_id
    run = RunLogger(tracking_uri=store_uri, run_id=run_id)
    run.log_metrics({"val/acc": 0.5, "val/loss": 1.0, "epoch": 0}, step=7)
    run.log_metrics({"train/acc": 0.4, "epoch": 0}, step=9)
    run.log_metrics({"val/acc": 0.75, "epoch": 1}, step=12)
    history = run.history(["train/acc", "val/acc"])
    assert list(history.index) == [0, 1]
    assert history["val/acc"].tolist() == [0.5, 0.75]
    assert history["train/acc"].iloc[0] == 0.4 and np.isnan(history["train/acc"].iloc[1])
    # The epoch is MLflow's step too.
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [0, 1]


def test_run_description_tells_the_result():
    accuracy = pd.DataFrame(
        [{"split": "val", "images": 5, "accuracy": 0.6, "loss": 0.5}],
        columns=["split", "images", "accuracy", "loss"],
    )
    history = pd.DataFrame({"val/acc": [0.5, 0.7, 0.6]}, index=[0, 1, 2])
    text = report.run_description(accuracy, VAL, history, ["figures/a.png"], 1234)
    # The result first, in one line: the UI shows a description's first lines only.
    assert text.splitlines()[0] == "**Validation 0.6000** · best epoch 2 of 3 · 1,234 parameters"
    assert "| val | 5 | 0.6000 | 0.5000 |" in text
    assert "**Most confused** (val): one taken for zero (1), two taken for one (1)" in text
    assert "step 1 (epoch 2 of 3), val/acc 0.7000" in text
    assert "`figures/a.png`" in text


def test_tables_read_as_the_float32_they_are():
    from denselab.tracking.logger import float32_shortest

    frame = pd.DataFrame(
        {"split": ["val"], "accuracy": [float(np.float32(0.68))], "ratio": [1 / 3], "n": [5]}
    )
    shortest = float32_shortest(frame)
    assert shortest["accuracy"].tolist() == [0.68]  # not 0.6800000071525574
    assert shortest["ratio"].tolist() == [1 / 3]  # a float64 value stays as it is
    assert shortest["n"].tolist() == [5] and frame["accuracy"][0] != 0.68  # a copy


def test_metrics_read_as_the_float32_they_are():
    from denselab.tracking.logger import float32_exact as exact

    assert exact(np.float32(0.8)) == 0.8 and exact(float(np.float32(0.8743))) == 0.8743
    assert np.isnan(exact(float("nan")))


def test_console_lines_and_addresses():
    from denselab.tracking.runs import experiment_address, model_address, run_address
    from denselab.training.console import epoch_line

    metrics = {"train/loss": 0.31, "train/acc": 0.9, "val/loss": 0.29, "val/acc": 0.913}
    assert epoch_line(1, 10, metrics, 4.06) == (
        "epoch 2/10: loss 0.3100 acc 0.9000 | val loss 0.2900 acc 0.9130 | 4.1 s"
    )
    classic = "?workflowType=machine_learning"  # not MLflow 3's GenAI dashboard
    assert run_address("http://h:5000/", "3", "abc") == (
        f"http://h:5000/#/experiments/3/runs/abc{classic}"
    )
    # A local store's address comes with the command that serves that very store.
    assert run_address("sqlite:////data/mlruns/mlflow.db", "3", "abc") == (
        f"http://127.0.0.1:5000/#/experiments/3/runs/abc{classic} "
        "(serve it with `mlflow ui --backend-store-uri sqlite:////data/mlruns/mlflow.db`)"
    )
    assert experiment_address("http://h:5000", "3") == f"http://h:5000/#/experiments/3{classic}"
    assert model_address("http://h:5000", "digits", "2") == (
        f"http://h:5000/#/models/digits/versions/2{classic}"
    )
    database = run_address("postgresql+psycopg://me:secret@db/mlflow", "3", "abc")
    assert "secret" not in database and "--backend-store-uri postgresql+psycopg://me:" in database
