"""The ``oauth-callback`` command (also ``python -m oauth_callback``).

Commands: ``login``, ``token KEY``, ``status``/``logout``,
``tokens list|show|delete|clear|migrate|import``, ``doctor``, ``completion`` and
``demo``, one module per group (:mod:`.login`, :mod:`.token`, :mod:`.accounts`,
:mod:`.tokens`, :mod:`.doctor`, :mod:`.completion`, :mod:`.demo`); :mod:`._main` holds the parser,
the dispatch (which imports a command's module only when it runs) and the
exit codes' mapping, :mod:`._common` what the command modules share.

Errors are printed as ``oauth-callback: error: ...`` on stderr. Nothing
secret reaches stdout or stderr unless asked for: ``token KEY`` prints the
access token (that is its job) and ``tokens show --reveal`` prints every
field; everything else shows fingerprints.

Exit status:

====  =====================================================================
0     success (``doctor``: the store is healthy)
1     failure: ``doctor`` found problems, a key does not exist, ``tokens
      clear`` was not confirmed
2     usage error (bad arguments)
3     login required: no tokens for the key, or the grant can no longer be
      refreshed (run ``oauth-callback login``); also a resource server that
      still rejects the token after a refresh (``TokenRejectedError``,
      ``UnchangedTokenError``) or needs more scope (``InsufficientScopeError``)
4     network, provider or store error (token endpoint unreachable, store
      unreadable or corrupt, lock timeout)
5     authorization failed: the user or provider refused (an OAuth error
      such as access_denied, or ``InvalidClientError``: invalid_client, a
      wrong client id, secret or key), timed out, state mismatch, port in use,
      an OpenID Connect ID Token that does not validate
130   interrupted (Ctrl-C)
====  =====================================================================
"""

from __future__ import annotations

from ._common import human_expiry
from ._exit import *  # noqa: F403 - the exit statuses of the table above
from ._exit import __all__ as _EXIT_STATUSES
from ._main import build_parser, main

__all__ = [*_EXIT_STATUSES, "build_parser", "human_expiry", "main"]
