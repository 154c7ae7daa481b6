"""The dataset as a user meets it: real folders in tmp_path, real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from conftest import within
from PIL import Image

from training_data.config import DownloadConfig
from training_data.dataset import (
    Actor,
    DatasetError,
    check_manifest_filename,
    count_training_images,
    download_missing,
    find_actors,
    list_training_images,
    load_training_images,
    make_session,
    read_manifest,
    select_actor,
    sidecars_of,
    write_manifest,
)
from training_data.errors import ActorError, FatalRunError, UsageError

FAST = DownloadConfig(timeout=1.0, retries=1, max_bytes=1_000_000)


def image_bytes(size: tuple[int, int] = (96, 64), fmt: str = "JPEG") -> bytes:
    """A noisy image, so most of a JPEG is scan data and cutting it truncates pixels."""
    buffer = BytesIO()
    Image.effect_noise(size, 64).convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


def make_actor(
    data_dir: Path, name: str, files: dict[str, bytes] | None = None, manifest: Any = None
) -> Actor:
    training_dir = data_dir / "actors" / name / "training_data"
    training_dir.mkdir(parents=True)
    for filename, content in (files or {}).items():
        (training_dir / filename).write_bytes(content)
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (training_dir / "manifest.json").write_text(text, encoding="utf-8")
    return Actor(name, data_dir / "actors" / name)


def url_manifest(entries: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "actor_id": "a",
        "images": {name: {"url": url} for name, url in entries.items()},
        **extra,
    }


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def session():
    with make_session(FAST, backoff_factor=0.01) as http:
        yield http


def fail_download(actor: Actor, session, download: DownloadConfig = FAST) -> str:
    with pytest.raises(ActorError) as caught:
        load_training_images(actor, session, download)
    return str(caught.value)


# --- actors -------------------------------------------------------------------------------------


def test_without_actors_data_every_training_data_folder_is_an_actor(tmp_path):
    make_actor(tmp_path, "0002_b")
    make_actor(tmp_path, "0001_a")
    (tmp_path / "actors" / "0003_no_training").mkdir()
    make_actor(tmp_path, ".hidden")

    assert [actor.name for actor in find_actors(tmp_path)] == ["0001_a", "0002_b"]
    assert find_actors(tmp_path)[0].folder == tmp_path / "actors" / "0001_a"


def test_actors_data_names_the_actors_that_have_training_data(tmp_path):
    for name in ("0001_a", "0002_b", "0003_c"):
        make_actor(tmp_path, name)
    (tmp_path / "actors" / "0004_d").mkdir()
    listing = [{"name": "0003_c", "age": 30}, {"name": "0001_a"}, {"name": "0004_d"}]
    listing += [{"name": "0009_absent"}, {"name": "0001_a"}]
    (tmp_path / "actorsData.json").write_text(json.dumps(listing))

    assert [actor.name for actor in find_actors(tmp_path)] == ["0001_a", "0003_c"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ('{"name": "0001_a"}', "must be a list"),
        ('[{"name": 7}]', 'entry 0 has no "name"'),
        ('["0001_a"]', 'entry 0 has no "name"'),
        ('[{"name": "0001_a"}, {"name": "../../etc"}]', "entry 1 name '../../etc' is not a plain"),
        ('[{"name": ".."}]', "is not a plain folder name"),
        ('[{"name": "a\\\\b"}]', "is not a plain folder name"),
    ],
)
def test_bad_actors_data_is_one_line_naming_the_file(tmp_path, content, expected):
    make_actor(tmp_path, "0001_a")
    (tmp_path / "actorsData.json").write_text(content)

    with pytest.raises(DatasetError) as caught:
        find_actors(tmp_path)
    message = str(caught.value)
    assert expected in message
    assert "actorsData.json" in message
    assert "\n" not in message
    assert isinstance(caught.value, UsageError)


def test_missing_data_folder_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match=r"data folder not found: .*--data-dir"):
        find_actors(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no actors/ folder"):
        find_actors(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="is not a folder"):
        find_actors(tmp_path / "file")


@pytest.fixture
def three_actors(tmp_path) -> list[Actor]:
    for name in ("0046_european_25_female", "0047_asian_30_male", "0471_african_40_male"):
        make_actor(tmp_path, name)
    return find_actors(tmp_path)


def test_actor_id_takes_an_exact_name_or_a_unique_prefix(three_actors):
    assert select_actor(three_actors, "0047_asian_30_male").name == "0047_asian_30_male"
    assert select_actor(three_actors, "0046").name == "0046_european_25_female"
    assert select_actor(three_actors, "047").name == "0471_african_40_male"


def test_an_exact_name_wins_over_longer_names_it_prefixes(tmp_path):
    make_actor(tmp_path, "0046")
    make_actor(tmp_path, "0046_b")
    assert select_actor(find_actors(tmp_path), "0046").name == "0046"


def test_ambiguous_or_unknown_actor_id_is_a_usage_error(three_actors):
    with pytest.raises(DatasetError, match=r"'004' matches 2 actors \(0046_.*, 0047_.*\)"):
        select_actor(three_actors, "004")
    with pytest.raises(DatasetError, match="no actor matches --actor-id '0099'"):
        select_actor(three_actors, "0099")
    with pytest.raises(DatasetError, match="no actor matches"):
        select_actor(three_actors, "")


# --- manifest -----------------------------------------------------------------------------------


def test_manifest_round_trip_keeps_unknown_fields_and_order(tmp_path):
    manifest = {
        "actor_id": "0001_a",
        "images": {"b.jpg": {"type": "photorealistic", "seed": 7, "extra": {"x": [1, 2]}}},
        "removed_images": {},
        "generations": [{"at": "2025-01-01"}],
        "custom_note": "é kept as is",
    }
    actor = make_actor(tmp_path, "0001_a", manifest=manifest)

    loaded = read_manifest(actor)
    assert loaded == manifest
    loaded["images"]["c.jpg"] = {"type": "bw_stylized"}
    write_manifest(actor, loaded)

    again = read_manifest(actor)
    assert again["custom_note"] == "é kept as is"
    assert again["images"]["b.jpg"]["extra"] == {"x": [1, 2]}
    assert list(again) == ["actor_id", "images", "removed_images", "generations", "custom_note"]
    assert [p.name for p in actor.training_dir.iterdir()] == ["manifest.json"]  # no temp left


def test_absent_manifest_is_none(tmp_path):
    assert read_manifest(make_actor(tmp_path, "a")) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"images": {', "manifest.json of a is not valid JSON: "),
        ("[1, 2]", "manifest.json of a is not a valid manifest: the top level must be an object"),
        ('{"images": []}', 'not a valid manifest: "images" must be an object'),
        ('{"images": {"x.jpg": "http://h/x.jpg"}}', "\"images\" entry 'x.jpg' must be an object"),
        ('{"images": {"x.jpg": {"url": 5}}}', "\"url\" of 'x.jpg' must be a string"),
        ('{"removed_images": []}', '"removed_images" must be an object'),
    ],
)
def test_malformed_manifest_fails_the_actor(tmp_path, text, expected):
    actor = make_actor(tmp_path, "a", manifest=text)
    with pytest.raises(ActorError) as caught:
        read_manifest(actor)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


HOSTILE_NAMES = [
    "../x.jpg",
    "../../outside.jpg",
    "/etc/x.jpg",
    "a/b.jpg",
    "a\\b.jpg",
    "",
    ".",
    "..",
    "x\x00.jpg",
    "x\n.jpg",
    ".tmp-x.jpg",
    "notes.txt",
    "manifest.json",
    "x.jpg.exe",
    "a" * 252 + ".jpg",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_check_manifest_filename_refuses_anything_but_a_plain_image_name(name):
    with pytest.raises(ActorError, match="not a plain image file name inside training_data"):
        check_manifest_filename(name)


@pytest.mark.parametrize("name", ["x.jpg", "X_2.JPEG", "a b.png", "été.webp", "a..b.jpg"])
def test_check_manifest_filename_accepts_plain_image_names(name):
    check_manifest_filename(name)


@pytest.mark.parametrize("name", ["../escape.jpg", "/tmp/abs.jpg", "sub/x.jpg", ".."])
def test_hostile_manifest_name_fails_before_anything_is_touched(tmp_path, httpserver, name):
    httpserver.expect_request("/img.jpg").respond_with_data(image_bytes())
    url = httpserver.url_for("/img.jpg")
    actor = make_actor(
        tmp_path / "data",
        "a",
        files={"have.jpg": image_bytes()},
        manifest=url_manifest({"aaa_first.jpg": url, name: url, "zzz_last.jpg": url}),
    )
    (tmp_path / "data" / "actors" / "a" / "training_data" / "sub").mkdir()
    before = snapshot(tmp_path)

    with make_session(FAST, backoff_factor=0.01) as session:
        message = fail_download(actor, session)

    assert "not a plain image file name" in message
    assert httpserver.log == []
    assert snapshot(tmp_path) == before
    with pytest.raises(ActorError):
        list_training_images(actor, read_manifest(actor))
    with pytest.raises(ActorError):
        count_training_images(actor)


# --- training images ----------------------------------------------------------------------------


def test_training_set_is_local_images_plus_manifest_entries_in_natural_order(tmp_path):
    jpeg = image_bytes()
    files = {
        "a_10.jpg": jpeg,
        "a_2.PNG": jpeg,
        "a_1.webp": jpeg,
        "a_3.Jpeg": jpeg,
        "a_1.txt": b"caption",
        ".tmp-a_9.jpg.123": b"partial",
        ".hidden.jpg": jpeg,
        "notes.md": b"",
    }
    manifest = {
        "images": {
            "a_3.Jpeg": {"type": "bw_stylized"},
            "a_4.jpg": {"url": "s3://bucket/a_4.jpg", "type": "photorealistic"},
        }
    }
    actor = make_actor(tmp_path, "a", files=files, manifest=manifest)
    (actor.training_dir / "nested").mkdir()
    (actor.training_dir / "nested" / "a_5.jpg").write_bytes(jpeg)
    (actor.training_dir / "folder.jpg").mkdir()

    images = list_training_images(actor, read_manifest(actor))

    assert [(i.number, i.filename) for i in images] == [
        (1, "a_1.webp"),
        (2, "a_2.PNG"),
        (3, "a_3.Jpeg"),
        (4, "a_4.jpg"),
        (5, "a_10.jpg"),
    ]
    assert images[3].path == actor.training_dir / "a_4.jpg"
    assert not images[3].path.exists()  # stays in the set: the evaluator reports it unreadable
    assert images[2].trusted_type(("photorealistic", "bw_stylized")) == "bw_stylized"
    assert images[0].entry is None
    assert count_training_images(actor) == 5


def test_an_actor_without_images_has_an_empty_set(tmp_path):
    actor = make_actor(tmp_path, "a", files={"readme.txt": b"x"})
    assert list_training_images(actor, None) == []
    assert count_training_images(actor) == 0


def test_a_vanished_training_folder_fails_the_actor(tmp_path):
    actor = make_actor(tmp_path, "a")
    actor.training_dir.rmdir()
    with pytest.raises(ActorError, match="training_data folder of a is missing"):
        list_training_images(actor, None)


def test_a_vanished_data_folder_stops_the_run(tmp_path):
    actor = make_actor(tmp_path / "data", "a")
    (tmp_path / "data").rename(tmp_path / "unmounted")
    with pytest.raises(FatalRunError, match="data folder is gone"):
        list_training_images(actor, None)


def test_sidecars_share_the_image_basename(tmp_path):
    for name in [
        "x.jpg",
        "x.txt",
        "x.caption",
        "x.json",
        "x.npz",
        "x.jpg.txt",
        "x_2.jpg",
        "x_2.txt",
        "x.v2.jpg",
        "x.v2.txt",
        "xy.txt",
        ".x.txt",
        "manifest.jpg",
        "manifest.json",
    ]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "x.d").mkdir()

    names = [p.name for p in sidecars_of(tmp_path / "x.jpg")]

    assert names == ["x.caption", "x.jpg.txt", "x.json", "x.npz", "x.txt"]
    assert [p.name for p in sidecars_of(tmp_path / "x.v2.jpg")] == ["x.v2.txt"]
    assert sidecars_of(tmp_path / "manifest.jpg") == []
    assert sidecars_of(tmp_path / "gone" / "x.jpg") == []


def test_a_stem_shared_by_two_images_is_not_given_to_either(tmp_path):
    for name in ["x.jpg", "x.png", "x.txt", "x.png.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert sidecars_of(tmp_path / "x.jpg") == []
    assert sidecars_of(tmp_path / "x.png") == [tmp_path / "x.png.txt"]


# --- downloads ----------------------------------------------------------------------------------


def test_missing_entries_are_downloaded_and_present_files_left_alone(tmp_path, httpserver, session):
    jpeg, png = image_bytes(), image_bytes(fmt="PNG")
    httpserver.expect_request("/x.jpg").respond_with_data(jpeg, content_type="image/jpeg")
    httpserver.expect_request("/y.png").respond_with_data(png, content_type="image/png")
    manifest = {
        "images": {
            "x.jpg": {"url": httpserver.url_for("/x.jpg"), "type": "photorealistic"},
            "y.png": {"url": "s3://bucket/y.png", "s3_url": httpserver.url_for("/y.png")},
            "have.jpg": {"url": httpserver.url_for("/never")},
            "nourl.jpg": {"type": "bw_stylized"},
        }
    }
    actor = make_actor(tmp_path, "a", files={"have.jpg": b"local"}, manifest=manifest)

    _, images = load_training_images(actor, session, FAST)

    assert (actor.training_dir / "x.jpg").read_bytes() == jpeg
    assert (actor.training_dir / "y.png").read_bytes() == png
    assert (actor.training_dir / "have.jpg").read_bytes() == b"local"
    assert [i.filename for i in images] == ["have.jpg", "nourl.jpg", "x.jpg", "y.png"]
    assert sorted(request.path for request, _ in httpserver.log) == ["/x.jpg", "/y.png"]
    assert download_missing(actor, read_manifest(actor), session, FAST) == []
    assert not [p for p in actor.training_dir.iterdir() if p.name.startswith(".")]


def test_a_dangling_symlink_is_not_replaced_by_a_download(tmp_path, httpserver, session):
    httpserver.expect_request("/x.jpg").respond_with_data(image_bytes())
    actor = make_actor(
        tmp_path, "a", manifest=url_manifest({"x.jpg": httpserver.url_for("/x.jpg")})
    )
    (actor.training_dir / "x.jpg").symlink_to(tmp_path / "elsewhere.jpg")

    _, images = load_training_images(actor, session, FAST)

    assert [i.filename for i in images] == ["x.jpg"]
    assert (actor.training_dir / "x.jpg").is_symlink()
    assert httpserver.log == []


def test_not_found_fails_the_actor_with_the_exact_prefix(tmp_path, httpserver, session):
    httpserver.expect_request("/gone.jpg").respond_with_data("no", status=404)
    url = httpserver.url_for("/gone.jpg") + "?X-Amz-Signature=SECRET123&token=SECRET456"
    actor = make_actor(tmp_path, "a", manifest=url_manifest({"gone.jpg": url}))

    message = fail_download(actor, session)

    assert message == "Failed to download image gone.jpg: HTTP 404"
    assert len(httpserver.log) == 1  # a 404 is final: not retried
    assert not (actor.training_dir / "gone.jpg").exists()


def test_a_busy_server_is_retried(tmp_path, httpserver, session):
    jpeg = image_bytes()
    httpserver.expect_ordered_request("/x.jpg").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/x.jpg").respond_with_data(jpeg)
    actor = make_actor(
        tmp_path, "a", manifest=url_manifest({"x.jpg": httpserver.url_for("/x.jpg")})
    )

    assert download_missing(actor, read_manifest(actor), session, FAST) == ["x.jpg"]

    assert (actor.training_dir / "x.jpg").read_bytes() == jpeg
    assert len(httpserver.log) == 2


def test_a_server_still_busy_after_the_retries_fails_the_actor(tmp_path, httpserver, session):
    httpserver.expect_request("/x.jpg").respond_with_data("busy", status=503)
    actor = make_actor(
        tmp_path, "a", manifest=url_manifest({"x.jpg": httpserver.url_for("/x.jpg")})
    )

    assert fail_download(actor, session) == "Failed to download image x.jpg: HTTP 503"
    assert len(httpserver.log) == 1 + FAST.retries


def test_retry_after_is_honoured(tmp_path, httpserver, session):
    jpeg = image_bytes()
    httpserver.expect_ordered_request("/x.jpg").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "1"}
    )
    httpserver.expect_ordered_request("/x.jpg").respond_with_data(jpeg)
    actor = make_actor(
        tmp_path, "a", manifest=url_manifest({"x.jpg": httpserver.url_for("/x.jpg")})
    )

    started = time.monotonic()
    load_training_images(actor, session, FAST)

    assert time.monotonic() - started >= 0.9  # the backoff alone would be 0.01 s
    assert (actor.training_dir / "x.jpg").read_bytes() == jpeg


def test_secrets_in_the_query_string_never_reach_the_logs(tmp_path, httpserver, session, caplog):
    httpserver.expect_request("/x.jpg").respond_with_data("busy", status=503)
    url = httpserver.url_for("/x.jpg") + "?token=SECRET789"
    actor = make_actor(tmp_path, "a", manifest=url_manifest({"x.jpg": url}))

    with caplog.at_level(logging.DEBUG):
        message = fail_download(actor, session)

    client_log = "\n".join(
        r.getMessage()
        for r in caplog.records
        if not r.name.startswith("werkzeug")  # the server's
    )
    assert "/x.jpg" in client_log  # urllib3 did log the request...
    assert "SECRET789" not in client_log  # ...without its query string
    assert "SECRET789" not in message


def test_a_body_over_max_bytes_is_refused(tmp_path, httpserver, session):
    small = DownloadConfig(timeout=1.0, retries=1, max_bytes=1000)
    httpserver.expect_request("/big.jpg").respond_with_data(image_bytes((200, 200)))
    actor = make_actor(
        tmp_path, "a", manifest=url_manifest({"big.jpg": httpserver.url_for("/big.jpg")})
    )

    message = fail_download(actor, session, small)

    assert message == "Failed to download image big.jpg: larger than 1000 bytes"
    assert not (actor.training_dir / "big.jpg").exists()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<!doctype html><html><body>Sign in</body></html>", "not a JPEG, PNG or WebP image"),
        (image_bytes((256, 256))[:6000], "truncated or corrupt image"),
        (image_bytes((256, 256), fmt="PNG")[:-5000], "truncated or corrupt image"),
        (image_bytes(fmt="GIF"), "not a JPEG, PNG or WebP image"),
    ],
    ids=["html", "truncated-jpeg", "truncated-png", "gif"],
)
def test_a_body_that_is_not_a_whole_image_is_not_saved(tmp_path, httpserver, session, body, reason):
    httpserver.expect_request("/x.jpg").respond_with_data(body, content_type="image/jpeg")
    actor = make_actor(
        tmp_path, "a", manifest=url_manifest({"x.jpg": httpserver.url_for("/x.jpg")})
    )

    assert fail_download(actor, session) == f"Failed to download image x.jpg: {reason}"
    assert [p.name for p in actor.training_dir.iterdir()] == ["manifest.json"]


def test_a_decompression_bomb_is_refused(tmp_path, httpserver, session, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    httpserver.expect_request("/x.png").respond_with_data(image_bytes((40, 40), fmt="PNG"))
    actor = make_actor(
        tmp_path, "a", manifest=url_manifest({"x.png": httpserver.url_for("/x.png")})
    )

    message = fail_download(actor, session)

    assert message == "Failed to download image x.png: too many pixels (decompression bomb)"


def test_connection_refused_fails_the_actor(tmp_path, session):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens
    actor = make_actor(
        tmp_path, "a", manifest=url_manifest({"x.jpg": f"http://127.0.0.1:{port}/x.jpg?k=SECRET"})
    )

    assert fail_download(actor, session) == "Failed to download image x.jpg: connection refused"


def test_the_first_failure_stops_the_actor_and_earlier_downloads_stay(
    tmp_path, httpserver, session
):
    jpeg = image_bytes()
    httpserver.expect_request("/a_1.jpg").respond_with_data(jpeg)
    httpserver.expect_request("/a_2.jpg").respond_with_data("no", status=404)
    entries = {name: httpserver.url_for(f"/{name}") for name in ("a_1.jpg", "a_2.jpg", "a_3.jpg")}
    actor = make_actor(tmp_path, "a", manifest=url_manifest(entries))

    assert fail_download(actor, session) == "Failed to download image a_2.jpg: HTTP 404"
    assert (actor.training_dir / "a_1.jpg").read_bytes() == jpeg
    assert [request.path for request, _ in httpserver.log] == ["/a_1.jpg", "/a_2.jpg"]


# --- slow and broken servers (http.server, where the body's timing matters) ---------------------


class MisbehavingHandler(BaseHTTPRequestHandler):
    """Bodies that dribble, stall late, drop once, or come without a Content-Length."""

    protocol_version = "HTTP/1.1"
    image = image_bytes((128, 128))
    requests_seen: list[str]
    stop: threading.Event

    def do_GET(self) -> None:
        self.requests_seen.append(self.path)
        route = {
            "/dribble.jpg": self.dribble,
            "/late-stall.jpg": self.late_stall,
            "/drop-once.jpg": self.drop_once,
            "/unsized.jpg": self.unsized,
        }[self.path]
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
            route()

    def headers_for(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if length is None:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def dribble(self) -> None:
        self.headers_for(len(self.image))
        for index in range(len(self.image)):
            if self.stop.wait(0.05):
                return
            self.wfile.write(self.image[index : index + 1])
            self.wfile.flush()

    def late_stall(self) -> None:
        """Bytes for 1.5 s, then silence: only a socket wait cut to the time left ends at 2 s."""
        self.headers_for(len(self.image))
        for index in range(30):
            if self.stop.wait(0.05):
                return
            self.wfile.write(self.image[index : index + 1])
            self.wfile.flush()
        self.stop.wait(30)

    def drop_once(self) -> None:
        self.headers_for(len(self.image))
        if self.requests_seen.count(self.path) == 1:
            self.wfile.write(self.image[: len(self.image) // 2])
            self.close_connection = True
        else:
            self.wfile.write(self.image)

    def unsized(self) -> None:
        self.headers_for(None)
        self.close_connection = True
        for _ in range(100):
            self.wfile.write(self.image)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def misbehaving_server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    stop = threading.Event()
    handler = type("Handler", (MisbehavingHandler,), {"requests_seen": seen, "stop": stop})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    stop.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "deadline", "limit"),
    [("/dribble.jpg", 1.0, 4.0), ("/late-stall.jpg", 2.0, 3.0)],
)
def test_a_slow_body_fails_at_the_deadline(
    tmp_path, misbehaving_server, session, path, deadline, limit
):
    base, seen = misbehaving_server
    download = DownloadConfig(timeout=deadline, retries=1, max_bytes=1_000_000)
    actor = make_actor(tmp_path, "a", manifest=url_manifest({"x.jpg": base + path}))

    started = time.monotonic()
    message = fail_download(actor, session, download)
    elapsed = time.monotonic() - started

    assert message == f"Failed to download image x.jpg: timed out after {deadline:g}s"
    # the dribble alone would take over 400 s; idle timeouts alone would end the late stall at 3.5 s
    assert elapsed < limit
    assert seen == [path]  # a body that is too slow is not fetched again
    assert [p.name for p in actor.training_dir.iterdir()] == ["manifest.json"]


def test_a_body_cut_short_is_fetched_again(tmp_path, misbehaving_server, session):
    base, seen = misbehaving_server
    actor = make_actor(tmp_path, "a", manifest=url_manifest({"x.jpg": base + "/drop-once.jpg"}))

    assert download_missing(actor, read_manifest(actor), session, FAST) == ["x.jpg"]
    assert (actor.training_dir / "x.jpg").read_bytes() == MisbehavingHandler.image
    assert seen == ["/drop-once.jpg", "/drop-once.jpg"]


def test_a_body_cut_short_every_time_fails(tmp_path, misbehaving_server, session):
    base, _ = misbehaving_server
    no_retry = DownloadConfig(timeout=1.0, retries=0, max_bytes=1_000_000)
    actor = make_actor(tmp_path, "a", manifest=url_manifest({"x.jpg": base + "/drop-once.jpg"}))

    message = fail_download(actor, session, no_retry)

    assert (
        message == "Failed to download image x.jpg: connection lost before the whole body arrived"
    )


def test_a_body_without_content_length_is_capped_while_streaming(
    tmp_path, misbehaving_server, session
):
    base, _ = misbehaving_server
    capped = DownloadConfig(timeout=1.0, retries=1, max_bytes=len(MisbehavingHandler.image) * 3)
    actor = make_actor(tmp_path, "a", manifest=url_manifest({"x.jpg": base + "/unsized.jpg"}))

    message = fail_download(actor, session, capped)

    assert message == f"Failed to download image x.jpg: larger than {capped.max_bytes} bytes"


@pytest.mark.parametrize(
    ("code", "raised"),
    [(errno.ENOSPC, FatalRunError), (errno.EDQUOT, FatalRunError), (errno.EACCES, ActorError)],
)
def test_a_full_disk_or_quota_stops_the_run_other_write_errors_fail_the_actor(
    tmp_path, monkeypatch, code, raised
):
    """A full disk (or an exhausted quota) would fail every actor alike; a tmp folder cannot be
    filled portably, so the OS error is raised where the write happens."""
    actor = make_actor(tmp_path, "0001_a", manifest={"images": {}})

    def failing_write(path, document):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr("training_data.dataset.write_json_atomic", failing_write)
    with pytest.raises(raised):
        write_manifest(actor, {"images": {}})
    assert json.loads(actor.manifest_path.read_text()) == {"images": {}}


# --- hostile files: special files, huge files, deep JSON, odd names ------------------------------


def nested_json(depth: int) -> str:
    return '{"actor_id": "a", "images": {}, "extra": ' + "[" * depth + "]" * depth + "}"


def test_a_manifest_nested_a_thousand_levels_deep_fails_its_actor_with_one_line(tmp_path):
    actor = make_actor(tmp_path, "a", manifest=nested_json(1000))

    with pytest.raises(ActorError) as caught:
        read_manifest(actor)

    assert str(caught.value) == (
        "manifest.json of a is not valid JSON: nested more than 64 levels deep"
    )


def test_a_manifest_nested_just_within_the_parser_is_refused_before_a_rewrite(tmp_path):
    """900 levels parse, but writing them back would overflow the pretty-printer."""
    actor = make_actor(tmp_path, "a", manifest=nested_json(900))

    with pytest.raises(ActorError, match="nested more than 64 levels deep"):
        read_manifest(actor)


def test_an_actors_data_nested_a_thousand_levels_deep_is_one_line(tmp_path):
    make_actor(tmp_path, "0001_a")
    (tmp_path / "actorsData.json").write_text("[" * 1000 + "]" * 1000)

    with pytest.raises(DatasetError, match=r"actorsData.json is not valid JSON \(nested more"):
        find_actors(tmp_path)


@pytest.mark.parametrize("url", ["http://[::1/x.jpg", "http://", "https://host:99999/x.jpg"])
def test_a_malformed_url_fails_its_image_as_an_invalid_url(tmp_path, session, url):
    actor = make_actor(tmp_path, "a", manifest=url_manifest({"x.jpg": url}))

    assert fail_download(actor, session) == "Failed to download image x.jpg: invalid URL"


def test_a_fifo_manifest_fails_its_actor_instead_of_blocking(tmp_path):
    actor = make_actor(tmp_path, "a")
    os.mkfifo(actor.manifest_path)

    with pytest.raises(ActorError) as caught:
        within(10, read_manifest, actor)

    assert str(caught.value) == "cannot read manifest.json of a: not a regular file (a FIFO)"


def test_a_fifo_actors_data_is_one_line_instead_of_blocking(tmp_path):
    make_actor(tmp_path, "0001_a")
    os.mkfifo(tmp_path / "actorsData.json")

    with pytest.raises(DatasetError, match=r"actorsData.json: not a regular file \(a FIFO\)"):
        within(10, find_actors, tmp_path)


def test_a_manifest_linked_to_dev_zero_is_refused_without_reading(tmp_path):
    actor = make_actor(tmp_path, "a")
    actor.manifest_path.symlink_to("/dev/zero")

    with pytest.raises(ActorError, match=r"not a regular file \(a character device\)"):
        within(10, read_manifest, actor)


def test_a_manifest_over_the_size_cap_is_refused_without_reading(tmp_path):
    """A 6 GiB sparse manifest takes no disk; reading it whole would take the memory."""
    make_actor(tmp_path, "a")
    actor = find_actors(tmp_path, max_file_bytes=1_000_000)[0]
    with open(actor.manifest_path, "wb") as manifest:
        manifest.truncate(6 * 1024**3)

    with pytest.raises(ActorError) as caught:
        read_manifest(actor)

    assert str(caught.value) == (
        "cannot read manifest.json of a: 6,442,450,944 bytes is over the 1,000,000-byte limit "
        "(limits.max_file_mib)"
    )


def test_symlinks_that_loop_or_dangle_are_listed_as_images(tmp_path):
    """So that they show as unreadable on the sheet and in the plan, not fail or hide."""
    actor = make_actor(tmp_path, "a", {"a_1.jpg": image_bytes()})
    (actor.training_dir / "a_2.jpg").symlink_to("a_2.jpg")
    (actor.training_dir / "a_3.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (actor.training_dir / "a_4.jpg").mkdir()

    images = list_training_images(actor, None)

    assert [image.filename for image in images] == ["a_1.jpg", "a_2.jpg", "a_3.jpg"]


@pytest.mark.parametrize("name", ["a\\b.jpg", "a\nb.jpg", "a\tb.jpg"])
def test_an_unusual_file_name_on_disk_fails_the_actor_naming_the_file(tmp_path, name):
    actor = make_actor(tmp_path, "a", {"a_1.jpg": image_bytes(), name: image_bytes()})

    with pytest.raises(ActorError) as caught:
        list_training_images(actor, {"images": {"a_1.jpg": {}}})

    message = str(caught.value)
    assert message.startswith(f"training_data of a holds a file named {name!r}")
    assert message.endswith(": rename it")
    assert "manifest" not in message and "\n" not in message


def test_nan_in_a_manifest_is_written_back_as_null(tmp_path, caplog):
    text = '{"actor_id": "a", "images": {"x.jpg": {"score": NaN, "weight": Infinity}}}'
    actor = make_actor(tmp_path, "a", manifest=text)

    manifest = read_manifest(actor)
    write_manifest(actor, manifest)

    assert manifest["images"]["x.jpg"] == {"score": None, "weight": None}
    assert json.loads(actor.manifest_path.read_text(), parse_constant=pytest.fail)
    assert "manifest.json of a: NaN read as null" in caplog.text


def test_a_key_given_twice_in_a_manifest_is_warned_about(tmp_path, caplog):
    text = '{"images": {"x.jpg": {"type": "bw_stylized"}, "x.jpg": {"type": "photorealistic"}}}'
    actor = make_actor(tmp_path, "a", manifest=text)

    assert read_manifest(actor)["images"] == {"x.jpg": {"type": "photorealistic"}}
    assert "manifest.json of a: key 'x.jpg' is given twice; the last value is used" in caplog.text


# --- a silent server and the deadline of one image ----------------------------------------------


def test_a_silent_server_times_out_once_and_says_so(tmp_path, silent_server):
    base, accepted = silent_server
    download = DownloadConfig(timeout=0.5, retries=3, max_bytes=1_000_000, deadline=20.0)
    actor = make_actor(tmp_path, "a", manifest=url_manifest({"x.jpg": base + "/x.jpg"}))

    with make_session(download, backoff_factor=0.01) as http:
        message = fail_download(actor, http, download)

    assert message == "Failed to download image x.jpg: timed out after 0.5s"
    assert len(accepted) == 1  # a server that took the request and went silent is not asked again


def test_the_deadline_bounds_all_of_one_image(tmp_path, misbehaving_server, session):
    base, _ = misbehaving_server
    download = DownloadConfig(timeout=5.0, retries=3, max_bytes=1_000_000, deadline=1.0)
    actor = make_actor(tmp_path, "a", manifest=url_manifest({"x.jpg": base + "/dribble.jpg"}))

    started = time.monotonic()
    message = fail_download(actor, session, download)

    assert message == (
        "Failed to download image x.jpg: timed out: not fetched within 1s (download.deadline)"
    )
    assert time.monotonic() - started < 4.0  # each wait alone would allow 5 s
