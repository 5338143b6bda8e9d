"""The dashboard's bridges against the direct paths: what the extra hop costs.

Run as root from the repository:

    HUTCH_TEST_SLOT=N .venv/bin/python bench/dashboard.py [-n 50]

It starts its own ``hutch serve`` on the e2e tests' host names of slot ``N`` (so not while
that slot's e2e tests run), one busybox sandbox, signs in to the dashboard, and times each
call both ways: the API direct (``X-API-Key``) and through ``/dashboard/api``; envd through
the proxy (SDK headers) and through the envd bridge; the terminal's keystroke echo. Then it
removes everything it started.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _table import print_table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.e2e.serveproc import Serve, nodehelpers, seed_templates  # noqa: E402

MIB = 1 << 20


def _ms(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{statistics.median(values) * 1000:.1f} / {p95 * 1000:.1f} ms"


def _times(n: int, fn: Callable[[], object]) -> list[float]:
    fn()  # warm: connections, caches
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _ok(response: httpx.Response) -> httpx.Response:
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50, help="calls per small measurement")
    parser.add_argument("--mib", type=int, default=16, help="size of the transfer measured")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/dashboard.py needs root (runc, network namespaces)")
    from e2b import Sandbox
    from websockets.sync.client import connect

    home = Path(tempfile.mkdtemp(prefix="hutch-bench-dashboard-", dir="/var/tmp"))
    seed_templates(home)
    serve = Serve(home=home, envd_bundle=nodehelpers.cached_envd_bundle(), metrics_port=None)
    rows: list[tuple[str, str, str]] = []
    try:
        key = serve.hutch("keys", "create").strip()
        serve.start()
        sandbox = Sandbox.create(
            "busybox", api_key=key, api_url=serve.api_url, sandbox_url=serve.sandbox_url
        )
        sid = sandbox.sandbox_id
        read = httpx.get(f"{serve.api_url}/sandboxes/{sid}", headers={"X-API-Key": key})
        token = _ok(read).json().get("envdAccessToken")
        envd_headers = {"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "49983"}
        if token:
            envd_headers["X-Access-Token"] = token
        direct_api = httpx.Client(base_url=serve.api_url, headers={"X-API-Key": key}, timeout=60)
        direct_envd = httpx.Client(base_url=serve.sandbox_url, headers=envd_headers, timeout=120)
        board = httpx.Client(base_url=serve.api_url, timeout=120)
        sign_in = _times(
            args.n, lambda: _ok(board.post("/dashboard/session", json={"apiKey": key}))
        )
        csrf = board.post("/dashboard/session", json={"apiKey": key}).json()["csrfToken"]
        board.headers["X-CSRF-Token"] = csrf
        rows.append(("sign in (POST /dashboard/session)", "-", _ms(sign_in)))
        rows.append((
            "list sandboxes (GET /v2/sandboxes)",
            _ms(_times(args.n, lambda: _ok(direct_api.get("/v2/sandboxes")))),
            _ms(_times(args.n, lambda: _ok(board.get("/dashboard/api/v2/sandboxes")))),
        ))  # fmt: skip
        envd = f"/dashboard/sandboxes/{sid}/envd"
        listdir = {"path": "/etc", "depth": 1}
        rows.append((
            "envd ListDir /etc (Connect JSON)",
            _ms(_times(args.n, lambda: _ok(direct_envd.post(
                "/filesystem.Filesystem/ListDir", json=listdir)))),
            _ms(_times(args.n, lambda: _ok(board.post(
                f"{envd}/filesystem.Filesystem/ListDir", json=listdir)))),
        ))  # fmt: skip
        blob = os.urandom(args.mib * MIB)

        def upload(client: httpx.Client, url: str) -> None:
            _ok(client.post(url, params={"path": "/tmp/blob"}, files={"file": ("blob", blob)}))

        def download(client: httpx.Client, url: str) -> None:
            assert len(_ok(client.get(url, params={"path": "/tmp/blob"})).content) == len(blob)

        def rate(fn: Callable[[], object]) -> str:
            best = min(_times(3, fn))
            return f"{args.mib / best:.0f} MiB/s"

        rows.append((
            f"upload {args.mib} MiB (POST /files)",
            rate(lambda: upload(direct_envd, "/files")),
            rate(lambda: upload(board, f"{envd}/files")),
        ))  # fmt: skip
        rows.append((
            f"download {args.mib} MiB (GET /files)",
            rate(lambda: download(direct_envd, "/files")),
            rate(lambda: download(board, f"{envd}/files")),
        ))  # fmt: skip
        ws_url = serve.api_url.replace("http://", "ws://")
        cookie = board.cookies["hutch_dashboard"]
        t0 = time.perf_counter()
        with connect(
            f"{ws_url}/dashboard/sandboxes/{sid}/terminal?csrf={csrf}",
            additional_headers={"Cookie": f"hutch_dashboard={cookie}", "Origin": serve.api_url},
        ) as ws:
            ws.recv(timeout=60)  # the first output: the prompt
            opened = time.perf_counter() - t0
            echoes = []
            for i in range(args.n):
                mark = f"{i % 10}".encode()
                t1 = time.perf_counter()
                ws.send(json.dumps({"type": "input", "data": mark.decode()}))
                seen = b""
                while mark not in seen:
                    frame = ws.recv(timeout=30)
                    seen += frame if isinstance(frame, bytes) else b""
                echoes.append(time.perf_counter() - t1)
        rows.append(("terminal: open to first output", "-", f"{opened * 1000:.0f} ms"))
        rows.append(("terminal: keystroke echo", "-", _ms(echoes)))
        sandbox.kill()
    finally:
        serve.stop()
        serve.destroy_everything()
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    print_table(
        f"dashboard bridges on this machine ({os.cpu_count()} CPUs); median / p95 or best of 3",
        rows,
        ("call", "direct (SDK path)", "through the dashboard"),
    )


if __name__ == "__main__":
    main()
