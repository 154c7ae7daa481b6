"""The learned style stage and the NSFW check, on real labelled images (tests/data/styles).

The network runs on few images here: each pass costs ~60 ms on one core.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from training_data.config import (
    Config,
    ConfigError,
    NsfwConfig,
    QualityConfig,
    StyleConfig,
    parse_config,
)
from training_data.dataset import TrainingImage
from training_data.evaluation import (
    EvaluationCache,
    LocalBackend,
    decode_working_image,
    evaluate_actor,
)
from training_data.plan import make_plan
from training_data.style import STYLES, classify_style
from training_data.style_learned import (
    classify_style_cascade,
    in_band,
    learned_features,
    style_model,
)

DATA = Path(__file__).resolve().parent / "data" / "styles"
LABELLED = sorted((path.parent.name, path) for path in DATA.glob("*/*.jpg"))
BAND = StyleConfig(learned=True).band

# Just under what the shipped cascade scores (81%) on every 4th labelled image that reaches the
# learned stage. The probe saw these images, but is strongly regularised (its training accuracy
# is 89%): this guards the preprocessing and the stored weights; the cross-validated figures are
# scripts/measure_accuracy.py --cv's.
MIN_LEARNED_ACCURACY = 0.78


def working(path: Path):
    return decode_working_image(path.read_bytes())[0]


def statistics_probability(path: Path) -> float:
    return classify_style(working(path))[1]["photo_probability"]


@pytest.fixture(scope="module")
def uncertain() -> list[tuple[str, Path]]:
    """Every 4th labelled image whose first-stage photo probability is inside the default band."""
    return [(label, p) for label, p in LABELLED if in_band(statistics_probability(p), *BAND)][::4]


def test_the_band_includes_both_edges() -> None:
    assert in_band(0.2, 0.2, 0.8)
    assert in_band(0.8, 0.2, 0.8)
    assert in_band(0.5, 0.2, 0.8)
    assert not in_band(0.199, 0.2, 0.8)
    assert not in_band(0.801, 0.2, 0.8)
    assert in_band(0.43, 0.43, 0.43)


def test_an_image_at_the_band_edge_goes_to_the_learned_stage_and_just_outside_does_not() -> None:
    path = LABELLED[0][1]
    image = working(path)
    probability = statistics_probability(path)

    at_low_edge = classify_style_cascade(image, None, None, (probability, 0.99))
    at_high_edge = classify_style_cascade(image, None, None, (0.01, probability))
    above = classify_style_cascade(image, None, None, (probability + 0.001, 0.99))
    below = classify_style_cascade(image, None, None, (0.01, probability - 0.001))

    assert at_low_edge.measurements["stage"] == at_high_edge.measurements["stage"] == "learned"
    assert above.measurements["stage"] == below.measurements["stage"] == "statistics"
    assert at_low_edge.nsfw is not None  # the network ran
    assert above.nsfw is None  # it did not


def test_the_statistics_decide_outside_the_band_or_when_the_learned_stage_is_off() -> None:
    checked = 0
    for _, path in LABELLED[::25]:
        image = working(path)
        expected, measurements = classify_style(image)
        probability = measurements["photo_probability"]
        bands = [None] if in_band(probability, *BAND) else [None, BAND]
        for band in bands:
            verdict = classify_style_cascade(image, None, None, band)
            assert verdict.category == expected, path.name
            assert verdict.measurements["stage"] == "statistics"
            photo = expected == "photorealistic"
            assert verdict.measurements["confidence"] == round(
                probability if photo else 1 - probability, 3
            )
            assert verdict.nsfw is None
            checked += band is not None
    assert checked >= 5


def test_the_learned_stage_records_its_probability_and_the_confidence_of_its_choice(uncertain):
    _, path = uncertain[0]
    verdict = classify_style_cascade(working(path), None, None, BAND)
    learned = verdict.measurements["learned_photo_probability"]
    assert verdict.measurements["stage"] == "learned"
    assert (verdict.category == "photorealistic") == (learned >= 0.5)
    expected = learned if verdict.category == "photorealistic" else 1 - learned
    assert verdict.measurements["confidence"] == pytest.approx(expected, abs=0.0015)
    assert verdict.category in STYLES
    if verdict.category != "photorealistic":
        assert "chroma" in verdict.measurements  # b/w or colour was measured, not guessed


def test_learned_stage_accuracy_on_real_uncertain_images(uncertain) -> None:
    assert len(uncertain) >= 25
    wrong = [
        p.name
        for label, p in uncertain
        if classify_style_cascade(working(p), None, None, BAND).category != label
    ]
    accuracy = 1 - len(wrong) / len(uncertain)
    assert accuracy >= MIN_LEARNED_ACCURACY, f"{accuracy:.1%}; wrong: {wrong}"


def test_features_are_1024_numbers_and_the_same_for_the_same_image() -> None:
    image = working(LABELLED[5][1])
    first = learned_features(image)
    again = learned_features(image.copy())
    assert first.shape == (1024,)
    assert np.array_equal(first, again)
    assert style_model() is style_model()  # loaded once per process


# --- the nsfw check ------------------------------------------------------------------------------


def evaluate(tmp_path: Path, config: Config, paths: list[Path]):
    images = [TrainingImage(number, path.name, path, None) for number, path in enumerate(paths, 1)]
    backend = LocalBackend(config.quality, config.style, config.nsfw)
    return evaluate_actor(images, config, backend, EvaluationCache(tmp_path / "cache"))


def test_nsfw_score_is_reported_and_the_issue_follows_the_threshold(tmp_path) -> None:
    path = LABELLED[0][1]
    score = style_model().run(working(path)).nsfw
    assert score > 0
    below = Config(nsfw=NsfwConfig(threshold=score / 2, every_image=True))
    above = replace(below, nsfw=replace(below.nsfw, threshold=min(1.0, score + 0.05)))

    flagged = evaluate(tmp_path / "below", below, [path]).images[0]
    clean = evaluate(tmp_path / "above", above, [path]).images[0]

    assert flagged.measurements["nsfw"] == clean.measurements["nsfw"] == round(score, 3)
    assert "nsfw" in flagged.issues
    assert "nsfw" not in clean.issues
    assert not flagged.unusable  # reported only: [nsfw] unusable is false by default


def test_nsfw_makes_an_image_unusable_only_when_the_config_says_so(tmp_path) -> None:
    path = LABELLED[0][1]
    config = Config(
        quality=QualityConfig(min_side=16),  # the labelled thumbnails are under 256 px
        nsfw=NsfwConfig(threshold=1e-6, unusable=True, every_image=True),
    )

    image = evaluate(tmp_path, config, [path]).images[0]
    plan = make_plan([image], config.target)

    assert image.unusable
    assert [removal.reason for removal in plan.removals] == ["nsfw"]
    assert "configured_unusable" not in image.to_dict()


def test_without_every_image_the_network_runs_only_where_style_needs_it(tmp_path) -> None:
    certain = [p for _, p in LABELLED[::7] if not in_band(statistics_probability(p), *BAND)][:2]
    evaluation = evaluate(tmp_path, Config(nsfw=NsfwConfig(threshold=1e-6)), certain)
    for image in evaluation.images:
        assert "nsfw" not in image.measurements
        assert "nsfw" not in image.issues
        assert image.measurements["style"]["stage"] == "statistics"
    assert evaluation.evaluator["usage"]["learned_stage"] == 0


def test_a_manifest_typed_image_keeps_its_type_and_says_so(tmp_path) -> None:
    path = LABELLED[0][1]
    image = TrainingImage(1, path.name, path, {"type": "bw_stylized"})
    config = Config()
    backend = LocalBackend(config.quality, config.style, config.nsfw)
    result = evaluate_actor([image], config, backend, EvaluationCache(tmp_path)).images[0]
    assert result.type == "bw_stylized"
    assert result.measurements["style"] == {"stage": "manifest", "confidence": 1.0}


# --- config --------------------------------------------------------------------------------------


def test_style_and_nsfw_keys_are_read_and_checked() -> None:
    config = parse_config(
        {
            "style": {"learned": False, "uncertain_low": 0.3, "uncertain_high": 0.6},
            "nsfw": {"threshold": 0.9, "unusable": True, "every_image": True},
        }
    )
    assert config.style.band is None
    assert replace(config.style, learned=True).band == (0.3, 0.6)
    assert config.nsfw == NsfwConfig(threshold=0.9, unusable=True, every_image=True)
    for bad, message in (
        ({"style": {"learned": "yes"}}, "'style.learned' must be true or false"),
        ({"style": {"uncertain_low": 0.9}}, "'style.uncertain_low' must not be above"),
        ({"style": {"uncertain_high": 1.5}}, "'style.uncertain_high' is out of range"),
        ({"nsfw": {"threshold": 0}}, "'nsfw.threshold' is out of range"),
        ({"nsfw": {"unusable": 1}}, "'nsfw.unusable' must be true or false"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config(bad)
