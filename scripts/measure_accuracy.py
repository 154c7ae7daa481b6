"""Accuracy of the local style classifier on the labelled real images in tests/data/styles.

    python scripts/measure_accuracy.py          # per-category accuracy and confusion matrix
    python scripts/measure_accuracy.py --cv     # also leave-one-source-out cross-validation
    python scripts/measure_accuracy.py --fit    # refit the photo model, print its coefficients

Images go through the evaluation pipeline's own decode (draft-mode JPEG, 256 px working image).
A file's source is the part of its name before "__" (the package it came from): the
cross-validation refits the photo model without each source in turn and classifies that source
with it, so no picture is judged by a model that saw its source. Pure Python, no numpy.
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

from training_data import style  # noqa: E402
from training_data.evaluation import decode_working_image  # noqa: E402

DATA = REPO / "tests" / "data" / "styles"
FEATURES = tuple(style.PHOTO_WEIGHTS)
L2_PENALTY = 1.0  # on standardized features; keeps the weights small and the model stable


@dataclass(frozen=True)
class Sample:
    name: str
    source: str
    style: str
    measurements: dict[str, float]


def load_samples(root: Path = DATA) -> list[Sample]:
    samples = []
    for label in style.STYLES:
        for path in sorted((root / label).glob("*.jpg")):
            working, _, _ = decode_working_image(path.read_bytes())
            samples.append(
                Sample(path.name, path.name.split("__")[0], label, style.measure(working))
            )
    return samples


def classify(sample: Sample, intercept: float, weights: dict[str, float]) -> str:
    score = intercept + sum(w * sample.measurements[name] for name, w in weights.items())
    if score >= 0:
        return "photorealistic"
    if sample.measurements["chroma"] < style.MONOCHROME_MAX_CHROMA:
        return "bw_stylized"
    return "color_stylized"


def report(title: str, truth: list[str], predicted: list[str]) -> dict[str, float]:
    pairs = Counter(zip(truth, predicted, strict=True))
    print(f"\n{title}")
    print(f"{'true / predicted':<18}" + "".join(f"{s:>16}" for s in style.STYLES) + "  accuracy")
    accuracy = {}
    for label in style.STYLES:
        row = [pairs[(label, p)] for p in style.STYLES]
        accuracy[label] = pairs[(label, label)] / max(1, sum(row))
        print(f"{label:<18}" + "".join(f"{n:>16}" for n in row) + f"  {accuracy[label]:8.1%}")
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


def cross_validate(samples: list[Sample]) -> list[str]:
    predicted = {}
    for source in sorted({s.source for s in samples}):
        intercept, weights = fit_photo_model([s for s in samples if s.source != source])
        for s in samples:
            if s.source == source:
                predicted[s.name] = classify(s, intercept, weights)
    return [predicted[s.name] for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", action="store_true", help="leave-one-source-out accuracy")
    parser.add_argument("--fit", action="store_true", help="print refitted coefficients")
    parser.add_argument("--errors", action="store_true", help="list misclassified images")
    args = parser.parse_args()

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
    report("style.py as shipped (all images):", truth, predicted)
    if args.errors:
        for s, p in zip(samples, predicted, strict=True):
            if p != s.style:
                print(f"  {s.style:>15} -> {p:<15} {s.name}  {s.measurements}")
    if args.cv:
        report("leave-one-source-out cross-validation:", truth, cross_validate(samples))
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
