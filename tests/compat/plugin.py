"""A pytest plugin the matrix loads into each Python client's run (``-p tests.compat.plugin``).

``--compat-results=PATH`` makes it write, at the end of the session, one JSON object per
``compat``-marked test (``--compat-marker=NAME``: per test marked ``NAME``, e.g. the
code-interpreter SDK's ``compat_interpreter``): ``{"name": nodeid, "features": [...],
"outcome": "passed" | "failed" | "skipped", "error": "..."}``.
``@pytest.mark.compat("files", "watch")`` names the features a test proves (docs/compat.md's
rows).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

_RESULTS: dict[str, dict[str, Any]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--compat-results", default=None, help="where to write compat results")
    parser.addoption("--compat-marker", default="compat", help="the marker naming features")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker(item.config.getoption("--compat-marker"))
    if marker is not None:
        entry = _RESULTS.setdefault(
            item.nodeid, {"name": item.nodeid, "features": list(marker.args), "outcome": "passed"}
        )
        if report.failed:
            entry["outcome"] = "failed"
            entry["error"] = f"{report.when}: {report.longreprtext[-4000:]}"
        elif report.skipped and entry["outcome"] == "passed":
            entry["outcome"] = "skipped"
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--compat-results")
    if path is not None:
        Path(path).write_text(json.dumps(list(_RESULTS.values()), indent=1) + "\n")
