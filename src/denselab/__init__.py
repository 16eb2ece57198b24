"""denselab: dense neural networks on image classification data, tracked in MLflow."""

__version__ = "0.1.0"
