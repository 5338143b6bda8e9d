"""envd benchmark: start time, idle memory, command latency, file throughput.

Run as root from the repository:  .venv/bin/python bench/envd.py [--size-mib 256] [--before REF]
It starts its own envd on a free loopback port, drives it with the official e2b SDK in
debug mode (and plain HTTP for multipart uploads), prints a table, and cleans up.
File throughput is measured twice: straight to envd, and through hutch's sandbox proxy
(``hutch.proxy``, in its own process, routing ``E2b-Sandbox-Id`` to that envd), which is
the path every SDK call takes in a deployment.
``--before REF`` also measures file throughput against envd's and the proxy's code at git
REF (its ``src/`` exported to a temporary directory) in the same run, before and after in
one table, each column with the ``cp`` floor measured just before it. ``--repeat N``
measures N rounds, the columns interleaved, and prints each row's median with its range.

Every row starts on equal pages (ADR 36 addendum 3): each row's file is removed as soon as
it is measured (nothing accumulates into the kernel's background writeback), and before
each row ``size`` bytes are written to a scratch file and removed, so no row pays for pages
the hypervisor took back (this VM's balloon reports free pages to the host; the first touch
of such a page costs ~2.5 ms per MiB). One POST and the multipart parts are sent by one
process with ``sendfile(2)`` (``_sendfile.py``), parts straight from their offsets in the
source: the client copies nothing and spawns nothing per part, so the rows measure envd
and the proxy, not the client.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
from _sendfile import send_range
from _table import print_table

#: The proxy, routing the sandbox ``ibench``'s envd port to the envd under test.
_PROXY = """
import sys, uvicorn
from hutch.proxy.catalog import InMemorySandboxCatalog, SandboxRoute
from hutch.proxy.runner import create_config
catalog = InMemorySandboxCatalog()
catalog.put(SandboxRoute("ibench", "127.0.0.1", ports={49983: int(sys.argv[1])}))
uvicorn.Server(create_config(catalog, host="127.0.0.1", port=int(sys.argv[2]))).run()
"""
_ROUTE = {"E2b-Sandbox-Id": "ibench", "E2b-Sandbox-Port": "49983"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(state: Path, *, src: Path | None = None) -> tuple[subprocess.Popen[bytes], str, float]:
    port = _free_port()
    env = dict(os.environ)
    if src is not None:  # an older envd's code first on the path (``--before``)
        env["PYTHONPATH"] = str(src)
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hutch.envd",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--state-dir",
            str(state),
            "--log-level",
            "warning",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 204:
                    return proc, url, time.perf_counter() - t0
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("envd exited during start") from None
            time.sleep(0.002)


def _start_proxy(envd_url: str, *, src: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    envd_port = envd_url.rsplit(":", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", _PROXY, envd_port, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    request = urllib.request.Request(url + "/health", headers=_ROUTE)
    while True:
        try:
            with urllib.request.urlopen(request, timeout=1) as r:
                if r.status == 204:
                    return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the proxy exited during start") from None
            time.sleep(0.01)


def _proxied_sandbox(proxy_url: str) -> object:
    """An SDK handle whose calls go through the proxy, as ``Sandbox.create`` builds one from
    an API answer (debug mode's id ``debug_sandbox_id`` is not a valid sandbox id)."""
    from e2b import ConnectionConfig, Sandbox
    from packaging.version import Version

    config = ConnectionConfig(
        sandbox_url=proxy_url,
        api_key=os.environ["E2B_API_KEY"],
        debug=False,
        extra_sandbox_headers=_ROUTE,
    )
    return Sandbox(
        sandbox_id="ibench",
        sandbox_domain=None,
        envd_version=Version("0.6.13"),
        envd_access_token=None,
        traffic_access_token=None,
        connection_config=config,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=10)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _mib_s(size: int, seconds: float) -> str:
    return f"{size / 2**20 / seconds:,.0f} MiB/s"


#: The envd and the proxy whose CPU time the throughput rows report (CPU seconds per GiB
#: moved: on a loaded machine a steadier measure of their own cost than MiB/s).
_SERVERS: dict[str, int] = {}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _clock() -> tuple[float, dict[str, float]]:
    return time.perf_counter(), {name: _cpu_seconds(pid) for name, pid in _SERVERS.items()}


def _rate(size: int, start: tuple[float, dict[str, float]], seconds: float | None = None) -> str:
    """MiB/s since ``start`` (or over ``seconds``), and each server's CPU-s/GiB meanwhile."""
    t0, cpu0 = start
    elapsed = seconds if seconds is not None else time.perf_counter() - t0
    gib = size / 2**30
    cpu = " + ".join(
        f"{name} {(_cpu_seconds(pid) - cpu0[name]) / gib:.2f}" for name, pid in _SERVERS.items()
    )
    return f"{_mib_s(size, elapsed)} ({cpu} CPU-s/GiB)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=200, help="commands.run samples")
    parser.add_argument("--before", metavar="REF", help="also measure file throughput at REF")
    parser.add_argument(
        "--repeat", type=int, default=1, help="file-throughput rounds; each row is the median"
    )
    args = parser.parse_args()
    size = args.size_mib * 2**20
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-", dir="/var/tmp"))
    rows: list[tuple[str, str]] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        starts = []
        for i in range(5):
            proc, _, seconds = _start(work / f"s{i}")
            starts.append(seconds)
            _stop(proc)
        rows.append(
            ("envd start to healthy (median of 5)", f"{statistics.median(starts) * 1000:.0f} ms")
        )

        proc, url, _ = _start(work / "state")
        os.environ.update(E2B_DEBUG="true", E2B_SANDBOX_URL=url, E2B_API_KEY="e2b_" + "0" * 40)
        from e2b import Sandbox

        time.sleep(0.5)
        rows.append(("envd idle RSS", f"{_rss_mib(proc.pid):.1f} MiB"))
        sbx = Sandbox.create()
        # As `nobody`: the SDK runs `bash -l -c`, and root's login profile on a development
        # host (pyenv, cargo) costs more than envd itself. Sandboxes' users have lean ones.
        sbx.commands.run("true", user="nobody")  # warm the connection pool
        lat = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            sbx.commands.run("true", user="nobody")
            lat.append(time.perf_counter() - t0)
        rows.append(
            (
                f'commands.run("true") median ({args.runs} runs)',
                f"{statistics.median(lat) * 1000:.1f} ms",
            )
        )
        rows.append(('commands.run("true") p95', f"{_pct(lat, 0.95) * 1000:.1f} ms"))
        rows.append(("envd RSS after the runs", f"{_rss_mib(proc.pid):.1f} MiB"))

        src = work / "src.bin"
        with open(src, "wb") as f:
            for _ in range(size // 2**20):
                f.write(os.urandom(2**20))
        os.sync()
        runs = [("this tree", url, work / "now", sbx, None, proc.pid)]
        helpers: list[subprocess.Popen[bytes]] = []
        try:
            if args.before:
                old_src = work / "before-src"
                old_src.mkdir()
                archive = subprocess.run(
                    ["git", "archive", args.before, "src"], check=True, capture_output=True
                ).stdout
                subprocess.run(["tar", "-x", "-C", str(old_src)], input=archive, check=True)
                old_proc, old_url, _ = _start(work / "state-before", src=old_src / "src")
                helpers.append(old_proc)
                os.environ["E2B_SANDBOX_URL"] = old_url
                before = (f"before ({args.before})", old_url, work / "before", Sandbox.create())
                runs.insert(0, (*before, old_src / "src", old_proc.pid))
            proxies = []
            for _, u, _, _, code, _ in runs:
                proxy, proxy_url = _start_proxy(u, src=code)
                helpers.append(proxy)
                proxies.append((proxy, proxy_url, _proxied_sandbox(proxy_url)))
            # Rounds interleave the columns (before, after, before, ...): the machine's
            # drift (other sessions, the page cache) reaches both alike.
            samples: list[list[list[tuple[str, str]]]] = [[] for _ in runs]
            for round_ in range(args.repeat):
                for i, ((_, u, d, s, _, envd_pid), (proxy, proxy_url, psbx)) in enumerate(
                    zip(runs, proxies, strict=True)
                ):
                    pids = (envd_pid, proxy.pid)
                    rows_i = _throughput(
                        u, src, d / str(round_), size, args.size_mib, s, (proxy_url, psbx), pids
                    )
                    samples[i].append(rows_i)
        finally:
            for helper in helpers:
                _stop(helper)
        columns = [_median_rows(column) for column in samples]
        throughput = [(label, *(c[label] for c in columns)) for label in columns[0]]
        load = f"{os.getloadavg()[0]:.1f}"
        throughput.append(("load average (1 min) at the end", *[load] * len(columns)))
    finally:
        if proc is not None and proc.poll() is None:
            _stop(proc)  # also when a measurement failed: never leave an envd behind
        shutil.rmtree(work, ignore_errors=True)

    print_table(f"envd on this machine ({os.cpu_count()} CPUs)", rows, ("measure", "value"))
    print_table(
        f"file throughput, {args.size_mib} MiB", throughput, ("measure", *(r[0] for r in runs))
    )


def _median_rows(rounds: list[list[tuple[str, str]]]) -> dict[str, str]:
    """Per row, the round with the median MiB/s (its CPU figures with it), and the range."""
    out: dict[str, str] = {}
    for label, _ in rounds[0]:
        values = [dict(r)[label] for r in rounds]
        ordered = sorted(values, key=lambda v: float(v.split()[0].replace(",", "")))
        median = ordered[(len(ordered) - 1) // 2]
        if len(values) > 1:
            low, high = ordered[0].split()[0], ordered[-1].split()[0]
            median += f" [{low}-{high}]"
        out[label] = median
    return out


def _throughput(
    url: str,
    src: Path,
    work: Path,
    size: int,
    size_mib: int,
    sbx: object,
    proxied: tuple[str, object],
    pids: tuple[int, int],
) -> list[tuple[str, str]]:
    """The file-throughput rows for the envd at ``url`` (SDK ``sbx``), the ``cp`` floor first,
    then the same again through the proxy (``proxied``: its URL and an SDK handle on it);
    ``pids``: envd's and the proxy's, whose CPU time each row reports."""
    work.mkdir(parents=True)
    rows: list[tuple[str, str]] = []
    _prime(src, work)
    t0 = time.perf_counter()
    shutil.copyfile(src, work / "cp.bin")
    os.sync()
    rows.append((f"cp {size_mib} MiB, same disk (+sync)", _mib_s(size, time.perf_counter() - t0)))
    os.unlink(work / "cp.bin")
    _SERVERS["envd"] = pids[0]
    rows += _paths(url, src, work / "direct", size, size_mib, sbx, {})
    _SERVERS["proxy"] = pids[1]
    proxy_url, proxy_sbx = proxied
    rows += [
        (f"{label}, via proxy", value)
        for label, value in _paths(
            proxy_url, src, work / "proxy", size, size_mib, proxy_sbx, _ROUTE
        )
    ]
    _SERVERS.clear()
    shutil.rmtree(work)
    return rows


def _paths(
    url: str,
    src: Path,
    work: Path,
    size: int,
    size_mib: int,
    sbx: object,
    headers: dict[str, str],
) -> list[tuple[str, str]]:
    """SDK write and read, one streamed POST and multipart uploads, to ``url``."""
    work.mkdir()
    rows: list[tuple[str, str]] = []

    dest = work / "up.bin"
    _prime(src, work)
    start = _clock()
    with open(src, "rb") as f:
        sbx.files.write(str(dest), f, user="root")
    rows.append((f"SDK files.write {size_mib} MiB (pyqwest)", _rate(size, start)))

    start = _clock()
    got = 0
    for chunk in sbx.files.read(str(dest), format="stream", user="root"):
        got += len(chunk)
    assert got == size, (got, size)
    rows.append((f"SDK files.read {size_mib} MiB (stream)", _rate(size, start)))
    _done(dest, size)

    # The same client (sendfile from one process) for one POST and for the parts, so the
    # comparison is of envd's two paths, not of two clients.
    dest = work / "post.bin"
    _prime(src, work)
    start = _clock()
    _send(url, "POST", f"/files?path={dest}", src, 0, size, headers)
    rows.append((f"one POST /files {size_mib} MiB (sendfile)", _rate(size, start)))
    _done(dest, size)
    for parallel in (1, 4, 8):
        # Two parts per worker, within envd's 100 MiB part limit.
        part = min(64 * 2**20, -(-size // (parallel * 2)))
        dest = work / f"mp{parallel}.bin"
        _prime(src, work)
        start = _clock()
        seconds = _multipart(url, src, str(dest), size, part, parallel, headers)
        rows.append(
            (
                f"multipart upload (sendfile), {parallel} parallel, {part // 2**20} MiB parts",
                _rate(size, start, seconds),
            )
        )
        _done(dest, size)
    shutil.rmtree(work)
    return rows


def _prime(src: Path, work: Path) -> None:
    """Write and remove a scratch copy of ``src`` (no sync): the row that follows gets pages
    the kernel just freed, as every other row does, not pages the hypervisor took back."""
    scratch = work / "prime.bin"
    shutil.copyfile(src, scratch)
    os.unlink(scratch)


def _done(dest: Path, size: int) -> None:
    """Check what a row wrote, then remove it before it reaches background writeback."""
    got = dest.stat().st_size
    assert got == size, (dest, got, size)
    dest.unlink()


def _send(
    url: str,
    method: str,
    target: str,
    src: Path,
    offset: int,
    length: int,
    headers: dict[str, str],
) -> None:
    status, body = send_range(
        url, method, target, str(src), offset=offset, length=length, headers=headers
    )
    if status != 200:
        raise SystemExit(f"{method} {target}: {status} {body[:300]!r}")


def _multipart(
    url: str,
    src: Path,
    dest: str,
    size: int,
    part: int,
    parallel: int,
    headers: dict[str, str],
) -> float:
    """Seconds for init + ``parallel`` concurrent part uploads + complete (each part sent
    from its offset in ``src``)."""
    with httpx.Client(base_url=url, timeout=120, headers=headers) as client:
        t0 = time.perf_counter()
        r = client.post(
            "/files/upload/init", json={"path": dest, "totalSize": size, "partSize": part}
        )
        r.raise_for_status()
        upload_id, parts = r.json()["uploadId"], r.json()["numParts"]

        def put(i: int) -> None:
            length = min(part, size - i * part)
            target = f"/files/upload/{upload_id}?part={i}"
            _send(url, "PUT", target, src, i * part, length, headers)

        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            list(pool.map(put, range(parts)))
        client.post(f"/files/upload/{upload_id}/complete").raise_for_status()
        return time.perf_counter() - t0


if __name__ == "__main__":
    main()
