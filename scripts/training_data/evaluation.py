"""Evaluation: each image's category, quality score and defects, cached by content.

The shared pipeline (``evaluate_actor``) reads each file once, hashes its bytes, decodes it once at
a small working size, and hands the readable images to a backend that judges style and quality.
It then applies what no backend decides: trusted manifest types, ``unreadable``, ``too_small``
and duplicates (exact copies, near copies by hash and colours, re-crops by feature matching in
recrops.py). Verdicts are cached by image content and evaluator settings.

Decoding. JPEGs decode straight at reduced size (draft mode: the smallest of the 1/2, 1/4 and 1/8
scales that still covers the working size, so a 768x1024 portrait decodes at 1/4 in 4.2 ms rather
than at 1/2 in 6.1 ms), then are box-averaged to the working size; other formats are decoded,
then box-averaged.

Sharpness = 100 x std(Laplacian) / std(luminance) on the central 60% x 60% of the grey working
image (where a portrait's subject is, so a soft background does not flag a sharp face; dividing by
the spread makes it independent of contrast). Measured on 1024-px test photos: sharp photos 30-50,
Gaussian blur radius 4 px 10-17, radius 8 px 4.5-8.5, soft watercolours 12-13, ink line art ~130.
At 128 px a heavily blurred photo no longer reads as blurry, so the statistics stay at 256 px.

Duplicates. A 128-bit difference hash (9x8 and 8x9 grey grids) plus a 4x4 colour layout. Measured:
re-encoded (quality 60) or resized copies 0-5 bits / <= 0.5 levels apart; different photos of one
person in a similar pose 23-46 bits; the grey copy of a colour drawing 0-1 bits but 17-28 levels,
which is why the colour layout must agree too (at most 6 levels on average).

Cache. One SQLite database (rollback journal, not WAL, so it works on network filesystems; no
fsync: a killed run loses nothing, an OS crash can at worst damage it, which is handled by renaming
it aside, never a wrong hit, since a key and its verdict are one row). A writer waits up to 60 s
for another's write.

Speed (scripts/bench_evaluation.py, 60 photo-like 1024-px JPEGs of 269 KiB on average, one core,
best of interleaved rounds): full Pillow decode 9.93 ms/image; reduced decode 5.18 ms;
evaluate_actor with the local backend 6.96 ms (1.34x the reduced decode; 1.34-1.36x over four
runs), category from the manifest 6.45 ms (1.23-1.25x), every verdict from the cache 5.55 ms
(1.07-1.08x). Beyond the decode, per image: the style classifier 0.4-0.8 ms, the grey image and its
histogram 0.14 ms (made once, read by the statistics and the classifier), the statistics 0.3 ms
(mostly the 3x3 Laplacian), the fingerprint 0.25 ms, SHA-256 0.23 ms, the cache and JSON ~0.1 ms.
So a dry-run costs less than decoding every image once at full size. The aim of 1.3x is not met:
what is left is a dozen small Pillow operations per image, each paying a fixed cost of 10-100 us on
a 256-px image, plus SHA-256; going lower would take numpy or fewer measurements.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import sqlite3
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from PIL import (  # the plugins of READABLE_FORMATS: Image.open(formats=...) needs them registered
    BmpImagePlugin,  # noqa: F401
    GifImagePlugin,  # noqa: F401
    Image,
    JpegImagePlugin,  # noqa: F401
    PngImagePlugin,  # noqa: F401
    UnidentifiedImageError,
    WebPImagePlugin,  # noqa: F401
)

from training_data.checks import (
    ActorImages,
    Check,
    Finding,
    ImageView,
    capped,
    mean_and_std,
    sharpness,
)
from training_data.config import Config, NsfwConfig, QualityConfig, StyleConfig, SubjectConfig
from training_data.dataset import TrainingImage
from training_data.errors import ActorError, FatalRunError, is_disk_full, one_line
from training_data.files import DEFAULT_MAX_FILE_BYTES, UnreadableFile, read_regular_file
from training_data.subject import SUBJECT_CHECK

log = logging.getLogger(__name__)

ISSUE_NAMES = (
    "unreadable",
    "too_small",
    "blurry",
    "too_dark",
    "too_bright",
    "low_information",
    "duplicate",
    "nsfw",
)
UNUSABLE_ISSUES = frozenset({"unreadable", "duplicate", "too_small"})  # in every category
LOCAL_MODEL_ISSUES = frozenset({"nsfw"})  # open_nsfw's score: never asked of a vision model


@dataclass
class ImageEvaluation:
    """The verdict on one image, as written to ``<actor>_evaluation.json``."""

    number: int
    filename: str
    type: str | None
    quality_score: int
    issues: list[str]
    width: int | None
    height: int | None
    sha256: str
    duplicate_of: str | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    # Issues the config makes unusable on top of UNUSABLE_ISSUES (`nsfw` with [nsfw] unusable).
    configured_unusable: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def unusable(self) -> bool:
        return bool(self.unusable_issues())

    def unusable_issues(self) -> list[str]:
        blocking = category_unusable(self.type) | self.configured_unusable
        return [issue for issue in self.issues if issue in blocking]

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        del document["configured_unusable"]
        return document


@dataclass
class ActorEvaluation:
    """All images of one actor, their review thumbnails, and what the evaluator spent."""

    images: list[ImageEvaluation]
    thumbnails: dict[int, Image.Image]
    evaluator: dict[str, Any]


@dataclass
class ImageSample:
    """What a backend sees of one readable image: decoded once, at a small working size."""

    number: int
    filename: str
    path: Path
    working: Image.Image
    width: int
    height: int
    trusted_type: str | None
    checks_off: frozenset[str] = frozenset()  # local checks the actor's manifest turned off


@dataclass
class Judgement:
    """A backend's verdict; its issues never hold `unreadable` or `duplicate` (the pipeline's)."""

    type: str
    quality_score: int
    issues: list[str]
    measurements: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


class EvaluationBackend(Protocol):
    """Judges style, quality and defects; the shared pipeline does hashing and duplicates."""

    name: str

    def settings(self) -> dict[str, Any]:
        """What changes this backend's verdicts; part of the cache key."""
        ...

    def judge(
        self, samples: list[ImageSample], categories: tuple[str, ...]
    ) -> dict[int, Judgement]:
        """One judgement per sample, keyed by its number."""
        ...

    def usage(self) -> dict[str, Any]:
        """What this backend has spent so far in this run (requests, tokens), for the summary."""
        ...


WORKING_SIDE = 256
MAX_PIXELS = 64_000_000
DECODE_BLOCK_MAX = 8 * 1024 * 1024
READABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")  # JPEG includes multi-picture (MPO)
NEAR_DUPLICATE_COLOUR_DISTANCE = 6.0
LOCAL_BACKEND_VERSION = 3
PHOTO_CATEGORY = "photorealistic"
MID_GREY = 128
FULL_TONAL_RANGE = 160
FULL_ENTROPY_BITS = 4.0
SCORE_CAPS = {"low_information": 1, "too_small": 3, "blurry": 4, "too_dark": 5, "too_bright": 5}
EXIF_ORIENTATION = 0x0112
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
PIPELINE_ISSUES = frozenset({"unreadable", "duplicate"})
CACHE_DATABASE_NAME = "evaluations.sqlite3"
CACHE_BUSY_TIMEOUT_SECONDS = 60.0
CACHE_KEYS_PER_QUERY = 500  # under SQLite's oldest limit of 999 parameters
# What json.dumps(sort_keys=True) writes, without building an encoder per verdict (half its cost).
_VERDICT_ENCODER = json.JSONEncoder(sort_keys=True)


# --- reading and decoding -------------------------------------------------------------------


class UnreadableImage(Exception):
    """Why an image cannot be used, in one line; ``sha256`` is set when the bytes could be read."""

    def __init__(self, reason: str, sha256: str = "") -> None:
        super().__init__(reason)
        self.sha256 = sha256


def load_sample(
    image: TrainingImage, categories: tuple[str, ...], max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> tuple[str, ImageSample]:
    """Read the file once: its sha256 and its decoded working image come from the same bytes.

    Only a regular file of at most ``max_bytes`` is read (files.read_regular_file).
    """
    path = Path(image.path)
    try:
        data = read_regular_file(path, max_bytes)
    except FileNotFoundError:
        raise UnreadableImage("file not found") from None
    except UnreadableFile as error:
        raise UnreadableImage(f"cannot read the file: {error}") from None
    except OSError as error:
        raise UnreadableImage(f"cannot read the file: {error.strerror or error}") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        working, width, height = decode_working_image(data)
    except UnreadableImage as error:
        raise UnreadableImage(str(error), digest) from None
    sample = ImageSample(
        number=image.number,
        filename=image.filename,
        path=path,
        working=working,
        width=width,
        height=height,
        trusted_type=image.trusted_type(categories),
    )
    return digest, sample


def decode_working_image(data: bytes) -> tuple[Image.Image, int, int]:
    """An RGB image whose longest side is at most WORKING_SIDE, and the full (upright) size.

    The size is checked from the header before any pixel is decoded, so a decompression bomb is
    refused without allocating its pixels. JPEGs decode straight at reduced size (draft mode).
    """
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 megapixels; MAX_PIXELS below refuses those anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
    except Image.DecompressionBombError as error:
        raise UnreadableImage(_over_pixel_limit(_pillow_pixel_count(error))) from None
    except UnidentifiedImageError:
        raise UnreadableImage("not a JPEG, PNG, WebP, GIF or BMP image") from None
    except Exception as error:  # Pillow's plugins raise many types on malformed headers
        raise UnreadableImage(f"broken image header: {one_line(error)}") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise UnreadableImage(_over_pixel_limit(f"{width}x{height} pixels"))
        # The bytes are in memory: one decoder call instead of one per 64 KiB (2% of a decode),
        # in blocks of at most DECODE_BLOCK_MAX so a huge file is not copied whole once more.
        image.decodermaxblock = min(max(len(data), image.decodermaxblock), DECODE_BLOCK_MAX)
        try:
            working, orientation = _decode_small(image)
        except Exception as error:  # Pillow's decoders raise many types on corrupt data
            raise UnreadableImage(f"truncated or corrupt image data: {one_line(error)}") from None
    if orientation in ORIENTATION_TRANSPOSE:
        working = working.transpose(ORIENTATION_TRANSPOSE[orientation])
        if orientation >= 5:
            width, height = height, width
    return working, width, height


def _over_pixel_limit(size: str) -> str:
    return f"decompression bomb refused: {size} is over the {MAX_PIXELS:,}-pixel limit"


def _pillow_pixel_count(error: Image.DecompressionBombError) -> str:
    """Pillow refuses huge images itself, before we see their size; its message has the count."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    return f"{int(found.group(1)):,} pixels" if found else "the image"


def _decode_small(image: Image.Image) -> tuple[Image.Image, int | None]:
    # Draft mode decodes a JPEG at the smallest 1/2, 1/4 or 1/8 scale that is at least this size:
    # asking for the working size itself (not a square) lets a tall or wide image scale further.
    image.draft("RGB", _working_size(image.size))
    image.load()  # raises on a truncated file: LOAD_TRUNCATED_IMAGES would show grey instead
    orientation = image.getexif().get(EXIF_ORIENTATION)
    working = _plain_mode(image)
    if max(working.size) > WORKING_SIDE:
        working = working.resize(_working_size(working.size), Image.Resampling.BOX)
    if working.mode in ALPHA_MODES:
        background = Image.new("RGBA", working.size, (255, 255, 255, 255))
        working = Image.alpha_composite(background, working.convert("RGBA"))
    return working.convert("RGB") if working.mode != "RGB" else working, orientation


def _working_size(size: tuple[int, int]) -> tuple[int, int]:
    """``size`` scaled so that its longest side is WORKING_SIDE (never below 1 px)."""
    width, height = size
    scale = WORKING_SIDE / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _plain_mode(image: Image.Image) -> Image.Image:
    """A mode that resizes well: 16-bit grey keeps its top byte instead of clipping to white."""
    if image.mode in ("RGB", "L", "RGBA", "LA"):
        return image
    if image.mode.startswith("I"):
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L")
    if image.mode == "PA" or "transparency" in image.info:
        return image.convert("RGBA")
    return image.convert("RGB")


# --- perceptual fingerprints and duplicates ---------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """A 128-bit luminance difference hash plus a 4x4 colour layout (48 bytes of RGB means).

    The hash alone would call a grey copy of a colour drawing a duplicate; the colour layout is
    what tells them apart.
    """

    gradient_bits: int
    colour_layout: bytes

    def matches(self, other: Fingerprint, max_distance: int) -> bool:
        """Hash bits apart <= max_distance and colour layouts <= NEAR_DUPLICATE_COLOUR_DISTANCE."""
        hash_distance = (self.gradient_bits ^ other.gradient_bits).bit_count()
        if hash_distance > max_distance:
            return False
        return self.colour_distance(other) <= NEAR_DUPLICATE_COLOUR_DISTANCE

    def colour_distance(self, other: Fingerprint) -> float:
        """Mean absolute difference of the layouts, in 0-255 levels."""
        pairs = zip(self.colour_layout, other.colour_layout, strict=True)
        return sum(abs(mine - theirs) for mine, theirs in pairs) / len(self.colour_layout)

    def to_json(self) -> dict[str, str]:
        return {"dhash": f"{self.gradient_bits:032x}", "colour": self.colour_layout.hex()}

    @classmethod
    def from_json(cls, document: Any) -> Fingerprint:
        """Raises ValueError, TypeError or KeyError on anything but what ``to_json`` wrote."""
        colour_layout = bytes.fromhex(document["colour"])
        if len(colour_layout) != 48:
            raise ValueError("colour layout is not 4x4 RGB")
        return cls(int(document["dhash"], 16), colour_layout)


def fingerprint_of(working: Image.Image) -> Fingerprint:
    """Difference hash of 9x8 and 8x9 grey thumbnails (brighter-than-neighbour bits)."""
    small = _reduced(working, 32)
    if small.size != (32, 32):
        small = small.resize((32, 32), Image.Resampling.BOX)
    grey = small.convert("L")
    across = _rising(grey.resize((9, 8), Image.Resampling.BOX).tobytes(), 9, 1)
    down = _rising(grey.resize((8, 9), Image.Resampling.BOX).tobytes(), 8, 8)
    colour_layout = small.resize((4, 4), Image.Resampling.BOX).tobytes()
    return Fingerprint((across << 64) | down, colour_layout)


def _rising(pixels: bytes, width: int, step: int) -> int:
    """64 bits, set where the pixel ``step`` bytes on is brighter, row by row, first bit highest.

    On the 72 bytes in Python: cheaper than the eight Pillow calls of crops and a subtraction.
    """
    bits = 0
    for row in range(8):
        start = row * width
        for index in range(start, start + 8):
            bits = (bits << 1) | (pixels[index + step] > pixels[index])
    return bits


def find_duplicates(
    images: Sequence[ImageEvaluation],
    fingerprints: Mapping[int, Fingerprint],
    max_distance: int,
    same_framing: Callable[[int, int], bool] | None = None,
) -> dict[int, str]:
    """Number of each duplicate -> filename of the image kept in its place.

    Best to keep first (``keep_rank``), each image is compared with the images kept so far: the
    same bytes anywhere, or within the same category a near match (hash and colours) or, when
    ``same_framing`` is given, a re-crop or re-framing of the same photo (by image numbers).
    """
    kept: list[ImageEvaluation] = []
    duplicate_of: dict[int, str] = {}
    candidates = [image for image in images if image.number in fingerprints]
    for image in sorted(candidates, key=keep_rank):
        original = next(
            (
                other
                for other in kept
                if _same_picture(image, other, fingerprints, max_distance, same_framing)
            ),
            None,
        )
        if original is None:
            kept.append(image)
        else:
            duplicate_of[image.number] = original.filename
    return duplicate_of


FACE_ISSUES = frozenset(SUBJECT_CHECK.issues)
FACE_HEIGHT_STEP = 0.05  # face heights closer than this count as equal; sharpness decides


def keep_rank(image: ImageEvaluation) -> tuple[float, ...]:
    """Sort key, the image to keep first: a usable one (a too-small copy must not be kept in
    place of a usable one, or both would go), then the one that shows the face best when the
    subject checks measured faces (fewest face issues, then the larger face, then the sharper),
    then the higher quality score, the more pixels, and last the lower number.

    Of a wide shot and a close-up cut from it, the close-up shows the face best; without face
    measurements the larger file of equal quality is kept, not whichever came first.
    """
    unusable = len(image.unusable_issues())
    face = image.measurements.get("face")
    face_issues = len(FACE_ISSUES.intersection(image.issues))
    height, sharpness = 0.0, 0.0
    if isinstance(face, dict) and _number(face.get("height_ratio")):
        height = math.floor(face["height_ratio"] / FACE_HEIGHT_STEP)
        sharpness = face["sharpness"] if _number(face.get("sharpness")) else 0.0
    pixels = (image.width or 0) * (image.height or 0)
    return (unusable, face_issues, -height, -sharpness, -image.quality_score, -pixels, image.number)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _same_picture(
    image: ImageEvaluation,
    other: ImageEvaluation,
    fingerprints: Mapping[int, Fingerprint],
    max_distance: int,
    same_framing: Callable[[int, int], bool] | None,
) -> bool:
    if image.sha256 == other.sha256:
        return True
    if image.type != other.type:
        return False
    if fingerprints[image.number].matches(fingerprints[other.number], max_distance):
        return True
    return same_framing is not None and same_framing(image.number, other.number)


# --- the local backend ------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelStatistics:
    """What the local backend measures on the working image (luminance on a 0-255 scale)."""

    sharpness: float  # 100 x Laplacian std / luminance std in the centre (see _sharpness)
    luminance_mean: float
    luminance_std: float
    luminance_p01: int
    luminance_p99: int
    entropy: float  # bits of the luminance histogram, 0-8

    def to_measurements(self) -> dict[str, Any]:
        return {
            "sharpness": round(self.sharpness, 2),
            "luminance_mean": round(self.luminance_mean, 1),
            "luminance_std": round(self.luminance_std, 1),
            "luminance_p01": self.luminance_p01,
            "luminance_p99": self.luminance_p99,
            "entropy": round(self.entropy, 2),
        }


def pixel_statistics(grey: Image.Image, histogram: list[int]) -> PixelStatistics:
    """Of the working image's "L" conversion and its histogram (the style classifier reads both)."""
    mean, std = mean_and_std(histogram)
    p01, p99 = _percentiles(histogram, 0.01, 0.99)
    return PixelStatistics(
        sharpness=_sharpness(grey),
        luminance_mean=mean,
        luminance_std=std,
        luminance_p01=p01,
        luminance_p99=p99,
        entropy=_entropy(histogram),
    )


def quality_issues(
    stats: PixelStatistics, width: int, height: int, category: str, quality: QualityConfig
) -> list[str]:
    """Defects by threshold. A near-uniform image is low_information (and not also blurry). A
    drawing may be mostly paper-white (or ink-black) by design, so it is too bright (dark) only
    when it also has no dark (light) tones at all; for a photo the mean luminance decides.
    """
    photo = category == PHOTO_CATEGORY
    mean = stats.luminance_mean
    issues = []
    if min(width, height) < quality.min_side:
        issues.append("too_small")
    if stats.luminance_std < quality.low_information_threshold:
        issues.append("low_information")
    elif stats.sharpness < quality.blur_threshold:
        issues.append("blurry")
    if mean < quality.dark_threshold and (photo or stats.luminance_p99 < MID_GREY):
        issues.append("too_dark")
    if mean > quality.bright_threshold and (photo or stats.luminance_p01 > MID_GREY):
        issues.append("too_bright")
    return issues


def quality_score(
    stats: PixelStatistics, width: int, height: int, issues: Sequence[str], quality: QualityConfig
) -> int:
    """1 + 9 x (0.40 sharpness + 0.25 tonal range + 0.10 detail + 0.25 resolution), rounded,
    then capped by the worst defect (SCORE_CAPS)."""
    sharpness = _unit((stats.sharpness - quality.blur_threshold) / (3 * quality.blur_threshold))
    tonal_range = _unit((stats.luminance_p99 - stats.luminance_p01) / FULL_TONAL_RANGE)
    detail = _unit(stats.entropy / FULL_ENTROPY_BITS)
    resolution = _unit(min(width, height) / (4 * quality.min_side))
    blend = 0.40 * sharpness + 0.25 * tonal_range + 0.10 * detail + 0.25 * resolution
    score = 1 + math.floor(9 * blend + 0.5)
    return min([score, *(SCORE_CAPS[issue] for issue in issues if issue in SCORE_CAPS)])


def inspect_pixels(view: ImageView, quality: QualityConfig) -> Finding:
    """The frame's statistics, defects and score (the local evaluator's quality check)."""
    stats = pixel_statistics(view.grey, view.histogram)
    issues = quality_issues(stats, view.width, view.height, view.category, quality)
    score = quality_score(stats, view.width, view.height, issues, quality)
    return Finding(issues, stats.to_measurements(), score)


PIXEL_CHECK = Check(
    name="pixels",
    section="quality",
    issues=("too_small", "blurry", "too_dark", "too_bright", "low_information"),
    needs=frozenset({"working", "grey"}),
    inspect=inspect_pixels,
    score_caps=SCORE_CAPS,
)

# The local evaluator's checks, in the order they run: a new check is one more entry.
LOCAL_CHECKS: tuple[Check, ...] = (PIXEL_CHECK, SUBJECT_CHECK)
ALL_ISSUES = tuple(
    dict.fromkeys([*ISSUE_NAMES, *(issue for check in LOCAL_CHECKS for issue in check.issues)])
)
ALL_SCORE_CAPS = {issue: cap for check in LOCAL_CHECKS for issue, cap in check.score_caps.items()}


def category_unusable(category: str | None) -> frozenset[str]:
    """The issues that make an image of ``category`` unusable in every configuration (the plan
    removes it first): UNUSABLE_ISSUES and what the checks declare for the category."""
    issues = set(UNUSABLE_ISSUES)
    for check in LOCAL_CHECKS:
        for issue, categories in check.unusable.items():
            if categories is None or category in categories:
                issues.add(issue)
    return frozenset(issues)


class LocalBackend:
    """Offline and deterministic: the style cascade, then every check of LOCAL_CHECKS."""

    name = "local"

    def __init__(
        self,
        quality: QualityConfig,
        style: StyleConfig | None = None,
        nsfw: NsfwConfig | None = None,
        subject: SubjectConfig | None = None,
        *,
        config: Config | None = None,
    ) -> None:
        """``subject`` None: the subject checks are off (as with ``enabled = false``). Every
        other check's settings come from its section of ``config`` (the defaults without one),
        so a new check needs no change here."""
        self.quality = quality
        self.style = style or StyleConfig()
        self.nsfw = nsfw or NsfwConfig()
        defaults = config or Config()
        self.sections: dict[str, Any] = {
            check.section: getattr(defaults, check.section) for check in LOCAL_CHECKS
        }
        self.sections |= {"quality": quality, "subject": subject or SubjectConfig(enabled=False)}
        self._judged = 0
        self._learned = 0

    def settings(self) -> dict[str, Any]:
        from training_data.style_learned import probe_version

        sections = {name: asdict(section) for name, section in self.sections.items()}
        return {
            "version": LOCAL_BACKEND_VERSION,
            **sections,
            "style": asdict(self.style) | {"probe": probe_version()},
            "nsfw": asdict(self.nsfw),
        }

    def judge(
        self, samples: list[ImageSample], categories: tuple[str, ...]
    ) -> dict[int, Judgement]:
        judgements = {sample.number: self._judge_one(sample) for sample in samples}
        self._judged += len(samples)
        return judgements

    def usage(self) -> dict[str, Any]:
        return {"images_judged": self._judged, "learned_stage": self._learned}

    def judge_as(self, sample: ImageSample, category: str) -> Judgement:
        """Defects and score as if ``category`` were known (decided by another stage, which
        carries over the NSFW score of the image's local pass)."""
        return self._judge_one(sample, category)

    def _judge_one(self, sample: ImageSample, category: str | None = None) -> Judgement:
        # The grey image and its histogram are made once: the checks and the classifier read them.
        view = ImageView(sample.working, sample.width, sample.height, category or "")
        measurements: dict[str, Any] = {}
        if category is None:
            # Imported here so the pixel checks work (and are testable) without the classifier.
            from training_data.style_learned import judge_style

            verdict = judge_style(
                sample.working,
                sample.trusted_type,
                view.grey,
                view.histogram,
                self.style,
                self.nsfw.every_image,
            )
            view.category = verdict.category
            measurements["style"] = verdict.measurements
            self._learned += verdict.measurements["stage"] == "learned"
            nsfw = verdict.nsfw
        else:  # decided by another stage, which keeps the local pass's NSFW score: no 2nd pass
            nsfw = None
        issues: list[str] = []
        scores: list[int] = []
        for check in self.checks(sample.checks_off):
            finding = check.inspect(view, self.sections[check.section])
            issues += finding.issues
            measurements |= finding.measurements
            if finding.score is not None:
                scores.append(finding.score)
        if nsfw is not None:
            measurements["nsfw"] = round(nsfw, 3)
            if nsfw >= self.nsfw.threshold:
                issues.append("nsfw")
        score = capped(min(scores, default=10), issues, SCORE_CAPS)
        return Judgement(view.category, score, issues, measurements)

    def checks(self, off: frozenset[str] = frozenset()) -> list[Check]:
        """The enabled checks, less those an actor's manifest turned ``off``."""
        return [
            check
            for check in LOCAL_CHECKS
            if check.enabled(self.sections[check.section]) and check.name not in off
        ]


def review_actor(
    evaluations: Sequence[ImageEvaluation], config: Config, actor: ActorImages
) -> dict[str, Any]:
    """Every enabled check's review of the actor's set; their summaries by check name."""
    summaries = {}
    for check in LOCAL_CHECKS:
        settings = getattr(config, check.section)
        if (
            check.review is not None
            and check.enabled(settings)
            and check.name not in actor.checks_off
        ):
            summary = check.review(evaluations, settings, actor)
            if summary is not None:
                summaries[check.name] = summary
    for evaluation in evaluations:
        evaluation.issues = _ordered(evaluation.issues)
    return summaries


def _percentiles(histogram: Sequence[int], *shares: float) -> list[int]:
    running = list(itertools.accumulate(histogram))
    return [bisect.bisect_left(running, max(share * running[-1], 1)) for share in shares]


def _entropy(histogram: Sequence[int]) -> float:
    """Bits: log2(N) - sum(n log2 n) / N over the non-empty bins (n log2 n from a table)."""
    total = sum(histogram)
    if total == 0:
        return 0.0
    terms = sum(map(_n_log2_n().__getitem__, histogram))  # a working image's counts fit it
    return max(0.0, math.log2(total) - terms / total)


@functools.cache
def _n_log2_n() -> list[float]:
    """n log2 n for every pixel count a working image can have (0 for 0): 2 MB, built once.

    A list, not a tuple: list.__getitem__ in map() is twice as fast. Never modified.
    """
    return [0.0, *(n * math.log2(n) for n in range(1, WORKING_SIDE * WORKING_SIDE + 1))]


def _sharpness(grey: Image.Image) -> float:
    """The sharpness on the central 60% x 60% of the picture: where a portrait's subject is, so
    a soft background does not make a sharp face blurry (and the filter costs a third)."""
    width, height = grey.size
    margin_x, margin_y = width // 5, height // 5
    return sharpness(grey.crop((margin_x, margin_y, width - margin_x, height - margin_y)))


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """Box-averaged to about ``side`` px on the shorter side; reduce() is the cheapest way."""
    factor = min(image.size) // side
    return image.reduce(factor) if factor > 1 else image


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


# --- the cache ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedVerdict:
    judgement: Judgement
    fingerprint: Fingerprint


def make_cache_folder(folder: Path) -> None:
    """A cache that cannot be created fails every actor alike: stop the run."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if is_disk_full(error):
            raise
        raise FatalRunError(
            f"cannot create the evaluation cache {folder}: {error.strerror or error}"
        ) from None


class EvaluationCache:
    """Verdicts by image content and evaluator settings, so a repeated run neither redoes nor
    re-pays them.

    One SQLite database, ``<folder>/evaluations.sqlite3``: one query reads an actor's verdicts
    and one transaction writes them (a JSON file per verdict cost as much as the statistics).
    It keeps SQLite's default rollback journal, which works on network filesystems (WAL does
    not), and does not fsync (``synchronous=OFF``: 1 ms per actor instead of 16): a killed
    process loses nothing, and an OS crash or power cut can at worst damage the database, which
    is then moved aside (kept, for a post-mortem) and started afresh. A wrong hit cannot come of
    it: a key and its verdict are one row, and the key names the image bytes and the settings.
    Another process (an ``--actor-id`` run) may use the database at the same time: each waits
    up to CACHE_BUSY_TIMEOUT_SECONDS for the other's write.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / CACHE_DATABASE_NAME
        make_cache_folder(self.folder)
        self._run("open", lambda connection: None)

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedVerdict]:
        """The valid verdicts cached under ``keys``; a torn or foreign entry is a miss."""
        rows: list[tuple[str, str]] = []
        for start in range(0, len(keys), CACHE_KEYS_PER_QUERY):
            chunk = list(keys[start : start + CACHE_KEYS_PER_QUERY])
            query = f"SELECT key, verdict FROM verdicts WHERE key IN ({','.join('?' * len(chunk))})"
            rows += self._run("read", lambda db, q=query, c=chunk: db.execute(q, c).fetchall())
        verdicts = {}
        for key, text in rows:
            verdict = _verdict_from_json(text)
            if verdict is not None:
                verdicts[key] = verdict
        return verdicts

    def put_many(self, verdicts: Mapping[str, CachedVerdict]) -> None:
        """In one transaction; an entry already under a key (a torn one, say) is replaced."""
        rows = [(key, _verdict_to_json(verdict)) for key, verdict in verdicts.items()]
        if rows:
            self._run("write", lambda connection: _insert_verdicts(connection, rows))

    def _run(self, action: str, operation: Callable[[sqlite3.Connection], Any]) -> Any:
        """Once more on a fresh database when this one is damaged; any other failure (a full
        disk, a lock held past the timeout) stops the run."""
        try:
            return self._on_new_connection(operation)
        except sqlite3.DatabaseError as error:
            if not _is_corrupt(error):
                raise self._failure(action, error) from None
            self._move_aside(error)
        try:
            return self._on_new_connection(operation)
        except sqlite3.DatabaseError as error:
            raise self._failure(action, error) from None

    def _on_new_connection(self, operation: Callable[[sqlite3.Connection], Any]) -> Any:
        """A connection per call, so a database another process moved aside is not used on."""
        with contextlib.closing(self._connect()) as connection:
            return operation(connection)

    def _failure(self, action: str, error: sqlite3.DatabaseError) -> FatalRunError:
        return FatalRunError(f"cannot {action} the evaluation cache {self.path}: {one_line(error)}")

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=CACHE_BUSY_TIMEOUT_SECONDS, isolation_level=None
        )
        try:
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL)"
                " WITHOUT ROWID"
            )
        except BaseException:
            connection.close()
            raise
        return connection

    def _move_aside(self, error: sqlite3.DatabaseError) -> None:
        """Renamed with its journal (a hot journal would be replayed into the fresh database)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{os.getpid()}")
        try:
            for suffix in ("", "-journal"):
                source = self.path.with_name(self.path.name + suffix)
                if source.exists():
                    source.rename(aside.with_name(aside.name + suffix))
        except OSError as error_moving:
            raise FatalRunError(
                f"cannot move the damaged evaluation cache {self.path} aside: "
                f"{error_moving.strerror or error_moving}"
            ) from None
        log.warning(
            "evaluation cache %s is damaged (%s): kept as %s, starting a fresh one",
            self.path,
            one_line(error),
            aside.name,
        )


def _insert_verdicts(connection: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany("INSERT OR REPLACE INTO verdicts (key, verdict) VALUES (?, ?)", rows)
    connection.execute("COMMIT")


def _is_corrupt(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _verdict_to_json(verdict: CachedVerdict) -> str:
    document = {
        "judgement": vars(verdict.judgement),  # asdict() would deep-copy the measurements
        "fingerprint": verdict.fingerprint.to_json(),
    }
    return _VERDICT_ENCODER.encode(document)


def _verdict_from_json(text: Any) -> CachedVerdict | None:
    try:
        document = json.loads(text)
        return CachedVerdict(
            _judgement_from_json(document["judgement"]),
            Fingerprint.from_json(document["fingerprint"]),
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def evaluator_digest(
    backend_name: str,
    settings: Mapping[str, Any],
    categories: Sequence[str],
    quality: QualityConfig,
) -> str:
    """What makes a cached verdict valid: the backend, its settings, the categories, thresholds."""
    document = {
        "backend": backend_name,
        "settings": settings,
        "categories": list(categories),
        "quality": asdict(quality),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def cache_key(image_sha256: str, settings_digest: str, trusted_type: str | None) -> str:
    """The trusted type is part of the key: a backend may judge a typed image differently."""
    suffix = hashlib.sha256(f"{settings_digest}:{trusted_type or ''}".encode()).hexdigest()
    return f"{image_sha256}-{suffix[:24]}"


def _judgement_from_json(document: Any) -> Judgement:
    judgement = Judgement(**document)
    if (
        not isinstance(judgement.type, str)
        or not judgement.type
        or type(judgement.quality_score) is not int
        or not 1 <= judgement.quality_score <= 10
        or not isinstance(judgement.issues, list)
        or not all(isinstance(issue, str) for issue in judgement.issues)
        or not isinstance(judgement.measurements, dict)
        or not isinstance(judgement.note, str | None)
    ):
        raise ValueError("not a judgement")
    return judgement


# --- the pipeline ------------------------------------------------------------------------------


@dataclass
class _Pending:
    sample: ImageSample
    sha256: str
    key: str
    fingerprint: Fingerprint


def evaluate_actor(
    images: Sequence[TrainingImage],
    config: Config,
    backend: EvaluationBackend,
    cache: EvaluationCache,
    references: Sequence[Path] = (),
    checks_off: frozenset[str] = frozenset(),
) -> ActorEvaluation:
    """Evaluate one actor's images: cached verdicts are reused, the rest go to ``backend.judge``
    in one call; then trusted types, ``too_small``, the checks' reviews of the whole set (with
    the actor's ``references``, its base images; ``checks_off``: turned off by its manifest) and
    duplicates are applied."""
    categories = config.categories
    usage_before = backend.usage()
    settings = backend.settings()
    digest = evaluator_digest(backend.name, settings, categories, config.quality)
    if checks_off:  # a verdict judged without them is not one judged with them
        digest = hashlib.sha256(f"{digest}:off:{sorted(checks_off)}".encode()).hexdigest()
    results: dict[int, ImageEvaluation] = {}
    fingerprints: dict[int, Fingerprint] = {}
    thumbnails: dict[int, Image.Image] = {}
    loaded: list[tuple[ImageSample, str, str]] = []
    for image in sorted(images, key=lambda image: image.number):
        try:
            sha256, sample = load_sample(image, categories, config.limits.max_file_bytes)
        except UnreadableImage as error:
            results[image.number] = unreadable_evaluation(image, error)
            continue
        sample.checks_off = checks_off
        thumbnails[image.number] = sample.working
        loaded.append((sample, sha256, cache_key(sha256, digest, sample.trusted_type)))
    cached = cache.get_many([key for _, _, key in loaded])
    pending: list[_Pending] = []
    for sample, sha256, key in loaded:
        if key in cached:
            verdict = cached[key]
            results[sample.number] = _evaluation(sample, sha256, verdict.judgement, config)
            fingerprints[sample.number] = verdict.fingerprint
        else:
            pending.append(_Pending(sample, sha256, key, fingerprint_of(sample.working)))
    judgements = backend.judge([item.sample for item in pending], categories) if pending else {}
    verdicts: dict[str, CachedVerdict] = {}
    try:
        for item in pending:
            judgement = _checked(judgements.get(item.sample.number), item.sample, backend.name)
            verdicts[item.key] = CachedVerdict(judgement, item.fingerprint)
            results[item.sample.number] = _evaluation(item.sample, item.sha256, judgement, config)
            fingerprints[item.sample.number] = item.fingerprint
    finally:
        cache.put_many(verdicts)  # the valid ones even when another fails: they were paid for
    evaluations = [results[number] for number in sorted(results)]
    actor = ActorImages(thumbnails, tuple(references), ALL_SCORE_CAPS, checks_off)
    reviews = review_actor(evaluations, config, actor)
    # Imported here: OpenCV takes 0.3-0.7 s to import, which --stats and --help need not pay.
    from training_data.recrops import PairCache, RecropDetector

    sha256s = {evaluation.number: evaluation.sha256 for evaluation in evaluations}
    recrop_check = RecropDetector(thumbnails, sha256s, PairCache(cache.folder))
    duplicates = find_duplicates(
        evaluations, fingerprints, config.quality.near_duplicate_distance, recrop_check.same_picture
    )
    recrop_check.save()
    for evaluation in evaluations:
        if evaluation.number in duplicates:
            evaluation.duplicate_of = duplicates[evaluation.number]
            evaluation.issues = _ordered([*evaluation.issues, "duplicate"])
    evaluator = {
        "backend": backend.name,
        "settings": settings,
        "cache_hits": len(loaded) - len(pending),
        "judged": len(pending),
        "usage": usage_since(usage_before, backend.usage()),
    }
    if reviews:
        evaluator["checks"] = reviews
    return ActorEvaluation(images=evaluations, thumbnails=thumbnails, evaluator=evaluator)


def usage_since(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """This actor's share of a backend's running totals: numbers are differences."""
    return {
        key: value - before.get(key, 0)
        if isinstance(value, int | float) and not isinstance(value, bool)
        else value
        for key, value in after.items()
    }


def unreadable_evaluation(image: TrainingImage, error: UnreadableImage) -> ImageEvaluation:
    return ImageEvaluation(
        number=image.number,
        filename=image.filename,
        type=None,
        quality_score=1,
        issues=["unreadable"],
        width=None,
        height=None,
        sha256=error.sha256,
        measurements={"error": str(error)},
    )


def _evaluation(
    sample: ImageSample, sha256: str, judgement: Judgement, config: Config
) -> ImageEvaluation:
    """A manifest type naming a configured category overrides the backend's."""
    issues = [issue for issue in judgement.issues if issue not in PIPELINE_ISSUES]
    if min(sample.width, sample.height) < config.quality.min_side:
        issues.append("too_small")
    measurements = dict(judgement.measurements)
    measurements["type_source"] = "manifest" if sample.trusted_type else "evaluator"
    return ImageEvaluation(
        number=sample.number,
        filename=sample.filename,
        type=sample.trusted_type or judgement.type,
        quality_score=judgement.quality_score,
        issues=_ordered(issues),
        width=sample.width,
        height=sample.height,
        sha256=sha256,
        measurements=measurements,
        note=judgement.note,
        configured_unusable=configured_unusable(config),
    )


def configured_unusable(config: Config) -> frozenset[str]:
    return frozenset({"nsfw"}) if config.nsfw.unusable else frozenset()


def _checked(judgement: Judgement | None, sample: ImageSample, backend_name: str) -> Judgement:
    if judgement is None:
        raise ActorError(f"evaluator '{backend_name}' gave no verdict for {sample.filename}")
    if not isinstance(judgement.type, str) or not judgement.type:
        raise ActorError(f"evaluator '{backend_name}' gave {sample.filename} no category")
    if type(judgement.quality_score) is not int or not 1 <= judgement.quality_score <= 10:
        raise ActorError(
            f"evaluator '{backend_name}' scored {sample.filename} "
            f"{judgement.quality_score!r}, not an integer 1-10"
        )
    return judgement


ISSUE_ORDER = {issue: index for index, issue in enumerate(ALL_ISSUES)}


def _ordered(issues: Sequence[str]) -> list[str]:
    """Known issues, each once, in ALL_ISSUES order."""
    return sorted({issue for issue in issues if issue in ISSUE_ORDER}, key=ISSUE_ORDER.__getitem__)
