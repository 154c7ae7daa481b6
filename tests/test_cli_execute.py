"""--execute and --restore through the CLI: nothing lost, even when killed at random."""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    REPLICATE_TOKEN,
    draw_image,
    gated_server,
    read_progress,
    run_cli,
    settled_removal,
    start_cli,
)

from training_data.config import Config
from training_data.dataset import find_actors
from training_data.pipeline import RunContext, process_actor

OVER = (("photorealistic", 16), ("bw_stylized", 6), ("color_stylized", 3))
UNDER_STYLIZED = (("photorealistic", 13), ("bw_stylized", 2), ("color_stylized", 1))
UNDER_PHOTOS = (("photorealistic", 10), ("bw_stylized", 4), ("color_stylized", 3))


def file_hashes(actor_dir: Path) -> dict[str, str]:
    """sha256 -> relative path of every file under the actor (manifests and journals aside)."""
    hashes = {}
    for path in sorted(actor_dir.rglob("*")):
        if path.is_file() and path.suffix != ".json":
            hashes[hashlib.sha256(path.read_bytes()).hexdigest()] = str(path.relative_to(actor_dir))
    return hashes


def add_captions(training_dir: Path, every: int = 3) -> None:
    for index, image in enumerate(sorted(training_dir.glob("*.jpg"))):
        if index % every == 0:
            image.with_suffix(".txt").write_text(f"caption of {image.name}")


def build(make_dataset, tmp_path: Path) -> Path:
    make_dataset(1, OVER, start=0)
    make_dataset(1, UNDER_STYLIZED, start=1)
    data_dir = make_dataset(1, UNDER_PHOTOS, start=2)
    for training in (data_dir / "actors").glob("*/training_data"):
        add_captions(training)
    return data_dir


def check_nothing_lost(
    data_dir: Path, before: dict[str, dict[str, str]], *, settled: bool = True
) -> None:
    """Every file still somewhere; once recovery has run (``settled``), the manifest agrees.

    Right after a kill an unsettled removal journal may still name files the manifest lists:
    the next run's recovery finishes it, so the manifest is only checked once settled.
    """
    for name, hashes in before.items():
        actor_dir = data_dir / "actors" / name
        after = file_hashes(actor_dir)
        missing = set(hashes) - set(after)
        assert not missing, f"{name} lost {[hashes[h] for h in missing]}"
        for relative in after.values():
            path = actor_dir / relative
            if path.suffix == ".txt":
                assert any(path.with_suffix(s).exists() for s in (".jpg", ".png")), path
        if not settled:
            continue
        manifest = json.loads((actor_dir / "training_data" / "manifest.json").read_text())
        for filename in manifest["images"]:
            assert (actor_dir / "training_data" / filename).is_file(), filename
            assert not list((actor_dir / "removed_training_data").glob(f"*/{filename}"))


def test_execute_killed_at_random_then_resumed_converges(make_dataset, tmp_path):
    data_dir = build(make_dataset, tmp_path)
    names = sorted(p.name for p in (data_dir / "actors").iterdir())
    before = {name: file_hashes(data_dir / "actors" / name) for name in names}
    out = tmp_path / "out"
    args = ("--all", "--execute", "--data-dir", data_dir, "--output-dir", out)
    rng = random.Random(3)
    for _ in range(6):
        process = start_cli(*args, cwd=tmp_path)
        time.sleep(rng.uniform(0.5, 3.0))
        process.kill()
        process.communicate(timeout=10)
        check_nothing_lost(data_dir, before, settled=False)
    final = run_cli(*args, cwd=tmp_path)
    assert final.returncode == 0, final.stdout + final.stderr
    assert read_progress(out)["completed_count"] == 3
    check_nothing_lost(data_dir, before)

    over = json.loads((out / "0000_actor_evaluation.json").read_text())
    if "execution" in over:  # not yet applied when a kill came after its own completion
        assert over["execution"]["after"]["is_balanced"] is True
    counts = actor_counts(data_dir / "actors" / "0000_actor")
    assert counts == {"photorealistic": 13, "bw_stylized": 4, "color_stylized": 3}
    counts = actor_counts(data_dir / "actors" / "0001_actor")
    assert counts == {"photorealistic": 13, "bw_stylized": 4, "color_stylized": 3}
    # The local generator cannot make photos: 0002 aims at the best reachable mix, 10/3/2.
    counts = actor_counts(data_dir / "actors" / "0002_actor")
    assert counts == {"photorealistic": 10, "bw_stylized": 3, "color_stylized": 2}
    states = read_progress(out)["actor_states"]
    assert states["0002_actor"] == "short"
    # balanced when a kill came after its execute but before its completion was recorded
    assert {states["0000_actor"], states["0001_actor"]} <= {"rebalanced", "balanced"}


@pytest.mark.parametrize("workers", [1, 2])
def test_an_execute_stopped_after_moving_files_is_recorded_by_the_next_run(
    make_dataset, tmp_path, workers, replicate_gate
):
    """Stopped after an actor's files moved and before it was recorded (its generation is held
    by the stand-in server): the next run records it as rebalanced, with what was moved where
    and what it generated (in this process or in worker processes)."""
    config, arrived, gate = replicate_gate
    data_dir = make_dataset(
        workers, (("photorealistic", 18), ("bw_stylized", 2), ("color_stylized", 5))
    )
    actor_dirs, out = sorted((data_dir / "actors").iterdir()), tmp_path / "out"
    args = ("--all", "--execute", "--config", config, "--data-dir", data_dir, "--output-dir", out)
    token = {"REPLICATE_API_TOKEN": REPLICATE_TOKEN}
    process = start_cli(*args, "--workers", workers, cwd=tmp_path, extra_env=token)
    try:
        assert arrived.wait(120), "no generation was ever asked for"
        process.send_signal(signal.SIGINT)
        output, errors = process.communicate(timeout=60)
    finally:
        gate.set()
    assert process.returncode == 130, output + errors
    recorded = set(read_progress(out)["completed_actors"])
    stopped = {
        actor_dir: journal
        for actor_dir in actor_dirs
        if (journal := settled_removal(actor_dir)) and actor_dir.name not in recorded
    }
    assert stopped, "every actor with moved files was recorded"
    unrecorded = [d.name for d in actor_dirs if d.name not in recorded]

    result = run_cli(*args, "--workers", workers, cwd=tmp_path, extra_env=token)
    assert result.returncode == 0, result.stdout + result.stderr
    for actor_dir, journal in stopped.items():
        document = json.loads((out / f"{actor_dir.name}_evaluation.json").read_text())
        assert document["state"] == "rebalanced", document["state_reason"]
        assert read_progress(out)["actor_states"][actor_dir.name] == "rebalanced"
        moved = {entry["filename"]: entry["moved_to"] for entry in document["execution"]["removed"]}
        assert moved == {
            removal["filename"]: f"removed_training_data/{journal['run']}/{removal['filename']}"
            for removal in journal["removals"]
        }
        assert all((actor_dir / path).is_file() for path in moved.values())
        assert len(document["execution"]["generated"]) == 2
        assert actor_counts(actor_dir) == {
            "photorealistic": 13,
            "bw_stylized": 4,
            "color_stylized": 3,
        }
    assert "  state: balanced\n" not in result.stdout
    documents = [json.loads((out / f"{name}_evaluation.json").read_text()) for name in unrecorded]
    removed = sum(len(document["execution"]["removed"]) for document in documents)
    assert f"  Images removed: {removed}\n" in result.stdout
    assert not list(out.glob("*_execute_started.json"))
    assert not any(
        REPLICATE_TOKEN in text for text in (output, errors, result.stdout, result.stderr)
    )


def test_an_actor_written_but_never_recorded_is_recorded_as_rebalanced_by_the_next_run(
    make_dataset, tmp_path
):
    """A stop after the actor's JSON was written and before the runner recorded it (a window a
    signal can hit): the execute-started marker stays, so the next run records what was moved
    instead of finding the set balanced and writing over the record."""
    data_dir = make_dataset(1, OVER)
    out = tmp_path / "out"
    out.mkdir()
    context = RunContext.create(Config(), out, execute=True, data_dir=data_dir)
    outcome = process_actor(find_actors(data_dir)[0], context)  # what a worker does; no record
    assert outcome.state == "rebalanced"
    moved = outcome.execution.removed
    assert moved and (out / "0000_actor_execute_started.json").exists()

    args = ("--all", "--execute", "--data-dir", data_dir, "--output-dir", out)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "  state: rebalanced\n" in result.stdout
    document = json.loads((out / "0000_actor_evaluation.json").read_text())
    assert document["state"] == "rebalanced"
    assert len(document["execution"]["removed"]) == len(moved)
    assert read_progress(out)["actor_states"]["0000_actor"] == "rebalanced"
    assert not (out / "0000_actor_execute_started.json").exists()


def actor_counts(actor_dir: Path) -> dict[str, int]:
    manifest = json.loads((actor_dir / "training_data" / "manifest.json").read_text())
    counts: dict[str, int] = {}
    for entry in manifest["images"].values():
        counts[entry["type"]] = counts.get(entry["type"], 0) + 1
    return counts


def test_execute_reports_then_restore_puts_everything_back(make_dataset, tmp_path):
    data_dir = build(make_dataset, tmp_path)
    actor_dir = data_dir / "actors" / "0000_actor"
    training = actor_dir / "training_data"
    original_files = {p.name: p.read_bytes() for p in training.iterdir()}
    original_manifest = json.loads((training / "manifest.json").read_text())
    out = tmp_path / "out"
    result = run_cli(
        "--all", "--execute", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    # 0002 has 10 photos the local generator cannot add to: it aims at 10/3/2 of 15 instead.
    assert "Images removed: 7" in result.stdout  # 0000: 3 photos, 2 bw; 0002: 1 bw, 1 colour
    assert "Images generated: 4" in result.stdout  # 0001: 2 bw + 2 colour
    assert "Images not generated (unfulfilled): 0" in result.stdout
    assert "  Short: 1\n" in result.stdout
    document = json.loads((out / "0002_actor_evaluation.json").read_text())
    assert document["execution"]["unfulfilled"] == {}
    assert document["execution"]["after"]["counts"] == document["planned_counts"]
    assert document["state"] == "short"
    assert document["state_reason"].startswith(
        "photorealistic: 3 short, the local generator cannot make them"
    )

    assert len(list(training.glob("*.jpg"))) == 20
    removed = list((actor_dir / "removed_training_data").glob("*/*.jpg"))
    assert len(removed) == 5
    restored = run_cli(
        "--restore", "0000", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path
    )
    assert restored.returncode == 0, restored.stderr
    assert "restored 5 image(s)" in restored.stdout
    assert {p.name: p.read_bytes() for p in training.iterdir() if p.name != "manifest.json"} == {
        name: data for name, data in original_files.items() if name != "manifest.json"
    }
    manifest = json.loads((training / "manifest.json").read_text())
    assert manifest["images"] == original_manifest["images"]
    again = run_cli("--restore", "0000", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path)
    assert again.returncode == 0
    assert "nothing left to restore" in again.stdout


def test_restore_all_of_one_run_fails_only_the_actor_whose_journal_is_corrupt(
    make_dataset, tmp_path
):
    data_dir = build(make_dataset, tmp_path)
    out = tmp_path / "out"
    executed = run_cli(
        "--all", "--execute", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path
    )
    assert executed.returncode == 0, executed.stderr
    removed = {
        name: data_dir / "actors" / name / "removed_training_data"
        for name in ("0000_actor", "0002_actor")
    }
    [run] = [folder.name for folder in removed["0002_actor"].iterdir()]
    (removed["0000_actor"] / run / "removal.json").write_text("{bad")  # the first actor
    restored = run_cli(
        "--restore",
        "--all",
        "--run",
        run,
        "--data-dir",
        data_dir,
        "--output-dir",
        out,
        cwd=tmp_path,
    )
    assert "Traceback" not in restored.stderr
    assert restored.returncode == 1, restored.stderr
    assert "0000_actor: FAILED" in restored.stdout
    assert not list(removed["0002_actor"].glob("*/*.jpg"))  # the other actor was restored


def test_hostile_manifest_path_fails_only_that_actor(make_dataset, tmp_path):
    data_dir = make_dataset(2)
    manifest_path = data_dir / "actors" / "0001_actor" / "training_data" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["images"]["../../escape.jpg"] = {
        "type": "photorealistic",
        "url": "http://127.0.0.1:9/x",
    }
    manifest_path.write_text(json.dumps(manifest))
    before = file_hashes(data_dir / "actors" / "0001_actor")
    out = tmp_path / "out"
    result = run_cli(
        "--all", "--execute", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path
    )
    assert result.returncode == 1
    progress = read_progress(out)
    assert progress["completed_actors"] == ["0000_actor"]
    assert "escape.jpg" in progress["failed_actors"][0]["error"]
    assert file_hashes(data_dir / "actors" / "0001_actor") == before
    assert not (data_dir / "escape.jpg").exists()


# --- two writers over one dataset ---------------------------------------------------------------


class GateHandler(BaseHTTPRequestHandler):
    """Serves an image once the test opens the gate; tells the test a request has arrived."""

    arrived: threading.Event
    gate: threading.Event

    def do_GET(self) -> None:
        self.arrived.set()
        self.gate.wait(60)
        buffer = io.BytesIO()
        draw_image("photorealistic", 99).save(buffer, "JPEG")
        self.send_response(200)
        self.send_header("Content-Length", str(len(buffer.getvalue())))
        self.end_headers()
        self.wfile.write(buffer.getvalue())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gate_server() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    with gated_server(GateHandler) as (port, arrived, gate):
        yield f"http://127.0.0.1:{port}/x.jpg", arrived, gate


def test_a_second_writer_over_the_same_dataset_is_refused_naming_the_holder(
    make_dataset, tmp_path, gate_server
):
    """Two execute runs with different --output-dir once left actors at 21-22 images."""
    url, arrived, gate = gate_server
    make_dataset(1, OVER, start=1)
    data_dir = make_dataset(1, UNDER_STYLIZED, urls_for={0: {"0000_actor_99.jpg": url}})
    first = start_cli(
        "--all", "--execute", "--data-dir", data_dir, "--output-dir", tmp_path / "one", cwd=tmp_path
    )
    try:
        assert arrived.wait(60), "the first run should be downloading"
        refused = [
            run_cli(*action, "--data-dir", data_dir, "--output-dir", tmp_path / out, cwd=tmp_path)
            for action, out in (
                (("--all", "--execute"), "two"),
                (("--actor-id", "0001_actor", "--execute"), "three"),
                (("--restore", "0001_actor"), "four"),
                (("--all",), "five"),
                (("--actor-id", "0001_actor"), "six"),
            )
        ]
    finally:
        gate.set()
    output, errors = first.communicate(timeout=120)
    assert first.returncode == 0, output + errors

    for result in refused:
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith(
            f"evaluate-and-balance: error: another run is using the dataset in {data_dir} "
            f"(pid {first.pid} on "
        )
        assert "command: evaluate-and-balance --all --execute" in result.stderr
        assert str(data_dir / "actors" / ".evaluate_and_balance.lock") in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "two" / "progress.json").exists()
    for name in ("0000_actor", "0001_actor"):
        assert sum(actor_counts(data_dir / "actors" / name).values()) == 20
    assert (
        run_cli(
            "--all",
            "--execute",
            "--data-dir",
            data_dir,
            "--output-dir",
            tmp_path / "two",
            cwd=tmp_path,
        ).returncode
        == 0
    )  # the holder's lock went with it


def test_dry_runs_go_side_by_side_but_not_beside_an_execute(make_dataset, tmp_path, gate_server):
    url, arrived, gate = gate_server
    make_dataset(1, OVER, start=1)
    data_dir = make_dataset(1, UNDER_STYLIZED, urls_for={0: {"0000_actor_99.jpg": url}})
    first = start_cli(
        "--all", "--data-dir", data_dir, "--output-dir", tmp_path / "one", cwd=tmp_path
    )
    try:
        assert arrived.wait(60), "the dry-run should be downloading"
        beside = run_cli(
            "--actor-id",
            "0001",
            "--data-dir",
            data_dir,
            "--output-dir",
            tmp_path / "two",
            cwd=tmp_path,
        )
        execute = run_cli(
            "--all",
            "--execute",
            "--data-dir",
            data_dir,
            "--output-dir",
            tmp_path / "three",
            cwd=tmp_path,
        )
    finally:
        gate.set()
    output, errors = first.communicate(timeout=120)

    assert first.returncode == 0, output + errors
    assert beside.returncode == 0, beside.stdout + beside.stderr
    assert execute.returncode == 2
    assert execute.stderr.startswith(
        f"evaluate-and-balance: error: another run is using the dataset in {data_dir} "
        f"(pid {first.pid} on "
    )
    assert "command: evaluate-and-balance --all --data-dir" in execute.stderr
    assert not (tmp_path / "three" / "progress.json").exists()


def test_a_dry_run_over_a_read_only_dataset_needs_no_lock(make_dataset, tmp_path):
    data_dir = make_dataset(1)
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    if subprocess.run(["mount", "--bind", "-o", "ro", data_dir, read_only]).returncode != 0:
        pytest.skip("needs the right to mount")
    try:
        result = run_cli(
            "--all", "--data-dir", read_only, "--output-dir", tmp_path / "out", cwd=tmp_path
        )
        execute = run_cli(
            "--all",
            "--execute",
            "--data-dir",
            read_only,
            "--output-dir",
            tmp_path / "x",
            cwd=tmp_path,
        )
    finally:
        subprocess.run(["umount", read_only], check=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert execute.returncode == 2
    assert "check the data folder is writable" in execute.stderr


# --- the configured file cap --------------------------------------------------------------------

ONE_MIB = 1024 * 1024
OVER_ONE_MIB = "2,097,152 bytes is over the 1,048,576-byte limit (limits.max_file_mib)"


def set_aside_by_hand(actor_dir: Path, run: str, *, padded_to: int = 0) -> str:
    """One image moved into ``removed_training_data/<run>`` with its journal, as execute leaves
    it; ``padded_to``: the journal is still valid JSON, padded with spaces to that size."""
    training = actor_dir / "training_data"
    manifest = json.loads((training / "manifest.json").read_text())
    filename = sorted(manifest["images"])[0]
    entry = manifest["images"].pop(filename)
    folder = actor_dir / "removed_training_data" / run
    folder.mkdir(parents=True)
    (training / filename).rename(folder / filename)
    removed_at = "2026-01-01T00:00:00+00:00"
    manifest["removed_images"] = {
        filename: entry
        | {"reason": "surplus", "removed_at": removed_at, "moved_to": "x", "run": run}
    }
    (training / "manifest.json").write_text(json.dumps(manifest))
    removal = {
        "number": 1,
        "filename": filename,
        "type": entry["type"],
        "reason": "surplus",
        "removed_at": removed_at,
        "files": [filename],
        "manifest_entry": entry,
    }
    journal = {
        "version": 1,
        "actor": actor_dir.name,
        "run": run,
        "created_at": removed_at,
        "state": "removed",
        "removals": [removal],
    }
    (folder / "removal.json").write_text(json.dumps(journal).ljust(padded_to))
    return filename


def capped_config(tmp_path: Path) -> Path:
    config = tmp_path / "capped.toml"
    config.write_text("[limits]\nmax_file_mib = 1\n")
    return config


@pytest.mark.parametrize(
    ("args", "exit_code"), [(("--restore", "--all"), 1), (("--all", "--execute"), 1)]
)
def test_a_removal_journal_over_the_configured_cap_fails_its_actor_alone(
    make_dataset, tmp_path, args, exit_code
):
    """limits.max_file_mib caps the journals execute and restore read, as it caps manifests."""
    data_dir = make_dataset(2)
    actors = data_dir / "actors"
    set_aside_by_hand(actors / "0000_actor", "20260101T000000Z", padded_to=2 * ONE_MIB)
    plain = set_aside_by_hand(actors / "0001_actor", "20260101T000000Z")
    out = tmp_path / "out"
    config = capped_config(tmp_path)

    run = run_cli(
        *args, "--data-dir", data_dir, "--output-dir", out, "--config", config, cwd=tmp_path
    )

    output = run.stdout + run.stderr
    assert run.returncode == exit_code, output
    assert "Traceback" not in output
    journal = actors / "0000_actor" / "removed_training_data" / "20260101T000000Z" / "removal.json"
    failure = f"removal journal {journal} is unreadable ({OVER_ONE_MIB}); move it aside"
    if args[0] == "--restore":
        assert f"0000_actor: FAILED: {failure}" in run.stdout.splitlines()
        assert (actors / "0001_actor" / "training_data" / plain).is_file()  # restored
    else:
        assert read_progress(out)["failed_actors"][0]["error"] == failure
        assert read_progress(out)["completed_actors"] == ["0001_actor"]
    assert journal.stat().st_size == 2 * ONE_MIB  # left as it was


def test_an_execute_marker_over_the_configured_cap_fails_its_actor_alone(make_dataset, tmp_path):
    data_dir = make_dataset(2)
    out = tmp_path / "out"
    out.mkdir()
    marker = out / "0000_actor_execute_started.json"
    marker.write_text(json.dumps({"runs": ["20260101T000000Z"]}).ljust(2 * ONE_MIB))
    config = capped_config(tmp_path)

    run = run_cli(
        "--all",
        "--execute",
        "--data-dir",
        data_dir,
        "--output-dir",
        out,
        "--config",
        config,
        cwd=tmp_path,
    )

    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    [failed] = read_progress(out)["failed_actors"]
    assert failed["error"] == f"{marker} is unreadable ({OVER_ONE_MIB}); move it aside"
    assert read_progress(out)["completed_actors"] == ["0001_actor"]
