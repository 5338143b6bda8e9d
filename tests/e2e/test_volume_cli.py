"""``hutch volume create | list | rm | ls | cp`` against a real ``hutch serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .serveproc import Serve

pytestmark = pytest.mark.root


def _hutch(serve: Serve, *args: str, flags: bool = True, stdin: bytes | None = None) -> str:
    """``hutch volume ...`` naming the instance by flags, or by HUTCH_HOME/HUTCH_API_PORT."""
    env = dict(serve.env)
    env.pop("E2B_API_KEY", None)  # the home's CLI key (default team) unless given
    cmd = [sys.executable, "-m", "hutch", "volume", *args]
    if flags:
        cmd += ["--home", str(serve.home), "--api-port", str(serve.api_port)]
    else:
        env.update(HUTCH_HOME=str(serve.home), HUTCH_API_PORT=str(serve.api_port))
    done = subprocess.run(cmd, env=env, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{cmd}: {done.returncode}\n{done.stderr.decode()}")
    return done.stdout.decode()


def test_volume_cli_round_trip(serve: Serve, tmp_path: Path) -> None:
    vid = _hutch(serve, "create", "cli-vol", "--size-mb", "64").strip()
    assert vid.startswith("vol")
    listed = [
        json.loads(line) for line in _hutch(serve, "list", "--json", flags=False).splitlines()
    ]
    assert {"volumeID": vid, "name": "cli-vol", "sizeMB": 64} in listed
    assert "cli-vol" in _hutch(serve, "list")

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 * (1 << 20) + 7))
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")

    _hutch(serve, "cp", str(big), "cli-vol:/data/")
    _hutch(serve, "cp", str(tree), "cli-vol:/", flags=False)
    _hutch(serve, "cp", "-", "cli-vol:/stdin.txt", stdin=b"from stdin")
    out = _hutch(serve, "ls", "cli-vol:/", "--depth", "3")
    assert out.startswith("# cli-vol: ")
    paths = [line.split()[-1] for line in out.splitlines()[1:]]
    assert paths == [
        "/data", "/data/big.bin", "/stdin.txt", "/tree", "/tree/a.txt", "/tree/sub",
        "/tree/sub/b.txt",
    ]  # fmt: skip

    back = tmp_path / "back.bin"
    _hutch(serve, "cp", "cli-vol:/data/big.bin", str(back))
    assert back.read_bytes() == big.read_bytes()
    assert _hutch(serve, "cp", "cli-vol:/stdin.txt", "-") == "from stdin"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _hutch(serve, "cp", "cli-vol:/tree", str(out_dir))
    assert (out_dir / "tree" / "sub" / "b.txt").read_text() == "b"

    _hutch(serve, "rm", "cli-vol")
    assert "cli-vol" not in _hutch(serve, "list")


def test_volume_cli_errors_exit_nonzero(serve: Serve, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "hutch", "volume"]
    where = ["--home", str(serve.home), "--api-port", str(serve.api_port)]
    for args in (
        ["rm", "no-such-volume"],
        ["create", "bad/name"],
        ["cp", str(tmp_path), str(tmp_path)],
        ["cp", "no-such-volume:/x", str(tmp_path / "x")],
    ):
        done = subprocess.run([*base, *args, *where], env=serve.env, capture_output=True)
        assert done.returncode != 0, args
        assert done.stderr, args
