"""``oauth-callback status [KEY]`` and ``logout KEY``: the accounts a store holds, like
``gh auth status`` / ``gh auth logout``; and what ``login --key KEY`` reuses.

An *account* is a key with tokens, or with a client registration only (logged
out: the provider revoked the grant, or ``logout`` ran). ``logout`` revokes at
the provider (RFC 7009), then removes the tokens and the pending session; it
keeps the client registration (issuer, endpoints, client id, scope, port), so
``oauth-callback login --key KEY`` logs in again without any other flag, unless
``--all`` removes it too. A client secret is never taken from the store for a
new login unless the login stored it: pass ``$OAUTH_CALLBACK_CLIENT_SECRET``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .._lazy import TYPE_CHECKING
from ._common import (
    EXIT_AUTH_FAILED,
    EXIT_FAILURE,
    EXIT_LOGIN_REQUIRED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    PROG,
    SECRET_ENV_VAR,
    CliError,
    human_expiry,
    info,
    iso,
    store_from_args,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..models import ClientInfo, Identity, Tokens
    from ..storage.base import TokenStore


__all__ = [
    "ENCRYPTED_LABEL",
    "account_keys",
    "apply_stored_login",
    "check_server_url",
    "cmd_logout",
    "cmd_status",
    "identity_record",
    "login_command",
    "login_error",
    "missing_store_directory",
    "no_store_message",
    "readable_row",
    "remember_port",
]


# --------------------------------------------------------------------------- shared


def account_keys(store: TokenStore) -> list[str]:
    """Every key with tokens or a client registration, tokens' order first."""
    keys = list(store.keys())
    for key in store.keys("clients"):
        if key not in keys:
            keys.append(key)
    return keys


#: What ``status`` and ``tokens list`` show for a key whose records are encrypted
#: when the store was opened without encryption (``--json``: ``"encrypted": true``).
ENCRYPTED_LABEL = "encrypted (open with ?encryption=SOURCE)"


def readable_row(store: TokenStore, key: str,
                 build: Callable[[TokenStore, str], dict[str, Any]]) -> dict[str, Any]:
    """``build(store, key)``, the listing row of ``key``; ``{"key": key, "encrypted":
    True}`` when a record of ``key`` is encrypted and the store was opened without
    encryption (:class:`~oauth_callback.errors.StoreEncryptedError`): listed, not read."""
    from ..errors import StoreEncryptedError

    try:
        return build(store, key)
    except StoreEncryptedError:
        return {"key": key, "encrypted": True}


def _store_path(store: TokenStore) -> str | None:
    """The file a file-based store lives in (through wrappers such as encryption)."""
    seen = 0
    while seen < 4:
        path = getattr(store, "path", None)
        if isinstance(path, str):
            return path
        inner = getattr(store, "store", None)
        if inner is None:
            return None
        store, seen = inner, seen + 1
    return None


def missing_store_directory(store: TokenStore) -> str | None:
    """The directory of a file-based store when it does not exist (the path is
    probably mistyped: nothing was ever stored there), else ``None``."""
    path = _store_path(store)
    if path is None:
        return None
    directory = os.path.dirname(os.path.abspath(path)) or "."
    return None if os.path.isdir(directory) else directory


def no_store_message(store: TokenStore) -> str | None:
    """What read commands say instead of "no tokens stored" when the store's
    directory does not exist, or ``None``."""
    directory = missing_store_directory(store)
    if directory is None:
        return None
    return (f"the store directory {directory} does not exist, so nothing is stored in "
            f"{store.describe()}: check --store or $OAUTH_CALLBACK_STORE")


def login_command(key: str, client: ClientInfo | None) -> str:
    """The command that logs ``key`` in again: ``login --key KEY`` when the client
    registration is stored, else with the flags it needs."""
    if client is not None and (client.issuer or client.token_endpoint):
        return f"{PROG} login --key {key}"
    return f"{PROG} login --key {key} --issuer URL --client-id ID"


def identity_record(identity: Identity | None) -> dict[str, Any] | None:
    if identity is None:
        return None
    return {
        "sub": identity.sub,
        "issuer": identity.issuer,
        "email": identity.email,
        "preferred_username": identity.preferred_username,
        "name": identity.name,
        "source": identity.source,
    }


def _provider(client: ClientInfo | None) -> str | None:
    if client is None:
        return None
    return client.issuer or client.token_endpoint


def _state(tokens: Tokens | None, client: ClientInfo | None = None) -> tuple[str, bool]:
    """``(state, usable)``: ``ok``, ``refreshable`` (expired, a refresh token is
    stored, or a client-credentials login: asked again), ``expired`` (and no
    refresh token) or ``logged out``."""
    if tokens is None:
        return "logged out", False
    if not tokens.is_expired(0.0):
        return "ok", True
    if tokens.refresh_token or (client is not None and client.is_client_credentials):
        return "refreshable", True
    return "expired", False


# --------------------------------------------------------------------------- login --key


#: The ClientInfo.extra field where ``login --port N`` keeps a fixed port (a login
#: with ``--port 0`` got a random one, which is not worth reusing).
PORT_FIELD = "loginPort"


def _stored_port(client: ClientInfo) -> int:
    port = client.extra.get(PORT_FIELD)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        return 0
    return port


def remember_port(store: TokenStore, key: str, port: int) -> None:
    """Keep the fixed ``--port`` of a successful login for ``login --key KEY``."""
    if port:
        store.update_client(key, lambda c: c.replace(extra={**c.extra, PORT_FIELD: port})
                            if c is not None else None)


def _same_server(args: argparse.Namespace, client: ClientInfo) -> bool:
    if args.issuer:
        stored = client.issuer or ""
        return bool(stored) and args.issuer.rstrip("/") == stored.rstrip("/")
    return bool(args.token_url) and args.token_url == client.token_endpoint


def apply_stored_login(args: argparse.Namespace, store: TokenStore, key: str) -> bool:
    """Fill what ``login --key KEY`` was not given from the client registration stored
    under ``key``: issuer (or endpoints), client id, scope and port. Flags given win.
    Returns whether a stored registration was used. A client secret is never
    taken from here unless the earlier login stored it (as ``args.stored_secret``,
    used after ``--client-secret`` and ``$OAUTH_CALLBACK_CLIENT_SECRET``)."""
    client = store.get_client(key)
    if client is None:
        return False
    if args.issuer or args.authorize_url or args.token_url:
        if not _same_server(args, client):
            return False  # another server: nothing stored for the old one applies
    elif client.issuer:
        args.issuer = client.issuer
    elif client.authorization_endpoint and client.token_endpoint:
        args.authorize_url = client.authorization_endpoint
        args.token_url = client.token_endpoint
    else:
        return False
    if args.client_id is None:
        args.client_id = client.client_id
    if args.client_id == client.client_id:
        args.stored_secret = client.client_secret  # what the earlier login stored, if any
    if args.scope is None:
        args.scope = client.scope
    if args.port == 0:
        args.port = _stored_port(client)
    return True


_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def _is_loopback_host(host: str) -> bool:
    host = host.lower()
    return host in _LOOPBACK_NAMES or host.startswith("127.") or host.endswith(".localhost")


def check_server_url(option: str, value: str | None) -> None:
    """An issuer or endpoint URL given on the command line is an absolute http(s) URL,
    http only on loopback; else a usage error (exit 2) that says what was probably
    meant: ``--issuer 127.0.0.1:9100`` -> ``did you mean http://127.0.0.1:9100?``."""
    if value is None:
        return
    from urllib.parse import urlsplit  # here: 'tokens list' and 'status' need none

    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    host = urlsplit("http://" + rest).hostname or rest.split("/")[0].split(":")[0]
    suggested_scheme = "http" if _is_loopback_host(host) else "https"
    suggestion = f"{suggested_scheme}://{rest}"
    if not scheme:
        raise CliError(f"{option} {value} has no scheme; did you mean {suggestion}?",
                       EXIT_USAGE)
    if scheme.lower() not in ("http", "https"):
        raise CliError(f"{option} {value}: unknown scheme {scheme!r}; did you mean "
                       f"{suggestion}?", EXIT_USAGE)
    if not host:
        raise CliError(f"{option} {value} has no host", EXIT_USAGE)
    if scheme.lower() == "http" and not _is_loopback_host(host):
        raise CliError(f"{option} {value}: http is allowed only for loopback hosts "
                       f"(127.0.0.1, ::1, localhost); did you mean https://{rest}?",
                       EXIT_USAGE)


def _free_key(store: TokenStore, key: str) -> str:
    taken = set(account_keys(store))
    n = 2
    while f"{key}-{n}" in taken:
        n += 1
    return f"{key}-{n}"


def login_error(exc: BaseException, store: TokenStore, key: str,
                secret: str | None) -> BaseException:
    """A login failure in command-line terms (what flag to use), or ``exc`` itself."""
    from ..errors import AccountMismatchError, InvalidClientError

    if isinstance(exc, AccountMismatchError):
        return CliError(
            f"{exc}; log in under another key (--key {_free_key(store, key)}) to keep both, "
            "or pass --force to replace it", EXIT_FAILURE)
    if isinstance(exc, InvalidClientError):
        if secret is None:
            hint = ("if it is a confidential client, give its secret: set "
                    f"${SECRET_ENV_VAR} (or pass --client-secret)")
        else:
            hint = (f"check the client secret (${SECRET_ENV_VAR} or --client-secret) and "
                    "the client id")
        return CliError(f"the authorization completed in the browser, but the token endpoint "
                        f"rejected the client ({exc}); {hint}", EXIT_AUTH_FAILED)
    return exc


# --------------------------------------------------------------------------- status


def _summary(store: TokenStore, key: str) -> dict[str, Any]:
    tokens = store.get(key)
    client = store.get_client(key)
    state, usable = _state(tokens, client)
    row: dict[str, Any] = {
        "key": key,
        "account": identity_record(client.identity if client else None),
        "provider": _provider(client),
        "client_id": client.client_id if client else None,
        "scope": (tokens.scope if tokens else None) or (client.scope if client else None),
        "expires_at": tokens.expires_at if tokens else None,
        "expires_at_iso": iso(tokens.expires_at) if tokens else None,
        "has_refresh_token": bool(tokens and tokens.refresh_token),
        "store": store.describe(),
        "state": state,
        "usable": usable,
    }
    if not usable:
        row["login_command"] = login_command(key, client)
    return row


def _check(store: TokenStore, key: str, row: dict[str, Any]) -> int:
    """``--check``: a refresh when due, then userinfo when the provider has it."""
    from ..errors import DiscoveryError, ReauthRequired, ResourceAccessError, TokenEndpointError
    from ..flow import OAuthClient
    from ..manager import TokenManager

    check: dict[str, Any] = {"ok": False}
    row["check"] = check
    code = EXIT_OK
    try:
        tokens = TokenManager(store, key).tokens()
        check["refreshed"] = tokens.expires_at != row["expires_at"]
        client_info = store.get_client(key)
        if client_info is not None:
            client = OAuthClient.from_client_info(client_info)
            if client.metadata is not None and client.metadata.userinfo_endpoint:
                client.userinfo(tokens.access_token)
                check["userinfo"] = True
        check["ok"] = True
        row["state"], row["usable"] = _state(tokens, client_info)
        row["expires_at"], row["expires_at_iso"] = tokens.expires_at, iso(tokens.expires_at)
    except (ReauthRequired, ResourceAccessError) as exc:
        check["error"] = str(exc)
        row["usable"] = False
        row["login_command"] = login_command(key, store.get_client(key))
        code = EXIT_LOGIN_REQUIRED
    except (TokenEndpointError, DiscoveryError) as exc:
        check["error"] = str(exc)
        row["usable"] = False
        code = EXIT_UNAVAILABLE
    return code


def _print_status(row: dict[str, Any], out: Any) -> None:
    if row.get("encrypted"):  # no other field: the store cannot read them
        print(row["key"], file=out)
        print(f"  {'status:':<15}{ENCRYPTED_LABEL}", file=out)
        return
    account = row["account"]
    who = "unknown"
    if account is not None:
        label = account["email"] or account["preferred_username"] or account["name"]
        who = f"{label} (sub {account['sub']})" if label else f"sub {account['sub']}"
    lines = [("account", who), ("provider", row["provider"] or "-")]
    if row["state"] == "logged out":
        lines.append(("status", f"logged out; log in again: {row['login_command']}"))
    else:
        lines.append(("scopes", row["scope"] or "-"))
        lines.append(("access token", f"expires {human_expiry(row['expires_at'])}"))
        lines.append(("refresh token", "yes" if row["has_refresh_token"] else "no"))
        status = {"ok": "usable", "refreshable": "usable (refreshed on next use)",
                  "expired": "expired, and no refresh token"}[row["state"]]
        if not row["usable"] and row["state"] != "expired":
            status = "not usable" if "login_command" in row else "unknown (see check)"
        if "login_command" in row:
            status += f"; log in again: {row['login_command']}"
        lines.append(("status", status))
    check = row.get("check")
    if check is not None:
        lines.append(("check", "ok (the provider accepted the login)" if check["ok"]
                      else f"failed: {check['error']}"))
    lines.append(("store", row["store"]))
    print(row["key"], file=out)
    for label, value in lines:
        print(f"  {label + ':':<15}{value}", file=out)


def _stored(store: TokenStore, key: str) -> bool:
    """Whether ``key`` has tokens or a client registration (encrypted ones count)."""
    row = readable_row(store, key, lambda store, key: {
        "stored": store.get(key) is not None or store.get_client(key) is not None})
    return bool(row.get("encrypted") or row["stored"])


def cmd_status(args: argparse.Namespace) -> int:
    """For each key (or KEY): account, provider, scopes, expiry, refresh token, store,
    whether it is usable; ``--check`` asks the provider. Exit 0 when every login is
    usable, 3 when one needs a new login, 4 when the provider could not be asked. A key
    whose records are encrypted, in a store opened without encryption, is listed as
    such (:data:`ENCRYPTED_LABEL`) and does not change the exit status."""
    store = store_from_args(args)
    missing = no_store_message(store)
    if missing is not None:
        raise CliError(missing, EXIT_LOGIN_REQUIRED)
    keys = [args.key] if args.key else account_keys(store)
    if args.key and not _stored(store, args.key):
        raise CliError(
            f"no login stored under {args.key!r} in {store.describe()}; log in: "
            f"{login_command(args.key, None)}", EXIT_LOGIN_REQUIRED)
    if not keys:
        if args.json:
            print("[]")
        else:
            info(f"not logged in: no accounts in {store.describe()}; log in: "
                 f"{PROG} login --issuer URL --client-id ID")
        return EXIT_LOGIN_REQUIRED
    code = EXIT_OK
    rows = []
    for key in keys:
        row = readable_row(store, key, _summary)
        if row.get("encrypted"):
            rows.append(row)
            continue
        if args.check and row["state"] != "logged out":
            code = max(code, _check(store, key, row))
        if not row["usable"]:
            code = max(code, EXIT_LOGIN_REQUIRED)
        rows.append(row)
    if args.json:
        print(json.dumps(rows if not args.key else rows[0], indent=2))
    else:
        for i, row in enumerate(rows):
            if i:
                print()
            _print_status(row, sys.stdout)
    return code


# --------------------------------------------------------------------------- logout


def cmd_logout(args: argparse.Namespace) -> int:
    """Revoke KEY's tokens at the provider, then remove them (and the pending session)
    locally; ``--all`` also removes the client registration. Exit 0 when done, 4 when
    the provider could not revoke (the local removal happened anyway), 1 for an
    unknown key."""
    from ..manager import TokenManager

    store = store_from_args(args)
    key = args.key
    if store.get(key) is None and store.get_client(key) is None:
        raise CliError(no_store_message(store)
                       or f"no login stored under {key!r} in {store.describe()}")
    result = TokenManager(store, key).logout(revoke=not args.no_revoke, forget_client=args.all)
    kept = "" if args.all else f"; the client registration is kept: {PROG} login --key {key}"
    removed = "tokens" if result.had_tokens else "nothing (already logged out)"
    if args.all:
        removed += " and the client registration"
    if args.no_revoke:
        revoked = "not revoked at the provider (--no-revoke): the grant stays valid there"
    elif not result.had_tokens:
        revoked = "nothing to revoke"
    elif result.revocation_error is not None:
        revoked = (f"REVOKING AT THE PROVIDER FAILED ({result.revocation_error}): the grant "
                   "may stay valid there until it expires")
    elif result.revocation_supported is False:
        revoked = "the provider offers no revocation (no revocation_endpoint): the grant " \
                  "stays valid there until it expires"
    else:
        revoked = "revoked at the provider: " + " and ".join(
            t.replace("_", " ") for t in result.revoked)
    info(f"Logged out of {key!r}: removed {removed} from {store.describe()}; {revoked}{kept}")
    return EXIT_OK if result.ok else EXIT_UNAVAILABLE

