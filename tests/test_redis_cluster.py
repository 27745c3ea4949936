"""RedisStore on a real 3-master Redis Cluster started by the tests (tests/redis_server.py).

The contract suite, the 8-process test and the refresh storms run against the
cluster too (``conftest.BACKENDS["redis-cluster"]``); this file covers what is
cluster-specific: slots, keys() over every master, MOVED/ASK and a resharding
while the store is in use.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .redis_server import RedisCluster, prefix_for, session_cluster, skip_reason

pytestmark = [
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
    pytest.mark.skipif(shutil.which("redis-cli") is None,
                       reason="redis-cli is not installed (apt-get install redis-tools)"),
]

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'oauth-callback[redis]')")

from redis.crc import key_slot  # noqa: E402

from oauth_callback import StoreUnavailableError, Tokens  # noqa: E402
from oauth_callback.storage.redis import RedisStore  # noqa: E402
from oauth_callback.storage.url import open_store  # noqa: E402

from .conftest import python_env  # noqa: E402


@pytest.fixture
def cluster() -> RedisCluster:
    return session_cluster()


@pytest.fixture
def url(cluster: RedisCluster, tmp_path: Path) -> str:
    return cluster.url_for(prefix_for(tmp_path))


@pytest.fixture
def store(url: str) -> Iterator[RedisStore]:
    s = RedisStore(url)
    yield s
    s.close()


def slot_of(store: RedisStore, key: str) -> int:
    return key_slot(store.redis_key("tokens", key).encode())


def test_cluster_urls(cluster: RedisCluster, tmp_path: Path) -> None:
    nodes = ",".join(f"127.0.0.1:{n.port}" for n in cluster.nodes)
    s = open_store(f"redis+cluster://{nodes}?prefix={prefix_for(tmp_path)}")
    assert isinstance(s, RedisStore) and s.kind == "cluster"
    assert s.describe() == f"Redis cluster {nodes} (prefix {prefix_for(tmp_path)})"
    s.set("k", Tokens("at"))
    # one reachable node is enough: the others are discovered
    one = open_store(f"redis+cluster://127.0.0.1:{cluster.nodes[2].port}?prefix={prefix_for(tmp_path)}")
    assert one.get("k") == Tokens("at")
    for bad, why in [
        (f"redis+cluster://127.0.0.1:{cluster.nodes[0].port}/3", "one database"),
        ("redis+cluster://127.0.0.1:x", "not HOST"),
        ("redis+cluster://,127.0.0.1:1", "not HOST"),
        ("redis+cluster:127.0.0.1:1", "expected redis"),
        ("redis+cluster://h:1?db=2", "db= is for"),
    ]:
        with pytest.raises(ValueError, match=why):
            open_store(bad)
    # redis-py asks for the slot layout at once: no reachable node is a clear error
    from .redis_server import _free_port

    port = _free_port()
    with pytest.raises(StoreUnavailableError, match=f"cluster 127.0.0.1:{port}") as info:
        open_store(f"rediss+cluster://u:hunter2@127.0.0.1:{port}?socket_timeout=0.5")
    assert "hunter2" not in str(info.value)


def test_keys_span_every_master_and_keep_creation_order(cluster: RedisCluster, store: RedisStore) -> None:
    names = [f"key-{i}" for i in range(60)]
    for name in names:
        store.set(name, Tokens(name))
    per_node = [
        sum(1 for _ in node.client().scan_iter(match=f"{store.prefix}:*:tokens"))
        for node in cluster.nodes
    ]
    assert all(count > 0 for count in per_node) and sum(per_node) == 60, per_node
    assert store.keys() == names  # SCAN of every master, ordered by creation
    store.delete("key-7")
    store.clear()
    assert store.keys() == []


def test_records_and_lock_of_a_key_live_on_the_node_of_its_slot(
    cluster: RedisCluster, store: RedisStore
) -> None:
    from oauth_callback import ClientInfo

    for name in ("github", "a:b", "ünï"):
        store.set(name, Tokens("at"))
        store.set_client(name, ClientInfo("cid"))
        owner = cluster.owner_of(slot_of(store, name))
        with store.refresh_lock(name):
            lock_key = store.redis_key("refresh-lock", name)
            assert key_slot(lock_key.encode()) == slot_of(store, name)
            assert owner.client().exists(lock_key)
        assert owner.client().exists(store.redis_key("tokens", name), store.redis_key("clients", name)) == 2


def test_update_is_an_optimistic_transaction_on_the_slot(url: str) -> None:
    s1, s2 = RedisStore(url), RedisStore(url)
    s1.set("k", Tokens("x", extra={"n": 0}))
    calls = []

    def bump(cur: Tokens | None) -> Tokens:
        assert cur is not None
        calls.append(cur.extra["n"])
        if len(calls) == 1:  # another writer commits between our read and our write
            s2.set("k", Tokens("x", extra={"n": 10}))
        return cur.replace(extra={"n": cur.extra["n"] + 1})

    result = s1.update("k", bump)
    assert calls == [0, 10] and result is not None and result.extra["n"] == 11
    assert s2.get("k") == result


def _incr(cur: Tokens | None) -> Tokens:
    n = 0 if cur is None else cur.extra["n"]
    return Tokens("x", extra={"n": n + 1})


def test_ask_and_moved_while_a_slot_migrates(cluster: RedisCluster, url: str) -> None:
    store, other = RedisStore(url), RedisStore(url)  # both learned the old layout
    store.set("k", Tokens("x", extra={"n": 0}))
    store.set("k2", Tokens("x"))  # another slot, untouched
    slot = slot_of(store, "k")
    first = cluster.owner_of(slot)
    target = next(n for n in cluster.nodes if n is not first)
    # 1. Mid-migration (the record moved, the slot not yet): ASK redirections.
    cluster.begin_move(slot, target)
    while cluster.migrate_keys(slot, first, target):
        pass
    count = target.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
    assert count >= 1 and first.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert other.get("k") == Tokens("x", extra={"n": 0})
    assert other.update("k", _incr).extra["n"] == 1  # type: ignore[union-attr]
    with other.refresh_lock("k", timeout=5):  # the lock key is created on the target
        assert target.client().execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == count + 1
    # 2. The slot is the target's: MOVED, and every handle follows.
    cluster.end_move(slot, target)
    assert cluster.owner_of(slot) is target
    assert store.update("k", _incr).extra["n"] == 2  # type: ignore[union-attr]
    assert other.get("k").extra["n"] == 2  # type: ignore[union-attr]
    # 3. A save fenced by the refresh lock (record and lock in one script) while the
    # slot moves back in two batches waits for the second one instead of failing.
    saved: list[Tokens | None] = []
    with store.refresh_lock("k"):
        cluster.begin_move(slot, first)
        record = store.redis_key("tokens", "k")
        assert cluster.migrate_keys(slot, target, first, keys=[record]) == 1  # not the lock
        saver = threading.Thread(target=lambda: saved.append(store.update("k", _incr)))
        saver.start()
        while cluster.migrate_keys(slot, target, first):
            pass
        saver.join(30)
        assert not saver.is_alive()
        cluster.end_move(slot, first)
    assert saved and saved[0] is not None and saved[0].extra["n"] == 3
    assert other.get("k").extra["n"] == 3  # type: ignore[union-attr]
    assert store.keys() == ["k", "k2"]


INCREMENTER = """
import sys
from oauth_callback.storage.url import open_store
from oauth_callback import Tokens
store = open_store(sys.argv[1])
def incr(cur):
    n = 0 if cur is None else cur.extra["n"]
    return Tokens("x", extra={"n": n + 1})
for i in range(int(sys.argv[2])):
    for k in range(8):
        store.update(f"k{k}", incr)
print("done")
"""


@pytest.mark.slow
def test_resharding_during_use_loses_no_update(cluster: RedisCluster, url: str) -> None:
    """4 processes increment 8 counters while their slots move between the masters."""
    store = RedisStore(url)
    rounds = 40
    children = [
        subprocess.Popen([sys.executable, "-c", INCREMENTER, url, str(rounds)], env=python_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    moves = 0
    try:
        while any(c.poll() is None for c in children) or moves < 8:
            name = f"k{moves % 8}"
            slot = slot_of(store, name)
            owner = cluster.owner_of(slot)
            cluster.move_slot(slot, cluster.nodes[(cluster.nodes.index(owner) + 1) % 3])
            moves += 1
        outputs = [c.communicate(timeout=120) for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()
    for c, (out, err) in zip(children, outputs):
        assert c.returncode == 0 and out.strip() == "done", err
    assert moves >= 8
    for k in range(8):
        assert store.get(f"k{k}").extra["n"] == 4 * rounds  # type: ignore[union-attr]


def test_a_node_down_is_unavailable_not_corrupt(tmp_path: Path) -> None:
    """A private cluster: a master dies -> StoreUnavailableError for its slots."""
    cluster = RedisCluster(tmp_path / "cluster")
    cluster.start()
    try:
        store = RedisStore(cluster.url_for("p"), socket_timeout=1)
        names = [f"n{i}" for i in range(30)]
        for name in names:
            store.set(name, Tokens(name))
        victim = cluster.nodes[1]
        lost = [n for n in names if cluster.owner_of(slot_of(store, n)) is victim]
        victim.kill()
        with pytest.raises(StoreUnavailableError) as info:
            store.get(lost[0])
        assert "cluster 127.0.0.1" in str(info.value)
        victim.start()  # same port, same directory: its append-only file is replayed
        cluster.wait_ok()
        for name in names:
            assert store.get(name) == Tokens(name)
    finally:
        cluster.stop()


def test_replica_acknowledgements_on_a_cluster_are_asked_of_the_slots_node(url: str) -> None:
    """``replicas=N`` on a cluster: WAIT runs on the node that ran the write (this
    cluster has no replicas, so nothing can be acknowledged: a clear error)."""
    store = RedisStore(f"{url}&replicas=1&replicas_timeout=0.05", retry_timeout=0.3)
    with pytest.raises(StoreUnavailableError, match="acknowledged by 0 of the 1 replicas"):
        store.set("k", Tokens("at"))
    assert RedisStore(url).get("k") == Tokens("at")  # it is on the primary
    from oauth_callback import StoreLockTimeout

    with pytest.raises(StoreLockTimeout, match="not acknowledged by 1 replicas"):
        with store.refresh_lock("k", timeout=0.5):
            pytest.fail("held a lock no replica has")
