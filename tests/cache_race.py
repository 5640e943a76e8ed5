"""Processes racing to fetch one digest into a cache (tests/test_object_store.py); kept apart so
that the racers import little."""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from pathlib import Path
from typing import Any

from registry.artifact_cache import VerifiedCache

# The same bytes in every process, which imports this module afresh.
PAYLOAD = random.Random(0).randbytes(3 << 20)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class CountingSource:
    """Stands in for a bucket: records each opening, and holds its bytes back until every
    racer has arrived, so that they really contend for the digest's lock."""

    def __init__(self, opened: Path, arrived: Any, racers: int) -> None:
        self.opened, self.arrived, self.racers = opened, arrived, racers

    def __call__(self) -> io.BytesIO:
        with open(self.opened, "a") as f:
            f.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + 20
        while self.arrived.value < self.racers and time.monotonic() < deadline:
            time.sleep(0.01)
        return io.BytesIO(PAYLOAD)


def race(cache: str, opened: str, arrived: Any, racers: int, out: Any) -> None:
    """Read the digest through the cache; put the SHA-256 of what came back on ``out``."""
    with arrived.get_lock():
        arrived.value += 1
    data = VerifiedCache(Path(cache)).read(
        DIGEST, CountingSource(Path(opened), arrived, racers), origin="test", model="m", version=1
    )
    out.put(hashlib.sha256(data).hexdigest())
