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


@pytest.mark.timeout(60)
def test_status_watch_redraws_until_ctrl_c_and_exits_0(env, registry: Registry, fitted) -> None:
    registry.register(LONG, fitted, promote=True)
    with subprocess.Popen(
        [sys.executable, "-m", "worker", "status", "--watch", "--json", "--interval", "0.2"],
        env={**os.environ, **env}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stderr is not None
            lines = [proc.stdout.readline() for _ in range(3)]
            assert all(json.loads(line)["served"] == {LONG: {"production": 1}} for line in lines)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=20) == 0, proc.stderr.read()
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
