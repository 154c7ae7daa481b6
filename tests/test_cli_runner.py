"""The batch runner as a user meets it: real subprocesses, real signals, real files."""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import (
    cli_command,
    cli_env,
    draw_image,
    read_progress,
    run_cli,
    start_cli,
    write_actor,
)

BANNER = re.compile(r"Processing actor (\d+)/(\d+): (\S+)")


class SlowImageServer:
    """Serves a JPEG for any path after ``delay`` seconds; ``status`` can make it fail."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.status: dict[str, int] = {}
        buffer = io.BytesIO()
        draw_image("photorealistic", 99).save(buffer, "JPEG", quality=90)
        self.body = buffer.getvalue()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(server.delay)
                code = server.status.get(self.path.rsplit("/", 1)[-1], 200)
                self.send_response(code)
                payload = server.body if code == 200 else b"nope"
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Content-Type", "image/jpeg" if code == 200 else "text/plain")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


@contextmanager
def slow_server(delay: float) -> Iterator[SlowImageServer]:
    server = SlowImageServer(delay)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


MIX = (("photorealistic", 12), ("bw_stylized", 4), ("color_stylized", 3))


def slow_dataset(root: Path, server: SlowImageServer, count: int, start: int = 0) -> Path:
    """Actors whose 20th image must be downloaded from the slow server: each takes ~delay."""
    data_dir = root / "data"
    for index in range(start, start + count):
        name = f"{index:04d}_actor"
        kinds = [kind for kind, n in MIX for _ in range(n)]
        write_actor(
            data_dir, name, kinds, urls={f"{name}_dl.jpg": server.url(f"{name}.jpg")}, seed=index
        )
    return data_dir


def wait_for_banner(process: subprocess.Popen, position: int, limit: float = 60) -> list[str]:
    """Read stdout until the banner of actor ``position`` shows; return the lines read."""
    lines: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = BANNER.search(line)
        if match and int(match.group(1)) >= position:
            return lines
    raise AssertionError(f"banner {position} never came:\n{''.join(lines)}")


def wait_for_started(output_dir: Path, count: int = 1, limit: float = 60) -> None:
    """Until progress.json shows ``count`` actors in flight (a pool prints banners at the end)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if len(read_progress(output_dir)["actors_in_flight"]) >= count:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{count} actors never in flight in {output_dir}")


def completed(output_dir: Path) -> list[str]:
    return read_progress(output_dir)["completed_actors"]


@pytest.fixture(params=[1, 3], ids=["1-worker", "3-workers"])
def workers(request) -> int:
    """The runner's promises hold in one process and with a pool of worker processes."""
    return request.param


def test_full_run_completes_every_actor(make_dataset, tmp_path, workers):
    data_dir = make_dataset(3)
    out = tmp_path / "out"
    args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", workers)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    progress = read_progress(out)
    assert sorted(progress["completed_actors"]) == ["0000_actor", "0001_actor", "0002_actor"]
    assert progress["total_count"] == 3 and progress["completed_count"] == 3
    assert progress["failed_count"] == 0 and progress["skipped_count"] == 0
    assert progress["mode"] == "dry_run"
    assert progress["current_actor"] is None and progress["actors_in_flight"] == []
    banners = [(int(m.group(1)), m.group(3)) for m in BANNER.finditer(result.stdout)]
    assert [number for number, _ in banners] == [1, 2, 3]  # counted in the order they finish
    assert sorted(name for _, name in banners) == ["0000_actor", "0001_actor", "0002_actor"]
    if workers == 1:
        assert "Processing actor 2/3: 0001_actor" in result.stdout
    assert "FINAL SUMMARY" in result.stdout and "Already balanced: 3" in result.stdout
    assert "Completed:   3 (100.0%)" in result.stdout
    for index in range(3):
        document = json.loads((out / f"{index:04d}_actor_evaluation.json").read_text())
        assert document["is_balanced"] is True
        assert (out / f"{index:04d}_actor_composite.jpg").is_file()
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0
    assert "Nothing left to do" in again.stdout
    assert "Processing actor" not in again.stdout


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_then_resume_processes_every_actor_once(tmp_path, signum, code, workers):
    with slow_server(0.8) as server:
        data_dir = slow_dataset(tmp_path, server, 8)
        out = tmp_path / "out"
        args = ("--all", "--dry-run", "--data-dir", data_dir, "--output-dir", out)
        args += ("--workers", workers)
        process = start_cli(*args, cwd=tmp_path)
        wait_for_banner(process, 4)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=15)
        assert process.returncode == code, stderr
        cause = "Interrupted by user (Ctrl+C)" if signum == signal.SIGINT else "SIGTERM"
        assert cause in stdout
        assert "PROGRESS SUMMARY" in stdout and "Gracefully stopped" in stdout
        first = completed(out)
        assert 3 <= len(first) <= 3 + workers  # those finished by the time the signal came
        progress = read_progress(out)
        assert progress["completed_count"] == len(first)
        assert progress["actors_in_flight"] == []  # the in-flight ones are left pending
        resumed = run_cli(*args, cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert "RESUMING FROM PREVIOUS PROGRESS" in resumed.stdout
        assert f"Resuming with {8 - len(first)} remaining actors" in resumed.stdout
        second = [m.group(3) for m in BANNER.finditer(resumed.stdout)]
        assert not set(first) & set(second)
        assert sorted(first + second) == [f"{i:04d}_actor" for i in range(8)]
        assert read_progress(out)["completed_count"] == 8


def test_second_ctrl_c_exits_at_once(tmp_path, workers):
    with slow_server(5) as server:
        data_dir = slow_dataset(tmp_path, server, 2)
        out = tmp_path / "out"
        args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", workers)
        process = start_cli(*args, cwd=tmp_path)
        wait_for_started(out)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=10)
        assert process.returncode == 130


def test_sigkill_at_random_instants_never_corrupts_progress(tmp_path, workers):
    rng = random.Random(7)
    with slow_server(0.15) as server:
        data_dir = slow_dataset(tmp_path, server, 10)
        out = tmp_path / "out"
        args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", workers)
        for _ in range(8):
            process = start_cli(*args, cwd=tmp_path)
            time.sleep(rng.uniform(0.3, 2.0))
            process.kill()
            process.communicate(timeout=10)
            if not (out / "progress.json").exists():
                continue
            progress = read_progress(out)  # whole, valid JSON at every kill
            for name in progress["completed_actors"]:
                assert (out / f"{name}_evaluation.json").is_file()
            assert progress["completed_count"] == len(progress["completed_actors"])
        final = run_cli(*args, cwd=tmp_path)
        assert final.returncode == 0, final.stderr
        assert len(completed(out)) == 10
        assert not list(out.glob(".tmp-*"))


def test_failed_actor_is_recorded_not_retried_then_retried(tmp_path, workers):
    with slow_server(0) as server:
        data_dir = slow_dataset(tmp_path, server, 3)
        server.status["0001_actor.jpg"] = 404
        out = tmp_path / "out"
        args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", workers)
        first = run_cli(*args, cwd=tmp_path)
        assert first.returncode == 1
        progress = read_progress(out)
        assert sorted(progress["completed_actors"]) == ["0000_actor", "0002_actor"]
        [failure] = progress["failed_actors"]
        assert failure["actor_id"] == "0001_actor"
        assert failure["error"].startswith("Failed to download image 0001_actor_dl.jpg:")
        again = run_cli(*args, cwd=tmp_path)
        assert again.returncode == 0
        assert "Processing actor" not in again.stdout
        assert "1 actor failed: add --retry-failed to try again" in again.stdout
        server.status.clear()
        retried = run_cli(*args, "--retry-failed", cwd=tmp_path)
        assert retried.returncode == 0, retried.stdout
        # numbered by what is done, so the banner agrees with the resume block and the bar
        assert "Resuming with 1 remaining actor\nOverall progress: 66.7%" in retried.stdout
        assert "Processing actor 3/3: 0001_actor\nOverall progress: 66.7%" in retried.stdout
        progress = read_progress(out)
        assert progress["failed_count"] == 0 and progress["completed_count"] == 3


def test_actor_without_images_is_skipped(make_dataset, tmp_path):
    data_dir = make_dataset(2)
    (data_dir / "actors" / "0005_empty" / "training_data").mkdir(parents=True)
    out = tmp_path / "out"
    result = run_cli("--all", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path)
    assert result.returncode == 0
    progress = read_progress(out)
    assert progress["skipped_count"] == 1
    assert progress["skipped_actors"][0]["actor_id"] == "0005_empty"
    assert progress["skipped_actors"][0]["reason"] == "no training images"


def test_other_mode_and_changed_settings_stop_with_exit_2(make_dataset, tmp_path):
    data_dir = make_dataset(2)
    out = tmp_path / "out"
    base = ("--all", "--data-dir", data_dir, "--output-dir", out)
    assert run_cli(*base, "--dry-run", cwd=tmp_path).returncode == 0
    before = (out / "progress.json").read_bytes()
    other = run_cli(*base, "--execute", cwd=tmp_path)
    assert other.returncode == 2
    assert "--reset-progress" in other.stderr and "--no-resume" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    config = tmp_path / "config.toml"
    config.write_text("[target]\ntotal = 10\n")
    changed = run_cli(*base, "--config", config, cwd=tmp_path)
    assert changed.returncode == 2
    assert "targets" in changed.stderr
    assert (out / "progress.json").read_bytes() == before


def test_second_concurrent_run_exits_2_naming_the_holder(tmp_path, workers):
    with slow_server(2.0) as server:
        data_dir = slow_dataset(tmp_path, server, 4)
        out = tmp_path / "out"
        args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", workers)
        holder = start_cli(*args, cwd=tmp_path)
        try:
            wait_for_started(out, workers)
            second = run_cli(*args, cwd=tmp_path)
            assert second.returncode == 2
            assert str(holder.pid) in second.stderr
            shown = run_cli("--show-progress", "--output-dir", out, cwd=tmp_path)
            assert shown.returncode == 0
            assert "PROGRESS SUMMARY" in shown.stdout
            assert re.search(r"Currently processing: 000\d_actor", shown.stdout)
            if workers > 1:  # every actor in flight is shown
                assert re.search(rf"In flight \({workers}\): 000\d_actor, ", shown.stdout)
        finally:
            holder.send_signal(signal.SIGINT)
            holder.communicate(timeout=15)


def test_unreadable_progress_is_kept_and_reset_moves_it_aside(make_dataset, tmp_path):
    data_dir = make_dataset(1)
    out = tmp_path / "out"
    out.mkdir()
    garbage = b'{"completed_actors": ["0000_act'
    (out / "progress.json").write_bytes(garbage)
    args = ("--all", "--data-dir", data_dir, "--output-dir", out)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "progress.json" in result.stderr and "Traceback" not in result.stderr
    assert (out / "progress.json").read_bytes() == garbage
    shown = run_cli("--show-progress", "--output-dir", out, cwd=tmp_path)
    assert shown.returncode == 2
    reset = run_cli("--reset-progress", "--output-dir", out, cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    kept = [path for path in out.iterdir() if path.is_file() and path.read_bytes() == garbage]
    assert len(kept) == 1 and kept[0].name != "progress.json"
    assert run_cli(*args, cwd=tmp_path).returncode == 0


def test_no_resume_starts_over_and_reset_clears(make_dataset, tmp_path):
    data_dir = make_dataset(2)
    out = tmp_path / "out"
    args = ("--all", "--data-dir", data_dir, "--output-dir", out)
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    fresh = run_cli(*args, "--no-resume", cwd=tmp_path)
    assert fresh.returncode == 0
    assert "RESUMING" not in fresh.stdout
    assert len(BANNER.findall(fresh.stdout)) == 2
    assert run_cli("--reset-progress", "--output-dir", out, cwd=tmp_path).returncode == 0
    shown = run_cli("--show-progress", "--output-dir", out, cwd=tmp_path)
    assert "No progress recorded" in shown.stdout
    assert len(BANNER.findall(run_cli(*args, cwd=tmp_path).stdout)) == 2


def test_dataset_growing_between_runs(make_dataset, tmp_path):
    data_dir = make_dataset(2)
    out = tmp_path / "out"
    args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", "1")  # in order
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    make_dataset(3, start=2)
    grown = run_cli(*args, cwd=tmp_path)
    assert grown.returncode == 0
    assert "Resuming with 3 remaining actors" in grown.stdout
    assert "Processing actor 3/5: 0002_actor" in grown.stdout
    progress = read_progress(out)
    assert progress["total_count"] == 5 and progress["completed_count"] == 5
    assert "Remaining:   0" in grown.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "choose exactly one"),
        (("--restore", "anna", "--stats"), "choose exactly one"),
        (("--all", "--dry-run", "--execute"), "not allowed with"),
        (("--stats", "--retry-failed"), "go with --all"),
        (("--all", "--data-dir", "missing"), "missing"),
        (("--actor-id", "nobody", "--data-dir", "data"), "nobody"),
        (("--all", "--config", "nope.toml"), "nope.toml"),
    ],
)
def test_user_errors_are_one_line_exit_2(make_dataset, tmp_path, args, fragment):
    make_dataset(1)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_key_exits_2_naming_it(make_dataset, tmp_path):
    make_dataset(1)
    config = tmp_path / "bad.toml"
    config.write_text("[target]\ntotl = 20\n")
    result = run_cli("--all", "--config", config, cwd=tmp_path)
    assert result.returncode == 2
    assert "target.totl" in result.stderr


def test_single_actor_by_prefix_without_progress(make_dataset, tmp_path):
    make_dataset(2)
    result = run_cli("--actor-id", "0001", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0001_actor" in result.stdout
    out = tmp_path / "debug" / "training_data_evaluation"
    assert (out / "0001_actor_evaluation.json").is_file()
    assert not (out / "progress.json").exists()


def test_rejected_api_key_stops_the_run_with_the_actor_pending(
    make_dataset, tmp_path, httpserver, workers
):
    httpserver.expect_request("/v1/chat/completions").respond_with_json(
        {"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}, status=401
    )
    make_dataset(3, mix=(("photorealistic", 2),))
    config = tmp_path / "openai.toml"
    config.write_text(
        '[evaluator]\nbackend = "openai"\n[evaluator.openai]\n'
        f'base_url = "{httpserver.url_for("/v1")}"\nmax_retries = 1\n'
    )
    out = tmp_path / "out"
    env_key = "sk-test-" + "x" * 20
    process = subprocess.run(
        cli_command("--all", "--config", config, "--output-dir", out, "--workers", workers),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env() | {"OPENAI_API_KEY": env_key},
    )
    assert process.returncode == 2, process.stdout + process.stderr
    progress = read_progress(out)
    assert progress["failed_count"] == 0 and progress["completed_count"] == 0
    assert env_key not in process.stdout + process.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert env_key.encode() not in path.read_bytes()


def test_console_script_is_the_same_program(make_dataset, tmp_path):
    script = Path(sys.executable).parent / "evaluate-and-balance"
    if not script.exists():
        script = Path(shutil.which("evaluate-and-balance") or "missing")
    assert script.exists(), "the console script is installed with the package"
    data_dir = make_dataset(1)
    result = subprocess.run(
        [str(script), "--stats", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"Actors:\s+1\n", result.stdout)
    assert re.search(r"Images:\s+20\n", result.stdout)


def test_missing_token_stops_before_progress_is_touched(make_dataset, tmp_path):
    data_dir = make_dataset(1)
    config = tmp_path / "replicate.toml"
    config.write_text('[generator]\nbackend = "replicate"\n')
    out = tmp_path / "out"
    args = ("--all", "--execute", "--config", config, "--data-dir", data_dir, "--output-dir", out)
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "REPLICATE_API_TOKEN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (out / "progress.json").exists()
    assert (
        run_cli("--all", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path).returncode == 0
    )
