"""Cost per actor of the re-crop check in the duplicate search (training_data.recrops).

    python scripts/bench_recrops.py

Actors of 20 and 40 real photos (tests/data/styles/photorealistic, all one category: the worst
case, every pair is a candidate) plus three re-crops of one of them. Times find_duplicates on
the working images with and without the re-crop detector (median of REPEATS runs, features
computed afresh each run, as in a real run) and counts the pairs that reach ORB.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from training_data import recrops  # noqa: E402
from training_data.evaluation import (  # noqa: E402
    ImageEvaluation,
    decode_working_image,
    find_duplicates,
    fingerprint_of,
)

PHOTOS = REPO / "tests" / "data" / "styles" / "photorealistic"
REPEATS = 5


def working_images(count: int) -> list[Image.Image]:
    paths = sorted(PHOTOS.glob("*.jpg"))[:count]
    images = [decode_working_image(path.read_bytes())[0] for path in paths]
    source = Image.open(paths[0]).convert("RGB")
    width, height = source.size
    cuts = [
        source.crop((0, 0, int(width * 0.9), int(height * 0.9))),
        ImageOps.mirror(source.crop((int(width * 0.2), 0, width, int(height * 0.8)))),
        source.resize((width // 2, height // 2)),
    ]
    for cut in cuts:
        buffer = io.BytesIO()
        cut.save(buffer, "JPEG", quality=80)
        images.append(decode_working_image(buffer.getvalue())[0])
    return images


def evaluations(images: list[Image.Image]) -> list[ImageEvaluation]:
    return [
        ImageEvaluation(n, f"a_{n}.jpg", "photorealistic", 7, [], 512, 512, f"{n:064x}")
        for n in range(1, len(images) + 1)
    ]


def timed(images: list[Image.Image], with_recrops: bool) -> tuple[float, dict[int, str], int]:
    started = time.perf_counter()
    working = dict(enumerate(images, start=1))
    fingerprints = {number: fingerprint_of(image) for number, image in working.items()}
    detector = recrops.RecropDetector(working)
    check = detector.same_picture if with_recrops else None
    found = find_duplicates(evaluations(images), fingerprints, 10, check)
    return time.perf_counter() - started, found, len(detector._features)


def main() -> None:
    for count in (20, 40):
        images = working_images(count - 3)
        plain = statistics.median(timed(images, False)[0] for _ in range(REPEATS))
        runs = [timed(images, True) for _ in range(REPEATS)]
        with_recrops = statistics.median(run[0] for run in runs)
        _, found, featured = runs[0]
        print(
            f"actor of {len(images)} photos: duplicates {plain * 1000:.1f} ms without the re-crop "
            f"check, {with_recrops * 1000:.1f} ms with it (+{(with_recrops - plain) * 1000:.1f} ms"
            f" per actor); ORB features for {featured} images; duplicates found: {len(found)}"
        )


if __name__ == "__main__":
    main()
