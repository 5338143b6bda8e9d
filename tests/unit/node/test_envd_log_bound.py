"""``records.bound_log``: a running sandbox's ``envd.log`` stays under its size, its last
half kept in place while its writer (``O_APPEND``, as the container's stdio) goes on; the
sampler runs the bound for each running sandbox at each tick."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from hutch.node.sandbox.records import ENVD_LOG, bound_log
from hutch.node.sandbox.sampler import UsageSampler
from tests.unit.node.test_sampler import FakeProbe, _sandbox

MAX = 64 * 1024


def _lines(n: int, start: int = 0) -> bytes:
    return b"".join(b'{"level":"info","msg":"line %06d"}\n' % i for i in range(start, start + n))


def test_a_log_under_its_size_is_left_alone(tmp_path: Path) -> None:
    log = tmp_path / ENVD_LOG
    log.write_bytes(_lines(100))
    assert bound_log(log, max_bytes=MAX) == 0
    assert log.read_bytes() == _lines(100)
    assert bound_log(tmp_path / "missing.log", max_bytes=MAX) == 0


def test_past_its_size_the_last_half_stays_from_a_line_start(tmp_path: Path) -> None:
    log = tmp_path / ENVD_LOG
    everything = _lines(5000)
    log.write_bytes(everything)
    dropped = bound_log(log, max_bytes=MAX)
    kept = log.read_bytes()
    note, _, rest = kept.partition(b"\n")
    assert note.decode() == (
        f"[hutch: {dropped} bytes of older log dropped (HUTCH_NODE_ENVD_LOG_MAX_BYTES)]"
    )
    assert len(kept) <= MAX // 2 + len(note) + 1
    assert everything.endswith(rest) and rest.startswith(b'{"level"')  # whole lines, the last
    assert dropped == len(everything) - len(rest)


def test_the_writer_appends_after_the_trim_at_the_new_end(tmp_path: Path) -> None:
    log = tmp_path / ENVD_LOG
    with open(log, "ab", buffering=0) as writer:  # as the node opens the container's output
        writer.write(_lines(5000))
        bound_log(log, max_bytes=MAX)
        trimmed = log.stat().st_size
        writer.write(b"after the trim\n")
    data = log.read_bytes()
    assert len(data) == trimmed + len(b"after the trim\n")  # no hole where the old end was
    assert data.endswith(_lines(1, 4999) + b"after the trim\n") and b"\0" not in data


async def test_the_sampler_bounds_each_running_sandboxs_log(tmp_path: Path) -> None:
    running = []
    for sid in ("a", "b"):
        (tmp_path / sid).mkdir()
        (tmp_path / sid / ENVD_LOG).write_bytes(_lines(5000))
        running.append(replace(_sandbox(sid), sandbox_dir=tmp_path / sid))
    sampler = UsageSampler(
        sandboxes=lambda: running, probe=FakeProbe(),
        per_sandbox=lambda s: bound_log(s.sandbox_dir / ENVD_LOG, max_bytes=MAX) and None,
    )  # fmt: skip
    await sampler.sample_all()
    for sid in ("a", "b"):
        assert os.path.getsize(tmp_path / sid / ENVD_LOG) <= MAX
        assert sampler.latest(sid) is not None  # sampled as well
