"""The refresh storm of ``test_refresh.py`` on a shared :class:`RedisStore`.

16 real processes (and, separately, 16 threads) find the same expired token
in one Redis store at once. Their ``refresh_lock`` is the Redis lock (``SET NX
PX`` with an owner token), so exactly one refresh request may reach the
provider, which rotates refresh tokens and detects reuse.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from oauth_callback.manager import TokenManager
from oauth_callback.testing import MockProvider

from .conftest import python_env
from .redis_server import session_url, skip_reason
from .test_refresh import expire, login, wait_until

if TYPE_CHECKING:
    from oauth_callback.storage.redis import RedisStore

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

KEY = "mock"
WORKERS = 16

STORM_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from oauth_callback.storage.redis import RedisStore
    from oauth_callback.manager import TokenManager

    url, key, barrier, index = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    store = RedisStore(url)
    store.get(key)  # connect before the start signal
    manager = TokenManager(store, key, lock_timeout=30)
    open(os.path.join(barrier, "ready-" + index), "w").close()
    go = os.path.join(barrier, "go")
    while not os.path.exists(go):
        time.sleep(0.001)
    print(manager.access_token(), flush=True)
    """
)


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider(rotate_refresh_tokens=True) as p:
        yield p


@pytest.fixture
def url(tmp_path: Path) -> str:
    return session_url(tmp_path)  # a prefix private to this test on the session server


def _open(url: str) -> RedisStore:
    from oauth_callback.storage import RedisStore  # redis-py is optional: imported when used

    return RedisStore(url)


def test_refresh_storm_processes(provider: MockProvider, url: str, tmp_path: Path) -> None:
    store = _open(url)
    login(provider, store)
    old = expire(provider, store)
    provider.token_delay = 0.3  # a wide race window
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", STORM_CHILD, url, KEY, str(barrier), str(i)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env(),
        )
        for i in range(WORKERS)
    ]
    try:
        wait_until(lambda: len(list(barrier.glob("ready-*"))) == WORKERS, timeout=30)
        (barrier / "go").touch()
        outputs = [child.communicate(timeout=30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    tokens = {out.strip() for out, _err in outputs}
    assert provider.refresh_requests == 1
    assert provider.refresh_count == 1
    assert provider.invalid_grant_count == 0
    assert provider.reuse_detected == 0
    assert len(tokens) == 1
    (token,) = tokens
    stored = store.get(KEY)
    assert stored is not None and stored.access_token == token != old.access_token
    assert stored.refresh_token != old.refresh_token
    assert provider.is_refresh_token_active(stored.refresh_token or "")
    assert not provider.is_refresh_token_active(old.refresh_token or "")
    assert provider.is_access_token_active(token)
    # Every holder released the lock (compare-and-delete by its owner).
    assert store._client.exists(store.redis_key("refresh-lock", KEY)) == 0
    store.close()


def test_refresh_storm_threads(provider: MockProvider, url: str) -> None:
    shared = _open(url)
    login(provider, shared)
    old = expire(provider, shared)
    provider.token_delay = 0.3
    barrier = threading.Barrier(WORKERS)
    results: list[str] = []
    errors: list[BaseException] = []
    handles = [shared]

    def worker(i: int) -> None:
        # Half the threads share one handle, the others have their own client.
        store = _open(url) if i % 2 else shared
        if store is not shared:
            handles.append(store)
        manager = TokenManager(store, KEY, lock_timeout=30)
        barrier.wait()
        try:
            results.append(manager.access_token())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert not errors
    assert len(results) == WORKERS and len(set(results)) == 1
    assert provider.refresh_requests == 1
    assert provider.invalid_grant_count == 0 and provider.reuse_detected == 0
    stored = shared.get(KEY)
    assert stored is not None and stored.access_token == results[0] != old.access_token
    assert stored.refresh_token != old.refresh_token
    assert provider.is_refresh_token_active(stored.refresh_token or "")
    assert shared._client.exists(shared.redis_key("refresh-lock", KEY)) == 0
    for handle in handles:
        handle.close()
