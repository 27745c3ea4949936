"""``storage.migrate``: copying a whole store between backends, then checking the copy.

Every ordered pair of persistent backends (``conftest.PERSISTENT``: file,
sqlite, redis, and any backend added there later) gets the round trip, the
conflict, overwrite and dry-run cases. The CLI runs as a real subprocess.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from oauth_callback import ClientInfo, FileStore, MemoryStore, OAuthSession, Tokens, TokenStore
from oauth_callback.storage import (
    MigrationError,
    MigrationReport,
    MigrationVerifyError,
    SQLiteStore,
    migrate,
)
from oauth_callback.storage.base import Section
from oauth_callback.storage.migrate import RecordRef
from oauth_callback.storage.url import open_store

from .conftest import PERSISTENT, python_env

SECRET_ACCESS = "at_SECRETmigrate0123456789"
SECRET_REFRESH = "rt_SECRETmigrate0123456789"
SECRET_CLIENT = "cs_SECRETmigrate0123456789"
SECRET_VERIFIER = "pkce_SECRETverifier0123456789"
SECRETS = (SECRET_ACCESS, SECRET_REFRESH, SECRET_CLIENT, SECRET_VERIFIER)

UNICODE_KEY = "ключ/🔑 ü"
GLOB_KEY = "a:{b}*?[x] \\ %"
SECTIONS: tuple[Section, ...] = ("tokens", "clients", "sessions")

PAIRS = list(itertools.permutations(sorted(PERSISTENT), 2))
PAIR_IDS = [f"{a}-to-{b}" for a, b in PAIRS]

Snapshot = dict[Section, dict[str, Any]]


# --------------------------------------------------------------------------- data and helpers


def sample() -> Snapshot:
    """Records of every kind: extra fields, no expiry, unicode and glob-special keys."""
    now = round(time.time())
    return {
        "tokens": {
            "github": Tokens(
                SECRET_ACCESS, SECRET_REFRESH, expires_at=now + 3590.123, scope="repo read:org",
                token_type="DPoP",
                extra={"id_token": "eyJ.payload.sig", "count": 2, "ratio": 1.5, "flag": True,
                       "none": None, "nested": {"a": [1, 2, {"b": "ü✓"}]}},
            ),
            "forever": Tokens("forever-token"),
            UNICODE_KEY: Tokens("ünïcødé-token", "ünïcødé-refresh", expires_at=now - 10),
            GLOB_KEY: Tokens("glob-token", scope="x"),
        },
        "clients": {
            "github": ClientInfo(
                "gh-cli", client_secret=SECRET_CLIENT, client_id_issued_at=1700000000.0,
                client_secret_expires_at=0.0, issuer="https://github.example",
                token_endpoint="https://github.example/token",
                authorization_endpoint="https://github.example/authorize",
                redirect_uri="http://127.0.0.1:8765/callback", scope="repo",
                token_endpoint_auth_method="client_secret_post",
                extra={"registration_access_token": "reg-tok", "contacts": ["a@b.example"]},
            ),
            UNICODE_KEY: ClientInfo("ünï-client"),
            "client-only": ClientInfo("registered-but-not-logged-in"),
        },
        "sessions": {
            "github": OAuthSession(SECRET_VERIFIER, "state-1", created_at=now + 0.25,
                                   extra={"redirectUri": "http://127.0.0.1:1/cb"}),
            "pending": OAuthSession("verifier-2", "state-2", created_at=float(now)),
        },
    }


def n_records(data: Snapshot) -> int:
    return sum(len(records) for records in data.values())


def refs(data: Snapshot) -> set[RecordRef]:
    return {RecordRef(section, key) for section, records in data.items() for key in records}


def seed(store: TokenStore, data: Snapshot) -> None:
    for key, tokens in data["tokens"].items():
        store.set(key, tokens)
    for key, client in data["clients"].items():
        store.set_client(key, client)
    for key, session in data["sessions"].items():
        store.set_session(key, session)


def snapshot(store: TokenStore) -> Snapshot:
    readers: dict[Section, Callable[[str], Any]] = {
        "tokens": store.get, "clients": store.get_client, "sessions": store.get_session,
    }
    return {
        section: {key: readers[section](key) for key in store._keys(section)}
        for section in SECTIONS
    }


@pytest.fixture
def open_backend(tmp_path: Path) -> Iterator[Callable[[str, str], TokenStore]]:
    """``open_backend(name, label)``: a fresh store of backend ``name``, private to ``label``."""
    opened: list[TokenStore] = []

    def factory(name: str, label: str) -> TokenStore:
        directory = tmp_path / label
        directory.mkdir(exist_ok=True)
        store = open_store(PERSISTENT[name](directory))
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


def assert_no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# --------------------------------------------------------------------------- every pair


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
def test_round_trip_a_to_b_to_a(
    a: str, b: str, open_backend: Callable[[str, str], TokenStore]
) -> None:
    data = sample()
    source = open_backend(a, "a")
    seed(source, data)
    target = open_backend(b, "b")
    back = open_backend(a, "a2")

    report = migrate(source, target)
    assert report.ok and not report.dry_run
    assert set(report.copied) == set(report.verified) == refs(data)
    assert len(report.copied) == n_records(data) == 9
    assert report.identical == report.conflicts == report.overwritten == []
    assert report.failures == [] and report.missing == []
    assert set(report.keys) == {"github", "forever", UNICODE_KEY, GLOB_KEY, "client-only",
                                "pending"}
    assert snapshot(target) == data
    # The tokens' key order survives (keys() orders by creation in every backend).
    assert target.keys() == list(data["tokens"])

    report = migrate(target, back)
    assert report.ok and set(report.verified) == refs(data)
    assert snapshot(back) == data == snapshot(source)
    assert back.keys() == list(data["tokens"])

    # Again: everything is already there.
    again = migrate(source, target)
    assert again.ok and again.copied == [] and set(again.identical) == refs(data)
    assert set(again.verified) == refs(data)
    assert snapshot(target) == data

    assert_no_secrets(report.summary() + json.dumps(report.to_dict()) + repr(report))


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
def test_conflicts_are_reported_not_overwritten_unless_asked(
    a: str, b: str, open_backend: Callable[[str, str], TokenStore]
) -> None:
    data = sample()
    source = open_backend(a, "a")
    seed(source, data)
    target = open_backend(b, "b")
    theirs = Tokens("target-own-token", "target-own-refresh", expires_at=time.time() + 60)
    other_session = OAuthSession("other-verifier", "other-state")
    target.set("github", theirs)
    target.set_client("github", data["clients"]["github"])  # equal: not a conflict
    target.set_session("pending", other_session)
    # Only ``extra`` differs: still a conflict.
    target.set("forever", Tokens("forever-token", extra={"note": "target"}))

    report = migrate(source, target)
    conflicts = {RecordRef("tokens", "github"), RecordRef("sessions", "pending"),
                 RecordRef("tokens", "forever")}
    assert not report.ok
    assert set(report.conflicts) == conflicts
    assert report.identical == [RecordRef("clients", "github")]
    assert set(report.copied) == refs(data) - conflicts - {RecordRef("clients", "github")}
    assert set(report.verified) == refs(data) - conflicts
    assert report.overwritten == [] and report.failures == []
    assert target.get("github") == theirs
    assert target.get_session("pending") == other_session
    assert target.get("forever") == Tokens("forever-token", extra={"note": "target"})
    assert "conflict: tokens of 'github'" in report.summary()

    report = migrate(source, target, overwrite=True)
    assert report.ok
    assert set(report.overwritten) == conflicts
    assert set(report.identical) == refs(data) - conflicts
    assert report.copied == [] and set(report.verified) == refs(data)
    assert snapshot(target) == data
    assert snapshot(source) == data


@pytest.mark.parametrize(("a", "b"), PAIRS, ids=PAIR_IDS)
def test_dry_run_writes_nothing(
    a: str, b: str, open_backend: Callable[[str, str], TokenStore]
) -> None:
    data = sample()
    source = open_backend(a, "a")
    seed(source, data)
    target = open_backend(b, "b")

    report = migrate(source, target, dry_run=True)
    assert report.dry_run and report.ok
    assert set(report.copied) == refs(data) and report.verified == []
    assert snapshot(target) == {"tokens": {}, "clients": {}, "sessions": {}}
    assert report.summary().startswith("Dry run: nothing written.")

    theirs = Tokens("target-own-token")
    target.set("github", theirs)
    for overwrite in (False, True):
        report = migrate(source, target, dry_run=True, overwrite=overwrite)
        flagged = report.overwritten if overwrite else report.conflicts
        assert flagged == [RecordRef("tokens", "github")]
        assert report.ok == overwrite
        assert snapshot(target) == {"tokens": {"github": theirs}, "clients": {}, "sessions": {}}
    assert snapshot(source) == data


# --------------------------------------------------------------------------- details


def test_only_the_requested_keys_and_missing_ones_reported(tmp_path: Path) -> None:
    source = MemoryStore()
    data = sample()
    seed(source, data)
    target = SQLiteStore(tmp_path / "t.db")
    report = migrate(source, target, keys=[UNICODE_KEY, "nope", "pending", UNICODE_KEY])
    assert report.missing == ["nope"] and not report.ok
    assert set(report.copied) == {RecordRef("tokens", UNICODE_KEY),
                                  RecordRef("clients", UNICODE_KEY),
                                  RecordRef("sessions", "pending")}
    assert target.keys() == [UNICODE_KEY]
    assert target.get("github") is None and target.get_client("github") is None
    assert "missing: no record of 'nope' in the source" in report.summary()


def test_client_is_written_before_tokens(tmp_path: Path) -> None:
    """A process using the target never finds tokens without their client registration."""
    order: list[str] = []

    class Recording(MemoryStore):
        def _modify(self, section: Section, key: str, fn: Callable[[Any], Any]) -> Any:
            order.append(section)
            return super()._modify(section, key, fn)

    source = MemoryStore()
    seed(source, sample())
    migrate(source, Recording(), keys=["github"])
    assert order == ["clients", "sessions", "tokens"]


def test_source_is_never_modified(tmp_path: Path) -> None:
    path = tmp_path / "src" / "tokens.json"
    source = FileStore(path)
    seed(source, sample())
    before = (path.read_bytes(), os.stat(path).st_mtime_ns, sorted(os.listdir(path.parent)))
    target = SQLiteStore(tmp_path / "dst" / "tokens.db")
    migrate(source, target)
    migrate(source, target, overwrite=True)
    migrate(source, target, dry_run=True)
    assert (path.read_bytes(), os.stat(path).st_mtime_ns, sorted(os.listdir(path.parent))) \
        == before


def test_key_the_target_reserves_fails_that_record_only(tmp_path: Path) -> None:
    source = MemoryStore()
    source.set("$oauth_callback", Tokens("x"))  # reserved by the file and sqlite stores
    source.set("fine", Tokens("y"))
    target = FileStore(tmp_path / "tokens.json")
    with pytest.raises(MigrationError) as info:
        migrate(source, target)
    assert not isinstance(info.value, MigrationVerifyError)
    report = info.value.report
    assert [(f.section, f.key, f.stage) for f in report.failures] == [
        ("tokens", "$oauth_callback", "write")]
    assert "reserved" in report.failures[0].reason
    assert report.copied == report.verified == [RecordRef("tokens", "fine")]
    assert target.get("fine") == Tokens("y")
    # check=False: the same, returned.
    report = migrate(source, target, check=False)
    assert len(report.failures) == 1 and not report.ok
    assert report.identical == [RecordRef("tokens", "fine")]


def test_unreadable_source_record_is_a_failure_others_are_copied(tmp_path: Path) -> None:
    path = tmp_path / "src.db"
    source = SQLiteStore(path)
    source.set("good", Tokens("g"))
    source.set("bad", Tokens("b"))
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE records SET record = '{\"accessToken\": ' WHERE key = 'bad'")
    conn.close()
    target = MemoryStore()
    with pytest.raises(MigrationError, match="'bad'") as info:
        migrate(source, target)
    report = info.value.report
    assert [(f.key, f.stage) for f in report.failures] == [("bad", "read")]
    assert target.get("good") == Tokens("g") and target.get("bad") is None


def test_verification_failure_raises_with_the_report() -> None:
    class Lossy(MemoryStore):
        """Loses ``extra`` on read, as a broken backend would."""

        def _read(self, section: Section, key: str) -> Any:
            value = super()._read(section, key)
            return value.replace(extra={}) if isinstance(value, Tokens) else value

    source = MemoryStore()
    data = sample()
    seed(source, data)
    with pytest.raises(MigrationVerifyError) as info:
        migrate(source, Lossy())
    report = info.value.report
    assert isinstance(report, MigrationReport) and not report.ok
    assert [(f.key, f.stage) for f in report.failures] == [("github", "verify")]
    assert "differs" in report.failures[0].reason
    assert len(report.verified) == n_records(data) - 1
    assert "FAILED: tokens of 'github': verify failed" in report.summary()
    assert_no_secrets(str(info.value) + report.summary())


def test_empty_source() -> None:
    report = migrate(MemoryStore(), MemoryStore())
    assert report.ok and report.keys == [] and report.counts()["copied"] == 0


# --------------------------------------------------------------------------- CLI, real process


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = python_env()
    env.pop("OAUTH_CALLBACK_STORE", None)
    return subprocess.run(
        [sys.executable, "-m", "oauth_callback", *args],
        capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL,
    )


def test_cli_migrate_file_to_sqlite_and_back(tmp_path: Path) -> None:
    data = sample()
    file_url = f"file:{tmp_path / 'a' / 'tokens.json'}"
    sqlite_url = f"sqlite:{tmp_path / 'b' / 'tokens.db'}"
    back_url = str(tmp_path / "c" / "tokens.json")  # a plain path is a file store
    seed(open_store(file_url), data)

    dry = run_cli("tokens", "migrate", "--from", file_url, "--to", sqlite_url, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "Dry run: nothing written." in dry.stdout and "would be copied:      9" in dry.stdout
    assert not (tmp_path / "b" / "tokens.db").exists()

    result = run_cli("tokens", "migrate", "--from", file_url, "--to", sqlite_url)
    assert result.returncode == 0, result.stderr
    assert "copied:      9" in result.stdout and "verified:    9" in result.stdout
    assert_no_secrets(result.stdout + result.stderr + dry.stdout + dry.stderr)
    assert snapshot(SQLiteStore(tmp_path / "b" / "tokens.db")) == data

    result = run_cli("tokens", "migrate", "--from", sqlite_url, "--to", back_url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["counts"]["copied"] == report["counts"]["verified"] == 9
    assert_no_secrets(result.stdout + result.stderr)
    assert snapshot(FileStore(back_url)) == data == snapshot(open_store(file_url))

    # A conflict: exit 1, target unchanged; --overwrite: exit 0.
    FileStore(back_url).set("github", Tokens("changed-in-target"))
    result = run_cli("tokens", "migrate", "--from", sqlite_url, "--to", back_url)
    assert result.returncode == 1
    assert "conflict: tokens of 'github'" in result.stdout
    assert "--overwrite" in result.stderr
    assert FileStore(back_url).get("github") == Tokens("changed-in-target")
    result = run_cli("tokens", "migrate", "--from", sqlite_url, "--to", back_url, "--overwrite",
                     "--key", "github")
    assert result.returncode == 0, result.stderr
    assert "overwritten: 1" in result.stdout
    assert snapshot(FileStore(back_url)) == data
