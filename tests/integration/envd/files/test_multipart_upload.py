"""Multipart upload sessions: ordering, parallel parts, missing parts, abort, limits, expiry."""

from __future__ import annotations

import gzip
import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import EnvdProcess, start_envd, stop_envd
from tests.integration.envd import connect
from tests.integration.envd.files.conftest import assert_healthy, leftovers

MiB = 1024 * 1024
#: One client for the whole module: a new httpx client per call costs a TLS context each.
_http = httpx.Client(timeout=60)


def init(envd: EnvdProcess, path: Path | str, total: int, part: int, **extra) -> httpx.Response:
    headers = extra.pop("headers", None)
    return _http.post(
        envd.url + "/files/upload/init",
        headers=headers,
        json={"path": str(path), "totalSize": total, "partSize": part, **extra},
    )


def put(envd: EnvdProcess, upload_id: str, part: int | str, data: bytes, **kw) -> httpx.Response:
    return _http.put(
        envd.url + f"/files/upload/{upload_id}", params={"part": part}, content=data, **kw
    )


def complete(envd: EnvdProcess, upload_id: str) -> httpx.Response:
    return _http.post(envd.url + f"/files/upload/{upload_id}/complete")


def abort(envd: EnvdProcess, upload_id: str) -> httpx.Response:
    return _http.delete(envd.url + f"/files/upload/{upload_id}")


def test_parallel_out_of_order_parts(files_envd: EnvdProcess, work: Path) -> None:
    part_size = 2 * MiB
    data = os.urandom(8 * part_size + 12345)
    target = work / "deep" / "big.bin"
    r = init(files_envd, target, len(data), part_size, headers={"X-Metadata-Source": "mp"})
    assert r.status_code == 200, r.text
    upload_id, num_parts = r.json()["uploadId"], r.json()["numParts"]
    assert num_parts == 9
    uuid.UUID(upload_id)
    temps = leftovers(work)
    assert len(temps) == 1  # the temp file sits next to the destination, preallocated
    temp = target.parent / temps[0]
    assert temp.stat().st_size == len(data)
    assert not target.exists()

    def send(p: int) -> int:
        chunk = data[p * part_size : (p + 1) * part_size]
        return put(files_envd, upload_id, p, chunk).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(send, reversed(range(num_parts)))) == [200] * num_parts
    r = complete(files_envd, upload_id)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"path": str(target), "name": "big.bin", "type": "file", "metadata": {"source": "mp"}}
    ]
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o777 == 0o644
    assert os.getxattr(target, "user.e2b.source") == b"mp"
    assert leftovers(work) == []


def test_gzip_parts_and_resent_part(files_envd: EnvdProcess, work: Path) -> None:
    r = init(files_envd, work / "g.bin", 10, 4)
    upload_id = r.json()["uploadId"]
    gz = {"Content-Encoding": "gzip"}
    assert put(files_envd, upload_id, 0, gzip.compress(b"0123"), headers=gz).status_code == 200
    assert put(files_envd, upload_id, 1, b"xxxx").status_code == 200
    assert (
        put(files_envd, upload_id, 1, gzip.compress(b"4567"), headers=gz).status_code == 200
    )  # retry
    r = put(files_envd, upload_id, 2, b"not gzip", headers=gz)
    assert r.status_code == 400 and "gzip" in r.json()["message"]
    r = put(files_envd, upload_id, 2, gzip.compress(b"89!"), headers=gz)  # decompresses too long
    assert r.status_code == 400 and "larger" in r.json()["message"]
    assert put(files_envd, upload_id, 2, gzip.compress(b"89"), headers=gz).status_code == 200
    assert complete(files_envd, upload_id).status_code == 200
    assert (work / "g.bin").read_bytes() == b"0123456789"


def test_missing_parts_are_listed_and_session_stays_open(
    files_envd: EnvdProcess, work: Path
) -> None:
    upload_id = init(files_envd, work / "m.bin", 5 * 3, 3).json()["uploadId"]
    put(files_envd, upload_id, 0, b"aaa")
    put(files_envd, upload_id, 2, b"ccc")
    r = complete(files_envd, upload_id)
    assert r.status_code == 400
    assert "missing: 1, 3, 4" in r.json()["message"]
    for p, d in ((1, b"bbb"), (3, b"ddd"), (4, b"eee")):
        assert put(files_envd, upload_id, p, d).status_code == 200
    assert complete(files_envd, upload_id).status_code == 200
    assert (work / "m.bin").read_bytes() == b"aaabbbcccdddeee"


def test_part_size_must_be_exact(files_envd: EnvdProcess, work: Path) -> None:
    upload_id = init(files_envd, work / "s.bin", 10, 4).json()["uploadId"]
    for part, body, needle in [
        (0, b"123", "must be 4 bytes, got 3"),
        (0, b"12345", "must be 4 bytes, got 5"),
        (2, b"123", "must be 2 bytes"),
        (3, b"12", "out of range"),
        ("x", b"12", "part must be"),
        ("-1", b"12", "part must be"),
    ]:
        r = put(files_envd, upload_id, part, body)
        assert r.status_code == 400, (part, body, r.text)
        assert needle in r.json()["message"]

    def chunked(data: bytes):  # no Content-Length: envd must count and stop at size + 1
        yield data[:3]
        yield data[3:]

    r = put(files_envd, upload_id, 0, chunked(b"1234567890" * 1000))
    assert r.status_code == 400 and "larger than 4" in r.json()["message"]
    r = put(files_envd, upload_id, 0, chunked(b"12"))
    assert r.status_code == 400 and "got 2" in r.json()["message"]
    assert "0" in complete(files_envd, upload_id).json()["message"]
    assert abort(files_envd, upload_id).status_code == 204
    assert_healthy(files_envd)


def test_abort_removes_temp_and_later_calls_conflict(files_envd: EnvdProcess, work: Path) -> None:
    upload_id = init(files_envd, work / "a.bin", 8, 4).json()["uploadId"]
    put(files_envd, upload_id, 0, b"1234")
    assert leftovers(work)
    assert abort(files_envd, upload_id).status_code == 204
    assert leftovers(work) == []
    assert not (work / "a.bin").exists()
    assert abort(files_envd, upload_id).status_code == 204  # idempotent
    assert put(files_envd, upload_id, 1, b"5678").status_code == 409
    assert complete(files_envd, upload_id).status_code == 409


def test_completed_session_conflicts(files_envd: EnvdProcess, work: Path) -> None:
    upload_id = init(files_envd, work / "c.bin", 4, 4).json()["uploadId"]
    put(files_envd, upload_id, 0, b"1234")
    assert complete(files_envd, upload_id).status_code == 200
    for r in (
        put(files_envd, upload_id, 0, b"1234"),
        complete(files_envd, upload_id),
        abort(files_envd, upload_id),
    ):
        assert r.status_code == 409
        assert "completed" in r.json()["message"]


def test_concurrent_completes_one_wins(files_envd: EnvdProcess, work: Path) -> None:
    # Whether or not the requests overlap, the loser sees 409: a finished session stays a
    # tombstone until it expires, so the outcome does not depend on timing.
    data = os.urandom(4 * MiB)
    upload_id = init(files_envd, work / "cc.bin", len(data), MiB).json()["uploadId"]
    for p in range(4):
        assert put(files_envd, upload_id, p, data[p * MiB : (p + 1) * MiB]).status_code == 200
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(
            r.status_code for r in pool.map(lambda _: complete(files_envd, upload_id), range(4))
        )
    assert codes == [200, 409, 409, 409]
    assert (work / "cc.bin").read_bytes() == data


def test_zero_size_upload(files_envd: EnvdProcess, work: Path) -> None:
    r = init(files_envd, work / "empty", 0, 1024)
    assert r.json()["numParts"] == 0
    assert complete(files_envd, r.json()["uploadId"]).status_code == 200
    assert (work / "empty").read_bytes() == b""


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"path": "{W}/x", "totalSize": 10 * 1024**3 + 1, "partSize": 100 * MiB}, 400, "totalSize"),
        ({"path": "{W}/x", "totalSize": 10, "partSize": 100 * MiB + 1}, 400, "partSize"),
        ({"path": "{W}/x", "totalSize": 10_001, "partSize": 1}, 400, "10001 parts"),
        ({"path": "{W}/x", "totalSize": 10, "partSize": 0}, 400, "partSize"),
        ({"path": "{W}/x", "totalSize": -1, "partSize": 1}, 400, "totalSize"),
        ({"path": "{W}/x", "totalSize": "10", "partSize": 1}, 400, "totalSize"),
        ({"path": "{W}/x", "totalSize": True, "partSize": 1}, 400, "totalSize"),
        ({"path": "{W}/x", "totalSize": 10}, 400, "partSize"),
        ({"totalSize": 10, "partSize": 1}, 400, "path"),
        ({"path": "{W}", "totalSize": 10, "partSize": 1}, 400, "directory"),
        (
            {"path": "{W}/x", "totalSize": 10, "partSize": 1, "username": "no-such-user-xyz"},
            401,
            "does not exist",
        ),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_init_validation(files_envd: EnvdProcess, work: Path, body, status, needle) -> None:
    if isinstance(body, dict) and "path" in body:
        body = {**body, "path": body["path"].replace("{W}", str(work))}
    r = httpx.post(files_envd.url + "/files/upload/init", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["message"]
    assert leftovers(work) == [] and not (work / "x").exists()


def test_init_edge_cases(files_envd: EnvdProcess, work: Path) -> None:
    r = httpx.post(files_envd.url + "/files/upload/init", content=b"{nope")
    assert r.status_code == 400 and "JSON" in r.json()["message"]
    r = init(files_envd, work / "x", 10, 1, headers={"X-Metadata-Bad": "tab\there"})
    assert r.status_code == 400 and "'bad'" in r.json()["message"]
    assert leftovers(work) == []
    r = init(files_envd, work / "x", 10_000, 1)  # exactly the part limit: allowed
    assert r.status_code == 200
    abort(files_envd, r.json()["uploadId"])


def test_upload_id_must_be_uuid_and_known(files_envd: EnvdProcess) -> None:
    for bad in ("not-a-uuid", "..%2F..%2Fetc", "1" * 300):
        for r in (put(files_envd, bad, 0, b"x"), complete(files_envd, bad), abort(files_envd, bad)):
            assert r.status_code in (400, 404), r.text
            if r.status_code == 400:
                assert "not a UUID" in r.json()["message"]
    unknown = str(uuid.uuid4())
    for r in (
        put(files_envd, unknown, 0, b"x"),
        complete(files_envd, unknown),
        abort(files_envd, unknown),
    ):
        assert r.status_code == 404
    assert_healthy(files_envd)


def test_session_limit_is_429(envd: EnvdProcess, tmp_path: Path) -> None:
    files_envd, work = envd, tmp_path  # its own envd: no session of another test counts
    ids = []
    try:
        for i in range(100):
            r = init(files_envd, work / f"f{i}", 1, 1)
            assert r.status_code == 200, (i, r.text)
            ids.append(r.json()["uploadId"])
        r = init(files_envd, work / "over", 1, 1)
        assert r.status_code == 429
        assert "too many" in r.json()["message"]
        abort(files_envd, ids.pop())
        r = init(files_envd, work / "again", 1, 1)  # a slot freed
        assert r.status_code == 200
        ids.append(r.json()["uploadId"])
    finally:
        for upload_id in ids:
            abort(files_envd, upload_id)
    assert leftovers(work) == []


def test_as_user_owns_temp_and_result(files_envd: EnvdProcess, shared_dir: Path, test_user) -> None:
    target = shared_dir / "mine" / "sub" / "u.bin"
    r = init(files_envd, target, 4, 2, username=test_user.pw_name)
    assert r.status_code == 200, r.text
    upload_id = r.json()["uploadId"]
    temp = target.parent / leftovers(shared_dir)[0]
    assert temp.stat().st_uid == test_user.pw_uid
    assert (target.parent.stat().st_uid, target.parent.stat().st_gid) == (
        test_user.pw_uid,
        test_user.pw_gid,
    )
    put(files_envd, upload_id, 0, b"ab")
    put(files_envd, upload_id, 1, b"cd")
    assert complete(files_envd, upload_id).status_code == 200
    assert target.stat().st_uid == test_user.pw_uid
    # In a root-owned directory too: envd writes as root for the user (ADR 12).
    r = init(files_envd, shared_dir / "roots" / "yes.bin", 2, 2, username=test_user.pw_name)
    assert r.status_code == 200, r.text
    put(files_envd, r.json()["uploadId"], 0, b"ok")
    assert complete(files_envd, r.json()["uploadId"]).status_code == 200
    assert (shared_dir / "roots" / "yes.bin").stat().st_uid == test_user.pw_uid


def test_out_of_space_at_init_is_507(files_envd: EnvdProcess, mount_fs) -> None:
    small = mount_fs("tmpfs", "size=1m")
    r = init(files_envd, small / "big", 4 * MiB, MiB)
    assert r.status_code == 507, r.text
    assert list(small.iterdir()) == []


def test_idle_sessions_expire(tmp_path: Path) -> None:
    server = start_envd(tmp_path, env={"HUTCH_ENVD_UPLOAD_SESSION_TTL_S": "0.3"})
    try:
        work = tmp_path / "w"
        upload_id = init(server, work / "e.bin", 4, 2).json()["uploadId"]
        assert leftovers(work)
        # Watch the disk, not the API: a request would count as activity and keep it alive.
        deadline = time.monotonic() + 30
        while leftovers(work) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(work) == []
        assert put(server, upload_id, 0, b"ab").status_code == 404
        assert not (work / "e.bin").exists()
    finally:
        stop_envd(server)


def test_stale_temp_files_removed_at_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    work = tmp_path / "w"
    work.mkdir()
    decoy = work / ".x.hutch-upload-0123456789abcdef01234567"  # not envd's: must survive
    decoy.write_text("mine")
    first = start_envd(tmp_path, "--state-dir", str(state))
    try:
        upload_id = init(first, work / "s.bin", 4, 2).json()["uploadId"]
        put(first, upload_id, 0, b"ab")
        assert len(leftovers(work)) == 2
    finally:
        first.process.send_signal(signal.SIGKILL)  # no chance to clean up
        first.process.wait()
    assert len(leftovers(work)) == 2
    second = start_envd(tmp_path, "--state-dir", str(state))
    try:
        assert leftovers(work) == [decoy.name]
        assert decoy.read_text() == "mine"
        assert put(second, upload_id, 1, b"cd").status_code == 404
    finally:
        stop_envd(second)


def test_clean_shutdown_removes_open_sessions(tmp_path: Path) -> None:
    server = start_envd(tmp_path)
    work = tmp_path / "w"
    try:
        init(server, work / "s.bin", 4, 2)
        assert leftovers(work)
    finally:
        stop_envd(server)
    assert leftovers(work) == []


def test_watchers_see_a_session_upload_as_e2bs_write(files_envd: EnvdProcess, work: Path) -> None:
    r = connect.unary("filesystem.Filesystem", files_envd, "CreateWatcher", {"path": str(work)})
    watcher = r.json()["watcherId"]
    upload_id = init(files_envd, work / "s.bin", 4, 2).json()["uploadId"]
    put(files_envd, upload_id, 0, b"ab")
    put(files_envd, upload_id, 1, b"cd")
    assert complete(files_envd, upload_id).status_code == 200
    os.mkdir(work / "zz")  # the sentinel: one inotify queue keeps its order
    events: list[dict] = []
    deadline = time.monotonic() + 15
    while not any(e["name"] == "zz" for e in events):
        assert time.monotonic() < deadline, events
        r = connect.unary(
            "filesystem.Filesystem", files_envd, "GetWatcherEvents", {"watcherId": watcher}
        )
        events += r.json().get("events", [])
    connect.unary("filesystem.Filesystem", files_envd, "RemoveWatcher", {"watcherId": watcher})
    assert [e["type"] for e in events if e["name"] == "s.bin"] == [
        "EVENT_TYPE_CREATE",
        "EVENT_TYPE_CHMOD",
        "EVENT_TYPE_WRITE",
    ]
    assert not any("hutch-upload" in e["name"] for e in events), events
