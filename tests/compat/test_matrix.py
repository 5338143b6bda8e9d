"""The compatibility matrix: released E2B clients, each pinned, against one real ``hutch serve``.

One serve for the module (its own host names, ``COMPAT_NAMES``); each client's subset runs
as a subprocess against it:

* Python ``e2b`` (``clients.PYTHON_SDKS``): the ``compat``-marked tests of ``tests/e2e``,
  attached to this serve (``HUTCH_E2E_ATTACH``), with that release's interpreter;
* the JS SDK (each ``js/clients/e2b-*``): ``js/sdk.test.cjs`` under ``node --test``;
* the ``e2b`` CLI (``js/clients/e2b-cli-*``): ``js/cli.test.cjs``, which runs the CLI;
* the code-interpreter SDKs, at the versions the e2e tests pin: Python
  ``e2b-code-interpreter`` (``.venv``'s) runs the ``compat_interpreter``-marked tests of
  ``tests/e2e/test_interpreter.py``; ``@e2b/code-interpreter`` (``tests/e2e/js/
  code-interpreter``) runs ``tests/e2e/js/interpreter.test.cjs``. Both need the
  ``code-interpreter-v1`` template install.sh builds.

The Python columns of ``.venv``'s own SDKs are the e2e tests' own runs: when the session
ran every one of those tests (the whole suite; ``tests/conftest.py`` puts this module
last), their results are taken from it instead of running them again against this serve;
run alone (``pytest tests/compat``) the matrix runs them itself.

A client whose subset has a failure fails its test here. The last test renders every
client's results into ``docs/compat.md`` (``report.py``) and fails when the committed file
did not already say that, so the table always shows the matrix's last results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import machine_lacks
from tests.e2e.serveproc import (
    ATTACH_ENV,
    E2E_NAMES,
    SLOT,
    HostNames,
    Serve,
    nodehelpers,
    seed_templates,
)  # fmt: skip

from . import clients, plugin, report

#: A first run installs the clients too (test.sh does it before pytest, CI included).
pytestmark = [pytest.mark.root, pytest.mark.timeout(1200)]

#: Distinct from the e2e session's names (none a prefix of another's: the leak counter
#: matches by prefix), so the two serves never share a host object.
COMPAT_NAMES = HostNames(
    bridge=f"hsc{SLOT}",
    subnet=f"10.218.{33 + SLOT}.0/24",
    netns_prefix=f"hsc{SLOT}-",
    veth_prefix=f"hz{SLOT}",
    nft_table=f"hsc{SLOT}",
    cgroup_parent=f"hsc{SLOT}-{os.getpid()}",
    extra_env=E2E_NAMES.extra_env,
)
#: A client's whole subset gets this long (its tests have their own, shorter timeouts).
RUN_TIMEOUT_S = 900
DOC = clients.REPO / "docs" / "compat.md"

#: Each client's results (``report.Result`` dicts), in the order the tests ran.
RESULTS: dict[str, list[dict[str, Any]]] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "npm_client" in metafunc.fixturenames:
        kind = "cli" if metafunc.function.__name__ == "test_cli" else "sdk"
        chosen = [c for c in clients.npm_clients() if c.kind == kind]
        metafunc.parametrize("npm_client", chosen, ids=[c.version for c in chosen])


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, dict[str, str]]]:
    """The serve every client drives, and the environment that names it."""
    home = tmp_path_factory.mktemp("compat-home")
    seed_templates(home)
    server = Serve(home=home, envd_bundle=nodehelpers.cached_envd_bundle(), names=COMPAT_NAMES)
    key = server.hutch("keys", "create").strip()
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2B_")}
    env.update(E2B_API_URL=server.api_url, E2B_SANDBOX_URL=server.sandbox_url, E2B_API_KEY=key)
    with server.running():
        yield server, env


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=clients.REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _record(
    label: str, results: list[dict[str, Any]], run: subprocess.CompletedProcess[str]
) -> None:
    """Keep ``label``'s results; fail on any failed test, or a run that reported none."""
    RESULTS[label] = results
    failed = [r for r in results if r["outcome"] == "failed"]
    detail = "\n\n".join(f"{r['name']}:\n{r.get('error', '')}" for r in failed)
    assert results, (
        f"{label}: no results (exit {run.returncode})\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )
    assert not failed, f"{label}: {len(failed)} failed\n{detail}\n{run.stdout[-3000:]}"
    assert run.returncode == 0, (
        f"{label}: exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )


def _pytest_subset(
    serve: Serve, env: dict[str, str], *, python: Path, marker: str, files: list[str],
    label: str, out: Path,
) -> None:  # fmt: skip
    """Run the tests of ``files`` marked ``marker`` attached to ``serve``; record them.

    With ``.venv``'s own interpreter (the SDK the e2e tests pin) and a session that ran
    those tests itself, their results here are that run's (``plugin.session_results``)."""
    if python == Path(sys.executable):
        ran = plugin.session_results(marker, files)
        if ran is not None:
            RESULTS[label] = ran
            failed = [r["name"] for r in ran if r["outcome"] == "failed"]
            assert not failed, f"{label}: {len(failed)} failed in this session: {failed}"
            return
    env = {
        **env,
        ATTACH_ENV: serve.attach_spec(),
        # hutch (the e2e harness) from this checkout; the SDK from the release's environment.
        "PYTHONPATH": os.pathsep.join([str(clients.REPO / "src"), str(clients.REPO)]),
    }
    cmd = [str(python), "-m", "pytest", "-p", "tests.compat.plugin", f"--compat-results={out}",
           f"--compat-marker={marker}", "-p", "no:cacheprovider", "-m", marker, "-q",
           *files]  # fmt: skip
    run = _run(cmd, env)
    results = json.loads(out.read_text()) if out.is_file() else []
    _record(label, results, run)


@pytest.mark.parametrize("version", clients.PYTHON_SDKS)
def test_python_sdk(matrix: tuple[Serve, dict[str, str]], version: str, tmp_path: Path) -> None:
    serve, env = matrix
    files = sorted(
        str(p.relative_to(clients.REPO))
        for p in (clients.REPO / "tests" / "e2e").glob("test_*.py")
        if "pytest.mark.compat(" in p.read_text()
    )
    _pytest_subset(
        serve, env, python=clients.python_for(version), marker="compat", files=files,
        label=f"Python e2b {version}", out=tmp_path / "results.json",
    )  # fmt: skip


def _require_interpreter(serve: Serve) -> None:
    if not (serve.home / "templates" / "code-interpreter-v1" / "template.json").is_file():
        machine_lacks("the code-interpreter-v1 template is not installed (./install.sh)")


def test_python_code_interpreter(matrix: tuple[Serve, dict[str, str]], tmp_path: Path) -> None:
    serve, env = matrix
    _require_interpreter(serve)
    _pytest_subset(
        serve, env, python=Path(sys.executable), marker="compat_interpreter",
        files=["tests/e2e/test_interpreter.py"], label=clients.python_interpreter_label(),
        out=tmp_path / "results.json",
    )  # fmt: skip


def _node() -> str:
    node = shutil.which("node")
    have = clients.node_version()
    if node is None or have is None:
        machine_lacks("node is not installed (test.sh installs nodejs and npm)")
    if have < clients.NODE_MIN:
        machine_lacks(f"node {have} is older than the pinned clients need ({clients.NODE_MIN})")
    return node


def _node_test(script: str, client: clients.NpmClient, env: dict[str, str], tmp_path: Path) -> None:
    _node_run(clients.JS_DIR / script, clients.node_modules_for(client), client.label, env,
              tmp_path)  # fmt: skip


def _node_run(script: Path, modules: Path, label: str, env: dict[str, str], tmp_path: Path) -> None:
    node = _node()
    out = tmp_path / "results.jsonl"
    reporter = (clients.JS_DIR / "reporter.mjs").as_uri()
    env = {**env, "NODE_PATH": str(modules), "HOME": str(tmp_path)}  # no ~/.e2b config
    cmd = [node, "--test", f"--test-reporter={reporter}", f"--test-reporter-destination={out}",
           "--test-reporter=spec", "--test-reporter-destination=stdout",
           str(script)]  # fmt: skip
    run = _run(cmd, env)
    lines = out.read_text().splitlines() if out.is_file() else []
    results = []
    for line in lines:
        r = json.loads(line)
        features, _, _ = r["name"].partition(":")
        results.append({**r, "features": [f.strip() for f in features.split(",")]})
    _record(label, results, run)


def test_js_sdk(
    matrix: tuple[Serve, dict[str, str]], npm_client: clients.NpmClient, tmp_path: Path
) -> None:
    _node_test("sdk.test.cjs", npm_client, matrix[1], tmp_path)


def test_cli(
    matrix: tuple[Serve, dict[str, str]], npm_client: clients.NpmClient, tmp_path: Path
) -> None:
    _node_test("cli.test.cjs", npm_client, matrix[1], tmp_path)


def test_js_code_interpreter(matrix: tuple[Serve, dict[str, str]], tmp_path: Path) -> None:
    serve, env = matrix
    _require_interpreter(serve)
    _node()
    source = clients.INTERPRETER_NPM_DIR
    modules = clients.node_modules_at(source, name=f"e2e-{source.name}", label=source.name)
    script = clients.REPO / "tests" / "e2e" / "js" / "interpreter.test.cjs"
    _node_run(script, modules, clients.js_interpreter_label(), env, tmp_path)


def test_compat_doc_shows_these_results(tmp_path_factory: pytest.TempPathFactory) -> None:
    expected = [
        *(f"Python e2b {v}" for v in clients.PYTHON_SDKS),
        *(c.label for c in clients.npm_clients()),
        clients.python_interpreter_label(),
        clients.js_interpreter_label(),
    ]
    missing = [label for label in expected if label not in RESULTS]
    if missing:
        machine_lacks(f"the whole matrix did not run here (no results for {', '.join(missing)})")
    by_client = {label: RESULTS[label] for label in expected}
    # The run's results, for ``python -m tests.compat.report`` by hand.
    (tmp_path_factory.getbasetemp() / "compat-results.json").write_text(json.dumps(by_client))
    text = report.render(by_client)
    before = DOC.read_text() if DOC.is_file() else ""
    DOC.write_text(text)
    assert before == text, f"{DOC} did not show these results: rewritten, commit it"
