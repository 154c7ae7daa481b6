"""Shared fixtures: small real datasets on disk and the CLI run as a real subprocess."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "training_data" / "evaluate_and_balance.py"
DEFAULT_MIX = (("photorealistic", 13), ("bw_stylized", 4), ("color_stylized", 3))


def draw_image(kind: str, seed: int, side: int = 320) -> Image.Image:
    """A distinct, sharp, well-exposed image; its look roughly follows the style."""
    rng = random.Random(seed)
    if kind == "bw_stylized":
        image = Image.new("RGB", (side, side), "white")
        draw = ImageDraw.Draw(image)
        for _ in range(40):
            points = [(rng.randrange(side), rng.randrange(side)) for _ in range(2)]
            draw.line(points, fill="black", width=rng.randint(1, 4))
        return image
    if kind == "color_stylized":
        image = Image.new("RGB", (side, side), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = rng.randrange(side), rng.randrange(side)
            colour = tuple(rng.randrange(256) for _ in range(3))
            draw.ellipse((x - 40, y - 40, x + 40, y + 40), fill=colour, outline="black", width=3)
        return image
    noise = Image.effect_noise((side, side), 40 + seed % 20).convert("RGB")
    base = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    tint = Image.new("RGB", (side, side), (rng.randrange(90, 200), 120, rng.randrange(60, 160)))
    image = Image.blend(Image.blend(base, tint, 0.5), noise, 0.25)
    draw = ImageDraw.Draw(image)
    x, y = rng.randrange(60, side - 60), rng.randrange(60, side - 60)
    draw.ellipse((x - 50, y - 65, x + 50, y + 65), fill=(210, 170, 140))
    return image.filter(ImageFilter.SMOOTH)


def write_actor(
    data_dir: Path,
    name: str,
    kinds: Sequence[str],
    *,
    urls: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """An actor whose images carry their style as manifest ``type`` (so results are exact)."""
    training = data_dir / "actors" / name / "training_data"
    training.mkdir(parents=True, exist_ok=True)
    images: dict[str, dict] = {}
    for number, kind in enumerate(kinds, start=1):
        filename = f"{name}_{number}.jpg"
        draw_image(kind, seed * 1000 + number).save(training / filename, quality=90)
        images[filename] = {"type": kind}
    for filename, url in (urls or {}).items():
        images[filename] = {"type": "photorealistic", "url": url}
    manifest = {"actor_id": name, "images": images}
    (training / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return training


def mix_kinds(mix: Iterable[tuple[str, int]]) -> list[str]:
    return [kind for kind, count in mix for _ in range(count)]


@pytest.fixture
def make_dataset(tmp_path):
    """``make_dataset(n, mix=..., urls=...)`` -> data dir with actors 0000_actor..."""

    def build(
        count: int,
        mix: Iterable[tuple[str, int]] = DEFAULT_MIX,
        *,
        urls_for: dict[int, dict[str, str]] | None = None,
        start: int = 0,
    ) -> Path:
        data_dir = tmp_path / "data"
        kinds = mix_kinds(mix)
        for index in range(start, start + count):
            urls = (urls_for or {}).get(index)
            write_actor(data_dir, f"{index:04d}_actor", kinds, urls=urls, seed=index)
        return data_dir

    return build


def cli_command(*args: str | os.PathLike) -> list[str]:
    return [sys.executable, str(SCRIPT), *map(str, args)]


def run_cli(
    *args: str | os.PathLike,
    cwd: Path,
    timeout: float = 120,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="surrogateescape",  # names that are not UTF-8 are printed as their own bytes
        timeout=timeout,
        env=cli_env(extra_env),
    )


def start_cli(
    *args: str | os.PathLike,
    cwd: Path,
    extra_env: dict[str, str] | None = None,
    own_group: bool = False,
) -> subprocess.Popen:
    """``own_group``: in a process group of its own, so its workers can be found and counted."""
    return subprocess.Popen(
        cli_command(*args),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(extra_env),
        start_new_session=own_group,
    )


def cli_env(extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the machine's API keys, plus what a test gives (a key, a
    scheduler's variables)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("OPENAI_API_KEY", None)
    env.pop("REPLICATE_API_TOKEN", None)
    return env | (extra_env or {})


def read_progress(output_dir: Path) -> dict:
    return json.loads((output_dir / "progress.json").read_text())


def within(seconds: float, function, *args: Any, **kwargs: Any) -> Any:
    """Call ``function``; fail the test (instead of hanging it) if it blocks for ``seconds``."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = function(*args, **kwargs)
        except BaseException as error:
            box["error"] = error

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{function.__name__} blocked for {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """Accepts connections and never answers a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


# --- loopback servers that hold a request until the test opens a gate ---

REPLICATE_TOKEN = "r8_test-secret-token-0123456789"


@contextlib.contextmanager
def gated_server(
    handler_class: type[BaseHTTPRequestHandler],
) -> Iterator[tuple[int, threading.Event, threading.Event]]:
    """A loopback server whose handler sets ``arrived``, then waits for ``gate``."""
    arrived, gate = threading.Event(), threading.Event()
    handler = type("Handler", (handler_class,), {"arrived": arrived, "gate": gate})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], arrived, gate
    finally:
        gate.set()
        server.shutdown()
        server.server_close()


class ReplicateGateHandler(BaseHTTPRequestHandler):
    """A Replicate stand-in: answers a prediction with an image once the test opens the gate, so
    an execute can be stopped while it is certain to be between its removals and its record."""

    arrived: threading.Event
    gate: threading.Event
    seeds = itertools.count(900_000)  # a new image per prediction, never one of a test dataset

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.arrived.set()
        self.gate.wait(60)
        buffer = io.BytesIO()
        draw_image("bw_stylized", next(self.seeds)).save(buffer, "PNG")
        output = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        body = json.dumps({"id": "p1", "status": "succeeded", "output": [output]}).encode()
        try:
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the stopped run is gone
            pass

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def replicate_gate(tmp_path: Path) -> Iterator[tuple[Path, threading.Event, threading.Event]]:
    """A config using the stand-in, the event 'a prediction was asked for' and the gate."""
    with gated_server(ReplicateGateHandler) as (port, arrived, gate):
        config = tmp_path / "replicate.toml"
        config.write_text(
            '[generator]\nbackend = "replicate"\n[generator.replicate]\n'
            f'base_url = "http://127.0.0.1:{port}/v1"\ntimeout = 60\n'
        )
        yield config, arrived, gate


def settled_removal(actor_dir: Path) -> dict | None:
    """The actor's removal journal once every file of it has moved, else None."""
    for path in actor_dir.glob("removed_training_data/*/removal.json"):
        try:
            journal = json.loads(path.read_text())
        except (OSError, ValueError):  # read while replaced
            continue
        if journal.get("state") == "removed":
            return journal
    return None
