"""The batch run over every actor: progress, banners, the bar, and stopping cleanly on signals.

Each actor's step runs in a worker thread while the main thread waits on it and on the stop signal.
So a Ctrl+C or SIGTERM is answered within a fraction of a second whatever the step is doing: the
actor in flight is left unrecorded (it runs again on resume), progress is saved, the summary
printed, and the process exits at once without waiting for network calls still under way.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from tqdm import tqdm

from training_data.config import Config, result_settings
from training_data.dataset import Actor
from training_data.errors import (
    EXIT_ACTOR_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ActorError,
    FatalRunError,
    is_disk_full,
)
from training_data.pipeline import (
    ActorOutcome,
    RunContext,
    execute_has_begun,
    forget_execute_started,
    process_actor,
)
from training_data.plan import BALANCED, REBALANCED, SHORT, SKIPPED
from training_data.progress import (
    RULE,
    ProgressTracker,
    format_progress_summary,
    format_resuming_block,
)
from training_data.shards import WHOLE, Shard, recorded_in_other_stores
from training_data.wording import plural
from training_data.workers import Finished, WorkerPool, WorkerSetup, usable_cpus, warm_up

EXIT_FOR_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
WAIT_STEP = 0.1
LISTED_SHORT = 20  # the FINAL SUMMARY names this many short actors; the rest are counted
T = TypeVar("T")


def say(line: str = "") -> None:
    """Print a line without breaking the progress bar."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


class _BarFriendlyHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def configure_logging() -> None:
    handler = _BarFriendlyHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # each retry; the final error is ours


class Stopped(Exception):
    """Raised in the main thread when a stop signal arrives during a wait."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """First SIGINT/SIGTERM asks for a clean stop; a second one exits at once."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._event = threading.Event()

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        previous = {sig: signal.signal(sig, self._handle) for sig in EXIT_FOR_SIGNAL}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None:
            os.write(2, b"\nStopped at once.\n")
            os._exit(EXIT_FOR_SIGNAL[signal.Signals(signum)])
        self.received = signum
        self._event.set()

    def check(self) -> None:
        """Raise ``Stopped`` if a signal has come."""
        if self.received is not None:
            raise Stopped(self.received)

    def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` in a worker thread; raise ``Stopped`` as soon as a signal arrives."""
        box: dict[str, Any] = {}
        finished = threading.Event()

        def worker() -> None:
            try:
                box["value"] = work()
            except BaseException as error:  # handed to the main thread below
                box["error"] = error
            finally:
                finished.set()

        self.check()
        threading.Thread(target=worker, name="actor-step", daemon=True).start()
        while not finished.wait(WAIT_STEP):
            self.check()
        self.check()
        if "error" in box:
            raise box["error"]
        return box["value"]


def exit_now(code: int) -> NoReturn:
    """Leave without joining worker threads that may still wait on the network."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class SessionTally:
    """What this session did, for the FINAL SUMMARY."""

    already_balanced: int = 0
    rebalanced: int = 0
    skipped: int = 0
    removed: int = 0
    generated: int = 0
    unfulfilled: int = 0
    cache_hits: int = 0
    failures: list[str] = field(default_factory=list)
    shorts: list[str] = field(default_factory=list)

    @property
    def successful(self) -> int:
        """Balanced or rebalanced: a short actor never counts as one."""
        return self.already_balanced + self.rebalanced

    @property
    def short(self) -> int:
        return len(self.shorts)

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def processed(self) -> int:
        return self.successful + self.short + self.failed + self.skipped

    def count(self, name: str, outcome: ActorOutcome) -> None:
        if outcome.state == SKIPPED:
            self.skipped += 1
            return
        self.cache_hits += outcome.cache_hits
        self.already_balanced += outcome.state == BALANCED
        self.rebalanced += outcome.state == REBALANCED
        if outcome.state == SHORT:
            self.shorts.append(f"{name}: {outcome.state_reason}")
        if outcome.execution is not None:
            self.removed += len(outcome.execution.removed)
            self.generated += len(outcome.execution.generated)
            self.unfulfilled += sum(outcome.execution.unfulfilled.values())

    def count_failure(self, name: str, error: str) -> None:
        self.failures.append(f"{name}: {error}")


def format_final_summary(tally: SessionTally, execute: bool, usage: dict[str, Any]) -> str:
    lines = [
        RULE,
        "FINAL SUMMARY",
        RULE,
        f"Processed: {plural(tally.processed, 'actor')} in this session",
        f"  Successful: {tally.successful}",
        f"  Already balanced: {tally.already_balanced}",
        f"  Rebalanced: {tally.rebalanced}",
        f"  Short: {tally.short}",
        f"  Failed: {tally.failed}",
        f"  Skipped: {tally.skipped}",
    ]
    if execute:
        lines += [
            f"  Images removed: {tally.removed}",
            f"  Images generated: {tally.generated}",
            f"  Images not generated (unfulfilled): {tally.unfulfilled}",
        ]
    if "escalated" in usage:
        judged, escalated = usage.get("images_judged", 0), usage["escalated"]
        share = f" ({100.0 * escalated / judged:.1f}%)" if judged else ""
        lines.append(
            f"  Escalated to the vision model: {escalated} of {judged} images judged{share}"
        )
    if usage.get("backend") == "openai" or "escalated" in usage:
        lines.append(
            f"  Evaluator requests: {usage.get('requests', 0)}, cache hits: "
            f"{tally.cache_hits}, tokens: {usage.get('total_tokens', 0)}"
        )
    lines += [f"  short: {short}" for short in tally.shorts[:LISTED_SHORT]]
    if tally.short > LISTED_SHORT:
        lines.append(
            f"  short: {tally.short - LISTED_SHORT} more (actor_states in progress.json, "
            "state_reason in each evaluation JSON)"
        )
    lines += [f"  failed: {failure}" for failure in tally.failures]
    return "\n".join(lines)


def closing_line(tally: SessionTally) -> str | None:
    """The run's last line when some actor did not reach its target."""
    if not tally.short:
        return None
    return (
        f"{plural(tally.short, 'actor')} could not reach the target (state short); "
        "what is missing is in each one's state_reason."
    )


def actor_banner(done: int, total: int, name: str) -> str:
    """The guide's banner. ``done``: actors of the run already finished, this session or before,
    so the number and the share agree with the resume block and the bar."""
    return "\n".join(
        [
            RULE,
            f"Processing actor {done + 1}/{total}: {name}",
            f"Overall progress: {100.0 * done / total:.1f}%",
            RULE,
        ]
    )


@dataclass
class BatchRun:
    """``--all``: every actor (of this shard), with progress tracking, in ``workers`` processes."""

    config: Config
    actors: list[Actor]  # as the command line found them (one scan of the data folder)
    data_dir: Path
    output_dir: Path
    execute: bool
    resume: bool
    retry_failed: bool
    command: str
    workers: int = 1
    shard: Shard = WHOLE

    @property
    def sharded(self) -> bool:
        return self.shard.count > 1

    def run(self) -> int:
        if self.workers > 1:
            warm_up()
        max_file_bytes = self.config.limits.max_file_bytes
        actors = self.actors
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tracker = ProgressTracker(self.shard.folder(self.output_dir), max_file_bytes=max_file_bytes)
        tracker.lock(self.command)
        try:
            return self._run_locked(actors, tracker)
        except BrokenPipeError:  # stdout closed: keep what is done; the actor in flight is pending
            tracker.close()
            raise
        finally:
            tracker.unlock()

    def _run_locked(self, actors: list[Actor], tracker: ProgressTracker) -> int:
        # A missing key or token stops here, before progress records a run that cannot start.
        context = RunContext.create(
            self.config,
            self.output_dir,
            execute=self.execute,
            data_dir=self.data_dir,
            sharded=self.sharded,
            in_worker=self.sharded,  # shards leave the shared index to --report
        )
        previous = tracker.read() if self.resume else None
        mode = "execute" if self.execute else "dry_run"
        settings = result_settings(self.config)
        done_elsewhere = (
            recorded_in_other_stores(
                self.output_dir,
                tracker.output_dir,
                mode,
                settings,
                self.config.limits.max_file_bytes,
                retry_failed=self.retry_failed,
            )
            if self.resume
            else set()
        )
        actors = [
            actor
            for actor in actors
            if self.shard.owns(actor.name) and actor.name not in done_elsewhere
        ]
        names = [actor.name for actor in actors]
        pending = tracker.start(
            names, mode, settings, resume=self.resume, retry_failed=self.retry_failed
        )
        if self.sharded:
            say(
                f"Shard {self.shard.index} of {self.shard.count}: {plural(len(names), 'actor')} "
                f"({len(done_elsewhere)} recorded in other progress stores are left out)"
            )
        if previous is not None and len(pending) < len(names):
            say(format_resuming_block(tracker.state, len(pending)))
        if not pending:
            tracker.close()
            state = tracker.state
            say(format_progress_summary(state))
            say(nothing_left_line(state.failed_in_run))
            return EXIT_OK
        return self._process(actors, pending, tracker, context)

    def _process(
        self,
        actors: list[Actor],
        pending: list[str],
        tracker: ProgressTracker,
        context: RunContext,
    ) -> int:
        by_name = {actor.name: actor for actor in actors}
        tally = SessionTally()
        stop = StopSignals()
        done_before = len(actors) - len(pending)
        pool = self._pool(context, len(pending))
        usage_by_worker: dict[int, dict[str, Any]] = {}
        done = done_before

        def started(name: str) -> None:
            if pool is None:  # one at a time: the banner comes first, the lines as they come
                say(actor_banner(done, len(actors), name))
            tracker.mark_started(name)

        work = ((name, by_name[name]) for name in pending)
        if pool is None:
            results = run_in_process(work, context, stop, started)
        else:
            results = pool.run(work, started, stop.check, WAIT_STEP)
        with (
            stop.installed(),
            tqdm(
                total=len(actors),
                initial=done_before,
                unit="actor",
                file=sys.stderr,
                disable=not sys.stderr.isatty(),
                dynamic_ncols=True,
            ) as bar,
        ):
            try:
                for name, finished in results:
                    if pool is not None:  # grouped: the banner with the actor's own lines
                        say(actor_banner(done, len(actors), name))
                    done += 1
                    try:
                        outcome = finished.get()
                    except FatalRunError as fatal:
                        return self._fatal_stop(pool, tracker, name, str(fatal), context)
                    except ActorError as error:
                        self._fail(tracker, tally, name, str(error), context)
                    except OSError as error:
                        if is_disk_full(error):
                            message = f"disk full: {error}"
                            return self._fatal_stop(pool, tracker, name, message, context)
                        message = f"{type(error).__name__}: {error}"
                        self._fail(tracker, tally, name, message, context)
                    else:
                        self._record(tracker, tally, name, outcome, context)
                        usage_by_worker[outcome.worker] = outcome.usage
                    if not self.data_dir.is_dir():
                        message = f"data folder {self.data_dir} disappeared"
                        return self._fatal_stop(pool, tracker, name, message, context)
                    bar.update(1)
            except Stopped as stopped:
                if pool is not None:
                    pool.terminate()
                bar.leave = False
                bar.close()  # cleared now, so no write below can draw it again
                self._finish_report(context)
                return self._stopped(tracker, stopped.signum)
            finally:
                if pool is not None:
                    pool.terminate()  # already gone after a clean end; at once on any error
        self._finish_report(context)
        tracker.close()
        usage = sum_usage(usage_by_worker.values()) if pool is not None else context.backend.usage()
        say(format_final_summary(tally, self.execute, usage | {"backend": context.backend.name}))
        say()
        say(format_progress_summary(tracker.state))
        last = closing_line(tally)
        if last:
            say(last)
        if self.sharded:
            say("This shard is done; once every shard is, run --report to build the review index.")
        return EXIT_ACTOR_FAILED if tally.failed else EXIT_OK

    def _pool(self, context: RunContext, pending: int) -> WorkerPool | None:
        """None for one worker (actors run in this process, as they always did)."""
        count = min(self.workers, pending)
        if count <= 1:
            return None
        setup = WorkerSetup(
            config=self.config,
            output_dir=self.output_dir,
            data_dir=self.data_dir,
            execute=self.execute,
            sharded=self.sharded,
            run_timestamp=context.run_timestamp,
            library_threads=max(1, usable_cpus() // count),
        )
        return WorkerPool(setup, count)

    def _fatal_stop(
        self,
        pool: WorkerPool | None,
        tracker: ProgressTracker,
        name: str,
        error: str,
        context: RunContext,
    ) -> int:
        if pool is not None:
            pool.terminate()
        self._finish_report(context)
        return self._fatal(tracker, name, error)

    def _finish_report(self, context: RunContext) -> None:
        if not self.sharded:
            finish_report(context)

    def _record(
        self,
        tracker: ProgressTracker,
        tally: SessionTally,
        name: str,
        outcome: ActorOutcome,
        context: RunContext,
    ) -> None:
        for line in outcome.lines:
            say(line)
        if outcome.state == SKIPPED:
            tracker.mark_skipped(name, outcome.state_reason)
        else:
            tracker.mark_completed(name, outcome.state)
        if self.execute:
            forget_execute_started(self.output_dir, name)
        tally.count(name, outcome)
        if not self.sharded:
            update_report(context, name, outcome)

    def _fail(
        self,
        tracker: ProgressTracker,
        tally: SessionTally,
        name: str,
        error: str,
        context: RunContext,
    ) -> None:
        max_file_bytes = self.config.limits.max_file_bytes
        if self.execute and execute_has_begun(self.output_dir, name, max_file_bytes):
            error += (
                "; its execute had begun (what it moved is journaled): --retry-failed finishes "
                "it, --restore undoes it"
            )
        say(f"  FAILED: {error}")
        tracker.mark_failed(name, error)
        tally.count_failure(name, error)
        if not self.sharded:
            report_failure(context, name, error)

    @staticmethod
    def _stopped(tracker: ProgressTracker, signum: int) -> NoReturn:
        tracker.close()
        tracker.unlock()
        cause = "Interrupted by user (Ctrl+C)" if signum == signal.SIGINT else "Stopped by SIGTERM"
        say()
        say(f"⚠️  {cause}")
        say("Progress has been saved. Run again with --resume to continue.")
        say()
        say(format_progress_summary(tracker.state))
        say()
        say("✅ Gracefully stopped. Progress has been saved.")
        exit_now(EXIT_FOR_SIGNAL[signal.Signals(signum)])

    @staticmethod
    def _fatal(tracker: ProgressTracker, name: str, error: str) -> int:
        tracker.close()
        say(format_progress_summary(tracker.state))
        print(
            f"error: run stopped: {error}. Actor {name} was left pending; "
            "fix the cause and run the same command again.",
            file=sys.stderr,
        )
        return EXIT_USAGE


def finish_report(context: RunContext) -> None:
    """The review report's CSVs, written once at the end (and on any stop) of a run."""
    try:
        context.review.write_tables()
    except OSError as problem:
        say(f"report tables not updated: {problem.strerror or problem}")


def update_report(context: RunContext, name: str, outcome: ActorOutcome) -> None:
    """The actor's row in the review index (its page and thumbnails are already written)."""
    try:
        if outcome.state == SKIPPED:
            context.review.record_skipped(name, outcome.state_reason)
        elif outcome.review is not None:
            context.review.put_entry(outcome.review, throttled=True)
    except OSError as problem:
        say(f"  report not updated: {problem.strerror or problem}")


def sum_usage(usages: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The evaluator's counts over every worker (each sends its own running totals)."""
    total: dict[str, Any] = {}
    for usage in usages:
        for key, value in usage.items():
            if isinstance(value, int | float):
                total[key] = total.get(key, 0) + value
    return total


def run_in_process(
    work: Iterable[tuple[str, Actor]],
    context: RunContext,
    stop: StopSignals,
    started: Callable[[str], None],
) -> Iterator[tuple[str, Finished]]:
    """One worker: each actor in a thread of this process, answering signals at once."""
    for name, actor in work:
        started(name)
        try:
            outcome = stop.run(lambda actor=actor: process_actor(actor, context))
        except Stopped:
            raise
        except Exception as error:
            yield name, Finished(error=error)
        else:
            yield name, Finished(outcome=outcome)


def report_failure(context: RunContext, name: str, error: str) -> None:
    """Show the failure in the review report; a report that cannot be written stops nothing."""
    try:
        context.review.record_failure(name, error)
    except OSError as problem:
        say(f"  report not updated: {problem.strerror or problem}")


def nothing_left_line(failed: int) -> str:
    line = "Nothing left to do: every actor is already done."
    if failed:
        line += f" {plural(failed, 'actor')} failed: add --retry-failed to try again."
    return line + " Use --no-resume to start over."


def run_single(config: Config, actor: Actor, output_dir: Path, *, execute: bool) -> int:
    """``--actor-id``: one actor, no progress tracking."""
    output_dir.mkdir(parents=True, exist_ok=True)
    data_dir = actor.folder.parent.parent
    context = RunContext.create(config, output_dir, execute=execute, data_dir=data_dir)
    say(RULE)
    say(f"Processing actor: {actor.name} ({'execute' if execute else 'dry-run'})")
    say(RULE)
    stop = StopSignals()
    with stop.installed():
        try:
            outcome = stop.run(lambda: process_actor(actor, context))
        except Stopped as stopped:
            say(f"\n⚠️  Stopped by {signal.Signals(stopped.signum).name}; {actor.name} unfinished.")
            exit_now(EXIT_FOR_SIGNAL[signal.Signals(stopped.signum)])
        except OSError as error:
            if is_disk_full(error):
                raise FatalRunError(f"disk full: {error}") from None
            say(f"  FAILED: {type(error).__name__}: {error}")
            report_failure(context, actor.name, f"{type(error).__name__}: {error}")
            finish_report(context)
            return EXIT_ACTOR_FAILED
        except ActorError as error:
            say(f"  FAILED: {error}")
            report_failure(context, actor.name, str(error))
            finish_report(context)
            return EXIT_ACTOR_FAILED
    for line in outcome.lines:
        say(line)
    if execute:
        forget_execute_started(output_dir, actor.name)
    update_report(context, actor.name, outcome)
    finish_report(context)
    say(f"Results in {output_dir}")
    if outcome.state == SHORT:
        say(f"{actor.name} could not reach the target (state short): {outcome.state_reason}")
    return EXIT_OK
