"""Datasets as LightningDataModules over in-memory tensors."""

from denselab.data.base import ImageDataModule, Split, TensorBatches

__all__ = ["ImageDataModule", "Split", "TensorBatches"]
