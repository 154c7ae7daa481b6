"""--report, --show-progress --json and the report a run leaves, through the real CLI."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import mix_kinds, read_progress, run_cli, write_actor

from training_data.review_site import read_index_data


def _rows(output) -> dict[str, dict]:
    data = read_index_data((output / "report" / "data" / "index.js").read_bytes())
    return {row["name"]: row for row in data["rows"]}


def test_a_run_leaves_the_report_and_report_rebuilds_it_without_evaluating(make_dataset, tmp_path):
    data, output = make_dataset(2), tmp_path / "out"
    (data / "actors" / "0009_empty" / "training_data").mkdir(parents=True)
    run = run_cli("--all", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = _rows(output)
    assert {name: row["state"] for name, row in rows.items()} == {
        "0000_actor": "balanced",
        "0001_actor": "balanced",
        "0009_empty": "skipped",
    }
    thumbs = sorted((output / "report" / "thumbs").rglob("*.jpg"))
    assert len(thumbs) == 40
    actors_csv = (output / "report" / "actors.csv").read_text()
    assert [line["actor"] for line in csv.DictReader(io.StringIO(actors_csv))] == list(rows)
    evaluations = {path: path.stat().st_mtime_ns for path in output.glob("*_evaluation.json")}
    thumb_times = [path.stat().st_mtime_ns for path in thumbs]
    (output / "report" / "data" / "index.js").unlink()
    (output / "report" / "images.csv").unlink()
    rebuilt = run_cli("--report", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith("Report of 3 actors: ")
    assert _rows(output).keys() == rows.keys()
    assert _rows(output)["0009_empty"]["reason"] == "no training images"
    assert {path: path.stat().st_mtime_ns for path in evaluations} == evaluations
    assert [path.stat().st_mtime_ns for path in thumbs] == thumb_times  # reused, not redone
    images_csv = (output / "report" / "images.csv").read_text()
    assert len(list(csv.DictReader(io.StringIO(images_csv)))) == 40


def test_report_of_a_folder_without_results_is_one_line(tmp_path):
    result = run_cli("--report", "--output-dir", tmp_path / "nothing", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no results to report" in result.stderr


def test_show_progress_json_is_one_object(make_dataset, tmp_path):
    data, output = make_dataset(2), tmp_path / "out"
    before = run_cli("--show-progress", "--json", "--output-dir", output, cwd=tmp_path)
    assert json.loads(before.stdout) is None
    run_cli("--all", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    result = run_cli("--show-progress", "--json", "--output-dir", output, cwd=tmp_path)
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    progress = read_progress(output)
    assert summary["total"] == progress["total_count"] == 2
    assert (summary["completed"], summary["failed"], summary["remaining"]) == (2, 0, 0)
    assert summary["percent_complete"] == 100.0
    assert summary["started_at"] == progress["started_at"]


def test_json_goes_with_show_progress_only(tmp_path):
    result = run_cli("--stats", "--json", "--data-dir", tmp_path, cwd=tmp_path)
    assert result.returncode == 2
    assert "--json goes with --show-progress" in result.stderr


def test_the_restore_command_on_an_actor_page_puts_the_images_back(tmp_path):
    """Copied from the page into any shell: a name starting with '-', the run's own folders."""
    data, output = tmp_path / "data", tmp_path / "out"
    name = "-dash"
    kinds = mix_kinds((("photorealistic", 15), ("bw_stylized", 4), ("color_stylized", 3)))
    training = write_actor(data, name, kinds)
    before = sorted(path.name for path in training.iterdir())
    run = run_cli("--all", "--execute", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert len(list(training.glob("*.jpg"))) == 20
    page = next((output / "report" / "actors").glob("*.html")).read_text()
    command = html.unescape(re.search(r'<pre class="restore">(.*?)</pre>', page).group(1))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    restored = run_cli(*shlex.split(command)[1:], cwd=elsewhere)
    assert restored.returncode == 0, restored.stderr
    assert sorted(path.name for path in training.iterdir()) == before
    assert list(elsewhere.iterdir()) == []  # the run's own output folder, its own lock


def test_a_missing_thumbnail_is_not_called_unreadable(make_dataset, tmp_path):
    data, output = make_dataset(1), tmp_path / "out"
    run = run_cli("--all", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    shutil.rmtree(output / "report" / "thumbs")
    rebuilt = run_cli("--report", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    page = next((output / "report" / "actors").glob("*.html")).read_text()
    assert ">unreadable<" not in page
    assert page.count(">no thumbnail<") == 20


def test_a_report_path_that_is_not_a_folder_is_one_line_not_a_traceback(make_dataset, tmp_path):
    data, output = make_dataset(1), tmp_path / "out"
    output.mkdir()
    (output / "report").write_text("not a folder")
    for action in (("--report",), ("--all",)):
        result = run_cli(*action, "--data-dir", data, "--output-dir", output, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and str(output / "report") in result.stderr
    assert (output / "report").read_text() == "not a folder"


def test_a_file_name_that_is_not_utf8_is_evaluated_and_reported(make_dataset, tmp_path):
    data, output = make_dataset(1), tmp_path / "out"
    training = data / "actors" / "0000_actor" / "training_data"
    (training / "manifest.json").unlink()
    os.rename(training / "0000_actor_1.jpg", os.fsencode(training) + b"/bad\xff name_1.jpg")
    run = run_cli("--all", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    document = json.loads((output / "0000_actor_evaluation.json").read_bytes())
    assert os.fsdecode(b"bad\xff name_1.jpg") in [i["filename"] for i in document["images"]]
    assert _rows(output)["0000_actor"]["images"] == 20
    images_csv = (output / "report" / "images.csv").read_bytes()
    assert images_csv.count(b"\n") == 21


def test_an_actor_folder_name_that_is_not_utf8_is_processed_and_recorded(make_dataset, tmp_path):
    data, output = make_dataset(2), tmp_path / "out"
    actors = os.fsencode(data / "actors")
    os.rename(actors + b"/0000_actor", actors + b"/0000_bad\xff")
    run = run_cli("--all", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    progress = json.loads((output / "progress.json").read_bytes())
    assert os.fsdecode(b"0000_bad\xff") in progress["completed_actors"]
    assert _rows(output)[os.fsdecode(b"0000_bad\xff")]["images"] == 20
    again = run_cli("--all", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert again.returncode == 0 and "Nothing left to do" in again.stdout


# --- hostile files where the report reads ---------------------------------------------------------

NESTED = "[" * 1000 + "]" * 1000
OVER_ONE_MIB = "2,097,152 bytes is over the 1,048,576-byte limit (limits.max_file_mib)"


def capped_config(tmp_path) -> Path:
    config = tmp_path / "capped.toml"
    config.write_text("[limits]\nmax_file_mib = 1\n")
    return config


def test_report_over_hostile_evaluations_leaves_each_out_with_one_line(make_dataset, tmp_path):
    """A FIFO, a nested, an oversize and an odd evaluation JSON: one warning each, the rest
    reported."""
    data, output, config = make_dataset(5), tmp_path / "out", capped_config(tmp_path)
    run = run_cli(
        "--all", "--data-dir", data, "--output-dir", output, "--config", config, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    fifo, nested, huge = (output / f"000{n}_actor_evaluation.json" for n in range(3))
    fifo.unlink()
    os.mkfifo(fifo)
    nested.write_text('{"actor": "0001_actor", "x": ' + NESTED + "}")
    huge.write_text(huge.read_text().ljust(2 * 1024 * 1024))  # still valid JSON
    odd = output / "0003_actor_evaluation.json"
    odd.write_text('{"actor": "0003_actor", "images": 5}')

    report = run_cli(
        "--report",
        "--data-dir",
        data,
        "--output-dir",
        output,
        "--config",
        config,
        cwd=tmp_path,
        timeout=60,  # a FIFO read would block forever
    )

    assert report.returncode == 0, report.stderr
    assert "Traceback" not in report.stderr
    assert report.stdout.startswith("Report of 1 actors: ")
    assert list(_rows(output)) == ["0004_actor"]
    assert report.stderr.splitlines() == [
        f"cannot read {path} ({reason}): the report shows no evaluation of {actor}"
        for path, reason, actor in (
            (fifo, "not a regular file (a FIFO)", "0000_actor"),
            (nested, "nested more than 64 levels deep", "0001_actor"),
            (huge, OVER_ONE_MIB, "0002_actor"),
            (odd, "not an evaluation this tool wrote", "0003_actor"),
        )
    ]


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _nested_index(path: Path) -> None:
    path.write_text(f"window.REVIEW_DATA = {NESTED};")


def _oversize_index_with_a_ghost(path: Path) -> None:
    """Valid data (a row for an actor without results, which only this file knows), 2 MiB."""
    text = path.read_text()
    ghost = text.replace('"0000_actor"', '"0099_ghost"').split('"rows": [\n', 1)[1].split("\n")[0]
    text = text.replace('"rows": [\n', '"rows": [\n' + ghost + ",\n", 1)
    path.write_text(text.ljust(2 * 1024 * 1024))


HOSTILE_SITE_FILES = {
    "index.js a FIFO": ("data/index.js", _fifo, "not a regular file (a FIFO)"),
    "images.csv a FIFO": ("images.csv", _fifo, "not a regular file (a FIFO)"),
    "index.js nested": ("data/index.js", _nested_index, "nested more than 64 levels deep"),
    "index.js oversize": ("data/index.js", _oversize_index_with_a_ghost, OVER_ONE_MIB),
}


@pytest.mark.parametrize(
    ("name", "spoil", "reason"), HOSTILE_SITE_FILES.values(), ids=HOSTILE_SITE_FILES.keys()
)
def test_a_run_over_hostile_report_data_rebuilds_it_with_one_line(
    make_dataset, tmp_path, name, spoil, reason
):
    data, output, config = make_dataset(1), tmp_path / "out", capped_config(tmp_path)
    args = ("--all", "--data-dir", data, "--output-dir", output, "--config", config)
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    spoil(output / "report" / name)

    again = run_cli(*args, "--no-resume", cwd=tmp_path, timeout=60)  # never blocks on a FIFO

    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert [line for line in again.stderr.splitlines() if "report" in line] == [
        f"WARNING training_data.review_site: cannot use {output / 'report' / name} ({reason}): "
        "the report is rebuilt from the evaluation JSONs"
    ]
    assert list(_rows(output)) == ["0000_actor"]
    assert (output / "report" / "images.csv").read_text().count("\n") == 21


def test_report_replaces_an_index_page_that_is_a_fifo(make_dataset, tmp_path):
    data, output = make_dataset(1), tmp_path / "out"
    run = run_cli("--all", "--data-dir", data, "--output-dir", output, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    page = output / "report" / "index.html"
    expected = page.read_bytes()
    _fifo(page)

    report = run_cli(
        "--report", "--data-dir", data, "--output-dir", output, cwd=tmp_path, timeout=60
    )

    assert report.returncode == 0, report.stderr
    assert "Traceback" not in report.stderr
    assert page.read_bytes() == expected
