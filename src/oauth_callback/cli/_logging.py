"""How the CLI logs: warnings as ``oauth-callback: warning: ...`` on stderr; ``-v``
adds info, ``-vv`` debug, with times and logger names."""

from __future__ import annotations

import logging
import sys

from ._common import PROG

__all__ = ["setup_logging"]


class _Formatter(logging.Formatter):
    """``oauth-callback: warning: ...`` (lower-case level, as the error lines)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(verbosity: int) -> None:
    """Send the package's log records to stderr, at WARNING (``verbosity`` 0), INFO (1)
    or DEBUG (2 and more)."""
    handler = logging.StreamHandler(sys.stderr)
    if verbosity <= 0:
        handler.setFormatter(_Formatter())
        level = logging.WARNING
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        level = logging.INFO if verbosity == 1 else logging.DEBUG
    pkg = logging.getLogger("oauth_callback")
    pkg.handlers[:] = [handler]
    pkg.setLevel(level)
    pkg.propagate = False
