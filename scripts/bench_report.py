"""Benchmark: the review report at scale (an update must cost well under 50 ms at 10,000 actors).

Writes ``--actors`` synthetic evaluation JSONs (``--images`` images each) into a temp folder,
rebuilds the report from them (what ``--report`` does), opens it as a run does, and then times
``update_actor`` for ``--updates`` actors: once with their thumbnails already on disk (a later
run), once with new thumbnails to encode (a first run). Prints medians and the slowest update.

    uv run python scripts/bench_report.py [--actors 10000] [--images 20] [--updates 40]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from training_data.review_site import ReviewSite

CATEGORIES = {"photorealistic": 13, "bw_stylized": 4, "color_stylized": 3}
KINDS = ["photorealistic"] * 13 + ["bw_stylized"] * 4 + ["color_stylized"] * 3


def document(actor: int, images: int, salt: str = "") -> dict:
    """An evaluation JSON shaped like the real ones: one duplicate, one surplus removal."""
    name = f"{actor:05d}_actor"
    entries = []
    for number in range(1, images + 1):
        sha = hashlib.sha256(f"{name}/{number}{salt}".encode()).hexdigest()
        entries.append(
            {
                "number": number,
                "filename": f"{name}_{number}.jpg",
                "type": KINDS[(number - 1) % len(KINDS)],
                "quality_score": 1 + number % 10,
                "issues": ["duplicate"] if number == 2 else [],
                "width": 1024,
                "height": 1024,
                "sha256": sha,
                "duplicate_of": f"{name}_1.jpg" if number == 2 else None,
                "measurements": {
                    "style": {"photo_probability": 0.4 + (number % 5) / 10},
                    "face": {"count": 1, "box": [0.3, 0.2, 0.7, 0.6]},
                    "type_source": "evaluator",
                },
                "note": None,
            }
        )
    return {
        "actor": name,
        "evaluated_at": "2026-11-30T10:00:00+00:00",
        "total_images": images,
        "images": entries,
        "counts": dict(CATEGORIES),
        "target": {"counts": dict(CATEGORIES), "total": 20, "tolerance": 0.05, "mix": {}},
        "is_balanced": False,
        "images_to_delete": [
            {"number": 2, "filename": f"{name}_2.jpg", "reason": f"duplicate of {name}_1.jpg"}
        ],
        "images_to_generate": [{"type": "photorealistic", "count": 1}],
        "state": "rebalanced",
        "state_reason": "",
    }


def timed_updates(site: ReviewSite, documents: list[dict], thumbnails: dict) -> list[float]:
    times = []
    for doc in documents:
        started = time.perf_counter()
        site.update_actor(doc, thumbnails)
        times.append((time.perf_counter() - started) * 1000)
    return times


def describe(label: str, times: list[float]) -> None:
    print(
        f"{label}: median {statistics.median(times):.1f} ms, "
        f"slowest {max(times):.1f} ms over {len(times)} updates"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=10_000)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--updates", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as temp:
        output = Path(temp)
        for actor in range(args.actors):
            doc = document(actor, args.images)
            (output / f"{doc['actor']}_evaluation.json").write_text(json.dumps(doc))
        started = time.perf_counter()
        ReviewSite.rebuild(output, {}, {})
        print(f"--report rebuild of {args.actors} actors: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        site = ReviewSite.open(output)
        opened_ms = (time.perf_counter() - started) * 1000
        print(f"opening the report at a run's start: {opened_ms:.0f} ms")
        data = output / "report" / "data" / "index.js"
        images_csv = output / "report" / "images.csv"
        print(
            f"data/index.js {data.stat().st_size / 1e6:.1f} MB, "
            f"images.csv {images_csv.stat().st_size / 1e6:.1f} MB"
        )
        working = Image.effect_noise((256, 256), 40).convert("RGB")
        chosen = range(0, args.actors, max(1, args.actors // args.updates))
        updated = [document(actor, args.images, salt="new") for actor in chosen][: args.updates]
        thumbs = dict.fromkeys(range(1, args.images + 1), working)
        describe(f"update, {args.images} new thumbnails", timed_updates(site, updated, thumbs))
        describe("update, thumbnails already there", timed_updates(site, updated, thumbs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
