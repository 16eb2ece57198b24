"""Raw images to classes: the preprocessing (as in training), the inputs denselab-predict reads,
its CSV, and its one-sentence errors."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import (
    MNIST_FILES,
    console_script,
    learnable_digits,
    write_checkpoint,
    write_flowers_archive,
    write_idx,
    write_pngs,
)
from PIL import Image

from denselab.data import images as image_decoding
from denselab.data.base import stored_pixels
from denselab.data.pixels import as_float
from denselab.errors import InputError, ModelNotFoundError
from denselab.predict import main, write_csv_atomically
from denselab.serving.classifier import Classifier, load
from denselab.serving.inputs import read_inputs, resize_note
from denselab.serving.preprocessing import Preprocessing

GRAY = Preprocessing(input_shape=(28, 28), class_names=tuple("0123456789"))
RGB = Preprocessing(input_shape=(16, 16, 3), class_names=("a", "b", "c"))


# -- preprocessing ---------------------------------------------------------------------


def test_arrays_are_scaled_as_training_scales_a_split():
    x, _ = learnable_digits(20, 0)
    assert torch.equal(GRAY.to_input(x), to_unit_float(x))
    floats = x.astype(np.float32) / 255
    assert torch.equal(GRAY.to_input(floats), to_unit_float(floats))
    assert GRAY.to_input(x[0]).shape == (1, 28, 28)  # one image


def test_png_files_read_back_exactly_the_pixels_they_were_written_from(tmp_path):
    x, y = learnable_digits(8, 0)
    paths = write_pngs(tmp_path / "png", x, y)
    sources, pixels = read_inputs(str(tmp_path / "png"), GRAY)
    assert sources == [str(p) for p in paths]
    np.testing.assert_array_equal(pixels, x)


def test_files_of_another_size_are_resized_with_a_word(tmp_path, caplog):
    x, y = learnable_digits(3, 0)
    write_pngs(tmp_path / "png", x, y)
    eight = Preprocessing(input_shape=(8, 8), class_names=tuple("0123456789"))
    with caplog.at_level("INFO", logger="denselab.predict"):
        _, pixels = read_inputs(str(tmp_path / "png"), eight)
    assert pixels.shape == (3, 8, 8)
    assert caplog.messages == [
        "3 of 3 image files are not 8x8 (28x28): cropped and resized to the network's 8x8, "
        "as training photos are."
    ]
    caplog.clear()
    with caplog.at_level("INFO", logger="denselab.predict"):
        read_inputs(str(tmp_path / "png"), GRAY)  # the network's own size: nothing to say
    assert caplog.messages == []
    assert resize_note([(8, 8), (28, 28), (30, 20), (28, 28)], (8, 8)).startswith(
        "3 of 4 image files are not 8x8 (28x28, 30x20): "
    )


def test_colour_files_are_decoded_as_flowers_photos_are_in_training(tmp_path):
    import tarfile

    archive = write_flowers_archive(tmp_path / "17flowers.tgz", short_side=24)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    photos = sorted((tmp_path / "x" / "jpg").glob("image_000*.jpg"))
    _, pixels = read_inputs(str(tmp_path / "x" / "jpg" / "image_000*.jpg"), RGB)
    expected = np.stack([image_decoding.decode_image(p, 16) for p in photos])
    np.testing.assert_array_equal(pixels, expected)


def test_channels_are_converted_where_unambiguous():
    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28, 3), dtype=np.uint8)
    pil_gray = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])
    assert torch.equal(GRAY.to_input(rgb), to_unit_float(pil_gray))  # Pillow's luma
    rgba = np.concatenate([rgb, np.full((4, 28, 28, 1), 255, np.uint8)], axis=3)
    assert torch.equal(GRAY.to_input(rgba), GRAY.to_input(rgb))
    gray = rgb[:, :16, :16, 0]
    assert torch.equal(RGB.to_input(gray), to_unit_float(np.repeat(gray[..., None], 3, axis=3)))


@pytest.mark.parametrize(
    "images, words",
    [
        (np.zeros((2, 27, 28), np.uint8), "shape 27x28, but the network takes 28x28"),
        (np.zeros((2, 28, 28, 2), np.uint8), "2 channels"),
        (np.full((2, 28, 28), 3.0, np.float32), "floats outside"),
        (np.full((2, 28, 28), 300, np.int64), "integers outside"),
        (np.zeros((2, 28, 28), bool), "not pixels"),
    ],
)
def test_images_that_cannot_be_converted_get_one_sentence(images, words):
    with pytest.raises(InputError, match=words):
        GRAY.to_input(images, "x.npy")


def test_inputs_npy_idx_and_their_errors(tmp_path):
    x, _ = learnable_digits(5, 0)
    np.save(tmp_path / "x.npy", x)
    write_idx(tmp_path / MNIST_FILES[2], x)
    for name in ("x.npy", MNIST_FILES[2]):
        sources, pixels = read_inputs(str(tmp_path / name), GRAY)
        assert sources == [0, 1, 2, 3, 4]
        np.testing.assert_array_equal(pixels, x)

    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    np.save(tmp_path / "objects.npy", np.array([{}]), allow_pickle=True)
    write_idx(tmp_path / "labels.gz", np.zeros(5, np.uint8))
    errors = {
        "empty": "holds no image files",
        "bad.png": "bad.png cannot be read as an image",
        "objects.npy": "without pickle",
        "labels.gz": "labels.gz is not a gzipped IDX image file",
        "missing": "does not exist",
        "*.jpeg": "No file matches",
    }
    for name, words in errors.items():
        with pytest.raises(InputError, match=words):
            read_inputs(str(tmp_path / name), GRAY)


# -- the classifier and the command -------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    return write_checkpoint(tmp_path / "best-epoch00.ckpt")


def test_a_checkpoint_predicts_the_table_of_its_network(checkpoint):
    clf = load(checkpoint)
    x, _ = learnable_digits(30, 0)
    table = clf.predict(x)
    probs = clf.probabilities(x)
    assert list(table.columns) == [
        "class",
        "label",
        "probability",
        "class_2",
        "probability_2",
        "class_3",
        "probability_3",
    ]
    np.testing.assert_array_equal(table["label"], probs.argmax(axis=1))
    np.testing.assert_allclose(table["probability"], probs.max(axis=1))
    assert (table["probability"] >= table["probability_2"]).all()
    assert (table["probability_2"] >= table["probability_3"]).all()
    assert clf.classes == [str(d) for d in range(10)]


def test_predict_writes_one_row_per_image_and_no_temp_file(tmp_path, checkpoint):
    x, y = learnable_digits(12, 0)
    write_pngs(tmp_path / "png", x, y)
    out = tmp_path / "out" / "preds.csv"
    main([f"model={checkpoint}", f"inputs={tmp_path / 'png'}", f"out={out}"])
    table = pd.read_csv(out)
    assert len(table) == 12 and table["source"].str.endswith(".png").all()
    expected = load(checkpoint).predict(x)
    np.testing.assert_array_equal(table["label"], expected["label"])
    assert [p.name for p in out.parent.iterdir()] == ["preds.csv"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["model=nowhere.ckpt", "inputs=x.npy"], "model=nowhere.ckpt does not exist"),
        (["model={ckpt}", "inputs=nothing/"], "inputs=nothing/ does not exist"),
        (["model={ckpt}", "inputs=bad.npy"], "bad.npy holds images of shape 5x5"),
        (["model={ckpt}"], "inputs= missing"),
        (["model={ckpt}", "inputs=x.npy", "colour=red"], "'colour=red' is not one of the keys"),
        (["model=runs:/0123/model", "inputs=x.npy"], "no MLflow store"),
    ],
)
def test_bad_inputs_exit_1_with_one_sentence_and_no_csv(
    args, words, tmp_path, checkpoint, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    np.save(tmp_path / "x.npy", learnable_digits(3, 0)[0])
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 5), np.uint8))
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(ckpt=checkpoint) for a in args])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob(".*.tmp"))


def test_an_interrupted_write_leaves_the_old_csv_alone(tmp_path):
    out = tmp_path / "preds.csv"
    out.write_text("old\n")

    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_csv_atomically(Broken({"a": [1]}), out)
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["preds.csv"]


def test_a_checkpoint_that_is_not_denselabs_is_named(tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(Exception, match="other.ckpt is not a checkpoint of a denselab run"):
        Classifier.from_checkpoint(path)
    with pytest.raises(ModelNotFoundError, match="is not an MLflow model"):
        load(tmp_path)  # a folder without MLmodel


@pytest.mark.slow
def test_the_console_script_classifies_a_run_model_and_logs_to_the_run(tmp_path, mnist_dir):
    """denselab-train then denselab-predict, as a user would: the accuracy on PNGs written
    from the test files equals the run's test/acc."""
    from mlflow import MlflowClient

    train = subprocess.run(
        [console_script(), f"data.dir={mnist_dir}", "data.mirrors=[]", "trainer.max_epochs=2",
         "callbacks=none", "trainer.enable_progress_bar=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    from denselab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx

    x = read_idx(mnist_dir / MNIST_FILES[2], IMAGES_MAGIC)
    y = read_idx(mnist_dir / MNIST_FILES[3], LABELS_MAGIC)
    write_pngs(tmp_path / "test_pngs", x, y)

    rid = run.info.run_id
    # In-process runs of other tests leave MLFLOW_TRACKING_URI set (MLflow's set_tracking_uri
    # exports it): the command must find ./mlruns by itself.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [console_script("denselab-predict"), f"model=runs:/{rid}/model", "inputs=test_pngs",
         "out=preds.csv", f"log_to={rid}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_csv(tmp_path / "preds.csv")
    truth = table["source"].str.extract(r"_(\d+)\.png$")[0].astype(int)
    accuracy = float((table["label"] == truth).mean())
    assert accuracy == pytest.approx(run.data.metrics["test/acc"], abs=5e-4)
    assert "predictions/preds.csv" in {a.path for a in client.list_artifacts(rid, "predictions")}

    missing = subprocess.run(
        [console_script("denselab-predict"), "model=models:/nothing@champion",
         "inputs=test_pngs", "out=none.csv"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "No MLflow model at models:/nothing@champion" in missing.stderr
    assert not (tmp_path / "none.csv").exists()


def test_help_names_every_key(capsys):
    main(["--help"])
    text = capsys.readouterr().out
    assert all(f"  {key}" in text for key in ("model", "inputs", "out", "log_to", "tracking_uri"))


def to_unit_float(images):
    """What training makes of stored images: the split's pixels, scaled per batch."""
    return as_float(stored_pixels(images))
