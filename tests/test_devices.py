"""Several devices, one run: two CPU processes with Lightning's DDP (gloo), as on GPUs."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from conftest import only_run
from helpers import run_cli

from denselab.data.base import Split, TensorBatches
from denselab.data.digits import DigitsDataModule
from denselab.training.module import MLPClassifier

DIGITS_TRAIN = 1150  # digits: 1,797 images, 20 % test, 20 % of the rest validation


def test_ranks_share_one_permutation_and_as_many_batches():
    split = Split(torch.zeros(10, 2), torch.arange(10))
    ranks = [TensorBatches(split, 2, True, seed=3, rank=r, world_size=3) for r in range(3)]
    seen = [torch.cat([y for _, y in batches]) for batches in ranks]
    assert [len(s) for s in seen] == [4, 4, 4] and [len(b) for b in ranks] == [2, 2, 2]
    # Every image once per epoch across the ranks; two are repeated to even the ranks out.
    assert sorted(torch.bincount(torch.cat(seen)).tolist()) == [1] * 8 + [2] * 2
    # Validation and test: the whole split on every rank.
    whole = TensorBatches(split, 4, False, rank=1, world_size=3)
    assert torch.equal(torch.cat([y for _, y in whole]), torch.arange(10))


def _examples(batches) -> Counter:
    """How often each (image, label) occurs in ``batches``: an image given twice shows."""
    return Counter((x.numpy().tobytes(), int(y)) for xs, ys in batches for x, y in zip(xs, ys))


def test_each_rank_trains_on_its_own_half_of_the_training_split():
    # One data module per process, as under DDP: each sees only its own rank in the trainer.
    seen = []
    for rank in (0, 1):
        data = DigitsDataModule(dir="unused", seed=42)
        data.setup()
        data.trainer = SimpleNamespace(
            global_rank=rank,
            world_size=2,
            strategy=SimpleNamespace(root_device=torch.device("cpu")),
        )
        seen.append(_examples(data.train_dataloader()))
    whole = _examples([(data.splits["train"].images(), data.splits["train"].y)])
    assert whole.total() == DIGITS_TRAIN
    assert [half.total() for half in seen] == [DIGITS_TRAIN // 2] * 2
    assert not seen[0] & seen[1]  # no image trained on by both ranks
    assert seen[0] + seen[1] == whole  # and every image by one of them, once


@pytest.mark.slow
def test_two_processes_make_one_run_over_all_the_data(tmp_path):
    result = run_cli(
        [
            "data=digits",
            "trainer.max_epochs=2",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "trainer.enable_progress_bar=false",
            "callbacks.weight_images.every_n_epochs=1",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client, run = only_run(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "digits")
    assert run.info.status == "FINISHED"
    run_id = run.info.run_id

    # Each rank trained on half of the images: half the steps of one device.
    (last,) = tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)
    steps_one_device = -(-DIGITS_TRAIN // 32)
    assert state["global_step"] == 2 * -(-steps_one_device // 2)

    # val/acc is over the whole split: what one process makes of the same weights.
    model = MLPClassifier(input_shape=(8, 8), num_classes=10)
    model.load_state_dict(state["state_dict"])
    data = DigitsDataModule(dir="unused", seed=42)
    data.setup()
    val = data.splits["val"]
    accuracy = (model.predict_logits(val.x).argmax(dim=1) == val.y).float().mean().item()
    logged = client.get_metric_history(run_id, "val/acc")
    assert [m.step for m in logged] == [0, 1]
    assert logged[-1].value == pytest.approx(accuracy, abs=1e-6)

    # Figures and the image series written once, by rank zero.
    figures = [a.path for a in client.list_artifacts(run_id, "figures")]
    assert len(figures) == 7
    series = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    assert len(series) == 2, series


@pytest.mark.slow
def test_several_devices_inside_a_sweep_are_refused(tmp_path):
    result = run_cli(
        ["-m", "data=digits", "trainer.devices=2", "trainer.enable_progress_bar=false"], tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "would start the whole sweep again on every device" in output
    assert "Traceback" not in output
    assert not (tmp_path / "mlruns").exists()  # refused before anything was written
