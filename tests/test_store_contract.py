"""The store contract: one suite, run against every backend in ``conftest.BACKENDS``."""

from __future__ import annotations

import asyncio
import string
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from oauth_callback import ClientInfo, OAuthSession, Tokens, TokenStore

from .conftest import BACKENDS, PERSISTENT, run_python


def tok(n: int | str, **kw: object) -> Tokens:
    return Tokens(access_token=f"at-{n}", **kw)  # type: ignore[arg-type]


class TestBasics:
    def test_empty(self, store: TokenStore) -> None:
        assert store.get("nope") is None
        assert store.keys() == []
        assert store.get_client("nope") is None
        assert store.get_session("nope") is None

    def test_set_get_roundtrip_keeps_every_field(self, store: TokenStore) -> None:
        t = Tokens(
            access_token="a" * 900,
            refresh_token="r" * 300,
            expires_at=1_767_225_600.123,
            scope="read write",
            token_type="DPoP",
            extra={"id_token": "x.y.z", "nested": {"a": [1, 2, None]}, "unicode": "zürich ✓"},
        )
        store.set("k", t)
        got = store.get("k")
        assert got == t
        assert got is not None and dict(got.extra) == dict(t.extra)

    def test_overwrite_and_keys_order(self, store: TokenStore) -> None:
        store.set("b", tok(1))
        store.set("a", tok(2))
        store.set("b", tok(3))
        assert store.keys() == ["b", "a"]
        assert store.get("b") == tok(3)

    def test_delete(self, store: TokenStore) -> None:
        store.set("a", tok(1))
        store.set("b", tok(2))
        store.delete("a")
        store.delete("missing")  # no-op
        assert store.get("a") is None
        assert store.keys() == ["b"]

    def test_clear_removes_tokens_clients_sessions(self, store: TokenStore) -> None:
        store.set("a", tok(1))
        store.set_client("a", ClientInfo("cid"))
        store.set_session("a", OAuthSession("v" * 43, "s"))
        store.clear()
        assert store.keys() == []
        assert store.get_client("a") is None
        assert store.get_session("a") is None

    def test_two_handles_see_each_other(self, store_factory, tmp_path: Path) -> None:
        if store_factory is BACKENDS["memory"]:
            # MemoryStore is per instance by design; one handle sees its own writes.
            s1 = s2 = store_factory(tmp_path)
        else:
            s1, s2 = store_factory(tmp_path), store_factory(tmp_path)
        s1.set("k", tok(1))
        assert s2.get("k") == tok(1)
        s2.set("k", tok(2))
        assert s1.get("k") == tok(2)

    @pytest.mark.parametrize("bad", ["", 3, None])
    def test_bad_keys_raise_typed_errors(self, store: TokenStore, bad: object) -> None:
        with pytest.raises((ValueError, TypeError), match="key"):
            store.set(bad, tok(1))  # type: ignore[arg-type]
        with pytest.raises((ValueError, TypeError), match="key"):
            store.get(bad)  # type: ignore[arg-type]

    def test_set_rejects_non_tokens(self, store: TokenStore) -> None:
        with pytest.raises(TypeError, match="Tokens"):
            store.set("k", {"access_token": "x"})  # type: ignore[arg-type]
        assert store.get("k") is None


class TestUpdate:
    def test_update_creates_modifies_deletes(self, store: TokenStore) -> None:
        assert store.update("k", lambda cur: tok(1) if cur is None else None) == tok(1)
        assert store.update("k", lambda cur: cur.replace(scope="s") if cur else None) == tok(
            1, scope="s"
        )
        assert store.update("k", lambda cur: None) is None
        assert store.get("k") is None

    def test_update_returning_current_writes_nothing(self, store: TokenStore) -> None:
        store.set("k", tok(1))
        seen = []
        result = store.update("k", lambda cur: seen.append(cur) or cur)
        assert result == tok(1) and seen == [tok(1)]
        assert store.get("k") == tok(1)

    def test_update_exception_writes_nothing(self, store: TokenStore) -> None:
        store.set("k", tok(1))

        def boom(cur: Tokens | None) -> Tokens | None:
            raise RuntimeError("nope")

        with pytest.raises(RuntimeError):
            store.update("k", boom)
        assert store.get("k") == tok(1)

    def test_update_wrong_return_type(self, store: TokenStore) -> None:
        with pytest.raises(TypeError, match="Tokens or None"):
            store.update("k", lambda cur: "x")  # type: ignore[arg-type,return-value]
        assert store.get("k") is None

    def test_update_from_threads_loses_nothing(self, store: TokenStore) -> None:
        store.set("counter", Tokens("x", extra={"n": 0}))

        def bump(cur: Tokens | None) -> Tokens:
            assert cur is not None
            return cur.replace(extra={"n": cur.extra["n"] + 1})

        def worker() -> None:
            for _ in range(25):
                store.update("counter", bump)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = store.get("counter")
        assert got is not None and got.extra["n"] == 100


class TestExtras:
    def test_client_roundtrip(self, store: TokenStore) -> None:
        c = ClientInfo(
            "cid", "secret", 1700000000, 0, issuer="https://as.example",
            token_endpoint="https://as.example/token", extra={"client_name": "x"},
        )
        store.set_client("k", c)
        assert store.get_client("k") == c
        store.update_client("k", lambda cur: cur.replace(client_secret="s2") if cur else None)
        got = store.get_client("k")
        assert got is not None and got.client_secret == "s2"
        store.delete_client("k")
        assert store.get_client("k") is None

    def test_session_roundtrip(self, store: TokenStore) -> None:
        s = OAuthSession("v" * 64, "state-1", time.time())
        store.set_session("k", s)
        assert store.get_session("k") == s
        store.delete_session("k")
        assert store.get_session("k") is None

    def test_tokens_clients_sessions_are_independent(self, store: TokenStore) -> None:
        store.set("k", tok(1))
        store.set_client("k", ClientInfo("cid"))
        store.set_session("k", OAuthSession(state="s"))
        store.delete("k")
        assert store.get_client("k") == ClientInfo("cid")
        assert store.get_session("k") == OAuthSession(state="s")
        assert store.keys() == []


class TestAsync:
    def test_async_twins(self, store: TokenStore) -> None:
        async def main() -> None:
            await store.set_async("a", tok(1))
            assert await store.get_async("a") == tok(1)
            assert await store.keys_async() == ["a"]
            new = await store.update_async("a", lambda cur: tok(2))
            assert new == tok(2)
            await store.set_client_async("a", ClientInfo("c"))
            assert await store.get_client_async("a") == ClientInfo("c")
            await store.set_session_async("a", OAuthSession(state="s"))
            assert await store.get_session_async("a") == OAuthSession(state="s")
            await store.delete_session_async("a")
            await store.delete_client_async("a")
            await store.delete_async("a")
            assert await store.get_async("a") is None
            await store.set_async("b", tok(3))
            await store.clear_async()
            assert await store.keys_async() == []

        asyncio.run(main())

    def test_async_does_not_block_the_loop(self, store: TokenStore) -> None:
        """While many writes run, the loop keeps ticking."""

        async def main() -> int:
            ticks = 0
            done = asyncio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            for i in range(20):
                await store.set_async(f"k{i}", tok(i))
            done.set()
            await task
            return ticks

        ticks = asyncio.run(main())
        assert ticks >= 20  # the loop ran between (and during) the writes
        assert len(store.keys()) == 20


# --------------------------------------------------------------------------- stateful


keys_st = st.sampled_from(["a", "b", "c", "key with space", "ünï"])
tokens_st = st.builds(
    Tokens,
    access_token=st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=30),
    refresh_token=st.none() | st.text(string.ascii_letters, min_size=1, max_size=20),
    expires_at=st.none() | st.integers(0, 4_000_000_000_000).map(lambda ms: ms / 1000),
    scope=st.none() | st.text(string.ascii_lowercase + " ", max_size=20),
    extra=st.dictionaries(
        st.text(string.ascii_lowercase, min_size=1, max_size=8).filter(
            lambda k: k not in ("accessToken", "refreshToken", "expiresAt", "scope", "tokenType")
        ),
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
        max_size=3,
    ),
)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_stateful_against_dict_model(backend: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    class StoreMachine(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            self.path = tmp_path_factory.mktemp("stateful")
            self.store = BACKENDS[backend](self.path)
            self.model: dict[str, Tokens] = {}
            self.clients: dict[str, ClientInfo] = {}

        @rule(key=keys_st, value=tokens_st)
        def set(self, key: str, value: Tokens) -> None:
            self.store.set(key, value)
            self.model[key] = value

        @rule(key=keys_st)
        def delete(self, key: str) -> None:
            self.store.delete(key)
            self.model.pop(key, None)

        @rule(key=keys_st, value=tokens_st, drop=st.booleans())
        def update(self, key: str, value: Tokens, drop: bool) -> None:
            new = None if drop else value
            self.store.update(key, lambda cur: new)
            if new is None:
                self.model.pop(key, None)
            else:
                self.model[key] = new

        @rule(key=keys_st, cid=st.text(string.ascii_letters, min_size=1, max_size=10))
        def set_client(self, key: str, cid: str) -> None:
            self.store.set_client(key, ClientInfo(cid))
            self.clients[key] = ClientInfo(cid)

        @rule()
        def clear(self) -> None:
            self.store.clear()
            self.model.clear()
            self.clients.clear()

        @rule()
        def reopen(self) -> None:
            if backend != "memory":
                self.store = BACKENDS[backend](self.path)

        @invariant()
        def matches_model(self) -> None:
            if not hasattr(self, "store"):
                return
            assert sorted(self.store.keys()) == sorted(self.model)
            for k, v in self.model.items():
                assert self.store.get(k) == v
            for k, c in self.clients.items():
                assert self.store.get_client(k) == c

    StoreMachine.TestCase.settings = settings(
        max_examples=25, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    StoreMachine.TestCase().runTest()


# --------------------------------------------------------------------------- processes

# A set() that times out waiting for the store's lock (StoreLockTimeout: 8 writers
# contend, and on a loaded machine one may wait past the lock timeout) wrote
# nothing: the writer checks that, and sets the key again. A lost update is a set()
# that returned but whose key is missing at the end: nothing here hides one.
WRITER = """
import sys
from oauth_callback.storage.url import open_store
from oauth_callback import StoreLockTimeout, Tokens
store = open_store(sys.argv[1])
worker, count = int(sys.argv[2]), int(sys.argv[3])
timeouts = 0
for i in range(count):
    key = f"w{worker}-{i}"
    while True:
        try:
            store.set(key, Tokens(access_token=f"token-{worker}-{i}-" + "x" * 200))
            break
        except StoreLockTimeout:
            timeouts += 1
            assert store.get(key) is None, "a set() that timed out wrote its key"
print("done", timeouts)
"""

READER = """
import sys, time
from oauth_callback.storage.url import open_store
store = open_store(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
seen_max = 0
checks = 0
while time.monotonic() < deadline:
    keys = set(store.keys())
    assert "old-0" in keys and "old-1" in keys, "an old key vanished"
    assert len(keys) >= seen_max, f"key count went back from {seen_max} to {len(keys)}"
    seen_max = len(keys)
    assert store.get("old-0").access_token == "old-token-0"
    checks += 1
print(checks, seen_max)
"""


@pytest.mark.slow
@pytest.mark.timeout(900)  # 1600 contended writes: minutes on a loaded machine
@pytest.mark.parametrize("backend", sorted(PERSISTENT))
def test_many_processes_lose_no_update(backend: str, tmp_path: Path) -> None:
    """8 processes x 200 set() of distinct keys; readers meanwhile never see a bad state."""
    import subprocess
    import sys

    from .conftest import python_env

    url = PERSISTENT[backend](tmp_path)
    BACKENDS[backend](tmp_path)  # make sure the location exists
    from oauth_callback.storage.url import open_store

    seed = open_store(url)
    seed.set("old-0", Tokens("old-token-0", refresh_token="r0"))
    seed.set("old-1", Tokens("old-token-1", refresh_token="r1"))
    env = python_env()
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, url, "6"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, str(w), "200"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for w in range(8)
    ]
    for p in writers:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert out.split()[0] == "done", out
    for p in readers:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        checks, _ = map(int, out.split())
        assert checks > 0
    final = open_store(url)
    keys = set(final.keys())
    expected = {f"w{w}-{i}" for w in range(8) for i in range(200)} | {"old-0", "old-1"}
    assert keys == expected, f"missing {len(expected - keys)} keys"
    assert final.get("w3-150") == Tokens("token-3-150-" + "x" * 200)


@pytest.mark.parametrize("backend", sorted(PERSISTENT))
def test_child_process_sees_writes(backend: str, tmp_path: Path) -> None:
    url = PERSISTENT[backend](tmp_path)
    BACKENDS[backend](tmp_path)
    run_python(WRITER, url, "0", "3")
    from oauth_callback.storage.url import open_store

    assert sorted(open_store(url).keys()) == ["w0-0", "w0-1", "w0-2"]


def test_keys_must_be_valid_unicode_on_every_backend(store: TokenStore) -> None:
    """A lone surrogate cannot be stored as UTF-8 by every backend: refused by all alike."""
    with pytest.raises(ValueError, match="Unicode"):
        store.set("\ud800x", Tokens("x"))
    assert store.keys() == []


class TestPublicApiOfIssue11:
    """update_session, keys of every section and check_key: what migrate, the MCP
    adapter and the CLI use instead of the backends' private methods."""

    def test_update_session(self, store: TokenStore) -> None:
        s = OAuthSession("v" * 64, "state-1", time.time())
        assert store.update_session("k", lambda cur: s if cur is None else cur) == s
        assert store.get_session("k") == s
        same = store.update_session("k", lambda cur: cur)
        assert same == s
        with pytest.raises(TypeError, match="OAuthSession or None"):
            store.update_session("k", lambda cur: "x")  # type: ignore[arg-type,return-value]
        assert store.update_session("k", lambda cur: None) is None
        assert store.get_session("k") is None

    def test_keys_of_every_section(self, store: TokenStore) -> None:
        store.set("t", tok(1))
        store.set_client("c", ClientInfo("cid"))
        store.set_session("s", OAuthSession("v" * 64, "st", time.time()))
        store.set_client("t", ClientInfo("cid2"))
        assert store.keys() == store.keys("tokens") == ["t"]
        assert sorted(store.keys("clients")) == ["c", "t"]
        assert store.keys("sessions") == ["s"]
        with pytest.raises(ValueError, match="section"):
            store.keys("bogus")  # type: ignore[arg-type]

    def test_check_key(self, store: TokenStore) -> None:
        assert store.check_key("ok") == "ok"
        for bad in ("", "\ud800"):
            with pytest.raises(ValueError):
                store.check_key(bad)
        with pytest.raises(TypeError):
            store.check_key(3)  # type: ignore[arg-type]
        for reserved in store.reserved_keys:
            with pytest.raises(ValueError, match="reserved"):
                store.check_key(reserved)

    @pytest.mark.asyncio
    async def test_async_twins(self, store: TokenStore) -> None:
        s = OAuthSession("v" * 64, "state-2", time.time())
        assert await store.update_session_async("k", lambda cur: s) == s
        assert await store.keys_async("sessions") == ["k"]
        assert await store.update_session_async("k", lambda cur: None) is None


PLAIN_BACKENDS = sorted(name for name in BACKENDS if not name.startswith("encrypted-"))


@pytest.mark.parametrize("backend", PLAIN_BACKENDS)
def test_encrypted_record_read_without_encryption_raises(backend: str, tmp_path: Path) -> None:
    """A store opened without encryption never hands out the "$encrypted" placeholder of
    an encrypted record as a token (or client, or session): reads and read-modify-writes
    raise StoreEncryptedError naming the key and the option that opens it; nothing changes."""
    from oauth_callback.errors import StoreEncryptedError, StoreError
    from oauth_callback.storage.encrypted import ENVELOPE_FIELD, EncryptedStore

    from .conftest import ENCRYPTION_KEY_SOURCE

    factory = BACKENDS[backend]
    plain = factory(tmp_path)
    encrypted = EncryptedStore(plain, ENCRYPTION_KEY_SOURCE)
    secret = "at-SECRET-encrypted-0123456789"
    encrypted.set("k", Tokens(secret, refresh_token="rt-SECRET-0123456789"))
    encrypted.set_client("k", ClientInfo("cid", client_secret="cs-SECRET-0123456789"))
    encrypted.set_session("k", OAuthSession("v" * 43, "state-SECRET-0123456789"))
    reopened = plain if backend == "memory" else factory(tmp_path)  # without encryption
    assert ENVELOPE_FIELD == "$encrypted"
    for operation in (
        lambda: reopened.get("k"),
        lambda: reopened.get_client("k"),
        lambda: reopened.get_session("k"),
        lambda: reopened.update("k", lambda cur: cur),
        lambda: reopened.update_client("k", lambda cur: None),
        lambda: reopened.update_session("k", lambda cur: None),
        lambda: asyncio.run(reopened.get_async("k")),
    ):
        with pytest.raises(StoreEncryptedError) as info:
            operation()
        error = info.value
        assert isinstance(error, StoreError) and error.key == "k"
        assert "'k'" in str(error) and "is encrypted" in str(error)
        assert "?encryption=" in str(error) and error.key_id == encrypted.key_id
        assert "SECRET" not in str(error)
    assert reopened.keys() == ["k"]
    assert encrypted.get("k") == Tokens(secret, refresh_token="rt-SECRET-0123456789")
    assert encrypted.get_client("k") == ClientInfo("cid", client_secret="cs-SECRET-0123456789")
    assert encrypted.get_session("k") == OAuthSession("v" * 43, "state-SECRET-0123456789")
    reopened.close()


@pytest.mark.parametrize("backend", PLAIN_BACKENDS)
def test_encrypted_record_is_not_replaced_without_encryption(backend: str, tmp_path: Path) -> None:
    """``set``/``set_client``/``set_session`` through a store opened without encryption
    never replace an encrypted record with a plaintext one (a silent downgrade): they
    raise StoreEncryptedError naming the key and ``?encryption=``, and write nothing. The
    check runs inside the backend's read-modify-write: a stale ``_read`` does not defeat it.
    ``delete`` still removes encrypted records (logout needs no key), and plaintext
    records are per record: another key, or the same key once deleted, is written in clear."""
    from oauth_callback.errors import StoreEncryptedError
    from oauth_callback.storage.encrypted import ENVELOPE_FIELD, EncryptedStore

    from .conftest import ENCRYPTION_KEY_SOURCE

    factory = BACKENDS[backend]
    plain = factory(tmp_path)
    encrypted = EncryptedStore(plain, ENCRYPTION_KEY_SOURCE)
    tokens = Tokens("at-SECRET-encrypted-0123456789", refresh_token="rt-SECRET-0123456789")
    client = ClientInfo("cid", client_secret="cs-SECRET-0123456789")
    session = OAuthSession("v" * 43, "state-SECRET-0123456789")
    encrypted.set("k", tokens)
    encrypted.set_client("k", client)
    encrypted.set_session("k", session)
    reopened = plain if backend == "memory" else factory(tmp_path)  # without encryption
    reopened._read = lambda section, key: None  # type: ignore[method-assign]  # a stale read
    for section, operation in (
        ("tokens", lambda: reopened.set("k", Tokens("at-plain"))),
        ("clients", lambda: reopened.set_client("k", ClientInfo("cid-plain"))),
        ("sessions", lambda: reopened.set_session("k", OAuthSession("p" * 43, "st"))),
        ("tokens", lambda: asyncio.run(reopened.set_async("k", Tokens("at-plain")))),
        ("clients", lambda: asyncio.run(reopened.set_client_async("k", ClientInfo("c")))),
    ):
        with pytest.raises(StoreEncryptedError) as info:
            operation()
        error = info.value
        assert (error.key, error.section, error.key_id) == ("k", section, encrypted.key_id)
        assert "'k'" in str(error) and "is encrypted" in str(error)
        assert "not replaced by a plaintext record" in str(error)
        assert "?encryption=" in str(error) and "SECRET" not in str(error)
    del reopened._read
    assert encrypted.get("k") == tokens  # unchanged, and still encrypted at rest
    assert encrypted.get_client("k") == client
    assert encrypted.get_session("k") == session
    for section in ("tokens", "clients", "sessions"):
        assert ENVELOPE_FIELD in plain._read(section, "k").extra
    reopened.set("other", Tokens("at-plain-other"))  # a plaintext record beside them: fine
    assert encrypted.get("other") == Tokens("at-plain-other")
    reopened.delete("k")
    reopened.delete_client("k")
    reopened.delete_session("k")
    assert reopened.keys() == ["other"] and encrypted.get("k") is None
    assert reopened.keys("clients") == [] and reopened.keys("sessions") == []
    reopened.set("k", Tokens("at-plain-again"))  # nothing encrypted left under "k"
    assert reopened.get("k") == Tokens("at-plain-again")
    reopened.close()
