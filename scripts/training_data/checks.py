"""The one shape of the local evaluator's checks, so a new check is a module plus one line.

A ``Check`` declares the issues it may raise, the config table that holds its thresholds
(``section``: ``Config.<section>``), and what it needs of an image (``NEEDS``). It has up to two
steps:

- ``inspect(view, settings) -> Finding``: one image alone. Its finding is cached with the
  verdict (by image content and the evaluator settings, which include every check's section),
  so it must depend on nothing but the image, its category and the settings.
- ``review(images, settings, actor) -> summary | None``: the actor's whole set, after the
  cache, on every run; for what depends on the other images (an identity, a share). It edits
  each image's ``issues``, ``quality_score`` and ``measurements`` in place; its summary goes to
  the evaluator record (``evaluator["checks"][name]``).

An actor's manifest may turn a check off (``ActorImages.checks_off``; the subject checks:
``"subject_checks": false``): then neither step runs for its images, and the cache key says so.

``score_caps`` caps the score of an image with that issue; ``unusable`` names, per issue, the
categories in which it makes an image unusable (removed first by the plan; ``None``: in all).

An ``ImageView`` computes each need on first use and keeps it, so two checks that need the
grey image or the faces pay for them once. The registry is ``evaluation.LOCAL_CHECKS``.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, ImageFilter

from training_data import faces

NEEDS = frozenset({"working", "grey", "faces", "face_crop", "embedding"})
FIRST_LOOK_UPSAMPLE = 1
LAPLACIAN = ImageFilter.Kernel((3, 3), (0, 1, 0, 1, -4, 1, 0, 1, 0), scale=1, offset=128)


@dataclass
class Finding:
    """What one check found on one image; ``score`` (1-10) only from a check that scores."""

    issues: list[str] = field(default_factory=list)
    measurements: dict[str, Any] = field(default_factory=dict)
    score: int | None = None


class ImageView:
    """One image as the checks see it: the working image (longest side 256 px), its full size
    and category; the grey image, the faces, the main face's crop and embedding on demand."""

    def __init__(
        self,
        working: Image.Image,
        width: int,
        height: int,
        category: str,
        upsample: int = FIRST_LOOK_UPSAMPLE,
    ) -> None:
        self.working = working
        self.width = width
        self.height = height
        self.category = category
        self.upsample = upsample

    @functools.cached_property
    def grey(self) -> Image.Image:
        return self.working.convert("L")

    @functools.cached_property
    def histogram(self) -> list[int]:
        return self.grey.histogram()

    @functools.cached_property
    def faces(self) -> list[faces.Face]:
        """Largest first, found on the working image upsampled ``upsample`` times (once: faces
        from about 12% of its height; the subject review's closer look: twice, from 6%)."""
        return faces.find_faces(self.working, self.upsample)

    @functools.cached_property
    def face_crop(self) -> Image.Image | None:
        """The grey crop of the main (largest) face, inside the picture."""
        if not self.faces:
            return None
        return self.grey.crop(inside_box(self.faces[0].box, self.working.size))

    @functools.cached_property
    def embedding(self) -> tuple[float, ...] | None:
        return faces.embedding(self.working, self.faces[0]) if self.faces else None


class Reviewed(Protocol):
    """What a review sees of and changes on an image's verdict (an ``ImageEvaluation``)."""

    number: int
    type: str | None
    issues: list[str]
    quality_score: int
    measurements: dict[str, Any]


@dataclass(frozen=True)
class ActorImages:
    """What a review may use beyond the verdicts: the working images (by number), the actor's
    reference pictures (``base_image/``), every registered check's score caps, and the checks
    the actor's manifest turned off."""

    working: Mapping[int, Image.Image]
    references: Sequence[Path] = ()
    score_caps: Mapping[str, int] = field(default_factory=dict)
    checks_off: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Check:
    name: str
    section: str
    issues: tuple[str, ...]
    needs: frozenset[str]
    inspect: Callable[[ImageView, Any], Finding]
    review: Callable[[Sequence[Reviewed], Any, ActorImages], dict[str, Any] | None] | None = None
    score_caps: Mapping[str, int] = field(default_factory=dict)
    unusable: Mapping[str, frozenset[str] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.needs <= NEEDS:
            raise ValueError(f"check {self.name} needs {sorted(self.needs - NEEDS)}")

    def enabled(self, settings: Any) -> bool:
        """A section with ``enabled = false`` turns its check off."""
        return getattr(settings, "enabled", True)


def inside_box(box: Sequence[int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` clipped to the picture (never empty)."""
    width, height = size
    left, top = min(max(box[0], 0), width - 1), min(max(box[1], 0), height - 1)
    right, bottom = max(min(box[2], width), left + 1), max(min(box[3], height), top + 1)
    return left, top, right, bottom


def capped(score: int, issues: Sequence[str], caps: Mapping[str, int]) -> int:
    """``score`` lowered to the cap of its worst issue."""
    return min([score, *(caps[issue] for issue in issues if issue in caps)])


def sharpness(grey: Image.Image) -> float:
    """100 x Laplacian std / luminance std of an "L" image (0 under 3 px a side): the frame's
    sharpness (on its centre) and the face's. Dividing by the spread makes it
    contrast-independent. Pillow's filter copies the border unfiltered: that 1-pixel frame is
    cut off."""
    if grey.width < 3 or grey.height < 3:
        return 0.0
    edges = laplacian(grey).crop((1, 1, grey.width - 1, grey.height - 1))
    spread = mean_and_std(grey.histogram())[1]
    return 100 * mean_and_std(edges.histogram())[1] / max(spread, 1.0)


def laplacian(grey: Image.Image) -> Image.Image:
    """LAPLACIAN of an "L" image: filtered as 32-bit integers, the conversion back clipping to
    0-255 as the 8-bit filter does; the same pixels at half the cost (Pillow's 8-bit 3x3 filter
    is its slow path)."""
    return grey.convert("I").filter(LAPLACIAN).convert("L")


def mean_and_std(histogram: Sequence[int]) -> tuple[float, float]:
    """Of a 256-bin histogram, from running sums (C loops, no per-bin multiplications).

    With suffix counts S(j) = sum of h(i >= j): sum S(j >= 1) = sum i h(i), and the suffix sums
    of S add up to sum h(i) (i+1)(i+2)/2, which gives sum i^2 h(i). All exact integers.
    """
    suffix = list(itertools.accumulate(reversed(histogram)))
    total = suffix[-1]
    count = total or 1
    first = sum(suffix) - total
    second = 2 * sum(itertools.accumulate(suffix)) - 3 * first - 2 * total
    mean = first / count
    return mean, math.sqrt(max(second / count - mean * mean, 0.0))
