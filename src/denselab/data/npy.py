"""A .npy image array read row by row from a memory map, never held twice.

:func:`read_header` reads only the header (shape, dtype, where the data starts), so the
bytes a dataset needs are known before any of them are read. :func:`gather_rows` copies
groups of rows (the splits) out of the memory-mapped file in chunks and hands each chunk's
pages back to the kernel once copied: mapped file pages count as the process's resident
memory, so copying a whole mapped array would peak at twice its size.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from denselab.errors import DataError, first_line

# Rows are copied in chunks of about this many bytes; the chunk is all that is ever mapped
# and resident beside the copies.
CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class NpyHeader:
    """What a .npy file's header says: the array's shape, dtype, layout and data offset."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_header(path: Path) -> NpyHeader:
    """The header of the .npy file at ``path``; DataError if it is not one."""
    with open(path, "rb") as f:
        if f.read(2) == b"PK":  # np.savez writes a zip archive
            raise DataError(
                f"{path} is an .npz archive, not one array; save the images with numpy.save."
            )
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not read")
        except (ValueError, EOFError) as err:
            raise DataError(
                f"{path} cannot be loaded as a NumPy array without pickle ({first_line(err)}); "
                "save the images with numpy.save as a uint8 or float array."
            ) from None
        offset = f.tell()
    header = NpyHeader(tuple(int(s) for s in shape), np.dtype(dtype), fortran_order, offset)
    if header.dtype.hasobject:
        raise DataError(
            f"{path} cannot be loaded as a NumPy array without pickle (it holds Python "
            "objects); save the images with numpy.save as a uint8 or float array."
        )
    return header


def check_length(path: Path, header: NpyHeader) -> None:
    """DataError if the file is shorter than its header promises (a cut-off copy)."""
    size = path.stat().st_size
    if size < header.offset + header.nbytes:
        raise DataError(
            f"{path} holds {size - header.offset:,} data bytes but its header promises "
            f"{header.nbytes:,} for shape {header.shape}; the file is truncated: copy or save "
            "it again."
        )


def gather_rows(
    path: Path, header: NpyHeader, groups: dict[str, np.ndarray], dtype: np.dtype
) -> dict[str, np.ndarray]:
    """Name -> the rows ``groups[name]`` (indices into the array) as a new ``dtype`` array,
    in the order given. One pass over the file in row order; see the module."""
    check_length(path, header)
    row_shape = header.shape[1:]
    out = {name: np.empty((len(rows), *row_shape), dtype) for name, rows in groups.items()}
    if header.nbytes == 0:
        return out
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    array = np.ndarray(
        header.shape,
        header.dtype,
        buffer=mapped,
        offset=header.offset,
        order="F" if header.fortran_order else "C",
    )
    try:
        _copy_in_chunks(array, mapped, header, groups, out)
    finally:
        del array
        try:
            mapped.close()
        except BufferError:  # a traceback still holds the array: the map goes with it
            pass
    return out


def _copy_in_chunks(array, mapped, header, groups, out) -> None:
    n = header.shape[0]
    row_bytes = max(1, header.nbytes // n)
    rows_per_chunk = max(1, CHUNK_BYTES // row_bytes)
    # For each group: its rows sorted, and where each goes in the output.
    order = {name: np.argsort(rows, kind="stable") for name, rows in groups.items()}
    sorted_rows = {name: groups[name][order[name]] for name in groups}
    released = 0
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        for name, rows in sorted_rows.items():
            lo, hi = np.searchsorted(rows, [start, stop])
            if hi > lo:
                out[name][order[name][lo:hi]] = array[rows[lo:hi]]
        if not header.fortran_order:  # C order: rows [start, stop) are one byte range
            released = _release(mapped, released, header.offset + stop * row_bytes)


def _release(mapped: mmap.mmap, start: int, end: int) -> int:
    """Drop the pages of bytes [start, end) from this process's resident set (they stay in
    the page cache, and would be read again if touched); returns where the next call starts."""
    end -= end % mmap.PAGESIZE
    if end > start and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED, start, end - start)
        return end
    return start
