"""The review report's data and files: rows, totals, pages and CSVs as a reviewer or script reads
them (the browser side is in test_review_browser.py)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from training_data.report import short_reason
from training_data.review_site import (
    LOW_CONFIDENCE,
    ReviewSite,
    Totals,
    actor_page,
    actor_row,
    actor_state,
    encode_row,
    face_box,
    image_rows,
    index_data,
    page_name,
    read_index_data,
    style_confidence,
)

HOSTILE = "<script>alert(1)</script>.jpg"


def _sha(number: int) -> str:
    return f"{number:02x}" + "ab" * 31


def _image(number: int, kind: str | None = "photorealistic", **extra) -> dict:
    image = {
        "number": number,
        "filename": f"img_{number}.jpg",
        "type": kind,
        "quality_score": 7,
        "issues": [],
        "width": 640,
        "height": 480,
        "sha256": _sha(number),
        "duplicate_of": None,
        "measurements": {"type_source": "evaluator"},
        "note": None,
    }
    image.update(extra)
    return image


def _document(name: str = "anna", images: list[dict] | None = None, **extra) -> dict:
    images = images if images is not None else [_image(1), _image(2)]
    document = {
        "actor": name,
        "evaluated_at": "2026-11-30T10:00:00+00:00",
        "total_images": len(images),
        "images": images,
        "counts": {"photorealistic": 2, "bw_stylized": 0},
        "target": {"counts": {"photorealistic": 2, "bw_stylized": 1}, "total": 3},
        "is_balanced": False,
        "images_to_delete": [],
        "images_to_generate": [{"type": "bw_stylized", "count": 1}],
    }
    document.update(extra)
    return document


def test_state_is_read_from_the_json_or_derived_for_older_files():
    assert actor_state(_document(state="short", state_reason="2 missing")) == ("short", "2 missing")
    assert actor_state(_document(is_balanced=True)) == ("balanced", "")
    assert actor_state(_document(is_balanced=False)) == ("rebalanced", "")
    assert actor_state(_document(state="nonsense", is_balanced=True)) == ("balanced", "")
    assert actor_state({"actor": "x", "skipped_reason": "no training images"}) == (
        "skipped",
        "no training images",
    )


def test_style_confidence_is_for_the_chosen_category_and_absent_for_trusted_types():
    photo = _image(1, measurements={"style": {"photo_probability": 0.8}})
    drawing = _image(2, "bw_stylized", measurements={"style": {"photo_probability": 0.8}})
    learned = _image(3, "bw_stylized", measurements={"style": {"confidence": 0.55}})
    trusted = _image(4, measurements={"type_source": "manifest", "style": {"confidence": 0.1}})
    assert style_confidence(photo) == pytest.approx(0.8)
    assert style_confidence(drawing) == pytest.approx(0.2)
    assert style_confidence(learned) == pytest.approx(0.55)
    assert style_confidence(trusted) is None
    assert style_confidence(_image(5)) is None


def test_face_box_is_kept_only_when_it_is_a_box():
    def with_box(box):
        return _image(1, measurements={"face": {"count": 1, "box": box}})

    assert face_box(with_box([0.1, 0.2, 0.5, 0.6])) == (0.1, 0.2, 0.5, 0.6)
    assert face_box(with_box([-0.2, 0.2, 1.4, 0.6])) == (0.0, 0.2, 1.0, 0.6)
    assert face_box(with_box(None)) is None
    assert face_box(with_box([0.5, 0.5, 0.4, 0.9])) is None
    assert face_box(with_box(["a", 0, 1, 1])) is None


def test_removal_reasons_in_a_few_words():
    numbers = {"kept.jpg": 3}
    assert short_reason("duplicate of kept.jpg", numbers) == "dup of #3"
    assert short_reason("too_small", numbers) == "too small"
    assert short_reason("surplus photorealistic (quality 4)", numbers, ["too_dark"]) == (
        "surplus (too dark)"
    )
    assert short_reason("surplus bw_stylized (quality 4)", numbers) == "surplus"
    assert short_reason("type sketch is not in the target mix", numbers) == "not in mix"
    assert short_reason("unreadable, too_small", numbers) == "unreadable, too small"


def test_image_rows_carry_the_plan_mark_and_link_duplicates_by_number():
    images = [
        _image(1),
        _image(2, issues=["duplicate"], duplicate_of="img_1.jpg"),
        _image(3, issues=["unreadable"], type=None),
    ]
    delete = [{"number": 2, "filename": "img_2.jpg", "reason": "duplicate of img_1.jpg"}]
    rows = image_rows(_document(images=images, images_to_delete=delete))
    assert [row["action"] for row in rows] == ["keep", "remove", "keep"]
    assert rows[1]["short_reason"] == "dup of #1"
    assert rows[1]["duplicate_number"] == 1
    assert rows[0]["thumb"] == f"01/{_sha(1)[:32]}.jpg"
    assert rows[2]["thumb"] is None  # an unreadable file has no picture to show


def _row(document: dict, name: str) -> dict:
    return actor_row(document, name, image_rows(document))


def test_actor_row_counts_and_needs_a_look():
    low = {"style": {"photo_probability": LOW_CONFIDENCE - 0.1}}
    images = [_image(1, issues=["blurry"]), _image(2, measurements=low), _image(3)]
    delete = [{"number": 1, "filename": "img_1.jpg", "reason": "surplus photorealistic"}]
    row = _row(_document(images=images, images_to_delete=delete), "anna")
    assert (row["state"], row["images"], row["remove"], row["generate"]) == ("rebalanced", 3, 1, 1)
    assert (row["defects"], row["low"], row["look"]) == (1, 1, True)
    assert row["issues"] == {"blurry": 1}
    assert row["types"] == {"photorealistic": 3}
    assert row["thumbs"][0][1] == 1  # the removal is marked in the strip
    calm = _row(_document(images=[_image(1)], is_balanced=True), "bob")
    assert (calm["state"], calm["look"]) == ("balanced", False)
    failed = actor_row(None, "carl", [], error="download failed")
    assert (failed["state"], failed["reason"]) == ("failed", "download failed")
    assert failed["look"] is True


def test_counts_after_an_execute_run_replace_the_planned_ones():
    execution = {"after": {"counts": {"photorealistic": 2, "bw_stylized": 1}}, "removed": []}
    row = _row(_document(execution=execution), "anna")
    assert row["counts"] == {"photorealistic": 2, "bw_stylized": 1}
    assert row["after_execute"] is True


def test_totals_follow_rows_added_and_replaced():
    totals = Totals()
    first = _row(_document(images=[_image(1, issues=["blurry"])]), "anna")
    totals.add(first)
    totals.add(actor_row(None, "bob", [], error="boom"))
    assert totals.to_dict()["states"]["rebalanced"] == 1
    assert totals.to_dict()["issues"] == {"blurry": 1}
    totals.remove(first)
    totals.add(_row(_document(images=[_image(1)], is_balanced=True), "anna"))
    result = totals.to_dict()
    assert result["actors"] == 2
    assert result["states"] == {
        "balanced": 1,
        "rebalanced": 0,
        "short": 0,
        "failed": 1,
        "skipped": 0,
    }
    assert result["issues"] == {}
    assert result["categories"] == {"photorealistic": 1}
    assert result["look"] == 1


def test_index_data_round_trips_and_no_name_can_close_the_script():
    row = _row(_document(name=HOSTILE), HOSTILE)
    totals = Totals()
    totals.add(row)
    data = index_data([encode_row(row)], totals, ["photorealistic"])
    assert b"</script>" not in data and b"<script>" not in data
    document = read_index_data(data)
    assert document["rows"][0]["name"] == HOSTILE
    assert document["totals"]["actors"] == 1


def test_page_names_are_safe_and_distinct():
    names = [HOSTILE, "<script>alert(2)</script>.jpg", "anna", "../../etc", "ünï cødé"]
    pages = [page_name(name) for name in names]
    assert len(set(pages)) == len(names)
    assert all(
        set(page) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
        for page in pages
    )


def test_actor_page_escapes_every_name_and_draws_the_face_box():
    face = {"face": {"count": 1, "box": [0.25, 0.1, 0.75, 0.6]}}
    images = [
        _image(1, filename=HOSTILE, measurements=face),
        _image(2, issues=["duplicate"], duplicate_of=HOSTILE, note="<i>note</i>"),
    ]
    delete = [{"number": 2, "filename": "img_2.jpg", "reason": f"duplicate of {HOSTILE}"}]
    document = _document(name=HOSTILE, images=images, images_to_delete=delete)
    page = actor_page(_row(document, HOSTILE), document, image_rows(document), None)
    assert "<script>" not in page and "<i>" not in page
    assert "&lt;i&gt;note&lt;/i&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in page
    assert 'href="#img-1"' in page
    assert "REMOVE: dup of #1" in page
    assert 'class="face" style="left:25.0%;top:10.0%;width:50.0%;height:50.0%"' in page
    assert page.count("GENERATE") == 1


def test_execute_run_shows_where_files_went_and_how_to_restore(tmp_path):
    execution = {
        "removed": [{"number": 2, "filename": "img_2.jpg", "moved_to": "removed/run/img_2.jpg"}],
        "generated": [{"filename": "gen_1.png"}],
        "unfulfilled": {},
        "messages": [],
        "after": {"counts": {"photorealistic": 1, "bw_stylized": 1}},
    }
    document = _document(name="o'neil", execution=execution)
    page = actor_page(_row(document, "o'neil"), document, image_rows(document), tmp_path / "data")
    assert "removed/run/img_2.jpg" in page and "gen_1.png" in page
    assert "after execute: photorealistic <b>1</b> / 2" in page
    assert "evaluate-and-balance --restore &#x27;o&#x27;&quot;&#x27;&quot;&#x27;neil&#x27;" in page
    assert str(tmp_path / "data") in page


def _working(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (256, 192), color)


def test_site_updates_actor_by_actor_and_reuses_thumbnails(tmp_path):
    site = ReviewSite.open(tmp_path)
    first = _document(name="anna")
    site.update_actor(first, {1: _working((200, 0, 0)), 2: _working((0, 200, 0))})
    thumb = tmp_path / "report" / "thumbs" / "01" / f"{_sha(1)[:32]}.jpg"
    assert Image.open(thumb).size == (160, 120)
    written = thumb.stat().st_mtime_ns
    site.update_actor(_document(name="bob"), {1: _working((0, 0, 200))})
    assert thumb.stat().st_mtime_ns == written  # same content hash: never made twice
    site.record_failure("carl", "download failed")
    data = read_index_data((tmp_path / "report" / "data" / "index.js").read_bytes())
    assert [row["name"] for row in data["rows"]] == ["anna", "bob", "carl"]
    assert data["totals"]["states"]["failed"] == 1
    page = (tmp_path / "report" / data["rows"][2]["page"]).read_text()
    assert "download failed" in page
    assert (tmp_path / "report" / "index.html").exists()
    assert not list((tmp_path / "report").rglob(".tmp-*"))


def test_a_new_run_keeps_the_rows_of_earlier_runs(tmp_path):
    first = ReviewSite.open(tmp_path)
    first.update_actor(_document(name="anna"))
    first.write_tables()
    second = ReviewSite.open(tmp_path)
    second.update_actor(_document(name="bob", is_balanced=True))
    second.write_tables()
    assert [row["name"] for row in second.rows] == ["anna", "bob"]
    with open(tmp_path / "report" / "images.csv", newline="") as file:
        actors = [line["actor"] for line in csv.DictReader(file)]
    assert actors == ["anna", "anna", "bob", "bob"]


def test_csvs_have_one_row_per_actor_and_per_image(tmp_path):
    images = [_image(1), _image(2, issues=["blurry", "too_dark"])]
    delete = [{"number": 2, "filename": "img_2.jpg", "reason": "surplus photorealistic"}]
    (tmp_path / f"{HOSTILE[:3]}_evaluation.json").write_text(
        json.dumps(_document(name=HOSTILE, images=images, images_to_delete=delete))
    )
    ReviewSite.rebuild(tmp_path, {"zed": "boom"}, {"yan": "no training images"})
    actors = list(csv.DictReader(io.StringIO((tmp_path / "report" / "actors.csv").read_text())))
    assert [(a["actor"], a["state"]) for a in actors] == [
        (HOSTILE, "rebalanced"),
        ("yan", "skipped"),
        ("zed", "failed"),
    ]
    assert actors[0]["photorealistic"] == "2" and actors[0]["bw_stylized_target"] == "1"
    assert (actors[0]["removals"], actors[0]["generations"]) == ("1", "1")
    assert actors[2]["error"] == "boom"
    images_csv = (tmp_path / "report" / "images.csv").read_text()
    lines = list(csv.DictReader(io.StringIO(images_csv)))
    assert [(line["file"], line["action"], line["issues"]) for line in lines] == [
        ("img_1.jpg", "keep", ""),
        ("img_2.jpg", "remove", "blurry;too_dark"),
    ]
    assert lines[1]["reason"] == "surplus photorealistic"


def test_unreadable_data_file_is_rebuilt_from_the_evaluations(tmp_path):
    (tmp_path / "anna_evaluation.json").write_text(json.dumps(_document(name="anna")))
    (tmp_path / "broken_evaluation.json").write_text("{not json")
    data_file = tmp_path / "report" / "data" / "index.js"
    data_file.parent.mkdir(parents=True)
    data_file.write_text("garbage")
    site = ReviewSite.open(tmp_path)
    assert [row["name"] for row in site.rows] == ["anna"]


def test_an_odd_evaluation_of_a_failed_actor_leaves_its_failure_on_the_report(tmp_path):
    (tmp_path / "anna_evaluation.json").write_text(json.dumps({"actor": "anna", "images": 5}))
    site = ReviewSite.rebuild(tmp_path, {"anna": "boom"}, {})
    assert [(row["name"], row["state"], row["images"]) for row in site.rows] == [
        ("anna", "failed", 0)
    ]
    site = ReviewSite.open(tmp_path)
    site.record_failure("anna", "boom again")
    assert site.rows[0]["reason"] == "boom again"


def test_thumbnails_missing_on_disk_are_not_linked(tmp_path):
    (tmp_path / "anna_evaluation.json").write_text(json.dumps(_document(name="anna")))
    site = ReviewSite.rebuild(tmp_path, {}, {})
    assert site.rows[0]["thumbs"] == []
    page = next((tmp_path / "report" / "actors").glob("anna-*.html")).read_text()
    assert "<img" not in page


@pytest.mark.parametrize("name", ["anna", HOSTILE])
def test_page_file_stays_inside_the_report(tmp_path, name):
    site = ReviewSite.open(tmp_path)
    site.record_failure(name, "boom")
    pages = list((tmp_path / "report" / "actors").iterdir())
    assert len(pages) == 1 and pages[0].parent == tmp_path / "report" / "actors"
    assert Path(site.rows[0]["page"]).name == pages[0].name


@pytest.mark.parametrize(
    ("actor", "page", "verdict_folder"),
    [
        (
            "<script>alert(1)</script>",
            "script_alert_1_script-5c140d35dc.html",
            "actors/5c/script_alert_1_script-5c140d35dcb46a62",
        ),
        ("ünïcode", "n_code-b8be8967e4.html", "actors/b8/n_code-b8be8967e4de3eb2"),
        ("a/b\\c", "a_b_c-7e65aa1c27.html", "actors/7e/a_b_c-7e65aa1c27456dec"),
        ("", "actor-e3b0c44298.html", "actors/e3/actor-e3b0c44298fc1c14"),
        ("a\udcffb", "a_b-253d5effb5.html", "actors/25/a_b-253d5effb552378f"),
        ("x" * 500, "x" * 60 + "-c38c2bf305.html", "actors/c3/" + "x" * 60 + "-c38c2bf3055c516a"),
    ],
)
def test_report_pages_and_verdict_folders_keep_the_names_of_earlier_runs(
    tmp_path, actor, page, verdict_folder
):
    """Names written by earlier runs: a changed rule would orphan their pages and caches."""
    from training_data.verdict_files import ActorVerdictFiles

    assert page_name(actor) == page
    folder = ActorVerdictFiles(tmp_path).for_actor(actor).folder
    assert folder.relative_to(tmp_path).as_posix() == verdict_folder
    assert folder.is_dir()
