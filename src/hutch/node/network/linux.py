"""``LinuxSandboxNetworks``: sandbox networks from iproute2 and nftables (the adapter).

Per sandbox: a named netns (``/run/netns/<prefix><id>``), a veth pair whose host end is a
port of the bridge, an address from the pool, and a few elements in our nft sets (see
``rules.py`` for the firewall itself). Setup is three processes (``nft -f``, ``ip -batch``
on the host, ``ip -n <ns> -batch`` inside), teardown two; measured numbers are in
``docs/network.md``. Failures of those tools become :class:`HutchError` here, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from hutch.node import cpu_weight
from hutch.node.network import names, rules
from hutch.node.network.base import AttachedNetwork, NetworkSettings, SandboxNetwork
from hutch.node.network.ipam import AddressPool
from hutch.shared.egress import ALL_TRAFFIC, DEFAULT_POLICY, EgressPolicy, parse_policy
from hutch.shared.errors import AlreadyExistsError, HutchError, from_os_error

#: Where ``ip netns`` keeps its bind-mounted namespace files (fixed by iproute2).
NETNS_DIR = Path("/run/netns")
_SYS_NET = Path("/sys/class/net")
_PROC_IPV4 = Path("/proc/sys/net/ipv4")


class NetworkCommandError(HutchError):
    """``ip`` or ``nft`` failed; ``message`` carries the command and its stderr."""


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: str
    stderr: str


class LinuxSandboxNetworks:
    """Satisfies :class:`~hutch.node.network.base.SandboxNetworks` on a Linux host (root)."""

    def __init__(
        self,
        settings: NetworkSettings,
        *,
        pool: AddressPool | None = None,
        batch: bool = True,
        ip: str = "ip",
        nft: str = "nft",
    ) -> None:
        """Use ``settings``; ``batch=False`` runs one process per command (to measure)."""
        self.settings = settings
        self.pool = pool if pool is not None else AddressPool(settings.subnet)
        self._batch = batch
        self._ip = ip
        self._nft = nft

    # ---- the bridge and the firewall -------------------------------------------------

    async def ensure_bridge(self) -> None:
        """Create or repair the bridge, its address, forwarding and our nft tables.

        Idempotent and safe on a live node: existing sandboxes keep their ports, and the
        firewall is replaced atomically with its set elements kept.
        """
        s = self.settings
        exists = (_SYS_NET / s.bridge).exists()
        await self._ip_lines(rules.bridge_batch(s, exists=exists))
        # Forwarding is decided by the interface a packet arrives on; the bridge always
        # needs it, the uplink (for replies to NATed traffic) gets it from the global knob.
        self._write_sysctl(_PROC_IPV4 / "conf" / s.bridge / "forwarding", "1")
        # A sandbox asking the gateway for another sandbox must not learn a direct route.
        self._write_sysctl(_PROC_IPV4 / "conf" / s.bridge / "send_redirects", "0")
        # Sandboxes are IPv4 only: the host must not talk IPv6 (MLD, RAs) to them either.
        self._write_sysctl(Path("/proc/sys/net/ipv6/conf") / s.bridge / "disable_ipv6", "1")
        if s.manage_ip_forward:
            self._write_sysctl(_PROC_IPV4 / "ip_forward", "1")
        await self._nft_script(rules.firewall_script(s))

    async def remove_bridge(self) -> None:
        """Delete our nft tables and the bridge (uninstall, tests). Leaves sandboxes' netns.

        ``ip_forward`` is left as it is: other software on the host may rely on it.
        """
        await self._nft_script(rules.remove_firewall_script(self.settings))
        if (_SYS_NET / self.settings.bridge).exists():
            await self._ip_lines([f"link del dev {self.settings.bridge}"])

    # ---- one sandbox ------------------------------------------------------------------

    async def setup(
        self,
        sandbox_id: str,
        *,
        allow_internet: bool,
        address: IPv4Address | None = None,
        policy: EgressPolicy | None = None,
    ) -> SandboxNetwork:
        """Give ``sandbox_id`` its netns, veth, address and firewall elements.

        ``address`` is the one the node recorded for it, or None to take the next free one.
        On failure everything created so far is removed again before the error is raised.

        Raises:
            AlreadyExistsError: the sandbox (or a leftover of it) is already attached;
                call :meth:`teardown` first.
            ResourceExhaustedError: no address is free.
            NetworkCommandError: ``ip`` or ``nft`` failed.
        """
        s = self.settings
        netns = names.netns_name(s, sandbox_id)
        veth = names.veth_name(s, sandbox_id)
        if (NETNS_DIR / netns).exists() or (_SYS_NET / veth).exists():
            raise AlreadyExistsError(f"network of sandbox {sandbox_id} already exists")
        if policy is None:
            policy = DEFAULT_POLICY if allow_internet else parse_policy((), (ALL_TRAFFIC,))
        address = self.pool.claim(address)
        mac = names.mac_for(address)
        alias = names.veth_alias(sandbox_id, address)

        async def links() -> None:
            await self._ip_lines(
                rules.host_link_batch(s, netns=netns, host_veth=veth, mac=mac, alias=alias)
            )
            await self._ip_lines(rules.sandbox_link_batch(s, address=address), netns=netns)

        # The firewall elements and the links at once (one process fewer on the path, ADR
        # 0041): the port is up before its pinning for a moment now, but nothing can send
        # through it yet, as the netns holds no process before this returns (the runtime
        # starts the sandbox's later).
        both = asyncio.gather(
            self._nft_script(
                rules.attach_elements_script(
                    s, host_veth=veth, address=address, mac=mac, policy=policy
                )
            ),
            links(),
            return_exceptions=True,
        )
        try:
            try:
                results = await asyncio.shield(both)
            except asyncio.CancelledError:
                await _settled(both)  # what they made is known before it is removed
                raise
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        except BaseException:
            # Also on cancellation: a half-made network must not outlive the request.
            await asyncio.shield(self._remove(sandbox_id, address=address))
            raise
        return SandboxNetwork(
            sandbox_id=sandbox_id,
            netns_path=str(NETNS_DIR / netns),
            netns_name=netns,
            address=address,
            gateway=s.gateway,
            prefixlen=32,
            host_veth=veth,
            sandbox_ifname=s.sandbox_ifname,
            mac=mac,
            allow_internet=not policy.blocks_all,
        )

    async def apply_policy(self, address: IPv4Address, policy: EgressPolicy) -> None:
        """Replace the egress policy of the sandbox at ``address`` in one transaction.

        New connections meet it at once; open ones keep going (docs/network.md).
        """
        await self._nft_script(rules.policy_script(self.settings, address=address, policy=policy))

    async def teardown(self, sandbox_id: str, *, address: IPv4Address | None = None) -> None:
        """Remove the sandbox's netns, veth, firewall elements and address. Idempotent.

        Pass the ``address`` the node recorded to save a lookup; without it the address
        is read from the veth's alias or our nft sets. Processes still inside the netns
        keep it alive, but cut off: the veth is gone.
        """
        await self._remove(sandbox_id, address=address)

    async def _remove(self, sandbox_id: str, *, address: IPv4Address | None) -> None:
        s = self.settings
        netns = names.netns_name(s, sandbox_id)
        veth = names.veth_name(s, sandbox_id)
        if address is None:
            address = await self._find_address(veth)
        if address is not None:
            mac = names.mac_for(address)
            # ENOENT here means our tables are gone (remove_bridge): nothing to detach.
            await self._nft_script(
                rules.detach_elements_script(s, host_veth=veth, address=address, mac=mac),
                tolerate=_GONE,
            )
        lines = []
        if (_SYS_NET / veth).exists():
            lines.append(f"link del dev {veth}")
        if (NETNS_DIR / netns).exists():
            lines.append(f"netns del {netns}")
        if lines:
            # Either may vanish between the check and the command (a netns deleted by
            # someone else takes its veth along, asynchronously); gone is what we want.
            await self._ip_lines(lines, tolerate=_GONE)
        if address is not None:
            self.pool.release(address)

    # ---- reconcile --------------------------------------------------------------------

    async def list_attached(self) -> list[AttachedNetwork]:
        """Every sandbox network of ours on the host: netns and veths, merged by sandbox id.

        The node tears down the ones its store does not know (``teardown`` per id).
        """
        s = self.settings
        found: dict[str, AttachedNetwork] = {}
        try:
            entries = sorted(os.listdir(NETNS_DIR))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            sandbox_id = names.sandbox_id_from_netns(s, entry)
            if sandbox_id is not None:
                found[sandbox_id] = AttachedNetwork(
                    sandbox_id=sandbox_id, netns_name=entry, host_veth=None, address=None
                )
        result = await self._run([self._ip, "-j", "link", "show", "type", "veth"])
        for link in json.loads(result.stdout or "[]"):
            name = link.get("ifname", "")
            parsed = names.parse_veth_alias(link.get("ifalias", ""))
            if not name.startswith(s.veth_prefix) or parsed is None:
                continue
            sandbox_id, address = parsed
            if address not in s.subnet or name != names.veth_name(s, sandbox_id):
                continue
            netns = names.netns_name(s, sandbox_id)
            found[sandbox_id] = AttachedNetwork(
                sandbox_id=sandbox_id,
                netns_name=netns if (NETNS_DIR / netns).exists() else None,
                host_veth=name,
                address=address,
            )
        return [found[k] for k in sorted(found)]

    async def recover(self) -> list[AttachedNetwork]:
        """:meth:`list_attached`, and mark their addresses as used in the pool."""
        attached = await self.list_attached()
        self.pool.mark_used(a.address for a in attached if a.address is not None)
        return attached

    # ---- helpers ----------------------------------------------------------------------

    async def _find_address(self, veth: str) -> IPv4Address | None:
        if (_SYS_NET / veth).exists():
            try:
                alias = (_SYS_NET / veth / "ifalias").read_text().strip()
            except OSError:
                alias = ""
            parsed = names.parse_veth_alias(alias)
            if parsed is not None:
                return parsed[1]
        # The veth is gone (or never got its alias): our bridge set still pins it.
        t = self.settings.table
        result = await self._run(
            [self._nft, "-j", "list", "set", "bridge", t, "addrs"], check=False
        )
        if result.returncode != 0:
            return None
        for item in json.loads(result.stdout).get("nftables", []):
            for elem in item.get("set", {}).get("elem", []):
                concat = elem.get("concat") if isinstance(elem, dict) else None
                if concat and len(concat) == 2 and concat[0] == veth:
                    return IPv4Address(concat[1])
        return None

    def _write_sysctl(self, path: Path, value: str) -> None:
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError as exc:
            raise from_os_error(exc, str(path)) from exc

    async def _nft_script(self, script: str, *, tolerate: tuple[str, ...] = ()) -> None:
        """Apply ``script`` atomically; errors containing one of ``tolerate`` are ignored."""
        argv = [self._nft, "-f", "-"]
        result = await self._run(argv, stdin=script, check=not tolerate)
        if result.returncode != 0 and not _only_tolerated(result.stderr, tolerate):
            raise _command_error(argv, result, script)

    async def _ip_lines(
        self, lines: list[str], *, netns: str | None = None, tolerate: tuple[str, ...] = ()
    ) -> None:
        """Run ``ip`` commands; errors whose text contains one of ``tolerate`` are ignored."""
        prefix = [self._ip] if netns is None else [self._ip, "-n", netns]
        if tolerate:
            prefix.append("-force")  # go on after a tolerated error in a batch
        batches: list[tuple[list[str], str | None]] = (
            [([*prefix, "-batch", "-"], "\n".join(lines) + "\n")]
            if self._batch
            else [([*prefix, *_split(line)], None) for line in lines]
        )
        for argv, stdin in batches:
            result = await self._run(argv, stdin=stdin, check=not tolerate)
            if result.returncode != 0 and not _only_tolerated(result.stderr, tolerate):
                raise _command_error(argv, result, stdin)

    async def _run(
        self, argv: list[str], *, stdin: str | None = None, check: bool = True
    ) -> _Result:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise NetworkCommandError(f"cannot run {argv[0]}: {exc}") from exc
        cpu_weight.lower_if_background(proc.pid)  # a pool refill's ip/nft (ADR 0038)
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        result = _Result(proc.returncode or 0, out.decode(), err.decode())
        if check and result.returncode != 0:
            raise _command_error(argv, result, stdin)
        return result


async def _settled(future: asyncio.Future[object]) -> None:
    """Wait until ``future`` is done, even if this task is cancelled again meanwhile."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(future)


#: ``ip`` errors that mean "already gone" (link del, netns del).
_GONE = ("Cannot find device", "No such file or directory")


def _only_tolerated(stderr: str, tolerate: tuple[str, ...]) -> bool:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    # nft echoes the failing command and marks it with carets; its messages say "Error:".
    errors = [ln for ln in lines if "Error:" in ln] or [
        ln for ln in lines if not ln.startswith("Command failed")
    ]
    return bool(tolerate) and all(any(t in ln for t in tolerate) for ln in errors)


def _command_error(argv: list[str], result: _Result, stdin: str | None) -> NetworkCommandError:
    detail = f"\n{stdin}" if stdin else ""
    return NetworkCommandError(
        f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}{detail}",
        public_message="sandbox networking failed",
    )


def _split(line: str) -> list[str]:
    # The batch lines quote at most one argument (the alias); shlex parses it as ip does.
    return shlex.split(line)
