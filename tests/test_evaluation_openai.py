"""The `openai` evaluator against a real chat-completions server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from training_data.config import OpenAIConfig
from training_data.errors import ActorError, FatalRunError
from training_data.evaluation import ImageSample, Judgement
from training_data.evaluation_openai import (
    JUDGED_ISSUES,
    RETRY_AFTER_CAP,
    OpenAIBackend,
    retry_after_seconds,
)

CATEGORIES = ("photorealistic", "bw_stylized", "color_stylized")
KEY = "sk-test-SECRET0123456789abcdef"

# What the fake model answers for each image number, and the colour of that image's file.
LABELS: dict[int, tuple[str, int, list[str]]] = {
    1: ("photorealistic", 8, []),
    2: ("bw_stylized", 6, ["blurry"]),
    3: ("color_stylized", 3, ["too_dark", "low_information"]),
    4: ("photorealistic", 10, []),
    5: ("bw_stylized", 1, ["too_small"]),
    6: ("color_stylized", 7, ["too_bright"]),
}


def colour_of(number: int) -> tuple[int, int, int]:
    return ((number * 40) % 256, 255 - number * 35, 60 + number * 25)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    at: float
    authorization: str | None
    body: dict[str, Any]


class ChatServer:
    """Speaks POST /v1/chat/completions; scripted replies first, then correct labels."""

    def __init__(self) -> None:
        self.script: list[Callable[[dict[str, Any]], Reply]] = []
        self.delay = 0.0
        self.received: list[Received] = []
        self.problems: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.handle_error = lambda request, address: None  # client gave up (timeouts)
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def then(self, *replies: Reply | Callable[[dict[str, Any]], Reply]) -> None:
        for reply in replies:
            self.script.append(reply if callable(reply) else (lambda body, r=reply: r))

    def _reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            scripted = self.script.pop(0) if self.script else None
        return scripted(body) if scripted else Reply(body=completion(self.labels(body)))

    def labels(self, body: dict[str, Any]) -> dict[str, Any]:
        """Label every requested number from LABELS, after checking the request is well-formed."""
        self.check_request(body)
        return {"images": [entry(number) for number in requested_numbers(body)]}

    def check_request(self, body: dict[str, Any]) -> None:
        schema = body["response_format"]["json_schema"]
        item = schema["schema"]["properties"]["images"]["items"]["properties"]
        if body["response_format"]["type"] != "json_schema" or schema["strict"] is not True:
            self.problems.append("response_format is not a strict json_schema")
        if item["category"]["enum"] != list(CATEGORIES):
            self.problems.append(f"category enum {item['category']['enum']}")
        if item["issues"]["items"]["enum"] != list(JUDGED_ISSUES):
            self.problems.append(f"issues enum {item['issues']['items']['enum']}")
        images = [decode_image(part) for part in user_parts(body) if part["type"] == "image_url"]
        numbers = requested_numbers(body)
        if len(images) != 1:
            self.problems.append(f"{len(images)} images in one request")
        elif len(numbers) == 1:
            self.check_single_image(images[0], numbers[0])

    def check_single_image(self, image: Image.Image, number: int) -> None:
        if max(image.size) > 512:
            self.problems.append(f"image {number} sent at {image.size}")
        mean = image.resize((1, 1)).getpixel((0, 0))
        if any(abs(a - b) > 12 for a, b in zip(mean, colour_of(number), strict=True)):
            self.problems.append(f"image {number} has colour {mean}, not {colour_of(number)}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.received.append(
                        Received(time.monotonic(), self.headers.get("Authorization"), body)
                    )
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if self.path != "/v1/chat/completions":
                        server.problems.append(f"POST to {self.path}")
                    reply = server._reply(body)
                    time.sleep(reply.delay or server.delay)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
                data = payload if isinstance(payload, bytes) else payload.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def user_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body["messages"][-1]["content"]


def requested_numbers(body: dict[str, Any]) -> list[int]:
    schema = body["response_format"]["json_schema"]["schema"]
    return schema["properties"]["images"]["items"]["properties"]["number"]["enum"]


def decode_image(part: dict[str, Any]) -> Image.Image:
    prefix, data = part["image_url"]["url"].split(",", 1)
    assert prefix == "data:image/jpeg;base64"
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    assert image.format == "JPEG"
    return image.convert("RGB")


def entry(number: int) -> dict[str, Any]:
    category, score, issues = LABELS[number]
    return {
        "number": number,
        "category": category,
        "quality_score": score,
        "issues": issues,
        "note": f"note {number}",
    }


def completion(answer: Any, usage: dict[str, int] | None = None) -> dict[str, Any]:
    content = answer if isinstance(answer, str) else json.dumps(answer)
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": usage or {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
    }


def expected(number: int) -> Judgement:
    category, score, issues = LABELS[number]
    return Judgement(type=category, quality_score=score, issues=issues, note=f"note {number}")


@pytest.fixture(autouse=True)
def no_proxy_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def server() -> Iterator[ChatServer]:
    chat = ChatServer()
    chat.start()
    yield chat
    chat.stop()


@pytest.fixture
def samples(tmp_path: Path) -> list[ImageSample]:
    made = []
    for number in LABELS:
        path = tmp_path / f"actor_{number}.jpg"
        Image.new("RGB", (800, 600), colour_of(number)).save(path, quality=95)
        with Image.open(path) as image:
            working = image.convert("RGB").resize((256, 192))
        made.append(ImageSample(number, path.name, path, working, 800, 600, None))
    return made


def backend(server: ChatServer, **changes: Any) -> OpenAIBackend:
    settings = replace(
        OpenAIConfig(base_url=server.url, timeout=5.0, max_retries=2, concurrency=2), **changes
    )
    return OpenAIBackend(settings, CATEGORIES, api_key=KEY, backoff=0.01)


def test_per_image_labels_come_back_as_sent(server: ChatServer, samples: list[ImageSample]):
    verdicts = backend(server).judge(samples, CATEGORIES)

    assert verdicts == {number: expected(number) for number in LABELS}
    assert server.problems == []
    assert len(server.received) == len(samples)
    assert {r.authorization for r in server.received} == {f"Bearer {KEY}"}
    assert sorted(requested_numbers(r.body)[0] for r in server.received) == list(LABELS)


def test_composite_sends_one_numbered_sheet(server: ChatServer, samples: list[ImageSample]):
    verdicts = backend(server, mode="composite").judge(samples, CATEGORIES)

    assert verdicts == {number: expected(number) for number in LABELS}
    assert server.problems == []
    assert len(server.received) == 1
    assert requested_numbers(server.received[0].body) == list(LABELS)
    [sheet_part] = [p for p in user_parts(server.received[0].body) if p["type"] == "image_url"]
    sheet = decode_image(sheet_part)
    assert sheet.width > 512 and max(sheet.size) <= 2048


def bad_answer(mutate: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Reply]:
    def reply(body: dict[str, Any]) -> Reply:
        answer = {"images": [entry(n) for n in requested_numbers(body)]}
        return Reply(body=completion(mutate(answer)))

    return reply


def drop_first(answer: dict[str, Any]) -> dict[str, Any]:
    return {"images": answer["images"][1:]}


def repeat_first(answer: dict[str, Any]) -> dict[str, Any]:
    return {"images": answer["images"] + answer["images"][:1]}


def add_unknown_number(answer: dict[str, Any]) -> dict[str, Any]:
    return {"images": [*answer["images"], entry(1) | {"number": 99}]}


def set_first(field_name: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(answer: dict[str, Any]) -> dict[str, Any]:
        answer["images"][0][field_name] = value
        return answer

    return mutate


INVALID_ANSWERS = {
    "malformed JSON": (lambda answer: '{"images": [', "answer is not JSON"),
    "missing number": (drop_first, "answer lacks image 1"),
    "duplicate number": (repeat_first, "answer labels image 1 more than once"),
    "unknown number": (add_unknown_number, "answer labels unknown image 99"),
    "unknown category": (set_first("category", "sketch"), "unknown category 'sketch'"),
    "score out of range": (set_first("quality_score", 11), "quality_score 11"),
    "fractional score": (set_first("quality_score", 7.5), "quality_score 7.5"),
    "unknown issue": (set_first("issues", ["duplicate"]), "unknown issue 'duplicate'"),
}


@pytest.mark.parametrize("case", INVALID_ANSWERS, ids=list(INVALID_ANSWERS))
def test_invalid_answer_is_retried_then_fails_the_actor(
    case: str, server: ChatServer, samples: list[ImageSample]
):
    mutate, reason = INVALID_ANSWERS[case]
    server.then(*[bad_answer(mutate)] * 3)

    with pytest.raises(ActorError) as failure:
        backend(server, mode="composite", max_retries=2).judge(samples, CATEGORIES)

    assert str(failure.value).startswith("openai evaluator: ")
    assert reason in str(failure.value)
    assert str(failure.value).endswith("after 3 attempts")
    assert len(server.received) == 3


def test_invalid_answer_then_valid_one_succeeds(server: ChatServer, samples: list[ImageSample]):
    server.then(bad_answer(drop_first), Reply(body={"not": "a completion"}))

    verdicts = backend(server, mode="composite").judge(samples[:3], CATEGORIES)

    assert verdicts == {n: expected(n) for n in (1, 2, 3)}
    assert len(server.received) == 3


def test_fenced_json_is_accepted(server: ChatServer, samples: list[ImageSample]):
    server.then(
        lambda body: Reply(body=completion(f"```json\n{json.dumps(server.labels(body))}\n```"))
    )

    assert backend(server).judge(samples[:1], CATEGORIES) == {1: expected(1)}
    assert len(server.received) == 1


def test_429_waits_for_retry_after(server: ChatServer, samples: list[ImageSample]):
    server.then(
        Reply(
            429,
            {"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
            {"Retry-After": "1"},
        )
    )

    verdicts = backend(server).judge(samples[:1], CATEGORIES)

    assert verdicts == {1: expected(1)}
    first, second = server.received
    assert second.at - first.at >= 1.0


def test_500_then_success(server: ChatServer, samples: list[ImageSample]):
    server.then(Reply(500, {"error": {"message": "upstream hiccup"}}))

    assert backend(server).judge(samples[:1], CATEGORIES) == {1: expected(1)}
    assert len(server.received) == 2


def test_5xx_every_time_fails_the_actor(server: ChatServer, samples: list[ImageSample]):
    server.then(*[Reply(503, b"<html>overloaded</html>")] * 2)

    with pytest.raises(ActorError, match=r"HTTP 503: <html>overloaded</html> after 2 attempts"):
        backend(server, max_retries=1).judge(samples[:1], CATEGORIES)


def test_timeout_is_retried_then_fails_the_actor(server: ChatServer, samples: list[ImageSample]):
    server.delay = 1.0

    with pytest.raises(ActorError, match=r"no answer within 0.2 s after 2 attempts"):
        backend(server, timeout=0.2, max_retries=1).judge(samples[:1], CATEGORIES)

    assert len(server.received) == 2


def test_unreachable_server_fails_the_actor(samples: list[ImageSample]):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    evaluator = OpenAIBackend(settings, CATEGORIES, api_key=KEY, backoff=0.01)

    with pytest.raises(ActorError, match=r"cannot reach .* after 2 attempts"):
        evaluator.judge(samples[:1], CATEGORIES)
    assert evaluator.usage()["requests"] == 2


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}), "rejected"),
        (Reply(403, {"error": {"message": "project has no access"}}), "rejected the API key"),
        (
            Reply(
                429,
                {"error": {"message": "quota", "type": "insufficient_quota", "code": None}},
            ),
            "quota is exhausted",
        ),
        (Reply(404, {"error": {"message": "model not found"}}), "HTTP 404"),
    ],
    ids=["401", "403", "insufficient_quota", "404"],
)
def test_faults_that_fail_every_actor_stop_the_run(
    reply: Reply, message: str, server: ChatServer, samples: list[ImageSample]
):
    server.then(*[reply] * len(samples))

    with pytest.raises(FatalRunError, match=message) as failure:
        backend(server, concurrency=1).judge(samples, CATEGORIES)

    assert len(server.received) == 1
    assert "\n" not in str(failure.value)
    assert KEY not in str(failure.value)


def test_400_fails_the_actor_without_retry(server: ChatServer, samples: list[ImageSample]):
    server.then(Reply(400, {"error": {"message": "image too large"}}))

    with pytest.raises(ActorError, match=r"^openai evaluator: HTTP 400: image too large$"):
        backend(server, concurrency=1).judge(samples[:1], CATEGORIES)
    assert len(server.received) == 1


def test_key_appears_in_no_message_log_or_file(
    server: ChatServer, samples: list[ImageSample], tmp_path: Path
):
    log_file = tmp_path / "evaluator.log"
    handler = logging.FileHandler(log_file)
    logger = logging.getLogger("training_data.evaluation_openai")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    echo = {"error": {"message": f"bad request from key {KEY}", "type": "invalid_request"}}
    server.then(
        Reply(500, echo),
        Reply(400, echo),
        Reply(500, f"<pre>Authorization: Bearer {KEY}</pre>".encode()),
        Reply(500, echo),
        Reply(401, echo),
    )
    evaluator = backend(server, concurrency=1, max_retries=1)
    failures = []
    try:
        for _ in range(3):
            with pytest.raises((ActorError, FatalRunError)) as failure:
                evaluator.judge(samples[:1], CATEGORIES)
            failures.append(failure.value)
    finally:
        logger.removeHandler(handler)
        handler.close()
    for index, error in enumerate(failures):
        (tmp_path / f"error{index}.txt").write_text(
            "".join(traceback.format_exception(error)), encoding="utf-8"
        )
    (tmp_path / "state.json").write_text(
        json.dumps({"settings": evaluator.settings(), "usage": evaluator.usage()})
    )

    assert [type(e) for e in failures] == [ActorError, ActorError, FatalRunError]
    assert "[redacted]" in str(failures[0]) and "[redacted]" in log_file.read_text()
    assert {r.authorization for r in server.received} == {f"Bearer {KEY}"}
    leaks = [p.name for p in tmp_path.rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert leaks == []


def labelled(number: int, **changes: Any) -> dict[str, Any]:
    return {"images": [entry(number) | changes]}


def escaped(text: str) -> str:
    """JSON that spells every character of ``text`` as an escape: the key hides from the text."""
    return "".join(f"\\u{ord(character):04x}" for character in text)


ECHOED_IN_200 = {
    "non-JSON content": (Reply(body=completion(f"I see {KEY}")), "answer is not JSON"),
    "non-JSON body": (Reply(body=f"proxy saw Bearer {KEY}".encode()), "server answer is not JSON"),
    "category name": (Reply(body=completion(labelled(1, category=KEY))), "unknown category"),
    "refusal": (
        Reply(body={"choices": [{"message": {"refusal": f"not with key {KEY}"}}]}),
        "the model refused",
    ),
    "escaped in a category": (
        Reply(
            body=completion(
                '{"images": [{"number": 1, "category": "' + escaped(KEY) + '", '
                '"quality_score": 5, "issues": [], "note": "x"}]}'
            )
        ),
        "unknown category",
    ),
}


@pytest.mark.parametrize(("reply", "problem"), ECHOED_IN_200.values(), ids=ECHOED_IN_200.keys())
def test_a_key_quoted_back_in_a_200_answer_is_redacted_from_warnings_and_errors(
    server: ChatServer, samples: list[ImageSample], caplog, reply: Reply, problem: str
):
    server.then(reply, reply)
    caplog.set_level(logging.WARNING, "training_data.evaluation_openai")

    with pytest.raises(ActorError) as failure:
        backend(server, concurrency=1, max_retries=1).judge(samples[:1], CATEGORIES)

    assert problem in str(failure.value) and problem in caplog.text
    assert KEY not in str(failure.value) and KEY not in caplog.text
    if problem != "server answer is not JSON":  # that one does not quote the body at all
        assert "[redacted]" in str(failure.value)


@pytest.mark.parametrize("spelled", [KEY, escaped(KEY)], ids=["plain", "escaped"])
def test_a_key_quoted_back_in_a_note_is_redacted_before_the_verdict_is_kept(
    server: ChatServer, samples: list[ImageSample], spelled: str
):
    answer = json.dumps(labelled(1, note="NOTE")).replace("NOTE", f"the key is {spelled}")
    server.then(Reply(body=completion(answer)))

    verdicts = backend(server).judge(samples[:1], CATEGORIES)

    assert verdicts[1].note == "the key is [redacted]"


def test_an_answer_nested_a_thousand_levels_deep_is_an_invalid_answer(
    server: ChatServer, samples: list[ImageSample]
):
    deep = Reply(body=("[" * 1000 + "]" * 1000).encode())
    server.then(deep, deep)

    with pytest.raises(ActorError, match="server answer is not JSON after 2 attempts"):
        backend(server, concurrency=1, max_retries=1).judge(samples[:1], CATEGORIES)


def test_usage_counts_tokens_from_the_usage_field(server: ChatServer, samples: list[ImageSample]):
    usage = {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}
    server.then(lambda body: Reply(body=completion("not json", usage)))
    for _ in range(2):
        server.then(lambda body: Reply(body=completion(server.labels(body), usage)))
    evaluator = backend(server, concurrency=1)

    evaluator.judge(samples[:2], CATEGORIES)

    assert evaluator.usage() == {
        "requests": 3,
        "prompt_tokens": 3000,
        "completion_tokens": 150,
        "total_tokens": 3150,
    }


def test_concurrency_limit_is_respected(server: ChatServer, samples: list[ImageSample]):
    server.delay = 0.3

    verdicts = backend(server, concurrency=3).judge(samples, CATEGORIES)

    assert len(verdicts) == len(samples)
    assert server.max_in_flight == 3


def test_one_failing_image_fails_the_actor_and_stops_the_rest(
    server: ChatServer, samples: list[ImageSample]
):
    server.then(Reply(400, {"error": {"message": "content policy"}}))

    with pytest.raises(ActorError, match="content policy"):
        backend(server, concurrency=1).judge(samples, CATEGORIES)
    assert len(server.received) < len(samples)


def test_missing_key_stops_the_run_unless_the_server_is_local(server: ChatServer):
    remote = OpenAIConfig(base_url="https://api.example.com/v1")
    with pytest.raises(FatalRunError, match="OPENAI_API_KEY is not set"):
        OpenAIBackend(remote, CATEGORIES)
    with pytest.raises(FatalRunError, match="OPENAI_API_KEY is not set"):
        OpenAIBackend(remote, CATEGORIES, api_key="")


def test_local_server_needs_no_key(server: ChatServer, samples: list[ImageSample]):
    evaluator = OpenAIBackend(OpenAIConfig(base_url=server.url), CATEGORIES)

    assert evaluator.judge(samples[:1], CATEGORIES) == {1: expected(1)}
    assert server.received[0].authorization is None


def test_key_comes_from_the_environment(
    server: ChatServer, samples: list[ImageSample], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-123456")

    OpenAIBackend(OpenAIConfig(base_url=server.url), CATEGORIES).judge(samples[:1], CATEGORIES)

    assert server.received[0].authorization == "Bearer sk-from-env-123456"


def test_settings_change_with_what_changes_verdicts_and_hold_no_key():
    def settings(categories: tuple[str, ...] = CATEGORIES, **changes: Any) -> dict[str, Any]:
        config = replace(OpenAIConfig(), **changes)
        return OpenAIBackend(config, categories, api_key=KEY).settings()

    base = settings()
    assert KEY not in json.dumps(base)
    assert base["model"] == "gpt-4.1-mini" and base["mode"] == "per_image"
    assert base["categories"] == list(CATEGORIES) and "prompt_version" in base
    assert settings(model="gpt-4.1") != base
    assert settings(mode="composite") != base
    assert settings(base_url="http://127.0.0.1:8000/v1") != base
    assert settings(categories=("photo", "sketch"))["prompt_sha256"] != base["prompt_sha256"]
    assert settings(timeout=5.0, max_retries=0, concurrency=1) == base


def test_a_description_from_the_config_reaches_the_prompt(
    server: ChatServer, samples: list[ImageSample]
):
    described = {"bw_stylized": "monochrome line art of the person, never a photograph"}
    backend(server, descriptions=described).judge(samples[:1], CATEGORIES)
    system = server.received[0].body["messages"][0]["content"]
    assert "  - bw_stylized: monochrome line art of the person, never a photograph" in system
    plain = OpenAIBackend(OpenAIConfig(), CATEGORIES, api_key=KEY).settings()
    custom = OpenAIBackend(OpenAIConfig(descriptions=described), CATEGORIES, api_key=KEY)
    assert custom.settings()["prompt_sha256"] != plain["prompt_sha256"]


def test_retry_after_forms():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

    def parse(**headers: str) -> float | None:
        return retry_after_seconds(headers, now=lambda: now)

    assert parse(**{"retry-after": "2.5"}) == 2.5
    assert parse(**{"retry-after": "Wed, 01 Jan 2025 12:00:07 GMT"}) == 7.0
    assert parse(**{"retry-after": "Wed, 01 Jan 2025 11:00:00 GMT"}) == 0.0
    assert parse(**{"retry-after": "86400"}) == RETRY_AFTER_CAP
    assert parse(**{"retry-after": "soon"}) is None
    assert parse(**{"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse() is None


def test_image_unreadable_since_sampling_fails_the_actor_without_a_request(
    server: ChatServer, samples: list[ImageSample]
):
    samples[0].path.write_bytes(b"truncated")

    with pytest.raises(ActorError, match=r"cannot re-read actor_1\.jpg"):
        backend(server).judge(samples[:1], CATEGORIES)
    assert server.received == []


def test_transparent_png_is_sent_on_white(server: ChatServer, tmp_path: Path):
    path = tmp_path / "actor_1.png"
    Image.new("RGBA", (300, 300), (0, 0, 0, 0)).save(path)
    sample = ImageSample(1, path.name, path, Image.new("RGB", (64, 64)), 300, 300, None)
    server.then(lambda body: Reply(body=completion({"images": [entry(1)]})))

    backend(server).judge([sample], CATEGORIES)

    [part] = [p for p in user_parts(server.received[0].body) if p["type"] == "image_url"]
    assert decode_image(part).getpixel((150, 150)) >= (250, 250, 250)
