"""Crash-safe file replacement: a reader or a crash at any instant sees the old or the new file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tmp-"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_current_umask()  # what open() would give; mkstemp alone gives 0600


def write_bytes_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write to a temp file in the same folder, fsync it, then ``os.replace`` it into place.

    ``durable=False``: no fsync (4 ms a file here), for files a crash may lose but must never
    show half written."""
    path = Path(path)
    handle, temp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as temp:
            os.fchmod(temp.fileno(), FILE_MODE)
            temp.write(data)
            if durable:
                temp.flush()
                os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def json_bytes(text: str) -> bytes:
    """UTF-8 bytes of JSON text. A name that is not UTF-8 (its bytes kept by Python as lone
    surrogates, which only occur inside JSON strings) becomes a ``\\udcff`` escape, which
    ``json.loads`` reads back exactly."""
    return text.encode("utf-8", "backslashreplace")


def write_json_atomic(path: Path, document: Any) -> None:
    write_bytes_atomic(path, json_bytes(json.dumps(document, indent=2, ensure_ascii=False) + "\n"))


def sweep_temp_files(folder: Path) -> list[Path]:
    """Remove temp files a killed process left behind in ``folder``."""
    swept = []
    for leftover in Path(folder).glob(f"{TEMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)
        swept.append(leftover)
    return swept


def fsync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
