"""The one client of a running ``hutch serve``'s API for the ``hutch`` subcommands.

The instance is the one ``--home`` / ``HUTCH_HOME`` and ``--api-port`` / ``HUTCH_API_PORT``
name, as for ``hutch serve``; the key is ``--api-key`` / ``E2B_API_KEY``, else the home's
CLI key (``<home>/cli.key``, 0600, an admin key of the default team made on first use
through the store, like ``hutch keys create --admin``), so on the host the commands work out
of the box, ``hutch team`` included.

An error status ends the command with ``hutch: <status>: <message>`` (E2B's
``{code, message}`` body) on stderr and exit code 1; an API that does not answer, with
exit code 2 and the URL tried.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from hutch.shared.paths import CLI_KEY_FILE

if TYPE_CHECKING:
    import httpx

    from hutch.serve.settings import ServeSettings

HOME_OPTION = click.option(
    "--home", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="State directory of the instance (env HUTCH_HOME, default /var/lib/hutch).",
)  # fmt: skip
API_PORT_OPTION = click.option(
    "--api-port", type=int, default=None,
    help="API port of the instance (env HUTCH_API_PORT, default 3000).",
)  # fmt: skip
PROXY_PORT_OPTION = click.option(
    "--proxy-port", type=int, default=None,
    help="Sandbox proxy port of the instance (env HUTCH_PROXY_PORT, default 49983).",
)  # fmt: skip
API_KEY_OPTION = click.option(
    "--api-key", envvar="E2B_API_KEY", default=None,
    help="API key (E2B_API_KEY; default: the home's CLI key, default team).",
)  # fmt: skip


def settings_for(
    home: Path | None, api_port: int | None, proxy_port: int | None = None
) -> ServeSettings:
    """The settings ``hutch serve`` would read, with the options given on top."""
    from hutch.serve.settings import ServeSettings

    values = {"home": home, "api_port": api_port, "proxy_port": proxy_port}
    return ServeSettings(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]


def cli_key(settings: ServeSettings) -> str:
    """The home's CLI key, made on first use (readable by root alone): an admin key of the
    default team (whoever can read the file is root on the host)."""
    import asyncio
    import os

    from hutch.serve.keys import create_key

    path = settings.home / CLI_KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    created = asyncio.run(create_key(settings, name="hutch-cli", admin=True))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(created.secret + "\n")
    return created.secret


def api_url(settings: ServeSettings, *, port: int | None = None) -> str:
    """``http://host:port`` of the instance's API (a wildcard address means loopback), or
    of its sandbox proxy when ``port`` is the proxy's."""
    host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port if port is None else port}"


def fail(status: int | str, message: str) -> NoReturn:
    """End the command with the API's error."""
    click.echo(error_line(status, message), err=True)
    sys.exit(1)


def error_line(status: int | str, message: str) -> str:
    """``hutch: <status>: <message>``, the one shape of every command's errors."""
    return f"hutch: {status}: {message}"


def error_message(response: httpx.Response) -> str:
    """The message of an error answer (E2B's ``{code, message}``, else the text)."""
    try:
        message = response.json().get("message", response.text)
    except (ValueError, AttributeError):
        message = response.text
    return str(message)


def check(response: httpx.Response) -> None:
    """Exit with the server's ``{code, message}`` on an error status."""
    if response.is_error:
        fail(response.status_code, error_message(response))


class StreamCutError(Exception):
    """A streamed answer's connection broke after it had started."""


class ApiClient:
    """Calls to the instance's API with the resolved key."""

    def __init__(
        self,
        home: Path | None,
        api_port: int | None,
        api_key: str | None,
        *,
        proxy_port: int | None = None,
    ) -> None:
        self.settings = settings_for(home, api_port, proxy_port)
        self.url = api_url(self.settings)
        #: The instance's sandbox proxy (envd of each sandbox, by ``E2b-Sandbox-Id``).
        self.sandbox_url = api_url(self.settings, port=self.settings.proxy_port)
        self._key = api_key

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = cli_key(self.settings)
        return self._key

    def host_key(self) -> str:
        """The home's CLI key: the proof of host access for host paths (``envdPath``)."""
        return cli_key(self.settings)

    def _unreachable(self, exc: Exception) -> NoReturn:
        click.echo(f"hutch: cannot reach the API at {self.url}: {exc}", err=True)
        sys.exit(2)

    def request(
        self, method: str, path: str, body: Any = None, params: Any = None
    ) -> httpx.Response:
        """One API call's response, whatever its status (exit 2 if nothing answers)."""
        import httpx

        try:
            return httpx.request(
                method, self.url + path, json=body, params=params,
                headers={"X-API-Key": self.key}, timeout=60,
            )  # fmt: skip
        except httpx.HTTPError as exc:
            self._unreachable(exc)

    def call(self, method: str, path: str, body: Any = None, params: Any = None) -> Any:
        """One API call: the decoded JSON (None for an empty body)."""
        response = self.request(method, path, body, params)
        check(response)
        return response.json() if response.content else None

    def stream_lines(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        seen: dict[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """An NDJSON answer, one decoded line at a time (no read timeout: imports are long).

        ``seen``: filled with the response's headers once it starts; a connection that
        breaks after that raises :class:`StreamCutError` (the caller may follow the work
        elsewhere) instead of exiting."""
        import httpx

        all_headers = {"X-API-Key": self.key, "Accept": "application/x-ndjson", **(headers or {})}
        timeout = httpx.Timeout(60, read=None)
        started = False
        try:
            with httpx.stream(
                method, self.url + path, json=body, headers=all_headers, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    check(response)
                if seen is not None:
                    seen.update(response.headers)
                    started = True
                for line in response.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            if started:
                raise StreamCutError(str(exc)) from exc
            self._unreachable(exc)

    def content(self, base: str, token: str) -> httpx.Client:
        """A client of one of the API's token-authorized sub-APIs (volume content)."""
        import httpx

        return httpx.Client(
            base_url=f"{self.url}{base}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(60, read=None, write=None),
        )
