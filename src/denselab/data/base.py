"""What every denselab dataset shares: whole-split tensors and batches cut from them.

A dataset subclass only says how to get its raw arrays (:meth:`ImageDataModule.load_arrays`),
or, when it ships its own validation split, its three splits (:meth:`ImageDataModule.load_splits`).
Everything else, the drawn validation split, moving the tensors to the model's device once,
and cutting batches from a per-epoch permutation (scaled to float in [0, 1] per batch, see
:mod:`denselab.data.pixels`), lives here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch

from denselab.data.digest import array_digest, data_digest
from denselab.data.pixels import as_float
from denselab.errors import DataError


@dataclass
class Split:
    """One split as two tensors: images (N, *input_shape) as stored (uint8 0-255, or float
    in [0, 1]), labels (N,) int64. Read images for the network or a figure through
    :meth:`images`, which scales them to float in [0, 1]."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def images(self, index=slice(None)) -> torch.Tensor:
        """The images at ``index`` (an int, slice or index tensor) as float32 in [0, 1]."""
        return as_float(self.x[index])

    def to(self, device: torch.device) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Unlabeled:
    """Images whose labels are hidden, as stored (see :class:`Split`): predicted after
    training, never scored."""

    x: torch.Tensor
    obs_ids: list[str]

    def __len__(self) -> int:
        return len(self.obs_ids)


class Chunk:
    """Several consecutive mini-batches of one epoch, handed to Lightning as one batch so
    that the module takes one optimizer step per mini-batch inside one ``training_step``
    (see :mod:`denselab.training.chunking`). Iterating it yields the (x, y) mini-batches the
    unchunked loader would have yielded, cut from the same order when asked for: a chunk
    holds indices, not images.

    ``start`` is the epoch's index of its first mini-batch, so ``end`` counts the mini-batches
    done once it is trained: what the progress display shows.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batches: Sequence, start: int):
        self.x, self.y = x, y
        self.batches = batches  # index tensors, or slices of an unshuffled split
        self.start = start

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def end(self) -> int:
        return self.start + len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.batches:
            yield as_float(self.x[idx]), self.y[idx]


class TensorBatches:
    """An iterable of (x, y) batches indexed out of one split's tensors, x scaled to float.

    Replaces Dataset + DataLoader + collate on the hot path: one gather per batch instead of
    one Python call per sample. Shuffled loaders draw a fresh permutation per epoch from
    their own generator, so the order depends on the seed alone.

    With several processes (``world_size`` > 1), every rank draws the same permutation and
    takes every ``world_size``-th image of it from ``rank`` on, like Lightning's
    DistributedSampler: each image is trained on once per epoch across the ranks, and the
    permutation wraps around to give every rank as many batches (a rank waiting for a
    batch the others do not have would hang). Unshuffled loaders (validation, test) give
    every rank the whole split, so each scores all of it.

    With ``steps_per_batch`` k > 1 the loader yields :class:`Chunk` s of k mini-batches (the
    epoch's last one may hold fewer): the same mini-batches in the same order, k at a time.
    ``len()`` counts what it yields; ``steps`` counts mini-batches either way.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        steps_per_batch: int = 1,
    ):
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world_size = rank, world_size
        self.steps_per_batch = steps_per_batch

    def _per_rank(self) -> int:
        n = len(self.split)
        return math.ceil(n / self.world_size) if self.shuffle else n

    @property
    def steps(self) -> int:
        """Mini-batches per epoch: optimizer steps, when this is a training loader."""
        return math.ceil(self._per_rank() / self.batch_size)

    def __len__(self) -> int:
        return math.ceil(self.steps / self.steps_per_batch)

    def __iter__(self) -> Iterator:
        # A generator: the epoch's permutation is drawn at its first batch, not at iter().
        x, y = self.split.x, self.split.y
        batches = self._batch_indices()
        k = self.steps_per_batch
        if k == 1:
            for idx in batches:
                yield as_float(x[idx]), y[idx]
            return
        for start in range(0, len(batches), k):
            yield Chunk(x, y, batches[start : start + k], start)

    def _batch_indices(self) -> Sequence:
        """Each mini-batch's indices into the split: slices in order, or the epoch's
        permutation (drawn now) cut in batches."""
        n = len(self.split)
        if not self.shuffle:
            return [slice(s, s + self.batch_size) for s in range(0, n, self.batch_size)]
        order = torch.randperm(n, generator=self.generator)
        if self.world_size > 1:
            order = order.repeat(2)[: self._per_rank() * self.world_size]
            order = order[self.rank :: self.world_size]
        return order.to(self.split.y.device).split(self.batch_size)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, val) index arrays, val holding round(n * val_fraction) items."""
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n_val >= n:
        raise DataError(
            f"A validation fraction of {val_fraction} leaves no images on one side of a "
            f"{n}-image training set; choose data.val_fraction so both sides keep some."
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def stored_pixels(images: np.ndarray) -> torch.Tensor:
    """Images as a tensor in their stored dtype: uint8 and float32 as they are (no copy when
    the array is writable and contiguous); other floats, already in [0, 1], as float32,
    the precision the network computes in."""
    if images.dtype not in (np.uint8, np.float32):
        images = images.astype(np.float32)
    if not (images.flags.writeable and images.flags.c_contiguous):
        images = np.array(images, order="C")  # torch wants memory it may write to
    return torch.from_numpy(images)


class ImageDataModule(pl.LightningDataModule):
    """Base class of denselab's datasets: subclasses implement :meth:`load_arrays`.

    After :meth:`setup`, ``splits`` maps "train", "val", "test" to :class:`Split`, and
    ``input_shape`` (H, W) or (H, W, C), ``num_classes`` and ``class_names`` describe them.
    A dataset without labelled test images has no "test" split. ``unlabeled`` holds the
    images with hidden labels, if the dataset has any.
    """

    name: str = "images"
    class_names: Sequence[str] = ()

    def __init__(
        self,
        dir: str,
        val_fraction: float = 0.2,
        batch_size: int = 32,
        eval_batch_size: int = 1024,
        seed: int = 0,
        name: Optional[str] = None,
    ):
        super().__init__()
        self.dir = dir
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        if name:
            self.name = name
        self.splits: dict[str, Split] = {}
        self.unlabeled: Optional[Unlabeled] = None
        self._on_device: dict[str, Split] = {}
        self._digests: dict[str, str] = {}
        # Draws each epoch's training order; its state is saved with every checkpoint, so a
        # resumed run sees the batches an uninterrupted one would.
        self.train_order = torch.Generator().manual_seed(seed)
        # Mini-batches per training batch Lightning sees: set for a fit by
        # denselab.training.chunking.StepsPerBatch, which decides it.
        self.steps_per_batch = 1

    # -- what a dataset provides -------------------------------------------------------

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return (train_images, train_labels, test_images, test_labels) as NumPy arrays.

        Images are (N, H, W) or (N, H, W, C), uint8 or float in [0, 1]; labels are 0..K-1.
        Raise DataError with a fix when the data is missing or corrupt.
        """
        raise NotImplementedError

    def load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Split name -> (images, labels) arrays, as :meth:`load_arrays` describes them.

        By default the validation split is ``val_fraction`` of :meth:`load_arrays`' training
        images, drawn by the seed. Datasets with an official validation split override this.
        """
        x_train, y_train, x_test, y_test = self.load_arrays()
        train_idx, val_idx = split_indices(len(y_train), self.val_fraction, self.seed)
        return {
            "train": (x_train[train_idx], y_train[train_idx]),
            "val": (x_train[val_idx], y_train[val_idx]),
            "test": (x_test, y_test),
        }

    # -- LightningDataModule -----------------------------------------------------------

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits:
            return
        arrays = self.load_splits()
        # The pixel type of the dataset's own files: what its logged model takes (serving.py).
        self.pixel_dtype = "uint8" if arrays["train"][0].dtype == np.uint8 else "float32"
        self.splits = {
            name: Split(stored_pixels(x), torch.from_numpy(np.asarray(y, dtype=np.int64)))
            for name, (x, y) in arrays.items()
        }

    def train_dataloader(self) -> TensorBatches:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        loader = TensorBatches(
            self.split_on_device("train"),
            self.batch_size,
            True,
            self.seed,
            rank,
            world,
            self.steps_per_batch,
        )
        loader.generator = self.train_order
        return loader

    def val_dataloader(self) -> TensorBatches:
        return TensorBatches(self.split_on_device("val"), self.eval_batch_size, False)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.split_on_device("test"), self.eval_batch_size, False)

    def state_dict(self) -> dict:
        return {"train_order": self.train_order.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        if "train_order" in state_dict:
            self.train_order.set_state(state_dict["train_order"])

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # Batches are cut from tensors already on the device: skip Lightning's generic
        # walk over the batch, a measurable share of a small step's time.
        if isinstance(batch, torch.Tensor):  # the model summary's example image
            return batch.to(device)
        if isinstance(batch, Chunk):  # cut from the split on the device (split_on_device)
            return batch
        x, y = batch
        if x.device == device and y.device == device:
            return batch
        return x.to(device), y.to(device)

    # -- helpers -----------------------------------------------------------------------

    def split_on_device(self, name: str) -> Split:
        """The split on the trainer's device, copied there once per run."""
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        cached = self._on_device.get(name)
        if cached is None or cached.y.device != device:
            cached = self._on_device[name] = self.splits[name].to(device)
        return cached

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.splits["train"].x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_labels(self) -> tuple[int, ...]:
        """Each class's label in the dataset's own files, in class order."""
        return tuple(range(self.num_classes))

    def split_digests(self) -> dict[str, str]:
        """Each split's content digest (images and labels), and ``unlabeled``'s where the
        dataset hides labels: see :mod:`denselab.data.digest`."""
        if not self._digests:
            self._digests = {name: array_digest(s.x, s.y) for name, s in self.splits.items()}
            if self.unlabeled is not None:
                ids = np.array(self.unlabeled.obs_ids, dtype=str)
                self._digests["unlabeled"] = array_digest(self.unlabeled.x, ids)
        return dict(self._digests)

    def source(self) -> tuple[str, str]:
        """(MLflow's source type, where the data came from), for the run's datasets: the
        files it was read from, or the code that made it."""
        return "local", str(Path(self.dir).resolve())

    def content_digest(self) -> str:
        """The digest of everything a run sees of this dataset: its splits, hidden-label
        rows and class names, not where the files lie. Part of a run's identity."""
        digests = self.split_digests()
        unlabeled = digests.pop("unlabeled", None)
        return data_digest(digests, self.class_names, unlabeled)

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(v):,}" for k, v in self.splits.items())
        if self.unlabeled is not None:
            sizes += f", unlabeled {len(self.unlabeled):,}"
        shape = "x".join(map(str, self.input_shape))
        return f"{self.name}: {sizes} images of {shape}, {self.num_classes} classes"
