"""evaluate_and_balance: evaluate every actor's LoRA training images and rebalance the style mix.

Run as ``evaluate-and-balance`` or ``python scripts/training_data/evaluate_and_balance.py``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training_data.config import ConfigError, load_config
from training_data.dataset import DatasetError, find_actors, select_actor
from training_data.errors import ActorError, FatalRunError, UsageError
from training_data.progress import (
    ProgressError,
    ProgressTracker,
    format_progress_summary,
    progress_summary,
)

DEFAULT_DATA_DIR = Path("data")
DEFAULT_OUTPUT_DIR = Path("debug/training_data_evaluation")
PROG = "evaluate-and-balance"
ACTIONS = ("all", "actor_id", "show_progress", "reset_progress", "restore", "stats", "report")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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
    action.add_argument("--restore", metavar="ACTOR", help="undo the last execute run's removals")
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
    parser.add_argument("--data-dir", type=Path, help=f"dataset root (default {DEFAULT_DATA_DIR})")
    parser.add_argument(
        "--output-dir", type=Path, help=f"output folder (default {DEFAULT_OUTPUT_DIR})"
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    parser.add_argument("--demo", action="store_true", help="use the generated demo dataset")
    parser.add_argument("--json", action="store_true", help="with --show-progress: one JSON object")
    return parser


def check_combination(args: argparse.Namespace) -> str:
    """The one action asked for; raises UsageError for flags that do not go together."""
    chosen = [name for name in ACTIONS if getattr(args, name)]
    if len(chosen) != 1:
        raise UsageError(
            "choose exactly one of --all, --actor-id, --show-progress, --reset-progress, "
            "--restore, --stats, --report"
        )
    action = chosen[0]
    if args.json and action != "show_progress":
        raise UsageError("--json goes with --show-progress")
    if action != "all" and (args.resume or args.no_resume or args.retry_failed):
        raise UsageError("--resume, --no-resume and --retry-failed go with --all")
    if action not in ("all", "actor_id") and (args.dry_run or args.execute):
        raise UsageError("--dry-run and --execute go with --all or --actor-id")
    return action


def resolve_folders(args: argparse.Namespace) -> tuple[Path, Path]:
    from training_data.demo import DEMO_DATA_DIR, DEMO_OUTPUT_DIR, ensure_demo_dataset

    if args.demo:
        data_dir = args.data_dir or DEMO_DATA_DIR
        if ensure_demo_dataset(data_dir):
            print(f"Created the demo dataset in {data_dir}")
        return data_dir, args.output_dir or DEMO_OUTPUT_DIR
    return args.data_dir or DEFAULT_DATA_DIR, args.output_dir or DEFAULT_OUTPUT_DIR


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args, argv if argv is not None else sys.argv[1:])
    except (UsageError, ConfigError, DatasetError, ProgressError, FatalRunError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130


def dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    from training_data import runner

    action = check_combination(args)
    config = load_config(args.config)
    data_dir, output_dir = resolve_folders(args)
    if action == "show_progress":
        return show_progress(output_dir, as_json=args.json)
    if action == "report":
        return rebuild_report(data_dir, output_dir, argv)
    if action == "reset_progress":
        return reset_progress(output_dir, argv)
    if action == "stats":
        return show_stats(data_dir, config.target.total)
    if action == "restore":
        return restore(data_dir, output_dir, args.restore, argv)
    runner.configure_logging()
    if action == "actor_id":
        actor = select_actor(find_actors(data_dir), args.actor_id)
        if not args.execute:
            return runner.run_single(config, actor, output_dir, execute=False)
        with locked(output_dir, argv):  # an execute never races another over the same data
            return runner.run_single(config, actor, output_dir, execute=True)
    batch = runner.BatchRun(
        config=config,
        data_dir=data_dir,
        output_dir=output_dir,
        execute=args.execute,
        resume=not args.no_resume,
        retry_failed=args.retry_failed,
        command=shlex.join([PROG, *argv]),
    )
    return batch.run()


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


def show_progress(output_dir: Path, *, as_json: bool = False) -> int:
    state = ProgressTracker(output_dir).read()
    if as_json:
        summary = None if state is None else progress_summary(state)
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    if state is None:
        print(f"No progress recorded yet in {output_dir / 'progress.json'}.")
        return 0
    print(format_progress_summary(state))
    return 0


def rebuild_report(data_dir: Path, output_dir: Path, argv: list[str]) -> int:
    """``--report``: the review site again from what earlier runs wrote; nothing is evaluated."""
    from training_data.review_site import REPORT_DIR, ReviewSite

    if not output_dir.is_dir():
        raise UsageError(f"no results to report in {output_dir} (run --all first)")
    with locked(output_dir, argv) as tracker:
        state = tracker.read()
        failures = {} if state is None else {n: e["error"] for n, e in state.failed.items()}
        skips = {} if state is None else {n: s["reason"] for n, s in state.skipped.items()}
        known_data = data_dir if data_dir.is_dir() else None
        site = ReviewSite.rebuild(output_dir, failures, skips, known_data)
    print(f"Report of {len(site.rows)} actors: {output_dir / REPORT_DIR / 'index.html'}")
    return 0


def reset_progress(output_dir: Path, argv: list[str]) -> int:
    if not output_dir.is_dir():
        print(f"No progress to reset in {output_dir}.")
        return 0
    with locked(output_dir, argv) as tracker:
        kept = tracker.reset()
    if kept is None:
        print(f"No progress to reset in {output_dir}.")
    else:
        print(f"Progress reset. The previous progress was kept as {kept}.")
    return 0


def show_stats(data_dir: Path, target_total: int) -> int:
    from training_data.dataset import count_training_images
    from training_data.report import format_stats

    counts: dict[str, int] = {}
    for actor in find_actors(data_dir):
        try:
            counts[actor.name] = count_training_images(actor)
        except ActorError as error:
            print(f"{actor.name}: not counted: {error}", file=sys.stderr)
    print(format_stats(counts, target_total))
    return 0


def restore(data_dir: Path, output_dir: Path, actor_id: str, argv: list[str]) -> int:
    """Under the output folder's lock, so it never races an execute run over the same data."""
    from training_data.execute import restore_last_run

    actor = select_actor(find_actors(data_dir), actor_id)
    with locked(output_dir, argv):
        try:
            result = restore_last_run(actor)
        except ActorError as error:
            raise UsageError(f"cannot restore {actor.name}: {error}") from None
    for message in result.messages:
        print(f"{actor.name}: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
