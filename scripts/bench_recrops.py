"""Cost per actor of the re-crop check in the duplicate search (training_data.recrops).

    python scripts/bench_recrops.py

Actors of 20 and 40 real photos (tests/data/styles/photorealistic, all one category: the worst
case, every pair is a candidate) plus three re-crops of one of them. Times find_duplicates on
the working images with and without the re-crop detector (median of REPEATS runs, features
computed afresh each run, as in a first run); then with the pre-filter off (the worst case: an
actor whose photos all share one palette), and that again with the verdicts cached (a rerun, or
the re-evaluation after --execute).
"""

from __future__ import annotations

import io
import statistics
import sys
import tempfile
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


def timed(
    images: list[Image.Image], with_recrops: bool, pair_cache: recrops.PairCache | None = None
) -> tuple[float, dict[int, str], int]:
    started = time.perf_counter()
    working = dict(enumerate(images, start=1))
    fingerprints = {number: fingerprint_of(image) for number, image in working.items()}
    sha256s = {number: f"{number:064x}" for number in working}
    detector = recrops.RecropDetector(working, sha256s, pair_cache)
    check = detector.same_picture if with_recrops else None
    found = find_duplicates(evaluations(images), fingerprints, 10, check)
    detector.save()
    return time.perf_counter() - started, found, detector.images_matched


def median_ms(runs: list[tuple[float, dict[int, str], int]]) -> float:
    return statistics.median(run[0] for run in runs) * 1000


def main() -> None:
    for count in (20, 40):
        images = working_images(count - 3)
        plain = median_ms([timed(images, False) for _ in range(REPEATS)])
        runs = [timed(images, True) for _ in range(REPEATS)]
        _, found, featured = runs[0]
        print(
            f"actor of {len(images)} photos: duplicates {plain:.1f} ms without the re-crop check, "
            f"{median_ms(runs):.1f} ms with it (+{median_ms(runs) - plain:.1f} ms per actor); "
            f"ORB features for {featured} images; duplicates found: {len(found)}"
        )
        threshold = recrops.MIN_HISTOGRAM_OVERLAP
        recrops.MIN_HISTOGRAM_OVERLAP = 0.0  # every pair reaches ORB: photos of alike colours
        worst = [timed(images, True) for _ in range(REPEATS)]
        with tempfile.TemporaryDirectory() as folder:
            cache = recrops.PairCache(Path(folder))
            timed(images, True, cache)
            cached = [timed(images, True, cache) for _ in range(REPEATS)]
        recrops.MIN_HISTOGRAM_OVERLAP = threshold
        print(
            f"  every pair past the pre-filter: +{median_ms(worst) - plain:.1f} ms; "
            f"the same again with its verdicts cached: +{median_ms(cached) - plain:.1f} ms"
        )


if __name__ == "__main__":
    main()
