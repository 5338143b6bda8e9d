"""Identifiers shared by every role, and their generators.

IDs are ``NewType``s over ``str`` so that a ``TeamID`` can never be passed where a
``SandboxID`` is expected (mypy catches it) while costing nothing at run time.

Formats (e2b-compat.md §2.0):

* sandbox ids are ``"i"`` + 20 characters of ``[a-z0-9]`` (infra's format): no ``-`` and no
  upper case, because host routing splits ``<port>-<sandboxId>.<domain>`` on ``-``;
* template ids are 20 characters of ``[a-z0-9]``;
* volume ids are ``"vol"`` + 20 characters of ``[a-z0-9]``;
* team ids and API-key ids are UUID4 strings, as in E2B.

All randomness comes from :mod:`secrets`.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from typing import Final, NewType

SandboxID = NewType("SandboxID", str)
TeamID = NewType("TeamID", str)
TemplateID = NewType("TemplateID", str)
ApiKeyID = NewType("ApiKeyID", str)
NodeID = NewType("NodeID", str)
VolumeID = NewType("VolumeID", str)

_ID_ALPHABET: Final = string.ascii_lowercase + string.digits
_SANDBOX_ID_RE: Final = re.compile(r"^[a-z0-9]{1,64}$")

#: The ``clientID`` infra appends to sandbox ids (``<id>-<clientID>``); constant in E2B.
CLIENT_ID: Final = "6532622b"


def _random_chars(n: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(n))


def new_sandbox_id() -> SandboxID:
    """A fresh sandbox id: ``"i"`` + 20 random characters of ``[a-z0-9]``."""
    return SandboxID("i" + _random_chars(20))


def new_template_id() -> TemplateID:
    """A fresh template id: 20 random characters of ``[a-z0-9]``."""
    return TemplateID(_random_chars(20))


def new_volume_id() -> VolumeID:
    """A fresh volume id: ``"vol"`` + 20 random characters of ``[a-z0-9]``."""
    return VolumeID("vol" + _random_chars(20))


_VOLUME_ID_RE: Final = re.compile(r"^vol[a-z0-9]{20}$")


def is_volume_id(value: str) -> bool:
    """Whether ``value`` has the shape of a volume id (names never do: see ``volumes``)."""
    return _VOLUME_ID_RE.fullmatch(value) is not None


def new_team_id() -> TeamID:
    """A fresh team id (a UUID4 string, like E2B's)."""
    return TeamID(str(uuid.uuid4()))


def new_api_key_id() -> ApiKeyID:
    """A fresh id for an API key record (not the key itself)."""
    return ApiKeyID(str(uuid.uuid4()))


def is_valid_sandbox_id(value: str) -> bool:
    """Whether ``value`` has the shape of a sandbox id (``^[a-z0-9]+$``, at most 64 chars)."""
    return _SANDBOX_ID_RE.fullmatch(value) is not None


def parse_sandbox_id(value: str) -> SandboxID | None:
    """The sandbox id in a path segment, accepting infra's legacy ``<id>-<clientID>`` form.

    Returns ``None`` when ``value`` is not a sandbox id in either form.
    """
    short, _, _client = value.partition("-")
    return SandboxID(short) if is_valid_sandbox_id(short) else None


#: Between a template's name and a build id in the node's name of a kept build
#: (``name@build``): E2B tags point at such builds (api/service/template_tags.py).
TEMPLATE_VERSION_SEP: Final = "@"


def template_version_name(name: str, build_id: str) -> str:
    """The node's name for build ``build_id`` of template ``name``."""
    return f"{name}{TEMPLATE_VERSION_SEP}{build_id}"
