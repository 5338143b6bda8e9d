"""The error tree across the node API: the node's one mapping (``node/http/errors.py``)
and the client's (``api/nodes/errors.py``) are inverse for every class of the tree."""

from __future__ import annotations

import httpx
import pytest

from hutch.api.nodes.errors import from_response, from_wire
from hutch.node.http.errors import error_response, wire_error
from hutch.node.sandbox.models import SandboxNotFoundError
from hutch.shared import errors
from hutch.shared.errors import HutchError, http_status
from hutch.shared.nodewire import WireError

TREE = [
    cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, HutchError)
]


@pytest.mark.parametrize("cls", TREE, ids=lambda c: c.__name__)
def test_nodewire_errors_every_class_round_trips(cls: type[HutchError]) -> None:
    sent = cls("inner detail", public_message="what a client sees", error_code="some_code")
    response = error_response(sent)
    assert response.status_code == http_status(sent)
    got = from_response(
        httpx.Response(response.status_code, content=bytes(response.body)), what="x"
    )
    assert type(got) is cls
    assert (got.message, got.public_message, got.retryable, got.error_code) == (
        "inner detail", "what a client sees", cls.retryable, "some_code",
    )  # fmt: skip


def test_nodewire_errors_node_subclass_crosses_as_its_shared_class() -> None:
    body = wire_error(SandboxNotFoundError("sandbox x is not on this node"))
    assert (body.error, body.code) == ("NotFoundError", "not_found")
    assert type(from_wire(body)) is errors.NotFoundError


def test_nodewire_errors_unknown_class_falls_back_to_its_code() -> None:
    body = WireError(error="FutureError", code="aborted", message="m", public_message="p")
    assert type(from_wire(body)) is errors.ConflictError


def test_nodewire_errors_crash_is_internal_without_details() -> None:
    body = wire_error(ZeroDivisionError("secret detail"))
    assert (body.error, body.public_message) == ("HutchError", "internal error on the node")


def test_nodewire_errors_answer_without_body_is_unavailable_for_5xx() -> None:
    got = from_response(httpx.Response(502, content=b"<html>bad gateway"), what="GET /v1/node")
    assert type(got) is errors.UnavailableError and got.retryable
