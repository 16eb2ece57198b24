"""Any image dataset in the course's own format: a metadata CSV beside a .npy image array.

The CSV has one row per image, in the array's order:

- ``obs_id``: the image's identifier (text, unique);
- ``train_id``: ``train``, ``valid`` or ``test``;
- ``class``: an integer label, or empty (or NA) when the label is hidden, as in a class
  competition's test set: such rows are predicted after training, never scored;
- ``class_name`` (optional): the name of the row's class.

The array (``numpy.save``) is (N, H, W) or (N, H, W, C), uint8 or float in [0, 1]. Labels
may start at 0 or 1 or anywhere: the sorted distinct labels become classes 0..K-1, and
tables and figures show the original labels (or their ``class_name``).

The array is never loaded whole: its header says how many bytes the splits will take (the
run stops with a sentence if they cannot fit), then each split's rows are copied out of the
memory-mapped file (:mod:`denselab.data.npy`), so the images are held once, as stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from denselab.data.base import ImageDataModule, Unlabeled, split_indices, stored_pixels
from denselab.data.memory import check_fits
from denselab.data.npy import NpyHeader, gather_rows, read_header
from denselab.errors import DataError, first_line

REQUIRED_COLUMNS = ("obs_id", "train_id", "class")
# train_id word -> split name
SPLIT_WORDS = {"train": "train", "valid": "val", "test": "test"}
# What a hidden label looks like in a CSV written by pandas (empty) or R (NA).
HIDDEN_MARKERS = {"", "na", "nan", "null", "none"}


def csv_row(index: int) -> int:
    """The line of the CSV that holds data row ``index`` (line 1 is the header)."""
    return int(index) + 2


def read_metadata(path: Path) -> pd.DataFrame:
    """The CSV as columns obs_id, split (train/val/test), label (float, NaN when hidden),
    class_name (text, maybe empty)."""
    if not path.is_file():
        raise DataError(
            f"The metadata CSV {path} does not exist; point data.dir at the folder that holds "
            "metadata.csv and images.npy, or set data.csv to the CSV's path."
        )
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read as a CSV file ({first_line(err)}).") from None
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)}; a metadata CSV needs obs_id, "
            "train_id and class (and may have class_name)."
        )
    duplicated = table["obs_id"][table["obs_id"].duplicated()]
    if len(duplicated):
        raise DataError(
            f"{path}: obs_id {duplicated.iloc[0]!r} appears more than once (line "
            f"{csv_row(duplicated.index[0])}); each image needs its own obs_id."
        )
    names = table["class_name"] if "class_name" in table.columns else ""
    return pd.DataFrame(
        {
            "obs_id": table["obs_id"],
            "split": _splits(table["train_id"], path),
            "label": _labels(table["class"], path),
            "class_name": pd.Series(names, index=table.index, dtype=str).str.strip(),
        }
    )


def _splits(words: pd.Series, path: Path) -> pd.Series:
    words = words.str.strip().str.lower()
    unknown = words[~words.isin(SPLIT_WORDS)]
    if len(unknown):
        raise DataError(
            f"{path}: train_id must be train, valid or test, but line {csv_row(unknown.index[0])}"
            f" says {unknown.iloc[0]!r} ({len(unknown):,} such rows)."
        )
    return words.map(SPLIT_WORDS)


def _labels(text: pd.Series, path: Path) -> pd.Series:
    text = text.str.strip()
    hidden = text.str.lower().isin(HIDDEN_MARKERS)
    numbers = pd.to_numeric(text.where(~hidden), errors="coerce")
    bad = ~hidden & (numbers.isna() | (numbers != numbers.round()))
    if bad.any():
        first = bad.idxmax()
        raise DataError(
            f"{path}: class must be an integer label (or empty when hidden), but line "
            f"{csv_row(first)} says {text[first]!r} ({int(bad.sum()):,} such rows)."
        )
    return numbers.astype(float)


def read_image_header(path: Path) -> NpyHeader:
    """The .npy header of the image array, checked for shape and pixel type (the pixels
    themselves are read later, split by split)."""
    if not path.is_file():
        raise DataError(
            f"The image array {path} does not exist; point data.dir at the folder that holds "
            "metadata.csv and images.npy, or set data.images to the array's path."
        )
    header = read_header(path)
    if len(header.shape) not in (3, 4) or header.shape[0] == 0:
        raise DataError(
            f"{path} holds an array of shape {header.shape}; images must be (N, H, W) or "
            "(N, H, W, C) with N > 0."
        )
    if header.dtype != np.uint8 and not np.issubdtype(header.dtype, np.floating):
        raise DataError(
            f"{path} holds {header.dtype} pixels; images must be uint8 (0-255) or float in [0, 1]."
        )
    return header


def held_dtype(stored: np.dtype) -> np.dtype:
    """The dtype a split holds: uint8 as stored, floats as float32 (what the network uses)."""
    return np.dtype(np.uint8) if stored == np.uint8 else np.dtype(np.float32)


def check_float_range(path: Path, arrays) -> None:
    """DataError unless float pixels lie in [0, 1] (uint8 ones always do)."""
    arrays = [a for a in arrays if a.dtype != np.uint8 and a.size]
    if not arrays:
        return
    low = np.min([np.min(a) for a in arrays])  # NaN propagates
    high = np.max([np.max(a) for a in arrays])
    if not (0.0 <= low and high <= 1.0):  # also false for NaN
        raise DataError(
            f"{path} holds float pixels from {low} to {high}; float images must lie in "
            "[0, 1]: divide them by their maximum (e.g. 255), or save them as uint8."
        )


def class_table(metadata: pd.DataFrame, path: Path) -> tuple[list[int], list[str]]:
    """The distinct labels of the labelled rows, sorted, and each one's name."""
    labelled = metadata[metadata["label"].notna()]
    labels = sorted(int(v) for v in labelled["label"].unique())
    if len(labels) < 2:
        raise DataError(
            f"{path} has {len(labels)} distinct class label(s) among its labelled rows; a "
            "classifier needs at least two."
        )
    names = []
    for label in labels:
        given = labelled.loc[labelled["label"] == label, "class_name"]
        distinct = sorted(set(given) - {""})
        if len(distinct) > 1:
            raise DataError(
                f"{path}: class {label} has several class_name values ({', '.join(distinct)});"
                " give each class one name."
            )
        names.append(distinct[0] if distinct else str(label))
    return labels, names


class ImageTableDataModule(ImageDataModule):
    """Images from a .npy array, labels and splits from a metadata CSV (see the module)."""

    name = "image_table"

    def __init__(self, csv: str, images: str, **kwargs):
        super().__init__(**kwargs)
        self.csv_path = Path(csv)
        self.images_path = Path(images)
        self.class_names: tuple[str, ...] = ()
        self._class_labels: tuple[int, ...] = ()

    @property
    def class_labels(self) -> tuple[int, ...]:
        return self._class_labels

    def source(self) -> tuple[str, str]:
        return "local", f"{self.csv_path.resolve()}, {self.images_path.resolve()}"

    def load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """train, val and (if it has labelled rows) test; hidden rows go to ``unlabeled``.

        Without labelled ``valid`` rows, ``val_fraction`` of the train rows are held out.
        """
        header = read_image_header(self.images_path)
        n, shape = header.shape[0], "x".join(map(str, header.shape[1:]))
        dtype = held_dtype(header.dtype)
        check_fits(
            header.nbytes // header.dtype.itemsize * dtype.itemsize,
            f"{self.images_path} ({n:,} images of {shape}, held as {dtype})",
            "use fewer images (fewer rows in the CSV and the array) or smaller ones (resize "
            "them before numpy.save), or train on a machine with more memory",
        )
        metadata = read_metadata(self.csv_path)
        if n != len(metadata):
            raise DataError(
                f"{self.images_path} holds {n:,} images but {self.csv_path} has "
                f"{len(metadata):,} rows; the array's rows must follow the CSV's, one per image."
            )
        labels, names = class_table(metadata, self.csv_path)
        self._class_labels, self.class_names = tuple(labels), tuple(names)

        hidden = metadata["label"].isna().to_numpy()
        y = np.searchsorted(labels, metadata["label"].fillna(labels[0]).to_numpy())
        split = metadata["split"].to_numpy()
        rows = {s: np.flatnonzero(~hidden & (split == s)) for s in SPLIT_WORDS.values()}
        if len(rows["train"]) == 0:
            raise DataError(
                f"{self.csv_path} has no labelled rows with train_id train; give the model "
                "some images to learn from."
            )
        if len(rows["val"]) == 0:
            keep, held_out = split_indices(len(rows["train"]), self.val_fraction, self.seed)
            rows["train"], rows["val"] = rows["train"][keep], rows["train"][held_out]

        groups = {s: r for s, r in rows.items() if len(r)}
        if hidden.any():
            groups["unlabeled"] = np.flatnonzero(hidden)
        images = gather_rows(self.images_path, header, groups, dtype)
        check_float_range(self.images_path, images.values())
        if hidden.any():
            obs_ids = metadata["obs_id"][hidden].tolist()
            self.unlabeled = Unlabeled(stored_pixels(images.pop("unlabeled")), obs_ids)
        return {s: (images[s], y[r]) for s, r in rows.items() if len(r)}
