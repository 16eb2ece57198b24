"""DataModules: splits, scaling, and batches cut from whole-split tensors."""

from __future__ import annotations

import torch
from hydra.utils import instantiate

from denselab.data.base import Split, TensorBatches
from denselab.data.digits import DigitsDataModule
from denselab.data.mnist import FashionMNISTDataModule, MNISTDataModule


def test_mnist_splits_scaling_and_description(mnist_dir):
    dm = MNISTDataModule(dir=str(mnist_dir), val_fraction=0.2, seed=0)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 480, "val": 120, "test": 200}
    assert dm.input_shape == (28, 28) and dm.num_classes == 10
    assert list(dm.class_names) == [str(d) for d in range(10)]
    assert dm.splits["train"].x.dtype == torch.uint8  # held as stored
    x = dm.splits["train"].images()
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert dm.splits["train"].y.dtype == torch.int64


def test_validation_split_follows_the_seed(mnist_dir):
    def val_images(seed):
        dm = MNISTDataModule(dir=str(mnist_dir), seed=seed)
        dm.setup()
        return dm.splits["val"].x

    assert torch.equal(val_images(1), val_images(1))
    assert not torch.equal(val_images(1), val_images(2))


def test_composed_config_builds_the_datamodule(compose_cfg, mnist_dir):
    cfg = compose_cfg([f"data.dir={mnist_dir}", "data.val_fraction=0.25"])
    dm = instantiate(cfg.data)
    dm.setup()
    assert isinstance(dm, MNISTDataModule) and len(dm.splits["val"]) == 150


def test_fashion_mnist_uses_system_folder(mnist_dir, tmp_path):
    dm = FashionMNISTDataModule(dir=str(tmp_path / "none"), system_dirs=[str(mnist_dir)], seed=0)
    dm.setup()
    assert dm.class_names[0] == "T-shirt/top" and len(dm.splits["test"]) == 200
    assert not (tmp_path / "none").exists()  # nothing downloaded, nothing written


def test_digits_offline_with_a_fixed_test_set():
    a, b = DigitsDataModule(dir="unused", seed=0), DigitsDataModule(dir="unused", seed=1)
    a.setup(), b.setup()
    assert sum(len(s) for s in a.splits.values()) == 1797
    assert a.input_shape == (8, 8) and a.splits["train"].x.max() == 1.0
    assert torch.equal(a.splits["test"].x, b.splits["test"].x)
    assert not torch.equal(a.splits["val"].x, b.splits["val"].x)


def test_batches_cover_each_image_once_in_a_new_order_each_epoch():
    split = Split(torch.arange(10.0).reshape(10, 1), torch.arange(10))
    batches = TensorBatches(split, batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3
    epochs = [torch.cat([y for _, y in batches]) for _ in range(2)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(10))
    assert not torch.equal(epochs[0], epochs[1])
    for x, y in batches:  # images stay paired with their labels
        assert torch.equal(x[:, 0].long(), y)


def test_unshuffled_batches_keep_split_order():
    split = Split(torch.zeros(5, 2), torch.arange(5))
    ys = [y.tolist() for _, y in TensorBatches(split, batch_size=2, shuffle=False)]
    assert ys == [[0, 1], [2, 3], [4]]
