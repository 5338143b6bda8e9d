"""Sealed sessions (``hutch.dashboard.sessions``): what opens, and everything that must not."""

from __future__ import annotations

import base64

from hutch.dashboard.sessions import SessionCodec


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_seal_opens_to_the_same_session() -> None:
    codec = SessionCodec(b"s" * 32, ttl_s=60, clock=Clock())
    session = codec.new("e2b_secretkey")
    opened = codec.open(codec.seal(session))
    assert opened == session
    assert opened.expires_at == 1_000_060.0
    assert "e2b_secretkey" not in repr(opened)


def test_sessions_seal_hides_the_key_and_differs_each_time() -> None:
    codec = SessionCodec(b"s" * 32, ttl_s=60)
    session = codec.new("e2b_secretkey")
    one, two = codec.seal(session), codec.seal(session)
    assert one != two  # a fresh nonce per seal
    for value in (one, two):
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        assert b"e2b_secretkey" not in raw and b"secretkey" not in raw


def test_sessions_open_refuses_expired_tampered_foreign_and_garbage() -> None:
    clock = Clock()
    codec = SessionCodec(b"s" * 32, ttl_s=60, clock=clock)
    value = codec.seal(codec.new("k"))
    other = SessionCodec(b"t" * 32, ttl_s=60, clock=clock)
    assert other.open(value) is None  # another secret
    flipped = value[:10] + ("A" if value[10] != "A" else "B") + value[11:]
    assert codec.open(flipped) is None
    for garbage in (None, "", "not base64 !", "AAAA", "x" * 5000, value[:20]):
        assert codec.open(garbage) is None
    clock.now += 60
    assert codec.open(value) is None  # expired at its end


def test_sessions_new_sessions_have_distinct_ids_and_tokens() -> None:
    codec = SessionCodec(b"s" * 32, ttl_s=60)
    a, b = codec.new("k"), codec.new("k")
    assert a.session_id != b.session_id and a.csrf_token != b.csrf_token
    assert len(a.csrf_token) >= 32
