"""The exit statuses of the ``oauth-callback`` command (the table in :mod:`oauth_callback.cli`)."""

from __future__ import annotations

__all__ = [
    "EXIT_AUTH_FAILED",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_LOGIN_REQUIRED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOGIN_REQUIRED = 3
EXIT_UNAVAILABLE = 4
EXIT_AUTH_FAILED = 5
EXIT_INTERRUPTED = 130
