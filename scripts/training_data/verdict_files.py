"""The evaluation cache of a sharded run: one JSON file per actor, safe on NFS.

SQLite's locks are not reliable over NFS, so a sharded run does not use
the SQLite database. It keeps one small JSON file per actor, ``cache/actors/<aa>/<slug>.json``
(the actor's verdicts by image content and settings), replaced by an atomic rename (atomic on
NFS too; not fsynced, the cache is derived data). An actor belongs to one shard, so one process
writes its file at a time; if two ever did, the last whole file wins: a cache miss at worst,
never a wrong verdict, because each entry's key names the image bytes and the evaluator
settings. Per actor it is one read and one write, as with SQLite.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training_data.errors import FatalRunError, is_disk_full
from training_data.evaluation import CachedVerdict, _verdict_from_json, _verdict_to_json
from training_data.review_site import publish

ACTOR_CACHE_DIR = "actors"


class ActorVerdictFiles:
    """The cache folder of a sharded run: ``for_actor`` gives one actor's file."""

    def __init__(self, cache_dir: Path) -> None:
        self.folder = Path(cache_dir) / ACTOR_CACHE_DIR
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise FatalRunError(
                f"cannot create the evaluation cache {self.folder}: {error.strerror or error}"
            ) from None

    def for_actor(self, actor_name: str) -> ActorVerdictFile:
        digest = hashlib.sha256(actor_name.encode("utf-8", "surrogatepass")).hexdigest()
        readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", actor_name).strip("._")[:60] or "actor"
        return ActorVerdictFile(self.folder / digest[:2] / f"{readable}-{digest[:16]}.json")


class ActorVerdictFile:
    """One actor's verdicts; the same two calls as ``EvaluationCache``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        if self._entries is None:
            try:
                document = json.loads(self.path.read_bytes())
            except (OSError, ValueError):
                document = {}  # missing or torn: misses, evaluated again
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
            self.path.parent.mkdir(exist_ok=True)
            publish(self.path, json.dumps(entries, separators=(",", ":")).encode())
        except OSError as error:
            if is_disk_full(error):
                raise
            raise FatalRunError(
                f"cannot write the evaluation cache {self.path}: {error.strerror or error}"
            ) from None
        self._entries = entries
