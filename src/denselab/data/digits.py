"""scikit-learn's 8x8 handwritten digits: 1,797 images bundled with the library, offline."""

from __future__ import annotations

import numpy as np

from denselab.data.base import ImageDataModule, split_indices

# The test split must not move with the run's seed: every run is scored on the same images.
TEST_SPLIT_SEED = 0


class DigitsDataModule(ImageDataModule):
    name = "digits"
    class_names = tuple(str(d) for d in range(10))

    def __init__(self, test_fraction: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.test_fraction = test_fraction

    def source(self) -> tuple[str, str]:
        return "code", "sklearn.datasets.load_digits"

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images / 16.0).astype(np.float32)  # pixel values are 0..16
        labels = digits.target.astype(np.int64)
        train_idx, test_idx = split_indices(len(labels), self.test_fraction, TEST_SPLIT_SEED)
        return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]
