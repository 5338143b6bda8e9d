"""Pure pieces of metadata PATCH: the body check and the per-sandbox lock."""

from __future__ import annotations

import asyncio

import pytest

from hutch.api.service.locks import SandboxLocks
from hutch.api.service.validation import check_metadata_patch
from hutch.shared.errors import InvalidArgumentError


def test_check_metadata_patch_empty_string_means_remove() -> None:
    assert check_metadata_patch({"a": "1", "b": None, "c": ""}) == {
        "a": "1",
        "b": None,
        "c": None,
    }


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        ([], "object"),
        ({"n": 3}, "metadata.n"),
        ({"x": ["a"]}, "metadata.x"),
        ({"": "v"}, "empty"),
        ({"v": "x" * 2049}, "metadata.v"),
    ],
)
def test_check_metadata_patch_names_the_key(patch: object, named: str) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        check_metadata_patch(patch)


def test_check_metadata_patch_removal_of_a_long_key_is_still_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="256 bytes"):
        check_metadata_patch({"k" * 257: None})


async def test_sandbox_locks_serialise_one_id_and_not_others() -> None:
    locks = SandboxLocks()
    order: list[str] = []

    async def work(sid: str, tag: str, delay: float) -> None:
        async with locks.hold(sid):
            order.append(f"{tag}+")
            await asyncio.sleep(delay)
            order.append(f"{tag}-")

    await asyncio.gather(work("a", "a1", 0.02), work("a", "a2", 0), work("b", "b1", 0))
    assert order.index("a1-") < order.index("a2+")
    assert order.index("b1+") < order.index("a1-")  # another id does not wait
    assert not locks.held("a") and not locks.held("b")


async def test_sandbox_locks_released_on_error() -> None:
    locks = SandboxLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("a"):
            raise RuntimeError("boom")
    assert not locks.held("a")
    async with locks.hold("a"):
        pass
