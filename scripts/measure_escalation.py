"""Share of the labelled images that `escalate = "openai"` would send to the vision model.

    python scripts/measure_escalation.py                # default band [0.3, 0.75]
    python scripts/measure_escalation.py --band 0.3 0.7

Each image of tests/data/styles goes through the pipeline's decode and the local style stages
as configured by default (statistics; the learned stage too where they are unsure when
``[style] learned`` is on); it is escalated when
training_data.escalation.is_unsure says so. Printed per category: the share
escalated, and the local stage's accuracy on the images it keeps and on those it escalates (an
escalation rule is good when the local stage is right on what it keeps and often wrong on what
it sends). Requests per image: the share escalated (one request per escalated image in
``per_image`` mode).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from training_data import style  # noqa: E402
from training_data.config import EvaluatorConfig, StyleConfig  # noqa: E402
from training_data.escalation import is_unsure  # noqa: E402
from training_data.evaluation import decode_working_image  # noqa: E402
from training_data.style_learned import classify_style_cascade  # noqa: E402

DATA = REPO / "tests" / "data" / "styles"


def main() -> None:
    defaults = EvaluatorConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--band", nargs=2, type=float, default=[defaults.unsure_min, defaults.unsure_max]
    )
    band = tuple(parser.parse_args().band)
    tally: Counter[tuple[str, str]] = Counter()
    for label in style.STYLES:
        for path in sorted((DATA / label).glob("*.jpg")):
            working, _, _ = decode_working_image(path.read_bytes())
            verdict = classify_style_cascade(working, None, None, StyleConfig().band)
            category, measurements = verdict.category, verdict.measurements
            where = "escalated" if is_unsure(measurements, band) else "kept"
            tally[label, where] += 1
            tally[label, f"{where} right"] += category == label
    print(f"band {band[0]:g}-{band[1]:g}")
    print(
        f"{'category':<16}{'images':>7}{'escalated':>13}{'local right, kept':>20}"
        f"{'local right, escalated':>24}"
    )
    totals: Counter[str] = Counter()
    for label in style.STYLES:
        counts = {key[1]: value for key, value in tally.items() if key[0] == label}
        for key, value in counts.items():
            totals[key] += value
        print(row(label, counts))
    print(row("all", dict(totals)))
    local_right = totals["kept right"] + totals["escalated right"]
    images = totals["kept"] + totals["escalated"]
    print(
        f"local stage alone: {local_right / images:.1%} right; with a vision model right on what "
        f"is escalated: {(totals['kept right'] + totals['escalated']) / images:.1%} at "
        f"{totals['escalated'] / images:.2f} requests per image"
    )


def row(name: str, counts: dict[str, int]) -> str:
    kept, escalated = counts.get("kept", 0), counts.get("escalated", 0)
    images = kept + escalated
    return (
        f"{name:<16}{images:>7}{share(escalated, images):>13}"
        f"{share(counts.get('kept right', 0), kept):>20}"
        f"{share(counts.get('escalated right', 0), escalated):>24}"
    )


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} {part / whole:.0%}" if whole else "-"


if __name__ == "__main__":
    main()
