"""The proxy's ASGI app: route each request to ``(sandbox, port)`` and stream it both ways.

Design (docs/proxy.md): one pooled ``httpx.AsyncClient`` per app. The request body is an
async iterator over ASGI ``receive()`` chunks and the response is relayed with
``aiter_raw()``, so no body is ever held whole and ``Content-Encoding`` passes untouched.
While the response streams, a watcher waits for the client's ``http.disconnect`` and
cancels the exchange, which closes the upstream connection: the SDK cancels a Connect
stream by closing its connection (e2b-compat.md §4.1), and envd must see that at once.

WebSocket upgrades never reach this app; :mod:`hutch.proxy.websocket` relays them below
ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Final

import httptools
import httpx

from hutch.proxy import bodyrelay, errors, metrics
from hutch.proxy.catalog import NODE_TOKEN_HEADER, SandboxCatalog, SandboxRoute
from hutch.proxy.routing import SandboxTarget, SignedFileTarget, is_internal, route
from hutch.shared import logging as hlog
from hutch.shared.errors import UnavailableError
from hutch.shared.ids import SandboxID
from hutch.shared.malloc import BulkTransfers
from hutch.shared.paths import ENVD_PORT

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: RFC 9110 §7.6.1 hop-by-hop headers, plus those the proxy sets itself. ``Host`` is
#: rewritten to the upstream address; headers named in ``Connection`` are dropped too.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
#: The node token never reaches a sandbox, whoever sent it (ADR 0019).
_REQUEST_DROP: Final = HOP_BY_HOP | {b"host", NODE_TOKEN_HEADER}
#: Replaced by the route's own when it goes through a node's proxy.
_SANDBOX_HEADERS: Final = frozenset({b"e2b-sandbox-id", b"e2b-sandbox-port"})
_REQUEST_ID: Final = hlog.REQUEST_ID_HEADER.lower().encode()
#: One line per proxied request (docs/observability.md): grep a sandbox id or request id.
_access = logging.getLogger("hutch.proxy.access")


#: As the pooled client's: connecting to a sandbox port never takes longer.
CONNECT_TIMEOUT_S: Final = 10.0


class _ClientDisconnected(Exception):
    """The client went away while its request body was being read."""


def create_client() -> httpx.AsyncClient:
    """The pooled upstream client.

    No timeouts but connect: Connect streams and watches legitimately idle for minutes (the
    SDK's own deadlines bound them). ``trust_env=False``: an ``HTTP_PROXY`` in the
    environment must not divert sandbox traffic. Cookies are refused, or one client's
    cookies would leak into another's requests through the shared jar.
    """
    return httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=10.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        follow_redirects=False,
        trust_env=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


def _drop_set(headers: list[tuple[bytes, bytes]], base: frozenset[bytes]) -> set[bytes]:
    """``base`` plus every header the ``Connection`` header names (RFC 9110 §7.6.1)."""
    drop = set(base)
    for key, value in headers:
        if key.lower() == b"connection":
            drop.update(token.strip().lower() for token in value.split(b","))
    return drop


def _forwarded(
    scope: Scope, headers: list[tuple[bytes, bytes]], *, trusted: bool = False
) -> list[tuple[bytes, bytes]]:
    """``X-Forwarded-For/-Host/-Proto``: append to the chain, keep the original host (a
    ``trusted`` caller, an edge that proved the cluster token, set them already)."""
    client = scope.get("client")
    client_ip = client[0].encode() if client else b""
    prior = [v for k, v in headers if k.lower() == b"x-forwarded-for"]
    host = next((v for k, v in headers if k.lower() == b"host"), b"")
    proto = str(scope.get("scheme", "http")).encode()
    if trusted:
        host = next((v for k, v in headers if k.lower() == b"x-forwarded-host"), host)
        proto = next((v for k, v in headers if k.lower() == b"x-forwarded-proto"), proto)
    return [
        (b"x-forwarded-for", b", ".join([*prior, client_ip]) if prior else client_ip),
        (b"x-forwarded-host", host),
        (b"x-forwarded-proto", proto),
    ]


def upstream_headers(
    scope: Scope, hop: list[tuple[bytes, bytes]] | None = None, *, trusted: bool = False
) -> list[tuple[bytes, bytes]]:
    """The request headers to send upstream (hop-by-hop removed, forwarding added; with
    ``hop``, the node proxy's headers instead of the client's sandbox headers; ``trusted``:
    the caller is an edge, whose ``X-Forwarded-Host/-Proto`` are kept)."""
    headers: list[tuple[bytes, bytes]] = list(scope["headers"])
    drop = _drop_set(headers, _REQUEST_DROP) | {
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
    }
    if hop:
        drop |= _SANDBOX_HEADERS
    kept = [(k, v) for k, v in headers if k.lower() not in drop]
    return kept + _forwarded(scope, headers, trusted=trusted) + (hop or [])


def token_matches(headers: list[tuple[bytes, bytes]], token: str) -> bool:
    """Whether the request carries ``token`` in :data:`NODE_TOKEN_HEADER` (constant time)."""
    sent = next((v for k, v in headers if k.lower() == NODE_TOKEN_HEADER), b"")
    return hmac.compare_digest(sent, token.encode())


def downstream_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The response headers to send back (hop-by-hop removed; uvicorn re-frames the body)."""
    raw = list(response.headers.raw)
    drop = _drop_set(raw, HOP_BY_HOP)
    return [(k, v) for k, v in raw if k.lower() not in drop]


def _has_body(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        name = key.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _respond(send: Send, answer: tuple[int, bytes]) -> None:
    status, body = answer
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ProxyApp:
    """The ASGI app (module docstring). Build it with :func:`create_app`."""

    def __init__(
        self,
        catalog: SandboxCatalog,
        client: httpx.AsyncClient | None,
        *,
        require_token: str | None = None,
    ) -> None:
        self.catalog = catalog
        #: A node's proxy admits only edges that carry the cluster token (ADR 0019).
        self.require_token = require_token
        self._owns_client = client is None
        self._client = client
        #: Relaying bodies: malloc keeps the pages it reads into (hutch.shared.malloc). No
        #: trim when idle: the proxy is one process per node, not one per sandbox.
        self._transfers = BulkTransfers(trim_when_idle=False)

    @property
    def client(self) -> httpx.AsyncClient:
        # Created lazily, inside the server's event loop: an httpx pool is loop-bound.
        if self._client is None:
            self._client = create_client()
        return self._client

    async def aclose(self) -> None:
        """Close the upstream pool if this app created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        # "websocket" scopes only exist when a server without our relay upgrades; refuse them
        # by returning, which the server turns into a 403.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _resolve(self, scope: Scope) -> tuple[SandboxRoute, int] | tuple[int, bytes]:
        """The sandbox and port a request goes to, or the error answer to give instead."""
        if self.require_token is not None and not token_matches(
            scope["headers"], self.require_token
        ):
            return errors.node_token_refused()
        try:
            target = route(
                method=scope["method"],
                path=scope["path"],
                query_string=scope.get("query_string", b""),
                headers=scope["headers"],
            )
        except errors.RoutingError as exc:
            return errors.bad_request(exc.public_message)
        if isinstance(target, SignedFileTarget):
            found = await self.catalog.lookup_by_file_signature(
                scope.get("query_string", b""), scope["method"]
            )
            return (found, target.port) if found is not None else errors.invalid_signature()
        assert isinstance(target, SandboxTarget)
        if is_internal(target, scope["path"]):
            # Before the lookup: the answer says nothing about which sandboxes exist.
            return errors.internal_route(scope["path"])
        found = await self.catalog.lookup(target.sandbox_id)
        if found is None or not found.running:
            return errors.sandbox_not_found(target.sandbox_id)
        if found.traffic_access_token is not None and target.port != ENVD_PORT:
            # envd's port has its own token (infra skips it too).
            sent = _header(scope, errors.TRAFFIC_TOKEN_HEADER.encode())
            if sent is None:
                return errors.traffic_token_missing(target.sandbox_id)
            if not hmac.compare_digest(sent, found.traffic_access_token.encode()):
                return errors.traffic_token_invalid(target.sandbox_id)
        return found, target.port

    async def resolve(self, scope: Scope) -> tuple[SandboxRoute, int] | tuple[int, bytes]:
        """:meth:`_resolve`, waking a paused auto-resume sandbox first (ADR 0004); 503 when
        the catalog cannot look routes up (``UnavailableError``: an edge's store is down)."""
        try:
            return await self._resolve_or_wake(scope)
        except UnavailableError as exc:
            return errors.routes_unavailable(exc.public_message)

    async def _resolve_or_wake(self, scope: Scope) -> tuple[SandboxRoute, int] | tuple[int, bytes]:
        resolved = await self._resolve(scope)
        if isinstance(resolved[0], int) and resolved[0] != 401:
            asleep = await self._asleep(scope)
            try:
                woken = await self.catalog.wake(asleep) if asleep is not None else None
            except errors.SandboxTransitioningError as exc:
                metrics.AUTO_RESUMES.labels("timeout").inc()
                return errors.still_transitioning(exc.sandbox_id)
            if asleep is not None:
                metrics.AUTO_RESUMES.labels("resumed" if woken is not None else "failed").inc()
            if woken is not None:
                resolved = await self._resolve(scope)
        return resolved

    async def _asleep(self, scope: Scope) -> SandboxID | None:
        """The id of the paused auto-resume sandbox a request is for, if it is for one."""
        try:
            target = route(
                method=scope["method"],
                path=scope["path"],
                query_string=scope.get("query_string", b""),
                headers=scope["headers"],
            )
        except errors.RoutingError:
            return None
        if not isinstance(target, SandboxTarget):
            return None
        found = await self.catalog.lookup(target.sandbox_id)
        if found is None or found.running or not found.auto_resume:
            return None
        return target.sandbox_id

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        incoming = next((v for k, v in scope["headers"] if k == _REQUEST_ID), None)
        request_id = hlog.request_id_from(incoming)
        answered = {"status": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered["status"] = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k != _REQUEST_ID]
                message = {**message, "headers": [*headers, (_REQUEST_ID, request_id.encode())]}
            await send(message)

        started = time.perf_counter()
        outcome = "client_gone"
        port: int | None = None
        with hlog.request_scope(request_id):
            try:
                resolved = await self.resolve(scope)
                if isinstance(resolved[0], int):
                    outcome = "refused"
                    await _respond(send_with_id, resolved)  # type: ignore[arg-type]
                    return
                sandbox, port = resolved  # type: ignore[misc]
                hlog.bind(sandbox_id=sandbox.sandbox_id)
                exchange = _Exchange(self.client, scope, receive, send_with_id, sandbox, port)
                exchange.trusted = self.require_token is not None  # past the token check
                with self._transfers.transfer():
                    await exchange.run()
                outcome = exchange.outcome
            finally:
                status = answered["status"]
                metrics.REQUESTS.labels(outcome, str(status)).inc()
                _access.info(
                    "%s %s %d %.1f ms", scope["method"], outcome, status,
                    (time.perf_counter() - started) * 1000,
                    extra={"status": status, "port": port},
                )  # fmt: skip


class _Exchange:
    """One proxied request/response, cancelled as a whole when the client disconnects."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        scope: Scope,
        receive: Receive,
        send: Send,
        sandbox: SandboxRoute,
        port: int,
    ) -> None:
        self.client, self.scope, self.receive, self.send = client, scope, receive, send
        self.sandbox, self.port = sandbox, port
        self.body_done = asyncio.Event()
        self.started = False
        #: How it ended, for the proxy's metrics (``metrics.REQUESTS``).
        self.outcome = "client_gone"
        self.trusted = False

    def _url(self) -> str:
        host, port = self.sandbox.address(self.port)
        target = self.scope.get("raw_path") or self.scope["path"].encode()
        query = self.scope.get("query_string", b"")
        if query:
            target += b"?" + query
        return f"http://{host}:{port}{target.decode('latin-1')}"

    async def _body(self) -> AsyncIterator[bytes]:
        try:
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    raise _ClientDisconnected
                chunk = message.get("body", b"")
                if chunk:
                    metrics.BYTES.labels("in").inc(len(chunk))
                    yield chunk
                if not message.get("more_body", False):
                    return
        finally:
            self.body_done.set()

    def _headers(self) -> list[tuple[bytes, bytes]]:
        headers = upstream_headers(
            self.scope, self.sandbox.hop_headers(self.port), trusted=self.trusted
        )
        request_id = hlog.current_request_id()
        if request_id is not None:  # a node's proxy logs the edge's id (docs/observability.md)
            headers = [(k, v) for k, v in headers if k.lower() != _REQUEST_ID]
            headers.append((_REQUEST_ID, request_id.encode()))
        mask = self.sandbox.mask_request_host
        if mask is not None and self.port != ENVD_PORT:
            value = mask.replace("${PORT}", str(self.port)).encode()
            headers = [(k, v) for k, v in headers if k.lower() != b"host"] + [(b"host", value)]
        return headers

    async def _forward(self) -> None:
        raw = self.scope.get("extensions", {}).get(bodyrelay.EXTENSION)
        if isinstance(raw, bodyrelay.RawBody) and raw.relayable():
            await self._relay(raw)
            return
        content = self._body() if _has_body(self.scope) else None
        if content is None:
            self.body_done.set()
        headers = self._headers()
        request = httpx.Request(self.scope["method"], self._url(), headers=headers, content=content)
        sent = time.perf_counter()
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            self.outcome = "upstream_error"
            await _respond(self.send, errors.port_not_open(self.sandbox.sandbox_id, self.port))
            return
        except httpx.TransportError:
            if not self.body_done.is_set():
                raise  # the client stopped sending: nobody left to answer
            self.outcome = "upstream_error"
            await _respond(self.send, errors.upstream_failed(self.sandbox.sandbox_id, self.port))
            return
        metrics.UPSTREAM_SECONDS.observe(time.perf_counter() - sent)
        try:
            await self.send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": downstream_headers(response),
                }
            )
            self.started = True
            # aiter_raw: bytes as they arrive, still encoded; a Connect stream's frames reach
            # the client as soon as envd writes them.
            async for chunk in response.aiter_raw():
                metrics.BYTES.labels("out").inc(len(chunk))
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
            await self.send({"type": "http.response.body", "body": b""})
            self.outcome = "proxied"
        finally:
            await response.aclose()

    async def _relay(self, raw: bodyrelay.RawBody) -> None:
        """A large ``Content-Length`` body spliced to the upstream below ASGI (ADR 36
        addendum 2, ``bodyrelay.py``) on a connection of its own; the answer is read with
        httptools and sent through ASGI like any other, so its headers, request id and
        metrics are the same."""
        host, port = self.sandbox.address(self.port)
        try:
            upstream = await asyncio.wait_for(_connect(host, port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            self.outcome = "upstream_error"
            await _respond(self.send, errors.port_not_open(self.sandbox.sandbox_id, self.port))
            return
        with contextlib.closing(upstream):
            sent = time.perf_counter()
            stopped = False
            try:
                size = await raw.relay(upstream, self._relay_head(host, port))
                metrics.BYTES.labels("in").inc(size)
            except bodyrelay.UpstreamStopped:
                stopped = True  # it may have answered already (a 4xx before the body)
            except bodyrelay.ClientGone:
                # Reset, so envd sees the upload abort at once and keeps no file of it.
                _reset(upstream)
                raise _ClientDisconnected from None
            except BaseException:  # cancelled: the proxy stops
                _reset(upstream)
                raise
            finally:
                self.body_done.set()
            await self._relay_answer(upstream, sent, stopped=stopped)

    def _relay_head(self, host: str, port: int) -> bytes:
        target = self.scope.get("raw_path") or self.scope["path"].encode()
        query = self.scope.get("query_string", b"")
        if query:
            target += b"?" + query
        # No Expect upstream: the proxy answered the client's 100-continue itself.
        headers = [(k, v) for k, v in self._headers() if k.lower() != b"expect"]
        if not any(k.lower() == b"host" for k, _ in headers):
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            headers.insert(0, (b"host", authority.encode()))
        lines = [b"%s %s HTTP/1.1" % (self.scope["method"].encode(), target)]
        lines += [k + b": " + v for k, v in headers]
        lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _relay_answer(self, upstream: socket.socket, sent: float, *, stopped: bool) -> None:
        loop = asyncio.get_running_loop()
        reader = bodyrelay.ResponseReader()
        while not reader.complete:
            try:
                data = await loop.sock_recv(upstream, 256 * 1024)
            except OSError:
                data = b""
            if not data and reader.head_done and not reader.framed():
                break  # a body that ends when the connection does
            try:
                if not data:
                    raise bodyrelay.UpstreamStopped("the upstream closed mid-answer")
                reader.feed(data)
            except (bodyrelay.UpstreamStopped, httptools.HttpParserError):
                if self.started:
                    raise  # uvicorn closes the client's connection: a truncated answer
                self.outcome = "upstream_error"
                await _respond(
                    self.send, errors.upstream_failed(self.sandbox.sandbox_id, self.port)
                )
                return
            if reader.head_done and not self.started:
                metrics.UPSTREAM_SECONDS.observe(time.perf_counter() - sent)
                raw = reader.headers
                drop = _drop_set(raw, HOP_BY_HOP)
                headers = [(k, v) for k, v in raw if k not in drop]
                start = {"type": "http.response.start", "status": reader.status}
                await self.send({**start, "headers": headers})
                self.started = True
            chunk = reader.take_body()
            if chunk and self.started:
                metrics.BYTES.labels("out").inc(len(chunk))
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        await self.send({"type": "http.response.body", "body": b""})
        self.outcome = "proxied"

    async def _watch_disconnect(self) -> None:
        await self.body_done.wait()
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def run(self) -> None:
        forward = asyncio.ensure_future(self._forward())
        watch = asyncio.ensure_future(self._watch_disconnect())
        try:
            await asyncio.wait({forward, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (forward, watch):
                task.cancel()
            for task in (forward, watch):
                with contextlib.suppress(asyncio.CancelledError, _ClientDisconnected):
                    await task


async def _connect(host: str, port: int) -> socket.socket:
    """A non-blocking TCP connection to ``host:port`` for a relayed body."""
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))[
        0
    ]
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _reset(sock: socket.socket) -> None:
    """Close with RST, not FIN: the peer sees the request aborted, not merely ended."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def create_app(
    catalog: SandboxCatalog,
    *,
    client: httpx.AsyncClient | None = None,
    require_token: str | None = None,
) -> ProxyApp:
    """The proxy app over ``catalog``; ``client`` is the upstream pool (default: its own);
    ``require_token``: answer 401 to requests without that node token (a node's proxy)."""
    return ProxyApp(catalog, client, require_token=require_token)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None
