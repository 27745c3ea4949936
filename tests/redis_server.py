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
            "--repl-diskless-sync-delay", "0",
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


# --------------------------------------------------------------------------- Redis Cluster


def _free_cluster_port() -> int:
    """A port P below 55535 with P and P + 10000 (the cluster bus) free on 127.0.0.1."""
    import random

    for _ in range(200):
        port = random.randrange(20000, 55535)
        try:
            for p in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisCluster:
    """A real Redis Cluster of ``masters`` nodes (no replicas) on 127.0.0.1.

    Each node is a ``redis-server --cluster-enabled yes`` with its own directory;
    ``redis-cli --cluster create`` assigns the 16384 slots. :meth:`move_slot`
    migrates one slot (and its keys) to another node, as a resharding does.
    """

    def __init__(self, directory: str | os.PathLike[str], masters: int = 3) -> None:
        self.directory = Path(directory)
        self.nodes = [
            RedisServer(self.directory / f"node{i}", port=_free_cluster_port(), extra_args=(
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
            ))
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def url_for(self, prefix: str) -> str:
        return f"{self.url}?prefix={prefix}"

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout,
        )
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Wait until every node reports ``cluster_state:ok`` with all slots assigned."""
        deadline = time.monotonic() + timeout
        while not all(self._state_ok(n) for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    @staticmethod
    def _state_ok(node: RedisServer) -> bool:
        try:
            info = node.client().execute_command("CLUSTER", "INFO")
        except Exception:
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and "cluster_slots_assigned:16384" in text

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def node_id(self, node: RedisServer) -> str:
        raw = node.client().execute_command("CLUSTER", "MYID")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def owner_of(self, slot: int) -> RedisServer:
        for start, end, master, *_replicas in self.nodes[0].client().execute_command(
            "CLUSTER", "SLOTS"
        ):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(slot)

    def begin_move(self, slot: int, target: RedisServer) -> RedisServer:
        """Mark ``slot`` importing on ``target``, migrating on its owner (clients get ASK)."""
        source = self.owner_of(slot)
        assert source is not target
        target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))
        return source

    def migrate_keys(self, slot: int, source: RedisServer, target: RedisServer, count: int = 100,
                     keys: list[str] | None = None) -> int:
        """Move ``keys`` (default: up to ``count`` keys of ``slot``) from ``source`` to
        ``target`` (MIGRATE)."""
        if keys is None:
            keys = source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, count)
        if keys:
            source.client().execute_command(
                "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
            )
        return len(keys)

    def end_move(self, slot: int, target: RedisServer) -> None:
        """Give ``slot`` to ``target`` on every node (clients now get MOVED)."""
        target_id = self.node_id(target)
        for node in [target, *(n for n in self.nodes if n is not target)]:
            node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def move_slot(self, slot: int, target: RedisServer) -> None:
        source = self.begin_move(slot, target)
        while self.migrate_keys(slot, source, target):
            pass
        self.end_move(slot, target)


_cluster: RedisCluster | None = None
_cluster_dir: str | None = None


def session_cluster() -> RedisCluster:
    """The test session's shared 3-master cluster, started on first use."""
    global _cluster, _cluster_dir
    require_redis()
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not installed (it comes with redis-server: apt-get install redis-tools)")
    if _cluster is None:
        _cluster_dir = tempfile.mkdtemp(prefix="oauth-callback-redis-cluster-")
        cluster = RedisCluster(_cluster_dir)
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        _cluster = cluster
        atexit.register(stop_session_cluster)
    return _cluster


def stop_session_cluster() -> None:
    global _cluster, _cluster_dir
    if _cluster is not None:
        _cluster.stop()
        _cluster = None
    if _cluster_dir is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(_cluster_dir)
        _cluster_dir = None


def cluster_url(tmp_path: Path) -> str:
    """URL of a store on the session cluster, private to ``tmp_path``."""
    return session_cluster().url_for(prefix_for(tmp_path))


# --------------------------------------------------------------------------- Sentinel


class RedisSentinelSet:
    """A primary, one replica and three Sentinels monitoring them as ``service``.

    :meth:`failover` runs ``SENTINEL FAILOVER`` (a planned failover: the replica
    is promoted, the old primary becomes its replica) and waits until every
    Sentinel names the new primary and it has a replica again.
    """

    def __init__(
        self, directory: str | os.PathLike[str], service: str = "oc", replicas: int = 1
    ) -> None:
        self.directory = Path(directory)
        self.service = service
        self.primary = RedisServer(self.directory / "a")
        self.replicas = [
            RedisServer(self.directory / name, extra_args=(
                "--replicaof", "127.0.0.1", str(self.primary.port),
            ))
            for name in "bcdefgh"[:replicas]
        ]
        self.servers = [self.primary, *self.replicas]
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}"

    def url_for(self, prefix: str) -> str:
        return f"{self.url}?prefix={prefix}"

    def sentinel(self, index: int = 0) -> redis.Redis:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[index], decode_responses=True)

    def start(self, timeout: float = 60.0) -> None:
        assert REDIS_SERVER is not None, skip_reason()
        self.primary.start()
        for replica in self.replicas:
            replica.start()
        self._wait(lambda: self._replicas_online(self.primary) >= len(self.replicas), timeout,
                   "replicas in sync")
        for i, port in enumerate(self.sentinel_ports):
            directory = self.directory / f"sentinel{i}"
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 2000\n"
                f"sentinel failover-timeout {self.service} 10000\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            self.sentinels.append(subprocess.Popen(
                [REDIS_SERVER, str(conf), "--sentinel", "--logfile", str(directory / "log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        self._wait(self._sentinels_ready, timeout, "sentinels know the replica and each other")

    def _sentinels_ready(self) -> bool:
        try:
            for i in range(3):
                s = self.sentinel(i)
                replicas = s.execute_command("SENTINEL", "REPLICAS", self.service)
                if not any("s_down" not in _field(r, "flags") for r in replicas):
                    return False
                if len(s.execute_command("SENTINEL", "SENTINELS", self.service)) < 2:
                    return False
        except Exception:
            return False
        return True

    @staticmethod
    def _replicas_online(server: RedisServer) -> int:
        try:
            info = server.client().info("replication")
        except Exception:
            return 0
        return sum(
            1 for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        )

    @staticmethod
    def _wait(condition: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"Sentinel set: timed out waiting for {what}")
            time.sleep(0.05)

    def current_primary(self) -> RedisServer:
        _host, port = self.sentinel().execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
        )
        return next(s for s in self.servers if s.port == int(port))

    def failover(self, timeout: float = 60.0) -> RedisServer:
        """A planned failover; returns the new primary once the set is whole again."""
        new = self.start_failover(timeout)
        self._wait(lambda: self._replicas_online(new) >= len(self.replicas), timeout,
                   "the old primary to sync")
        return new

    def start_failover(self, timeout: float = 60.0) -> RedisServer:
        """``SENTINEL FAILOVER``; returns the new primary once every Sentinel names it.

        The old primary is then still a primary, accepting writes: Sentinel turns it
        into a replica of the new one only after it reported the old role for 8 s
        (4 Sentinel publish periods), whatever the load."""
        old = self.current_primary()
        self.sentinel().execute_command("SENTINEL", "FAILOVER", self.service)
        named: list[int] = []

        def switched() -> bool:
            named[:] = [self._named_primary(i) for i in range(3)]
            return named[0] not in (0, old.port) and len(set(named)) == 1

        self._wait(switched, timeout, "every Sentinel to name a new primary")
        new = next(s for s in self.servers if s.port == named[0])
        self._wait(lambda: self._is_primary(new), timeout, "the replica's promotion")
        return new

    def _named_primary(self, index: int) -> int:
        try:
            _host, port = self.sentinel(index).execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
            )
            return int(port)
        except Exception:
            return 0

    @staticmethod
    def _is_primary(server: RedisServer) -> bool:
        try:
            return server.client().info("replication").get("role") == "master"
        except Exception:
            return False

    def stop(self) -> None:
        for process in self.sentinels:
            process.terminate()
        for process in self.sentinels:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.sentinels = []
        for server in self.servers:
            server.stop()


def _field(entry: Any, name: str) -> str:
    """A field of a ``SENTINEL REPLICAS`` entry (a flat list or a dict, by redis-py version)."""
    if isinstance(entry, dict):
        return str(entry.get(name, ""))
    items = list(entry)
    for key, value in zip(items[::2], items[1::2]):
        if key == name:
            return str(value)
    return ""
