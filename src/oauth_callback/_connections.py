"""The loopback server's connection handling: one thread, one selector, many sockets.

Any local process can see the callback port (``/proc/net/tcp``) and connect
to it. :class:`ConnectionLoop` keeps such a process from blocking the real
redirect. Every listening socket and every connection is non-blocking and
registered with one :mod:`selectors` selector, so thousands of idle or
trickling connections cost a small buffer each, not a thread each.

Guarantees (numbered as the tests refer to them):

1. **One deadline per connection**: the whole exchange (request head read,
   response written) must finish within ``deadline`` seconds of the accept.
   A client trickling a byte every few seconds is closed at its deadline (a
   per-read timeout would never fire for it).
2. **Complete requests first**: a request head is handled as soon as its
   last byte is read, whatever else is open; a new connection is read at once
   on accept (and on Linux, ``TCP_DEFER_ACCEPT`` hands connections over only
   once their first bytes arrived), so a browser's request, sent whole right
   after connecting, is answered before the connection could be evicted.
3. **Room for a newcomer**: at ``max_connections`` open connections (or when
   the process runs out of file descriptors), accepting another closes the
   oldest one that is not *protected* (the connection that completed the flow,
   while its page goes out), and only one newcomer is taken before the next
   round of reads. A flood of slow connections therefore cannot keep a
   well-formed request out: every new connection is read before it is old.
4. **Quiet under a flood**: dropped connections are counted; the first
   eviction, and the 16th deadline drop, are logged at WARNING, every other at
   DEBUG, and :meth:`ConnectionLoop.close` logs one summary.

The handler runs in the loop thread and must not block: it gets the raw
request head (request line and headers, up to ``max_head`` bytes) and returns
the complete response as a :class:`Reply`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._log import get_logger

__all__ = ["ConnectionLoop", "Reply", "fd_budget"]

logger = get_logger("oauth_callback.loopback")

_T = TypeVar("_T")
_RECV_SIZE = 65536
_ACCEPTS_PER_WAKE = 64  # accepts per readiness event: one listener cannot starve the rest
_PAUSE_ON_EMFILE = 0.05  # seconds without accepting when no descriptor can be freed
_WARN_AFTER_TIMEOUTS = 16  # deadline drops before one warning (a browser may leave one idle)
_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def fd_budget(wanted: int) -> int:
    """``wanted`` connections, or fewer when the descriptor limit is lower (a quarter of it)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return wanted
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return wanted
    return max(8, min(wanted, soft // 4))


@dataclass(frozen=True)
class Reply:
    """The response to one request: ``data`` is sent, then the connection is closed.

    ``on_done`` runs in the loop thread once the connection is finished (the
    response sent, or the connection failed or hit its deadline); ``protect``
    keeps the connection from being evicted while the response goes out.
    """

    data: bytes
    on_done: Callable[[], None] | None = None
    protect: bool = False


class _Connection:
    __slots__ = ("address", "buffer", "deadline", "on_done", "out", "protected", "scanned",
                 "sock", "writing")

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.deadline = deadline
        self.buffer = bytearray()
        self.scanned = 0  # bytes of ``buffer`` already searched for the end of the head
        self.out = memoryview(b"")
        self.on_done: Callable[[], None] | None = None
        self.protected = False
        self.writing = False


def _head_end(buffer: bytearray, start: int) -> int:
    """Index just past the blank line ending the head (CRLF or bare LF, as the stdlib
    parser accepts), searching from ``start``; -1 when not there yet."""
    ends = []
    crlf = buffer.find(b"\n\r\n", start)
    if crlf >= 0:
        ends.append(crlf + 3)
    lf = buffer.find(b"\n\n", start)
    if lf >= 0:
        ends.append(lf + 2)
    return min(ends) if ends else -1


class ConnectionLoop:
    """Serve ``listeners`` in one daemon thread; see the module docstring."""

    def __init__(
        self,
        listeners: list[socket.socket],
        handle: Callable[[bytes, Any], Reply],
        *,
        deadline: float,
        max_connections: int,
        max_head: int,
        too_large: bytes,
        name: str,
    ) -> None:
        self._listeners = list(listeners)
        self._handle = handle
        self._deadline = deadline
        self._max = max(1, max_connections)
        self._max_head = max_head
        self._too_large = too_large
        self._name = name
        self._selector = selectors.DefaultSelector()
        # Insertion order is accept order, hence deadline order: the oldest first.
        self._connections: dict[int, _Connection] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop_accepting = threading.Event()
        self._closing = threading.Event()
        self._accepting = False
        self._paused_until = 0.0
        self._thread: threading.Thread | None = None
        self.timed_out = 0
        self.evicted = 0
        self._warned_eviction = False
        self._warned_timeouts = False

    # -- control (any thread)

    def start(self) -> None:
        defer = getattr(socket, "TCP_DEFER_ACCEPT", None)
        if defer is not None:  # Linux: hand over a connection once its first bytes are in
            for sock in self._listeners:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, defer, max(1, math.ceil(self._deadline)))
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._register_listeners()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop_accepting(self) -> None:
        """Close the listening sockets (new connections are refused); open ones stay."""
        self._stop_accepting.set()
        self._wake()

    def close(self, timeout: float = 5.0) -> None:
        """Stop, close every socket and join the thread. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread is None:
            self._shutdown()
        self._wake_w.close()
        dropped = self.timed_out + self.evicted
        level = logging.WARNING if self._warned_eviction or self._warned_timeouts else logging.DEBUG
        if dropped:
            logger.log(
                level,
                "callback server dropped %d connection(s): %d sent no complete request within "
                "%g s, %d closed to make room while full",
                dropped, self.timed_out, self._deadline, self.evicted,
            )

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    # -- the loop (its own thread)

    def _run(self) -> None:
        try:
            while not self._closing.is_set():
                if self._stop_accepting.is_set() and self._listeners:
                    self._close_listeners()
                now = time.monotonic()
                if not self._accepting and self._listeners and now >= self._paused_until:
                    self._register_listeners()
                for key, mask in self._selector.select(self._select_timeout(now)):
                    data = key.data
                    if data is None:
                        self._drain_wake()
                    elif isinstance(data, _Connection):
                        if data.writing:
                            self._write(data)
                        elif mask & selectors.EVENT_READ:
                            self._read(data)
                    elif self._accepting and not self._stop_accepting.is_set():
                        self._accept(key.fileobj)  # type: ignore[arg-type]
                self._expire(time.monotonic())
        except Exception:  # pragma: no cover - a bug; never let a waiter hang silently
            logger.exception("callback server connection loop failed")
        finally:
            self._shutdown()

    def _select_timeout(self, now: float) -> float | None:
        timeouts = []
        if self._connections:
            oldest = next(iter(self._connections.values()))
            timeouts.append(max(0.0, oldest.deadline - now))
        if not self._accepting and self._listeners:
            timeouts.append(max(0.0, self._paused_until - now))
        return min(timeouts) if timeouts else None

    def _register_listeners(self) -> None:
        for sock in self._listeners:
            self._selector.register(sock, selectors.EVENT_READ, sock)
        self._accepting = True

    def _unregister_listeners(self) -> None:
        if self._accepting:
            for sock in self._listeners:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(sock)
        self._accepting = False

    def _close_listeners(self) -> None:
        self._unregister_listeners()
        for sock in self._listeners:
            sock.close()
        self._listeners = []

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass

    def _accept(self, listener: socket.socket) -> None:
        # When full, one newcomer per wake-up: each eviction is followed by a
        # round of reads, so a flood of connects cannot evict a newcomer whose
        # request is already waiting to be read.
        batch = 1 if len(self._connections) >= self._max else _ACCEPTS_PER_WAKE
        for _ in range(batch):
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS and self._evict_oldest("out of descriptors"):
                    continue  # one descriptor freed: take the newcomer
                logger.debug("accept failed: %s", exc.strerror or type(exc).__name__)
                self._unregister_listeners()  # back off instead of spinning
                self._paused_until = time.monotonic() + _PAUSE_ON_EMFILE
                return
            if len(self._connections) >= self._max and not self._evict_oldest("full"):
                sock.close()  # every open connection is protected (cannot happen: one is)
                continue
            sock.setblocking(False)
            conn = _Connection(sock, address, time.monotonic() + self._deadline)
            self._connections[sock.fileno()] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._read(conn)  # a request already there is handled before any eviction

    def _socket_call(self, conn: _Connection, call: Callable[[], _T], ended: str) -> _T | None:
        """``call()`` on ``conn``'s non-blocking socket; ``None`` when it would block (the
        selector calls again) or failed (logged as ``ended``, the connection finished)."""
        try:
            return call()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            logger.debug("%s: %s", ended, type(exc).__name__)
            self._finish(conn)
            return None

    def _read(self, conn: _Connection) -> None:
        data = self._socket_call(conn, lambda: conn.sock.recv(_RECV_SIZE), "connection ended")
        if data is None:
            return
        if not data:  # the client went away before sending a complete request
            self._finish(conn)
            return
        conn.buffer += data
        end = _head_end(conn.buffer, max(0, conn.scanned - 2))
        conn.scanned = len(conn.buffer)
        if end < 0:
            if len(conn.buffer) > self._max_head:
                self._respond(conn, Reply(self._too_large))
            return
        head = bytes(conn.buffer[:end])
        conn.buffer = bytearray()
        try:
            reply = self._handle(head, conn.address)
        except Exception as exc:  # a handler bug must not stop the server
            logger.debug("request handler failed: %s", type(exc).__name__)
            self._finish(conn)
            return
        self._respond(conn, reply)

    def _respond(self, conn: _Connection, reply: Reply) -> None:
        conn.writing = True
        conn.out = memoryview(reply.data)
        conn.on_done = reply.on_done
        conn.protected = reply.protect
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        sent = self._socket_call(
            conn, lambda: conn.sock.send(conn.out), "connection ended while answering"
        )
        if sent is None:
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_WR)
            self._finish(conn)

    def _finish(self, conn: _Connection) -> None:
        self._forget(conn)
        if conn.on_done is not None:
            callback, conn.on_done = conn.on_done, None
            try:
                callback()
            except Exception:  # pragma: no cover - a bug in our own callback
                logger.exception("callback server completion failed")

    def _forget(self, conn: _Connection) -> None:
        self._connections.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _expire(self, now: float) -> None:
        while self._connections:
            oldest = next(iter(self._connections.values()))
            if oldest.deadline > now:
                return
            if not oldest.writing:
                self.timed_out += 1
                warn = self.timed_out >= _WARN_AFTER_TIMEOUTS and not self._warned_timeouts
                self._warned_timeouts = self._warned_timeouts or warn
                logger.log(
                    logging.WARNING if warn else logging.DEBUG,
                    "%d connection(s) to the callback server sent no complete request within "
                    "%g s and were closed; another local process may be holding connections open",
                    self.timed_out, self._deadline,
                )
            self._finish(oldest)

    def _evict_oldest(self, why: str) -> bool:
        for conn in self._connections.values():
            if not conn.protected:
                break
        else:
            return False
        self.evicted += 1
        warn = not self._warned_eviction
        self._warned_eviction = True
        logger.log(
            logging.WARNING if warn else logging.DEBUG,
            "callback server %s with %d open connection(s): closing the oldest to make room "
            "(another local process may be flooding it; the real callback still gets through)",
            "full" if why == "full" else "out of file descriptors", len(self._connections),
        )
        self._finish(conn)
        return True

    def _shutdown(self) -> None:
        for conn in list(self._connections.values()):
            self._forget(conn)
        for sock in self._listeners:
            sock.close()
        self._listeners = []
        with contextlib.suppress(OSError):
            self._wake_r.close()
        with contextlib.suppress(Exception):
            self._selector.close()
