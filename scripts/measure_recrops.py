"""Precision and recall of the re-crop detector (training_data.recrops) on real photos.

    python scripts/measure_recrops.py            # figures
    python scripts/measure_recrops.py --verbose  # also every miss and every false alarm
    python scripts/measure_recrops.py --seed 7   # other random variants (thresholds chose on 14)

Positives (should be duplicates): from every photo in tests/data/styles/photorealistic and
tests/data/recrops, seeded random variants: a crop keeping 50-90% of its area at a random place
and aspect, mirrored half of the time, resized so its longest side is 256-640 px, re-encoded as
JPEG at quality 60-95. Pairs: (photo, variant) and (variant, another variant of the same photo).
Hard negatives (should not be): every pair of different shots of one scene in tests/data/recrops
(same people in the same room, a person holding a board in different positions, people walking
past a fixed camera, stereo pairs), as they are and with one side re-cropped. Easy negatives: every
pair of different photos in tests/data/styles/photorealistic (copies of one photo made grey,
sepia or cropped for the style set are left out). Every image goes through the pipeline's own
decode to the working image, as in a run.
"""

from __future__ import annotations

import argparse
import io
import itertools
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from training_data import recrops  # noqa: E402
from training_data.evaluation import decode_working_image  # noqa: E402

PHOTOS = REPO / "tests" / "data" / "styles" / "photorealistic"
SCENES = REPO / "tests" / "data" / "recrops"
VARIANTS_PER_PHOTO = 2
SEED = 14
COPY_SUFFIX = re.compile(r"_(gray|sepia|bw|crop|face_gray|invert)$")


@dataclass(frozen=True)
class Pair:
    kind: str
    name: str
    first: Image.Image
    second: Image.Image
    same: bool


def working(image: Image.Image, quality: int = 90) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return decode_working_image(buffer.getvalue())[0]


def variant(photo: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    """A crop keeping 50-90% of the area, maybe mirrored, resized, re-encoded."""
    width, height = photo.size
    keep = rng.uniform(0.5, 0.9)
    aspect = rng.uniform(0.8, 1.25)
    crop_width = min(width, round(width * (keep * aspect) ** 0.5))
    crop_height = min(height, round(width * height * keep / crop_width))
    left = rng.randint(0, width - crop_width)
    top = rng.randint(0, height - crop_height)
    image = photo.crop((left, top, left + crop_width, top + crop_height))
    mirrored = rng.random() < 0.5
    if mirrored:
        image = ImageOps.mirror(image)
    side = rng.randint(256, 640)
    scale = side / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    quality = rng.randint(60, 95)
    kept = crop_width * crop_height / (width * height)
    label = f"keep {kept:.0%}{' mirrored' if mirrored else ''} {side}px q{quality}"
    return working(image, quality), label


def positive_pairs(rng: random.Random) -> list[Pair]:
    pairs = []
    for path in sorted(PHOTOS.glob("*.jpg")) + sorted(SCENES.glob("*.jpg")):
        photo = Image.open(path).convert("RGB")
        original = working(photo)
        made = [variant(photo, rng) for _ in range(VARIANTS_PER_PHOTO)]
        for image, label in made:
            pairs.append(Pair("photo-crop", f"{path.stem} / {label}", original, image, True))
        (first, first_label), (second, second_label) = made[:2]
        name = f"{path.stem}: {first_label} / {second_label}"
        pairs.append(Pair("crop-crop", name, first, second, True))
    return pairs


def hard_negative_pairs(rng: random.Random) -> list[Pair]:
    groups: dict[str, list[Path]] = {}
    for path in sorted(SCENES.glob("*.jpg")):
        groups.setdefault(path.stem.split("__")[0], []).append(path)
    pairs = []
    for paths in groups.values():
        for first, second in itertools.combinations(paths, 2):
            one, other = Image.open(first), Image.open(second)
            name = f"{first.stem} / {second.stem}"
            pairs.append(Pair("same-scene", name, working(one), working(other), False))
            cropped, label = variant(other.convert("RGB"), rng)
            pairs.append(Pair("same-scene", f"{name} ({label})", working(one), cropped, False))
    return pairs


def easy_negative_pairs() -> list[Pair]:
    photos = {path.stem: working(Image.open(path)) for path in sorted(PHOTOS.glob("*.jpg"))}
    pairs = []
    for first, second in itertools.combinations(photos, 2):
        if COPY_SUFFIX.sub("", first) == COPY_SUFFIX.sub("", second):
            continue
        pairs.append(Pair("different", f"{first} / {second}", photos[first], photos[second], False))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--seed", type=int, default=SEED)
    arguments = parser.parse_args()
    verbose = arguments.verbose
    rng = random.Random(arguments.seed)
    pairs = positive_pairs(rng) + hard_negative_pairs(rng) + easy_negative_pairs()
    counts: dict[tuple[str, bool], list[int]] = {}
    prefilter_passed: dict[bool, int] = {True: 0, False: 0}
    started = time.perf_counter()
    for pair in pairs:
        detector = recrops.RecropDetector({1: pair.first, 2: pair.second})
        found = detector.same_picture(1, 2)
        overlap = recrops.histogram_overlap(
            recrops.colour_histogram(pair.first), recrops.colour_histogram(pair.second)
        )
        prefilter_passed[pair.same] += overlap >= recrops.MIN_HISTOGRAM_OVERLAP
        tally = counts.setdefault((pair.kind, pair.same), [0, 0])
        tally[0] += found
        tally[1] += 1
        if verbose and found != pair.same:
            print(f"{'MISS' if pair.same else 'FALSE ALARM'}: {pair.kind} {pair.name}")
    seconds = time.perf_counter() - started
    true_positives = sum(t[0] for (_, same), t in counts.items() if same)
    positives = sum(t[1] for (_, same), t in counts.items() if same)
    false_positives = sum(t[0] for (_, same), t in counts.items() if not same)
    negatives = sum(t[1] for (_, same), t in counts.items() if not same)
    print(f"pairs: {len(pairs)} ({positives} re-crops, {negatives} different photos)")
    for (kind, same), (flagged, total) in sorted(counts.items()):
        what = "found" if same else "flagged (false alarms)"
        print(f"  {kind:<11} {flagged:>4} of {total:<5} {what}")
    precision = true_positives / max(true_positives + false_positives, 1)
    print(f"recall {true_positives / positives:.1%}, precision {precision:.1%}")
    print(
        f"pre-filter passes {prefilter_passed[True]} of {positives} re-crops, "
        f"{prefilter_passed[False]} of {negatives} different pairs"
    )
    print(f"{seconds / len(pairs) * 1000:.2f} ms per pair (features computed per pair)")


if __name__ == "__main__":
    main()
