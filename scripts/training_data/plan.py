"""The rebalance plan of SPEC §6: plain arithmetic over evaluations, never delegated to a model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from training_data.config import TargetConfig
from training_data.evaluation import UNUSABLE_ISSUES, ImageEvaluation


@dataclass(frozen=True)
class Removal:
    """One entry of ``images_to_delete``."""

    number: int
    filename: str
    type: str | None
    quality_score: int
    reason: str


@dataclass(frozen=True)
class Plan:
    counts: dict[str, int]
    percentages: dict[str, float]
    targets: dict[str, int]
    is_balanced: bool
    removals: tuple[Removal, ...]
    generations: dict[str, int]

    def images_to_generate(self) -> list[dict[str, Any]]:
        return [{"type": category, "count": count} for category, count in self.generations.items()]

    def images_to_delete(self) -> list[dict[str, Any]]:
        return [asdict(removal) for removal in self.removals]

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "percentages": dict(self.percentages),
            "target": dict(self.targets),
            "is_balanced": self.is_balanced,
            "images_to_delete": self.images_to_delete(),
            "images_to_generate": self.images_to_generate(),
        }


def target_counts(mix: Mapping[str, float], total: int) -> dict[str, int]:
    """Shares x total rounded by largest remainder; ties go to the category listed first."""
    exact = {category: share * total for category, share in mix.items()}
    counts = {category: int(value) for category, value in exact.items()}
    leftover = total - sum(counts.values())
    by_remainder = sorted(mix, key=lambda c: (-(exact[c] - counts[c]), list(mix).index(c)))
    for category in by_remainder[:leftover]:
        counts[category] += 1
    return counts


def make_plan(images: Sequence[ImageEvaluation], target: TargetConfig) -> Plan:
    """Balanced sets are left alone; otherwise reach the target counts exactly."""
    targets = target_counts(target.mix, target.total)
    counts = {
        category: sum(1 for image in images if image.type == category) for category in targets
    }
    percentages = _percentages(counts)
    balanced = _is_balanced(images, counts, target)
    if balanced:
        return Plan(counts, percentages, targets, True, (), {})
    removals = [_defect_removal(image, targets) for image in images]
    unusable = [removal for removal in removals if removal is not None]
    removed = {removal.number for removal in unusable}
    surplus: list[Removal] = []
    generations: dict[str, int] = {}
    for category, wanted in targets.items():
        usable = [i for i in images if i.type == category and i.number not in removed]
        excess = len(usable) - wanted
        if excess > 0:
            surplus.extend(_surplus_removals(usable, excess, category))
        elif excess < 0:
            generations[category] = -excess
    return Plan(counts, percentages, targets, False, tuple(unusable + surplus), generations)


def _percentages(counts: Mapping[str, int]) -> dict[str, float]:
    typed = sum(counts.values())
    return {c: round(100.0 * n / typed, 1) if typed else 0.0 for c, n in counts.items()}


def _is_balanced(
    images: Sequence[ImageEvaluation], counts: Mapping[str, int], target: TargetConfig
) -> bool:
    """SPEC §6: nothing unusable, the right total, every share within tolerance."""
    if any(image.unusable or image.type not in target.mix for image in images):
        return False
    if len(images) != target.total:
        return False
    return all(
        abs(counts[category] / target.total - share) <= target.tolerance + 1e-9
        for category, share in target.mix.items()
    )


def _defect_removal(image: ImageEvaluation, targets: Mapping[str, int]) -> Removal | None:
    """Unusable images go first; so do images of a style the target mix does not include."""
    defects = [issue for issue in image.issues if issue in UNUSABLE_ISSUES]
    if defects:
        reasons = [
            f"duplicate of {image.duplicate_of}" if d == "duplicate" and image.duplicate_of else d
            for d in defects
        ]
        reason = ", ".join(reasons)
    elif image.type not in targets:
        reason = f"type {image.type} is not in the target mix"
    else:
        return None
    return Removal(image.number, image.filename, image.type, image.quality_score, reason)


def _surplus_removals(
    usable: Sequence[ImageEvaluation], excess: int, category: str
) -> list[Removal]:
    """The lowest-quality surplus; among equal scores the higher number goes first."""
    worst_first = sorted(usable, key=lambda image: (image.quality_score, -image.number))
    return [
        Removal(
            image.number,
            image.filename,
            image.type,
            image.quality_score,
            f"surplus {category} (quality {image.quality_score})",
        )
        for image in worst_first[:excess]
    ]
