"""``hutch volume create | list | rm | ls | cp``: volumes of a running ``hutch serve``.

Like ``hutch sandbox``, these talk to the API of the instance named by ``--home`` /
``HUTCH_HOME`` and ``--api-port`` / ``HUTCH_API_PORT`` with ``--api-key`` / ``E2B_API_KEY``
(default: the home's CLI key, default team), through :mod:`hutch.cli.api_client`. Files go
through the volume content API with the volume's token, streamed both ways; copies of more
than 1 MiB show a progress bar on stderr (``--quiet`` hides it).

``cp`` takes one side as ``VOLUME:PATH`` (a volume name or id) and the other as a local path
(``-`` for stdin or stdout); a local directory is uploaded recursively, a volume directory
downloaded recursively.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from hutch.cli.api_client import API_KEY_OPTION, API_PORT_OPTION, HOME_OPTION, ApiClient, check

if TYPE_CHECKING:
    import httpx

_CHUNK = 1 << 20
_PROGRESS_MIN_BYTES = 1 << 20


class _Api(ApiClient):
    """The control plane (``X-API-Key``) and one volume's content API (its token)."""

    def volume(self, name: str) -> dict[str, Any]:
        """``GET /volumes/{name}``: id, name, a fresh token, usage."""
        return self.call("GET", f"/volumes/{name}")  # type: ignore[no-any-return]

    def volume_content(self, vol: dict[str, Any]) -> httpx.Client:
        return self.content(f"/volumecontent/{vol['volumeID']}", vol["token"])


def _split(spec: str) -> tuple[str, str] | None:
    """``("vol", "/path")`` for ``vol:/path``; None for a local path."""
    name, sep, path = spec.partition(":")
    if not sep or not name or "/" in name:
        return None
    return name, path or "/"


@click.group("volume")
def volume() -> None:
    """Volumes: create, list, remove, list files, copy files in and out."""


@volume.command("create")
@click.argument("name")
@click.option("--size-mb", type=int, default=None, help="Quota in MiB (default: 1024).")
@click.option("--json", "as_json", is_flag=True, help="Print the volume as JSON.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def create(
    name: str, size_mb: int | None, as_json: bool, home: Path | None, api_port: int | None,
    api_key: str | None,
) -> None:  # fmt: skip
    """Create a volume; prints its id."""
    body: dict[str, Any] = {"name": name}
    if size_mb is not None:
        body["sizeMB"] = size_mb
    vol = _Api(home, api_port, api_key).call("POST", "/volumes", body=body)
    click.echo(json.dumps(vol) if as_json else vol["volumeID"])


@volume.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def list_volumes(
    as_json: bool, home: Path | None, api_port: int | None, api_key: str | None
) -> None:
    """The team's volumes: id, name, quota."""
    api = _Api(home, api_port, api_key)
    for vol in api.call("GET", "/volumes"):
        if as_json:
            click.echo(json.dumps(vol))
        else:
            click.echo(f"{vol['volumeID']}  {vol['name']}  {vol.get('sizeMB', '?')} MiB")


@volume.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="Kill the sandboxes that mount it first.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def remove(
    name: str, force: bool, home: Path | None, api_port: int | None, api_key: str | None
) -> None:
    """Delete a volume and everything in it."""
    suffix = "?force=true" if force else ""
    _Api(home, api_port, api_key).call("DELETE", f"/volumes/{name}{suffix}")


@volume.command("ls")
@click.argument("target")
@click.option("--depth", type=int, default=1, show_default=True, help="Levels to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def ls(
    target: str, depth: int, as_json: bool, home: Path | None, api_port: int | None,
    api_key: str | None,
) -> None:  # fmt: skip
    """List ``VOLUME[:PATH]`` (type, mode, owner, size, path); a usage line first."""
    name, _, path = target.partition(":")
    api = _Api(home, api_port, api_key)
    vol = api.volume(name)
    with api.volume_content(vol) as c:
        r = c.get("/dir", params={"path": path or "/", "depth": depth})
        check(r)
    if not as_json:
        click.echo(f"# {vol['name']}: {vol['usedBytes']} of {vol['totalBytes']} bytes used")
    for e in r.json():
        if as_json:
            click.echo(json.dumps(e))
        else:
            kind = {"directory": "d", "symlink": "l", "file": "-"}.get(e["type"], "?")
            target_txt = f" -> {e['target']}" if e.get("target") else ""
            click.echo(
                f"{kind}{e['mode']:04o} {e['uid']}:{e['gid']} {e['size']:>12} "
                f"{e['path']}{target_txt}"
            )


class _Bar:
    """A rich progress bar on stderr for one copy, or nothing for small/quiet ones."""

    def __init__(self, label: str, total: int | None, *, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        show = not quiet and (total is None or total >= _PROGRESS_MIN_BYTES)
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), console=Console(stderr=True), disable=not show,
        )  # fmt: skip
        self._task = self._progress.add_task(label, total=total)

    def __enter__(self) -> _Bar:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)


def _read_chunks(f: BinaryIO, bar: _Bar) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        bar.advance(len(chunk))
        yield chunk


def _upload_file(c: httpx.Client, src: Path | None, dest: str, *, quiet: bool) -> None:
    if src is None:
        with _Bar(f"stdin → {dest}", None, quiet=True) as bar:
            r = c.put("/file", params={"path": dest}, content=_read_chunks(sys.stdin.buffer, bar))
    else:
        with src.open("rb") as f, _Bar(f"{src} → {dest}", src.stat().st_size, quiet=quiet) as bar:
            r = c.put("/file", params={"path": dest}, content=_read_chunks(f, bar))
    check(r)


def _download_file(c: httpx.Client, src: str, dest: Path | None, *, quiet: bool) -> None:
    with c.stream("GET", "/file", params={"path": src}) as r:
        if r.is_error:
            r.read()
            check(r)
        total = int(r.headers.get("content-length", 0)) or None
        if dest is None:
            for chunk in r.iter_bytes(_CHUNK):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        tmp = dest.with_name(f".{dest.name}.hutch-part")
        with tmp.open("wb") as f, _Bar(f"{src} → {dest}", total, quiet=quiet) as bar:
            for chunk in r.iter_bytes(_CHUNK):
                f.write(chunk)
                bar.advance(len(chunk))
        tmp.replace(dest)


@volume.command("cp")
@click.argument("source")
@click.argument("dest")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@HOME_OPTION
@API_PORT_OPTION
@API_KEY_OPTION
def cp(
    source: str, dest: str, quiet: bool, home: Path | None, api_port: int | None,
    api_key: str | None,
) -> None:  # fmt: skip
    """Copy ``LOCAL VOLUME:PATH`` (upload) or ``VOLUME:PATH LOCAL`` (download).

    ``-`` is stdin/stdout. Directories are copied recursively. Uploading to a path that
    ends in ``/`` (or is an existing directory) keeps the source's name.
    """
    src_vol, dst_vol = _split(source), _split(dest)
    if (src_vol is None) == (dst_vol is None):
        raise click.UsageError("exactly one side must be VOLUME:PATH")
    api = _Api(home, api_port, api_key)
    if dst_vol is not None:
        vol = api.volume(dst_vol[0])
        with api.volume_content(vol) as c:
            _upload(c, source, dst_vol[1], quiet=quiet)
    else:
        assert src_vol is not None
        vol = api.volume(src_vol[0])
        with api.volume_content(vol) as c:
            _download(c, src_vol[1], dest, quiet=quiet)


def _is_remote_dir(c: httpx.Client, path: str) -> bool:
    r = c.get("/path", params={"path": path})
    return r.status_code == 200 and r.json()["type"] == "directory"


def _upload(c: httpx.Client, source: str, dest: str, *, quiet: bool) -> None:
    if source == "-":
        _upload_file(c, None, dest, quiet=quiet)
        return
    src = Path(source)
    if not src.exists():
        raise click.BadParameter(f"{source}: no such file or directory", param_hint="SOURCE")
    if dest.endswith("/") or _is_remote_dir(c, dest):
        dest = dest.rstrip("/") + "/" + src.name
    if src.is_dir():
        for root, _dirs, files in os.walk(src):
            rel = Path(root).relative_to(src)
            base = dest if str(rel) == "." else f"{dest}/{rel.as_posix()}"
            r = c.post("/dir", params={"path": base, "force": "true"})
            check(r)
            for name in sorted(files):
                _upload_file(c, Path(root) / name, f"{base}/{name}", quiet=quiet)
    else:
        _upload_file(c, src, dest, quiet=quiet)


def _download(c: httpx.Client, source: str, dest: str, *, quiet: bool) -> None:
    if dest == "-":
        _download_file(c, source, None, quiet=quiet)
        return
    target = Path(dest)
    if _is_remote_dir(c, source):
        name = source.rstrip("/").rsplit("/", 1)[-1] or "volume"
        if target.is_dir():
            target = target / name
        r = c.get("/dir", params={"path": source, "depth": 64})
        check(r)
        base = "/" + source.strip("/") if source.strip("/") else ""
        target.mkdir(parents=True, exist_ok=True)
        for e in r.json():
            rel = e["path"][len(base) :].lstrip("/")
            if e["type"] == "directory":
                (target / rel).mkdir(parents=True, exist_ok=True)
            elif e["type"] == "file":
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                _download_file(c, e["path"], target / rel, quiet=quiet)
        return
    if target.is_dir():
        target = target / source.rstrip("/").rsplit("/", 1)[-1]
    _download_file(c, source, target, quiet=quiet)
