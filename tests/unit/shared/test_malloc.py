"""hutch.shared.malloc: when the thresholds are set and when the heap is trimmed."""

from __future__ import annotations

import ctypes

import pytest

from hutch.shared import malloc


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(malloc, "tune", lambda: seen.append("tune") or True)
    monkeypatch.setattr(malloc, "release", lambda: seen.append("release"))
    return seen


def test_tunes_once_and_trims_only_when_the_last_transfer_ends(calls: list[str]) -> None:
    transfers = malloc.BulkTransfers(trim_when_idle=True)
    assert calls == []  # nothing before the first transfer
    with transfers.transfer():
        with transfers.transfer():
            assert transfers.active == 2
        assert calls == ["tune"]  # one of two ended: its pages are still in use by the other
    assert calls == ["tune", "release"]
    with transfers.transfer():
        pass
    assert calls == ["tune", "release", "release"]
    assert transfers.active == 0


def test_a_failed_transfer_still_counts_down(calls: list[str]) -> None:
    transfers = malloc.BulkTransfers(trim_when_idle=True)
    with pytest.raises(RuntimeError), transfers.transfer():
        raise RuntimeError("client gone")
    assert transfers.active == 0
    assert calls == ["tune", "release"]


def test_without_trim_when_idle_nothing_is_released(calls: list[str]) -> None:
    transfers = malloc.BulkTransfers(trim_when_idle=False)
    for _ in range(3):
        with transfers.transfer():
            pass
    assert calls == ["tune"]


def test_glibc_takes_the_thresholds() -> None:
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallopt"):  # not glibc: tune() must say it did nothing
        assert malloc.tune() is False
        return
    assert malloc.tune() is True
    malloc.release()  # and trimming is callable
