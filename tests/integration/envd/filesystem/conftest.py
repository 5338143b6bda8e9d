"""Plain Connect-over-HTTP helpers for what the SDK does not show (codes, raw fields)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import httpx
import pytest

from tests.integration.envd import connect

SERVICE = "filesystem.Filesystem"

unary = partial(connect.unary, SERVICE)
open_stream = partial(connect.open_stream, SERVICE)
stream_frames = connect.frames
envelope = connect.envelope
basic_auth = connect.basic_auth
assert_healthy = connect.assert_healthy


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c
