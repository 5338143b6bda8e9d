"""The warm pool's bookkeeping and its setting (pure)."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from hutch.node.sandbox.models import RunningSandbox
from hutch.node.sandbox.pool import PoolKey, WarmPool, is_pool_id, new_pool_id
from hutch.node.settings import NodeSettings, parse_pool_sizes
from hutch.shared.ids import new_sandbox_id

BASE = PoolKey(template="base", cpu_count=2.0, memory_mb=1024, allow_internet=True)
BUSYBOX = PoolKey(template="busybox", cpu_count=1.0, memory_mb=128, allow_internet=True)


def _member(host_id: str) -> RunningSandbox:
    return RunningSandbox(
        sandbox_id=host_id, template="base", address=IPv4Address("10.0.0.2"),
        envd_url="http://10.0.0.2:49983", pid=1, cpu_count=2.0, memory_mb=1024,
        default_user="user", workdir="/home/user", started_at=0.0,
        sandbox_dir=Path("/x") / host_id,
    )  # fmt: skip


def test_pool_ids_never_look_like_api_sandbox_ids() -> None:
    assert is_pool_id(new_pool_id())
    assert new_pool_id() != new_pool_id()
    assert not any(is_pool_id(new_sandbox_id()) for _ in range(100))


def test_warm_pool_missing_counts_idle_and_booting_members() -> None:
    pool = WarmPool({BASE: 2, BUSYBOX: 1, PoolKey("none", 1.0, 1, True): 0})
    assert pool.targets == {BASE: 2, BUSYBOX: 1}
    assert pool.missing() == [BASE, BUSYBOX, BASE]
    pool.booting(BASE, +1)
    pool.add(BUSYBOX, _member("pool-1"))
    assert pool.missing() == [BASE]
    assert pool.size() == 2
    pool.booting(BASE, -1)
    pool.add(BASE, _member("pool-2"))
    pool.add(BASE, _member("pool-3"))
    assert pool.missing() == []
    assert pool.is_idle_member("pool-2")


def test_warm_pool_take_is_per_key_and_oldest_first() -> None:
    pool = WarmPool({BASE: 2})
    pool.add(BASE, _member("pool-a"))
    pool.add(BASE, _member("pool-b"))
    other = PoolKey(template="base", cpu_count=2.0, memory_mb=1024, allow_internet=False)
    assert pool.take(other) is None
    assert pool.take(BUSYBOX) is None
    taken = pool.take(BASE)
    assert taken is not None and taken.host_id == "pool-a"
    assert pool.missing() == [BASE]
    assert [m.host_id for m in pool.drain()] == ["pool-b"]
    assert pool.take(BASE) is None and pool.size() == 0


def test_running_sandbox_host_id_defaults_to_its_id_and_survives_the_record() -> None:
    cold = _member("iabc")
    assert cold.host_id == "iabc"
    pooled = RunningSandbox.from_json(
        {**_member("pool-x").to_json(), "sandbox_id": "idef"}, sandbox_dir=Path("/x/pool-x")
    )
    assert (pooled.sandbox_id, pooled.host_id) == ("idef", "pool-x")
    legacy = {k: v for k, v in cold.to_json().items() if k != "host_id"}
    assert RunningSandbox.from_json(legacy, sandbox_dir=Path("/x/iabc")).host_id == "iabc"


def test_warm_pool_retarget_gives_back_members_of_dropped_keys() -> None:
    pool = WarmPool({BASE: 1})
    pool.add(BASE, _member("pool-a"))
    assert pool.add(BUSYBOX, _member("pool-b")) is False  # not wanted
    dropped = pool.retarget({BUSYBOX: 2})
    assert [m.host_id for m in dropped] == ["pool-a"]
    assert pool.missing() == [BUSYBOX, BUSYBOX]
    assert pool.add(BUSYBOX, _member("pool-c")) is True
    member = next(pool.idle())
    assert pool.remove(member) is True
    assert pool.remove(member) is False  # taken or removed already
    assert pool.size() == 0


def test_parse_pool_sizes() -> None:
    assert parse_pool_sizes("") == {}
    assert parse_pool_sizes("base=2, busybox=0") == {"base": 2, "busybox": 0}
    for bad in ("base", "base=-1", "=2", "base=x"):
        with pytest.raises(ValueError):
            parse_pool_sizes(bad)


def test_node_settings_pool_default_and_runsc() -> None:
    assert NodeSettings().pool_sizes == {"base": 2, "code-interpreter-v1": 2}
    assert NodeSettings(pool_size="busybox=3").pool_sizes == {"busybox": 3}
    assert NodeSettings(runtime="runsc").pool_sizes == {}
    with pytest.raises(ValueError):
        NodeSettings(pool_size="base")
