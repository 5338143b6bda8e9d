"""The matrix's reuse of the session's own e2e results (``tests/compat/plugin.py``): only
when the session ran every marked test of the files the column would run, in run order."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.compat import plugin

FILES = ["tests/e2e/test_a.py", "tests/e2e/test_b.py"]


def _item(nodeid: str, marker: str | None) -> Any:
    mark = SimpleNamespace(args=("files",)) if marker else None
    return SimpleNamespace(nodeid=nodeid, get_closest_marker=lambda name: mark
                           if name == marker else None)  # fmt: skip


def _session(items: list[Any], *, keyword: str = "", args: tuple[str, ...] = ("tests",)) -> Any:
    options = {"keyword": keyword, "markexpr": ""}
    config = SimpleNamespace(getoption=lambda name, default=None: options.get(name, default),
                             args=list(args))  # fmt: skip
    return SimpleNamespace(config=config, items=items)


def _report(outcome: str) -> Any:
    return SimpleNamespace(failed=outcome == "failed", skipped=outcome == "skipped",
                           when="call", longreprtext="boom")  # fmt: skip


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    saved = {k: dict(v) for k, v in plugin._SESSION.items()}, dict(plugin._COLLECTED)
    for results in plugin._SESSION.values():
        results.clear()
    plugin._COLLECTED.clear()
    yield
    for name, results in saved[0].items():
        plugin._SESSION[name].clear()
        plugin._SESSION[name].update(results)
    plugin._COLLECTED.clear()
    plugin._COLLECTED.update(saved[1])


ITEMS = [
    _item("tests/e2e/test_b.py::test_two", "compat"),
    _item("tests/e2e/test_a.py::test_one", "compat"),
    _item("tests/e2e/test_a.py::test_plain", None),
    _item("tests/unit/test_u.py::test_u", None),
]


def _ran(items: list[Any], outcomes: dict[str, str]) -> None:
    for item in items:
        if item.nodeid in outcomes:
            plugin.record_in_session(item, _report(outcomes[item.nodeid]))


def test_a_whole_session_gives_its_results_in_run_order() -> None:
    plugin.collected(_session(ITEMS))
    _ran(ITEMS, {"tests/e2e/test_b.py::test_two": "passed",
                 "tests/e2e/test_a.py::test_one": "failed"})  # fmt: skip
    got = plugin.session_results("compat", FILES)
    assert got is not None
    assert [(r["name"], r["outcome"], r["features"]) for r in got] == [
        ("tests/e2e/test_b.py::test_two", "passed", ["files"]),
        ("tests/e2e/test_a.py::test_one", "failed", ["files"]),
    ]
    assert plugin.session_results("compat_interpreter", FILES) is None  # none marked


def test_a_narrowed_or_partial_session_gives_none() -> None:
    plugin.collected(_session(ITEMS, keyword="one"))
    _ran(ITEMS, {"tests/e2e/test_b.py::test_two": "passed",
                 "tests/e2e/test_a.py::test_one": "passed"})  # fmt: skip
    assert plugin.session_results("compat", FILES) is None
    plugin.collected(_session(ITEMS, args=("tests/e2e/test_a.py::test_one",)))
    assert plugin.session_results("compat", FILES) is None
    plugin.collected(_session(ITEMS[1:]))  # test_b.py not collected
    assert plugin.session_results("compat", FILES) is None


def test_a_marked_test_without_a_result_gives_none() -> None:
    plugin.collected(_session(ITEMS))
    _ran(ITEMS, {"tests/e2e/test_a.py::test_one": "passed"})  # test_two never ran
    assert plugin.session_results("compat", FILES) is None
