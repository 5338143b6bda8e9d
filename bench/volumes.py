"""Volume throughput: a 256 MiB file written and read in a volume from inside a sandbox and
through the content API, beside the same file on the node's own disk.

Run as root from the repository:

    .venv/bin/python bench/volumes.py [--size-mib 256] [--runs 3]

It starts its own ``hutch serve`` (private home under /var/tmp, free loopback ports, own
host names: ``bench/_instance.py``), creates a volume, a ``busybox`` sandbox that mounts it,
measures, prints a table (median MB/s of ``--runs``), and removes everything it started.
Writes end with an fsync (``dd conv=fsync``; the API's upload fsyncs before its rename).
Before every read the page cache is dropped (``/proc/sys/vm/drop_caches``) when the host
allows it, so reads come from the disk; the table says whether it did.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import _instance
import httpx
from _instance import new_instance
from _table import print_table

from hutch.node.templates.busybox import build_busybox

MIB = 1 << 20


def drop_caches() -> bool:
    """Write back and drop the page cache; False where the host does not allow it."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def _mbps(size: int, seconds: list[float]) -> str:
    return f"{size / MIB / statistics.median(seconds):.0f} MB/s"


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def host_disk(directory: Path, size: int, runs: int) -> tuple[list[float], list[float]]:
    """Write (1 MiB writes + fsync) and read a file in ``directory`` on the host."""
    block = os.urandom(MIB)
    path = directory / "bench.bin"
    writes, reads = [], []
    for _ in range(runs):
        path.unlink(missing_ok=True)

        def write() -> None:
            with open(path, "wb") as f:
                for _ in range(size // MIB):
                    f.write(block)
                f.flush()
                os.fsync(f.fileno())

        writes.append(_timed(write))
        drop_caches()

        def read() -> None:
            with open(path, "rb") as f:
                while f.read(MIB):
                    pass

        reads.append(_timed(read))
    path.unlink(missing_ok=True)
    return writes, reads


def in_sandbox(sbx: object, path: str, size: int, runs: int) -> tuple[list[float], list[float]]:
    """``dd`` in the sandbox: write with fsync, then read to /dev/null."""
    count = size // MIB
    writes, reads = [], []
    for _ in range(runs):
        sbx.commands.run(f"rm -f {path}")  # type: ignore[attr-defined]
        writes.append(
            _timed(
                lambda: sbx.commands.run(  # type: ignore[attr-defined]
                    f"dd if=/dev/zero of={path} bs=1M count={count} conv=fsync 2>/dev/null",
                    timeout=600,
                )
            )
        )
        drop_caches()
        reads.append(
            _timed(
                lambda: sbx.commands.run(  # type: ignore[attr-defined]
                    f"dd if={path} of=/dev/null bs=1M 2>/dev/null", timeout=600
                )
            )
        )
    sbx.commands.run(f"rm -f {path}")  # type: ignore[attr-defined]
    return writes, reads


def through_api(api_url: str, vol: object, size: int, runs: int) -> tuple[list[float], list[float]]:
    """``PUT`` then ``GET`` of the file through the content API (streamed, 1 MiB chunks)."""
    block = os.urandom(MIB)
    base = f"{api_url}/volumecontent/{vol.volume_id}/file"  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {vol.token}"}  # type: ignore[attr-defined]

    def body() -> Iterator[bytes]:
        for _ in range(size // MIB):
            yield block

    writes, reads = [], []
    with httpx.Client(timeout=httpx.Timeout(600)) as c:
        for _ in range(runs):

            def put() -> None:
                r = c.put(base, params={"path": "api.bin"}, content=body(), headers=headers)
                r.raise_for_status()

            writes.append(_timed(put))
            drop_caches()

            def get() -> None:
                got = 0
                with c.stream("GET", base, params={"path": "api.bin"}, headers=headers) as r:
                    r.raise_for_status()
                    for chunk in r.iter_bytes(MIB):
                        got += len(chunk)
                assert got == size, got

            reads.append(_timed(get))
    return writes, reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/volumes.py needs root (runc, loop mounts)")
    size = args.size_mib * MIB

    home = Path(tempfile.mkdtemp(prefix="hutch-bench-volumes-", dir="/var/tmp"))
    build_busybox(home / "templates")
    inst = new_instance(home=home, extra_env={"HUTCH_NODE_POOL_SIZE": ""})
    rows: list[tuple[str, str, str]] = []
    cold = drop_caches()
    try:
        key = inst.hutch("keys", "create").strip()
        os.environ.update(
            E2B_API_URL=inst.api_url,
            E2B_SANDBOX_URL=inst.sandbox_url,
            E2B_API_KEY=key,
            E2B_VOLUME_API_URL=inst.api_url,
        )
        for k in [k for k in os.environ if "proxy" in k.lower()]:
            del os.environ[k]
        inst.start()
        from e2b import Sandbox, Volume

        w, r = host_disk(home, size, args.runs)
        rows.append(("node's disk (host, ext4)", _mbps(size, w), _mbps(size, r)))

        vol = Volume.create("bench")
        sbx = Sandbox.create("busybox", volume_mounts={"/mnt/v": vol}, timeout=1800)
        try:
            w, r = in_sandbox(sbx, "/home/user/bench.bin", size, args.runs)
            rows.append(("sandbox's own rootfs (overlay on the node's disk)",
                         _mbps(size, w), _mbps(size, r)))  # fmt: skip
            w, r = in_sandbox(sbx, "/mnt/v/bench.bin", size, args.runs)
            rows.append(("volume, inside the sandbox (dd)", _mbps(size, w), _mbps(size, r)))
            w, r = through_api(inst.api_url, vol, size, args.runs)
            rows.append(("volume, content API (PUT / GET)", _mbps(size, w), _mbps(size, r)))
        finally:
            with contextlib.suppress(Exception):
                sbx.kill()
            with contextlib.suppress(Exception):
                Volume.destroy(vol.volume_id)
    finally:
        inst.stop()
        inst.destroy_everything()
        _instance.remove_home(home)

    reads = "from disk (page cache dropped)" if cold else "cached (drop_caches not allowed)"
    print_table(
        f"volume throughput, {args.size_mib} MiB file, median of {args.runs} "
        f"({os.cpu_count()} CPUs; reads {reads})",
        rows,
        ("where", "write", "read"),
    )


if __name__ == "__main__":
    main()
