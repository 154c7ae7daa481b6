"""A whole run's throughput: ``--all --dry-run`` over 1024-px JPEGs at 1 and more workers.

    .venv/bin/python scripts/bench_run.py [--actors 12] [--workers 1 2] [--rounds 2] [--profile]
        [--config FILE] [--models] [--bookkeeping 100000]

Writes ``--actors`` actors x 20 photo-like 1024-px JPEGs (no manifest types: the style
classifier runs), then times, in interleaved rounds (best kept: the machine is shared):
  (a) a bare full decode of the same files in one process (``Image.open(f).load()``), the work
      no run can avoid;
  (b) the CLI as a user starts it (a fresh interpreter, a fresh output folder, so every verdict
      is computed and every file written), once per worker count; then the same command again,
      which finds nothing left to do: the start-up alone.
It prints images/s, the speed-up over one worker and each run against (a). ``--profile`` runs
the actor steps in this process under cProfile and prints where the time goes.
``--models`` turns every model on (the face checks, the learned style stage and the NSFW score on
every image) and adds to (a) the models' own bare inference on the same working images: the
face detector and its landmarks on each image, the face embedding on each face found, the
style network on each image; it prints each one's cost per image.
``--bookkeeping 100000`` times what the runner's process does per finished actor (progress
marks, the review index row) at that many actors.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_evaluation import ACTOR_SIZE, photo_like
from PIL import Image

SCRIPT = Path(__file__).resolve().parent / "training_data" / "evaluate_and_balance.py"


def write_dataset(root: Path, actors: int) -> list[Path]:
    paths = []
    for index in range(actors):
        name = f"{index:04d}_actor"
        folder = root / "actors" / name / "training_data"
        folder.mkdir(parents=True)
        images = {}
        for number in range(1, ACTOR_SIZE + 1):
            path = folder / f"{name}_{number}.jpg"
            photo_like(index * 100 + number).save(path, quality=90)
            images[path.name] = {}
            paths.append(path)
        (folder / "manifest.json").write_text(json.dumps({"actor_id": name, "images": images}))
    return paths


def bare_decode(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.load()
    return time.perf_counter() - start


MODELS_CONFIG = """[subject]
enabled = true
[style]
learned = true
[nsfw]
every_image = true
"""


def bare_models(paths: list[Path]) -> dict[str, float]:
    """Seconds each model takes on its own over the working images (decoded beforehand, not
    timed): what a run with every model on cannot avoid beyond the decode."""
    from training_data.evaluation import decode_working_image
    from training_data.faces import embedding, find_faces
    from training_data.style_learned import style_model

    workings = [decode_working_image(path.read_bytes())[0] for path in paths]
    network = style_model()
    seconds = dict.fromkeys(("face detector", "face embedding", "style network"), 0.0)
    faces_found = 0
    for working in workings:
        start = time.perf_counter()
        faces = find_faces(working, upsample=1)
        middle = time.perf_counter()
        for face in faces:
            embedding(working, face)
        end = time.perf_counter()
        network.run(working)
        seconds["face detector"] += middle - start
        seconds["face embedding"] += end - middle
        seconds["style network"] += time.perf_counter() - end
        faces_found += len(faces)
    seconds["faces found"] = faces_found
    return seconds


def whole_run(
    data_dir: Path, output_dir: Path, workers: int, config: Path | None
) -> tuple[float, float]:
    """The run's seconds, then the same command again, which finds nothing left to do: what
    start-up, listing and progress cost without any actor."""
    shutil.rmtree(output_dir, ignore_errors=True)
    command = [sys.executable, str(SCRIPT), "--all", "--dry-run", "--workers", str(workers)]
    command += ["--data-dir", str(data_dir), "--output-dir", str(output_dir)]
    command += ["--config", str(config)] if config else []
    times = []
    for _again in range(2):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def profile_actor_steps(data_dir: Path, output_dir: Path, config_path: Path | None) -> str:
    """Every actor's step in this thread under cProfile (the runner runs it in another)."""
    from training_data.config import load_config
    from training_data.dataset import find_actors
    from training_data.pipeline import RunContext, process_actor

    shutil.rmtree(output_dir, ignore_errors=True)
    output_dir.mkdir()
    context = RunContext.create(
        load_config(config_path), output_dir, execute=False, data_dir=data_dir
    )
    actors = find_actors(data_dir)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(lambda: [process_actor(actor, context) for actor in actors])
    elapsed = time.perf_counter() - start
    report = io.StringIO()
    pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(30)
    return f"actor steps alone, profiled: {elapsed:.2f} s\n{report.getvalue()}"


def bookkeeping(actors: int, measured: int = 300) -> str:
    """What the runner's process does per finished actor at ``actors`` actors, whatever the
    number of workers: mark it started and completed (durable) and put its review index row."""
    from training_data.progress import ProgressTracker
    from training_data.review_site import ReviewEntry, ReviewSite, actor_row

    with tempfile.TemporaryDirectory() as temp:
        tracker = ProgressTracker(Path(temp))
        tracker.lock("bench")
        names = [f"{number:06d}_actor" for number in range(actors)]
        tracker.start(names, "dry_run", {}, resume=False, retry_failed=False)
        site = ReviewSite.for_worker(Path(temp))
        (site.folder / "data").mkdir(parents=True)
        row = actor_row(None, "", [], error="failed")
        for name in names:
            site.put_entry(ReviewEntry(dict(row, name=name), b""), throttled=True)
        costs = []
        for name in names[:measured]:
            start = time.perf_counter()
            tracker.mark_started(name)
            tracker.mark_completed(name, "balanced")
            site.put_entry(ReviewEntry(dict(row, name=name), b""), throttled=True)
            costs.append(time.perf_counter() - start)
            time.sleep(0.002)  # actors take time; the fold thread runs meanwhile
        tracker.close()
        tracker.unlock()
    costs.sort()
    median, p99 = costs[len(costs) // 2], costs[int(len(costs) * 0.99)]
    return (
        f"bookkeeping per actor at {actors} actors (runner's process): "
        f"median {1000 * median:.3f} ms, p99 {1000 * p99:.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=12)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--config", type=Path, help="e.g. one with [subject] enabled = false")
    parser.add_argument("--models", action="store_true", help="every model on, and their cost")
    parser.add_argument("--bookkeeping", type=int, metavar="ACTORS", help="e.g. 100000")
    args = parser.parse_args()
    if args.bookkeeping:
        print(bookkeeping(args.bookkeeping))
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        paths = write_dataset(root / "data", args.actors)
        images = len(paths)
        if args.models:
            args.config = root / "models.toml"
            args.config.write_text(MODELS_CONFIG)
        models: dict[str, float] = {}
        bare = float("inf")
        runs = dict.fromkeys(args.workers, float("inf"))
        idle = float("inf")
        for _round in range(args.rounds):
            bare = min(bare, bare_decode(paths))
            if args.models:
                measured = bare_models(paths)
                if not models or sum(measured.values()) < sum(models.values()):
                    models = measured
            for workers in args.workers:
                seconds, nothing_left = whole_run(root / "data", root / "out", workers, args.config)
                runs[workers] = min(runs[workers], seconds)
                idle = min(idle, nothing_left)
        print(f"{images} images of 1024 px, {args.actors} actors, best of {args.rounds} rounds")
        print(f"bare full decode, one process: {bare:6.2f} s  {images / bare:6.1f} images/s")
        if models:
            found = int(models.pop("faces found"))
            for model, seconds in models.items():
                print(f"{model}: {1000 * seconds / images:6.2f} ms/image")
            print(f"  ({found} faces found: the embedding runs once per face)")
            bare += sum(models.values())
            print(f"bare decode + bare inference: {bare:6.2f} s (the 'bare' below)")
        first = runs[args.workers[0]]
        for workers, seconds in runs.items():
            print(
                f"--all --dry-run, {workers} worker(s): {seconds:6.2f} s  "
                f"{images / seconds:6.1f} images/s  x{first / seconds:.2f} over "
                f"{args.workers[0]}  {seconds / bare:.2f}x the bare"
            )
        print(f"the same command with nothing left to do (start-up alone): {idle:.2f} s")
        if sys.flags.dont_write_bytecode:
            print(
                "  (PYTHONDONTWRITEBYTECODE is set: packages without .pyc files compile at start)"
            )
        for workers, seconds in runs.items():
            print(
                f"  {workers} worker(s) less the start-up: {(seconds - idle) / bare:.2f}x the bare"
            )
        if args.profile:
            print(profile_actor_steps(root / "data", root / "profiled", args.config))


if __name__ == "__main__":
    main()
