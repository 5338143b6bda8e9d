"""Issue 13's network policy through the official SDK, against a fake internet.

A ``hutch serve`` of its own (names ``hsn<SLOT>``) whose sandboxes and egress filter use
the fake internet's resolver (``fakenet/net.py``: 198.18.(100+SLOT).0/24 in a netns this
module creates), with a cap of 40 concurrent connections per sandbox. Commands run in the
``base`` template (curl, python3) as root, since E2B's templates have sudo.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from e2b import Sandbox

from tests.conftest import machine_lacks

from .fakenet.net import DNS, HOST_ADDR, WEB_A, WEB_B, FakeInternet, fake_internet
from .serveproc import INSTALLED_TEMPLATES, HostNames, Serve, nodehelpers, seed_templates

pytestmark = pytest.mark.root

SLOT = int(os.environ.get("HUTCH_TEST_SLOT", "0") or "0")
CAP = 40
NAMES = HostNames(
    bridge=f"hsn{SLOT}",
    subnet=f"10.219.{33 + SLOT}.0/24",
    netns_prefix=f"hsn{SLOT}-",
    veth_prefix=f"hz{SLOT}",
    nft_table=f"hsn{SLOT}",
    cgroup_parent=f"hsn{SLOT}-{os.getpid()}",
    extra_env={
        "HUTCH_NODE_ENVD_READY_TIMEOUT_S": "60",
        "HUTCH_NODE_POOL_SIZE": "",
        "HUTCH_NODE_SHARED_TEMPLATES_DIR": "",
        "HUTCH_NODE_DNS_SERVERS": json.dumps([DNS]),
        "HUTCH_NODE_EGRESS_RESOLVER": DNS,
        "HUTCH_NODE_MAX_CONNECTIONS_PER_SANDBOX": str(CAP),
    },
)


@pytest.fixture(scope="module")
def internet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeInternet]:
    with fake_internet(tmp_path_factory.mktemp("fakenet")) as net:
        yield net


@pytest.fixture(scope="module")
def server(
    internet: FakeInternet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Serve, dict[str, str]]]:
    if not (INSTALLED_TEMPLATES / "base" / "template.json").is_file():
        machine_lacks("install.sh's base template (curl, python3)")
    home = tmp_path_factory.mktemp("netpolicy-home")
    seed_templates(home)
    serve = Serve(home=home, envd_bundle=nodehelpers.cached_envd_bundle(), names=NAMES)
    key = serve.hutch("keys", "create").strip()
    opts = {"api_key": key, "api_url": serve.api_url, "sandbox_url": serve.sandbox_url}
    with serve.running():
        yield serve, opts


def _create(opts: dict[str, str], **kwargs: object) -> Sandbox:
    return Sandbox.create("base", timeout=300, **opts, **kwargs)  # type: ignore[arg-type]


def _curl(sbx: Sandbox, url: str, *extra: str) -> str | None:
    """The body ``url`` answers inside the sandbox, or None when the connection failed."""
    result = sbx.commands.run(
        " ".join(["curl", "-sk", "--max-time", "8", *extra, url]), user="root"
    )  # raises on a non-zero exit
    return result.stdout


def _fails(sbx: Sandbox, url: str, *extra: str) -> bool:
    from e2b import CommandExitException

    try:
        _curl(sbx, url, *extra)
    except CommandExitException:
        return True
    return False


def test_allow_by_cidr_wins_over_deny_all(server: tuple[Serve, dict[str, str]]) -> None:
    _, opts = server
    sbx = _create(opts, network={"allow_out": [WEB_A], "deny_out": ["0.0.0.0/0"]})
    try:
        assert _curl(sbx, f"http://{WEB_A}:8080/") == f"served-by={WEB_A} host={WEB_A}:8080\n"
        assert _fails(sbx, f"http://{WEB_B}:8080/")
        info = sbx.get_info()
        assert info.network is not None
        assert info.network["allow_out"] == [WEB_A] and info.network["deny_out"] == ["0.0.0.0/0"]
    finally:
        sbx.kill()


def test_deny_by_cidr_leaves_the_rest(server: tuple[Serve, dict[str, str]]) -> None:
    _, opts = server
    sbx = _create(opts, network={"deny_out": [f"{WEB_B}/32"]})
    try:
        assert _curl(sbx, f"http://{WEB_A}:8080/")
        assert _fails(sbx, f"http://{WEB_B}:8080/")
    finally:
        sbx.kill()


def test_allow_internet_access_false_blocks_everything(
    server: tuple[Serve, dict[str, str]],
) -> None:
    _, opts = server
    sbx = _create(opts, allow_internet_access=False)
    try:
        assert _fails(sbx, f"http://{WEB_A}:8080/")
        assert sbx.get_info().network["deny_out"] == ["0.0.0.0/0"]  # type: ignore[index]
    finally:
        sbx.kill()


def test_domain_allowed_and_everything_else_denied(
    server: tuple[Serve, dict[str, str]], internet: FakeInternet
) -> None:
    _, opts = server
    sbx = _create(opts, network={"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"]})
    try:
        assert _curl(sbx, "http://allowed.test/") == f"served-by={WEB_A} host=allowed.test\n"
        assert _curl(sbx, "https://allowed.test/") == f"served-by={WEB_A} host=allowed.test\n"
        assert _fails(sbx, "http://denied.test/")
        assert _fails(sbx, "https://denied.test/")
        # Other ports are CIDR-only: the allowed name's address on 8080 is refused.
        assert _fails(sbx, f"http://{WEB_A}:8080/")
        # An IP literal is no domain, and a TLS connection without SNI has no name.
        assert _fails(sbx, f"http://{WEB_A}/")
        assert _fails(sbx, f"https://{WEB_A}/")
    finally:
        sbx.kill()


def test_wildcard_matches_subdomains_not_the_apex(server: tuple[Serve, dict[str, str]]) -> None:
    _, opts = server
    sbx = _create(opts, network={"allow_out": ["*.wild.test"], "deny_out": ["0.0.0.0/0"]})
    try:
        assert _curl(sbx, "http://a.wild.test/") == f"served-by={WEB_A} host=a.wild.test\n"
        assert _curl(sbx, "https://b.c.wild.test/")
        assert _fails(sbx, "http://wild.test/")
        assert _fails(sbx, "http://allowed.test/")
    finally:
        sbx.kill()


def test_hosts_file_forged_dns_and_host_header_spoofing_gain_nothing(
    server: tuple[Serve, dict[str, str]],
) -> None:
    """The filter dials the allowed name itself: a sandbox pointing it at another address
    (``/etc/hosts``, a forged answer via ``--resolve``, a Host header to another IP) still
    reaches only the name's real address."""
    _, opts = server
    sbx = _create(opts, network={"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"]})
    try:
        sbx.commands.run(f"echo '{WEB_B} allowed.test' >> /etc/hosts", user="root")
        assert _curl(sbx, "http://allowed.test/") == f"served-by={WEB_A} host=allowed.test\n"
        assert _curl(sbx, "https://allowed.test/") == f"served-by={WEB_A} host=allowed.test\n"
        forged = _curl(sbx, "http://allowed.test/", "--resolve", f"allowed.test:80:{WEB_B}")
        assert forged == f"served-by={WEB_A} host=allowed.test\n"
        spoofed = _curl(sbx, f"http://{WEB_B}/", "-H", "'Host: allowed.test'")
        assert spoofed == f"served-by={WEB_A} host=allowed.test\n"
    finally:
        sbx.kill()


def test_never_the_host_the_metadata_range_or_another_sandbox(
    server: tuple[Serve, dict[str, str]],
) -> None:
    serve, opts = server
    gateway = NAMES.subnet.rsplit(".", 1)[0] + ".1"
    everything = {
        "allow_out": ["169.254.0.0/16", "10.0.0.0/8", HOST_ADDR, "meta.test", "host.test"],
        "deny_out": ["0.0.0.0/0"],
    }
    sbx = _create(opts, network=everything)
    other = _create(opts)
    try:
        other_ip = other.commands.run(
            "python3 -c \"import socket; s=socket.socket(2, 2); s.connect(('1.1.1.1', 1));"
            ' print(s.getsockname()[0])"'
        ).stdout.strip()
        assert other_ip.startswith(NAMES.subnet.rsplit(".", 1)[0])
        assert _fails(sbx, f"http://{other_ip}:49983/health")
        assert _fails(sbx, f"http://{gateway}:{serve.api_port}/health")
        assert _fails(sbx, f"http://{gateway}:{NAMES_FILTER_PORT}/")
        assert _fails(sbx, "http://169.254.169.254/")
        # Allowed names that resolve to the metadata range or to the host: the filter
        # refuses to dial them.
        assert _fails(sbx, "http://meta.test/")
        assert _fails(sbx, "http://host.test/")
        # The host's link to the fake internet is one of the host's addresses too.
        assert _fails(sbx, f"http://{HOST_ADDR}:{serve.api_port}/health")
    finally:
        sbx.kill()
        other.kill()


NAMES_FILTER_PORT = 3129


def test_update_takes_effect_for_new_connections(server: tuple[Serve, dict[str, str]]) -> None:
    _, opts = server
    sbx = _create(opts)
    try:
        assert _curl(sbx, f"http://{WEB_B}:8080/")
        sbx.update_network({"deny_out": [WEB_B]})
        assert _fails(sbx, f"http://{WEB_B}:8080/")
        assert _curl(sbx, f"http://{WEB_A}:8080/")
        assert sbx.get_info().network["deny_out"] == [WEB_B]  # type: ignore[index]
        sbx.update_network({"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"]})
        assert _curl(sbx, "http://allowed.test/")
        assert _fails(sbx, f"http://{WEB_A}:8080/")
        sbx.update_network({})  # omitted fields are cleared: everything again
        assert _curl(sbx, f"http://{WEB_B}:8080/")
        assert _fails(sbx, "http://denied.test/") is False
    finally:
        sbx.kill()


_STREAM = """
import os, socket, sys, time
s = socket.create_connection((sys.argv[1], 8080), timeout=30)
s.sendall(b"GET /bytes/67108864 HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
got = len(s.recv(65536))
open("/tmp/stream.ready", "w").close()
while not os.path.exists("/tmp/stream.go"):
    time.sleep(0.05)
while True:
    chunk = s.recv(1 << 20)
    if not chunk:
        break
    got += len(chunk)
print(got)
"""


def test_an_open_connection_outlives_an_update_that_denies_it(
    server: tuple[Serve, dict[str, str]],
) -> None:
    """docs/network.md: established flows keep going after a PUT; new ones meet it."""
    import time

    _, opts = server
    sbx = _create(opts)
    try:
        sbx.files.write("/tmp/stream.py", _STREAM)
        stream = sbx.commands.run(f"python3 /tmp/stream.py {WEB_A}", background=True)
        deadline = time.monotonic() + 60
        while not sbx.files.exists("/tmp/stream.ready"):  # its first bytes arrived
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.1)
        sbx.update_network({"deny_out": [WEB_A]})
        assert _fails(sbx, f"http://{WEB_A}:8080/")
        sbx.files.write("/tmp/stream.go", "")
        # 64 MiB and the headers: most of it crossed after the update.
        assert int(stream.wait().stdout) > 64 << 20
    finally:
        sbx.kill()


def test_policy_survives_pause_and_resume(server: tuple[Serve, dict[str, str]]) -> None:
    _, opts = server
    sbx = _create(opts, network={"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"]})
    try:
        assert _curl(sbx, "http://allowed.test/")
        sbx.pause()
        sbx = Sandbox.connect(sbx.sandbox_id, **opts)  # type: ignore[arg-type]
        assert _curl(sbx, "http://allowed.test/")
        assert _fails(sbx, "http://denied.test/")
        assert _fails(sbx, f"http://{WEB_B}:8080/")
        assert sbx.get_info().network["allow_out"] == ["allowed.test"]  # type: ignore[index]
    finally:
        sbx.kill()


def test_a_snapshot_and_a_fork_carry_the_policy(server: tuple[Serve, dict[str, str]]) -> None:
    """A sandbox made from a snapshot of a restricted sandbox, or forked from it, is held
    by the same rules (enforced on the node, not only shown), unless its create says
    otherwise."""
    _, opts = server
    policy = {"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"]}
    sbx = _create(opts, network=policy)
    made: list[Sandbox] = []
    try:
        snapshot = sbx.create_snapshot()
        made.append(Sandbox.create(snapshot.snapshot_id, timeout=300, **opts))  # type: ignore[arg-type]
        [fork] = sbx.fork(timeout=300)
        assert isinstance(fork, Sandbox)
        made.append(fork)
        for child in made:
            assert child.get_info().network == {**policy, "allow_public_traffic": True}
            assert _curl(child, "http://allowed.test/") == f"served-by={WEB_A} host=allowed.test\n"
            assert _fails(child, "http://denied.test/")
            assert _fails(child, f"http://{WEB_B}:8080/")
        own = Sandbox.create(
            snapshot.snapshot_id,
            timeout=300,
            network={"deny_out": [WEB_A]},
            **opts,  # type: ignore[arg-type]
        )
        made.append(own)
        assert _curl(own, f"http://{WEB_B}:8080/")
        assert _fails(own, f"http://{WEB_A}:8080/")
    finally:
        for child in made:
            child.kill()
        sbx.kill()


_FLOOD = """
import socket, sys
held, refused = [], 0
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((sys.argv[2], 8081))
        held.append(s)
    except OSError:
        refused += 1
print(len(held), refused)
"""


def test_connection_flood_is_capped_and_the_node_keeps_answering(
    server: tuple[Serve, dict[str, str]],
) -> None:
    _, opts = server
    sbx = _create(opts)
    other = _create(opts)
    try:
        sbx.files.write("/tmp/flood.py", _FLOOD)
        out = sbx.commands.run(f"python3 /tmp/flood.py {CAP * 3} {WEB_A}", timeout=120)
        held, refused = (int(n) for n in out.stdout.split())
        assert held <= CAP and refused >= CAP * 2, out.stdout
        assert held >= CAP // 2, out.stdout  # the cap, not something else, refused them
        # The node, the sandbox's own envd and another sandbox are unaffected.
        assert sbx.commands.run("echo alive").stdout == "alive\n"
        assert _curl(other, f"http://{WEB_A}:8080/")
        # The held connections closed with the flood's process: room again.
        assert _curl(sbx, f"http://{WEB_A}:8080/")
    finally:
        sbx.kill()
        other.kill()


_FORGE = """
import socket, struct, sys
def checksum(b):
    if len(b) % 2: b += b"\\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
dst, forged = sys.argv[1], sys.argv[2]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
payload = b"forged"
for src in (forged, dst):
    udp = struct.pack("!HHHH", 4444, 9999, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    raw.sendto(ip + udp, (dst, 0))
ok = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
ok.sendto(b"legit", (dst, 9999))
print("sent")
"""


def test_raw_sockets_and_forged_sources_are_contained(
    server: tuple[Serve, dict[str, str]], internet: FakeInternet
) -> None:
    """Root in a sandbox may open raw sockets, but a packet with a source other than its
    own address never leaves the bridge; its ordinary packets do (masqueraded)."""
    _, opts = server
    sbx = _create(opts)
    try:
        sbx.files.write("/tmp/forge.py", _FORGE)
        assert sbx.commands.run(f"python3 /tmp/forge.py {WEB_A} {WEB_B}", user="root").stdout
        # The datagrams are in flight when the script ends: wait for the last one sent (the
        # fake internet records what it receives in its own process, in its own time).
        legit = {"kind": "udp", "source": HOST_ADDR, "data": "legit"}
        deadline = time.monotonic() + 60
        while legit not in (udp := [e for e in internet.events() if e["kind"] == "udp"]):
            assert time.monotonic() < deadline, udp
            time.sleep(0.1)
        # The forged-source packet is dropped; the one with the sandbox's own (private)
        # source is NATed like any other and so arrives from the host's address.
        forged = [e for e in udp if e["data"] == "forged"]
        assert all(e["source"] == HOST_ADDR for e in forged) and len(forged) <= 1
        assert not [e for e in udp if e["source"] == WEB_B]
    finally:
        sbx.kill()


_ECHO_HOST = """
import http.server
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("host=" + self.headers["Host"]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("0.0.0.0", 8000), Echo).serve_forever()
"""


def test_traffic_token_guards_the_sandbox_ports(server: tuple[Serve, dict[str, str]]) -> None:
    """``allowPublicTraffic: false`` wants the token; ``maskRequestHost`` is the ``Host``
    the sandbox's server gets (``${PORT}`` replaced)."""
    import httpx

    serve, opts = server
    network = {"allow_public_traffic": False, "mask_request_host": "masked.test:${PORT}"}
    sbx = _create(opts, network=network)
    try:
        token = sbx.traffic_access_token
        assert token
        sbx.files.write("/tmp/echo_host.py", _ECHO_HOST)
        sbx.commands.run("python3 /tmp/echo_host.py", background=True)
        url = f"{serve.sandbox_url}/"
        headers = {"e2b-sandbox-id": sbx.sandbox_id, "e2b-sandbox-port": "8000"}
        deadline = time.monotonic() + 60  # a loaded machine's python starts slowly
        while True:  # until the server listens (the proxy answers 502 before)
            r = httpx.get(url, headers={**headers, "e2b-traffic-access-token": token})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 200, r.text
        assert r.text == "host=masked.test:8000"
        r = httpx.get(url, headers=headers)
        assert r.status_code == 403 and "missing" in r.json()["message"]
        r = httpx.get(url, headers={**headers, "e2b-traffic-access-token": "wrong"})
        assert r.status_code == 403 and "invalid" in r.json()["message"]
        # envd's port keeps its own token and works without the traffic token.
        assert sbx.commands.run("echo ok").stdout == "ok\n"
    finally:
        sbx.kill()


def test_bad_policies_are_400s_naming_the_entry(server: tuple[Serve, dict[str, str]]) -> None:
    from e2b import InvalidArgumentException, SandboxException

    _, opts = server
    for network, says in (
        ({"deny_out": ["denied.test"]}, "invalid denied CIDR denied.test"),
        ({"allow_out": ["allowed.test"]}, "ALL_TRAFFIC"),
        ({"allow_out": ["not a domain"], "deny_out": ["0.0.0.0/0"]}, "'not a domain'"),
        ({"deny_out": ["10.0.0.0/40"]}, "invalid denied CIDR 10.0.0.0/40"),
        ({"allow_out": [f"198.18.0.{i % 250}" for i in range(201)]}, "too many entries"),
    ):
        with pytest.raises((InvalidArgumentException, SandboxException)) as exc:
            _create(opts, network=network)
        assert says in str(exc.value)
