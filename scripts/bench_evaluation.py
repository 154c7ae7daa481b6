"""How much evaluation costs on top of decoding: images/s on one core, measured in one run.

    .venv/bin/python scripts/bench_evaluation.py [--images 60] [--rounds 5]

Writes N photo-like 1024-px JPEGs to a temp folder, then times, in interleaved rounds (best
round kept, so other load on the machine hurts least):
  (a) bare Pillow: full-size decode;
  (b) reduced decode: JPEG draft mode to ~256 px, the least any evaluation must do;
  (c) evaluate_actor with the local backend: read, sha256, decode, statistics, fingerprint,
      thumbnail, style classifier, score, duplicates; every verdict judged and written to a
      cache database that has no entry for these images (one transaction per actor);
  (d) the same with manifest types, so the style classifier is skipped: (c) - (d) is its cost;
  (e) a repeated run: every verdict from the cache, only read, hash, decode and thumbnail.
The aim is (c)/(b) <= 1.3. Then what (c) adds to (b), stage by stage, timed in the same rounds
on already-read bytes and already-decoded working images.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from training_data.config import Config
from training_data.dataset import TrainingImage
from training_data.evaluation import (
    WORKING_SIDE,
    EvaluationCache,
    LocalBackend,
    decode_working_image,
    evaluate_actor,
    fingerprint_of,
    pixel_statistics,
)
from training_data.style import classify_style

SIDE = 1024
ACTOR_SIZE = 20


def photo_like(seed: int) -> Image.Image:
    """Lit backdrop, a head-and-shoulders figure, objects, lens softness and sensor noise."""
    rng = random.Random(seed)
    light = Image.linear_gradient("L").resize((SIDE, SIDE)).rotate(rng.uniform(0, 360))
    colours = [tuple(rng.randrange(50, 210) for _ in range(3)) for _ in range(2)]
    image = Image.composite(
        Image.new("RGB", (SIDE, SIDE), colours[0]),
        Image.new("RGB", (SIDE, SIDE), colours[1]),
        light,
    )
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(10, 30)):
        x, y, r = rng.randrange(SIDE), rng.randrange(SIDE), rng.randrange(SIDE // 40, SIDE // 6)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    cx, cy = SIDE // 2 + rng.randrange(-80, 80), int(SIDE * 0.42)
    draw.ellipse(
        (cx - 400, cy + 250, cx + 400, cy + 900), fill=tuple(rng.randrange(256) for _ in "rgb")
    )
    draw.ellipse((cx - 165, cy - 215, cx + 165, cy + 215), fill=(rng.randrange(150, 230), 160, 130))
    image = image.filter(ImageFilter.GaussianBlur(1.3))
    noise = Image.effect_noise((SIDE, SIDE), rng.uniform(3, 8)).convert("RGB")
    return ImageChops.add(image, noise, offset=-128)


def full_decode(paths: list[Path]) -> None:
    for path in paths:
        with Image.open(path) as image:
            image.load()


def reduced_decode(paths: list[Path]) -> None:
    for path in paths:
        with Image.open(path) as image:
            image.draft("RGB", (WORKING_SIDE, WORKING_SIDE))
            image.load()


def evaluation(
    paths: list[Path], scratch: Path, *, typed: bool, warm: bool = False
) -> Callable[[], None]:
    config = Config()
    entry = {"type": "photorealistic"} if typed else None
    actors = [
        [
            TrainingImage(number, path.name, path, entry)
            for number, path in enumerate(paths[start : start + ACTOR_SIZE], start=1)
        ]
        for start in range(0, len(paths), ACTOR_SIZE)
    ]

    warm_cache = EvaluationCache(Path(tempfile.mkdtemp(dir=scratch)))

    def run() -> None:
        backend = LocalBackend(config.quality)
        cache = warm_cache if warm else cold_cache(scratch)
        for images in actors:
            evaluate_actor(images, config, backend, cache)

    return run


def cold_cache(scratch: Path) -> EvaluationCache:
    return EvaluationCache(Path(tempfile.mkdtemp(dir=scratch)))


def stages(paths: list[Path]) -> dict[str, Callable[[], None]]:
    """The extras of (c) over (b), each over all images, as the local backend runs them."""
    data = [path.read_bytes() for path in paths]
    working = [decode_working_image(item)[0] for item in data]
    greys = [image.convert("L") for image in working]
    luminance = [(grey, grey.histogram()) for grey in greys]
    triples = [(image, *pair) for image, pair in zip(working, luminance, strict=True)]
    timed = {
        "sha256": lambda: [hashlib.sha256(item).digest() for item in data],
        "grey and its histogram": lambda: [image.convert("L").histogram() for image in working],
        "pixel statistics": lambda: [pixel_statistics(*pair) for pair in luminance],
        "fingerprint": lambda: [fingerprint_of(image) for image in working],
        "style classifier": lambda: [classify_style(*triple) for triple in triples],
    }
    return {f"stage: {name}": work for name, work in timed.items()}


def best_time(work: Callable[[], None], rounds: list[float]) -> None:
    started = time.perf_counter()
    work()
    rounds.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = []
        for seed in range(arguments.images):
            path = root / f"actor_{seed + 1}.jpg"
            photo_like(seed).save(path, quality=90)
            paths.append(path)
        mean_kib = sum(path.stat().st_size for path in paths) / len(paths) / 1024
        print(f"{len(paths)} JPEGs of {SIDE}x{SIDE}, {mean_kib:.0f} KiB on average; core {core}")

        methods: dict[str, Callable[[], None]] = {
            "(a) full decode": lambda: full_decode(paths),
            "(b) reduced decode (draft)": lambda: reduced_decode(paths),
            "(c) evaluate_actor, local": evaluation(paths, root, typed=False),
            "(d) evaluate_actor, typed": evaluation(paths, root, typed=True),
            "(e) evaluate_actor, cached": evaluation(paths, root, typed=False, warm=True),
        }
        methods.update(stages(paths))
        times: dict[str, list[float]] = {name: [] for name in methods}
        for work in methods.values():
            work()  # warm the page cache and imports
        for _ in range(arguments.rounds):
            for name, work in methods.items():
                best_time(work, times[name])

    rates = {name: len(paths) / min(rounds) for name, rounds in times.items()}
    for name in sorted(rates):
        if not name.startswith("stage: "):
            print(f"{name:30s} {rates[name]:8.1f} images/s  {1000 / rates[name]:6.2f} ms/image")
    reduced = rates["(b) reduced decode (draft)"]
    typed = rates["(d) evaluate_actor, typed"]
    print(f"ratio (d)/(b) = {reduced / typed:.2f}  (evaluation without the style classifier)")
    print(f"ratio (e)/(b) = {reduced / rates['(e) evaluate_actor, cached']:.2f}  (repeated run)")
    local = rates["(c) evaluate_actor, local"]
    print(f"ratio (c)/(b) = {reduced / local:.2f}  (aim: <= 1.3)")
    print(f"style classifier: {1000 / local - 1000 / typed:.2f} ms/image")
    reduced_ms = 1000 / reduced
    for name in sorted(rates):
        if name.startswith("stage: "):
            stage_ms = 1000 / rates[name]
            share = f"{stage_ms / reduced_ms:.2f} x (b)"
            print(f"{name:30s} {stage_ms:6.2f} ms/image  = {share}")


if __name__ == "__main__":
    main()
