"""One Jupyter kernel process and its ZMQ channels, through ``jupyter_client`` only.

``Kernel`` starts the process, reads iopub and shell in two background tasks and hands
each message to the queue of the execute request it belongs to (by parent msg id).
It knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections import deque
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager

from hutch.interpreter.errors import KernelFailed
from hutch.interpreter.languages import KernelCommand

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0


class Inbox:
    """The messages answering one execute request, with a bound on buffered stream text.

    The kernel cannot be slowed down (iopub is publish/subscribe), so when the client
    reads slower than the cell writes, stream text beyond ``limit`` characters is
    dropped and counted in ``dropped``; control messages are always kept.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffered = 0
        self.dropped = 0
        self._items: deque[dict[str, Any] | None] = deque()
        self._ready = asyncio.Event()

    def push(self, msg: dict[str, Any] | None) -> None:
        if msg is not None and msg.get("msg_type") == "stream":
            size = len(msg.get("content", {}).get("text", ""))
            if self.buffered + size > self.limit:
                self.dropped += size
                return
            self.buffered += size
        self._items.append(msg)
        self._ready.set()

    async def get(self) -> dict[str, Any] | None:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        msg = self._items.popleft()
        if msg is not None and msg.get("msg_type") == "stream":
            self.buffered -= len(msg.get("content", {}).get("text", ""))
        return msg


class Kernel:
    def __init__(
        self, command: KernelCommand, cwd: str, env: dict[str, str], output_limit: int
    ) -> None:
        self.command = command
        self.cwd = cwd
        self.env = env
        self.output_limit = output_limit
        self._km: AsyncKernelManager | None = None
        self._client: Any = None
        self._readers: list[asyncio.Task[None]] = []
        self._routes: dict[str, Inbox] = {}
        #: Bumped at every (re)start; the sandbox env vars are applied once per generation.
        self.generation = 0
        self._ipc_dir: str | None = None

    async def start(self) -> None:
        spec = KernelSpec(
            argv=self.command.argv,
            display_name=self.command.language,
            language=self.command.language,
            interrupt_mode="signal",
            env={},
        )
        # ZMQ over Unix sockets: no TCP ports to collide, and lower latency.
        self._ipc_dir = tempfile.mkdtemp(prefix="hutch-kernel-")
        km = AsyncKernelManager(
            transport="ipc",
            ip=os.path.join(self._ipc_dir, "k"),
            connection_file=os.path.join(self._ipc_dir, "kernel.json"),
        )
        km._kernel_spec = spec  # our own command line, not an installed kernelspec
        try:
            await km.start_kernel(cwd=self.cwd, env=self.env)
        except Exception as e:
            raise KernelFailed(f"the {self.command.language} kernel did not start: {e}") from e
        self._km = km
        await self._connect()

    async def _connect(self) -> None:
        assert self._km is not None
        client = self._km.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=START_TIMEOUT)
        except RuntimeError as e:
            client.stop_channels()
            raise KernelFailed(f"the {self.command.language} kernel died at start: {e}") from e
        self._client = client
        self.generation += 1
        self._readers = [
            asyncio.create_task(self._read(client.get_iopub_msg)),
            asyncio.create_task(self._read(client.get_shell_msg)),
        ]

    async def _read(self, get: Any) -> None:
        while True:
            try:
                msg = await get()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.debug("kernel channel closed", exc_info=True)
                return
            parent = (msg.get("parent_header") or {}).get("msg_id")
            inbox = self._routes.get(parent) if parent else None
            if inbox is not None:
                inbox.push(msg)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def execute(self, code: str, *, silent: bool = False) -> tuple[str, Inbox]:
        """Send an execute request; messages answering it arrive in the returned inbox
        (``None`` there means the kernel's channels were closed)."""
        queue = Inbox(self.output_limit)
        if self._client is None:  # restarting or removed: answer as a closed channel
            queue.push(None)
            return "", queue
        msg = self._client.session.msg(
            "execute_request",
            {
                "code": code,
                "silent": silent,
                "store_history": not silent,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        msg_id = msg["header"]["msg_id"]
        self._routes[msg_id] = queue
        self._client.shell_channel.send(msg)
        return msg_id, queue

    def forget(self, msg_id: str) -> None:
        self._routes.pop(msg_id, None)

    async def run_silent(self, code: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """Run setup code (cwd, env vars) without output or history; its error if any."""
        msg_id, queue = self.execute(code, silent=True)
        error = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await queue.get()
                    if msg is None:
                        return {"ename": "KernelDied", "evalue": "the kernel went away"}
                    kind = msg["msg_type"]
                    if kind == "error" or (
                        kind == "execute_reply" and msg["content"].get("status") == "error"
                    ):
                        error = msg["content"]
                    if kind == "execute_reply":
                        return error
        finally:
            self.forget(msg_id)

    def is_alive(self) -> bool:
        km = self._km
        if km is None or km.provisioner is None:
            return False
        return km.provisioner.process is not None and km.provisioner.process.poll() is None

    def exit_code(self) -> int | None:
        km = self._km
        if km is None or km.provisioner is None or km.provisioner.process is None:
            return None
        return km.provisioner.process.poll()

    async def interrupt(self) -> None:
        if self._km is not None and self.is_alive():
            with contextlib.suppress(Exception):
                await self._km.interrupt_kernel()

    async def _disconnect(self) -> None:
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._readers = []
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        for inbox in self._routes.values():
            inbox.push(None)  # wakes whoever waits: the kernel went away
        self._routes.clear()

    async def restart(self) -> None:
        """A fresh kernel process (state lost), same cwd and env."""
        await self._disconnect()
        assert self._km is not None
        try:
            if self.is_alive():
                await self._km.restart_kernel(now=True)
            else:
                await self._km.cleanup_resources(restart=True)
                await self._km.start_kernel(**self._km._launch_args)
        except Exception as e:
            raise KernelFailed(f"the {self.command.language} kernel did not restart: {e}") from e
        await self._connect()

    async def shutdown(self) -> None:
        await self._disconnect()
        if self._km is not None:
            with contextlib.suppress(Exception):
                await self._km.shutdown_kernel(now=True)
            self._km = None
        if self._ipc_dir is not None:
            shutil.rmtree(self._ipc_dir, ignore_errors=True)
