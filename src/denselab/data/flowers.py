"""Oxford 17 Category Flowers: 1,360 photos, 80 of each of 17 kinds of flower.

Two files, found in the data dir or downloaded: ``17flowers.tgz`` (jpg/image_0001.jpg ...
jpg/image_1360.jpg, in class order: ids 1-80 are class 0, 81-160 class 1, ...) and
``datasplits.mat`` (three official splits, trn/val/tst 1..3, of 680/340/340 1-based ids).
The photos are decoded once per ``image_size`` into ``flowers17_<size>.npz`` beside them
(see :mod:`denselab.data.images` for the crop and resize, :mod:`denselab.data.cache` for
when a cache is trusted); later runs load that array in a fraction of a second.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from denselab.data import images as image_decoding
from denselab.data.archive import safe_extract
from denselab.data.base import ImageDataModule
from denselab.data.cache import load_cache, save_cache
from denselab.data.download import fetch
from denselab.data.memory import check_fits
from denselab.errors import DataError

log = logging.getLogger(__name__)

ARCHIVE = "17flowers.tgz"
SPLITS_FILE = "datasplits.mat"
IMAGES_PER_CLASS = 80
CLASS_NAMES = (
    "Daffodil",
    "Snowdrop",
    "Lily Valley",
    "Bluebell",
    "Crocus",
    "Iris",
    "Tigerlily",
    "Tulip",
    "Fritillary",
    "Sunflower",
    "Daisy",
    "Colts' Foot",
    "Dandelion",
    "Cowslip",
    "Buttercup",
    "Windflower",
    "Pansy",
)
NUM_IMAGES = IMAGES_PER_CLASS * len(CLASS_NAMES)  # 1,360
# datasplits.mat's variable prefix for each of our splits: trn1, val1, tst1, trn2, ...
SPLIT_PREFIXES = {"train": "trn", "val": "val", "test": "tst"}


def photo_path(folder: Path, image_id: int) -> Path:
    """Where the extracted archive keeps photo ``image_id`` (1-based)."""
    return folder / "jpg" / f"image_{image_id:04d}.jpg"


def labels_of(image_ids: np.ndarray) -> np.ndarray:
    """Class (0..16) of each 1-based image id: the photos come 80 per class, in order."""
    return (np.asarray(image_ids, dtype=np.int64) - 1) // IMAGES_PER_CLASS


def decode_archive(archive: Path, work_dir: Path, size: int) -> np.ndarray:
    """All 1,360 photos of ``archive`` as (1360, size, size, 3) uint8, in id order.

    The archive is extracted into a temporary folder inside ``work_dir`` and removed after:
    the decoded array is what later runs use.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    extracted = Path(tempfile.mkdtemp(dir=work_dir, prefix=".17flowers-"))
    try:
        safe_extract(archive, extracted)
        paths = [photo_path(extracted, i) for i in range(1, NUM_IMAGES + 1)]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DataError(
                f"{archive} lacks {len(missing):,} of the {NUM_IMAGES:,} photos "
                f"jpg/image_0001.jpg to jpg/image_{NUM_IMAGES:04d}.jpg (first: {missing[0]}); "
                "it is not the full dataset: delete it and run again to download a fresh copy."
            )
        return image_decoding.decode_images(paths, size)
    finally:
        shutil.rmtree(extracted, ignore_errors=True)


def read_split_ids(path: Path, split_id: int) -> dict[str, np.ndarray]:
    """Split name -> 1-based image ids of official split ``split_id`` (1, 2 or 3)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except Exception as err:  # noqa: BLE001 - scipy fails on damaged files in many ways
        raise DataError(
            f"{path} cannot be read as a MATLAB file ({err}); delete it and run again to "
            "download a fresh copy."
        ) from None
    ids = {split: _ids_in(mat, f"{p}{split_id}", path) for split, p in SPLIT_PREFIXES.items()}
    every = np.concatenate(list(ids.values()))
    if len(np.unique(every)) != len(every):
        raise DataError(
            f"{path} puts some images into more than one of trn{split_id}, val{split_id} and "
            f"tst{split_id}; it is not the dataset's split file: delete it and run again."
        )
    return ids


def _ids_in(mat: dict, key: str, path: Path) -> np.ndarray:
    if key not in mat:
        raise DataError(
            f"{path} has no variable {key}; it is not the dataset's split file (it should "
            "hold trn1..3, val1..3, tst1..3): delete it and run again."
        )
    values = np.asarray(mat[key], dtype=np.float64).ravel()
    valid = (values == np.round(values)) & (values >= 1) & (values <= NUM_IMAGES)
    if values.size == 0 or not valid.all():
        raise DataError(
            f"{path}: {key} must hold image ids 1 to {NUM_IMAGES:,}; it is not the dataset's "
            "split file: delete it and run again."
        )
    return values.astype(np.int64)


class FlowersDataModule(ImageDataModule):
    """Oxford Flowers-17 as ``image_size`` x ``image_size`` RGB images, official splits."""

    name = "flowers17"
    class_names = CLASS_NAMES
    resources = {
        ARCHIVE: "b59a65d8d1a99cd66944d474e1289eab",
        SPLITS_FILE: "4828cddfd0d803c5abbdebcb1e148a1e",
    }

    def __init__(
        self, image_size: int = 64, split_id: int = 1, mirrors: Sequence[str] = (), **kwargs
    ):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.split_id = split_id
        self.mirrors = list(mirrors)
        self._images: Optional[np.ndarray] = None
        self._split_file: Optional[Path] = None
        self._archive: Optional[Path] = None

    @property
    def cache_path(self) -> Path:
        return Path(self.dir) / f"flowers17_{self.image_size}.npz"

    def prepare_data(self) -> None:
        if self._images is not None:
            return
        side = self.image_size
        check_fits(
            NUM_IMAGES * side * side * 3,
            f"Flowers-17 at data.image_size={side} ({NUM_IMAGES:,} images of {side}x{side}x3)",
            "choose a smaller data.image_size, e.g. 64",
        )
        found = fetch(self.resources, self.mirrors, Path(self.dir))
        archive, self._split_file = found[ARCHIVE], found[SPLITS_FILE]
        self._archive = archive
        shape = (NUM_IMAGES, self.image_size, self.image_size, 3)
        images = load_cache(self.cache_path, archive, shape)
        if images is None:
            images = self._decode_and_cache(archive)
        self._images = images

    def source(self) -> tuple[str, str]:
        if self._archive is None:
            return super().source()
        return "local", f"{self._archive.resolve()}, {Path(self._split_file).resolve()}"

    def _decode_and_cache(self, archive: Path) -> np.ndarray:
        start = time.perf_counter()
        try:
            images = decode_archive(archive, Path(self.dir), self.image_size)
            save_cache(self.cache_path, images, archive)
        except OSError as err:  # read-only folder, disk full: the photos are unpacked there
            raise DataError(
                f"Cannot write the decoded photos in {self.dir} ({err.strerror or err}); "
                "point data.dir at a writable folder with some 100 MB free."
            ) from None
        log.info(
            "Decoded %s photos to %dx%d in %.1f s; cached in %s",
            f"{NUM_IMAGES:,}",
            self.image_size,
            self.image_size,
            time.perf_counter() - start,
            self.cache_path,
        )
        return images

    def load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        self.prepare_data()
        ids = read_split_ids(self._split_file, self.split_id)
        return {split: (self._images[i - 1], labels_of(i)) for split, i in ids.items()}
