"""The code interpreter's R kernel (Debian's IRkernel) through a real ``hutch serve`` and
the official ``e2b-code-interpreter`` SDK (``language="r"``): results, output streams,
DataFrames, errors, a context with its own state and cwd, env vars; and the languages the
SDK names that this template does not ship (``java``, ``javascript``/``js``,
``typescript``/``ts``: docs/interpreter.md says why), each a 400 naming the ones it has."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from e2b import SandboxException
from e2b_code_interpreter import Execution, Sandbox

from tests.conftest import machine_lacks

from .serveproc import Serve
from .test_interpreter import TEMPLATE, _require_template

KERNELSPEC = "usr/local/share/jupyter/kernels/ir/kernel.json"

pytestmark = pytest.mark.root


def _require_r(serve: Serve) -> None:
    """The linked template must be one built from a definition with R (an install.sh older
    than it left one without: it rebuilds when run again; on CI this fails instead)."""
    templates = serve.home / "templates"
    artifact = json.loads((templates / TEMPLATE / "template.json").read_text()).get("artifact")
    spec = templates / ".artifacts" / str(artifact) / "rootfs" / KERNELSPEC
    if not spec.is_file():
        machine_lacks(f"the installed {TEMPLATE} predates its R kernel (./install.sh rebuilds it)")


@pytest.fixture(scope="module")
def interp(serve: Serve) -> Iterator[Sandbox]:
    _require_template(serve)
    _require_r(serve)
    sbx = Sandbox.create(timeout=300)
    try:
        yield sbx
    finally:
        sbx.kill()


def _text(ex: Execution) -> str | None:
    assert ex.error is None, ex.error
    return ex.results[0].text if ex.results else None


def test_r_kernel(interp: Sandbox) -> None:
    ex = interp.run_code('x <- c(1, 2, 3)\ncat("hello from R\\n")\nsum(x) * 7', language="r")
    assert ex.error is None, ex.error
    assert ex.logs.stdout == ["hello from R\n"]
    # IRkernel shows values as display data (as under E2B's Jupyter): a result, not the
    # execution's main one.
    assert [r.text for r in ex.results] == ["[1] 42"]
    df = interp.run_code("data.frame(a = 1:2, b = c('x', 'y'))", language="r")
    assert df.error is None and df.results and "<table" in (df.results[0].html or "")
    err = interp.run_code('stop("boom")', language="r")
    assert err.error is not None and "boom" in err.error.value
    # A context of its own: its own variables and cwd; env vars of the execution.
    ctx = interp.create_code_context(language="r", cwd="/tmp")
    assert ctx.language == "r"
    interp.run_code("y <- 5", context=ctx)
    assert _text(interp.run_code("y * 2", context=ctx)) == "[1] 10"
    assert _text(interp.run_code("getwd()", context=ctx)) == '[1] "/tmp"'
    missing = interp.run_code("y", language="r")  # the default R context is another kernel
    assert missing.error is not None
    env = interp.run_code('Sys.getenv("GREETING")', language="r", envs={"GREETING": "hi"})
    assert _text(env) == '[1] "hi"'
    assert _text(interp.run_code('Sys.getenv("GREETING")', context=ctx)) == '[1] ""'


@pytest.mark.parametrize(
    ("language", "named"),
    [("java", "java"), ("javascript", "javascript"), ("js", "javascript"), ("ts", "typescript")],
)
def test_a_language_not_installed_names_the_installed_ones(
    interp: Sandbox, language: str, named: str
) -> None:
    with pytest.raises(SandboxException, match=rf"400.*'{named}' is not installed") as caught:
        interp.run_code("1", language=language)
    assert str(caught.value).endswith("installed: bash, python, r")
    with pytest.raises(SandboxException, match=rf"400.*'{named}' is not installed"):
        interp.create_code_context(language=language)
    assert interp.run_code("1 + 1").text == "2"  # still serving
