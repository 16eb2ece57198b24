"""Fetching dataset files: look where they may already be, else download and verify.

Downloads go through pooch, which writes to a temporary file in the target folder and moves
it into place only after the checksum matched: an interrupted or corrupt download never
leaves a file that a later run could mistake for the real one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pooch

from denselab.errors import DataError

log = logging.getLogger(__name__)


def download(filename: str, md5: str, mirrors: Sequence[str], folder: Path) -> Path:
    """Download ``filename`` from the first mirror that serves it with the right MD5.

    Raises DataError naming every URL tried and how to put the file in place by hand.
    """
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        log.info("Downloading %s", url)
        try:
            path = pooch.retrieve(
                url,
                known_hash=f"md5:{md5}",
                fname=filename,
                path=folder,
                progressbar=True,
            )
            return Path(path)
        except ValueError as err:  # pooch's checksum mismatch
            failures.append(f"{url}: checksum mismatch ({_first_line(err)})")
        except Exception as err:  # network errors of every kind: try the next mirror
            failures.append(f"{url}: {type(err).__name__}: {_first_line(err)}")
    tried = "; ".join(failures) if failures else "no mirrors configured"
    raise DataError(
        f"{filename} is not in {folder} and could not be downloaded ({tried}). "
        f"Put the file in {folder} by hand, or point data.dir at a folder that has it."
    )


def find_or_download(
    filename: str,
    md5: str,
    mirrors: Sequence[str],
    folder: Path,
    system_dirs: Sequence[str] = (),
) -> Path:
    """The path of ``filename``: from ``folder``, else a system folder, else downloaded.

    Files found on disk are trusted without a checksum (Debian's re-compressed copies
    differ from the originals); the caller checks their structure when it reads them.
    """
    local = folder / filename
    if local.is_file():
        return local
    for system_dir in system_dirs:
        candidate = Path(system_dir) / filename
        if candidate.is_file():
            log.info("Using %s", candidate)
            return candidate
    return download(filename, md5, mirrors, folder)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no details"

