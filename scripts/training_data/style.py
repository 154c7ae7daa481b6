"""Style category of an image from pixel statistics: photo, b/w or colour illustration.

Two questions, answered in turn on the ~256 px working image:

1. Is it a photograph? A three-feature logistic model on luminance: how much of the image is
   flat (fills, blank paper), how much sits in its two most populated grey-level bins
   (paper and ink), and how much is crisp thin strokes (outlines, hatching, screentone). A
   photograph has grain everywhere, spreads its luminance over many levels and has few such
   strokes. Luminance only, so a photo made grey scores exactly as its colour original does.
2. If not, is it monochrome? Colour that luminance explains (grey, sepia, cyanotype, any toned
   print) is not colour: the chroma left once each luminance band's mean tint is removed decides.
   A photograph skips this question (and its cost).

A photograph is `photorealistic` whatever its colour; anything else is `bw_stylized` when
monochrome and `color_stylized` otherwise. The coefficients were fitted on the labelled real
images in tests/data/styles (see scripts/measure_accuracy.py --fit). Known weakness: painted
colour or grey illustrations (oil, gouache, painterly digital art) spread their luminance and
have soft strokes like photographs, and are mostly taken for photographs. Colour cues from the
photo-versus-painting literature (chroma-edge to luminance-edge ratio, edges of pure colour,
saturation and its relation to brightness, distinct colours, share of the most common colours,
median-filter noise and its chroma share, gradient percentiles and kurtosis, band-pass energy
ratios, hue steps) were each tried in a separate colour-branch model: none lowered its
leave-one-source-out log-loss below chance (~0.69) on the labelled set, so none is used.

Labelled set: 238 real images (97 photographs, 51 b/w and 90 colour illustrations) from 17
Debian/PyPI package sources (wallpapers, GCompris, Tux Paint, Wesnoth, FLARE, Endless Sky,
Stellarium, OpenClipart, OpenCV samples, scikit-image, matplotlib, scikit-learn), in
tests/data/styles/<style>/, 4.96 MB; each file's package, path and licence are in
tests/data/styles/SOURCES.md, and ``build_set.py --fetch DIR && build_set.py --build DIR``
rebuilds it byte-identically on Debian 12.

Accuracy (``scripts/measure_accuracy.py --cv``): whole set 87.6% photorealistic, 90.2% bw_stylized,
58.9% color_stylized; leave-one-source-out 87.6% / 90.2% / 56.7%. By kind (cross-validated):
colour photos 88%, grey/sepia/b&w photos 87%; line art, clip art and ink drawings 100%; cartoons,
clip art, vector art and painted portraits on plain backgrounds 96%; grey paintings and prints
64%; paintings, prints and painterly colour scenes 0%. Below the 95% aim.

A second round tried texture codes (uniform and noise-tolerant local binary patterns at two
scales), depth-of-field cues (how sharpness varies across a 3x3 to 6x6 grid), the three features
measured only off a plain background, flat shares at 2x, 4x and 8x reduction, and non-linear
models (random forest, extra trees, gradient boosting) over all of them: none raised the
leave-one-source-out accuracy of the shipped three-feature model. On this set paintings are, if
anything, more textured than photographs at every scale, and clip art flatter: photographs sit
between the two and overlap both. Some photographs on plain backgrounds (studio cut-outs) and
high-contrast b/w photos are called illustrations. The local generator's own outputs are
classified as their category in 99.3% (b/w) and 98.6% (colour) of 1,156 cases.

Cost: 0.4-0.6 ms on a photograph, 0.6-0.8 ms on an illustration (whose chroma it also measures).
"""

from __future__ import annotations

import math
import operator

from PIL import Image, ImageChops, ImageFilter

from training_data.config import LOCAL_CATEGORIES

STYLES = LOCAL_CATEGORIES  # the categories this classifier assigns

# Chroma (in YCbCr units, RMS over Cb and Cr) left after removing each luminance band's mean
# tint. Grey and toned monochrome images stay under it (a strongly toned, high-contrast drawing
# saved as 4:2:0 JPEG reaches ~3: its half-resolution chroma bleeds across the ink lines);
# colour images are over it, but for near-single-hue paintings (2.6-2.8).
MONOCHROME_MAX_CHROMA = 2.7
LUMA_BANDS = 8

# Logistic model: P(photo) = 1 / (1 + exp(-(INTERCEPT + sum(weight * measurement)))).
PHOTO_INTERCEPT = 3.3052
PHOTO_WEIGHTS: dict[str, float] = {
    "flat_share": -2.0468,
    "luma_peak": -5.4457,
    "stroke_share": -4.0087,
}

FLAT_STEP = 1  # luminance difference between neighbours that still counts as flat
PEAK_BIN = 4  # luminance levels per histogram bin when looking for paper and ink peaks
STROKE_LAPLACIAN = 24  # |second derivative| (at half size) of a line against its background
MIN_SIDE = 4  # smaller images are enlarged: the stroke filter needs a 3x3 neighbourhood
# Chroma is read at a quarter of the working size: tint statistics need no detail, and the
# averaging also absorbs most of the 4:2:0 chroma bleed along a drawing's ink lines.
CHROMA_REDUCTION = 4
CHROMA_WINDOW = 256 // LUMA_BANDS
# Byte tables for bytes.translate: Image.point would round each table in Python (most of its cost).
_BAND_OFFSETS = bytes(v * LUMA_BANDS // 256 * CHROMA_WINDOW for v in range(256))
_CLAMPED_RAMP = bytes([0] * 256 + list(range(CHROMA_WINDOW)) + [CHROMA_WINDOW - 1] * 256)
_LAPLACIAN = ImageFilter.Kernel((3, 3), (1, -2, 1, -2, 4, -2, 1, -2, 1), scale=1, offset=128)
_LEVELS = tuple(range(CHROMA_WINDOW))
_SQUARES = tuple(v * v for v in _LEVELS)


def classify_style(
    working: Image.Image, grey: Image.Image | None = None, levels: list[int] | None = None
) -> tuple[str, dict[str, float]]:
    """The style of an RGB working image, and the rounded measurements the decision used.

    ``grey`` and ``levels`` are the working image's "L" conversion and its histogram, when the
    caller already has them. Chroma is measured only for an illustration: only there it decides.
    """
    rgb, grey, levels = _prepared(working, grey, levels)
    measurements = _luminance_measurements(grey, levels)
    photo_probability = photo_likelihood(measurements)
    measurements["photo_probability"] = round(photo_probability, 3)
    if photo_probability >= 0.5:
        return "photorealistic", measurements
    category, measurements["chroma"] = illustration_style(rgb)
    return category, measurements


def illustration_style(working: Image.Image) -> tuple[str, float]:
    """An illustration's style (b/w when monochrome, else colour) and the chroma that decided."""
    chroma = _chroma(working if working.mode == "RGB" else working.convert("RGB"))
    return ("bw_stylized" if chroma < MONOCHROME_MAX_CHROMA else "color_stylized"), chroma


def photo_likelihood(measurements: dict[str, float]) -> float:
    score = PHOTO_INTERCEPT + sum(
        weight * measurements[name] for name, weight in PHOTO_WEIGHTS.items()
    )
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, score))))


def measure(working: Image.Image) -> dict[str, float]:
    """Every measurement the classifier can read, rounded so that they print and compare stably.

    flat_share: pixels of the half-size image within FLAT_STEP of their right and lower
        neighbours (flat fills, blank paper); half size and a level of slack absorb grain.
    luma_peak: pixels in the two most populated PEAK_BIN-level luminance bins (paper and ink).
    stroke_share: pixels of the half-size image with a strong second derivative (thin lines,
        hatching); half size, so that mild blur or sharpening changes it little.
    chroma: colour left once luminance explains the tint (0 for grey and toned monochrome).
    """
    rgb, grey, levels = _prepared(working, None, None)
    return _luminance_measurements(grey, levels) | {"chroma": _chroma(rgb)}


def _prepared(
    working: Image.Image, grey: Image.Image | None, levels: list[int] | None
) -> tuple[Image.Image, Image.Image, list[int]]:
    """RGB, grey and grey histogram; a tiny image enlarged so that the 3x3 filter has room."""
    rgb = working if working.mode == "RGB" else working.convert("RGB")
    if min(rgb.size) < MIN_SIDE:
        rgb = rgb.resize((max(MIN_SIDE, rgb.width), max(MIN_SIDE, rgb.height)), Image.NEAREST)
        grey = None
    if grey is None:
        grey = rgb.convert("L")  # the exact grey a photo made grey has, so both score the same
        levels = None
    return rgb, grey, levels if levels is not None else grey.histogram()


def _luminance_measurements(grey: Image.Image, levels: list[int]) -> dict[str, float]:
    # Runs of PEAK_BIN levels summed by zipping one iterator with itself: a C loop, no slices.
    bins = sorted(map(sum, zip(*[iter(levels)] * PEAK_BIN, strict=True)), reverse=True)
    half = _reduced(grey, 2)
    steps = _steps(half).histogram()
    # Filtered as 32-bit integers, clipped back to 0-255: the 8-bit filter's pixels, at half cost.
    laplacian = half.convert("I").filter(_LAPLACIAN).convert("L").histogram()
    values = {
        "flat_share": sum(steps[: FLAT_STEP + 1]) / sum(steps),
        "luma_peak": (bins[0] + bins[1]) / sum(levels),
        "stroke_share": _tail_share(laplacian, STROKE_LAPLACIAN),
    }
    return {name: round(value, 4) for name, value in values.items()}


def _chroma(rgb: Image.Image) -> float:
    return round(_chroma_beyond_tint(_reduced(rgb, CHROMA_REDUCTION).convert("YCbCr")), 4)


def _reduced(image: Image.Image, factor: int) -> Image.Image:
    """Box-averaged by ``factor``, unless that would leave less than MIN_SIDE pixels a side."""
    return image.reduce(factor) if min(image.size) >= factor * MIN_SIDE else image


def _steps(channel: Image.Image) -> Image.Image:
    """max(|dx|, |dy|) between neighbouring pixels (one row and one column smaller)."""
    width, height = channel.size
    base = channel.crop((0, 0, width - 1, height - 1))
    dx = ImageChops.difference(channel.crop((1, 0, width, height - 1)), base)
    dy = ImageChops.difference(channel.crop((0, 1, width - 1, height)), base)
    return ImageChops.lighter(dx, dy)


def _tail_share(signed_histogram: list[int], threshold: int) -> float:
    """Share of a 128-offset signed filter response whose magnitude is at least threshold."""
    total = sum(signed_histogram)
    tail = sum(signed_histogram[: 128 - threshold + 1]) + sum(signed_histogram[128 + threshold :])
    return tail / total


def _chroma_beyond_tint(ycc: Image.Image) -> float:
    """RMS chroma left after each luminance band's own mean tint is removed.

    Cb and Cr are read in a window of CHROMA_WINDOW levels around the image's mean tint, so one
    histogram holds the joint (luminance band, chroma) counts of both channels; a colour image
    spreads over that window whatever its tint, a toned monochrome one stays on a level or two per
    band.
    """
    counts = Image.frombytes("LA", ycc.size, _joint_codes(ycc.tobytes())).histogram()
    residual = 0.0
    for start in range(0, len(counts), CHROMA_WINDOW):  # Cb's bands, then Cr's
        window = counts[start : start + CHROMA_WINDOW]
        size = sum(window)
        if size:
            first = sum(map(operator.mul, window, _LEVELS))
            residual += sum(map(operator.mul, window, _SQUARES)) - first * first / size
    return math.sqrt(max(0.0, residual) / (ycc.width * ycc.height))


def _joint_codes(ycc_bytes: bytes) -> bytes:
    """Per pixel, its luminance band's offset plus its windowed Cb, then the same with Cr.

    On the raw bytes, a third of the cost of Pillow's point, split and add (point rounds its table
    in Python): lookups by bytes.translate, and the sum as a bitwise or of the byte strings read
    as integers, exact because a band offset (a multiple of CHROMA_WINDOW) and a windowed level
    (under CHROMA_WINDOW) share no bit.
    """
    bands = ycc_bytes[0::3].translate(_BAND_OFFSETS)
    joint = bytearray(2 * len(bands))
    for slot in (0, 1):
        chroma = ycc_bytes[slot + 1 :: 3]
        low = round(sum(chroma) / len(chroma)) - CHROMA_WINDOW // 2  # the mean tint's window
        window = chroma.translate(_CLAMPED_RAMP[256 - low : 512 - low])
        joint[slot::2] = (int.from_bytes(bands) | int.from_bytes(window)).to_bytes(len(bands))
    return bytes(joint)
