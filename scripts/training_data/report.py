"""Outputs (review sheet, evaluation JSON) and the ``--stats`` text."""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from training_data.atomic import write_bytes_atomic, write_json_atomic
from training_data.config import Config
from training_data.evaluation import ActorEvaluation, ImageEvaluation
from training_data.plan import Plan

SHEET_BACKGROUND = (255, 255, 255)
THUMB_BACKGROUND = (236, 236, 236)
UNREADABLE_FILL = (150, 150, 150)
REMOVE_RED = (220, 0, 0)
TEXT_COLOR = (0, 0, 0)
COMPOSITE_JPEG_QUALITY = 85
HEADER_NAME_CHARS = 60  # a longer actor name is cut, so the counts and state stay whole


@dataclass(frozen=True)
class SheetTile:
    """One numbered thumbnail of a review sheet; ``image`` None means the file was unreadable."""

    number: int
    image: Image.Image | None
    label: str
    marked: bool
    reason: str = ""


@dataclass(frozen=True)
class _Geometry:
    """Sizes derived from ``tile_side`` so the sheet stays legible at any scale."""

    tile_side: int
    padding: int
    caption_height: int
    border: int
    font_size: int

    @classmethod
    def for_side(cls, tile_side: int) -> _Geometry:
        font_size = max(10, tile_side // 11)
        return cls(
            tile_side=tile_side,
            padding=max(6, tile_side // 20),
            caption_height=font_size + max(6, tile_side // 20),
            border=max(4, tile_side // 25),
            font_size=font_size,
        )

    @property
    def cell_width(self) -> int:
        return self.tile_side + 2 * self.padding

    @property
    def cell_height(self) -> int:
        return self.tile_side + self.caption_height + 2 * self.padding


def render_sheet(
    tiles: Sequence[SheetTile], columns: int = 5, tile_side: int = 200, header: str = ""
) -> Image.Image:
    """Lay tiles out row by row: number over each thumbnail, label under it, removals in red.

    The sheet is always ``columns`` cells wide, so sheets of different actors line up. A
    ``header`` (actor, counts, state) goes on a line above the tiles: sheets are shared alone.
    """
    if columns < 1 or tile_side < 32:
        raise ValueError(
            f"a sheet needs columns >= 1 and tile_side >= 32, not {columns}, {tile_side}"
        )
    geometry = _Geometry.for_side(tile_side)
    rows = max(1, math.ceil(len(tiles) / columns))
    header_height = geometry.caption_height + geometry.padding if header else 0
    width = columns * geometry.cell_width
    sheet = Image.new("RGB", (width, header_height + rows * geometry.cell_height), SHEET_BACKGROUND)
    if header:
        draw = ImageDraw.Draw(sheet)
        font, text, _width = _fitted(header, width - 2 * geometry.padding, geometry.font_size)
        draw.text((geometry.padding, geometry.padding), text, fill=TEXT_COLOR, font=font)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        origin = (column * geometry.cell_width, header_height + row * geometry.cell_height)
        _draw_cell(sheet, origin, tile, geometry)
    return sheet


def _draw_cell(
    sheet: Image.Image, origin: tuple[int, int], tile: SheetTile, geometry: _Geometry
) -> None:
    left, top = origin
    side = geometry.tile_side
    box_left, box_top = left + geometry.padding, top + geometry.padding
    sheet.paste(_thumbnail(tile.image, geometry), (box_left, box_top))
    draw = ImageDraw.Draw(sheet)
    if tile.marked:
        _mark_for_removal(draw, (box_left, box_top), geometry, tile.reason)
    _draw_number(sheet, (box_left, box_top), tile.number, geometry)
    label_font, label, label_width = _fitted(tile.label, side, geometry.font_size)
    label_top = box_top + side + (geometry.caption_height - geometry.font_size) // 2
    label_color = REMOVE_RED if tile.marked else TEXT_COLOR
    draw.text(
        (box_left + (side - label_width) / 2, label_top), label, fill=label_color, font=label_font
    )


def _thumbnail(image: Image.Image | None, geometry: _Geometry) -> Image.Image:
    side = geometry.tile_side
    box = Image.new("RGB", (side, side), THUMB_BACKGROUND)
    if image is None:
        box.paste(UNREADABLE_FILL, (0, 0, side, side))
        draw = ImageDraw.Draw(box)
        font, _text, _width = _fitted("unreadable", side - 8, geometry.font_size)
        draw.text((side / 2, side / 2), "unreadable", fill=(255, 255, 255), font=font, anchor="mm")
        return box
    # BOX, not contain()'s bicubic: from the 256-px working image it costs 0.36 ms, not 0.85.
    fitted = ImageOps.contain(image.convert("RGB"), (side, side), Image.Resampling.BOX)
    box.paste(fitted, ((side - fitted.width) // 2, (side - fitted.height) // 2))
    return box


def _mark_for_removal(
    draw: ImageDraw.ImageDraw, corner: tuple[int, int], geometry: _Geometry, reason: str = ""
) -> None:
    """A thick red frame plus a red band reading REMOVE (and why), visible at thumbnail size."""
    left, top = corner
    side = geometry.tile_side
    right, bottom = left + side - 1, top + side - 1
    draw.rectangle((left, top, right, bottom), outline=REMOVE_RED, width=geometry.border)
    text = f"REMOVE: {reason}" if reason else "REMOVE"
    width = side - 2 * geometry.border
    font, text, _width = _fitted(text, width, geometry.font_size)
    band_height = geometry.font_size + geometry.border * 2
    band_top = bottom - band_height + 1
    draw.rectangle((left, band_top, right, bottom), fill=REMOVE_RED)
    draw.text(
        (left + side / 2, band_top + band_height / 2),
        text,
        fill=(255, 255, 255),
        font=font,
        anchor="mm",
    )


def _draw_number(
    sheet: Image.Image, corner: tuple[int, int], number: int, geometry: _Geometry
) -> None:
    """White on black in the top-left corner, legible over any picture."""
    badge = _number_badge(number, geometry.font_size)
    sheet.paste(badge, (corner[0] + geometry.border, corner[1] + geometry.border))


@cache
def _number_badge(number: int, font_size: int) -> Image.Image:
    """Drawn once per number and size: every sheet numbers its tiles 1, 2, 3..."""
    font = _font(font_size)
    text = str(number)
    margin = max(3, font_size // 4)
    size = (round(font.getlength(text)) + 2 * margin + 1, font_size + 2 * margin + 1)
    badge = Image.new("RGB", size, (0, 0, 0))
    ImageDraw.Draw(badge).text((margin, margin), text, fill=(255, 255, 255), font=font)
    return badge


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font (Pillow >= 10.1 scales it), so no system fonts are needed."""
    return ImageFont.load_default(size=size)


def _fitted(
    text: str, max_width: int, size: int
) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, str, float]:
    """The largest font up to ``size`` in which ``text`` fits ``max_width``, the text and its
    width; a text that does not fit even at the smallest font is cut, ending in an ellipsis."""
    while True:
        font = _font(size)
        width = font.getlength(text)
        if width <= max_width:
            return font, text, width
        if size <= 8:
            break
        size -= 1
    while text and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return font, text + "…", font.getlength(text + "…")


def evaluation_document(
    actor_name: str,
    evaluation: ActorEvaluation,
    plan: Plan,
    config: Config,
    execution: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``<actor>_evaluation.json``.

    Raises ValueError if the plan names an image number the evaluation does not hold under the
    same filename: the sheet, the JSON and the plan must always point at the same files.
    """
    images = _in_number_order(evaluation.images)
    _check_plan_matches(images, plan)
    document: dict[str, Any] = {
        "actor": actor_name,
        "evaluated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "total_images": len(images),
        "images": [image.to_dict() for image in images],
        "counts": dict(plan.counts),
        "percentages": dict(plan.percentages),
        "target": {
            "counts": dict(plan.targets),
            "total": config.target.total,
            "tolerance": config.target.tolerance,
            "mix": dict(config.target.mix),
        },
        "is_balanced": plan.is_balanced,
        "images_to_delete": plan.images_to_delete(),
        "images_to_generate": plan.images_to_generate(),
        "planned_counts": dict(plan.planned_counts),
        "short": dict(plan.short),
        "evaluator": dict(evaluation.evaluator),
    }
    if execution is not None:
        document["execution"] = execution
    return document


def write_evaluation_json(output_dir: Path, actor_name: str, document: dict[str, Any]) -> Path:
    """Replace ``<actor>_evaluation.json`` atomically, so a reader never sees half a file."""
    path = Path(output_dir) / f"{actor_name}_evaluation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, document)
    return path


def write_composite(
    output_dir: Path, actor_name: str, evaluation: ActorEvaluation, plan: Plan, state: str = ""
) -> Path:
    """Replace ``<actor>_composite.jpg``: the review sheet, removals marked with
    their reason, under a header line with the actor, its counts against the target and state."""
    images = _in_number_order(evaluation.images)
    _check_plan_matches(images, plan)
    removed = {removal.number: removal.reason for removal in plan.removals}
    numbers = {image.filename: image.number for image in images}
    tiles = [
        SheetTile(
            number=image.number,
            image=evaluation.thumbnails.get(image.number),
            label=tile_label(image),
            marked=image.number in removed,
            reason=short_reason(removed[image.number], numbers, image.issues)
            if image.number in removed
            else "",
        )
        for image in images
    ]
    buffer = io.BytesIO()
    header = sheet_header(actor_name, plan, state)
    render_sheet(tiles, header=header).save(buffer, "JPEG", quality=COMPOSITE_JPEG_QUALITY)
    path = Path(output_dir) / f"{actor_name}_composite.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    # A picture for people: a crash may lose it (never show half of it); the evaluation JSON,
    # which backs the actor's recorded outcome, is the file that is synced.
    write_bytes_atomic(path, buffer.getvalue(), durable=False)
    return path


def sheet_header(actor_name: str, plan: Plan, state: str) -> str:
    """``<actor>  photorealistic 10/13  bw_stylized 4/4 ...  rebalanced``."""
    counts = "  ".join(
        f"{category} {plan.counts.get(category, 0)}/{wanted}"
        for category, wanted in plan.targets.items()
    )
    if len(actor_name) > HEADER_NAME_CHARS:
        actor_name = actor_name[: HEADER_NAME_CHARS - 1] + "…"
    return "   ".join(part for part in (actor_name, counts, state) if part)


def short_reason(reason: str, numbers: Mapping[Any, Any], issues: Sequence[str] = ()) -> str:
    """A plan's removal reason in a few words for a tile: ``dup of #3``, ``too dark``, ``surplus``.

    ``numbers`` maps file names to image numbers; ``issues`` are the image's defects, which
    explain a surplus removal (the lowest quality goes first).
    """
    parts = []
    for part in reason.split(", "):
        if part.startswith("duplicate of "):
            kept = part.removeprefix("duplicate of ")
            number = numbers.get(kept)
            parts.append(f"dup of #{number}" if number is not None else "duplicate")
        elif part.startswith("surplus"):
            defects = [issue.replace("_", " ") for issue in issues if issue != "duplicate"]
            parts.append("surplus" + (f" ({', '.join(defects)})" if defects else ""))
        elif part.endswith("is not in the target mix"):
            parts.append("not in mix")
        else:
            parts.append(part.replace("_", " "))
    return ", ".join(parts)


def tile_label(image: ImageEvaluation) -> str:
    """``<category> <score>/10``, or ``unreadable`` when there is no category to show."""
    if image.type is None:
        return "unreadable"
    return f"{image.type} {image.quality_score}/10"


def _in_number_order(images: Sequence[ImageEvaluation]) -> list[ImageEvaluation]:
    ordered = sorted(images, key=lambda image: image.number)
    numbers = [image.number for image in ordered]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"image numbers are not unique: {numbers}")
    return ordered


def _check_plan_matches(images: Sequence[ImageEvaluation], plan: Plan) -> None:
    filenames = {image.number: image.filename for image in images}
    for removal in plan.removals:
        if filenames.get(removal.number) != removal.filename:
            raise ValueError(
                f"plan removes image {removal.number} ({removal.filename}) but the evaluation "
                f"has {filenames.get(removal.number)!r} under that number"
            )


def format_stats(counts: Mapping[str, int], target_total: int) -> str:
    """The ``--stats`` report: totals, how many actors sit at/under/over target, a histogram."""
    actors = len(counts)
    images = sum(counts.values())
    exactly = sum(1 for count in counts.values() if count == target_total)
    under = sum(1 for count in counts.values() if count < target_total)
    over = actors - exactly - under
    average = f"{images / actors:.1f}" if actors else "-"
    lines = [
        "=" * 70,
        "DATASET STATISTICS",
        "=" * 70,
        f"Actors:            {actors}",
        f"Images:            {images}",
        f"Average per actor: {average}",
        f"Target per actor:  {target_total}",
        f"Exactly at target: {_count_and_share(exactly, actors)}",
        f"Under target:      {_count_and_share(under, actors)}",
        f"Over target:       {_count_and_share(over, actors)}",
    ]
    if actors:
        lines += ["", "Images per actor (image count, bar, number of actors):"]
        lines += _histogram(Counter(counts.values()), target_total)
    lines.append("=" * 70)
    return "\n".join(lines)


def _count_and_share(part: int, whole: int) -> str:
    return f"{part} ({part / whole * 100:.1f}%)" if whole else "0"


HISTOGRAM_WIDTH = 40


def _histogram(actors_per_count: Counter[int], target_total: int) -> list[str]:
    """One row per image count present, plus the target row (marked) even when it is empty."""
    rows = sorted(set(actors_per_count) | {target_total})
    tallest = max(actors_per_count.values())
    count_width = len(str(rows[-1]))
    number_width = len(str(tallest))
    lines = []
    for count in rows:
        actors = actors_per_count.get(count, 0)
        bar = "#" * max(1 if actors else 0, round(actors / tallest * HISTOGRAM_WIDTH))
        marker = "  <- target" if count == target_total else ""
        lines.append(
            f"  {count:>{count_width}} | {bar:<{HISTOGRAM_WIDTH}} {actors:>{number_width}}{marker}"
        )
    return lines
