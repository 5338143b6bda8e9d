"""``hutch sandbox ...``: operate on the sandboxes of a running ``hutch serve`` over its API.

Through :mod:`hutch.cli.api_client`: the instance of ``--home`` / ``HUTCH_HOME`` and
``--api-port`` / ``HUTCH_API_PORT``, with ``--api-key`` / ``E2B_API_KEY`` or the home's
CLI key. ``list`` is ``GET /v2/sandboxes`` (every page), ``kill`` ``DELETE
/sandboxes/{id}``, ``logs`` ``GET /v2/sandboxes/{id}/logs`` (polled with its cursor for
``--follow``), ``exec`` envd's ``Process/Start`` through the instance's sandbox proxy
(``sandbox_exec.py``), ``metadata`` ``PATCH /sandboxes/{id}/metadata``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from hutch.cli.api_client import (
    API_KEY_OPTION,
    API_PORT_OPTION,
    HOME_OPTION,
    PROXY_PORT_OPTION,
    ApiClient,
    error_line,
    error_message,
    fail,
)

#: How often ``logs --follow`` asks for new lines (E2B's CLI: 400 ms).
FOLLOW_INTERVAL_S = 0.5


def parse_assignments(values: tuple[str, ...]) -> dict[str, str]:
    """``("k=v", ...)`` as a dict; ``=`` inside the value is kept."""
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: want KEY=VALUE", param_hint="--set")
        if not value:
            raise click.BadParameter(
                f"{item!r}: an empty value removes the key; use --unset {key}",
                param_hint="--set",
            )
        result[key] = value
    return result


def parse_assignments_allow_empty(values: tuple[str, ...], *, hint: str) -> dict[str, str]:
    """``("k=v", ...)`` as a dict, an empty value allowed (``--env``, ``--metadata``)."""
    result: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: want KEY=VALUE", param_hint=hint)
        result[key] = value
    return result


def parse_metadata(values: tuple[str, ...]) -> dict[str, str]:
    """``--metadata k=v`` filters (an empty value is a value here)."""
    return parse_assignments_allow_empty(values, hint="--metadata")


def list_all(api: ApiClient, states: tuple[str, ...], metadata: dict[str, str]) -> list[Any]:
    """Every sandbox of the team that matches, following ``X-Next-Token``."""
    from urllib.parse import urlencode

    params: list[tuple[str, str]] = [("state", s) for s in states] + [("limit", "100")]
    if metadata:
        params.append(("metadata", urlencode(metadata)))
    rows: list[Any] = []
    token: str | None = None
    while True:
        page = api.request("GET", "/v2/sandboxes", params=[*params, *_token(token)])
        if page.is_error:
            fail(page.status_code, error_message(page))
        rows.extend(page.json())
        token = page.headers.get("x-next-token")
        if not token:
            return rows


def _token(token: str | None) -> list[tuple[str, str]]:
    return [("nextToken", token)] if token else []


def _print_sandboxes(rows: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("sandbox", "template", "state", "started", "ends", "cpu", "memory MB", "metadata")
    for row in rows:
        meta = " ".join(f"{k}={v}" for k, v in sorted((row.get("metadata") or {}).items()))
        table.add_row(
            row["sandboxID"], row.get("alias") or row["templateID"], row["state"],
            row["startedAt"], row["endAt"], str(row["cpuCount"]), str(row["memoryMB"]), meta,
        )  # fmt: skip
    Console(width=200).print(table)


def _unix_ms(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


def log_text(entry: dict[str, Any]) -> str:
    """One log entry as a line: timestamp, level, message, then its fields as k=v."""
    shown = {"timestamp", "level", "message", "msg"}  # already at the front of the line
    fields = " ".join(
        f"{k}={v}" for k, v in sorted((entry.get("fields") or {}).items()) if k not in shown
    )
    line = f"{entry['timestamp']} {str(entry.get('level', 'info')).upper():5} {entry['message']}"
    return f"{line} {fields}" if fields else line


def follow_logs(
    api: ApiClient, sandbox_id: str, *, follow: bool, level: str | None
) -> Iterator[dict[str, Any]]:
    """The sandbox's log entries, oldest first; with ``follow``, new ones as they come
    until the sandbox is gone (killed, or its timeout ended)."""
    cursor: int | None = None
    seen: set[str] = set()  # entries at the cursor's millisecond (the cursor is inclusive)
    while True:
        params: dict[str, str] = {"limit": "1000", "direction": "forward"}
        if cursor is not None:
            params["cursor"] = str(cursor)
        if level:
            params["level"] = level
        entries = api.call("GET", f"/v2/sandboxes/{sandbox_id}/logs", params=params)["logs"]
        fresh = [e for e in entries if json.dumps(e, sort_keys=True) not in seen]
        yield from fresh
        if entries:
            last = _unix_ms(entries[-1]["timestamp"])
            if last != cursor:
                seen = set()
            cursor = last
            seen |= {
                json.dumps(e, sort_keys=True) for e in entries if _unix_ms(e["timestamp"]) == last
            }
        if len(entries) >= 1000:
            continue  # more are waiting: no pause
        if not follow:
            return
        info = api.request("GET", f"/sandboxes/{sandbox_id}")
        if info.status_code == 404 or (
            not info.is_error and info.json().get("state") not in ("running", "paused")
        ):
            # Gone: one last look for what it wrote as it ended, then stop.
            final = api.call("GET", f"/v2/sandboxes/{sandbox_id}/logs", params=params)["logs"]
            yield from (e for e in final if json.dumps(e, sort_keys=True) not in seen)
            return
        if info.is_error:
            fail(info.status_code, error_message(info))
        time.sleep(FOLLOW_INTERVAL_S)


def register(cli: click.Group) -> None:
    """Add the ``sandbox`` group to ``cli``."""

    @cli.group("sandbox")
    def sandbox() -> None:
        """Sandboxes of the running hutch serve."""

    @sandbox.command("metadata")
    @click.argument("sandbox_id")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a key.")
    @click.option("--unset", "unsets", multiple=True, metavar="KEY", help="Remove a key.")
    @HOME_OPTION
    @API_PORT_OPTION
    @API_KEY_OPTION
    def metadata(
        sandbox_id: str, sets: tuple[str, ...], unsets: tuple[str, ...], home: Path | None,
        api_port: int | None, api_key: str | None,
    ) -> None:  # fmt: skip
        """Show, or change with --set/--unset, a sandbox's metadata (prints it as JSON).

        Keys not named are untouched; --set and --unset of one key is an error.
        """
        api = ApiClient(home, api_port, api_key)
        patch: dict[str, str | None] = dict(parse_assignments(sets))
        both = sorted(set(patch) & set(unsets))
        if both:
            raise click.UsageError(f"--set and --unset of the same key: {', '.join(both)}")
        patch.update(dict.fromkeys(unsets))
        if patch:
            result = api.call("PATCH", f"/sandboxes/{sandbox_id}/metadata", patch)
        else:
            result = api.call("GET", f"/sandboxes/{sandbox_id}")["metadata"]
        click.echo(json.dumps(result, sort_keys=True, ensure_ascii=False))

    @sandbox.command("list")
    @click.option(
        "--state", "states", multiple=True, type=click.Choice(["running", "paused"]),
        help="Only sandboxes in this state (repeatable; default both).",
    )  # fmt: skip
    @click.option(
        "--metadata", "metadata", multiple=True, metavar="KEY=VALUE",
        help="Only sandboxes whose metadata has KEY=VALUE (repeatable: all must match).",
    )  # fmt: skip
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object a line.")
    @HOME_OPTION
    @API_PORT_OPTION
    @API_KEY_OPTION
    def list_(
        states: tuple[str, ...], metadata: tuple[str, ...], as_json: bool, home: Path | None,
        api_port: int | None, api_key: str | None,
    ) -> None:  # fmt: skip
        """The team's sandboxes (``GET /v2/sandboxes``, every page), oldest first."""
        rows = list_all(ApiClient(home, api_port, api_key), states, parse_metadata(metadata))
        if as_json:
            for row in rows:
                click.echo(json.dumps(row, ensure_ascii=False))
        else:
            _print_sandboxes(rows)

    @sandbox.command("kill")
    @click.argument("sandbox_ids", nargs=-1, required=True, metavar="ID...")
    @click.option("--json", "as_json", is_flag=True, help='Print {"sandboxID", "killed"} lines.')
    @HOME_OPTION
    @API_PORT_OPTION
    @API_KEY_OPTION
    def kill(
        sandbox_ids: tuple[str, ...], as_json: bool, home: Path | None, api_port: int | None,
        api_key: str | None,
    ) -> None:  # fmt: skip
        """Kill each sandbox ID; every one is tried, and any that fails makes the exit code 1."""
        api = ApiClient(home, api_port, api_key)
        failed = False
        for sandbox_id in dict.fromkeys(sandbox_ids):
            response = api.request("DELETE", f"/sandboxes/{sandbox_id}")
            if response.is_error:
                failed = True
                click.echo(error_line(response.status_code, error_message(response)), err=True)
            if as_json:
                click.echo(json.dumps({"sandboxID": sandbox_id, "killed": not response.is_error}))
            elif not response.is_error:
                click.echo(f"killed {sandbox_id}")
        if failed:
            sys.exit(1)

    @sandbox.command("logs")
    @click.argument("sandbox_id")
    @click.option("-f", "--follow", is_flag=True, help="Keep printing until the sandbox ends.")
    @click.option(
        "--level", type=click.Choice(["debug", "info", "warn", "error"]), default=None,
        help="Only entries at this level or above.",
    )  # fmt: skip
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON entry a line.")
    @HOME_OPTION
    @API_PORT_OPTION
    @API_KEY_OPTION
    def logs(
        sandbox_id: str, follow: bool, level: str | None, as_json: bool, home: Path | None,
        api_port: int | None, api_key: str | None,
    ) -> None:  # fmt: skip
        """A sandbox's log (its envd's), oldest first; also of a killed one, while kept."""
        api = ApiClient(home, api_port, api_key)
        try:
            for entry in follow_logs(api, sandbox_id, follow=follow, level=level):
                click.echo(json.dumps(entry, ensure_ascii=False) if as_json else log_text(entry))
        except KeyboardInterrupt:
            sys.exit(130)

    # COMMAND comes after "--", so that its own options are never taken for ours.
    @sandbox.command("exec")
    @click.argument("sandbox_id")
    @click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
    @click.option("-u", "--user", default=None, help="Run as this user (default: the template's).")
    @click.option("-c", "--cwd", default=None, help="Working directory.")
    @click.option(
        "-e", "--env", "envs", multiple=True, metavar="KEY=VALUE", help="Environment (repeatable)."
    )
    @click.option(
        "--json", "as_json", is_flag=True,
        help="Print {exitCode, stdout, stderr, error} at the end instead of streaming.",
    )  # fmt: skip
    @HOME_OPTION
    @API_PORT_OPTION
    @PROXY_PORT_OPTION
    @API_KEY_OPTION
    def exec_(
        sandbox_id: str, command: tuple[str, ...], user: str | None, cwd: str | None,
        envs: tuple[str, ...], as_json: bool, home: Path | None, api_port: int | None,
        proxy_port: int | None, api_key: str | None,
    ) -> None:  # fmt: skip
        """Run COMMAND in sandbox ID (``hutch sandbox exec ID -- CMD ARGS...``).

        One argument is a shell line (``-- 'ls | wc -l'``); several are quoted as words.
        It runs as the SDK's ``commands.run`` does (``/bin/bash -l -c``); stdout and
        stderr stream as they come, piped stdin is sent, and the exit code is the
        command's (130 after Ctrl-C, which kills it in the sandbox).
        """
        from hutch.cli.sandbox_exec import EnvdExec, ExecError, build_command

        env = parse_assignments_allow_empty(envs, hint="--env")
        api = ApiClient(home, api_port, api_key, proxy_port=proxy_port)
        info = api.call("GET", f"/sandboxes/{sandbox_id}")
        if info.get("state") != "running":
            # Not resumed behind the operator's back (E2B's CLI connects, which resumes).
            fail(
                409,
                f"sandbox {sandbox_id} is {info.get('state')}, not running (resume it first: "
                f"the SDK's Sandbox.connect(), or POST /sandboxes/{sandbox_id}/connect)",
            )
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

        def emit(stream: str) -> Any:
            target = sys.stdout.buffer if stream == "stdout" else sys.stderr.buffer

            def write(chunk: bytes) -> None:
                if as_json:
                    out[stream].append(chunk)
                else:
                    target.write(chunk)
                    target.flush()

            return write

        stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
        runner = EnvdExec(api.sandbox_url, sandbox_id, info.get("envdAccessToken"))
        try:
            result = runner.run(
                build_command(list(command)), on_stdout=emit("stdout"), on_stderr=emit("stderr"),
                user=user, cwd=cwd, envs=env, stdin=stdin,
            )  # fmt: skip
        except ExecError as exc:
            if api.request("GET", f"/sandboxes/{sandbox_id}").status_code == 404:
                # The stream broke because the sandbox went away (as the SDK tells it).
                fail(502, f"sandbox {sandbox_id} was killed or reached its end of life")
            fail(exc.code, exc.message)
        except KeyboardInterrupt:
            sys.exit(130)
        if as_json:
            click.echo(
                json.dumps({
                    "exitCode": result.exit_code,
                    "stdout": b"".join(out["stdout"]).decode(errors="replace"),
                    "stderr": b"".join(out["stderr"]).decode(errors="replace"),
                    "error": result.error,
                })
            )  # fmt: skip
        sys.exit(result.exit_code)
