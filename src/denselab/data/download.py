"""Fetching dataset files: look where they may already be, else download and verify.

Downloads go through pooch, which writes to a temporary file in the target folder and moves
it into place only after the checksum matched: an interrupted or corrupt download never
leaves a file that a later run could mistake for the real one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import pooch

from denselab.errors import DataError, first_line

log = logging.getLogger(__name__)


def download(filename: str, md5: str, mirrors: Sequence[str], folder: Path) -> Path:
    """Download ``filename`` into ``folder`` from the first mirror that serves it with the
    right MD5. Raises DataError saying, per URL, why it failed."""
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        log.info("Downloading %s", url)
        try:
            with _pooch_quiet():  # its own "Downloading data from ..." says the same again
                return Path(
                    pooch.retrieve(
                        url, known_hash=f"md5:{md5}", fname=filename, path=folder, progressbar=True
                    )
                )
        except ValueError as err:  # pooch's checksum mismatch
            failures.append(f"{url}: checksum mismatch ({first_line(err)})")
        except Exception as err:  # network errors of every kind: try the next mirror
            failures.append(f"{url}: {_reason(err)}")
    raise DataError("; ".join(failures) if failures else "no mirrors configured")


@contextlib.contextmanager
def _pooch_quiet() -> Iterator[None]:
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def fetch(
    resources: Mapping[str, str],
    mirrors: Sequence[str],
    folder: Path,
    system_dirs: Sequence[str] = (),
) -> dict[str, Path]:
    """The path of each file in ``resources`` (name -> MD5): found in ``folder``, else in
    a system folder, else downloaded into ``folder``.

    Files found on disk are trusted without a checksum (Debian's re-compressed copies
    differ from the originals); the caller checks their structure when it reads them.
    Raises DataError naming every file still missing, where to put them, and why the
    download failed; a folder made for the download is removed again if it stayed empty.
    """
    folder = folder.absolute()  # messages name the folder wherever the user started
    paths = {name: _find(name, folder, system_dirs) for name in resources}
    missing = [name for name, path in paths.items() if path is None]
    if not missing:
        return paths

    made = _first_missing_ancestor(folder)
    _writable_or_refuse(folder, missing, made)
    for name in missing:
        try:
            paths[name] = download(name, resources[name], mirrors, folder)
        except DataError as err:
            still_missing = [n for n in missing if paths[n] is None]
            if made is not None and not any(p.is_file() for p in made.rglob("*")):
                shutil.rmtree(made)
            raise DataError(
                f"{', '.join(still_missing)} {'is' if len(still_missing) == 1 else 'are'} "
                f"not in {folder} and could not be downloaded ({err}). Put "
                f"{'it' if len(still_missing) == 1 else 'them'} in {folder} by hand, or point "
                "data.dir at a folder that has them; without a network, data=digits (bundled "
                "with scikit-learn) and data=fashion_mnist (with Debian's dataset-fashion-mnist "
                "package) train offline."
            ) from None
    return paths


def _writable_or_refuse(folder: Path, missing: Sequence[str], made: Optional[Path]) -> None:
    """Make ``folder`` and check that a download can be written into it: a read-only or
    forbidden folder is one sentence, not every mirror's failure to save."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".denselab-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        if made is not None and made.is_dir() and not any(made.rglob("*")):
            shutil.rmtree(made, ignore_errors=True)
        why = os.strerror(err.errno) if err.errno else str(err)
        raise DataError(
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in {folder}, "
            f"which cannot be written to download {'it' if len(missing) == 1 else 'them'} "
            f"({why}); make it writable, or point data.dir at a folder you can write or that "
            "has them."
        ) from None


def _find(name: str, folder: Path, system_dirs: Sequence[str]) -> Optional[Path]:
    for candidate in (folder / name, *(Path(d) / name for d in system_dirs)):
        if candidate.is_file():
            return candidate
    return None


def _first_missing_ancestor(folder: Path) -> Optional[Path]:
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    return missing[-1] if missing else None


def _reason(err: Exception) -> str:
    """A few words on why a download failed (requests' own messages run to paragraphs)."""
    import requests

    if isinstance(err, requests.HTTPError) and err.response is not None:
        return f"HTTP {err.response.status_code}"
    if isinstance(err, requests.Timeout):
        return "timed out"
    if isinstance(err, requests.ConnectionError):
        return "could not connect"
    return f"{type(err).__name__}: {first_line(err)}"
