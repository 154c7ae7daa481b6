"""The local style classifier on real labelled photographs and illustrations (tests/data/styles)."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFilter, ImageOps

from training_data.evaluation import decode_working_image
from training_data.style import STYLES, classify_style, measure

DATA = Path(__file__).resolve().parent / "data" / "styles"
LABELLED = sorted((path.parent.name, path) for path in DATA.glob("*/*.jpg"))

# Just under what scripts/measure_accuracy.py reports for the shipped model, so that a change
# that makes the classifier worse on real images fails here.
MIN_ACCURACY = {"photorealistic": 0.86, "bw_stylized": 0.79, "color_stylized": 0.57}
# What each file shows (SOURCES.md's last column): grain tests apply to drawings, not paintings.
KINDS = {
    cells[0]: cells[3]
    for cells in (
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in (DATA / "SOURCES.md").read_text().splitlines()
    )
    if len(cells) == 4 and cells[0].endswith(".jpg")
}


def working_image(data: bytes) -> Image.Image:
    """What the evaluation pipeline hands the classifier: the draft-decoded 256 px image."""
    return decode_working_image(data)[0]


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def verdicts() -> dict[Path, tuple[str, dict[str, float]]]:
    return {path: classify_style(working_image(path.read_bytes())) for _, path in LABELLED}


def test_the_labelled_set_covers_every_style_and_lists_its_sources() -> None:
    counts = Counter(style for style, _ in LABELLED)
    assert set(counts) == set(STYLES)
    assert min(counts.values()) >= 40
    listed = {line.split(" | ")[0][2:] for line in (DATA / "SOURCES.md").read_text().splitlines()}
    assert {f"{style}/{path.name}" for style, path in LABELLED} <= listed


@pytest.mark.parametrize("style", STYLES)
def test_accuracy_per_category_on_real_images(style: str, verdicts: dict) -> None:
    paths = [path for label, path in LABELLED if label == style]
    wrong = [path.name for path in paths if verdicts[path][0] != style]
    accuracy = 1 - len(wrong) / len(paths)
    assert accuracy >= MIN_ACCURACY[style], f"{accuracy:.1%} on {style}; wrong: {wrong}"


def test_a_photo_made_grey_scores_as_its_colour_original(verdicts: dict) -> None:
    photos = [p for label, p in LABELLED if label == "photorealistic"]
    photos = [p for p in photos if measure(working_image(p.read_bytes()))["chroma"]]  # colour
    assert len(photos) >= 50
    for path in photos:
        colour = working_image(path.read_bytes())
        style, grey_measurements = classify_style(colour.convert("L").convert("RGB"))
        probability = verdicts[path][1]["photo_probability"]
        assert abs(grey_measurements["photo_probability"] - probability) < 0.01, path.name
        assert (style == "photorealistic") == (probability >= 0.5), path.name


def test_grey_and_sepia_photo_files_are_photorealistic(verdicts: dict) -> None:
    confident = [
        p
        for label, p in LABELLED
        if label == "photorealistic" and verdicts[p][1]["photo_probability"] >= 0.65
    ]
    assert len(confident) >= 50
    for path in confident:
        grey = Image.open(path).convert("L")
        sepia = ImageOps.colorize(grey, black="#2b1d0e", white="#fff3df", mid="#a4845c")
        for toned in (grey, sepia):
            assert classify_style(working_image(jpeg(toned, 90)))[0] == "photorealistic", path.name


def test_grey_illustrations_stay_black_and_white_when_sepia_toned(verdicts: dict) -> None:
    drawings = [p for label, p in LABELLED if label == "bw_stylized" and verdicts[p][0] == label]
    kept = 0
    for path in drawings:
        grey = Image.open(path).convert("L")
        sepia = ImageOps.colorize(grey, black="#2b1d0e", white="#fff3df", mid="#a4845c")
        kept += classify_style(working_image(jpeg(sepia, 90)))[0] == "bw_stylized"
    # Strong toning of high-contrast ink lines, saved as 4:2:0 JPEG, can read as colour.
    assert kept >= 0.9 * len(drawings)


def test_the_same_image_always_gets_the_same_verdict(verdicts: dict) -> None:
    for _, path in LABELLED[::10]:
        again = classify_style(working_image(path.read_bytes()))
        assert again == verdicts[path]
        style, measurements = again
        assert style in STYLES
        assert all(isinstance(v, float) and round(v, 4) == v for v in measurements.values())


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda im: jpeg(im, 70), id="recompressed-q70"),
        pytest.param(lambda im: jpeg(im.resize((im.width * 2, im.height * 2)), 90), id="2x-larger"),
        pytest.param(lambda im: jpeg(im.filter(ImageFilter.GaussianBlur(0.6)), 90), id="mild-blur"),
    ],
)
def test_recompression_resizing_and_mild_blur_keep_confident_labels(change, verdicts) -> None:
    checked = 0
    for _, path in LABELLED[::3]:
        style, measurements = verdicts[path]
        if abs(measurements["photo_probability"] - 0.5) < 0.15:
            continue  # a borderline image may go either way
        changed = classify_style(working_image(change(Image.open(path).convert("RGB"))))[0]
        assert changed == style, path.name
        checked += 1
    assert checked >= 50


def test_a_drawing_with_scanner_or_camera_grain_stays_black_and_white(verdicts: dict) -> None:
    drawings = [
        p
        for label, p in LABELLED
        if label == "bw_stylized"
        and verdicts[p][0] == label
        and KINDS[f"{label}/{p.name}"] == "grey drawn"
    ]
    assert len(drawings) >= 40
    for path in drawings[::2]:
        drawing = Image.open(path).convert("RGB")
        grain = Image.merge("RGB", [Image.effect_noise(drawing.size, 5) for _ in range(3)])
        grainy = ImageChops.add(drawing, grain, scale=1, offset=-128)
        assert classify_style(working_image(jpeg(grainy, 85)))[0] == "bw_stylized", path.name


def test_other_modes_and_tiny_images_are_classified_without_error() -> None:
    path = LABELLED[0][1]
    rgb = Image.open(path).convert("RGB")
    assert classify_style(rgb.convert("RGBA")) == classify_style(rgb)
    assert classify_style(rgb.convert("L"))[0] == classify_style(rgb.convert("L").convert("RGB"))[0]
    for size in ((1, 1), (3, 2), (2, 300)):
        style, _ = classify_style(Image.new("RGB", size, (200, 30, 40)))
        assert style in STYLES


def test_a_blank_page_is_not_a_photograph() -> None:
    assert classify_style(Image.new("RGB", (256, 180), "white"))[0] == "bw_stylized"
    assert classify_style(Image.new("RGB", (256, 180), (20, 120, 220)))[0] != "photorealistic"
