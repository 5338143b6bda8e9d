"""Sealed sessions: the browser holds an opaque, encrypted cookie; only an api can open it.

A session is the API key it signed in with, a CSRF token, an id and an expiry, sealed with
AES-256-GCM under a key derived (HKDF-SHA256) from a secret every api shares (the store's,
or ``HUTCH_DASHBOARD_SECRET``): any api behind a load balancer opens any other's session,
and nothing is stored per session (ADR 0026). The cookie is ``HttpOnly`` (no script reads
it), ``SameSite=Strict`` (no other site's page sends it), ``Secure`` over https, and scoped
to ``/dashboard``; the key inside is never shown to the page, put in a URL or logged.

Whether the key still works is the api's business: every bridged call carries it, so a
revoked key's session answers 401 on its next call (and the cookie is cleared then).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: The cookie's name and path (only ``/dashboard/...`` requests carry it).
COOKIE_NAME = "hutch_dashboard"
COOKIE_PATH = "/dashboard"
#: Bound into every seal: a value sealed for something else never opens as a session.
_AAD = b"hutch-dashboard-session-v1"
_NONCE_BYTES = 12
#: A cookie longer than this is not ours (browsers keep 4 KiB per cookie).
_MAX_COOKIE = 4096


@dataclass(frozen=True, slots=True)
class Session:
    """One sign-in: its id, the key it carries, its CSRF token and when it ends (Unix s)."""

    session_id: str
    api_key: str
    csrf_token: str
    expires_at: float

    def __repr__(self) -> str:  # the key never reaches a log line
        return f"Session(session_id={self.session_id!r}, expires_at={self.expires_at})"


class SessionCodec:
    """Seals and opens sessions under one secret (see the module docstring)."""

    def __init__(
        self, secret: bytes, *, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"hutch dashboard sessions"
        ).derive(secret)
        self._aead = AESGCM(key)
        self._ttl_s = ttl_s
        self._clock = clock

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    def new(self, api_key: str) -> Session:
        """A fresh session for ``api_key``, ending ``ttl_s`` from now."""
        return Session(
            session_id=secrets.token_urlsafe(16),
            api_key=api_key,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=self._clock() + self._ttl_s,
        )

    def seal(self, session: Session) -> str:
        """The cookie value: base64url(nonce | AES-GCM(JSON)), no padding."""
        payload = json.dumps(
            {
                "i": session.session_id,
                "k": session.api_key,
                "c": session.csrf_token,
                "e": session.expires_at,
            },
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, payload, _AAD)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def open(self, value: str | None) -> Session | None:
        """The session ``value`` seals, or None: absent, tampered with, sealed under
        another secret, malformed, or expired."""
        if not value or len(value) > _MAX_COOKIE:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            payload = json.loads(self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD))
            session = Session(
                session_id=str(payload["i"]),
                api_key=str(payload["k"]),
                csrf_token=str(payload["c"]),
                expires_at=float(payload["e"]),
            )
        except (binascii.Error, ValueError, InvalidTag, KeyError, TypeError):
            return None
        if session.expires_at <= self._clock():
            return None
        return session
