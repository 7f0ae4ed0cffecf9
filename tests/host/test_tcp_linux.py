"""Our TCP against Linux's through a TAP device in a fresh network namespace, in real time: curl
fetches from our HTTP server, and our client exchanges a megabyte with a Linux echo server."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import time

import pytest

from chimney.host.apps import HttpServer, http_bytes
from chimney.host.stack import HostStack
from chimney.links.netns import TapTopology, kernel_supports_netns
from chimney.sim.realtime import RealTimeScheduler

pytestmark = pytest.mark.netns

_ok, _why = kernel_supports_netns()
requires_netns = pytest.mark.skipif(not _ok, reason=_why)


def _serve_until_exit(sched: RealTimeScheduler, p: subprocess.Popen[bytes], timeout_s: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    while p.poll() is None and time.monotonic() < deadline:
        sched.run_until(until=sched.now + 20_000_000)
    if p.poll() is None:
        p.kill()
        pytest.fail("the Linux side did not finish in time")
    out, err = p.communicate()
    assert p.returncode == 0, err
    return out  # type: ignore[no-any-return]


def _stack(topo: TapTopology, sched: RealTimeScheduler) -> HostStack:
    stack = HostStack(sched, "ours")
    stack.attach(topo.port(sched), mac=topo.our_mac, addresses=[f"{topo.our_ip}/24"], name="tap")
    return stack


@requires_netns
def test_curl_fetches_generated_bytes_from_our_http_server() -> None:
    with TapTopology.unique() as topo:
        sched = RealTimeScheduler()
        stack = _stack(topo, sched)
        server = HttpServer(stack, 80).start()
        # piped through sha256sum: a megabyte would fill the pipe to us while we serve
        url = f"http://{topo.our_ip}/bytes/1000000"
        p = topo.ns.popen(["bash", "-c", f"set -o pipefail; curl -sS --max-time 15 {url} | sha256sum"])
        out = _serve_until_exit(sched, p)
        assert out.split()[0].decode() == hashlib.sha256(http_bytes(1_000_000)).hexdigest()
        assert server.requests == 1 and server.responses == {200: 1}


_ECHO = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7007)); s.listen(1); print("ready", flush=True)
c, _ = s.accept()
while True:
    d = c.recv(65536)
    if not d:
        break
    c.sendall(d)
c.close()
"""


@requires_netns
def test_our_client_exchanges_a_megabyte_with_a_linux_echo_server() -> None:
    with TapTopology.unique() as topo:
        sched = RealTimeScheduler()
        stack = _stack(topo, sched)
        p = topo.ns.python(_ECHO)
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        c = stack.socket()
        c.settimeout(10.0)
        c.connect((topo.linux_ip, 7007))
        data = bytes(range(256)) * 4096
        got = bytearray()
        off = 0
        c.setblocking(False)
        deadline = time.monotonic() + 20
        while len(got) < len(data) and time.monotonic() < deadline:
            if off < len(data):
                with contextlib.suppress(BlockingIOError):
                    off += c.send(data[off : off + 65536])
            try:
                got += c.recv(1 << 20)
            except BlockingIOError:
                sched.run_until(until=sched.now + 5_000_000)
        c.settimeout(10.0)
        c.shutdown(1)
        assert c.recv(10) == b""  # Linux closes after our FIN
        assert bytes(got) == data
        c.close()
        sched.run_until(until=sched.now + 100_000_000)


@requires_netns
def test_curl_reuses_one_keepalive_connection_for_two_requests() -> None:
    with TapTopology.unique() as topo:
        sched = RealTimeScheduler()
        stack = _stack(topo, sched)
        server = HttpServer(stack, 80).start()
        url = f"http://{topo.our_ip}/bytes/20000"
        p = topo.ns.popen(["curl", "-sS", "--max-time", "15", "-o", "/dev/null", "-o", "/dev/null",
                           "-w", "%{size_download}\n", url, url])
        out = _serve_until_exit(sched, p)
        assert out.split() == [b"20000", b"20000"]
        assert server.accepted == 1 and server.requests == 2
