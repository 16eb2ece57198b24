"""Train one network and track it in MLflow: ``denselab-train`` or ``python -m denselab.train``.

denselab-train data=fashion_mnist model.hidden_sizes=[256,128] optimizer=adam
denselab-train -m model.hidden_sizes=[],[128] seed=0,1     # a sweep: one run per job
denselab-train --cfg job                                    # print the composed config
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from denselab.config import register_schemas, validate_config
from denselab.errors import DenselabError

log = logging.getLogger("denselab")


def train(cfg: DictConfig, output_dir: Path, overrides: Sequence[str] = ()) -> dict[str, float]:
    """Fit, test on the best checkpoint, and log everything to one MLflow run.

    Returns the final metrics (``test/acc``, ...). Raises DenselabError for bad input; the
    run, once created, always ends FINISHED, FAILED or KILLED.
    """
    validate_config(cfg)
    # Imported here, not at the top: Lightning and MLflow take seconds to import, and
    # `--cfg job`, `--help` and config errors should answer at once.
    import pytorch_lightning as pl
    from hydra.utils import instantiate
    from pytorch_lightning.callbacks import ModelCheckpoint

    from denselab.evaluation import accuracy_by_split, predict_unlabeled, restore_weights
    from denselab.mlflow_logger import EpochMLFlowLogger
    from denselab.model import count_parameters
    from denselab.progress import progress_bars
    from denselab.threads import apply_threads
    from denselab.tracking import run_name, run_params, run_status, start_run

    client, run_id, uri = start_run(cfg, overrides)
    log.info("MLflow run %s (%s) in %s", run_id, run_name(cfg), uri)

    with run_status(client, run_id):
        _quiet_irrelevant_warnings()
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup()
        log.info(datamodule.describe())

        model = instantiate(
            cfg.model,
            input_shape=datamodule.input_shape,
            num_classes=datamodule.num_classes,
            class_names=list(datamodule.class_names),
            optimizer=instantiate(cfg.optimizer),
        )
        apply_threads(cfg.get("threads"), model.layer_widths, cfg.data.batch_size)
        logger = EpochMLFlowLogger(tracking_uri=uri, run_id=run_id)
        params = run_params(cfg)
        params["params_total"] = count_parameters(model)
        logger.log_hyperparams(params)
        client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        client.set_tag(run_id, "input_shape", "x".join(map(str, datamodule.input_shape)))
        log.info("%s: %s parameters", run_name(cfg), f"{params['params_total']:,}")

        checkpoint = ModelCheckpoint(
            dirpath=output_dir / "checkpoints",
            filename="best-epoch{epoch:02d}",
            monitor="val/acc",
            mode="max",
            save_last=True,
            auto_insert_metric_name=False,
        )
        trainer = instantiate(
            cfg.trainer,
            logger=logger,
            callbacks=[
                checkpoint,
                *progress_bars(cfg.trainer),
                *instantiate_callbacks(cfg.get("callbacks")),
            ],
            default_root_dir=str(output_dir),
        )
        trainer.fit(model, datamodule=datamodule)
        if "test" in datamodule.splits:
            trainer.test(model, datamodule=datamodule, ckpt_path="best", verbose=False)
        else:  # all test labels hidden: nothing to score, but predict with the best weights
            restore_weights(model, checkpoint.best_model_path)

        table = accuracy_by_split(model, datamodule)
        client.log_table(run_id, table, "tables/accuracy_by_split.json")
        log.info("Accuracy by split (best checkpoint):\n%s", table.to_string(index=False))
        if datamodule.unlabeled is not None:
            predictions = predict_unlabeled(model, datamodule)
            client.log_table(run_id, predictions, "tables/predictions_unlabeled.json")
            log.info("Predicted %s images with hidden labels", f"{len(predictions):,}")
        if cfg.tracking.log_checkpoint and checkpoint.best_model_path:
            client.log_artifact(run_id, checkpoint.best_model_path, "checkpoints")

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return metrics


def instantiate_callbacks(callbacks_cfg: Optional[DictConfig]) -> list:
    """The ``callbacks`` group: a mapping of names to callback configs; null ones are off."""
    from hydra.utils import instantiate

    if not callbacks_cfg:
        return []
    return [instantiate(cb) for cb in callbacks_cfg.values() if cb and "_target_" in cb]


def _quiet_irrelevant_warnings() -> None:
    # denselab logs metrics once per epoch, so Lightning's step-logging interval is unused
    # and its warning about small datasets would only confuse.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


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
        metrics = train(cfg, Path(hydra_cfg.runtime.output_dir), hydra_cfg.overrides.task)
    except DenselabError as err:
        log.error(str(err))
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job, runs the others, and exits 1 at the end
        sys.exit(1)
    # The return value is what a Hydra sweeper (e.g. Optuna) optimises; data whose test
    # labels are all hidden has no test/acc.
    return metrics.get("test/acc", metrics.get("val/acc_best"))


if __name__ == "__main__":
    main()
