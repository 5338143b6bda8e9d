"""The code interpreter through a real ``hutch serve``, driven by the official
``e2b-code-interpreter`` SDK (sync and async) unchanged: ``Sandbox.create()`` gets the
``code-interpreter-v1`` template (install.sh builds it), ``run_code`` with callbacks,
results, charts, contexts, languages, errors and timeouts, the plain SDK's files and
commands in the same sandbox, and the bad inputs of issue 12 (the server keeps serving)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import pytest
from e2b import NotFoundException, SandboxException, Template
from e2b_code_interpreter import AsyncSandbox, Sandbox
from e2b_code_interpreter.charts import ChartType
from e2b_code_interpreter.exceptions import TimeoutException
from e2b_code_interpreter.models import OutputMessage, Result

from tests.conftest import machine_lacks

from .serveproc import Serve

pytestmark = pytest.mark.root

TEMPLATE = "code-interpreter-v1"


def _require_template(serve: Serve) -> None:
    if not (serve.home / "templates" / TEMPLATE / "template.json").is_file():
        machine_lacks(f"the {TEMPLATE} template is not installed (./install.sh builds it)")


@pytest.fixture
def interp(serve: Serve) -> Iterator[Sandbox]:
    _require_template(serve)
    sbx = Sandbox.create(timeout=300)  # the SDK's default template: code-interpreter-v1
    try:
        yield sbx
    finally:
        sbx.kill()


@pytest.mark.compat_interpreter("run_code")
def test_interpreter_run_code_callbacks_results_and_the_plain_sdk(interp: Sandbox) -> None:
    assert interp.get_info().template_id == TEMPLATE
    out: list[OutputMessage] = []
    err: list[OutputMessage] = []
    results: list[Result] = []
    errors: list[object] = []
    ex = interp.run_code(
        "import sys\nprint('hi')\nprint('oops', file=sys.stderr)\n1 + 1",
        on_stdout=out.append, on_stderr=err.append, on_result=results.append,
        on_error=errors.append,
    )  # fmt: skip
    assert ex.error is None and errors == []
    assert ex.text == "2" and ex.logs.stdout == ["hi\n"] and ex.logs.stderr == ["oops\n"]
    assert [m.line for m in out] == ["hi\n"] and [m.line for m in err] == ["oops\n"]
    assert [(r.text, r.is_main_result) for r in results] == [("2", True)]

    # Files and commands of the plain SDK in the same sandbox, both ways.
    interp.files.write("/home/user/data.csv", "a,b\n1,2\n3,4\n")
    ex = interp.run_code("import pandas as pd\ndf = pd.read_csv('/home/user/data.csv')\ndf")
    frame = ex.results[0]
    assert frame.html is not None and "<table" in frame.html
    assert frame.data == {"a": [1, 3], "b": [2, 4]}
    interp.run_code("open('/home/user/from-kernel.txt', 'w').write('written by the kernel')")
    assert interp.files.read("/home/user/from-kernel.txt") == "written by the kernel"
    assert interp.commands.run("whoami").stdout.strip() == "user"
    # The kernel's packages are the template's python3, for commands too.
    versions = interp.commands.run(
        "python3 -c 'import numpy, pandas, sklearn, scipy; print(numpy.__version__)'"
    )
    assert versions.stdout.strip() == "2.3.5"
    errors.clear()
    ex = interp.run_code("1 / 0", on_error=errors.append)
    assert ex.error is not None and ex.error.name == "ZeroDivisionError"
    assert ex.error.value == "division by zero" and "ZeroDivisionError" in ex.error.traceback
    assert errors == [ex.error]


@pytest.mark.compat_interpreter("charts")
def test_interpreter_matplotlib_chart(interp: Sandbox) -> None:
    ex = interp.run_code(
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9], label='squares')\n"
        "plt.title('Squares')\nplt.xlabel('n')\nplt.show()"
    )
    assert ex.error is None, ex.error
    (figure,) = ex.results
    assert figure.png is not None and base64.b64decode(figure.png).startswith(b"\x89PNG")
    assert figure.chart is not None and figure.chart.type == ChartType.LINE
    assert figure.chart.title == "Squares"


@pytest.mark.compat_interpreter("code contexts")
def test_interpreter_contexts_and_languages(interp: Sandbox) -> None:
    ctx = interp.create_code_context(cwd="/tmp")
    interp.run_code("x = 41", context=ctx)
    assert interp.run_code("x + 1", context=ctx).text == "42"
    assert interp.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    default = interp.run_code("x")  # the default context is another kernel
    assert default.error is not None and default.error.name == "NameError"
    assert ctx.id in {c.id for c in interp.list_code_contexts()}
    interp.restart_code_context(ctx)
    restarted = interp.run_code("x", context=ctx)
    assert restarted.error is not None and restarted.error.name == "NameError"
    interp.remove_code_context(ctx)
    with pytest.raises(NotFoundException):
        interp.run_code("1", context=ctx)

    assert interp.run_code("echo $((6 * 7))", language="bash").logs.stdout == ["42\n"]
    with pytest.raises(SandboxException, match=r"400.*not installed.*python"):
        interp.run_code("1", language="cobol")
    env = interp.run_code("import os; os.environ['GREETING']", envs={"GREETING": "hi"})
    assert env.text == "hi"


@pytest.mark.compat_interpreter("run_code errors")
def test_interpreter_bad_inputs_leave_it_serving(interp: Sandbox) -> None:
    syntax = interp.run_code("def (:")
    assert syntax.error is not None and syntax.error.name == "SyntaxError"

    with pytest.raises(TimeoutException):
        interp.run_code("while True:\n    pass", timeout=3)
    assert interp.run_code("1 + 1").text == "2"  # interrupted; the context is usable

    died = interp.run_code("import os; os._exit(1)")
    assert died.error is not None and died.error.name == "KernelDied"
    assert interp.run_code("2 + 2").text == "4"  # a restarted kernel

    seen = [0]

    def count(msg: OutputMessage) -> None:
        seen[0] += len(msg.line)

    big = interp.run_code(
        "for _ in range(64):\n    print('x' * (1 << 20))", on_stdout=count, timeout=120
    )
    assert big.error is None
    dropped = "".join(big.logs.stderr)
    assert seen[0] == 64 * ((1 << 20) + 1) or "were dropped" in dropped

    raw = interp.run_code("!printf 'ok \\xff\\xfe bytes\\n'")  # a subprocess's raw bytes
    assert raw.error is None and "ok \ufffd\ufffd bytes" in "".join(raw.logs.stdout)
    assert interp.run_code("3 + 3").text == "6"


@pytest.fixture
async def ainterp(serve: Serve) -> AsyncIterator[AsyncSandbox]:
    _require_template(serve)
    sbx = await AsyncSandbox.create("code-interpreter", timeout=300)  # the alias
    try:
        yield sbx
    finally:
        await sbx.kill()


async def test_interpreter_async_sdk_and_alias(ainterp: AsyncSandbox) -> None:
    assert (await ainterp.get_info()).template_id == TEMPLATE
    lines: list[str] = []

    async def on_stdout(msg: OutputMessage) -> None:
        lines.append(msg.line)

    ex = await ainterp.run_code("print('async'); 20 + 22", on_stdout=on_stdout)
    assert ex.text == "42" and lines == ["async\n"]
    ctx = await ainterp.create_code_context(language="python")
    await ainterp.run_code("y = 7", context=ctx)
    assert (await ainterp.run_code("y * 6", context=ctx)).text == "42"
    with pytest.raises(TimeoutException):
        await ainterp.run_code("import time; time.sleep(30)", timeout=2)
    assert (await ainterp.run_code("1 + 1")).text == "2"
    assert (await ainterp.commands.run("echo plain")).stdout == "plain\n"


def test_interpreter_variant_built_with_the_sdk_keeps_the_server(serve: Serve) -> None:
    """docs/interpreter.md's recipe: ``Template().from_template("code-interpreter-v1")``
    plus a step, built through the SDK; the build sets no start command, so the server's is
    kept, and what a root step puts in ``/usr/local`` is the kernel's."""
    _require_template(serve)
    variant = (
        Template()
        .from_template(TEMPLATE)
        .run_cmd(
            "echo 'VALUE = 42' > /usr/local/lib/python3.11/dist-packages/hutch_variant.py",
            user="root",
        )
    )
    Template.build(variant, "interp-variant", cpu_count=2, memory_mb=2048)
    sbx = Sandbox.create("interp-variant", timeout=300)
    try:
        assert sbx.run_code("import hutch_variant; hutch_variant.VALUE * 1").text == "42"
    finally:
        sbx.kill()


def _wheel(name: str, version: str, source: str) -> bytes:
    """A minimal pure-Python wheel of module ``name`` (no network needed to install it)."""
    import hashlib
    import io
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": source.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hutch-test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }

    def digest(data: bytes) -> str:
        raw = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"sha256={raw}"

    record = "".join(f"{path},{digest(data)},{len(data)}\n" for path, data in files.items())
    files[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    return buf.getvalue()


def test_interpreter_secure_sandbox_envs_and_pip_install(serve: Serve) -> None:
    """A secure sandbox (envd wants its access token, which the server must send to read
    the sandbox's env vars), the env-var precedence sandbox < execution, and ``%pip
    install`` / ``!pip install`` into the kernel's environment, importable at once and in
    a new context (it stays for the sandbox's life)."""
    _require_template(serve)
    sbx = Sandbox.create(timeout=300, secure=True, envs={"WHO": "sandbox", "KEEP": "kept"})
    try:
        assert sbx.run_code("import os; os.environ['WHO']").text == "sandbox"
        both = sbx.run_code("os.environ['WHO'] + ' ' + os.environ['KEEP']", envs={"WHO": "cell"})
        assert both.text == "cell kept"
        assert sbx.run_code("os.environ['WHO']").text == "sandbox"  # the cell's was undone
        sbx.files.write("/tmp/hutchdemo-1.0-py3-none-any.whl",
                        _wheel("hutchdemo", "1.0", "ANSWER = 42\n"))  # fmt: skip
        pip = sbx.run_code("%pip install -q --no-index /tmp/hutchdemo-1.0-py3-none-any.whl")
        assert pip.error is None, pip.error
        assert sbx.run_code("import hutchdemo; hutchdemo.ANSWER").text == "42"
        sbx.files.write("/tmp/hutchdemo2-1.0-py3-none-any.whl",
                        _wheel("hutchdemo2", "1.0", "ANSWER = 43\n"))  # fmt: skip
        bang = sbx.run_code("!pip install -q --no-index /tmp/hutchdemo2-1.0-py3-none-any.whl")
        assert bang.error is None, bang.error
        ctx = sbx.create_code_context()
        fresh = sbx.run_code("import hutchdemo, hutchdemo2; hutchdemo2.ANSWER", context=ctx)
        assert fresh.text == "43"
    finally:
        sbx.kill()
