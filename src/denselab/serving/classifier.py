"""A trained network as a product: weights, architecture and preprocessing, without Lightning's
training machinery. The logged MLflow model, ``denselab-predict`` and ``denselab.load`` are
all a :class:`Classifier`.

On disk (the MLflow model's data folder) a classifier is two files: ``weights.pt``, the
network's state dict, and ``network.json``, its architecture and :class:`Preprocessing`.
Both are read without unpickling code: weights with ``torch.load(weights_only=True)``, the
rest as JSON. Checkpoints are read the same way (:func:`load_checkpoint`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import yaml

from denselab.errors import CheckpointError, ModelNotFoundError, first_line
from denselab.serving.inputs import read_inputs
from denselab.serving.preprocessing import Preprocessing
from denselab.training.checkpoint_files import load_checkpoint
from denselab.training.network import Architecture

WEIGHTS_FILE = "weights.pt"
NETWORK_FILE = "network.json"
# The batch the run's own evaluation uses (data.eval_batch_size's default): the same batches
# give the same floating-point sums, so predictions equal the run's to the last bit.
BATCH_SIZE = 1024
TOP_K = 3
# The loader module of denselab's MLflow models: today's, and the one models logged before
# the subpackages name (the package denselab.serving hands on to today's).
LOADER_MODULES = ("denselab.serving.mlflow_model", "denselab.serving")


class Classifier:
    """A trained network and its preprocessing: raw images in, classes out."""

    def __init__(
        self,
        net: torch.nn.Module,
        architecture: Architecture,
        preprocessing: Preprocessing,
        source: str = "",
    ):
        self.net = net.eval()
        self.architecture = architecture
        self.preprocessing = preprocessing
        self.source = source  # where it was loaded from, for messages

    # -- made from ... ---------------------------------------------------------------------

    @classmethod
    def from_module(cls, model, preprocessing: Preprocessing) -> "Classifier":
        """The current weights of a trained MLPClassifier (copied, on the CPU)."""
        architecture = Architecture.from_hparams(model.hparams)
        net = architecture.build()
        net.load_state_dict({k: v.detach().cpu() for k, v in model.net.state_dict().items()})
        return cls(net, architecture, preprocessing)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "Classifier":
        """A Lightning checkpoint of a denselab run (``best-epochNN.ckpt``)."""
        checkpoint = load_checkpoint(path)
        hparams = checkpoint.get("hyper_parameters") or {}
        if "input_shape" not in hparams or "state_dict" not in checkpoint:
            raise CheckpointError(
                f"{path} is not a checkpoint of a denselab run (it lacks the network's "
                "input_shape or state_dict); pass a best-epochNN.ckpt written by denselab-train."
            )
        architecture = Architecture.from_hparams(hparams)
        # A checkpoint records shape and class names; the pixel type and the dataset's own
        # labels are the logged model's (preprocessing.json), so labels here are 0..K-1.
        preprocessing = Preprocessing(
            input_shape=architecture.input_shape,
            class_names=tuple(
                hparams.get("class_names") or [str(k) for k in range(architecture.num_classes)]
            ),
        )
        state = {
            k[len("net.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")
        }
        net = architecture.build()
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(
                f"{path}'s weights do not fit the network its hyper-parameters describe "
                f"({first_line(err)}); the file is damaged or not denselab's."
            ) from None
        return cls(net, architecture, preprocessing, source=str(path))

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Classifier":
        """A classifier saved by :meth:`save` (the MLflow model's data folder)."""
        folder = Path(folder)
        with open(folder / NETWORK_FILE) as f:
            spec = json.load(f)
        architecture = Architecture.from_hparams(spec["architecture"])
        net = architecture.build()
        net.load_state_dict(
            torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        )
        return cls(net, architecture, Preprocessing.from_dict(spec["preprocessing"]), str(folder))

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), folder / WEIGHTS_FILE)
        spec = {
            "architecture": asdict(self.architecture),
            "preprocessing": self.preprocessing.to_dict(),
        }
        (folder / NETWORK_FILE).write_text(json.dumps(spec, indent=2))
        return folder

    # -- predictions -----------------------------------------------------------------------

    @property
    def classes(self) -> list[str]:
        return list(self.preprocessing.class_names)

    @torch.inference_mode()
    def probabilities(self, images: Any, source: str = "the images") -> np.ndarray:
        """Class probabilities (N, K) of raw images (an array, see :class:`Preprocessing`)."""
        x = self.preprocessing.to_input(images, source)
        if len(x) == 0:
            return np.zeros((0, self.architecture.num_classes), dtype=np.float32)
        logits = torch.cat([self.net(x[i : i + BATCH_SIZE]) for i in range(0, len(x), BATCH_SIZE)])
        return logits.softmax(dim=1).float().numpy()

    def predict(self, images: Any, sources: Optional[Sequence[Any]] = None) -> pd.DataFrame:
        """One row per image: ``class`` (name), ``label`` (the dataset's label), ``probability``,
        and the runners-up ``class_2``, ``probability_2``, ``class_3``, ``probability_3``.

        ``images``: an array of raw images, or a folder, glob, ``.npy`` or IDX ``.gz`` path
        (read by :func:`denselab.serving.inputs.read_inputs`, whose sources become the index)."""
        if isinstance(images, (str, Path)):
            sources, images = read_inputs(str(images), self.preprocessing)
        return self.table(self.probabilities(images), sources)

    def table(self, probs: np.ndarray, sources: Optional[Sequence[Any]] = None) -> pd.DataFrame:
        """The prediction table of class probabilities ``probs`` (see :meth:`predict`)."""
        names = np.array(self.preprocessing.class_names, dtype=object)
        labels = np.array(self.preprocessing.class_labels)
        k = min(TOP_K, probs.shape[1])
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        rows = np.arange(len(probs))[:, None]
        top_probs = probs[rows, top]
        columns: dict[str, Any] = {
            "class": names[top[:, 0]] if len(probs) else [],
            "label": labels[top[:, 0]] if len(probs) else [],
            "probability": top_probs[:, 0] if len(probs) else [],
        }
        for rank in range(2, k + 1):
            columns[f"class_{rank}"] = names[top[:, rank - 1]] if len(probs) else []
            columns[f"probability_{rank}"] = top_probs[:, rank - 1] if len(probs) else []
        index = pd.Index(list(sources), name="source") if sources is not None else None
        return pd.DataFrame(columns, index=index)


# -- loading what a user names ------------------------------------------------------------------


def default_tracking_uri() -> str:
    """Where ``runs:/`` and ``models:/`` URIs are looked up when no tracking URI is given:
    MLFLOW_TRACKING_URI, else the store denselab-train writes by default (./mlruns)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{Path.cwd().resolve() / 'mlruns' / 'mlflow.db'}"
    )


def load(model: str | Path, tracking_uri: Optional[str] = None) -> Classifier:
    """The classifier at ``model``: ``runs:/<run id>/model``, ``models:/<name>@<alias>`` (or
    any MLflow model URI), a local MLflow model folder, or a ``.ckpt`` checkpoint."""
    spec = str(model)
    if ":/" not in spec:  # a local path
        path = Path(spec).expanduser()
        if path.is_dir():
            return _from_model_folder(path, spec)
        if path.is_file():
            return Classifier.from_checkpoint(path)
        raise ModelNotFoundError(
            f"model={spec} does not exist; pass runs:/<run id>/model, models:/<name>@<alias>, "
            "an MLflow model folder or a .ckpt file."
        )
    # MLflow only for runs:/ and models:/ URIs: a local model or checkpoint loads without
    # its seconds of import.
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise ModelNotFoundError(
            f"There is no MLflow store at {uri} to look {spec} up in; run from the folder "
            "denselab-train ran in, or pass tracking_uri=<the store's URI>."
        )
    # runs:/ URIs are resolved through the tracking URI set process-wide (MLflow looks the
    # run's logged model up with a fresh client), not the one passed in: set it, for the
    # look-up only.
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with tempfile.TemporaryDirectory() as tmp, _use_tracking_uri(uri):
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=spec, dst_path=tmp, tracking_uri=uri, registry_uri=uri
            )
        except (MlflowException, OSError) as err:
            raise ModelNotFoundError(
                f"No MLflow model at {spec} in the store {uri} ({first_line(err)}); check the "
                "run id or <name>@<alias>, or pass tracking_uri=<the store that holds it>."
            ) from None
        return _from_model_folder(Path(local), spec)


def _from_model_folder(folder: Path, spec: str) -> Classifier:
    """A denselab MLflow model folder (MLmodel + data/network)."""
    try:
        flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise ModelNotFoundError(
            f"{spec} is not an MLflow model (no readable MLmodel file with a python_function "
            "flavor); pass the model a denselab run logged."
        ) from None
    if flavor.get("loader_module") not in LOADER_MODULES:
        raise ModelNotFoundError(
            f"{spec} is an MLflow model, but not one denselab logged (its loader is "
            f"{flavor.get('loader_module') or 'a pickled Python model'}); load it with "
            "mlflow.pyfunc.load_model instead."
        )
    classifier = Classifier.from_folder(folder / flavor["data"])
    classifier.source = spec
    return classifier
