"""The review sheet, the evaluation JSON and the --stats text, as a user reads them."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image, ImageFont

from training_data.config import Config
from training_data.evaluation import ActorEvaluation, ImageEvaluation
from training_data.plan import make_plan
from training_data.report import (
    SheetTile,
    evaluation_document,
    format_stats,
    render_sheet,
    sheet_header,
    tile_label,
    write_composite,
    write_evaluation_json,
)

TILE_SIDE = 120


def _photo(color: tuple[int, int, int], size: tuple[int, int] = (300, 200)) -> Image.Image:
    return Image.new("RGB", size, color)


def _tiles(count: int, marked: frozenset[int] = frozenset()) -> list[SheetTile]:
    return [
        SheetTile(
            number, _photo((40, 90, 160)), f"photorealistic {number % 10 + 1}/10", number in marked
        )
        for number in range(1, count + 1)
    ]


def _red_pixels(image: Image.Image) -> int:
    """Strong red, the colour of removal marks (thumbnails here are blue or grey)."""
    red, green, blue = image.convert("RGB").split()
    strong_red = Image.eval(red, lambda v: 255 if v > 180 else 0)
    weak_green = Image.eval(green, lambda v: 255 if v < 60 else 0)
    weak_blue = Image.eval(blue, lambda v: 255 if v < 60 else 0)
    mask = Image.composite(strong_red, Image.new("L", image.size), weak_green)
    mask = Image.composite(mask, Image.new("L", image.size), weak_blue)
    return mask.histogram()[255]


def _cell(sheet: Image.Image, index: int, columns: int, rows: int) -> Image.Image:
    width, height = sheet.width // columns, sheet.height // rows
    row, column = divmod(index, columns)
    return sheet.crop((column * width, row * height, (column + 1) * width, (row + 1) * height))


def test_sheet_has_five_columns_and_as_many_rows_as_needed():
    sheet = render_sheet(_tiles(12), tile_side=TILE_SIDE)
    one_row = render_sheet(_tiles(5), tile_side=TILE_SIDE)
    assert sheet.width == one_row.width
    assert sheet.height == 3 * one_row.height
    assert sheet.width >= 5 * TILE_SIDE
    assert one_row.height >= TILE_SIDE


def test_sheet_columns_are_configurable_and_width_does_not_depend_on_tile_count():
    three_columns = render_sheet(_tiles(7), columns=3, tile_side=TILE_SIDE)
    few = render_sheet(_tiles(2), columns=3, tile_side=TILE_SIDE)
    assert three_columns.width == few.width
    assert three_columns.height == 3 * few.height


def test_each_tile_shows_its_thumbnail_in_its_own_cell():
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 30), (30, 220, 220)]
    tiles = [
        SheetTile(n + 1, _photo(color), "bw_stylized 7/10", False) for n, color in enumerate(colors)
    ]
    tiles.append(SheetTile(6, _photo((250, 120, 0)), "color_stylized 5/10", False))
    sheet = render_sheet(tiles, columns=5, tile_side=TILE_SIDE)
    for index, color in enumerate([*colors, (250, 120, 0)]):
        cell = _cell(sheet, index, columns=5, rows=2)
        center = cell.getpixel((cell.width // 2, cell.height // 2 - 10))
        assert all(abs(a - b) <= 2 for a, b in zip(center, color, strict=True)), (index, center)


def test_empty_cells_after_the_last_tile_stay_blank():
    sheet = render_sheet(_tiles(6), columns=5, tile_side=TILE_SIDE)
    last_cell = _cell(sheet, 9, columns=5, rows=2)
    assert last_cell.getcolors() == [(last_cell.width * last_cell.height, (255, 255, 255))]


def test_marked_tile_is_framed_and_banded_in_red():
    sheet = render_sheet(_tiles(5, marked=frozenset({3})), tile_side=TILE_SIDE)
    unmarked, marked = _cell(sheet, 1, 5, 1), _cell(sheet, 2, 5, 1)
    assert _red_pixels(unmarked) == 0
    # frame + band: far more than a thin outline would give
    assert _red_pixels(marked) > TILE_SIDE * TILE_SIDE * 0.15
    # the frame runs along all four sides of the thumbnail
    padding = (marked.width - TILE_SIDE) // 2
    inside = marked.crop((padding, padding, padding + TILE_SIDE, padding + TILE_SIDE))
    for point in [(1, TILE_SIDE // 2), (TILE_SIDE - 2, TILE_SIDE // 2), (TILE_SIDE // 2, 1)]:
        red, green, blue = inside.getpixel(point)
        assert red > 180 and green < 60 and blue < 60, point


def test_unreadable_tile_is_grey_and_never_marked_red_unless_planned():
    tiles = [SheetTile(1, None, "unreadable", False), SheetTile(2, None, "unreadable", True)]
    sheet = render_sheet(tiles, columns=2, tile_side=TILE_SIDE)
    grey, grey_marked = _cell(sheet, 0, 2, 1), _cell(sheet, 1, 2, 1)
    assert _red_pixels(grey) == 0
    assert _red_pixels(grey_marked) > 0
    padding = (grey.width - TILE_SIDE) // 2
    corner = grey.getpixel((padding + TILE_SIDE - 5, padding + TILE_SIDE // 2))
    assert corner == (150, 150, 150)
    # the word "unreadable" is drawn in white in the middle of the grey tile
    middle = grey.crop(
        (padding, padding + TILE_SIDE // 2 - 10, padding + TILE_SIDE, padding + TILE_SIDE // 2 + 10)
    )
    assert sum(count for count, color in middle.getcolors(10_000) if min(color) > 220) > 20


def test_number_and_label_are_drawn_in_the_cell():
    blank = render_sheet([SheetTile(1, _photo((40, 90, 160)), "", False)], 1, TILE_SIDE)
    labelled = render_sheet(
        [SheetTile(1, _photo((40, 90, 160)), "photo 9/10", False)], 1, TILE_SIDE
    )
    caption = (0, TILE_SIDE + 10, labelled.width, labelled.height)
    assert labelled.crop(caption).getcolors() != blank.crop(caption).getcolors()
    one = render_sheet([SheetTile(1, _photo((40, 90, 160)), "x", False)], 1, TILE_SIDE)
    eighteen = render_sheet([SheetTile(18, _photo((40, 90, 160)), "x", False)], 1, TILE_SIDE)
    badge = (0, 0, 60, 40)
    assert one.crop(badge).tobytes() != eighteen.crop(badge).tobytes()


def test_long_labels_are_shrunk_to_fit_the_tile():
    label = "photorealistic 10/10 and a very long comment"
    sheet = render_sheet([SheetTile(1, _photo((40, 90, 160)), label, False)], 1, TILE_SIDE)
    caption = sheet.crop((0, TILE_SIDE + 10, sheet.width, sheet.height))
    left_edge = caption.crop((0, 0, 3, caption.height))
    assert left_edge.getcolors() == [(3 * caption.height, (255, 255, 255))]


def test_tiny_and_grayscale_thumbnails_are_accepted():
    tiles = [
        SheetTile(1, Image.new("L", (64, 64), 90), "photorealistic 2/10", True),
        SheetTile(2, Image.new("RGBA", (30, 300), (0, 0, 0, 0)), "bw_stylized 6/10", False),
        SheetTile(3, Image.new("P", (500, 20)), "color_stylized 6/10", False),
    ]
    assert render_sheet(tiles, tile_side=TILE_SIDE).mode == "RGB"


def test_stats_figures_on_a_known_dataset():
    counts = {"a": 20, "b": 20, "c": 15, "d": 24, "e": 0, "f": 20, "g": 15}
    text = format_stats(counts, target_total=20)
    lines = text.splitlines()
    assert "Actors:            7" in lines
    assert "Images:            114" in lines
    assert "Average per actor: 16.3" in lines
    assert "Exactly at target: 3 (42.9%)" in lines
    assert "Under target:      3 (42.9%)" in lines
    assert "Over target:       1 (14.3%)" in lines


def test_stats_histogram_has_one_row_per_count_and_marks_the_target():
    counts = {"a": 20, "b": 20, "c": 15, "d": 24, "e": 0, "f": 20, "g": 15}
    rows = [line for line in format_stats(counts, 20).splitlines() if " | " in line]
    assert [int(row.split("|")[0]) for row in rows] == [0, 15, 20, 24]
    by_count = {int(row.split("|")[0]): row for row in rows}
    assert [row for row in rows if "<- target" in row] == [by_count[20]]
    assert by_count[20].rstrip().endswith("3  <- target")
    assert by_count[15].rstrip().endswith(" 2")
    assert by_count[0].rstrip().endswith(" 1")
    bars = {count: row.split("|")[1].count("#") for count, row in by_count.items()}
    assert bars[20] == 40 and bars[15] == round(2 / 3 * 40) and bars[0] == round(40 / 3)


def test_stats_show_the_target_row_even_when_no_actor_is_at_target():
    rows = [line for line in format_stats({"a": 3, "b": 30}, 20).splitlines() if " | " in line]
    assert [int(row.split("|")[0]) for row in rows] == [3, 20, 30]
    target_row = rows[1]
    assert "<- target" in target_row and "#" not in target_row


def test_stats_of_an_empty_dataset():
    text = format_stats({}, 20)
    assert "Actors:            0" in text
    assert "Average per actor: -" in text
    assert " | " not in text


# --- evaluation JSON and composite -------------------------------------------------------------


def _evaluated(
    number: int,
    category: str | None,
    score: int,
    issues: tuple[str, ...] = (),
    duplicate_of: str | None = None,
) -> ImageEvaluation:
    return ImageEvaluation(
        number=number,
        filename=f"0001_demo_actor_{number}.jpg",
        type=category,
        quality_score=score,
        issues=list(issues),
        width=None if category is None else 512,
        height=None if category is None else 512,
        sha256=f"{number:064x}",
        duplicate_of=duplicate_of,
        measurements={"brightness": 120.0},
    )


def _over_target_actor() -> ActorEvaluation:
    """22 images: #2 unreadable, #5 a duplicate of #4, 15 photos, 4 bw, 2 color."""
    kinds = ["photorealistic"] * 15 + ["bw_stylized"] * 4 + ["color_stylized"] * 2
    images = []
    number = 0
    for category in kinds:
        number += 1
        if number == 2:
            images.append(_evaluated(2, None, 1, ("unreadable",)))
            number += 1
        issues, duplicate_of = ((), None)
        if number == 5:
            issues, duplicate_of = ("duplicate",), "0001_demo_actor_4.jpg"
        images.append(_evaluated(number, category, 3 + number % 7, issues, duplicate_of))
    colors = {"photorealistic": (40, 90, 160), "bw_stylized": (90, 90, 90)}
    thumbnails = {
        image.number: Image.new("RGB", (160, 120), colors.get(image.type, (40, 160, 60)))
        for image in images
        if image.type is not None
    }
    images.reverse()  # the report must not depend on the order it is given
    return ActorEvaluation(images, thumbnails, {"backend": "local", "cache_hits": 3})


def test_document_has_the_fields_of_spec_10():
    evaluation = _over_target_actor()
    plan = make_plan(evaluation.images, Config().target)
    document = evaluation_document("0001_demo_actor", evaluation, plan, Config())
    assert document["actor"] == "0001_demo_actor"
    assert datetime.fromisoformat(document["evaluated_at"]).tzinfo is not None
    assert [image["number"] for image in document["images"]] == list(range(1, 23))
    assert document["images"][1]["type"] is None
    assert document["images"][1]["issues"] == ["unreadable"]
    assert document["images"][4]["duplicate_of"] == "0001_demo_actor_4.jpg"
    assert document["total_images"] == 22
    assert document["counts"] == {"photorealistic": 15, "bw_stylized": 4, "color_stylized": 2}
    assert document["percentages"] == {
        "photorealistic": 71.4,
        "bw_stylized": 19.0,
        "color_stylized": 9.5,
    }
    assert document["target"] == {
        "counts": {"photorealistic": 13, "bw_stylized": 4, "color_stylized": 3},
        "total": 20,
        "tolerance": 0.10,
        "mix": {"photorealistic": 0.65, "bw_stylized": 0.20, "color_stylized": 0.15},
    }
    assert document["is_balanced"] is False
    assert document["images_to_generate"] == [{"type": "color_stylized", "count": 1}]
    assert document["evaluator"] == {"backend": "local", "cache_hits": 3}
    assert "execution" not in document
    json.dumps(document)  # all of it is JSON


def test_images_to_delete_align_with_plan_and_images():
    evaluation = _over_target_actor()
    plan = make_plan(evaluation.images, Config().target)
    document = evaluation_document("0001_demo_actor", evaluation, plan, Config())
    deleted = document["images_to_delete"]
    assert [entry["number"] for entry in deleted] == [r.number for r in plan.removals]
    unusable = sorted(deleted[:2], key=lambda entry: entry["number"])
    assert unusable == [
        {
            "number": 2,
            "filename": "0001_demo_actor_2.jpg",
            "type": None,
            "quality_score": 1,
            "reason": "unreadable",
        },
        {
            "number": 5,
            "filename": "0001_demo_actor_5.jpg",
            "type": "photorealistic",
            "quality_score": 8,
            "reason": "duplicate of 0001_demo_actor_4.jpg",
        },
    ]
    by_number = {image["number"]: image for image in document["images"]}
    for entry in deleted:
        image = by_number[entry["number"]]
        assert (image["filename"], image["type"], image["quality_score"]) == (
            entry["filename"],
            entry["type"],
            entry["quality_score"],
        )
    assert set(entry) == {"number", "filename", "type", "quality_score", "reason"}


def test_execution_record_is_included_when_given():
    evaluation = _over_target_actor()
    plan = make_plan(evaluation.images, Config().target)
    execution = {"removed": ["0001_demo_actor_2.jpg"], "generated": [], "unfulfilled": []}
    document = evaluation_document("0001_demo_actor", evaluation, plan, Config(), execution)
    assert document["execution"] == execution


def test_a_plan_that_names_another_file_is_refused():
    evaluation = _over_target_actor()
    plan = make_plan(evaluation.images, Config().target)
    renumbered = [replace(image, number=image.number + 1) for image in evaluation.images]
    shifted = ActorEvaluation(renumbered, {}, {})
    with pytest.raises(
        ValueError,
        match=r"plan removes image \d+ \(0001_demo_actor_\d+.jpg\) but the evaluation has",
    ):
        evaluation_document("0001_demo_actor", shifted, plan, Config())
    with pytest.raises(
        ValueError,
        match=r"plan removes image \d+ \(0001_demo_actor_\d+.jpg\) but the evaluation has",
    ):
        write_composite(Path("unused"), "0001_demo_actor", shifted, plan)


def test_evaluation_json_is_written_whole_and_replaced_atomically(tmp_path):
    evaluation = _over_target_actor()
    plan = make_plan(evaluation.images, Config().target)
    document = evaluation_document("0001_demo_actor", evaluation, plan, Config())
    output_dir = tmp_path / "out" / "nested"
    path = write_evaluation_json(output_dir, "0001_demo_actor", document)
    assert path == output_dir / "0001_demo_actor_evaluation.json"
    assert json.loads(path.read_text(encoding="utf-8")) == document
    with path.open("rb") as reader_of_old_version:
        old_inode = os.fstat(reader_of_old_version.fileno()).st_ino
        write_evaluation_json(output_dir, "0001_demo_actor", {**document, "is_balanced": True})
        # a reader holding the old file keeps reading the whole old file: it was replaced, not
        # rewritten in place
        assert json.loads(reader_of_old_version.read()) == document
    assert path.stat().st_ino != old_inode
    assert json.loads(path.read_text(encoding="utf-8"))["is_balanced"] is True
    assert sorted(p.name for p in output_dir.iterdir()) == [path.name]


def test_a_failed_json_write_keeps_the_previous_file(tmp_path):
    path = write_evaluation_json(tmp_path, "0001_demo_actor", {"actor": "0001_demo_actor"})
    with pytest.raises(TypeError):
        write_evaluation_json(tmp_path, "0001_demo_actor", {"actor": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"actor": "0001_demo_actor"}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_composite_is_a_jpeg_sheet_in_number_order_with_removals_marked(tmp_path):
    evaluation = _over_target_actor()
    plan = make_plan(evaluation.images, Config().target)
    path = write_composite(tmp_path, "0001_demo_actor", evaluation, plan)
    assert path == tmp_path / "0001_demo_actor_composite.jpg"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    with Image.open(path) as sheet:
        assert sheet.format == "JPEG"
        sheet = sheet.convert("RGB")
    tiles = render_sheet([SheetTile(n, None, "", False) for n in range(1, 23)])
    header = sheet.height - tiles.height
    assert sheet.width == tiles.width and 0 < header < 60  # 22 tiles: 5 columns, 5 rows
    assert _dark_pixels(sheet.crop((0, 0, sheet.width, header))) > 100  # the header line
    sheet = sheet.crop((0, header, sheet.width, sheet.height))
    removed = {removal.number for removal in plan.removals}
    assert removed >= {2, 5}
    for number in range(1, 23):
        cell = _cell(sheet, number - 1, columns=5, rows=5)
        assert (_red_pixels(cell) > 2000) == (number in removed), number
    # image 2 is unreadable: the grey tile sits in the second cell, whatever else is going on
    grey_cell = _cell(sheet, 1, columns=5, rows=5)
    middle = grey_cell.getpixel((grey_cell.width // 2 + 60, grey_cell.height // 2 - 30))
    assert all(abs(channel - 150) < 12 for channel in middle)
    # image 20 is bw (grey 90), image 21 color (green): thumbnails follow numbers
    bw_cell, color_cell = _cell(sheet, 19, 5, 5), _cell(sheet, 20, 5, 5)
    assert all(abs(c - 90) < 12 for c in bw_cell.getpixel((bw_cell.width // 2, 80)))
    red, green, blue = color_cell.getpixel((color_cell.width // 2, 80))
    assert green > 130 and red < 70 and blue < 90


def _dark_pixels(image: Image.Image) -> int:
    return sum(image.convert("L").histogram()[:80])


def test_sheet_header_names_the_actor_counts_against_target_and_state():
    plan = make_plan(_over_target_actor().images, Config().target)
    header = sheet_header("0001_demo_actor", plan, "rebalanced")
    counts = "  ".join(f"{c} {plan.counts[c]}/{n}" for c, n in plan.targets.items())
    assert header == f"0001_demo_actor   {counts}   rebalanced"


def test_sheet_header_of_a_very_long_actor_name_keeps_counts_and_state_whole():
    plan = make_plan(_over_target_actor().images, Config().target)
    name = "L" * 40 + "_" + "x" * 200
    header = sheet_header(name, plan, "rebalanced")
    sheet = render_sheet([SheetTile(1, None, "", False)], header=header)
    smallest = ImageFont.load_default(size=8)
    assert header.endswith("/3   rebalanced") and header.startswith("L" * 40)
    assert smallest.getlength(header) < sheet.width - 20  # drawn whole, never cut with "…"


def test_remove_tile_carries_its_reason():
    plain = render_sheet([SheetTile(1, _photo((40, 90, 160)), "x", True)], tile_side=TILE_SIDE)
    reason = render_sheet(
        [SheetTile(1, _photo((40, 90, 160)), "x", True, "dup of #3")], tile_side=TILE_SIDE
    )
    assert _red_pixels(reason) > 0 and plain.tobytes() != reason.tobytes()


def test_tile_labels_show_category_and_score():
    assert tile_label(_evaluated(3, "bw_stylized", 7)) == "bw_stylized 7/10"
    assert tile_label(_evaluated(2, None, 1, ("unreadable",))) == "unreadable"
