"""``oauth-callback tokens list|show|delete|clear|migrate``: the stored tokens, without secrets."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from ..models import fingerprint
from ._common import (
    EXIT_FAILURE,
    EXIT_OK,
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
    from ..models import ClientInfo, Tokens
    from ..storage.base import TokenStore

__all__ = [
    "cmd_tokens_clear",
    "cmd_tokens_delete",
    "cmd_tokens_keygen",
    "cmd_tokens_list",
    "cmd_tokens_migrate",
    "cmd_tokens_show",
]


def _token_summary(store: TokenStore, key: str, tokens: Tokens) -> dict[str, Any]:
    client = store.get_client(key)
    expires_in = tokens.expires_in()
    return {
        "key": key,
        "expires_at": tokens.expires_at,
        "expires_at_iso": iso(tokens.expires_at),
        "expires_in": None if expires_in is None else int(expires_in),
        "expired": tokens.is_expired(0.0),
        "scope": tokens.scope,
        "token_type": tokens.token_type,
        "has_refresh_token": tokens.refresh_token is not None,
        "access_token_fingerprint": fingerprint(tokens.access_token),
        "client_id": client.client_id if client else None,
        "issuer": client.issuer if client else None,
    }


def cmd_tokens_list(args: argparse.Namespace) -> int:
    """Print a table (or ``--json``) of the stored tokens, without secrets."""
    store = store_from_args(args)
    rows: list[dict[str, Any]] = []
    keys = store.keys()
    for key in keys:
        tokens = store.get(key)
        if tokens is not None:
            rows.append(_token_summary(store, key, tokens))
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        info(f"no tokens stored in {store.describe()}")
        return EXIT_OK
    table = [("KEY", "EXPIRES", "SCOPE", "REFRESH")]
    for row in rows:
        table.append((
            row["key"],
            human_expiry(row["expires_at"]),
            row["scope"] or "-",
            "yes" if row["has_refresh_token"] else "no",
        ))
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    for r in table:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
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
        lines.append(("client id", client["client_id"]))
        lines.append(("client secret", client["client_secret"] or "none (public client)"))
        for label, name in (("issuer", "issuer"),
                            ("authorization endpoint", "authorization_endpoint"),
                            ("token endpoint", "token_endpoint"),
                            ("redirect uri", "redirect_uri")):
            if client[name]:
                lines.append((label, client[name]))
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
