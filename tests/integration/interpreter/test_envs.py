"""Env vars: the sandbox's (from envd), the context's own, the execution's, in that
order of precedence; and envd's access token passed through."""

from __future__ import annotations

import httpx

from tests.conftest import start_envd, stop_envd
from tests.integration.interpreter.conftest import init_envd, start_server, stop_server


def env_of(sbx, name: str, **kw) -> str:
    return sbx.run_code(f"import os; os.environ.get({name!r}, '<unset>')", **kw).text


def test_precedence_sandbox_then_context_then_execution(sbx) -> None:
    ctx = sbx.create_code_context()
    try:
        assert env_of(sbx, "SANDBOX_ONLY", context=ctx) == "from-sandbox"
        assert env_of(sbx, "SHARED", context=ctx) == "sandbox"
        sbx.run_code("import os; os.environ['SHARED'] = 'context'", context=ctx)
        assert env_of(sbx, "SHARED", context=ctx) == "context"
        assert env_of(sbx, "SHARED", context=ctx, envs={"SHARED": "execution"}) == "execution"
        # after the execution, the context's own value again; a var only the execution
        # had is gone
        assert env_of(sbx, "SHARED", context=ctx) == "context"
        assert env_of(sbx, "ONCE", context=ctx, envs={"ONCE": "1"}) == "1"
        assert env_of(sbx, "ONCE", context=ctx) == "<unset>"
        out = sbx.run_code("!echo $ONCE", context=ctx, envs={"ONCE": "in subprocess"})
        assert out.logs.stdout == ["in subprocess\r\n"] or out.logs.stdout == ["in subprocess\n"]
    finally:
        sbx.remove_code_context(ctx)


def test_bash_gets_sandbox_and_execution_envs(sbx) -> None:
    out = sbx.run_code('echo "$SANDBOX_ONLY $E1"', language="bash", envs={"E1": "it's"})
    assert out.logs.stdout == ["from-sandbox it's\n"]
    assert sbx.run_code('echo "${E1-unset}"', language="bash").logs.stdout == ["unset\n"]


def test_access_token_is_passed_to_envd(tmp_path) -> None:
    token = "secret-token"
    envd = start_envd(tmp_path)
    try:
        init_envd(envd, {"SECURE": "yes"}, token=token)
        server = start_server(tmp_path, envd.url)
        try:
            code = {"code": "import os; os.environ.get('SECURE', 'missing')"}
            with httpx.Client(timeout=30) as client:
                # without the token envd refuses, so the kernel lacks the sandbox's vars
                # (and the server asks again at the next execution)
                lines = client.post(server.url + "/execute", json=code).text
                assert '"text": "missing"' in lines
                lines = client.post(
                    server.url + "/execute", json=code, headers={"X-Access-Token": token}
                ).text
                assert '"text": "yes"' in lines
        finally:
            stop_server(server)
    finally:
        stop_envd(envd)
