"""Lightning's MLflow logger, with epochs as metric steps."""

from __future__ import annotations

from typing import Mapping, Optional

from pytorch_lightning.loggers import MLFlowLogger


class EpochMLFlowLogger(MLFlowLogger):
    """MLFlowLogger whose metric steps are epochs, so MLflow's charts read per epoch.

    Lightning adds the current ``epoch`` to every metrics dict it logs; it becomes the step.
    """

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        super().log_metrics(metrics, step=int(epoch) if epoch is not None else step)
