"""The progress store as a run meets it: real files, real processes, real SIGKILLs."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import within

from training_data.progress import (
    HOLDER_FILE,
    JOURNAL_FILE,
    PROGRESS_FILE,
    SCHEMA_VERSION,
    LockHeld,
    ProgressError,
    ProgressState,
    ProgressTracker,
    RunLock,
    TrackerClosed,
    format_progress_summary,
    format_resuming_block,
    now_iso,
)

SETTINGS = {
    "targets": {"total": 20, "tolerance": 0.1},
    "categories": {"photorealistic": 0.65, "bw_stylized": 0.2, "color_stylized": 0.15},
    "evaluator": {"backend": "local"},
    "generator": {"backend": "none"},
}
GUIDE_FIELDS = {
    "started_at",
    "last_updated",
    "total_count",
    "completed_count",
    "failed_count",
    "skipped_count",
    "completed_actors",
    "failed_actors",
    "skipped_actors",
    "current_actor",
}
NAMES = [f"{i:04d}_actor" for i in range(10)]


def names(count: int) -> list[str]:
    return [f"{i:05d}_actor" for i in range(count)]


def locked(folder: Path, **options: float) -> ProgressTracker:
    tracker = ProgressTracker(folder, **options)
    tracker.lock("pytest")
    return tracker


def run(
    folder: Path,
    actors: list[str],
    outcomes: dict[str, str],
    *,
    mode: str = "dry_run",
    settings: dict | None = None,
    resume: bool = True,
    retry_failed: bool = False,
) -> list[str]:
    """One whole run: record ``outcomes`` ('completed' / 'failed' / 'skipped'), close, unlock."""
    tracker = locked(folder)
    try:
        pending = tracker.start(
            actors,
            mode,
            SETTINGS if settings is None else settings,
            resume=resume,
            retry_failed=retry_failed,
        )
        for name, outcome in outcomes.items():
            tracker.mark_started(name)
            if outcome == "completed":
                tracker.mark_completed(name)
            elif outcome in ("balanced", "rebalanced", "short"):
                tracker.mark_completed(name, outcome)
            elif outcome == "failed":
                tracker.mark_failed(name, f"Failed to download image {name}_1.jpg: HTTP 404")
            else:
                tracker.mark_skipped(name, "no training images")
        tracker.close()
    finally:
        tracker.unlock()
    return pending


def document(folder: Path) -> dict:
    return json.loads((folder / PROGRESS_FILE).read_bytes())


def journal_line(**event: str) -> str:
    return json.dumps(event) + "\n"


def run_python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- the document ---


def test_progress_json_has_the_guide_fields_and_counts(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[0]: "completed", NAMES[1]: "failed", NAMES[2]: "skipped"})
    saved = document(tmp_path)
    assert GUIDE_FIELDS | {"version", "mode", "settings"} <= set(saved)
    assert saved["version"] == SCHEMA_VERSION
    assert saved["mode"] == "dry_run"
    assert saved["settings"] == SETTINGS
    assert saved["total_count"] == 10
    assert saved["completed_actors"] == [NAMES[0]]
    assert (saved["completed_count"], saved["failed_count"], saved["skipped_count"]) == (1, 1, 1)
    failure = saved["failed_actors"][0]
    assert set(failure) == {"actor_id", "error", "timestamp"}
    assert failure["actor_id"] == NAMES[1]
    assert failure["error"].startswith("Failed to download image")
    assert saved["skipped_actors"][0]["reason"] == "no training images"
    assert saved["current_actor"] is None
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_progress_json_is_indented_json_even_for_awkward_names(tmp_path: Path) -> None:
    awkward = ['quote"d', "back\\slash", "ünïcödé_演员", "tab\there", "line\nbreak", "plain"]
    run(tmp_path, awkward, dict.fromkeys(awkward, "short"))
    text = (tmp_path / PROGRESS_FILE).read_text()
    assert json.loads(text)["completed_actors"] == awkward
    assert json.loads(text)["actor_states"] == dict.fromkeys(awkward, "short")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_document_round_trips_through_state(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[3]: "completed", NAMES[4]: "failed", NAMES[5]: "skipped"})
    saved = document(tmp_path)
    assert ProgressState.from_document(saved).to_document() == saved


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda d: [d], "JSON object"),
        (lambda d: {k: v for k, v in d.items() if k != "version"}, "version"),
        (lambda d: {**d, "version": SCHEMA_VERSION + 1}, "newer"),
        (lambda d: {**d, "mode": "turbo"}, "mode"),
        (lambda d: {**d, "total_count": "289"}, "total_count"),
        (lambda d: {**d, "completed_actors": [1, 2]}, "completed_actors"),
        (lambda d: {**d, "failed_actors": [{"actor_id": "x"}]}, "failed_actors"),
        (lambda d: {**d, "settings": None}, "settings"),
    ],
)
def test_from_document_names_what_is_wrong(tmp_path: Path, change, complaint: str) -> None:
    run(tmp_path, NAMES, {NAMES[0]: "completed"})
    with pytest.raises(ProgressError, match=complaint):
        ProgressState.from_document(change(document(tmp_path)))


# --- the printed blocks ---


def guide_state(current: str | None) -> ProgressState:
    """The guide's example: 289 actors, 45 completed, 2 failed."""
    stamp = "2025-10-17T14:30:45.123456"
    return ProgressState(
        mode="dry_run",
        settings={},
        started_at="2025-10-17T14:15:23.456789",
        last_updated="2025-10-17T14:45:12.789012",
        total_count=289,
        completed=[f"{i:04d}" for i in range(45)],
        failed={
            "0100": {"error": "x", "timestamp": stamp},
            "0101": {"error": "y", "timestamp": stamp},
        },
        current_actor=current,
    )


def test_progress_summary_is_the_guides_block() -> None:
    expected = "\n".join(
        [
            "=" * 70,
            "PROGRESS SUMMARY",
            "=" * 70,
            "Started:     2025-10-17T14:15:23.456789",
            "Last update: 2025-10-17T14:45:12.789012",
            "",
            "Total:       289 actors",
            "Completed:   45 (15.6%)",
            "Failed:      2",
            "Skipped:     0",
            "Remaining:   242",
            "",
            "Currently processing: 0046_european_25_female",
            "=" * 70,
        ]
    )
    assert format_progress_summary(guide_state("0046_european_25_female")) == expected


def test_progress_summary_without_an_actor_in_flight_ends_after_remaining() -> None:
    lines = format_progress_summary(guide_state(None)).splitlines()
    assert lines[-2:] == ["Remaining:   242", "=" * 70]
    assert not any("Currently processing" in line for line in lines)


def test_resuming_block_reads_as_in_the_guide() -> None:
    assert format_resuming_block(guide_state(None), 244).splitlines() == [
        "=" * 70,
        "RESUMING FROM PREVIOUS PROGRESS",
        "=" * 70,
        "Resuming with 244 remaining actors",
        "Overall progress: 16.3%",  # 47 of 289 done (45 completed, 2 failed), as the bar says
        "=" * 70,
    ]


def test_one_actor_is_not_written_as_actors() -> None:
    state = ProgressState.fresh("dry_run", {}, 1, "2025-10-17T14:15:23+02:00")
    assert "Total:       1 actor\n" in format_progress_summary(state)
    assert "Resuming with 1 remaining actor\n" in format_resuming_block(state, 1)


def test_timestamps_carry_their_utc_offset() -> None:
    stamp = now_iso()
    assert datetime.fromisoformat(stamp).utcoffset() is not None, stamp


def test_actor_states_list_every_outcome_and_follow_a_retry(tmp_path: Path) -> None:
    outcomes = {NAMES[0]: "rebalanced", NAMES[1]: "short", NAMES[2]: "balanced"}
    run(tmp_path, NAMES, outcomes | {NAMES[3]: "failed", NAMES[4]: "skipped"})
    expected = outcomes | {NAMES[3]: "failed", NAMES[4]: "skipped"}
    assert document(tmp_path)["actor_states"] == expected
    assert ProgressTracker(tmp_path).read().actor_states == expected
    run(tmp_path, NAMES, {NAMES[3]: "short"}, retry_failed=True)
    assert document(tmp_path)["actor_states"] == expected | {NAMES[3]: "short"}


# --- runs and resume ---


def test_resume_skips_completed_failed_and_skipped_in_the_given_order(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[1]: "completed", NAMES[4]: "failed", NAMES[7]: "skipped"})
    shuffled = [*NAMES[5:], *NAMES[:5]]
    pending = run(tmp_path, shuffled, {})
    assert pending == [n for n in shuffled if n not in {NAMES[1], NAMES[4], NAMES[7]}]
    state = ProgressTracker(tmp_path).read()
    assert (state.completed, list(state.failed), list(state.skipped)) == (
        [NAMES[1]],
        [NAMES[4]],
        [NAMES[7]],
    )
    assert state.remaining == 7


def test_a_run_with_nothing_left_gets_no_actors(tmp_path: Path) -> None:
    run(tmp_path, NAMES[:3], {NAMES[0]: "completed", NAMES[1]: "failed", NAMES[2]: "skipped"})
    assert run(tmp_path, NAMES[:3], {}) == []
    state = ProgressTracker(tmp_path).read()
    assert (state.remaining, state.percent_complete) == (0, pytest.approx(100 / 3))


def test_retry_failed_makes_failed_actors_pending_again(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[0]: "completed", NAMES[2]: "failed", NAMES[3]: "skipped"})
    pending = run(tmp_path, NAMES, {NAMES[2]: "completed"}, retry_failed=True)
    assert pending == [n for n in NAMES if n not in {NAMES[0], NAMES[3]}]
    saved = document(tmp_path)
    assert saved["failed_actors"] == []
    assert saved["completed_actors"] == [NAMES[0], NAMES[2]]


def test_no_resume_replaces_previous_progress(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[0]: "completed", NAMES[1]: "failed"})
    first_start = document(tmp_path)["started_at"]
    pending = run(tmp_path, NAMES, {}, mode="execute", resume=False)
    assert pending == NAMES
    saved = document(tmp_path)
    assert (saved["mode"], saved["completed_actors"], saved["failed_actors"]) == ("execute", [], [])
    assert saved["started_at"] != first_start


def test_dataset_growing_and_shrinking_between_runs(tmp_path: Path) -> None:
    run(tmp_path, NAMES[:6], {NAMES[0]: "completed", NAMES[1]: "completed", NAMES[2]: "failed"})
    grown = run(tmp_path, NAMES, {})
    assert grown == NAMES[3:]
    state = ProgressTracker(tmp_path).read()
    assert (state.total_count, state.remaining) == (10, 7)

    # NAMES[0] and NAMES[2] leave the dataset: kept on file, out of this run's counts.
    shrunk = [n for n in NAMES if n not in {NAMES[0], NAMES[2]}]
    run(tmp_path, shrunk, {NAMES[3]: "completed"})
    state = ProgressTracker(tmp_path).read()
    assert state.total_count == 8
    assert (state.completed_in_run, state.failed_in_run, state.remaining) == (2, 0, 6)
    assert state.percent_complete == pytest.approx(25.0)
    assert sorted(state.missing_actors) == [NAMES[0], NAMES[2]]
    assert NAMES[0] in state.completed and NAMES[2] in state.failed
    assert "Not found:   2 recorded actors" in format_progress_summary(state)

    # They come back: not redone, counted again.
    back = run(tmp_path, NAMES, {})
    assert NAMES[0] not in back and NAMES[2] not in back
    state = ProgressTracker(tmp_path).read()
    assert (state.missing_actors, state.total_count, state.remaining) == ([], 10, 6)


def test_resume_in_the_other_mode_stops_and_says_what_to_do(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[0]: "completed"})
    before = (tmp_path / PROGRESS_FILE).read_bytes()
    tracker = locked(tmp_path)
    with pytest.raises(ProgressError) as caught:
        tracker.start(NAMES, "execute", SETTINGS, resume=True, retry_failed=False)
    message = str(caught.value)
    assert str(tmp_path / PROGRESS_FILE) in message
    assert "is from a dry-run" in message
    assert "--reset-progress" in message and "--no-resume" in message
    assert (tmp_path / PROGRESS_FILE).read_bytes() == before


def test_resume_with_other_settings_names_what_changed(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[0]: "completed"}, mode="execute")
    before = (tmp_path / PROGRESS_FILE).read_bytes()
    changed = {
        **SETTINGS,
        "categories": {"photorealistic": 1.0},
        "generator": {"backend": "replicate", "model": "m"},
    }
    tracker = locked(tmp_path)
    with pytest.raises(ProgressError, match=r"changed: categories, generator\)"):
        tracker.start(NAMES, "execute", changed, resume=True, retry_failed=False)
    assert (tmp_path / PROGRESS_FILE).read_bytes() == before


def test_same_settings_in_another_key_order_resume(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[0]: "completed"})
    reordered = {key: SETTINGS[key] for key in reversed(list(SETTINGS))}
    assert run(tmp_path, NAMES, {}, settings=reordered) == NAMES[1:]


def test_marks_are_for_this_runs_actors_only(tmp_path: Path) -> None:
    tracker = locked(tmp_path)
    tracker.start(NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False)
    with pytest.raises(ValueError, match="not an actor of this run"):
        tracker.mark_completed("stranger")
    tracker.close()


# --- journal, folding and closing ---


def test_read_sees_every_mark_before_progress_json_is_folded(tmp_path: Path) -> None:
    tracker = locked(tmp_path, fold_interval=3600)
    tracker.start(NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False)
    tracker.mark_started(NAMES[0])
    tracker.mark_completed(NAMES[0])
    tracker.mark_started(NAMES[1])
    tracker.mark_started(NAMES[1])  # the same actor announced twice changes nothing
    assert document(tmp_path)["completed_actors"] == []  # not folded yet: the journal has it
    seen = ProgressTracker(tmp_path).read()
    assert (seen.completed, seen.current_actor) == ([NAMES[0]], NAMES[1])
    assert "Currently processing: " + NAMES[1] in format_progress_summary(seen)
    tracker.close()
    assert document(tmp_path)["completed_actors"] == [NAMES[0]]
    assert document(tmp_path)["current_actor"] is None


def test_journal_is_folded_into_progress_json_while_the_run_goes(tmp_path: Path) -> None:
    tracker = locked(tmp_path, fold_interval=0.05)
    tracker.start(NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False)
    for name in NAMES[:4]:
        tracker.mark_started(name)
        tracker.mark_completed(name)
    deadline = time.monotonic() + 10
    while document(tmp_path)["completed_actors"] != NAMES[:4] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert document(tmp_path)["completed_actors"] == NAMES[:4]
    tracker.close()


def test_torn_last_journal_line_is_ignored_and_a_corrupt_one_is_reported(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[0]: "completed"})
    done = journal_line(event="completed", actor_id=NAMES[1], timestamp="2025-10-17T14:45:12")
    journal = tmp_path / JOURNAL_FILE
    journal.write_text(done + '{"event":"completed","actor_id":"' + NAMES[2])
    assert ProgressTracker(tmp_path).read().completed == [NAMES[0], NAMES[1]]
    assert run(tmp_path, NAMES, {}) == NAMES[2:]  # start() folds it in
    journal.write_text('{"event":"completed"\n' + done)
    with pytest.raises(ProgressError, match=rf"{JOURNAL_FILE} \(line 1"):
        ProgressTracker(tmp_path).read()


def test_marks_after_close_are_refused(tmp_path: Path) -> None:
    tracker = locked(tmp_path)
    tracker.start(NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False)
    tracker.close()
    tracker.close()
    with pytest.raises(TrackerClosed, match=f"completed {NAMES[0]} not recorded"):
        tracker.mark_completed(NAMES[0])
    assert tracker.state.completed == []


def test_close_keeps_exactly_the_marks_a_worker_thread_got_recorded(tmp_path: Path) -> None:
    actors = names(5000)
    tracker = locked(tmp_path, fold_interval=0.01)
    tracker.start(actors, "dry_run", SETTINGS, resume=True, retry_failed=False)
    recorded: list[str] = []
    refused: list[str] = []

    def worker() -> None:
        for name in actors:
            try:
                tracker.mark_started(name)
                tracker.mark_completed(name)
            except TrackerClosed:
                refused.append(name)
                return
            recorded.append(name)

    thread = threading.Thread(target=worker)
    thread.start()
    while len(recorded) < 50:
        time.sleep(0.001)
    tracker.close()
    thread.join()
    assert refused, "the worker should have outlived close()"
    assert document(tmp_path)["completed_actors"] == recorded
    assert tracker.state.completed == recorded


def test_state_is_a_snapshot(tmp_path: Path) -> None:
    tracker = locked(tmp_path)
    tracker.start(NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False)
    before = tracker.state
    tracker.mark_completed(NAMES[0])
    assert (before.completed, tracker.state.completed) == ([], [NAMES[0]])
    tracker.close()


# --- unreadable progress ---

UNREADABLE = {
    "garbage": b"\x00\xffnot json at all",
    "truncated": b'{"version": 1, "mode": "dry_run", "completed_actors": ["0000_ac',
    "wrong shape": b'["0000_actor", "0001_actor"]\n',
    "guide format without version": json.dumps(
        {"started_at": "x", "completed_actors": [], "total_count": 3}
    ).encode(),
}


@pytest.mark.parametrize("content", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_progress_is_never_overwritten_and_reset_keeps_it(
    tmp_path: Path, content: bytes
) -> None:
    progress = tmp_path / PROGRESS_FILE
    progress.write_bytes(content)
    with pytest.raises(ProgressError, match=str(progress)):
        ProgressTracker(tmp_path).read()
    for resume in (True, False):
        tracker = locked(tmp_path)
        with pytest.raises(ProgressError, match=str(progress)) as caught:
            tracker.start(NAMES, "dry_run", SETTINGS, resume=resume, retry_failed=False)
        assert "--reset-progress" in str(caught.value)
        assert "\n" not in str(caught.value)
        tracker.unlock()
        assert progress.read_bytes() == content

    tracker = locked(tmp_path)
    kept = tracker.reset()
    assert kept is not None and kept.parent == tmp_path
    assert kept.name.startswith(f"{PROGRESS_FILE}.") and kept.name.endswith(".bak")
    stamp = kept.name.removeprefix(f"{PROGRESS_FILE}.").removesuffix(".bak")
    assert datetime.strptime(stamp, "%Y%m%dT%H%M%SZ"), stamp  # ISO 8601 basic, UTC
    assert kept.read_bytes() == content
    assert not progress.exists()
    assert tracker.start(NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False) == NAMES
    tracker.close()


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_loop(path: Path) -> None:
    path.symlink_to(path.name)


def link_to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def make_nested(path: Path) -> None:
    path.write_text('{"version": 1, "settings": ' + "[" * 1000 + "]" * 1000 + "}")


def make_huge(path: Path) -> None:
    with open(path, "wb") as sparse:
        sparse.truncate(6 * 1024**3)


HOSTILE = {
    "nested 1000 deep": (make_nested, "nested more than 64 levels deep"),
    "a FIFO": (make_fifo, "not a regular file (a FIFO)"),
    "a symlink loop": (make_loop, "a symlink loop"),
    "a link to /dev/zero": (link_to_dev_zero, "not a regular file (a character device)"),
    "6 GiB": (
        make_huge,
        "6,442,450,944 bytes is over the 1,048,576-byte limit (limits.max_file_mib)",
    ),
}


@pytest.mark.parametrize(("make", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_progress_is_one_line_and_reset_moves_it_aside(
    tmp_path: Path, make, reason: str
) -> None:
    progress = tmp_path / PROGRESS_FILE
    make(progress)
    tracker = ProgressTracker(tmp_path, max_file_bytes=1024 * 1024)

    with pytest.raises(ProgressError) as caught:
        within(10, tracker.read)

    assert str(caught.value) == (
        f"cannot read {progress} ({reason}); fix or move it, or run --reset-progress "
        "(it keeps the file aside)"
    )
    tracker.lock("pytest")
    with pytest.raises(ProgressError, match="--reset-progress"):
        within(10, tracker.start, NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False)
    kept = within(10, tracker.reset)
    assert kept is not None and os.path.lexists(kept) and not os.path.lexists(progress)
    assert tracker.start(NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False) == NAMES
    tracker.close()


def test_a_journal_line_nested_a_thousand_levels_deep_is_one_line(tmp_path: Path) -> None:
    run(tmp_path, NAMES, {NAMES[0]: "completed"})
    (tmp_path / JOURNAL_FILE).write_text("[" * 1000 + "]" * 1000 + "\n")

    with pytest.raises(ProgressError, match=r"line 1: nested more than 64 levels deep"):
        ProgressTracker(tmp_path).read()
    locked(tmp_path).reset()
    assert ProgressTracker(tmp_path).read() is None


def test_a_fifo_holder_file_does_not_block_the_refusal(tmp_path: Path) -> None:
    first = locked(tmp_path)
    (tmp_path / HOLDER_FILE).unlink()
    os.mkfifo(tmp_path / HOLDER_FILE)

    with pytest.raises(LockHeld, match="holder unknown"):
        within(10, locked, tmp_path)
    first.unlock()


def test_reset_keeps_readable_progress_with_its_journal_folded_in(tmp_path: Path) -> None:
    assert ProgressTracker(tmp_path).read() is None
    assert locked(tmp_path).reset() is None
    run(tmp_path, NAMES, {NAMES[0]: "completed"})
    (tmp_path / JOURNAL_FILE).write_text(
        journal_line(event="failed", actor_id=NAMES[1], error="e", timestamp="t")
    )
    first = locked(tmp_path)
    kept = first.reset()
    first.unlock()
    assert kept is not None
    assert not (tmp_path / PROGRESS_FILE).exists() and not (tmp_path / JOURNAL_FILE).exists()
    saved = json.loads(kept.read_bytes())
    assert (saved["completed_actors"], saved["failed_actors"][0]["actor_id"]) == (
        [NAMES[0]],
        NAMES[1],
    )
    run(tmp_path, NAMES, {NAMES[5]: "completed"})
    again = locked(tmp_path).reset()
    assert again is not None and again != kept and kept.exists()


# --- the lock ---

HOLD_LOCK = """
    import sys, time
    from training_data.progress import ProgressTracker
    tracker = ProgressTracker(sys.argv[1])
    tracker.lock("evaluate_and_balance.py --all --execute")
    print("LOCKED", flush=True)
    time.sleep(60)
"""


def test_second_process_is_refused_and_a_killed_holders_lock_is_free(tmp_path: Path) -> None:
    holder = run_python(HOLD_LOCK, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        with pytest.raises(LockHeld) as caught:
            locked(tmp_path)
        message = str(caught.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message
        assert "command: evaluate_and_balance.py --all --execute" in message
        assert str(tmp_path / "progress.lock") in message
        assert "started 20" in message
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    tracker = locked(tmp_path)
    holder_info = json.loads((tmp_path / HOLDER_FILE).read_bytes())
    assert holder_info["pid"] == os.getpid()
    tracker.unlock()
    assert not (tmp_path / HOLDER_FILE).exists()


def test_second_tracker_in_the_same_process_is_refused(tmp_path: Path) -> None:
    first = locked(tmp_path)
    with pytest.raises(LockHeld, match=f"pid {os.getpid()}"):
        locked(tmp_path)
    first.unlock()
    locked(tmp_path).unlock()


def run_lock(folder: Path, *, shared: bool) -> RunLock:
    lock_path = folder / "data.lock"
    holder_path = folder / "data.lock.holder"
    return RunLock(lock_path, holder_path, in_use="busy", folder="it", shared=shared)


def test_shared_holders_go_together_and_keep_an_exclusive_one_out(tmp_path: Path) -> None:
    stale = tmp_path / "data.lock.holder.999999999"
    stale.write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname()}))
    first, second = run_lock(tmp_path, shared=True), run_lock(tmp_path, shared=True)
    first.acquire("dry-run one")
    assert not stale.exists()  # a killed shared holder's file is swept
    second.acquire("dry-run two")  # another process would get its own holder file

    with pytest.raises(LockHeld, match=r"^busy \(pid \d+ on .*command: dry-run"):
        run_lock(tmp_path, shared=False).acquire("execute")
    first.release()
    second.release()
    exclusive = run_lock(tmp_path, shared=False)
    exclusive.acquire("execute")
    with pytest.raises(LockHeld, match="command: execute"):
        run_lock(tmp_path, shared=True).acquire("dry-run three")
    exclusive.release()


def test_lock_sweeps_temp_files_a_killed_run_left(tmp_path: Path) -> None:
    leftover = tmp_path / ".tmp-progress.json.k1ll3d"
    leftover.write_text('{"half": ')
    locked(tmp_path).unlock()
    assert not leftover.exists()


def test_run_steps_need_the_lock(tmp_path: Path) -> None:
    tracker = ProgressTracker(tmp_path)
    with pytest.raises(RuntimeError, match="lock"):
        tracker.start(NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False)
    with pytest.raises(RuntimeError, match="lock"):
        tracker.reset()


# --- crashes ---

MARK_FOREVER = """
    import sys
    from training_data.progress import ProgressTracker
    folder, count, fold_interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    tracker = ProgressTracker(folder, fold_interval=fold_interval)
    tracker.lock("marker")
    names = [f"{i:06d}_actor" for i in range(count)]
    pending = tracker.start(names, "dry_run", {}, resume=True, retry_failed=False)
    print("READY", flush=True)
    for name in pending:
        tracker.mark_started(name)
        print("S", name, flush=True)
        if name.endswith("7_actor"):
            tracker.mark_failed(name, "planted failure")
            print("F", name, flush=True)
        else:
            tracker.mark_completed(name)
            print("C", name, flush=True)
"""


def reported(output: str, tag: str) -> set[str]:
    """Names the child printed with ``tag``, whole lines only (a kill may cut the last)."""
    whole = output.split("\n")[:-1]
    return {line[2:] for line in whole if line.startswith(tag + " ")}


def test_sigkill_at_random_instants_never_loses_or_invents_progress(tmp_path: Path) -> None:
    shuffle = random.Random(20251017)
    started: set[str] = set()
    completed: set[str] = set()
    failed: set[str] = set()
    for kill in range(20):
        fold_interval = "0.005" if kill % 2 else "1.0"
        child = run_python(MARK_FOREVER, str(tmp_path), "30000", fold_interval)
        assert child.stdout.readline() == "READY\n", child.stderr.read()
        if kill % 5 == 0:  # a reader while the run goes sees whole, current-enough progress
            assert ProgressTracker(tmp_path).read() is not None
        time.sleep(shuffle.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        output = child.stdout.read()  # not communicate(): it skips what readline() buffered
        child.wait()
        started |= reported(output, "S")
        completed |= reported(output, "C")
        failed |= reported(output, "F")

        json.loads((tmp_path / PROGRESS_FILE).read_bytes())  # whole JSON at the kill
        state = ProgressTracker(tmp_path).read()
        assert state is not None
        assert completed <= set(state.completed) <= started
        assert failed <= set(state.failed) <= started
        assert not set(state.completed) & set(state.failed)
        assert state.current_actor is None  # nobody is processing: the holder was killed
    assert len(completed) > 100, "the children should have got some work done"


def test_show_progress_in_another_process_while_a_run_goes(tmp_path: Path) -> None:
    tracker = locked(tmp_path, fold_interval=3600)
    tracker.start(NAMES, "dry_run", SETTINGS, resume=True, retry_failed=False)
    tracker.mark_started(NAMES[0])
    tracker.mark_completed(NAMES[0])
    tracker.mark_started(NAMES[1])
    show = run_python(
        """
        import sys
        from training_data.progress import ProgressTracker, format_progress_summary
        print(format_progress_summary(ProgressTracker(sys.argv[1]).read()))
        """,
        str(tmp_path),
    )
    output, errors = show.communicate(timeout=60)
    tracker.close()
    assert show.returncode == 0, errors
    assert "Completed:   1 (10.0%)" in output
    assert f"Currently processing: {NAMES[1]}" in output
