"""What every HTTP auth object shares: a :class:`TokenManager` and its tokens
cached in memory, so a request with a valid token costs no store read.

The cache is only a shortcut for the manager's own decision
(:meth:`TokenManager.needs_refresh`): once the cached tokens need a refresh the
store is read again (and refreshed there, once across processes, if it still
holds the same tokens). A token replaced by another process is picked up at
the latest on the resource server's first ``401``: :meth:`refreshed` then finds
the newer token in the store and uses it without a new refresh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .bearer import CurrentToken, RefreshRejected

if TYPE_CHECKING:
    from .manager import TokenManager
    from .models import Tokens

__all__ = ["TokenAuthBase"]


class TokenAuthBase:
    """The token side of :func:`~oauth_callback.bearer.bearer_flow` for one manager."""

    def __init__(self, manager: TokenManager) -> None:
        self.manager = manager
        self._tokens: Tokens | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.manager!r})"

    def _cached(self) -> Tokens | None:
        tokens = self._tokens
        if tokens is not None and not self.manager.needs_refresh(tokens):
            return tokens
        return None

    def tokens_for(self, effect: CurrentToken | RefreshRejected) -> Tokens:
        """Answer a token effect of the flow (blocking: store read, lock wait, refresh)."""
        if isinstance(effect, CurrentToken):
            tokens = self._cached() or self.manager.tokens()
        else:
            tokens = self.manager.force_refresh(effect.rejected)
        self._tokens = tokens
        return tokens

    async def tokens_for_async(self, effect: CurrentToken | RefreshRejected) -> Tokens:
        """Async :meth:`tokens_for`: a cached valid token is answered in the event
        loop; store and refresh work runs in a worker thread."""
        if isinstance(effect, CurrentToken):
            tokens = self._cached() or await self.manager.tokens_async()
        else:
            tokens = await self.manager.force_refresh_async(effect.rejected)
        self._tokens = tokens
        return tokens
