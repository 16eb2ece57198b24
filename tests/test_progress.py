"""The progress bar redraws by the clock, not after every batch."""

from __future__ import annotations

import pytorch_lightning as pl
from omegaconf import OmegaConf

from denselab import progress
from denselab.progress import TimedProgressBar, progress_bars


def test_redraws_at_most_once_an_interval_and_always_at_the_end(monkeypatch):
    clock = iter([100.0, 100.05, 100.1, 100.25, 100.26, 100.27])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = TimedProgressBar(interval=0.2)
    bar._enabled = True
    # first batch draws; then nothing until 0.2 s passed; the last batch always draws
    draws = [bar._should_update(n, 1000) for n in (1, 2, 3, 4, 5)]
    assert draws == [True, False, False, True, False]
    assert bar._should_update(1000, 1000)


def test_disabled_bar_never_draws():
    bar = TimedProgressBar()
    bar.disable()
    assert not bar._should_update(10, 10)


def test_the_trainer_uses_the_timed_bar_only_when_bars_are_on():
    on = OmegaConf.create({"enable_progress_bar": True})
    bars = progress_bars(on)
    trainer = pl.Trainer(callbacks=bars, enable_progress_bar=True, logger=False)
    assert trainer.progress_bar_callback is bars[0]
    assert progress_bars(OmegaConf.create({"enable_progress_bar": False})) == []
    pl.Trainer(callbacks=[], enable_progress_bar=False, logger=False)  # Lightning accepts it
