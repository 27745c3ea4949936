"""``httpx2`` / ``httpx`` authentication from a :class:`~oauth_callback.TokenManager`.

Get one with :meth:`TokenManager.httpx_auth` (this module is imported then,
never by ``import oauth_callback``)::

    with httpx2.Client(auth=manager.httpx_auth()) as http:
        http.get("https://api.example.com/me")

One :class:`HttpxTokenAuth` works with ``httpx2.Client`` and
``httpx2.AsyncClient``, and with ``httpx.Client`` / ``httpx.AsyncClient`` too
when ``httpx`` is installed (the class derives from both libraries' ``Auth``).
The behaviour is :func:`oauth_callback.bearer.bearer_flow`: refresh before the
request when the token expires within the manager's margin; on a ``401``
``invalid_token`` (or a bare ``Bearer`` challenge) one coordinated refresh and
one retry; the second answer is returned as is. A request whose body is a
stream (an iterator, a file upload not read into memory) is not retried: the
token is still refreshed, and its ``401`` returned.

Safe to share between threads and tasks; it keeps only the last tokens seen.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any

from ._auth_base import TokenAuthBase
from ._http import httpx2
from .bearer import CurrentToken, RefreshRejected, SendRequest, bearer_flow

__all__ = ["HttpxTokenAuth"]


def _auth_base() -> type:
    """``httpx2.Auth``, joined by ``httpx.Auth`` when that library is installed
    (each client accepts only instances of its own ``Auth``)."""
    bases: list[type] = [httpx2.Auth]
    if importlib.util.find_spec("httpx") is not None:
        httpx = importlib.import_module("httpx")
        if httpx.Auth is not httpx2.Auth:
            bases.append(httpx.Auth)
    return type("_AuthBase", tuple(bases), {})


if TYPE_CHECKING:
    _AuthBase = httpx2.Auth
else:
    _AuthBase = _auth_base()


def _replayable(request: Any) -> bool:
    """Whether the body is in memory (bytes, form, JSON): a stream is not."""
    try:
        request.content  # noqa: B018 - raises RequestNotRead for a streaming body
    except RuntimeError:
        return False
    return True


class _Steps:
    """One request's run of :func:`~oauth_callback.bearer.bearer_flow`, for both
    auth flows: iterating it yields the token effects to answer, and ``None`` when
    the request is to be sent (its ``Authorization`` header is set by then); the
    answer of each step goes to :attr:`reply`. It stops when the flow ends."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.reply: Any = None
        self._flow = bearer_flow(replayable=_replayable(request))

    def __iter__(self) -> _Steps:
        return self

    def __next__(self) -> CurrentToken | RefreshRejected | None:
        reply, self.reply = self.reply, None
        effect = self._flow.send(reply)  # StopIteration when the flow ends
        if isinstance(effect, SendRequest):
            self.request.headers["Authorization"] = effect.authorization
            return None
        return effect


class HttpxTokenAuth(TokenAuthBase, _AuthBase):
    """An ``httpx2`` (and ``httpx``) ``Auth`` sending the manager's access token."""

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        steps = _Steps(request)
        for effect in steps:
            steps.reply = (yield request) if effect is None else self.tokens_for(effect)

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        steps = _Steps(request)
        for effect in steps:
            steps.reply = (
                (yield request) if effect is None else await self.tokens_for_async(effect)
            )
