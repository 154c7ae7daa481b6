"""Apply a plan: set removed images aside reversibly, generate missing ones, restore.

A removal moves an image and its sidecars from ``training_data/`` to
``removed_training_data/<run>/`` and moves its manifest entry to ``removed_images``. Each removal
folder holds a small journal, ``removal.json``, that lists what it holds and where it came from.

Crash safety. A run may be killed at any instant; the next ``recover`` (called at the start of
``apply_plan`` and ``restore_removed``, and by the pipeline before it loads an actor) brings the
actor back to a state where these invariants hold:

1. Nothing is deleted. Files are only renamed between ``training_data/`` and a removal folder on
   the same filesystem, so at every instant each file is whole in exactly one place. (Across
   filesystems a move is copy, fsync, unlink; an interrupted one leaves two identical copies and
   recovery drops the one at the source.)
2. Intent before action. The journal, listing every file to move and the manifest entry to move,
   is durable before the first file moves; the manifest is rewritten after the last file has
   moved; then the journal is marked settled. Restore is the same in reverse (state ``restoring``).
3. Every step is idempotent, so recovery replays an unsettled journal to its end: a file still at
   its source is moved, one already at its destination is left alone, and the manifest update is
   recomputed from the journal. A file found at both ends with different contents is never
   overwritten: both are kept and reported.
4. Settled state: no manifest ``images`` entry points to a file this tool moved away, every
   ``removed_images`` entry's ``moved_to`` file exists, and no moved file is also in
   ``training_data/``.
5. A generated image is written atomically before its manifest entry, and carries that entry in a
   JPEG comment; if a crash falls between the two, recovery adds the entry from the comment.
   The entry names the run that made it, so what a killed run did reads back from its removal
   journals and these entries (``execution_of_runs``).
6. A name is never reused: a new image is ``<actor>_<n>.jpg`` with ``n`` one more than the highest
   number any file, manifest entry or removal folder of the actor has used.
7. Every manifest and journal rewrite is atomic (temp file, fsync, rename); temp files a killed run
   left behind are swept by recovery.
8. A removal whose files cannot all move (a destination path over the OS limit, a file the OS
   will not let go) is rolled back: what moved goes back, the journal goes, the actor fails with
   the cause. An unsettled journal that can never finish would fail the actor on every run and
   block ``--restore``.
9. Files move only within the actor's folder: ``training_data/`` or ``removed_training_data/``
   that is a symlink leading elsewhere fails the actor, nothing moved (the tool would otherwise
   take files out of, or put them into, a folder outside the dataset).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from training_data.atomic import (
    fsync_folder,
    sweep_temp_files,
    write_bytes_atomic,
    write_json_atomic,
)
from training_data.config import GENERIC_PROMPT
from training_data.dataset import (
    IMAGE_SUFFIXES,
    Actor,
    TrainingImage,
    base_images,
    check_manifest_filename,
    read_manifest,
    sidecars_of,
    write_manifest,
)
from training_data.errors import ActorError, FatalRunError, is_disk_full
from training_data.files import UnreadableFile, parse_json, read_regular_file
from training_data.generation import GenerationRequest, Generator
from training_data.plan import Plan

JOURNAL_NAME = "removal.json"
JOURNAL_VERSION = 1
REMOVED_DIR_NAME = "removed_training_data"
PROVENANCE_KEY = "evaluate_and_balance"
MAX_SOURCES = 3
PERSON_NOUNS = frozenset(
    ("female", "male", "woman", "man", "girl", "boy", "person", "lady", "gentleman", "nonbinary")
)


# --- results ------------------------------------------------------------------------------------


@dataclass
class ExecutionResult:
    """What one execute step did to an actor, for its evaluation JSON and the console."""

    removed: list[dict[str, Any]] = field(default_factory=list)
    generated: list[dict[str, Any]] = field(default_factory=list)
    unfulfilled: dict[str, int] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    removal_folder: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestoreResult:
    """What ``--restore`` put back (``runs``: newest first), and what it left and why."""

    runs: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- public entry points ------------------------------------------------------------------------


def apply_plan(
    actor: Actor,
    images: Sequence[TrainingImage],
    plan: Plan,
    generator: Generator | None,
    prompts: Mapping[str, list[str]],
    run_timestamp: str,
    source_ranking: Sequence[str] = (),
) -> ExecutionResult:
    """Remove, then generate, as planned, on an actor that ``recover`` has settled (the pipeline
    recovers before it loads the images it plans on). ``source_ranking``: its photos, best first.
    """
    _check_run_name(run_timestamp)
    with _disk_errors(actor):
        _check_folders_inside(actor)
        result = ExecutionResult()
        manifest = read_manifest(actor)
        _check_manifest_names(manifest)
        removals = _planned_removals(actor, images, plan, manifest, result)
        if removals:
            folder = _new_removal_folder(actor, run_timestamp)
            _remove(actor, folder, removals, manifest is None)
            result.removal_folder = _relative(actor, folder)
            result.removed = [_removed_line(actor, folder, removal) for removal in removals]
        _generate_all(actor, plan, generator, prompts, source_ranking, run_timestamp, result)
    return result


def restore_removed(actor: Actor, run: str | None = None) -> RestoreResult:
    """Put back every image that execute runs moved out and that is still set aside, newest run
    first; with ``run``, only that removal folder's.

    Each removal folder is restored through its own journal (state ``restoring``), so a crash
    anywhere leaves work that ``recover`` finishes. Newest first: when two runs set aside the same
    name, the newest copy goes back and the older one stays, reported, as a taken name is never
    overwritten (that image stays in its removal folder with its sidecars and removed_images entry).
    """
    with _disk_errors(actor):
        return _restore_removed(actor, run)


def execution_of_runs(actor: Actor, runs: Sequence[str]) -> ExecutionResult:
    """What the execute steps of these runs did to the actor, read back from their removal
    journals and the manifest entries of the images they generated: the record of a run stopped
    before it could write it (call after ``recover``, which settles what it left half done)."""
    with _disk_errors(actor):
        journals = [
            (folder, journal)
            for folder in _removal_folders(actor)
            if _of_runs(folder.name, runs) and (journal := _read_journal(actor, folder)) is not None
        ]
        return recorded_execution(actor, journals, read_manifest(actor), runs)


def recorded_execution(
    actor: Actor,
    journals: Sequence[tuple[Path, dict[str, Any]]],
    manifest: dict[str, Any] | None,
    runs: Sequence[str],
) -> ExecutionResult:
    """The removals still set aside by these journals, and the images the runs generated."""
    result = ExecutionResult()
    for folder, journal in journals:
        kept = [removal for removal in journal["removals"] if not removal.get("restored_at")]
        result.removed += [_removed_line(actor, folder, removal) for removal in kept]
        if kept:
            result.removal_folder = _relative(actor, folder)
    for filename, entry in ((manifest or {}).get("images") or {}).items():
        if isinstance(entry, dict) and entry.get("generator") and entry.get("run") in runs:
            keys = ("type", "prompt", "generator")
            result.generated.append({"filename": filename} | {key: entry.get(key) for key in keys})
    return result


def combined(earlier: ExecutionResult, later: ExecutionResult) -> ExecutionResult:
    """One record of two execute steps on the same actor: what is missing is the later's say."""
    return ExecutionResult(
        removed=earlier.removed + later.removed,
        generated=earlier.generated + later.generated,
        unfulfilled=later.unfulfilled,
        messages=earlier.messages + later.messages,
        removal_folder=later.removal_folder or earlier.removal_folder,
    )


def _of_runs(folder_name: str, runs: Sequence[str]) -> bool:
    """``<run>`` or ``<run>-<n>``: a removal folder of one of these runs."""
    return any(re.fullmatch(rf"{re.escape(run)}(-\d+)?", folder_name) for run in runs)


def removal_runs(actor: Actor) -> list[str]:
    """The names of the actor's removal folders that hold a journal, newest first."""
    with _disk_errors(actor):
        return [folder.name for folder, _journal in _journals_newest_first(actor)]


def _restore_removed(actor: Actor, run: str | None) -> RestoreResult:
    result = RestoreResult(messages=recover(actor))
    journals = [
        (folder, journal)
        for folder, journal in _journals_newest_first(actor)
        if run is None or folder.name == run
    ]
    for folder, journal in journals:
        _restore_folder(actor, folder, journal, result)
    if not result.restored and not result.kept:
        if journals:
            result.messages.append(
                "nothing left to restore: every image that "
                + (f"run {run}" if run else "execute runs")
                + " set aside is back in training_data"
            )
        else:
            result.messages.append(
                f"nothing to restore: no execute run has removed images of {actor.name}"
            )
    held = _folders_holding_images(actor)
    if held:
        result.messages.append("removal folders that still hold images: " + ", ".join(held))
    return result


def _restore_folder(
    actor: Actor, folder: Path, journal: dict[str, Any], result: RestoreResult
) -> None:
    pending = [removal for removal in journal["removals"] if not removal.get("restored_at")]
    if not pending:
        return
    manifest_images = (read_manifest(actor) or {}).get("images") or {}
    kept_lines = []
    for removal in pending:
        problem = _restore_problem(actor, folder, removal, manifest_images)
        removal["restoring"] = problem is None
        if problem:
            result.kept.append(removal["filename"])
            kept_lines.append(
                f"kept {removal['filename']} in {_relative(actor, folder)}: {problem}"
            )
    journal["state"] = "restoring"
    _write_journal(folder, journal)
    restored, notes = _finish_restore(actor, folder, journal)
    result.runs.append(journal["run"])
    result.restored += restored
    files = sum(len(r["files"]) for r in journal["removals"] if r["filename"] in restored)
    if restored:
        result.messages.append(
            f"restored {len(restored)} image(s) ({files} file(s) with sidecars) "
            f"removed by run {journal['run']} from {_relative(actor, folder)}"
        )
    result.messages += kept_lines + notes


def _folders_holding_images(actor: Actor) -> list[str]:
    """``removed_training_data/<run> (3 images)`` for each removal folder with images left."""
    held = []
    for folder in _removal_folders(actor):
        count = sum(
            1 for name in _folder_names(folder) if Path(name).suffix.lower() in IMAGE_SUFFIXES
        )
        if count:
            note = "" if (folder / JOURNAL_NAME).exists() else ", not set aside by this tool"
            held.append(f"{_relative(actor, folder)} ({count} image{'s' * (count != 1)}{note})")
    return held


def recover(actor: Actor) -> list[str]:
    """Finish whatever an interrupted execute or restore left half done; say what it did."""
    with _disk_errors(actor):
        return _recover(actor)


def _recover(actor: Actor) -> list[str]:
    _check_folders_inside(actor)
    messages: list[str] = []
    if actor.training_dir.is_dir():
        sweep_temp_files(actor.training_dir)
    for folder in _removal_folders(actor):
        sweep_temp_files(folder)
        journal = _read_journal(actor, folder)
        if journal is None:
            _drop_if_empty(folder)
            continue
        if journal["state"] == "removing":
            messages.append(f"finished an interrupted removal into {_relative(actor, folder)}")
            messages += _finish_removal(actor, folder, journal)
        elif journal["state"] == "restoring":
            restored, notes = _finish_restore(actor, folder, journal)
            messages.append(
                f"finished an interrupted restore of {len(restored)} image(s) "
                f"from {_relative(actor, folder)}"
            )
            messages += notes
    messages += _adopt_generated_images(actor)
    return messages


def actor_descriptor(actor: Actor) -> str:
    """For prompts: ``0046_european_25_female`` -> ``a 25-year-old european female``."""
    words = [word for word in re.split(r"[_\-\s]+", actor.name) if word]
    if words and words[0].isdigit():
        words = words[1:]  # the leading number is an id, not an age
    ages = [w for w in words if w.isdigit() and not w.startswith("0") and int(w) < 130]
    words = [word for word in words if not word.isdigit()]
    if ages:
        words.insert(0, f"{ages[0]}-year-old")
    if not words:
        return "the person"
    phrase = " ".join(words)
    if not ages and words[-1].lower() not in PERSON_NOUNS:
        return phrase  # a given name, not a description
    article = "an" if re.match(r"[aeiou]|8|1[18]-", phrase, re.IGNORECASE) else "a"
    return f"{article} {phrase}"


# --- removal ------------------------------------------------------------------------------------


def _planned_removals(
    actor: Actor,
    images: Sequence[TrainingImage],
    plan: Plan,
    manifest: dict[str, Any] | None,
    result: ExecutionResult,
) -> list[dict[str, Any]]:
    """Journal records for the plan's removals, each checked before anything moves."""
    entries = (manifest or {}).get("images") or {}
    loaded = {image.filename for image in images}
    already = _moved_names(manifest)
    removals = []
    now = _now()
    for planned in plan.removals:
        check_manifest_filename(planned.filename)
        if any(removal["filename"] == planned.filename for removal in removals):
            continue
        if planned.filename not in loaded:
            raise ActorError(f"the plan names {planned.filename}, not an image of {actor.name}")
        path = actor.training_dir / planned.filename
        present = os.path.lexists(path)  # an unreadable symlink or FIFO is set aside as it is
        if not present and planned.filename not in entries:
            if planned.filename in already:
                result.messages.append(f"{planned.filename} was already removed")
                continue
            raise ActorError(f"cannot remove {planned.filename}: it is not in training_data")
        files = [path.name, *(p.name for p in sidecars_of(path))] if present else []
        removals.append(
            {
                "number": planned.number,
                "filename": planned.filename,
                "type": planned.type,
                "reason": planned.reason,
                "removed_at": now,
                "files": files,
                "manifest_entry": entries.get(planned.filename),
            }
        )
        if not files:
            result.messages.append(
                f"{planned.filename} had no file; only its manifest entry was set aside"
            )
    return removals


def _remove(
    actor: Actor, folder: Path, removals: list[dict[str, Any]], manifest_was_missing: bool
) -> None:
    """Intent first (the journal), then the files, then the manifest."""
    journal = {
        "version": JOURNAL_VERSION,
        "actor": actor.name,
        "run": folder.name,
        "created_at": _now(),
        "state": "removing",
        "created_manifest": manifest_was_missing,
        "removals": removals,
    }
    _write_journal(folder, journal)
    _finish_removal(actor, folder, journal)


def _finish_removal(actor: Actor, folder: Path, journal: dict[str, Any]) -> list[str]:
    """Move every listed file into the folder, then the manifest entries; safe to repeat."""
    messages = _move_into_removal_folder(actor, folder, journal)
    manifest = read_manifest(actor)
    updated = _manifest_after_removal(actor, folder, journal, manifest)
    if updated != manifest:
        write_manifest(actor, updated)
    journal["state"] = "removed"
    _write_journal(folder, journal)
    return messages


def _move_into_removal_folder(actor: Actor, folder: Path, journal: dict[str, Any]) -> list[str]:
    """Every listed file into the folder; if one cannot go, all go back (rule 8)."""
    messages: list[str] = []
    try:
        for removal in journal["removals"]:
            for name in removal["files"]:
                messages += _settle_move(actor.training_dir / name, folder / name)
    except ActorError as error:
        _roll_back_removal(actor, folder, journal)
        raise ActorError(f"{error}; the removal was rolled back, nothing was set aside") from None
    fsync_folder(actor.training_dir)
    fsync_folder(folder)
    return messages


def _roll_back_removal(actor: Actor, folder: Path, journal: dict[str, Any]) -> None:
    """Before the manifest changed: put back what moved, then forget the removal."""
    for removal in journal["removals"]:
        for name in removal["files"]:
            if os.path.lexists(folder / name):
                _settle_move(folder / name, actor.training_dir / name)
    fsync_folder(actor.training_dir)
    (folder / JOURNAL_NAME).unlink(missing_ok=True)
    fsync_folder(folder)
    _drop_if_empty(folder)


def _manifest_after_removal(
    actor: Actor, folder: Path, journal: dict[str, Any], manifest: dict[str, Any] | None
) -> dict[str, Any]:
    updated = _editable(actor, manifest)
    removed_images = updated.setdefault("removed_images", {})
    for removal in journal["removals"]:
        name = removal["filename"]
        moved_to = _moved_to(actor, folder, removal)
        if _find_removed_key(removed_images, name, journal["run"]) is not None:
            continue  # this journal's entry is already there: a replayed step
        if name in (updated.get("images") or {}):
            del updated["images"][name]
        record = dict(removal["manifest_entry"] or {}) | {
            "reason": removal["reason"],
            "removed_at": removal["removed_at"],
            "moved_to": moved_to,
            "run": journal["run"],
        }
        key = name if name not in removed_images else f"{name}@{journal['run']}"
        removed_images[key] = record
    return updated


def _find_removed_key(removed_images: dict[str, Any], name: str, run: str) -> str | None:
    for key in (name, f"{name}@{run}"):
        record = removed_images.get(key)
        if isinstance(record, dict) and record.get("run") == run:
            return key
    return None


def _moved_names(manifest: dict[str, Any] | None) -> set[str]:
    return {key.split("@", 1)[0] for key in (manifest or {}).get("removed_images") or {}}


def _removed_line(actor: Actor, folder: Path, removal: dict[str, Any]) -> dict[str, Any]:
    keys = ("number", "filename", "type", "reason")
    return {key: removal[key] for key in keys} | {"moved_to": _moved_to(actor, folder, removal)}


def _moved_to(actor: Actor, folder: Path, removal: dict[str, Any]) -> str | None:
    if not removal["files"]:
        return None
    return _relative(actor, folder / removal["filename"])


# --- restore ------------------------------------------------------------------------------------


def _restore_problem(
    actor: Actor, folder: Path, removal: dict[str, Any], manifest_images: dict[str, Any]
) -> str | None:
    """Why this removal cannot go back as it was, if it cannot."""
    taken = [name for name in removal["files"] if os.path.lexists(actor.training_dir / name)]
    if taken:
        return f"{', '.join(taken)} exists again in training_data (not overwritten)"
    if removal["filename"] in manifest_images:
        return "manifest.json lists that name again (not overwritten)"
    if removal["files"] and not os.path.lexists(folder / removal["filename"]):
        return "the image is no longer in its removal folder"
    return None


def _finish_restore(
    actor: Actor, folder: Path, journal: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """Move the chosen removals back, then their manifest entries; safe to repeat."""
    chosen = [removal for removal in journal["removals"] if removal.get("restoring")]
    messages: list[str] = []
    for removal in chosen:
        for name in removal["files"]:
            messages += _settle_move(folder / name, actor.training_dir / name)
    fsync_folder(actor.training_dir)
    fsync_folder(folder)
    manifest = read_manifest(actor)
    updated = _manifest_after_restore(actor, journal, chosen, manifest)
    if journal.get("created_manifest") and updated == {"actor_id": actor.name}:
        actor.manifest_path.unlink(missing_ok=True)  # the removal made it; now it is as before
    elif updated != manifest and (manifest is not None or updated != {"actor_id": actor.name}):
        write_manifest(actor, updated)
    now = _now()
    for removal in journal["removals"]:
        if removal.pop("restoring", False):
            removal["restored_at"] = now
    journal["state"] = "removed"
    _write_journal(folder, journal)
    return [removal["filename"] for removal in chosen], messages


def _manifest_after_restore(
    actor: Actor,
    journal: dict[str, Any],
    chosen: list[dict[str, Any]],
    manifest: dict[str, Any] | None,
) -> dict[str, Any]:
    updated = _editable(actor, manifest)
    removed_images = updated.get("removed_images") or {}
    for removal in chosen:
        key = _find_removed_key(removed_images, removal["filename"], journal["run"])
        if key is not None:
            del removed_images[key]
        if removal["manifest_entry"] is not None:
            updated.setdefault("images", {})[removal["filename"]] = removal["manifest_entry"]
    if "removed_images" in updated and not removed_images:
        del updated["removed_images"]
    return updated


# --- generation ---------------------------------------------------------------------------------


def _generate_all(
    actor: Actor,
    plan: Plan,
    generator: Generator | None,
    prompts: Mapping[str, list[str]],
    source_ranking: Sequence[str],
    run: str,
    result: ExecutionResult,
) -> None:
    for category, count in plan.generations.items():
        if count <= 0:
            continue
        reason = _cannot_generate(actor, category, generator, source_ranking)
        if reason:
            result.unfulfilled[category] = count
            result.messages.append(f"{category}: {count} not generated ({reason})")
            continue
        assert generator is not None
        failures: dict[str, int] = {}
        for _ in range(count):
            try:
                result.generated.append(
                    _generate_one(actor, category, generator, prompts, source_ranking, run)
                )
            except ActorError as error:
                failures[str(error)] = failures.get(str(error), 0) + 1
        if failures:
            result.unfulfilled[category] = sum(failures.values())
            for reason_text, failed in failures.items():
                result.messages.append(f"{category}: {failed} not generated ({reason_text})")


def _cannot_generate(
    actor: Actor, category: str, generator: Generator | None, source_ranking: Sequence[str]
) -> str | None:
    if generator is None:
        return "no generator: generator.backend is none"
    if not generator.can_generate(category):
        return f"{generator.name} generator cannot make {category} images"
    if not _sources(actor, source_ranking):
        return "no photorealistic or base image to start from"
    return None


def _generate_one(
    actor: Actor,
    category: str,
    generator: Generator,
    prompts: Mapping[str, list[str]],
    source_ranking: Sequence[str],
    run: str,
) -> dict[str, Any]:
    """One image, its manifest entry naming the run that made it (the record of a run that
    is stopped before it writes its own is read back from these)."""
    manifest = read_manifest(actor)
    variant = _generated_count(manifest, category)
    templates = prompts.get(category) or [GENERIC_PROMPT.replace("{category}", category)]
    prompt = templates[variant % len(templates)].format(
        descriptor=actor_descriptor(actor), category=category
    )
    request = GenerationRequest(actor, category, prompt, _sources(actor, source_ranking), variant)
    data = generator.generate(request)
    filename = f"{actor.name}_{_next_number(actor, manifest)}.jpg"
    entry = {
        "type": category,
        "prompt": prompt,
        "generator": generator.name,
        "generated_at": _now(),
        "run": run,
    }
    if getattr(generator, "model", None):
        entry["model"] = generator.model
    marked = _with_provenance(_checked_jpeg(data, generator.name), actor, filename, entry)
    try:
        write_bytes_atomic(actor.training_dir / filename, marked)
    except OSError as error:
        _raise_for_disk(error, f"cannot save {filename}")
    updated = _editable(actor, manifest)
    updated.setdefault("images", {})[filename] = entry
    write_manifest(actor, updated)
    return {"filename": filename, "type": category, "prompt": prompt, "generator": generator.name}


def _sources(actor: Actor, source_ranking: Sequence[str]) -> tuple[Path, ...]:
    """The best few photos still in training_data, else the base image(s)."""
    photos = []
    for name in source_ranking:
        if _plain_name(name) and (actor.training_dir / name).is_file():
            photos.append(actor.training_dir / name)
        if len(photos) == MAX_SOURCES:
            break
    if photos:
        return tuple(photos)
    return tuple(base_images(actor)[:MAX_SOURCES])


def _generated_count(manifest: dict[str, Any] | None, category: str) -> int:
    """How many images of this category were ever generated here: the next variant number."""
    entries = [
        *((manifest or {}).get("images") or {}).values(),
        *((manifest or {}).get("removed_images") or {}).values(),
    ]
    return sum(
        1
        for entry in entries
        if isinstance(entry, dict) and entry.get("generator") and entry.get("type") == category
    )


def _next_number(actor: Actor, manifest: dict[str, Any] | None) -> int:
    """One more than the highest number the actor ever used, so no name comes back."""
    pattern = re.compile(rf"{re.escape(actor.name)}_(\d+)\.")
    names = [
        *_folder_names(actor.training_dir),
        *((manifest or {}).get("images") or {}),
        *((manifest or {}).get("removed_images") or {}),
    ]
    for folder in _removal_folders(actor):
        names += _folder_names(folder)
    numbers = [int(match.group(1)) for name in names if (match := pattern.match(name))]
    return max(numbers, default=0) + 1


def _checked_jpeg(data: bytes, generator_name: str) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.format != "JPEG":
                raise ActorError(
                    f"the {generator_name} generator returned {image.format}, not JPEG"
                )
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ActorError(
            f"the {generator_name} generator returned an unreadable image: {error}"
        ) from None
    return data


def _with_provenance(data: bytes, actor: Actor, filename: str, entry: dict[str, Any]) -> bytes:
    """Put the manifest entry in a JPEG comment, so a crash before the manifest loses nothing."""
    comment = json.dumps(
        {PROVENANCE_KEY: {"actor": actor.name, "filename": filename, "entry": entry}},
        ensure_ascii=True,
    ).encode("ascii")[:65000]
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    position = 2
    if data[2:4] == b"\xff\xe0":  # keep the JFIF header first
        position = 4 + int.from_bytes(data[4:6], "big")
    return data[:position] + segment + data[position:]


def _adopt_generated_images(actor: Actor) -> list[str]:
    """Give a generated image the manifest entry a crash kept it from getting."""
    manifest = read_manifest(actor)
    listed = set((manifest or {}).get("images") or {})
    pattern = re.compile(rf"{re.escape(actor.name)}_\d+\.jpg")
    adopted: dict[str, dict[str, Any]] = {}
    for name in _folder_names(actor.training_dir):
        if name in listed or not pattern.fullmatch(name):
            continue
        entry = _provenance(actor.training_dir / name, actor.max_file_bytes)
        if entry and entry.get("actor") == actor.name and entry.get("filename") == name:
            adopted[name] = entry["entry"]
    if not adopted:
        return []
    updated = _editable(actor, manifest)
    updated.setdefault("images", {}).update(adopted)
    write_manifest(actor, updated)
    return [f"recorded the manifest entry of generated image {name}" for name in sorted(adopted)]


def _provenance(path: Path, max_bytes: int) -> dict[str, Any] | None:
    try:
        with Image.open(io.BytesIO(read_regular_file(path, max_bytes))) as image:
            comment = image.info.get("comment")
    except (OSError, ValueError, UnreadableFile, Image.DecompressionBombError):
        return None
    try:
        record = parse_json(comment)[PROVENANCE_KEY]
    except (TypeError, ValueError, KeyError):
        return None
    if isinstance(record, dict) and isinstance(record.get("entry"), dict):
        return record
    return None


# --- files and folders --------------------------------------------------------------------------


def _settle_move(source: Path, destination: Path) -> list[str]:
    """Bring ``source`` to ``destination`` if not there yet; never overwrite, never lose."""
    source_exists, destination_exists = os.path.lexists(source), os.path.lexists(destination)
    if source_exists and not destination_exists:
        _move(source, destination)
    elif source_exists and destination_exists:
        if _same_content(source, destination):
            source.unlink()  # the tail of an interrupted cross-filesystem move
        else:
            return [f"kept both {source} and {destination}: they differ (not overwritten)"]
    elif not destination_exists:
        return [f"{source.name} is missing from both {source.parent} and {destination.parent}"]
    return []


def _move(source: Path, destination: Path) -> None:
    try:
        os.rename(source, destination)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            _raise_for_disk(error, f"cannot move {source.name} to {destination.parent}")
    try:  # another filesystem: a durable copy first, then let go of the original
        temp = destination.with_name(f".tmp-{destination.name}")
        shutil.copy2(source, temp)
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.rename(temp, destination)
        fsync_folder(destination.parent)
        source.unlink()
    except OSError as error:
        _raise_for_disk(error, f"cannot move {source.name} to {destination.parent}")


def _same_content(one: Path, two: Path) -> bool:
    """Two regular files with the same bytes (a FIFO is never read: it would block)."""
    try:
        if os.path.samefile(one, two):
            return True
        if not all(stat.S_ISREG(os.lstat(path).st_mode) for path in (one, two)):
            return False
        return _sha256(one) == _sha256(two)
    except OSError:
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _disk_errors(actor: Actor) -> Iterator[None]:
    """A file system error fails this actor with one line (a full disk stops the run)."""
    try:
        yield
    except OSError as error:
        _raise_for_disk(error, f"file error in {actor.name}")


def _raise_for_disk(error: OSError, doing: str) -> None:
    if is_disk_full(error):
        raise FatalRunError(f"disk full: {doing}") from None
    raise ActorError(f"{doing}: {error.strerror or error}") from None


def _folder_names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [entry.name for entry in entries]
    except FileNotFoundError:
        return []


def _removal_folders(actor: Actor) -> list[Path]:
    try:
        with os.scandir(actor.removed_dir) as entries:
            return sorted(
                Path(entry.path) for entry in entries if entry.is_dir(follow_symlinks=False)
            )
    except FileNotFoundError:
        return []


def _new_removal_folder(actor: Actor, run: str) -> Path:
    """``removed_training_data/<run>``; a second batch of the same run gets ``<run>-2``."""
    actor.removed_dir.mkdir(exist_ok=True)
    for suffix in range(1, 1000):
        folder = actor.removed_dir / (run if suffix == 1 else f"{run}-{suffix}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        fsync_folder(actor.removed_dir)
        return folder
    raise ActorError(f"too many removal folders named {run} in {actor.removed_dir}")


def _journals_newest_first(actor: Actor) -> list[tuple[Path, dict[str, Any]]]:
    journals = []
    for folder in _removal_folders(actor):
        journal = _read_journal(actor, folder)
        if journal is not None and journal["removals"]:
            journals.append((journal.get("created_at", ""), folder.name, folder, journal))
    journals.sort(key=lambda item: (item[0], item[1]), reverse=True)
    return [(folder, journal) for _, _, folder, journal in journals]


def _drop_if_empty(folder: Path) -> None:
    """A folder a killed run made before writing its journal holds nothing: tidy it away."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def _relative(actor: Actor, path: Path) -> str:
    return path.relative_to(actor.folder).as_posix()


# --- journal ------------------------------------------------------------------------------------


def _write_journal(folder: Path, journal: dict[str, Any]) -> None:
    try:
        write_json_atomic(folder / JOURNAL_NAME, journal)
    except OSError as error:
        _raise_for_disk(error, f"cannot write {folder / JOURNAL_NAME}")


def _read_journal(actor: Actor, folder: Path) -> dict[str, Any] | None:
    """The folder's journal, checked so that no name in it can reach outside its folders; like
    every file of the actor, refused unread over ``limits.max_file_mib``."""
    path = folder / JOURNAL_NAME
    try:
        journal = parse_json(read_regular_file(path, actor.max_file_bytes).decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnreadableFile) as error:
        raise ActorError(f"removal journal {path} is unreadable ({error}); move it aside") from None
    problem = _journal_problem(journal)
    if problem:
        raise ActorError(f"removal journal {path} is not valid: {problem}; move it aside")
    return journal


def _journal_problem(journal: Any) -> str | None:
    if not isinstance(journal, dict) or journal.get("version") != JOURNAL_VERSION:
        return "unknown format"
    if journal.get("state") not in ("removing", "removed", "restoring"):
        return f"unknown state {journal.get('state')!r}"
    if not isinstance(journal.get("run"), str) or not isinstance(journal.get("removals"), list):
        return "run or removals missing"
    for removal in journal["removals"]:
        if not isinstance(removal, dict) or not isinstance(removal.get("files"), list):
            return "a removal without its file list"
        try:
            check_manifest_filename(removal.get("filename"))
        except ActorError:
            return f"bad file name {removal.get('filename')!r}"
        if not all(_plain_name(name) for name in removal["files"]):
            return f"bad file name in {removal['files']!r}"
        entry = removal.get("manifest_entry")
        if entry is not None and not isinstance(entry, dict):
            return "a manifest entry that is not an object"
    return None


# --- checks -------------------------------------------------------------------------------------


def _check_folders_inside(actor: Actor) -> None:
    """Rule 9: both folders files move between resolve inside the actor's own folder."""
    home = actor.folder.resolve()
    for folder in (actor.training_dir, actor.removed_dir):
        resolved = folder.resolve()
        if not resolved.is_relative_to(home):
            raise ActorError(
                f"{folder.name} of {actor.name} is a symlink to {resolved}, outside the actor's "
                "folder: no file is moved out of or into it; make it a real folder"
            )


def _check_run_name(run: str) -> None:
    if not _plain_name(run) or run.startswith("."):
        raise ValueError(f"run timestamp {run!r} cannot name a folder")


def _check_manifest_names(manifest: dict[str, Any] | None) -> None:
    """A hostile name anywhere in the manifest fails the actor before anything moves."""
    for name in (manifest or {}).get("images") or {}:
        check_manifest_filename(name)


def _plain_name(name: Any) -> bool:
    return (
        isinstance(name, str) and name not in ("", ".", "..") and not set(name) & {"/", "\\", "\0"}
    )


def _editable(actor: Actor, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """A deep copy to change (the original is compared with it), or a new manifest."""
    return json.loads(json.dumps(manifest)) if manifest is not None else {"actor_id": actor.name}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
