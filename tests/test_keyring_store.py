"""KeyringStore: backend choice, entry layout, crash consistency of the key index, errors.

The contract suite runs against KeyringStore too (``conftest.BACKENDS["keyring"]``)
on :class:`DirKeyring` below: one file per entry, written atomically, so the
8-process test stays fast (keyrings.alt's PlaintextKeyring rewrites one INI
file per call, which is O(n) per entry and far too slow for 1600 keys). The
tests here use the real ``keyrings.alt.file.PlaintextKeyring``.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

try:
    import keyring
    import keyring.backend
    import keyring.core
    import keyring.errors
    from keyring.backends import chainer, fail, null
    from keyrings.alt.file import PlaintextKeyring  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - the test extra installs both
    pytest.skip("needs keyring and keyrings.alt (pip install -e '.[test]')",
                allow_module_level=True)

from oauth_callback import ClientInfo, OAuthSession, Tokens
from oauth_callback.errors import (
    StoreCorruptError,
    StoreError,
    StoreLockTimeout,
    StoreUnavailableError,
)
from oauth_callback.storage.keyring import (
    INDEX_USERNAME,
    LOCK_DIR_ENV_VAR,
    KeyringStore,
    default_lock_dir,
    entry_username,
)
from oauth_callback.storage.url import open_store

from .conftest import ROOT, run_python

DIR_ENV_VAR = "OAUTH_CALLBACK_TEST_KEYRING_DIR"
_CONTRACT_LOCK_DIR_VAR = "OAUTH_CALLBACK_TEST_KEYRING_LOCKS"
SECRET = "at-SECRET-0123456789-abcdefghij"


class DirKeyring(keyring.backend.KeyringBackend):
    """A test keyring backend: one file per entry under ``$OAUTH_CALLBACK_TEST_KEYRING_DIR``.

    Each write is a whole-file replace, so lock-free readers of other
    processes never see a partial entry. Priority 0.1: keyring never picks it
    by itself, and KeyringStore takes it only when chosen explicitly
    (``PYTHON_KEYRING_BACKEND=tests.test_keyring_store.DirKeyring``).
    """

    priority = 0.1

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._root = None if root is None else Path(root)

    @property
    def root(self) -> Path:
        if self._root is not None:
            return self._root
        configured = os.environ.get(DIR_ENV_VAR)
        if not configured:
            raise keyring.errors.InitError(f"DirKeyring needs ${DIR_ENV_VAR}")
        return Path(configured)

    def _path(self, service: str, username: str) -> Path:
        name = hashlib.sha256(f"{service}\0{username}".encode()).hexdigest()
        return self.root / name

    def get_password(self, service: str, username: str) -> str | None:
        try:
            return self._path(service, username).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def set_password(self, service: str, username: str, password: str) -> None:
        path = self._path(service, username)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(password, encoding="utf-8")
        os.replace(tmp, path)

    def delete_password(self, service: str, username: str) -> None:
        try:
            self._path(service, username).unlink()
        except FileNotFoundError:
            raise keyring.errors.PasswordDeleteError("no such entry") from None


# --------------------------------------------------------------------------- for conftest


def _use_dir_keyring() -> None:
    """Point this process and its children at one DirKeyring and lock directory.

    Both live in one temporary directory per test session, created by the
    first caller and found by children through ``os.environ`` (which they
    inherit); in this process ``keyring.set_keyring`` makes the URL form
    (``open_store("keyring:...")``) use the same backend. Stores are told apart
    by their service name, so the location never changes under an open store.
    """
    if not os.environ.get(DIR_ENV_VAR):
        base = tempfile.mkdtemp(prefix="oauth-callback-test-keyring-")
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        os.environ[DIR_ENV_VAR] = os.path.join(base, "entries")
        os.environ[_CONTRACT_LOCK_DIR_VAR] = os.path.join(base, "locks")
    os.environ["PYTHON_KEYRING_BACKEND"] = f"{__name__}.DirKeyring"
    os.environ[LOCK_DIR_ENV_VAR] = os.environ[_CONTRACT_LOCK_DIR_VAR]
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(ROOT) not in paths:  # so children can import this module for DirKeyring
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, paths)])
    keyring.set_keyring(DirKeyring())


def contract_service(tmp_path: Path) -> str:
    """One keyring service per ``tmp_path``: each is a separate store."""
    return f"oauth-callback-test-{hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]}"


def contract_store(tmp_path: Path) -> KeyringStore:
    """``conftest.BACKENDS["keyring"]``: the KeyringStore of ``tmp_path``, on a DirKeyring."""
    _use_dir_keyring()
    return KeyringStore(contract_service(tmp_path))


def contract_url(tmp_path: Path) -> str:
    """``conftest.PERSISTENT["keyring"]``: the URL that reopens ``contract_store(tmp_path)``."""
    _use_dir_keyring()
    return f"keyring:{contract_service(tmp_path)}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _isolated_keyring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user keyring settings, no home directory writes; keyring's backend restored after."""
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home" / ".local" / "share"))
    monkeypatch.setenv(LOCK_DIR_ENV_VAR, str(tmp_path / "locks"))
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)


def plaintext(tmp_path: Path) -> PlaintextKeyring:
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "kr" / "keyring_pass.cfg")
    return backend


@pytest.fixture
def backend(tmp_path: Path) -> PlaintextKeyring:
    return plaintext(tmp_path)


@pytest.fixture
def store(backend: PlaintextKeyring) -> KeyringStore:
    return KeyringStore("svc", keyring_backend=backend)


def raw_index(backend: keyring.backend.KeyringBackend, service: str = "svc") -> dict[str, Any]:
    text = backend.get_password(service, INDEX_USERNAME)
    assert text is not None
    index: dict[str, Any] = json.loads(text)
    return index


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*"))


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing catches it."""


def crash_on(monkeypatch: pytest.MonkeyPatch, backend: keyring.backend.KeyringBackend,
             method: str, username: str, *, after: bool) -> None:
    """Make ``backend.<method>(..., username, ...)`` die before or after it does its work."""
    original = getattr(backend, method)

    def wrapper(service: str, user: str, *args: str) -> object:
        if user == username and not after:
            raise SimulatedCrash
        result = original(service, user, *args)
        if user == username:
            raise SimulatedCrash
        return result

    monkeypatch.setattr(backend, method, wrapper)


# --------------------------------------------------------------------------- backend choice


class TestBackendChoice:
    def test_no_backend_raises_naming_alternatives_and_writes_nothing(self, tmp_path: Path) -> None:
        keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
        for url in (None, "keyring:svc"):
            with pytest.raises(StoreUnavailableError) as info:
                KeyringStore() if url is None else open_store(url)
            message = str(info.value)
            for needed in ("FileStore", "--store PATH", "SQLiteStore", "Secret Service",
                           "keyrings.alt", "PYTHON_KEYRING_BACKEND", "Nothing was written"):
                assert needed in message
            assert info.value.path in ("keyring:oauth-callback", "keyring:svc")
        assert all_files(tmp_path) == []  # no lock dir, no keyring file, nothing

    def test_auto_chosen_low_priority_backend_is_refused(self, tmp_path: Path) -> None:
        # What a headless Linux with keyrings.alt installed gets: PlaintextKeyring
        # (priority 0.5) chosen automatically. Never used silently.
        keyring.set_keyring(plaintext(tmp_path))
        with pytest.raises(StoreUnavailableError, match=r"PlaintextKeyring \(priority 0.5\)"):
            KeyringStore("svc")
        assert all_files(tmp_path) == []

    def test_null_backend_and_empty_chainer_are_refused(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        with pytest.raises(StoreUnavailableError, match="discards every secret"):
            KeyringStore("svc", keyring_backend=null.Keyring())  # type: ignore[no-untyped-call]
        monkeypatch.setattr(chainer.ChainerBackend, "backends", [])
        keyring.set_keyring(chainer.ChainerBackend())  # type: ignore[no-untyped-call]
        with pytest.raises(StoreUnavailableError, match="no viable backend"):
            KeyringStore("svc")
        # A chain whose first (written-to) backend is a plaintext fallback: refused too.
        monkeypatch.setattr(chainer.ChainerBackend, "backends", [plaintext(tmp_path)])
        with pytest.raises(StoreUnavailableError, match="PlaintextKeyring"):
            KeyringStore("svc")
        assert all_files(tmp_path) == []

    def test_explicit_choices_are_accepted(self, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
        # 1. the keyring_backend argument
        s = KeyringStore("svc", keyring_backend=plaintext(tmp_path))
        s.set("k", Tokens("at-1"))
        # 2. PYTHON_KEYRING_BACKEND naming the backend in use
        keyring.set_keyring(plaintext(tmp_path))
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
        assert KeyringStore("svc").get("k") == Tokens("at-1")
        # ... but not when it names another backend than the one in use
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
        with pytest.raises(StoreUnavailableError):
            KeyringStore("svc")
        # 3. keyring's own config file
        monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
        config = tmp_path / "home" / ".config" / "python_keyring" / "keyringrc.cfg"
        config.parent.mkdir(parents=True)
        config.write_text("[backend]\ndefault-keyring=keyrings.alt.file.PlaintextKeyring\n")
        assert KeyringStore("svc").get("k") == Tokens("at-1")

    def test_backend_that_fails_to_load_is_unavailable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "no_such_module.Keyring")
        with pytest.raises(StoreUnavailableError, match=r"could not load its backend.*FileStore"):
            KeyringStore("svc")

    def test_bad_arguments(self, backend: PlaintextKeyring) -> None:
        with pytest.raises(ValueError, match="service"):
            KeyringStore("", keyring_backend=backend)
        with pytest.raises(TypeError, match="keyring backend"):
            KeyringStore("svc", keyring_backend="keyrings.alt.file.PlaintextKeyring")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- layout


class TestLayout:
    def test_entry_names_and_contents_are_as_documented(
        self, store: KeyringStore, backend: PlaintextKeyring
    ) -> None:
        t = Tokens(SECRET, refresh_token="rt-1", expires_at=1_767_225_600, scope="a b")
        c = ClientInfo("cid", "client-secret-1")
        s = OAuthSession("v" * 43, "state-1")
        store.set("k:1", t)
        store.set_client("k:1", c)
        store.set_session("k:1", s)
        store.set("zürich", Tokens("at-2"))
        assert entry_username("tokens", "k:1") == "tokens:k:1"
        for section, value in (("tokens", t), ("clients", c), ("sessions", s)):
            stored = backend.get_password("svc", f"{section}:k:1")
            assert stored is not None
            assert json.loads(stored) == value.to_record()
        assert raw_index(backend) == {
            "format": 1,
            "keys": {"tokens": ["k:1", "zürich"], "clients": ["k:1"], "sessions": ["k:1"]},
            "pending": [],
        }
        store.delete("k:1")
        assert backend.get_password("svc", "tokens:k:1") is None
        assert raw_index(backend)["keys"]["tokens"] == ["zürich"]
        assert store.get_client("k:1") == c

    def test_url_forms(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        keyring.set_keyring(plaintext(tmp_path))
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
        for url, service in (("keyring:", "oauth-callback"), ("keyring:my-app", "my-app"),
                             ("keyring://my-app", "my-app")):
            s = open_store(url)
            assert isinstance(s, KeyringStore) and s.service == service
        open_store("keyring:my-app").set("k", Tokens("at-1"))
        assert open_store("keyring://my-app").get("k") == Tokens("at-1")
        assert open_store("keyring:").get("k") is None  # another service

    def test_lock_files_and_modes(self, store: KeyringStore, tmp_path: Path) -> None:
        lock_dir = tmp_path / "locks"
        assert default_lock_dir() == str(lock_dir)
        digest = hashlib.sha256(b"svc").hexdigest()[:16]
        assert store.lock_path == str(lock_dir / f"keyring-{digest}.lock")
        store.set("k", Tokens("at-1"))
        assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(os.stat(store.lock_path).st_mode) == 0o600
        lock = store.refresh_lock("k")
        key_digest = hashlib.sha256(b"k").hexdigest()[:16]
        assert lock.path == str(lock_dir / f"keyring-{digest}.refresh-{key_digest}.lock")
        assert store.refresh_lock("other").path != lock.path

    def test_default_lock_dir_is_in_home(self, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
        monkeypatch.delenv(LOCK_DIR_ENV_VAR)
        assert default_lock_dir() == str(tmp_path / "home" / ".cache" / "oauth-callback")

    def test_refresh_lock_excludes_other_holders(self, store: KeyringStore) -> None:
        held, release = threading.Event(), threading.Event()

        def holder() -> None:
            with store.refresh_lock("k"):
                held.set()
                release.wait(5)

        t = threading.Thread(target=holder)
        t.start()
        try:
            assert held.wait(5)
            with pytest.raises(StoreLockTimeout), store.refresh_lock("k", timeout=0.1):
                pass
            with store.refresh_lock("other", timeout=0.1):  # other keys are free
                store.set("k", Tokens("at-1"))  # and so is the store
        finally:
            release.set()
            t.join()

    def test_explicit_lock_path(self, backend: PlaintextKeyring, tmp_path: Path) -> None:
        s = KeyringStore("svc", keyring_backend=backend, lock_path=tmp_path / "x" / "my.lock")
        s.set("k", Tokens("at-1"))
        assert (tmp_path / "x" / "my.lock").exists()
        assert s.refresh_lock("k").path.startswith(str(tmp_path / "x" / "my.refresh-"))


# --------------------------------------------------------------------------- crash consistency


class TestCrashConsistency:
    def test_crash_after_record_before_index_commit(
        self, monkeypatch: pytest.MonkeyPatch, store: KeyringStore, backend: PlaintextKeyring
    ) -> None:
        store.set("a", Tokens("at-a"))
        crash_on(monkeypatch, backend, "set_password", "tokens:b", after=True)
        with pytest.raises(SimulatedCrash):
            store.set("b", Tokens("at-b"))
        monkeypatch.undo()  # the "next process": a healthy backend
        assert raw_index(backend)["pending"] == [["tokens", "b"]]
        assert store.keys() == ["a", "b"]  # the record exists, so the key is listed
        assert store.get("b") == Tokens("at-b")
        store.set_client("c", ClientInfo("cid"))  # any write settles the index
        assert raw_index(backend)["pending"] == []
        assert raw_index(backend)["keys"]["tokens"] == ["a", "b"]
        assert store.keys() == ["a", "b"]

    def test_crash_after_index_intent_before_record(
        self, monkeypatch: pytest.MonkeyPatch, store: KeyringStore, backend: PlaintextKeyring
    ) -> None:
        store.set("a", Tokens("at-a"))
        crash_on(monkeypatch, backend, "set_password", "tokens:b", after=False)
        with pytest.raises(SimulatedCrash):
            store.set("b", Tokens("at-b"))
        monkeypatch.undo()
        assert raw_index(backend)["keys"]["tokens"] == ["a", "b"]  # listed, but pending
        assert store.keys() == ["a"]  # no record: not listed
        assert store.get("b") is None
        store.set("a", Tokens("at-a2"))  # the next write repairs the index
        assert raw_index(backend) == {
            "format": 1, "keys": {"tokens": ["a"], "clients": [], "sessions": []},
            "pending": [],
        }

    @pytest.mark.parametrize("after", [False, True])
    def test_crash_during_delete(
        self, monkeypatch: pytest.MonkeyPatch, store: KeyringStore, backend: PlaintextKeyring,
        after: bool,
    ) -> None:
        store.set("a", Tokens("at-a"))
        store.set("b", Tokens("at-b"))
        crash_on(monkeypatch, backend, "delete_password", "tokens:a", after=after)
        with pytest.raises(SimulatedCrash):
            store.delete("a")
        monkeypatch.undo()
        # keys() agrees with get() whether or not the record was deleted
        assert store.keys() == (["b"] if after else ["a", "b"])
        assert (store.get("a") is None) == after
        store.set("b", Tokens("at-b2"))
        assert raw_index(backend)["pending"] == []
        assert raw_index(backend)["keys"]["tokens"] == (["b"] if after else ["a", "b"])

    def test_crash_during_clear(
        self, monkeypatch: pytest.MonkeyPatch, store: KeyringStore, backend: PlaintextKeyring
    ) -> None:
        for k in "abc":
            store.set(k, Tokens(f"at-{k}"))
        crash_on(monkeypatch, backend, "delete_password", "tokens:b", after=True)
        with pytest.raises(SimulatedCrash):
            store.clear()
        monkeypatch.undo()
        assert store.keys() == ["c"]  # a and b are gone; c was not reached
        store.clear()
        assert store.keys() == []
        assert raw_index(backend)["keys"] == {"tokens": [], "clients": [], "sessions": []}

    def test_killed_writer_process(self, tmp_path: Path, backend: PlaintextKeyring) -> None:
        """A real process dies (os._exit) between the record write and the index commit."""
        store = KeyringStore("svc", keyring_backend=backend)
        store.set("a", Tokens("at-a"))
        code = """
            import os, sys
            from keyrings.alt.file import PlaintextKeyring
            from oauth_callback import Tokens
            from oauth_callback.storage.keyring import KeyringStore

            backend = PlaintextKeyring()
            backend.file_path = sys.argv[1]
            original = backend.set_password
            def set_password(service, username, password):
                original(service, username, password)
                if username == "tokens:b":
                    os._exit(9)  # dies holding the store lock
            backend.set_password = set_password
            KeyringStore("svc", keyring_backend=backend).set("b", Tokens("at-b"))
        """
        result = run_python(code, backend.file_path, check=False)
        assert result.returncode == 9, result.stderr
        assert store.keys() == ["a", "b"]
        store.lock_timeout = 2.0
        store.set("c", Tokens("at-c"))  # the lock was released by the kernel
        assert raw_index(backend)["keys"]["tokens"] == ["a", "b", "c"]
        assert raw_index(backend)["pending"] == []

    def test_orphan_record_is_relisted_on_write(
        self, store: KeyringStore, backend: PlaintextKeyring
    ) -> None:
        store.set("a", Tokens("at-a"))
        backend.delete_password("svc", INDEX_USERNAME)  # index lost (deleted by hand)
        assert store.keys() == []
        assert store.get("a") == Tokens("at-a")  # records are intact
        store.update("a", lambda cur: cur.replace(scope="s") if cur else None)
        assert store.keys() == ["a"]


# --------------------------------------------------------------------------- errors


class FailingKeyring(keyring.backend.KeyringBackend):
    """Raises ``error`` from every call; echoes the password in the message, as a careless backend might."""

    priority = 5

    def __init__(self, error: type[Exception]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.error = error

    def get_password(self, service: str, username: str) -> str | None:
        raise self.error(f"cannot read {username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise self.error(f"refused to store {password!r}")

    def delete_password(self, service: str, username: str) -> None:
        raise self.error("cannot delete")


class TestErrors:
    def test_repr_shows_no_secret(self, store: KeyringStore) -> None:
        store.set("k", Tokens(SECRET, refresh_token="rt-" + SECRET))
        assert SECRET not in repr(store)
        assert repr(store) == "KeyringStore('svc', backend=keyrings.alt.file.PlaintextKeyring)"

    @pytest.mark.parametrize("error", [keyring.errors.KeyringLocked, keyring.errors.KeyringError,
                                       RuntimeError])
    def test_backend_errors_are_unavailable_and_name_the_service(
        self, error: type[Exception]
    ) -> None:
        store = KeyringStore("my-svc", keyring_backend=FailingKeyring(error))
        with pytest.raises(StoreUnavailableError) as info:
            store.get("k")
        assert "my-svc" in str(info.value) and "tokens:k" in str(info.value)
        assert info.value.path == "keyring:my-svc"
        if error is keyring.errors.KeyringLocked:
            assert "locked" in str(info.value)

    def test_write_error_withholds_secrets(self, backend: PlaintextKeyring) -> None:
        store = KeyringStore("svc", keyring_backend=backend)
        store.set("k", Tokens("at-old"))
        failing = FailingKeyring(keyring.errors.PasswordSetError)
        failing.get_password = backend.get_password  # type: ignore[method-assign]
        store.backend = failing
        with pytest.raises(StoreUnavailableError) as info:
            store.set("k", Tokens(SECRET, refresh_token="rt-secret-value"))
        text = str(info.value)
        assert "withheld" in text and "svc" in text and "tokens:k" in text
        assert SECRET not in text and "rt-secret-value" not in text
        assert info.value.__cause__ is None and info.value.__suppress_context__
        store.backend = backend
        assert store.get("k") == Tokens("at-old")  # the old value is intact

    def test_corrupt_record_and_index(self, store: KeyringStore, backend: PlaintextKeyring) -> None:
        store.set("k", Tokens("at-1"))
        store.set("ok", Tokens("at-2"))
        backend.set_password("svc", "tokens:k", '{"accessToken": ')
        with pytest.raises(StoreCorruptError, match=r"'tokens:k'.*'svc'.*not valid JSON"):
            store.get("k")
        assert store.get("ok") == Tokens("at-2")  # other records are unaffected
        backend.set_password("svc", "tokens:k", json.dumps({"accessToken": 3}))
        with pytest.raises(StoreCorruptError, match="accessToken"):
            store.update("k", lambda cur: cur)
        backend.set_password("svc", INDEX_USERNAME, "[1, 2")
        with pytest.raises(StoreCorruptError, match=r"key index.*__index__.*svc"):
            store.keys()
        with pytest.raises(StoreCorruptError):
            store.set("new", Tokens("at-3"))
        assert store.get("ok") == Tokens("at-2")

    def test_newer_index_format_is_read_but_not_modified(
        self, store: KeyringStore, backend: PlaintextKeyring
    ) -> None:
        store.set("k", Tokens("at-1"))
        index = raw_index(backend)
        index.update(format=2, future={"x": 1})
        backend.set_password("svc", INDEX_USERNAME, json.dumps(index))
        assert store.keys() == ["k"]
        with pytest.raises(StoreError, match="newer version"):
            store.set("j", Tokens("at-2"))
        assert raw_index(backend)["format"] == 2


# --------------------------------------------------------------------------- processes


def test_url_reopens_the_store_in_a_child_process(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """PlaintextKeyring, chosen with PYTHON_KEYRING_BACKEND, shared through the environment."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyrings.alt.file.PlaintextKeyring")
    monkeypatch.setenv("KEYRING_PROPERTY_FILE_PATH", str(tmp_path / "kr" / "shared.cfg"))
    parent = open_store("keyring:shared")
    parent.set("from-parent", Tokens("at-p"))
    run_python("""
        from oauth_callback import Tokens
        from oauth_callback.storage.url import open_store
        store = open_store("keyring:shared")
        assert store.get("from-parent").access_token == "at-p"
        store.update("from-child", lambda cur: Tokens("at-c"))
    """)
    assert parent.keys() == ["from-parent", "from-child"]
    assert (tmp_path / "kr" / "shared.cfg").exists()
