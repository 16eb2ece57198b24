"""denselab: dense neural networks on image classification data, tracked in MLflow.

``from denselab import fit, load``: see :mod:`denselab.api`. Importing denselab imports
nothing heavy; torch, Lightning and MLflow load when ``fit`` or ``load`` is first called.
"""

__version__ = "0.1.0"
__all__ = ["fit", "load"]


def fit(*overrides, **kwargs):
    """Train one network as ``denselab-train <overrides>`` would, in this process; returns
    a :class:`denselab.train.RunResult` (run_id, metrics, model, datamodule)."""
    from denselab.api import fit as _fit

    return _fit(*overrides, **kwargs)


def load(model, tracking_uri=None):
    """A trained network (``runs:/<id>/model``, ``models:/<name>@<alias>``, a .ckpt) as a
    :class:`denselab.serving.classifier.Classifier`: ``.predict(images)`` -> DataFrame."""
    from denselab.api import load as _load

    return _load(model, tracking_uri)
