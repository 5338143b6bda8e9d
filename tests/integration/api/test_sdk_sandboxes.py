"""The official e2b SDK 2.63 against the real API (control-plane calls only)."""

from __future__ import annotations

from e2b import AsyncSandbox, Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import AuthenticationException, NotFoundException, SandboxException

from tests.integration.api.conftest import ApiServer


def test_sdk_create_returns_a_running_sandbox(sdk_env: ApiServer) -> None:
    sbx = Sandbox.create(metadata={"k": "v"}, envs={"A": "1"}, timeout=60)
    assert sbx.sandbox_id.startswith("i")
    assert sbx.sandbox_id in sdk_env.node.running
    spec = sdk_env.node.running[sbx.sandbox_id]
    assert spec.env_vars == {"A": "1"}
    assert spec.envd_access_token  # v2 is always secured
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id
    assert info.metadata == {"k": "v"}
    assert info.template_id == "basetemplate00000001"
    assert (info.end_at - info.started_at).total_seconds() == 60


def test_sdk_kill_true_then_false(sdk_env: ApiServer) -> None:
    sbx = Sandbox.create("busybox")
    assert Sandbox.kill(sbx.sandbox_id) is True
    assert sbx.sandbox_id not in sdk_env.node.running
    assert Sandbox.kill(sbx.sandbox_id) is False


def test_sdk_set_timeout_moves_the_deadline(sdk_env: ApiServer) -> None:
    sbx = Sandbox.create()
    sbx.set_timeout(1000)
    info = sbx.get_info()
    assert 999 <= (info.end_at - info.started_at).total_seconds() <= 1100


def test_sdk_connect_returns_the_same_sandbox(sdk_env: ApiServer) -> None:
    sbx = Sandbox.create()
    again = Sandbox.connect(sbx.sandbox_id)
    assert again.sandbox_id == sbx.sandbox_id
    assert again._envd_access_token == sbx._envd_access_token


def test_sdk_connect_unknown_is_not_found(sdk_env: ApiServer) -> None:
    try:
        Sandbox.connect("iunknown0000000000000")
    except NotFoundException:
        pass
    else:
        raise AssertionError("expected NotFoundException")


def test_sdk_unknown_template_fails(sdk_env: ApiServer) -> None:
    try:
        Sandbox.create("nope")
    except SandboxException as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("expected an error")
    assert sdk_env.node.running == {}


def test_sdk_wrong_key_is_authentication_error(sdk_env: ApiServer) -> None:
    try:
        Sandbox.create(api_key="e2b_" + "0" * 40)
    except AuthenticationException:
        pass
    else:
        raise AssertionError("expected AuthenticationException")


def test_sdk_list_filters_and_paginates(sdk_env: ApiServer) -> None:
    ids = [
        Sandbox.create(metadata={"group": "a b&c=d/é", "n": str(i)}).sandbox_id for i in range(5)
    ]
    Sandbox.create(metadata={"group": "other"})
    paused_only = Sandbox.list(query=SandboxQuery(state=[SandboxState.PAUSED]))
    assert paused_only.next_items() == []
    paginator = Sandbox.list(
        query=SandboxQuery(metadata={"group": "a b&c=d/é"}, state=[SandboxState.RUNNING]),
        limit=2,
    )
    seen = []
    pages = 0
    while paginator.has_next:
        page = paginator.next_items()
        pages += 1
        assert len(page) <= 2
        seen.extend(s.sandbox_id for s in page)
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first
    assert Sandbox.kill(ids[0])
    assert ids[0] not in [
        s.sandbox_id
        for s in Sandbox.list(query=SandboxQuery(metadata={"group": "a b&c=d/é"})).next_items()
    ]


def test_sdk_metrics(sdk_env: ApiServer) -> None:
    sbx = Sandbox.create()
    metrics = Sandbox.get_metrics(sbx.sandbox_id)
    assert len(metrics) == 1
    assert metrics[0].cpu_count == 2


async def test_sdk_async_variants(sdk_env: ApiServer) -> None:
    sbx = await AsyncSandbox.create("busybox", metadata={"async": "yes"})
    info = await sbx.get_info()
    assert info.metadata == {"async": "yes"}
    await sbx.set_timeout(120)
    again = await AsyncSandbox.connect(sbx.sandbox_id)
    assert again.sandbox_id == sbx.sandbox_id
    page = await AsyncSandbox.list(query=SandboxQuery(metadata={"async": "yes"})).next_items()
    assert [s.sandbox_id for s in page] == [sbx.sandbox_id]
    assert await AsyncSandbox.kill(sbx.sandbox_id) is True
    assert await AsyncSandbox.kill(sbx.sandbox_id) is False
