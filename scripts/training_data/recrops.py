"""Re-crops and re-framings of one photo as duplicates, by local feature matching.

Two images cut from one photo (a crop keeping 50-90% of it, mirrored, re-encoded, resized) are
the same picture for training; two photos of the same person in a similar pose are not. The
difference hash cannot see the first (a crop moves every edge of its grid), and any global
embedding of "what is in it" would see the second as the same. So, on the working image:

1. A cheap pre-filter: colour histograms (4x4x4 RGB bins, normalised) must overlap by at least
   MIN_HISTOGRAM_OVERLAP. A crop keeps most of its photo's colours whatever the framing, and a
   mirror keeps them all; a grey copy of a colour photo, or an unrelated picture, rarely passes.
2. ORB keypoints (scale pyramid, so a crop shown at another size still matches), matched
   against the other image's and against its mirror's, Lowe's ratio test, then a RANSAC
   similarity (rotation, one scale, shift): a re-crop is a pure scale and shift, so the fitted
   rotation must be near zero and MIN_INLIERS matches must agree with it.
3. The check that separates a re-crop from another shot of the same scene: the other image is
   warped onto this one with that transform and, where they overlap (at least MIN_OVERLAP of
   the smaller one), the blurred, contrast-normalised grey images must agree nearly everywhere:
   at most MAX_CHANGED_SHARE of the overlap may differ by more than CHANGED_LEVEL. A second
   shot from a tripod matches its background perfectly, but the person has moved: that part
   differs. A re-crop differs only by resampling and JPEG noise, which the blur absorbs. The
   colours must agree too (a grey copy is not a re-crop), and so must the fine texture the blur
   removed (correlation at least MIN_DETAIL_CORRELATION): a subject moved across a plain or
   smoothly lit backdrop aligns on itself and leaves the backdrop agreeing up to its mean, but
   two exposures never share their grain; a re-crop keeps it.

Thresholds were chosen on a set built from real photos (scripts/measure_recrops.py): crops,
mirrors, re-encodes and resizes of the photos in tests/data/styles and tests/data/recrops, and
pairs of different photos of similar scenes (frames of the same people in the same room, a
person holding a board in different positions, stereo pairs). Figures (7331 pairs, labelled set
of 349 images): 390 of 402 re-crops found (97.0%; misses such as a texture-less sky and a
repetitive chessboard), none of 34 hard negatives and none of 6895 different photos flagged
(precision 100%); the pre-filter passes every re-crop and 10% of the different pairs; about 3 ms
per pair. The thresholds were set on an earlier, smaller set of these pairs; variants drawn with
another seed (--seed 7): 395 of 402 found (98.3%), no false alarm.
Cost (scripts/bench_recrops.py, all photos in one category, on a shared and loaded 2-core
machine): +120-170 ms for an actor of 20 photos, +440-600 ms for 40; when every pair passes the
pre-filter (one palette throughout) +0.4-0.5 s and +1.4-2.3 s; with the verdicts cached +8-25 ms.

Verdicts, not features, are cached (PairCache, by both images' sha256 and every threshold): a few
bytes per compared pair instead of ~20 KB of descriptors per image, and a rerun or the
re-evaluation after --execute then computes no keypoints for the pairs it has seen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

HISTOGRAM_SHIFT = 6  # 8-bit levels >> 6: 4 bins per RGB channel
HISTOGRAM_BINS = 256 >> HISTOGRAM_SHIFT
MIN_HISTOGRAM_OVERLAP = 0.6
ORB_FEATURES = 300
ORB_SCALE_FACTOR = 1.2
ORB_LEVELS = 6
ORB_EDGE = 15  # px left out at the border: a 31-px patch needs room
RATIO = 0.8  # Lowe's ratio test
MIN_INLIERS = 12
RANSAC_THRESHOLD = 3.0  # px on the working image
MAX_ROTATION_DEGREES = 4.0
MIN_SCALE, MAX_SCALE = 0.3, 3.4
MIN_OVERLAP = 0.4  # of the smaller image's area
BLUR_SIDE = 5
CHANGED_LEVEL = 1.0  # in standard deviations of the overlap's grey levels
MAX_CHANGED_SHARE = 0.008
MAX_CHROMA_DIFFERENCE = 4.0  # mean |Cr| + |Cb| difference, 0-255 levels per channel
MIN_DETAIL_CORRELATION = 0.3  # of the texture the blur removes: the same grain, not just shapes
PAIR_CACHE_NAME = "recrops.sqlite3"
PAIR_CACHE_TIMEOUT_SECONDS = 60.0
PAIR_CACHE_KEYS_PER_QUERY = 500  # under SQLite's oldest limit of 999 parameters
RECROP_VERSION = 1
# Every setting of the detector: a change misses every cached pair verdict.
SETTINGS = hashlib.sha256(
    json.dumps(
        [
            RECROP_VERSION, cv2.__version__, HISTOGRAM_SHIFT, MIN_HISTOGRAM_OVERLAP, ORB_FEATURES,
            ORB_SCALE_FACTOR, ORB_LEVELS, ORB_EDGE, RATIO, MIN_INLIERS, RANSAC_THRESHOLD,
            MAX_ROTATION_DEGREES, MIN_SCALE, MAX_SCALE, MIN_OVERLAP, BLUR_SIDE, CHANGED_LEVEL,
            MAX_CHANGED_SHARE, MAX_CHROMA_DIFFERENCE, MIN_DETAIL_CORRELATION,
        ]
    ).encode()
).hexdigest()[:16]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass
class LocalFeatures:
    """ORB keypoints of one working image and of its mirror, its grey pixels and colours."""

    grey: np.ndarray
    chroma: np.ndarray  # H x W x 2 uint8: Cr and Cb
    points: np.ndarray  # N x 2 float32, (x, y)
    descriptors: np.ndarray | None  # N x 32 uint8; None when no keypoint was found
    mirror_points: np.ndarray
    mirror_descriptors: np.ndarray | None


@dataclass
class Alignment:
    """How ``other`` maps onto ``this``: a 2x3 similarity, the mirror first when ``mirrored``."""

    transform: np.ndarray
    mirrored: bool
    inliers: int


class RecropDetector:
    """Answers "is one of these two working images a re-crop of the other?", features computed
    once per image and only for images that pass the pre-filter with some other image; verdicts
    found in ``pair_cache`` (by the images' sha256) are not computed again."""

    def __init__(
        self,
        working: Mapping[int, Image.Image],
        sha256s: Mapping[int, str] | None = None,
        pair_cache: PairCache | None = None,
    ) -> None:
        self._working = working
        self._sha256s = dict(sha256s or {})
        self._pair_cache = pair_cache
        self._known = pair_cache.get(set(self._sha256s.values())) if pair_cache else {}
        self._decided: dict[tuple[str, str], bool] = {}
        self._histograms: dict[int, np.ndarray] = {}
        self._features: dict[int, LocalFeatures] = {}

    @property
    def images_matched(self) -> int:
        """How many images needed ORB features so far (the pre-filter spared the rest)."""
        return len(self._features)

    def same_picture(self, first: int, second: int) -> bool:
        if first not in self._working or second not in self._working:
            return False
        overlap = histogram_overlap(self._histogram(first), self._histogram(second))
        if overlap < MIN_HISTOGRAM_OVERLAP:
            return False
        pair = (self._sha256s.get(first, ""), self._sha256s.get(second, ""))
        if all(pair) and pair in self._known:
            return self._known[pair]
        same = is_recrop(self._local(first), self._local(second))
        if all(pair):
            self._decided[pair] = same
        return same

    def save(self) -> None:
        """Store the verdicts computed since this detector was made."""
        if self._pair_cache is not None and self._decided:
            self._pair_cache.put(self._decided)

    def _histogram(self, number: int) -> np.ndarray:
        if number not in self._histograms:
            self._histograms[number] = colour_histogram(self._working[number])
        return self._histograms[number]

    def _local(self, number: int) -> LocalFeatures:
        if number not in self._features:
            self._features[number] = local_features(self._working[number])
        return self._features[number]


class PairCache:
    """Re-crop verdicts by the two images' content and this module's thresholds, so a rerun (and
    the re-evaluation after --execute) matches no keypoints again.

    A table in its own SQLite file next to the evaluation cache. An optimisation only: when the
    file cannot be read or written, one warning, and verdicts are computed afresh (never wrong:
    a key names both images' bytes and every threshold).
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / PAIR_CACHE_NAME
        self._usable = True

    def get(self, sha256s: Collection[str]) -> dict[tuple[str, str], bool]:
        hashes = sorted(sha256s)
        rows: list[tuple[str, str, int]] = []
        for start in range(0, len(hashes), PAIR_CACHE_KEYS_PER_QUERY):
            chunk = hashes[start : start + PAIR_CACHE_KEYS_PER_QUERY]
            query = (
                "SELECT first, second, same FROM pairs WHERE settings = ? AND first IN "
                f"({','.join('?' * len(chunk))})"
            )
            rows += self._run(lambda db, q=query, c=chunk: db.execute(q, [SETTINGS, *c]).fetchall())
        return {(first, second): bool(same) for first, second, same in rows}

    def put(self, verdicts: Mapping[tuple[str, str], bool]) -> None:
        rows = [(SETTINGS, first, second, int(same)) for (first, second), same in verdicts.items()]
        self._run(
            lambda db: db.executemany("INSERT OR REPLACE INTO pairs VALUES (?, ?, ?, ?)", rows)
        )

    def _run(self, operation: Callable[[sqlite3.Connection], Any]) -> Any:
        if not self._usable:
            return []
        try:
            with contextlib.closing(self._connect()) as connection, connection:
                return operation(connection)
        except (sqlite3.Error, OSError) as error:
            self._usable = False
            log.warning("re-crop verdict cache %s is not usable (%s): not cached", self.path, error)
            return []

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=PAIR_CACHE_TIMEOUT_SECONDS)
        try:
            connection.execute("PRAGMA synchronous=OFF")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS pairs (settings TEXT NOT NULL, first TEXT NOT NULL, "
                "second TEXT NOT NULL, same INTEGER NOT NULL, "
                "PRIMARY KEY (settings, first, second)) WITHOUT ROWID"
            )
        except BaseException:
            connection.close()
            raise
        return connection


def colour_histogram(working: Image.Image) -> np.ndarray:
    pixels = np.asarray(working.convert("RGB"), dtype=np.uint8) >> HISTOGRAM_SHIFT
    # The bin code of 4x4x4 bins fits a byte: no widening copy of the pixels (0.4 -> 0.1 ms).
    codes = (pixels[..., 0] * HISTOGRAM_BINS + pixels[..., 1]) * HISTOGRAM_BINS + pixels[..., 2]
    counts = np.bincount(codes.ravel(), minlength=HISTOGRAM_BINS**3)
    return counts / max(counts.sum(), 1)


def histogram_overlap(first: np.ndarray, second: np.ndarray) -> float:
    """Histogram intersection: 1 for the same colours in the same shares, 0 for none shared."""
    return float(np.minimum(first, second).sum())


def local_features(working: Image.Image) -> LocalFeatures:
    rgb = np.asarray(working.convert("RGB"), dtype=np.uint8)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    chroma = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[:, :, 1:])
    orb = cv2.ORB_create(
        nfeatures=ORB_FEATURES,
        scaleFactor=ORB_SCALE_FACTOR,
        nlevels=ORB_LEVELS,
        edgeThreshold=ORB_EDGE,
        patchSize=2 * ORB_EDGE + 1,
        fastThreshold=10,
    )
    points, descriptors = _detect(orb, grey)
    mirror_points, mirror_descriptors = _detect(orb, np.ascontiguousarray(grey[:, ::-1]))
    return LocalFeatures(
        grey=grey,
        chroma=chroma,
        points=points,
        descriptors=descriptors,
        mirror_points=mirror_points,
        mirror_descriptors=mirror_descriptors,
    )


def _detect(orb: cv2.ORB, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    keypoints, descriptors = orb.detectAndCompute(grey, None)
    points = np.array([keypoint.pt for keypoint in keypoints], dtype=np.float32).reshape(-1, 2)
    return points, descriptors


def is_recrop(this: LocalFeatures, other: LocalFeatures) -> bool:
    alignment = align(this, other)
    return alignment is not None and agrees_where_overlapping(this, other, alignment)


def align(this: LocalFeatures, other: LocalFeatures) -> Alignment | None:
    """The better of the straight and the mirrored fit, or None when neither is a re-crop's."""
    fits = [
        _fit(this, other.points, other.descriptors, mirrored=False),
        _fit(this, other.mirror_points, other.mirror_descriptors, mirrored=True),
    ]
    found = [fit for fit in fits if fit is not None]
    return max(found, key=lambda fit: fit.inliers) if found else None


def _fit(
    this: LocalFeatures, points: np.ndarray, descriptors: np.ndarray | None, *, mirrored: bool
) -> Alignment | None:
    if this.descriptors is None or descriptors is None:
        return None
    if len(this.descriptors) < 2 or len(descriptors) < 2:
        return None
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(descriptors, this.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_INLIERS:
        return None
    source = points[[match.queryIdx for match in good]]
    target = this.points[[match.trainIdx for match in good]]
    transform, inlier_mask = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_THRESHOLD
    )
    if transform is None:
        return None
    inliers = int(inlier_mask.sum())
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    rotation = float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0])))
    if inliers < MIN_INLIERS or abs(rotation) > MAX_ROTATION_DEGREES:
        return None
    if not MIN_SCALE <= scale <= MAX_SCALE:
        return None
    return Alignment(transform.astype(np.float32), mirrored, inliers)


def agrees_where_overlapping(
    this: LocalFeatures, other: LocalFeatures, alignment: Alignment
) -> bool:
    """The other image warped onto this one must show the same pixels wherever both exist: the
    same grey levels (up to contrast) and the same colours (a grey copy is not a re-crop)."""
    height, width = this.grey.shape
    source = other.grey[:, ::-1] if alignment.mirrored else other.grey
    coverage = cv2.warpAffine(
        np.full(source.shape, 255, np.uint8), alignment.transform, (width, height)
    )
    inside = cv2.erode(coverage, np.ones((BLUR_SIDE, BLUR_SIDE), np.uint8)) == 255
    smaller = min(this.grey.size, source.size * float(np.linalg.det(alignment.transform[:, :2])))
    if inside.sum() < MIN_OVERLAP * smaller:
        return False
    warped = _warped(source, alignment, (width, height))
    mine, theirs = _blurred(this.grey), _blurred(warped)
    changed = np.abs(_normalised(mine, inside) - _normalised(theirs, inside)) > CHANGED_LEVEL
    if float(changed.mean()) > MAX_CHANGED_SHARE:
        return False
    if _correlation(_detail(this.grey, mine, inside), _detail(warped, theirs, inside)) < (
        MIN_DETAIL_CORRELATION
    ):
        return False
    other_chroma = other.chroma[:, ::-1] if alignment.mirrored else other.chroma
    warped_chroma = _blurred(_warped(other_chroma, alignment, (width, height)))
    difference = np.abs(_blurred(this.chroma).astype(np.int16) - warped_chroma)[inside]
    return float(difference.mean()) <= MAX_CHROMA_DIFFERENCE


def _warped(pixels: np.ndarray, alignment: Alignment, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(
        np.ascontiguousarray(pixels), alignment.transform, size, flags=cv2.INTER_AREA
    )


def _blurred(pixels: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(pixels, (BLUR_SIDE, BLUR_SIDE), 0)


def _detail(grey: np.ndarray, blurred: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """What the blur took away: texture and grain, where both images exist."""
    return grey[inside].astype(np.float32) - blurred[inside].astype(np.float32)


def _correlation(first: np.ndarray, second: np.ndarray) -> float:
    first, second = first - first.mean(), second - second.mean()
    spread = float(np.sqrt((first * first).sum() * (second * second).sum()))
    return float((first * second).sum()) / spread if spread > 0 else 0.0


def _normalised(grey: np.ndarray, inside: np.ndarray) -> np.ndarray:
    values = grey[inside].astype(np.float32)
    return (values - values.mean()) / max(float(values.std()), 1.0)
