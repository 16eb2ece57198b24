"""A trained network as a product: the classifier (network + preprocessing), the images a
user gives it, the MLflow model and its registry."""


def __getattr__(name: str):
    # MLflow models logged before the subpackages name this package as their loader module
    # (``loader_module: denselab.serving``) and call its _load_pyfunc: load them as today's.
    # Lazy, so that reading images (serving.inputs) does not import MLflow.
    if name == "_load_pyfunc":
        from denselab.serving.mlflow_model import _load_pyfunc

        return _load_pyfunc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
