"""A run's data is part of what the run is: the digest of the content it trains and is scored
on, the same wherever the files lie, different for any other data."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from conftest import only_run
from helpers import metric_steps, write_image_table
from mlflow import MlflowClient

from denselab.data.image_table import ImageTableDataModule
from denselab.errors import ConfigError
from denselab.train import train


def digest_of(folder, **settings) -> str:
    data = ImageTableDataModule(
        csv=str(folder / "metadata.csv"), images=str(folder / "images.npy"), dir=str(folder),
        **settings,
    )
    data.setup()
    return data.content_digest()


@pytest.fixture
def table(tmp_path):
    write_image_table(tmp_path / "a", n_train=60, n_valid=0, n_test=20)
    return tmp_path / "a"


def test_the_same_files_elsewhere_have_the_same_digest(table, tmp_path):
    moved = shutil.copytree(table, tmp_path / "elsewhere" / "b")
    assert digest_of(moved) == digest_of(table)
    assert re.fullmatch(r"[0-9a-f]{16}", digest_of(table))


def test_one_pixel_one_label_or_another_validation_draw_is_other_data(table, tmp_path):
    base = digest_of(table)
    assert digest_of(table, seed=1) != base  # the validation rows are drawn by the seed
    assert digest_of(table, val_fraction=0.3) != base

    pixel = shutil.copytree(table, tmp_path / "pixel")
    images = np.load(pixel / "images.npy")
    images.flat[123] ^= 1
    np.save(pixel / "images.npy", images)
    assert digest_of(pixel) != base

    label = shutil.copytree(table, tmp_path / "label")
    csv = (label / "metadata.csv").read_text().splitlines()
    row = csv[5].split(",")
    row[2] = "1" if row[2] != "1" else "2"  # the class of one labelled row
    row[3] = ""
    csv[5] = ",".join(row)
    (label / "metadata.csv").write_text("\n".join(csv) + "\n")
    assert digest_of(label) != base


@pytest.mark.slow  # three in-process runs
def test_a_resume_on_other_data_is_refused_naming_both_digests(
    compose_cfg, store_uri, table, tmp_path
):
    flipped = shutil.copytree(table, tmp_path / "flipped")
    np.save(flipped / "images.npy", np.load(table / "images.npy")[:, ::-1].copy())
    settings = ["data=image_table", "trainer.max_epochs=1", "callbacks=none",
                "tracking.log_model=false", f"tracking.uri={store_uri}"]
    train(compose_cfg([*settings, f"data.dir={table}"]), tmp_path / "first")
    client, run = only_run(store_uri, "image_table")
    run_id, trained_on = run.info.run_id, run.data.tags["data_digest"]
    client.set_terminated(run_id, "KILLED")  # as a stopped run is left

    overrides = [f"resume={run_id}", f"data.dir={flipped}"]
    with pytest.raises(ConfigError) as refused:
        train(compose_cfg([*settings, *overrides]), tmp_path / "second", overrides)
    sentence = str(refused.value)
    named = re.search(r"data digest ([0-9a-f]{16}) here, ([0-9a-f]{16}) in the run", sentence)
    assert named and named.group(2) == trained_on and named.group(1) != trained_on, sentence
    assert "\n" not in sentence
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.info.status == "KILLED"  # left as it was

    # The same files in another folder are the same data: the run goes on there.
    moved = shutil.copytree(table, tmp_path / "moved")
    overrides = [f"resume={run_id}", f"data.dir={moved}", "trainer.max_epochs=2"]
    train(compose_cfg([*settings, *overrides]), tmp_path / "third", overrides)
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["data_digest"] == trained_on
    # ... and may train longer than it first meant to (one epoch more, not one anew).
    assert metric_steps(MlflowClient(store_uri), run_id, "val/acc") == [0, 1]
