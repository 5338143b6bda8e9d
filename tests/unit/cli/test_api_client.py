"""The ``hutch`` CLI's API client: instance, key and error display, without a server."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from hutch.cli.api_client import ApiClient, api_url, check, settings_for
from hutch.cli.template import _absolute_source


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_instance_is_named_like_serve_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUTCH_HOME", str(tmp_path))
    monkeypatch.setenv("HUTCH_API_PORT", "4123")
    monkeypatch.delenv("HUTCH_HOST", raising=False)
    assert settings_for(None, None).home == tmp_path
    assert api_url(settings_for(None, None)) == "http://127.0.0.1:4123"
    assert api_url(settings_for(None, 5000)) == "http://127.0.0.1:5000"  # the option wins


def test_an_error_status_shows_the_apis_message(capsys: pytest.CaptureFixture[str]) -> None:
    response = httpx.Response(409, json={"code": 409, "message": "template 'x' already exists"})
    with pytest.raises(SystemExit) as exc:
        check(response)
    assert exc.value.code == 1
    assert capsys.readouterr().err == "hutch: 409: template 'x' already exists\n"
    check(httpx.Response(200, json=[]))  # no error, no exit


def test_nothing_listening_is_a_clear_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = _free_port()
    api = ApiClient(tmp_path, port, "e2b_unused")
    with pytest.raises(SystemExit) as exc:
        api.call("GET", "/templates")
    assert exc.value.code == 2
    assert f"cannot reach the API at http://127.0.0.1:{port}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        list(api.stream_lines("POST", "/templates/from-image", {}))
    assert exc.value.code == 2


def test_local_sources_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert _absolute_source("docker-archive:img.tar") == f"docker-archive:{tmp_path}/img.tar"
    assert _absolute_source("oci:layout:v1") == f"oci:{tmp_path}/layout:v1"
    assert _absolute_source("oci-archive:/abs/x.tar") == "oci-archive:/abs/x.tar"
    assert _absolute_source("docker://busybox:1.36") == "docker://busybox:1.36"
