"""``oauth-callback tokens import KEY``: a token (or a JSON token response) from stdin,
then ``token KEY`` as after a login; real subprocesses, a real provider."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from oauth_callback import FileStore, Tokens
from oauth_callback.testing import MockProvider

from .conftest import ROOT
from .test_cli import cli, real_grant

SECRET = "gho_IMPORTsecret0123456789abcdef"


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


def test_a_bare_token_from_stdin(env: dict[str, str], store_path: Path) -> None:
    result = cli(env, "tokens", "import", "gh", "--expires-in", "3600", "--scope", "repo",
                 input=SECRET + "\n")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "imported the tokens of 'gh'" in result.stderr and "refresh token: no" in result.stderr
    stored = FileStore(store_path).get("gh")
    assert stored is not None and stored.access_token == SECRET and stored.scope == "repo"
    assert 3500 < (stored.expires_in() or 0) <= 3600
    printed = cli(env, "token", "gh")
    assert printed.returncode == 0 and printed.stdout == SECRET + "\n"


def test_a_token_response_with_a_refresh_token_keeps_working_after_expiry(
    env: dict[str, str], store_path: Path
) -> None:
    with MockProvider() as p:
        body = real_grant(p)
        result = cli(env, "tokens", "import", "mock", "--client-id", p.client_id,
                     "--issuer", p.issuer, input=json.dumps(body, indent=2))
        assert result.returncode == 0, result.stderr
        for secret in (body["access_token"], body["refresh_token"]):
            assert secret not in result.stdout + result.stderr
        assert "refresh token: yes" in result.stderr and p.client_id in result.stderr
        assert cli(env, "token", "mock").stdout.strip() == body["access_token"]
        # The access token expires: `token` refreshes with the imported refresh token.
        p.expire_access_tokens()
        store = FileStore(store_path)
        store.update("mock", lambda t: t.replace(expires_at=time.time() - 5) if t else t)
        renewed = cli(env, "token", "mock")
        assert renewed.returncode == 0, renewed.stderr
        assert renewed.stdout.strip() not in ("", body["access_token"])
        assert p.is_access_token_active(renewed.stdout.strip())
        assert p.refresh_count == 1


def test_a_stored_record_shape_is_accepted(env: dict[str, str], store_path: Path) -> None:
    record = Tokens(SECRET, expires_at=time.time() + 60, extra={"id_token": "x.y.z"}).to_record()
    result = cli(env, "tokens", "import", "rec", input=json.dumps(record))
    assert result.returncode == 0, result.stderr
    stored = FileStore(store_path).get("rec")
    assert stored is not None and stored.access_token == SECRET
    assert stored.extra["id_token"] == "x.y.z"


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("", "no token on stdin"),
        ("   \n", "no token on stdin"),
        ("{" + SECRET, "not valid JSON (line 1, column 2)"),
        (json.dumps({"token": SECRET}), "has no 'access_token'"),
        (json.dumps({"access_token": SECRET, "expires_in": "soon"}), "'expires_in'"),
        (json.dumps({"access_token": SECRET, "refresh_token": 7}), "'refresh_token'"),
        (f"{SECRET} {SECRET}", "does not hold one token"),
        (f"{SECRET}\n{SECRET}", "does not hold one token"),
        (SECRET + "\x1b[2J", "does not hold one token"),
    ],
)
def test_bad_input_is_a_usage_error_that_quotes_nothing(
    env: dict[str, str], store_path: Path, stdin: str, message: str
) -> None:
    result = cli(env, "tokens", "import", "k", input=stdin)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert not store_path.exists() or FileStore(store_path).get("k") is None


def test_existing_tokens_are_kept_without_overwrite(env: dict[str, str], store_path: Path) -> None:
    FileStore(store_path).set("k", Tokens("old-token-value"))
    refused = cli(env, "tokens", "import", "k", input=SECRET)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr
    assert FileStore(store_path).get("k") == Tokens("old-token-value")
    replaced = cli(env, "tokens", "import", "k", "--overwrite", input=SECRET)
    assert replaced.returncode == 0, replaced.stderr
    stored = FileStore(store_path).get("k")
    assert stored is not None and stored.access_token == SECRET


def test_client_options_must_go_together(env: dict[str, str]) -> None:
    for args in (["--client-id", "c"], ["--issuer", "https://as.example"]):
        result = cli(env, "tokens", "import", "k", *args, input=SECRET)
        assert result.returncode == 2 and "--" in result.stderr
    note = cli(env, "tokens", "import", "k",
               input=json.dumps({"access_token": SECRET, "refresh_token": "r" * 20}))
    assert note.returncode == 0 and "cannot be used" in note.stderr


def test_a_confidential_client_refreshes_with_the_secret_from_the_environment(
    env: dict[str, str], store_path: Path
) -> None:
    from urllib.parse import parse_qs, urlencode, urlsplit

    import httpx2

    from oauth_callback.pkce import generate_pkce

    with MockProvider() as p:
        client_id, secret = p.register_client(confidential=True)
        assert secret is not None
        verifier, challenge = generate_pkce()
        redirect = "http://127.0.0.1:1/callback"
        with httpx2.Client(timeout=5) as http:
            location = http.get(p.authorization_endpoint + "?" + urlencode({
                "response_type": "code", "client_id": client_id, "redirect_uri": redirect,
                "code_challenge": challenge, "code_challenge_method": "S256", "state": "s",
            })).headers["location"]
            body = http.post(p.token_endpoint, auth=(client_id, secret), data={
                "grant_type": "authorization_code", "redirect_uri": redirect,
                "code": parse_qs(urlsplit(location).query)["code"][0],
                "code_verifier": verifier,
            }).json()
        with_secret = {**env, "OAUTH_CALLBACK_CLIENT_SECRET": secret}
        result = cli(with_secret, "tokens", "import", "conf", "--client-id",
                     client_id, "--issuer", p.issuer, input=json.dumps(body))
        assert result.returncode == 0, result.stderr
        assert secret not in store_path.read_text()
        p.expire_access_tokens()
        FileStore(store_path).update(
            "conf", lambda t: t.replace(expires_at=time.time() - 5) if t else t)
        missing = cli(env, "token", "conf")
        assert missing.returncode == 2 and "OAUTH_CALLBACK_CLIENT_SECRET" in missing.stderr
        renewed = cli(with_secret, "token", "conf")
        assert renewed.returncode == 0, renewed.stderr
        assert p.is_access_token_active(renewed.stdout.strip()) and p.refresh_count == 1



