"""Images held as stored (uint8) and scaled per batch: the same numbers as scaling once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import write_image_table

from denselab.data.base import Split, TensorBatches, stored_pixels
from denselab.data.mnist import MNISTDataModule
from denselab.data.pixels import as_float
from denselab.train import train
from denselab.training.module import MLPClassifier


def test_as_float_scales_uint8_and_widens_floats():
    x = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
    assert as_float(x).dtype == torch.float32
    assert torch.equal(as_float(x), torch.tensor([0, 1, 128, 255], dtype=torch.float32) / 255.0)
    half = torch.tensor([0.25, 1.0], dtype=torch.float16)
    assert as_float(half).dtype == torch.float32 and as_float(half).tolist() == [0.25, 1.0]
    single = torch.rand(3)
    assert as_float(single) is single  # float32 passes without a copy


def test_stored_pixels_keeps_uint8_and_float32_without_copying():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    tensor = stored_pixels(pixels)
    assert tensor.dtype == torch.uint8 and tensor.data_ptr() == pixels.ctypes.data
    assert stored_pixels(np.zeros((2, 2), np.float64)).dtype == torch.float32
    read_only = np.frombuffer(bytes(range(8)), dtype=np.uint8).reshape(2, 4)
    assert stored_pixels(read_only).tolist() == read_only.tolist()  # copied: torch may write


def test_splits_hold_uint8_and_batches_are_the_old_floats(mnist_dir):
    dm = MNISTDataModule(dir=str(mnist_dir), seed=0)
    dm.setup()
    split = dm.splits["train"]
    assert split.x.dtype == torch.uint8
    old_floats = torch.tensor(split.x.numpy(), dtype=torch.float32).div_(255.0)  # as before
    shuffled = TensorBatches(split, batch_size=64, shuffle=True, seed=3)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(3))
    for (x, y), idx in zip(shuffled, order.split(64)):
        assert x.dtype == torch.float32 and torch.equal(x, old_floats[idx])
        assert torch.equal(y, split.y[idx])
    assert torch.equal(split.images(slice(5, 9)), old_floats[5:9])
    assert torch.equal(split.images(7), old_floats[7])


def test_predictions_scale_each_batch_like_the_training_batches():
    model = MLPClassifier(input_shape=(4, 4), num_classes=3)
    stored = torch.randint(0, 256, (50, 4, 4), dtype=torch.uint8)
    split = Split(stored, torch.randint(0, 3, (50,)))
    from_uint8 = model.predict_logits(split.x, batch_size=16)
    assert torch.equal(from_uint8, model.predict_logits(split.images(), batch_size=16))


# What main trained before images were held as uint8 (commit fe6e2e1, same overrides and
# seeds, recorded on this machine): holding them as stored must not move a metric.
BEFORE_UINT8 = {
    "mnist": {"test/loss": 0.8907, "test/acc": 1.0},
    "table": {"train/loss": 0.8721, "val/loss": 0.5569, "val/acc": 1.0},
}


@pytest.mark.slow
def test_fixture_runs_score_as_before_to_four_decimals(compose_cfg, mnist_dir, tmp_path):
    def run(name, overrides):
        common = [
            f"tracking.uri=sqlite:///{tmp_path / name / 'mlflow.db'}",
            "trainer.enable_progress_bar=false",
            "trainer.max_epochs=2",
            "callbacks=none",
        ]
        return train(compose_cfg([*overrides, *common]), tmp_path / name / "out").metrics

    mnist = run("mnist", [f"data.dir={mnist_dir}", "data.mirrors=[]", "seed=1"])
    write_image_table(tmp_path / "table_data")
    table = run("table", ["data=image_table", f"data.dir={tmp_path / 'table_data'}", "seed=3"])
    for name, metrics in (("mnist", mnist), ("table", table)):
        for key, before in BEFORE_UINT8[name].items():
            assert round(metrics[key], 4) == pytest.approx(before, abs=1e-12), (name, key)
