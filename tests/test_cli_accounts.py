"""``status``, ``logout``, ``login --key KEY`` again, other accounts, and the newcomer's
polish, every command a real subprocess against a real MockProvider."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from oauth_callback import ClientInfo, FileStore, Tokens
from oauth_callback.testing import MockProvider

from .test_cli import LoginProcess, cli

KEY = "acme"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tokens.json"


@pytest.fixture
def env(store_path: Path) -> dict[str, str]:
    from .conftest import cli_env

    return cli_env(store_path)


@pytest.fixture
def provider() -> Iterator[MockProvider]:
    with MockProvider(expires_in=3600, clients={"conf-client": "conf-secret"}) as p:
        p.add_user("test-user", email="alice@example.com", name="Alice")
        p.add_user("bob", email="bob@example.com")
        yield p


def login(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``oauth-callback login ARGS --no-browser``, the printed URL followed like a browser."""
    proc = LoginProcess(env, *args, "--no-browser", "--timeout", "20")
    with httpx2.Client(follow_redirects=True, timeout=10) as http:
        http.get(proc.url())
    return proc.finish()


def first_login(env: dict[str, str], provider: MockProvider, *more: str) -> tuple[int, str, str]:
    return login(env, "--issuer", provider.issuer, "--client-id", provider.client_id,
                 "--scope", "openid email read", "--key", KEY, *more)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("oauth-callback: ")]
    assert lines, result.stderr
    return lines[-1]


# --------------------------------------------------------------------------- the life cycle


def test_status_logout_and_login_again_with_only_the_key(
    env: dict[str, str], store_path: Path, provider: MockProvider
) -> None:
    code, out, err = first_login(env, provider)
    assert code == 0, err
    store = FileStore(store_path)
    before = store.get(KEY)
    assert before is not None and before.refresh_token

    r = cli(env, "status")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == KEY
    assert "  account:       alice@example.com (sub test-user)" in lines
    assert f"  provider:      {provider.issuer}" in lines
    assert "  scopes:        openid email read" in lines
    assert "  access token:  expires in 59 min" in lines
    assert "  refresh token: yes" in lines
    assert "  status:        usable" in lines
    assert f"  store:         {store_path}" in lines
    for secret in (before.access_token, before.refresh_token):
        assert secret not in r.stdout + r.stderr

    r = cli(env, "status", KEY, "--json")
    assert r.returncode == 0
    row = json.loads(r.stdout)
    assert row["account"]["email"] == "alice@example.com" and row["usable"] is True
    assert row["state"] == "ok" and row["has_refresh_token"] is True

    r = cli(env, "tokens", "list")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].split() == ["KEY", "ACCOUNT", "EXPIRES", "SCOPE", "REFRESH"]
    assert r.stdout.splitlines()[1].split()[:2] == [KEY, "alice@example.com"]

    r = cli(env, "logout", KEY)
    assert r.returncode == 0, r.stderr
    assert r.stderr == (
        f"Logged out of {KEY!r}: removed tokens from {store_path}; revoked at the provider: "
        f"refresh token and access token; the client registration is kept: "
        f"oauth-callback login --key {KEY}\n")
    assert provider.revocations == 2
    assert not provider.is_refresh_token_active(before.refresh_token)
    refresh = httpx2.post(provider.token_endpoint, data={
        "grant_type": "refresh_token", "refresh_token": before.refresh_token,
        "client_id": provider.client_id})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"

    # Logged out: still visible, with the command that logs in again.
    r = cli(env, "tokens", "list")
    row_line = r.stdout.splitlines()[1]
    assert row_line.split()[:3] == [KEY, "-", "logged"]
    assert row_line.endswith(f"log in: oauth-callback login --key {KEY}")
    r = cli(env, "tokens", "list", "--json")
    assert json.loads(r.stdout) == [{
        "key": KEY, "logged_in": False, "account": None, "client_id": provider.client_id,
        "issuer": provider.issuer, "login_command": f"oauth-callback login --key {KEY}"}]
    r = cli(env, "status")
    assert r.returncode == 3
    assert f"  status:        logged out; log in again: oauth-callback login --key {KEY}" in \
        r.stdout.splitlines()
    r = cli(env, "token", KEY)
    assert r.returncode == 3 and r.stdout == ""
    assert error_line(r) == (
        f"oauth-callback: error: no tokens (logged out) stored under {KEY!r} in {store_path}; "
        f"log in first: oauth-callback login --key {KEY}")

    # `login --key KEY` alone: issuer, client id and scope come from the store.
    code, out, err = login(env, "--key", KEY)
    assert code == 0, err
    assert f"Logging in again as stored under {KEY!r}: {provider.issuer}, client " \
           f"{provider.client_id}" in err
    assert out.startswith(f"Logged in: key {KEY!r}")
    again = store.get(KEY)
    assert again is not None and again.scope == "openid email read"
    r = cli(env, "token", KEY, "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"access_token": again.access_token,
                                    "expires_at": again.expires_at}


def test_login_key_reuses_a_fixed_port(env: dict[str, str], store_path: Path,
                                       provider: MockProvider) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _out, err = first_login(env, provider, "--port", str(port))
    assert code == 0, err
    cli(env, "logout", KEY)
    proc = LoginProcess(env, "--key", KEY, "--no-browser", "--timeout", "20")
    url = proc.url()
    assert f"redirect_uri=http%3A%2F%2Flocalhost%3A{port}%2F" in url
    with httpx2.Client(follow_redirects=True, timeout=10) as http:
        http.get(url)
    code, _out, err = proc.finish()
    assert code == 0 and f", port {port}" in err


def test_login_key_without_anything_stored_says_what_to_pass(env: dict[str, str]) -> None:
    r = cli(env, "login", "--key", "nothing-here")
    assert r.returncode == 2
    assert error_line(r).startswith(
        "oauth-callback: error: no login is stored under 'nothing-here' in ")
    assert error_line(r).endswith(
        "to log in again with; pass --issuer URL --client-id ID (or --authorize-url and "
        "--token-url)")


def test_logout_when_the_provider_is_down(env: dict[str, str], store_path: Path,
                                          provider: MockProvider) -> None:
    code, _out, err = first_login(env, provider)
    assert code == 0, err
    provider.stop()
    r = cli(env, "logout", KEY)
    assert r.returncode == 4
    assert r.stderr.startswith(
        f"Logged out of {KEY!r}: removed tokens from {store_path}; REVOKING AT THE PROVIDER "
        f"FAILED (could not reach the revocation endpoint {provider.revocation_endpoint}: "
        "ConnectError")
    assert "the grant may stay valid there until it expires" in r.stderr
    assert FileStore(store_path).get(KEY) is None


def test_logout_no_revoke_and_all(env: dict[str, str], store_path: Path,
                                  provider: MockProvider) -> None:
    code, _out, err = first_login(env, provider)
    assert code == 0, err
    tokens = FileStore(store_path).get(KEY)
    assert tokens is not None
    r = cli(env, "logout", KEY, "--no-revoke", "--all")
    assert r.returncode == 0, r.stderr
    assert r.stderr == (
        f"Logged out of {KEY!r}: removed tokens and the client registration from "
        f"{store_path}; not revoked at the provider (--no-revoke): the grant stays valid "
        "there\n")
    assert provider.revocation_requests == 0 and provider.is_refresh_token_active(
        tokens.refresh_token or "")
    store = FileStore(store_path)
    assert store.get(KEY) is None and store.get_client(KEY) is None
    r = cli(env, "logout", KEY)
    assert r.returncode == 1
    assert error_line(r) == f"oauth-callback: error: no login stored under {KEY!r} in {store_path}"


def test_status_check_asks_the_provider(env: dict[str, str], store_path: Path,
                                        provider: MockProvider) -> None:
    code, _out, err = first_login(env, provider)
    assert code == 0, err
    r = cli(env, "status", "--check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "  check:         ok (the provider accepted the login)" in r.stdout.splitlines()
    assert provider.userinfo_requests == 1
    provider.revoke_all()
    r = cli(env, "status", "--check", "--json")
    assert r.returncode == 3
    row = json.loads(r.stdout)[0]
    assert row["usable"] is False and row["check"]["ok"] is False
    assert row["check"]["error"] == (
        f"the userinfo endpoint {provider.userinfo_endpoint} refused the access token (HTTP 401)")
    assert row["login_command"] == f"oauth-callback login --key {KEY}"
    provider.stop()
    r = cli(env, "status", "--check")
    assert r.returncode == 4


def test_status_of_nothing_and_of_an_unknown_key(env: dict[str, str], store_path: Path) -> None:
    store_path.parent.mkdir(mode=0o700)
    r = cli(env, "status")
    assert r.returncode == 3
    assert r.stderr == (f"not logged in: no accounts in {store_path}; log in: oauth-callback "
                        "login --issuer URL --client-id ID\n")
    r = cli(env, "status", "nope")
    assert r.returncode == 3
    assert error_line(r) == (
        f"oauth-callback: error: no login stored under 'nope' in {store_path}; log in: "
        "oauth-callback login --key nope --issuer URL --client-id ID")


def test_status_expired_without_refresh_token(env: dict[str, str], store_path: Path) -> None:
    store = FileStore(store_path)
    store.set("old", Tokens("old-token", expires_at=1.0))
    store.set_client("old", ClientInfo("cid", issuer="https://as.example"))
    r = cli(env, "status", "old")
    assert r.returncode == 3
    assert ("  status:        expired, and no refresh token; log in again: "
            "oauth-callback login --key old") in r.stdout.splitlines()


# --------------------------------------------------------------------------- other accounts


def test_a_second_account_under_the_same_key_is_refused(
    env: dict[str, str], store_path: Path, provider: MockProvider
) -> None:
    code, _out, err = first_login(env, provider)
    assert code == 0, err
    before = FileStore(store_path).get(KEY)
    provider.approving_user = "bob"
    code, out, err = login(env, "--key", KEY)
    assert code == 1 and out == ""
    assert err.splitlines()[-1] == (
        f"oauth-callback: error: {KEY!r} holds the login of 'alice@example.com', but this "
        "login authenticated 'bob@example.com'; nothing was stored; log in under another key "
        f"(--key {KEY}-2) to keep both, or pass --force to replace it")
    assert FileStore(store_path).get(KEY) == before
    code, _out, err = login(env, "--key", f"{KEY}-2", "--issuer", provider.issuer,
                            "--client-id", provider.client_id, "--scope", "openid email")
    assert code == 0, err
    code, _out, err = login(env, "--key", KEY, "--force")
    assert code == 0, err
    r = cli(env, "status", "--json")
    accounts = {row["key"]: row["account"]["email"] for row in json.loads(r.stdout)}
    assert accounts == {KEY: "bob@example.com", f"{KEY}-2": "bob@example.com"}


def test_a_forged_id_token_fails_the_cli_login(env: dict[str, str], store_path: Path,
                                               provider: MockProvider) -> None:
    provider.forge_next_id_token()
    code, out, err = first_login(env, provider)
    assert code == 5 and out == ""
    assert err.splitlines()[-1] == (
        "oauth-callback: error: the ID Token's signature does not verify against the "
        "provider's keys (jwks_uri); it may be forged")
    assert FileStore(store_path).get(KEY) is None


# --------------------------------------------------------------------------- polish


@pytest.mark.parametrize(("issuer", "message"), [
    ("127.0.0.1:9100", "--issuer 127.0.0.1:9100 has no scheme; did you mean "
                       "http://127.0.0.1:9100?"),
    ("htp://127.0.0.1:9100", "--issuer htp://127.0.0.1:9100: unknown scheme 'htp'; did you "
                             "mean http://127.0.0.1:9100?"),
    ("login.example.com", "--issuer login.example.com has no scheme; did you mean "
                          "https://login.example.com?"),
    ("http://login.example.com", "--issuer http://login.example.com: http is allowed only for "
                                 "loopback hosts (127.0.0.1, ::1, localhost); did you mean "
                                 "https://login.example.com?"),
])
def test_issuer_without_a_usable_scheme_is_a_usage_error(env: dict[str, str], issuer: str,
                                                         message: str) -> None:
    r = cli(env, "login", "--issuer", issuer, "--client-id", "c")
    assert r.returncode == 2
    assert error_line(r) == f"oauth-callback: error: {message}"


def test_read_commands_report_a_missing_store_directory(env: dict[str, str],
                                                        tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "tokens.json"
    said = (f"the store directory {path.parent} does not exist, so nothing is stored in "
            f"{path}: check --store or $OAUTH_CALLBACK_STORE")
    r = cli(env, "--store", str(path), "tokens", "list")
    assert r.returncode == 0 and r.stderr == f"no tokens stored: {said}\n"
    r = cli(env, "--store", str(path), "token", "k")
    assert r.returncode == 3
    assert error_line(r) == (f"oauth-callback: error: {said}; or log in first: oauth-callback "
                             "login --key k --issuer URL --client-id ID")
    r = cli(env, "--store", str(path), "status")
    assert r.returncode == 3 and error_line(r) == f"oauth-callback: error: {said}"
    assert not path.parent.exists()


def test_memory_store_login_warns(env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli(env, "--store", "memory:", "login", "--issuer", f"http://127.0.0.1:{port}",
            "--client-id", "c")
    assert ("oauth-callback: warning: --store memory: keeps the tokens in this process only: "
            "they vanish when it exits (use a file, sqlite:, keyring: or redis:// store to keep "
            "them)") in r.stderr.splitlines()


def test_store_help_lists_every_scheme(env: dict[str, str]) -> None:
    r = cli(env, "tokens", "list", "--help")
    text = " ".join(r.stdout.split())
    for form in ("file:PATH", "sqlite:PATH", "keyring:", "redis://", "rediss://",
                 "redis+cluster://", "redis+sentinel://", "memory:", "?encryption="):
        assert form in text, form


def test_invalid_client_after_the_browser_said_complete(env: dict[str, str],
                                                        store_path: Path,
                                                        provider: MockProvider) -> None:
    code, out, err = login(env, "--issuer", provider.issuer, "--client-id", "conf-client",
                           "--key", KEY)
    assert code == 5 and out == ""
    assert err.splitlines()[-1] == (
        "oauth-callback: error: the authorization completed in the browser, but the token "
        "endpoint rejected the client (invalid_client: client authentication failed); if "
        "it is a confidential client, give its secret: set $OAUTH_CALLBACK_CLIENT_SECRET "
        "(or pass --client-secret)")
    env = {**env, "OAUTH_CALLBACK_CLIENT_SECRET": "conf-secret"}
    code, _out, err = login(env, "--issuer", provider.issuer, "--client-id", "conf-client",
                            "--key", KEY)
    assert code == 0, err


def test_errors_in_cli_terms(env: dict[str, str], store_path: Path,
                             provider: MockProvider) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli(env, "login", "--issuer", provider.issuer, "--client-id", provider.client_id,
                "--port", str(port), "--no-browser")
    assert r.returncode == 5
    assert "use --port 0 to pick a free port" in error_line(r)
    assert "port=0" not in r.stderr
    store = FileStore(store_path)
    store.set("k", Tokens("at", refresh_token="rt", expires_at=1.0))
    r = cli(env, "token", "k")
    assert r.returncode == 3
    assert error_line(r) == (
        "oauth-callback: error: login required for 'k': no client registration is stored to "
        "refresh the token with; log in again: oauth-callback login --key k --issuer URL "
        "--client-id ID")
    assert "TokenManager" not in r.stderr and "client=" not in r.stderr


def test_token_after_the_grant_was_revoked_says_the_command(
    env: dict[str, str], store_path: Path, provider: MockProvider
) -> None:
    code, _out, err = first_login(env, provider)
    assert code == 0, err
    store = FileStore(store_path)
    tokens = store.get(KEY)
    assert tokens is not None
    store.set(KEY, tokens.replace(expires_at=1.0))
    provider.revoke_all()
    r = cli(env, "token", KEY)
    assert r.returncode == 3 and r.stdout == ""
    assert error_line(r) == (
        f"oauth-callback: error: login required for {KEY!r}: the provider no longer accepts "
        "the stored grant (invalid_grant: grant revoked); log in again: oauth-callback login "
        f"--key {KEY}")


def test_completion_scripts_and_answers(env: dict[str, str], tmp_path: Path) -> None:
    for shell, marker in (("bash", "complete "), ("zsh", "#compdef oauth-callback"),
                          ("fish", "complete --command oauth-callback")):
        r = cli(env, "completion", shell)
        assert r.returncode == 0 and marker in r.stdout, (shell, r.stdout[:200])
    out = tmp_path / "completions"
    line = "oauth-callback "
    r = subprocess.run(
        [sys.executable, "-m", "oauth_callback"], capture_output=True, text=True, timeout=30,
        env={**env, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
             "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"},
    )
    assert r.returncode == 0, r.stderr
    words = set(out.read_text().split())
    assert {"login", "status", "logout", "token", "tokens", "completion"} <= words
    line = "oauth-callback logout --"
    subprocess.run(
        [sys.executable, "-m", "oauth_callback"], capture_output=True, text=True, timeout=30,
        env={**env, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
             "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"},
    )
    assert {"--all", "--no-revoke"} <= set(out.read_text().split())


def test_login_key_uses_a_secret_only_if_the_login_stored_it(
    env: dict[str, str], store_path: Path, provider: MockProvider
) -> None:
    with_secret = {**env, "OAUTH_CALLBACK_CLIENT_SECRET": "conf-secret"}
    code, _out, err = login(with_secret, "--issuer", provider.issuer, "--client-id",
                            "conf-client", "--key", KEY)
    assert code == 0, err
    r = cli(env, "logout", KEY)
    assert r.returncode == 0, r.stderr
    code, _out, err = login(env, "--key", KEY)  # no secret given: the stored one is used
    assert code == 0, err
    assert "conf-secret" not in err
    r = cli(env, "tokens", "show", KEY)
    assert "account:" in r.stdout and "conf-secret" not in r.stdout


def test_a_corrupt_store_is_explained_in_cli_terms(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bad" / "tokens.json"
    path.parent.mkdir(mode=0o700)
    path.write_text("{not json")
    path.chmod(0o600)
    r = cli(env, "--store", str(path), "token", "k")
    assert r.returncode == 4
    assert error_line(r).endswith("nothing was changed. run 'oauth-callback doctor --repair'")
    assert "FileStore.repair" not in r.stderr


def test_a_stored_secret_never_goes_to_another_server(
    env: dict[str, str], store_path: Path, provider: MockProvider
) -> None:
    store = FileStore(store_path)
    store.set_client(KEY, ClientInfo(provider.client_id, client_secret="old-server-secret",
                                     issuer="https://old.example", scope="old-scope",
                                     extra={"loginPort": 1}))
    proc = LoginProcess(env, "--issuer", provider.issuer, "--client-id", provider.client_id,
                        "--key", KEY, "--no-browser", "--timeout", "20")
    url = proc.url()
    assert "old-scope" not in url and "localhost%3A1%2F" not in url
    with httpx2.Client(follow_redirects=True, timeout=10) as http:
        http.get(url)
    code, _out, err = proc.finish()
    assert code == 0, err  # a public client: a secret sent along would be refused
    assert all("client_secret" not in r for r in provider.token_requests)
    assert "Logging in again" not in err
