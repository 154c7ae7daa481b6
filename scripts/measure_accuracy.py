"""Accuracy of the local style classifier on the labelled real images in tests/data/styles.

    python scripts/measure_accuracy.py          # per-category accuracy and confusion matrix
    python scripts/measure_accuracy.py --cv     # also leave-one-source-out cross-validation
    python scripts/measure_accuracy.py --fit    # refit the photo model, print its coefficients

Images go through the evaluation pipeline's own decode (draft-mode JPEG, 256 px working image).
A file's source is the part of its name before "__" (the package it came from): the
cross-validation refits the photo model without each source in turn and classifies that source
with it, so no picture is judged by a model that saw its source. Two classifiers are measured:
the first stage alone (style.py's statistics) and the cascade (statistics, then the learned
stage's probe where their photo probability is inside the uncertain band); in --cv both the
statistics model and the probe are refitted without the held-out source. Accuracy is printed
per category and per kind (SOURCES.md's last column: people photos, painted art, ...).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import numpy as np  # noqa: E402
from fit_style_probe import L2_PENALTY as PROBE_L2_PENALTY  # noqa: E402
from fit_style_probe import fit_probe  # noqa: E402

from training_data import style  # noqa: E402
from training_data.config import StyleConfig  # noqa: E402
from training_data.evaluation import decode_working_image  # noqa: E402
from training_data.style_learned import Probe, in_band, style_model, style_probe  # noqa: E402

DATA = REPO / "tests" / "data" / "styles"
FEATURES = tuple(style.PHOTO_WEIGHTS)
L2_PENALTY = 1.0  # on standardized features; keeps the weights small and the model stable


@dataclass(frozen=True)
class Sample:
    name: str
    source: str
    style: str
    kind: str
    measurements: dict[str, float]
    features: np.ndarray  # the learned stage's 1024 pool features


def load_samples(root: Path = DATA) -> list[Sample]:
    kinds = _kinds(root / "SOURCES.md")
    model = style_model()
    samples = []
    for label in style.STYLES:
        for path in sorted((root / label).glob("*.jpg")):
            working, _, _ = decode_working_image(path.read_bytes())
            samples.append(
                Sample(
                    path.name,
                    path.name.split("__")[0],
                    label,
                    kinds.get(f"{label}/{path.name}", "?"),
                    style.measure(working),
                    model.run(working).features,
                )
            )
    return samples


def _kinds(sources: Path) -> dict[str, str]:
    """File -> kind, from the last column of SOURCES.md's file table."""
    kinds = {}
    for line in sources.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(".jpg"):
            kinds[cells[0]] = cells[3]
    return kinds


def classify(
    sample: Sample,
    intercept: float,
    weights: dict[str, float],
    probe: Probe | None = None,
    band: tuple[float, float] = (0.0, -1.0),
) -> str:
    """The first stage's rule; with a probe, the cascade's (the probe decides inside band)."""
    score = intercept + sum(w * sample.measurements[name] for name, w in weights.items())
    probability = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, score))))
    if probe is not None and in_band(round(probability, 3), *band):
        probability = probe.photo_probability(sample.features)
    if probability >= 0.5:
        return "photorealistic"
    if sample.measurements["chroma"] < style.MONOCHROME_MAX_CHROMA:
        return "bw_stylized"
    return "color_stylized"


def report(
    title: str, truth: list[str], predicted: list[str], kinds: list[str] | None = None
) -> dict[str, float]:
    pairs = Counter(zip(truth, predicted, strict=True))
    print(f"\n{title}")
    print(f"{'true / predicted':<18}" + "".join(f"{s:>16}" for s in style.STYLES) + "  accuracy")
    accuracy = {}
    for label in style.STYLES:
        row = [pairs[(label, p)] for p in style.STYLES]
        accuracy[label] = pairs[(label, label)] / max(1, sum(row))
        print(f"{label:<18}" + "".join(f"{n:>16}" for n in row) + f"  {accuracy[label]:8.1%}")
    right = sum(pairs[(label, label)] for label in style.STYLES)
    print(f"{'all':<18}{'':>48}  {right / len(truth):8.1%}")
    if kinds:
        for kind in sorted(set(kinds)):
            hits = [t == p for t, p, k in zip(truth, predicted, kinds, strict=True) if k == kind]
            print(f"  kind {kind:<20} {sum(hits):4}/{len(hits):<4} {sum(hits) / len(hits):7.1%}")
    return accuracy


def fit_photo_model(samples: list[Sample]) -> tuple[float, dict[str, float]]:
    """Class-balanced L2 logistic regression (Newton's method) on standardized features."""
    columns = [[s.measurements[f] for s in samples] for f in FEATURES]
    means = [sum(c) / len(c) for c in columns]
    scales = [
        math.sqrt(sum((v - m) ** 2 for v in c) / len(c)) or 1.0
        for c, m in zip(columns, means, strict=True)
    ]
    standard = list(zip(FEATURES, means, scales, strict=True))
    rows = [[1.0, *((s.measurements[f] - m) / sd for f, m, sd in standard)] for s in samples]
    targets = [1.0 if s.style == "photorealistic" else 0.0 for s in samples]
    positives = sum(targets)
    weights = [
        len(samples) / (2 * positives) if t else len(samples) / (2 * (len(samples) - positives))
        for t in targets
    ]
    beta = [0.0] * (len(FEATURES) + 1)
    for _ in range(50):
        gradient = [0.0] * len(beta)
        hessian = [[0.0] * len(beta) for _ in beta]
        for row, target, weight in zip(rows, targets, weights, strict=True):
            z = max(-60.0, min(60.0, sum(b * x for b, x in zip(beta, row, strict=True))))
            p = 1.0 / (1.0 + math.exp(-z))
            for i, xi in enumerate(row):
                gradient[i] += weight * (p - target) * xi
                for j, xj in enumerate(row):
                    hessian[i][j] += weight * p * (1 - p) * xi * xj
        for i in range(1, len(beta)):
            gradient[i] += L2_PENALTY * beta[i]
            hessian[i][i] += L2_PENALTY
        step = _solve(hessian, gradient)
        beta = [b - s for b, s in zip(beta, step, strict=True)]
        if max(abs(s) for s in step) < 1e-9:
            break
    raw = {f: b / sd for f, b, sd in zip(FEATURES, beta[1:], scales, strict=True)}
    intercept = beta[0] - sum(raw[f] * m for f, m in zip(FEATURES, means, strict=True))
    return intercept, raw


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the matrix is small and well conditioned)."""
    n = len(vector)
    a = [[*row, v] for row, v in zip(matrix, vector, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, n):
            factor = a[r][col] / a[col][col]
            for c in range(col, n + 1):
                a[r][c] -= factor * a[col][c]
    solution = [0.0] * n
    for r in range(n - 1, -1, -1):
        solution[r] = (a[r][n] - sum(a[r][c] * solution[c] for c in range(r + 1, n))) / a[r][r]
    return solution


def cross_validate(
    samples: list[Sample], band: tuple[float, float], penalty: float
) -> tuple[list[str], list[str]]:
    """Leave-one-source-out verdicts of the first stage alone and of the cascade."""
    first: dict[str, str] = {}
    cascade: dict[str, str] = {}
    for source in sorted({s.source for s in samples}):
        training = [s for s in samples if s.source != source]
        intercept, weights = fit_photo_model(training)
        probe = fit_probe(
            np.stack([s.features for s in training]),
            np.array([s.style == "photorealistic" for s in training]),
            penalty,
        )
        for s in samples:
            if s.source == source:
                key = f"{s.style}/{s.name}"
                first[key] = classify(s, intercept, weights)
                cascade[key] = classify(s, intercept, weights, probe, band)
    keys = [f"{s.style}/{s.name}" for s in samples]
    return [first[k] for k in keys], [cascade[k] for k in keys]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", action="store_true", help="leave-one-source-out accuracy")
    parser.add_argument("--fit", action="store_true", help="print refitted coefficients")
    parser.add_argument("--errors", action="store_true", help="list misclassified images")
    defaults = StyleConfig()
    parser.add_argument(
        "--band",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=(defaults.uncertain_low, defaults.uncertain_high),
    )
    parser.add_argument("--penalty", type=float, default=PROBE_L2_PENALTY, help="probe L2 in --cv")
    args = parser.parse_args()
    band = tuple(args.band)

    started = time.perf_counter()
    samples = load_samples()
    truth = [s.style for s in samples]
    timing_image = decode_working_image((DATA / truth[0] / samples[0].name).read_bytes())[0]
    per_image = _time_per_image(timing_image)
    predicted = [classify(s, style.PHOTO_INTERCEPT, style.PHOTO_WEIGHTS) for s in samples]
    print(
        f"{len(samples)} images from {len({s.source for s in samples})} sources, "
        f"{Counter(truth)}; classify_style {per_image:.2f} ms per image"
    )
    kinds = [s.kind for s in samples]
    report("style.py as shipped (all images):", truth, predicted, kinds)
    shipped = [
        classify(s, style.PHOTO_INTERCEPT, style.PHOTO_WEIGHTS, style_probe(), band)
        for s in samples
    ]
    reaching = sum(
        in_band(round(style.photo_likelihood(s.measurements), 3), *band) for s in samples
    )
    report(
        f"cascade as shipped (band {band[0]:g}-{band[1]:g}: {reaching / len(samples):.0%} of "
        "images reach the learned stage; the probe saw these images):",
        truth,
        shipped,
        kinds,
    )
    if args.errors:
        for s, p in zip(samples, shipped, strict=True):
            if p != s.style:
                print(f"  {s.style:>15} -> {p:<15} {s.name}  {s.measurements}")
    if args.cv:
        first, cascade = cross_validate(samples, band, args.penalty)
        report("leave-one-source-out, first stage alone:", truth, first, kinds)
        report("leave-one-source-out, cascade (statistics, then the probe):", truth, cascade, kinds)
    if args.fit:
        intercept, weights = fit_photo_model(samples)
        print(f"\nPHOTO_INTERCEPT = {intercept:.4f}\nPHOTO_WEIGHTS = {{")
        for name, weight in weights.items():
            print(f'    "{name}": {weight:.4f},')
        print("}")
        report(
            "refitted model (all images):",
            truth,
            [classify(s, intercept, weights) for s in samples],
        )
    print(f"\n{time.perf_counter() - started:.1f} s")


def _time_per_image(image: object, repeats: int = 50) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        style.classify_style(image)  # type: ignore[arg-type]
    return (time.perf_counter() - start) / repeats * 1000


if __name__ == "__main__":
    main()
