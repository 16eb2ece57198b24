"""Downloads against a local HTTP server: mirrors, checksums, and no partial files."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import MNIST_FILES, md5, serve, write_mnist

from denselab.data.download import download, find_or_download
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


def test_checksum_mismatch_is_refused_and_leaves_nothing(served, tmp_path):
    target = tmp_path / "data"
    with serve(served) as url, pytest.raises(DataError, match="checksum mismatch") as err:
        download(NAME, "0" * 32, [url], target)
    assert f"Put the file in {target} by hand" in str(err.value)
    assert list(target.iterdir()) == []


def test_interrupted_download_leaves_nothing(served, tmp_path):
    target = tmp_path / "data"
    with serve(served, cut_off=True) as url, pytest.raises(DataError, match=NAME):
        download(NAME, md5(served / NAME), [url], target)
    assert list(target.iterdir()) == []


def test_no_network_says_where_to_put_the_file(tmp_path):
    with pytest.raises(DataError) as err:
        download(NAME, "0" * 32, ["http://127.0.0.1:9/"], tmp_path / "data")
    message = str(err.value)
    assert NAME in message and str(tmp_path / "data") in message and "data.dir" in message


def test_local_then_system_folder_before_any_download(served, tmp_path):
    local = write_mnist(tmp_path / "local")
    assert find_or_download(NAME, "x", [], local, [str(served)]) == local / NAME
    assert find_or_download(NAME, "x", [], tmp_path / "empty", [str(served)]) == served / NAME


def test_datamodule_downloads_what_is_missing(served, tmp_path, monkeypatch):
    # The real MD5s belong to the real files: give the module the fixture's.
    monkeypatch.setattr(MNISTDataModule, "resources", {n: md5(served / n) for n in MNIST_FILES})
    with serve(served) as url:
        dm = MNISTDataModule(dir=str(tmp_path / "mnist"), mirrors=[url], seed=0)
        dm.prepare_data()
        dm.setup()
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(MNIST_FILES)
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 600
