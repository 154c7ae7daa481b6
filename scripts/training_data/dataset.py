"""Dataset: find actors, read manifests, list and download training images.

Downloads go one at a time over a single connection-pooled requests session. urllib3's ``Retry``
retries connection errors and HTTP 408/429/500/502/503/504 up to ``retries`` times, with backoff
and with ``Retry-After`` honoured but capped at ``timeout``; a body the connection drops part way
is fetched again, up to ``retries`` times. The server must answer within ``timeout`` and the whole
body must then arrive within it by the wall clock, so a slow or silent server is cut off at the
deadline. ``max_bytes`` is checked against Content-Length before reading, then while streaming.
The body must decode completely as JPEG, PNG or WebP before it is saved atomically; a file already
present, even a dangling symlink, is never replaced. Error messages never contain the URL, and
query strings are removed from urllib3's own log lines (signed URLs carry tokens there).
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from PIL import Image
from requests.adapters import HTTPAdapter
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from training_data.atomic import write_bytes_atomic, write_json_atomic
from training_data.config import DownloadConfig
from training_data.errors import ActorError, FatalRunError, UsageError, is_disk_full
from training_data.files import (
    DEFAULT_MAX_FILE_BYTES,
    UnreadableFile,
    parse_json,
    read_regular_file,
)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

ACTORS_DATA_NAME = "actorsData.json"
MANIFEST_NAME = "manifest.json"
DOWNLOAD_URL_KEYS = ("url", "s3_url")
DOWNLOADABLE_FORMATS = ("JPEG", "PNG", "WEBP")  # what the suffixes promise; never EPS/PSD/...
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
BODY_CHUNK_BYTES = 64 * 1024
BODY_RETRY_DELAY = 0.5  # seconds before re-fetching a body the connection dropped, doubling
DEADLINE_SLACK = 0.05  # seconds: a timeout this near the image deadline was the deadline's
MAX_NAME_BYTES = 255
USER_AGENT = (
    f"evaluate-and-balance (training-data downloader) {requests.utils.default_user_agent()}"
)

log = logging.getLogger(__name__)


class DatasetError(UsageError):
    """The dataset as a whole cannot be used as given: one line that says what to do, exit 2."""


@dataclass(frozen=True)
class Actor:
    """An actor, addressed by its folder name under ``<data-dir>/actors``.

    ``max_file_bytes`` caps every file of the actor this tool reads (config ``limits``).
    """

    name: str
    folder: Path
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES

    @property
    def training_dir(self) -> Path:
        return self.folder / "training_data"

    @property
    def manifest_path(self) -> Path:
        return self.training_dir / "manifest.json"

    @property
    def base_image_dir(self) -> Path:
        return self.folder / "base_image"

    @property
    def removed_dir(self) -> Path:
        return self.folder / "removed_training_data"


def base_images(actor: Actor) -> list[Path]:
    """The actor's reference pictures (``base_image/``), by name: the identity the face checks
    compare, and the generator's source when no photo is one; none when it cannot be read."""
    try:
        paths = actor.base_image_dir.iterdir()
        return sorted(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError:
        return []


@dataclass(frozen=True)
class TrainingImage:
    """One image of an actor's training set; ``number`` is 1-based in filename order."""

    number: int
    filename: str
    path: Path
    entry: dict[str, Any] | None = None

    def trusted_type(self, categories: tuple[str, ...]) -> str | None:
        """The manifest ``type``, when it names a configured category."""
        recorded = (self.entry or {}).get("type")
        return recorded if recorded in categories else None


# --- actors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorScan:
    """The actors found, and the candidate folders that are not actors for want of
    ``training_data/`` (images put straight into ``actors/<name>/``, say)."""

    actors: list[Actor]
    without_training_data: list[Path]
    actors_dir: Path

    def layout_notice(self) -> str | None:
        """One line for the user when some folders were passed over, else None."""
        if not self.without_training_data:
            return None
        count = len(self.without_training_data)
        return (
            f"note: {count} folder{'s' if count != 1 else ''} in {self.actors_dir} "
            f"{'have' if count != 1 else 'has'} no training_data/ folder and "
            f"{'are' if count != 1 else 'is'} not treated as actors, e.g. "
            f"{_example_folder(self.without_training_data)}; {expected_layout(self.actors_dir)}"
        )


def expected_layout(actors_dir: Path) -> str:
    return f"expected layout: {actors_dir}/<actor>/training_data/<images>"


def find_actors(data_dir: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> list[Actor]:
    """The actors, sorted by name; only those that have a ``training_data/`` folder."""
    return scan_actors(data_dir, max_file_bytes).actors


def scan_actors(data_dir: Path, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> ActorScan:
    """Like ``find_actors``, also naming the folders passed over.

    Finding no actor while ``actors/`` holds something is a layout mistake, never an empty run.
    """
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DatasetError(f"data folder not found: {data_dir} (pass --data-dir <dataset root>)")
    if not data_dir.is_dir():
        raise DatasetError(
            f"data folder {data_dir} is not a folder (pass --data-dir <dataset root>)"
        )
    actors_dir = data_dir / "actors"
    if not actors_dir.is_dir():
        raise DatasetError(
            f"no actors/ folder in {data_dir}: pass --data-dir the folder that holds actors/"
        )
    listing = data_dir / ACTORS_DATA_NAME
    if os.path.lexists(listing):
        names = _listed_actor_names(listing, max_file_bytes)
    else:
        names = _actor_folder_names(actors_dir)
    actors, passed_over = [], []
    for name in sorted(set(names)):
        actor = Actor(name, actors_dir / name, max_file_bytes)
        if actor.training_dir.is_dir():
            actors.append(actor)
        elif actor.folder.is_dir():
            passed_over.append(actor.folder)
    scan = ActorScan(actors, passed_over, actors_dir)
    if not actors:
        _check_nothing_is_there(scan, listing)
    return scan


def _check_nothing_is_there(scan: ActorScan, listing: Path) -> None:
    layout = expected_layout(scan.actors_dir)
    if scan.without_training_data:
        count = len(scan.without_training_data)
        raise DatasetError(
            f"no actors in {scan.actors_dir}: {count} folder{'s' if count != 1 else ''} but none "
            f"with a training_data/ folder, e.g. {_example_folder(scan.without_training_data)}"
            f"; {layout}"
        )
    entries = sorted(_visible_names(scan.actors_dir))
    if entries:
        where = f"none of the names in {listing.name} is" if listing.exists() else "nothing is"
        raise DatasetError(
            f"no actors in {scan.actors_dir}: {where} an actor folder, but it holds "
            f"{len(entries)} entr{'ies' if len(entries) != 1 else 'y'}, e.g. {entries[0]}; {layout}"
        )


def _example_folder(folders: list[Path]) -> str:
    """``actors/jane/ (holds jane1.jpg)``: what the user put where, a folder with files first."""
    for folder in folders[:100]:
        inside = sorted(_visible_names(folder))
        if inside:
            return f"{folder}/ (holds {inside[0]})"
    return f"{folders[0]}/ (empty)"


def _visible_names(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [entry.name for entry in entries if not entry.name.startswith(".")]
    except OSError:
        return []


def select_actor(actors: Sequence[Actor], actor_id: str, flag: str = "--actor-id") -> Actor:
    """The actor named exactly ``actor_id``, else the only one whose name starts with it.

    ``flag``: the option the user typed, for the error message.
    """
    for actor in actors:
        if actor.name == actor_id:
            return actor
    matches = [actor for actor in actors if actor_id and actor.name.startswith(actor_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DatasetError(
            f"no actor matches {flag} {actor_id!r}: "
            "give an actor folder name (or a unique prefix of one) that has a training_data folder"
        )
    shown = ", ".join(actor.name for actor in matches[:5]) + (", ..." if len(matches) > 5 else "")
    raise DatasetError(
        f"{flag} {actor_id!r} matches {len(matches)} actors ({shown}): give more of the name"
    )


def _listed_actor_names(listing: Path, max_file_bytes: int) -> list[str]:
    """Names from actorsData.json; any malformed or path-like entry is an error, never skipped."""
    try:
        text = read_regular_file(listing, max_file_bytes).decode("utf-8-sig")
    except UnreadableFile as error:
        raise DatasetError(f"cannot read {listing}: {error}: fix or remove it") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {listing}: {_os_reason(error)}") from None
    try:
        document = parse_json(text)
    except ValueError as error:
        raise DatasetError(f"{listing} is not valid JSON ({error}): fix or remove it") from None
    if not isinstance(document, list):
        raise DatasetError(f'{listing} must be a list of objects with a "name": fix or remove it')
    names = []
    for index, entry in enumerate(document):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise DatasetError(f'{listing}: entry {index} has no "name" string: fix or remove it')
        if not _is_plain_name(name):
            raise DatasetError(
                f"{listing}: entry {index} name {name!r} is not a plain folder name "
                "(no '/', '\\', '..'): fix it"
            )
        names.append(name)
    return names


def _actor_folder_names(actors_dir: Path) -> list[str]:
    try:
        with os.scandir(actors_dir) as entries:
            return [e.name for e in entries if not e.name.startswith(".") and e.is_dir()]
    except OSError as error:
        raise DatasetError(f"cannot read {actors_dir}: {_os_reason(error)}") from None


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not set(name) & {"/", "\\", "\0"}


# --- manifest -----------------------------------------------------------------------------------


def read_manifest(actor: Actor) -> dict[str, Any] | None:
    """The actor's manifest.json, or None when it has none.

    A key given twice in one object keeps its last value, as JSON readers do, with a warning;
    NaN and Infinity (not JSON, but Python writes them) become null, so what is written back is
    standard JSON.
    """
    try:
        text = read_regular_file(actor.manifest_path, actor.max_file_bytes).decode("utf-8-sig")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ActorError(f"manifest.json of {actor.name} is not valid JSON: not UTF-8") from None
    except UnreadableFile as error:
        raise ActorError(f"cannot read manifest.json of {actor.name}: {error}") from None
    except OSError as error:
        raise ActorError(
            f"cannot read manifest.json of {actor.name}: {_os_reason(error)}"
        ) from None
    oddities: list[str] = []
    try:
        document = parse_json(
            text,
            object_pairs_hook=lambda pairs: _object_warning_twice(pairs, oddities),
            parse_constant=lambda constant: oddities.append(f"{constant} read as null"),
        )
    except ValueError as error:
        raise ActorError(f"manifest.json of {actor.name} is not valid JSON: {error}") from None
    for oddity in dict.fromkeys(oddities):
        log.warning("manifest.json of %s: %s", actor.name, oddity)
    problem = _manifest_shape_problem(document)
    if problem:
        raise ActorError(f"manifest.json of {actor.name} is not a valid manifest: {problem}")
    return document


def _object_warning_twice(pairs: list[tuple[str, Any]], oddities: list[str]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) < len(pairs):
        seen: set[str] = set()
        twice = [key for key, _ in pairs if key in seen or seen.add(key)]
        oddities += [f"key {key!r} is given twice; the last value is used" for key in twice]
    return document


def write_manifest(actor: Actor, manifest: dict[str, Any]) -> None:
    """Replace manifest.json atomically; the dict is written as given, unknown fields included."""
    try:
        write_json_atomic(actor.manifest_path, manifest)
    except OSError as error:
        if is_disk_full(error):
            raise FatalRunError(f"disk full: cannot write {actor.manifest_path}") from None
        raise ActorError(
            f"cannot write manifest.json of {actor.name}: {_os_reason(error)}"
        ) from None


def check_manifest_filename(name: str) -> None:
    """A manifest filename must name a file directly inside training_data."""
    problem = _filename_problem(name)
    if problem:
        raise ActorError(
            f"manifest.json lists {name!r}, which is not a plain image file name "
            f"inside training_data: {problem}"
        )


def _manifest_shape_problem(document: Any) -> str | None:
    if not isinstance(document, dict):
        return "the top level must be an object"
    images = document.get("images", {})
    if not isinstance(images, dict):
        return '"images" must be an object of filename: entry'
    for name, entry in images.items():
        if not isinstance(entry, dict):
            return f'"images" entry {name!r} must be an object'
        for key in (*DOWNLOAD_URL_KEYS, "type", "prompt"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                return f'"{key}" of {name!r} must be a string'
    if not isinstance(document.get("actor_id", ""), str):
        return '"actor_id" must be a string'
    if not isinstance(document.get("removed_images", {}), dict):
        return '"removed_images" must be an object'
    if not isinstance(document.get("generations", []), list):
        return '"generations" must be a list'
    if not isinstance(document.get("subject_checks", True), bool):
        return '"subject_checks" must be true or false'
    return None


def _filename_problem(name: str) -> str | None:
    if not isinstance(name, str) or not name:
        return "it is empty"
    if name in (".", ".."):
        return "it names a folder"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if any(ord(character) < 32 or character == "\x7f" for character in name):
        return "it contains a control character"
    if name.startswith("."):
        return "hidden files are not training images"
    if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        return f"its suffix is not one of {' '.join(IMAGE_SUFFIXES)}"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    return None


def _checked_entries(manifest: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The manifest's image entries, after every filename has passed the check."""
    entries = (manifest or {}).get("images") or {}
    for name in entries:
        check_manifest_filename(name)
    return entries


# --- training images ----------------------------------------------------------------------------


def list_training_images(actor: Actor, manifest: dict[str, Any] | None) -> list[TrainingImage]:
    """Image files in training_data plus manifest entries (missing files included), numbered 1..

    Order is natural filename order (``x_2`` before ``x_10``), so numbers follow the names.
    """
    entries = _checked_entries(manifest)
    names = set(_image_files_in(actor)) | set(entries)
    return [
        TrainingImage(number, name, actor.training_dir / name, entries.get(name))
        for number, name in enumerate(sorted(names, key=_filename_order), start=1)
    ]


def load_training_images(
    actor: Actor, session: requests.Session, download: DownloadConfig
) -> tuple[dict[str, Any] | None, list[TrainingImage]]:
    """The actor's manifest and whole training set, every downloadable entry fetched, or an
    ActorError. The manifest is read once (downloads do not change it).

    Every manifest filename is checked before the first download, so a hostile name fails the
    actor with nothing fetched or written.
    """
    manifest = read_manifest(actor)
    download_missing(actor, manifest, session, download)
    return manifest, list_training_images(actor, manifest)


def count_training_images(actor: Actor) -> int:
    """Size of the training set as it would be loaded, without downloading or decoding."""
    return len(list_training_images(actor, read_manifest(actor)))


def sidecars_of(image_path: Path) -> list[Path]:
    """Files that belong to an image: ``x.txt``, ``x.caption``, ``x.json``, ``x.jpg.txt``...

    A sidecar named by stem (``x.txt``) is shared when another image has the same stem
    (``x.png``): it then belongs to neither, so removing one image never takes the other's caption.
    """
    image_path = Path(image_path)
    try:
        with os.scandir(image_path.parent) as entries:
            names = sorted(entry.name for entry in entries if not _is_folder(entry))
    except FileNotFoundError:
        return []
    stem = image_path.stem
    stem_is_shared = any(
        name != image_path.name and _is_image_name(name) and Path(name).stem == stem
        for name in names
    )

    def belongs(name: str) -> bool:
        if name.startswith(".") or name == MANIFEST_NAME or _is_image_name(name):
            return False
        own_stem = Path(name).stem
        return own_stem == image_path.name or (own_stem == stem and not stem_is_shared)

    return [image_path.parent / name for name in names if belongs(name)]


def _image_files_in(actor: Actor) -> list[str]:
    """Every entry named like an image but a folder: a symlink that loops or dangles, a FIFO...
    is listed too, so that it shows as an unreadable image with its reason instead of hiding."""
    try:
        with os.scandir(actor.training_dir) as entries:
            names = [
                entry.name
                for entry in entries
                if _is_image_name(entry.name)
                and not entry.name.startswith(".")
                and not _is_folder(entry)
            ]
    except FileNotFoundError:
        if not actor.folder.parent.is_dir():
            raise FatalRunError(f"data folder is gone: {actor.folder.parent} is missing") from None
        raise ActorError(f"training_data folder of {actor.name} is missing") from None
    except OSError as error:
        raise ActorError(
            f"cannot read training_data of {actor.name}: {_os_reason(error)}"
        ) from None
    for name in names:
        problem = _filename_problem(name)
        if problem:
            raise ActorError(
                f"training_data of {actor.name} holds a file named {name!r} that this tool "
                f"does not handle ({problem}): rename it"
            )
    return names


def _is_folder(entry: os.DirEntry[str]) -> bool:
    """A symlink to a folder; a loop or a dangling link is no folder."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def _filename_order(name: str) -> tuple[tuple[str | int, ...], str]:
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), name


# --- downloads ----------------------------------------------------------------------------------


class _DownloadFailed(Exception):
    """One image could not be fetched; ``reason`` is short and never contains the URL."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class _ImageDeadline:
    """The instant by which one image must be fetched (``download.deadline`` from its start).

    urllib3 retries inside ``session.get``, out of our hands; so the deadline is set for the
    downloading thread, where ``_DeadlineRetry`` and ``_DeadlineTimeout`` find it. Other users of
    the session (the generator) set none and keep plain urllib3 behaviour.
    """

    current = threading.local()

    def __init__(self, download: DownloadConfig) -> None:
        self.download = download
        self.ends = time.monotonic() + download.deadline

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def wait(self) -> float:
        """One wait for the server: ``download.timeout``, or less when the deadline is nearer."""
        return max(min(self.download.timeout, self.remaining()), 0.001)

    def timed_out(self) -> str:
        """What a timeout is called: the deadline's when it was the deadline that cut it short."""
        if self.remaining() <= DEADLINE_SLACK:
            return f"timed out: not fetched within {self.download.deadline:g}s (download.deadline)"
        return f"timed out after {self.download.timeout:g}s"

    @classmethod
    def of_thread(cls) -> _ImageDeadline | None:
        return getattr(cls.current, "deadline", None)


class _DeadlineRetry(Retry):
    """urllib3's retries, ended by the image deadline; a read timeout is not retried under one:
    a server that accepted and then stayed silent for a whole timeout is given up on."""

    def increment(self, *args: Any, **kwargs: Any) -> Retry:
        deadline = _ImageDeadline.of_thread()
        error = kwargs.get("error")
        if deadline is not None and (
            deadline.remaining() <= 0 or isinstance(error, ReadTimeoutError)
        ):
            return Retry.increment(self.new(total=0), *args, **kwargs)
        return super().increment(*args, **kwargs)

    def sleep(self, response: Any = None) -> None:
        deadline = _ImageDeadline.of_thread()
        if deadline is None:
            super().sleep(response)
            return
        wait = None
        if response is not None and self.respect_retry_after_header:
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time()
        time.sleep(max(0.0, min(wait, deadline.remaining())))


class _DeadlineTimeout(Timeout):
    """Each connect and read wait of every attempt, cut to the time left before the deadline."""

    def __init__(self, deadline: _ImageDeadline) -> None:
        super().__init__(connect=deadline.download.timeout, read=deadline.download.timeout)
        self.deadline = deadline

    def clone(self) -> _DeadlineTimeout:
        return _DeadlineTimeout(self.deadline)

    @property
    def connect_timeout(self) -> float:
        return self.deadline.wait()

    @property
    def read_timeout(self) -> float:
        return self.deadline.wait()


class _RedactQueryStrings(logging.Filter):
    """urllib3 logs request URLs (retries, redirects), whose query string may carry a token."""

    QUERY = re.compile(r"\?[^\s'\"<>)]*")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = self.QUERY.sub("?<redacted>", message), ()
        return True


def make_session(
    download: DownloadConfig | None = None, *, backoff_factor: float = 0.5
) -> requests.Session:
    """One HTTP session per run: pooled connections, retries with backoff, honoured Retry-After.

    Connection errors and 408/429/5xx answers are retried ``download.retries`` times by urllib3
    before a response reaches us; a Retry-After longer than ``download.timeout`` is cut to it.
    A download stops them all at its ``download.deadline``.
    """
    download = download or DownloadConfig()
    retry = _DeadlineRetry(
        total=download.retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "HEAD"}),
        backoff_factor=backoff_factor,
        backoff_max=download.timeout,
        respect_retry_after_header=True,
        retry_after_max=math.ceil(download.timeout),
        raise_on_status=False,
    )
    adapter = HTTPAdapter(max_retries=retry)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    _redact_urllib3_logs()
    return session


def download_missing(
    actor: Actor,
    manifest: dict[str, Any] | None,
    session: requests.Session,
    download: DownloadConfig,
) -> list[str]:
    """Fetch every manifest entry whose file is missing and that has an http(s) URL.

    Each image is checked to be a whole JPEG/PNG/WebP before it is saved atomically; the first
    one that still fails after retries fails the actor. Returns the filenames downloaded.
    """
    entries = _checked_entries(manifest)
    downloaded = []
    for filename in sorted(entries, key=_filename_order):
        path = actor.training_dir / filename
        url = _download_url(entries[filename])
        if os.path.lexists(path) or url is None:
            continue
        try:
            body = _fetch_with_retries(session, url, _ImageDeadline(download))
            _check_image(body)
        except _DownloadFailed as failure:
            raise ActorError(f"Failed to download image {filename}: {failure.reason}") from None
        _save_download(path, body)
        log.info("%s: downloaded %s (%d bytes)", actor.name, filename, len(body))
        downloaded.append(filename)
    return downloaded


def _download_url(entry: dict[str, Any]) -> str | None:
    """The entry's http(s) URL; one that says so but does not parse is kept, to fail as such."""
    for key in DOWNLOAD_URL_KEYS:
        value = entry.get(key)
        if isinstance(value, str) and value.strip().lower().startswith(("http://", "https://")):
            return value
    return None


def _fetch_with_retries(session: requests.Session, url: str, deadline: _ImageDeadline) -> bytes:
    """urllib3 retries everything before the body; a body the connection dropped is re-fetched.

    All of it within the image's deadline.
    """
    _check_url(url)
    download = deadline.download
    _ImageDeadline.current.deadline = deadline
    try:
        attempt = 0
        while True:
            try:
                return _fetch(session, url, deadline)
            except _DownloadFailed as failure:
                pause = BODY_RETRY_DELAY * 2**attempt
                if not failure.retryable or attempt >= download.retries:
                    raise
                if pause >= deadline.remaining():
                    raise _DownloadFailed(deadline.timed_out()) from None
            time.sleep(pause)
            attempt += 1
    finally:
        _ImageDeadline.current.deadline = None


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url.strip())
        valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        valid = valid and (parts.port is None or parts.port > 0)
    except ValueError:
        valid = False
    if not valid:
        raise _DownloadFailed("invalid URL")


def _fetch(session: requests.Session, url: str, deadline: _ImageDeadline) -> bytes:
    download = deadline.download
    try:
        response = session.get(url, stream=True, timeout=_DeadlineTimeout(deadline))
    except requests.RequestException as error:
        raise _DownloadFailed(_request_failure_reason(error, deadline)) from None
    except ValueError:  # urllib3 parses again (and a redirect brings a new URL): hostile forms
        raise _DownloadFailed("invalid URL") from None
    with response:
        if response.status_code != 200:
            raise _DownloadFailed(f"HTTP {response.status_code}")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > download.max_bytes:
            raise _DownloadFailed(f"larger than {download.max_bytes} bytes")
        return _read_body(response, deadline)


def _read_body(response: requests.Response, image_deadline: _ImageDeadline) -> bytes:
    """The whole body within ``download.timeout`` seconds of wall clock (and within the image's
    deadline), at most ``max_bytes``.

    ``read1`` returns as soon as any bytes arrive and every socket wait is cut to the time left,
    so a server that dribbles or stalls cannot stretch the deadline.
    """
    download = image_deadline.download
    deadline = time.monotonic() + image_deadline.wait()
    body = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _DownloadFailed(image_deadline.timed_out())
        _limit_socket_wait(response, remaining)
        try:
            chunk = response.raw.read1(BODY_CHUNK_BYTES, decode_content=True)
        except ReadTimeoutError:
            raise _DownloadFailed(image_deadline.timed_out()) from None
        except TransportError:
            raise _DownloadFailed(
                "connection lost before the whole body arrived", retryable=True
            ) from None
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > download.max_bytes:
            raise _DownloadFailed(f"larger than {download.max_bytes} bytes")


def _limit_socket_wait(response: requests.Response, seconds: float) -> None:
    """urllib3 sets the read timeout per request again, so a pooled connection is unaffected."""
    sock = getattr(response.raw.connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))


def _request_failure_reason(error: requests.RequestException, deadline: _ImageDeadline) -> str:
    """A short reason; ``str(error)`` would carry the URL and its query string."""
    causes = _causes(error)
    if isinstance(error, requests.ConnectTimeout):
        return f"connection {deadline.timed_out()}"
    if isinstance(error, requests.ReadTimeout) or any(
        isinstance(cause, ReadTimeoutError) for cause in causes
    ):
        return deadline.timed_out()
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(error, requests.TooManyRedirects):
        return "too many redirects"
    if isinstance(error, requests.exceptions.InvalidURL | requests.exceptions.InvalidSchema):
        return "invalid URL"
    if isinstance(error, requests.ConnectionError):
        if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
            return "connection refused"
        if any(type(cause).__name__ == "gaierror" for cause in causes):
            return "host not found"
        return "connection failed"
    return f"request failed ({type(error).__name__})"


def _causes(error: BaseException) -> list[BaseException]:
    """The chain below a requests error: its wrapped urllib3 error, reasons, causes, contexts."""
    found: list[BaseException] = []
    pending: list[Any] = [error]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or current in found:
            continue
        found.append(current)
        pending += [*current.args, getattr(current, "reason", None)]
        pending += [current.__cause__, current.__context__]
    return found


def _check_image(body: bytes) -> None:
    """Decode the whole image (JPEG at 1/8 scale) so a truncated body is caught, bombs refused."""
    try:
        with (
            warnings.catch_warnings(action="error", category=Image.DecompressionBombWarning),
            Image.open(BytesIO(body), formats=DOWNLOADABLE_FORMATS) as image,
        ):
            image.draft(image.mode, (max(image.width // 8, 1), max(image.height // 8, 1)))
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise _DownloadFailed("too many pixels (decompression bomb)") from None
    except Image.UnidentifiedImageError:
        raise _DownloadFailed("not a JPEG, PNG or WebP image") from None
    except Exception:  # Pillow raises many types on hostile data; all mean the same here
        raise _DownloadFailed("truncated or corrupt image") from None


def _save_download(path: Path, body: bytes) -> None:
    try:
        write_bytes_atomic(path, body)
    except OSError as error:
        if is_disk_full(error):
            raise FatalRunError(f"disk full: cannot save {path}") from None
        raise ActorError(
            f"Failed to download image {path.name}: cannot save it ({_os_reason(error)})"
        ) from None


def _redact_urllib3_logs() -> None:
    for name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactQueryStrings) for f in logger.filters):
            logger.addFilter(_RedactQueryStrings())


def _os_reason(error: OSError | UnicodeDecodeError) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return error.strerror or type(error).__name__
