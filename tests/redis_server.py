"""Start and stop a private ``redis-server`` for the tests.

Every server listens on 127.0.0.1 on a free port, keeps its data in its own
directory with ``--appendonly yes --appendfsync always`` (an acknowledged
write survives a crash of the server) and never snapshots (``--save ""``).
``KEYS`` is renamed away, so any use of it by the code under test fails.

The session server (:func:`session_server`) is started on first use and
stopped at the end of the test session (``conftest``) or at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import redis

REDIS_SERVER = shutil.which("redis-server")


def skip_reason() -> str | None:
    """Why the Redis tests cannot run here, or ``None`` when they can."""
    if REDIS_SERVER is None:
        return "redis-server is not installed (CI installs it: apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "redis-py is not installed (pip install 'oauth-callback[redis]')"
    return None


def require_redis() -> None:
    """Skip the calling test, with the reason, when Redis tests cannot run."""
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; ``start``/``stop``/``kill`` it as often as needed."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        password: str | None = None,
        extra_args: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.extra_args = extra_args
        self.port = _free_port() if port is None else port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def url_for(self, prefix: str) -> str:
        return f"{self.url}?prefix={prefix}"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain redis-py client of this server."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, **kwargs)

    def start(self, timeout: float = 10.0) -> None:
        assert REDIS_SERVER is not None, skip_reason()
        if self.process is not None and self.process.poll() is None:
            return
        args = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            "--rename-command", "KEYS", "",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout}s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(64)
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server (``SIGTERM``: clean shutdown; ``SIGKILL``: a crash)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Crash the server: ``SIGKILL``, no shutdown work at all."""
        self.stop(signal.SIGKILL)


_session: RedisServer | None = None
_session_dir: str | None = None


def session_server() -> RedisServer:
    """The test session's shared server, started on first use (skips without Redis)."""
    global _session, _session_dir
    require_redis()
    if _session is None:
        _session_dir = tempfile.mkdtemp(prefix="oauth-callback-redis-")
        server = RedisServer(_session_dir)
        server.start()
        _session = server
        atexit.register(stop_session_server)
    return _session


def stop_session_server() -> None:
    """Stop the session server if it was started, and remove its directory."""
    global _session, _session_dir
    if _session is not None:
        _session.stop()
        _session = None
    if _session_dir is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(_session_dir)
        _session_dir = None


def prefix_for(tmp_path: Path) -> str:
    """A key prefix unique to one test directory, so tests sharing the server never meet."""
    return "t-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]


def session_url(tmp_path: Path) -> str:
    """URL of a store on the session server, private to ``tmp_path``."""
    return session_server().url_for(prefix_for(tmp_path))
