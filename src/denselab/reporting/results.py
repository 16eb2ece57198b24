"""The run's results once its weights are final: what they score on each split, their
predictions for hidden labels, the checkpoint they came from, the run's description, and
where to read it all."""

from __future__ import annotations

import logging

from denselab.reporting import artifacts as report
from denselab.reporting.artifacts import CURVE_METRICS
from denselab.reporting.evaluation import Evaluator
from denselab.tracking.logger import RunLogger
from denselab.tracking.runs import run_address
from denselab.training.module import count_parameters

log = logging.getLogger("denselab")


def report_run(run: RunLogger, evaluator: Evaluator, checkpoint_path: str = "") -> None:
    """Accuracy by split and the hidden-label predictions as tables, the checkpoint file
    (when ``checkpoint_path``), and the run's description; says where the run is."""
    table = evaluator.accuracy_by_split()
    run.table(table, "accuracy_by_split")
    predictions = evaluator.unlabeled_predictions()
    if predictions is not None:
        run.table(predictions, "predictions_unlabeled")
        log.info("Predicted %s images with hidden labels", f"{len(predictions):,}")
    if checkpoint_path:
        run.file(checkpoint_path, "checkpoints")
    scored = evaluator.evaluation(evaluator.splits[-1])  # test, where the data has one
    history = run.history(CURVE_METRICS)
    parameters = count_parameters(evaluator.model)
    run.describe(
        report.run_description(
            table, scored, history, run.figure_paths, parameters, run.description_notes
        )
    )
    log.info("Accuracy by split (best checkpoint):\n%s", table.to_string(index=False))
    address = run_address(run.tracking_uri, run.experiment_id, run.run_id)
    log.info("The run in the MLflow UI: %s", address)
