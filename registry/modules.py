"""The Python modules an artifact needs, read from its bytes without loading it.

A pickle names every class and function it rebuilds (its GLOBAL and STACK_GLOBAL opcodes), and
unpickling imports each of them. Reading those names first lets predictq refuse, in one line,
an artifact whose custom code is not installed, instead of failing half-way through a load.

joblib files are not plain pickles: each numpy array's raw bytes follow its wrapper object in
the stream, so ``pickletools.genops`` stops at the first array. They are read with a
restricted unpickler instead, which imports nothing: every name resolves to an inert
stand-in, except numpy's ``dtype`` (needed to know how many array bytes to skip).
"""

from __future__ import annotations

import _compat_pickle
import bz2
import gzip
import importlib.util
import io
import json
import logging
import lzma
import pickle
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .errors import MissingModule

log = logging.getLogger(__name__)

# joblib's compressed files, by magic number: each decompresses to the same stream as an
# uncompressed dump. lz4 needs a package predictq does not depend on: its modules go unread.
_DECOMPRESS: list[tuple[bytes, Callable[[bytes], bytes]]] = [
    (b"\x1f\x8b", gzip.decompress),
    (b"BZh", bz2.decompress),
    (b"\xfd7zXZ", lzma.decompress),
    (b"]\x00\x00", lzma.decompress),
    (b"x", zlib.decompress),
]


class _Inert:
    """Stands in for any class or function a pickle names: building it runs no code."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    # The opcodes that fill lists, dicts and sets call these on the object being built.
    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def add(self, item: Any) -> None:
        pass


class _ArrayWrapper(_Inert):
    """joblib's NumpyArrayWrapper: its state says how many raw bytes follow it."""

    state: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


class _Scanner(pickle._Unpickler):
    """Walks a (joblib) pickle, recording the modules it names and importing none of them."""

    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(self, file: io.BytesIO, found: set[str]) -> None:
        super().__init__(file)
        self.file = file
        self.found = found

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3:  # type: ignore[attr-defined]
            # Protocol 2 spells some modules as Python 2 did (__builtin__); loading maps them.
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        self.found.add(module.partition(".")[0])
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module.startswith("joblib.") and name == "NumpyArrayWrapper":
            return _ArrayWrapper
        return _Inert

    def load_build(self) -> None:
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        wrapper = self.stack[-1]  # type: ignore[attr-defined]
        if isinstance(wrapper, _ArrayWrapper):
            self._skip_array(wrapper.state)

    dispatch[pickle.BUILD[0]] = load_build  # type: ignore[assignment]

    def _skip_array(self, state: dict[str, Any]) -> None:
        """Read past the array bytes joblib wrote right after the wrapper."""
        dtype = state.get("dtype")
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError("array wrapper without a dtype")
        if dtype.hasobject:
            # Arrays of objects are a nested pickle, with names of their own.
            _Scanner(self.file, self.found).load()
            return
        # Wrappers from joblib <= 1.1 have no alignment, and no padding byte.
        if state.get("numpy_array_alignment_bytes") is not None:
            self.file.read(self.file.read(1)[0])
        count = 1
        for n in state.get("shape", ()):
            count *= int(n)
        if len(self.file.read(count * dtype.itemsize)) != count * dtype.itemsize:
            raise pickle.UnpicklingError("the stream ends inside an array")


def _joblib_modules(data: bytes) -> set[str]:
    for magic, decompress in _DECOMPRESS:
        if data.startswith(magic):
            data = decompress(data)
            break
    found: set[str] = set()
    _Scanner(io.BytesIO(data), found).load()
    return found


def _skops_modules(data: bytes) -> set[str]:
    """The packages of every type a skops file's schema names."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        schema = json.loads(z.read("schema.json"))
    found: set[str] = set()
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            module = node.get("__module__")
            if isinstance(module, str):
                found.add(module.partition(".")[0])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found


def needed_modules(data: bytes, fmt: str) -> list[str] | None:
    """The top-level modules loading ``data`` imports, sorted; None when it cannot be read."""
    try:
        found = _skops_modules(data) if fmt == "skops" else _joblib_modules(data)
    except Exception as e:  # a stream this reader does not follow: the load will tell
        log.warning("could not read the modules a %s artifact needs: %s", fmt, e)
        return None
    return sorted(found)


def importable(module: str) -> bool:
    """Whether ``module`` can be imported here, found without importing it."""
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def first_missing(modules: Iterable[str] | None) -> str | None:
    """The first of ``modules`` that is not importable here, if any."""
    return next((m for m in modules or () if not importable(m)), None)


def unimportable(module: str, model: str) -> MissingModule:
    """The error of a registration whose artifact needs ``module``, absent here."""
    return MissingModule(
        f"model needs module {module!r}, which is not importable here: install the package "
        "that provides it (or set PYTHONPATH) and register again",
        module=module,
        model=model,
    )


def require_importable(data: bytes, fmt: str, model: str) -> list[str] | None:
    """The modules an artifact needs; MissingModule, before any unpickling, if one is absent."""
    modules = needed_modules(data, fmt)
    if modules is not None and "__main__" in modules:
        # Always importable here, and never the same module in a worker.
        raise MissingModule(
            "model uses a class or function defined in __main__ (a script or a notebook), "
            "which no worker can import: move it into a module, install that module where "
            "the workers run (or put it on PYTHONPATH), fit again and register",
            module="__main__",
            model=model,
        )
    missing = first_missing(modules)
    if missing is not None:
        raise unimportable(missing, model)
    return modules
