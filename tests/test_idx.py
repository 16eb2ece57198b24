"""IDX files: read back exactly, and each kind of damage named in one sentence."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from helpers import MNIST_FILES, learnable_digits, write_idx, write_mnist

from denselab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, read_image_label_pair
from denselab.errors import DataError


def test_round_trip(tmp_path):
    images, labels = learnable_digits(50, seed=1)
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l.gz", labels)
    x, y = read_image_label_pair(tmp_path / "i.gz", tmp_path / "l.gz", (28, 28), 10)
    assert np.array_equal(x, images) and np.array_equal(y, labels)
    assert x.dtype == np.uint8 and x.shape == (50, 28, 28)


def test_truncated_gzip(tmp_path):
    folder = write_mnist(tmp_path)
    path = folder / MNIST_FILES[0]
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated or not a gzip file.*delete it"):
        read_idx(path, IMAGES_MAGIC)


def test_not_gzip_at_all(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_text("<html>404 Not Found</html>")
    with pytest.raises(DataError, match="truncated or not a gzip file"):
        read_idx(path, IMAGES_MAGIC)


def test_wrong_magic(tmp_path):
    images, labels = learnable_digits(10, seed=0)
    write_idx(tmp_path / "labels-as-images.gz", labels)
    with pytest.raises(DataError, match="magic number 0x00000801, expected 0x00000803"):
        read_idx(tmp_path / "labels-as-images.gz", IMAGES_MAGIC)


def test_header_promises_more_than_the_file_holds(tmp_path):
    path = tmp_path / "short.gz"
    with gzip.open(path, "wb") as f:  # header says 5 labels, body holds 3
        f.write(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3]))
    with pytest.raises(DataError, match="holds 3 data bytes but its header promises 5"):
        read_idx(path, LABELS_MAGIC)


def test_count_mismatch(tmp_path):
    images, _ = learnable_digits(20, seed=0)
    _, labels = learnable_digits(19, seed=0)
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l.gz", labels)
    with pytest.raises(DataError, match="20 images but .* 19 labels"):
        read_image_label_pair(tmp_path / "i.gz", tmp_path / "l.gz", (28, 28), 10)


def test_wrong_image_size(tmp_path):
    write_idx(tmp_path / "i.gz", np.zeros((4, 32, 32), np.uint8))
    write_idx(tmp_path / "l.gz", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="32x32 pixels, expected 28x28"):
        read_image_label_pair(tmp_path / "i.gz", tmp_path / "l.gz", (28, 28), 10)


def test_label_out_of_range(tmp_path):
    write_idx(tmp_path / "i.gz", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "l.gz", np.array([3, 12], np.uint8))
    with pytest.raises(DataError, match="label 12, but the dataset has 10 classes"):
        read_image_label_pair(tmp_path / "i.gz", tmp_path / "l.gz", (28, 28), 10)
