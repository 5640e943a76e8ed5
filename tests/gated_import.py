"""A model class whose module takes as long to import as the test says: a big library's import.

When the file named by PREDICTQ_TEST_IMPORT_GATE is absent, importing this module marks
``<gate>.importing`` and then waits (60 s at most) until the gate file exists.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sklearn.dummy import DummyClassifier

_gate = os.environ.get("PREDICTQ_TEST_IMPORT_GATE")
if _gate and not Path(_gate).exists():
    Path(f"{_gate}.importing").touch()
    _deadline = time.monotonic() + 60
    while not Path(_gate).exists() and time.monotonic() < _deadline:
        time.sleep(0.05)  # the import is what is slow here: nothing to synchronise with


class GatedClassifier(DummyClassifier):
    """A DummyClassifier defined in a module that is slow to import."""
