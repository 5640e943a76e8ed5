"""`predictq status` as a terminal and a script see it: redrawn live until Ctrl-C, and never
wrapped when piped. (What it counts is checked against a real run in test_metrics.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from registry import Registry

from .conftest import REPO

LONG = "m" + "x" * 120


def _as_a_terminal_starts_it() -> None:
    # A shell starts a command with Ctrl-C's default action and unblocked; a test process may
    # have inherited it ignored or blocked (both pass on to children), and Python then never
    # raises KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@pytest.mark.timeout(60)
def test_status_watch_redraws_until_ctrl_c_and_exits_0(
    env, registry: Registry, fitted, tmp_path
) -> None:
    registry.register(LONG, fitted, promote=True)
    # stderr to a file: a pipe nobody reads while it runs would block it once full.
    with open(tmp_path / "stderr", "w+") as err, subprocess.Popen(
        [sys.executable, "-m", "worker", "status", "--watch", "--json", "--interval", "0.2"],
        env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True,
        preexec_fn=_as_a_terminal_starts_it,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]
            assert all(json.loads(line)["served"] == {LONG: {"production": 1}} for line in lines)
            proc.send_signal(signal.SIGINT)
            # stdout is read on (communicate): a full pipe would block the redraws in between.
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                err.seek(0)
                pytest.fail(f"still running 20 s after Ctrl-C; its stderr: {err.read()[-3000:]}")
            err.seek(0)
            assert proc.returncode == 0, err.read()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.timeout(60)
def test_piped_status_is_not_wrapped_at_80_columns(env, registry: Registry, fitted) -> None:
    registry.register(LONG, fitted, promote=True)
    out = subprocess.run([sys.executable, "-m", "worker", "status"], env={**os.environ, **env},
                         cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert any(LONG in line and "production=v1" in line for line in out.stdout.splitlines())
