"""``oauth-callback tokens list|show|delete|clear|migrate|import``: the stored tokens, without
secrets (``import`` reads one from stdin, like ``gh auth login --with-token``)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .._lazy import TYPE_CHECKING
from .._text import escape_control
from ..models import fingerprint
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    SECRET_ENV_VAR,
    CliError,
    err,
    human_expiry,
    info,
    iso,
    local_time,
    require_tokens,
    store_from_args,
    store_from_url,
)

if TYPE_CHECKING:
    from typing import Any

    from ..models import ClientInfo, Tokens
    from ..storage.base import TokenStore


__all__ = [
    "cmd_tokens_clear",
    "cmd_tokens_delete",
    "cmd_tokens_keygen",
    "cmd_tokens_import",
    "cmd_tokens_list",
    "cmd_tokens_migrate",
    "cmd_tokens_show",
]


def _token_summary(store: TokenStore, key: str, tokens: Tokens | None,
                   *, json_fields: bool = True) -> dict[str, Any]:
    """The ``tokens list --json`` row of ``key``; ``json_fields=False``: without what only
    the JSON shows (the access token's fingerprint, the ISO expiry), which the table
    does not need (and the hashing would cost start-up time)."""
    from .accounts import identity_record, login_command

    client = store.get_client(key)
    row: dict[str, Any] = {
        "key": key,
        "logged_in": tokens is not None,
        "account": identity_record(client.identity if client else None),
        "client_id": client.client_id if client else None,
        "issuer": client.issuer if client else None,
    }
    if tokens is None:
        row["login_command"] = login_command(key, client)
        return row
    expires_in = tokens.expires_in()
    row.update({
        "expires_at": tokens.expires_at,
        "expires_at_iso": iso(tokens.expires_at) if json_fields else None,
        "expires_in": None if expires_in is None else int(expires_in),
        "expired": tokens.is_expired(0.0),
        "scope": tokens.scope,
        "token_type": tokens.token_type,
        "has_refresh_token": tokens.refresh_token is not None,
        "access_token_fingerprint": fingerprint(tokens.access_token) if json_fields else None,
    })
    return row


def _account_label(row: dict[str, Any]) -> str:
    account = row["account"]
    if account is None:
        return "-"
    return str(account["email"] or account["preferred_username"] or account["name"]
               or account["sub"])


def cmd_tokens_list(args: argparse.Namespace) -> int:
    """Print a table (or ``--json``) of the stored logins, without secrets; a client
    registration without tokens is listed as logged out, with the command to log in;
    a key whose records are encrypted, in a store opened without encryption, as
    encrypted (``--json``: ``{"key": KEY, "encrypted": true}``)."""
    from .accounts import ENCRYPTED_LABEL, account_keys, no_store_message, readable_row

    store = store_from_args(args)

    def row(store: TokenStore, key: str) -> dict[str, Any]:
        return _token_summary(store, key, store.get(key), json_fields=args.json)

    rows = [readable_row(store, key, row) for key in account_keys(store)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        missing = no_store_message(store)
        info(f"no tokens stored: {missing}" if missing else
             f"no tokens stored in {store.describe()}")
        return EXIT_OK
    table = [("KEY", "ACCOUNT", "EXPIRES", "SCOPE", "REFRESH")]
    for entry in rows:
        if entry.get("encrypted"):
            table.append((entry["key"], ENCRYPTED_LABEL, "", "", ""))
            continue
        if not entry["logged_in"]:
            table.append((entry["key"], _account_label(entry), "logged out",
                          f"log in: {entry['login_command']}", ""))
            continue
        table.append((
            entry["key"],
            _account_label(entry),
            human_expiry(entry["expires_at"]),
            entry["scope"] or "-",
            "yes" if entry["has_refresh_token"] else "no",
        ))
    # Keys, accounts and scopes come from users and providers: escaped, so no cell
    # can send terminal control sequences (--json escapes them its own way).
    shown = [[escape_control(cell) for cell in r] for r in table]
    # An encrypted row's one cell spans the columns after the key (it sets no width).
    spans = [False] + [bool(entry.get("encrypted")) for entry in rows]
    widths = [max(len(r[i]) for r, span in zip(shown, spans, strict=True) if not span or i == 0)
              for i in range(4)]
    for r, span in zip(shown, spans, strict=True):
        if span:
            print(f"{r[0]:<{widths[0]}}  {r[1]}")
            continue
        line = "  ".join(f"{r[i]:<{widths[i]}}" for i in range(4)) + f"  {r[4]}"
        print(line.rstrip())
    return EXIT_OK


def _mask(value: str | None, reveal: bool) -> str | None:
    if value is None:
        return None
    return value if reveal else fingerprint(value)


def _mask_extra(extra: Any, reveal: bool) -> dict[str, Any]:
    """Extra fields: numbers, booleans, null as is; the rest fingerprinted unless ``reveal``."""
    out: dict[str, Any] = {}
    for name, value in dict(extra).items():
        if reveal or value is None or isinstance(value, (bool, int, float)):
            out[name] = value
        elif isinstance(value, str):
            out[name] = fingerprint(value)
        else:
            out[name] = fingerprint(json.dumps(value, sort_keys=True))
    return out


def _show_record(key: str, tokens: Tokens, client: ClientInfo | None,
                 reveal: bool) -> dict[str, Any]:
    from .accounts import identity_record

    record: dict[str, Any] = {
        "key": key,
        "token_type": tokens.token_type,
        "access_token": _mask(tokens.access_token, reveal),
        "refresh_token": _mask(tokens.refresh_token, reveal),
        "expires_at": tokens.expires_at,
        "expires_at_iso": iso(tokens.expires_at),
        "expires": human_expiry(tokens.expires_at),
        "scope": tokens.scope,
        "extra": _mask_extra(tokens.extra, reveal),
        "client": None,
    }
    if client is not None:
        record["client"] = {
            "client_id": client.client_id,
            "client_secret": _mask(client.client_secret, reveal),
            "issuer": client.issuer,
            "authorization_endpoint": client.authorization_endpoint,
            "token_endpoint": client.token_endpoint,
            "redirect_uri": client.redirect_uri,
            "scope": client.scope,
            "token_endpoint_auth_method": client.token_endpoint_auth_method,
            "account": identity_record(client.identity),
        }
    return record


def cmd_tokens_show(args: argparse.Namespace) -> int:
    """Print one entry; secrets as ``sha256:...`` fingerprints unless ``--reveal``."""
    store = store_from_args(args)
    tokens = require_tokens(store, args.key)
    record = _show_record(args.key, tokens, store.get_client(args.key), args.reveal)
    if args.json:
        print(json.dumps(record, indent=2))
        return EXIT_OK
    expires = "never (no expiry given)" if tokens.expires_at is None else (
        f"{local_time(tokens.expires_at)} ({record['expires']})")
    lines: list[tuple[str, Any]] = [
        ("key", args.key),
        ("token type", tokens.token_type),
        ("access token", record["access_token"]),
        ("refresh token", record["refresh_token"] or "none"),
        ("expires", expires),
        ("scope", tokens.scope or "-"),
    ]
    for name, value in record["extra"].items():
        lines.append((f"extra {name}", value if isinstance(value, str) else json.dumps(value)))
    client = record["client"]
    if client is not None:
        if client["account"] is not None:
            lines.append(("account", _account_label({"account": client["account"]})))
        lines.append(("client id", client["client_id"]))
        lines.append(("client secret", client["client_secret"] or "none (public client)"))
        for label, name in (("issuer", "issuer"),
                            ("authorization endpoint", "authorization_endpoint"),
                            ("token endpoint", "token_endpoint"),
                            ("redirect uri", "redirect_uri")):
            if client[name]:
                lines.append((label, client[name]))
    # Every value and extra field name escaped, as in ``tokens list``.
    lines = [(escape_control(label), escape_control(str(value))) for label, value in lines]
    width = max(len(label) for label, _ in lines) + 1
    for label, value in lines:
        print(f"{label + ':':<{width}} {value}")
    if not args.reveal:
        info("(secrets are shown as fingerprints; use --reveal to print them)")
    return EXIT_OK


def cmd_tokens_delete(args: argparse.Namespace) -> int:
    """Delete the tokens under KEY (``--all``: also its client registration and session)."""
    store = store_from_args(args)
    had_tokens = store.get(args.key) is not None
    had_client = args.all and store.get_client(args.key) is not None
    if not had_tokens and not had_client:
        raise CliError(f"no tokens stored under {args.key!r} in {store.describe()}")
    store.delete(args.key)
    what = "tokens"
    if args.all:
        store.delete_client(args.key)
        store.delete_session(args.key)
        what = "tokens and client registration"
    info(f"deleted the {what} of {args.key!r} from {store.describe()}")
    return EXIT_OK


def cmd_tokens_clear(args: argparse.Namespace) -> int:
    """Delete everything in the store; asks on a TTY, refuses without ``--yes`` otherwise."""
    store = store_from_args(args)
    n = len(store.keys())
    where = store.describe()
    if n == 0:
        info(f"no tokens stored in {where}; nothing deleted")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(
                f"refusing to delete {n} token{'s' if n != 1 else ''} from {where} without "
                "confirmation: stdin is not a terminal; pass --yes"
            )
        sys.stderr.write(f"Delete {n} token{'s' if n != 1 else ''} from {where}? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            info("nothing deleted")
            return EXIT_FAILURE
    store.clear()
    info(f"deleted {n} token{'s' if n != 1 else ''} from {where}")
    return EXIT_OK


def cmd_tokens_migrate(args: argparse.Namespace) -> int:
    """Copy tokens, client registrations and sessions from ``--from`` to ``--to``, then verify.

    Exit 0 when every record is in the target; 1 on conflicts (kept unless
    ``--overwrite``), a requested key missing from the source, or a record
    that could not be copied or verified. Prints keys and counts, no secret.
    """
    from ..storage.migrate import MigrationError, migrate

    source = store_from_url(args.source, "--from")
    target = store_from_url(args.target, "--to")
    failed: str | None = None
    try:
        report = migrate(source, target, keys=args.keys, overwrite=args.overwrite,
                         dry_run=args.dry_run)
    except MigrationError as exc:
        report = exc.report
        n = len(report.failures)
        failed = (f"{n} record{'s' if n != 1 else ''} could not be copied or failed "
                  "verification (listed above)")
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    if failed is not None:
        err(failed)
        return EXIT_FAILURE
    if report.conflicts:
        n = len(report.conflicts)
        err(f"{n} conflicting record{'s' if n != 1 else ''} left unchanged in the target "
             "(it holds different values); --overwrite replaces them")
        return EXIT_FAILURE
    if report.missing:
        err("no record in the source for " + ", ".join(repr(k) for k in report.missing))
        return EXIT_FAILURE
    if not report.keys:
        info(f"nothing to migrate: {report.source} holds no records")
    return EXIT_OK


def cmd_tokens_keygen(args: argparse.Namespace) -> int:
    """Create a key file for ``?encryption=file:PATH``; print its key id, never the key."""
    from ..storage.key_sources import write_key_file

    try:
        kid = write_key_file(args.path)
    except FileExistsError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    path = os.path.abspath(os.path.expanduser(args.path))
    print(f"wrote a new encryption key to {path} (mode 0600, key id {kid})")
    info(f"use it with --store 'URL?encryption=file:{path}'; keep it out of the store's "
         "backups")
    return EXIT_OK


# --------------------------------------------------------------------------- tokens import

#: The most stdin ``tokens import`` reads (a token response is a few kB).
MAX_IMPORT_BYTES = 1 << 20


def _read_token_input() -> str:
    """The text on stdin; on a terminal one hidden line (``getpass``: no echo)."""
    if sys.stdin is None:
        raise CliError("no token on stdin", EXIT_USAGE)
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Paste the access token (or a JSON token response): ")
    text = sys.stdin.read(MAX_IMPORT_BYTES + 1)
    if len(text) > MAX_IMPORT_BYTES:
        raise CliError(f"stdin holds more than {MAX_IMPORT_BYTES} bytes; expected one token "
                       "or one JSON token response", EXIT_USAGE)
    return text


def parse_token_input(text: str, *, now: float | None = None) -> Tokens:
    """The tokens in ``text``: a bare access token (one line, no spaces), a JSON
    token response (RFC 6749 5.1: ``access_token``, optional ``refresh_token``,
    ``expires_in``, ``scope``, ``token_type``, ...), or a stored record
    (``accessToken``, ...). Raises :class:`CliError` (usage) naming what is
    wrong, never quoting the input.
    """
    from ..models import Tokens

    body = text.strip()
    if not body:
        raise CliError("no token on stdin", EXIT_USAGE)
    if body.startswith("{"):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            position = f" (line {exc.lineno}, column {exc.colno})" if isinstance(
                exc, json.JSONDecodeError) else ""
            raise CliError(f"stdin starts with '{{' but is not valid JSON{position}",
                           EXIT_USAGE) from None
        try:
            if isinstance(data, dict) and "access_token" in data:
                return Tokens.from_response(data, now=now)
            if isinstance(data, dict) and "accessToken" in data:
                return Tokens.from_record(data)
        except ValueError as exc:  # names the field, never its value
            raise CliError(f"the JSON on stdin is not a usable token response: {exc}",
                           EXIT_USAGE) from None
        raise CliError("the JSON on stdin has no 'access_token' (expected an RFC 6749 token "
                       "response)", EXIT_USAGE)
    if any(ch.isspace() for ch in body) or not body.isprintable() or not body.isascii():
        raise CliError("stdin does not hold one token: expected a single line of visible "
                       "ASCII characters, or a JSON token response", EXIT_USAGE)
    return Tokens(body)


def cmd_tokens_import(args: argparse.Namespace) -> int:
    """Store the token (or JSON token response) read from stdin under KEY.

    With ``--client-id`` and ``--issuer`` / ``--token-url`` the client
    registration is stored too, so a refresh token can be used later: a public
    client, or with ``$OAUTH_CALLBACK_CLIENT_SECRET`` set a confidential one whose
    secret is read from that variable again at each refresh (never stored).
    Refuses to replace stored tokens without ``--overwrite``.
    """
    import time

    from ..models import SECRET_ENV_FIELD, ClientInfo

    if args.client_id is None and (args.issuer or args.token_url):
        raise CliError("--issuer and --token-url need --client-id", EXIT_USAGE)
    if args.client_id is not None and not (args.issuer or args.token_url):
        raise CliError("--client-id needs --issuer or --token-url (where to refresh)", EXIT_USAGE)
    store = store_from_args(args)
    now = time.time()
    tokens = parse_token_input(_read_token_input(), now=now)
    changes: dict[str, Any] = {}
    if args.expires_in is not None:
        changes["expires_at"] = now + args.expires_in
    if args.scope is not None:
        changes["scope"] = args.scope
    if changes:
        tokens = tokens.replace(**changes)
    client: ClientInfo | None = None
    if args.client_id is not None:
        # A confidential client: its secret is not stored, but read from the same
        # variable when the refresh token is used (as for a client-credentials login).
        confidential = bool(os.environ.get(SECRET_ENV_VAR))
        client = ClientInfo(
            args.client_id, issuer=args.issuer, token_endpoint=args.token_url,
            scope=tokens.scope,
            token_endpoint_auth_method=args.auth_method or (None if confidential else "none"),
            extra={SECRET_ENV_FIELD: SECRET_ENV_VAR} if confidential else {},
        )
    if not args.overwrite and store.get(args.key) is not None:
        raise CliError(f"{args.key!r} already holds tokens in {store.describe()}; pass "
                       "--overwrite to replace them", EXIT_FAILURE)
    if client is not None:  # client first, as a login does: tokens never lack their client
        store.set_client(args.key, client)
    store.set(args.key, tokens)
    refresh = "yes" if tokens.refresh_token else "no"
    known = client or store.get_client(args.key)
    info(f"imported the tokens of {args.key!r} into {store.describe()}: expires "
         f"{human_expiry(tokens.expires_at)}, refresh token: {refresh}"
         + (f", client {known.client_id}" if known else ""))
    if tokens.refresh_token and known is None:
        info("note: no client registration is stored for this key, so the refresh token "
             "cannot be used; import again with --client-id and --issuer or --token-url")
    if tokens.is_expired(0.0) and not tokens.refresh_token:
        info("note: this access token has already expired")
    return EXIT_OK
