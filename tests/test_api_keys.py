"""API keys: the documented format, safe refusals that never echo a key, and scope rules."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from producer.api import KeyRing
from registry import InvalidSettings, Settings, Unauthorized


def _key() -> str:
    return secrets.token_urlsafe(24)


def test_keys_from_settings_and_a_file_authenticate_to_their_names_and_scopes(
    tmp_path: Path,
) -> None:
    ci, ops = _key(), _key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# operators\n\nops:{ops}:admin\n")
    ring = KeyRing.from_settings(Settings(api_keys=f"ci:{ci}:submit+read", api_keys_file=keys_file))
    who = ring.authenticate(ci)
    assert who.name == "ci" and who.scopes == {"submit", "read"}
    assert who.allows("read") and not who.allows("admin") and not who.admin
    admin = ring.authenticate(ops)
    assert admin.admin and admin.allows("submit") and admin.allows("read")
    for wrong in (None, "", ci[:-1], ci + "x", ops.upper()):
        with pytest.raises(Unauthorized):
            ring.authenticate(wrong)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("ci:{key}", "write name:key:scope+scope"),
        ("ci:short:submit", "at least 16"),
        ("ci:{key}:submit+write", "scopes must be some of"),
        ("ci:{key}:", "scopes must be some of"),
        ("bad name:{key}:submit", "name 'bad name'"),
        ("ci:{key}:submit,ci:{other}:read", "repeats a name or a key"),
        ("a:{key}:submit,b:{key}:read", "repeats a name or a key"),
    ],
)
def test_malformed_keys_are_refused_without_echoing_any_key(entry: str, message: str) -> None:
    key, other = _key(), _key()
    with pytest.raises(InvalidSettings) as info:
        KeyRing.from_settings(Settings(api_keys=entry.format(key=key, other=other)))
    assert message in info.value.message
    assert key not in info.value.message and other not in info.value.message


def test_without_keys_the_gateway_refuses_unless_insecure_mode_is_explicit() -> None:
    with pytest.raises(InvalidSettings, match="no API keys configured"):
        KeyRing.from_settings(Settings())
    ring = KeyRing.from_settings(Settings(api_insecure_no_auth=True))
    assert ring.open
    assert ring.authenticate(None).admin


def test_a_missing_keys_file_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettings, match="cannot read PREDICTQ_API_KEYS_FILE"):
        KeyRing.from_settings(Settings(api_keys_file=tmp_path / "nope"))


def test_settings_never_show_the_keys() -> None:
    key = _key()
    settings = Settings(api_keys=f"ci:{key}:submit")
    assert key not in repr(settings) and key not in str(settings.model_dump())
