"""Every action of the CLI against hostile files and hostile servers, as a real subprocess.

One dataset holds an actor per hostile input beside ordinary actors; the evaluator is a local
server that quotes the API key back in every answer, and one image comes from a server that
accepts and never answers. Each action must end with its documented exit code and no traceback,
process every other actor, and leave the key in no output and no file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DEFAULT_MIX, cli_command, cli_env, mix_kinds, write_actor
from werkzeug import Request, Response

KEY = "sk-hostile-test-" + "q" * 24
FAILING = {
    "0001_nested_manifest": "manifest.json of 0001_nested_manifest is not valid JSON: "
    "nested more than 64 levels deep",
    "0002_bad_url": "Failed to download image 0002_bad_url_99.jpg: invalid URL",
    "0003_fifo_manifest": "cannot read manifest.json of 0003_fifo_manifest: "
    "not a regular file (a FIFO)",
    "0006_huge_manifest": "cannot read manifest.json of 0006_huge_manifest: "
    "2,097,152 bytes is over the 1,048,576-byte limit (limits.max_file_mib)",
    "0007_odd_name": "training_data of 0007_odd_name holds a file named 'a\\\\b.jpg'",
    "0008_linked_out": "training_data of 0008_linked_out is a symlink to ",
    "0009_silent_server": "Failed to download image 0009_silent_server_99.jpg: timed out after 1s",
}
SUCCEEDING = ("0000_plain", "0004_special_images", "0005_sparse_image", "0010_plain")
UNREADABLE = {
    "0004_special_images": ("a_fifo.jpg", "a_loop.jpg", "a_dangling.jpg", "a_zero.jpg"),
    "0005_sparse_image": ("a_sparse.jpg",),
}


def echo_the_key(request: Request) -> Response:
    """An evaluator that labels every image but quotes the key back in each note."""
    body = request.get_json()
    schema = body["response_format"]["json_schema"]["schema"]
    numbers = schema["properties"]["images"]["items"]["properties"]["number"]["enum"]
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    images = [
        {
            "number": number,
            "category": "photorealistic",
            "quality_score": 8,
            "issues": [],
            "note": f"sent with {key}",
        }
        for number in numbers
    ]
    message = {"role": "assistant", "content": json.dumps({"images": images})}
    return Response(json.dumps({"choices": [{"index": 0, "message": message}]}))


@pytest.fixture
def silent_url(silent_server) -> str:
    return silent_server[0] + "/x.jpg"


def hostile_dataset(root: Path, silent_url: str) -> Path:
    data_dir = root / "data"
    kinds = mix_kinds(DEFAULT_MIX)

    def actor(name: str, urls: dict[str, str] | None = None) -> Path:
        return write_actor(data_dir, name, kinds, urls=urls, seed=int(name[:4]))

    actor("0000_plain")
    manifest = actor("0001_nested_manifest") / "manifest.json"
    manifest.write_text('{"images": {}, "x": ' + "[" * 1000 + "]" * 1000 + "}")
    actor("0002_bad_url", {"0002_bad_url_99.jpg": "http://[::1/x.jpg"})
    manifest = actor("0003_fifo_manifest") / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    special = actor("0004_special_images")
    os.mkfifo(special / "a_fifo.jpg")
    (special / "a_loop.jpg").symlink_to("a_loop.jpg")
    (special / "a_dangling.jpg").symlink_to(root / "gone.jpg")
    (special / "a_zero.jpg").symlink_to("/dev/zero")
    with open(actor("0005_sparse_image") / "a_sparse.jpg", "wb") as sparse:
        sparse.truncate(6 * 1024**3)
    with open(actor("0006_huge_manifest") / "manifest.json", "r+b") as manifest_file:
        manifest_file.truncate(2 * 1024 * 1024)
    (actor("0007_odd_name") / "a\\b.jpg").write_bytes(b"")
    linked = actor("0008_linked_out")
    linked.rename(root / "outside")
    linked.symlink_to(root / "outside")
    actor("0009_silent_server", {"0009_silent_server_99.jpg": silent_url})
    actor("0010_plain")
    return data_dir


@dataclass(frozen=True)
class Case:
    """One action: its arguments, what to prepare in the output folder, and the exit code."""

    args: tuple[str, ...]
    exit_code: int
    prepare: Callable[[Path], None] = lambda output_dir: None
    says: str = ""


def nested_progress(output_dir: Path) -> None:
    output_dir.mkdir()
    (output_dir / "progress.json").write_text('{"version": 1, "x": ' + "[" * 1000 + "]" * 1000)


def fifo_progress(output_dir: Path) -> None:
    output_dir.mkdir()
    os.mkfifo(output_dir / "progress.json")


def hostile_evaluations(output_dir: Path) -> None:
    output_dir.mkdir()
    os.mkfifo(output_dir / "0000_plain_evaluation.json")
    nested = '{"actor": "0010_plain", "x": ' + "[" * 1000 + "]" * 1000 + "}"
    (output_dir / "0010_plain_evaluation.json").write_text(nested)


UNREADABLE_PROGRESS = "error: cannot read {output}/progress.json ("
CASES = {
    "dry-run": Case(("--all",), 1),
    "execute": Case(("--all", "--execute"), 1),
    "one actor": Case(
        ("--actor-id", "0001_nested"), 1, says="FAILED: " + FAILING["0001_nested_manifest"]
    ),
    "stats": Case(("--stats",), 0, says="0003_fifo_manifest: not counted"),
    "restore": Case(("--restore", "0004_special"), 0, says="nothing to restore"),
    "restore a FIFO manifest": Case(("--restore", "0003_fifo"), 2, says="(a FIFO)"),
    "show nested progress": Case(("--show-progress",), 2, nested_progress, UNREADABLE_PROGRESS),
    "show FIFO progress": Case(("--show-progress",), 2, fifo_progress, UNREADABLE_PROGRESS),
    "resume over nested progress": Case(("--all",), 2, nested_progress, UNREADABLE_PROGRESS),
    "reset nested progress": Case(("--reset-progress",), 0, nested_progress, "Progress reset."),
    "reset FIFO progress": Case(("--reset-progress",), 0, fifo_progress, "Progress reset."),
    "report over hostile results": Case(("--report",), 0, hostile_evaluations, "Report of 0"),
}


def files_under(*folders: Path) -> Iterator[Path]:
    """Regular files small enough to read (the 6 GiB sparse image is the test's own zeros)."""
    for folder in folders:
        for path in folder.rglob("*"):
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode) and info.st_size < 64 * 1024 * 1024:
                yield path


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_action_meets_hostile_input_with_its_documented_exit(
    tmp_path, httpserver, silent_url, case: Case
):
    httpserver.expect_request("/v1/chat/completions", method="POST").respond_with_handler(
        echo_the_key
    )
    data_dir = hostile_dataset(tmp_path, silent_url)
    output_dir = tmp_path / "out"
    case.prepare(output_dir)
    config = tmp_path / "hostile.toml"
    config.write_text(
        '[evaluator]\nbackend = "openai"\n[evaluator.openai]\nmax_retries = 0\n'
        f'base_url = "{httpserver.url_for("/v1")}"\n'
        "[download]\ntimeout = 1\nretries = 1\ndeadline = 10\n[limits]\nmax_file_mib = 1\n"
    )
    command = cli_command(
        *case.args, "--data-dir", data_dir, "--output-dir", output_dir, "--config", config
    )

    run = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env() | {"OPENAI_API_KEY": KEY},
    )

    output = run.stdout + run.stderr
    assert run.returncode == case.exit_code, output
    assert "Traceback" not in output
    assert case.says.format(output=output_dir) in output
    assert KEY not in output
    leaks = [
        path for path in files_under(data_dir, output_dir) if KEY.encode() in path.read_bytes()
    ]
    assert leaks == []
    if case.args[0] == "--all" and case.exit_code == 1:
        progress = json.loads((output_dir / "progress.json").read_text())
        assert sorted(progress["completed_actors"]) == list(SUCCEEDING)
        errors = {failed["actor_id"]: failed["error"] for failed in progress["failed_actors"]}
        assert sorted(errors) == sorted(FAILING)
        for name, error in FAILING.items():
            assert errors[name].startswith(error), (name, errors[name])
        for name, filenames in UNREADABLE.items():
            document = json.loads((output_dir / f"{name}_evaluation.json").read_text())
            unreadable = {
                image["filename"] for image in document["images"] if "unreadable" in image["issues"]
            }
            assert unreadable == set(filenames)
        plain = json.loads((output_dir / "0000_plain_evaluation.json").read_text())
        assert plain["images"][0]["note"] == "sent with [redacted]"
