"""data=image_table: a metadata CSV and a .npy array, hidden labels predicted, not scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import only_run
from helpers import TABLE_NAMES, write_image_table
from hydra.utils import instantiate

from denselab.data.image_table import ImageTableDataModule
from denselab.errors import DataError
from denselab.train import train


@pytest.fixture
def table(tmp_path) -> tuple[Path, Path, np.ndarray]:
    return write_image_table(tmp_path / "table")


def loaded(csv: Path, images: Path, **kwargs) -> ImageTableDataModule:
    dm = ImageTableDataModule(csv=str(csv), images=str(images), dir="unused", **kwargs)
    dm.setup()
    return dm


def rewrite_csv(csv: Path, change) -> None:
    """Apply ``change`` (a DataFrame -> DataFrame function) to the CSV, all columns text."""
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    change(frame).to_csv(csv, index=False)


def test_splits_classes_and_hidden_rows(table):
    csv, images, labels = table
    dm = loaded(csv, images)
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 240, "val": 80}
    assert dm.unlabeled is not None and len(dm.unlabeled) == 80
    assert dm.unlabeled.obs_ids == [f"obs{i:04d}" for i in range(320, 400)]
    assert dm.input_shape == (28, 28) and dm.num_classes == 4
    assert dm.class_labels == (1, 2, 3, 4) and list(dm.class_names) == list(TABLE_NAMES)
    # labels 1..4 became classes 0..3, in the CSV's row order
    assert dm.splits["train"].y.tolist() == list(labels[:240] - 1)
    assert dm.splits["val"].y.tolist() == list(labels[240:320] - 1)
    raw = np.load(images)
    # held as stored, scaled to [0, 1] only when read
    assert np.array_equal(dm.splits["val"].x.numpy(), raw[240:320])
    assert np.array_equal(dm.unlabeled.x.numpy(), raw[320:])
    assert np.allclose(dm.splits["val"].images().numpy(), raw[240:320] / 255.0)
    assert "unlabeled 80" in dm.describe()


def test_labels_from_zero_without_names_and_labelled_test_rows(table):
    csv, images, labels = table

    def relabel(frame):
        frame["class"] = [str(int(v) - 1) for v in labels]  # 0..3, test labels given
        return frame.drop(columns=["class_name"])

    rewrite_csv(csv, relabel)
    dm = loaded(csv, images)
    assert dm.class_labels == (0, 1, 2, 3) and list(dm.class_names) == ["0", "1", "2", "3"]
    assert len(dm.splits["test"]) == 80 and dm.unlabeled is None
    assert dm.splits["test"].y.tolist() == list(labels[320:] - 1)


def test_float_colour_images_and_r_style_hidden_labels(table):
    csv, images, _ = table
    colour = np.repeat(np.load(images)[..., None], 3, axis=3).astype(np.float32) / 255.0
    np.save(images, colour)
    rewrite_csv(csv, lambda f: f.assign(**{"class": f["class"].replace("", "NA")}))
    dm = loaded(csv, images)
    assert dm.input_shape == (28, 28, 3) and len(dm.unlabeled) == 80
    assert dm.splits["train"].x.dtype == torch.float32 and dm.splits["train"].x.max() <= 1.0


def test_without_valid_rows_val_fraction_of_train_is_held_out(table):
    csv, images, _ = table
    rewrite_csv(csv, lambda f: f.assign(train_id=f["train_id"].replace("valid", "train")))
    dm = loaded(csv, images, val_fraction=0.25, seed=3)
    assert len(dm.splits["train"]) == 240 and len(dm.splits["val"]) == 80


def _set(column, row, value):
    def change(frame):
        frame.loc[row, column] = value
        return frame

    return change


@pytest.mark.parametrize(
    "change, words",
    [
        (_set("class", 5, "cat"), r"class must be an integer label .* line 7 says 'cat'"),
        (_set("class", 0, "2.5"), r"class must be an integer label .* line 2 says '2.5'"),
        (_set("train_id", 3, "validation"), r"train_id must be train, valid or test.*'validation'"),
        (_set("obs_id", 9, "obs0001"), r"obs_id 'obs0001' appears more than once \(line 11\)"),
        (lambda f: f.drop(columns=["train_id"]), "lacks the column\\(s\\) train_id"),
        (lambda f: f.drop(index=[0]), "holds 400 images but .* has 399 rows"),
        (None, "class 1 has several class_name values"),
        (lambda f: f.assign(**{"class": f["class"].where(f["class"] == "", "2")}), "at least two"),
        (
            lambda f: f.assign(train_id=f["train_id"].replace("train", "valid")),
            "no labelled rows with train_id train",
        ),
    ],
    ids=[
        "word-class",
        "fractional-class",
        "unknown-split",
        "duplicate-id",
        "missing-column",
        "row-count",
        "two-names",
        "one-class",
        "no-train",
    ],
)
def test_bad_metadata_is_one_clear_sentence(table, change, words):
    csv, images, labels = table
    if change is None:  # give class 1 a second name on one of its rows
        change = _set("class_name", int(np.flatnonzero(labels[:320] == 1)[0]), "disc")
    rewrite_csv(csv, change)
    with pytest.raises(DataError, match=words) as err:
        loaded(csv, images)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.array([{"a": 1}] * 400, dtype=object), "cannot be loaded as a NumPy array without"),
        (np.zeros((400, 784), np.uint8), r"shape \(400, 784\); images must be \(N, H, W\)"),
        (np.zeros((400, 28, 28), np.int64), "holds int64 pixels; images must be uint8"),
        (np.full((400, 28, 28), 255.0, np.float32), "float pixels from 255.0 to 255.0"),
        (np.full((400, 28, 28), np.nan, np.float32), "float pixels from nan"),
    ],
    ids=["pickled-objects", "flat", "int64", "float-0-255", "nan"],
)
def test_bad_image_array_is_one_clear_sentence(table, array, words):
    csv, images, _ = table
    np.save(images, array, allow_pickle=True)
    with pytest.raises(DataError, match=words) as err:
        loaded(csv, images)
    assert "\n" not in str(err.value)


def test_npz_and_missing_files_are_clear(table, tmp_path):
    csv, images, _ = table
    np.savez(tmp_path / "images.npz", images=np.load(images))
    with pytest.raises(DataError, match="is an .npz archive, not one array"):
        loaded(csv, tmp_path / "images.npz")
    with pytest.raises(DataError, match="does not exist; .* or set data.images"):
        loaded(csv, tmp_path / "nowhere.npy")
    with pytest.raises(DataError, match="does not exist; .* or set data.csv"):
        loaded(tmp_path / "nowhere.csv", images)


def test_config_reads_both_files_from_the_data_dir(compose_cfg, table):
    csv, images, _ = table
    cfg = compose_cfg(["data=image_table", f"data.dir={csv.parent}"])
    assert cfg.data.csv == str(csv) and cfg.data.images == str(images)
    assert isinstance(instantiate(cfg.data), ImageTableDataModule)


@pytest.mark.slow  # a whole run on an image table
def test_training_scores_train_and_valid_and_logs_hidden_predictions(
    compose_cfg, table, store_uri, tmp_path
):
    csv, images, labels = table
    cfg = compose_cfg(
        [
            "data=image_table",
            f"data.csv={csv}",
            f"data.images={images}",
            "trainer.max_epochs=3",
            f"tracking.uri={store_uri}",
            "trainer.enable_progress_bar=false",
        ]
    )
    metrics = train(cfg, tmp_path / "out").metrics

    client, run = only_run(store_uri, "image_table")
    assert run.info.status == "FINISHED"
    assert "val/acc" in run.data.metrics and "test/acc" not in run.data.metrics
    assert "test/acc" not in metrics

    def logged_table(name: str) -> pd.DataFrame:
        local = client.download_artifacts(run.info.run_id, f"tables/{name}.json", str(tmp_path))
        content = json.loads(Path(local).read_text())
        return pd.DataFrame(content["data"], columns=content["columns"])

    scored = logged_table("accuracy_by_split")
    assert list(scored["split"]) == ["train", "val"] and list(scored["images"]) == [240, 80]

    predicted = logged_table("predictions_unlabeled")
    columns = ["obs_id", "predicted_label", "predicted_class", "probability"]
    assert list(predicted.columns) == columns
    assert list(predicted["obs_id"]) == [f"obs{i:04d}" for i in range(320, 400)]
    assert set(predicted["predicted_class"]) <= set(TABLE_NAMES)
    names = [TABLE_NAMES[v - 1] for v in predicted["predicted_label"]]
    assert names == list(predicted["predicted_class"])
    assert predicted["probability"].between(0.25, 1.0).all()  # the top class of 4
    # the hidden labels, which training never saw, are mostly predicted right
    assert (predicted["predicted_label"].to_numpy() == labels[320:]).mean() > 0.8

    # No labelled test rows, so nothing is tested: the final figures are drawn at fit's end.
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/confusion_matrix_val.png", "figures/typical_examples.png"} <= figures
