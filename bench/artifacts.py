"""Artifact store throughput (ADR 0029 amendment): publish and fetch of one template through
the shared directory and through an S3 bucket, beside the floors measured in the same run.

    .venv/bin/python bench/artifacts.py [--mib 256] [--part-mb 16] [--concurrency 4]

A sealed artifact of ``--mib`` MiB (1 MiB files of random bytes) in one templates home;
the real ``ContentStore`` publishes it (the exporter's digest pass, then the part's tar
written to the store) and the real ``Fetcher`` pulls it into a fresh home (streamed into
``.incoming/`` while hashed, unpacked, renamed into place). The directory is on this
machine's disk (a stand-in for a mount); the bucket is on a moto server on loopback (the
tests' S3-compatible server: Python, in memory), so its floor rows are boto3's own
transfer manager moving the same number of bytes to and from that server, with the same
part size and concurrency. Floors: the tree's tar + SHA-256 (what every publish and fetch
computes), ``cp -a`` of the tree (the disk). Needs no root and no cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from _table import print_table  # noqa: E402

from hutch.node.templates.artifact import DirTemplateStore  # noqa: E402
from hutch.node.templates.artifact_dir import DirBlobs  # noqa: E402
from hutch.node.templates.artifact_s3 import MIB, S3Blobs  # noqa: E402
from hutch.node.templates.artifact_store import Blobs, ContentStore  # noqa: E402
from hutch.node.templates.transfer import Exporter, Fetcher, write_tar  # noqa: E402
from tests.s3server import moto_server, new_bucket, s3_test_client  # noqa: E402

FP = "b" * 64


def _home(root: Path, mib: int) -> None:
    rootfs = root / ".artifacts" / FP / "rootfs"
    rootfs.mkdir(parents=True)
    for i in range(mib):  # 1 MiB files, like a tree's many small-to-mid files
        (rootfs / f"f{i:05d}").write_bytes(os.urandom(MIB))
    (rootfs.parent / "artifact.json").write_text("{}")
    (root / "img").mkdir()
    (root / "img" / "template.json").write_text(json.dumps({
        "format": 1, "name": "img", "default_user": "user", "workdir": "/", "env": {},
        "cpu_count": 1.0, "memory_mb": 256, "build": {}, "image": None,
        "artifact": FP, "layers": [],
    }))  # fmt: skip


def _timed(work: Callable[[], object]) -> float:
    os.sync()  # the previous step's dirty pages written back first: no order effect
    t0 = time.perf_counter()
    work()
    return time.perf_counter() - t0


def _row(what: str, mib: float, took: float) -> list[str]:
    return [what, f"{mib:.0f}", f"{took:.2f}", f"{mib / took:.0f}"]


def _store_rows(kind: str, blobs: Blobs, src: Path, work: Path, mib: int) -> list[list[str]]:
    store = ContentStore(blobs, Exporter(DirTemplateStore(src), src))
    took = _timed(lambda: asyncio.run(store.publish("img")))
    (part,) = blobs.list("parts")
    size = len(blobs.read(f"parts/{part}") or b"") / MIB
    dest = work / f"dest-{kind}"
    dest.mkdir()
    fetcher = Fetcher(DirTemplateStore(dest), dest, token="bench", artifact_store=store)
    fetched = _timed(lambda: asyncio.run(fetcher.ensure("img", [])))
    shutil.rmtree(dest)
    asyncio.run(store.remove("img"))
    return [_row(f"{kind}: publish (digest pass + tar to the store)", size, took),
            _row(f"{kind}: fetch into a fresh home (hashed, unpacked)", size, fetched)]  # fmt: skip


def _floor_rows(src: Path, work: Path, mib: int) -> list[list[str]]:
    class _Sink:
        def write(self, data: bytes) -> int:
            digest.update(data)
            return len(data)

    import hashlib

    digest = hashlib.sha256()
    tree = src / ".artifacts" / FP
    hashed = _timed(lambda: write_tar(tree, _Sink()))  # type: ignore[arg-type]
    copy = work / "copy"
    copied = _timed(lambda: subprocess.run(["cp", "-a", str(tree), str(copy)], check=True))
    shutil.rmtree(copy)
    return [_row("floor: tar + SHA-256 of the tree", mib, hashed),
            _row("floor: cp -a of the tree (disk)", mib, copied)]  # fmt: skip


def _s3_floor_rows(client: object, bucket: str, mib: int, part_mb: int,
                   concurrency: int) -> list[list[str]]:  # fmt: skip
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=part_mb * MIB, multipart_chunksize=part_mb * MIB,
                            max_concurrency=concurrency)  # fmt: skip
    body = os.urandom(mib * MIB)
    up = _timed(lambda: client.upload_fileobj(io.BytesIO(body), bucket, "floor.bin",  # type: ignore[attr-defined]
                                              Config=config))  # fmt: skip
    out = io.BytesIO()
    down = _timed(lambda: client.download_fileobj(bucket, "floor.bin", out, Config=config))  # type: ignore[attr-defined]
    client.delete_object(Bucket=bucket, Key="floor.bin")  # type: ignore[attr-defined]
    return [_row("floor s3: boto3 upload_fileobj (transfer manager)", mib, up),
            _row("floor s3: boto3 download_fileobj (ranged, parallel)", mib, down)]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--part-mb", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hutch-bench-artifacts-"))
    try:
        src = work / "src"
        _home(src, args.mib)
        rows = _floor_rows(src, work, args.mib)
        shared = work / "shared"
        shared.mkdir()
        rows += _store_rows("dir", DirBlobs(shared), src, work, args.mib)
        with moto_server(work / "moto.log") as endpoint:
            client = s3_test_client(endpoint)
            bucket = new_bucket(client, "hutch-bench")
            rows += _s3_floor_rows(client, bucket, args.mib, args.part_mb, args.concurrency)
            blobs = S3Blobs(bucket=bucket, client=client, part_size=args.part_mb * MIB,
                            concurrency=args.concurrency)  # fmt: skip
            rows += _store_rows("s3", blobs, src, work, args.mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(
        f"artifact store: one {args.mib} MiB template (S3: moto on loopback, "
        f"{args.part_mb} MiB parts x {args.concurrency}; load {os.getloadavg()[0]:.1f})",
        rows, ["what", "MiB", "s", "MiB/s"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
