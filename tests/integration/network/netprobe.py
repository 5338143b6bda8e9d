"""A tiny probe the network tests run inside namespaces (``ip netns exec NS python ...``).

Stdlib only. Every outcome is printed as one line, so the tests assert on what happened
(``ok <body>`` / ``error <ERRNO>``), never on how long it took.

    serve ADDR PORT            HTTP server (PORT 0: any); prints "ready PORT"; each GET
                               answers with the client's address
    get ADDR PORT [SRC]        one GET (optionally from source address SRC)
    udp-recv ADDR PORT N       print the first N datagrams received
    udp-send ADDR PORT SRC MSG send MSG from source address SRC
"""

from __future__ import annotations

import errno
import http.client
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Generous: a refusal arrives in microseconds; this only bounds a broken run.
_TIMEOUT = 20.0


class _EchoPeer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(addr: str, port: int) -> None:
    server = ThreadingHTTPServer((addr, port), _EchoPeer)
    print("ready", server.server_address[1], flush=True)
    server.serve_forever()


def get(addr: str, port: int, src: str | None) -> None:
    conn = http.client.HTTPConnection(
        addr, port, timeout=_TIMEOUT, source_address=(src, 0) if src else None
    )
    try:
        conn.request("GET", "/")
        print("ok", conn.getresponse().read().decode(), flush=True)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        print("error", name, flush=True)
    finally:
        conn.close()


def get_host(addr: str, port: int, host: str) -> None:
    """``GET /`` to ``addr:port`` with ``Host: host``; "ok <body>", "closed" or "error X"."""
    try:
        with socket.create_connection((addr, port), timeout=_TIMEOUT) as sock:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        print("error", name, flush=True)
        return
    if not data:
        print("closed", flush=True)
        return
    print("ok", data.partition(b"\r\n\r\n")[2].decode(), flush=True)


def udp_recv(addr: str, port: int, count: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, port))
    print("ready", sock.getsockname()[1], flush=True)
    for _ in range(count):
        data, peer = sock.recvfrom(2048)
        print(data.decode(), peer[0], flush=True)


def udp_send(addr: str, port: int, src: str, msg: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 0))
    sock.sendto(msg.encode(), (addr, port))
    print("sent", flush=True)


def main(argv: list[str]) -> None:
    cmd, addr, port, *rest = argv
    if cmd == "serve":
        serve(addr, int(port))
    elif cmd == "get":
        get(addr, int(port), rest[0] if rest else None)
    elif cmd == "get-host":
        get_host(addr, int(port), rest[0])
    elif cmd == "udp-recv":
        udp_recv(addr, int(port), int(rest[0]))
    elif cmd == "udp-send":
        udp_send(addr, int(port), rest[0], rest[1])
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
