"""The evaluation cache of a sharded run: a folder per actor, safe on NFS.

SQLite's locks are not reliable over NFS, so a sharded run does not share the SQLite database.
Each actor has its own folder, ``cache/actors/<aa>/<name>-<hash>/``, holding ``verdicts.json``
(its verdicts by image content and settings, replaced by an atomic rename, atomic on NFS too;
not fsynced, the cache is derived data) and the re-crop check's pair cache. An actor belongs to
one shard, so one process writes its folder at a time and no lock is needed; if two ever did,
the last whole file wins: a cache miss at worst, never a wrong verdict, because each entry's key
names the image bytes and the evaluator settings. Per actor it is one read and one write of
``verdicts.json``, as with SQLite; a rerun with another N finds an actor's cache wherever the
actor went.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training_data.atomic import write_bytes_atomic
from training_data.errors import FatalRunError, is_disk_full
from training_data.evaluation import (
    CachedVerdict,
    _verdict_from_json,
    _verdict_to_json,
    make_cache_folder,
)
from training_data.files import (
    UnreadableFile,
    actor_file_name,
    name_digest,
    parse_json,
    read_regular_file,
)

ACTOR_CACHE_DIR = "actors"
VERDICTS_FILE = "verdicts.json"
FOLDER_DIGEST_LENGTH = 16


class ActorVerdictFiles:
    """The cache folder of a sharded run: ``for_actor`` gives one actor's file."""

    def __init__(self, cache_dir: Path) -> None:
        self.folder = Path(cache_dir) / ACTOR_CACHE_DIR
        make_cache_folder(self.folder)

    def for_actor(self, actor_name: str) -> ActorVerdictFile:
        bucket = name_digest(actor_name)[:2]
        folder = self.folder / bucket / actor_file_name(actor_name, FOLDER_DIGEST_LENGTH)
        make_cache_folder(folder)
        return ActorVerdictFile(folder)


class ActorVerdictFile:
    """One actor's verdicts; the same calls and ``folder`` as ``EvaluationCache``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # the re-crop pair cache goes here too
        self.path = folder / VERDICTS_FILE
        self._entries: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        if self._entries is None:
            try:
                document = parse_json(read_regular_file(self.path))
            except (OSError, ValueError, UnreadableFile):
                document = {}  # missing, torn or not a regular file: misses, evaluated again
            self._entries = document if isinstance(document, dict) else {}
        return self._entries

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedVerdict]:
        entries = self._read()
        verdicts = {}
        for key in keys:
            verdict = _verdict_from_json(entries[key]) if key in entries else None
            if verdict is not None:
                verdicts[key] = verdict
        return verdicts

    def put_many(self, verdicts: Mapping[str, CachedVerdict]) -> None:
        if not verdicts:
            return
        entries = dict(self._read())
        entries.update({key: _verdict_to_json(verdict) for key, verdict in verdicts.items()})
        try:
            data = json.dumps(entries, separators=(",", ":")).encode()
            write_bytes_atomic(self.path, data, durable=False)
        except OSError as error:
            if is_disk_full(error):
                raise
            raise FatalRunError(
                f"cannot write the evaluation cache {self.path}: {error.strerror or error}"
            ) from None
        self._entries = entries
