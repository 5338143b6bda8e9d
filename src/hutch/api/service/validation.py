"""Limits on what a client may ask for; each error names the offending field or key.

Create and (later) metadata PATCH apply the same rules. Sizes are in UTF-8 bytes: the
store's ``(key, value)`` index on PostgreSQL cannot hold entries above ~2.7 KB
(docs/store.md), and env vars end up in a process environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from hutch.shared.errors import InvalidArgumentError

MAX_TIMEOUT_S: Final = 86_400
MAX_METADATA_KEYS: Final = 100
MAX_METADATA_KEY_BYTES: Final = 256
MAX_METADATA_VALUE_BYTES: Final = 2048
MAX_ENV_VARS: Final = 1000
MAX_ENV_KEY_BYTES: Final = 256
MAX_ENV_VALUE_BYTES: Final = 128 * 1024
#: POSIX portable names; anything else cannot be exported by a shell.
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: What SDK 2.63 accepts for ``Idempotency-Key`` (``e2b/retry.py``).
_IDEMPOTENCY_KEY_RE: Final = re.compile(r"[a-z0-9-]{1,255}")


def check_timeout(value: int, *, field: str, minimum: int = 1) -> int:
    """``value`` if it is a whole number of seconds in ``minimum..86400``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{field} must be an integer number of seconds")
    if not minimum <= value <= MAX_TIMEOUT_S:
        raise InvalidArgumentError(f"{field} must be between {minimum} and {MAX_TIMEOUT_S} seconds")
    return value


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def check_metadata(metadata: Mapping[str, str], *, field: str = "metadata") -> dict[str, str]:
    """``metadata`` if it is a small map of non-empty string keys to string values."""
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidArgumentError(f"{field} has more than {MAX_METADATA_KEYS} keys")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgumentError(f"{field}.{key}: keys and values must be strings")
        if not key:
            raise InvalidArgumentError(f"{field}: keys must not be empty")
        if "\x00" in key or "\x00" in value:
            raise InvalidArgumentError(f"{field}.{key}: NUL characters are not allowed")
        if _size(key) > MAX_METADATA_KEY_BYTES:
            raise InvalidArgumentError(
                f"{field}: key {key[:32]!r}... is longer than {MAX_METADATA_KEY_BYTES} bytes"
            )
        if _size(value) > MAX_METADATA_VALUE_BYTES:
            raise InvalidArgumentError(
                f"{field}.{key}: value is longer than {MAX_METADATA_VALUE_BYTES} bytes"
            )
    return dict(metadata)


def check_metadata_patch(patch: object, *, field: str = "metadata") -> dict[str, str | None]:
    """A metadata PATCH body: an object of keys to a string (set) or ``null``/``""`` (remove).

    The keys and the values that set something obey :func:`check_metadata`'s limits; the
    total after merging is checked by the caller (:func:`check_metadata` on the result).
    """
    if not isinstance(patch, Mapping):
        raise InvalidArgumentError(f"{field}: the body must be a JSON object")
    sets: dict[str, str] = {}
    for key, value in patch.items():
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(
                f"{field}.{key}: the value must be a string (set) or null (remove), "
                f"not {type(value).__name__}"
            )
        sets[key] = value or "-"  # removals: only the key is checked
    if len(patch) > MAX_METADATA_KEYS:
        raise InvalidArgumentError(f"{field} has more than {MAX_METADATA_KEYS} keys")
    check_metadata(sets, field=field)
    return {key: (value if value else None) for key, value in patch.items()}


def check_env_vars(env_vars: Mapping[str, str], *, field: str = "envVars") -> dict[str, str]:
    """``env_vars`` if every name is a portable variable name and every value a string."""
    if len(env_vars) > MAX_ENV_VARS:
        raise InvalidArgumentError(f"{field} has more than {MAX_ENV_VARS} variables")
    for key, value in env_vars.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArgumentError(f"{field}.{key}: names and values must be strings")
        if _ENV_NAME_RE.fullmatch(key) is None or _size(key) > MAX_ENV_KEY_BYTES:
            raise InvalidArgumentError(f"{field}: {key[:64]!r} is not a valid variable name")
        if "\x00" in value:
            raise InvalidArgumentError(f"{field}.{key}: NUL characters are not allowed")
        if _size(value) > MAX_ENV_VALUE_BYTES:
            raise InvalidArgumentError(
                f"{field}.{key}: value is longer than {MAX_ENV_VALUE_BYTES} bytes"
            )
    return dict(env_vars)


def check_idempotency_key(key: str) -> str:
    """``key`` if it has the shape the SDK allows (1-255 of ``[a-z0-9-]``)."""
    if _IDEMPOTENCY_KEY_RE.fullmatch(key) is None:
        raise InvalidArgumentError(
            "Idempotency-Key must be 1-255 characters of lowercase letters, digits and '-'"
        )
    return key


def check_auto_pause_memory(
    value: bool | None, *, auto_pause: bool, auto_resume: bool | None
) -> bool:
    """``autoPauseMemory`` (default true), refused where infra refuses it.

    It only says what a timeout's auto-pause keeps, so without ``autoPause`` it is an
    error rather than silently stored; and a filesystem-only pause has no memory for
    traffic to wake, so it cannot be combined with auto-resume (infra's
    ``sandbox_create.go``, same messages).
    """
    if value is None or value:
        return True
    if not auto_pause:
        raise InvalidArgumentError("autoPauseMemory=false only applies when autoPause is true.")
    if auto_resume:
        raise InvalidArgumentError(
            "autoPauseMemory=false (filesystem-only auto-pause) cannot be combined with "
            "autoResume: a filesystem-only snapshot cannot be auto-resumed by traffic and "
            "must be resumed explicitly."
        )
    return False
