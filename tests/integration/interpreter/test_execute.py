"""``/execute`` through the official ``e2b_code_interpreter`` SDK: output, results, errors."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.interpreter.conftest import Server, children, proc_status


def test_run_code_returns_main_result_and_logs(sbx) -> None:
    seen_out: list[str] = []
    seen_err: list[str] = []
    execution = sbx.run_code(
        "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\n1 + 1",
        on_stdout=lambda m: seen_out.append(m.line),
        on_stderr=lambda m: seen_err.append(m.line),
    )
    assert execution.error is None
    assert execution.text == "2"
    assert execution.results[0].is_main_result
    assert execution.logs.stdout == ["hello\n"]
    assert execution.logs.stderr == ["oops\n"]
    assert seen_out == ["hello\n"] and seen_err == ["oops\n"]
    assert isinstance(execution.execution_count, int)


def test_state_persists_between_cells_and_counts_executions(sbx) -> None:
    first = sbx.run_code("counter_state = 41")
    second = sbx.run_code("counter_state + 1")
    assert second.text == "42"
    assert second.execution_count == first.execution_count + 1


def test_string_result_loses_its_quotes_as_with_e2b(sbx) -> None:
    assert sbx.run_code("'abc'").text == "abc"


def test_exception_gives_name_value_traceback(sbx) -> None:
    errors = []
    execution = sbx.run_code(
        "def f():\n    raise ValueError('bad value')\nf()", on_error=errors.append
    )
    assert execution.error is not None
    assert execution.error.name == "ValueError"
    assert execution.error.value == "bad value"
    assert "raise ValueError" in execution.error.traceback
    assert "\x1b[" not in execution.error.traceback  # no terminal colours
    assert errors and errors[0].name == "ValueError"
    assert sbx.run_code("1").text == "1"  # the context still serves


def test_syntax_error_is_an_error_not_a_crash(sbx) -> None:
    execution = sbx.run_code("def (:")
    assert execution.error is not None
    assert execution.error.name == "SyntaxError"
    assert sbx.run_code("2").text == "2"


def test_output_that_is_not_utf8_arrives_replaced(sbx) -> None:
    execution = sbx.run_code(
        "import sys\n"
        "sys.stdout.write('lone \\udcff surrogate\\n')\n"
        "!printf 'raw \\377\\376 bytes\\n'"
    )
    text = "".join(execution.logs.stdout)
    assert execution.error is None
    assert "lone \ufffd surrogate\n" in text
    assert "raw \ufffd\ufffd bytes" in text


def test_display_calls_are_results_but_not_main(sbx) -> None:
    execution = sbx.run_code(
        "from IPython.display import display, HTML, Markdown, JSON, Latex\n"
        "display(HTML('<b>x</b>'))\ndisplay(Markdown('# t'))\ndisplay(Latex(r'$x^2$'))\n"
        "display(JSON({'a': 1}))\n"
        "{'k': [1, 2]}"
    )
    html, md, latex, js, main = execution.results
    assert html.html == "<b>x</b>" and not html.is_main_result
    assert md.markdown == "# t"
    assert latex.latex == "$x^2$"
    assert js.json == {"a": 1}
    assert main.is_main_result and main.text == "{'k': [1, 2]}"


def test_unknown_mime_type_lands_in_extra(sbx) -> None:
    execution = sbx.run_code(
        "from IPython.display import display\n"
        "display({'application/x-hutch': 'v', 'text/plain': 'p'}, raw=True)"
    )
    (result,) = execution.results
    assert result.text == "p"
    assert result.extra == {"application/x-hutch": "v"}


def test_keepalive_lines_are_sent_while_a_cell_is_silent(server: Server) -> None:
    # The module's server sends a keepalive after 1 s of silence; the SDK ignores them.
    with httpx.stream(
        "POST",
        server.url + "/execute",
        json={"code": "import time; time.sleep(2.5); 'done'"},
        timeout=30,
    ) as resp:
        types = [__import__("json").loads(line)["type"] for line in resp.iter_lines() if line]
    assert "keepalive" in types
    assert types[-1] == "end_of_execution"
    assert types[-2] == "result"


def test_hundreds_of_megabytes_stream_with_bounded_memory(sbx, server: Server) -> None:
    total = 0

    def count(msg) -> None:
        nonlocal total
        total += len(msg.line)

    before = proc_status(server.process.pid, "VmHWM")
    execution = sbx.run_code(
        "chunk = 'y' * 1023 + '\\n'\nfor _ in range(300 * 1024):\n    print(chunk, end='')",
        on_stdout=count,
        timeout=600,
    )
    assert execution.error is None
    assert total == 300 * 1024 * 1024
    server_peak = proc_status(server.process.pid, "VmHWM")
    kernel_peaks = [proc_status(pid, "VmHWM") for pid in children(server.process.pid)]
    assert server_peak - before < 128 * 1024, (before, server_peak)
    assert all(peak < 256 * 1024 for peak in kernel_peaks), kernel_peaks
    execution.logs.stdout.clear()


@pytest.mark.parametrize(
    "body, message",
    [
        ({"code": 1}, "code must be a string"),
        ({}, "code must be a string"),
        ({"code": "1", "language": "python", "context_id": "x"}, "Only one of context_id"),
        ({"code": "1", "env_vars": {"1BAD": "v"}}, "not valid"),
        ({"code": "1", "env_vars": {"A": 1}}, "must be a string"),
        ({"code": "1", "env_vars": ["A"]}, "env_vars must be an object"),
    ],
)
def test_bad_execute_bodies_are_400(server: Server, body, message: str) -> None:
    resp = httpx.post(server.url + "/execute", json=body, timeout=10)
    assert resp.status_code == 400
    assert message in resp.text


def test_body_that_is_not_json_is_400(server: Server) -> None:
    resp = httpx.post(server.url + "/execute", content=b"{nope", timeout=10)
    assert resp.status_code == 400
    assert "not JSON" in resp.text


def test_unknown_language_names_the_installed_ones(sbx) -> None:
    from e2b import SandboxException

    with pytest.raises(SandboxException) as info:
        sbx.run_code("x", language="cobol")
    assert "400" in str(info.value)
    assert "'cobol' is not installed" in str(info.value)
    assert "python" in str(info.value)


def test_health(server: Server) -> None:
    resp = httpx.get(server.url + "/health", timeout=5)
    assert resp.status_code == 200 and resp.json() == "OK"
