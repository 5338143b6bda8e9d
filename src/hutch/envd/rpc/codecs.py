"""Connect codecs that answer a malformed request body with invalid_argument.

connectrpc's own codecs let JSON and protobuf parse errors escape as plain exceptions,
which it reports as ``unknown`` (HTTP 500). A body the client got wrong is the client's
error: these wrappers translate it at the seam. Pass ``codecs()`` to a Connect ASGI app.
"""

from __future__ import annotations

from typing import Any

from connectrpc.code import Code
from connectrpc.codec import Codec, proto_binary_codec, proto_json_codec
from connectrpc.errors import ConnectError


class StrictCodec:
    """Wraps a codec; decode failures become ``ConnectError(INVALID_ARGUMENT)``."""

    def __init__(self, inner: Codec) -> None:
        self._inner = inner

    def name(self) -> str:
        return self._inner.name()

    def encode(self, message: Any) -> bytes:
        return self._inner.encode(message)

    def decode(self, data: bytes | bytearray, message_class: type) -> Any:
        try:
            return self._inner.decode(data, message_class)
        except ConnectError:
            raise
        except Exception as exc:
            raise ConnectError(
                Code.INVALID_ARGUMENT,
                f"malformed {self._inner.name()} request body: {exc}",
            ) from None


def codecs() -> list[Codec]:
    """The binary and JSON protobuf codecs, strict about bad input."""
    return [StrictCodec(proto_binary_codec()), StrictCodec(proto_json_codec())]
