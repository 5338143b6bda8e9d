"""A pytest plugin the matrix loads into each Python client's run (``-p tests.compat.plugin``).

``--compat-results=PATH`` makes it write, at the end of the session, one JSON object per
``compat``-marked test (``--compat-marker=NAME``: per test marked ``NAME``, e.g. the
code-interpreter SDK's ``compat_interpreter``): ``{"name": nodeid, "features": [...],
"outcome": "passed" | "failed" | "skipped", "error": "..."}``.
``@pytest.mark.compat("files", "watch")`` names the features a test proves (docs/compat.md's
rows).

The suite's own session records the same for its e2e tests (``tests/conftest.py`` calls
:func:`record_in_session` and :func:`collected`): the pinned SDKs' columns, the ones the
e2e tests themselves use, take that run's results (:func:`session_results`) instead of
running the same tests with the same SDK a second time, when the session ran all of them.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

_RESULTS: dict[str, dict[str, Any]] = {}
#: The main session's results by marker, and what it collected (see the module docstring).
_SESSION: dict[str, dict[str, dict[str, Any]]] = {"compat": {}, "compat_interpreter": {}}
_COLLECTED: dict[str, Any] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--compat-results", default=None, help="where to write compat results")
    parser.addoption("--compat-marker", default="compat", help="the marker naming features")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _record(_RESULTS, item, report, item.config.getoption("--compat-marker"))
    return report


def _record(
    into: dict[str, dict[str, Any]], item: pytest.Item, report: pytest.TestReport, name: str
) -> None:
    marker = item.get_closest_marker(name)
    if marker is None:
        return
    entry = into.setdefault(
        item.nodeid, {"name": item.nodeid, "features": list(marker.args), "outcome": "passed"}
    )
    if report.failed:
        entry["outcome"] = "failed"
        entry["error"] = f"{report.when}: {report.longreprtext[-4000:]}"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"


def record_in_session(item: pytest.Item, report: pytest.TestReport) -> None:
    """Keep a marked e2e test's outcome of the main session (every phase's report)."""
    if item.nodeid.startswith("tests/e2e/"):
        for name in _SESSION:
            _record(_SESSION[name], item, report, name)


def collected(session: pytest.Session) -> None:
    """What the main session is about to run: its marked e2e tests, its files, and whether
    anything narrowed the selection (-k, -m, a test id) that a file's presence would hide."""
    config = session.config
    _COLLECTED["whole"] = not (
        config.getoption("keyword", "") or config.getoption("markexpr", "")
        or any("::" in str(a) for a in config.args)
    )  # fmt: skip
    _COLLECTED["files"] = {item.nodeid.partition("::")[0] for item in session.items}
    _COLLECTED["marked"] = {
        name: [i.nodeid for i in session.items
               if i.nodeid.startswith("tests/e2e/") and i.get_closest_marker(name)]
        for name in _SESSION
    }  # fmt: skip


def session_results(marker: str, files: list[str]) -> list[dict[str, Any]] | None:
    """The main session's results of the ``marker`` tests of ``files`` (paths from the
    repository's root), in the order they ran, when it ran every one of them (all of
    ``files`` collected, nothing narrowed, a result for each); None otherwise (``pytest
    tests/compat`` alone, a -k run), and the matrix runs them itself."""
    if not _COLLECTED.get("whole") or not files or not set(files) <= _COLLECTED["files"]:
        return None
    wanted = [n for n in _COLLECTED["marked"][marker] if n.partition("::")[0] in files]
    got = _SESSION[marker]
    if not wanted or not set(wanted) <= got.keys():
        return None
    return [entry for nodeid, entry in got.items() if nodeid in set(wanted)]


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--compat-results")
    if path is not None:
        Path(path).write_text(json.dumps(list(_RESULTS.values()), indent=1) + "\n")
