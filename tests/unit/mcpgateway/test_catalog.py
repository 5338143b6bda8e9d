"""``mcp-gateway --config``'s parsing: the SDK's ``McpServer`` keys, arguments, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hutch.mcpgateway.catalog import CATALOG, install_script, parse_config, prefix_of
from hutch.mcpgateway.errors import ConfigError

SERVERS = Path("/opt/mcp-gateway/servers")
STATE = Path("/etc/mcp-gateway")


def parse(config: object):
    return parse_config(config, servers_dir=SERVERS, state_dir=STATE)


def test_catalog_entries_become_their_pinned_executables_with_arguments() -> None:
    fs, mem, git = parse({"filesystem": {"paths": ["/home/user", "/tmp"]}, "memory": {},
                          "git": {"paths": ["/repo"]}})  # fmt: skip
    assert fs.command == str(SERVERS / "npm/node_modules/.bin/mcp-server-filesystem")
    assert fs.args == ("/home/user", "/tmp") and fs.prefix == "filesystem"
    assert mem.env == {"MEMORY_FILE_PATH": str(STATE / "memory.jsonl")}
    assert git.command == str(SERVERS / "venv/bin/mcp-server-git")
    assert git.args == ("--repository", "/repo")


def test_a_github_entry_runs_its_command_in_its_checkout() -> None:
    (spec,) = parse({"github/acme/tools": {"runCmd": "node x.js", "installCmd": "npm ci",
                                            "envs": {"TOKEN": "t"}}})  # fmt: skip
    assert spec.prefix == "github_acme_tools" and spec.command == "/bin/sh"
    assert spec.args == ("-c", "node x.js") and spec.env == {"TOKEN": "t"}
    assert spec.cwd == SERVERS / "github/acme/tools"
    assert spec.install is not None and spec.install.endswith("&& npm ci")
    assert "git clone --depth 1 https://github.com/acme/tools.git" in spec.install


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ([], "must be a JSON object"),
        ({}, "names no MCP server"),
        ({"slack": {}}, "slack: not an MCP server this gateway knows"),
        ({"filesystem": {}}, "filesystem: paths must be a non-empty list"),
        ({"filesystem": {"paths": ["relative"]}}, "filesystem: paths must be"),
        ({"filesystem": {"paths": ["/x"], "root": "/"}}, "filesystem: unknown argument root"),
        ({"memory": {"x": 1}}, "memory: takes no arguments"),
        ({"memory": []}, "memory: its value must be a JSON object"),
        ({"github/a/b": {}}, "github/a/b: runCmd must be"),
        ({"github/a/b": {"runCmd": "x", "envs": {"1X": "y"}}}, "github/a/b: envs must"),
        ({"github/a/b.c": {"runCmd": "x"}, "github/a/b_c": {"runCmd": "y"}}, "both would"),
    ],
)
def test_a_bad_config_is_an_error_naming_the_server(config: object, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse(config)


def test_prefixes_stay_in_the_tool_name_alphabet() -> None:
    assert prefix_of("github/owner/my.repo") == "github_owner_my_repo"
    assert all(prefix_of(k) == k for k in CATALOG)


def test_the_install_script_pins_every_package() -> None:
    script = install_script(list(CATALOG.values()), servers_dir=SERVERS, python="/usr/bin/python3")
    for package in CATALOG.values():
        assert package.spec in script
    assert "@modelcontextprotocol/server-filesystem@" in script and "mcp-server-time==" in script
