"""The ``oauth-callback`` command, every command run as a real subprocess.

``python -m oauth_callback ...`` with ``PYTHONPATH=<repo>/src`` and
``OAUTH_CALLBACK_STORE`` pointing into ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest

from oauth_callback import ClientInfo, FileStore, Tokens
from oauth_callback.cli import human_expiry
from oauth_callback.doctor import Severity, diagnose
from oauth_callback.models import fingerprint
from oauth_callback.pkce import generate_pkce
from oauth_callback.testing import MockProvider

from .conftest import ROOT, sigint_delivered

SECRET_ACCESS = "gho_SECRETaccess0123456789"
SECRET_REFRESH = "ghr_SECRETrefresh0123456789"
SECRET_CLIENT = "cs_SECRETclient0123456789"
SECRETS = (SECRET_ACCESS, SECRET_REFRESH, SECRET_CLIENT)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.json"


@pytest.fixture
def env(store_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["OAUTH_CALLBACK_STORE"] = str(store_path)
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER", "OAUTH_CALLBACK_CLIENT_SECRET"):
        e.pop(name, None)
    return e


def cli(env: dict[str, str], *args: str, input: str | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oauth_callback", *args],
        capture_output=True,  # stdout is a pipe, never a TTY
        stdin=subprocess.DEVNULL if input is None else None,
        input=input, text=True, env=env, timeout=timeout,
    )


def assert_no_secrets(result: subprocess.CompletedProcess[str]) -> None:
    for secret in SECRETS:
        assert secret not in result.stdout
        assert secret not in result.stderr


@pytest.fixture
def seeded(store_path: Path) -> FileStore:
    store = FileStore(store_path, durable=False)
    now = time.time()
    store.set("github", Tokens(SECRET_ACCESS, refresh_token=SECRET_REFRESH,
                               expires_at=now + 3590, scope="repo read:org",
                               extra={"id_token": "eyJSECRET", "resource_count": 2}))
    store.set_client("github", ClientInfo("gh-cli", client_secret=SECRET_CLIENT,
                                           issuer="https://github.example",
                                           token_endpoint="https://github.example/token"))
    store.set("old", Tokens("old-token", expires_at=now - 3 * 3600 - 30))
    store.set("forever", Tokens("forever-token"))
    return store


def real_grant(p: MockProvider, scope: str = "read") -> dict[str, Any]:
    """A real code exchange against ``p`` (no CLI involved): its token response."""
    verifier, challenge = generate_pkce()
    redirect = "http://127.0.0.1:1/callback"
    url = p.authorization_endpoint + "?" + urlencode({
        "response_type": "code", "client_id": p.client_id, "redirect_uri": redirect,
        "code_challenge": challenge, "code_challenge_method": "S256", "scope": scope,
        "state": "s",
    })
    with httpx2.Client(timeout=5) as http:
        location = http.get(url).headers["location"]
        code = parse_qs(urlsplit(location).query)["code"][0]
        resp = http.post(p.token_endpoint, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
            "client_id": p.client_id, "code_verifier": verifier,
        })
    resp.raise_for_status()
    body: dict[str, Any] = resp.json()
    return body


def store_expired_grant(store: FileStore, key: str, p: MockProvider,
                        token_endpoint: str | None = None) -> Tokens:
    body = real_grant(p)
    tokens = Tokens.from_response(body).replace(expires_at=time.time() - 60)
    store.set_client(key, ClientInfo(p.client_id, issuer=p.issuer,
                                     token_endpoint=token_endpoint or p.token_endpoint,
                                     authorization_endpoint=p.authorization_endpoint,
                                     token_endpoint_auth_method="none"))
    store.set(key, tokens)
    return tokens


# --------------------------------------------------------------------------- basics


def test_help_and_version(env: dict[str, str]) -> None:
    r = cli(env, "--help")
    assert r.returncode == 0, r.stderr
    for command in ("login", "token", "tokens", "doctor", "demo"):
        assert command in r.stdout
    r = cli(env, "--version")
    assert r.returncode == 0
    assert r.stdout.startswith("oauth-callback ")


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    r = cli(env)
    assert r.returncode == 2
    assert "usage:" in r.stderr
    r = cli(env, "tokens", "frobnicate")
    assert r.returncode == 2
    r = cli(env, "login", "--client-id", "x")  # neither --issuer nor endpoints
    assert r.returncode == 2
    assert r.stderr.startswith("oauth-callback: error: ")
    r = cli(env, "--store", "bogus://x", "tokens", "list")
    assert r.returncode == 2
    assert "unknown store URL scheme" in r.stderr


def test_human_expiry() -> None:
    now = 1_000_000.0
    assert human_expiry(None, now) == "never"
    assert human_expiry(now + 3599, now) == "in 59 min"
    assert human_expiry(now + 30, now) == "in 30 s"
    assert human_expiry(now - 3 * 3600 - 5, now) == "expired 3 h ago"
    assert human_expiry(now + 5 * 86400, now) == "in 5 d"


# --------------------------------------------------------------------------- tokens ...


def test_tokens_list_table(env: dict[str, str], seeded: FileStore) -> None:
    r = cli(env, "tokens", "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["KEY", "ACCOUNT", "EXPIRES", "SCOPE", "REFRESH"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"github", "old", "forever"}
    assert "in 59 min" in rows["github"] and rows["github"].rstrip().endswith("yes")
    assert "repo read:org" in rows["github"]
    assert "expired 3 h ago" in rows["old"] and rows["old"].rstrip().endswith("no")
    assert "never" in rows["forever"]
    assert_no_secrets(r)


def test_tokens_list_json(env: dict[str, str], seeded: FileStore) -> None:
    r = cli(env, "tokens", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert rows["github"]["has_refresh_token"] is True
    assert rows["github"]["expired"] is False
    assert rows["github"]["scope"] == "repo read:org"
    assert rows["github"]["client_id"] == "gh-cli"
    assert rows["github"]["access_token_fingerprint"] == fingerprint(SECRET_ACCESS)
    assert rows["old"]["expired"] is True and rows["old"]["expires_in"] < 0
    assert rows["forever"]["expires_at"] is None
    assert_no_secrets(r)


def test_tokens_list_empty(env: dict[str, str]) -> None:
    r = cli(env, "tokens", "list", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == []
    r = cli(env, "tokens", "list")
    assert r.returncode == 0 and r.stdout == ""
    assert "no tokens" in r.stderr


def test_tokens_show_masked_and_revealed(env: dict[str, str], seeded: FileStore) -> None:
    r = cli(env, "tokens", "show", "github")
    assert r.returncode == 0, r.stderr
    assert fingerprint(SECRET_ACCESS) in r.stdout
    assert fingerprint(SECRET_REFRESH) in r.stdout
    assert fingerprint(SECRET_CLIENT) in r.stdout
    assert "eyJSECRET" not in r.stdout
    assert "in 59 min" in r.stdout and "gh-cli" in r.stdout
    assert "--reveal" in r.stderr
    assert_no_secrets(r)

    r = cli(env, "tokens", "show", "github", "--reveal")
    assert r.returncode == 0, r.stderr
    for secret in SECRETS:
        assert secret in r.stdout

    r = cli(env, "tokens", "show", "github", "--json")
    record = json.loads(r.stdout)
    assert record["access_token"] == fingerprint(SECRET_ACCESS)
    assert record["extra"]["resource_count"] == 2
    assert_no_secrets(r)


def test_tokens_show_missing_key(env: dict[str, str], seeded: FileStore) -> None:
    r = cli(env, "tokens", "show", "nope")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.startswith("oauth-callback: error: no tokens stored under 'nope'")


def test_tokens_delete(env: dict[str, str], seeded: FileStore, store_path: Path) -> None:
    r = cli(env, "tokens", "delete", "old")
    assert r.returncode == 0, r.stderr
    assert FileStore(store_path).keys() == ["github", "forever"]
    r = cli(env, "tokens", "delete", "old")
    assert r.returncode == 1
    assert "no tokens stored under 'old'" in r.stderr
    r = cli(env, "tokens", "delete", "github", "--all")
    assert r.returncode == 0
    fresh = FileStore(store_path)
    assert fresh.get("github") is None and fresh.get_client("github") is None


def test_tokens_clear_refuses_without_yes_on_non_tty(env: dict[str, str], seeded: FileStore,
                                                     store_path: Path) -> None:
    r = cli(env, "tokens", "clear")
    assert r.returncode == 1
    assert "refusing to delete 3 tokens" in r.stderr and "--yes" in r.stderr
    assert len(FileStore(store_path).keys()) == 3
    r = cli(env, "tokens", "clear", "--yes")
    assert r.returncode == 0, r.stderr
    assert FileStore(store_path).keys() == []
    assert FileStore(store_path).get_client("github") is None
    r = cli(env, "tokens", "clear")  # nothing left: no confirmation needed
    assert r.returncode == 0 and "nothing deleted" in r.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
@pytest.mark.parametrize(("answer", "code", "left"), [("n\n", 1, 3), ("y\n", 0, 0)])
def test_tokens_clear_asks_on_a_tty(env: dict[str, str], seeded: FileStore, store_path: Path,
                                    answer: str, code: int, left: int) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "oauth_callback", "tokens", "clear"],
                                stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, text=True)
        os.write(master, answer.encode())
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(master)
        os.close(slave)
    assert f"Delete 3 tokens from {store_path}? [y/N]" in err
    assert proc.returncode == code, err
    assert len(FileStore(store_path).keys()) == left


# --------------------------------------------------------------------------- token KEY


def test_token_prints_only_the_token(env: dict[str, str], seeded: FileStore) -> None:
    # "forever" has no expiry and no refresh token: served from the store, no network.
    r = cli(env, "token", "forever")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "forever-token\n"
    assert r.stderr == ""


def test_token_missing_key_is_login_required(env: dict[str, str], seeded: FileStore) -> None:
    r = cli(env, "token", "nope")
    assert r.returncode == 3
    assert r.stdout == ""
    assert r.stderr.startswith("oauth-callback: error: no tokens stored under 'nope'")
    assert "login" in r.stderr


def test_token_refreshes_against_a_real_provider(env: dict[str, str], store_path: Path) -> None:
    with MockProvider(expires_in=3600) as p:
        store = FileStore(store_path, durable=False)
        old = store_expired_grant(store, "mock", p)
        r = cli(env, "token", "mock")
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        new = r.stdout[:-1]
        assert r.stdout.endswith("\n") and "\n" not in new
        assert new != old.access_token
        assert p.refresh_count == 1
        assert p.is_access_token_active(new)
        stored = FileStore(store_path).get("mock")
        assert stored is not None and stored.access_token == new
        assert not stored.is_expired()
        # A second call is served from the store: no second refresh.
        r = cli(env, "token", "mock")
        assert r.returncode == 0 and r.stdout == new + "\n"
        assert p.refresh_count == 1


def test_token_revoked_grant_is_login_required(env: dict[str, str], store_path: Path) -> None:
    with MockProvider() as p:
        store_expired_grant(FileStore(store_path, durable=False), "mock", p)
        p.revoke_all()
        r = cli(env, "token", "mock")
    assert r.returncode == 3, r.stderr
    assert r.stdout == ""
    assert "login required" in r.stderr
    assert "Traceback" not in r.stderr


def test_token_network_error_exit_4(env: dict[str, str], store_path: Path) -> None:
    with MockProvider() as p:
        store_expired_grant(FileStore(store_path, durable=False), "mock", p,
                            token_endpoint="http://127.0.0.1:9/token")
        r = cli(env, "token", "mock")
    assert r.returncode == 4, r.stderr
    assert r.stdout == ""
    assert r.stderr.startswith("oauth-callback: error: ")
    assert "Traceback" not in r.stderr


def test_token_on_corrupt_store_without_backup_exit_4(env: dict[str, str],
                                                      store_path: Path) -> None:
    store_path.parent.mkdir(mode=0o700)
    store_path.write_text("{not json")
    r = cli(env, "token", "x")
    assert r.returncode == 4
    assert "doctor --repair" in r.stderr
    assert r.stdout == ""


# --------------------------------------------------------------------------- login


class LoginProcess:
    """``oauth-callback login ...`` running in the background; stderr collected by a thread."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        with sigint_delivered():  # the Ctrl-C test's SIGINT must not be ignored by inheritance
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "oauth_callback", "login", *args],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=env,
            )
        self.lines: list[str] = []
        self._url: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            for word in line.split():
                if word.startswith("http://127.0.0.1:") and "/authorize?" in word:
                    self._url.put(word)
        self._url.put(None)

    def url(self) -> str:
        """The authorization URL the command printed on stderr."""
        try:
            url = self._url.get(timeout=20)
        except queue.Empty:
            url = None
        if url is None:
            self.proc.kill()
            raise AssertionError("no authorization URL on stderr:\n" + "".join(self.lines))
        return url

    def finish(self) -> tuple[int, str, str]:
        """Wait for the exit; return ``(status, stdout, stderr)``."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=20)
        self._reader.join(timeout=5)
        return code, out, "".join(self.lines)


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider(expires_in=3600) as p:
        yield p


def test_login_no_browser_follow_url_from_stderr(env: dict[str, str], store_path: Path,
                                                 provider: MockProvider) -> None:
    login = LoginProcess(env, "--issuer", provider.issuer, "--client-id", provider.client_id,
                         "--scope", "read", "--no-browser", "--timeout", "20")
    with httpx2.Client(follow_redirects=True, timeout=10) as http:
        assert http.get(login.url()).status_code == 200  # the loopback callback's success page
    code, out, err = login.finish()
    assert code == 0, err
    assert "Waiting for the authorization callback" in err
    key = f"http://127.0.0.1:{provider.port}"
    assert out.startswith(f"Logged in: key '{key}'")
    assert "expires in 59 min" in out and "scope read" in out
    store = FileStore(store_path)
    tokens = store.get(key)
    assert tokens is not None and tokens.refresh_token
    assert tokens.access_token not in out + err
    assert tokens.refresh_token not in out + err
    client = store.get_client(key)
    assert client is not None and client.token_endpoint == provider.token_endpoint
    assert store.get_session(key) is None
    # The stored login is usable by `token`.
    r = cli(env, "token", key)
    assert r.returncode == 0 and r.stdout == tokens.access_token + "\n"


def test_login_without_a_server_names_every_way_to_give_one(env: dict[str, str]) -> None:
    result = cli(env, "login")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for way in ("the URL to log in to", "--issuer", "--authorize-url", "--token-url"):
        assert way in result.stderr


def test_login_denied_exit_5(env: dict[str, str], store_path: Path,
                             provider: MockProvider) -> None:
    provider.next_authorize_error = "access_denied"
    login = LoginProcess(env, "--issuer", provider.issuer, "--client-id", provider.client_id,
                         "--key", "k", "--no-browser", "--timeout", "20")
    with httpx2.Client(follow_redirects=True, timeout=10) as http:
        http.get(login.url())
    code, out, err = login.finish()
    assert code == 5, err
    assert "oauth-callback: error: " in err and "access_denied" in err
    assert out == ""
    assert FileStore(store_path).get("k") is None


def test_login_ctrl_c_exits_130(env: dict[str, str], provider: MockProvider) -> None:
    login = LoginProcess(env, "--authorize-url", provider.authorization_endpoint,
                         "--token-url", provider.token_endpoint,
                         "--client-id", provider.client_id, "--key", "k", "--no-browser")
    login.url()
    login.proc.send_signal(signal.SIGINT)
    code, out, err = login.finish()
    assert code == 130, err
    assert "Traceback" not in err
    assert out == ""


# --------------------------------------------------------------------------- doctor


def test_doctor_healthy_store(env: dict[str, str], seeded: FileStore) -> None:
    r = cli(env, "doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No problems found." in r.stdout
    assert_no_secrets(r)


def test_doctor_fresh_store_is_healthy(env: dict[str, str], store_path: Path) -> None:
    r = cli(env, "doctor")
    assert r.returncode == 0, r.stdout
    assert not store_path.parent.exists()  # checks never create anything


def test_doctor_damaged_store_then_repair(env: dict[str, str], seeded: FileStore,
                                          store_path: Path) -> None:
    directory = store_path.parent
    # A good backup: the store's current content (the seeding left an older one).
    backup = Path(seeded.backup_path)
    backup.write_bytes(store_path.read_bytes())
    backup.chmod(0o600)
    store_path.write_text('{"github": {"accessToken": ')  # torn write
    store_path.chmod(0o644)
    directory.chmod(0o755)
    dead_pid = 4_000_000  # above Linux's pid_max: never a live process
    stale = directory / f".tokens.json.{dead_pid}.0123456789abcdef.tmp"
    stale.write_text("{}")

    r = cli(env, "doctor")
    assert r.returncode == 1, r.stdout
    out = r.stdout
    assert "has mode 0644" in out
    assert "is corrupt" in out and "backup" in out and "is good" in out
    assert f"pid {dead_pid}" in out and "stale temporary file" in out
    assert "directory" in out and "0755" in out
    assert "fix:" in out
    assert_no_secrets(r)

    r = cli(env, "doctor", "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    checks = {f["check"] for f in report["findings"] if f["severity"] in ("warning", "error")}
    assert {"store-mode", "parse", "stale-temp", "directory-mode"} <= checks
    assert report["healthy"] is False

    r = cli(env, "doctor", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Repairing:" in r.stdout
    assert not stale.exists()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    assert list(directory.glob("tokens.json.corrupt-*"))
    restored = FileStore(store_path)
    assert restored.keys() == ["github", "old", "forever"]
    assert restored.get("github") == seeded.get("github")

    r = cli(env, "doctor")
    assert r.returncode == 0, r.stdout
    assert "corrupt copy" in r.stdout  # kept, mentioned, not a problem


def test_doctor_lock_symlink_and_held_lock(env: dict[str, str], seeded: FileStore,
                                           store_path: Path, tmp_path: Path) -> None:
    lock = Path(seeded.lock_path)
    with seeded._lock:  # held by this (live) process
        r = cli(env, "doctor")
    assert r.returncode == 0, r.stdout
    assert "held right now" in r.stdout
    if sys.platform.startswith("linux"):
        assert f"by pid {os.getpid()} (" in r.stdout
    assert "dead process cannot exist" in r.stdout

    lock.unlink()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    lock.symlink_to(victim)
    r = cli(env, "doctor")
    assert r.returncode == 1
    assert "is a symlink" in r.stdout
    r = cli(env, "doctor", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not lock.is_symlink()
    assert victim.read_text() == "keep me"


def test_doctor_checks_are_structured(seeded: FileStore, store_path: Path) -> None:
    store_path.chmod(0o640)
    findings = diagnose(store_path)
    mode = [f for f in findings if f.check == "store-mode"]
    assert len(mode) == 1
    assert mode[0].severity is Severity.ERROR and mode[0].repairable
    assert mode[0].fix is not None and "chmod 600" in mode[0].fix


def test_doctor_rejects_memory_store(env: dict[str, str]) -> None:
    r = cli(env, "--store", "memory:", "doctor")
    assert r.returncode == 2
    assert "file stores only" in r.stderr


# --------------------------------------------------------------------------- demo


def test_demo_headless(env: dict[str, str], store_path: Path) -> None:
    r = cli(env, "demo", "--headless", timeout=120)  # bounded generously, no wall-clock race
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "headless" in out
    assert "refreshed: yes" in out
    assert "-rw------- (0600)" in out
    assert "Demo complete" in out
    assert not store_path.exists()  # the demo never touches the user's store


# --------------------------------------------------------------------------- tokens migrate


def test_tokens_migrate_copies_and_verifies_without_secrets(
    env: dict[str, str], seeded: FileStore, store_path: Path, tmp_path: Path
) -> None:
    target = f"sqlite:{tmp_path / 'db' / 'tokens.db'}"
    r = cli(env, "tokens", "migrate", "--from", str(store_path), "--to", target)
    assert r.returncode == 0, r.stderr
    assert "3 keys" in r.stdout  # github (tokens + client), old, forever
    assert "copied:      4" in r.stdout and "verified:    4" in r.stdout
    assert_no_secrets(r)
    # The copy is usable: list it through --store.
    listed = cli(env, "--store", target, "tokens", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {row["key"] for row in json.loads(listed.stdout)} == {"github", "old", "forever"}
    r = cli(env, "tokens", "migrate", "--from", str(store_path), "--to", target, "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["counts"]["identical"] == report["counts"]["verified"] == 4
    assert report["counts"]["copied"] == 0
    assert_no_secrets(r)


def test_tokens_migrate_conflict_exit_1_dry_run_and_overwrite(
    env: dict[str, str], seeded: FileStore, store_path: Path, tmp_path: Path
) -> None:
    target_path = tmp_path / "other" / "tokens.json"
    FileStore(target_path).set("old", Tokens("someone-else"))
    args = ("tokens", "migrate", "--from", f"file:{store_path}", "--to", f"file:{target_path}")
    r = cli(env, *args)
    assert r.returncode == 1
    assert "conflict: tokens of 'old'" in r.stdout
    assert "conflicting record left unchanged" in r.stderr and "--overwrite" in r.stderr
    assert FileStore(target_path).get("old") == Tokens("someone-else")
    assert FileStore(target_path).get("github") == seeded.get("github")  # the rest was copied
    before = target_path.read_bytes()
    r = cli(env, *args, "--overwrite", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would be overwritten: 1" in r.stdout
    assert target_path.read_bytes() == before
    r = cli(env, *args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert FileStore(target_path).get("old") == seeded.get("old")
    assert_no_secrets(r)


def test_tokens_migrate_usage_and_missing_key(
    env: dict[str, str], seeded: FileStore, store_path: Path, tmp_path: Path
) -> None:
    r = cli(env, "tokens", "migrate", "--help")
    assert r.returncode == 0
    for option in ("--from", "--to", "--key", "--overwrite", "--dry-run"):
        assert option in r.stdout
    r = cli(env, "tokens", "migrate", "--from", str(store_path))
    assert r.returncode == 2 and "--to" in r.stderr
    r = cli(env, "tokens", "migrate", "--from", "bogus:x", "--to", "memory:")
    assert r.returncode == 2 and "--from: unknown store URL scheme 'bogus'" in r.stderr
    target = tmp_path / "t.json"
    r = cli(env, "tokens", "migrate", "--from", str(store_path), "--to", str(target),
            "--key", "forever", "--key", "nope")
    assert r.returncode == 1
    assert "no record in the source for 'nope'" in r.stderr
    assert FileStore(target).keys() == ["forever"]


def test_tokens_migrate_unreachable_redis_exit_4_hides_password(
    env: dict[str, str], seeded: FileStore, store_path: Path
) -> None:
    pytest.importorskip("redis", reason="needs redis-py (oauth-callback[redis])")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    r = cli(env, "tokens", "migrate", "--from", str(store_path),
            "--to", f"redis://:hunter2pass@127.0.0.1:{port}/0")
    assert r.returncode == 4
    assert f"127.0.0.1:{port}" in r.stderr and "unavailable" in r.stderr
    assert "hunter2pass" not in r.stdout + r.stderr


def test_bad_input_is_an_error_line_not_a_traceback(env: dict[str, str]) -> None:
    r = cli(env, "--store", "memory:", "token", "")
    assert r.returncode == 2
    assert r.stderr.startswith("oauth-callback: error: ")
    assert "Traceback" not in r.stderr
    r = cli(env, "--store", "memory:", "login", "--issuer", "http://[::1", "--client-id", "x")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_doctor_repair_never_locks_down_a_shared_directory(env: dict[str, str], seeded: FileStore,
                                                            store_path: Path) -> None:
    directory = store_path.parent
    (directory / "unrelated-notes.txt").write_text("someone else's file")
    os.chmod(directory, 0o755)
    r = cli(env, "doctor", "--repair")
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o755
    assert "chmod 700" in r.stdout + r.stderr  # explained, left to the user
