"""Fit the learned style stage's probe on the labelled set and write style_probe.json.

    uv run python scripts/fit_style_probe.py            # fit on every labelled image, write it
    uv run python scripts/fit_style_probe.py --dry-run  # fit and print, write nothing

The probe is a class-balanced, L2-regularised logistic regression (photo or not) on open_nsfw's
1024 pool features of each image's 256 px working image, fitted by Newton's method on
standardised features; the standardisation is folded into the stored weights. Its
leave-one-source-out accuracy, within the cascade, is what scripts/measure_accuracy.py --cv
prints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from training_data.evaluation import decode_working_image  # noqa: E402
from training_data.style_learned import PROBE_PATH, Probe, style_model  # noqa: E402

DATA = REPO / "tests" / "data" / "styles"
L2_PENALTY = 3000.0  # standardised features; probe alone, --cv: 30, 300, 3000 -> 72.8, 77.1, 77.9%


def labelled_features(root: Path = DATA) -> tuple[list[Path], np.ndarray]:
    """Every labelled image (sorted by style, then name) and its pool features, one row each."""
    paths = sorted(root.glob("*/*.jpg"))
    model = style_model()
    rows = [model.run(decode_working_image(path.read_bytes())[0]).features for path in paths]
    return paths, np.stack(rows)


def fit_probe(features: np.ndarray, is_photo: np.ndarray, penalty: float = L2_PENALTY) -> Probe:
    """Class-balanced L2 logistic regression; the weights apply to the raw features."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = np.hstack([np.ones((len(features), 1)), (features - mean) / scale]).astype(np.float64)
    y = is_photo.astype(np.float64)
    positives = y.sum()
    sample_weight = np.where(y > 0, len(y) / (2 * positives), len(y) / (2 * (len(y) - positives)))
    ridge = np.full(x.shape[1], penalty)
    ridge[0] = 0.0
    beta = np.zeros(x.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -60, 60)))
        gradient = x.T @ (sample_weight * (p - y)) + ridge * beta
        hessian = (x.T * (sample_weight * p * (1 - p))) @ x + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    weights = beta[1:] / scale
    return Probe(float(beta[0] - weights @ mean), weights.astype(np.float32))


def probe_document(probe: Probe, paths: list[Path]) -> dict[str, object]:
    weights = [float(f"{w:.6g}") for w in probe.weights]
    digest = hashlib.sha256(json.dumps([probe.intercept, weights]).encode()).hexdigest()[:12]
    return {
        "version": digest,
        "about": (
            "photo-versus-illustration logistic probe on open_nsfw pool features; fitted by "
            f"scripts/fit_style_probe.py on {len(paths)} labelled images, L2 {L2_PENALTY:g}"
        ),
        "intercept": round(probe.intercept, 6),
        "weights": weights,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print, do not write")
    args = parser.parse_args()
    paths, features = labelled_features()
    is_photo = np.array([path.parent.name == "photorealistic" for path in paths])
    probe = fit_probe(features, is_photo)
    fitted = np.array([probe.photo_probability(row) >= 0.5 for row in features])
    print(f"{len(paths)} images; training accuracy {np.mean(fitted == is_photo):.1%}")
    if not args.dry_run:
        document = probe_document(probe, paths)
        PROBE_PATH.write_text(json.dumps(document, separators=(",", ":")) + "\n")
        print(f"wrote {PROBE_PATH.relative_to(REPO)} (version {document['version']})")


if __name__ == "__main__":
    main()
