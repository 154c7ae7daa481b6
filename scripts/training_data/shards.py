"""Many machines: ``--shard K/N`` splits the actors by a stable hash of the name.

The cluster's scheduler runs the shards (Slurm job arrays, Kubernetes Indexed Jobs); this module
only decides which actors a shard owns and where its files go. Design:

- Shard of an actor: ``sha256(name) mod N``. A new actor never moves the others (a
  ``sorted()[K::N]`` split would move nearly all of them when the dataset grows).
- Every shard of N > 1 keeps its own progress store and lock in the shared output folder,
  ``shards/<K>-of-<N>/`` (progress.json, its journal, its lock), so two shards never write the
  same file. An actor completed, skipped or failed in any store under ``shards/`` (or the
  folder's own one-machine store) counts as done: a rerun with another N skips it, as a resume
  does (``--retry-failed`` takes the failed ones again).
- The evaluation cache of a sharded run: see ``verdict_files``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training_data.errors import UsageError
from training_data.progress import RULE, ProgressError, ProgressState, ProgressTracker

SHARDS_DIR = "shards"
STALLED_AFTER_SECONDS = 600
_SHARD_NAME = re.compile(r"(\d+)-of-(\d+)")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def owns(self, actor_name: str) -> bool:
        return shard_of(actor_name, self.count) == self.index

    def folder(self, output_dir: Path) -> Path:
        """Where this shard's progress store and lock live (the output folder itself for N=1)."""
        return output_dir if self.count == 1 else output_dir / SHARDS_DIR / self.name


WHOLE = Shard(0, 1)


def shard_of(actor_name: str, count: int) -> int:
    digest = hashlib.sha256(actor_name.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """``K/N`` with 0 <= K < N; UsageError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--shard takes K/N (e.g. 0/4), not {text!r}")
    return _checked(int(match.group(1)), int(match.group(2)), "--shard")


def _checked(index: int, count: int, source: str) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"{source}: shard {index} of {count} is not one (0 <= K < N)")
    return Shard(index, count)


def shard_from_environment(
    environ: Mapping[str, str], shard_count: int | None
) -> tuple[Shard, str] | None:
    """The shard the scheduler gave this task, and where it came from; None outside one.

    Slurm job arrays: the task's place in the array's range, (``SLURM_ARRAY_TASK_ID`` minus
    ``SLURM_ARRAY_TASK_MIN``) / ``SLURM_ARRAY_TASK_STEP`` (arrays may start at 1 and step, as in
    ``--array=0-30:2``), of ``SLURM_ARRAY_TASK_COUNT``. A list that is not a range (``1,5,9``)
    gives a task off the range or beyond the count: refused, never two tasks on one shard.
    Kubernetes Indexed Jobs: ``JOB_COMPLETION_INDEX`` of ``--shard-count`` (the Job's
    ``completions``; Kubernetes does not put it in the environment).
    """
    if "SLURM_ARRAY_TASK_ID" in environ:
        source = "SLURM_ARRAY_TASK_ID"
        task = _number(environ, "SLURM_ARRAY_TASK_ID")
        first = _number(environ, "SLURM_ARRAY_TASK_MIN", default=0)
        step = _number(environ, "SLURM_ARRAY_TASK_STEP", default=1)
        if step < 1 or (task - first) % step:
            raise UsageError(
                f"{source} {task} is not on the array's range (from {first}, step {step}): "
                "give the array as a range, such as --array=0-15 or --array=0-30:2"
            )
        count = shard_count or _number(environ, "SLURM_ARRAY_TASK_COUNT")
        return _checked((task - first) // step, count, source), source
    if "JOB_COMPLETION_INDEX" in environ:
        source = "JOB_COMPLETION_INDEX"
        if shard_count is None:
            raise UsageError(
                "JOB_COMPLETION_INDEX is set: give the Job's completions as --shard-count N"
            )
        return _checked(_number(environ, source), shard_count, source), source
    return None


def _number(environ: Mapping[str, str], key: str, default: int | None = None) -> int:
    if key not in environ:
        if default is not None:
            return default
        raise UsageError(f"{key} is not set: give --shard K/N")
    try:
        return int(environ[key])
    except ValueError:
        raise UsageError(f"{key} must be a whole number, not {environ[key]!r}") from None


def shard_folders(output_dir: Path) -> list[tuple[str, Path]]:
    """Every progress store in the output folder: the one-machine store, then each shard's."""
    folders = [("all", output_dir)]
    found = []
    for folder in (output_dir / SHARDS_DIR).glob("*-of-*"):
        match = _SHARD_NAME.fullmatch(folder.name)
        if match and folder.is_dir():
            found.append(((int(match.group(2)), int(match.group(1))), folder))
    folders += [(folder.name, folder) for _key, folder in sorted(found)]
    return folders


# --- every store of the output folder together ---


def recorded_in_other_stores(
    output_dir: Path,
    own_folder: Path,
    mode: str,
    settings: dict[str, Any],
    max_file_bytes: int,
    *,
    retry_failed: bool,
) -> set[str]:
    """Actors recorded in another store of this folder by a run of the same mode and settings:
    completed, skipped, and failed unless ``retry_failed`` (a rerun with another N must not redo
    them, as a resume does not). An unreadable store adds nothing."""
    settings = json.loads(json.dumps(settings))
    recorded: set[str] = set()
    for _name, folder in shard_folders(output_dir):
        if folder.resolve() == own_folder.resolve():
            continue
        try:
            state = ProgressTracker(folder, max_file_bytes=max_file_bytes).read()
        except ProgressError:
            continue
        if state is not None and state.mode == mode and state.settings == settings:
            recorded.update(state.completed, state.skipped)
            if not retry_failed:
                recorded.update(state.failed)
    return recorded


@dataclass
class StoreRow:
    """One progress store's line in the merged ``--show-progress``."""

    name: str
    state: ProgressState
    running: bool
    stalled: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.name,
            "total": self.state.total_count,
            "completed": self.state.completed_in_run,
            "failed": self.state.failed_in_run,
            "skipped": self.state.skipped_in_run,
            "remaining": self.state.remaining,
            "in_flight": list(self.state.in_flight),
            "last_updated": self.state.last_updated,
            "running": self.running,
            "stalled": self.stalled,
        }


def read_stores(
    output_dir: Path, max_file_bytes: int, now: datetime | None = None
) -> list[StoreRow]:
    """Every store that has progress; ProgressError names one that cannot be read.

    Stalled: work left and no update for STALLED_AFTER_SECONDS, or no live run holding it."""
    now = now or datetime.now(UTC)
    rows = []
    for name, folder in shard_folders(output_dir):
        tracker = ProgressTracker(folder, max_file_bytes=max_file_bytes)
        state = tracker.read()
        if state is None:
            continue
        running = tracker.held_elsewhere()
        try:
            updated = datetime.fromisoformat(state.last_updated).astimezone()  # naive: local
            idle = (now - updated).total_seconds()
        except ValueError:
            idle = float("inf")
        stalled = state.remaining > 0 and (not running or idle > STALLED_AFTER_SECONDS)
        rows.append(StoreRow(name, state, running, stalled))
    return rows


@dataclass(frozen=True)
class MergedOutcomes:
    """Each actor once over every store: completed wins over failed over skipped."""

    completed: set[str]
    failed: dict[str, dict[str, str]]  # name -> the store's entry (its "error")
    skipped: dict[str, dict[str, str]]  # name -> the store's entry (its "reason")


def merged_outcomes(rows: list[StoreRow]) -> MergedOutcomes:
    """The stores' outcomes, each actor once; of two stores' entries of one kind, the later's."""
    completed: set[str] = set()
    failed: dict[str, dict[str, str]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for row in rows:
        completed.update(row.state.completed)
        failed |= row.state.failed
        skipped |= row.state.skipped
    failed = {name: entry for name, entry in failed.items() if name not in completed}
    skipped = {
        name: entry
        for name, entry in skipped.items()
        if name not in completed and name not in failed
    }
    return MergedOutcomes(completed, failed, skipped)


def merged_summary(rows: list[StoreRow]) -> dict[str, Any]:
    """Every store together: each actor counted once (``merged_outcomes``).

    Remaining counts the stores of the latest split (the N of the last updated shard): the
    stores of an earlier N only add what they recorded, and one that no run holds is not
    stalled but taken over (its work left is the latest split's to do)."""
    outcomes = merged_outcomes(rows)
    latest = max(rows, key=lambda row: row.state.last_updated)
    generation = _split_of(latest.name)
    remaining = sum(row.state.remaining for row in rows if _split_of(row.name) == generation)
    shown = []
    for row in rows:
        shown_row = row.to_dict()
        if _split_of(row.name) != generation and not row.running and row.state.remaining:
            shown_row |= {"stalled": False, "taken_over_by": generation}
        shown.append(shown_row)
    done = len(outcomes.completed) + len(outcomes.failed) + len(outcomes.skipped)
    total = done + remaining
    return {
        "total": total,
        "completed": len(outcomes.completed),
        "failed": len(outcomes.failed),
        "skipped": len(outcomes.skipped),
        "remaining": remaining,
        "percent_complete": round(100.0 * len(outcomes.completed) / total, 1) if total else 0.0,
        "in_flight": sorted({name for row in rows for name in row.state.in_flight}),
        "shards": shown,
    }


def _split_of(store_name: str) -> str:
    return store_name.split("-of-")[-1] if "-of-" in store_name else "1"


def format_merged_summary(summary: dict[str, Any]) -> str:
    lines = [
        RULE,
        "PROGRESS SUMMARY (every shard)",
        RULE,
        f"Total:       {summary['total']} actors",
        f"Completed:   {summary['completed']} ({summary['percent_complete']:.1f}%)",
        f"Failed:      {summary['failed']}",
        f"Skipped:     {summary['skipped']}",
        f"Remaining:   {summary['remaining']}",
        f"In flight:   {len(summary['in_flight'])}",
        "",
        f"{'shard':<12}{'done':>8}{'failed':>8}{'flight':>8}{'left':>8}  last update",
    ]
    for row in summary["shards"]:
        mark = "  STALLED" if row["stalled"] else ("  running" if row["running"] else "")
        if "taken_over_by" in row:
            by = row["taken_over_by"]
            mark = f"  taken over by the shards of {by}" if by != "1" else "  taken over by --all"
        lines.append(
            f"{row['shard']:<12}{row['completed']:>8}{row['failed']:>8}"
            f"{len(row['in_flight']):>8}{row['remaining']:>8}  {row['last_updated']}{mark}"
        )
    lines.append(RULE)
    return "\n".join(lines)
