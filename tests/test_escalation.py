"""Escalation to the vision model against a real server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import REPO, cli_command, cli_env, run_cli
from PIL import Image
from werkzeug import Request, Response

from training_data.config import (
    Config,
    EvaluatorConfig,
    NsfwConfig,
    OpenAIConfig,
    QualityConfig,
    StyleConfig,
)
from training_data.dataset import TrainingImage
from training_data.errors import ActorError
from training_data.escalation import VISION_STAGE, EscalatingBackend, is_unsure
from training_data.evaluation import (
    EvaluationCache,
    LocalBackend,
    decode_working_image,
    evaluate_actor,
)
from training_data.evaluation_openai import OpenAIBackend
from training_data.pipeline import make_backend
from training_data.style_learned import classify_style_cascade

STYLES = REPO / "tests" / "data" / "styles"
KEY = "sk-escalation-test-" + "e" * 20
VISION_ANSWER = "bw_stylized"
BAND = (EvaluatorConfig().unsure_min, EvaluatorConfig().unsure_max)


def test_unsure_means_a_photo_probability_inside_the_band():
    low, high = 0.3, 0.75
    assert is_unsure({"photo_probability": 0.3}, (low, high))
    assert is_unsure({"photo_probability": 0.5}, (low, high))
    assert is_unsure({"photo_probability": 0.75}, (low, high))
    assert not is_unsure({"photo_probability": 0.29}, (low, high))
    assert not is_unsure({"photo_probability": 0.9}, (low, high))
    assert not is_unsure(None, (low, high))  # manifest-typed: nothing to settle
    assert not is_unsure({}, (low, high))
    assert not is_unsure({"photo_probability": True}, (low, high))
    # Where the learned stage decided, its own probability is the one that counts.
    learned = {"stage": "learned", "photo_probability": 0.5, "learned_photo_probability": 0.95}
    assert not is_unsure(learned, (low, high))
    assert is_unsure(learned | {"learned_photo_probability": 0.6}, (low, high))
    assert not is_unsure({"stage": "statistics", "photo_probability": 0.9}, (low, high))


def labelled_images(unsure: bool, count: int) -> list[Path]:
    """Real labelled images the local stage is (un)sure about, found by running it."""
    found = []
    for path in sorted(STYLES.glob("*/*.jpg")):
        working = decode_working_image(path.read_bytes())[0]
        style = classify_style_cascade(working, None, None, StyleConfig().band).measurements
        if is_unsure(style, BAND) == unsure:
            found.append(path)
        if len(found) == count:
            return found
    raise AssertionError("the labelled set has too few such images")


def write_actor(folder: Path, sources: list[Path]) -> list[TrainingImage]:
    """Untyped images (no manifest), so the local stage decides their style."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for number, source in enumerate(sources, start=1):
        path = folder / f"a_{number}.jpg"
        shutil.copyfile(source, path)
        images.append(TrainingImage(number, path.name, path, {}))
    return images


def answer(request: Request) -> Response:
    """Labels every requested image VISION_ANSWER, as a vision model behind the API would."""
    body = request.get_json()
    schema = body["response_format"]["json_schema"]["schema"]
    numbers = schema["properties"]["images"]["items"]["properties"]["number"]["enum"]
    images = [
        {"number": n, "category": VISION_ANSWER, "quality_score": 4, "issues": [], "note": "ink"}
        for n in numbers
    ]
    completion = {
        "choices": [{"message": {"role": "assistant", "content": json.dumps({"images": images})}}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 30, "total_tokens": 330},
    }
    return Response(json.dumps(completion), content_type="application/json")


def sent_images(request: Request) -> list[Image.Image]:
    parts = request.get_json()["messages"][-1]["content"]
    urls = [part["image_url"]["url"] for part in parts if part["type"] == "image_url"]
    return [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) for url in urls]


def escalating_config(base_url: str, **openai: object) -> Config:
    settings = replace(OpenAIConfig(base_url=base_url, max_retries=1, timeout=10.0), **openai)
    return Config(evaluator=EvaluatorConfig(escalate="openai", openai=settings))


@pytest.fixture
def actor(tmp_path: Path) -> tuple[list[TrainingImage], set[int]]:
    unsure, sure = labelled_images(True, 2), labelled_images(False, 3)
    images = write_actor(tmp_path / "actor", [unsure[0], *sure, unsure[1]])
    return images, {1, 5}


def test_only_unsure_images_go_to_the_vision_model_and_it_decides_their_style(
    httpserver, tmp_path, actor, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(answer)
    images, unsure = actor
    config = escalating_config(httpserver.url_for("/v1"))
    backend = make_backend(config)
    alone_cache = EvaluationCache(tmp_path / "alone")
    local = evaluate_actor(images, Config(), LocalBackend(QualityConfig()), alone_cache)
    result = evaluate_actor(images, config, backend, EvaluationCache(tmp_path / "cache"))

    assert len(httpserver.log) == len(unsure)  # per_image: one request per escalated image
    for request, _ in httpserver.log:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert len(sent_images(request)) == 1
    for image, alone in zip(result.images, local.images, strict=True):
        style = image.measurements["style"]
        if image.number in unsure:
            assert image.type == VISION_ANSWER
            assert style["stage"] == VISION_STAGE
            assert style["local_category"] == alone.type
            assert style["vision_model"] == {"quality_score": 4, "issues": []}
            assert image.note == "ink"
        else:
            assert (image.type, style["stage"]) == (
                alone.type,
                alone.measurements["style"]["stage"],
            )
            assert style["stage"] in ("statistics", "learned")
            assert image.quality_score == alone.quality_score and image.issues == alone.issues
    usage = backend.usage()
    assert (usage["images_judged"], usage["escalated"], usage["requests"]) == (5, 2, 2)
    assert usage["total_tokens"] == 660


def test_an_escalated_image_keeps_the_nsfw_score_of_its_local_pass(
    httpserver, tmp_path, actor, monkeypatch
):
    """With [nsfw] every_image the network runs once per image, in the local pass; an image the
    vision model decides keeps that score (and an `nsfw` issue at most once)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(answer)
    images, unsure = actor
    config = replace(
        escalating_config(httpserver.url_for("/v1")),
        nsfw=NsfwConfig(every_image=True, threshold=0.01),
    )
    local_config = replace(Config(), nsfw=config.nsfw)
    local = evaluate_actor(
        images,
        local_config,
        LocalBackend(QualityConfig(), nsfw=config.nsfw),
        EvaluationCache(tmp_path / "alone"),
    )
    result = evaluate_actor(images, config, make_backend(config), EvaluationCache(tmp_path / "c"))
    for image, alone in zip(result.images, local.images, strict=True):
        assert image.measurements["nsfw"] == alone.measurements["nsfw"]
        assert image.issues.count("nsfw") == alone.issues.count("nsfw") <= 1
    assert {
        image.number for image in result.images if "vision_model" in image.measurements["style"]
    } == unsure


def test_a_rerun_is_answered_from_the_cache(httpserver, tmp_path, actor):
    httpserver.expect_request("/v1/chat/completions").respond_with_handler(answer)
    images, unsure = actor
    config = escalating_config(httpserver.url_for("/v1"))
    cache = EvaluationCache(tmp_path / "cache")
    evaluate_actor(images, config, make_backend(config), cache)
    again = make_backend(config)
    rerun = evaluate_actor(images, config, again, cache)

    assert len(httpserver.log) == len(unsure)
    assert again.usage()["requests"] == 0 and rerun.evaluator["cache_hits"] == 5
    stages = {image.number: image.measurements["style"]["stage"] for image in rerun.images}
    assert {n for n, stage in stages.items() if stage == VISION_STAGE} == unsure


def test_composite_mode_sends_one_sheet_of_just_the_unsure_images(httpserver, tmp_path, actor):
    httpserver.expect_request("/v1/chat/completions").respond_with_handler(answer)
    images, unsure = actor
    config = escalating_config(httpserver.url_for("/v1"), mode="composite")
    evaluate_actor(images, config, make_backend(config), EvaluationCache(tmp_path / "cache"))

    assert len(httpserver.log) == 1
    body = httpserver.log[0][0].get_json()
    numbers = body["response_format"]["json_schema"]["schema"]["properties"]["images"]
    assert set(numbers["items"]["properties"]["number"]["enum"]) == unsure


def test_a_bad_answer_is_retried_and_a_persistent_one_fails_the_actor(httpserver, tmp_path, actor):
    images, _ = actor
    bad = {"choices": [{"message": {"content": "not json"}}]}
    httpserver.expect_request("/v1/chat/completions").respond_with_json(bad)
    config = escalating_config(httpserver.url_for("/v1"), concurrency=1)
    backend = OpenAIBackend(config.evaluator.openai, config.categories, backoff=0.01)
    escalating = EscalatingBackend(LocalBackend(config.quality), backend, BAND)
    with pytest.raises(ActorError, match=r"answer is not JSON.*after 2 attempts"):
        evaluate_actor(images, config, escalating, EvaluationCache(tmp_path / "cache"))


def test_missing_key_stops_before_progress_is_touched(tmp_path):
    actor = tmp_path / "data" / "actors" / "0000_actor" / "training_data"
    write_actor(actor, labelled_images(True, 1))
    config = tmp_path / "escalate.toml"
    config.write_text('[evaluator]\nescalate = "openai"\n')  # the default base_url: api.openai.com
    out = tmp_path / "out"
    result = run_cli(
        "--all", "--config", config, "--data-dir", tmp_path / "data", "--output-dir", out,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "OPENAI_API_KEY is not set" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (out / "progress.json").exists()


def test_summary_and_evaluation_json_show_the_share_escalated_requests_and_tokens(
    httpserver, tmp_path
):
    httpserver.expect_request("/v1/chat/completions").respond_with_handler(answer)
    unsure, sure = labelled_images(True, 2), labelled_images(False, 2)
    actor = tmp_path / "data" / "actors" / "0000_actor" / "training_data"
    write_actor(actor, [*unsure, *sure])
    config = tmp_path / "escalate.toml"
    config.write_text(
        '[evaluator]\nescalate = "openai"\n[evaluator.openai]\n'
        f'base_url = "{httpserver.url_for("/v1")}"\n'
    )
    out = tmp_path / "out"
    command = cli_command(
        "--all", "--config", config, "--data-dir", tmp_path / "data", "--output-dir", out
    )
    env = cli_env() | {"OPENAI_API_KEY": KEY}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Escalated to the vision model: 2 of 4 images judged (50.0%)" in result.stdout
    assert re.search(r"Evaluator requests: 2, cache hits: 0, tokens: 660", result.stdout)
    document = json.loads((out / "0000_actor_evaluation.json").read_text())
    assert document["evaluator"]["backend"] == "local+openai"
    assert document["evaluator"]["escalation"] == {
        "styled_locally": 4,
        "escalated": 2,
        "share": 0.5,
        "requests": 2,
        "prompt_tokens": 600,
        "completion_tokens": 60,
        "total_tokens": 660,
    }
    for output in (result.stdout, result.stderr):
        assert KEY not in output
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
