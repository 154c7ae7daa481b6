"""What recording one actor costs, against rewriting the whole progress.json, at 1k-100k actors.

Run: .venv/bin/python scripts/bench_progress.py [--dir FOLDER] [--actors 1000 10000 100000]

For each size, progress.json is prepared with all but the measured actors already completed, then
a resumed run records ``mark_started`` + ``mark_completed`` (durable) for the rest:
- back to back (the fold thread rewrites progress.json about once a second meanwhile);
- paced: a pause longer than the fold interval after each actor, so every actor's marks meet a
  fold of the whole file, as when real actors take seconds each.
Pauses are not timed; only the two calls are. Figures vary with the disk's fsync latency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_data.atomic import write_bytes_atomic, write_json_atomic
from training_data.progress import (
    PROGRESS_FILE,
    ProgressState,
    ProgressTracker,
    encode_document,
    now_iso,
)

SETTINGS = {"targets": {"total": 20}, "categories": {"photorealistic": 0.65}}


def actor_names(count: int) -> list[str]:
    return [f"{number:06d}_european_25_female" for number in range(count)]


def prepare(folder: Path, names: list[str], measured: int) -> None:
    stamp = now_iso()
    state = ProgressState.fresh("dry_run", SETTINGS, len(names), stamp)
    for name in names[:-measured]:
        state.record_completed(name, stamp)
    write_bytes_atomic(folder / PROGRESS_FILE, encode_document(state.to_document()))


def time_marks(folder: Path, names: list[str], measured: int, pause: float, interval: float):
    """Per-actor seconds of mark_started + mark_completed in a resumed run."""
    prepare(folder, names, measured)
    tracker = ProgressTracker(folder, fold_interval=interval)
    tracker.lock("bench_progress")
    try:
        pending = tracker.start(names, "dry_run", SETTINGS, resume=True, retry_failed=False)
        costs = []
        for name in pending:
            began = time.perf_counter()
            tracker.mark_started(name)
            tracker.mark_completed(name)
            costs.append(time.perf_counter() - began)
            if pause:
                time.sleep(pause)
        tracker.close()
    finally:
        tracker.unlock()
    return costs


def time_rewrite(folder: Path, document: dict, repeats: int) -> tuple[float, float]:
    """Seconds for one atomic rewrite: this module's encoder, and plain json.dumps(indent=2)."""
    target = folder / "rewrite.json"
    fast = _best(lambda: write_bytes_atomic(target, encode_document(document)), repeats)
    plain = _best(lambda: write_json_atomic(target, document), repeats)
    target.unlink()
    return fast, plain


def time_append(folder: Path, repeats: int = 300) -> float:
    """Seconds for one journal-sized O_APPEND write + fdatasync: the floor of a durable mark."""
    line = b'{"event":"completed","actor_id":"000000_european_25_female","timestamp":"x"}\n'
    descriptor = os.open(folder / "append.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        began = time.perf_counter()
        for _ in range(repeats):
            os.write(descriptor, line)
            getattr(os, "fdatasync", os.fsync)(descriptor)
        return (time.perf_counter() - began) / repeats
    finally:
        os.close(descriptor)
        (folder / "append.bin").unlink()


def _best(action, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        timings.append(time.perf_counter() - began)
    return min(timings)


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:8.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="folder on the disk to measure (default: temp)")
    parser.add_argument("--actors", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--measured", type=int, default=2000, help="actors timed back to back")
    parser.add_argument("--paced", type=int, default=60, help="actors timed with pauses")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=arguments.dir) as temp:
        folder = Path(temp)
        append = time_append(folder)
        print(f"one journal append + fdatasync on this disk: {milliseconds(append).strip()} ms\n")
        header = (
            f"{'actors':>8} {'file MB':>8} | {'rewrite ms':>10} {'json.dumps':>10} | "
            f"{'mark mean':>9} {'p99':>8} {'max':>8} | {'paced mean':>10} {'p99':>8}"
        )
        print(header)
        print("-" * len(header))
        for count in arguments.actors:
            names = actor_names(count)
            measured = min(arguments.measured, count)
            paced_count = min(arguments.paced, count)
            state = ProgressState.fresh("dry_run", SETTINGS, count, now_iso())
            for name in names:
                state.record_completed(name, state.started_at)
            document = state.to_document()
            size = len(encode_document(document)) / 1e6
            fast, plain = time_rewrite(folder, document, repeats=5)
            back_to_back = time_marks(folder, names, measured, pause=0.0, interval=1.0)
            fold_seconds = max(0.01, 2 * fast)
            paced = time_marks(folder, names, paced_count, fold_seconds * 1.5, fold_seconds)
            print(
                f"{count:>8} {size:>8.2f} | {milliseconds(fast):>10} {milliseconds(plain):>10} | "
                f"{milliseconds(statistics.fmean(back_to_back)):>9} "
                f"{milliseconds(_percentile(back_to_back, 99)):>8} "
                f"{milliseconds(max(back_to_back)):>8} | "
                f"{milliseconds(statistics.fmean(paced)):>10} "
                f"{milliseconds(_percentile(paced, 99)):>8}"
            )
            for leftover in folder.iterdir():
                leftover.unlink()
    print(
        "\nrewrite ms: one atomic rewrite of progress.json at that size (temp, fsync, replace), "
        "what a rewrite per actor would cost;\njson.dumps: the same with json.dumps(indent=2); "
        "mark: mark_started + mark_completed, durable, per actor."
    )
    print(json.dumps({"python": sys.version.split()[0], "cpus": os.cpu_count()}))


def _percentile(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))]


if __name__ == "__main__":
    main()
