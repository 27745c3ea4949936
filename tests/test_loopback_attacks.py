"""The loopback callback server under attack by another local process.

Real sockets on 127.0.0.1 / ::1. The attacker can see the port (it is in
/proc/net/tcp) and can connect, trickle bytes, or send forged callbacks; it
cannot read the browser's redirect. These tests pin what it cannot do.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from oauth_callback import CallbackTimeout, FileStore, Tokens, loopback
from oauth_callback.flow import OAuthClient
from oauth_callback.loopback import CallbackServer
from oauth_callback.testing import MockProvider, follow_redirects

from .test_loopback import HAS_IPV6

pytestmark = pytest.mark.timeout(60)

CODE = "real-code-0123456789"
STATE = "real-state-0123456789"


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
    if ":" in host and not HAS_IPV6:
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    with CallbackServer(host=host, port=0) as server:
        addresses = _listening_addresses(server.port)
        assert addresses, "the server's listening sockets were not found"
        for address in addresses:
            assert address in ("127.0.0.1", "::1"), address
        expected = {"127.0.0.1", "::1"} if host == "localhost" and HAS_IPV6 else None
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


# --------------------------------------------------------------------------- slowloris

# Another local process: COUNT connections that each trickle a byte every
# INTERVAL seconds and never finish their request; a connection the server
# closes is opened again at once, so the flood never lets up. It says "ready"
# once every connection sent its first byte and, with FULL, once the server
# has closed one of them to make room.
TRICKLER = r"""
import select, socket, sys, time
port, count, interval, full = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
line = b"GET /callback?code=evil&state=evil HTTP/1.1\r\nX-Pad: " + b"a" * 60 + b"\r\n"

def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(line[:1])
    s.setblocking(False)
    return [s, 1]

conns = [connect() for _ in range(count)]
if full == "full":
    deadline = time.monotonic() + 30
    while not select.select([slot[0] for slot in conns], [], [], 0.05)[0]:
        assert time.monotonic() < deadline, "the server never closed a connection"
print("ready", flush=True)
while True:
    for slot in conns:
        sock, sent = slot
        try:
            sock.send(line[sent % len(line):sent % len(line) + 1])
            slot[1] = sent + 1
            if sock.recv(1) == b"":
                raise ConnectionResetError
        except BlockingIOError:
            pass
        except OSError:
            sock.close()
            try:
                slot[:] = connect()
            except OSError:
                time.sleep(0.05)
    time.sleep(interval)
"""


def _start_trickler(port: int, count: int, interval: float,
                    full: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen(_attacker(TRICKLER, str(port), str(count), str(interval),
                                      "full" if full else "-"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **_as_nobody())
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


# The attacker runs as another user (nobody) when we are root, as a real one would;
# it needs only the standard library, so the system interpreter (which nobody may
# run, unlike a venv under /root) does.
_SYSTEM_PYTHON = "/usr/bin/python3"
_AS_NOBODY = (hasattr(os, "geteuid") and os.geteuid() == 0
              and os.access(_SYSTEM_PYTHON, os.X_OK))


def _attacker(script: str, *args: str) -> list[str]:
    return [_SYSTEM_PYTHON if _AS_NOBODY else sys.executable, "-c", script, *args]


def _as_nobody() -> dict[str, Any]:
    if _AS_NOBODY:
        return {"user": "nobody", "group": "nogroup", "extra_groups": [], "cwd": "/"}
    return {}


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=30)


def _login_under(attack: Callable[[int], subprocess.Popen[str]], tmp_path: Path,
                 attackers: list[subprocess.Popen[str]]) -> Tokens:
    """A real login (MockProvider, OAuthClient, loopback) while ``attack(port)`` runs."""
    with MockProvider() as provider:
        client = OAuthClient.discover(provider.issuer, "test-client")
        statuses: list[int] = []

        def browser(url: str) -> None:
            port = urlsplit(parse_qs(urlsplit(url).query)["redirect_uri"][0]).port
            assert port is not None
            attackers.append(attack(port))  # the flood is on before the redirect arrives

            def follow() -> None:
                statuses.append(follow_redirects(url, timeout=30))

            threading.Thread(target=follow, daemon=True).start()

        store = FileStore(tmp_path / "tokens.json", durable=False)
        tokens = client.login(store, "k", port=0, open_browser=browser, timeout=45)
    assert statuses == [200]
    return tokens


def test_200_trickling_connections_do_not_keep_the_real_redirect_out(tmp_path: Path) -> None:
    attackers: list[subprocess.Popen[str]] = []
    try:
        tokens = _login_under(lambda port: _start_trickler(port, 200, 0.5), tmp_path, attackers)
        assert tokens.access_token
        assert attackers[0].poll() is None  # the flood was still going when the login ended
    finally:
        for proc in attackers:
            _stop(proc)


def test_a_full_server_makes_room_for_the_real_redirect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """More trickling connections than the server holds: the oldest give way."""
    caplog.set_level(logging.DEBUG, logger="oauth_callback")
    monkeypatch.setattr(loopback, "_MAX_CONNECTIONS", 16)
    attackers: list[subprocess.Popen[str]] = []
    try:
        tokens = _login_under(lambda port: _start_trickler(port, 60, 0.2, full=True), tmp_path, attackers)
        assert tokens.access_token
    finally:
        for proc in attackers:
            _stop(proc)
    evictions = [r for r in caplog.records if "closing the oldest" in r.getMessage()]
    assert evictions, "the server never filled up: the test did not test eviction"
    # A flood does not flood the terminal: one warning, then debug, then a summary.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in warnings if "closing the oldest" in r.getMessage()]) == 1
    assert len(evictions) > 1  # the others were logged at debug
    summary = [r for r in warnings if "dropped" in r.getMessage()]
    assert len(summary) == 1 and "closed to make room" in summary[0].getMessage()
    assert len(warnings) <= 3


def test_each_connection_has_one_deadline_for_its_whole_request() -> None:
    """Trickling keeps every read short, yet the connection is closed at its deadline."""
    with CallbackServer(host="127.0.0.1", port=0, connection_timeout=1.0) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        try:
            payload = b"GET /callback?code=x&state=y HTTP/1.1\r\nX-Slow: " + b"b" * 10_000
            closed = False
            for i in range(len(payload)):  # a byte every 20 ms: up to 200 s, never idle 1 s
                try:
                    sock.sendall(payload[i:i + 1])
                except OSError:
                    closed = True
                    break
                ready, _, _ = select.select([sock], [], [], 0.02)
                if ready:
                    try:
                        closed = sock.recv(1) == b""
                    except OSError:
                        closed = True
                    break
            assert closed, "a trickling connection outlived its deadline"
        finally:
            sock.close()
        with httpx2.Client(trust_env=False, timeout=20) as client:
            assert client.get(f"{server.redirect_uri}?code={CODE}").status_code == 200
        assert server.wait_for_callback(timeout=20).code == CODE


def test_deadline_drops_are_summarised_not_logged_one_by_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="oauth_callback")
    idle = []
    with CallbackServer(host="127.0.0.1", port=0, connection_timeout=0.3) as server:
        try:
            idle = [socket.create_connection(("127.0.0.1", server.port), timeout=20)
                    for _ in range(40)]
            for sock in idle:  # each is closed by the server at its deadline
                assert sock.recv(1) == b""
        finally:
            for sock in idle:
                sock.close()
    drops = [r for r in caplog.records if "no complete request" in r.getMessage()]
    assert len(drops) >= 40  # each drop is counted (at debug) ...
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]  # ... one warning, one summary
    assert "40 sent no complete request" in warnings[-1].getMessage()


# --------------------------------------------------------------------------- forged callbacks

FORGER = r"""
import socket, sys
port, state = int(sys.argv[1]), sys.argv[2]
targets = [
    "/callback?code=evil-code-1",  # no state
    "/callback?code=evil-code-2&state=evil-state-2",  # wrong state
    "/callback?error=access_denied&error_description=evil-text-3",  # error, no state
    "/callback?error=access_denied&error_description=evil-text-4&state=evil-state-4",
    "/callback?code=evil-code-5&state=" + state[:-1],  # all but one character right
]
for target in targets:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    status = reply.split(b" ", 2)[1].decode()
    print(status, b"does not belong to the sign-in" in reply, flush=True)
"""

FORGED_VALUES = ["evil-code-1", "evil-code-2", "evil-state-2", "evil-text-3", "evil-text-4",
                 "evil-state-4", "evil-code-5"]


def _forge(port: int, state: str) -> list[str]:
    result = subprocess.run(_attacker(FORGER, str(port), state),
                            capture_output=True, text=True, timeout=60, **_as_nobody())
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:-1]


def test_forged_callbacks_are_ignored_and_the_real_one_completes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE) as server:
        port = server.port
        assert _forge(port, STATE) == ["400 True"] * 5  # the error page, each time
        ok = _exchange(port, _request(port, f"/callback?code={CODE}&state={STATE}"))
        assert _status(ok) == 200
        result = server.wait_for_callback(timeout=20)
    assert result.code == CODE and result.state == STATE
    rejected = [r for r in caplog.records if "rejected callback" in r.getMessage()]
    assert len(rejected) == 5
    assert [r.levelno for r in rejected] == [logging.WARNING] + [logging.DEBUG] * 4
    for value in [*FORGED_VALUES, STATE, CODE]:
        assert value not in caplog.text


def test_a_login_that_times_out_after_forged_callbacks_says_so() -> None:
    with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE) as server:
        assert len(_forge(server.port, STATE)) == 5
        with pytest.raises(CallbackTimeout) as info:
            server.wait_for_callback(timeout=0.2)
    message = str(info.value)
    assert "5 callback(s) with a wrong or missing state were rejected" in message
    for value in [*FORGED_VALUES, STATE]:
        assert value not in message


@pytest.mark.parametrize("target", ["//callback", "///callback", "/callback/", "/Callback",
                                    "/callback/.", "/./callback", "/%63allback"])
def test_only_the_exact_callback_path_completes_the_flow(target: str) -> None:
    with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE) as server:
        port = server.port
        reply = _exchange(port, _request(port, f"{target}?code=evil&state={STATE}"))
        assert _status(reply) == 404
        with pytest.raises(CallbackTimeout):
            server.wait_for_callback(timeout=0.1)
        reply = _exchange(port, _request(port, f"/callback?code={CODE}&state={STATE}"))
        assert _status(reply) == 200
        assert server.wait_for_callback(timeout=20).code == CODE


def test_a_state_set_after_construction_ignores_forged_callbacks_too() -> None:
    """The MCP provider learns the state from the SDK's authorization URL: expect_state."""
    with CallbackServer(host="127.0.0.1", port=0) as server:
        server.expect_state(STATE)
        port = server.port
        assert _forge(port, STATE) == ["400 True"] * 5  # before any wait: still ignored
        ok = _exchange(port, _request(port, f"/callback?code={CODE}&state={STATE}"))
        assert _status(ok) == 200
        assert server.wait_for_callback(timeout=20).code == CODE


def test_mcp_login_survives_a_forged_callback_before_the_real_one(tmp_path: Path) -> None:
    pytest.importorskip("mcp", reason="the mcp extra needs Python 3.11+; CI installs it")
    import asyncio

    from oauth_callback.mcp import browser_auth

    from .mcp_server import AuthMCPServer, call_echo, follow_authorize

    def browser(url: str) -> None:
        redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
        port = urlsplit(redirect).port
        assert port is not None
        assert _forge(port, "-" * 8) == ["400 True"] * 5  # another user, first
        follow_authorize(url)

    server = AuthMCPServer().start()
    try:
        auth = browser_auth(server.url, store=FileStore(tmp_path / "tokens.json"),
                            open_browser=browser, timeout=30.0)
        text = asyncio.run(asyncio.wait_for(call_echo(server.url, auth), 60))
    finally:
        server.stop()
    assert text == "echo: hi"


def test_an_oversized_request_head_gets_431_and_the_flow_goes_on() -> None:
    with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE) as server:
        port = server.port
        start = f"GET /callback?code=evil&state={STATE} HTTP/1.1\r\nX-Fill: ".encode()
        # One byte over the 64 KiB limit, and no end of head: the server answers only
        # once it has read every byte (so its close resets nothing unread).
        huge = start + b"f" * (65_537 - len(start))
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(huge)
            reply = _read_all(sock)
        assert _status(reply) == 431
        ok = _exchange(port, _request(port, f"/callback?code={CODE}&state={STATE}"))
        assert _status(ok) == 200
        assert server.wait_for_callback(timeout=20).code == CODE
