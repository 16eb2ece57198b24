"""The promise behind every reported score: a run is tested, tabled and served on the weights
of its best epoch by val/acc, never its last. Checked against the truth, not against the
run's other parts: the scores are recomputed here from the checkpoint file alone, with a
forward pass written out in NumPy, on a run whose best epoch is not its last."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from conftest import only_run

from denselab.train import train

EPOCHS = 6
# Digits with SGD at lr 0.1: val/acc peaks at epoch 4 (0.965) and drops at epoch 5 (0.951),
# and the two epochs' weights score differently on the test split.
SETTINGS = ["data=digits", f"trainer.max_epochs={EPOCHS}", "optimizer.lr=0.1", "callbacks=none"]


def forward(state: dict, images: np.ndarray) -> np.ndarray:
    """Class scores of the dense ReLU network whose Linear layers ``state`` holds, in order."""
    layers = sorted(
        {key.rsplit(".", 1)[0] for key in state if key.endswith(".weight")},
        key=lambda name: int(name.rsplit(".", 1)[-1]),
    )
    x = images.reshape(len(images), -1).astype(np.float64)
    for i, layer in enumerate(layers):
        x = x @ state[f"{layer}.weight"].T + state[f"{layer}.bias"]
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def weights(path) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return {k: v.double().numpy() for k, v in checkpoint["state_dict"].items()}


def accuracy(state: dict, split) -> float:
    predicted = forward(state, split.images().numpy()).argmax(axis=1)
    return float((predicted == split.y.numpy()).mean())


@pytest.mark.slow  # a whole run, its model logged
def test_scores_table_and_model_are_the_best_epochs_recomputed_from_its_file(
    compose_cfg, store_uri, tmp_path
):
    cfg = compose_cfg([*SETTINGS, f"tracking.uri={store_uri}", "trainer.enable_progress_bar=false"])
    result = train(cfg, tmp_path / "out")
    client, run = only_run(store_uri, "digits")
    run_id = run.info.run_id
    history = sorted(client.get_metric_history(run_id, "val/acc"), key=lambda m: m.step)
    best_epoch = max(history, key=lambda m: (m.value, -m.step)).step
    assert best_epoch != EPOCHS - 1, "the run's best epoch must not be its last"

    folder = tmp_path / "out" / "checkpoints"
    best = weights(folder / f"best-epoch{best_epoch:02d}.ckpt")
    last = weights(folder / "last.ckpt")
    splits = result.datamodule.splits
    truth = {name: accuracy(best, split) for name, split in splits.items()}
    assert accuracy(last, splits["test"]) != truth["test"], "the epochs must score apart"

    metrics = run.data.metrics
    assert metrics["test/acc"] == pytest.approx(truth["test"], abs=1e-6)
    assert metrics["val/acc_best"] == pytest.approx(truth["val"], abs=1e-6)
    assert history[best_epoch].value == pytest.approx(truth["val"], abs=1e-6)

    table_file = client.download_artifacts(run_id, "tables/accuracy_by_split.json", str(tmp_path))
    table = json.loads(open(table_file).read())
    rows = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    for name, value in truth.items():
        assert rows[name]["accuracy"] == pytest.approx(value, abs=1e-6), name

    # The logged checkpoint is the best one, and the logged model predicts as its weights do.
    (logged,) = [a.path for a in client.list_artifacts(run_id, "checkpoints")]
    assert logged.endswith(f"best-epoch{best_epoch:02d}.ckpt")
    model = mlflow.pyfunc.load_model(client.download_artifacts(run_id, "model", str(tmp_path)))
    test = splits["test"]
    served = model.predict(test.x.numpy())["label"].to_numpy()
    np.testing.assert_array_equal(served, forward(best, test.images().numpy()).argmax(axis=1))
