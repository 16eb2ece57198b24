"""Several optimizer steps per Lightning batch (steps_per_batch): the same training as one
step per batch, bit for bit, and one step per batch wherever Lightning must see every step.

The fits here are denselab's own pieces (config from conf/, datamodule, module, Trainer and
its callbacks as a run builds them) on scikit-learn's digits, in this process, without a
store. End to end, tests/test_resume.py stops a run of the console script (chunks of 64
steps) with SIGTERM, resumes it, and compares every metric it logged with an uninterrupted
run of one step per batch.
"""

from __future__ import annotations

import copy
import logging

import pytest
import pytorch_lightning as pl
import torch

from denselab.data.base import Chunk, Split, TensorBatches
from denselab.errors import ConfigError, LossDiverged
from denselab.training import trainer as build
from denselab.training.checkpoint_files import STATE_KEY
from denselab.training.chunking import (
    MAX_STEPS_PER_BATCH,
    ChunkedEpoch,
    StepsPerBatch,
    auto_steps_per_batch,
)
from denselab.training.console import TimedProgressBar
from denselab.training.threads import step_macs

# 1,150 training images at 16 a batch: 72 mini-batches an epoch, the last one of 14 images;
# at k = 8, nine chunks an epoch. Dropout and batch norm: the RNG and running statistics
# must see the same sequence too.
DIGITS = [
    "data=digits",
    "data.batch_size=16",
    "callbacks=none",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "model.dropout=0.2",
    "model.batch_norm=true",
]
OPTIMIZERS = {
    "sgd-nesterov": ["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true"],
    "rmsprop": ["optimizer=rmsprop"],
    "adam": ["optimizer=adam"],
}


class EpochMetrics(pl.Callback):
    """What a run logs at each epoch's end: the metrics Lightning holds once the epoch is over
    (read at the next one's start, or the fit's end: the module logs its own after the
    callbacks' epoch-end hooks)."""

    def __init__(self):
        self.history: list[dict[str, float]] = []

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch:
            self.history.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    def on_fit_end(self, trainer, pl_module):
        self.history.append({k: float(v) for k, v in trainer.callback_metrics.items()})


class Fit:
    """One fit as a run builds it, with ``overrides`` on the digits settings."""

    def __init__(self, compose_cfg, folder, overrides, ckpt_path=None, data=None, callbacks=()):
        self.cfg = compose_cfg([*DIGITS, *overrides])
        pl.seed_everything(self.cfg.seed, workers=True, verbose=False)
        self.data = data or build.load_data(self.cfg)
        self.model = build.build_model(self.cfg, self.data)
        self.checkpoint = build.build_checkpoint(self.cfg, folder / "checkpoints")
        self.metrics = EpochMetrics()
        callbacks = [self.metrics, *callbacks]
        self.trainer = build.build_trainer(self.cfg, False, self.checkpoint, callbacks, folder)
        self.steps_per_batch = next(
            c for c in self.trainer.callbacks if isinstance(c, StepsPerBatch)
        )
        self.trainer.fit(self.model, datamodule=self.data, ckpt_path=ckpt_path)

    @property
    def last(self) -> dict:
        return torch.load(self.checkpoint.last_model_path, weights_only=False)


def comparable(checkpoint: dict) -> dict:
    """A checkpoint without what names its own folder (the checkpoint callback's paths)."""
    checkpoint = copy.copy(checkpoint)
    callbacks = dict(checkpoint.pop("callbacks"))
    for key, state in list(callbacks.items()):
        if key.startswith("RunCheckpoint"):
            state = dict(state)
            for name in ("dirpath", "best_model_path", "last_model_path", "kth_best_model_path"):
                state.pop(name, None)
            state["best_k_models"] = sorted(state["best_k_models"].values())
            callbacks[key] = state
    checkpoint["callbacks"] = callbacks
    return checkpoint


def assert_same(a, b, path: str = "checkpoint") -> None:
    """Equal bit for bit: tensors with torch.equal, everything else with ==."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: {sorted(set(a) ^ set(b))}"
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_eight_steps_per_batch_train_exactly_as_one(compose_cfg, tmp_path, optimizer):
    settings = ["trainer.max_epochs=1", *OPTIMIZERS[optimizer]]
    single = Fit(compose_cfg, tmp_path / "1", [*settings, "steps_per_batch=1"])
    chunked = Fit(compose_cfg, tmp_path / "8", [*settings, "steps_per_batch=8"])
    assert single.steps_per_batch.chosen == 1 and chunked.steps_per_batch.chosen == 8

    assert_same(dict(single.model.state_dict()), dict(chunked.model.state_dict()), "weights")
    assert single.metrics.history == chunked.metrics.history  # the epoch's metrics, exactly
    assert {"train/loss", "train/acc", "val/acc"} <= set(single.metrics.history[0])
    assert single.trainer.global_step == chunked.trainer.global_step == 72
    assert_same(comparable(single.last), comparable(chunked.last))
    print(optimizer, single.metrics.history[-1])


def test_a_chunk_takes_its_mini_batches_in_the_loaders_order():
    split = Split(torch.arange(10).reshape(10, 1, 1).to(torch.uint8), torch.arange(10))
    single = TensorBatches(split, 3, shuffle=True, seed=7)
    chunked = TensorBatches(split, 3, shuffle=True, seed=7, steps_per_batch=3)
    assert (len(single), single.steps, len(chunked), chunked.steps) == (4, 4, 2, 4)
    for _ in range(2):  # two epochs: each draws its own order from the same generator
        batches = [y.tolist() for _, y in single]
        chunks = list(chunked)
        assert all(isinstance(c, Chunk) for c in chunks)
        assert [len(c) for c in chunks] == [3, 1] and [c.end for c in chunks] == [3, 4]
        assert [y.tolist() for chunk in chunks for _, y in chunk] == batches


def test_a_divergence_inside_a_chunk_names_its_exact_step(compose_cfg, tmp_path):
    messages = {}
    for k in (1, 8):
        data = build.load_data(compose_cfg(DIGITS))
        with pytest.raises(LossDiverged) as stopped:
            settings = [f"steps_per_batch={k}", "optimizer.lr=1e5"]
            Fit(compose_cfg, tmp_path / str(k), settings, data=data)
        messages[k] = str(stopped.value)
        assert data.steps_per_batch == 1  # a failed fit leaves the data as it found it
    assert messages[1] == messages[8], messages
    step = int(messages[1].split("step ")[1].split(",")[0].split(" ")[0])
    assert step % 8 != 0  # not a chunk's last step: named from inside the chunk
    print(messages[8])


class Killed(Exception):
    pass


def _stopping_loader(data, epoch: int, after: int):
    """Stands in for a kill in the middle of an epoch: the training loader of ``data``
    raises after ``after`` Lightning batches of epoch ``epoch``."""
    original = data.train_dataloader

    def train_dataloader():
        loader = original()

        class Stopping:
            def __len__(self):
                return len(loader)

            def __getattr__(self, name):
                return getattr(loader, name)

            def __iter__(self):
                for i, batch in enumerate(loader):
                    if data.trainer.current_epoch == epoch and i == after:
                        raise Killed("killed mid-epoch")
                    yield batch

        return Stopping()

    data.train_dataloader = train_dataloader


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (1, 8),  # a checkpoint of one step per batch (an older denselab's) continued in chunks
        pytest.param(8, 1, marks=pytest.mark.slow),  # and back
    ],
)
def test_a_run_stopped_mid_epoch_resumes_to_the_same_result(compose_cfg, tmp_path, before, after):
    epochs = ["trainer.max_epochs=3"]
    straight = Fit(compose_cfg, tmp_path / "straight", [*epochs, "steps_per_batch=8"])

    cfg = compose_cfg([*DIGITS, *epochs])
    data = build.load_data(cfg)
    _stopping_loader(data, epoch=2, after=3)
    stopped_folder = tmp_path / "stopped"
    with pytest.raises(Killed):
        Fit(compose_cfg, stopped_folder, [*epochs, f"steps_per_batch={before}"], data=data)
    last = stopped_folder / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1  # the last whole epoch: 0-based

    # As denselab-train resume=... does: a fresh process, the same seed, from last.ckpt.
    resumed = Fit(
        compose_cfg, tmp_path / "resumed", [*epochs, f"steps_per_batch={after}"], ckpt_path=last
    )
    assert resumed.trainer.global_step == straight.trainer.global_step == 3 * 72
    assert_same(dict(straight.model.state_dict()), dict(resumed.model.state_dict()), "weights")
    assert straight.metrics.history[-1] == resumed.metrics.history[-1]
    assert_same(comparable(straight.last), comparable(resumed.last))


# -- when Lightning must see every step ---------------------------------------------------------


EVERY_STEP = {
    "gradient_clip_val": (["+trainer.gradient_clip_val=1.0"], "trainer.gradient_clip_val clips"),
    "accumulate": (["+trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches"),
    "max_steps": (["+trainer.max_steps=100"], "trainer.max_steps counts steps"),
    "limit_fraction": (["+trainer.limit_train_batches=0.5"], "trainer.limit_train_batches"),
    "limit_count": (["+trainer.limit_train_batches=1"], "trainer.limit_train_batches counts"),
    "val_check": (["+trainer.val_check_interval=0.5"], "trainer.val_check_interval validates"),
    "precision": (["+trainer.precision=64-true"], "trainer.precision=64-true casts or scales"),
    "profiler": (["+trainer.profiler=simple"], "a profiler times every step"),
    "step_checkpoints": (["+checkpoint.every_n_train_steps=10"], "checkpoint.every_n_train_steps"),
    "max_time": (["+trainer.max_time=00:01:00:00"], "callback Timer acts at every step"),
    "users_callback": ([], "callback StepCounter acts at every step"),
}


@pytest.mark.parametrize(("overrides", "reason"), EVERY_STEP.values(), ids=EVERY_STEP.keys())
def test_settings_that_act_at_every_step_train_one_step_per_batch_and_say_so(
    compose_cfg, tmp_path, caplog, overrides, reason
):
    class StepCounter(pl.Callback):  # a user's callback that counts batches
        def on_train_batch_end(self, *args):
            pass

    caplog.set_level(logging.INFO, logger="denselab")
    epochs = ["trainer.max_epochs=0", "steps_per_batch=8"]  # k is chosen as the fit starts
    mine = [] if overrides else [StepCounter()]
    fit = Fit(compose_cfg, tmp_path, [*epochs, *overrides], callbacks=mine)
    assert fit.steps_per_batch.chosen == 1 and fit.model.automatic_optimization
    said = [r.getMessage() for r in caplog.records if "optimizer step" in r.getMessage()]
    assert len(said) == 1 and reason in said[0], said
    assert "as steps_per_batch=8 cannot take more here" in said[0]


def test_a_datamodule_with_a_loader_of_its_own_trains_one_step_per_batch(
    compose_cfg, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="denselab")
    data = build.load_data(compose_cfg(DIGITS))
    train = data.splits["train"]
    dataset = torch.utils.data.TensorDataset(train.images(), train.y)
    data.train_dataloader = lambda: torch.utils.data.DataLoader(dataset, batch_size=16)
    fit = Fit(compose_cfg, tmp_path, ["trainer.max_epochs=1"], data=data)
    assert fit.steps_per_batch.chosen == 1 and fit.trainer.global_step == 72
    assert "do not come from a denselab datamodule's loader" in caplog.text


def test_a_module_with_a_training_step_of_its_own_trains_one_step_per_batch(
    compose_cfg, tmp_path, caplog, monkeypatch
):
    from denselab.training.module import MLPClassifier

    class Mine(MLPClassifier):  # e.g. a user's extension that logs each step
        def training_step(self, batch, batch_idx):
            x, y = batch
            return super().training_step((x, y), batch_idx)

    caplog.set_level(logging.INFO, logger="denselab")
    real_build = build.build_model

    def build_mine(cfg, data):
        model = real_build(cfg, data)
        return Mine(**model.hparams, optimizer=model.optimizer_factory)

    monkeypatch.setattr(build, "build_model", build_mine)
    fit = Fit(compose_cfg, tmp_path, ["trainer.max_epochs=1"])
    assert fit.steps_per_batch.chosen == 1 and fit.trainer.global_step == 72
    assert "the module's training_step takes one mini-batch at a time" in caplog.text


def test_auto_makes_chunks_where_lightnings_cost_matters_and_none_where_it_does_not():
    course = step_macs([784, 128, 10], 32)  # 3.3 million multiply-adds a step
    assert auto_steps_per_batch(course, "cpu") == MAX_STEPS_PER_BATCH
    assert 8 <= auto_steps_per_batch(step_macs([784, 128, 10], 128), "cpu") < MAX_STEPS_PER_BATCH
    flowers = step_macs([64 * 64 * 3, 1024, 1024, 17], 32)  # a step is long already
    assert auto_steps_per_batch(flowers, "cpu") == 1
    assert auto_steps_per_batch(course, "cuda") == 1  # not measured on a GPU yet


@pytest.mark.parametrize("value", [0, -2, "fast", 2.5, True])
def test_a_bad_steps_per_batch_is_refused_in_one_sentence(compose_cfg, value):
    from denselab.config import validate_config

    with pytest.raises(ConfigError, match="steps_per_batch must be auto or a positive number"):
        validate_config(compose_cfg([f"steps_per_batch={value}"]))


def test_steps_per_batch_is_not_part_of_what_a_run_is(compose_cfg):
    from denselab.tracking.params import config_hash
    from denselab.tracking.resume import may_change

    hashes = {config_hash(compose_cfg([f"steps_per_batch={k}"]), "d") for k in ("auto", 1, 8)}
    assert len(hashes) == 1  # a sweep over it reuses the first run: the result is the same
    assert may_change("steps_per_batch")  # and a resumed run may train with another k


def test_a_run_from_before_steps_per_batch_resumes_with_this_commands_setting(compose_cfg):
    from omegaconf import OmegaConf

    from denselab.tracking.resume import merged_config

    logged = OmegaConf.to_container(compose_cfg(["data=digits"]), resolve=True)
    del logged["steps_per_batch"]  # a config.yaml logged before the setting existed
    for overrides, expected in ([], "auto"), (["steps_per_batch=4"], 4):
        command = ["resume=0123", *overrides]
        merged = merged_config(OmegaConf.create(logged), compose_cfg(command), command)
        assert merged.steps_per_batch == expected


# -- what a user sees -----------------------------------------------------------------------------


def test_the_progress_bar_counts_mini_batches(compose_cfg, tmp_path, monkeypatch):
    seen = []

    class Watched(TimedProgressBar):
        def on_train_epoch_end(self, trainer, pl_module):
            seen.append((self.train_progress_bar.n, self.train_progress_bar.total))
            super().on_train_epoch_end(trainer, pl_module)

    monkeypatch.setattr(build, "progress_bars", lambda enabled: [Watched()])
    for k in (1, 8):
        shown = ["trainer.enable_progress_bar=true", "trainer.max_epochs=1"]
        Fit(compose_cfg, tmp_path / str(k), [*shown, f"steps_per_batch={k}"])
    assert seen == [(72, 72), (72, 72)]


def test_checkpoint_counts_convert_both_ways():
    epoch = ChunkedEpoch(k=8, steps=72)  # 9 chunks, the last of 8 mini-batches
    assert [epoch.steps_of(c) for c in (0, 1, 9, 10, 18)] == [0, 8, 72, 80, 144]
    assert [epoch.chunks_of(s) for s in (0, 8, 72, 80, 144)] == [0, 1, 9, 10, 18]
    partial = ChunkedEpoch(k=5, steps=72)  # 15 chunks, the last of 2
    assert partial.steps_of(15) == 72 and partial.chunks_of(72) == 15
    assert partial.steps_of(14) == 70 and partial.chunks_of(70) == 14


def test_a_run_state_carries_no_trace_of_k(compose_cfg, tmp_path):
    fit = Fit(compose_cfg, tmp_path, ["trainer.max_epochs=1", "steps_per_batch=8"])
    last = fit.last
    assert STATE_KEY in last and "StepsPerBatch" not in str(last["callbacks"].keys())
    loops = last["loops"]["fit_loop"]
    manual = loops["epoch_loop.manual_optimization.optim_step_progress"]["total"]
    steps = loops["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]["step"]
    assert manual["completed"] == 0 and steps["total"]["completed"] == last["global_step"] == 72
    # after the fit the module steps through Lightning again, as a plain Trainer expects
    assert fit.model.automatic_optimization and fit.data.steps_per_batch == 1
