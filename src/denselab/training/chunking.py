"""Several optimizer steps per Lightning batch (setting ``steps_per_batch``).

Lightning pays a fixed cost for every batch it runs: hooks on every callback, the closure,
progress and result bookkeeping, about 0.3 ms on a CPU. For the course's small networks that
is a third of a training step, and on a GPU, where a step of a 784-128-10 network is
microseconds of arithmetic, it is most of it. With ``steps_per_batch`` k > 1 the training
loader hands Lightning chunks of k consecutive mini-batches of the epoch's order
(:class:`denselab.data.base.Chunk`) and the module takes one optimizer step per mini-batch
inside one ``training_step`` (Lightning's manual optimization), so Lightning's cost is paid
once per k steps. The updates are exactly those of k = 1: the same mini-batches in the same
order, the same arithmetic (``tests/test_chunking.py`` compares weights, metrics and
checkpoints bit for bit).

The module steps the torch optimizer itself, not Lightning's wrapper around it, which runs
hooks and precision code at every step. So chunks are used only where all of that does
nothing, and everything Lightning does per batch would mean the same per chunk:
:func:`single_step_reasons` lists what needs Lightning to see every step (gradient clipping
or accumulation, a learning-rate scheduler, ``max_steps``, checkpoints every n steps,
validation inside an epoch, several devices, another precision, a callback acting at every
step, ...). Where one applies, the run trains one step per Lightning batch and says why in
its log: the training is the same either way, only its speed differs.

What a user sees does not change with k: the progress bar counts mini-batches, the
divergence guard names the exact step, and checkpoints are written as k = 1 writes them
(the loops' progress in mini-batches and optimizer steps), so a run resumes under any k.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.loops.loop import _Loop
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy

from denselab.data.base import TensorBatches
from denselab.training.threads import step_macs

log = logging.getLogger("denselab")

AUTO = "auto"
# The largest chunk "auto" picks: on the course's network at batch 32 Lightning's share of
# a step is then under 1 %, and a chunk takes ~60 ms on one CPU thread, well inside the
# progress bar's 0.2 s redraw.
MAX_STEPS_PER_BATCH = 64
# What "auto" aims a chunk's forward passes at, in multiply-adds (images x weights):
# Lightning's per-batch cost is then a few percent of the chunk's time on one CPU thread
# (bench/epoch.py). Larger networks get smaller chunks; they gain little from chunks anyway.
AUTO_CHUNK_WORK = 2**28

# Hooks Lightning calls at every step, on callbacks and on the module. A chunk calls none
# of them for its steps: anything that acts there needs one step per Lightning batch.
STEP_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)
MODULE_STEP_HOOKS = (*STEP_HOOKS, "optimizer_step", "optimizer_zero_grad", "backward")


def auto_steps_per_batch(macs_per_step: int, accelerator: str) -> int:
    """How many mini-batches "auto" puts in a chunk: on a CPU enough that a chunk's work
    reaches AUTO_CHUNK_WORK multiply-adds. On an accelerator, one: chunks train the same
    there, but their speed has not been measured on one yet (steps_per_batch=N asks)."""
    if accelerator != "cpu":
        return 1
    return max(1, min(MAX_STEPS_PER_BATCH, math.ceil(AUTO_CHUNK_WORK / max(1, macs_per_step))))


def _overrides(obj: Any, hook: str, base: type) -> bool:
    # An instance attribute counts too: a CallbackGroup answers its members' hooks so.
    return hook in vars(obj) or getattr(type(obj), hook, None) is not getattr(base, hook, None)


def _whole(fraction: Any) -> bool:
    # 1.0 is all of an epoch; the integer 1 is one batch.
    return fraction is None or (isinstance(fraction, float) and fraction == 1.0)


def _trainer_reasons(trainer: pl.Trainer) -> list[str]:
    checks = [
        (
            trainer.world_size > 1 or not isinstance(trainer.strategy, SingleDeviceStrategy),
            "it runs on several devices or a distributed strategy, which reduce gradients at "
            "every step through Lightning",
        ),
        (
            str(trainer.precision) not in ("32-true", "32"),
            f"trainer.precision={trainer.precision} casts or scales at every step",
        ),
        (trainer.gradient_clip_val not in (None, 0), "trainer.gradient_clip_val clips every step"),
        (
            trainer.accumulate_grad_batches != 1,
            "trainer.accumulate_grad_batches counts Lightning batches",
        ),
        (trainer.max_steps not in (None, -1), "trainer.max_steps counts steps"),
        (trainer.min_steps not in (None, -1, 0), "trainer.min_steps counts steps"),
        (
            not _whole(trainer.limit_train_batches),
            "trainer.limit_train_batches counts Lightning batches",
        ),
        (
            not _whole(trainer.val_check_interval) or trainer.check_val_every_n_epoch is None,
            "trainer.val_check_interval validates inside an epoch",
        ),
        (bool(trainer.overfit_batches), "trainer.overfit_batches counts Lightning batches"),
        (bool(trainer.fast_dev_run), "trainer.fast_dev_run counts Lightning batches"),
        (not isinstance(trainer.profiler, PassThroughProfiler), "a profiler times every step"),
        (len(trainer.optimizers) != 1, "the module has several optimizers"),
        (bool(trainer.lr_scheduler_configs), "a learning-rate scheduler steps through Lightning"),
    ]
    return [reason for applies, reason in checks if applies]


def single_step_reasons(trainer: pl.Trainer, module: pl.LightningModule) -> list[str]:
    """Why this fit needs Lightning to see every optimizer step; empty: chunks are exact."""
    reasons = _trainer_reasons(trainer)
    for callback in trainer.callbacks:
        why = getattr(callback, "single_step_reason", None)
        if callable(why):  # a denselab callback that knows chunks says when it cannot
            reason = why()
        else:
            hooks = [h for h in STEP_HOOKS if _overrides(callback, h, pl.Callback)]
            reason = f"callback {type(callback).__name__} acts at every step" if hooks else None
        if reason:
            reasons.append(reason)
    hooks = [h for h in MODULE_STEP_HOOKS if _overrides(module, h, pl.LightningModule)]
    if hooks:
        reasons.append(f"the module overrides {', '.join(hooks)}")
    if not getattr(type(module).training_step, "takes_chunks", False):
        reasons.append("the module's training_step takes one mini-batch at a time")
    return reasons


def training_batches(trainer: pl.Trainer) -> Optional[TensorBatches]:
    """The fit's training loader, if it is denselab's own (which can cut chunks)."""
    data = trainer.datamodule
    if data is None or not hasattr(data, "steps_per_batch"):
        return None
    loader = data.train_dataloader()
    return loader if isinstance(loader, TensorBatches) else None


def choose_steps_per_batch(
    setting: Any, trainer: pl.Trainer, module: pl.LightningModule
) -> tuple[int, list[str]]:
    """(k, the reasons k is 1 though more were asked for) for ``setting``: "auto" or a count."""
    if setting != AUTO and int(setting) == 1:
        return 1, []
    loader = training_batches(trainer)
    if loader is None:
        return 1, ["its training batches do not come from a denselab datamodule's loader"]
    if setting == AUTO:
        widths = getattr(module, "layer_widths", None)  # denselab's MLP; else count weights
        batch = loader.batch_size
        macs = step_macs(widths, batch) if widths else batch * _weights(module)
        asked = auto_steps_per_batch(macs, trainer.strategy.root_device.type)
        if asked == 1:
            return 1, []
    else:
        asked = int(setting)
    reasons = single_step_reasons(trainer, module)
    return (1, reasons) if reasons else (asked, [])


def _weights(module: pl.LightningModule) -> int:
    return sum(p.numel() for p in module.parameters())


def count_optimizer_steps(trainer: pl.Trainer, n: int) -> None:
    """Count ``n`` optimizer steps a chunk took as Lightning's wrapper counts each one:
    ``trainer.global_step`` is the manual-optimization step count."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    for tracker in (progress.total, progress.current):
        tracker.ready += n
        tracker.completed += n


class StepsPerBatch(pl.Callback):
    """Decides k for a fit (:func:`choose_steps_per_batch`) and applies it to the module and
    the datamodule, once the Trainer has set up its optimizers and strategy and before the
    training loader is made. Checkpoints, and the Trainer once the fit is over, hold the
    loops' progress as k = 1 would (:meth:`ChunkedEpoch.to_steps`)."""

    def __init__(self, setting: Any = AUTO):
        self.setting = setting
        self.k = 1
        self.chosen: Optional[int] = None  # the k of the last fit, kept after it
        self._epoch: Optional[ChunkedEpoch] = None
        self._loaded: Optional[dict] = None  # a checkpoint being restored, loops not yet

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = trainer.datamodule
        self.k, reasons = choose_steps_per_batch(self.setting, trainer, pl_module)
        self.chosen = self.k
        if reasons:
            log.info(
                "Training takes 1 optimizer step per Lightning batch, as steps_per_batch=%s "
                "cannot take more here: %s.",
                self.setting,
                "; ".join(reasons),
            )
        else:
            log.info(
                "Training takes %d optimizer step%s per Lightning batch (steps_per_batch=%s).",
                self.k,
                "s" if self.k > 1 else "",
                self.setting,
            )
        if self.k > 1:
            pl_module.automatic_optimization = False
            data.steps_per_batch = self.k
            self._epoch = ChunkedEpoch(self.k, data.train_dataloader().steps)
            if self._loaded is not None:
                self._epoch.to_chunks(self._loaded["loops"]["fit_loop"])
        self._loaded = None

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # Lightning restores the loops after on_fit_start, from this same dict.
        if "fit_loop" in checkpoint.get("loops", {}):
            self._loaded = checkpoint

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self._epoch is not None and "fit_loop" in checkpoint.get("loops", {}):
            self._epoch.to_steps(checkpoint["loops"]["fit_loop"])

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._step_by_step(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._step_by_step(trainer, pl_module)  # Lightning skips teardown after an exception

    def _step_by_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After the fit the module steps through Lightning again, the datamodule yields
        single mini-batches, and the Trainer counts as k = 1 counts (trainer.global_step
        reads the automatic optimization's count then)."""
        if self._epoch is None:
            return
        state = trainer.fit_loop.state_dict()
        self._epoch.to_steps(state)
        _set_progress(trainer.fit_loop, state)
        pl_module.automatic_optimization = True
        trainer.datamodule.steps_per_batch = 1
        self.k, self._epoch = 1, None


class ChunkedEpoch:
    """Counts of an epoch of ``steps`` mini-batches trained ``k`` at a time, converted
    between Lightning batches (chunks) and mini-batches (optimizer steps), for the fit
    loop's state: its batch progress, the batches the logger steps by, and the optimizer
    steps, which k = 1 counts in the automatic optimization's progress and chunks in the
    manual one's. Only whole epochs and whole chunks are ever saved."""

    BATCHES = "epoch_loop.batch_progress"
    STATE = "epoch_loop.state_dict"
    AUTOMATIC = "epoch_loop.automatic_optimization.optim_progress"
    MANUAL = "epoch_loop.manual_optimization.optim_step_progress"

    def __init__(self, k: int, steps: int):
        self.k, self.steps = k, max(1, steps)
        self.chunks = math.ceil(self.steps / k)

    def steps_of(self, chunks: int) -> int:
        epochs, rest = divmod(chunks, self.chunks)
        return epochs * self.steps + min(rest * self.k, self.steps)

    def chunks_of(self, steps: int) -> int:
        epochs, rest = divmod(steps, self.steps)
        return epochs * self.chunks + math.ceil(rest / self.k)

    def _convert(self, fit_loop: dict, count) -> None:
        for part in ("total", "current"):
            tracker = fit_loop[self.BATCHES][part]
            for name in tracker:
                tracker[name] = count(tracker[name])
        state = fit_loop.get(self.STATE, {})
        if "_batches_that_stepped" in state:
            state["_batches_that_stepped"] = count(state["_batches_that_stepped"])

    def to_steps(self, fit_loop: dict) -> None:
        """A chunked fit loop's state dict, in place, as k = 1 would have it."""
        self._convert(fit_loop, self.steps_of)
        taken = fit_loop[self.MANUAL]["total"]
        this_epoch = fit_loop[self.BATCHES]["current"]["completed"]
        ready, done = taken["ready"], taken["completed"]
        fit_loop[self.AUTOMATIC]["optimizer"] = {
            "step": {
                "total": {"ready": ready, "completed": done},
                "current": {"ready": this_epoch, "completed": this_epoch},
            },
            "zero_grad": {
                "total": {"ready": ready, "started": ready, "completed": done},
                "current": {"ready": this_epoch, "started": this_epoch, "completed": this_epoch},
            },
        }
        fit_loop[self.MANUAL] = _zero(fit_loop[self.MANUAL])

    def to_chunks(self, fit_loop: dict) -> None:
        """A fit loop's state dict as k = 1 has it, in place, as this chunked fit counts."""
        self._convert(fit_loop, self.chunks_of)
        optimizer = fit_loop[self.AUTOMATIC]["optimizer"]
        taken = dict(optimizer["step"]["total"])
        # The manual count is never reset between epochs: its current is its total.
        fit_loop[self.MANUAL] = {"total": dict(taken), "current": dict(taken)}
        fit_loop[self.AUTOMATIC]["optimizer"] = _zero(optimizer)


def _zero(tree: dict) -> dict:
    return {k: _zero(v) if isinstance(v, dict) else 0 for k, v in tree.items()}


def _set_progress(loop, state: dict, prefix: str = "") -> None:
    """Load the progress counts of ``state`` into ``loop`` and the loops under it, without
    marking them as restarting (what ``load_state_dict`` would)."""
    loop._load_from_state_dict(dict(state), prefix)
    for name, child in vars(loop).items():
        if isinstance(child, _Loop):
            _set_progress(child, state, f"{prefix}{name}.")
