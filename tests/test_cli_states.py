"""Every actor ends in one named state, the same on the console, in its JSON and in progress.json;
a dry-run shows exactly what execute then does; the summary reads as a person would write it."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

from conftest import (
    cli_command,
    cli_env,
    draw_image,
    mix_kinds,
    read_progress,
    run_cli,
    write_actor,
)
from test_cli_runner import slow_dataset, slow_server

from training_data.config import DEFAULT_MIX
from training_data.evaluation import UNUSABLE_ISSUES

MIXES = {
    "0000_balanced": (("photorealistic", 13), ("bw_stylized", 4), ("color_stylized", 3)),
    "0001_over": (("photorealistic", 16), ("bw_stylized", 6), ("color_stylized", 3)),
    "0002_few_photos": (("photorealistic", 10), ("bw_stylized", 4), ("color_stylized", 3)),
    "0003_too_few": (("photorealistic", 5), ("bw_stylized", 8), ("color_stylized", 4)),
}
SHORT_REASON = (
    "photorealistic: 3 short, the local generator cannot make them; best reachable mix 10/3/2 of 15"
)


def states_dataset(root: Path) -> Path:
    data_dir = root / "data"
    for seed, (name, mix) in enumerate(MIXES.items()):
        write_actor(data_dir, name, mix_kinds(mix), seed=seed)
    (data_dir / "actors" / "0004_empty" / "training_data").mkdir(parents=True)
    return data_dir


def evaluation(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}_evaluation.json").read_text())


def actor_block(stdout: str, name: str) -> str:
    """The console lines of one actor: from its banner to the next rule line."""
    start = stdout.index(f": {name}\n")
    end = stdout.index("=" * 70, stdout.index("=" * 70, start) + 1)
    return stdout[start:end]


def test_each_actor_ends_in_one_state_everywhere(tmp_path):
    data_dir = states_dataset(tmp_path)
    out = tmp_path / "out"
    result = run_cli("--all", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    stdout = result.stdout

    expected = {
        "0000_balanced": ("balanced", ""),
        "0001_over": ("rebalanced", ""),
        "0002_few_photos": ("short", SHORT_REASON),
    }
    for name, (state, reason) in expected.items():
        document = evaluation(out, name)
        assert (document["state"], document["state_reason"]) == (state, reason), name
        line = f"  state: {state} ({reason})" if reason else f"  state: {state}\n"
        assert line in actor_block(stdout, name), name
    too_few = evaluation(out, "0003_too_few")
    assert too_few["state"] == "short"
    assert "under plan.min_total 10: left as it is" in too_few["state_reason"]
    assert too_few["images_to_delete"] == [] and too_few["images_to_generate"] == []
    assert "  state: skipped (no training images)" in actor_block(stdout, "0004_empty")

    assert read_progress(out)["actor_states"] == {
        "0000_balanced": "balanced",
        "0001_over": "rebalanced",
        "0002_few_photos": "short",
        "0003_too_few": "short",
        "0004_empty": "skipped",
    }
    summary = stdout[stdout.index("FINAL SUMMARY") :]
    for line in (
        "Processed: 5 actors in this session",
        "  Successful: 2\n",
        "  Already balanced: 1\n",
        "  Rebalanced: 1\n",
        "  Short: 2\n",
        "  Failed: 0\n",
        "  Skipped: 1\n",
        f"  short: 0002_few_photos: {SHORT_REASON}",
    ):
        assert line in summary, line
    assert (
        stdout.rstrip("\n")
        .splitlines()[-1]
        .startswith("2 actors could not reach the target (state short)")
    )


def test_dry_run_says_what_cannot_be_generated_and_why(tmp_path):
    data_dir = states_dataset(tmp_path)
    result = run_cli(
        "--actor-id",
        "0002",
        "--data-dir",
        data_dir,
        "--output-dir",
        tmp_path / "out",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  unbalanced: 10/4/3 (target 13/4/3): 17 images, target 20" in lines
    assert "  cannot generate 3 photorealistic" in lines
    assert "  plan: 10/3/2 = 15 images" in lines
    assert lines[-1] == f"0002_few_photos could not reach the target (state short): {SHORT_REASON}"


def test_execute_does_what_the_dry_run_said_and_leaves_no_actor_worse_off(tmp_path):
    data_dir = tmp_path / "demo"
    dry, executed = tmp_path / "dry", tmp_path / "executed"
    preview = run_cli("--demo", "--all", "--data-dir", data_dir, "--output-dir", dry, cwd=tmp_path)
    assert preview.returncode == 1, preview.stderr  # the demo plants one failing download
    result = run_cli(
        "--demo",
        "--all",
        "--execute",
        "--data-dir",
        data_dir,
        "--output-dir",
        executed,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    states = read_progress(executed)["actor_states"]
    assert read_progress(dry)["actor_states"] == states
    short = [name for name, state in states.items() if state == "short"]
    assert short, "the demo has actors with too few photos for the local generator"
    for path in sorted(executed.glob("*_evaluation.json")):
        after_run = json.loads(path.read_text())
        planned = json.loads((dry / path.name).read_text())
        name = after_run["actor"]
        execution = after_run.get("execution")
        if execution is None:
            assert planned["images_to_delete"] == planned["images_to_generate"] == [], name
            continue
        assert [r["filename"] for r in execution["removed"]] == [
            r["filename"] for r in planned["images_to_delete"]
        ], name
        generated: dict[str, int] = {}
        for image in execution["generated"]:
            generated[image["type"]] = generated.get(image["type"], 0) + 1
        assert generated == {g["type"]: g["count"] for g in planned["images_to_generate"]}, name
        assert execution["after"]["counts"] == planned["planned_counts"], name
        before = usable_counts(planned["images"])
        assert off_target(execution["after"]["counts"]) <= off_target(before), name
        if name in short:  # a photo the generator cannot replace is never removed while usable
            assert not any(
                r["type"] == "photorealistic" and r["reason"].startswith("surplus")
                for r in execution["removed"]
            ), name


def test_generation_that_fails_at_execute_leaves_the_actor_short_saying_why(tmp_path):
    training = tmp_path / "data" / "actors" / "0000_small" / "training_data"
    training.mkdir(parents=True)
    for number in range(1, 14):  # photos too small for the local generator to draw from
        draw_image("photorealistic", number, side=200).save(training / f"p_{number}.jpg")
    config = tmp_path / "config.toml"
    # Drawn stand-ins for photos: the statistics take them for photos, the learned stage (made
    # for real pictures) may not, and this test is about generation, not style.
    config.write_text("[quality]\nmin_side = 128\n[style]\nlearned = false\n")
    out = tmp_path / "out"
    args = ("--all", "--data-dir", tmp_path / "data", "--output-dir", out, "--config", config)
    preview = run_cli(*args, cwd=tmp_path)
    assert "  generate 4 bw_stylized" in preview.stdout, preview.stdout
    result = run_cli(*args, "--execute", "--no-resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = evaluation(out, "0000_small")
    assert document["state"] == "short"
    assert document["state_reason"].startswith("bw_stylized: 4 not generated (source image")
    assert "too small to draw from" in document["state_reason"]
    assert read_progress(out)["actor_states"] == {"0000_small": "short"}
    assert "  Successful: 0\n" in result.stdout and "  Short: 1\n" in result.stdout


def test_an_execute_that_did_all_it_planned_states_what_the_dry_run_said(tmp_path):
    """generator none: the surplus stylized images the plan removes are not 'short' afterwards."""
    mix = (("photorealistic", 9), ("bw_stylized", 6), ("color_stylized", 5))
    write_actor(tmp_path / "data", "0000_few_photos", mix_kinds(mix))
    config = tmp_path / "config.toml"
    config.write_text('[generator]\nbackend = "none"\n')
    args = ("--all", "--data-dir", tmp_path / "data", "--config", config)
    preview = run_cli(*args, "--output-dir", tmp_path / "dry", cwd=tmp_path)
    result = run_cli(*args, "--execute", "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == preview.returncode == 0, result.stderr
    planned = evaluation(tmp_path / "dry", "0000_few_photos")
    done = evaluation(tmp_path / "out", "0000_few_photos")
    assert planned["state_reason"].startswith("photorealistic: 4 short, no generator")
    assert done["execution"]["after"]["counts"] == planned["planned_counts"]
    assert (done["state"], done["state_reason"]) == (planned["state"], planned["state_reason"])
    assert f"  state: short ({planned['state_reason']})" in result.stdout


def usable_counts(images: list[dict]) -> dict[str, int]:
    counts = dict.fromkeys(DEFAULT_MIX, 0)
    for image in images:
        if image["type"] in counts and not set(image["issues"]) & UNUSABLE_ISSUES:
            counts[image["type"]] += 1
    return counts


def off_target(counts: dict[str, int]) -> float:
    """The largest gap between a category's share and its target share."""
    total = sum(counts.values()) or 1
    return max(abs(counts[c] / total - share) for c, share in DEFAULT_MIX.items())


def test_one_actor_reads_as_one_and_each_json_counts_only_its_own_images(make_dataset, tmp_path):
    data_dir = make_dataset(1)
    write_actor(data_dir, "0001_small", ["photorealistic"] * 12, seed=7)
    out = tmp_path / "out"
    result = run_cli("--all", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert evaluation(out, "0000_actor")["evaluator"]["usage"]["images_judged"] == 20
    assert evaluation(out, "0001_small")["evaluator"]["usage"]["images_judged"] == 12
    assert "  Skipped: 0\n" in result.stdout

    single = tmp_path / "single"
    write_actor(single, "0000_only", mix_kinds(MIXES["0000_balanced"]))
    alone = run_cli("--all", "--data-dir", single, "--output-dir", tmp_path / "o1", cwd=tmp_path)
    assert "Processed: 1 actor in this session" in alone.stdout
    assert "Total:       1 actor\n" in alone.stdout


def test_no_progress_bar_is_drawn_after_the_interrupt_message(tmp_path):
    with slow_server(0.8) as server:
        data_dir = slow_dataset(tmp_path, server, 4)
        main, secondary = pty.openpty()
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        process = subprocess.Popen(
            cli_command("--all", "--data-dir", data_dir, "--output-dir", tmp_path / "out"),
            cwd=tmp_path,
            stdout=secondary,
            stderr=secondary,
            env=cli_env(),
        )
        os.close(secondary)
        terminal = read_until(main, b"Processing actor 2/4")
        process.send_signal(signal.SIGINT)
        terminal += read_until(main, None)
        process.wait(timeout=15)
        os.close(main)
    text = terminal.decode(errors="replace")
    assert process.returncode == 130
    assert re.search(r"\d/4 \[", text), "the bar was drawn while the run went on"
    after = text[text.index("Interrupted by user") :]
    assert not re.search(r"\d/4 \[", after), after


def read_until(fd: int, marker: bytes | None, limit: float = 60) -> bytes:
    """Read a pty until ``marker`` shows (or, with None, until the other end closes)."""
    seen = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        seen += chunk
        if marker is not None and marker in seen:
            return seen
    if marker is not None:
        raise AssertionError(f"{marker!r} never came: {seen[-2000:]!r}")
    return seen
