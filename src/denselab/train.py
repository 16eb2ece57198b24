"""Train one network and track it in MLflow: ``denselab-train`` or ``python -m denselab.train``.

denselab-train data=fashion_mnist model.hidden_sizes=[256,128] optimizer=adam
denselab-train -m model.hidden_sizes=[],[128] seed=0,1     # a sweep: one run per job
denselab-train --cfg job                                    # print the composed config
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from denselab.config import register_schemas, validate_config
from denselab.errors import DenselabError
from denselab.tracking.signals import stop_on_signals

log = logging.getLogger("denselab")


class RunResult(dict):
    """A run's final metrics (``test/acc``, ...), and what made them, for the Python API:
    ``run_id``, ``tracking_uri``, ``model`` (with the best weights) and ``datamodule``."""

    def __init__(self, metrics: dict, run_id: str, tracking_uri: str, model=None, datamodule=None):
        super().__init__(metrics)
        self.run_id, self.tracking_uri = run_id, tracking_uri
        self.model, self.datamodule = model, datamodule


def train(cfg: DictConfig, output_dir: Path, overrides: Sequence[str] = ()) -> RunResult:
    """Fit, test on the best checkpoint, and log everything to one MLflow run.

    Returns the final metrics (``test/acc``, ...). Raises DenselabError for bad input; the
    run, once created, always ends FINISHED, FAILED or KILLED.
    """
    validate_config(cfg)
    from denselab.tracking.resume import prepare_resume, refuse_other_data
    from denselab.sweeps.parent import config_hash, sweep_job

    job = sweep_job(cfg, overrides) if not cfg.get("resume") else None
    # Before the heavy imports, so that a resume that cannot be done is refused at once.
    resume = prepare_resume(cfg, overrides, output_dir)
    cfg = resume.cfg if resume else cfg
    # Imported here, not at the top: Lightning and MLflow take seconds to import, and
    # `--cfg job`, `--help` and config errors should answer at once.
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from denselab.training.callback_group import grouped
    from denselab.reporting.callbacks import RunCallback
    from denselab.training.checkpoints import AtomicCheckpointIO
    from denselab.training.console import progress_bars, quiet_third_party_notices
    from denselab.training.divergence import DivergenceGuard
    from denselab.reporting.evaluation import Evaluator, restore_weights
    from denselab.training.threads import apply_threads
    from denselab.training.devices import joined_run, share_run
    from denselab.tracking.runs import run_name, run_status, start_run, tracking_uri

    quiet_third_party_notices()
    _quiet_irrelevant_warnings()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # The data before the run: a job is its config and its data, and data that cannot be
    # loaded is a sentence, not a FAILED run.
    data = prepare_data(cfg)
    digest = data.content_digest()
    if resume is not None:
        refuse_other_data(resume, digest)
    if job is not None:  # a job of a sweep: maybe done already, or stopped and resumable
        fingerprint = config_hash(cfg, digest)
        done = job.finished_run(fingerprint)
        if done is not None:
            job.reuse(done)
            log.info(
                "Skipped: the same config and data FINISHED as run %s (%s); "
                "tracking.skip_finished=false runs it again",
                done.info.run_id,
                done.info.run_name,
            )
            return RunResult(dict(done.data.metrics), done.info.run_id, job.client.tracking_uri)
        resume = _resume_stopped(cfg, job, fingerprint, overrides, output_dir)
        cfg = resume.cfg if resume else cfg

    run_id, uri = joined_run(), tracking_uri(cfg)
    checkpoint_dir = resume.checkpoint_dir if resume else output_dir / "checkpoints"
    if run_id is None:  # rank zero: the one process that creates, ends and reports the run
        client, run_id, uri = start_run(
            cfg,
            digest,
            overrides,
            resume.run_id if resume else None,
            tags=job.tags() if job else None,
            name=job.run_name(run_name(cfg)) if job else None,
        )
        share_run(run_id)
        log.info("MLflow run %s (%s) in %s", run_id, run_name(cfg), uri)
        lifetime = run_status(client, run_id, checkpoint_dir / "last.ckpt")
    else:
        lifetime = contextlib.nullcontext()
    with lifetime:
        run = instantiate(cfg.logger, tracking_uri=uri, run_id=run_id)
        model = build_model(cfg, data)
        threads = apply_threads(cfg.threads, model.layer_widths, cfg.data.batch_size)
        evaluator = Evaluator(model, data)
        checkpoint = instantiate(cfg.checkpoint, dirpath=str(checkpoint_dir))
        figures = instantiate_callbacks(cfg.get("callbacks"), run, evaluator)
        trainer = instantiate(
            cfg.trainer,
            logger=run,
            callbacks=[
                checkpoint,
                DivergenceGuard(),
                *progress_bars(cfg.trainer.enable_progress_bar),
                *grouped(figures, RunCallback),
            ],
            default_root_dir=str(output_dir),
            plugins=[AtomicCheckpointIO()],
        )
        log_run_settings(run, cfg, model, data, threads, resumed=resume is not None)

        trainer.fit(model, datamodule=data, ckpt_path=resume.checkpoint if resume else None)
        if "test" in data.splits:
            trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)
        else:  # all test labels hidden: nothing to score, but report on the best weights
            restore_weights(model, checkpoint.best_model_path)

        if trainer.is_global_zero:
            kept = checkpoint.best_model_path if cfg.tracking.log_checkpoint else ""
            report_run(run, evaluator, kept, cfg.tracking)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["val/acc_best"] = float(model.val_acc_best)  # of the best checkpoint, restored
    return RunResult(metrics, run_id, uri, model, data)


def _resume_stopped(
    cfg: DictConfig, job, fingerprint: str, overrides: Sequence[str], output_dir: Path
):
    """The :class:`denselab.tracking.resume.Resume` of this sweep's earlier, stopped try of the same
    job (config ``fingerprint``), checked as ``resume=`` checks it; None when there is none
    that can go on, and the job starts anew.

    The stopped run has the same config (its config_hash), so of the job's overrides only
    those a resume may change (where the data and store are, ...) are passed on: comparing
    the others again would trip on what the first resume wrote back (an absolute data.dir).
    """
    from denselab.errors import ConfigError
    from denselab.tracking.resume import MAY_CHANGE, override_keys, prepare_resume

    stopped = job.stopped_run(fingerprint)
    if stopped is None:
        return None
    resumed = cfg.copy()
    with open_dict(resumed):
        resumed.resume = stopped.info.run_id
    may_change = [
        override
        for override, key in zip(overrides, override_keys(overrides, keep_resume=True))
        if any(key == k or key.startswith(k + ".") for k in MAY_CHANGE)
    ]
    try:
        resume = prepare_resume(resumed, may_change, output_dir)
    except ConfigError as err:
        log.warning("Not continuing run %s (%s): this job starts anew", stopped.info.run_id, err)
        return None
    log.info("Continuing this job's stopped run %s from its checkpoint", stopped.info.run_id)
    return resume


def prepare_data(cfg: DictConfig):
    """The datamodule of ``cfg.data``, with its splits loaded."""
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup()
    log.info(data.describe())
    return data


def build_model(cfg: DictConfig, data):
    """The network of ``cfg.model`` for the data's shape and classes, with its optimizer."""
    from hydra.utils import instantiate

    return instantiate(
        cfg.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        class_names=list(data.class_names),
        optimizer=instantiate(cfg.optimizer),
    )


def log_run_settings(
    run, cfg: DictConfig, model, data, threads: int, resumed: bool = False
) -> None:
    """Params (the resolved config, flattened, and the parameter count), the config as YAML,
    the input shape and the torch threads it trains with (tag ``torch_threads``: a sweep's
    parallel jobs share the CPUs). A resumed run keeps the params it started with."""
    from denselab.training.module import count_parameters
    from denselab.tracking.runs import run_name, run_params

    params = run_params(cfg)
    params["params_total"] = count_parameters(model)
    if not resumed:
        run.log_hyperparams(params)
    run.text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    run.tag("input_shape", "x".join(map(str, data.input_shape)))
    run.tag("torch_threads", str(threads))
    log.info("%s: %s parameters", run_name(cfg), f"{params['params_total']:,}")


def report_run(run, evaluator, checkpoint_path: str, tracking=None) -> None:
    """What the final weights score on each split, their hidden-label predictions, the
    checkpoint they came from, the network as the run's MLflow model, the run's description,
    and where to read it all."""
    from denselab.reporting import artifacts as report
    from denselab.training.console import run_address
    from denselab.reporting.artifacts import CURVE_METRICS

    table = evaluator.accuracy_by_split()
    run.table(table, "accuracy_by_split")
    predictions = evaluator.unlabeled_predictions()
    if predictions is not None:
        run.table(predictions, "predictions_unlabeled")
        log.info("Predicted %s images with hidden labels", f"{len(predictions):,}")
    if checkpoint_path:
        run.file(checkpoint_path, "checkpoints")
    if tracking is not None and tracking.log_model:
        from denselab.serving.mlflow_model import log_run_model

        log_run_model(run, evaluator, tracking.register_as)
    scored = evaluator.evaluation(evaluator.splits[-1])  # test, where the data has one
    history = run.history(CURVE_METRICS)
    run.describe(report.run_description(table, scored, history, run.figure_paths))
    log.info("Accuracy by split (best checkpoint):\n%s", table.to_string(index=False))
    address = run_address(run.tracking_uri, run.experiment_id, run.run_id)
    log.info("The run in the MLflow UI: %s", address)


def instantiate_callbacks(callbacks_cfg: Optional[DictConfig], run=None, evaluator=None) -> list:
    """The ``callbacks`` group: a mapping of names to callback configs; null ones are off.
    Callbacks that write to the run are bound to ``run`` and ``evaluator``."""
    from hydra.utils import instantiate

    from denselab.reporting.callbacks import RunCallback

    if not callbacks_cfg:
        return []
    made = [instantiate(cb) for cb in callbacks_cfg.values() if cb and "_target_" in cb]
    for callback in made:
        if isinstance(callback, RunCallback) and run is not None:
            callback.bind(run, evaluator)
    return made


def _quiet_irrelevant_warnings() -> None:
    # denselab logs metrics once per epoch, so Lightning's step-logging interval is unused
    # and its warning about small datasets would only confuse.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Lightning 2.6 calling torch's own deprecated pytree API: nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    # On a machine with SLURM's tools installed, Lightning asks every run outside SLURM to
    # prepend `srun`: denselab runs one process per job, and its SLURM jobs come from
    # hydra/launcher=slurm, which starts them through srun already.
    warnings.filterwarnings("ignore", message=".*The `srun` command is available.*")


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
            metrics = train(cfg, Path(hydra_cfg.runtime.output_dir), hydra_cfg.overrides.task)
    except DenselabError as err:
        log.error(str(err))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            if getattr(err, "run_id", None) is None:  # failed before its run existed
                _record_failed_job(cfg, hydra_cfg.overrides.task, err)
            raise  # Hydra records the failed job, runs the others, and exits 1 at the end
        sys.exit(1)
    # What a Hydra sweeper (e.g. Optuna) optimises: a validation score, so that a search never
    # tunes on the test set.
    return metrics.get("val/acc_best")


def _record_failed_job(cfg: DictConfig, overrides: Sequence[str], err: Exception) -> None:
    from denselab.sweeps.parent import record_failed_job

    try:
        record_failed_job(cfg, overrides, err)
    except Exception as failed:  # the job's own error is what matters; this is a courtesy
        log.debug("The failed job was not recorded in the sweep: %s", failed)


if __name__ == "__main__":
    main()
