"""How fast the quick actions answer: --help, --version, --show-progress and a usage error.

Each runs as a fresh process (what a user waits for), several times; the median is printed, with
the bare interpreter and an import of the heavy libraries for comparison.

    uv run python scripts/bench_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "training_data" / "evaluate_and_balance.py"


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    cli = [sys.executable, str(SCRIPT)]
    with tempfile.TemporaryDirectory() as output:
        cases = {
            "python -c pass (the floor)": [sys.executable, "-c", "pass"],
            "import requests, PIL.Image, tqdm": [
                sys.executable,
                "-c",
                "import requests, PIL.Image, tqdm",
            ],
            "--help": [*cli, "--help"],
            "--version": [*cli, "--version"],
            "--show-progress": [*cli, "--show-progress", "--output-dir", output],
            "usage error (no action)": cli,
        }
        for name, command in cases.items():
            print(f"{name:36} {1000 * median_seconds(command, runs):6.0f} ms (median of {runs})")


if __name__ == "__main__":
    main()
