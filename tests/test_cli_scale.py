"""Scale as a user meets it: worker processes on one machine, shards over one shared folder."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import (
    REPLICATE_TOKEN,
    read_progress,
    run_cli,
    settled_removal,
    start_cli,
)
from test_cli_runner import SlowImageServer, slow_dataset, slow_server, wait_for_started

from training_data.config import parse_config
from training_data.errors import UsageError
from training_data.evaluate_and_balance import choose_workers
from training_data.progress import ProgressState
from training_data.shards import (
    Shard,
    StoreRow,
    merged_outcomes,
    merged_summary,
    parse_shard,
    shard_from_environment,
    shard_of,
)
from training_data.workers import usable_cpus

SHARDS = Path("shards")


def group_members(group: int) -> dict[int, int]:
    """pid -> parent pid of every live process in the process group."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, parent, pgrp = fields[0], int(fields[1]), int(fields[2])
        if pgrp == group and state != "Z":
            members[int(stat.parent.name)] = parent
    return members


def start_held_run(
    tmp_path: Path, server: SlowImageServer, *, actors: int, workers: int
) -> tuple[subprocess.Popen, Path, tuple]:
    """``--all --workers N`` in its own process group over actors whose downloads the slow
    server holds, once N actors are in flight: the process, its output folder, its arguments."""
    data_dir = slow_dataset(tmp_path, server, actors)
    out = tmp_path / "out"
    args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", str(workers))
    process = start_cli(*args, cwd=tmp_path, own_group=True)
    wait_for_started(out, workers)
    return process, out, args


def worker_pids(group: int) -> list[int]:
    """The forkserver's children: the runner's child is the forkserver, its children the workers."""
    members = group_members(group)
    helpers = {pid for pid, parent in members.items() if parent == group}
    return [pid for pid, parent in members.items() if parent in helpers]


def wait_until_gone(group: int, limit: float = 10) -> dict[int, int]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        members = group_members(group)
        if not members:
            return members
        time.sleep(0.1)
    return group_members(group)


def shard_stores(out: Path) -> dict[str, dict]:
    stores = {}
    for path in sorted((out / SHARDS).glob("*/progress.json")):
        stores[path.parent.name] = json.loads(path.read_text())
    return stores


def merged(out: Path, cwd: Path) -> dict:
    shown = run_cli("--show-progress", "--json", "--output-dir", out, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


# --- one machine ---


def test_a_killed_worker_fails_its_actor_alone(tmp_path):
    with slow_server(1.5) as server:
        process, out, _args = start_held_run(tmp_path, server, actors=5, workers=2)
        workers = worker_pids(process.pid)
        assert len(workers) == 2, group_members(process.pid)
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    progress = read_progress(out)
    [failure] = progress["failed_actors"]
    assert failure["error"].startswith("worker process died (killed by SIGKILL")
    assert progress["completed_count"] == 4  # the run went on with a fresh worker
    assert f"failed: {failure['actor_id']}: worker process died" in stdout


def test_a_worker_killed_during_an_execute_fails_its_actor_saying_its_files_moved(
    make_dataset, tmp_path, replicate_gate
):
    """Both actors hold at their generation (the stand-in waits for the gate), after their
    removals: the killed worker's actor fails saying its execute had begun, and --retry-failed
    records it as one execute, with what was moved where."""
    config, _arrived, gate = replicate_gate
    data_dir = make_dataset(2, (("photorealistic", 18), ("bw_stylized", 2), ("color_stylized", 5)))
    actor_dirs, out = sorted((data_dir / "actors").iterdir()), tmp_path / "out"
    args = ("--all", "--execute", "--config", config, "--data-dir", data_dir, "--output-dir", out)
    token = {"REPLICATE_API_TOKEN": REPLICATE_TOKEN}
    process = start_cli(*args, "--workers", "2", cwd=tmp_path, extra_env=token, own_group=True)
    try:
        deadline = time.monotonic() + 120
        while not all(map(settled_removal, actor_dirs)):
            assert process.poll() is None and time.monotonic() < deadline, "no removals"
            time.sleep(0.05)
        workers = worker_pids(process.pid)
        assert len(workers) == 2, group_members(process.pid)
        os.kill(workers[0], signal.SIGKILL)
    finally:
        gate.set()
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stdout + stderr
    [failure] = read_progress(out)["failed_actors"]
    assert failure["error"].startswith("worker process died (killed by SIGKILL")
    assert "its execute had begun (what it moved is journaled): --retry-failed" in failure["error"]
    assert f"FAILED: {failure['error']}" in stdout

    retried = run_cli(*args, "--retry-failed", cwd=tmp_path, extra_env=token)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    actor_dir = data_dir / "actors" / failure["actor_id"]
    document = json.loads((out / f"{actor_dir.name}_evaluation.json").read_text())
    assert document["state"] == "rebalanced"
    journal = settled_removal(actor_dir)
    moved = {entry["filename"] for entry in document["execution"]["removed"]}
    assert moved == {removal["filename"] for removal in journal["removals"]}
    assert len(document["execution"]["generated"]) == 2


def test_sigkill_of_the_runner_leaves_no_worker_running(tmp_path):
    with slow_server(3) as server:
        process, out, args = start_held_run(tmp_path, server, actors=4, workers=3)
        assert len(group_members(process.pid)) >= 4  # runner, forkserver, 3 workers
        process.kill()
        process.communicate(timeout=10)
        assert wait_until_gone(process.pid) == {}
        progress = read_progress(out)  # whole; the in-flight actors run again next time
        assert progress["completed_count"] == 0
        again = run_cli(*args[:5], "--workers", "2", cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert read_progress(out)["completed_count"] == 4


def test_sigterm_stops_every_worker_with_the_actors_in_flight_pending(tmp_path):
    with slow_server(3) as server:
        process, out, _args = start_held_run(tmp_path, server, actors=4, workers=3)
        process.send_signal(signal.SIGTERM)
        stdout, _stderr = process.communicate(timeout=15)
        assert process.returncode == 143 and "Gracefully stopped" in stdout
        assert wait_until_gone(process.pid) == {}  # no worker outlives the run
    progress = read_progress(out)
    assert progress["completed_count"] == 0 and progress["actors_in_flight"] == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_to_the_whole_group_leaves_the_actors_in_flight_pending(tmp_path, signum):
    """scancel, timeout(1) or a service manager signal every process of the run: the workers died
    with the forkserver and their actors were recorded FAILED 'worker process died (exit code
    255; out of memory?)', so a plain rerun skipped them."""
    with slow_server(3) as server:
        process, out, args = start_held_run(tmp_path, server, actors=4, workers=3)
        os.killpg(process.pid, signum)
        stdout, _stderr = process.communicate(timeout=15)
        assert process.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[signum]
        assert "FAILED" not in stdout and wait_until_gone(process.pid) == {}
        progress = read_progress(out)
        assert progress["failed_actors"] == [] and progress["completed_count"] == 0
        again = run_cli(*args, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert read_progress(out)["completed_count"] == 4


def test_a_stop_signal_to_the_group_while_the_workers_start_is_a_clean_stop(make_dataset, tmp_path):
    """The signal ended the forkserver while the runner was starting its workers: the run died
    with an EOFError traceback and exit 1 instead of stopping."""
    data_dir = make_dataset(6)
    for attempt in range(5):
        out = tmp_path / f"out{attempt}"
        args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", "3")
        process = start_cli(*args, cwd=tmp_path, own_group=True)
        deadline = time.monotonic() + 30
        while not (out / "progress.json").exists() and time.monotonic() < deadline:
            time.sleep(0.005)  # the store is opened just before the workers start
        os.killpg(process.pid, signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=30)
        assert "Traceback" not in stderr, stderr
        assert process.returncode in (143, -signal.SIGTERM)  # stopped, or before it began
        assert wait_until_gone(process.pid) == {}


@pytest.mark.parametrize(
    ("cpu_max", "cap"), [("100000 100000\n", 1), ("150000 100000\n", 2), ("max 100000\n", None)]
)
def test_default_workers_keep_to_a_containers_cpu_limit(tmp_path, cpu_max, cap):
    limit = tmp_path / "cpu.max"
    limit.write_text(cpu_max)
    cpus = len(os.sched_getaffinity(0))
    assert usable_cpus(limit) == (min(cpus, cap) if cap else cpus)
    assert usable_cpus(tmp_path / "missing") == cpus


# --- many machines ---


def test_shard_of_a_name_never_moves_when_the_dataset_grows():
    names = [f"actor_{index}" for index in range(2000)]
    before = {name: shard_of(name, 7) for name in names}
    grown = names + [f"new_{index}" for index in range(500)]
    assert all(shard_of(name, 7) == before[name] for name in grown[:2000])
    sizes = [sum(shard == k for shard in before.values()) for k in range(7)]
    assert min(sizes) > 2000 / 7 * 0.8  # spread evenly
    assert parse_shard("2/7") == Shard(2, 7)
    assert Shard(2, 7).owns(names[0]) == (before[names[0]] == 2)


@pytest.mark.parametrize(
    ("array", "ids"),
    [("0-3", [0, 1, 2, 3]), ("1-4", [1, 2, 3, 4]), ("0-30:10", [0, 10, 20, 30])],
)
def test_each_task_of_a_slurm_array_range_takes_its_own_shard(array, ids):
    """--array=1-16 and --array=0-30:2 are common: a task's shard is its place in the range."""
    first, step = ids[0], ids[1] - ids[0]
    shards = [
        shard_from_environment(
            {
                "SLURM_ARRAY_TASK_ID": str(task),
                "SLURM_ARRAY_TASK_MIN": str(first),
                "SLURM_ARRAY_TASK_STEP": str(step),
                "SLURM_ARRAY_TASK_COUNT": str(len(ids)),
            },
            None,
        )
        for task in ids
    ]
    assert [shard for shard, _source in shards] == [Shard(k, len(ids)) for k in range(len(ids))]


def test_each_actor_counts_once_over_the_shards_completed_before_failed_before_skipped():
    """The rule --show-progress counts by and --report lists by: one actor, one outcome."""

    def store(name: str, updated: str, **outcomes: object) -> StoreRow:
        state = ProgressState(
            mode="dry_run", settings={}, started_at=updated, last_updated=updated, total_count=3
        )
        return StoreRow(name, replace(state, **outcomes), False, False)

    rows = [
        store(
            "0-of-2",
            "2026-01-01T00:00:00+00:00",
            failed={"anna": {"error": "old"}, "bob": {"error": "boom"}},
            skipped={"carl": {"reason": "empty"}},
        ),
        store(
            "1-of-2",
            "2026-01-02T00:00:00+00:00",
            completed=["anna"],
            skipped={"bob": {"reason": "empty"}, "carl": {"reason": "still empty"}},
        ),
    ]
    outcomes = merged_outcomes(rows)
    assert outcomes.completed == {"anna"}
    assert outcomes.failed == {"bob": {"error": "boom"}}
    assert outcomes.skipped == {"carl": {"reason": "still empty"}}
    summary = merged_summary(rows)
    assert (summary["completed"], summary["failed"], summary["skipped"]) == (1, 1, 1)


def test_shards_at_once_over_one_folder_then_a_rerun_with_another_n(make_dataset, tmp_path):
    data_dir = make_dataset(9)
    out = tmp_path / "out"
    base = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", "1")
    shards = [
        start_cli(*base, "--shard", f"{index}/3", cwd=tmp_path, own_group=True)
        for index in range(3)
    ]
    for shard in shards:
        _stdout, stderr = shard.communicate(timeout=120)
        assert shard.returncode == 0, stderr
    stores = shard_stores(out)
    assert sorted(stores) == ["0-of-3", "1-of-3", "2-of-3"]
    done = [name for store in stores.values() for name in store["completed_actors"]]
    assert sorted(done) == [f"{index:04d}_actor" for index in range(9)]  # each exactly once
    for name, store in stores.items():
        index = int(name.split("-")[0])
        assert all(shard_of(actor, 3) == index for actor in store["completed_actors"])
    summary = merged(out, tmp_path)
    assert summary["total"] == 9 and summary["completed"] == 9 and summary["remaining"] == 0
    assert sum(row["completed"] for row in summary["shards"]) == 9
    assert not any(row["stalled"] for row in summary["shards"])
    for index in range(2):
        rerun = run_cli(*base, "--shard", f"{index}/2", cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        assert "Processing actor" not in rerun.stdout
    assert merged(out, tmp_path)["completed"] == 9
    report = run_cli("--report", "--data-dir", data_dir, "--output-dir", out, cwd=tmp_path)
    assert report.returncode == 0 and "Report of 9 actors" in report.stdout
    reset = run_cli("--reset-progress", "--output-dir", out, cwd=tmp_path)
    assert reset.returncode == 0
    assert "Progress reset in 5 of" in reset.stdout  # 3 shards of 3 and 2 of 2
    assert (
        "No progress recorded"
        in run_cli("--show-progress", "--output-dir", out, cwd=tmp_path).stdout
    )


def test_a_killed_shard_is_stalled_then_finishes_its_part(tmp_path):
    with slow_server(0.6) as server:
        data_dir = slow_dataset(tmp_path, server, 8)
        out = tmp_path / "out"
        base = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", "1")
        slurm = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
        victim = start_cli(*base, cwd=tmp_path, extra_env=slurm, own_group=True)
        wait_for_started(out / SHARDS / "1-of-2")
        victim.kill()
        victim.communicate(timeout=10)
        other = run_cli(*base, "--shard", "0/2", cwd=tmp_path)
        assert other.returncode == 0, other.stderr
        summary = merged(out, tmp_path)
        row = next(row for row in summary["shards"] if row["shard"] == "1-of-2")
        assert row["stalled"] and row["remaining"] > 0
        assert "STALLED" in run_cli("--show-progress", "--output-dir", out, cwd=tmp_path).stdout
        restarted = run_cli(*base, cwd=tmp_path, extra_env=slurm)
    assert restarted.returncode == 0, restarted.stderr
    assert "Shard 1 of 2" in restarted.stdout
    summary = merged(out, tmp_path)
    assert summary["total"] == 8 and summary["completed"] == 8
    assert [row["remaining"] for row in summary["shards"]] == [0, 0]


@pytest.mark.parametrize(
    ("env", "args", "fragment"),
    [
        ({"JOB_COMPLETION_INDEX": "1"}, (), "--shard-count"),
        ({}, ("--shard", "3/3"), "0 <= K < N"),
        ({}, ("--shard", "one"), "K/N"),
        ({}, ("--workers", "0"), "--workers"),
        ({"SLURM_ARRAY_TASK_ID": "3"}, (), "SLURM_ARRAY_TASK_COUNT is not set"),
        (  # a list that is not a range (--array=1,3,9): task 9 is beyond 3 tasks of step 2
            {
                "SLURM_ARRAY_TASK_ID": "9",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            (),
            "0 <= K < N",
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            (),
            "not on the array's range",
        ),
    ],
)
def test_shard_and_worker_mistakes_are_one_line_exit_2(make_dataset, tmp_path, env, args, fragment):
    data_dir = make_dataset(1)
    result = run_cli("--all", "--data-dir", data_dir, *args, cwd=tmp_path, extra_env=env)
    assert result.returncode == 2
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_kubernetes_index_with_shard_count_and_the_per_actor_cache(make_dataset, tmp_path):
    data_dir = make_dataset(4)
    out = tmp_path / "out"
    args = ("--all", "--data-dir", data_dir, "--output-dir", out, "--shard-count", "2")
    for index in ("0", "1"):
        result = run_cli(*args, cwd=tmp_path, extra_env={"JOB_COMPLETION_INDEX": index})
        assert result.returncode == 0, result.stderr
        assert f"Shard {index} of 2" in result.stdout
    assert sorted(shard_stores(out)) == ["0-of-2", "1-of-2"]
    cached = sorted((out / "cache" / "actors").rglob("verdicts.json"))
    assert len(cached) == 4 and not (out / "cache" / "evaluations.sqlite3").exists()
    cached[0].write_text('{"torn')  # a torn file is misses: evaluated again, no error
    for index in ("0", "1"):
        again = run_cli(*args, "--shard", f"{index}/2", "--no-resume", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
    hits = {
        path.name: json.loads(path.read_text())["evaluator"]["cache_hits"]
        for path in out.glob("*_evaluation.json")
    }
    assert sorted(hits.values()) == [0, 20, 20, 20]


@pytest.mark.parametrize(
    ("evaluator", "flag", "expected_workers", "expected_concurrency"),
    [
        ({"backend": "local"}, None, usable_cpus(), 6),
        ({"backend": "openai"}, None, 1, 6),
        ({"backend": "openai"}, 3, 3, 2),
        ({"backend": "local", "escalate": "openai"}, 3, 3, 2),
        ({"backend": "local", "escalate": "openai"}, None, min(usable_cpus(), 6), None),
    ],
)
def test_requests_in_flight_stay_within_concurrency_for_the_whole_run(
    evaluator, flag, expected_workers, expected_concurrency
):
    config = parse_config({"evaluator": evaluator | {"openai": {"concurrency": 6}}})
    workers, shared = choose_workers(argparse.Namespace(workers=flag), config)
    assert workers == expected_workers
    if expected_concurrency is not None:
        assert shared.evaluator.openai.concurrency == expected_concurrency
    if config.evaluator.backend == "openai" or config.evaluator.escalate == "openai":
        assert workers * shared.evaluator.openai.concurrency <= 6


@pytest.mark.parametrize("evaluator", [{"backend": "openai"}, {"escalate": "openai"}])
def test_more_workers_than_requests_in_flight_is_a_usage_error(evaluator):
    config = parse_config({"evaluator": evaluator | {"openai": {"concurrency": 2}}})
    too_many = r"--workers 3 is more than evaluator\.openai\.concurrency"
    with pytest.raises(UsageError, match=too_many):
        choose_workers(argparse.Namespace(workers=3), config)


def test_a_rerun_with_another_n_leaves_failed_and_skipped_actors_alone(make_dataset, tmp_path):
    """A failed or skipped actor recorded by a shard was processed again by a rerun with another
    N, without --retry-failed: downloads tried again, the failure counted in two shards."""
    refused = "http://127.0.0.1:9/missing.jpg"  # the discard port: nothing listens
    data_dir = make_dataset(5, urls_for={0: {"0000_actor_99.jpg": refused}})
    (data_dir / "actors" / "0009_empty" / "training_data").mkdir(parents=True)
    out = tmp_path / "out"
    base = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", "1")
    for index in range(3):
        first = run_cli(*base, "--shard", f"{index}/3", cwd=tmp_path)
        assert first.returncode in (0, 1), first.stderr
    summary = merged(out, tmp_path)
    assert (summary["completed"], summary["failed"], summary["skipped"]) == (4, 1, 1)
    for index in range(2):
        rerun = run_cli(*base, "--shard", f"{index}/2", cwd=tmp_path)
        assert rerun.returncode != 2, rerun.stderr
        assert "Processing actor" not in rerun.stdout
    rows = merged(out, tmp_path)["shards"]
    assert sum(row["failed"] for row in rows) == 1 and sum(row["skipped"] for row in rows) == 1
    retried = [run_cli(*base, "--shard", f"{i}/2", "--retry-failed", cwd=tmp_path) for i in (0, 1)]
    assert sum(result.stdout.count("Processing actor") for result in retried) == 1
    assert "0000_actor" in "".join(result.stdout for result in retried)


def test_an_execute_shard_never_goes_beside_a_dry_run_or_a_shard_of_another_n(tmp_path):
    """Sharded executes held the dataset lock shared like dry-runs: an execute shard ran while a
    dry-run (which downloads into the dataset) was going, and shards of 3 and of 2, which own
    the same actors, executed side by side."""
    with slow_server(1.5) as server:
        data_dir = slow_dataset(tmp_path, server, 6)
        out = tmp_path / "out"
        base = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", "1")
        refused = []
        for holder_args, other_args in (
            (("--shard", "0/3"), ("--execute", "--shard", "1/3")),
            (("--execute", "--shard", "0/3"), ("--shard", "1/3")),
            (("--execute", "--shard", "0/3"), ("--execute", "--shard", "0/2")),
        ):
            holder = start_cli(*base, *holder_args, "--no-resume", cwd=tmp_path, own_group=True)
            try:
                wait_for_started(out / SHARDS / holder_args[-1].replace("/", "-of-"))
                refused.append(run_cli(*base, *other_args, cwd=tmp_path))
            finally:
                holder.send_signal(signal.SIGINT)
                holder.communicate(timeout=30)
            out_side = run_cli(*base, "--execute", "--shard", "2/3", cwd=tmp_path)
            assert out_side.returncode != 2, out_side.stderr  # the lock was let go
    for result in refused:
        assert result.returncode == 2, result.stdout
        assert "another run is using the dataset" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_dead_shard_whose_work_another_n_finished_is_not_stalled(tmp_path):
    """After a shard of 3 died and the work was rerun as 2 shards, --show-progress still marked
    the dead shard STALLED with actors left, while its total said nothing remained."""
    with slow_server(0.6) as server:
        data_dir = slow_dataset(tmp_path, server, 6)
        out = tmp_path / "out"
        base = ("--all", "--data-dir", data_dir, "--output-dir", out, "--workers", "1")
        victim = start_cli(*base, "--shard", "0/3", cwd=tmp_path, own_group=True)
        wait_for_started(out / SHARDS / "0-of-3")
        victim.kill()
        victim.communicate(timeout=10)
        for index in range(2):
            rerun = run_cli(*base, "--shard", f"{index}/2", cwd=tmp_path)
            assert rerun.returncode == 0, rerun.stderr
    summary = merged(out, tmp_path)
    assert summary["completed"] == 6 and summary["remaining"] == 0
    dead = next(row for row in summary["shards"] if row["shard"] == "0-of-3")
    assert dead["remaining"] > 0 and not dead["stalled"]
    shown = run_cli("--show-progress", "--output-dir", out, cwd=tmp_path).stdout
    assert "STALLED" not in shown and "taken over by the shards of 2" in shown
