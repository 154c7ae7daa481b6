"""What the subject (face) checks cost: per image, per face and per actor, on one core.

    .venv/bin/python scripts/bench_faces.py [--rounds 3]

On the packaged photos of people (scripts/training_data/faces_data) and on the same photos with
the person cut away, times the models on 256 px working images (best of the rounds):
  first look (HOG detector, upsampled once) on a portrait and on a photo without a face;
  the closer look (upsampled twice) that faceless photos of a person get;
  the 5 landmarks and the embedding of one face; loading each model once per process;
and evaluate_actor on a 20-photo actor with the subject checks off and on: a first run (every
verdict judged) and a repeated one (verdicts from the cache; only the review runs again).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageOps

from training_data import faces
from training_data.config import Config, SubjectConfig
from training_data.dataset import TrainingImage
from training_data.evaluation import (
    EvaluationCache,
    LocalBackend,
    decode_working_image,
    evaluate_actor,
)

FACES = Path(__file__).resolve().parent / "training_data" / "faces_data"
PORTRAITS = ("obama_podium", "obama_flags", "obama_office", "biden", "hopper", "collins")
ACTOR_SIZE = 20


def best_ms(work: Callable[[], object], rounds: int, count: int = 1) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return 1000 * min(times) / count


def working(path: Path) -> Image.Image:
    return decode_working_image(path.read_bytes())[0]


def actor_photos(folder: Path) -> list[TrainingImage]:
    """20 photos of people: the portraits, mirrored, and cropped to their upper part."""
    images = []
    for number in range(1, ACTOR_SIZE + 1):
        source = Image.open(FACES / f"{PORTRAITS[number % len(PORTRAITS)]}.jpg")
        if number % 3 == 1:
            source = ImageOps.mirror(source)
        if number % 3 == 2:
            source = source.crop((0, 0, source.width, source.height * 3 // 4))
        path = folder / f"actor_{number}.jpg"
        source.save(path, quality=90)
        images.append(TrainingImage(number, path.name, path, {"type": "photorealistic"}))
    return images


def per_actor_ms(images: list[TrainingImage], subject: bool, scratch: Path, rounds: int):
    config = Config() if subject else Config(subject=SubjectConfig(enabled=False))
    backend = LocalBackend(config.quality, subject=config.subject)
    warm = EvaluationCache(Path(tempfile.mkdtemp(dir=scratch)))
    evaluate_actor(images, config, backend, warm)

    def first_run() -> None:
        cold = EvaluationCache(Path(tempfile.mkdtemp(dir=scratch)))
        evaluate_actor(images, config, backend, cold)

    return (
        best_ms(first_run, rounds),
        best_ms(lambda: evaluate_actor(images, config, backend, warm), rounds),
    )


def model_loading_ms() -> dict[str, float]:
    loaders = {
        "detector": faces._detector,
        "landmarks (5 points)": faces._landmark_model,
        "embedding (ResNet)": faces._embedding_model,
    }
    times = {}
    for name, loader in loaders.items():
        loader.cache_clear()
        times[name] = best_ms(loader, 1)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    loading = model_loading_ms()
    portraits = [working(FACES / f"{name}.jpg") for name in PORTRAITS]
    faceless = [
        image.crop((0, image.height * 2 // 3, image.width, image.height)).resize(image.size)
        for image in portraits
    ] + [working(FACES / "rocket.jpg")]
    found = [(image, faces.find_faces(image)[0]) for image in portraits]
    count = len(portraits)
    rows = {
        "first look, portrait": best_ms(
            lambda: [faces.find_faces(i) for i in portraits], rounds, count
        ),
        "first look, no face": best_ms(
            lambda: [faces.find_faces(i) for i in faceless], rounds, len(faceless)
        ),
        "closer look, no face": best_ms(
            lambda: [faces.find_faces(i, 2) for i in faceless], rounds, len(faceless)
        ),
        "embedding of one face": best_ms(
            lambda: [faces.embedding(i, f) for i, f in found], rounds, count
        ),
    }
    print(f"core {min(os.sched_getaffinity(0))}; 256 px working images")
    for name, ms in loading.items():
        print(f"load {name:30s} {ms:7.1f} ms once per process")
    for name, ms in rows.items():
        print(f"{name:35s} {ms:7.1f} ms/image")
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        images = actor_photos(scratch)
        for subject in (False, True):
            first, repeated = per_actor_ms(images, subject, scratch, rounds)
            label = "on " if subject else "off"
            print(
                f"actor of {ACTOR_SIZE} photos, subject checks {label}: first run {first:7.0f} ms"
                f" ({first / ACTOR_SIZE:5.1f} ms/image), repeated {repeated:6.0f} ms"
            )


if __name__ == "__main__":
    main()
