"""The review site: ``<output>/report/``, a static HTML report over every actor, plus two CSVs.

Files (all replaced atomically: a temp file in the same folder, then ``os.replace``):

- ``index.html``: a fixed page; its script reads ``data/index.js`` (a ``<script>`` file, because
  Chromium blocks ``fetch`` of a JSON file from ``file://``) and shows 50 rows a page, so 10,000
  actors never mean 200,000 ``<img>`` tags. Filters, sorting and search run on the rows in memory.
- ``data/index.js``: every actor's row (state, counts against the target, removals, generations,
  defects, low-confidence calls, a strip of thumbnails) and the totals.
- ``actors/<slug>.html``: one page per actor, every image with its verdict and the plan's mark.
- ``thumbs/<aa>/<sha>.jpg``: thumbnails named by the image's content hash, made from the working
  image the evaluation decoded (no second decode) and never made twice.
- ``actors.csv`` and ``images.csv``: the same data for scripts, written at the end of a run (also
  a stopped one) and by ``--report``: at 10,000 actors images.csv is 13 MB, too dear per actor.

Scale: ``ReviewSite`` keeps each actor's encoded index row and CSV lines in memory, so updating
one actor re-encodes that actor only and joins the rest as bytes. The report is derived data
(``--report`` rebuilds it from the evaluation JSONs), so its files are replaced atomically but not
fsynced: a crash may lose the last update, never show half a page (fsync and ext4's flush on
rename-over cost 1-5 ms a file here). ``scripts/bench_report.py`` at 10,000 actors x 20 images:
an update costs 11.8 ms median (18.4 ms slowest) with the thumbnails already there, 36.7 ms with
20 new ones; opening the site at a run's start ~1 s; ``--report`` ~34 s. In headless Chromium the
10,000-actor index loads in ~1.1 s, a filter or a sort re-renders in 30-110 ms.

Every name reaches a page as text: the actor pages escape it (``html.escape``), the index sets it
with ``textContent``, and ``data/index.js`` escapes ``<`` so no string can close its script.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import re
import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from training_data.atomic import sweep_temp_files, write_bytes_atomic
from training_data.errors import FatalRunError
from training_data.files import (
    DEFAULT_MAX_FILE_BYTES,
    UnreadableFile,
    actor_file_name,
    parse_json,
    read_regular_file,
)
from training_data.report import short_reason

log = logging.getLogger(__name__)

REPORT_DIR = "report"
STATES = ("balanced", "rebalanced", "short", "failed", "skipped")
NEEDS_A_LOOK_STATES = frozenset({"failed", "short"})
MALFORMED = (TypeError, AttributeError, KeyError, ValueError)  # valid JSON, not our evaluation
INDEX_REST_FACTOR = 10  # a throttled index.js rewrite takes at most a tenth of the run's time
LOW_CONFIDENCE = 0.65  # a style call less sure than this asks for a look
THUMB_SIDE = 160
THUMB_QUALITY = 75
THUMB_NAME_HEX = 32  # 128 bits of the sha256: unique in any dataset, half the bytes in the rows
PAGE_DIGEST_LENGTH = 10
STRIP_LENGTH = 8
DATA_PREFIX = "window.REVIEW_DATA = "
PROG = "evaluate-and-balance"
ACTOR_COLUMNS = ("actor", "state", "state_reason", "images")
ACTOR_TAIL_COLUMNS = ("removals", "generations", "defects", "low_confidence", "error")
IMAGE_COLUMNS = (
    "actor",
    "number",
    "file",
    "category",
    "confidence",
    "quality",
    "issues",
    "duplicate_of",
    "action",
    "reason",
)


# --- the data the pages are built from (pure) ---------------------------------------------------


def actor_state(document: Mapping[str, Any]) -> tuple[str, str]:
    """The actor's state and its reason: the JSON's own, or derived for files written before it."""
    state = document.get("state")
    if state in STATES:
        return state, str(document.get("state_reason") or "")
    skipped = document.get("skipped_reason") or document.get("skipped")
    if skipped:
        return "skipped", skipped if isinstance(skipped, str) else ""
    return ("balanced" if document.get("is_balanced") else "rebalanced"), ""


def style_confidence(image: Mapping[str, Any]) -> float | None:
    """How sure the classifier was of the category it chose; None for a trusted manifest type
    or an evaluator that gives no figure."""
    measurements = image.get("measurements") or {}
    if measurements.get("type_source") == "manifest":
        return None
    style = measurements.get("style") or {}
    if _is_number(style.get("confidence")):
        return float(style["confidence"])
    probability = style.get("photo_probability")
    if not _is_number(probability) or image.get("type") is None:
        return None
    return float(probability if image["type"] == "photorealistic" else 1.0 - probability)


def face_box(image: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """The main face as relative (x0, y0, x1, y1), when the face check found a sane one."""
    face = (image.get("measurements") or {}).get("face") or {}
    box = face.get("box") if isinstance(face, dict) else None
    if not isinstance(box, list | tuple) or len(box) != 4 or not all(map(_is_number, box)):
        return None
    x0, y0, x1, y1 = (min(1.0, max(0.0, float(value))) for value in box)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def thumb_name(sha256: str) -> str | None:
    """``aa/<hex>.jpg`` under ``thumbs/``; None when the hash is not one (unreadable file)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        return None
    return f"{sha256[:2]}/{sha256[:THUMB_NAME_HEX]}.jpg"


def page_name(actor: str) -> str:
    """``actors/<this>`` of the report: safe on every file system and in a URL."""
    return f"{actor_file_name(actor, PAGE_DIGEST_LENGTH)}.html"


def planned_removals(document: Mapping[str, Any]) -> dict[int, str]:
    """Image number -> the plan's reason for removing it."""
    return {
        entry["number"]: str(entry.get("reason", ""))
        for entry in document.get("images_to_delete") or []
        if isinstance(entry, dict) and isinstance(entry.get("number"), int)
    }


def image_rows(
    document: Mapping[str, Any], has_thumb: Callable[[str], bool] = lambda _name: True
) -> list[dict[str, Any]]:
    """One entry per image: what the actor page and images.csv show.

    ``has_thumb`` says whether a thumbnail file exists (an evaluation from before the report
    has none), so that no page points at a missing picture.
    """
    removals = planned_removals(document)
    images = [image for image in document.get("images") or [] if isinstance(image, dict)]
    numbers = {image.get("filename"): image.get("number") for image in images}
    rows = []
    for image in images:
        number = image.get("number")
        reason = removals.get(number)
        duplicate_of = image.get("duplicate_of")
        confidence = style_confidence(image)
        issues = [str(issue) for issue in image.get("issues") or []]
        thumb = None if "unreadable" in issues else thumb_name(str(image.get("sha256") or ""))
        rows.append(
            {
                "number": number,
                "file": str(image.get("filename", "")),
                "category": image.get("type"),
                "confidence": None if confidence is None else round(confidence, 3),
                "low_confidence": confidence is not None and confidence < LOW_CONFIDENCE,
                "quality": image.get("quality_score"),
                "issues": issues,
                "duplicate_of": duplicate_of,
                "duplicate_number": numbers.get(duplicate_of),
                "action": "remove" if reason is not None else "keep",
                "reason": reason or "",
                "short_reason": short_reason(reason, numbers, image.get("issues") or [])
                if reason is not None
                else "",
                "thumb": thumb if thumb and has_thumb(thumb) else None,
                "face_box": face_box(image),
                "note": image.get("note"),
            }
        )
    return rows


def actor_row(
    document: Mapping[str, Any] | None,
    name: str,
    images: Sequence[Mapping[str, Any]],
    *,
    error: str = "",
    skipped_reason: str = "",
) -> dict[str, Any]:
    """The actor's line of the index: a failure or a skip overrides what an older JSON says.

    ``images``: the document's ``image_rows``, built once per actor for the row, the page and
    images.csv (each build checks every thumbnail on disk)."""
    document = document or {}
    if error:
        state, reason = "failed", error
    elif skipped_reason:
        state, reason = "skipped", skipped_reason
    else:
        state, reason = actor_state(document)
    target = dict((document.get("target") or {}).get("counts") or {})
    after = (document.get("execution") or {}).get("after") or {}
    counts = dict(after.get("counts") or document.get("counts") or {})
    removals = sum(1 for image in images if image["action"] == "remove")
    low = sum(1 for image in images if image["low_confidence"])
    row = {
        "name": name,
        "page": f"actors/{page_name(name)}",
        "state": state,
        "reason": reason,
        "images": len(images),
        "counts": counts,
        "target": target,
        "after_execute": bool(after),
        "types": dict(Counter(image["category"] or "unreadable" for image in images)),
        "issues": dict(Counter(issue for image in images for issue in image["issues"])),
        "remove": removals,
        "generate": sum(
            entry.get("count", 0)
            for entry in document.get("images_to_generate") or []
            if isinstance(entry, dict) and isinstance(entry.get("count"), int)
        ),
        "defects": sum(1 for image in images if image["issues"]),
        "low": low,
        "thumbs": [
            [image["thumb"], int(image["action"] == "remove")] for image in images if image["thumb"]
        ][:STRIP_LENGTH],
        "error": error,
    }
    row["look"] = needs_a_look(row)
    return row


def needs_a_look(row: Mapping[str, Any]) -> bool:
    """Failed or short, removals planned, or a style call the classifier was unsure of."""
    return row["state"] in NEEDS_A_LOOK_STATES or row["remove"] > 0 or row["low"] > 0


@dataclass
class Totals:
    """The figures on top of the index, kept up to date row by row (no pass over every actor)."""

    actors: int = 0
    look: int = 0
    states: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    issues: Counter[str] = field(default_factory=Counter)

    def add(self, row: Mapping[str, Any], sign: int = 1) -> None:
        self.actors += sign
        self.look += sign * bool(row["look"])
        self.states[row["state"]] += sign
        for name, count in row["types"].items():
            self.categories[name] += sign * count
        for name, count in row["issues"].items():
            self.issues[name] += sign * count

    def remove(self, row: Mapping[str, Any]) -> None:
        self.add(row, sign=-1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "actors": self.actors,
            "look": self.look,
            "states": {state: self.states[state] for state in STATES},
            "categories": _positive(self.categories),
            "issues": _positive(self.issues),
        }


def _positive(counter: Counter[str]) -> dict[str, int]:
    return {name: count for name, count in sorted(counter.items()) if count > 0}


def restore_command(actor: str, data_dir: Path | None, output_dir: Path | None = None) -> str:
    """A command that works from any folder: absolute folders, the run's own output folder (its
    lock keeps the restore from racing an execute run), ``--restore=NAME`` for a name like ``-x``.
    """
    restore = [f"--restore={actor}"] if actor.startswith("-") else ["--restore", actor]
    parts = [PROG, *restore]
    if data_dir is not None:
        parts += ["--data-dir", str(Path(data_dir).absolute())]
    if output_dir is not None:
        parts += ["--output-dir", str(Path(output_dir).absolute())]
    return shlex.join(parts)


# --- encodings (pure) ---------------------------------------------------------------------------


def encode_row(row: Mapping[str, Any]) -> bytes:
    """One row of data/index.js; ``<`` escaped so that no name can end the script early."""
    text = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").encode("utf-8", "surrogatepass")


def index_data(rows: Iterable[bytes], totals: Totals, categories: Sequence[str]) -> bytes:
    head = {
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "categories": list(categories),
        "states": list(STATES),
        "low_confidence": LOW_CONFIDENCE,
        "totals": totals.to_dict(),
    }
    opening = json.dumps(head, ensure_ascii=False)[:-1].replace("<", "\\u003c")
    return b"".join(
        [
            f'{DATA_PREFIX}{opening}, "rows": [\n'.encode(),
            b",\n".join(rows),
            b"\n]};\n",
        ]
    )


def read_index_data(data: bytes) -> dict[str, Any]:
    """The document ``index_data`` wrote; ValueError if it is not one."""
    text = data.decode("utf-8", "surrogatepass").strip()
    if not text.startswith(DATA_PREFIX) or not text.endswith(";"):
        raise ValueError("not a review data file")
    document = parse_json(text[len(DATA_PREFIX) : -1])
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise ValueError("review data without rows")
    return document


def actor_csv_header(categories: Sequence[str]) -> list[str]:
    per_category = [column for c in categories for column in (c, f"{c}_target")]
    return [*ACTOR_COLUMNS, *per_category, *ACTOR_TAIL_COLUMNS]


def actor_csv_line(row: Mapping[str, Any], categories: Sequence[str]) -> bytes:
    per_category = [
        value for c in categories for value in (row["counts"].get(c, ""), row["target"].get(c, ""))
    ]
    values = [row["name"], row["state"], row["reason"], row["images"], *per_category]
    values += [row["remove"], row["generate"], row["defects"], row["low"], row["error"]]
    return _csv_bytes([values])


def image_csv_lines(actor: str, images: Sequence[Mapping[str, Any]]) -> bytes:
    return _csv_bytes(
        [
            [
                actor,
                image["number"],
                image["file"],
                image["category"] or "",
                "" if image["confidence"] is None else image["confidence"],
                image["quality"],
                ";".join(image["issues"]),
                image["duplicate_of"] or "",
                image["action"],
                image["reason"],
            ]
            for image in images
        ]
    )


def _csv_bytes(rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


# --- the actor page (pure) ----------------------------------------------------------------------


def actor_page(
    row: Mapping[str, Any],
    document: Mapping[str, Any] | None,
    images: Sequence[Mapping[str, Any]],
    data_dir: Path | None,
    output_dir: Path | None = None,
) -> str:
    """The whole HTML of one actor's page; every value from the data is escaped."""
    name = row["name"]
    parts = [
        _PAGE_HEAD.format(title=_e(f"{name} - review"), css=PAGE_CSS),
        '<p class="nav"><a href="../index.html">&larr; all actors</a></p>',
        f"<h1>{_e(name)}</h1>",
        f'<p class="state"><span class="badge {_e(row["state"])}">{_e(row["state"])}</span> '
        f"{_e(row['reason'])}</p>",
    ]
    if row["error"]:
        parts.append(f'<p class="error">Error: {_e(row["error"])}</p>')
    if document:
        parts += _summary(row, document)
        if row["error"]:
            parts.append("<h2>The last evaluation before this failure</h2>")
        parts += _image_cards(images, document)
        parts += _execution(name, document.get("execution"), data_dir, output_dir)
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _summary(row: Mapping[str, Any], document: Mapping[str, Any]) -> list[str]:
    counts = document.get("counts") or {}
    target = row["target"]
    cells = " ".join(
        f"<li>{_e(c)}: <b>{_e(counts.get(c, 0))}</b> / {_e(n)}</li>" for c, n in target.items()
    )
    when = _e(document.get("evaluated_at", ""))
    after = ((document.get("execution") or {}).get("after") or {}).get("counts")
    if isinstance(after, dict):
        cells += " <li>after execute: " + ", ".join(
            f"{_e(c)} <b>{_e(after.get(c, 0))}</b> / {_e(n)}" for c, n in target.items()
        )
        cells += "</li>"
    return [
        f'<ul class="counts">{cells}</ul>',
        f'<p class="meta">{row["images"]} images, evaluated {when}. Planned: remove '
        f"{row['remove']}, generate {row['generate']}; {row['defects']} with defects, "
        f"{row['low']} low-confidence style calls (below {LOW_CONFIDENCE:.2f}).</p>",
    ]


def _image_cards(images: Sequence[Mapping[str, Any]], document: Mapping[str, Any]) -> list[str]:
    cards = ['<div class="cards">']
    for image in images:
        cards.append(_image_card(image))
    for entry in document.get("images_to_generate") or []:
        if isinstance(entry, dict) and isinstance(entry.get("count"), int):
            for _ in range(entry["count"]):
                cards.append(
                    '<figure class="card generate"><div class="slot">GENERATE<br>'
                    f"{_e(entry.get('type'))}</div></figure>"
                )
    cards.append("</div>")
    return cards


def _image_card(image: Mapping[str, Any]) -> str:
    number = image["number"]
    classes = "card remove" if image["action"] == "remove" else "card"
    if image["thumb"]:
        picture = f'<img src="../thumbs/{_e(image["thumb"])}" alt="" loading="lazy">'
    elif "unreadable" in image["issues"]:
        picture = '<div class="unreadable">unreadable</div>'
    else:  # readable, but its thumbnail is gone (deleted, or made before the report existed)
        picture = '<div class="unreadable">no thumbnail</div>'
    box = image["face_box"]
    if box:
        x0, y0, x1, y1 = box
        picture += (
            f'<div class="face" style="left:{x0 * 100:.1f}%;top:{y0 * 100:.1f}%;'
            f'width:{(x1 - x0) * 100:.1f}%;height:{(y1 - y0) * 100:.1f}%"></div>'
        )
    category = _e(image["category"] or "no category")
    if image["confidence"] is not None:
        low = " low" if image["low_confidence"] else ""
        category += f' <span class="conf{low}">({image["confidence"]:.2f})</span>'
    lines = [
        f'<div class="file">{_e(image["file"])}</div>',
        f"<div>{category} &middot; quality {_e(image['quality'])}/10</div>",
    ]
    if image["issues"]:
        lines.append(f'<div class="issues">{_e(", ".join(image["issues"]))}</div>')
    if image["duplicate_of"]:
        target = image["duplicate_number"]
        if target is None:
            link = _e(image["duplicate_of"])
        else:
            link = f'<a href="#img-{_e(target)}">#{_e(target)} {_e(image["duplicate_of"])}</a>'
        lines.append(f'<div class="dup">duplicate of {link}</div>')
    if image["note"]:
        lines.append(f'<div class="note">{_e(image["note"])}</div>')
    if image["action"] == "remove":
        lines.append(
            f'<div class="mark">REMOVE: {_e(image["short_reason"])}</div>'
            f'<div class="reason">{_e(image["reason"])}</div>'
        )
    return (
        f'<figure class="{classes}" id="img-{_e(number)}"><div class="thumb">{picture}'
        f'<span class="num">{_e(number)}</span></div><figcaption>{"".join(lines)}</figcaption>'
        "</figure>"
    )


def _execution(
    actor: str, execution: Any, data_dir: Path | None, output_dir: Path | None
) -> list[str]:
    if not isinstance(execution, dict):
        return []
    parts = ["<h2>Execute run</h2>", '<table class="moves"><tr><th>removed</th><th>moved to</th>']
    for entry in execution.get("removed") or []:
        if isinstance(entry, dict):
            parts.append(
                f"<tr><td>#{_e(entry.get('number'))} {_e(entry.get('filename'))}</td>"
                f"<td>{_e(entry.get('moved_to') or '-')}</td></tr>"
            )
    parts.append("</table>")
    generated = [entry for entry in execution.get("generated") or [] if isinstance(entry, dict)]
    if generated:
        names = ", ".join(str(entry.get("filename", "?")) for entry in generated)
        parts.append(f"<p>Generated: {_e(names)}</p>")
    unfulfilled = execution.get("unfulfilled") or {}
    if unfulfilled:
        missing = ", ".join(f"{count} {category}" for category, count in unfulfilled.items())
        parts.append(f"<p>Not generated: {_e(missing)}</p>")
    for message in execution.get("messages") or []:
        parts.append(f'<p class="meta">{_e(message)}</p>')
    if execution.get("removed"):
        parts.append(
            "<p>To put the removed images back:</p>"
            f'<pre class="restore">{_e(restore_command(actor, data_dir, output_dir))}</pre>'
        )
    return parts


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- files (I/O) --------------------------------------------------------------------------------


def save_thumbnail(
    thumbs_dir: Path, name: str, working: Image.Image, folders: set[Path] | None = None
) -> bool:
    """Write the thumbnail unless a run already did (same name, same content); True if written.

    ``folders``: fan-out folders known to exist, to spare a mkdir per thumbnail.
    """
    path = thumbs_dir / name
    if path.exists():
        return False
    if folders is None or path.parent not in folders:
        path.parent.mkdir(parents=True, exist_ok=True)
        if folders is not None:
            folders.add(path.parent)
    small = working.copy()
    small.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, "JPEG", quality=THUMB_QUALITY)
    write_bytes_atomic(path, buffer.getvalue(), durable=False)
    return True


@dataclass(frozen=True)
class ReviewEntry:
    """One actor's index row and images.csv lines, as a worker process sends them back."""

    row: dict[str, Any]
    images_csv: bytes


@dataclass
class _Entry:
    """What the site keeps of one actor between updates."""

    row: dict[str, Any]
    encoded: bytes
    images_csv: bytes


class ReviewSite:
    """The report of one output folder, brought up to date actor by actor.

    Every file it reads (evaluation JSONs, its own data) is read as files.py reads a hostile
    file, under ``max_file_bytes`` (``limits.max_file_mib``): a FIFO, an oversize or a deeply
    nested file is one warning line, never a hang or a crash.
    """

    def __init__(
        self,
        output_dir: Path,
        data_dir: Path | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.folder = Path(output_dir) / REPORT_DIR
        self.output_dir = Path(output_dir)
        self.data_dir = data_dir
        self.max_file_bytes = max_file_bytes
        self._entries: dict[str, _Entry] = {}
        self._totals = Totals()
        self._categories: list[str] = []
        self._actor_lines: dict[str, bytes] = {}
        self._folders: set[Path] = set()
        self._mutex = threading.Lock()
        self._index_pending = False
        self._next_index_write = 0.0

    # --- opening ---

    @classmethod
    def open(
        cls,
        output_dir: Path,
        data_dir: Path | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> ReviewSite:
        """The site as the last run left it; rebuilt from the evaluation JSONs if unreadable."""
        site = cls(output_dir, data_dir, max_file_bytes)
        site._prepare()
        try:
            site._load()
        except FileNotFoundError:
            site._load_afresh()
        except _UnusableData as error:
            log.warning("%s: the report is rebuilt from the evaluation JSONs", error)
            site._load_afresh()
        return site

    @classmethod
    def for_worker(cls, output_dir: Path, data_dir: Path | None = None) -> ReviewSite:
        """For ``publish_actor`` in a worker process: folders made, nothing read or swept (other
        processes may be writing their temp files here)."""
        site = cls(output_dir, data_dir)
        (site.folder / "actors").mkdir(parents=True, exist_ok=True)
        return site

    @classmethod
    def rebuild(
        cls,
        output_dir: Path,
        failures: Mapping[str, str],
        skips: Mapping[str, str],
        data_dir: Path | None = None,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> ReviewSite:
        """``--report``: every page again from the evaluation JSONs and progress.json's outcomes."""
        site = cls(output_dir, data_dir, max_file_bytes)
        site._prepare()
        for folder in [site.folder / "thumbs", *(site.folder / "thumbs").glob("??")]:
            sweep_temp_files(folder)
        site._load_from_evaluations(failures, skips, write_pages=True)
        site._write_index()
        site.write_tables()
        return site

    def _prepare(self) -> None:
        """The report's folders and its fixed index page; a folder that cannot be one stops."""
        try:
            for folder in (self.folder, self.folder / "data", self.folder / "actors"):
                folder.mkdir(parents=True, exist_ok=True)
                sweep_temp_files(folder)
            index = self.folder / "index.html"
            if not _holds(index, INDEX_HTML.encode()):
                write_bytes_atomic(index, INDEX_HTML.encode(), durable=False)
        except OSError as error:
            reason = "a file is in the way" if isinstance(error, FileExistsError) else error
            raise FatalRunError(f"cannot write the report in {self.folder}: {reason}") from None

    def _load(self) -> None:
        """The rows and images.csv lines the last run wrote; FileNotFoundError if there are none,
        ``_UnusableData`` if they cannot be used."""
        path = self.folder / "data" / "index.js"
        try:
            data = read_index_data(read_regular_file(path, self.max_file_bytes))
        except FileNotFoundError:
            raise
        except (OSError, UnreadableFile, ValueError) as error:
            raise _UnusableData(f"cannot use {path} ({_reason(error)})") from None
        images_csv = self._read_images_csv()
        try:
            for row in data["rows"]:
                self._put(row, images_csv.get(row["name"], b""))
        except (KeyError, TypeError, AttributeError):
            raise _UnusableData(f"cannot use {path} (not rows of this report)") from None

    def _read_images_csv(self) -> dict[str, bytes]:
        """Each actor's lines of images.csv, as the site keeps them."""
        path = self.folder / "images.csv"
        try:
            text = read_regular_file(path, self.max_file_bytes).decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            raise
        except (OSError, UnreadableFile) as error:
            raise _UnusableData(f"cannot use {path} ({_reason(error)})") from None
        grouped: dict[str, list[list[str]]] = {}
        reader = csv.reader(io.StringIO(text, newline=""))
        if next(reader, None) != list(IMAGE_COLUMNS):
            raise _UnusableData(f"cannot use {path} (other columns)")
        for line in reader:
            grouped.setdefault(line[0], []).append(line)
        return {actor: _csv_bytes(lines) for actor, lines in grouped.items()}

    def _load_afresh(self) -> None:
        self._entries.clear()
        self._totals = Totals()
        self._categories.clear()
        self._actor_lines.clear()
        self._load_from_evaluations({}, {})

    def _load_from_evaluations(
        self, failures: Mapping[str, str], skips: Mapping[str, str], write_pages: bool = False
    ) -> None:
        documents: dict[str, tuple[Path, dict[str, Any]]] = {}
        for path in sorted(self.output_dir.glob("*_evaluation.json")):
            try:
                document = _read_document(path, self.max_file_bytes)
            except (OSError, UnreadableFile, ValueError) as error:
                _warn_unreadable(path, _reason(error), path.name.removesuffix("_evaluation.json"))
            else:
                documents[document["actor"]] = (path, document)
        for name in sorted(set(documents) | set(failures) | set(skips)):
            path, document = documents.get(name, (None, None))
            outcome = {"error": failures.get(name, ""), "skipped_reason": skips.get(name, "")}
            try:
                entry = self._entry(document, name, write_page=write_pages, **outcome)
            except MALFORMED:
                _warn_unreadable(path, "not an evaluation this tool wrote", name)
                if not any(outcome.values()):
                    continue
                entry = self._entry(None, name, write_page=write_pages, **outcome)
            self._put(entry.row, entry.images_csv)

    def _entry(
        self,
        document: Mapping[str, Any] | None,
        name: str,
        *,
        error: str = "",
        skipped_reason: str = "",
        write_page: bool = True,
    ) -> ReviewEntry:
        """The actor's row and images.csv lines, and its page, from one build of its images."""
        images = image_rows(document, self._has_thumb) if document else []
        row = actor_row(document, name, images, error=error, skipped_reason=skipped_reason)
        if write_page:
            self._write_page(row, document, images)
        return ReviewEntry(row, image_csv_lines(name, images))

    # --- updates ---

    def update_actor(
        self, document: Mapping[str, Any], thumbnails: Mapping[int, Image.Image] | None = None
    ) -> None:
        """After an actor's evaluation JSON is written: its thumbnails, its page, the index."""
        self.put_entry(self.publish_actor(document, thumbnails))

    def publish_actor(
        self, document: Mapping[str, Any], thumbnails: Mapping[int, Image.Image] | None = None
    ) -> ReviewEntry:
        """The actor's own files (thumbnails, page): safe in a worker process, which then hands
        the entry to the process that owns the index (``put_entry``)."""
        name = str(document["actor"])
        images = image_rows(document)
        for image in images:
            working = (thumbnails or {}).get(image["number"])
            if image["thumb"] and working is not None:
                save_thumbnail(self.folder / "thumbs", image["thumb"], working, self._folders)
            elif image["thumb"] and not self._has_thumb(image["thumb"]):
                image["thumb"] = None  # no working image now, and no earlier run made one
        row = actor_row(document, name, images)
        self._write_page(row, document, images)
        return ReviewEntry(row, image_csv_lines(name, images))

    def put_entry(self, entry: ReviewEntry, *, throttled: bool = False) -> None:
        """The actor's row into the index (only the process that opened the site does this).

        ``throttled``: index.js is rewritten only when the last rewrite is INDEX_REST_FACTOR
        times its own cost ago (at least a second): at 100,000 actors a rewrite takes ~170 ms,
        which would otherwise cap a run's pace however many workers it has. ``write_tables``
        writes what is pending."""
        with self._mutex:
            self._put(entry.row, entry.images_csv)
            if throttled and time.monotonic() < self._next_index_write:
                self._index_pending = True
            else:
                self._write_index()

    def record_failure(self, name: str, error: str) -> None:
        self._record_outcome(name, error=error)

    def record_skipped(self, name: str, reason: str) -> None:
        self._record_outcome(name, skipped_reason=reason)

    def _record_outcome(self, name: str, *, error: str = "", skipped_reason: str = "") -> None:
        """The page shows the failure or skip, and the last evaluation before it if readable."""
        try:
            document = _read_document(
                self.output_dir / f"{name}_evaluation.json", self.max_file_bytes
            )
        except (OSError, UnreadableFile, ValueError):
            document = None
        if document is not None and document.get("actor") != name:
            document = None
        outcome = {"error": error, "skipped_reason": skipped_reason}
        try:
            entry = self._entry(document, name, **outcome)
        except MALFORMED:  # the outcome still shows, without the odd evaluation
            entry = self._entry(None, name, **outcome)
        with self._mutex:
            self._put(entry.row, entry.images_csv)
            self._write_index()

    def _put(self, row: dict[str, Any], images_csv: bytes) -> None:
        previous = self._entries.pop(row["name"], None)
        if previous is not None:
            self._totals.remove(previous.row)
        self._entries[row["name"]] = _Entry(row, encode_row(row), images_csv)
        self._totals.add(row)
        new_categories = [c for c in row["target"] if c not in self._categories]
        if new_categories:
            self._categories += new_categories
            self._actor_lines.clear()  # the columns changed: every line again
        self._actor_lines.pop(row["name"], None)

    # --- writing ---

    def _has_thumb(self, name: str) -> bool:
        return (self.folder / "thumbs" / name).exists()

    def _write_page(
        self,
        row: Mapping[str, Any],
        document: Mapping[str, Any] | None,
        images: Sequence[Mapping[str, Any]],
    ) -> None:
        page = actor_page(row, document, images, self.data_dir, self.output_dir)
        page_bytes = page.encode("utf-8", "surrogatepass")
        write_bytes_atomic(self.folder / row["page"], page_bytes, durable=False)

    def _write_index(self) -> None:
        start = time.monotonic()
        write_bytes_atomic(
            self.folder / "data" / "index.js",
            index_data(
                (entry.encoded for entry in self._entries.values()),
                self._totals,
                self._categories,
            ),
            durable=False,
        )
        self._index_pending = False
        now = time.monotonic()
        self._next_index_write = now + max(1.0, INDEX_REST_FACTOR * (now - start))

    def write_tables(self) -> None:
        """actors.csv and images.csv: at the end of a run (they are the biggest files); and
        index.js if a throttled update is pending."""
        with self._mutex:
            if self._index_pending:
                self._write_index()
            for name, entry in self._entries.items():
                if name not in self._actor_lines:
                    self._actor_lines[name] = actor_csv_line(entry.row, self._categories)
            header = _csv_bytes([actor_csv_header(self._categories)])
            actor_lines = header + b"".join(self._actor_lines.values())
            write_bytes_atomic(self.folder / "actors.csv", actor_lines, durable=False)
            write_bytes_atomic(
                self.folder / "images.csv",
                _csv_bytes([IMAGE_COLUMNS])
                + b"".join(entry.images_csv for entry in self._entries.values()),
                durable=False,
            )

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [entry.row for entry in self._entries.values()]


def _read_document(path: Path, max_bytes: int) -> dict[str, Any]:
    """An evaluation JSON; a FIFO or a huge or deeply nested file in its place is an
    ``UnreadableFile`` or a ValueError (files.py), as is a JSON that is not an evaluation."""
    document = parse_json(read_regular_file(path, max_bytes))
    if not isinstance(document, dict) or not isinstance(document.get("actor"), str):
        raise ValueError("not an evaluation: no actor name")
    return document


def _warn_unreadable(path: Path | None, reason: str, actor: str) -> None:
    log.warning("cannot read %s (%s): the report shows no evaluation of %s", path, reason, actor)


def _holds(path: Path, content: bytes) -> bool:
    """Whether the file is a regular file with these bytes (a FIFO is never waited on)."""
    try:
        return read_regular_file(path, len(content)) == content
    except (OSError, UnreadableFile):
        return False


def _reason(error: Exception) -> str:
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8"
    return str(error)


class _UnusableData(Exception):
    """The report's own data files cannot be loaded: the file and why, in one line."""


# --- the static parts ---------------------------------------------------------------------------

_PAGE_HEAD = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>{title}</title>\n<style>{css}</style></head><body>"
)

PAGE_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
a{color:#0550ae}
h1{margin:.2em 0;font-size:1.5em;overflow-wrap:anywhere}
.badge{display:inline-block;padding:.1em .6em;border-radius:1em;font-weight:600;color:#fff}
.balanced{background:#2e7d32}.rebalanced{background:#1565c0}.short{background:#ef6c00}
.failed{background:#c62828}.skipped{background:#757575}
.error{color:#c62828;font-weight:600;white-space:pre-wrap}
.counts{list-style:none;padding:0;display:flex;gap:1.5em}
.meta{color:#555}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{margin:0;width:172px;background:#fff;border:1px solid #ddd;border-radius:4px;padding:5px}
.card.remove{border:3px solid #d00000;padding:3px}
.card.generate{border:2px dashed #1565c0;display:flex;align-items:center;justify-content:center}
.slot{color:#1565c0;font-weight:600;text-align:center;padding:60px 0}
.thumb{position:relative;width:160px;height:160px;background:#eee;display:flex;
 align-items:center;justify-content:center}
.thumb img{max-width:160px;max-height:160px;display:block}
.thumb .face{position:absolute;border:2px solid #00e676;box-sizing:border-box}
.num{position:absolute;left:3px;top:3px;background:#000;color:#fff;padding:0 5px;font-weight:600}
.unreadable{color:#fff;background:#999;width:100%;height:100%;display:flex;align-items:center;
 justify-content:center}
figcaption{font-size:12px;margin-top:4px;overflow-wrap:anywhere}
.file{font-weight:600}
.issues{color:#b26a00}
.conf.low{color:#c62828;font-weight:600}
.mark{color:#fff;background:#d00000;font-weight:700;padding:1px 4px;margin-top:3px}
.reason{color:#d00000}
:target{outline:4px solid #ffab00}
.moves td,.moves th{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}
pre.restore{background:#222;color:#fff;padding:.6em;white-space:pre-wrap}
"""

INDEX_HTML = (
    _PAGE_HEAD.format(title="Training data review", css=PAGE_CSS)
    + """
<style>
#totals{display:flex;flex-wrap:wrap;gap:1.5em;margin:.6em 0}
#totals section{background:#fff;border:1px solid #ddd;border-radius:4px;padding:.4em .8em}
#totals h2{font-size:.9em;margin:0 0 .3em;color:#555}
#totals button{font:inherit;background:none;border:none;color:#0550ae;cursor:pointer;padding:0}
#controls{display:flex;flex-wrap:wrap;gap:1em;align-items:center;margin:.6em 0}
table#actors{border-collapse:collapse;background:#fff;width:100%}
#actors th,#actors td{border-bottom:1px solid #e4e4e4;padding:4px 6px;text-align:left;
 vertical-align:middle}
#actors th{cursor:pointer;user-select:none;background:#f0f0f0;white-space:nowrap}
#actors th.sorted{background:#dde7f3}
.bars{display:grid;grid-template-columns:auto 70px auto;gap:1px 5px;font-size:11px}
.bar{height:9px;background:#e0e0e0;margin-top:3px;position:relative}
.bar i{display:block;height:100%;background:#1565c0}
.bar i.over{background:#ef6c00}.bar i.under{background:#9e9e9e}
.strip img{height:40px;margin-right:2px;border:2px solid transparent;vertical-align:middle}
.strip img.rm{border-color:#d00000}
td.num0{color:#bbb}
td.why{color:#555;font-size:12px;max-width:22em}
a.actor{overflow-wrap:anywhere}
#pager{margin:.8em 0;display:flex;gap:1em;align-items:center}
</style>
<h1>Training data review</h1>
<p class="meta" id="generated">Loading data/index.js&hellip;</p>
<div id="totals"></div>
<form id="controls" onsubmit="return false">
<label>State <select id="state"><option value="">all</option></select></label>
<label><input type="checkbox" id="look"> needs a look only</label>
<label>Search <input type="search" id="search" placeholder="actor name"></label>
<span id="shown" class="meta"></span>
</form>
<table id="actors"><thead><tr>
<th data-sort="name">Actor</th><th data-sort="state">State</th>
<th data-sort="images">Counts / target</th><th data-sort="remove">Remove</th>
<th data-sort="generate">Generate</th><th data-sort="defects">Defects</th>
<th data-sort="low">Low conf.</th><th>Thumbnails</th></tr></thead><tbody></tbody></table>
<nav id="pager"><button type="button" id="prev">&larr; previous</button>
<span id="page"></span><button type="button" id="next">next &rarr;</button></nav>
<script src="data/index.js"></script>
<script>
"use strict";
const PAGE_SIZE = 50;
const data = window.REVIEW_DATA;
const view = {state: "", look: false, q: "", sort: "name", dir: 1, page: 0};
const el = (tag, props, ...children) => {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
};
function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  view.state = p.get("state") || ""; view.look = p.get("look") === "1";
  view.q = p.get("q") || ""; view.sort = p.get("sort") || "name";
  view.dir = p.get("dir") === "desc" ? -1 : 1; view.page = Number(p.get("page")) || 0;
}
function writeHash() {
  const p = new URLSearchParams();
  if (view.state) p.set("state", view.state);
  if (view.look) p.set("look", "1");
  if (view.q) p.set("q", view.q);
  if (view.sort !== "name") p.set("sort", view.sort);
  if (view.dir < 0) p.set("dir", "desc");
  if (view.page) p.set("page", String(view.page));
  history.replaceState(null, "", "#" + p.toString());
}
function totals() {
  const box = document.getElementById("totals");
  const t = data.totals;
  const states = el("section", {}, el("h2", {textContent: "Actors: " + t.actors}));
  for (const s of data.states) {
    const b = el("button", {type: "button", textContent: s + ": " + (t.states[s] || 0)});
    b.dataset.state = s;
    b.onclick = () => { view.state = s; view.look = false; view.page = 0; render(); };
    states.append(b, " ");
  }
  const look = el("button", {type: "button", id: "look-total",
                             textContent: "needs a look: " + t.look});
  look.onclick = () => { view.look = true; view.state = ""; view.page = 0; render(); };
  states.append(el("div", {}, look));
  const list = (title, counts) => {
    const s = el("section", {}, el("h2", {textContent: title}));
    for (const [k, v] of Object.entries(counts)) s.append(el("div", {textContent: k + ": " + v}));
    return s;
  };
  box.replaceChildren(states, list("Images per category", t.categories),
                      list("Images per issue", t.issues));
}
function matches(row) {
  if (view.state && row.state !== view.state) return false;
  if (view.look && !row.look) return false;
  return !view.q || row.name.toLowerCase().includes(view.q.toLowerCase());
}
function compare(a, b) {
  const k = view.sort;
  let x = a[k], y = b[k];
  if (k === "state") { x = data.states.indexOf(x); y = data.states.indexOf(y); }
  if (x < y) return -view.dir;
  if (x > y) return view.dir;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
function bars(row) {
  if (!Object.keys(row.target).length) return el("span", {className: "meta", textContent: "-"});
  const box = el("div", {className: "bars"});
  box.title = row.after_execute ? "after execute" : "as evaluated";
  for (const c of data.categories) {
    const n = row.counts[c] || 0, want = row.target[c] || 0;
    const fill = el("i", {className: n > want ? "over" : n < want ? "under" : ""});
    fill.style.width = Math.min(100, want ? 100 * n / want : (n ? 100 : 0)) + "%";
    box.append(el("span", {textContent: c}), el("div", {className: "bar"}, fill),
               el("span", {textContent: n + "/" + want}));
  }
  return box;
}
function number(value) {
  return el("td", {textContent: String(value), className: value ? "" : "num0"});
}
function line(row) {
  const strip = el("td", {className: "strip"});
  for (const [src, removed] of row.thumbs) {
    strip.append(el("img", {src: "thumbs/" + src, alt: "", loading: "lazy",
                            className: removed ? "rm" : ""}));
  }
  const link = el("a", {href: row.page, textContent: row.name, className: "actor"});
  const state = el("td", {}, el("span", {className: "badge " + row.state,
                                         textContent: row.state}));
  if (row.reason) state.append(el("div", {className: "why", textContent: row.reason}));
  const tr = el("tr", {}, el("td", {}, link), state, el("td", {}, bars(row)),
                number(row.remove), number(row.generate), number(row.defects),
                number(row.low), strip);
  tr.dataset.state = row.state;
  return tr;
}
function render() {
  writeHash();
  document.getElementById("state").value = view.state;
  document.getElementById("look").checked = view.look;
  document.getElementById("search").value = view.q;
  const rows = data.rows.filter(matches).sort(compare);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  view.page = Math.min(view.page, pages - 1);
  const shown = rows.slice(view.page * PAGE_SIZE, (view.page + 1) * PAGE_SIZE);
  document.querySelector("#actors tbody").replaceChildren(...shown.map(line));
  document.getElementById("shown").textContent =
    rows.length + " of " + data.rows.length + " actors";
  document.getElementById("page").textContent = "page " + (view.page + 1) + " of " + pages;
  document.getElementById("prev").disabled = view.page === 0;
  document.getElementById("next").disabled = view.page >= pages - 1;
  for (const th of document.querySelectorAll("#actors th[data-sort]")) {
    th.className = th.dataset.sort === view.sort ? "sorted" : "";
  }
}
function start() {
  if (!data) {
    document.getElementById("generated").textContent =
      "No report data yet (data/index.js is missing): run with --report.";
    return;
  }
  document.getElementById("generated").textContent =
    "Updated " + data.generated_at + ". Low-confidence style calls: below " +
    data.low_confidence + ".";
  const select = document.getElementById("state");
  for (const s of data.states) select.append(el("option", {value: s, textContent: s}));
  select.onchange = () => { view.state = select.value; view.page = 0; render(); };
  const look = document.getElementById("look");
  look.onchange = () => { view.look = look.checked; view.page = 0; render(); };
  const search = document.getElementById("search");
  search.oninput = () => { view.q = search.value; view.page = 0; render(); };
  for (const th of document.querySelectorAll("#actors th[data-sort]")) {
    th.onclick = () => {
      const k = th.dataset.sort;
      view.dir = view.sort === k ? -view.dir : (k === "name" || k === "state" ? 1 : -1);
      view.sort = k; view.page = 0; render();
    };
  }
  document.getElementById("prev").onclick = () => { view.page -= 1; render(); };
  document.getElementById("next").onclick = () => { view.page += 1; render(); };
  readHash();
  totals();
  render();
}
start();
</script>
</body></html>
"""
)
