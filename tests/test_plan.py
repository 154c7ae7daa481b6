"""The plan of SPEC §6: targets, the balanced rule, removal order, generation counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from training_data.config import TargetConfig
from training_data.evaluation import ImageEvaluation
from training_data.plan import make_plan, target_counts

DEFAULT = TargetConfig()
CATEGORIES = DEFAULT.categories


def image(number: int, category: str | None, score: int = 7, *issues: str, of: str | None = None):
    return ImageEvaluation(
        number=number,
        filename=f"a_{number:02d}.jpg",
        type=category,
        quality_score=score,
        issues=list(issues),
        width=512,
        height=512,
        sha256=f"{number:064x}",
        duplicate_of=of,
    )


def dataset(photo: int, bw: int, color: int, score: int = 7) -> list[ImageEvaluation]:
    kinds = ["photorealistic"] * photo + ["bw_stylized"] * bw + ["color_stylized"] * color
    return [image(n, kind, score) for n, kind in enumerate(kinds, start=1)]


def test_default_targets_are_13_4_3():
    assert target_counts(DEFAULT.mix, 20) == {
        "photorealistic": 13,
        "bw_stylized": 4,
        "color_stylized": 3,
    }


def test_largest_remainder_rounding():
    # 65/20/15 of 10 = 6.5 / 2 / 1.5: the two .5 remainders tie, the first listed wins.
    assert target_counts(DEFAULT.mix, 10) == {
        "photorealistic": 7,
        "bw_stylized": 2,
        "color_stylized": 1,
    }
    # thirds of 20 = 6.67 each: two categories get the extra images.
    thirds = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    assert target_counts(thirds, 20) == {"a": 7, "b": 7, "c": 6}
    assert target_counts({"x": 0.5, "y": 0.5}, 0) == {"x": 0, "y": 0}


@given(
    shares=st.lists(st.integers(1, 100), min_size=1, max_size=6),
    total=st.integers(0, 500),
)
def test_targets_sum_to_total_and_stay_within_one_of_exact(shares, total):
    weight = sum(shares)
    mix = {f"c{i}": share / weight for i, share in enumerate(shares)}
    counts = target_counts(mix, total)
    assert sum(counts.values()) == total
    for category, share in mix.items():
        assert abs(counts[category] - share * total) < 1


def test_exact_target_is_balanced_and_planless():
    plan = make_plan(dataset(13, 4, 3), DEFAULT)
    assert plan.is_balanced
    assert plan.removals == ()
    assert plan.generations == {}
    assert plan.counts == {"photorealistic": 13, "bw_stylized": 4, "color_stylized": 3}
    assert plan.percentages == {"photorealistic": 65.0, "bw_stylized": 20.0, "color_stylized": 15.0}


def test_within_tolerance_is_balanced():
    # 12/5/3 = 60/25/15 %: each share within 10 points of 65/20/15.
    assert make_plan(dataset(12, 5, 3), DEFAULT).is_balanced


def test_outside_tolerance_reaches_targets_exactly():
    # 10/8/2 = 50/40/10 %: unbalanced.
    images = dataset(10, 8, 2)
    plan = make_plan(images, DEFAULT)
    assert not plan.is_balanced
    assert plan.generations == {"photorealistic": 3, "color_stylized": 1}
    assert [r.type for r in plan.removals] == ["bw_stylized"] * 4


def test_wrong_total_is_not_balanced_even_with_right_shares():
    plan = make_plan(dataset(26, 8, 6), DEFAULT)
    assert not plan.is_balanced
    assert len(plan.removals) == 20
    assert plan.generations == {}


def test_an_unusable_image_unbalances_an_exact_set_and_goes_first():
    images = dataset(13, 4, 3)
    images[0] = image(1, "photorealistic", 9, "duplicate", of="a_02.jpg")
    plan = make_plan(images, DEFAULT)
    assert not plan.is_balanced
    assert [(r.number, r.reason) for r in plan.removals] == [(1, "duplicate of a_02.jpg")]
    assert plan.generations == {"photorealistic": 1}


def test_unreadable_and_too_small_are_removed_before_any_surplus():
    images = [*dataset(15, 4, 3, score=5)]
    images.append(image(23, None, 1, "unreadable"))
    images.append(image(24, "photorealistic", 8, "too_small"))
    plan = make_plan(images, DEFAULT)
    reasons = [r.reason for r in plan.removals]
    assert reasons[:2] == ["unreadable", "too_small"]
    assert len(plan.removals) == 4  # 2 unusable + 2 surplus photos
    assert plan.generations == {}


def test_surplus_lowest_quality_first_ties_higher_number_first():
    images = [image(n, "photorealistic", 8) for n in range(1, 14)]
    images += [image(14, "photorealistic", 3), image(15, "photorealistic", 5)]
    images += [image(16, "photorealistic", 5), image(17, "photorealistic", 5)]
    images += [image(n, "bw_stylized") for n in range(18, 22)]
    images += [image(n, "color_stylized") for n in range(22, 25)]
    plan = make_plan(images, DEFAULT)
    assert [r.number for r in plan.removals] == [14, 17, 16, 15]
    assert plan.removals[0].reason == "surplus photorealistic (quality 3)"


def test_blurry_and_dark_images_are_not_removed_for_their_defect_alone():
    images = dataset(13, 4, 3)
    images[5] = image(6, "photorealistic", 2, "blurry", "too_dark")
    plan = make_plan(images, DEFAULT)
    assert plan.is_balanced


def test_type_outside_the_mix_is_removed():
    images = [*dataset(13, 4, 2), image(20, "sketch", 9)]
    plan = make_plan(images, DEFAULT)
    assert not plan.is_balanced
    assert plan.removals[0].reason == "type sketch is not in the target mix"
    assert plan.generations == {"color_stylized": 1}


def test_custom_categories_from_config():
    target = TargetConfig(total=10, tolerance=0.05, mix={"portrait": 0.5, "anime": 0.5})
    images = [image(n, "portrait") for n in range(1, 8)] + [image(8, "anime")]
    plan = make_plan(images, target)
    assert plan.targets == {"portrait": 5, "anime": 5}
    assert plan.generations == {"anime": 4}
    assert len(plan.removals) == 2


def test_empty_set_plans_the_whole_target():
    plan = make_plan([], DEFAULT)
    assert not plan.is_balanced
    assert plan.generations == {"photorealistic": 13, "bw_stylized": 4, "color_stylized": 3}
    assert plan.percentages == {c: 0.0 for c in CATEGORIES}


evaluations = st.lists(
    st.tuples(
        st.sampled_from([*CATEGORIES, None, "other"]),
        st.integers(1, 10),
        st.lists(st.sampled_from(["duplicate", "too_small", "blurry", "too_dark"]), max_size=2),
    ),
    max_size=40,
)


@given(evaluations)
def test_an_unbalanced_plan_always_lands_on_the_targets(rows):
    images = [
        image(n, kind, score, *issues) if kind is not None else image(n, None, 1, "unreadable")
        for n, (kind, score, issues) in enumerate(rows, start=1)
    ]
    plan = make_plan(images, DEFAULT)
    removed = {r.number for r in plan.removals}
    assert len(removed) == len(plan.removals)
    if plan.is_balanced:
        assert not removed and not plan.generations
        return
    for image_ in images:
        if image_.unusable or image_.type not in DEFAULT.mix:
            assert image_.number in removed
    for category, wanted in plan.targets.items():
        kept = sum(1 for i in images if i.type == category and i.number not in removed)
        assert kept + plan.generations.get(category, 0) == wanted
        if plan.generations.get(category):
            assert not any(
                r.type == category and r.reason.startswith("surplus") for r in plan.removals
            )
