"""The terminal's progress bar redraws by the clock, not after every batch."""

from __future__ import annotations

import pytorch_lightning as pl

from denselab.training import console
from denselab.training.console import TimedProgressBar, progress_bars


def test_redraws_at_most_once_an_interval_and_always_at_the_end(monkeypatch):
    clock = iter([100.0, 100.05, 100.1, 100.25, 100.26, 100.27])
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
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


def test_a_terminal_gets_the_timed_bar(monkeypatch):
    monkeypatch.setattr(console.sys.stdout, "isatty", lambda: True)
    bars = progress_bars(True)
    assert isinstance(bars[0], TimedProgressBar)
    trainer = pl.Trainer(callbacks=bars, enable_progress_bar=True, logger=False)
    assert trainer.progress_bar_callback is bars[0]
