"""Validation of model and alias names, which become Redis keys and directory names."""

from __future__ import annotations

import re

from .errors import InvalidName

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_name(value: str, what: str = "model name") -> str:
    """``value`` when it is a safe name, else InvalidName saying what is allowed."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidName(
            f"{what} {value!r} is not allowed: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return value
