"""Loopback server checks no other test pinned: a request head whose end arrives split
across reads (CRLF and bare LF), and TCP_DEFER_ACCEPT on every listener.

Real sockets on 127.0.0.1; each test fails when the check it names is deleted from
oauth_callback._connections."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from oauth_callback.loopback import CallbackServer

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
