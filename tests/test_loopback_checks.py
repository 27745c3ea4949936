"""Loopback server checks no other test pinned: a request head whose end arrives split
across reads (CRLF and bare LF), TCP_DEFER_ACCEPT on every listener, and the three
rules that keep a full connection table from shutting the real callback out
(guarantees 2 and 3 of oauth_callback._connections): a request already in the buffer
is read right after the accept, a full table takes one newcomer per wake-up, and the
connection that completed the flow is protected while its page goes out.

Real sockets on 127.0.0.1; each test fails when the check it names is deleted from
oauth_callback._connections (or ``protect=True`` from oauth_callback.loopback)."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from oauth_callback import loopback
from oauth_callback.loopback import CallbackServer, RequestInfo

pytestmark = pytest.mark.timeout(60)

CODE = "real-code-0123456789"
STATE = "real-state-0123456789"


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
@pytest.mark.parametrize("cut", [1, 2, 3])
def test_a_head_whose_blank_line_arrives_in_two_reads_is_answered(eol: bytes, cut: int) -> None:
    """The end of the head (``\\n\\r\\n`` or ``\\n\\n``) is looked for across the boundary
    of two reads: the bytes already scanned are searched again from two before."""
    with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE) as server:
        head = (f"GET /callback?code={CODE}&state={STATE} HTTP/1.1".encode() + eol
                + f"Host: 127.0.0.1:{server.port}".encode() + eol + eol)
        first, rest = head[:-cut], head[-cut:]
        with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(first)
            # Give the server its read of the first part (the test passes either way
            # when the check is there; the pause only makes the split reach the server).
            time.sleep(0.2)
            sock.sendall(rest)
            reply = _read_all(sock)
        assert reply.split(b"\r\n", 1)[0].split()[1] == b"200"
        assert server.wait_for_callback(timeout=20).code == CODE


@pytest.mark.skipif(not sys.platform.startswith("linux") or
                    not hasattr(socket, "TCP_DEFER_ACCEPT"), reason="TCP_DEFER_ACCEPT is Linux's")
def test_every_listener_defers_accept_until_bytes_arrive() -> None:
    """A connection that sends nothing is never handed to the server (Linux)."""
    with CallbackServer(host="localhost", port=0, expected_state=STATE) as server:
        listeners = server._loop._listeners  # type: ignore[union-attr]
        assert listeners
        for sock in listeners:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) >= 1


# --------------------------------------------------------------------------- a full table

MAX = 8  # connections the server holds in these tests (loopback._MAX_CONNECTIONS)
FLOOD = 12  # newcomers queued at once: more than MAX, so a batch of accepts evicts all


def _wait_until(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


class _Pause:
    """Holds the server's loop thread inside the handling of a ``GET /pause`` (the
    ``on_request`` hook runs in that thread), so the test can line up connections in
    the kernel (backlog and receive buffers) that the loop then finds all at once."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()

    def on_request(self, info: RequestInfo) -> None:
        if info.path == "/pause":
            self.reached.set()
            self.go.wait(60)


class _PauseAtFirstEviction(logging.Handler):
    """Holds the loop thread at its first eviction (logged at WARNING from inside
    the accept), for the same purpose."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reached = threading.Event()
        self.go = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "closing the oldest" in record.getMessage() and not self.reached.is_set():
            self.reached.set()
            self.go.wait(60)


@contextlib.contextmanager
def _small_server(monkeypatch: pytest.MonkeyPatch, **kwargs: object) -> Iterator[CallbackServer]:
    monkeypatch.setattr(loopback, "_MAX_CONNECTIONS", MAX)
    with CallbackServer(host="127.0.0.1", port=0, expected_state=STATE,
                        connection_timeout=120, **kwargs) as server:  # type: ignore[arg-type]
        assert server._loop is not None and server._loop._max == MAX
        yield server


class _Clients:
    """The test's client sockets, all closed at the end."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.socks: list[socket.socket] = []

    def open(self, data: bytes, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socks.append(sock)
        if rcvbuf is not None:  # before connect: no window auto-tuning
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(data)
        return sock

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


def _idle(port: int) -> bytes:
    """The start of a request head that never ends (an idle or trickling client)."""
    return b"GET /slow HTTP/1.1\r\n"


def _callback_head(port: int) -> bytes:
    return (f"GET /callback?code={CODE}&state={STATE} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\n\r\n").encode()


def _pause_head(port: int) -> bytes:
    return f"GET /pause HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def _closed_by_server(sock: socket.socket) -> bool:
    """Wait (up to the socket's timeout) for the server to close ``sock``."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _response(sock: socket.socket) -> tuple[int, bytes, int]:
    """Status, body and Content-Length of the whole response on ``sock``."""
    try:
        reply = _read_all(sock)
    except ConnectionResetError:
        reply = b""  # closed by the server with the request unread
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head, "the server closed the connection without answering"
    lines = head.split(b"\r\n")
    length = next(int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                  if k.strip().lower() == b"content-length")
    return int(lines[0].split()[1]), body, length


def test_a_request_already_in_the_buffer_is_read_right_after_the_accept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guarantee 2: the real callback arrives with a burst of new connections while
    the table has room. Read at its accept, it is answered before the burst fills the
    table; read only on a later wake-up, it would be evicted as the oldest first."""
    pause = _Pause()
    with _small_server(monkeypatch, on_request=pause.on_request) as server:
        loop, clients = server._loop, _Clients(server.port)
        assert loop is not None
        try:
            for n in range(MAX - 2):
                clients.open(_idle(server.port))
                _wait_until(lambda n=n: loop.open_connections == n + 1, "the idle connections")
            clients.open(_pause_head(server.port))
            assert pause.reached.wait(30)
            # The loop thread is held: the callback and the burst queue up behind it.
            real = clients.open(_callback_head(server.port))
            flood = [clients.open(b"G") for _ in range(FLOOD)]
            pause.go.set()
            status, _body, _length = _response(real)
            assert status == 200
            assert server.wait_for_callback(timeout=30).code == CODE
            assert flood
        finally:
            pause.go.set()
            clients.close()


def test_a_full_table_takes_one_newcomer_per_wake_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guarantee 3: the real callback's connection is open (its first bytes read) in a
    full table when the rest of its request and a burst of connects arrive together.
    One accept (and one eviction) per wake-up gives its read a turn before the burst
    makes it the oldest; taking the whole burst at once would evict it unread."""
    pause = _PauseAtFirstEviction()
    log = logging.getLogger("oauth_callback.loopback")
    log.addHandler(pause)
    try:
        with _small_server(monkeypatch) as server:
            loop, clients = server._loop, _Clients(server.port)
            assert loop is not None
            try:
                for n in range(MAX - 1):
                    clients.open(_idle(server.port))
                    _wait_until(lambda n=n: loop.open_connections == n + 1, "the idle connections")
                head = _callback_head(server.port)
                cut = head.index(b"Host:")
                real = clients.open(head[:cut])  # the first part: read at its accept
                _wait_until(lambda: loop.open_connections == MAX, "a full table")
                clients.open(b"G")  # one more: the loop evicts the oldest, and is held there
                assert pause.reached.wait(30)
                real.sendall(head[cut:])  # the rest of the real request is in its buffer
                flood = [clients.open(b"G") for _ in range(FLOOD)]
                pause.go.set()
                status, _body, _length = _response(real)
                assert status == 200
                assert server.wait_for_callback(timeout=30).code == CODE
                assert flood
            finally:
                pause.go.set()
                clients.close()
    finally:
        log.removeHandler(pause)


def test_the_connection_that_completed_the_flow_is_not_evicted_while_its_page_goes_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guarantee 3: the callback's page is still being written (a large page, a slow
    reader) when a burst of connections fills the table: evictions skip it, and the
    browser gets the whole page."""
    page = "<!doctype html><title>done</title>" + "<p>signed in</p>" * (12 * 2**20 // 16)
    pause = _Pause()
    with _small_server(monkeypatch, on_request=pause.on_request, success_html=page) as server:
        loop, clients = server._loop, _Clients(server.port)
        assert loop is not None
        try:
            idle = []
            for n in range(MAX - 2):
                idle.append(clients.open(_idle(server.port)))
                _wait_until(lambda n=n: loop.open_connections == n + 1, "the idle connections")
            clients.open(_pause_head(server.port))
            assert pause.reached.wait(30)
            # A reader with a small window: most of the page waits in the server.
            real = clients.open(_callback_head(server.port), rcvbuf=65536)
            flood = [clients.open(b"G") for _ in range(FLOOD)]
            pause.go.set()
            # The burst went through: every idle connection and the first few of the
            # burst were evicted to make room (the real one, protected, was not).
            for sock in idle + flood[:FLOOD - MAX]:
                assert _closed_by_server(sock), "an eviction did not happen"
            status, body, length = _response(real)
            assert status == 200
            assert length == len(page.encode())
            got = len(body)
            assert got == length, f"the page was cut off after {got} of {length} bytes"
            assert server.wait_for_callback(timeout=30).code == CODE
        finally:
            pause.go.set()
            clients.close()
