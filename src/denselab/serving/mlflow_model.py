"""The run's best network as an MLflow model, and its place in the model registry.

Each run logs ``runs:/<run id>/model``, a pyfunc model in MLflow's loader-module form: the
model folder holds the network's state dict and a JSON of its architecture and
preprocessing (:class:`denselab.serving.classifier.Classifier`), and MLflow loads it by calling
:func:`_load_pyfunc` of this module. Why not ``mlflow.pytorch.log_model``: its default
torch.export serialization captures the bare network only, so the scaling, channels, crop
and class names would live beside it in code every caller must repeat, and it outputs
logits. Why not a pickled ``PythonModel``: loading a pickle runs code, which the weights-only
checkpoint loading was built to avoid. The loader-module form pickles nothing; its one
demand is that denselab be installed where the model is served (``mlflow models serve
--env-manager local``).

``predict(images)`` takes raw images (N, *input_shape) of the training data's pixel type (the
signature says which) and returns one row per image: ``label``, ``class``, ``probability`` and
``probabilities`` (every class's, in class order).
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pandas as pd

from denselab.errors import InputError
from denselab.serving.classifier import Classifier
from denselab.serving.preprocessing import Preprocessing, preprocessing_of, raw_pixels
from denselab.tracking.runs import model_address

log = logging.getLogger(__name__)

MODEL_NAME = "model"
EXAMPLE_IMAGES = 3
# The alias of the registered version with the best val/acc_best. "latest" needs no setting:
# MLflow 3 reserves it for the newest version (models:/<name>@latest).
CHAMPION = "champion"
SCORE_TAG = "val_acc_best"


# -- logging the model ---------------------------------------------------------------------


def log_run_model(run, evaluator, register_as: Optional[str] = None) -> str:
    """Log the evaluator's current (best) weights as the run's MLflow model; register it as
    a new version of ``register_as`` when given. Returns the logged model's id."""
    data = evaluator.datamodule
    preprocessing = preprocessing_of(data)
    classifier = Classifier.from_module(evaluator.model, preprocessing)
    split = data.splits.get("test") or data.splits["train"]
    example = raw_pixels(split.x[:EXAMPLE_IMAGES], preprocessing.pixel_dtype)

    def save(path: str, mlflow_model) -> None:
        import mlflow.pyfunc

        with tempfile.TemporaryDirectory() as tmp, _quiet("mlflow.pyfunc"):
            network = classifier.save(Path(tmp) / "network")
            mlflow.pyfunc.save_model(
                path,
                loader_module=__name__,
                data_path=str(network),
                mlflow_model=mlflow_model,
                signature=signature(preprocessing),
                input_example=example,
                pip_requirements=requirements(),
                metadata={"preprocessing": preprocessing.to_dict()},
            )

    model_id = run.model(save, MODEL_NAME)
    run.link_model_scores(model_id)
    log.info("Logged the best network as runs:/%s/%s", run.run_id, MODEL_NAME)
    if register_as:
        score = float(evaluator.model.val_acc_best)
        version = register(run.experiment, register_as, model_id, run.run_id, score)
        log.info(
            "Registered it as models:/%s/%s (%s): %s",
            register_as,
            version.version,
            champion_note(run.experiment, register_as, version, score),
            model_address(run.tracking_uri, register_as, version.version),
        )
    return model_id


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """MLflow announces at INFO that it checks the input example against the signature, on
    every run: a notice that tells a user nothing (warnings still show)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def signature(preprocessing: Preprocessing):
    """Raw images of the training shape and pixel type in; label, class, probability and
    every class's probability out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.schema import Array

    images = TensorSpec(np.dtype(preprocessing.pixel_dtype), (-1, *preprocessing.input_shape))
    outputs = Schema(
        [
            ColSpec(DataType.long, "label"),
            ColSpec(DataType.string, "class"),
            ColSpec(DataType.double, "probability"),
            ColSpec(Array(DataType.double), "probabilities"),
        ]
    )
    return ModelSignature(inputs=Schema([images]), outputs=outputs)


def requirements() -> list[str]:
    """What the model needs, pinned to what trained it. denselab itself is not listed: it
    is not on PyPI, and a package of that name there would be someone else's."""
    from importlib.metadata import version

    return [
        f"{name}=={version(name).split('+')[0]}"
        for name in ("mlflow", "torch", "numpy", "pandas", "pillow")
    ]


# -- the registry ----------------------------------------------------------------------------


def register(client, name: str, model_id: str, run_id: str, score: float):
    """A new version of registered model ``name``; alias ``champion`` moves to it when its
    ``score`` (val/acc_best) beats the current champion's. Returns the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # MLflow's sqlite registry looks the logged model up through the process-wide tracking
    # URI, not this client's (a TODO in its code): point it at this client's store meanwhile.
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(client.tracking_uri):
        version = client.create_model_version(
            name,
            source=f"models:/{model_id}",
            run_id=run_id,
            tags={SCORE_TAG: repr(score)},
            model_id=model_id,
        )
    if score > champion_score(client, name):
        client.set_registered_model_alias(name, CHAMPION, version.version)
    return client.get_model_version(name, version.version)


def champion_note(client, name: str, version, score: float) -> str:
    """Where alias ``champion`` stands after ``version`` (scored ``score``) was registered:
    on it, or still on an earlier version that scored at least as well."""
    if CHAMPION in version.aliases:
        return f"alias {CHAMPION}"
    held = client.get_model_version_by_alias(name, CHAMPION)
    return (
        f"alias {CHAMPION} stays on version {held.version}: its val/acc_best "
        f"{champion_score(client, name):.4f} is not beaten by this version's {score:.4f}"
    )


def champion_score(client, name: str) -> float:
    """The val/acc_best of ``name``'s champion; -inf when it has none."""
    from mlflow.exceptions import MlflowException

    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return -math.inf
    if SCORE_TAG in champion.tags:
        return float(champion.tags[SCORE_TAG])
    metrics = client.get_run(champion.run_id).data.metrics if champion.run_id else {}
    return float(metrics.get("val/acc_best", -math.inf))


# -- the pyfunc side: what MLflow calls ----------------------------------------------------------


class PyfuncClassifier:
    """What ``mlflow.pyfunc.load_model`` wraps: a :class:`Classifier` behind pyfunc's
    ``predict``."""

    def __init__(self, classifier: Classifier):
        self.classifier = classifier

    def predict(self, model_input: Any, params: Optional[dict] = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):  # a tensor-less caller: one image per row
            model_input = np.stack([np.asarray(v) for v in model_input.iloc[:, 0]])
        try:
            probs = self.classifier.probabilities(model_input, source="the request")
        except InputError as err:
            raise request_error(f"{str(err).rstrip('.')} (this model takes {self.expected()}).")
        table = self.classifier.table(probs)
        return pd.DataFrame(
            {
                "label": table["label"].astype(np.int64),
                "class": table["class"].astype(str),
                "probability": table["probability"].astype(np.float64),
                "probabilities": probs.astype(np.float64).tolist(),
            }
        )


    def expected(self) -> str:
        """What a request must hold, in words: ``images of shape (n, 28, 28), uint8 0-255 or
        floats in [0, 1]``."""
        shape = ", ".join(str(s) for s in self.classifier.preprocessing.input_shape)
        return f"images of shape (n, {shape}), uint8 0-255 or floats in [0, 1]"


def request_error(sentence: str) -> Exception:
    """An error a served model's client reads as ``sentence``, with HTTP 400.

    MLflow's scoring server turns any other error of a model into "Encountered an unexpected
    error while evaluating the model", and prefixes an MlflowException's message with the
    whole request ("Failed to predict data '[[[0.5 0.5 ...'"), a batch of images echoed back
    to the client and into the log: this MlflowException keeps its own sentence."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    sentence = sentence[:1].upper() + sentence[1:]

    class RequestError(MlflowException):
        @property
        def message(self) -> str:
            return sentence

        @message.setter
        def message(self, value: str) -> None:
            pass  # the server's prefix of the request: dropped

    return RequestError(sentence, error_code=INVALID_PARAMETER_VALUE)


def _load_pyfunc(data_path: str) -> PyfuncClassifier:
    """MLflow's loader-module entry point: the model folder's ``data`` (see the module)."""
    return PyfuncClassifier(Classifier.from_folder(data_path))
