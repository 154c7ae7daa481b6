"""Mistakes caught before they cost images: each broken input gets one line and its exit code."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_command, cli_env, read_progress, run_cli

EXIT_OK, EXIT_ACTOR_FAILED, EXIT_USAGE = 0, 1, 2


def image_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*.jpg")}


def test_a_misspelt_category_stops_before_anything_moves(make_dataset, tmp_path):
    data_dir = make_dataset(
        2, mix=(("photorealistic", 13), ("bw_stylized", 6), ("color_stylized", 3))
    )
    before = image_files(data_dir)
    config = tmp_path / "typo.toml"
    config.write_text(
        "[target.mix]\nphotorealistic = 0.65\nbw_stylised = 0.20\ncolor_stylized = 0.15\n"
    )
    out = tmp_path / "out"
    args = ("--data-dir", data_dir, "--output-dir", out, "--config", config)
    result = run_cli("--all", "--execute", *args, cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert "target.mix.bw_stylised" in result.stderr
    assert "did you mean bw_stylized?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert image_files(data_dir) == before
    assert not (out / "progress.json").exists()


def test_folders_without_training_data_are_counted_and_one_is_shown(make_dataset, tmp_path):
    data_dir = make_dataset(1)
    for name in ("jane", "john"):
        (data_dir / "actors" / name).mkdir()
        (data_dir / "actors" / name / f"{name}1.jpg").write_bytes(
            b"an image put in the wrong place"
        )
    result = run_cli("--all", "--data-dir", data_dir, "--output-dir", tmp_path / "o", cwd=tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    notice = [line for line in result.stderr.splitlines() if "training_data" in line]
    assert len(notice) == 1
    assert "2 folders in" in notice[0] and "jane/ (holds jane1.jpg)" in notice[0]
    assert "expected layout: " in notice[0] and "<actor>/training_data/<images>" in notice[0]
    assert read_progress(tmp_path / "o")["total_count"] == 1


@pytest.mark.parametrize("layout", ["folders", "files"])
def test_no_actor_while_actors_holds_something_is_an_error(tmp_path, layout):
    actors = tmp_path / "data" / "actors"
    actors.mkdir(parents=True)
    if layout == "folders":
        (actors / "jane").mkdir()
        (actors / "jane" / "jane1.jpg").write_bytes(b"x")
    else:
        (actors / "jane1.jpg").write_bytes(b"x")
    out = tmp_path / "out"
    result = run_cli("--all", "--data-dir", tmp_path / "data", "--output-dir", out, cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert "Nothing left to do" not in result.stdout
    assert "no actors in" in result.stderr and "jane" in result.stderr
    assert "<actor>/training_data/<images>" in result.stderr
    assert not (out / "progress.json").exists()


def test_an_empty_actors_folder_is_still_nothing_to_do(tmp_path):
    (tmp_path / "data" / "actors").mkdir(parents=True)
    out = tmp_path / "out"
    result = run_cli("--all", "--data-dir", tmp_path / "data", "--output-dir", out, cwd=tmp_path)
    assert result.returncode == EXIT_OK, result.stderr


def read_only_folder() -> Path:
    """A folder no one may write to, root included (this suite runs as root): sysfs."""
    folder = Path("/sys/fs")
    try:
        (folder / ".write-test").touch()
    except OSError:
        return folder
    pytest.skip("no read-only folder on this system")


@pytest.mark.parametrize("kind", ["file", "under_a_file", "read_only"])
def test_an_unusable_output_folder_is_one_line_and_exit_2(make_dataset, tmp_path, kind):
    data_dir = make_dataset(1)
    (tmp_path / "a_file").write_text("not a folder")
    output = {
        "file": tmp_path / "a_file",
        "under_a_file": tmp_path / "a_file" / "out",
        "read_only": read_only_folder() if kind == "read_only" else None,
    }[kind]
    for action in (("--all",), ("--actor-id", "0000"), ("--restore", "0000")):
        result = run_cli(*action, "--data-dir", data_dir, "--output-dir", output, cwd=tmp_path)
        assert result.returncode == EXIT_USAGE, (action, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert str(output) in result.stderr and "--output-dir" in result.stderr


# --- a reader that goes away --------------------------------------------------------------------


def test_a_closed_stdout_keeps_progress_and_the_actor_in_flight_pending(make_dataset, tmp_path):
    data_dir = make_dataset(4)
    out = tmp_path / "out"
    args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", "1")  # in order
    process = subprocess.Popen(
        cli_command(*args),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    for line in process.stdout:  # like `| head`: read a little, then go away
        if "Processing actor 2/4" in line:
            break
    process.stdout.close()
    stderr = process.stderr.read()
    code = process.wait(timeout=60)
    assert code == -signal.SIGPIPE, stderr  # a shell reports 141, as for `yes | head`
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    progress = read_progress(out)
    assert progress["current_actor"] is None
    assert 1 <= progress["completed_count"] < 4
    done = list(progress["completed_actors"])
    assert done == [f"{index:04d}_actor" for index in range(len(done))]

    resumed = run_cli(*args, cwd=tmp_path)
    assert resumed.returncode == EXIT_OK, resumed.stderr
    assert all(f"Processing actor {i}/4" not in resumed.stdout for i in range(1, len(done) + 1))
    assert read_progress(out)["completed_count"] == 4


@pytest.mark.parametrize("action", [("--show-progress",), ("--stats",)])
def test_a_reader_gone_before_the_first_line_is_no_traceback(make_dataset, tmp_path, action):
    data_dir = make_dataset(2)
    out = tmp_path / "out"
    run_cli("--all", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path)
    reader, writer = subprocess_pipe()
    reader.close()  # nobody will ever read
    result = subprocess.run(
        cli_command(*action, "--data-dir", data_dir, "--output-dir", out),
        cwd=tmp_path,
        stdout=writer,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    writer.close()
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert result.returncode == -signal.SIGPIPE, result.stderr


def subprocess_pipe():
    read_fd, write_fd = os.pipe()
    return os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")


# --- every action against broken inputs ---------------------------------------------------------

ACTIONS = {
    "all": ("--all",),
    "execute": ("--all", "--execute"),
    "actor": ("--actor-id", "0000"),
    "show": ("--show-progress",),
    "reset": ("--reset-progress",),
    "restore": ("--restore", "0000"),
    "restore_all": ("--restore", "--all"),
    "stats": ("--stats",),
    "report": ("--report",),  # no results exist in these tables: always exit 2
}
READS_DATA = {"all", "execute", "actor", "restore", "restore_all", "stats"}
READS_CONFIG = set(ACTIONS)  # every action reads --config first


def broken_inputs(root: Path, data_dir: Path) -> dict[str, tuple[list[str], set[str]]]:
    """name -> (arguments, the actions it must stop with exit 2); the others must not trace."""
    (root / "a_file").write_text("x")
    wrong = root / "wrong_layout"
    (wrong / "actors" / "jane").mkdir(parents=True)
    (wrong / "actors" / "jane" / "jane1.jpg").write_bytes(b"x")
    (root / "typo.toml").write_text("[target.mix]\nphoto = 0.5\nbw_stylised = 0.5\n")
    (root / "bad.toml").write_text("[target\n")
    (root / "listing").mkdir()
    shutil.copytree(data_dir / "actors", root / "listing" / "actors")
    (root / "listing" / "actorsData.json").write_text('[{"name": "../../etc"}]')
    out = ["--output-dir", str(root / "out")]
    return {
        "missing data": (["--data-dir", str(root / "nowhere"), *out], READS_DATA),
        "data is a file": (["--data-dir", str(root / "a_file"), *out], READS_DATA),
        "no actors folder": (["--data-dir", str(root), *out], READS_DATA),
        "images in actors/": (["--data-dir", str(wrong), *out], READS_DATA),
        "hostile listing": (["--data-dir", str(root / "listing"), *out], READS_DATA),
        "output is a file": (
            ["--data-dir", str(data_dir), "--output-dir", str(root / "a_file")],
            set(ACTIONS) - {"stats"},
        ),
        "output under a file": (
            ["--data-dir", str(data_dir), "--output-dir", str(root / "a_file" / "out")],
            set(ACTIONS) - {"stats"},
        ),
        "category typo": (
            ["--data-dir", str(data_dir), *out, "--config", str(root / "typo.toml")],
            READS_CONFIG,
        ),
        "config not toml": (
            ["--data-dir", str(data_dir), *out, "--config", str(root / "bad.toml")],
            READS_CONFIG,
        ),
        "missing config": (
            ["--data-dir", str(data_dir), *out, "--config", str(root / "none.toml")],
            READS_CONFIG,
        ),
    }


def test_every_action_meets_broken_inputs_with_one_line_and_its_code(make_dataset, tmp_path):
    data_dir = make_dataset(1)
    seen = 0
    for name, (arguments, stopped) in broken_inputs(tmp_path, data_dir).items():
        for action, flags in ACTIONS.items():
            result = run_cli(*flags, *arguments, cwd=tmp_path, timeout=60)
            where = f"{action} with {name}: {result.stdout}{result.stderr}"
            assert "Traceback" not in result.stdout + result.stderr, where
            if action in stopped or action == "report":
                assert result.returncode == EXIT_USAGE, where
                assert len(result.stderr.strip().splitlines()) == 1, where
            else:
                assert result.returncode in (EXIT_OK, EXIT_ACTOR_FAILED), where
            seen += 1
    assert seen == 10 * len(ACTIONS) == 90


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--restore",), "--restore needs an ACTOR, or --all"),
        (("--restore", "0000", "--all"), "not both"),
        (("--restore", "0000", "--execute"), "--restore goes with"),
        (("--all", "--run", "x"), "--run goes with --restore"),
        (("--restore", "0000", "--run", "../x"), "not a removal folder name"),
        (("--restore", "../../etc"), "no actor matches --restore '../../etc'"),
        (("--restore", "00"), "--restore '00' matches 2 actors"),
        (("--restore", "0000", "--run", "20990101T000000Z"), "--run 20990101T000000Z"),
        (("--restore", "--all", "--run", "20990101T000000Z"), "no actor has a removal folder"),
    ],
)
def test_restore_mistakes_name_the_flag_typed(make_dataset, tmp_path, args, fragment):
    data_dir = make_dataset(2)
    result = run_cli(*args, "--data-dir", data_dir, "--output-dir", tmp_path / "o", cwd=tmp_path)
    assert result.returncode == EXIT_USAGE
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_version_is_printed(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == EXIT_OK
    assert result.stdout.startswith("evaluate-and-balance ")
    assert result.stdout.split()[1][0].isdigit()


def test_a_quick_action_imports_no_heavy_library(make_dataset, tmp_path):
    """--help, --version, --show-progress and usage errors answer at once: they never load
    requests, Pillow, tqdm or an evaluator (the figures: scripts/bench_startup.py)."""
    probe = (
        "import sys\n"
        "from training_data.evaluate_and_balance import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('requests', 'PIL', 'tqdm', 'training_data.evaluation', 'training_data.dataset')\n"
        "print('HEAVY', [name for name in heavy if name in sys.modules], file=sys.stderr)\n"
    )
    out = tmp_path / "out"
    run_cli("--all", "--data-dir", make_dataset(1), "--output-dir", out, cwd=tmp_path)
    for args in (["--help"], ["--version"], ["--show-progress", "--output-dir", str(out)], []):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
        )
        assert "HEAVY []" in result.stderr, (args, result.stderr)


def test_restore_all_puts_every_actor_back_with_a_summary(make_dataset, tmp_path):
    data_dir = make_dataset(
        3, mix=(("photorealistic", 16), ("bw_stylized", 6), ("color_stylized", 3))
    )
    before = image_files(data_dir)
    out = tmp_path / "out"
    folders = ("--data-dir", data_dir, "--output-dir", out)
    executed = run_cli("--all", "--execute", *folders, cwd=tmp_path)
    assert executed.returncode == EXIT_OK, executed.stderr
    moved = sorted((data_dir / "actors").glob("*/removed_training_data/*/*.jpg"))
    assert len(moved) == 15
    restored = run_cli("--restore", "--all", *folders, cwd=tmp_path)
    assert restored.returncode == EXIT_OK, restored.stderr
    assert "RESTORE SUMMARY" in restored.stdout
    assert "Images put back: 15 (in 3 actors)" in restored.stdout
    assert restored.stdout.count("restored 5 image(s)") == 3
    assert image_files(data_dir) == before
    assert not list((data_dir / "actors").glob("*/removed_training_data/*/*.jpg"))
    for manifest in (data_dir / "actors").glob("*/training_data/manifest.json"):
        assert "removed_images" not in json.loads(manifest.read_text())
    again = run_cli("--restore", "--all", *folders, cwd=tmp_path)
    assert again.returncode == EXIT_OK
    assert again.stdout.count("nothing left to restore") == 3
    assert "Images put back: 0 (in 0 actors)" in again.stdout
