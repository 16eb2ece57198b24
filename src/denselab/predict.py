"""Classify images with a trained network: ``denselab-predict``.

denselab-predict model=runs:/<run id>/model inputs=path/to/pngs/ out=preds.csv
denselab-predict model=models:/fashion@champion inputs=t10k-images-idx3-ubyte.gz
denselab-predict model=outputs/<date>/<time>/checkpoints/best-epoch09.ckpt inputs=x.npy

Keys (key=value, as denselab-train's overrides):
  model         runs:/<run id>/model, models:/<name>@<alias>, an MLflow model folder, or a
                denselab checkpoint (.ckpt)                                       (required)
  inputs        a folder (searched recursively) or glob of PNG/JPEG/... files, an image
                file, a .npy array (N, H, W[, C]), or a gzipped IDX image file     (required)
  out           the CSV to write (default predictions.csv): one row per image, with
                source (path or index), class, label, probability, and the runners-up
                class_2, probability_2, class_3, probability_3
  log_to        a run id: log the CSV to that run as predictions/<out's name>
  tracking_uri  the MLflow store of runs:/, models:/ and log_to (default:
                $MLFLOW_TRACKING_URI, else ./mlruns, where denselab-train writes)
  progress      true/false: a progress bar while reading many files (default true)

Images are converted as in training (see denselab/serving/preprocessing.py). The CSV is written to
a temporary file and moved into place whole: an error leaves no partial CSV behind.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from denselab.errors import DenselabError, UsageError, first_line

log = logging.getLogger("denselab.predict")

KEYS = ("model", "inputs", "out", "log_to", "tracking_uri", "progress")
USAGE = "usage: denselab-predict model=<URI or .ckpt> inputs=<folder|glob|.npy|.gz> [out=preds.csv]"


def parse_args(argv: Sequence[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise UsageError(
                f"{arg!r} is not one of the keys {', '.join(k + '=' for k in KEYS)}; {USAGE}."
            )
        args[key] = value
    missing = [k for k in ("model", "inputs") if not args.get(k)]
    if missing:
        raise UsageError(f"{' and '.join(k + '=' for k in missing)} missing; {USAGE}.")
    progress = args.get("progress", "true").lower()
    if progress not in ("true", "false"):
        raise UsageError(f"progress must be true or false (got {args['progress']!r}).")
    return args


def predict(
    model: str,
    inputs: str,
    out: str | Path = "predictions.csv",
    log_to: Optional[str] = None,
    tracking_uri: Optional[str] = None,
    progress: bool = True,
):
    """Classify ``inputs`` with ``model``, write the table to ``out``; returns the table."""
    # Here, not at the top: torch takes seconds to import, and `denselab-predict --help` and
    # bad arguments answer at once.
    from denselab.serving.classifier import default_tracking_uri, load
    from denselab.serving.inputs import read_inputs

    uri = tracking_uri or default_tracking_uri()
    client = _run_to_log_to(log_to, uri) if log_to else None  # fail before the work
    classifier = load(model, uri)
    start = time.perf_counter()
    sources, images = read_inputs(inputs, classifier.preprocessing, progress=progress)
    table = classifier.table(classifier.probabilities(images, inputs), sources)
    seconds = time.perf_counter() - start
    out = Path(out)
    write_csv_atomically(table, out)
    log.info(
        "Classified %s images in %.2f s (%s/s) with %s -> %s",
        f"{len(table):,}",
        seconds,
        f"{len(table) / max(seconds, 1e-9):,.0f}",
        model,
        out,
    )
    if client is not None:
        client.log_artifact(log_to, str(out), "predictions")
        log.info("Logged %s to run %s (predictions/%s)", out, log_to, out.name)
    return table


def write_csv_atomically(table, out: Path) -> None:
    """The CSV appears whole or not at all: written beside ``out``, then renamed onto it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            table.to_csv(f)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run_to_log_to(run_id: str, uri: str):
    from mlflow.exceptions import MlflowException  # seconds to import, as above

    from denselab.tracking.store import open_store, shown_uri

    client = open_store(uri)
    try:
        client.get_run(run_id)
    except MlflowException as err:
        raise DenselabError(
            f"log_to={run_id}: no such run in {shown_uri(uri)} ({first_line(err)}); pass the id "
            "of an existing run, or tracking_uri=<its store>."
        ) from None
    return client


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # MLflow draws a progress bar per model download: noise around a one-line answer.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        args = parse_args(argv)
        predict(
            model=args["model"],
            inputs=args["inputs"],
            out=args.get("out") or "predictions.csv",
            log_to=args.get("log_to") or None,
            tracking_uri=args.get("tracking_uri") or None,
            progress=args.get("progress", "true").lower() == "true",
        )
    except DenselabError as err:
        print(f"denselab-predict: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
