"""SQLiteStore specifics: real processes, SIGKILL mid-transaction, corruption, file modes.

The API itself is covered by the contract suite (``test_store_contract.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from oauth_callback import (
    ClientInfo,
    StoreCorruptError,
    StoreError,
    StoreLockTimeout,
    Tokens,
)
from oauth_callback.storage import SQLiteStore
from oauth_callback.storage.url import open_store

from .conftest import python_env, run_python

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and file modes")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.db"


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=python_env(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


# --------------------------------------------------------------------------- processes

WRITER = """
import sys
from oauth_callback import Tokens
from oauth_callback.storage import SQLiteStore
store = SQLiteStore(sys.argv[1])
worker, count = int(sys.argv[2]), int(sys.argv[3])

def bump(cur):
    return cur.replace(extra={"n": cur.extra["n"] + 1, "last": worker})

for i in range(count):
    store.set(f"w{worker}-{i}", Tokens(f"token-{worker}-{i}"))
    store.update("counter", bump)
print("done")
"""


def test_eight_processes_lose_nothing(path: Path) -> None:
    store = SQLiteStore(path)
    store.set("counter", Tokens("c", extra={"n": 0}))
    workers, count = 8, 60
    procs = [spawn(WRITER, str(path), str(w), str(count)) for w in range(workers)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.strip() == "done"
    expected = {f"w{w}-{i}" for w in range(workers) for i in range(count)} | {"counter"}
    assert set(store.keys()) == expected
    counter = store.get("counter")
    assert counter is not None and counter.extra["n"] == workers * count
    assert store.get("w5-42") == Tokens("token-5-42")


# A child that holds the write transaction open, then is SIGKILLed by the parent.
KILLED_IN_FN = """
import sys, time
from oauth_callback import Tokens
from oauth_callback.storage import SQLiteStore
store = SQLiteStore(sys.argv[1])

def fn(cur):
    print("READY", flush=True)
    time.sleep(60)
    return Tokens("never-written")

store.update("victim", fn)
"""

# A child that has already written (uncommitted) pages to the WAL when it dies:
# a tiny page cache forces SQLite to spill the transaction before COMMIT.
KILLED_AFTER_WRITES = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size=1")
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE records SET record = ? WHERE section = 'tokens' AND key = 'victim'",
             ('{"accessToken": "never-committed"}',))
for i in range(300):
    conn.execute("INSERT INTO records (section, key, record) VALUES ('tokens', ?, ?)",
                 (f"junk-{i}", '{"accessToken": "' + "j" * 500 + '"}'))
print("READY", flush=True)
time.sleep(60)
"""

NEXT_WRITER = """
import sys, time
from oauth_callback import Tokens
from oauth_callback.storage import SQLiteStore
SQLiteStore(sys.argv[1], timeout=10).set("after", Tokens("after-crash"))
print("written")
"""


@posix_only
@pytest.mark.parametrize("child", [KILLED_IN_FN, KILLED_AFTER_WRITES], ids=["in-fn", "after-writes"])
def test_sigkill_inside_transaction_leaves_old_value(path: Path, child: str) -> None:
    store = SQLiteStore(path)
    store.set("victim", Tokens("old-value", refresh_token="r"))
    store.set_client("victim", ClientInfo("cid"))
    proc = spawn(child, str(path))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        if child is KILLED_AFTER_WRITES:  # the uncommitted pages really are in the WAL
            assert os.path.getsize(f"{path}-wal") > 100_000
        # While the child holds the write lock: readers are not blocked (WAL) ...
        assert store.get("victim") == Tokens("old-value", refresh_token="r")
        # ... and a writer gives up after its timeout, naming the file.
        impatient = SQLiteStore(path, timeout=0.3)
        start = time.monotonic()
        with pytest.raises(StoreLockTimeout) as info:
            impatient.set("other", Tokens("x"))
        assert time.monotonic() - start >= 0.25  # it waited its timeout, then gave up
        assert info.value.path == str(path) and str(path) in str(info.value)
        impatient.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    # The next write, from another process, succeeds (a stale lock would make its
    # 10 s lock timeout fail it; no wall-clock bound to race on a loaded machine).
    out = run_python(NEXT_WRITER, str(path), timeout=60).stdout
    assert out.strip() == "written"
    # This handle, and a fresh one, see the old value and the new write, nothing else.
    for s in (store, SQLiteStore(path)):
        assert s.get("victim") == Tokens("old-value", refresh_token="r")
        assert s.get_client("victim") == ClientInfo("cid")
        assert s.get("after") == Tokens("after-crash")
        assert s.keys() == ["victim", "after"]
    store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


# --------------------------------------------------------------------------- corruption


@pytest.mark.parametrize(
    "data",
    [b"x", b"{}\n", b"not a database at all " * 400, b"SQLite format 3\x00" + b"\xff" * 4080],
    ids=["one-byte", "json", "text", "bad-header"],
)
def test_corrupt_database_file_raises_and_is_left_alone(path: Path, data: bytes) -> None:
    path.parent.mkdir()
    path.write_bytes(data)
    os.chmod(path, 0o600)
    store = SQLiteStore(path)
    for op in (lambda: store.get("k"), store.keys, lambda: store.set("k", Tokens("a")),
               lambda: store.update("k", lambda cur: cur), store.clear):
        with pytest.raises(StoreCorruptError) as info:
            op()
        assert info.value.path == str(path)
        assert str(path) in str(info.value)
    assert path.read_bytes() == data
    assert sorted(os.listdir(path.parent)) == ["tokens.db"]


def test_damaged_pages_raise_store_corrupt_error(path: Path) -> None:
    store = SQLiteStore(path)
    for i in range(50):
        store.set(f"k{i}", Tokens("a" * 200))
    store.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    data[4096:8192] = b"\xa5" * 4096  # smash page 2, keep the header intact
    path.write_bytes(bytes(data))
    reopened = SQLiteStore(path)
    for op in (reopened.keys, lambda: reopened.set("new", Tokens("x"))):
        with pytest.raises(StoreCorruptError, match=r"tokens\.db"):
            op()
    assert path.read_bytes() == bytes(data)


def test_corrupt_record_names_the_key_and_repair_moves_it_aside(path: Path) -> None:
    store = SQLiteStore(path)
    store.set("good", Tokens("g"))
    store.set("bad", Tokens("b"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE records SET record = '{\"accessToken\": ' WHERE key = 'bad'")
    conn.close()
    with pytest.raises(StoreCorruptError, match="'bad'"):
        store.get("bad")
    with pytest.raises(StoreCorruptError, match="'bad'"):
        store.update("bad", lambda cur: Tokens("overwritten"))
    assert store.get("good") == Tokens("g")  # other keys unaffected
    assert store.keys() == ["good", "bad"]
    assert store.repair() == [("tokens", "bad")]
    assert store.get("bad") is None and store.keys() == ["good"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT key FROM corrupt_records").fetchall() == [("bad",)]
    conn.close()


def test_newer_schema_is_read_but_never_modified(path: Path) -> None:
    store = SQLiteStore(path)
    store.set("k", Tokens("a"))
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    conn.close()
    newer = SQLiteStore(path)
    assert newer.get("k") == Tokens("a")
    with pytest.raises(StoreError, match="newer version"):
        newer.set("k", Tokens("b"))
    assert newer.get("k") == Tokens("a")


# --------------------------------------------------------------------------- files and format

MODES = """
import os, stat, sys
os.umask(0)
from oauth_callback import Tokens
from oauth_callback.storage import SQLiteStore
path = sys.argv[1]
store = SQLiteStore(path)
store.set("k", Tokens("a"))
names = [os.path.dirname(os.path.dirname(path)), os.path.dirname(path),
         path, path + "-wal", path + "-shm"]
print(" ".join(oct(stat.S_IMODE(os.stat(n).st_mode)) for n in names))
"""


@posix_only
def test_file_modes_with_umask_000(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "tokens.db"
    out = run_python(MODES, str(path)).stdout.split()
    assert out == ["0o700", "0o700", "0o600", "0o600", "0o600"]


@posix_only
def test_loose_existing_files_are_tightened(path: Path) -> None:
    first = SQLiteStore(path)
    first.set("k", Tokens("a"))  # -wal/-shm exist while a connection is open
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        os.chmod(name, 0o644)
    store = SQLiteStore(path)
    assert store.get("k") == Tokens("a")
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert mode_of(name) == 0o600
    first.close()


def test_reads_of_a_missing_store_create_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "missing" / "tokens.db")
    assert store.get("k") is None and store.keys() == [] and store.get_client("k") is None
    assert not (tmp_path / "missing").exists()


def test_records_are_the_models_json_records(path: Path) -> None:
    """Migration between backends is lossless: each row is exactly ``to_record()``."""
    t = Tokens("at", refresh_token="rt", expires_at=1_767_225_600.5, scope="s",
               extra={"id_token": "x.y.z", "unknownField": [1, {"a": None}], "ü": "✓"})
    c = ClientInfo("cid", "secret", extra={"client_name": "n"})
    store = SQLiteStore(path)
    store.set("k", t)
    store.set_client("k", c)
    with sqlite3.connect(path) as conn:
        rows = dict(((s, k), json.loads(r)) for s, k, r in
                    conn.execute("SELECT section, key, record FROM records"))
        version = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    conn.close()
    assert rows == {("tokens", "k"): t.to_record(), ("clients", "k"): c.to_record()}
    assert version == ("1",)
    assert Tokens.from_record(rows[("tokens", "k")]) == t


def test_refresh_lock_path_matches_filestore_scheme(path: Path) -> None:
    store = SQLiteStore(path)
    digest = hashlib.sha256(b"github").hexdigest()[:16]
    lock = store.refresh_lock("github", timeout=1)
    assert lock.path == f"{os.path.realpath(path)}.refresh-{digest}.lock"
    with lock:
        assert lock.is_locked


def test_open_store_sqlite_urls(path: Path) -> None:
    for url in (f"sqlite:{path}", f"sqlite://{path}"):
        store = open_store(url, durable=False)
        assert isinstance(store, SQLiteStore)
        assert store.path == str(path) and store.durable is False
    with pytest.raises(ValueError, match="sqlite:PATH"):
        open_store("sqlite:")


def test_closed_store_refuses_use(path: Path) -> None:
    store = SQLiteStore(path)
    store.set("k", Tokens("a"))
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("k")


@pytest.mark.parametrize(("durable", "level"), [(True, 2), (False, 1)])
def test_synchronous_pragma_follows_durable(path: Path, durable: bool, level: int) -> None:
    """durable=True is synchronous=FULL (2), durable=False NORMAL (1), on the store's own
    connection (the pragma is per connection)."""
    store = SQLiteStore(path, durable=durable)
    store.set("k", Tokens("x"))
    conn = store._conn
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
    assert str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
    store.close()
