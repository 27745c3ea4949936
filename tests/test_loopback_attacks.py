"""The loopback callback server under attack by another local process.

Real sockets on 127.0.0.1 / ::1. The attacker can see the port (it is in
/proc/net/tcp) and can connect, trickle bytes, or send forged callbacks; it
cannot read the browser's redirect. These tests pin what it cannot do.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx2
import pytest

from oauth_callback.loopback import CallbackServer

pytestmark = pytest.mark.timeout(60)

CODE = "real-code-0123456789"
STATE = "real-state-0123456789"


def _ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _request(port: int, target: str, host: str | None = None) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n\r\n".encode()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _status(reply: bytes) -> int:
    return int(reply.split(b"\r\n", 1)[0].split()[1])


def _exchange(port: int, data: bytes, family: socket.AddressFamily = socket.AF_INET) -> bytes:
    address = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect((address, port))
        sock.sendall(data)
        return _read_all(sock)


# --------------------------------------------------------------------------- listeners


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets LISTENing on ``port``, from /proc/net/tcp{,6}."""
    found = []
    for name, size in (("tcp", 4), ("tcp6", 16)):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, _, port_hex = fields[1].partition(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
            family = socket.AF_INET if size == 4 else socket.AF_INET6
            found.append(socket.inet_ntop(family, packed))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp (Linux)")
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "[::1]"])
def test_every_listener_is_bound_to_loopback(host: str) -> None:
    """A LAN attacker can send any Host header: only the bind address keeps it out."""
    if ":" in host and not _ipv6_available():
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    with CallbackServer(host=host, port=0) as server:
        addresses = _listening_addresses(server.port)
        assert addresses, "the server's listening sockets were not found"
        for address in addresses:
            assert address in ("127.0.0.1", "::1"), address
        expected = {"127.0.0.1", "::1"} if host == "localhost" and _ipv6_available() else None
        if expected is not None:
            assert set(addresses) == expected


# --------------------------------------------------------------------------- one winner


def test_a_second_callback_after_the_first_gets_409_and_changes_nothing() -> None:
    with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE) as server:
        port = server.port
        second = socket.create_connection(("127.0.0.1", port), timeout=20)
        try:
            second.sendall(b"GET /callback?code=late&state=" + STATE.encode())  # incomplete
            # A full exchange on a later connection proves the server took the
            # second one: connections are accepted in order from one listener.
            assert _status(_exchange(port, _request(port, "/favicon.ico"))) == 404
            with httpx2.Client(trust_env=False, timeout=20) as client:
                ok = client.get(f"{server.redirect_uri}?code={CODE}&state={STATE}")
            assert ok.status_code == 200
            first = server.wait_for_callback(timeout=20, expected_state=STATE)
            assert first.code == CODE
            second.sendall(f" HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            reply = _read_all(second)
            assert _status(reply) == 409
            assert b"already completed" in reply
            again = server.wait_for_callback(timeout=20, expected_state=STATE)
            assert again.code == CODE and again.params["code"] == CODE
        finally:
            second.close()
