"""A group of callbacks answers, for Lightning, exactly the hooks its members override."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from denselab.training.callback_group import CallbackGroup
from denselab.training.callback_group import joined_by_kind as grouped
from denselab.training.divergence import DivergenceGuard


class Recorder(pl.Callback):
    """Records the hooks it overrides, with the members' order."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def on_train_epoch_end(self, trainer, pl_module):
        self.calls.append((self.name, "on_train_epoch_end"))

    def on_fit_end(self, trainer, pl_module):
        self.calls.append((self.name, "on_fit_end"))


class EveryStep(Recorder):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.calls.append((self.name, "on_train_batch_end"))


class Counted(pl.Callback):
    """A callback with state, kept in the checkpoint under its own key."""

    def __init__(self):
        self.count = 0

    @property
    def state_key(self):
        return "Counted"

    def on_train_epoch_end(self, trainer, pl_module):
        self.count += 1

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state_dict):
        self.count = state_dict["count"]


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(callbacks, epochs=2, ckpt_path=None):
    """A real fit of three one-image batches an epoch; returns the Trainer."""
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(3, 2)))
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Tiny(), data, ckpt_path=ckpt_path)
    return trainer


def test_the_group_calls_what_its_members_override_in_order_and_nothing_else():
    calls: list = []
    group = CallbackGroup([Recorder("a", calls), EveryStep("b", calls), Recorder("c", calls)])
    # hooks nobody overrides stay Lightning's no-ops: one cheap call, not three
    assert "on_before_backward" not in vars(group) and "on_train_batch_start" not in vars(group)
    fit([group])
    assert calls == [
        *[("b", "on_train_batch_end")] * 3,
        ("a", "on_train_epoch_end"),
        ("b", "on_train_epoch_end"),
        ("c", "on_train_epoch_end"),
        *[("b", "on_train_batch_end")] * 3,
        ("a", "on_train_epoch_end"),
        ("b", "on_train_epoch_end"),
        ("c", "on_train_epoch_end"),
        ("a", "on_fit_end"),
        ("b", "on_fit_end"),
        ("c", "on_fit_end"),
    ]


def test_members_state_goes_into_the_checkpoint_and_comes_back(tmp_path):
    counted = Counted()
    trainer = fit([CallbackGroup([counted, Recorder("a", [])])])
    path = tmp_path / "group.ckpt"
    trainer.save_checkpoint(path)
    restored = Counted()
    fit([CallbackGroup([restored, Recorder("a", [])])], epochs=3, ckpt_path=str(path))
    assert (counted.count, restored.count) == (2, 3)  # 2 from the checkpoint, 1 more epoch


def test_grouped_joins_one_kind_in_the_first_ones_place_and_leaves_the_rest():
    guard, calls = DivergenceGuard(), []
    a, b = Recorder("a", calls), Recorder("b", calls)
    made = grouped([guard, a, pl.Callback(), b], Recorder)
    assert made[0] is guard and isinstance(made[1], CallbackGroup) and len(made) == 3
    assert made[1].members == [a, b]
    assert grouped([guard, a], Recorder) == [guard, a]  # one alone is not worth a group
