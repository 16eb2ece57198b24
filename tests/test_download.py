"""Downloads against a local HTTP server: mirrors, checksums, and no partial files."""

from __future__ import annotations

import logging.handlers
from pathlib import Path

import pooch
import pytest
from helpers import MNIST_FILES, md5, serve, write_mnist

from denselab.data.download import download, fetch
from denselab.data.mnist import MNISTDataModule
from denselab.errors import DataError

NAME = MNIST_FILES[1]


@pytest.fixture
def served(tmp_path) -> Path:
    return write_mnist(tmp_path / "server")


def test_downloads_and_verifies(served, tmp_path):
    target = tmp_path / "data"
    with serve(served) as url:
        path = download(NAME, md5(served / NAME), [url], target)
    assert path == target / NAME
    assert path.read_bytes() == (served / NAME).read_bytes()
    assert sorted(p.name for p in target.iterdir()) == [NAME]


def test_falls_back_to_the_next_mirror(served, tmp_path):
    with serve(tmp_path) as empty_url, serve(served) as url:  # the first answers 404
        path = download(NAME, md5(served / NAME), [empty_url, url], tmp_path / "data")
    assert path.is_file()


def test_each_attempt_is_said_once(served, tmp_path, caplog):
    # pooch logs its own "Downloading data from ..." beside denselab's line, to a handler of
    # its own (its logger does not propagate): listen there too.
    pooch_said = logging.handlers.BufferingHandler(100)
    pooch.get_logger().addHandler(pooch_said)
    try:
        with caplog.at_level("INFO"), serve(tmp_path) as empty_url, serve(served) as url:
            download(NAME, md5(served / NAME), [empty_url, url], tmp_path / "data")
    finally:
        pooch.get_logger().removeHandler(pooch_said)
    said = [r.getMessage() for r in caplog.records if "Downloading" in r.getMessage()]
    assert said == [f"Downloading {u.rstrip('/')}/{NAME}" for u in (empty_url, url)]
    assert [r.getMessage() for r in pooch_said.buffer if r.levelno < logging.WARNING] == []


def test_checksum_mismatch_is_refused_and_leaves_nothing(served, tmp_path):
    target = tmp_path / "data"
    with serve(served) as url, pytest.raises(DataError, match="checksum mismatch") as err:
        fetch({NAME: "0" * 32}, [url], target)
    assert f"Put it in {target} by hand" in str(err.value)
    assert not target.exists()  # the folder made for the download is gone again


def test_interrupted_download_leaves_nothing(served, tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    with serve(served, cut_off=True) as url, pytest.raises(DataError, match=NAME):
        fetch({NAME: md5(served / NAME)}, [url], target)
    assert list(target.iterdir()) == []


def test_no_network_names_every_missing_file_and_where_to_put_them(tmp_path):
    target = tmp_path / "data" / "mnist"
    with pytest.raises(DataError) as err:
        fetch({n: "0" * 32 for n in MNIST_FILES}, ["http://127.0.0.1:9/"], target)
    message = str(err.value)
    assert all(name in message for name in MNIST_FILES)
    assert f"Put them in {target} by hand" in message and "could not connect" in message
    assert not (tmp_path / "data").exists()


def test_local_then_system_folder_before_any_download(served, tmp_path):
    local = write_mnist(tmp_path / "local")
    assert fetch({NAME: "x"}, [], local, [str(served)])[NAME] == local / NAME
    assert fetch({NAME: "x"}, [], tmp_path / "empty", [str(served)])[NAME] == served / NAME
    assert not (tmp_path / "empty").exists()


def test_datamodule_downloads_what_is_missing(served, tmp_path, monkeypatch):
    # The real MD5s belong to the real files: give the module the fixture's.
    monkeypatch.setattr(MNISTDataModule, "resources", {n: md5(served / n) for n in MNIST_FILES})
    with serve(served) as url:
        dm = MNISTDataModule(dir=str(tmp_path / "mnist"), mirrors=[url], seed=0)
        dm.prepare_data()
        dm.setup()
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(MNIST_FILES)
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 600
