"""``oauth-callback token KEY``: print a valid access token, refreshing it when needed.

The hot path of scripts: it imports the store and :class:`TokenManager`
only; the HTTP stack is loaded only when a refresh is due, the account
helpers only when the key needs a new login.
"""

from __future__ import annotations

import argparse
import sys

from .._lazy import TYPE_CHECKING
from ..errors import ReauthRequired
from ..manager import TokenManager
from ._common import EXIT_LOGIN_REQUIRED, EXIT_OK, CliError, store_from_args

if TYPE_CHECKING:
    from ..storage.base import TokenStore

__all__ = ["cmd_token"]


def cmd_token(args: argparse.Namespace) -> int:
    """Print a valid access token for KEY, refreshing it when needed, and nothing else
    (``--json``: ``{"access_token": ..., "expires_at": ...}``). A key that needs a new
    login exits 3 and says the command to run: ``oauth-callback login --key KEY``."""
    store = store_from_args(args)
    try:
        if store.get(args.key) is None:
            from ..keys import find_key  # a login an earlier version stored under its old key

            args.key = find_key(store, args.key)
        if store.get(args.key) is None:
            raise ReauthRequired(args.key, "login_required", message="")
        tokens = TokenManager(store, args.key).tokens()
    except ReauthRequired as exc:
        raise _login_required(store, args.key, exc) from None
    if getattr(args, "json", False):
        import json

        sys.stdout.write(json.dumps({"access_token": tokens.access_token,
                                     "expires_at": tokens.expires_at}) + "\n")
    else:
        sys.stdout.write(tokens.access_token + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _login_required(store: TokenStore, key: str, exc: ReauthRequired) -> CliError:
    from .accounts import login_command, no_store_message

    client = store.get_client(key)
    command = login_command(key, client)
    missing = no_store_message(store)
    if missing is not None:
        return CliError(f"{missing}; or log in first: {command}", EXIT_LOGIN_REQUIRED)
    if not str(exc):
        where = store.describe()
        what = "no tokens" if client is None else "no tokens (logged out)"
        return CliError(f"{what} stored under {key!r} in {where}; log in first: {command}",
                        EXIT_LOGIN_REQUIRED)
    if exc.error == "invalid_grant":
        reason = "the provider no longer accepts the stored grant (invalid_grant"
        reason += f": {exc.description})" if exc.description else ")"
    elif client is None:
        reason = "no client registration is stored to refresh the token with"
    else:
        reason = exc.description or str(exc)
    return CliError(f"login required for {key!r}: {reason}; log in again: {command}",
                    EXIT_LOGIN_REQUIRED)
