"""The plan: targets, the balanced rule, removal order, generation counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from training_data.config import PlanConfig, TargetConfig
from training_data.evaluation import ImageEvaluation
from training_data.plan import GeneratorAbility, make_plan, target_counts

DEFAULT = TargetConfig()
CATEGORIES = DEFAULT.categories
LOCAL = GeneratorAbility(
    frozenset({"bw_stylized", "color_stylized"}), "the local generator cannot make them"
)
NONE = GeneratorAbility(frozenset(), "no generator is configured")


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


# --- plans the generator can carry out ---


def test_short_photos_with_the_local_generator_aim_at_the_best_reachable_mix():
    images = dataset(9, 8, 1)
    plan = make_plan(images, DEFAULT, LOCAL)
    assert plan.planned_counts == {"photorealistic": 9, "bw_stylized": 3, "color_stylized": 2}
    assert plan.reachable_total == 14
    assert plan.short == {"photorealistic": 4}
    assert plan.state == "short"
    assert plan.short_reason.startswith(
        "photorealistic: 4 short, the local generator cannot make them"
    )
    assert plan.generations == {"color_stylized": 1}
    assert {r.type for r in plan.removals} == {"bw_stylized"} and len(plan.removals) == 5


def test_the_same_set_with_a_generator_for_everything_aims_at_the_full_target():
    plan = make_plan(dataset(9, 8, 1), DEFAULT)
    assert plan.planned_counts == {"photorealistic": 13, "bw_stylized": 4, "color_stylized": 3}
    assert plan.generations == {"photorealistic": 4, "color_stylized": 2}
    assert plan.state == "rebalanced" and plan.short == {} and plan.short_reason == ""


def test_keep_removes_only_unusable_images_and_generates_what_it_can():
    images = [*dataset(8, 8, 1), image(30, "bw_stylized", 7, "duplicate", of="a_10.jpg")]
    plan = make_plan(images, DEFAULT, LOCAL, PlanConfig(when_short="keep"))
    assert [r.number for r in plan.removals] == [30]
    assert plan.generations == {"color_stylized": 2}
    assert plan.planned_counts == {"photorealistic": 8, "bw_stylized": 8, "color_stylized": 3}
    assert plan.state == "short" and "plan.when_short = keep" in plan.short_reason


def test_below_min_total_the_actor_is_left_as_it_is():
    images = [*dataset(5, 8, 4), image(30, "bw_stylized", 7, "too_small")]
    plan = make_plan(images, DEFAULT, LOCAL, PlanConfig(min_total=10))
    assert not plan.removals and not plan.generations
    assert plan.short == {"photorealistic": 8}
    assert "left as it is" in plan.short_reason and "8 images" in plan.short_reason
    lower = make_plan(images, DEFAULT, LOCAL, PlanConfig(min_total=8))
    assert lower.reachable_total == 8 and lower.has_actions


def test_no_generator_plans_only_removals():
    plan = make_plan(dataset(15, 6, 5), DEFAULT, NONE)
    assert plan.state == "rebalanced" and not plan.generations
    assert plan.planned_counts == {"photorealistic": 13, "bw_stylized": 4, "color_stylized": 3}


def test_unbalanced_says_why_and_removals_show_every_defect():
    images = [
        *dataset(13, 4, 1),
        image(30, "photorealistic", 1, "too_dark", "low_information"),
        image(31, "bw_stylized", 7, "duplicate", of="a_03.jpg"),
        image(32, "photorealistic", 3, "too_small"),
    ]
    plan = make_plan(images, DEFAULT)
    assert plan.why_unbalanced.startswith("2 unusable: 1 duplicate of #3, 1 too_small")
    surplus = [r for r in plan.removals if r.number == 30]
    assert surplus[0].reason == "surplus photorealistic (quality 1: too_dark, low_information)"


abilities = st.sets(st.sampled_from(CATEGORIES)).map(
    lambda kinds: GeneratorAbility(frozenset(kinds), "cannot")
)
policies = st.builds(
    PlanConfig, when_short=st.sampled_from(["shrink", "keep"]), min_total=st.integers(1, 20)
)


@given(evaluations, abilities, policies)
def test_a_plan_never_needs_what_cannot_be_generated_nor_removes_what_is_short(
    rows, ability, policy
):
    images = [
        image(n, kind, score, *issues) if kind is not None else image(n, None, 1, "unreadable")
        for n, (kind, score, issues) in enumerate(rows, start=1)
    ]
    plan = make_plan(images, DEFAULT, ability, policy)
    removed = {r.number for r in plan.removals}
    assert set(plan.generations) <= ability.categories
    usable = {c: [i for i in images if i.type == c and not i.unusable] for c in CATEGORIES}
    for category in plan.short:
        assert category not in ability.categories
        assert not any(i.number in removed for i in usable[category]), category
    for category, wanted in plan.planned_counts.items():
        if plan.has_actions:
            kept = sum(1 for i in usable[category] if i.number not in removed)
            assert kept + plan.generations.get(category, 0) == wanted
    if plan.reachable_total is not None:
        assert policy.when_short == "shrink"
        if plan.reachable_total < policy.min_total:  # left as it is
            assert not plan.has_actions
        limits = {c: len(usable[c]) for c in CATEGORIES if c not in ability.categories}

        def fits(total: int) -> bool:
            targets = target_counts(DEFAULT.mix, total)
            return all(targets[c] <= limit for c, limit in limits.items())

        assert fits(plan.reachable_total)
        assert not any(fits(t) for t in range(plan.reachable_total + 1, DEFAULT.total + 1))
