"""Evaluation of SPEC §5: each image's category, quality score and defects, cached by content."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

ISSUE_NAMES = (
    "unreadable",
    "too_small",
    "blurry",
    "too_dark",
    "too_bright",
    "low_information",
    "duplicate",
)
UNUSABLE_ISSUES = frozenset({"unreadable", "duplicate", "too_small"})


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

    @property
    def unusable(self) -> bool:
        return bool(UNUSABLE_ISSUES.intersection(self.issues))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
