"""envd behaviours real client code relies on (issue 18), driven with the official SDK
against a real ``hutch serve``: removing what is not there, signed URL errors, answer
shapes, images without bash, writes under ``/`` as the default user, and what watchers
see while files are written."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from e2b import Sandbox

from .serveproc import Serve

pytestmark = pytest.mark.root


@pytest.fixture
def busybox(serve: Serve) -> Iterator[Sandbox]:
    sandbox = Sandbox.create("busybox", timeout=120)
    try:
        yield sandbox
    finally:
        sandbox.kill()


def test_remove_of_a_missing_path_succeeds(busybox: Sandbox) -> None:
    workdir = f"/home/user/work-{uuid.uuid4().hex[:8]}"
    busybox.files.remove(workdir)  # nothing there yet: the clean-up step before a start
    assert busybox.files.make_dir(workdir) is True
    busybox.files.write(f"{workdir}/a.txt", "a")
    busybox.files.remove(workdir)
    assert busybox.files.exists(workdir) is False
    busybox.files.remove(workdir)  # and again: still fine
    busybox.files.remove(f"{workdir}/deeper/still")
