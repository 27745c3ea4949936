"""RedisStore against a real redis-server (tests/redis_server.py); the contract suite runs too."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .redis_server import REDIS_SERVER, RedisServer, prefix_for, session_server, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install 'oauth-callback[redis]')")

from redis.crc import key_slot  # noqa: E402

from oauth_callback import (  # noqa: E402
    ClientInfo,
    OAuthSession,
    StoreCorruptError,
    StoreError,
    StoreLockTimeout,
    StoreUnavailableError,
    Tokens,
)
from oauth_callback.storage.redis import RedisStore  # noqa: E402
from oauth_callback.storage.url import open_store  # noqa: E402

from .conftest import python_env  # noqa: E402

assert REDIS_SERVER is not None or skip_reason() is not None


@pytest.fixture
def server() -> RedisServer:
    return session_server()


@pytest.fixture
def url(server: RedisServer, tmp_path: Path) -> str:
    return server.url_for(prefix_for(tmp_path))


@pytest.fixture
def store(url: str) -> Iterator[RedisStore]:
    s = RedisStore(url)
    yield s
    s.close()


def tok(n: int | str, **kw: object) -> Tokens:
    return Tokens(access_token=f"at-{n}", **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- naming, keys()


SPECIAL_KEYS = [
    "a b", "ünïcødé ✓", "*", "?", "[x]", "[!a-z]", "{tag}", "}{", "{", "}", ":", "a:b:c",
    "\\", "back\\slash*", "new\nline", "tab\t", "😀", "prefix:*", "x" * 1000, "-", "=", "/",
    "%2F", "'\"", "\x00nul",
]


def test_keys_scan_many_and_special_characters(server: RedisServer, store: RedisStore) -> None:
    names = [f"k{i}" for i in range(2500)]
    # Loaded in one pipeline: with appendfsync always each set() costs fsyncs.
    pipe = server.client().pipeline(transaction=False)
    for i, name in enumerate(names):
        pipe.set(store.redis_key("tokens", name), store._encode(name, i + 1, tok(i)))
    pipe.execute()
    server.client().set(f"{store.prefix}:seq", len(names))
    store.set(names[-1], tok(len(names) - 1))  # and one through the API
    for name in SPECIAL_KEYS:
        store.set(name, tok(name))
    keys = store.keys()  # the server renamed KEYS away: this is SCAN
    assert keys == names + SPECIAL_KEYS  # creation order, each key once
    for name in SPECIAL_KEYS:
        assert store.get(name) == tok(name)
    store.set("k5", tok("again"))  # an overwrite keeps the position
    assert store.keys()[5] == "k5"
    store.delete("k0")
    assert store.keys()[0] == "k1"


def test_keys_never_uses_the_keys_command(server: RedisServer, store: RedisStore) -> None:
    store.set("a", tok(1))
    with pytest.raises(redis.ResponseError, match="unknown command"):
        server.client().keys("*")
    assert store.keys() == ["a"]


def test_prefix_isolates_stores_and_glob_characters_in_prefix(server: RedisServer, tmp_path: Path) -> None:
    base = prefix_for(tmp_path)
    a = RedisStore(server.url, prefix=f"{base}*[?]")
    b = RedisStore(server.url, prefix=f"{base}x")
    c = RedisStore(server.url, prefix=f"{base}")
    a.set("k", tok("a"))
    b.set("k", tok("b"))
    c.set("k", tok("c"))
    assert a.keys() == b.keys() == c.keys() == ["k"]
    c.clear()
    assert a.get("k") == tok("a") and b.get("k") == tok("b") and c.keys() == []


def test_hash_tag_puts_all_keys_of_a_store_key_in_one_slot(
    server: RedisServer, store: RedisStore
) -> None:
    r = server.client()
    slots_seen = set()
    for name in ["github", "{tag}", "a:b", "ünï", *(f"key-{i}" for i in range(40))]:
        store.set(name, tok(1))
        store.set_client(name, ClientInfo("cid"))
        store.set_session(name, OAuthSession(state="s"))
        with store.refresh_lock(name):
            lock_key = store.redis_key("refresh-lock", name)
            assert r.exists(lock_key)
        rkeys = [store.redis_key(s, name) for s in ("tokens", "clients", "sessions")]
        assert all(r.exists(k) for k in rkeys)
        slots = {key_slot(k.encode()) for k in [*rkeys, lock_key]}
        assert len(slots) == 1, (name, rkeys)
        tag = rkeys[0][rkeys[0].index("{") + 1:rkeys[0].index("}")]
        assert all(k.startswith(f"{store.prefix}:{{{tag}}}:") for k in [*rkeys, lock_key])
        slots_seen |= slots
    assert len(slots_seen) > 30  # different store keys spread over the cluster


def test_values_are_json_records_carrying_the_key(server: RedisServer, store: RedisStore) -> None:
    import json

    store.set("my key", Tokens("at", refresh_token="rt", expires_at=1_767_225_600.5))
    raw = server.client().get(store.redis_key("tokens", "my key"))
    assert raw is not None
    payload = json.loads(raw)
    assert payload["key"] == "my key"
    assert payload["record"] == {"accessToken": "at", "refreshToken": "rt", "expiresAt": 1767225600500}


# --------------------------------------------------------------------------- shared reads


class GatedRedis(redis.Redis):  # type: ignore[misc]
    """A real client whose GETs can be held after the server answered (in flight for
    the store), counted, and made to fail."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.gets = 0
        self.gate = threading.Event()
        self.gate.set()
        self.fail_call = 0  # the number of the GET that fails (0: none)
        self.only: set[int] | None = None  # the threads whose GETs the gate holds (None: all)

    def get(self, name: str) -> object:
        self.gets += 1
        call = self.gets
        value = super().get(name)
        if self.only is None or threading.get_ident() in self.only:
            assert self.gate.wait(30)
        if call == self.fail_call:
            raise redis.exceptions.ConnectionError("connection lost (test)")
        return value


def _gated_store(server: RedisServer, tmp_path: Path) -> tuple[RedisStore, GatedRedis]:
    client = GatedRedis(host="127.0.0.1", port=server.port, password=server.password)
    return RedisStore(client, prefix=prefix_for(tmp_path)), client


def _blocked_in(thread: threading.Thread, function: str, inner: str) -> bool:
    """Whether ``thread`` is waiting inside ``inner`` called (directly or not) from
    ``function`` of the store module."""
    frame = sys._current_frames().get(thread.ident or 0)
    names = []
    while frame is not None:
        names.append((frame.f_code.co_name, frame.f_code.co_filename))
        frame = frame.f_back
    return bool(names) and names[0][0] == inner and any(
        name == function and path.endswith("redis.py") for name, path in names
    )


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in 30 s"
        time.sleep(0.001)


def _start_held(client: GatedRedis, target: Callable[[], object]) -> threading.Thread:
    """``target`` in a thread whose GET (the first the client sends from now on) has
    its answer but is held: in flight for the store until ``client.gate`` is set."""
    client.gets = 0
    client.gate.clear()
    thread = threading.Thread(target=target)
    thread.start()
    _wait_until(lambda: client.gets == 1 and _blocked_in(thread, "get", "wait"))
    return thread


def _start_waiting_in_get(threads: list[threading.Thread]) -> None:
    """Start ``threads`` (unless started) and wait until each waits inside a store read."""
    for t in threads:
        if t.ident is None:
            t.start()
    for t in threads:
        _wait_until(lambda t=t: _blocked_in(t, "get", "wait"))  # type: ignore[misc]


def test_threads_reading_one_key_at_once_share_gets_sent_after_they_began(
    server: RedisServer, tmp_path: Path
) -> None:
    store, client = _gated_store(server, tmp_path)
    store.set("k", tok("old"))
    results: dict[str, Tokens | None] = {}

    def read(name: str) -> None:
        results[name] = store.get("k")

    first = _start_held(client, lambda: read("first"))
    # The first GET has its answer ("old") but has not landed; a write completes now.
    RedisStore(server.url, prefix=prefix_for(tmp_path)).set("k", tok("new"))
    later = [threading.Thread(target=read, args=(f"later-{i}",)) for i in range(7)]
    _start_waiting_in_get(later)
    assert client.gets == 1  # the 7 wait for one GET sent after the first lands
    client.gate.set()
    for t in [first, *later]:
        t.join()
    assert results["first"] == tok("old")  # it began before the write
    # Each began after the write completed: each sees it (one GET for all seven).
    assert all(results[f"later-{i}"] == tok("new") for i in range(7))
    assert client.gets == 2
    assert store.get("k") == tok("new") and client.gets == 3  # nothing is cached
    store.close()


def test_a_failed_shared_get_makes_each_waiting_thread_read_for_itself(
    server: RedisServer, tmp_path: Path
) -> None:
    store, client = _gated_store(server, tmp_path)
    store.set("k", tok(1))
    results: list[object] = []

    def read() -> None:
        try:
            results.append(store.get("k"))
        except StoreUnavailableError as exc:
            results.append(exc)

    first = _start_held(client, read)
    waiting = [threading.Thread(target=read) for _ in range(3)]
    _start_waiting_in_get(waiting)
    # The first GET lands; the one sent for the three then fails: the thread that
    # sent it gets the error, the two others read for themselves.
    client.fail_call = 2
    client.gate.set()
    for t in [first, *waiting]:
        t.join()
    assert sum(isinstance(r, StoreUnavailableError) for r in results) == 1
    assert results.count(tok(1)) == 3  # never "no tokens" from a failed read
    assert client.gets == 4
    store.close()


def test_the_lock_holders_read_is_not_queued_behind_a_get_in_flight(
    server: RedisServer, tmp_path: Path
) -> None:
    store, client = _gated_store(server, tmp_path)
    store.set("k", tok(1))

    def read() -> None:
        client.only = {threading.get_ident()}
        store.get("k")

    reader = _start_held(client, read)
    held: list[Tokens | None] = []

    def refresher() -> None:
        with store.refresh_lock("k", timeout=5):
            held.append(store.get("k"))  # its own GET, while the reader's is in flight

    holder = threading.Thread(target=refresher)
    holder.start()
    holder.join(10)
    in_time = not holder.is_alive()
    client.gate.set()
    holder.join()
    reader.join()
    assert in_time and held == [tok(1)]
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_child_forked_while_a_get_is_in_flight_reads_for_itself(
    server: RedisServer, tmp_path: Path
) -> None:
    store, client = _gated_store(server, tmp_path)
    store.set("k", tok(1))
    first = _start_held(client, lambda: store.get("k"))
    pid = os.fork()
    if pid == 0:  # child: the parent's GET in flight never lands here
        code = 1
        try:
            client.gate.set()
            code = 0 if store.get("k") == tok(1) else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    client.gate.set()
    first.join()
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0
    store.close()


def test_works_with_a_given_client_decoding_responses(server: RedisServer, tmp_path: Path) -> None:
    client = server.client(decode_responses=True)
    s = RedisStore(client, prefix=prefix_for(tmp_path))
    s.set("ü", tok(1))
    s.set_client("ü", ClientInfo("cid"))
    assert s.keys() == ["ü"] and s.get("ü") == tok(1) and s.get_client("ü") == ClientInfo("cid")
    s.clear()
    assert s.keys() == []
    s.close()
    assert client.ping()  # a given client is not closed


def test_every_connection_shares_one_driver_info_naming_oauth_callback(
    server: RedisServer, tmp_path: Path
) -> None:
    # The CLIENT SETINFO metadata is made once per process, not rebuilt (from the
    # installed package's metadata, ~0.3 ms of CPU) for every connection a pool opens.
    a, b = RedisStore(server.url_for(prefix_for(tmp_path))), RedisStore(server.url)
    info = a._client.connection_pool.connection_kwargs["driver_info"]
    assert info is b._client.connection_pool.connection_kwargs["driver_info"]
    assert info.formatted_name.startswith("redis-py(oauth-callback_v")
    pool = a._client.connection_pool
    connections = [pool.get_connection() for _ in range(3)]  # each connected, handshake done
    for c in connections:
        pool.release(c)
    assert len(set(connections)) == 3 and all(c.driver_info is info for c in connections)
    a.close()
    b.close()


def test_open_store_urls(server: RedisServer, tmp_path: Path) -> None:
    url = server.url_for(prefix_for(tmp_path))
    s = open_store(url)
    assert isinstance(s, RedisStore) and s.prefix == prefix_for(tmp_path)
    s.set("k", tok(1))
    assert RedisStore(server.url, prefix=prefix_for(tmp_path)).get("k") == tok(1)
    tls = open_store("rediss://user:hunter2-secret@redis.example:6380/3")  # no connection yet
    assert isinstance(tls, RedisStore) and tls.prefix == "oauth-callback"
    assert "hunter2" not in repr(tls) and "redis.example:6380/3" in repr(tls)


# --------------------------------------------------------------------------- writes


def test_update_is_compare_and_set_and_reruns_fn_on_conflict(url: str) -> None:
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
    assert calls == [0, 10]
    assert result is not None and result.extra["n"] == 11
    assert s2.get("k") == result


def test_update_gives_up_after_retry_timeout(url: str) -> None:
    s1, s2 = RedisStore(url, retry_timeout=0.2), RedisStore(url)
    s1.set("k", tok(0))
    n = [0]

    def always_conflicting(cur: Tokens | None) -> Tokens:
        n[0] += 1
        s2.set("k", tok(f"other-{n[0]}"))
        return tok("mine")

    with pytest.raises(StoreLockTimeout, match="conflicting writes"):
        s1.update("k", always_conflicting)
    assert s1.get("k") == tok(f"other-{n[0]}")


def test_corrupt_value_raises_and_clear_removes_it(server: RedisServer, store: RedisStore) -> None:
    store.set("good", tok(1))
    rkey = store.redis_key("tokens", "bad")
    server.client().set(rkey, b"{not json")
    with pytest.raises(StoreCorruptError, match="unreadable") as info:
        store.get("bad")
    assert rkey in str(info.value)
    with pytest.raises(StoreCorruptError):
        store.set("bad", tok(2))  # nothing is overwritten blindly
    assert store.keys() == ["good", "bad"]  # listed last, so it can be found
    assert server.client().get(rkey) == b"{not json"
    store.clear()
    assert store.keys() == [] and store.get("bad") is None


def test_clear_many_keys_keeps_held_refresh_locks(server: RedisServer, store: RedisStore) -> None:
    pipe = server.client().pipeline(transaction=False)
    for i in range(1200):  # more than one DEL batch
        store_key = f"k{i}"
        pipe.set(store.redis_key("clients", store_key), b'{"seq":0,"record":{"clientId":"c"}}')
    pipe.execute()
    store.set("t", tok(1))
    with store.refresh_lock("t"):
        store.clear()
        assert server.client().exists(store.redis_key("refresh-lock", "t"))
    assert store.keys() == [] and store.get_client("k7") is None
    assert not list(server.client().scan_iter(match=f"{store.prefix}:{{*}}:client"))


def test_ttl_fixed_and_from_refresh_token_life(server: RedisServer, tmp_path: Path) -> None:
    r = server.client()
    prefix = prefix_for(tmp_path)
    plain = RedisStore(server.url, prefix=prefix)
    fixed = RedisStore(server.url, prefix=prefix, ttl=100)
    life = RedisStore(server.url, prefix=prefix, ttl_from_refresh=True)
    both = RedisStore(server.url, prefix=prefix, ttl=100, ttl_from_refresh=True)

    def pttl(key: str) -> int:
        return int(r.pttl(plain.redis_key("tokens", key)))

    plain.set("a", tok(1))
    assert pttl("a") == -1  # persistent by default
    fixed.set("a", tok(1))
    assert 80_000 < pttl("a") <= 100_000  # (a loaded machine may take seconds)
    plain.set("a", tok(2))
    assert pttl("a") == -1  # a write without TTL removes it
    life.set("b", tok(1, refresh_token="r", extra={"refresh_token_expires_in": 500}))
    assert 480_000 < pttl("b") <= 500_000
    life.set("c", tok(1, refresh_token="r", extra={"refresh_expires_in": 50},
                      expires_at=time.time() + 3600))
    # never before the access token expires; +1: the expiry and the TTL are whole
    # milliseconds, each rounded up
    assert 3_500_000 < pttl("c") <= 3_600_001
    life.set("d", tok(1, refresh_token="r"))
    assert pttl("d") == -1  # no field, no ttl
    both.set("d", tok(1, refresh_token="r"))
    assert 80_000 < pttl("d") <= 100_000
    life.set_client("b", ClientInfo("cid"))
    assert r.pttl(plain.redis_key("clients", "b")) == -1  # only token records expire
    short = RedisStore(server.url, prefix=prefix, ttl=0.2)
    short.set("gone", tok(1))
    time.sleep(0.35)
    assert plain.get("gone") is None and "gone" not in plain.keys()
    with pytest.raises(ValueError, match="ttl"):
        RedisStore(server.url, ttl=0)


# --------------------------------------------------------------------------- refresh lock

HOLDER = """
import sys, time
from oauth_callback.storage.redis import RedisStore
store = RedisStore(sys.argv[1], lock_lease=float(sys.argv[2]))
with store.refresh_lock("shared", timeout=10):
    print("held", flush=True)
    sys.stdin.readline()  # held until the test says so: no race with a sleep
print("released", flush=True)
"""


def _holder(url: str, lease: float) -> subprocess.Popen[str]:
    """A child holding the "shared" lock until a line (or EOF) arrives on its stdin."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(lease)],
                         env=python_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    assert line.strip() == "held", p.stderr.read() if p.stderr else ""
    return p


def test_refresh_lock_excludes_across_processes(url: str) -> None:
    store = RedisStore(url)
    child = _holder(url, 30.0)
    try:
        start = time.monotonic()
        with pytest.raises(StoreLockTimeout, match="another process") as info:
            with store.refresh_lock("shared", timeout=0.4):
                pytest.fail("the lock was taken twice")
        assert time.monotonic() - start >= 0.35  # it waited (no upper bound: load varies)
        assert "shared" in str(info.value)
        with store.refresh_lock("other", timeout=0.4):  # other keys are independent
            pass
        assert child.stdin is not None
        child.stdin.close()  # the child lets go
        with store.refresh_lock("shared", timeout=30):  # free once the child let go
            assert child.wait(30) == 0
    finally:
        child.kill()
        child.wait()


def test_refresh_lock_threads_and_reentry(url: str) -> None:
    store = RedisStore(url)
    inside = []
    overlap = []

    def worker() -> None:
        for _ in range(5):
            with store.refresh_lock("k", timeout=10):
                inside.append(1)
                if len(inside) > 1:
                    overlap.append(1)
                time.sleep(0.002)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap
    lock = store.refresh_lock("k")
    with lock, store.refresh_lock("k", timeout=0.1):  # same thread: re-entrant
        assert lock.is_locked
    assert not lock.is_locked


def test_refresh_lock_is_released_only_by_its_owner(
    server: RedisServer, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A holder paused past its lease loses the lock; when it resumes it does not free B's."""
    store = RedisStore(url)
    lock_key = store.redis_key("refresh-lock", "shared")
    r = server.client()
    child = _holder(url, 0.5)  # holds until told to, with a 0.5 s lease
    try:
        owner_a = r.get(lock_key)
        assert owner_a is not None
        child.send_signal(signal.SIGSTOP)  # its renewer stops too
        with store.refresh_lock("shared", timeout=30):
            owner_b = r.get(lock_key)
            assert owner_b is not None and owner_b != owner_a
            child.send_signal(signal.SIGCONT)
            out, err = child.communicate("release\n", timeout=30)
            assert child.returncode == 0, err
            assert "released" in out
            assert "expired" in err  # the child noticed it lost the lock
            assert r.get(lock_key) == owner_b  # A's release left B's lock alone
            with pytest.raises(StoreLockTimeout):
                _try_lock_in_child(url)
        assert r.get(lock_key) is None  # B's own release deletes it
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        child.wait()


def _try_lock_in_child(url: str) -> None:
    code = (
        "import sys\n"
        "from oauth_callback.storage.redis import RedisStore\n"
        "from oauth_callback import StoreLockTimeout\n"
        "try:\n"
        "    with RedisStore(sys.argv[1]).refresh_lock('shared', timeout=0.3): sys.exit(0)\n"
        "except StoreLockTimeout: sys.exit(3)\n"
    )
    rc = subprocess.run([sys.executable, "-c", code, url], env=python_env(), timeout=30).returncode
    if rc == 3:
        raise StoreLockTimeout("child timed out")
    assert rc == 0


def test_crashed_holders_lock_expires_after_the_lease(server: RedisServer, url: str) -> None:
    store = RedisStore(url)
    lock_key = store.redis_key("refresh-lock", "shared")
    child = _holder(url, 1.0)
    child.send_signal(signal.SIGSTOP)  # no renewal from here on
    remaining = int(server.client().pttl(lock_key))  # ms left of the last lease (-2: gone)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert remaining <= 1000  # a crashed holder's lock outlives it by one lease at most
    start = time.monotonic()
    with store.refresh_lock("shared", timeout=30):  # it expires by itself
        waited = time.monotonic() - start
    if remaining > 0:  # still held by the dead child: taken only once the lease ran out
        assert waited >= remaining / 1000 - 0.05


def test_refresh_lock_lease_is_renewed_while_held(server: RedisServer, url: str) -> None:
    store = RedisStore(url, lock_lease=1.0)
    r = server.client()
    lock_key = store.redis_key("refresh-lock", "shared")
    with store.refresh_lock("shared"):
        # Held for more than two leases, checked all along: the renewer keeps it alive.
        start, renewals, last = time.monotonic(), 0, int(r.pttl(lock_key))
        while time.monotonic() - start < 2.5 or renewals < 3:
            now = int(r.pttl(lock_key))
            assert now > 0, "the lease lapsed while held"
            renewals += now > last
            last = now
            time.sleep(0.02)
        assert r.pttl(lock_key) > 0
        with pytest.raises(StoreLockTimeout):
            _try_lock_in_child(url)


# --------------------------------------------------------------------------- outages


def test_scripts_take_one_round_trip_even_after_the_server_lost_its_script_cache(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        admin = server.client()

        def calls() -> dict[str, int]:
            stats = admin.info("commandstats")
            return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

        def lock_and_write(store: RedisStore) -> None:
            with store.refresh_lock("k", timeout=5):
                store.set("k", tok(1))

        store = RedisStore(server.url)
        lock_and_write(store)  # first run in this process: EVAL (acquire, CAS, release)
        first = calls()
        assert first.get("eval") == 3 and "evalsha" not in first
        lock_and_write(store)  # then EVALSHA
        second = calls()
        assert second.get("eval") == 3 and second.get("evalsha") == 3
        admin.script_flush()  # as after a restart or a failover
        lock_and_write(store)
        third = calls()
        assert third.get("eval") == 6  # NOSCRIPT: straight to EVAL, for each of the 3
        assert "script|load" not in third and "script|exists" not in third
        assert store.get("k") == tok(1)
        store.close()
    finally:
        server.stop()


def test_redis_restart_keeps_acknowledged_writes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path / "redis", password="s3cret-pw")
    server.start()
    try:
        store = RedisStore(server.url, socket_timeout=1.0)
        acknowledged = {}
        for i in range(300):
            store.set(f"k{i}", tok(i, refresh_token=f"r{i}"))
            acknowledged[f"k{i}"] = tok(i, refresh_token=f"r{i}")
        store.update("k7", lambda cur: tok("updated"))
        acknowledged["k7"] = tok("updated")
        store.delete("k8")
        del acknowledged["k8"]
        store.set_client("k1", ClientInfo("cid"))

        server.kill()  # a crash: no shutdown, no final fsync
        operations: list[Callable[[], object]] = [
            lambda: store.set("new", tok(1)),
            lambda: store.get("k1"),
            lambda: store.keys(),
            lambda: store.update("k1", lambda cur: tok(2)),
            lambda: store.clear(),
            lambda: store.refresh_lock("k1", timeout=1).__enter__(),
        ]
        for op in operations:
            start = time.monotonic()
            with pytest.raises(StoreUnavailableError) as info:
                op()
            assert time.monotonic() - start < 5
            message = str(info.value)
            assert f"127.0.0.1:{server.port}" in message
            assert "s3cret-pw" not in message and "s3cret-pw" not in repr(info.value.__cause__)

        server.start()  # same port, same directory: the append-only file is replayed
        assert store.keys() == list(acknowledged)
        for key, value in acknowledged.items():
            assert store.get(key) == value
        assert store.get_client("k1") == ClientInfo("cid")
        store.set("after", tok("after"))  # the same store object works again
        assert store.get("after") == tok("after")
        with store.refresh_lock("k1", timeout=1):
            pass
    finally:
        server.stop()


def test_unreachable_server_names_host_port_not_password() -> None:
    from .redis_server import _free_port

    port = _free_port()
    store = RedisStore(f"redis://admin:topsecret@127.0.0.1:{port}/2", socket_timeout=0.5)
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}/2") as info:
        store.get("k")
    assert "topsecret" not in str(info.value) and info.value.path == f"127.0.0.1:{port}/2"


def test_wrong_password_is_unavailable_without_the_password(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="right-pw")
    server.start()
    try:
        bad = RedisStore(f"redis://:wrong-pw@127.0.0.1:{server.port}/0")
        with pytest.raises(StoreUnavailableError) as info:
            bad.set("k", tok(1))
        assert "wrong-pw" not in str(info.value) and "right-pw" not in str(info.value)
    finally:
        server.stop()


def test_logging_is_quiet_in_normal_use(store: RedisStore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="oauth_callback"):
        store.set("k", tok(1))
        with store.refresh_lock("k"):
            store.update("k", lambda cur: tok(2))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_password_echoed_by_the_server_is_scrubbed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A server or proxy that lacks HELLO/AUTH (old Redis, some proxies, renamed commands)
    answers ``unknown command 'HELLO', with args beginning with: ... '<password>'``:
    the password must not reach the exception, in any form the URL may give it."""
    secret = "S3cret pw/+%"  # needs percent-encoding in a URL
    server = RedisServer(tmp_path / "redis", extra_args=(
        "--rename-command", "HELLO", "", "--rename-command", "AUTH", "",
    ))
    server.start()
    try:
        from urllib.parse import quote

        for user in ("", "bob"):
            url = f"redis://{user}:{quote(secret, safe='')}@127.0.0.1:{server.port}/0"
            store = RedisStore(url, socket_timeout=2)
            with caplog.at_level(logging.DEBUG):
                with pytest.raises(StoreError) as info:
                    store.get("k")
            message = str(info.value)
            assert "unknown command" in message  # the server's answer is there...
            assert "***" in message  # ... with the password replaced
            for form in (secret, quote(secret, safe=""), "S3cret"):
                assert form not in message and form not in repr(info.value)
                assert form not in caplog.text
            assert "S3cret" not in repr(store) and "S3cret" not in store.describe()
    finally:
        server.stop()


def test_a_save_after_the_lock_was_lost_is_reported(
    server: RedisServer, store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The save under the refresh lock is fenced by the owner token: if the lock is
    gone (lease expired, or a failover promoted a replica without it) the save is
    still made (the provider issued these tokens; dropping them would lose the
    grant) but not silently."""
    store.set("k", tok(1))
    with store.refresh_lock("k"):
        with caplog.at_level(logging.WARNING, logger="oauth_callback"):
            store.update("k", lambda cur: tok(2))
        assert not caplog.records  # still ours: nothing to report
        server.client().delete(store.redis_key("refresh-lock", "k"))  # lost
        with caplog.at_level(logging.WARNING, logger="oauth_callback"):
            store.update("k", lambda cur: tok(3))
        assert any(r.levelno == logging.ERROR and "was lost" in r.getMessage() for r in caplog.records)
        other = RedisStore(store._client, prefix=store.prefix)
        assert other.get("k") == tok(3)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="oauth_callback"):
        store.update("k", lambda cur: tok(4))  # no lock held: no fence
    assert not [r for r in caplog.records if "was lost" in r.getMessage()]


WAITER = """
import sys, time
from oauth_callback.storage.redis import RedisStore
store = RedisStore(sys.argv[1])
store.get("x")
with store.refresh_lock("shared", timeout=30):
    print(time.monotonic(), flush=True)
"""


def test_lock_waiters_are_woken_by_the_release_not_by_polling(
    server: RedisServer, url: str
) -> None:
    """A waiter (another process) subscribes to the key's events: the release wakes it
    at once, and it sends a handful of commands while waiting, not one every few ms."""
    holder = RedisStore(url)
    r = server.client()
    channel = holder.redis_key("refresh-events", "shared")
    with holder.refresh_lock("shared"):
        child = subprocess.Popen([sys.executable, "-c", WAITER, url], env=python_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while not r.pubsub_numsub(channel)[0][1]:  # the waiter is subscribed
                assert time.monotonic() < deadline and child.poll() is None
                time.sleep(0.01)
            def scripts_run() -> int:  # lock attempts are EVALSHA calls
                return int(r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))

            before = scripts_run()
            time.sleep(0.5)  # the waiter sleeps on its subscription meanwhile
            during = scripts_run() - before
            released = time.monotonic()
        except BaseException:
            child.kill()
            raise
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    # at most its one retry after subscribing (and the holder's renewal);
    # polling every 5-100 ms would try 5 times or more
    assert during <= 2, during
    # woken by the release, not by the 30 s lease (half of it: generous on a loaded machine)
    assert float(out) - released < 15.0


def test_acquire_unless_returns_when_the_record_changes_while_another_process_holds_it(
    server: RedisServer, url: str
) -> None:
    """The waiter of another process's lock is woken by the change of the tokens record
    (announced by the write) and gives up waiting without the lock, the lock still held."""
    store, writer = RedisStore(url), RedisStore(url)
    store.set("shared", tok(1))
    child = _holder(url, 30.0)  # holds the lock until told
    try:
        lock = store.refresh_lock("shared", timeout=15)
        result: list[bool] = []
        checks: list[Tokens | None] = []

        def changed() -> bool:
            checks.append(store.get("shared"))
            return checks[-1] == tok(2)

        thread = threading.Thread(target=lambda: result.append(lock.acquire_unless(changed)))
        thread.start()
        channel = store.redis_key("refresh-events", "shared")
        r = server.client()
        deadline = time.monotonic() + 10
        while not r.pubsub_numsub(channel)[0][1]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        start = time.monotonic()
        writer.set("shared", tok(2))
        thread.join(10)
        assert result == [False] and time.monotonic() - start < 5  # the holder never let go
        assert not lock.is_locked and child.poll() is None  # the child still holds it
        assert len(checks) <= 3  # woken by the change, not polling
    finally:
        child.kill()
        child.wait()


def test_waiters_of_one_process_are_answered_by_one_get_when_the_record_changes(
    server: RedisServer, url: str, tmp_path: Path
) -> None:
    """Another process holds the lock; of this process's waiters one listens in Redis,
    the others queue locally. The change wakes them all at once (not one after the
    other) and one GET, sent after the change, answers every one of them."""
    store, client = _gated_store(server, tmp_path)
    writer = RedisStore(url)
    store.set("shared", tok(1))
    child = _holder(url, 30.0)  # holds the lock until killed
    try:
        outcomes: list[bool] = []

        def waiter() -> None:
            lock = store.refresh_lock("shared", timeout=15)
            outcomes.append(lock.acquire_unless(lambda: store.get("shared") == tok(2)))

        threads = [threading.Thread(target=waiter) for _ in range(4)]
        for t in threads:
            t.start()
        channel = store.redis_key("refresh-events", "shared")
        r = server.client()
        _wait_until(lambda: r.pubsub_numsub(channel)[0][1] == 1 and sum(
            _blocked_in(t, "_acquire", "wait") for t in threads) == 3)
        client.gets = 0
        client.gate.clear()  # GETs are held once answered
        writer.set("shared", tok(2))
        _start_waiting_in_get(threads)
        assert client.gets == 1
        client.gate.set()
        for t in threads:
            t.join(10)
        assert outcomes == [False] * 4 and client.gets == 1
        assert child.poll() is None  # answered while the lock is still held
    finally:
        client.gate.set()
        child.kill()
        child.wait()


def test_a_woken_waiter_never_takes_its_answer_from_a_get_sent_before_the_change(
    server: RedisServer, url: str, tmp_path: Path
) -> None:
    """A GET of the record is in flight (sent before the change) when the change is
    announced: the waiters woken by it wait for a GET sent after, and see the change."""
    store, client = _gated_store(server, tmp_path)
    writer = RedisStore(url)
    store.set("shared", tok(1))
    child = _holder(url, 30.0)
    try:
        outcomes: list[bool | BaseException] = []

        def waiter() -> None:
            try:
                lock = store.refresh_lock("shared", timeout=5)
                outcomes.append(lock.acquire_unless(lambda: store.get("shared") == tok(2)))
            except BaseException as exc:  # reported by the assertion below
                outcomes.append(exc)

        threads = [threading.Thread(target=waiter) for _ in range(2)]
        for t in threads:
            t.start()
        channel = store.redis_key("refresh-events", "shared")
        r = server.client()
        _wait_until(lambda: r.pubsub_numsub(channel)[0][1] == 1 and sum(
            _blocked_in(t, "_acquire", "wait") for t in threads) == 1)
        early: list[Tokens | None] = []
        # Its GET has the old record, held in flight.
        reader = _start_held(client, lambda: early.append(store.get("shared")))
        writer.set("shared", tok(2))
        _start_waiting_in_get(threads)
        client.gate.set()
        for t in [reader, *threads]:
            t.join(10)
        assert early == [tok(1)]
        assert outcomes == [False, False] and client.gets == 2
    finally:
        client.gate.set()
        child.kill()
        child.wait()


def test_acquire_unless_threads_of_one_process_check_together(url: str) -> None:
    """Threads queued behind a thread of the same process that refreshed all see its
    new record when it lets go, and none of them takes the Redis lock."""
    store = RedisStore(url)
    store.set("k", tok(1))
    lock = store.refresh_lock("k", timeout=10)
    outcomes: list[bool] = []
    waiting = threading.Barrier(5)

    def waiter() -> None:
        waiting.wait()
        outcomes.append(store.refresh_lock("k", timeout=10).acquire_unless(
            lambda: store.get("k") == tok(2)))

    with lock:
        threads = [threading.Thread(target=waiter) for _ in range(4)]
        for t in threads:
            t.start()
        waiting.wait()
        time.sleep(0.2)  # they queue behind this thread
        store.set("k", tok(2))  # the "refresh"
    for t in threads:
        t.join(10)
    assert outcomes == [False] * 4
    with store.refresh_lock("k", timeout=1):  # and the lock is free
        pass
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()


def test_a_waiting_manager_takes_the_replaced_token_without_the_lock(
    server: RedisServer, url: str
) -> None:
    """TokenManager waiting for another process's refresh: the refresher's save wakes
    it and it returns the new token while the lock is still held (no convoy through
    the lock to find the work done)."""
    from oauth_callback.manager import TokenManager

    store = RedisStore(url)
    store.set("shared", Tokens("old", refresh_token="rt-1", expires_at=time.time() - 5))
    child = _holder(url, 30.0)  # the refresher, holding the lock until told
    try:
        got: list[str] = []
        manager = TokenManager(RedisStore(url), "shared", lock_timeout=30)
        thread = threading.Thread(target=lambda: got.append(manager.access_token()))
        thread.start()
        channel = store.redis_key("refresh-events", "shared")
        deadline = time.monotonic() + 10
        while not server.client().pubsub_numsub(channel)[0][1]:  # it waits for the lock
            assert time.monotonic() < deadline
            time.sleep(0.01)
        store.set("shared", Tokens("new", refresh_token="rt-2", expires_at=time.time() + 3600))
        thread.join(10)
        assert got == ["new"]
        assert child.poll() is None  # the refresher still holds the lock
    finally:
        child.kill()
        child.wait()


class _ReplyDropper:
    """A loopback TCP proxy to Redis that, when armed, forwards the next EVALSHA to the
    server and then closes the client's connection instead of passing the reply on:
    the write happened, the client never heard of it (a lost reply)."""

    def __init__(self, port: int) -> None:
        import socket

        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            pending = threading.Event()
            threading.Thread(target=self._up, args=(client, server, pending), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, pending), daemon=True).start()

    def _up(self, client, server, pending) -> None:  # type: ignore[no-untyped-def]
        while data := self._recv(client):
            if self.armed.is_set() and b"EVALSHA" in data.upper():
                self.armed.clear()
                pending.set()
            server.sendall(data)
        server.close()

    def _down(self, server, client, pending) -> None:  # type: ignore[no-untyped-def]
        while data := self._recv(server):
            if pending.is_set():
                client.close()  # the reply is lost with the connection
                self.dropped.set()
                return
            client.sendall(data)
        client.close()

    @staticmethod
    def _recv(sock) -> bytes:  # type: ignore[no-untyped-def]
        try:
            return sock.recv(65536)
        except OSError:
            return b""

    def close(self) -> None:
        self.listener.close()


def test_a_write_whose_reply_was_lost_is_not_applied_twice(server: RedisServer, tmp_path: Path) -> None:
    """redis-py sends a command again after a lost reply; the compare-and-set carries
    the write's nonce, so the second copy finds its own write and the update function
    is not run again (an increment stays one increment)."""
    proxy = _ReplyDropper(server.port)
    try:
        store = RedisStore(f"redis://127.0.0.1:{proxy.port}/0?prefix={prefix_for(tmp_path)}")
        calls: list[int] = []

        def incr(cur: Tokens | None) -> Tokens:
            n = 0 if cur is None else cur.extra["n"]
            calls.append(n)
            return Tokens("x", extra={"n": n + 1})

        store.update("k", incr)  # loads the script
        proxy.armed.set()
        result = store.update("k", incr)
        assert proxy.dropped.is_set()  # the reply of the write was lost, and it was retried
        assert result is not None and result.extra["n"] == 2
        assert calls == [0, 1]  # fn ran once per update
        assert RedisStore(server.url, prefix=prefix_for(tmp_path)).get("k").extra["n"] == 2  # type: ignore[union-attr]
    finally:
        proxy.close()
