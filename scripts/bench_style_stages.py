"""Cost per image of each style stage, and the share of images that reach the learned stage.

    uv run python scripts/bench_style_stages.py [--images 80] [--rounds 3] [--threads 1]

On the labelled real images (tests/data/styles; timed on every n-th, so all three styles are in),
already decoded to the 256 px working image: (1) the first stage, style.classify_style; (2) one
pass of the network with the probe (what an image in the uncertain band adds; the NSFW score
comes from the same pass); the model load, once per process. The average cost per image of the
cascade is (1) + share x (2). Best of --rounds, so other load on the machine hurts least;
OpenCV runs on --threads threads (1: one core, as the other benchmarks measure).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2

from training_data.config import StyleConfig
from training_data.evaluation import decode_working_image
from training_data.style import classify_style
from training_data.style_learned import in_band, style_model, style_probe

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "styles"


def best_per_image(work, items: list, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            work(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)

    images = [decode_working_image(p.read_bytes())[0] for p in sorted(DATA.glob("*/*.jpg"))]
    band = StyleConfig().band
    assert band is not None
    reaching = sum(
        in_band(classify_style(image)[1]["photo_probability"], *band) for image in images
    )
    sample = images[:: max(1, len(images) // args.images)][: args.images]

    start = time.perf_counter()
    style_model()
    style_probe()
    load = (time.perf_counter() - start) * 1000

    def learned(image) -> None:
        style_probe().photo_probability(style_model().run(image).features)

    first = best_per_image(classify_style, sample, args.rounds)
    second = best_per_image(learned, sample, args.rounds)
    share = reaching / len(images)
    print(
        f"{len(images)} labelled images; band {band[0]:g}-{band[1]:g}; "
        f"OpenCV threads {args.threads}"
    )
    print(f"model load (once per process)      {load:8.0f} ms")
    print(f"first stage, statistics            {first:8.2f} ms/image")
    print(f"learned stage, network + probe     {second:8.2f} ms/image")
    print(f"share reaching the learned stage   {share:8.1%}  ({reaching}/{len(images)})")
    print(f"cascade, average                   {first + share * second:8.2f} ms/image")
    print(f"network on every image (nsfw)      {first + second:8.2f} ms/image")


if __name__ == "__main__":
    main()
