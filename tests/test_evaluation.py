"""Evaluation pipeline: real image files in tmp_path, read the way a user's data is."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import sqlite3
import struct
import subprocess
import sys
import threading
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import within
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from training_data.config import Config, LimitsConfig, QualityConfig
from training_data.dataset import Actor, TrainingImage, list_training_images
from training_data.errors import ActorError
from training_data.evaluation import (
    WORKING_SIDE,
    ActorEvaluation,
    EvaluationCache,
    ImageEvaluation,
    ImageSample,
    Judgement,
    LocalBackend,
    decode_working_image,
    evaluate_actor,
)
from training_data.pipeline import make_backend

PHOTO = "photorealistic"
BW = "bw_stylized"
COLOR = "color_stylized"


# --- images a user might have ------------------------------------------------------------------


def photo(seed: int, side: int = 512) -> Image.Image:
    """Photo-like: lit backdrop, objects, lens softness and sensor noise."""
    rng = random.Random(seed)
    light = Image.linear_gradient("L").resize((side, side)).rotate(rng.uniform(0, 360))
    colours = [tuple(rng.randrange(50, 210) for _ in range(3)) for _ in range(2)]
    image = Image.composite(
        Image.new("RGB", (side, side), colours[0]),
        Image.new("RGB", (side, side), colours[1]),
        light,
    )
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x, y, r = rng.randrange(side), rng.randrange(side), rng.randrange(side // 40, side // 6)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    image = image.filter(ImageFilter.GaussianBlur(side / 800))
    return add_noise(image, 6)


def portrait(person: int, shot: int, side: int = 512) -> Image.Image:
    """One person (face, hair, shirt, room) in a similar pose; each shot moves, relights, redresses
    the set: two different photos that a careless hash would call duplicates."""
    who, when = random.Random(person), random.Random(person * 7919 + shot)
    skin, hair, shirt, wall, floor = (
        tuple(who.randrange(low, high) for _ in range(3))
        for low, high in ((150, 230), (10, 90), (0, 256), (60, 200), (60, 200))
    )
    light = Image.linear_gradient("L").resize((side, side))
    light = light.rotate(who.uniform(0, 360) + when.uniform(-20, 20))
    image = Image.composite(
        Image.new("RGB", (side, side), wall), Image.new("RGB", (side, side), floor), light
    )
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x, y, r = when.randrange(side), when.randrange(side), when.randrange(side // 30, side // 8)
        draw.rectangle(
            (x - r, y - r, x + r, y + r), fill=tuple(when.randrange(256) for _ in range(3))
        )
    cx = side // 2 + when.randrange(-side // 16, side // 16)
    cy = int(side * 0.42) + when.randrange(-side // 20, side // 20)
    half_width, half_height = int(side * 0.16), int(side * 0.21)
    draw.ellipse(
        (cx - int(side * 0.4), cy + int(half_height * 1.3), cx + int(side * 0.4), cy + side),
        fill=shirt,
    )
    draw.ellipse(
        (cx - half_width - 8, cy - half_height - 15, cx + half_width + 8, cy + half_height // 2),
        fill=hair,
    )
    draw.ellipse((cx - half_width, cy - half_height, cx + half_width, cy + half_height), fill=skin)
    for side_of_face in (-1, 1):
        eye = cx + side_of_face * half_width // 2
        draw.ellipse((eye - 9, cy - 15, eye + 9, cy - 3), fill=(40, 30, 30))
    image = image.filter(ImageFilter.GaussianBlur(side / 700))
    return add_noise(image, 6)


def colour_drawing(seed: int, side: int = 512) -> Image.Image:
    """Cel-shaded comic look: flat saturated fills with black outlines."""
    rng = random.Random(seed)
    image = Image.new("RGB", (side, side), tuple(rng.randrange(150, 256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(20):
        x, y, r = rng.randrange(side), rng.randrange(side), rng.randrange(side // 30, side // 5)
        fill = tuple(rng.choice((rng.randrange(0, 60), rng.randrange(190, 256))) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=(0, 0, 0), width=3)
    return image


def add_noise(image: Image.Image, sigma: float) -> Image.Image:
    noise = Image.effect_noise(image.size, sigma).convert("RGB")
    return ImageChops.add(image, noise, offset=-128)


def jpeg_bytes(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb's calling card."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


# --- running the pipeline ----------------------------------------------------------------------


class CountingBackend:
    """A real backend (the local one) that counts the images it is asked to judge."""

    def __init__(self, quality: QualityConfig) -> None:
        self.inner = LocalBackend(quality)
        self.name = self.inner.name
        self.judged: list[str] = []

    def settings(self) -> dict[str, Any]:
        return self.inner.settings()

    def judge(
        self, samples: list[ImageSample], categories: tuple[str, ...]
    ) -> dict[int, Judgement]:
        self.judged += [sample.filename for sample in samples]
        return self.inner.judge(samples, categories)

    def usage(self) -> dict[str, Any]:
        return self.inner.usage()


class OneStyleBackend:
    """Calls everything one style with a fixed score; and forgets the images named in ``skip``."""

    name = "one_style"

    def __init__(self, style: str, skip: tuple[str, ...] = ()) -> None:
        self.style = style
        self.skip = skip

    def settings(self) -> dict[str, Any]:
        return {"style": self.style}

    def judge(
        self, samples: list[ImageSample], categories: tuple[str, ...]
    ) -> dict[int, Judgement]:
        return {
            sample.number: Judgement(self.style, 7, [], {"seen_side": max(sample.working.size)})
            for sample in samples
            if sample.filename not in self.skip
        }

    def usage(self) -> dict[str, Any]:
        return {}


def write_files(folder: Path, files: dict[str, Image.Image | bytes | None]) -> None:
    """Images saved by extension, bytes written as they are, None left missing."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Image.Image):
            options = {"quality": 92} if name.endswith(".jpg") else {}
            content.save(folder / name, **options)
        elif content is not None:
            (folder / name).write_bytes(content)


def training_images(
    folder: Path, files: dict[str, Any], types: dict[str, str] | None = None
) -> list[TrainingImage]:
    """Numbered in filename order; every image typed (default photorealistic) via its manifest."""
    types = types or {}
    return [
        TrainingImage(number, name, folder / name, {"type": types.get(name, PHOTO)})
        for number, name in enumerate(sorted(files), start=1)
    ]


def evaluate(
    tmp_path: Path,
    files: dict[str, Image.Image | bytes | None],
    *,
    types: dict[str, str] | None = None,
    config: Config | None = None,
    backend: Any = None,
) -> ActorEvaluation:
    config = config or Config()
    folder = tmp_path / "training_data"
    write_files(folder, files)
    return evaluate_actor(
        training_images(folder, files, types),
        config,
        backend or LocalBackend(config.quality),
        EvaluationCache(tmp_path / "cache"),
    )


def by_name(evaluation: ActorEvaluation) -> dict[str, ImageEvaluation]:
    return {image.filename: image for image in evaluation.images}


# --- unreadable files --------------------------------------------------------------------------


def test_unreadable_files_are_reported_with_a_one_line_reason(tmp_path):
    good = jpeg_bytes(photo(1))
    files = {
        "a_1.jpg": good,
        "a_2.jpg": good[: len(good) * 2 // 3],
        "a_3.jpg": b"",
        "a_4.jpg": b"this is a caption, not a picture\n",
        "a_5.jpg": None,
    }
    images = by_name(evaluate(tmp_path, files))

    assert images["a_1.jpg"].issues == []
    reasons = {
        "a_2.jpg": "truncated",
        "a_3.jpg": "empty file",
        "a_4.jpg": "not a JPEG, PNG, WebP, GIF or BMP image",
        "a_5.jpg": "file not found",
    }
    for name, reason in reasons.items():
        image = images[name]
        assert image.issues == ["unreadable"], name
        assert (image.type, image.quality_score, image.width, image.height) == (None, 1, None, None)
        assert reason in image.measurements["error"], image.measurements
        assert "\n" not in image.measurements["error"]
        assert image.unusable


def test_special_huge_and_broken_link_files_are_unreadable_with_the_reason(tmp_path):
    """Only regular files are read, and none over limits.max_file_mib: a FIFO would block the
    run, /dev/zero or a 6 GiB sparse file would fill the memory."""
    folder = tmp_path / "training_data"
    files = {f"a_{number}.jpg": None for number in range(1, 7)}
    files["a_1.jpg"] = jpeg_bytes(photo(1))
    write_files(folder, files)
    os.mkfifo(folder / "a_2.jpg")
    (folder / "a_3.jpg").symlink_to("/dev/zero")
    (folder / "a_4.jpg").symlink_to("a_4.jpg")
    (folder / "a_5.jpg").symlink_to(tmp_path / "gone.jpg")
    with open(folder / "a_6.jpg", "wb") as sparse:
        sparse.truncate(6 * 1024**3)
    config = Config(limits=LimitsConfig(max_file_mib=1))
    images = training_images(folder, files)

    evaluation = within(
        30,
        evaluate_actor,
        images,
        config,
        LocalBackend(config.quality),
        EvaluationCache(tmp_path / "cache"),
    )

    errors = {image.filename: image.measurements.get("error") for image in evaluation.images}
    assert errors == {
        "a_1.jpg": None,
        "a_2.jpg": "cannot read the file: not a regular file (a FIFO)",
        "a_3.jpg": "cannot read the file: not a regular file (a character device)",
        "a_4.jpg": "cannot read the file: a symlink loop",
        "a_5.jpg": "cannot read the file: a symlink to a missing file",
        "a_6.jpg": "cannot read the file: 6,442,450,944 bytes is over the 1,048,576-byte limit "
        "(limits.max_file_mib)",
    }
    assert [image.issues for image in evaluation.images[1:]] == [["unreadable"]] * 5


def test_unreadable_image_keeps_the_hash_of_its_bytes(tmp_path):
    good = jpeg_bytes(photo(1))
    truncated = good[:4000]
    images = by_name(evaluate(tmp_path, {"a_1.jpg": truncated}))

    assert images["a_1.jpg"].sha256 == hashlib.sha256(truncated).hexdigest()


def test_numbers_follow_filename_order_even_around_an_unreadable_file(tmp_path):
    folder = tmp_path / "actor" / "training_data"
    names = [f"actor_{number}.jpg" for number in range(1, 12)]
    write_files(folder, {name: photo(number, side=300) for number, name in enumerate(names)})
    (folder / "actor_3.jpg").write_bytes(b"\xff\xd8\xff broken")
    listed = list_training_images(Actor("actor", tmp_path / "actor"), None)
    shuffled = random.Random(4).sample(listed, len(listed))

    evaluation = evaluate_actor(
        shuffled, Config(), OneStyleBackend(PHOTO), EvaluationCache(tmp_path / "cache")
    )

    assert [(image.number, image.filename) for image in evaluation.images] == [
        (number, f"actor_{number}.jpg") for number in range(1, 12)
    ]
    assert evaluation.images[2].issues == ["unreadable"]
    assert sorted(evaluation.thumbnails) == [n for n in range(1, 12) if n != 3]


def test_decompression_bomb_is_refused_from_its_header_without_allocating_it(tmp_path):
    folder = tmp_path / "training_data"
    folder.mkdir()
    (folder / "a_1.png").write_bytes(png_header_only(100_000, 100_000))  # Pillow's own limit
    (folder / "a_2.png").write_bytes(png_header_only(9_000, 9_000))  # 81 MP: over our 64 MP cap
    photo(1).save(folder / "a_3.jpg")
    # VmHWM is this process's own peak: ru_maxrss would also count the test runner's memory
    # (Linux carries it over a fork and exec), which grows once a test has loaded a model.
    script = f"""
import json
from pathlib import Path
from training_data.config import Config
from training_data.dataset import TrainingImage
from training_data.evaluation import EvaluationCache, LocalBackend, evaluate_actor
folder = Path({str(folder)!r})
images = [TrainingImage(n, name, folder / name, {{"type": "photorealistic"}})
          for n, name in enumerate(["a_1.png", "a_2.png", "a_3.jpg"], start=1)]
result = evaluate_actor(images, Config(), LocalBackend(Config().quality),
                        EvaluationCache(folder.parent / "cache"))
status = Path("/proc/self/status").read_text().split("VmHWM:")[1].split()
print(json.dumps({{"images": [image.to_dict() for image in result.images],
                  "peak_kib": int(status[0])}}))
"""
    finished = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(finished.stdout)
    first, second, third = report["images"]

    for bomb in (first, second):
        assert bomb["issues"] == ["unreadable"]
        assert "decompression bomb" in bomb["measurements"]["error"]
    assert first["measurements"]["error"] == (
        "decompression bomb refused: 10,000,000,000 pixels is over the 64,000,000-pixel limit"
    )
    assert "9000x9000" in second["measurements"]["error"]
    assert third["issues"] == []
    # 100k x 100k RGB would be 30 GB, 9000 x 9000 243 MB; Python, Pillow and a photo fit in 150.
    assert report["peak_kib"] < 150 * 1024, report["peak_kib"]
    assert "Warning" not in finished.stderr


# --- quality defects ---------------------------------------------------------------------------


def test_small_image_is_too_small_and_unusable(tmp_path):
    images = by_name(evaluate(tmp_path, {"a_1.jpg": photo(1, side=64), "a_2.jpg": photo(2)}))

    assert "too_small" in images["a_1.jpg"].issues
    assert images["a_1.jpg"].unusable
    assert images["a_1.jpg"].quality_score <= 3
    assert (images["a_1.jpg"].width, images["a_1.jpg"].height) == (64, 64)
    assert "too_small" not in images["a_2.jpg"].issues


def test_heavily_blurred_copy_is_blurry_and_the_sharp_original_is_not(tmp_path):
    sharp = photo(3, side=1024)
    blurred = sharp.filter(ImageFilter.GaussianBlur(8))
    images = by_name(evaluate(tmp_path, {"a_1.jpg": sharp, "a_2.jpg": blurred}))

    assert "blurry" not in images["a_1.jpg"].issues
    assert "blurry" in images["a_2.jpg"].issues
    assert images["a_2.jpg"].quality_score <= 4 < images["a_1.jpg"].quality_score
    assert images["a_2.jpg"].measurements["sharpness"] < images["a_1.jpg"].measurements["sharpness"]


def test_under_and_over_exposed_photos_are_too_dark_and_too_bright(tmp_path):
    normal = photo(5)
    files = {
        "a_1.jpg": normal,
        "a_2.jpg": ImageEnhance.Brightness(normal).enhance(0.2),
        "a_3.jpg": ImageEnhance.Brightness(normal).enhance(4.0),
    }
    images = by_name(evaluate(tmp_path, files))

    assert not {"too_dark", "too_bright"} & set(images["a_1.jpg"].issues)
    assert "too_dark" in images["a_2.jpg"].issues
    assert "too_bright" in images["a_3.jpg"].issues
    for name in ("a_2.jpg", "a_3.jpg"):
        assert images[name].quality_score <= 5 < images["a_1.jpg"].quality_score


def test_white_paper_of_an_ink_drawing_is_not_over_exposure(tmp_path):
    drawing = Image.new("RGB", (512, 512), "white")
    draw = ImageDraw.Draw(drawing)
    rng = random.Random(2)
    for _ in range(30):
        points = [(rng.randrange(512), rng.randrange(512)) for _ in range(2)]
        draw.line(points, fill="black", width=3)
    images = by_name(evaluate(tmp_path, {"a_1.png": drawing}, types={"a_1.png": BW}))

    assert images["a_1.png"].measurements["luminance_mean"] > QualityConfig().bright_threshold
    assert images["a_1.png"].issues == []


def test_uniform_image_is_low_information_not_blurry(tmp_path):
    uniform = Image.new("RGB", (512, 512), (120, 130, 140))
    images = by_name(evaluate(tmp_path, {"a_1.jpg": uniform, "a_2.jpg": photo(6)}))

    assert images["a_1.jpg"].issues == ["low_information"]
    assert images["a_1.jpg"].quality_score == 1
    assert "low_information" not in images["a_2.jpg"].issues


def test_sharpness_filter_clips_like_pillows_eight_bit_filter():
    """The Laplacian is filtered as 32-bit integers for speed: the pixels must be the 8-bit
    filter's, saturated at both ends (hard ink edges), or every cached sharpness would shift."""
    from training_data.checks import LAPLACIAN, laplacian

    rng = random.Random(3)
    ink = Image.new("L", (97, 61), 255)
    draw = ImageDraw.Draw(ink)
    for _ in range(40):
        x, y = rng.randrange(97), rng.randrange(61)
        draw.line((x, y, x + rng.randrange(-20, 20), y + rng.randrange(-20, 20)), fill=0)
    noisy = ImageChops.add(photo(4, side=97).convert("L"), Image.effect_noise((97, 97), 60), 2)
    for grey in (ink, noisy, Image.new("L", (3, 3), 7)):
        expected = grey.filter(LAPLACIAN)
        assert laplacian(grey).tobytes() == expected.tobytes()
    assert ink.filter(LAPLACIAN).getextrema() == (0, 255)


def test_well_made_photo_has_no_issue_a_high_score_and_rounded_measurements(tmp_path):
    images = by_name(evaluate(tmp_path, {"a_1.jpg": photo(7, side=1024)}))
    image = images["a_1.jpg"]

    assert image.issues == []
    assert image.quality_score >= 9
    assert (image.width, image.height) == (1024, 1024)
    for name in ("sharpness", "luminance_mean", "luminance_std", "entropy"):
        value = image.measurements[name]
        assert isinstance(value, float) and value == round(value, 2), name
    assert image.measurements["type_source"] == "manifest"


def test_quality_settings_change_the_verdict(tmp_path):
    files = {"a_1.jpg": photo(8, side=1024).filter(ImageFilter.GaussianBlur(3))}
    default = by_name(evaluate(tmp_path / "default", files))
    strict_quality = replace(QualityConfig(), blur_threshold=40.0, min_side=2000)
    strict = by_name(evaluate(tmp_path / "strict", files, config=Config(quality=strict_quality)))

    assert default["a_1.jpg"].issues == []
    assert strict["a_1.jpg"].issues == ["too_small", "blurry"]


# --- duplicates --------------------------------------------------------------------------------


def test_recompressed_and_resized_copies_are_duplicates_of_the_original(tmp_path):
    original = photo(9, side=1024)
    resized = original.resize((900, 900), Image.Resampling.LANCZOS)
    files = {
        "a_1.png": original,
        "a_2.jpg": jpeg_bytes(original, quality=60),
        "a_3.jpg": jpeg_bytes(resized, quality=85),
        "a_4.jpg": photo(10, side=1024),
    }
    images = by_name(evaluate(tmp_path, files))

    assert images["a_1.png"].issues == []
    for copy in ("a_2.jpg", "a_3.jpg"):
        assert images[copy].issues == ["duplicate"], images[copy]
        assert images[copy].duplicate_of == "a_1.png"
        assert images[copy].unusable
    assert images["a_4.jpg"].issues == []
    assert images["a_4.jpg"].duplicate_of is None


def test_best_scored_copy_stays_even_when_it_comes_later(tmp_path):
    original = photo(11, side=1024)
    small = original.resize((300, 300), Image.Resampling.LANCZOS)
    images = by_name(evaluate(tmp_path, {"a_1.jpg": small, "a_2.jpg": original}))

    assert images["a_1.jpg"].quality_score < images["a_2.jpg"].quality_score
    assert images["a_1.jpg"].duplicate_of == "a_2.jpg"
    assert images["a_2.jpg"].issues == []


def test_exact_copies_with_equal_scores_keep_the_lower_number(tmp_path):
    data = jpeg_bytes(photo(12))
    images = by_name(evaluate(tmp_path, {"a_1.jpg": data, "a_2.jpg": data, "a_3.jpg": data}))

    assert images["a_1.jpg"].issues == []
    assert images["a_2.jpg"].duplicate_of == "a_1.jpg"
    assert images["a_3.jpg"].duplicate_of == "a_1.jpg"


def test_two_photos_of_one_person_in_similar_poses_are_not_duplicates(tmp_path):
    files = {f"a_{shot}.jpg": portrait(person=1, shot=shot) for shot in range(1, 5)}
    images = by_name(evaluate(tmp_path, files))

    assert [image.issues for image in images.values()] == [[]] * 4


def test_grey_copy_of_a_colour_drawing_is_not_its_duplicate(tmp_path):
    """Same luminance everywhere, so only the colour layout tells them apart (same category)."""
    drawing = colour_drawing(13)
    files = {"a_1.png": drawing, "a_2.png": ImageOps.grayscale(drawing).convert("RGB")}
    images = by_name(evaluate(tmp_path, files, types=dict.fromkeys(files, COLOR)))

    assert images["a_1.png"].issues == []
    assert images["a_2.png"].issues == []


def test_near_copies_in_different_categories_are_not_duplicates_but_exact_copies_are(tmp_path):
    original = photo(14)
    files = {
        "a_1.png": original,
        "a_2.jpg": jpeg_bytes(original, quality=70),
        "a_3.png": original,
    }
    types = {"a_1.png": PHOTO, "a_2.jpg": COLOR, "a_3.png": BW}
    images = by_name(evaluate(tmp_path, files, types=types))

    assert images["a_2.jpg"].issues == []
    assert images["a_3.png"].duplicate_of == "a_1.png"


# --- categories --------------------------------------------------------------------------------


def test_manifest_type_overrides_the_backend_and_quality_is_still_judged(tmp_path):
    files = {"a_1.jpg": photo(15), "a_2.jpg": ImageEnhance.Brightness(photo(16)).enhance(0.2)}
    types = {"a_1.jpg": BW, "a_2.jpg": PHOTO}
    folder = tmp_path / "training_data"
    write_files(folder, files)
    images = training_images(folder, files, types)
    images.append(TrainingImage(3, "a_3.jpg", folder / "a_3.jpg", {"type": "sketch"}))
    photo(17).save(folder / "a_3.jpg")
    cache = EvaluationCache(tmp_path / "cache")

    by_backend = by_name(evaluate_actor(images, Config(), OneStyleBackend(COLOR), cache))
    local = by_name(evaluate_actor(images[:2], Config(), LocalBackend(QualityConfig()), cache))

    assert by_backend["a_1.jpg"].type == BW
    assert by_backend["a_1.jpg"].measurements["type_source"] == "manifest"
    assert by_backend["a_3.jpg"].type == COLOR  # "sketch" is not a configured category
    assert by_backend["a_3.jpg"].measurements["type_source"] == "evaluator"
    assert local["a_1.jpg"].type == BW
    assert local["a_2.jpg"].type == PHOTO
    assert "too_dark" in local["a_2.jpg"].issues


def test_untyped_image_gets_the_style_classifier_category(tmp_path):
    pytest.importorskip("training_data.style")
    folder = tmp_path / "training_data"
    write_files(folder, {"a_1.jpg": photo(18)})
    image = TrainingImage(1, "a_1.jpg", folder / "a_1.jpg", None)

    evaluation = evaluate_actor(
        [image], Config(), LocalBackend(QualityConfig()), EvaluationCache(tmp_path / "cache")
    )

    result = evaluation.images[0]
    assert result.type in (PHOTO, BW, COLOR)
    assert isinstance(result.measurements["style"], dict)
    assert result.measurements["type_source"] == "evaluator"


def test_backend_that_forgets_an_image_fails_the_actor(tmp_path):
    with pytest.raises(ActorError, match=r"gave no verdict for a_2\.jpg"):
        evaluate(
            tmp_path,
            {"a_1.jpg": photo(19), "a_2.jpg": photo(20)},
            backend=OneStyleBackend(PHOTO, skip=("a_2.jpg",)),
        )


def test_backend_that_gives_no_category_fails_the_actor(tmp_path):
    with pytest.raises(ActorError, match=r"gave a_1\.jpg no category"):
        evaluate(tmp_path, {"a_1.jpg": photo(19)}, backend=OneStyleBackend(""))


# --- decoding details --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "working_size"), [((1000, 1500), (171, 256)), ((1600, 900), (256, 144))]
)
def test_tall_and_wide_jpegs_get_the_pixels_of_a_full_decode_box_averaged(size, working_size):
    """Draft mode is asked for the working size itself (a portrait decodes at 1/4 scale, not 1/2):
    the working image must still be what a full decode box-averaged to that size gives."""
    picture = photo(23, side=max(size)).crop((0, 0, *size))
    working, width, height = decode_working_image(jpeg_bytes(picture, quality=92))

    assert (width, height) == size
    assert working.size == working_size
    reference = picture.resize(working_size, Image.Resampling.BOX)
    difference = ImageChops.difference(working, reference).convert("L")
    assert (
        sum(i * n for i, n in enumerate(difference.histogram()))
        / difference.width
        / difference.height
        < 3
    )


def test_backend_sees_a_small_working_image_and_thumbnails_are_made_from_it(tmp_path):
    files = {"a_1.jpg": photo(21, side=1500), "a_2.png": photo(22, side=700)}
    evaluation = evaluate(tmp_path, files, backend=OneStyleBackend(PHOTO))

    for image in evaluation.images:
        assert image.measurements["seen_side"] == WORKING_SIDE
        assert max(evaluation.thumbnails[image.number].size) == WORKING_SIDE
        assert evaluation.thumbnails[image.number].mode == "RGB"
    assert [(image.width, image.height) for image in evaluation.images] == [
        (1500, 1500),
        (700, 700),
    ]


def test_exif_rotation_gives_the_upright_size(tmp_path):
    landscape = photo(23).resize((600, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    folder = tmp_path / "training_data"
    folder.mkdir()
    landscape.save(folder / "a_1.jpg", exif=exif)
    files = {"a_1.jpg": None}

    evaluation = evaluate(tmp_path, files)

    assert (evaluation.images[0].width, evaluation.images[0].height) == (400, 600)
    assert evaluation.thumbnails[1].size[0] < evaluation.thumbnails[1].size[1]


def test_sixteen_bit_and_transparent_pngs_keep_their_tones(tmp_path):
    grey = Image.linear_gradient("L").resize((400, 400))
    sixteen_bit = grey.point(lambda value: value * 257, "I").convert("I;16")
    transparent = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    ImageDraw.Draw(transparent).rectangle((100, 100, 300, 300), fill=(200, 30, 30, 255))
    evaluation = evaluate(tmp_path, {"a_1.png": sixteen_bit, "a_2.png": transparent})
    images = by_name(evaluation)

    assert 110 < images["a_1.png"].measurements["luminance_mean"] < 145
    assert evaluation.thumbnails[2].getpixel((5, 5)) == (255, 255, 255)  # background, not black
    assert images["a_2.png"].issues == []


# --- cache -------------------------------------------------------------------------------------


def actor_with_images(tmp_path: Path) -> tuple[list[TrainingImage], Path]:
    folder = tmp_path / "training_data"
    files = {f"a_{number}.jpg": photo(30 + number) for number in range(1, 5)}
    files["a_5.jpg"] = b"not an image"
    write_files(folder, files)
    return training_images(folder, files), tmp_path / "cache"


def test_second_run_with_the_same_settings_judges_nothing_and_agrees(tmp_path):
    images, cache_folder = actor_with_images(tmp_path)
    first_backend, second_backend = (
        CountingBackend(QualityConfig()),
        CountingBackend(QualityConfig()),
    )

    first = evaluate_actor(images, Config(), first_backend, EvaluationCache(cache_folder))
    second = evaluate_actor(images, Config(), second_backend, EvaluationCache(cache_folder))

    assert first_backend.judged == [f"a_{number}.jpg" for number in range(1, 5)]
    assert second_backend.judged == []
    assert (first.evaluator["judged"], first.evaluator["cache_hits"]) == (4, 0)
    assert (second.evaluator["judged"], second.evaluator["cache_hits"]) == (0, 4)
    assert [image.to_dict() for image in second.images] == [
        image.to_dict() for image in first.images
    ]
    assert sorted(second.thumbnails) == [1, 2, 3, 4]


def test_changed_quality_settings_or_categories_miss_the_cache(tmp_path):
    images, cache_folder = actor_with_images(tmp_path)
    evaluate_actor(
        images, Config(), CountingBackend(QualityConfig()), EvaluationCache(cache_folder)
    )
    changed_quality = Config(quality=replace(QualityConfig(), blur_threshold=12.0))
    changed_mix = Config()
    changed_mix = replace(
        changed_mix, target=replace(changed_mix.target, mix={PHOTO: 0.5, BW: 0.5})
    )

    for config in (changed_quality, changed_mix):
        backend = CountingBackend(config.quality)
        evaluate_actor(images, config, backend, EvaluationCache(cache_folder))
        assert len(backend.judged) == 4


def cache_entries(cache_folder: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(cache_folder / "evaluations.sqlite3")) as database:
        return dict(database.execute("SELECT key, verdict FROM verdicts").fetchall())


def test_corrupt_cache_entry_is_a_miss_and_is_rewritten(tmp_path):
    images, cache_folder = actor_with_images(tmp_path)
    evaluate_actor(
        images, Config(), CountingBackend(QualityConfig()), EvaluationCache(cache_folder)
    )
    keys = sorted(cache_entries(cache_folder))
    assert len(keys) == 4
    torn = '{"judgement": {"type": "photorealistic", "quality_'
    foreign = json.dumps({"judgement": {"type": "x", "quality_score": 99}})
    with contextlib.closing(sqlite3.connect(cache_folder / "evaluations.sqlite3")) as database:
        database.execute("UPDATE verdicts SET verdict = ? WHERE key = ?", (torn, keys[0]))
        database.execute("UPDATE verdicts SET verdict = ? WHERE key = ?", (foreign, keys[1]))
        database.commit()

    backend = CountingBackend(QualityConfig())
    evaluate_actor(images, Config(), backend, EvaluationCache(cache_folder))
    again = CountingBackend(QualityConfig())
    evaluate_actor(images, Config(), again, EvaluationCache(cache_folder))

    assert len(backend.judged) == 2
    assert again.judged == []


@pytest.mark.parametrize("damage", ["not_a_database", "damaged_pages"])
def test_damaged_cache_database_is_moved_aside_kept_and_a_fresh_one_started(
    tmp_path, caplog, damage
):
    images, cache_folder = actor_with_images(tmp_path)
    evaluate_actor(
        images, Config(), CountingBackend(QualityConfig()), EvaluationCache(cache_folder)
    )
    database = cache_folder / "evaluations.sqlite3"
    if damage == "not_a_database":
        database.write_bytes(b"this is a caption, not a database\n" * 200)
    else:
        data = bytearray(database.read_bytes())
        data[100:] = bytes(len(data) - 100)  # header kept; schema and verdict pages zeroed
        database.write_bytes(bytes(data))
    damaged = database.read_bytes()

    backend = CountingBackend(QualityConfig())
    with caplog.at_level(logging.WARNING, logger="training_data.evaluation"):
        evaluate_actor(images, Config(), backend, EvaluationCache(cache_folder))
    again = CountingBackend(QualityConfig())
    evaluate_actor(images, Config(), again, EvaluationCache(cache_folder))

    assert len(backend.judged) == 4
    assert again.judged == []
    kept = list(cache_folder.glob("evaluations.sqlite3.corrupt-*"))
    assert [path.read_bytes() for path in kept] == [damaged]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and kept[0].name in warnings[0], warnings
    assert "\n" not in warnings[0]
    assert len(cache_entries(cache_folder)) == 4


def test_cache_waits_for_another_process_writing_instead_of_failing(tmp_path):
    """An --actor-id run may write its verdicts while a batch run writes its own."""
    images, cache_folder = actor_with_images(tmp_path)
    EvaluationCache(cache_folder)
    locked, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        database = sqlite3.connect(cache_folder / "evaluations.sqlite3", isolation_level=None)
        database.execute("BEGIN IMMEDIATE")
        database.execute("INSERT INTO verdicts VALUES ('other', '{}')")
        locked.set()
        release.wait(timeout=30)
        database.execute("COMMIT")
        database.close()

    writer = threading.Thread(target=other_writer)
    writer.start()
    assert locked.wait(timeout=30)
    threading.Timer(0.3, release.set).start()
    try:
        evaluate_actor(
            images, Config(), CountingBackend(QualityConfig()), EvaluationCache(cache_folder)
        )
    finally:
        release.set()
        writer.join()

    assert len(cache_entries(cache_folder)) == 5


def test_cache_that_cannot_be_written_stops_the_run(tmp_path):
    """A file-size limit makes every write past 1 KiB fail, as a full disk would (even for root)."""
    images, cache_folder = actor_with_images(tmp_path)
    EvaluationCache(cache_folder)
    before = cache_entries(cache_folder)
    script = f"""
import resource, signal
from pathlib import Path
from training_data.config import Config
from training_data.dataset import TrainingImage
from training_data.errors import FatalRunError
from training_data.evaluation import EvaluationCache, LocalBackend, evaluate_actor
images = [TrainingImage(n, p.name, p, {{"type": "photorealistic"}})
          for n, p in enumerate(sorted(Path({str(images[0].path.parent)!r}).glob("*")), start=1)]
cache = EvaluationCache(Path({str(cache_folder)!r}))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
try:
    evaluate_actor(images, Config(), LocalBackend(Config().quality), cache)
except FatalRunError as error:
    print(error)
"""
    finished = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )

    assert finished.stdout.startswith("cannot write the evaluation cache "), finished
    assert finished.stdout.count("\n") == 1
    assert cache_entries(cache_folder) == before == {}


def test_evaluator_record_names_backend_settings_and_usage(tmp_path):
    evaluation = evaluate(tmp_path, {"a_1.jpg": photo(40)})

    assert evaluation.evaluator["backend"] == "local"
    assert evaluation.evaluator["settings"]["quality"]["min_side"] == 256
    assert evaluation.evaluator["usage"] == {"images_judged": 1, "learned_stage": 0}


def test_make_backend_follows_the_config():
    local = make_backend(Config())
    assert isinstance(local, LocalBackend) and local.name == "local"
    local_server = replace(Config().evaluator.openai, base_url="http://127.0.0.1:9/v1")
    openai_config = replace(
        Config(), evaluator=replace(Config().evaluator, backend="openai", openai=local_server)
    )
    remote = make_backend(openai_config)
    assert remote.name == "openai"
