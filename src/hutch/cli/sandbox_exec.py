"""``hutch sandbox exec``'s transport: one command through the instance's sandbox proxy to
the sandbox's envd, as the SDK runs ``commands.run`` (Connect ``process.Process/Start``,
``/bin/bash -l -c CMD``, the ``E2b-Sandbox-Id``/``-Port`` and ``X-Access-Token`` headers),
with hutch's own generated Connect client (``shared/proto``), not the e2b SDK.

Output is handed to the callbacks as it arrives; stdin, when given, is sent in a second
thread (``SendInput``, then ``CloseStdin``) while the output streams.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shlex
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from protobuf import Oneof

from hutch.shared.proto.process import process_pb as pb
from hutch.shared.proto.process.process_connect import ProcessClientSync

#: envd's port inside every sandbox; the proxy routes to it by header.
ENVD_PORT = 49983
#: As the SDK sends (``KEEPALIVE_PING_INTERVAL_SEC``): envd sends keepalives this often.
_KEEPALIVE_S = "50"
_STDIN_CHUNK = 64 * 1024


class ExecError(Exception):
    """envd (or the proxy before it) refused or broke the call: ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ExecResult:
    """How the command ended: its exit code, and envd's error text when it had one."""

    exit_code: int
    error: str | None = None


def build_command(argv: list[str]) -> str:
    """One argument as it is (a shell line); several shell-quoted (E2B CLI's rule)."""
    return argv[0] if len(argv) == 1 else shlex.join(argv)


class EnvdExec:
    """Runs commands in one sandbox through ``sandbox_url`` (the instance's proxy)."""

    def __init__(self, sandbox_url: str, sandbox_id: str, access_token: str | None) -> None:
        self._url = sandbox_url
        self._headers = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
        if access_token:
            self._headers["X-Access-Token"] = access_token

    def run(
        self,
        command: str,
        *,
        on_stdout: Callable[[bytes], None],
        on_stderr: Callable[[bytes], None],
        user: str | None = None,
        cwd: str | None = None,
        envs: Mapping[str, str] | None = None,
        stdin: BinaryIO | None = None,
    ) -> ExecResult:
        """Run ``command`` to its end; ``KeyboardInterrupt`` kills it in the sandbox first."""
        from connectrpc.errors import ConnectError

        headers = dict(self._headers, **{"Keepalive-Ping-Interval": _KEEPALIVE_S})
        if user:
            # envd's per-call user, as the SDK sends it (``Basic base64("<user>:")``).
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:".encode()).decode()
        request = pb.StartRequest(
            process=pb.ProcessConfig(
                cmd="/bin/bash", args=["-l", "-c", command], envs=dict(envs or {}), cwd=cwd
            ),
            stdin=stdin is not None,
        )
        pid: int | None = None
        with ProcessClientSync(self._url, send_compression=None) as client:
            try:
                events = client.start(request, headers=headers)
                for event in _events(events):
                    match event:
                        case Oneof(field="start", value=start):
                            pid = start.pid
                            if stdin is not None:
                                self._feed_stdin(pid, stdin, headers)
                        case Oneof(field="data", value=data):
                            match data.output:
                                case Oneof(field="stdout", value=chunk):
                                    on_stdout(chunk)
                                case Oneof(field="stderr", value=chunk):
                                    on_stderr(chunk)
                        case Oneof(field="end", value=end):
                            return ExecResult(exit_code=end.exit_code, error=end.error or None)
            except ConnectError as exc:
                raise ExecError(str(exc.code.value), exc.message) from exc
            except KeyboardInterrupt:
                if pid is not None:
                    self._kill(pid, headers)
                raise
        raise ExecError("unavailable", "the sandbox ended the command's stream without an end")

    def _feed_stdin(self, pid: int, stdin: BinaryIO, headers: Mapping[str, str]) -> None:
        def feed() -> None:
            with ProcessClientSync(self._url, send_compression=None) as client:
                selector = pb.ProcessSelector(selector=Oneof("pid", pid))
                while chunk := os.read(stdin.fileno(), _STDIN_CHUNK):
                    client.send_input(
                        pb.SendInputRequest(
                            process=selector, input=pb.ProcessInput(input=Oneof("stdin", chunk))
                        ),
                        headers=headers,
                    )
                client.close_stdin(pb.CloseStdinRequest(process=selector), headers=headers)

        threading.Thread(target=feed, name="hutch-exec-stdin", daemon=True).start()

    def _kill(self, pid: int, headers: Mapping[str, str]) -> None:
        from connectrpc.errors import ConnectError

        # ConnectError: it is already gone.
        with (
            ProcessClientSync(self._url, send_compression=None) as client,
            contextlib.suppress(ConnectError),
        ):
            client.send_signal(
                pb.SendSignalRequest(
                    process=pb.ProcessSelector(selector=Oneof("pid", pid)),
                    signal=pb.Signal.SIGKILL,
                ),
                headers=headers,
                timeout_ms=5000,
            )


def _events(responses: Iterator[pb.StartResponse]) -> Iterator[object]:
    for response in responses:
        if response.event is not None:
            yield response.event.event
