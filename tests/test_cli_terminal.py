"""The progress bar: on a terminal it shows done/total, rate and ETA; elsewhere it stays silent."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios

from conftest import cli_command, cli_env, run_cli


def test_bar_shows_done_total_and_rate_on_a_terminal(make_dataset, tmp_path):
    data_dir = make_dataset(3)
    main, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        cli_command("--all", "--data-dir", data_dir, "--output-dir", tmp_path / "out"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=cli_env(),
    )
    os.close(secondary)
    terminal = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        terminal += chunk
    stdout, _ = process.communicate(timeout=60)
    os.close(main)
    assert process.returncode == 0
    text = terminal.decode(errors="replace")
    assert "3/3" in text and "actor/s" in text
    assert "Processing actor 3/3" in stdout.decode()


def test_no_bar_when_stderr_is_not_a_terminal(make_dataset, tmp_path):
    data_dir = make_dataset(2)
    result = run_cli(
        "--all", "--data-dir", data_dir, "--output-dir", tmp_path / "out", cwd=tmp_path
    )
    assert result.returncode == 0
    assert "actor/s" not in result.stderr and "2/2" not in result.stderr
