"""The rebalance plan: plain arithmetic over evaluations, never delegated to a model.

A plan only asks for what the configured generator can make. When the target needs more images
of a category the generator cannot make than the actor has usable (the category is *short*), the
plan aims at the best reachable mix instead: the largest total ``T <= target.total`` whose
largest-remainder targets need no image of such a category beyond those usable now (T is found by
scanning down from the target total, because largest remainder is not monotonic in T). A usable
image of a short category is never removed. ``plan.when_short = "keep"`` aims at the full target
for the categories it can generate and keeps every other usable image; a reachable mix under
``plan.min_total`` leaves the actor as it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from training_data.config import PlanConfig, TargetConfig
from training_data.evaluation import ImageEvaluation, keep_rank
from training_data.wording import plural, slashed

# An actor's state at the end of its step; the two others are "failed" and "skipped".
BALANCED, REBALANCED, SHORT, SKIPPED = "balanced", "rebalanced", "short", "skipped"


@dataclass(frozen=True)
class GeneratorAbility:
    """What the configured generator can make for an actor, and why it cannot make the rest."""

    categories: frozenset[str]
    cannot: str  # completes "photorealistic: 4 short, ..." e.g. "the local generator cannot..."

    @classmethod
    def everything(cls, categories: Collection[str]) -> GeneratorAbility:
        return cls(frozenset(categories), "")


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
    planned_counts: dict[str, int] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)
    short_reason: str = ""
    why_unbalanced: str = ""
    reachable_total: int | None = None  # the T of the best reachable mix, when shrinking

    @property
    def state(self) -> str:
        """What carrying the plan out leads to: balanced (nothing to do), rebalanced or short."""
        if self.is_balanced:
            return BALANCED
        return SHORT if self.short else REBALANCED

    @property
    def has_actions(self) -> bool:
        return bool(self.removals or self.generations)

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
            "planned_counts": dict(self.planned_counts),
            "short": dict(self.short),
            "short_reason": self.short_reason,
            "reachable_total": self.reachable_total,
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


def reachable_total(mix: Mapping[str, float], total: int, limits: Mapping[str, int]) -> int:
    """The largest T <= total whose targets stay within ``limits`` (what cannot be generated)."""
    for candidate in range(total, 0, -1):
        targets = target_counts(mix, candidate)
        if all(targets[category] <= limit for category, limit in limits.items()):
            return candidate
    return 0


def make_plan(
    images: Sequence[ImageEvaluation],
    target: TargetConfig,
    ability: GeneratorAbility | None = None,
    policy: PlanConfig | None = None,
) -> Plan:
    """Balanced sets are left alone; otherwise aim at the target, or the best reachable mix.

    ``ability`` None: every category can be generated. ``policy`` None: the default [plan].
    """
    ability = ability or GeneratorAbility.everything(target.mix)
    policy = policy or PlanConfig()
    targets = target_counts(target.mix, target.total)
    counts = {
        category: sum(1 for image in images if image.type == category) for category in targets
    }
    percentages = _percentages(counts)
    if _is_balanced(images, counts, target):
        return Plan(counts, percentages, targets, True, (), {}, planned_counts=dict(counts))
    why = _why_unbalanced(images, counts, target)
    unusable = [r for r in (_defect_removal(image, targets) for image in images) if r]
    removed = {removal.number for removal in unusable}
    usable = {
        category: [i for i in images if i.type == category and i.number not in removed]
        for category in targets
    }
    have = {category: len(usable[category]) for category in targets}
    cannot_make = {c: n for c, n in have.items() if c not in ability.categories}
    short = {c: targets[c] - n for c, n in cannot_make.items() if n < targets[c]}
    aim = _aim_when_short(have, short, cannot_make, target, ability, policy) if short else None
    aim = aim or _Aim(targets, "")
    unchanged = Plan(counts, percentages, targets, False, (), {}, dict(counts))
    if aim.counts is None:  # under min_total: left as it is
        return replace(
            unchanged,
            short=short,
            short_reason=aim.reason,
            why_unbalanced=why,
            reachable_total=aim.reachable_total,
        )
    surplus: list[Removal] = []
    generations: dict[str, int] = {}
    for category, wanted in aim.counts.items():
        excess = have[category] - wanted
        if excess > 0:
            surplus.extend(_surplus_removals(usable[category], excess, category))
        elif excess < 0:
            generations[category] = -excess
    return replace(
        unchanged,
        removals=tuple(unusable + surplus),
        generations=generations,
        planned_counts=dict(aim.counts),
        short=short,
        short_reason=aim.reason,
        why_unbalanced=why,
        reachable_total=aim.reachable_total,
    )


@dataclass(frozen=True)
class _Aim:
    """Where a short actor's plan aims; ``counts`` None leaves the actor as it is."""

    counts: dict[str, int] | None
    reason: str
    reachable_total: int | None = None  # set when shrinking (even when left as it is)


def _aim_when_short(
    have: Mapping[str, int],
    short: Mapping[str, int],
    cannot_make: Mapping[str, int],
    target: TargetConfig,
    ability: GeneratorAbility,
    policy: PlanConfig,
) -> _Aim:
    """keep: generate what can be, keep the rest; shrink: the best reachable mix, if big enough."""
    reason = _short_reason(short, ability)
    targets = target_counts(target.mix, target.total)
    if policy.when_short == "keep":
        kept = {c: n if c in cannot_make else max(n, targets[c]) for c, n in have.items()}
        return _Aim(kept, f"{reason}; keeping every usable image (plan.when_short = keep)")
    total = reachable_total(target.mix, target.total, cannot_make)
    floor = min(policy.min_total, target.total)
    if total < floor:
        return _Aim(
            None,
            f"{reason}; the best reachable mix has {plural(total, 'image')}, under plan.min_total "
            f"{floor}: left as it is",
            total,
        )
    reachable = target_counts(target.mix, total)
    aim = {c: have[c] if c in short else reachable[c] for c in targets}  # short ones: keep all
    return _Aim(aim, f"{reason}; best reachable mix {slashed(aim)} of {sum(aim.values())}", total)


def _short_reason(short: Mapping[str, int], ability: GeneratorAbility) -> str:
    return "; ".join(
        f"{category}: {missing} short, {ability.cannot}" for category, missing in short.items()
    )


def _why_unbalanced(
    images: Sequence[ImageEvaluation], counts: Mapping[str, int], target: TargetConfig
) -> str:
    """What keeps the set from being balanced, most actionable first."""
    parts = []
    numbers = {image.filename: image.number for image in images}
    unusable = Counter(_unusable_label(image, numbers) for image in images if image.unusable)
    if unusable:
        listed = ", ".join(f"{n} {_counted(label, n)}" for label, n in unusable.items())
        parts.append(f"{sum(unusable.values())} unusable: {listed}")
    outside = Counter(
        image.type for image in images if not image.unusable and image.type not in target.mix
    )
    if outside:
        listed = ", ".join(f"{n} {kind}" for kind, n in outside.items())
        parts.append(f"{sum(outside.values())} not in the target mix: {listed}")
    if len(images) != target.total:
        parts.append(f"{plural(len(images), 'image')}, target {target.total}")
    typed = sum(counts.values())
    for category, share in target.mix.items():
        actual = counts[category] / typed if typed else 0.0
        if abs(actual - share) > target.tolerance + 1e-9:
            parts.append(f"{category} {actual:.0%} (target {share:.0%} ± {target.tolerance:.0%})")
    return "; ".join(parts)


def _counted(label: str, count: int) -> str:
    """``2 duplicates of #1``; issue names (too_small) stay as they are."""
    return label.replace("duplicate", "duplicates", 1) if count > 1 else label


def _unusable_label(image: ImageEvaluation, numbers: Mapping[str, int]) -> str:
    labels = []
    for issue in image.unusable_issues():
        if issue == "duplicate" and image.duplicate_of:
            original = numbers.get(image.duplicate_of)
            labels.append(
                f"duplicate of #{original}" if original else f"duplicate of {image.duplicate_of}"
            )
        else:
            labels.append(issue)
    return " and ".join(labels)


def _percentages(counts: Mapping[str, int]) -> dict[str, float]:
    typed = sum(counts.values())
    return {c: round(100.0 * n / typed, 1) if typed else 0.0 for c, n in counts.items()}


def _is_balanced(
    images: Sequence[ImageEvaluation], counts: Mapping[str, int], target: TargetConfig
) -> bool:
    """Balanced: nothing unusable, the right total, every share within tolerance."""
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
    defects = image.unusable_issues()
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
    """The lowest-quality surplus; among equal scores the one ``keep_rank`` would keep last goes
    first (the face shown worst, then fewer pixels, then the higher number)."""
    keep_last_first = sorted(usable, key=keep_rank, reverse=True)
    worst_first = sorted(keep_last_first, key=lambda image: image.quality_score)
    return [
        Removal(
            image.number,
            image.filename,
            image.type,
            image.quality_score,
            f"surplus {category} ({_quality(image)})",
        )
        for image in worst_first[:excess]
    ]


def _quality(image: ImageEvaluation) -> str:
    """The score and every defect that lowered it: ``quality 1: too_dark, low_information``."""
    if image.issues:
        return f"quality {image.quality_score}: {', '.join(image.issues)}"
    return f"quality {image.quality_score}"
