"""RedisStore through Sentinel: a real primary, a replica and three Sentinels started here.

What a planned failover (``SENTINEL FAILOVER``) may do to the promise, tested:
acknowledged writes survive it, and a refresh storm across it never presents one
refresh token twice (docs/redis.md states the guarantee and what remains).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .redis_server import RedisSentinelSet, prefix_for, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'oauth-callback[redis]')")

from oauth_callback import StoreLockTimeout, Tokens  # noqa: E402
from oauth_callback.storage.redis import RedisStore  # noqa: E402
from oauth_callback.storage.url import open_store  # noqa: E402
from oauth_callback.testing import MockProvider  # noqa: E402

from .conftest import python_env  # noqa: E402


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelSet]:
    group = RedisSentinelSet(tmp_path_factory.mktemp("sentinel"))
    try:
        group.start()
        yield group
    finally:
        group.stop()


def wait_until(predicate: object, timeout: float = 60.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def test_sentinel_urls(sentinels: RedisSentinelSet, tmp_path: Path) -> None:
    store = open_store(sentinels.url_for(prefix_for(tmp_path)))
    assert isinstance(store, RedisStore) and store.kind == "sentinel"
    assert store.replicas == 1  # WAIT for the replica by default behind Sentinel
    hosts = ",".join(f"127.0.0.1:{p}" for p in sentinels.sentinel_ports)
    assert store.describe() == f"Redis sentinel {hosts}/oc/0 (prefix {prefix_for(tmp_path)})"
    store.set("k", Tokens("at"))
    primary = sentinels.current_primary()
    assert primary.client().exists(store.redis_key("tokens", "k"))
    replica = next(s for s in sentinels.servers if s is not primary)
    assert replica.client().exists(store.redis_key("tokens", "k"))  # acknowledged there
    other_db = open_store(f"{sentinels.url}/3?prefix={prefix_for(tmp_path)}&replicas=0")
    assert other_db.get("k") is None and other_db.describe().endswith(f"/oc/3 (prefix {prefix_for(tmp_path)})")  # type: ignore[attr-defined]
    for bad, why in [
        (f"redis+sentinel://127.0.0.1:{sentinels.sentinel_ports[0]}", "names no service"),
        (f"redis+sentinel://127.0.0.1:{sentinels.sentinel_ports[0]}/oc/x", "whole number"),
        (f"{sentinels.url}?replicas=-1", "whole number"),
        (f"{sentinels.url}?bogus=1", "unknown parameter 'bogus'"),
    ]:
        with pytest.raises(ValueError, match=why):
            open_store(bad)
    secret = open_store("redis+sentinel://u:hunter2@h:1/svc?sentinel_password=hunter3")
    assert "hunter" not in repr(secret) and "hunter" not in secret.describe()
    with pytest.raises(ValueError) as info:
        open_store("redis+sentinel://u:hunter2@h:1/svc?sentinel_password=hunter3&x=1")
    assert "hunter" not in str(info.value)


def test_unacknowledged_lock_is_not_taken(sentinels: RedisSentinelSet, tmp_path: Path) -> None:
    """With more replicas required than exist, the lock is given back, never held."""
    store = RedisStore(sentinels.url_for(prefix_for(tmp_path)), replicas=2, replicas_timeout=0.1)
    with pytest.raises(StoreLockTimeout, match="not acknowledged by 2 replicas"):
        with store.refresh_lock("k", timeout=0.5):
            pytest.fail("held a lock only the primary knows")
    assert not sentinels.current_primary().client().exists(store.redis_key("refresh-lock", "k"))


def test_unacknowledged_write_raises_after_retrying(sentinels: RedisSentinelSet, tmp_path: Path) -> None:
    from oauth_callback import StoreUnavailableError

    store = RedisStore(sentinels.url_for(prefix_for(tmp_path)), replicas=2,
                       replicas_timeout=0.05, retry_timeout=0.3)
    with pytest.raises(StoreUnavailableError, match="acknowledged by 1 of the 2 replicas"):
        store.set("k", Tokens("at"))
    # it reached the primary (and its one replica): the error says it may be lost
    assert RedisStore(sentinels.url_for(prefix_for(tmp_path)), replicas=0).get("k") == Tokens("at")


WRITER = """
import sys, os
from oauth_callback.storage.url import open_store
from oauth_callback import StoreError, Tokens
store = open_store(sys.argv[1])
stop, worker = sys.argv[2], sys.argv[3]
n = errors = 0
while not os.path.exists(stop):
    key = f"w{worker}-{n}"
    n += 1
    try:
        store.set(key, Tokens("at-" + key, refresh_token="rt-" + key))
    except StoreError as exc:
        errors += 1
        print("error", type(exc).__name__, exc, file=sys.stderr, flush=True)
        continue
    print(key, flush=True)
print("errors", errors, file=sys.stderr, flush=True)
"""


@pytest.mark.slow
def test_acknowledged_writes_survive_a_planned_failover(
    sentinels: RedisSentinelSet, tmp_path: Path
) -> None:
    url = sentinels.url_for(prefix_for(tmp_path))
    store = open_store(url)
    stop = tmp_path / "stop"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(stop), str(i)], env=python_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    try:
        wait_until(lambda: len(store.keys()) >= 30)
        old = sentinels.current_primary()
        new = sentinels.failover()  # mid-run
        assert new is not old and sentinels.current_primary() is new
        after = len(store.keys())
        wait_until(lambda: len(store.keys()) >= after + 30)  # writing on through the new primary
        stop.touch()
        outputs = [w.communicate(timeout=60) for w in writers]
    finally:
        stop.touch()
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()
    acknowledged = [line for out, _ in outputs for line in out.split()]
    assert all(w.returncode == 0 for w in writers), [err[-2000:] for _, err in outputs]
    assert len(acknowledged) >= 60
    fresh = open_store(url)  # asks the Sentinels: the new primary
    stored = set(fresh.keys())
    missing = [key for key in acknowledged if key not in stored]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    for key in acknowledged[:: max(1, len(acknowledged) // 50)]:
        assert fresh.get(key) == Tokens("at-" + key, refresh_token="rt-" + key)
    direct = new.client()
    assert all(direct.exists(fresh.redis_key("tokens", k)) for k in acknowledged[-10:])


STORM = textwrap.dedent(
    """
    import os, sys, time
    from oauth_callback import StoreError, ReauthRequired
    from oauth_callback.manager import TokenManager
    from oauth_callback.storage.redis import RedisStore

    url, key, stop, ready = sys.argv[1:5]
    # The default lease (30 s): a planned failover takes ~10 s (more on a loaded
    # machine) during which a holder's renewals reach only the old primary, so a
    # lease shorter than that lapses on the new one (docs/redis.md, assumption 3).
    store = RedisStore(url)
    store.get(key)
    manager = TokenManager(store, key, skew=0, lock_timeout=60)
    open(ready, "w").close()
    calls = errors = 0
    while not os.path.exists(stop):
        try:
            manager.access_token()
            calls += 1
        except ReauthRequired as exc:
            print("REAUTH", exc, flush=True)
            sys.exit(3)
        except StoreError as exc:  # the failover window: unavailable, not wrong
            errors += 1
            print("error", type(exc).__name__, exc, file=sys.stderr, flush=True)
        time.sleep(0.02)
    print(calls, errors, flush=True)
    """
)


@pytest.mark.slow
def test_refresh_storm_across_a_failover_never_reuses_a_refresh_token(
    sentinels: RedisSentinelSet, tmp_path: Path
) -> None:
    """6 processes x an access token living 1 s, for many refreshes, one failover
    in the middle: every refresh presents a refresh token never presented before."""
    from .test_refresh import KEY, login

    url = sentinels.url_for(prefix_for(tmp_path))
    with MockProvider() as provider:
        store = open_store(url)
        login(provider, store)
        provider.expires_in = 1
        provider.token_delay = 0.1
        store.update(KEY, lambda t: t.replace(expires_at=time.time() - 1) if t else t)
        stop = tmp_path / "stop"
        children = [
            subprocess.Popen(
                [sys.executable, "-c", STORM, url, KEY, str(stop), str(tmp_path / f"ready-{i}")],
                env=python_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for i in range(6)
        ]
        try:
            wait_until(lambda: all((tmp_path / f"ready-{i}").exists() for i in range(6)))
            wait_until(lambda: provider.refresh_count >= 3)
            sentinels.failover()
            at_failover = provider.refresh_count
            wait_until(lambda: provider.refresh_count >= at_failover + 3
                       or any(c.poll() is not None for c in children))
            stop.touch()
            outputs = [c.communicate(timeout=90) for c in children]
        finally:
            stop.touch()
            for c in children:
                if c.poll() is None:
                    c.kill()
                    c.wait()
        for c, (out, err) in zip(children, outputs):
            assert c.returncode == 0, out + err[-3000:]
        assert provider.reuse_detected == 0
        assert provider.invalid_grant_count == 0
        assert provider.refresh_requests == provider.refresh_count >= 6
        assert sum(int(out.split()[0]) for out, _ in outputs) > 0
        final = open_store(url).get(KEY)
        assert final is not None and provider.is_refresh_token_active(final.refresh_token or "")


def _saved(server: object, store: RedisStore, key: str) -> Tokens | None:
    """The tokens record of ``key`` as ``server`` itself holds it (no Sentinel asked)."""
    direct = RedisStore(server.client(), prefix=store.prefix, replicas=0)  # type: ignore[attr-defined]
    return direct.get(key)


def test_a_save_after_a_failover_reaches_the_new_primary_despite_a_pool_of_stale_connections(
    sentinels: RedisSentinelSet, tmp_path: Path
) -> None:
    """Several pooled connections (threads of a busy process held them at once) were
    opened to the old primary, which the failover turned into a replica (it answers
    READONLY). One save, with no retry by its caller, must land on the new primary.
    Nothing of ours does it: Sentinel demotes a primary with REPLICAOF and CLIENT
    KILL, so redis-py finds the pooled connections closed and reconnects through
    the Sentinels (a connection that survived would get READONLY, on which redis-py's
    Sentinel connection disconnects and its retry asks the Sentinels). This pins
    that redis-py behaviour."""
    store = RedisStore(sentinels.url_for(prefix_for(tmp_path)))
    store.set("k", Tokens("at-1", refresh_token="rt-1"))
    old = sentinels.current_primary()
    pool = store._client.connection_pool
    held = [pool.get_connection() for _ in range(6)]
    assert all(c.port == old.port for c in held)  # connected, to the old primary
    for connection in held:
        pool.release(connection)
    new = sentinels.failover()  # every Sentinel names it; the old primary is its replica
    assert new is not old and not sentinels._is_primary(old)
    with pytest.raises(redis.exceptions.ReadOnlyError):
        old.client().set("probe", "x")
    store.set("k", Tokens("at-2", refresh_token="rt-2"))
    assert _saved(new, store, "k") == Tokens("at-2", refresh_token="rt-2")
    assert store.get("k") == Tokens("at-2", refresh_token="rt-2")


def test_an_unacknowledged_save_after_a_failover_goes_to_the_new_primary(
    tmp_path: Path,
) -> None:
    """Two replicas; the Sentinels promoted one and the other replicates it, but the
    old primary is still a primary (Sentinel demotes it 8 s later) with no replica
    left, and the pool's connections all reach it. A save sent there is written but
    never acknowledged: the next attempt must go to the primary the Sentinels name
    (where the other replica acknowledges it at once), not again to the old one until
    ``retry_timeout`` runs out. The same for the refresh lock (a second store, with
    its own pool): taken on the new primary, not given back and retried on the old
    one until its timeout."""
    group = RedisSentinelSet(tmp_path / "two-replicas", replicas=2)
    try:
        group.start()
        url = group.url_for(prefix_for(tmp_path))
        store, locker = (RedisStore(url, replicas_timeout=0.2, retry_timeout=3.0)
                         for _ in range(2))
        store.set("k", Tokens("at-1", refresh_token="rt-1"))
        old = group.current_primary()
        for pool in (store._client.connection_pool, locker._client.connection_pool):
            held = [pool.get_connection() for _ in range(6)]
            assert all(c.port == old.port for c in held)
            for connection in held:
                pool.release(connection)
        new = group.start_failover()
        wait_until(lambda: group._replicas_online(new) >= 1)  # the other replica follows it
        assert group._is_primary(old)  # not demoted yet: writes there succeed, unreplicated
        with locker.refresh_lock("k", timeout=3.0):
            assert new.client().exists(locker.redis_key("refresh-lock", "k"))
        store.set("k", Tokens("at-2", refresh_token="rt-2"))
        assert group._is_primary(old)  # both went to the new primary, not through READONLY
        assert _saved(new, store, "k") == Tokens("at-2", refresh_token="rt-2")
        assert store.get("k") == Tokens("at-2", refresh_token="rt-2")
        store.close()
        locker.close()
    finally:
        group.stop()
