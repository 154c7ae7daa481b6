"""evaluate_and_balance: evaluate every actor's LoRA training images and rebalance the style mix.

Run as ``evaluate-and-balance`` or ``python scripts/training_data/evaluate_and_balance.py``.

``--help``, ``--version``, ``--show-progress`` and usage errors must answer at once, so this module
imports only the standard library, the config and the progress store at start; requests, Pillow
and the evaluators are imported by the actions that need them (see scripts/bench_startup.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training_data.config import Config, ConfigError, load_config
from training_data.errors import (
    EXIT_ACTOR_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    ActorError,
    FatalRunError,
    UsageError,
)
from training_data.progress import (
    RULE,
    ProgressError,
    ProgressTracker,
    RunLock,
    format_progress_summary,
    progress_summary,
)
from training_data.shards import (
    SHARDS_DIR,
    WHOLE,
    Shard,
    format_merged_summary,
    merged_outcomes,
    merged_summary,
    parse_shard,
    read_stores,
    shard_folders,
    shard_from_environment,
)
from training_data.wording import plural

if TYPE_CHECKING:
    from training_data.dataset import Actor

DEFAULT_DATA_DIR = Path("data")
DEFAULT_OUTPUT_DIR = Path("debug/training_data_evaluation")
PROG = "evaluate-and-balance"
DATASET_LOCK = ".evaluate_and_balance.lock"  # in <data-dir>/actors, with a ".holder" beside it
DRY_RUNS = "dry-runs"  # the group of shared dataset holders that only evaluate
ACTIONS = ("all", "actor_id", "show_progress", "reset_progress", "restore", "stats", "report")
CHOOSE_ONE_ACTION = "choose exactly one of " + ", ".join(
    f"--{action.replace('_', '-')}" for action in ACTIONS
)
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class VersionAction(argparse.Action):
    """``--version``; the installed metadata is read only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("evaluate-and-balance")
        except PackageNotFoundError:  # run from a checkout that was never installed
            installed = "unknown (not installed)"
        print(f"{PROG} {installed}")
        parser.exit(EXIT_OK)


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog=PROG,
        description="Evaluate and rebalance per-actor LoRA training sets, resumably.",
    )
    action = parser.add_argument_group("what to do (exactly one)")
    action.add_argument("--all", action="store_true", help="every actor, with progress tracking")
    action.add_argument("--actor-id", metavar="ID", help="one actor (name or unique prefix)")
    action.add_argument("--show-progress", action="store_true", help="print progress and exit")
    action.add_argument("--reset-progress", action="store_true", help="clear progress and exit")
    action.add_argument(
        "--restore",
        metavar="ACTOR",
        nargs="?",
        const="",
        help="put back every image execute runs removed from ACTOR (--restore --all: every actor)",
    )
    action.add_argument("--stats", action="store_true", help="dataset statistics, no evaluation")
    action.add_argument(
        "--report",
        action="store_true",
        help="rebuild <output-dir>/report/ from the evaluation JSONs, evaluating nothing",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="evaluate and plan only (default)")
    mode.add_argument("--execute", action="store_true", help="apply each plan")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="resume (the default)")
    resume.add_argument("--no-resume", action="store_true", help="start fresh")
    parser.add_argument("--retry-failed", action="store_true", help="retry failed actors")
    parser.add_argument(
        "--run", metavar="RUN", help="with --restore: only that run's removal folder"
    )
    parser.add_argument("--data-dir", type=Path, help=f"dataset root (default {DEFAULT_DATA_DIR})")
    parser.add_argument(
        "--output-dir", type=Path, help=f"output folder (default {DEFAULT_OUTPUT_DIR})"
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    parser.add_argument("--demo", action="store_true", help="use the generated demo dataset")
    parser.add_argument("--json", action="store_true", help="with --show-progress: one JSON object")
    parser.add_argument("--version", action=VersionAction)
    scale = parser.add_argument_group("scale (with --all)")
    scale.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (default: the usable CPUs; 1 for the openai evaluator)",
    )
    scale.add_argument(
        "--shard",
        metavar="K/N",
        help="only the actors of shard K of N (default from SLURM_ARRAY_TASK_ID/COUNT, "
        "or JOB_COMPLETION_INDEX with --shard-count)",
    )
    scale.add_argument(
        "--shard-count", type=int, metavar="N", help="the number of shards (a Job's completions)"
    )
    return parser


def check_combination(args: argparse.Namespace) -> str:
    """The one action asked for; raises UsageError for flags that do not go together."""
    if args.restore is not None:
        return check_restore(args)
    if args.run is not None:
        raise UsageError("--run goes with --restore")
    chosen = [name for name in ACTIONS if getattr(args, name)]
    if len(chosen) != 1:
        raise UsageError(CHOOSE_ONE_ACTION)
    action = chosen[0]
    if args.json and action != "show_progress":
        raise UsageError("--json goes with --show-progress")
    if action != "all" and (args.resume or args.no_resume or args.retry_failed):
        raise UsageError("--resume, --no-resume and --retry-failed go with --all")
    if action not in ("all", "actor_id") and (args.dry_run or args.execute):
        raise UsageError("--dry-run and --execute go with --all or --actor-id")
    if action != "all" and (args.workers is not None or args.shard or args.shard_count):
        raise UsageError("--workers, --shard and --shard-count go with --all")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be 1 or more, not {args.workers}")
    if args.shard_count is not None and args.shard_count < 1:
        raise UsageError(f"--shard-count must be 1 or more, not {args.shard_count}")
    return action


def check_restore(args: argparse.Namespace) -> str:
    """``--restore ACTOR`` or ``--restore --all``, each with an optional ``--run``."""
    others = [name for name in ACTIONS if name not in ("restore", "all") and getattr(args, name)]
    if others:
        raise UsageError(CHOOSE_ONE_ACTION)
    if args.restore and args.all:
        raise UsageError("--restore takes an ACTOR or --all, not both")
    if not args.restore and not args.all:
        raise UsageError("--restore needs an ACTOR, or --all for every actor")
    if (
        args.resume
        or args.no_resume
        or args.retry_failed
        or args.dry_run
        or args.execute
        or args.workers is not None
        or args.shard
        or args.shard_count
    ):
        raise UsageError("--restore goes with an ACTOR or --all, and --run only")
    if args.run is not None and (
        not args.run or args.run.startswith(".") or set(args.run) & {"/", "\\", "\0"}
    ):
        raise UsageError(f"--run {args.run!r} is not a removal folder name (see --help)")
    return "restore"


def choose_shard(args: argparse.Namespace, environ: Mapping[str, str]) -> Shard:
    """--shard, else the scheduler's environment, else the whole dataset."""
    if args.shard:
        shard = parse_shard(args.shard)
        if args.shard_count is not None and args.shard_count != shard.count:
            raise UsageError(f"--shard {args.shard} and --shard-count {args.shard_count} differ")
        return shard
    found = shard_from_environment(environ, args.shard_count)
    if found is not None:
        return found[0]
    if args.shard_count not in (None, 1):
        raise UsageError("--shard-count needs --shard K/N or JOB_COMPLETION_INDEX")
    return WHOLE


def choose_workers(args: argparse.Namespace, config: Config) -> tuple[int, Config]:
    """The worker count, and the config with the vision model's requests in flight divided
    among the workers, so ``concurrency`` stays the limit for the whole run: with the openai
    backend, and with the local one when it escalates unsure images to the vision model."""
    from training_data.workers import usable_cpus

    settings = config.evaluator.openai
    openai = config.evaluator.backend == "openai"
    sends_requests = openai or config.evaluator.escalate == "openai"
    if args.workers:
        workers = args.workers
    elif sends_requests:
        workers = 1 if openai else min(usable_cpus(), settings.concurrency)
    else:
        workers = usable_cpus()
    if sends_requests and workers > 1:
        if settings.concurrency < workers:
            raise UsageError(
                f"--workers {workers} is more than evaluator.openai.concurrency "
                f"({settings.concurrency}), the requests in flight for the whole run"
            )
        share = settings.concurrency // workers
        config = replace(
            config, evaluator=replace(config.evaluator, openai=replace(settings, concurrency=share))
        )
    return workers, config


def resolve_folders(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.demo:
        from training_data.demo import DEMO_DATA_DIR, DEMO_OUTPUT_DIR, ensure_demo_dataset

        data_dir = args.data_dir or DEMO_DATA_DIR
        if ensure_demo_dataset(data_dir):
            print(f"Created the demo dataset in {data_dir}")
        return data_dir, args.output_dir or DEMO_OUTPUT_DIR
    return args.data_dir or DEFAULT_DATA_DIR, args.output_dir or DEFAULT_OUTPUT_DIR


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # --help writes here: its reader may be gone
        code = dispatch(args, argv if argv is not None else sys.argv[1:])
        sys.stdout.flush()  # here, so a reader gone away is met below, not at interpreter exit
        return code
    except BrokenPipeError:
        exit_on_closed_stdout()
    except (UsageError, ConfigError, ProgressError, FatalRunError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def exit_on_closed_stdout() -> NoReturn:
    """Whoever read our output has gone (``| head``, quitting ``less``): stop as ``cat`` would.

    Progress is already safe (every outcome is journaled when it happens; a batch run folds it
    on the way out) and the actor in flight was never recorded, so it stays pending. The process
    ends by SIGPIPE, which a shell reports as 141, without a traceback or a flush error.
    """
    with open(os.devnull, "w") as devnull:  # pending output must not fail again at exit
        os.dup2(devnull.fileno(), sys.stdout.fileno())
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + signal.SIGPIPE)  # pragma: no cover - SIGPIPE ends the process first


def dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    action = check_combination(args)
    config = load_config(args.config)
    data_dir, output_dir = resolve_folders(args)
    max_file_bytes = config.limits.max_file_bytes
    if action == "show_progress":
        check_output_dir(output_dir, create=False)
        return show_progress(output_dir, max_file_bytes, as_json=args.json)
    if action == "report":
        return rebuild_report(data_dir, output_dir, max_file_bytes, argv)
    if action == "reset_progress":
        check_output_dir(output_dir, create=False)
        return reset_progress(output_dir, argv)
    if action == "stats":
        return show_stats(data_dir, config.target.total, max_file_bytes)
    check_output_dir(output_dir, create=False)  # a file in the way: say so before anything else
    actors = load_actors(data_dir, max_file_bytes)
    check_output_dir(output_dir, create=True)
    if action == "restore":
        with dataset_locked(data_dir, argv):  # never beside an execute, whatever its output
            if args.all:
                return restore_all(actors, output_dir, args.run, argv)
            return restore_one(actors, output_dir, args.restore, args.run, argv)
    from training_data import runner

    runner.configure_logging()
    if action == "actor_id":
        from training_data.dataset import select_actor

        actor = select_actor(actors, args.actor_id)
        if not args.execute:
            with dataset_locked(data_dir, argv, shared=True):
                return runner.run_single(config, actor, output_dir, execute=False)
        # an execute never races another over the same data, whatever their output folders
        with dataset_locked(data_dir, argv), locked(output_dir, argv):
            return runner.run_single(config, actor, output_dir, execute=True)
    workers, config = choose_workers(args, config)
    shard = choose_shard(args, os.environ)
    batch = runner.BatchRun(
        config=config,
        actors=actors,
        data_dir=data_dir,
        output_dir=output_dir,
        execute=args.execute,
        resume=not args.no_resume,
        retry_failed=args.retry_failed,
        command=shlex.join([PROG, *argv]),
        workers=workers,
        shard=shard,
    )
    # The shards of one execute run share the dataset (each changes its own actors alone).
    group = DRY_RUNS
    if args.execute:
        group = f"execute shards of {shard.count} in {output_dir.resolve()}"
    with dataset_locked(data_dir, argv, shared=not args.execute or shard.count > 1, group=group):
        return batch.run()


def load_actors(data_dir: Path, max_file_bytes: int) -> list[Actor]:
    """The actors, after one line on stderr about folders that look like actors but are not."""
    from training_data.dataset import scan_actors

    scan = scan_actors(data_dir, max_file_bytes)
    notice = scan.layout_notice()
    if notice:
        print(notice, file=sys.stderr)
    return scan.actors


def check_output_dir(output_dir: Path, *, create: bool) -> None:
    """An output folder that cannot be used is a usage error, found before any work starts."""
    existing = next((path for path in (output_dir, *output_dir.parents) if path.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "is a file" if existing == output_dir else f"cannot exist: {existing} is a file"
        raise UsageError(f"output folder {output_dir} {what}, not a folder (see --output-dir)")
    if not create:
        return
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(
            f"cannot write to output folder {output_dir}: {reason} (see --output-dir)"
        ) from None


@contextmanager
def locked(output_dir: Path, argv: list[str]) -> Iterator[ProgressTracker]:
    """Hold the output folder's run lock (exit 2 naming the holder when another run has it)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tracker = ProgressTracker(output_dir)
    tracker.lock(shlex.join([PROG, *argv]))
    try:
        yield tracker
    finally:
        tracker.unlock()


@contextmanager
def dataset_locked(
    data_dir: Path, argv: list[str], *, shared: bool = False, group: str = DRY_RUNS
) -> Iterator[None]:
    """Hold the dataset: --execute and --restore alone; dry-runs (``shared``) side by side, but
    never beside one of those, for they too write to it (downloads, finishing an interrupted
    execute). The execute shards of one output folder and one N (``group``) go side by side,
    each changing its own actors, but beside nothing else. A run that may not go is refused with
    exit 2 naming the holder, even with another --output-dir. No actors/ folder: nothing to
    hold, and the run says what is wrong with it."""
    actors_dir = data_dir / "actors"
    if not actors_dir.is_dir() or (shared and not os.access(actors_dir, os.W_OK)):
        yield  # a read-only dataset: no run of ours can change it, and a dry-run still may go
        return
    lock = RunLock(
        actors_dir / DATASET_LOCK,
        actors_dir / f"{DATASET_LOCK}.holder",
        in_use=f"another run is using the dataset in {data_dir}",
        folder="the data folder",
        shared=shared,
        group=group,
    )
    lock.acquire(shlex.join([PROG, *argv]))
    try:
        yield
    finally:
        lock.release()


def show_progress(output_dir: Path, max_file_bytes: int, *, as_json: bool = False) -> int:
    if (output_dir / SHARDS_DIR).is_dir():
        return show_merged_progress(output_dir, max_file_bytes, as_json=as_json)
    state = ProgressTracker(output_dir, max_file_bytes=max_file_bytes).read()
    if as_json:
        summary = None if state is None else progress_summary(state)
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    if state is None:
        print(f"No progress recorded yet in {output_dir / 'progress.json'}.")
        return 0
    print(format_progress_summary(state))
    return 0


def show_merged_progress(output_dir: Path, max_file_bytes: int, *, as_json: bool) -> int:
    """Every shard's store together: a total and a row per shard."""
    rows = read_stores(output_dir, max_file_bytes)
    if not rows:
        print("null" if as_json else f"No progress recorded yet in {output_dir}.")
        return 0
    summary = merged_summary(rows)
    print(json.dumps(summary, ensure_ascii=False) if as_json else format_merged_summary(summary))
    return 0


def rebuild_report(data_dir: Path, output_dir: Path, max_file_bytes: int, argv: list[str]) -> int:
    """``--report``: the review site again from what earlier runs wrote; nothing is evaluated."""
    from training_data.review_site import REPORT_DIR, ReviewSite

    if not output_dir.is_dir():
        raise UsageError(f"no results to report in {output_dir} (run --all first)")
    with locked(output_dir, argv):
        outcomes = merged_outcomes(read_stores(output_dir, max_file_bytes))  # every shard's
        failures = {name: entry["error"] for name, entry in outcomes.failed.items()}
        skips = {name: entry["reason"] for name, entry in outcomes.skipped.items()}
        known_data = data_dir if data_dir.is_dir() else None
        site = ReviewSite.rebuild(output_dir, failures, skips, known_data, max_file_bytes)
    print(f"Report of {len(site.rows)} actors: {output_dir / REPORT_DIR / 'index.html'}")
    return 0


def reset_progress(output_dir: Path, argv: list[str]) -> int:
    """Every store of the folder (the one-machine store and each shard's), under all their locks:
    while any shard runs, nothing is reset."""
    if not output_dir.is_dir():
        print(f"No progress to reset in {output_dir}.")
        return 0
    with ExitStack() as held:
        trackers = [
            held.enter_context(locked(folder, argv)) for _name, folder in shard_folders(output_dir)
        ]
        kept = [path for path in (tracker.reset() for tracker in trackers) if path is not None]
    if not kept:
        print(f"No progress to reset in {output_dir}.")
    elif len(trackers) == 1:
        print(f"Progress reset. The previous progress was kept as {kept[0]}.")
    else:
        print(f"Progress reset in {len(kept)} of {len(trackers)} progress stores (shards):")
        for path in kept:
            print(f"  kept as {path}")
    return 0


def show_stats(data_dir: Path, target_total: int, max_file_bytes: int) -> int:
    from training_data.dataset import count_training_images
    from training_data.report import format_stats

    counts: dict[str, int] = {}
    for actor in load_actors(data_dir, max_file_bytes):
        try:
            counts[actor.name] = count_training_images(actor)
        except ActorError as error:
            print(f"{actor.name}: not counted: {error}", file=sys.stderr)
    print(format_stats(counts, target_total))
    return 0


def restore_one(
    actors: list[Actor], output_dir: Path, actor_id: str, run: str | None, argv: list[str]
) -> int:
    """Under the output folder's lock, so it never races an execute run over the same data."""
    from training_data.dataset import select_actor
    from training_data.execute import removal_runs, restore_removed

    actor = select_actor(actors, actor_id, flag="--restore")
    with locked(output_dir, argv):
        try:
            runs = removal_runs(actor)
            if run is not None and run not in runs:
                known = ", ".join(runs) or "none"
                raise UsageError(
                    f"--run {run}: no such removal folder in {actor.removed_dir} (runs: {known})"
                )
            result = restore_removed(actor, run)
        except ActorError as error:
            raise UsageError(f"cannot restore {actor.name}: {error}") from None
    for message in result.messages:
        print(f"{actor.name}: {message}")
    return EXIT_OK


def restore_all(actors: list[Actor], output_dir: Path, run: str | None, argv: list[str]) -> int:
    """``--restore --all``: every actor in turn under one lock; one actor's fault stops no other."""
    from tqdm import tqdm

    from training_data.execute import restore_removed

    if run is not None and not any(run in _readable_runs(actor) for actor in actors):
        raise UsageError(f"--run {run}: no actor has a removal folder of that name")
    tally = {"restored": 0, "kept": 0, "actors_restored": 0, "untouched": 0}
    failures: list[str] = []
    with (
        locked(output_dir, argv),
        tqdm(
            total=len(actors), unit="actor", file=sys.stderr, disable=not sys.stderr.isatty()
        ) as bar,
    ):
        for actor in actors:
            try:
                result = restore_removed(actor, run)
            except ActorError as error:
                failures.append(f"{actor.name}: {error}")
                bar.write(f"{actor.name}: FAILED: {error}", file=sys.stdout)
            else:
                tally["restored"] += len(result.restored)
                tally["kept"] += len(result.kept)
                tally["actors_restored" if result.restored else "untouched"] += 1
                for message in result.messages:
                    bar.write(f"{actor.name}: {message}", file=sys.stdout)
            sys.stdout.flush()
            bar.update(1)
    print(format_restore_summary(len(actors), tally, failures))
    return EXIT_ACTOR_FAILED if failures else EXIT_OK


def _readable_runs(actor: Actor) -> list[str]:
    """The actor's removal runs; none when its journals cannot be read (restoring it then fails
    that actor alone, in the loop)."""
    from training_data.execute import removal_runs

    try:
        return removal_runs(actor)
    except ActorError:
        return []


def format_restore_summary(actors: int, tally: dict[str, int], failures: list[str]) -> str:
    lines = [
        RULE,
        "RESTORE SUMMARY",
        RULE,
        f"Actors: {actors}",
        f"  Images put back: {tally['restored']} (in {plural(tally['actors_restored'], 'actor')})",
        f"  Nothing left to restore: {tally['untouched']}",
        f"  Images kept in their removal folder (name taken again): {tally['kept']}",
        f"  Failed: {len(failures)}",
    ]
    return "\n".join(lines + [f"  failed: {failure}" for failure in failures])


if __name__ == "__main__":
    sys.exit(main())
