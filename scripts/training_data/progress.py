"""The progress store: which actors are done, durable after each one, one run per folder.

Files in the output folder:

- ``progress.json``: the guide's document, always replaced atomically, so it is whole at every
  instant. At 100k actors it is megabytes, too dear to rewrite for every actor, so:
- ``progress.journal``: the events since progress.json was last written, one JSON line each,
  appended with a single ``os.write`` on an ``O_APPEND`` descriptor before ``mark_*`` returns, so
  a killed process cannot lose it. A background thread fdatasyncs the journal as soon as an
  outcome is appended (group commit: a power cut can only lose outcomes of the last few
  milliseconds, which then run again), and folds the journal into progress.json at most once per
  ``fold_interval`` seconds; ``close`` folds it for good. Readers apply it on top of
  progress.json; replaying an event twice changes nothing, so a crash between the two steps of a
  fold loses nothing.
- ``progress.lock``: a filelock (flock, released by the OS when a run dies), and
  ``progress.lock.holder``: who holds it, for the "another run is going" message. ``RunLock``
  is that pair, also used to hold a dataset while an execute run changes it.

Every file is read as hostile input (files.py): only a regular file, at most
``limits.max_file_mib``, JSON of bounded depth; anything else is the usual one-line error that
points at --reset-progress, which moves the file aside whatever it is.

Why the journal. At 100k actors progress.json is 3.3 MB and one atomic rewrite (temp file, fsync,
``os.replace``) costs 45-80 ms, far over the 2 ms per actor that bookkeeping may cost; one inline
fdatasync per outcome was measured at 0.2-4 ms on a busy shared disk, hence the group commit in
the background thread. Measured with scripts/bench_progress.py (2 shared cores, load ~3.5; ms;
two runs as A / B)::

    actors    file MB  one full rewrite  mark_started+mark_completed mean  p99          paced mean
    1,000     0.03     2.4 / 11.1        0.10 / 0.17                       0.32 / 4.2   0.25 / 0.30
    10,000    0.33     6.1 / 7.1         0.09 / 0.13                       0.38 / 0.32  1.0 / 0.34
    100,000   3.30     81 / 45           0.11 / 0.12                       0.42 / 0.34  0.22 / 0.60

"Paced" leaves a gap after each actor so every actor's marks coincide with a full fold, as when
real actors take seconds each. Limit: a power cut (not a process crash) can lose the outcomes of
the last few milliseconds; those actors run again on resume.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import glob
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training_data.atomic import (
    fsync_folder,
    json_bytes,
    sweep_temp_files,
    write_bytes_atomic,
    write_json_atomic,
)
from training_data.files import (
    DEFAULT_MAX_FILE_BYTES,
    UnreadableFile,
    parse_json,
    read_regular_file,
    read_regular_file_and_stat,
)
from training_data.wording import plural

PROGRESS_FILE = "progress.json"
JOURNAL_FILE = "progress.journal"
LOCK_FILE = "progress.lock"
HOLDER_FILE = "progress.lock.holder"
SCHEMA_VERSION = 1
MODES = ("dry_run", "execute")
RULE = "=" * 70

_MODE_NAMES = {"dry_run": "a dry-run", "execute": "an execute run"}
_SETTINGS_ORDER = ("targets", "categories", "evaluator", "generator")
_START_OVER = "run --reset-progress or add --no-resume to start over"
_sync = getattr(os, "fdatasync", os.fsync)


class ProgressError(Exception):
    """Progress cannot be read, kept or trusted: one line that says what to do; exit 2."""


class LockHeld(ProgressError):
    """Another run holds this output folder."""


class TrackerClosed(ProgressError):
    """An outcome arrived after ``close`` (or before ``start``): it was not recorded."""


def now_iso() -> str:
    """ISO 8601 local time with its UTC offset, so a reader never guesses the zone."""
    return datetime.now().astimezone().isoformat()


@dataclass(kw_only=True)
class ProgressState:
    """What progress.json says, with the journal applied. Change it only through ``record_*``.

    ``missing_actors`` are recorded actors that are not in this run's dataset: they are kept (so
    they are not redone if they come back) but left out of the run's counts.
    """

    version: int = SCHEMA_VERSION
    mode: str
    settings: dict[str, Any]
    started_at: str
    last_updated: str
    total_count: int
    completed: list[str] = field(default_factory=list)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    current_actor: str | None = None
    in_flight: list[str] = field(default_factory=list)  # started, not yet recorded (workers)
    missing_actors: list[str] = field(default_factory=list)
    actor_states: dict[str, str] = field(default_factory=dict)
    _completed_set: set[str] | None = field(init=False, repr=False, compare=False)
    _missing_set: set[str] = field(init=False, repr=False, compare=False)
    _missing_counts: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._completed_set = None
        self._recount_missing()

    @property
    def _completed_names(self) -> set[str]:
        """Built on first use, so that a snapshot (``copy``) costs one list copy, not a set."""
        if self._completed_set is None:
            self._completed_set = set(self.completed)
        return self._completed_set

    # --- the run's numbers (actors of this run only) ---

    @property
    def completed_in_run(self) -> int:
        return len(self.completed) - self._missing_counts[0]

    @property
    def failed_in_run(self) -> int:
        return len(self.failed) - self._missing_counts[1]

    @property
    def skipped_in_run(self) -> int:
        return len(self.skipped) - self._missing_counts[2]

    @property
    def remaining(self) -> int:
        done = self.completed_in_run + self.failed_in_run + self.skipped_in_run
        return max(0, self.total_count - done)

    @property
    def percent_complete(self) -> float:
        if self.total_count <= 0:
            return 0.0
        return 100.0 * self.completed_in_run / self.total_count

    @property
    def percent_done(self) -> float:
        """Completed, failed or skipped: the share the run has finished with (bar and banners)."""
        if self.total_count <= 0:
            return 0.0
        return 100.0 * (self.total_count - self.remaining) / self.total_count

    def is_recorded(self, name: str) -> bool:
        """Completed, failed or skipped: not pending."""
        return name in self._completed_names or name in self.failed or name in self.skipped

    # --- events; each sets an actor's outcome, so replaying one twice changes nothing ---

    def record_started(self, name: str, timestamp: str) -> None:
        self.current_actor = name
        if name not in self.in_flight:
            self.in_flight.append(name)
        self.last_updated = timestamp

    def record_completed(self, name: str, timestamp: str, state: str | None = None) -> None:
        if name not in self._completed_names:
            self._forget(name)
            self.completed.append(name)
            self._completed_names.add(name)
        if state is not None:
            self.actor_states[name] = state
        self._finish(name, timestamp)

    def record_failed(self, name: str, error: str, timestamp: str) -> None:
        self._forget(name, keep=self.failed)
        self.failed[name] = {"error": error, "timestamp": timestamp}
        self.actor_states[name] = "failed"
        self._finish(name, timestamp)

    def record_skipped(self, name: str, reason: str, timestamp: str) -> None:
        self._forget(name, keep=self.skipped)
        self.skipped[name] = {"reason": reason, "timestamp": timestamp}
        self.actor_states[name] = "skipped"
        self._finish(name, timestamp)

    def apply_event(self, event: Any) -> None:
        """Replay one journal line; ProgressError if it is not one this module writes."""
        if not isinstance(event, dict) or not all(
            isinstance(event.get(key), str) for key in ("event", "actor_id", "timestamp")
        ):
            raise ProgressError(f"not a progress event: {event!r:.80}")
        kind, name, timestamp = event["event"], event["actor_id"], event["timestamp"]
        detail = {"failed": "error", "skipped": "reason"}.get(kind)
        if detail is not None and not isinstance(event.get(detail), str):
            raise ProgressError(f"{kind} event without {detail}: {event!r:.80}")
        state = event.get("state")
        if state is not None and not isinstance(state, str):
            raise ProgressError(f"state must be a name: {event!r:.80}")
        if kind == "started":
            self.record_started(name, timestamp)
        elif kind == "completed":
            self.record_completed(name, timestamp, state)
        elif kind == "failed":
            self.record_failed(name, event["error"], timestamp)
        elif kind == "skipped":
            self.record_skipped(name, event["reason"], timestamp)
        else:
            raise ProgressError(f"unknown progress event {kind!r}")

    def _forget(self, name: str, keep: dict[str, dict[str, str]] | None = None) -> None:
        """Drop the actor's other outcomes; ``keep``'s entry is overwritten where it is."""
        if name in self._completed_names:
            self._completed_names.discard(name)
            self.completed.remove(name)
        for outcomes in (self.failed, self.skipped):
            if outcomes is not keep:
                outcomes.pop(name, None)
        self.actor_states.pop(name, None)
        if name in self._missing_set:
            self.missing_actors.remove(name)
            self._recount_missing()

    def _finish(self, name: str, timestamp: str) -> None:
        if name in self.in_flight:
            self.in_flight.remove(name)
        if self.current_actor == name:
            self.current_actor = self.in_flight[-1] if self.in_flight else None
        self.last_updated = timestamp

    def clear_in_flight(self) -> None:
        """No run is going: nothing is being processed."""
        self.current_actor = None
        self.in_flight = []

    def _recount_missing(self) -> None:
        gone = self._missing_set = set(self.missing_actors)
        if not gone:
            self._missing_counts = (0, 0, 0)
            return
        self._missing_counts = (
            sum(name in self._completed_names for name in gone),
            sum(name in self.failed for name in gone),
            sum(name in self.skipped for name in gone),
        )

    # --- runs ---

    @classmethod
    def fresh(
        cls, mode: str, settings: dict[str, Any], total_count: int, timestamp: str
    ) -> ProgressState:
        return cls(
            mode=mode,
            settings=settings,
            started_at=timestamp,
            last_updated=timestamp,
            total_count=total_count,
        )

    def resumed(self, actor_names: Sequence[str], retry_failed: bool, timestamp: str) -> None:
        """Fit the recorded progress to this run's actors (the dataset may have grown or shrunk)."""
        in_run = set(actor_names)
        if retry_failed:
            retried = [name for name in self.failed if name in in_run]
            self.failed = {name: e for name, e in self.failed.items() if name not in in_run}
            for name in retried:
                self.actor_states.pop(name, None)
        recorded = [*self.completed, *self.failed, *self.skipped]
        self.missing_actors = sorted({name for name in recorded if name not in in_run})
        self._recount_missing()
        self.total_count = len(actor_names)
        self.clear_in_flight()
        self.last_updated = timestamp

    def copy(self) -> ProgressState:
        """A snapshot the caller may keep while the tracker goes on (costs O(actors))."""
        twin = copy.copy(self)
        twin.settings = copy.deepcopy(self.settings)
        twin.completed = list(self.completed)
        twin.failed = dict(self.failed)
        twin.skipped = dict(self.skipped)
        twin.missing_actors = list(self.missing_actors)
        twin.actor_states = dict(self.actor_states)
        twin.in_flight = list(self.in_flight)
        twin._completed_set = None
        twin._missing_set = set(self._missing_set)
        return twin

    # --- the document ---

    def to_document(self) -> dict[str, Any]:
        """The guide's fields (``*_count`` count their lists) plus version, mode, settings."""
        return {
            "version": self.version,
            "mode": self.mode,
            "started_at": self.started_at,
            "last_updated": self.last_updated,
            "total_count": self.total_count,
            "completed_count": len(self.completed),
            "failed_count": len(self.failed),
            "skipped_count": len(self.skipped),
            "completed_actors": list(self.completed),
            "failed_actors": [{"actor_id": name, **e} for name, e in self.failed.items()],
            "skipped_actors": [{"actor_id": name, **e} for name, e in self.skipped.items()],
            "current_actor": self.current_actor,
            "actors_in_flight": list(self.in_flight),
            "missing_actors": list(self.missing_actors),
            "actor_states": dict(self.actor_states),
            "settings": self.settings,
        }

    @classmethod
    def from_document(cls, document: Any) -> ProgressState:
        """ProgressError saying what is wrong if ``document`` is not a progress document."""
        if not isinstance(document, dict):
            raise ProgressError(f"expected a JSON object, found {type(document).__name__}")
        version = document.get("version")
        if type(version) is not int:
            raise ProgressError("no schema version (not written by this tool)")
        if version > SCHEMA_VERSION:
            raise ProgressError(f"schema version {version} is from a newer version of this tool")
        if version != SCHEMA_VERSION:
            raise ProgressError(f"unknown schema version {version}")
        if document.get("mode") not in MODES:
            raise ProgressError(f"mode must be one of {', '.join(MODES)}")
        _expect(document, "settings", dict)
        for key in ("started_at", "last_updated"):
            _expect(document, key, str)
        total = _expect(document, "total_count", int)
        if total < 0:
            raise ProgressError("total_count is negative")
        current = document.get("current_actor")
        if current is not None and not isinstance(current, str):
            raise ProgressError("current_actor must be a name or null")
        return cls(
            mode=document["mode"],
            settings=document["settings"],
            started_at=document["started_at"],
            last_updated=document["last_updated"],
            total_count=total,
            completed=list(dict.fromkeys(_names(document, "completed_actors"))),
            failed=_outcomes(document, "failed_actors", "error"),
            skipped=_outcomes(document, "skipped_actors", "reason"),
            current_actor=current,
            in_flight=_names(document, "actors_in_flight")
            if "actors_in_flight" in document
            else [],
            missing_actors=_names(document, "missing_actors")
            if "missing_actors" in document
            else [],
            actor_states=_states(document) if "actor_states" in document else {},
        )


def _expect(document: dict[str, Any], key: str, kind: type) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProgressError(f"{key} must be {'an' if kind is int else 'a'} {kind.__name__}")
    return value


def _names(document: dict[str, Any], key: str) -> list[str]:
    names = _expect(document, key, list)
    if not all(isinstance(name, str) for name in names):
        raise ProgressError(f"{key} must list actor names")
    return names


def _states(document: dict[str, Any]) -> dict[str, str]:
    states = _expect(document, "actor_states", dict)
    if not all(isinstance(state, str) for state in states.values()):
        raise ProgressError("actor_states must map actor names to state names")
    return dict(states)


def _outcomes(document: dict[str, Any], key: str, detail: str) -> dict[str, dict[str, str]]:
    outcomes = {}
    for entry in _expect(document, key, list):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(field_name), str)
            for field_name in ("actor_id", detail, "timestamp")
        ):
            raise ProgressError(f"{key} entries need actor_id, {detail} and timestamp")
        outcomes[entry["actor_id"]] = {detail: entry[detail], "timestamp": entry["timestamp"]}
    return outcomes


def encode_document(document: dict[str, Any]) -> bytes:
    """``json.dumps(document, indent=2)``, byte for byte, at a fraction of the cost.

    With ``indent`` json falls back to its pure-Python encoder; the list of completed names (the
    only part that grows to 100k entries) is encoded by the C encoder with separators that yield
    the same layout.
    """
    large = {key: document[key] for key in ("completed_actors", "actor_states") if key in document}
    empty = {key: type(value)() for key, value in large.items()}
    text = json.dumps({**document, **empty}, indent=2, ensure_ascii=False)
    for key, value in large.items():
        if value:
            listed = json.dumps(value, ensure_ascii=False, separators=(",\n    ", ": "))
            opening, closing = listed[0], listed[-1]
            text = text.replace(
                f'\n  "{key}": {opening}{closing}',
                f'\n  "{key}": {opening}\n    {listed[1:-1]}\n  {closing}',
                1,
            )
    return json_bytes(text + "\n")


# --- the printed blocks of the guide ---


def format_progress_summary(state: ProgressState) -> str:
    """The guide's PROGRESS SUMMARY block; counts are this run's actors only."""
    lines = [
        RULE,
        "PROGRESS SUMMARY",
        RULE,
        f"Started:     {state.started_at}",
        f"Last update: {state.last_updated}",
        "",
        f"Total:       {plural(state.total_count, 'actor')}",
        f"Completed:   {state.completed_in_run} ({state.percent_complete:.1f}%)",
        f"Failed:      {state.failed_in_run}",
        f"Skipped:     {state.skipped_in_run}",
        f"Remaining:   {state.remaining}",
    ]
    if state.missing_actors:
        lines.append(
            f"Not found:   {plural(len(state.missing_actors), 'recorded actor')} no longer in the"
            " dataset (kept in progress.json)"
        )
    if state.current_actor is not None:
        lines += ["", f"Currently processing: {state.current_actor}"]
    if len(state.in_flight) > 1:
        lines.append(f"In flight ({len(state.in_flight)}): {', '.join(state.in_flight)}")
    lines.append(RULE)
    return "\n".join(lines)


def progress_summary(state: ProgressState) -> dict[str, Any]:
    """The PROGRESS SUMMARY's figures as one object (``--show-progress --json``), for scripts."""
    return {
        "mode": state.mode,
        "started_at": state.started_at,
        "last_updated": state.last_updated,
        "total": state.total_count,
        "completed": state.completed_in_run,
        "failed": state.failed_in_run,
        "skipped": state.skipped_in_run,
        "remaining": state.remaining,
        "percent_complete": round(state.percent_complete, 1),
        "current_actor": state.current_actor,
        "in_flight": list(state.in_flight),
        "not_found": len(state.missing_actors),
        "failed_actors": [{"actor_id": name, **entry} for name, entry in state.failed.items()],
        "skipped_actors": [{"actor_id": name, **entry} for name, entry in state.skipped.items()],
    }


def format_resuming_block(state: ProgressState, remaining: int) -> str:
    return "\n".join(
        [
            RULE,
            "RESUMING FROM PREVIOUS PROGRESS",
            RULE,
            f"Resuming with {plural(remaining, 'remaining actor')}",
            f"Overall progress: {state.percent_done:.1f}%",
            RULE,
        ]
    )


# --- the journal ---


def _event_line(event: dict[str, str]) -> bytes:
    return json_bytes(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")


def _replay_journal(state: ProgressState, data: bytes, journal: Path) -> None:
    """Apply every whole line; a last line without its newline is a write a crash cut short."""
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        try:
            state.apply_event(parse_json(line))
        except (ValueError, ProgressError) as error:
            raise ProgressError(
                f"cannot read {journal} (line {number}: {_one_line(error)}); "
                "run --reset-progress (it keeps the file aside)"
            ) from error


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class _Journal:
    """The append-only event file; ``sync`` and ``drop_folded`` run under the fold mutex."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = self._open(truncate=True)
        fsync_folder(path.parent)

    def _open(self, *, truncate: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        return os.open(self.path, flags, 0o644)

    def append(self, line: bytes) -> None:
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]

    def sync(self) -> None:
        _sync(self._fd)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def drop_folded(self, folded_size: int) -> None:
        """Forget the first ``folded_size`` bytes (now in progress.json), keep what came after."""
        size = self.size()
        if size == folded_size:
            os.ftruncate(self._fd, 0)
            return
        with open(self.path, "rb") as journal:
            journal.seek(folded_size)
            tail = journal.read(size - folded_size)
        write_bytes_atomic(self.path, tail)
        os.close(self._fd)
        self._fd = self._open(truncate=False)

    def close(self) -> None:
        os.close(self._fd)


# --- the lock holder ---


def _holder_description(holder: Any) -> str:
    if not isinstance(holder, dict):
        return "holder unknown, it may be starting"
    command = " ".join(str(holder.get("command", "?")).split())
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"started {holder.get('started_at', '?')}, command: {command}"
    )


class RunLock:
    """A folder held by a run: a flock (released by the OS when the run dies) and a holder file
    saying who holds it, so that a run that may not go too is refused with the holder named.

    Exclusive by default. ``shared`` holders (runs that may go side by side, but not beside an
    exclusive one) each write their own holder file, ``<holder>.<pid>``, with their ``group``:
    a shared holder goes only beside holders of its own group (each writes its file, then looks
    at the others', so of two that start at once at least one sees the other and leaves).
    """

    def __init__(
        self,
        lock_path: Path,
        holder_path: Path,
        *,
        in_use: str,
        folder: str,
        shared: bool = False,
        group: str = "",
    ) -> None:
        """``in_use`` starts the refusal ("another run is using X"); ``folder`` names the folder
        that must be writable ("the output folder")."""
        self.lock_path = lock_path
        self.holder_path = holder_path
        self._in_use = in_use
        self._folder = folder
        self._shared = shared
        self._group = group
        self._own_holder = (
            holder_path.with_name(f"{holder_path.name}.{os.getpid()}") if shared else holder_path
        )
        self._release: Callable[[], None] | None = None

    @property
    def held(self) -> bool:
        return self._release is not None

    def acquire(self, command: str) -> None:
        """LockHeld naming the holder if another run has it; ProgressError if it cannot be had."""
        if self._release is not None:
            raise RuntimeError("lock() called twice")
        try:
            release = self._lock_shared() if self._shared else self._lock_exclusive()
        except BlockingIOError:  # held by another run
            raise LockHeld(
                f"{self._in_use} ({self._holder()}); wait for it to finish or stop it "
                f"(lock file: {self.lock_path})"
            ) from None
        except OSError as error:
            raise ProgressError(
                f"cannot lock {self.lock_path}: {error.strerror or error}; "
                f"check {self._folder} is writable"
            ) from error
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": now_iso(),
            "command": command,
        }
        if self._shared:
            holder["group"] = self._group
        try:
            self._sweep_dead_holders()
            write_json_atomic(self._own_holder, holder)
        except OSError as error:
            release()
            raise ProgressError(
                f"cannot write in {self.holder_path.parent}: {error.strerror or error}; "
                f"check {self._folder} is writable"
            ) from error
        other = self._holder_of_another_group() if self._shared else None
        if other is not None:
            self._own_holder.unlink(missing_ok=True)
            release()
            raise LockHeld(
                f"{self._in_use} ({_holder_description(other)}); wait for it to finish or stop "
                f"it (lock file: {self.lock_path})"
            )
        self._release = release

    def release(self) -> None:
        if self._release is None:
            return
        self._own_holder.unlink(missing_ok=True)
        self._release()
        self._release = None

    def holder_alive(self) -> bool:
        """Whether a run (this one or another) may hold the lock now."""
        return self._release is not None or _holder_alive(_read_json(self.holder_path))

    def _lock_exclusive(self) -> Callable[[], None]:
        import filelock  # here: it brings asyncio (~80 ms), which --show-progress need not pay

        file_lock = filelock.FileLock(self.lock_path, timeout=0, thread_local=False)
        try:
            file_lock.acquire()
        except filelock.Timeout:
            raise BlockingIOError(errno.EWOULDBLOCK, "held") from None
        return file_lock.release

    def _lock_shared(self) -> Callable[[], None]:
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
        descriptor = os.open(self.lock_path, flags, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BaseException:
            os.close(descriptor)
            raise
        return lambda: os.close(descriptor)  # closing the descriptor lets go of the flock

    def _shared_holders(self) -> list[Path]:
        return sorted(self.holder_path.parent.glob(f"{glob.escape(self.holder_path.name)}.*"))

    def _holder_of_another_group(self) -> dict[str, Any] | None:
        """A live shared holder that may not go beside this one."""
        for path in self._shared_holders():
            holder = _read_json(path)
            if (
                path != self._own_holder
                and _holder_alive(holder)
                and holder.get("group", "") != self._group
            ):
                return holder
        return None

    def _holder(self) -> str:
        """The exclusive holder, else a live shared one."""
        for path in [self.holder_path, *self._shared_holders()]:
            holder = _read_json(path)
            if _holder_alive(holder):
                return _holder_description(holder)
        return _holder_description(None)

    def _sweep_dead_holders(self) -> None:
        """Shared holder files that killed runs left behind."""
        for path in self._shared_holders():
            if not _holder_alive(_read_json(path)):
                path.unlink(missing_ok=True)


def _holder_alive(holder: Any) -> bool:
    """Whether the recorded holder may still be running (a killed run leaves its holder file)."""
    if not isinstance(holder, dict) or type(holder.get("pid")) is not int:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> Any:
    try:
        return parse_json(read_regular_file(path))
    except (OSError, ValueError, UnreadableFile):
        return None


# --- the tracker ---


class ProgressTracker:
    """Records each actor's outcome so that a run can stop at any instant and resume."""

    def __init__(
        self,
        output_dir: Path,
        *,
        fold_interval: float = 1.0,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        """``max_file_bytes``: progress.json or its journal over it is refused, unread."""
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / PROGRESS_FILE
        self.journal_path = self.output_dir / JOURNAL_FILE
        self.lock_path = self.output_dir / LOCK_FILE
        self.holder_path = self.output_dir / HOLDER_FILE
        self._fold_interval = fold_interval
        self._max_file_bytes = max_file_bytes
        self._lock = RunLock(
            self.lock_path,
            self.holder_path,
            in_use=f"another run is using {self.output_dir}",
            folder="the output folder",
        )
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._fold_mutex = threading.Lock()
        self._state: ProgressState | None = None
        self._run_names: frozenset[str] = frozenset()
        self._journal: _Journal | None = None
        self._unfolded = False
        self._unsynced = False
        self._closed = False
        self._broken: str | None = None
        self._last_fold = 0.0
        self._folder: threading.Thread | None = None

    # --- the lock ---

    def lock(self, command: str) -> None:
        """Hold the output folder for this run; LockHeld names who holds it otherwise."""
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ProgressError(
                f"cannot lock {self.lock_path}: {error.strerror or error}; "
                "check the output folder is writable"
            ) from error
        self._lock.acquire(command)
        try:
            sweep_temp_files(self.output_dir)
        except OSError as error:
            self._lock.release()
            raise ProgressError(
                f"cannot write in {self.output_dir}: {error.strerror or error}; "
                "check the output folder is writable"
            ) from error

    def unlock(self) -> None:
        self._lock.release()

    def _require_lock(self, action: str) -> None:
        if not self._lock.held:
            raise RuntimeError(f"{action} needs lock() first")

    # --- reading ---

    def read(self) -> ProgressState | None:
        """The progress on disk, journal included; safe while another process runs."""
        for _attempt in range(20):
            loaded = self._load(consistent_only=True)
            if loaded is not _CHANGED:
                break
        else:
            loaded = self._load(consistent_only=False)
        if loaded is not None and not self._lock.holder_alive():
            loaded.clear_in_flight()
        return loaded

    def held_elsewhere(self) -> bool:
        """Whether a run that may still be going holds this store (always so for another host)."""
        return self._lock.holder_alive()

    def _load(self, *, consistent_only: bool) -> Any:
        """progress.json plus journal; _CHANGED if a fold replaced progress.json meanwhile."""
        try:
            data, before = read_regular_file_and_stat(self.path, self._max_file_bytes)
        except FileNotFoundError:
            return None
        except UnreadableFile as error:
            raise self._unreadable(str(error)) from error
        except OSError as error:
            raise self._unreadable(error.strerror or str(error)) from error
        try:
            state = ProgressState.from_document(parse_json(data))
        except (ValueError, ProgressError) as error:
            raise self._unreadable(_one_line(error)) from error
        try:
            journal = read_regular_file(self.journal_path, self._max_file_bytes)
        except FileNotFoundError:
            journal = b""
        except UnreadableFile as error:
            raise self._unreadable(str(error), self.journal_path) from error
        except OSError as error:
            raise self._unreadable(error.strerror or str(error), self.journal_path) from error
        if consistent_only and not _same_file(self.path, before):
            return _CHANGED
        _replay_journal(state, journal, self.journal_path)
        return state

    def _unreadable(self, detail: str, path: Path | None = None) -> ProgressError:
        return ProgressError(
            f"cannot read {path or self.path} ({detail}); fix or move it, or run "
            "--reset-progress (it keeps the file aside)"
        )

    # --- a run ---

    def start(
        self,
        actor_names: Sequence[str],
        mode: str,
        settings: dict[str, Any],
        *,
        resume: bool,
        retry_failed: bool,
    ) -> list[str]:
        """Begin a run over ``actor_names``; return those still to process, in that order."""
        self._require_lock("start()")
        if self._state is not None:
            raise RuntimeError("start() called twice")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if len(set(actor_names)) != len(actor_names):
            raise ValueError("actor names must be unique")
        settings = json.loads(json.dumps(settings))
        previous = self._load(consistent_only=False)
        timestamp = now_iso()
        if previous is not None and resume:
            self._check_compatible(previous, mode, settings)
            previous.resumed(actor_names, retry_failed, timestamp)
            state = previous
        else:
            self.journal_path.unlink(missing_ok=True)
            state = ProgressState.fresh(mode, settings, len(actor_names), timestamp)
        self._write(state.to_document())
        self._journal = _Journal(self.journal_path)
        self._state = state
        self._run_names = frozenset(actor_names)
        self._last_fold = time.monotonic()
        self._folder = threading.Thread(target=self._fold_loop, name="progress-fold", daemon=True)
        self._folder.start()
        return [name for name in actor_names if not state.is_recorded(name)]

    def _check_compatible(self, previous: ProgressState, mode: str, settings: dict) -> None:
        if previous.mode != mode:
            raise ProgressError(
                f"progress in {self.path} is from {_MODE_NAMES[previous.mode]}; {_START_OVER}"
            )
        changed = _changed_keys(previous.settings, settings)
        if changed:
            raise ProgressError(
                f"progress in {self.path} was recorded with other settings "
                f"(changed: {', '.join(changed)}); {_START_OVER}, or use the previous settings"
            )

    def mark_started(self, name: str) -> None:
        self._record({"event": "started", "actor_id": name})

    def mark_completed(self, name: str, state: str | None = None) -> None:
        """``state``: balanced, rebalanced or short (listed in ``actor_states``)."""
        event = {"event": "completed", "actor_id": name}
        if state is not None:
            event["state"] = state
        self._record(event)

    def mark_failed(self, name: str, error: str) -> None:
        self._record({"event": "failed", "actor_id": name, "error": error})

    def mark_skipped(self, name: str, reason: str) -> None:
        self._record({"event": "skipped", "actor_id": name, "reason": reason})

    def _record(self, event: dict[str, str]) -> None:
        """Journal first (in the kernel once this returns), then memory; the thread syncs it."""
        name = event["actor_id"]
        event["timestamp"] = now_iso()
        with self._changed:
            if self._state is None or self._journal is None or self._closed:
                raise TrackerClosed(
                    f"progress tracking is not open; {event['event']} {name} not recorded"
                )
            if self._broken is not None:
                raise ProgressError(self._broken)
            if name not in self._run_names:
                raise ValueError(f"{name!r} is not an actor of this run")
            try:
                self._journal.append(_event_line(event))
            except OSError as error:
                self._broken = (
                    f"cannot record progress in {self.journal_path}: {error.strerror or error}; "
                    "actors recorded so far are safe, run again to resume"
                )
                raise ProgressError(self._broken) from error
            self._state.apply_event(event)
            self._unfolded = True
            self._unsynced = self._unsynced or event["event"] != "started"
            self._changed.notify()

    @property
    def state(self) -> ProgressState:
        with self._mutex:
            if self._state is None:
                raise RuntimeError("state needs start() first")
            return self._state.copy()

    def close(self) -> None:
        """Fold all into progress.json and stop recording; an actor in flight stays pending."""
        with self._changed:
            if self._closed or self._state is None:
                self._closed = True
                return
            self._closed = True
            self._state.clear_in_flight()
            self._state.last_updated = now_iso()
            self._unfolded = True
            self._changed.notify_all()
        if self._folder is not None:
            self._folder.join()
        journal = self._journal
        try:
            self._fold()
        except OSError as error:
            raise ProgressError(
                f"cannot update {self.path}: {error.strerror or error}; every recorded actor is "
                f"in {self.journal_path}, run again to resume"
            ) from error
        finally:
            if journal is not None:
                journal.close()
        self.journal_path.unlink(missing_ok=True)

    # --- folding ---

    def _fold_loop(self) -> None:
        """Sync each new outcome at once; fold at most once per interval while events come."""
        while True:
            with self._changed:
                while not (self._unsynced or self._unfolded or self._closed):
                    self._changed.wait()
                if self._closed:
                    return
                sync_now = self._unsynced
                fold_at = self._last_fold + self._fold_interval
                fold_now = self._unfolded and time.monotonic() >= fold_at
                if not (sync_now or fold_now):
                    self._changed.wait(fold_at - time.monotonic())
                    continue
            with contextlib.suppress(OSError):  # the journal keeps it all; close() reports
                if sync_now:
                    self._sync_journal()
                if fold_now:
                    self._fold()

    def _sync_journal(self) -> None:
        with self._fold_mutex:
            with self._mutex:
                if self._journal is None:
                    return
                self._unsynced = False
            self._journal.sync()

    def _fold(self) -> None:
        with self._fold_mutex:
            with self._mutex:
                if not self._unfolded or self._state is None or self._journal is None:
                    return
                document = self._state.to_document()
                folded_size = self._journal.size()
                self._unfolded = False
                self._last_fold = time.monotonic()
            try:
                self._write(document)
            except OSError:
                with self._mutex:
                    self._unfolded = True
                raise
            with self._mutex:
                self._journal.drop_folded(folded_size)

    def _write(self, document: dict[str, Any]) -> None:
        write_bytes_atomic(self.path, encode_document(document))

    # --- reset ---

    def reset(self) -> Path | None:
        """Move progress aside (kept, renamed, whether readable or not); return where it went."""
        self._require_lock("reset()")
        if self._state is not None:
            raise RuntimeError("reset() during a run")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")  # ISO 8601 basic, in UTC
        backup = None
        if os.path.lexists(self.path):
            backup = _unused(self.output_dir, f"{PROGRESS_FILE}.{stamp}", ".bak")
            try:
                state = self._load(consistent_only=False)
            except ProgressError:
                state = None
            if state is None:
                os.replace(self.path, backup)
            else:
                write_bytes_atomic(backup, encode_document(state.to_document()))
                self.path.unlink()
                self.journal_path.unlink(missing_ok=True)
        if os.path.lexists(self.journal_path):
            if os.lstat(self.journal_path).st_size:
                os.replace(
                    self.journal_path, _unused(self.output_dir, f"{JOURNAL_FILE}.{stamp}", ".bak")
                )
            else:
                self.journal_path.unlink()
        fsync_folder(self.output_dir)
        return backup


_CHANGED = object()


def _same_file(path: Path, before: os.stat_result) -> bool:
    try:
        after = os.stat(path)
    except FileNotFoundError:
        return False
    return (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )


def _changed_keys(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = set(recorded) | set(current)
    changed = {key for key in keys if recorded.get(key) != current.get(key)}
    ordered = [key for key in _SETTINGS_ORDER if key in changed]
    return ordered + sorted(changed - set(_SETTINGS_ORDER))


def _unused(folder: Path, stem: str, suffix: str) -> Path:
    candidate = folder / f"{stem}{suffix}"
    number = 1
    while candidate.exists():
        candidate = folder / f"{stem}-{number}{suffix}"
        number += 1
    return candidate
