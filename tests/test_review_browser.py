"""The review report in a real headless Chromium, opened from the file system as a reviewer does.

Debian's ``chromium`` driven by Playwright's Python package (never its own browser download).
Without Chromium the tests skip, except under CI (``CI`` set), where they must run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import DEFAULT_MIX, mix_kinds, run_cli, write_actor

if os.environ.get("CI"):
    import playwright.sync_api as sync_api  # under CI a missing package is a failure
else:
    sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE_ACTOR = "<img src=x onerror=alert(1)>"  # a folder name cannot hold the "/" of </script>
SCRIPT_NAME = "<script>alert(1)</script>.jpg"  # reaches the report through an evaluation JSON
OVER = (("photorealistic", 16), ("bw_stylized", 4), ("color_stylized", 3))


def _chromium() -> str | None:
    for candidate in ("chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the browser tests: .ci/run installs it")
        pytest.skip("no chromium installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, tmp_path):
    """A fresh page that records dialogs (none may open) and script errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    opened.dialogs = []
    opened.errors = []
    opened.on("dialog", lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()))
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    yield opened
    context.close()


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory) -> Path:
    """A dry-run over a small dataset: balanced, over target, a duplicate, a hostile name, a
    failed download and an empty actor; then one more actor added by JSON and ``--report``."""
    root = tmp_path_factory.mktemp("review")
    data, output = root / "data", root / "out"
    kinds = mix_kinds(DEFAULT_MIX)
    write_actor(data, "0000_actor", kinds, seed=0)
    write_actor(data, "0001_actor", kinds, seed=1)
    write_actor(data, "0002_over", mix_kinds(OVER), seed=2)
    duplicate = write_actor(data, "0003_dup", kinds, seed=3)
    shutil.copy(duplicate / "0003_dup_1.jpg", duplicate / "0003_dup_99.jpg")
    manifest = json.loads((duplicate / "manifest.json").read_text())
    manifest["images"]["0003_dup_99.jpg"] = {"type": "photorealistic"}
    (duplicate / "manifest.json").write_text(json.dumps(manifest))
    write_actor(data, "0004_fails", kinds, urls={"0004_fails_x.jpg": "http://127.0.0.1:9/x.jpg"})
    (data / "actors" / "0005_empty" / "training_data").mkdir(parents=True)
    hostile = write_actor(data, HOSTILE_ACTOR, kinds[:19], seed=6)
    shutil.copy(hostile / f"{HOSTILE_ACTOR}_1.jpg", hostile / f"{HOSTILE_ACTOR}.jpg")
    manifest = json.loads((hostile / "manifest.json").read_text())
    manifest["images"][f"{HOSTILE_ACTOR}.jpg"] = {"type": "photorealistic"}
    (hostile / "manifest.json").write_text(json.dumps(manifest))
    run = run_cli("--all", "--data-dir", data, "--output-dir", output, cwd=root, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr  # the failed download
    document = json.loads((output / "0000_actor_evaluation.json").read_text())
    document["actor"] = SCRIPT_NAME
    document["images"][0]["filename"] = SCRIPT_NAME
    (output / "script_evaluation.json").write_text(json.dumps(document))
    rebuilt = run_cli("--report", "--data-dir", data, "--output-dir", output, cwd=root)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "Report of 8 actors" in rebuilt.stdout
    return output / "report"


def _names(page) -> list[str]:
    return page.locator("#actors tbody a.actor").all_text_contents()


def _open_index(page, report: Path) -> None:
    page.goto((report / "index.html").as_uri())
    page.wait_for_selector("#actors tbody tr")


def test_index_lists_every_actor_with_totals(page, reviewed):
    _open_index(page, reviewed)
    names = _names(page)
    assert sorted(names) == sorted(
        [
            "0000_actor",
            "0001_actor",
            "0002_over",
            "0003_dup",
            "0004_fails",
            "0005_empty",
            HOSTILE_ACTOR,
            SCRIPT_NAME,
        ]
    )
    totals = page.locator("#totals").inner_text()
    assert "Actors: 8" in totals
    assert "failed: 1" in totals and "skipped: 1" in totals
    assert "balanced: 3" in totals and "rebalanced: 3" in totals
    assert "duplicate: 2" in totals  # 0003_dup and the hostile actor each hold a copy
    assert page.locator("#shown").inner_text() == "8 of 8 actors"
    assert page.errors == [] and page.dialogs == []


def test_state_filter_search_and_needs_a_look(page, reviewed):
    _open_index(page, reviewed)
    page.select_option("#state", "failed")
    assert _names(page) == ["0004_fails"]
    assert "Failed to download" in page.locator("#actors tbody").inner_text()
    page.select_option("#state", "rebalanced")
    assert sorted(_names(page)) == sorted(["0002_over", "0003_dup", HOSTILE_ACTOR])
    page.select_option("#state", "")
    page.fill("#search", "0002")
    assert _names(page) == ["0002_over"]
    page.fill("#search", "")
    page.check("#look")
    assert sorted(_names(page)) == sorted(["0002_over", "0003_dup", "0004_fails", HOSTILE_ACTOR])
    assert page.locator("#shown").inner_text() == "4 of 8 actors"


def test_sorting_by_a_column(page, reviewed):
    _open_index(page, reviewed)
    page.click("th[data-sort=remove]")
    removals = page.locator("#actors tbody tr td:nth-child(4)").all_text_contents()
    assert [int(value) for value in removals] == sorted(map(int, removals), reverse=True)
    assert int(removals[0]) >= 3  # 0002_over: 3 surplus photographs


def test_actor_page_and_duplicate_link(page, reviewed, tmp_path):
    _open_index(page, reviewed)
    page.fill("#search", "0003_dup")
    page.click("a.actor")
    assert page.locator("h1").inner_text() == "0003_dup"
    cards = page.locator("figure.card:not(.generate)")
    assert cards.count() == 21
    removal = page.locator("figure.card.remove")
    assert removal.count() == 1
    assert "REMOVE: dup of #1" in removal.inner_text()
    assert removal.locator("img").evaluate("img => img.naturalWidth") > 0  # the thumbnail loads
    removal.locator(".dup a").click()
    assert page.url.endswith("#img-1")
    assert page.locator("figure:target .file").inner_text() == "0003_dup_1.jpg"
    shot = tmp_path / "actor_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.go_back()
    page.go_back()
    page.wait_for_selector("#actors tbody tr")
    assert page.locator("#search").input_value() == "0003_dup"  # the filter survives the visit


def test_index_screenshot(page, reviewed, tmp_path):
    _open_index(page, reviewed)
    shot = tmp_path / "index.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_failed_actor_page_shows_its_error(page, reviewed):
    _open_index(page, reviewed)
    page.select_option("#state", "failed")
    page.click("a.actor")
    assert "Failed to download" in page.locator(".error").inner_text()


@pytest.mark.parametrize("name", [HOSTILE_ACTOR, SCRIPT_NAME])
def test_hostile_names_show_as_text_and_run_nothing(page, reviewed, name):
    _open_index(page, reviewed)
    page.fill("#search", name[:8])
    assert name in _names(page)
    assert page.locator("img[src=x], #actors script").count() == 0
    page.locator("a.actor", has_text=name).click()
    assert page.locator("h1").inner_text() == name
    files = page.locator("figure .file").all_text_contents()
    expected = SCRIPT_NAME if name == SCRIPT_NAME else f"{HOSTILE_ACTOR}.jpg"
    assert expected in files
    assert page.locator("img[src=x]").count() == 0
    assert page.dialogs == [] and page.errors == []


def test_a_very_long_actor_name_wraps_instead_of_pushing_the_columns_off_screen(page, tmp_path):
    data, output = tmp_path / "data", tmp_path / "out"
    long_name = "L" * 40 + "_Zoë_名前_" + "x" * 150  # a folder name of 200 bytes, no space
    write_actor(data, long_name, mix_kinds(OVER))
    run = run_cli("--all", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    _open_index(page, output / "report")
    assert _names(page) == [long_name]
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1400, f"the index is {width} px wide in a 1400 px window"
    assert page.locator("#actors th", has_text="Thumbnails").bounding_box()["x"] < 1400
