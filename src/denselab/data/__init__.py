"""Datasets as LightningDataModules over in-memory tensors."""

__all__ = ["ImageDataModule", "Split", "TensorBatches"]


def __getattr__(name: str):
    # Lazy: reading image files (images.py, idx.py) must not import Lightning, which takes
    # seconds; denselab-predict and denselab.load use those modules alone.
    if name in __all__:
        from denselab.data import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
