"""The template's layout: the server in one Python, the kernels in another (``--python``).

The kernels' Python here is a fresh venv that sees this environment's packages through a
``.pth`` line (so ipykernel, bash_kernel, matplotlib) but not the ``hutch`` package: the
kernel side must work without it.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EnvdProcess
from tests.integration.interpreter.conftest import Server, start_server, stop_server


@pytest.fixture(scope="module")
def kernel_python(module_tmp: Path) -> Path:
    venv = module_tmp / "kernel-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "hutch-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="module")
def other_server(module_tmp: Path, envd: EnvdProcess, kernel_python: Path) -> Iterator[Server]:
    srv = start_server(module_tmp, envd.url, "--python", str(kernel_python))
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture
def other_sbx(other_server: Server, monkeypatch: pytest.MonkeyPatch):
    from e2b_code_interpreter import Sandbox

    monkeypatch.setenv("E2B_DEBUG", "true")
    monkeypatch.setenv("E2B_SANDBOX_URL", other_server.url)
    monkeypatch.setenv("E2B_API_KEY", "e2b_" + "0" * 40)
    return Sandbox.create()


def test_kernels_run_on_the_given_python_without_hutch(other_sbx, kernel_python: Path) -> None:
    assert other_sbx.run_code("import sys; sys.prefix").text == str(kernel_python.parent.parent)
    missing = other_sbx.run_code("import hutch")
    assert missing.error is not None and missing.error.name == "ModuleNotFoundError"
    # its bin first on PATH: !python and !pip are its own
    first = other_sbx.run_code("import os; os.environ['PATH'].split(os.pathsep)[0]").text
    assert first == str(kernel_python.parent)
    shell = other_sbx.run_code("echo bash works", language="bash")
    assert shell.logs.stdout == ["bash works\n"]


def test_charts_and_data_work_on_the_given_python(other_sbx) -> None:
    fig = other_sbx.run_code(
        "import matplotlib.pyplot as plt\nplt.scatter([1, 2], [3, 4])\nplt.show()"
    ).results[0]
    assert fig.png and fig.chart is not None and fig.chart.type.value == "scatter"
    frame = other_sbx.run_code("import pandas as pd\npd.DataFrame({'a': [1]})").results[0]
    assert frame.data == {"a": [1]}
