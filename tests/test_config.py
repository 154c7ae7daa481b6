"""The TOML config: defaults, validation naming the key, the results fingerprint."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import within

from training_data.config import (
    DEFAULT_MIX,
    Config,
    ConfigError,
    load_config,
    parse_config,
    result_settings,
)


def test_no_config_gives_the_products_defaults():
    config = load_config(None)
    assert config == Config()
    assert config.categories == ("photorealistic", "bw_stylized", "color_stylized")
    assert config.target.total == 20 and config.target.tolerance == 0.10
    assert config.target.mix == DEFAULT_MIX
    assert config.evaluator.backend == "local" and config.generator.backend == "local"
    assert config.download.max_bytes == 52_428_800
    assert config.download.deadline == 60.0
    assert config.limits.max_file_mib == 64 and config.limits.max_file_bytes == 64 * 1024**2


def test_a_full_file_is_read(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        """
[target]
total = 10
tolerance = 0
[target.mix]
portrait = 0.5
anime = 0.5
[evaluator]
backend = "openai"
[evaluator.openai]
base_url = "http://127.0.0.1:8000/v1"
mode = "composite"
concurrency = 2
[generator]
backend = "none"
[evaluator.openai.descriptions]
portrait = "a photograph that shows the head and shoulders"
anime = "a drawing in the style of Japanese animation"
[prompts]
anime = ["an anime drawing of {descriptor}"]
[download]
timeout = 5
retries = 0
"""
    )
    config = load_config(path)
    assert config.categories == ("portrait", "anime")
    assert config.target.tolerance == 0.0
    assert config.evaluator.openai.mode == "composite"
    assert config.evaluator.openai.model == "gpt-4.1-mini"
    assert config.download.retries == 0 and config.download.timeout == 5.0
    assert config.prompts_for("anime") == ["an anime drawing of {descriptor}"]
    assert config.prompts_for("portrait") == ["a portrait image of {descriptor}"]
    assert config.evaluator.openai.category_descriptions()["anime"].startswith("a drawing")


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"target": {"totl": 20}}, "target.totl"),
        ({"colour": {}}, "colour"),
        ({"target": {"total": "20"}}, "target.total"),
        ({"target": {"total": 0}}, "target.total"),
        ({"target": {"total": True}}, "target.total"),
        ({"target": {"tolerance": 1.5}}, "target.tolerance"),
        ({"target": {"mix": {"a": 0.5, "b": 0.4}}}, "target.mix"),
        ({"target": {"mix": {"a": 1.5}}}, "target.mix.a"),
        ({"target": {"mix": {"a/b": 1.0}}}, "target.mix"),
        ({"evaluator": {"backend": "gpt"}}, "evaluator.backend"),
        ({"evaluator": {"openai": {"mode": "batch"}}}, "evaluator.openai.mode"),
        ({"evaluator": {"openai": {"api_key": "sk-x"}}}, "evaluator.openai.api_key"),
        ({"evaluator": {"openai": {"timeout": -1}}}, "evaluator.openai.timeout"),
        ({"generator": {"backend": "dalle"}}, "generator.backend"),
        ({"generator": "local"}, "generator"),
        ({"prompts": {"bw_stylized": "one string"}}, "prompts.bw_stylized"),
        ({"prompts": {"bw_stylized": ["{name}"]}}, "prompts.bw_stylized"),
        ({"download": {"max_bytes": 1.5}}, "download.max_bytes"),
        ({"download": {"deadline": 0}}, "download.deadline"),
        ({"limits": {"max_file_mib": 0}}, "limits.max_file_mib"),
        ({"limits": {"max_file_mib": 1.5}}, "limits.max_file_mib"),
        ({"quality": {"min_side": -3}}, "quality.min_side"),
        ({"plan": {"when_short": "drop"}}, "plan.when_short"),
        ({"plan": {"min_total": 0}}, "plan.min_total"),
        ({"plan": {"min_total": "10"}}, "plan.min_total"),
        ({"plan": {"min_total": 25}}, "plan.min_total"),
        ({"plan": {"shrink": True}}, "plan.shrink"),
        ({"subject": {"enabled": "no"}}, "subject.enabled"),
        ({"subject": {"enabled": 0}}, "subject.enabled"),
        ({"subject": {"min_face_height": 1.5}}, "subject.min_face_height"),
        ({"subject": {"min_face_share": 0}}, "subject.min_face_share"),
        ({"subject": {"counted_face_ratio": -0.5}}, "subject.counted_face_ratio"),
        ({"subject": {"identity_threshold": "far"}}, "subject.identity_threshold"),
        ({"subject": {"face_blur": 20}}, "subject.face_blur"),
    ],
)
def test_bad_keys_and_values_name_the_key(raw, named):
    with pytest.raises(ConfigError) as error:
        parse_config(raw)
    assert named in str(error.value)
    assert "\n" not in str(error.value)


def test_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[target\ntotal = 20")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_result_settings_change_with_results_not_with_timeouts():
    base = result_settings(Config())
    slower = parse_config({"evaluator": {"openai": {"timeout": 5}}, "download": {"retries": 9}})
    assert result_settings(slower) == base
    other_target = parse_config({"target": {"total": 10}})
    assert result_settings(other_target)["targets"] != base["targets"]
    other_model = parse_config({"evaluator": {"backend": "openai", "openai": {"model": "m2"}}})
    assert result_settings(other_model)["evaluator"]["model"] == "m2"
    assert "api_key" not in str(result_settings(other_model))


def test_plan_keys_default_to_shrink_and_ten_and_are_read():
    assert Config().plan.when_short == "shrink" and Config().plan.min_total == 10
    config = parse_config({"plan": {"when_short": "keep", "min_total": 15}})
    assert config.plan.when_short == "keep" and config.plan.min_total == 15
    # the default min_total needs no change when the target is smaller: the plan caps it
    assert parse_config({"target": {"total": 6}}).plan.min_total == 10


def test_plan_keys_are_result_settings():
    keep = parse_config({"plan": {"when_short": "keep"}})
    assert result_settings(keep)["plan"] != result_settings(Config())["plan"]


@pytest.mark.parametrize(
    ("mix", "hint"),
    [
        ({"photorealistic": 0.65, "bw_stylised": 0.2, "color_stylized": 0.15}, "bw_stylized"),
        ({"photorealistic": 0.65, "bw_stylized": 0.2, "colour_stylized": 0.15}, "color_stylized"),
        ({"sketch": 0.5, "bw_stylized": 0.5}, None),
    ],
)
def test_a_category_the_local_evaluator_cannot_assign_is_an_error(mix, hint):
    with pytest.raises(ConfigError) as error:
        parse_config({"target": {"mix": mix}})
    if hint:
        assert f"did you mean {hint}?" in str(error.value)
    else:
        assert "did you mean" not in str(error.value)
    assert "assigns only photorealistic, bw_stylized, color_stylized" in str(error.value)
    assert "\n" not in str(error.value)


def test_an_openai_custom_category_needs_a_description():
    mix = {"photorealistic": 0.5, "anime": 0.5}
    with pytest.raises(ConfigError, match=r"target\.mix\.anime.*evaluator\.openai\.descriptions"):
        parse_config({"target": {"mix": mix}, "evaluator": {"backend": "openai"}})
    described = {"backend": "openai", "openai": {"descriptions": {"anime": "anime drawings"}}}
    config = parse_config({"target": {"mix": mix}, "evaluator": described})
    assert config.categories == ("photorealistic", "anime")
    assert result_settings(config)["evaluator"]["descriptions"] == {"anime": "anime drawings"}
    with pytest.raises(ConfigError, match=r"evaluator\.openai\.descriptions\.anime"):
        parse_config({"evaluator": {"openai": {"descriptions": {"anime": ""}}}})


def test_escalation_band_and_backend_are_checked():
    config = parse_config({"evaluator": {"escalate": "openai", "unsure_min": 0.25}})
    assert (config.evaluator.escalate, config.evaluator.unsure_min) == ("openai", 0.25)
    assert result_settings(config)["evaluator"]["escalate"]["unsure"] == [0.25, 0.75]
    assert "escalate" not in result_settings(Config())["evaluator"]
    for bad in ({"unsure_min": 0.8}, {"unsure_max": 1.0}, {"escalate": "claude"}):
        with pytest.raises(ConfigError, match=r"evaluator\.(unsure|escalate)"):
            parse_config({"evaluator": bad})
    with pytest.raises(ConfigError, match=r"'evaluator\.escalate' applies to the local backend"):
        parse_config({"evaluator": {"backend": "openai", "escalate": "openai"}})


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (os.mkfifo, "not a regular file (a FIFO)"),
        (lambda path: Path(path).write_text("x = " + "[" * 1000 + "]" * 1000), "nested too deeply"),
    ],
)
def test_a_hostile_config_file_is_one_line(tmp_path, make, reason):
    path = tmp_path / "config.toml"
    make(path)

    with pytest.raises(ConfigError, match=re.escape(reason)):
        within(10, load_config, path)


def test_subject_checks_are_on_by_default_and_a_table_turns_them_off_or_tunes_them(tmp_path):
    assert Config().subject.enabled
    path = tmp_path / "config.toml"
    path.write_text("[subject]\nenabled = false\nidentity_threshold = 0.5\nmin_face_height = 1\n")
    subject = load_config(path).subject
    assert not subject.enabled
    assert subject.identity_threshold == 0.5 and subject.min_face_height == 1.0
    assert subject.face_blur_threshold == Config().subject.face_blur_threshold


def test_result_settings_change_with_the_subject_thresholds():
    stricter = parse_config({"subject": {"identity_threshold": 0.5}})
    assert result_settings(stricter) != result_settings(Config())
    assert result_settings(stricter)["evaluator"]["subject"]["identity_threshold"] == 0.5
