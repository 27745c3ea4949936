"""``oauth-callback tokens keygen`` and ``doctor`` on encrypted stores, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from oauth_callback import FileStore, Tokens
from oauth_callback.storage.encrypted import EncryptedStore
from oauth_callback.storage.key_sources import FileKey, StaticKey, generate_key, key_id

from .conftest import ROOT

SECRET = "at-CLI-SECRET-00112233445566778899"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + full.get("PYTHONPATH", "")
    full.pop("OAUTH_CALLBACK_STORE", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "oauth_callback", *args], capture_output=True,
                          text=True, env=full, timeout=60, stdin=subprocess.DEVNULL)


def test_keygen_writes_a_private_key_file_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "oc.key"
    result = cli("tokens", "keygen", str(path))
    assert result.returncode == 0, result.stderr
    key = FileKey(path).load()
    assert f"key id {key_id(key)}" in result.stdout
    text = path.read_text().strip()
    assert text not in result.stdout + result.stderr  # the key is never printed
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = cli("tokens", "keygen", str(path))
    assert again.returncode == 1 and "never overwritten" in again.stderr
    assert path.read_text().strip() == text
    # The file works as a key source, and its text as an env: key.
    store = tmp_path / "tokens.json"
    url = f"file:{store}?encryption=file:{path}"
    EncryptedStore(FileStore(store), FileKey(path)).set("k", Tokens(SECRET))
    listed = cli("tokens", "list", "--store", url)
    assert listed.returncode == 0 and "k" in listed.stdout, listed.stderr
    shown = cli("tokens", "show", "k", "--reveal", "--store",
                f"file:{store}?encryption=env:OC_CLI_KEY", env={"OC_CLI_KEY": text})
    assert shown.returncode == 0 and SECRET in shown.stdout, shown.stderr
    assert SECRET not in store.read_text()


def test_doctor_reports_plaintext_and_old_key_records(tmp_path: Path) -> None:
    store = tmp_path / "tokens.json"
    key_file = tmp_path / "oc.key"
    assert cli("tokens", "keygen", str(key_file)).returncode == 0
    url = f"file:{store}?encryption=file:{key_file}"
    enc = EncryptedStore(FileStore(store), FileKey(key_file))
    enc.set("good", Tokens("g"))
    healthy = cli("doctor", "--store", url)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "1 record encrypted under key id" in healthy.stdout
    FileStore(store).set("plain", Tokens(SECRET))
    old_key = generate_key()
    scratch = FileStore(tmp_path / "scratch.json")
    EncryptedStore(scratch, StaticKey(old_key)).set("old", Tokens("o"))
    doc = json.loads(store.read_text())
    doc["old"] = json.loads((tmp_path / "scratch.json").read_text())["old"]
    store.write_text(json.dumps(doc))
    os.chmod(store, 0o600)
    result = cli("doctor", "--store", url, "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    checks = {f["check"]: f for f in report["findings"]}
    assert checks["plaintext-records"]["severity"] == "warning"
    assert "'tokens:plain'" in checks["plaintext-records"]["message"]
    assert key_id(old_key) in checks["old-key-records"]["message"]
    assert {"parse", "store-file", "directory"} <= set(checks)  # the file checks ran too
    assert SECRET not in result.stdout + result.stderr
    text = cli("doctor", "--store", url)
    assert "not encrypted" in text.stdout and "under another key id" in text.stdout
    # Any backend: an encrypted SQLite store gets the encryption checks.
    db = f"sqlite:{tmp_path}/t.db?encryption=file:{key_file}"
    assert cli("doctor", "--store", db).returncode == 0


def test_token_from_an_encrypted_store_opened_without_encryption(tmp_path: Path) -> None:
    """``token KEY`` on an encrypted store opened without ``?encryption=``: exit 4 and a
    message that says the record is encrypted and which option opens it; never the
    placeholder as if it were the token."""
    store = tmp_path / "tokens.json"
    key_file = tmp_path / "oc.key"
    assert cli("tokens", "keygen", str(key_file)).returncode == 0
    EncryptedStore(FileStore(store), FileKey(key_file)).set("k", Tokens(SECRET))
    result = cli("token", "k", "--store", f"file:{store}")
    assert result.returncode == 4, result.stderr
    assert result.stdout == ""
    assert "'k'" in result.stderr and "is encrypted" in result.stderr
    assert "?encryption=" in result.stderr and "Traceback" not in result.stderr
    opened = cli("token", "k", "--store", f"file:{store}?encryption=file:{key_file}")
    assert opened.returncode == 0 and opened.stdout == SECRET + "\n", opened.stderr


def test_login_without_encryption_does_not_replace_encrypted_tokens(tmp_path: Path) -> None:
    """``login`` run without ``?encryption=`` against a key whose tokens are encrypted:
    exit 4 and a message naming the key and the option, before the provider is asked;
    the encrypted record is not replaced by the new tokens in clear (a silent
    downgrade) and still opens with its key. (The store's own refusal to replace it,
    which this check only anticipates, is tested for every backend in
    test_store_contract.py::test_encrypted_record_is_not_replaced_without_encryption.)"""
    from oauth_callback.testing import MockProvider

    from .conftest import cli_env

    store = tmp_path / "store" / "tokens.json"
    key_file = tmp_path / "oc.key"
    assert cli("tokens", "keygen", str(key_file)).returncode == 0
    encrypted = EncryptedStore(FileStore(store), FileKey(key_file))
    encrypted.set("svc", Tokens(SECRET, refresh_token="rt-CLI-SECRET-0123456789"))
    before = json.loads(store.read_text())["svc"]
    with MockProvider() as provider:
        client_id, client_secret = provider.register_machine_client(scope="read")
        assert client_secret is not None
        env = {**cli_env(store), "OAUTH_CALLBACK_CLIENT_SECRET": client_secret}
        result = subprocess.run(
            [sys.executable, "-m", "oauth_callback", "login", "--client-credentials",
             "--issuer", provider.issuer, "--client-id", client_id, "--key", "svc"],
            capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        assert provider.client_credentials_count == 0  # refused before the provider
        browser = subprocess.run(  # the browser flow: refused before the URL is shown
            [sys.executable, "-m", "oauth_callback", "login", "--issuer", provider.issuer,
             "--client-id", provider.client_id, "--key", "svc", "--no-browser",
             "--timeout", "10"],
            capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert browser.returncode == 4, browser.stdout + browser.stderr
    assert "/authorize?" not in browser.stderr and "'svc'" in browser.stderr
    assert "is encrypted" in browser.stderr and "?encryption=" in browser.stderr
    assert result.returncode == 4, result.stdout + result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert "'svc'" in result.stderr and "is encrypted" in result.stderr
    assert "?encryption=" in result.stderr
    assert json.loads(store.read_text())["svc"] == before  # unchanged, still encrypted
    assert FileStore(store).keys("clients") == []  # no registration written beside it
    reopened = EncryptedStore(FileStore(store), FileKey(key_file))
    assert reopened.get("svc") == Tokens(SECRET, refresh_token="rt-CLI-SECRET-0123456789")


def test_status_and_tokens_list_show_encrypted_records_without_encryption(
    tmp_path: Path,
) -> None:
    """``status`` and ``tokens list`` on a store opened without ``?encryption=`` list every
    key: one whose records are encrypted as "encrypted (open with ?encryption=SOURCE)"
    with no other field (``--json``: ``"encrypted": true``), the others as usual, and
    the exit status is that of the readable logins."""
    import time

    from oauth_callback import ClientInfo

    from .conftest import cli_env

    store = tmp_path / "store" / "tokens.json"
    key_file = tmp_path / "oc.key"
    assert cli("tokens", "keygen", str(key_file)).returncode == 0
    encrypted = EncryptedStore(FileStore(store), FileKey(key_file))
    encrypted.set("enc", Tokens(SECRET, refresh_token="rt-CLI-SECRET-0123456789",
                                expires_at=time.time() + 3600))
    encrypted.set_client("enc", ClientInfo("cid-enc", issuer="https://idp.example"))
    FileStore(store).set("plain", Tokens("at-plain-0123", expires_at=time.time() + 3600,
                                         scope="read"))
    env = cli_env(store)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "oauth_callback", *args],
                                capture_output=True, text=True, env=env, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert "Traceback" not in result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert "$encrypted" not in result.stdout + result.stderr
        return result

    label = "encrypted (open with ?encryption=SOURCE)"
    listed = run("tokens", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["KEY", "ACCOUNT", "EXPIRES", "SCOPE", "REFRESH"]
    assert lines[1] == f"{'enc':<5}  {label}"  # the key column's width; nothing else
    assert lines[2].split()[0] == "plain" and lines[2].split()[-2:] == ["read", "no"]
    assert len(lines) == 3
    rows = json.loads(run("tokens", "list", "--json").stdout)
    assert rows[0] == {"key": "enc", "encrypted": True}
    assert rows[1]["key"] == "plain" and rows[1]["logged_in"] is True
    assert "encrypted" not in rows[1]

    status = run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"enc\n  status:        {label}\n" in status.stdout
    assert "plain\n" in status.stdout and "  status:        usable" in status.stdout
    assert "cid-enc" not in status.stdout and "idp.example" not in status.stdout
    rows = json.loads(run("status", "--json").stdout)
    assert {"key": "enc", "encrypted": True} in rows
    assert [row["usable"] for row in rows if row["key"] == "plain"] == [True]
    one = run("status", "enc")
    assert one.returncode == 0 and one.stdout == f"enc\n  status:        {label}\n"
    assert json.loads(run("status", "enc", "--json").stdout) == {"key": "enc",
                                                                 "encrypted": True}
    assert run("token", "enc").returncode == 4  # reading it still needs the key

    # Opened with its key, the same store shows the record in full.
    env["OAUTH_CALLBACK_STORE"] = f"file:{store}?encryption=file:{key_file}"
    opened = run("status", "enc", "--json")
    assert opened.returncode == 0, opened.stderr
    row = json.loads(opened.stdout)
    assert row["client_id"] == "cid-enc" and row["usable"] is True
    assert "encrypted" not in row
