"""Reading files a user (or anyone who can write to the data folder) may have made hostile.

Every file this tool reads from the dataset or the output folder comes through here, so that:

- only a regular file is read: a FIFO would block the run forever, ``/dev/zero`` behind a symlink
  would never end. The file is opened non-blocking (a FIFO's open then returns at once) and
  checked with ``fstat`` on the open descriptor, so a swap between a check and the open cannot
  slip a special file through;
- its size is checked against a cap before a byte is read, and never more than the cap is read
  (a file that grows meanwhile is cut off and refused), so a 6 GB sparse ``.jpg`` costs nothing;
- JSON nested deeper than ``MAX_JSON_DEPTH`` is refused with one line: Python's parser raises
  ``RecursionError`` at about 1,000 levels, and its pretty-printer at fewer, long before that.

And the one rule for naming a file or folder after an actor (``actor_file_name``), whose name
may hold anything a folder name can.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 64 * MIB
MAX_JSON_DEPTH = 64

_FILE_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def actor_file_name(actor: str, digest_length: int) -> str:
    """``<readable>-<hex>``: safe on every file system and in a URL, unique per actor name (the
    first ``digest_length`` hex digits of ``name_digest``). Report pages and verdict folders are
    named so: a change orphans them."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", actor).strip("._")[:60]
    return f"{readable or 'actor'}-{name_digest(actor)[:digest_length]}"


def name_digest(name: str) -> str:
    """SHA-256 hex of a name as UTF-8 (a lone surrogate of an undecodable folder name too)."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


class UnreadableFile(Exception):
    """Why a file cannot be read, in a few words (no path: callers name the file)."""


def read_regular_file(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; FileNotFoundError if it is missing.

    Anything else that stops the read is ``UnreadableFile`` with the reason.
    """
    return read_regular_file_and_stat(path, max_bytes)[0]


def read_regular_file_and_stat(
    path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[bytes, os.stat_result]:
    """``read_regular_file``, and the file's stat from before the read (to see it replaced)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if os.path.islink(path):
            raise UnreadableFile("a symlink to a missing file") from None
        raise
    except OSError as error:
        raise UnreadableFile(_os_reason(error)) from None
    with os.fdopen(descriptor, "rb") as handle:
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise UnreadableFile(f"not a regular file ({file_kind(info.st_mode)})")
            if info.st_size > max_bytes:
                raise UnreadableFile(too_large(info.st_size, max_bytes))
            data = handle.read(info.st_size + 1)  # no buffer of max_bytes for a small file
            if len(data) > info.st_size:  # it grew since fstat: read on, up to the cap
                data += handle.read(max_bytes + 1 - len(data))
        except OSError as error:
            raise UnreadableFile(_os_reason(error)) from None
    if len(data) > max_bytes:
        raise UnreadableFile(too_large(len(data), max_bytes))
    return data, info


def file_kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "a special file")


def too_large(size: int, max_bytes: int) -> str:
    return f"{size:,} bytes is over the {max_bytes:,}-byte limit (limits.max_file_mib)"


def parse_json(
    data: bytes | str,
    *,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
    parse_constant: Callable[[str], Any] | None = None,
) -> Any:
    """``json.loads``, but a document nested too deeply is a ValueError, never a RecursionError."""
    try:
        document = json.loads(
            data, object_pairs_hook=object_pairs_hook, parse_constant=parse_constant
        )
    except RecursionError:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep") from None
    if _depth_over(document, MAX_JSON_DEPTH):
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    return document


def _depth_over(document: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit``; iterative, so any depth is safe to check."""
    pending = [(document, 1)] if isinstance(document, dict | list) else []
    while pending:
        value, depth = pending.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        pending += [(child, depth + 1) for child in children if isinstance(child, dict | list)]
    return False


def _os_reason(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "a symlink loop"
    return error.strerror or type(error).__name__
