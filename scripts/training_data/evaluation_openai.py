"""The `openai` evaluation backend: any OpenAI-compatible chat-completions endpoint.

Images go out as JPEG data URLs (each image re-read from its file at up to 512 px, or one numbered
contact sheet per actor), the answer is forced into a strict JSON schema and then checked: every
requested image labelled exactly once with a known category, an integer score 1-10 and known
issues. A bad answer or a transient HTTP fault is retried; a rejected key or an exhausted quota
stops the run (it would fail every actor alike). The API key never leaves the Authorization
header: no message, log line or settings dict carries it. A server may quote it back anywhere
(an error body, a 200 answer's text, a category name, a note), so every answer comes in through
one door, ``OpenAIBackend._read``, that takes the key out of all of it before anything is
logged, raised, cached or written.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import io
import ipaddress
import json
import logging
import math
import os
import random
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from PIL import Image, ImageOps

from training_data.config import OpenAIConfig
from training_data.errors import ActorError, FatalRunError
from training_data.evaluation import ISSUE_NAMES, LOCAL_MODEL_ISSUES, ImageSample, Judgement
from training_data.files import parse_json
from training_data.report import SheetTile, render_sheet

log = logging.getLogger(__name__)

PROMPT_VERSION = 1
IMAGE_MAX_SIDE = 512
SHEET_MAX_SIDE = 2048
SHEET_COLUMNS = 5
SHEET_TILE_MAX = 360
JPEG_QUALITY = 85
RETRY_AFTER_CAP = 60.0
BACKOFF_CAP = 30.0
ERROR_EXCERPT = 200
REDACTED = "[redacted]"

PIPELINE_ISSUES = frozenset({"unreadable", "duplicate"})
JUDGED_ISSUES = tuple(
    issue for issue in ISSUE_NAMES if issue not in PIPELINE_ISSUES | LOCAL_MODEL_ISSUES
)
RETRIED_STATUSES = frozenset({408, 409, 429})

ISSUE_DEFINITIONS = {
    "too_small": "the original is too small to train on (see its pixel size)",
    "blurry": "out of focus, motion-blurred or smeared",
    "too_dark": "underexposed: the subject is lost in shadow",
    "too_bright": "overexposed: the subject is washed out",
    "low_information": "nearly blank, flat or without a discernible subject",
}

INSTRUCTIONS = """\
You review the training images of a LoRA that learns one person's identity. Judge every image as \
a LoRA trainer would: does it teach the model this person's face and body well, without teaching \
it defects or a stiff pose?

For each image give:
- category, exactly one of:
{categories}
- quality_score, an integer from 1 (useless for training) to 10 (ideal: sharp, well lit, the \
person clearly visible, natural pose, correct anatomy, no artifacts). Lower the score for: direct \
eye contact with the camera (staring into the lens), passport-style framing (frontal, centered, \
symmetric, plain background), warped anatomy (hands, fingers, eyes, teeth, ears, limbs, \
proportions), generation or compression artifacts (smears, melted textures, duplicated features, \
garbled text, watermarks, banding), and a face that is tiny, cut off or hidden.
- issues, any of these that clearly apply (an empty list when none does):
{issues}
- note, one short sentence on what most lowers the score.

Answer with one entry per image number you were given, each number exactly once."""


class InvalidAnswer(Exception):
    """The server answered, but not what was asked: another attempt may do better."""


class TransientFault(Exception):
    """A fault worth retrying (connection, timeout, 429, 5xx); may say how long to wait."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Cancelled(Exception):
    """Another request of the same actor failed, or the run is stopping: give up quietly."""


class OpenAIBackend:
    """Judges images with a vision model behind an OpenAI-compatible chat-completions API."""

    name = "openai"

    def __init__(
        self,
        settings: OpenAIConfig,
        categories: tuple[str, ...],
        *,
        api_key: str | None = None,
        backoff: float = 1.0,
    ) -> None:
        """``backoff`` is the first wait (seconds) before retrying a fault without Retry-After."""
        self._config = settings
        self._categories = tuple(categories)
        descriptions = settings.category_descriptions()
        # Config validation lets no category through without a description; "as its name says"
        # only serves a backend built by hand.
        self._described = {name: descriptions.get(name, "as its name says") for name in categories}
        self._endpoint = check_base_url(settings.base_url).rstrip("/") + "/chat/completions"
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self._headers = {"Content-Type": "application/json"}
        if self._api_key:
            self._headers["Authorization"] = f"Bearer {self._api_key}"
        elif is_loopback(settings.base_url):
            log.info(
                "openai evaluator: OPENAI_API_KEY is not set; %s gets no key", settings.base_url
            )
        else:
            raise FatalRunError(
                "OPENAI_API_KEY is not set: export it for evaluator backend 'openai' "
                "(only a local server on 127.0.0.1/localhost may go without a key)"
            )
        self._backoff = backoff
        self._session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(settings.concurrency, 1))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._usage_lock = threading.Lock()
        self._usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}

    def settings(self) -> dict[str, Any]:
        """Everything that changes a verdict (the cache key); timeouts and retries do not."""
        return {
            "backend": self.name,
            "base_url": self._config.base_url,
            "model": self._config.model,
            "mode": self._config.mode,
            "categories": list(self._categories),
            "prompt_version": PROMPT_VERSION,
            "prompt_sha256": prompt_digest(self._described),
            "image_max_side": IMAGE_MAX_SIDE,
        }

    def usage(self) -> dict[str, int]:
        """HTTP requests sent (retries included) and the tokens the server reported for them."""
        with self._usage_lock:
            return dict(self._usage)

    def judge(
        self, samples: list[ImageSample], categories: tuple[str, ...]
    ) -> dict[int, Judgement]:
        if tuple(categories) != self._categories:
            raise ValueError("judge() categories differ from those the backend was built with")
        if not samples:
            return {}
        if self._config.mode == "composite":
            request = sheet_request(samples, self._config.model, self._described)
            return self._ask(request, threading.Event())
        return self._judge_each(samples)

    def _judge_each(self, samples: list[ImageSample]) -> dict[int, Judgement]:
        """One request per image, at most ``concurrency`` in flight; the first failure stops all."""
        cancel = threading.Event()
        workers = min(self._config.concurrency, len(samples))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-evaluator")
        futures = [pool.submit(self._judge_one, sample, cancel) for sample in samples]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            failure = first_failure(futures)
            if failure is not None:
                raise failure
        except BaseException as error:
            cancel.set()
            # After an actor's own failure, let its in-flight requests end before the next actor;
            # a fatal fault or an interrupt must not wait for them.
            pool.shutdown(wait=isinstance(error, ActorError), cancel_futures=True)
            raise
        pool.shutdown()
        verdicts: dict[int, Judgement] = {}
        for future in futures:
            verdicts.update(future.result())
        return verdicts

    def _judge_one(self, sample: ImageSample, cancel: threading.Event) -> dict[int, Judgement]:
        if cancel.is_set():
            raise Cancelled
        return self._ask(single_request(sample, self._config.model, self._described), cancel)

    def _ask(self, request: ChatRequest, cancel: threading.Event) -> dict[int, Judgement]:
        """Send until a valid answer; every fault, transport or content, spends one attempt."""
        attempts = self._config.max_retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            try:
                content = self._send(request.payload)
                return parse_answer(content, request.numbers, self._categories)
            except TransientFault as fault:
                problem, delay = str(fault), self._delay(attempt, fault.retry_after)
            except InvalidAnswer as invalid:
                problem, delay = str(invalid), 0.0
            if attempt < attempts:
                log.warning(
                    "openai evaluator: %s; retrying in %.1f s (attempt %d of %d)",
                    problem,
                    delay,
                    attempt + 1,
                    attempts,
                )
                if cancel.wait(delay):
                    raise Cancelled
        raise ActorError(f"openai evaluator: {problem} after {attempts} attempts")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        return min(BACKOFF_CAP, self._backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _send(self, payload: dict[str, Any]) -> str:
        """POST once and return the answer's content, or raise what the outcome calls for."""
        self._count(requests=1)
        try:
            response = self._session.post(
                self._endpoint, json=payload, headers=self._headers, timeout=self._config.timeout
            )
        except requests.Timeout:
            raise TransientFault(f"no answer within {self._config.timeout:g} s") from None
        except requests.RequestException as error:
            raise TransientFault(
                f"cannot reach {self._config.base_url} ({type(error).__name__})"
            ) from None
        text, body = self._read(response)
        if response.status_code == 200:
            return self._content(body)
        raise self._status_error(response, text, body)

    def _read(self, response: requests.Response) -> tuple[str, Any]:
        """The one door for what the server says: its text and its JSON (None if it is not),
        the key taken out of both; JSON nested too deep counts as not JSON."""
        text = self._redact(response.text)
        try:
            return text, self._redact(parse_json(text))
        except ValueError:
            return text, None

    def _content(self, body: Any) -> str:
        if body is None:
            raise InvalidAnswer("server answer is not JSON")
        if not isinstance(body, dict):
            raise InvalidAnswer("server answer is not a chat completion")
        self._count_tokens(body.get("usage"))
        return completion_content(body)

    def _count_tokens(self, usage: Any) -> None:
        if isinstance(usage, dict):
            tokens = {
                name: usage[name]
                for name in ("prompt_tokens", "completion_tokens", "total_tokens")
                if isinstance(usage.get(name), int) and not isinstance(usage[name], bool)
            }
            self._count(**tokens)

    def _count(self, **amounts: int) -> None:
        with self._usage_lock:
            for name, amount in amounts.items():
                self._usage[name] += amount

    def _status_error(self, response: requests.Response, text: str, body: Any) -> Exception:
        """Map a non-200 answer (text and JSON already redacted) to a fatal, retryable or
        per-actor error."""
        status = response.status_code
        error = error_object(body)
        if status in (401, 403):
            return FatalRunError(
                f"openai evaluator: {self._config.base_url} rejected the API key (HTTP {status}); "
                "check OPENAI_API_KEY"
            )
        reason = error_message(error, text)
        if status == 429 and "insufficient_quota" in (error.get("code"), error.get("type")):
            return FatalRunError(
                "openai evaluator: the API quota is exhausted (HTTP 429 insufficient_quota); "
                "add credit or use another key"
            )
        if status in RETRIED_STATUSES or status >= 500:
            return TransientFault(f"HTTP {status}: {reason}", retry_after_seconds(response.headers))
        if status == 404:
            return FatalRunError(
                f"openai evaluator: HTTP 404 from {self._endpoint}: {reason} "
                "(check evaluator.openai.base_url and model)"
            )
        return ActorError(f"openai evaluator: HTTP {status}: {reason}")

    def _redact(self, value: Any) -> Any:
        """``value`` without the key, in every string at any depth (keys of objects too). A
        string that is itself JSON (the answer's content) is cleaned inside as well, where an
        escape such as ``\\u0073k-`` hides the key from the text but not from its reader."""
        if not self._api_key:
            return value
        if isinstance(value, str):
            cleaned = value.replace(self._api_key, REDACTED)
            if "\\" in cleaned:
                cleaned = self._redact_escaped(cleaned)
            return cleaned
        if isinstance(value, dict):
            return {self._redact(key): self._redact(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._redact(item) for item in value]
        return value

    def _redact_escaped(self, text: str) -> str:
        try:
            document = parse_json(strip_code_fence(text))
        except ValueError:
            return text
        if self._api_key not in json.dumps(document, ensure_ascii=False):
            return text
        return json.dumps(self._redact(document), ensure_ascii=False)


@dataclass(frozen=True)
class ChatRequest:
    """A chat-completions payload and the image numbers its answer must label."""

    payload: dict[str, Any]
    numbers: tuple[int, ...]


def single_request(sample: ImageSample, model: str, described: Mapping[str, str]) -> ChatRequest:
    text = f"Image {sample.number} (original {size_text(sample)})."
    jpeg = encode_jpeg(load_for_model(sample))
    return chat_request(model, described, text, jpeg, (sample.number,))


def sheet_request(
    samples: list[ImageSample], model: str, described: Mapping[str, str]
) -> ChatRequest:
    """One contact sheet of all the actor's images, each tile numbered as the answer must be."""
    tiles = [SheetTile(s.number, load_for_model(s), "", False) for s in samples]
    sheet = render_sheet(tiles, columns=SHEET_COLUMNS, tile_side=sheet_tile_side(len(tiles)))
    sheet.thumbnail((SHEET_MAX_SIDE, SHEET_MAX_SIDE))
    sizes = "; ".join(f"{s.number}: {size_text(s)}" for s in samples)
    text = (
        f"This contact sheet shows {len(samples)} separate images, each marked with its number. "
        f"Judge each image on its own. Original sizes: {sizes}."
    )
    numbers = tuple(s.number for s in samples)
    return chat_request(model, described, text, encode_jpeg(sheet), numbers)


def sheet_tile_side(count: int) -> int:
    """Tiles as large as fit SHEET_MAX_SIDE (a cell is ~1.1 tile wide, ~1.25 tile high)."""
    rows = math.ceil(count / SHEET_COLUMNS)
    return max(64, min(SHEET_TILE_MAX, int(SHEET_MAX_SIDE / (1.25 * rows))))


def chat_request(
    model: str, described: Mapping[str, str], text: str, jpeg: bytes, numbers: tuple[int, ...]
) -> ChatRequest:
    """``described``: each category the answer may use, with what the prompt says of it."""
    image_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    payload = {
        "model": model,
        "messages": [
            {"role": "system", "content": instructions(described)},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": image_url}},
                ],
            },
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "training_image_review",
                "strict": True,
                "schema": answer_schema(numbers, tuple(described)),
            },
        },
    }
    return ChatRequest(payload, numbers)


def instructions(described: Mapping[str, str]) -> str:
    category_lines = "\n".join(f"  - {name}: {text}" for name, text in described.items())
    issue_lines = "\n".join(f"  - {name}: {ISSUE_DEFINITIONS[name]}" for name in JUDGED_ISSUES)
    return INSTRUCTIONS.format(categories=category_lines, issues=issue_lines)


def answer_schema(numbers: tuple[int, ...], categories: tuple[str, ...]) -> dict[str, Any]:
    """The strict JSON schema of the answer: one entry per requested image number."""
    entry = {
        "type": "object",
        "properties": {
            "number": {"type": "integer", "enum": list(numbers)},
            "category": {"type": "string", "enum": list(categories)},
            "quality_score": {"type": "integer", "minimum": 1, "maximum": 10},
            "issues": {"type": "array", "items": {"type": "string", "enum": list(JUDGED_ISSUES)}},
            "note": {"type": "string"},
        },
        "required": ["number", "category", "quality_score", "issues", "note"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"images": {"type": "array", "items": entry}},
        "required": ["images"],
        "additionalProperties": False,
    }


def prompt_digest(described: Mapping[str, str]) -> str:
    """A fingerprint of what the model is told, so any prompt or schema edit misses the cache."""
    told = {
        "instructions": instructions(described),
        "schema": answer_schema((), tuple(described)),
        "jpeg_quality": JPEG_QUALITY,
        "sheet": [SHEET_COLUMNS, SHEET_MAX_SIDE, SHEET_TILE_MAX],
    }
    return hashlib.sha256(json.dumps(told, sort_keys=True).encode()).hexdigest()[:16]


def size_text(sample: ImageSample) -> str:
    return f"{sample.width}x{sample.height} px"


def load_for_model(sample: ImageSample) -> Image.Image:
    """Re-read the file at up to IMAGE_MAX_SIDE px (JPEG draft mode decodes only what is needed)."""
    try:
        with Image.open(sample.path) as image:
            image.draft("RGB", (IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
            upright = ImageOps.exif_transpose(image)
            upright.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
            return flatten_to_rgb(upright)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ActorError(
            f"openai evaluator: cannot re-read {sample.filename}: {type(error).__name__}"
        ) from None


def flatten_to_rgb(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: put transparent images on white rather than black."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def completion_content(body: dict[str, Any]) -> str:
    """The assistant message's text, or InvalidAnswer saying why there is none."""
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise InvalidAnswer("server answer has no choices[0].message") from None
    if not isinstance(message, dict):
        raise InvalidAnswer("server answer has no choices[0].message")
    if message.get("refusal"):
        raise InvalidAnswer(f"the model refused: {one_line(str(message['refusal']))}")
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise InvalidAnswer("answer has no text content")
    return content


def parse_answer(
    content: str, numbers: tuple[int, ...], categories: tuple[str, ...]
) -> dict[int, Judgement]:
    """Check the answer against the schema and the request: each number exactly once."""
    try:
        document = json.loads(strip_code_fence(content))
    except ValueError:
        raise InvalidAnswer(f"answer is not JSON: {one_line(content)!r}") from None
    entries = document.get("images") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InvalidAnswer("answer has no 'images' list")
    verdicts: dict[int, Judgement] = {}
    for entry in entries:
        number, judgement = parse_entry(entry, numbers, categories)
        if number in verdicts:
            raise InvalidAnswer(f"answer labels image {number} more than once")
        verdicts[number] = judgement
    missing = [number for number in numbers if number not in verdicts]
    if missing:
        raise InvalidAnswer(f"answer lacks image {', '.join(map(str, missing))}")
    return verdicts


def parse_entry(
    entry: Any, numbers: tuple[int, ...], categories: tuple[str, ...]
) -> tuple[int, Judgement]:
    if not isinstance(entry, dict):
        raise InvalidAnswer("answer has an entry that is not an object")
    number = entry.get("number")
    if not is_int(number) or number not in numbers:
        raise InvalidAnswer(f"answer labels unknown image {number!r}")
    category = entry.get("category")
    if category not in categories:
        raise InvalidAnswer(f"image {number} has unknown category {category!r}")
    score = entry.get("quality_score")
    if not is_int(score) or not 1 <= score <= 10:
        raise InvalidAnswer(f"image {number} has quality_score {score!r}, not an integer 1-10")
    issues = entry.get("issues")
    if not isinstance(issues, list):
        raise InvalidAnswer(f"image {number} has no issues list")
    for issue in issues:
        if issue not in JUDGED_ISSUES:
            raise InvalidAnswer(f"image {number} has unknown issue {issue!r}")
    note = entry.get("note")
    return number, Judgement(
        type=category,
        quality_score=score,
        issues=list(dict.fromkeys(issues)),
        note=(note.strip() or None) if isinstance(note, str) else None,
    )


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def strip_code_fence(content: str) -> str:
    """Some local servers wrap JSON in a Markdown fence even when a schema is set."""
    fenced = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", content, flags=re.DOTALL)
    return fenced.group(1) if fenced else content


def one_line(text: str, limit: int = ERROR_EXCERPT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_object(body: Any) -> dict[str, Any]:
    """The ``error`` object of an OpenAI-style error body ({} when there is none)."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return error
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return {"message": body["message"]}  # vLLM's flat error body
    return {"message": error} if isinstance(error, str) else {}


def error_message(error: dict[str, Any], body_text: str) -> str:
    message = error.get("message")
    return one_line(message if isinstance(message, str) and message else body_text or "no body")


def retry_after_seconds(
    headers: Any, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> float | None:
    """Retry-After as seconds or an HTTP date (or OpenAI's retry-after-ms), capped."""
    milliseconds = headers.get("retry-after-ms")
    value = headers.get("retry-after")
    seconds: float | None = None
    if milliseconds is not None:
        seconds = parse_float(milliseconds)
        seconds = None if seconds is None else seconds / 1000
    if seconds is None and value is not None:
        seconds = parse_float(value)
        if seconds is None:
            seconds = parse_http_date(value, now())
    if seconds is None:
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def parse_http_date(text: str, now: datetime) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - now).total_seconds()


def first_failure(futures: list[Future[Any]]) -> BaseException | None:
    """The error to report: a fatal fault first, then the first actor error by image order."""
    finished = [f.exception() for f in futures if f.done() and not f.cancelled()]
    errors = [e for e in finished if e is not None and not isinstance(e, Cancelled)]
    fatal = [e for e in errors if isinstance(e, FatalRunError)]
    return (fatal or errors or [None])[0]


def is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FatalRunError(
            f"config key 'evaluator.openai.base_url' must be an http(s) URL: {base_url!r}"
        )
    return base_url
