"""TokenManager: a valid access token, refreshed once for everyone sharing the store.

The refresh guarantee
---------------------
For one store and one key, at most one refresh request is in flight at any
time across every thread and process that shares the store (for
:class:`~oauth_callback.storage.file.FileStore`: every process on the machine;
for :class:`~oauth_callback.storage.memory.MemoryStore`: the threads of one
process). When many callers find the same expired token, exactly one of them
sends the refresh; the others wait on :meth:`TokenStore.refresh_lock` and then
read and return the tokens it saved. A rotated refresh token is therefore
never presented twice by this library, which is what keeps a server with
refresh-token reuse detection from revoking the grant.

This holds while the refreshing process is alive. If it dies after the server
processed its refresh but before the answer was saved, the lock is released
by the kernel and the next caller refreshes with the stored refresh token: on
a server that does not rotate refresh tokens that works; on one that rotates
them the stored token was consumed, the server answers ``invalid_grant`` and
:class:`~oauth_callback.errors.ReauthRequired` is raised (the tokens are
removed, the client registration kept). No client can recover a response
that was lost with the process.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from ._lazy import TYPE_CHECKING
from ._log import get_logger
from ._value import KW_ONLY, valueclass
from .errors import (
    DiscoveryError,
    OAuthCallbackError,
    OAuthError,
    ReauthRequired,
    StoreCorruptError,
    StoreError,
)
from .models import ClientInfo, Tokens

if TYPE_CHECKING:
    from typing import Any

    from .flow import OAuthClient
    from .httpx_auth import HttpxTokenAuth
    from .requests_auth import RequestsTokenAuth
    from .storage.base import TokenStore

__all__ = ["LogoutResult", "TokenManager"]

logger = get_logger("oauth_callback.manager")


def _reauth(key: str, reason: str) -> ReauthRequired:
    """A :class:`ReauthRequired` for a local reason (no server answer involved)."""
    return ReauthRequired(
        key, "login_required", reason, message=f"login required for {key!r}: {reason}"
    )


def _if_unchanged(
    expected: Tokens, new: Tokens | None
) -> Callable[[Tokens | None], Tokens | None]:
    """An update function: write ``new`` only if the store still holds exactly ``expected``
    (the tokens the refresh started from): a login, logout or other change made
    meanwhile wins."""

    def update(current: Tokens | None) -> Tokens | None:
        if current != expected:
            return current
        return new

    return update


@valueclass(frozen=False, eq=False, repr=False)
class TokenManager:
    """Hands out a valid access token for ``key`` in ``store``, refreshing when needed.

    ``client`` is the :class:`OAuthClient` to refresh with; ``None`` rebuilds
    it from the client registration the login saved (``store.get_client``).
    A token is refreshed when it expires within ``skew`` seconds. A refresh
    that fails with a network error, 5xx or 429 is retried ``max_retries``
    times with exponential backoff from ``backoff`` seconds. ``lock_timeout``
    bounds the wait for another holder's refresh.

    Thread-safe; one instance may be shared, and any number of instances in
    any number of processes may share one store (see the module docstring for
    the exact guarantee).
    """

    store: TokenStore
    key: str
    client: OAuthClient | None = None
    _: KW_ONLY
    skew: float = 60.0
    max_retries: int = 3
    backoff: float = 0.2
    lock_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.skew < 0 or self.max_retries < 0 or self.backoff < 0 or self.lock_timeout < 0:
            raise ValueError("skew, max_retries, backoff and lock_timeout must be non-negative")

    def __repr__(self) -> str:
        return f"TokenManager({self.store!r}, {self.key!r})"

    # -- public API ------------------------------------------------------------

    def tokens(self) -> Tokens:
        """The stored tokens, refreshed first if they expire within ``skew`` seconds.

        Raises :class:`ReauthRequired` when there are no tokens, no refresh
        token, no way to rebuild the client, or the server answered
        ``invalid_grant`` (the tokens are then removed if they are still the
        ones refreshed; the client registration stays).
        :class:`TokenEndpointError` when the token endpoint stays unreachable or
        failing after the retries (the stored tokens are untouched), another
        :class:`OAuthError` (e.g. ``invalid_client``) as the server sent it,
        :class:`StoreLockTimeout` when another holder's refresh takes longer
        than ``lock_timeout``.
        """
        seen = self.store.get(self.key)
        if seen is not None and not self.needs_refresh(seen):
            return seen
        return self._refresh_locked(seen)

    def needs_refresh(self, tokens: Tokens) -> bool:
        """Whether :meth:`tokens` would refresh ``tokens``: :meth:`Tokens.needs_refresh`
        (the one refresh decision, margin ``min(skew, lifetime / 2)``)."""
        return tokens.needs_refresh(self.skew)

    def access_token(self) -> str:
        """The access token of :meth:`tokens`."""
        return self.tokens().access_token

    def force_refresh(self, rejected_access_token: str | None = None) -> Tokens:
        """Refresh now (e.g. after a resource server answered 401), once for everyone.

        With ``rejected_access_token`` the refresh is skipped when the store
        already holds a different access token (another caller refreshed since).
        Raises as :meth:`tokens`.
        """
        return self._refresh_locked(self.store.get(self.key), force=True,
                                    rejected=rejected_access_token)

    async def tokens_async(self) -> Tokens:
        """Async :meth:`tokens`.

        The whole sync path (store reads, lock wait, HTTP refresh) runs in a
        worker thread (``anyio.to_thread.run_sync``), so the event loop never
        blocks. Cancelling the awaiting task lets a refresh already started
        finish and be saved before the cancellation is delivered.
        """
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.tokens)

    async def access_token_async(self) -> str:
        """Async :meth:`access_token` (runs in a worker thread, as :meth:`tokens_async`)."""
        return (await self.tokens_async()).access_token

    async def force_refresh_async(self, rejected_access_token: str | None = None) -> Tokens:
        """Async :meth:`force_refresh` (runs in a worker thread)."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.force_refresh, rejected_access_token)

    # -- HTTP clients ----------------------------------------------------------------

    def httpx_auth(self) -> HttpxTokenAuth:
        """An ``httpx2`` ``Auth`` (also accepted by ``httpx`` clients when ``httpx``
        is installed; sync and async clients alike) that sends this manager's
        access token, refreshes it before a request when it expires within the
        margin, and after a ``401`` ``invalid_token`` refreshes once (coordinated)
        and retries once. See :mod:`oauth_callback.httpx_auth`."""
        from .httpx_auth import HttpxTokenAuth

        return HttpxTokenAuth(self)

    def requests_auth(self) -> RequestsTokenAuth:
        """The same as :meth:`httpx_auth` for ``requests`` (extra ``[requests]``).
        See :mod:`oauth_callback.requests_auth`."""
        try:
            from .requests_auth import RequestsTokenAuth
        except ModuleNotFoundError as exc:
            if exc.name != "requests":
                raise
            raise ModuleNotFoundError(
                "requests_auth() needs requests: pip install 'oauth-callback[requests]'",
                name="requests",
            ) from None
        return RequestsTokenAuth(self)

    # -- logout ----------------------------------------------------------------------

    def logout(self, *, revoke: bool = True, forget_client: bool = False) -> LogoutResult:
        """Log out of ``key``: revoke at the provider, then remove it locally.

        1. With ``revoke``, the refresh token, then the access token, are
           revoked at the provider (RFC 7009) when it advertises a
           ``revocation_endpoint``; the client authenticates as configured.
        2. Whatever step 1 gave, the tokens and any pending session of ``key``
           are removed. The client registration (issuer, endpoints, client id,
           scope, redirect URI: what a new login under ``key`` reuses) is kept,
           without the account it named; ``forget_client`` removes it too.

        Runs under the key's refresh lock, so no refresh saves new tokens
        meanwhile. A revocation failure never stops step 2: it is returned in
        :attr:`LogoutResult.revocation_error`. Raises only for a store error
        (or :class:`StoreLockTimeout`), after which nothing was removed.
        """
        key = self.key
        with self.store.refresh_lock(key, timeout=self.lock_timeout):
            tokens = self.store.get(key)
            info = self.store.get_client(key)
            revoked: list[str] = []
            error: OAuthCallbackError | None = None
            supported: bool | None = None
            if revoke and tokens is not None:
                supported, error = self._revoke_all(tokens, info, revoked)
            self.store.delete(key)
            self.store.delete_session(key)
            if forget_client:
                self.store.delete_client(key)
            elif info is not None and info.identity is not None:
                self.store.update_client(key, _without_identity)
        logger.info("logged out of %r (revoked: %s)", key, ", ".join(revoked) or "nothing")
        return LogoutResult(key, tokens is not None, info is not None, tuple(revoked),
                            supported, error)

    async def logout_async(
        self, *, revoke: bool = True, forget_client: bool = False
    ) -> LogoutResult:
        """Async :meth:`logout` (runs in a worker thread, as :meth:`tokens_async`)."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(
            lambda: self.logout(revoke=revoke, forget_client=forget_client)
        )

    def _revoke_all(
        self, tokens: Tokens, info: ClientInfo | None, revoked: list[str]
    ) -> tuple[bool | None, OAuthCallbackError | None]:
        """Revoke the refresh token, then the access token. Returns whether the provider
        supports revocation (``None``: unknown) and the error that stopped it."""
        try:
            client = self._client_for_refresh() if self.client or info else None
        except (OAuthCallbackError, ValueError) as exc:
            return None, OAuthCallbackError(f"cannot revoke: {exc}")
        if client is None:
            return None, OAuthCallbackError(
                "cannot revoke: no client registration is stored for "
                f"{self.key!r} to authenticate with"
            )
        pairs = [(tokens.refresh_token, "refresh_token"), (tokens.access_token, "access_token")]
        try:
            for token, hint in pairs:
                if token:
                    client.revoke(token, token_type_hint=hint)
                    revoked.append(hint)
        except DiscoveryError as exc:
            if client.metadata is not None and client.revocation_endpoint is None:
                return False, None
            return None, exc
        except OAuthCallbackError as exc:
            return True, exc
        return True, None

    # -- the algorithm -------------------------------------------------------------

    def _refresh_locked(
        self, seen: Tokens | None, *, force: bool = False, rejected: str | None = None
    ) -> Tokens:
        key = self.key
        with self._refresh_lock(seen, force=force, rejected=rejected) as replaced:
            if replaced is not None:
                return replaced  # another process refreshed while we waited
            current = self.store.get(key)
            if current is None:
                raise _reauth(key, "no tokens are stored; log in first")
            if self._usable(current, seen, force=force, rejected=rejected):
                return current
            # Space for the successor first: a refresh token is never spent unless the
            # new one can be stored (StoreWriteError here, and the provider is not contacted).
            with self.store.reserve_write(key):
                new = self._renew(current)
                stored = self._save_refreshed(current, new)
            if stored is new:
                return new
            # A login or logout landed while the request was in flight: it wins.
            logger.info("tokens of %r changed during the refresh; kept the newer state", key)
            if stored is None:
                raise _reauth(key, "the tokens were removed while they were being refreshed")
            return stored

    def _renew(self, current: Tokens) -> Tokens:
        """New tokens for ``current`` (the refresh lock is held): the refresh
        token grant, or for a client-credentials login the same grant again."""
        key = self.key
        if not current.refresh_token:
            info = self.store.get_client(key)
            if info is None or not info.is_client_credentials:
                raise _reauth(key, "the access token expired and no refresh token is stored")
            logger.debug("renewing the client-credentials token of %r", key)
            return self._client_for_refresh(info).client_credentials(
                max_retries=self.max_retries, backoff=self.backoff
            )
        client = self._client_for_refresh()
        logger.debug("refreshing the access token of %r", key)
        try:
            return client.refresh(
                current.refresh_token,
                previous=current,
                max_retries=self.max_retries,
                backoff=self.backoff,
            )
        except OAuthError as exc:
            if exc.error != "invalid_grant":
                raise
            self.store.update(key, _if_unchanged(current, None))
            logger.info("the grant of %r is no longer valid; login required", key)
            raise ReauthRequired(key, exc.error, exc.description, exc.uri) from None

    @contextlib.contextmanager
    def _refresh_lock(
        self, seen: Tokens | None, *, force: bool, rejected: str | None
    ) -> Iterator[Tokens | None]:
        """Hold the refresh lock for the block (yields ``None``); or, with a lock that
        can be woken by a change of the record (``acquire_unless``: the Redis lock),
        yield the usable tokens another holder saved while we waited, without
        taking the lock (no convoy through it only to find the work done)."""
        lock: Any = self.store.refresh_lock(self.key, timeout=self.lock_timeout)
        acquire_unless = getattr(lock, "acquire_unless", None)
        if acquire_unless is None:
            with lock:
                yield None
            return
        found: list[Tokens] = []

        def replaced() -> bool:
            current = self.store.get(self.key)
            if current is not None and current != seen and self._usable(
                current, seen, force=force, rejected=rejected
            ):
                found.append(current)
                return True
            return False

        if not acquire_unless(replaced):
            yield found[-1]
            return
        try:
            yield None
        finally:
            lock.release()

    def _save_refreshed(self, current: Tokens, new: Tokens) -> Tokens | None:
        """Save a refresh result, retrying a failing store a few times: with a
        rotating server the old refresh token is already spent, so losing the
        new one would mean a new login. (The refresh lock is still held: no
        other refresh can start meanwhile.)"""
        delay = 0.1
        for attempt in range(4):
            try:
                return self.store.update(self.key, _if_unchanged(current, new))
            except StoreError as exc:
                if attempt == 3 or isinstance(exc, StoreCorruptError):
                    raise
                logger.warning("saving refreshed tokens of %r failed (%s); retrying",
                               self.key, type(exc).__name__)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _usable(
        self, current: Tokens, seen: Tokens | None, *, force: bool, rejected: str | None
    ) -> bool:
        """Whether ``current`` (read under the lock) can be returned without a refresh."""
        if force:
            return (rejected is not None and current.access_token != rejected
                    and not current.is_expired(0))
        if not self.needs_refresh(current):
            return True
        # Someone refreshed while we waited: use their tokens even if they live
        # shorter than ``skew`` (else every caller would refresh in turn).
        return current != seen and not current.is_expired(0)

    def _client_for_refresh(self, info: ClientInfo | None = None) -> OAuthClient:
        if self.client is not None:
            return self.client
        info = info if info is not None else self.store.get_client(self.key)
        if info is None:
            raise _reauth(
                self.key,
                "no client registration is stored to refresh with; log in again "
                "(OAuthClient.login saves it) or pass client= to TokenManager",
            )
        from .flow import OAuthClient  # the HTTP stack: only when a refresh is due

        return OAuthClient.from_client_info(info)


def _without_identity(client: ClientInfo | None) -> ClientInfo | None:
    return client.replace(identity=None) if client is not None else None


@valueclass()
class LogoutResult:
    """What :meth:`TokenManager.logout` did.

    ``had_tokens`` / ``had_client``: what was stored under ``key`` before;
    ``revoked``: the token types revoked at the provider (``"refresh_token"``,
    ``"access_token"``), in order; ``revocation_supported``: whether the
    provider advertises a revocation endpoint (``None``: not known, e.g. not
    asked); ``revocation_error``: why revoking failed (the local removal
    happened all the same).
    """

    key: str
    had_tokens: bool
    had_client: bool
    revoked: tuple[str, ...]
    revocation_supported: bool | None
    revocation_error: OAuthCallbackError | None

    @property
    def ok(self) -> bool:
        """Whether nothing failed (a provider without revocation is not a failure)."""
        return self.revocation_error is None
