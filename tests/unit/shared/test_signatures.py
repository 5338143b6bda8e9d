"""Signed ``/files`` URLs: hutch's check agrees with the official SDK's signer."""

from __future__ import annotations

from urllib.parse import parse_qs

from e2b.sandbox.signature import get_signature

from hutch.shared.signatures import check_signature, expiration_format_error


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
        "signature is already expired"
    )
    # Whole seconds, as Go's time.Now().Unix(): valid through the second it names.
    assert (
        check_signature(query, operation="read", token="tok", now=sig["expiration"] + 0.9) is None
    )
    # Expired but made with another token: "invalid", never a hint that it had been valid.
    assert check_signature(query, operation="read", token="other", now=10**9) == (
        "invalid signature"
    )


def test_missing_or_malformed_signature() -> None:
    assert check_signature(parse_qs("path=/f"), operation="read", token="t", now=0) == (
        "missing signature query parameter"
    )
    q = parse_qs("path=/f&signature=&x=1", keep_blank_values=True)
    assert check_signature(q, operation="read", token="t", now=0) == "invalid signature"
    q = parse_qs("path=/f&signature=v1_x&signature_expiration=soon")
    assert check_signature(q, operation="read", token="t", now=0) == "invalid signature"


def test_expiration_format_errors_are_e2bs_parameter_binding_messages() -> None:
    prefix = "Invalid format for parameter signature_expiration: error binding string parameter: "
    assert expiration_format_error(parse_qs("signature_expiration=12")) is None
    assert expiration_format_error(parse_qs("signature_expiration=-12")) is None
    assert expiration_format_error({}) is None
    for raw in ("soon", " 12", "1_000", "١٢", "+"):
        assert expiration_format_error({"signature_expiration": [raw]}) == (
            prefix + f'strconv.ParseInt: parsing "{raw}": invalid syntax'
        ), raw
    assert expiration_format_error({"signature_expiration": [""]}) == (
        prefix + 'strconv.ParseInt: parsing "": invalid syntax'
    )
    huge = str(1 << 63)
    assert expiration_format_error({"signature_expiration": [huge]}) == (
        prefix + f'strconv.ParseInt: parsing "{huge}": value out of range'
    )
