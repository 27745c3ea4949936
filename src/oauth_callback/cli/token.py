"""``oauth-callback token KEY``: print a valid access token, refreshing it when needed.

The hot path of scripts: it imports the store and :class:`TokenManager`
only; the HTTP stack is loaded only when a refresh is due.
"""

from __future__ import annotations

import argparse
import sys

from ..manager import TokenManager
from ._common import EXIT_LOGIN_REQUIRED, EXIT_OK, PROG, CliError, store_from_args

__all__ = ["cmd_token"]


def cmd_token(args: argparse.Namespace) -> int:
    """Print a valid access token for KEY, refreshing it when needed, and nothing else."""
    store = store_from_args(args)
    if store.get(args.key) is None:
        raise CliError(
            f"no tokens stored under {args.key!r} in {store.describe()}; log in first: "
            f"{PROG} login --key {args.key} ...",
            EXIT_LOGIN_REQUIRED,
        )
    token = TokenManager(store, args.key).access_token()
    sys.stdout.write(token + "\n")
    sys.stdout.flush()
    return EXIT_OK
