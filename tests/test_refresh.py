"""TokenManager: coordinated refresh across threads and real processes, faults, retries."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from oauth_callback import (
    FileStore,
    MemoryStore,
    ReauthRequired,
    StoreLockTimeout,
    TokenEndpointError,
    Tokens,
    TokenStore,
)
from oauth_callback.flow import OAuthClient
from oauth_callback.manager import TokenManager
from oauth_callback.storage.url import open_store
from oauth_callback.testing import MockProvider

from .conftest import BACKENDS, PERSISTENT, python_env

KEY = "mock"
WORKERS = 16


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider() as p:
        yield p


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.json"


def _browse(url: str) -> None:
    def run() -> None:
        with httpx2.Client(follow_redirects=True, timeout=10) as http:
            http.get(url)

    threading.Thread(target=run, daemon=True).start()


def login(provider: MockProvider, store: TokenStore, key: str = KEY) -> Tokens:
    """A real loopback login; the store then holds tokens and the client registration."""
    client = OAuthClient.discover(provider.issuer, "test-client")
    return client.login(store, key, open_browser=_browse, timeout=10)


def expire(provider: MockProvider, store: TokenStore, key: str = KEY) -> Tokens:
    """Make the stored access token expired, locally and at the provider."""
    provider.expire_access_tokens()
    tokens = store.update(key, lambda t: t.replace(expires_at=time.time() - 5) if t else t)
    assert tokens is not None and tokens.is_expired()
    return tokens


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    """Wait for a condition (not an assertion on timing: fails only if it never happens)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


# --------------------------------------------------------------------------- basics


def test_valid_token_is_returned_without_refresh(provider: MockProvider, store_path: Path) -> None:
    store = FileStore(store_path)
    tokens = login(provider, store)
    manager = TokenManager(store, KEY)
    assert manager.access_token() == tokens.access_token
    assert manager.tokens() == tokens
    assert provider.refresh_requests == 0


def test_expired_token_refreshed_exactly_once(provider: MockProvider, store_path: Path) -> None:
    store = FileStore(store_path)
    login(provider, store)
    old = expire(provider, store)
    manager = TokenManager(FileStore(store_path), KEY)  # a fresh handle, as a new process
    token = manager.access_token()
    assert token != old.access_token
    assert manager.access_token() == token
    assert TokenManager(store, KEY).access_token() == token
    assert provider.refresh_requests == 1
    stored = store.get(KEY)
    assert stored is not None and stored.access_token == token
    assert stored.refresh_token != old.refresh_token
    assert provider.is_refresh_token_active(stored.refresh_token or "")
    assert provider.is_access_token_active(token)
    assert not stored.is_expired()


def test_memory_store_and_explicit_client(provider: MockProvider) -> None:
    store = MemoryStore()
    login(provider, store)
    store.delete_client(KEY)  # an explicit client does not need the stored one
    expire(provider, store)
    client = OAuthClient("test-client", token_endpoint=provider.token_endpoint)
    assert provider.is_access_token_active(TokenManager(store, KEY, client).access_token())


def test_no_tokens_no_refresh_token_no_client(provider: MockProvider) -> None:
    store = MemoryStore()
    with pytest.raises(ReauthRequired, match="no tokens"):
        TokenManager(store, KEY).access_token()
    store.set(KEY, Tokens("at", None, expires_at=time.time() - 1))
    with pytest.raises(ReauthRequired, match="no refresh token"):
        TokenManager(store, KEY).access_token()
    store.set(KEY, Tokens("at", "rt", expires_at=time.time() - 1))
    with pytest.raises(ReauthRequired, match="client registration") as info:
        TokenManager(store, KEY).access_token()
    assert info.value.key == KEY
    assert provider.token_requests == []


def test_token_without_expiry_is_never_refreshed(provider: MockProvider) -> None:
    store = MemoryStore()
    store.set(KEY, Tokens("at", "rt"))
    assert TokenManager(store, KEY).access_token() == "at"


# --------------------------------------------------------------------------- the storm

STORM_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from oauth_callback.manager import TokenManager
    from oauth_callback.storage.url import open_store

    url, key, barrier, index = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    store = open_store(url)
    store.get(key)  # connect / open before the start signal
    manager = TokenManager(store, key, lock_timeout=30)
    open(os.path.join(barrier, "ready-" + index), "w").close()
    go = os.path.join(barrier, "go")
    while not os.path.exists(go):
        time.sleep(0.001)
    print(manager.access_token(), flush=True)
    """
)


@pytest.mark.parametrize("backend", sorted(PERSISTENT))
def test_refresh_storm_processes(provider: MockProvider, tmp_path: Path, backend: str) -> None:
    """16 processes find the same expired token at once: exactly one refresh request.

    Runs for every persistent backend: file locks for file, sqlite and keyring,
    the Redis lock (SET NX PX with an owner token) for redis.
    """
    BACKENDS[backend](tmp_path)  # sets up what the backend needs (server, keyring)
    url = PERSISTENT[backend](tmp_path)
    store = open_store(url)
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
    for child, (_out, err) in zip(children, outputs):
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
    store.close()


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_refresh_storm_threads(provider: MockProvider, tmp_path: Path, backend: str) -> None:
    """16 threads of one process, half with their own store handle: one refresh request."""
    shared = BACKENDS[backend](tmp_path)
    login(provider, shared)
    old = expire(provider, shared)
    provider.token_delay = 0.3
    barrier = threading.Barrier(WORKERS)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        # Each odd thread its own handle (as separate libraries in one process would).
        own = backend != "memory" and i % 2
        store = BACKENDS[backend](tmp_path) if own else shared
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
    assert not errors
    assert len(results) == WORKERS and len(set(results)) == 1
    assert provider.refresh_requests == 1
    assert provider.invalid_grant_count == 0 and provider.reuse_detected == 0
    stored = shared.get(KEY)
    assert stored is not None and stored.access_token == results[0] != old.access_token
    assert provider.is_refresh_token_active(stored.refresh_token or "")


def test_short_lived_tokens_are_not_refreshed_by_every_waiter(
    provider: MockProvider, store_path: Path
) -> None:
    """Tokens living shorter than ``skew``: waiters still use the one just refreshed."""
    store = FileStore(store_path)
    login(provider, store)
    expire(provider, store)
    provider.expires_in = 30  # < skew=60: 'expired' by the skew as soon as issued
    provider.token_delay = 0.2
    barrier = threading.Barrier(8)
    results: list[str] = []

    def worker() -> None:
        manager = TokenManager(FileStore(store_path), KEY)
        barrier.wait()
        results.append(manager.access_token())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8 and len(set(results)) == 1
    assert provider.refresh_requests == 1


def test_tokens_living_less_than_skew_ten_calls_one_refresh(
    provider: MockProvider, store_path: Path
) -> None:
    """Issue 9 item 10: 20 s tokens against the 60 s skew. The margin is bounded by the
    token's own lifetime (min(skew, lifetime / 2) = 10 s), so the token a refresh
    just brought is used, not refreshed again by each of ten calls."""
    provider.expires_in = 20
    store = FileStore(store_path)
    login(provider, store)
    expire(provider, store)
    assert provider.refresh_requests == 0
    tokens = [TokenManager(FileStore(store_path), KEY).access_token() for _ in range(10)]
    assert provider.refresh_requests == 1
    assert len(set(tokens)) == 1
    stored = store.get(KEY)
    assert stored is not None and stored.lifetime == 20


# --------------------------------------------------------------------------- crashes

LOCK_HOLDER = textwrap.dedent(
    """
    import sys, time
    from oauth_callback import FileStore
    store = FileStore(sys.argv[1])
    with store.refresh_lock(sys.argv[2]):
        print("locked", flush=True)
        time.sleep(120)
    """
)

SLOW_REFRESHER = textwrap.dedent(
    """
    import sys
    from oauth_callback import FileStore
    from oauth_callback.manager import TokenManager
    print(TokenManager(FileStore(sys.argv[1]), sys.argv[2]).access_token(), flush=True)
    """
)


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env(),
    )


def _kill(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=10)


def test_sigkill_of_lock_holder_releases_the_lock(
    provider: MockProvider, store_path: Path
) -> None:
    store = FileStore(store_path)
    login(provider, store)
    old = expire(provider, store)
    child = _spawn(LOCK_HOLDER, str(store_path), KEY)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        result: list[str] = []
        errors: list[BaseException] = []

        def waiter() -> None:
            try:
                result.append(TokenManager(FileStore(store_path), KEY, lock_timeout=10)
                              .access_token())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
        thread.join(0.3)
        # While the (live) child holds the lock nobody refreshes.
        assert thread.is_alive() and provider.refresh_requests == 0
        os.kill(child.pid, signal.SIGKILL)
        thread.join(15)
    finally:
        _kill(child)
    assert child.returncode == -signal.SIGKILL
    assert not errors and len(result) == 1
    assert result[0] != old.access_token and provider.is_access_token_active(result[0])
    assert provider.refresh_requests == 1


def test_lock_timeout_while_another_holds_the_lock(
    provider: MockProvider, store_path: Path
) -> None:
    store = FileStore(store_path)
    login(provider, store)
    expire(provider, store)
    child = _spawn(LOCK_HOLDER, str(store_path), KEY)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockTimeout):
            TokenManager(store, KEY, lock_timeout=0.2).access_token()
    finally:
        _kill(child)
    assert provider.refresh_requests == 0


@pytest.mark.parametrize("rotate", [True, False])
def test_sigkill_during_slow_refresh(store_path: Path, rotate: bool) -> None:
    """The refresher dies after the server processed its refresh, before saving the answer.

    Documented behaviour: the lock is released by the kernel and the next
    caller refreshes with the stored refresh token. Without rotation that
    works. With rotation the stored token was consumed by the lost request:
    the server detects reuse and answers invalid_grant, so the next caller
    gets ReauthRequired promptly (no hang); the tokens are removed, the client
    registration is kept.
    """
    with MockProvider(rotate_refresh_tokens=rotate) as provider:
        store = FileStore(store_path)
        login(provider, store)
        old = expire(provider, store)
        provider.token_delay = 30.0  # the answer would come far too late
        child = _spawn(SLOW_REFRESHER, str(store_path), KEY)
        try:
            wait_until(lambda: provider.refresh_count == 1, timeout=15)  # server processed it
            os.kill(child.pid, signal.SIGKILL)
        finally:
            _kill(child)
        provider.token_delay = 0.0
        manager = TokenManager(FileStore(store_path), KEY, lock_timeout=10)
        if rotate:
            with pytest.raises(ReauthRequired) as info:
                manager.access_token()
            assert info.value.error == "invalid_grant"
            assert provider.reuse_detected == 1
            assert store.get(KEY) is None
            assert store.get_client(KEY) is not None
        else:
            token = manager.access_token()
            assert token != old.access_token and provider.is_access_token_active(token)
            assert provider.refresh_count == 2 and provider.reuse_detected == 0


# --------------------------------------------------------------------------- server answers


def test_invalid_grant_requires_reauth_and_keeps_client(
    provider: MockProvider, store_path: Path
) -> None:
    store = FileStore(store_path)
    login(provider, store)
    expire(provider, store)
    provider.revoke_all()
    with pytest.raises(ReauthRequired) as info:
        TokenManager(store, KEY).access_token()
    assert info.value.error == "invalid_grant" and info.value.key == KEY
    assert store.get(KEY) is None
    assert store.get_client(KEY) is not None
    assert provider.refresh_requests == 1  # invalid_grant is never retried
    with pytest.raises(ReauthRequired, match="no tokens"):
        TokenManager(store, KEY).access_token()


def test_invalid_grant_does_not_delete_tokens_replaced_meanwhile(provider: MockProvider) -> None:
    store = MemoryStore()
    login(provider, store)
    expire(provider, store)
    provider.revoke_all()
    fresh = Tokens("at-new-login", "rt-new-login", expires_at=time.time() + 3600)

    class Relogin(OAuthClient):
        def refresh(self, refresh_token: str, **kwargs: object) -> Tokens:
            try:
                return super().refresh(refresh_token, **kwargs)  # type: ignore[arg-type]
            finally:
                store.set(KEY, fresh)  # a login in another process lands meanwhile

    info = store.get_client(KEY)
    assert info is not None
    client = Relogin("test-client", token_endpoint=provider.token_endpoint)
    with pytest.raises(ReauthRequired):
        TokenManager(store, KEY, client).access_token()
    assert store.get(KEY) == fresh


def test_transient_5xx_is_retried(provider: MockProvider, store_path: Path) -> None:
    store = FileStore(store_path)
    login(provider, store)
    old = expire(provider, store)
    provider.fail_next_token_requests(2, 503)
    token = TokenManager(store, KEY, backoff=0.01).access_token()
    assert provider.refresh_requests == 3 and provider.refresh_count == 1
    assert token != old.access_token and provider.is_access_token_active(token)


def test_exhausted_retries_keep_the_refresh_token(
    provider: MockProvider, store_path: Path
) -> None:
    store = FileStore(store_path)
    login(provider, store)
    old = expire(provider, store)
    provider.fail_next_token_requests(100, 500)
    manager = TokenManager(store, KEY, max_retries=2, backoff=0.01)
    with pytest.raises(TokenEndpointError) as info:
        manager.access_token()
    assert info.value.status_code == 500
    assert provider.refresh_requests == 3
    assert store.get(KEY) == old  # nothing dropped
    assert old.refresh_token is not None and provider.is_refresh_token_active(old.refresh_token)
    provider.fail_next_token_requests(0)
    assert provider.is_access_token_active(manager.access_token())


def test_network_error_is_retried_then_reported(provider: MockProvider, store_path: Path) -> None:
    store = FileStore(store_path)
    login(provider, store)
    old = expire(provider, store)
    provider.stop()
    manager = TokenManager(store, KEY, max_retries=1, backoff=0.01)
    with pytest.raises(TokenEndpointError) as info:
        manager.access_token()
    assert info.value.status_code is None
    assert store.get(KEY) == old
    provider.start()  # same port
    assert provider.is_access_token_active(manager.access_token())
    assert provider.refresh_requests == 1


def test_rate_limited_429_is_retried(provider: MockProvider) -> None:
    store = MemoryStore()
    login(provider, store)
    expire(provider, store)
    provider.fail_next_token_requests(1, 429)
    assert provider.is_access_token_active(TokenManager(store, KEY, backoff=0.01).access_token())
    assert provider.refresh_requests == 2


def test_omitted_refresh_token_keeps_the_old_one(store_path: Path) -> None:
    with MockProvider(omit_refresh_token_on_refresh=True) as provider:
        store = FileStore(store_path)
        login(provider, store)
        old = expire(provider, store)
        token = TokenManager(store, KEY).access_token()
        stored = store.get(KEY)
        assert stored is not None and stored.access_token == token != old.access_token
        assert stored.refresh_token == old.refresh_token
        assert stored.scope == old.scope
        # And it still works for the next refresh.
        expire(provider, store)
        assert provider.is_access_token_active(TokenManager(store, KEY).access_token())
        assert provider.refresh_count == 2


def test_force_refresh_only_once_per_rejected_token(provider: MockProvider) -> None:
    store = MemoryStore()
    tokens = login(provider, store)
    manager = TokenManager(store, KEY)
    first = manager.force_refresh(tokens.access_token)
    second = manager.force_refresh(tokens.access_token)  # someone already did
    assert first == second and provider.refresh_requests == 1


# --------------------------------------------------------------------------- async


@pytest.mark.asyncio
async def test_access_token_async_does_not_block_the_loop(
    provider: MockProvider, store_path: Path
) -> None:
    store = FileStore(store_path)
    await asyncio.to_thread(login, provider, store)
    old = expire(provider, store)
    provider.token_delay = 0.3
    manager = TokenManager(store, KEY)
    task = asyncio.create_task(manager.access_token_async())
    # While the refresh is in flight the loop keeps running other coroutines.
    while provider.refresh_requests == 0:
        await asyncio.sleep(0.005)
    assert not task.done()
    token = await task
    assert token != old.access_token and provider.is_access_token_active(token)
    assert (await manager.tokens_async()).access_token == token
    assert provider.refresh_requests == 1


# --------------------------------------------------------------------------- changes during a refresh


@pytest.mark.parametrize("change", ["login", "logout"])
def test_login_or_logout_during_a_refresh_wins(
    provider: MockProvider, store_path: Path, change: str
) -> None:
    """The refresh writes only if the store still holds exactly what it started from."""
    store = FileStore(store_path)
    login(provider, store)
    old = expire(provider, store)
    provider.rotate_refresh_tokens = False  # the refresh response keeps the same refresh token
    provider.token_delay = 0.5
    outcome: list[object] = []

    def refresh() -> None:
        try:
            outcome.append(TokenManager(store, KEY).tokens())
        except ReauthRequired as exc:
            outcome.append(exc)

    thread = threading.Thread(target=refresh)
    thread.start()
    wait_until(lambda: provider.refresh_requests == 1)  # the request is in flight
    if change == "login":
        newer = old.replace(access_token="from-a-new-login", scope="read write",
                            expires_at=time.time() + 3600)
        store.set(KEY, newer)
    else:
        store.delete(KEY)
    thread.join(10)
    if change == "login":
        assert store.get(KEY) == newer
        assert outcome == [newer]
    else:
        assert store.get(KEY) is None
        assert isinstance(outcome[0], ReauthRequired)


def test_a_failing_save_after_a_refresh_is_retried(provider: MockProvider) -> None:
    """With rotation the old refresh token is spent once the server answered:
    a transient store failure must not throw the new tokens away."""
    from oauth_callback import StoreLockTimeout

    class Flaky(MemoryStore):
        failures = 0

        def _modify(self, section, key, fn):  # type: ignore[no-untyped-def]
            if section == "tokens" and self.failures:
                self.failures -= 1
                raise StoreLockTimeout("injected: store busy")
            return super()._modify(section, key, fn)

    store = Flaky()
    login(provider, store)
    old = expire(provider, store)
    store.failures = 2
    token = TokenManager(store, KEY).access_token()
    stored = store.get(KEY)
    assert stored is not None
    assert stored.access_token == token != old.access_token
    assert provider.refresh_requests == 1
    assert provider.is_refresh_token_active(stored.refresh_token or "")


WAITER_COUNTING_LOCKS = textwrap.dedent(
    """
    import os, sys
    from oauth_callback.errors import StoreLockTimeout
    from oauth_callback.locking import InterProcessLock
    from oauth_callback.manager import TokenManager
    from oauth_callback.storage.url import open_store

    url, key, marks, index = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    taken = []
    original = InterProcessLock.acquire

    def acquire(self, timeout=None):
        # Counts the refresh-lock acquisitions of this process; marks it waiting
        # once an attempt found the lock held (the parent holds it).
        if ".refresh-" not in self.path:
            return original(self, timeout)
        try:
            original(self, timeout=0)
        except StoreLockTimeout:
            open(os.path.join(marks, "waiting-" + index), "w").close()
            if timeout == 0:
                raise
            original(self, timeout)
        taken.append(1)

    InterProcessLock.acquire = acquire
    store = open_store(url)
    token = TokenManager(store, key, lock_timeout=30).access_token()
    print(token, len(taken), flush=True)
    """
)


@pytest.mark.parametrize("backend", ["file", "sqlite"])
def test_waiters_of_a_file_refresh_lock_return_the_new_token_without_taking_it(
    provider: MockProvider, tmp_path: Path, backend: str
) -> None:
    """8 processes wait for the refresh lock while its holder refreshes: on the release
    each sees the token replaced and returns it without taking the lock (no convoy
    through it one at a time only to find the work done) - and there is one refresh."""
    url = PERSISTENT[backend](tmp_path)
    store = open_store(url)
    login(provider, store)
    old = expire(provider, store)
    marks = tmp_path / "marks"
    marks.mkdir()
    children: list[subprocess.Popen[str]] = []
    try:
        with store.refresh_lock(KEY, timeout=30):
            children = [_spawn(WAITER_COUNTING_LOCKS, url, KEY, str(marks), str(i))
                        for i in range(8)]
            wait_until(lambda: len(list(marks.glob("waiting-*"))) == 8, timeout=60)
            # The holder refreshes (re-entering its lock) while all 8 wait.
            new = TokenManager(store, KEY, lock_timeout=30).access_token()
        outputs = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                _kill(child)
    for child, (_out, err) in zip(children, outputs):
        assert child.returncode == 0, err
    results = [out.split() for out, _err in outputs]
    assert new != old.access_token
    assert [token for token, _ in results] == [new] * 8
    assert [int(taken) for _, taken in results] == [0] * 8
    assert provider.refresh_requests == 1
    assert provider.invalid_grant_count == 0 and provider.reuse_detected == 0
    store.close()
