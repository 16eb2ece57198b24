"""Train one network and track it in MLflow: ``denselab-train`` or ``python -m denselab.train``.

denselab-train data=fashion_mnist model.hidden_sizes=[256,128] optimizer=adam
denselab-train -m model.hidden_sizes=[],[128] seed=0,1     # a sweep: one run per job
denselab-train --cfg job                                    # print the composed config
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig

from denselab.config import check_set_keys, register_schemas, validate_config
from denselab.errors import DenselabError, UsageError
from denselab.overrides import command_line, set_keys
from denselab.sweeps import SWEEP_ENV
from denselab.tracking.signals import stop_on_signals

log = logging.getLogger("denselab")


@dataclass
class RunResult:
    """What a run made: its id and final metrics (``test/acc``, ``val/acc_best``, ...), and
    for a run trained in this process the trained LightningModule (best weights) and the
    datamodule (its splits loaded). What ``denselab.fit`` returns."""

    run_id: str
    metrics: dict[str, float]
    tracking_uri: str
    model: Any = None
    datamodule: Any = None
    output_dir: Optional[Path] = None
    overrides: tuple[str, ...] = field(default=())

    @property
    def model_uri(self) -> str:
        """The run's MLflow model (logged unless tracking.log_model=false)."""
        return f"runs:/{self.run_id}/model"

    def classifier(self):
        """The trained network as a :class:`~denselab.serving.classifier.Classifier`."""
        from denselab.serving.classifier import Classifier
        from denselab.serving.preprocessing import preprocessing_of

        return Classifier.from_module(self.model, preprocessing_of(self.datamodule))


def train(cfg: DictConfig, output_dir: Path, overrides: Sequence[str] = ()) -> RunResult:
    """Fit, test on the best checkpoint, and log everything to one MLflow run. Raises
    DenselabError for bad input; a run once created ends FINISHED, FAILED or KILLED."""
    with _failures_recorded(cfg, overrides):
        validate_config(cfg)  # before the imports that take seconds: it answers at once
        plan = _plan_run(cfg, overrides, output_dir)
    if plan.finished is not None:
        return _reused(plan)
    # Here, not at the top: Lightning and MLflow take seconds to import, and `--cfg job`,
    # `--help` and config errors answer at once.
    from denselab.reporting.callbacks import figure_callbacks
    from denselab.reporting.evaluation import Evaluator
    from denselab.reporting.results import report_run
    from denselab.serving.mlflow_model import log_run_model
    from denselab.tracking.params import log_run_settings
    from denselab.training import trainer as build
    from denselab.training.module import count_parameters
    from denselab.training.threads import apply_threads

    cfg, data = plan.cfg, plan.data
    with plan.open() as run:
        model = build.build_model(cfg, data)
        threads = apply_threads(cfg.threads, model.layer_widths, cfg.data.batch_size)
        evaluator = Evaluator(model, data)
        checkpoint = build.build_checkpoint(cfg, plan.checkpoint_dir)
        callbacks = figure_callbacks(cfg.get("callbacks"), run, evaluator) + plan.callbacks()
        trainer = build.build_trainer(cfg, run, checkpoint, callbacks, output_dir)
        parameters = count_parameters(model)
        log_run_settings(run, cfg, parameters, data.input_shape, threads, plan.resume is not None)
        run.datasets(data)
        log.info("%s: %s parameters", plan.run_name, f"{parameters:,}")
        trainer.fit(model, datamodule=data, ckpt_path=plan.checkpoint)
        build.evaluate_best(trainer, model, data, checkpoint)
        if trainer.is_global_zero:
            if cfg.tracking.log_model:
                log_run_model(run, evaluator, cfg.tracking.register_as)
            kept = checkpoint.best_model_path if cfg.tracking.log_checkpoint else ""
            report_run(run, evaluator, kept)
    plan.record_trial(run.run_id)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["val/acc_best"] = float(model.val_acc_best)  # of the best checkpoint, restored
    return RunResult(run.run_id, metrics, run.tracking_uri, model, data, output_dir, plan.overrides)


@contextlib.contextmanager
def _failures_recorded(cfg: DictConfig, overrides: Sequence[str]) -> Iterator[None]:
    """In a sweep, a job that fails before its run exists (a swept value out of range, data
    that does not load) is recorded as a FAILED child of the sweep, which lists it."""
    try:
        yield
    except DenselabError as err:
        if os.environ.get(SWEEP_ENV):
            from denselab.sweeps.job import record_failed_job  # MLflow: a failed job only

            record_failed_job(cfg, overrides, err)
        raise


def _plan_run(cfg: DictConfig, overrides: Sequence[str], output_dir: Path):
    """Which run this is: :func:`denselab.plan.plan_run`, imported once the config is good."""
    from denselab.plan import plan_run

    return plan_run(cfg, overrides, output_dir)


def _reused(plan) -> RunResult:
    """A sweep job whose config and data FINISHED already: counted in this sweep, not run."""
    done = plan.finished
    plan.job.reuse(done)
    plan.record_trial(done.info.run_id)
    log.info(
        "Skipped: the same config and data FINISHED as run %s (%s); "
        "tracking.skip_finished=false runs it again",
        done.info.run_id,
        done.info.run_name,
    )
    metrics = dict(done.data.metrics)
    return RunResult(done.info.run_id, metrics, plan.store.uri, output_dir=plan.output_dir)


def _route_lightning_logs_through_hydra() -> None:
    # Lightning gives its loggers their own handler when imported before logging is set
    # up; without this its messages miss the job's log file.
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        lightning_log = logging.getLogger(name)
        lightning_log.handlers.clear()
        lightning_log.propagate = True


register_schemas()


@hydra.main(version_base="1.3", config_path="pkg://denselab.conf", config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    _route_lightning_logs_through_hydra()
    hydra_cfg = HydraConfig.get()
    try:
        with stop_on_signals():
            result = train(cfg, Path(hydra_cfg.runtime.output_dir), hydra_cfg.overrides.task)
    except DenselabError as err:
        log.error(str(err))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job, runs the others, and exits 1 at the end
        sys.exit(1)
    # What a Hydra sweeper (e.g. Optuna) optimises: a validation score, so that a search never
    # tunes on the test set.
    return result.metrics.get("val/acc_best")


def cli() -> None:
    """``denselab-train`` and ``python -m denselab.train``: Hydra's main, after a typo in a key
    the config must have has been named, with the key meant (Hydra's own answer, "use
    +key=...", leads to a worse one)."""
    try:
        keys = set_keys(command_line(sys.argv[1:]))
    except OverrideParseException:
        keys = []  # overrides Hydra cannot read: it says why itself
    try:
        check_set_keys(keys)
        check_output_folder(sys.argv[1:])
    except DenselabError as err:
        print(err, file=sys.stderr)
        sys.exit(1)
    main()


# Arguments after which Hydra writes no output folder (it prints, or a folder is named).
_NO_DEFAULT_FOLDER = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i",
                      "--shell-completion", "-sc", "hydra.run.dir=", "hydra.sweep.dir=")


def check_output_folder(argv: Sequence[str]) -> None:
    """Refuse, in one sentence, a run whose output folder (./outputs, ./multirun) cannot be
    written, before Hydra fails to make it with a traceback; leaves nothing behind."""
    if any(a.startswith(_NO_DEFAULT_FOLDER) for a in argv):
        return
    folder = Path.cwd() / ("multirun" if {"-m", "--multirun"} & set(argv) else "outputs")
    try:
        made = not folder.exists()
        folder.mkdir(exist_ok=True)
        probe = folder / f".denselab-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
        if made:
            folder.rmdir()
    except OSError as err:
        why = os.strerror(err.errno) if err.errno else str(err)
        key = "hydra.sweep.dir" if folder.name == "multirun" else "hydra.run.dir"
        raise UsageError(
            f"The run's output folder {folder} cannot be written ({why}): start denselab-train "
            f"from a folder you can write, or name one with {key}=<folder>."
        ) from None


if __name__ == "__main__":
    cli()
