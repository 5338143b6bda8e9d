"""Where the node API may listen, and where its token comes from (docs/node-api.md)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from starlette.applications import Starlette

from hutch.node.runner import node_api_server, private_socket
from hutch.node.settings import NodeSettings
from hutch.shared.errors import InvalidArgumentError


def test_node_runner_refuses_tcp_without_a_token(tmp_path: Path) -> None:
    for token in (None, ""):
        with pytest.raises(InvalidArgumentError, match="without a cluster token"):
            node_api_server(Starlette(), token=token, host="127.0.0.1", port=5008)
    assert node_api_server(Starlette(), token="t", host="127.0.0.1", port=5008).config.port == 5008
    # A Unix socket in a private directory may go without one.
    sock = tmp_path / "n.sock"
    assert node_api_server(Starlette(), token=None, uds=sock).config.uds == str(sock)
    with pytest.raises(InvalidArgumentError, match="Unix socket or on a port"):
        node_api_server(Starlette(), token="t", uds=sock, port=5008)


def test_node_runner_private_socket_is_in_a_0700_directory(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir(mode=0o755)
    (tmp_path / "run" / "node-api.sock").write_text("stale")
    path = private_socket(tmp_path)
    assert path == tmp_path / "run" / "node-api.sock" and not path.exists()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    deep = tmp_path / ("d" * 120)
    far = private_socket(deep)
    assert len(str(far)) <= 107 and stat.S_IMODE(far.parent.stat().st_mode) == 0o700
    far.parent.rmdir()


def test_node_runner_token_from_settings_or_the_homes_file(tmp_path: Path) -> None:
    assert NodeSettings(home=tmp_path).effective_api_token() is None
    (tmp_path / "node-api.token").write_text("from-file\n")
    assert NodeSettings(home=tmp_path).effective_api_token() == "from-file"
    assert NodeSettings(home=tmp_path, api_token="direct").effective_api_token() == "direct"  # type: ignore[arg-type]
    (tmp_path / "node-api.token").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        NodeSettings(home=tmp_path).effective_api_token()
    with pytest.raises(ValueError, match="does not exist"):
        NodeSettings(home=tmp_path, api_token_file=tmp_path / "nope").effective_api_token()
