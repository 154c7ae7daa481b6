"""Every core of one machine: actors run in worker processes, the runner's process keeps the rest.

The runner's process alone owns the progress store, the console, the bar and the review index; a
worker runs ``process_actor`` (evaluation, plan, execute, the actor's JSON, sheet, page and
thumbnails) and sends back the picklable ``ActorOutcome`` or the exception. Design:

- Processes from a ``forkserver`` (``spawn`` where there is none): never a ``fork`` of the
  runner's process, which holds threads and locks (the progress fold thread, the bar's monitor).
  The forkserver imports the package once; each worker builds its ``RunContext`` once (the
  evaluator and any model are loaded once per worker, not per actor).
- One actor per worker at a time over its own pipe, so the runner always knows which actor a
  worker holds: a worker that dies (killed, out of memory) fails that actor alone, with the
  signal or exit code in the error, and a fresh worker takes its place.
- Signals: workers ignore SIGINT (a Ctrl+C reaches the whole process group); the runner's process
  answers SIGINT/SIGTERM and terminates the workers (SIGTERM, then SIGKILL after half a second),
  so the actors in flight stay pending. A worker found dead once a stop was asked for (a signal
  to the whole group also ends the forkserver, and with it the workers) fails no actor. A worker
  polls its parent every quarter second and exits when it is gone: SIGKILL of the runner's
  process ends the forkserver (its pipe closes), then the workers, so none is left running.

Measured (``scripts/bench_run.py --rounds 3``, 240 1024-px JPEGs, a 2-core machine): x1.79 at 2
workers with the face checks on (7.09 s -> 3.95 s); x1.39 with them off (2.03 s -> 1.46 s), where
the run is short enough for the start (0.3 s) and the workers' own start to show. With every
model on, x1.40 (12.56 s -> 8.98 s): OpenCV already runs the style network on both cores at one
worker, so each worker gets ``cpus // workers`` OpenCV threads. The runner's own work per finished
actor at 100,000 actors (progress marks, the review row): median 0.07 ms.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from training_data.config import Config
from training_data.dataset import Actor
from training_data.errors import ActorError, FatalRunError
from training_data.pipeline import ActorOutcome, RunContext, process_actor

# Imported once in the forkserver, so no worker pays for them (OpenCV alone takes 0.3-0.7 s).
PRELOADED = ["training_data.pipeline", "training_data.recrops", "training_data.style_learned"]
PARENT_POLL_SECONDS = 0.25
TERMINATE_GRACE_SECONDS = 0.5


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may run on, capped by a cgroup v2 CPU limit: a container (a
    Kubernetes pod) sees every CPU of its node but may use only its quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cpu_max)
    return max(1, min(cpus, limit) if limit else cpus)


def cgroup_cpu_limit(cpu_max: Path) -> int | None:
    """``cpu.max`` holds "<quota> <period>" or "max <period>"; the quota rounded up, or None."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else math.ceil(int(quota) / int(period))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to build its ``RunContext``; pickled once per worker."""

    config: Config
    output_dir: Path
    data_dir: Path
    execute: bool
    sharded: bool
    run_timestamp: str
    library_threads: int = 1  # OpenCV's threads per worker: the CPUs shared out, never more


@dataclass
class Finished:
    """One actor's result: its outcome, or the exception its step raised."""

    outcome: ActorOutcome | None = None
    error: BaseException | None = None

    def get(self) -> ActorOutcome:
        if self.error is not None:
            raise self.error
        assert self.outcome is not None
        return self.outcome


# --- the worker process ---


def _worker_main(connection: Connection, setup: WorkerSetup) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _watch_parent(os.getppid())
    # Warnings as the runner's process shows them; one line each, so they never break a line.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    _share_library_threads(setup.library_threads)
    try:
        context: RunContext | None = RunContext.create(
            setup.config,
            setup.output_dir,
            execute=setup.execute,
            data_dir=setup.data_dir,
            sharded=setup.sharded,
            run_timestamp=setup.run_timestamp,
            in_worker=True,
        )
        broken: BaseException | None = None
    except Exception as error:  # every actor gets it: a FatalRunError stops the run
        context, broken = None, error
    while True:
        try:
            actor = connection.recv()
        except (EOFError, OSError):
            return
        if actor is None:
            return
        try:
            if context is None:
                raise broken  # type: ignore[misc]
            outcome = process_actor(actor, context)
            outcome.worker = os.getpid()
            reply: tuple[str, Any] = ("done", outcome)
        except Exception as error:
            reply = ("error", _portable(error))
        connection.send(reply)


def _share_library_threads(threads: int) -> None:
    """OpenCV runs the style network on every CPU by default: N workers doing so fight over the
    cores (with every model on, x1.47 at 2 workers instead of x1.8)."""
    import cv2

    cv2.setNumThreads(threads)


def _watch_parent(parent: int) -> None:
    """Exit as soon as the parent is gone (the runner's process, or the forkserver it ran)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _portable(error: Exception) -> Exception:
    """The exception itself when it survives pickling; else an ActorError saying what it was."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return ActorError(f"{type(error).__name__}: {error}")
    return error


# --- the pool, in the runner's process ---


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    actor: str | None = None


def _start_method() -> multiprocessing.context.BaseContext:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)
    return context


def warm_up() -> None:
    """Start the forkserver now, so its imports overlap the runner's own start (listing the
    actors, opening progress and the report) instead of delaying the first worker."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        _start_method()
        multiprocessing.forkserver.ensure_running()


class WorkerPool:
    """N worker processes, each running one actor at a time."""

    def __init__(self, setup: WorkerSetup, count: int) -> None:
        self._mp = _start_method()
        self._setup = setup
        self._count = count
        self._workers: list[_Worker] = []
        self._check_stop: Callable[[], None] = lambda: None

    def _start_worker(self) -> _Worker:
        """A fresh worker. A forkserver that died under a stop signal stops the run cleanly; one
        that died otherwise is started again once, then the run stops with one line."""
        try:
            return self._launch_worker()
        except (EOFError, OSError):
            self._check_stop()
        try:
            return self._launch_worker()  # multiprocessing starts a new forkserver
        except (EOFError, OSError) as error:
            self._check_stop()
            raise FatalRunError(f"cannot start a worker process: {error}") from error

    def _launch_worker(self) -> _Worker:
        ours, theirs = self._mp.Pipe()
        process = self._mp.Process(
            target=_worker_main, args=(theirs, self._setup), name="actor-worker", daemon=True
        )
        try:
            process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return _Worker(process, ours)

    def run(
        self,
        actors: Iterable[tuple[str, Actor]],
        on_start: Callable[[str], None],
        check_stop: Callable[[], None],
        wait_step: float,
    ) -> Iterator[tuple[str, Finished]]:
        """Yield each actor's result as it finishes; ``check_stop`` raises to stop the run."""
        queue = iter(actors)
        self._check_stop = check_stop
        while len(self._workers) < self._count:
            self._workers.append(self._start_worker())
        exhausted = False
        while True:
            check_stop()
            for worker in self._workers:
                if worker.actor is None and not exhausted:
                    item = next(queue, None)
                    if item is None:
                        exhausted = True
                        break
                    name, actor = item
                    on_start(name)
                    worker.actor = name
                    worker.connection.send(actor)
            busy = [worker for worker in self._workers if worker.actor is not None]
            if not busy:
                return
            ready = wait(
                [w.connection for w in busy] + [w.process.sentinel for w in busy], wait_step
            )
            for worker in busy:
                result = self._collect(worker, ready)
                if result is not None:
                    name, worker.actor = worker.actor, None
                    yield name, result

    def _collect(self, worker: _Worker, ready: list[Any]) -> Finished | None:
        if worker.connection in ready or worker.connection.poll():
            try:
                kind, value = worker.connection.recv()
            except (EOFError, OSError):
                return self._replace(worker)
            return Finished(outcome=value) if kind == "done" else Finished(error=value)
        if worker.process.sentinel in ready:
            return self._replace(worker)
        return None

    def _replace(self, worker: _Worker) -> Finished:
        """The worker died with its actor: fail that actor and start a fresh worker. Unless the
        run is stopping: a SIGTERM or SIGINT to the whole process group (scancel, timeout(1))
        kills the forkserver and so the workers, and their actors must stay pending."""
        worker.process.join(TERMINATE_GRACE_SECONDS)
        self._check_stop()
        code = worker.process.exitcode
        if code is not None and code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exit code {code}"
        worker.connection.close()
        self._workers[self._workers.index(worker)] = self._start_worker()
        return Finished(
            error=ActorError(
                f"worker process died ({how}; out of memory?) while processing this actor"
            )
        )

    def terminate(self) -> None:
        """Stop every worker now; their actors stay pending."""
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1)
            worker.connection.close()
        self._workers.clear()
