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

``predict(images)`` takes raw images (N, *input_shape), uint8 0-255 or floats in [0, 1] (the
model's metadata says so in words: ``input``), and returns one row per image: ``label``,
``class``, ``probability`` and ``probabilities`` (every class's, in class order).

What a request holds is denselab's to judge, not MLflow's. MLflow casts a request to its
signature's tensor type and refuses another shape before a model sees it: 0.5 became 0 and
``true`` became 1 for a uint8 signature, and a wrong shape was answered with the whole array.
So the signature's input is the one tensor spec MLflow passes on as it came (see
:func:`signature`), and :func:`request_images` refuses what is not (n, *input_shape) numbers
in one sentence (:func:`request_error`). A served model's request is checked before MLflow
reads it, too (:func:`checked_invocations`): a body that is not ``{"inputs": [...]}`` JSON
never reaches ``predict``, and MLflow would answer it with its own words and the body.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

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
                signature=signature(),
                input_example=example,
                pip_requirements=requirements(),
                metadata={
                    "input": expected(preprocessing),
                    "preprocessing": preprocessing.to_dict(),
                },
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


def signature():
    """Images in, as the request holds them (:func:`request_images` judges them); label,
    class, probability and every class's probability out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.schema import Array

    # Tensor('object', (-1,)) is the one input spec MLflow hands on untouched: its request
    # parser makes the JSON an object array of the JSON's own values, and its schema
    # enforcement lets any array through (mlflow.models.utils._enforce_tensor_spec). The
    # training shape and pixel type as the spec, MLflow would cast each request to them and
    # answer any other shape itself, echoing the array. What the model takes is written in
    # its metadata instead ("input": expected()), and shown by its input example.
    images = TensorSpec(np.dtype(object), (-1,))
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
            images = request_images(model_input, self.classifier.preprocessing.input_shape)
            probs = self.classifier.probabilities(images, source="the request")
        except InputError as err:
            raise self.refusal(str(err)) from None
        table = self.classifier.table(probs)
        return pd.DataFrame(
            {
                "label": table["label"].astype(np.int64),
                "class": table["class"].astype(str),
                "probability": table["probability"].astype(np.float64),
                "probabilities": probs.astype(np.float64).tolist(),
            }
        )

    def check_request(self, body: bytes | str, content_type: Optional[str]) -> None:
        """Refuse a served request whose form is not ``{"inputs": [...]}`` JSON (its images
        are ``predict``'s to judge) with :func:`request_error`."""
        problem, status = content_type_problem(content_type), 415
        if problem is None:
            problem, status = body_problem(body), 400
        if problem:
            raise self.refusal(problem, status)

    def refusal(self, problem: str, status: int = 400) -> Exception:
        """The error a client reads: the problem, and what this model takes."""
        return request_error(f"{problem.rstrip('.')} (this model takes {self.expected()}).", status)

    def expected(self) -> str:
        return expected(self.classifier.preprocessing)


def expected(preprocessing: Preprocessing) -> str:
    """What a request must hold, in words: ``images of shape (n, 28, 28), uint8 0-255 or
    floats in [0, 1]``."""
    return (
        f"images of shape {_dims(('n', *preprocessing.input_shape))}, uint8 0-255 or floats "
        "in [0, 1]"
    )


def request_error(sentence: str, status: int = 400) -> Exception:
    """An error a served model's client reads as ``sentence``, with HTTP ``status``.

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

        def get_http_status_code(self) -> int:
            return status

    return RequestError(sentence, error_code=INVALID_PARAMETER_VALUE)


# -- what a request may hold ---------------------------------------------------------------------

# The request a served model takes, named in the fix of every sentence about a request's form.
REQUEST_FORM = '{"inputs": [image, ...]} as application/json'
BATCH_KEYS = ("inputs", "instances")  # MLflow's two names for a tensor request's batch
# Far deeper than a batch of images nests (4 for colour), far shallower than MLflow's parser
# breaks (numpy makes no array of more than 32 dimensions).
MAX_NESTING = 16
# JSON's names for what json.loads and MLflow's parser give: a client reads JSON's terms.
JSON_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}
# numpy's own numbers, in an object array a Python caller made.
REAL = (np.integer, np.floating)
# What a batch holds that is not pixels, in the plural, by the type of its values.
NOT_PIXELS = {
    bool: "true/false values",
    np.bool_: "true/false values",
    str: "strings",
    type(None): "nulls",
    dict: "objects",
}


def content_type_problem(content_type: Optional[str]) -> Optional[str]:
    """Why a request of ``content_type`` is not one a served model reads, or None. MLflow
    would read CSV and Parquet too: as tables, which images are not."""
    mime, *parameters = (part.strip().lower() for part in (content_type or "").split(";"))
    if mime == "application/json" and all(
        p.replace(" ", "") == "charset=utf-8" for p in parameters
    ):
        return None
    given = _cut(content_type) if content_type else "missing"
    return f"The request's Content-Type is {given}, not application/json; send {REQUEST_FORM}"


def body_problem(body: bytes | str) -> Optional[str]:
    """Why a request's body is not ``{"inputs": [image, ...]}``, or None. Said without the
    body: a client that sent it has it, and the server's log needs no copy of its images."""
    try:
        request = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        return f"The request is not JSON; send {REQUEST_FORM}"
    except RecursionError:
        return f"The request's lists nest deeper than {MAX_NESTING}; send {REQUEST_FORM}"
    if not isinstance(request, dict):
        return f"The request's JSON is {_json_name(request)}, not an object; send {REQUEST_FORM}"
    keys = list(request)
    if len(keys) != 1 or keys[0] not in BATCH_KEYS:
        named = ", ".join(f'"{_cut(k)}"' for k in keys[:3]) + (", ..." if keys[3:] else "")
        has = f"the key{'s' if keys[1:] else ''} {named}" if keys else "no keys"
        return f'The request\'s JSON has {has}, not "inputs" alone; send {REQUEST_FORM}'
    images = request[keys[0]]
    if not isinstance(images, list) or any(isinstance(image, dict) for image in images):
        what = "a list of objects" if isinstance(images, list) else _json_name(images)
        return f'The request\'s "{keys[0]}" is {what}, not a list of images; send {REQUEST_FORM}'
    if not images:  # MLflow's parser takes [] for a table of no rows, and refuses it so
        return f"The request holds no images; send {REQUEST_FORM}"
    if _nesting(images) > MAX_NESTING:
        return f"The request's lists nest deeper than {MAX_NESTING}; send {REQUEST_FORM}"
    return None


def request_images(values: Any, input_shape: Sequence[int]) -> Any:
    """A request's images, numbers of shape (n, *input_shape); an InputError says what else
    they are. Which numbers are pixels is :class:`Preprocessing`'s to say (ranges)."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        values = json_numbers(values)
    shape = tuple(np.shape(values))
    if shape == (0,):
        raise InputError("The request holds no images; send at least one")
    if shape[1:] != tuple(input_shape):
        size = "x".join(str(s) for s in input_shape)
        raise InputError(
            f"The request holds an array of shape {_dims(shape)}, not a list of {size} images; "
            f"reshape it to {_dims(('n', *input_shape))}"
        )
    return values


def json_numbers(values: np.ndarray) -> np.ndarray:
    """MLflow's object array of a request's JSON values as numbers: int64 where all are
    integers (0-255 pixels), else float64 (floats in [0, 1]: one float makes the batch
    floats, as JSON writers drop the ".0" of 0.0 and 1.0)."""
    kinds = set(map(type, values.flat))
    if kinds & {list, np.ndarray}:  # numpy leaves lists (arrays) inside where lengths differ
        raise InputError(
            "The request holds lists of different lengths, not an array of images; send "
            "images of one size, every row as long as the others"
        )
    numbers = {k for k in kinds if k is not bool and issubclass(k, (int, float, *REAL))}
    others = sorted({NOT_PIXELS.get(k, f"{k.__name__} values") for k in kinds - numbers})
    if others:
        raise InputError(
            f"The request holds {' and '.join(others)}, not pixels; send integers 0-255 or "
            "floats in [0, 1]"
        )
    integers = all(issubclass(k, (int, np.integer)) for k in kinds)
    number_type = np.int64 if integers else np.float64
    try:
        return values.astype(number_type)
    except OverflowError:
        # Python's ints have no bound (JSON's may run to 4300 digits): clipped to just outside
        # both pixel ranges, each value keeps its verdict (a pixel or not) and fits the type.
        with np.errstate(invalid="ignore"):
            return np.clip(values, -1, 256).astype(number_type)


def _nesting(value: Any) -> int:
    """How deep lists nest in a JSON value, counted to MAX_NESTING + 1 at most."""
    depth, level = 0, [value] if isinstance(value, list) else []
    while level and depth <= MAX_NESTING:
        depth += 1
        level = [item for outer in level for item in outer if isinstance(item, list)]
    return depth


def _json_name(value: Any) -> str:
    return JSON_NAMES.get(type(value), type(value).__name__)


def _dims(shape: Sequence[Any]) -> str:
    return f"({', '.join(str(s) for s in shape)})"


def _cut(text: str, length: int = 40) -> str:
    """A client's own words (a key, a content type) cut to a length a sentence can hold."""
    return text if len(text) <= length else text[: length - 3] + "..."


# -- the scoring server: requests checked before MLflow reads them ---------------------------------


def checked_invocations(invocations: Callable) -> Callable:
    """MLflow's scoring-server call ``invocations(data, content_type, model, ...)`` with a
    denselab model's request checked first (:meth:`PyfuncClassifier.check_request`); another
    model's request goes to MLflow as it came."""

    @functools.wraps(invocations)
    def checked(data: Any, content_type: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        served = getattr(model, "_model_impl", None)  # pyfunc's "stable developer API"
        if isinstance(served, PyfuncClassifier):
            served.check_request(data, content_type)
        return invocations(data, content_type, model, *args, **kwargs)

    checked.checks_denselab_requests = True  # type: ignore[attr-defined]
    return checked


def check_served_requests() -> None:
    """Have this process's MLflow scoring server check denselab models' requests first.

    The server decodes a request's body and picks out its "inputs" before any model code
    runs, and answers what it cannot read in its own words, the body included ("Input:
    b'...'"). It calls its module's ``invocations`` by name for each request: the one place a
    model can stand in front of it. ``mlflow models serve`` imports that module before it
    loads the model; a process that has not imported it serves nothing and is left as it is.
    Another MLflow, without ``invocations``, serves with its own answers to malformed bodies
    (the images are still judged by ``predict``)."""
    server = sys.modules.get("mlflow.pyfunc.scoring_server")
    invocations = getattr(server, "invocations", None)
    if invocations is None or getattr(invocations, "checks_denselab_requests", False):
        return
    server.invocations = checked_invocations(invocations)


def _load_pyfunc(data_path: str) -> PyfuncClassifier:
    """MLflow's loader-module entry point: the model folder's ``data`` (see the module); in a
    scoring server, its requests checked before MLflow reads them."""
    check_served_requests()
    return PyfuncClassifier(Classifier.from_folder(data_path))
