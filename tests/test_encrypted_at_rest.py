"""Secrets never on disk in clear: every byte an encrypted store leaves behind is grepped.

For the file and SQLite stores a real child process does the writes under
``strace``, which records every byte the process hands to ``write``/``pwrite``
(temporary files, backups, the SQLite WAL included); a second child is killed
by ``strace`` in the middle of a write, so a stale temporary file or a hot WAL
stays on disk; then every file left in the directory (store, ``.bak``,
``.corrupt-*``, temporary files, ``-wal``, ``-shm``, locks) is read. For Redis,
every value under every key and the server's append-only files; for a
``KeyringStore``, the file of keyrings.alt's plaintext backend. Each search
looks for every token, client secret, PKCE verifier and state, raw, hex and
base64/base64url encoded at each alignment.

Each test also runs unencrypted, where the same search must find the secrets:
proof that the search would see them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from oauth_callback import FileStore, Tokens
from oauth_callback.storage.encrypted import EncryptedStore
from oauth_callback.storage.key_sources import encode_key, generate_key

from .conftest import python_env, requires_strace

KINDS = ("access", "refresh", "idtoken", "access2", "refresh2", "clientsecret", "verifier",
         "state", "last")


def make_secrets() -> dict[str, str]:
    return {kind: f"{kind}-{secrets.token_hex(16)}" for kind in KINDS}


def forms(secret: str) -> list[bytes]:
    """Encodings of ``secret`` as they could appear inside a larger blob."""
    raw = secret.encode()
    found = {raw, raw.hex().encode(), raw.hex().upper().encode()}
    for start in range(3):  # a base64 blob may hold the secret at any byte offset
        chunk = raw[start:start + (len(raw) - start) // 3 * 3]
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            found.add(encode(chunk))
    return sorted(found)


def secrets_in(blob: bytes, values: dict[str, str]) -> list[str]:
    return [kind for kind, secret in values.items() if any(f in blob for f in forms(secret))]


def files_under(root: Path) -> dict[str, bytes]:
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = path.read_bytes()
    return found


# What every backend is put through: tokens (with an id token), a client with a
# secret, a session with a verifier, an update rotating the tokens, a delete.
EXERCISE = """
from oauth_callback import ClientInfo, OAuthSession, Tokens

def exercise(store, S):
    for n in ("a", "b", "c"):
        store.set(n, Tokens(S["access"] + n, refresh_token=S["refresh"] + n,
                            expires_at=2e9, extra={"id_token": S["idtoken"] + n}))
        store.set_client(n, ClientInfo("client-" + n, client_secret=S["clientsecret"] + n))
        store.set_session(n, OAuthSession(S["verifier"] + n, S["state"] + n))
    store.update("a", lambda cur: cur.replace(access_token=S["access2"],
                                              refresh_token=S["refresh2"]))
    store.delete("b")
    store.delete_session("c")
    store.set("d", Tokens(S["access"] + "d"))  # another rewrite: the backup holds the last
"""

CHILD = EXERCISE + """
import json, os, sys
from oauth_callback import FileStore, Tokens
from oauth_callback.storage import SQLiteStore
from oauth_callback.storage.encrypted import EncryptedStore

kind, path, encrypted, action = sys.argv[1:5]
S = json.loads(os.environ["OC_TEST_SECRETS"])
inner = FileStore(path) if kind == "file" else SQLiteStore(path)
store = EncryptedStore(inner, "env:OC_TEST_KEY") if encrypted == "1" else inner
if action == "exercise":
    exercise(store, S)
else:  # one more write, during which strace kills the process
    store.get("a")
    store.set("e", Tokens(S["last"]))
    os.kill(os.getpid(), 9)
"""


def run_child(tmp_path: Path, kind: str, store_path: Path, encrypted: bool, action: str,
              values: dict[str, str], key: bytes, *strace_args: str) -> Path:
    trace = tmp_path / f"trace-{action}.txt"
    env = python_env()
    env["OC_TEST_SECRETS"] = json.dumps(values)
    env["OC_TEST_KEY"] = encode_key(key)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = ["strace", "-f", "-qq", "-o", str(trace), "-s", "4194304", "-xx",
           "-e", "trace=write,pwrite64,writev,pwritev,pwritev2,rename,renameat,renameat2,"
           "fsync,fdatasync", *strace_args,
           sys.executable, "-c", textwrap.dedent(CHILD), kind, str(store_path),
           "1" if encrypted else "0", action]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if action == "exercise":
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == -9 or "+++ killed by SIGKILL" in trace.read_text(), (
            result.returncode, result.stderr)
    return trace


def written_bytes(trace: Path) -> bytes:
    """Every string argument strace printed (the data of every write call), as bytes."""
    chunks = []
    for match in re.finditer(r'"((?:\\x[0-9a-f]{2})+)"', trace.read_text()):
        chunks.append(bytes.fromhex(match.group(1).replace("\\x", "")))
    return b"\n".join(chunks)


@requires_strace
@pytest.mark.parametrize("kind", ["file", "sqlite"])
@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plaintext-control"])
def test_no_secret_byte_on_disk(tmp_path: Path, kind: str, encrypted: bool) -> None:
    values = make_secrets()
    key = generate_key()
    directory = tmp_path / "store"
    store_path = directory / ("tokens.json" if kind == "file" else "tokens.db")
    traces = [run_child(tmp_path, kind, store_path, encrypted, "exercise", values, key)]
    # Killed during a write: the file store's child by strace at the rename of its
    # temporary file, the SQLite child by itself right after the commit (the WAL
    # and -shm are never checkpointed away). What the dead process left stays.
    kill = ("-e", "inject=rename:signal=SIGKILL:when=1") if kind == "file" else ()
    traces.append(run_child(tmp_path, kind, store_path, encrypted, "killed", values, key, *kill))
    left = files_under(directory)
    if kind == "file":
        assert any(name.endswith(".tmp") for name in left), sorted(left)  # the stale temp file
        assert "tokens.json.bak" in left
        # Damage the file: the next write moves it aside as tokens.json.corrupt-*.
        store_path.write_bytes(store_path.read_bytes()[: len(store_path.read_bytes()) // 2])
        store = FileStore(store_path)
        reopened = EncryptedStore(store, f"env:{_set_env_key(key)}") if encrypted else store
        reopened.set("f", Tokens("after-repair"))
        left = files_under(directory)
        assert any(".corrupt-" in name for name in left), sorted(left)
    else:
        assert "tokens.db-wal" in left and "tokens.db-shm" in left, sorted(left)
    on_disk = b"\n".join(left.values())
    written = b"\n".join(written_bytes(t) for t in traces)
    assert written  # strace saw the writes
    if encrypted:
        assert secrets_in(on_disk, values) == [], sorted(left)
        assert secrets_in(written, values) == []
    else:
        assert set(secrets_in(on_disk, values)) >= {"access", "refresh", "clientsecret",
                                                    "verifier"}
        assert set(secrets_in(written, values)) == set(KINDS)


_ENV_KEY_VAR = "OC_TEST_AT_REST_KEY"


def _set_env_key(key: bytes) -> str:
    os.environ[_ENV_KEY_VAR] = encode_key(key)
    return _ENV_KEY_VAR


@pytest.fixture(autouse=True)
def _drop_env_key() -> object:
    yield
    os.environ.pop(_ENV_KEY_VAR, None)


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plaintext-control"])
def test_no_secret_byte_in_redis(tmp_path: Path, encrypted: bool) -> None:
    from .redis_server import RedisServer, require_redis

    require_redis()
    from oauth_callback.storage.redis import RedisStore

    values = make_secrets()
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        inner = RedisStore(server.url_for("at-rest"))
        key = generate_key()
        store = EncryptedStore(inner, f"env:{_set_env_key(key)}") if encrypted else inner
        namespace: dict[str, object] = {}
        exec(EXERCISE, namespace)  # the same exercise as the file and SQLite children
        namespace["exercise"](store, values)  # type: ignore[operator]
        client = server.client()
        stored = []
        for rkey in client.scan_iter(match="*", count=1000):
            stored.append(rkey)
            kind = client.type(rkey)
            if kind == b"string":
                stored.append(client.get(rkey))
            stored.append(client.dump(rkey) or b"")
        assert len(stored) > 10
        client.close()
        store.close()
    finally:
        server.stop()
    blob = b"\n".join(stored) + b"\n".join(files_under(tmp_path / "redis").values())
    assert b"at-rest" in blob  # the key names are there, readable
    if encrypted:
        assert secrets_in(blob, values) == []
    else:
        assert set(secrets_in(blob, values)) >= {"access", "refresh", "clientsecret", "verifier"}


@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plaintext-control"])
def test_no_secret_byte_in_a_keyring_file(tmp_path: Path, encrypted: bool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """KeyringStore on keyrings.alt's plaintext file backend: the file a keychain would be."""
    pytest.importorskip("keyring")
    from oauth_callback.storage.keyring import KeyringStore

    from .test_keyring_store import plaintext

    monkeypatch.setenv("OAUTH_CALLBACK_LOCK_DIR", str(tmp_path / "locks"))
    values = make_secrets()
    inner = KeyringStore("oc-at-rest", keyring_backend=plaintext(tmp_path))
    store = EncryptedStore(inner, f"env:{_set_env_key(generate_key())}") if encrypted else inner
    namespace: dict[str, object] = {}
    exec(EXERCISE, namespace)
    namespace["exercise"](store, values)  # type: ignore[operator]
    raw = b"\n".join(files_under(tmp_path / "kr").values())
    # keyrings.alt stores base64 wrapped over lines ("\n\t"): search it unwrapped too.
    blob = raw + b"\n" + raw.replace(b"\n\t", b"")
    assert b"oc_2Dat_2Drest" in blob  # the service name (escaped by keyrings.alt)
    if encrypted:
        assert secrets_in(blob, values) == []
    else:
        assert set(secrets_in(blob, values)) >= {"access", "refresh", "clientsecret", "verifier"}
