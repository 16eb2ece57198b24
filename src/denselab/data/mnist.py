"""MNIST and Fashion-MNIST: four gzipped IDX files each, found on disk or downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from denselab.data.base import ImageDataModule
from denselab.data.download import fetch
from denselab.data.idx import read_image_label_pair


class IdxDataModule(ImageDataModule):
    """A dataset shipped as MNIST's four IDX files; subclasses list them with their MD5."""

    # (train images, train labels, test images, test labels): file name -> MD5 of the .gz
    resources: dict[str, str] = {}
    image_shape = (28, 28)

    def __init__(self, mirrors: Sequence[str] = (), system_dirs: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.mirrors = list(mirrors)
        self.system_dirs = list(system_dirs)
        self._paths: list[Path] = []

    def prepare_data(self) -> None:
        if not self._paths:
            found = fetch(self.resources, self.mirrors, Path(self.dir), self.system_dirs)
            self._paths = [found[name] for name in self.resources]

    def source(self) -> tuple[str, str]:
        if not self._paths:
            return super().source()
        return "local", ", ".join(str(p.resolve()) for p in self._paths)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        self.prepare_data()
        train_images, train_labels, test_images, test_labels = self._paths
        k = len(self.class_names)
        x_train, y_train = read_image_label_pair(train_images, train_labels, self.image_shape, k)
        x_test, y_test = read_image_label_pair(test_images, test_labels, self.image_shape, k)
        return x_train, y_train, x_test, y_test


class MNISTDataModule(IdxDataModule):
    name = "mnist"
    class_names = tuple(str(d) for d in range(10))
    resources = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }


class FashionMNISTDataModule(IdxDataModule):
    name = "fashion_mnist"
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )
    resources = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
