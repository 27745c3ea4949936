"""Shared fixtures.

``store_factory`` is the registry the contract suite runs against: every
backend registers a factory here, and ``tests/test_store_contract.py`` runs
the whole contract against each of them.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from oauth_callback import FileStore, MemoryStore, TokenStore
from oauth_callback.storage import SQLiteStore

from .browser import _chromium_session, browser  # noqa: F401  (the headless Chromium fixtures)
from .redis_server import cluster_url, session_url, stop_session_cluster, stop_session_server

ROOT = Path(__file__).resolve().parent.parent
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

# name -> (factory(tmp_path) -> store, shared_between_processes)
StoreFactory = Callable[[Path], TokenStore]


def _file_store(tmp_path: Path) -> TokenStore:
    return FileStore(tmp_path / "store" / "tokens.json")


def _file_store_fast(tmp_path: Path) -> TokenStore:
    return FileStore(tmp_path / "store" / "tokens.json", durable=False)


def _sqlite_store(tmp_path: Path) -> TokenStore:
    return SQLiteStore(tmp_path / "store" / "tokens.db")


def _redis_store(tmp_path: Path) -> TokenStore:
    # A private redis-server for the session (tests/redis_server.py); the test
    # is skipped, with the reason, when redis-server or redis-py is missing.
    url = session_url(tmp_path)
    from oauth_callback.storage.redis import RedisStore

    return RedisStore(url)


def _redis_cluster_store(tmp_path: Path) -> TokenStore:
    # A private 3-master Redis Cluster for the session (tests/redis_server.py).
    url = cluster_url(tmp_path)
    from oauth_callback.storage.redis import RedisStore

    return RedisStore(url)


def _keyring_store(tmp_path: Path) -> TokenStore:
    # A file-per-entry keyring backend under tmp_path, shared with child processes
    # through environment variables (tests/test_keyring_store.py).
    pytest.importorskip("keyring")
    from .test_keyring_store import contract_store

    return contract_store(tmp_path)


def _keyring_url(tmp_path: Path) -> str:
    pytest.importorskip("keyring")
    from .test_keyring_store import contract_url

    return contract_url(tmp_path)


# The key of the encrypted backends, in the environment so child processes share it.
ENCRYPTION_KEY_VAR = "OAUTH_CALLBACK_TEST_ENCRYPTION_KEY"
os.environ.setdefault(ENCRYPTION_KEY_VAR, base64.urlsafe_b64encode(os.urandom(32)).decode())
ENCRYPTION_KEY_SOURCE = f"env:{ENCRYPTION_KEY_VAR}"
_ENCRYPTED_MEMORY: dict[Path, MemoryStore] = {}


def _encrypted(inner: Callable[[Path], TokenStore]) -> StoreFactory:
    def factory(tmp_path: Path) -> TokenStore:
        from oauth_callback.storage.encrypted import EncryptedStore

        return EncryptedStore(inner(tmp_path), ENCRYPTION_KEY_SOURCE)

    return factory


def _shared_memory(tmp_path: Path) -> TokenStore:
    # Two handles of one encrypted memory store share the inner MemoryStore (and
    # so test that handles' caches of decrypted records stay coherent).
    return _ENCRYPTED_MEMORY.setdefault(tmp_path, MemoryStore())


BACKENDS: dict[str, StoreFactory] = {
    "memory": lambda tmp_path: MemoryStore(),
    "file": _file_store,
    "file-nondurable": _file_store_fast,
    "sqlite": _sqlite_store,
    "redis": _redis_store,
    "redis-cluster": _redis_cluster_store,
    "keyring": _keyring_store,
    "encrypted-memory": _encrypted(_shared_memory),
    "encrypted-file": _encrypted(_file_store),
    "encrypted-sqlite": _encrypted(_sqlite_store),
    "encrypted-redis": _encrypted(_redis_store),
}
# Backends whose data is shared between processes (URL to reopen in a child).
PERSISTENT: dict[str, Callable[[Path], str]] = {
    "file": lambda tmp_path: f"file:{tmp_path / 'store' / 'tokens.json'}",
    "sqlite": lambda tmp_path: f"sqlite:{tmp_path / 'store' / 'tokens.db'}",
    "redis": session_url,
    "redis-cluster": cluster_url,
    "keyring": _keyring_url,
    "encrypted-file": lambda tmp_path: (
        f"file:{tmp_path / 'store' / 'tokens.json'}?encryption={ENCRYPTION_KEY_SOURCE}"
    ),
    "encrypted-sqlite": lambda tmp_path: (
        f"sqlite:{tmp_path / 'store' / 'tokens.db'}?encryption={ENCRYPTION_KEY_SOURCE}"
    ),
    "encrypted-redis": lambda tmp_path: (
        f"{session_url(tmp_path)}&encryption={ENCRYPTION_KEY_SOURCE}"
    ),
}


@pytest.fixture(scope="session", autouse=True)
def _redis_session_server() -> Iterator[None]:
    """Stop the session's redis-server (started on first use) when the session ends."""
    yield
    stop_session_server()
    stop_session_cluster()


@pytest.fixture(params=sorted(BACKENDS))
def store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    """A factory for each store backend; calling it twice gives two handles on one store."""
    return BACKENDS[request.param]


@pytest.fixture
def store(store_factory: StoreFactory, tmp_path: Path) -> Iterator[TokenStore]:
    s = store_factory(tmp_path)
    yield s
    s.close()


def run_python(code: str, *args: str, timeout: float = 60.0, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (real process) and return the result."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, env=full_env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"child failed ({result.returncode}):\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def cli_env(store_path: Path) -> dict[str, str]:
    """The environment of a CLI child: this checkout's package, the store at
    ``store_path``, and nothing that would open a browser, pick the device flow
    (SSH) or lend a client secret."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["OAUTH_CALLBACK_STORE"] = str(store_path)
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER", "OAUTH_CALLBACK_CLIENT_SECRET",
                 "SSH_CONNECTION", "SSH_TTY", "SSH_CLIENT"):
        e.pop(name, None)
    return e


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


requires_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (CI runs as root)")
requires_strace = pytest.mark.skipif(
    shutil.which("strace") is None, reason="needs strace (CI installs it with apt-get)"
)


@contextlib.contextmanager
def sigint_delivered() -> Iterator[None]:
    """Children started inside get Python's Ctrl-C handling (KeyboardInterrupt).

    A process started with SIGINT ignored keeps it ignored across ``exec``, and
    Python then installs no KeyboardInterrupt handler: a test run in the
    background by a shell without job control (``pytest &``, CI runners, many
    parallel runs under load) would spawn CLI children that ignore the SIGINT a
    test sends, and wait for their timeout. A handler installed here is reset to
    the default by ``exec``, so the child handles SIGINT. Main thread only.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the MCP conformance table (ours vs. the bare SDK) when it ran."""
    module = sys.modules.get("tests.test_conformance")
    results = getattr(module, "RESULTS", None)
    if not results:
        return
    write = terminalreporter.write_line
    write("")
    write("MCP conformance (@modelcontextprotocol/conformance): ours vs. bare SDK")
    for scenario, r in results.items():
        write(f"  {scenario:<45} ours: {r['ours']:<16} sdk: {r['sdk']}")
    ours = sum(r["ours"].startswith("pass") for r in results.values())
    sdk = sum(r["sdk"].startswith("pass") for r in results.values())
    write(f"MCP conformance summary: ours passed {ours}/{len(results)}, bare SDK passed {sdk}/{len(results)}")
