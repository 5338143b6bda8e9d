"""Signed ``/files`` URLs: hutch's check agrees with the official SDK's signer."""

from __future__ import annotations

from urllib.parse import parse_qs

from e2b.sandbox.signature import get_signature

from hutch.shared.signatures import check_signature


def _query(path: str, user: str | None, sig: dict) -> dict[str, list[str]]:
    q = {"path": [path], "signature": [sig["signature"]]}
    if user is not None:
        q["username"] = [user]
    if sig["expiration"] is not None:
        q["signature_expiration"] = [str(sig["expiration"])]
    return q


def test_sdk_signatures_verify() -> None:
    for user in (None, "user"):
        for exp in (None, 60):
            sig = get_signature("/home/user/a b.txt", "write", user, "tok", exp)
            query = _query("/home/user/a b.txt", user, sig)
            assert check_signature(query, operation="write", token="tok", now=0) is None


def test_wrong_operation_token_or_expired_is_refused() -> None:
    sig = get_signature("/f", "read", None, "tok", 10)
    query = _query("/f", None, sig)
    assert check_signature(query, operation="write", token="tok", now=0) == "invalid signature"
    assert check_signature(query, operation="read", token="other", now=0) == "invalid signature"
    assert check_signature(query, operation="read", token="tok", now=sig["expiration"] + 1) == (
        "signature expired"
    )


def test_missing_or_malformed_signature() -> None:
    assert check_signature(parse_qs("path=/f"), operation="read", token="t", now=0) == (
        "missing access token or signature"
    )
    q = parse_qs("path=/f&signature=v1_x&signature_expiration=soon")
    assert check_signature(q, operation="read", token="t", now=0) == "invalid signature_expiration"
