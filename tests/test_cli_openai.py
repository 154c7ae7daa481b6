"""The openai evaluator through the CLI: the summary's spend, and the cache on a second run."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import cli_command, cli_env
from werkzeug import Request, Response

KEY = "sk-cli-test-" + "k" * 24


def answer_every_image(request: Request) -> Response:
    body = request.get_json()
    schema = body["response_format"]["json_schema"]["schema"]
    numbers = schema["properties"]["images"]["items"]["properties"]["number"]["enum"]
    images = [
        {"number": n, "category": "photorealistic", "quality_score": 8, "issues": [], "note": "ok"}
        for n in numbers
    ]
    completion = {
        "id": "chatcmpl-cli",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": json.dumps({"images": images})},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }
    return Response(json.dumps(completion), content_type="application/json")


def test_summary_counts_requests_and_tokens_and_the_cache_saves_a_rerun(
    make_dataset, tmp_path, httpserver
):

    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(
        answer_every_image
    )
    data_dir = make_dataset(2)
    config = tmp_path / "openai.toml"
    config.write_text(
        '[evaluator]\nbackend = "openai"\n[evaluator.openai]\n'
        f'base_url = "{httpserver.url_for("/v1")}"\n'
    )
    out = tmp_path / "out"
    command = cli_command("--all", "--config", config, "--data-dir", data_dir, "--output-dir", out)
    env = cli_env() | {"OPENAI_API_KEY": KEY}
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Evaluator requests: 40, cache hits: 0, tokens: 4800" in first.stdout
    assert len(httpserver.log) == 40
    document = json.loads((out / "0000_actor_evaluation.json").read_text())
    assert document["images"][0]["note"] == "ok"

    rerun = subprocess.run(
        [*command, "--no-resume"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert rerun.returncode == 0, rerun.stderr
    assert re.search(r"Evaluator requests: 0, cache hits: 40, tokens: 0", rerun.stdout)
    assert len(httpserver.log) == 40
    for output in (first.stdout, first.stderr, rerun.stdout, rerun.stderr):
        assert KEY not in output
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def echo_the_key(request: Request) -> Response:
    """Quotes the key back: in every note, and as the category of image 21 (only 0001 has one)."""
    body = request.get_json()
    schema = body["response_format"]["json_schema"]["schema"]
    numbers = schema["properties"]["images"]["items"]["properties"]["number"]["enum"]
    key = request.headers["Authorization"].removeprefix("Bearer ")
    images = [
        {
            "number": n,
            "category": key if n == 21 else "photorealistic",
            "quality_score": 8,
            "issues": [],
            "note": f"sent with {key}",
        }
        for n in numbers
    ]
    message = {"role": "assistant", "content": json.dumps({"images": images})}
    completion = {"choices": [{"index": 0, "message": message}]}
    return Response(json.dumps(completion), content_type="application/json")


def test_a_key_the_server_quotes_back_reaches_no_output_and_no_file(
    make_dataset, tmp_path, httpserver
):
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(
        echo_the_key
    )
    make_dataset(1)
    data_dir = make_dataset(
        1, (("photorealistic", 14), ("bw_stylized", 4), ("color_stylized", 3)), start=1
    )
    config = tmp_path / "openai.toml"
    config.write_text(
        '[evaluator]\nbackend = "openai"\n[evaluator.openai]\nmax_retries = 0\n'
        f'base_url = "{httpserver.url_for("/v1")}"\n'
    )
    out = tmp_path / "out"
    command = cli_command("--all", "--config", config, "--data-dir", data_dir, "--output-dir", out)
    env = cli_env() | {"OPENAI_API_KEY": KEY}

    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env)

    assert run.returncode == 1, run.stdout + run.stderr
    document = json.loads((out / "0000_actor_evaluation.json").read_text())
    assert document["images"][0]["note"] == "sent with [redacted]"
    progress = json.loads((out / "progress.json").read_text())
    assert "unknown category '[redacted]'" in progress["failed_actors"][0]["error"]
    assert KEY not in run.stdout + run.stderr
    for path in [*out.rglob("*"), *data_dir.rglob("*")]:
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
