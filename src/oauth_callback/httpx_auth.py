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
from .bearer import SendRequest, bearer_flow

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


class HttpxTokenAuth(TokenAuthBase, _AuthBase):
    """An ``httpx2`` (and ``httpx``) ``Auth`` sending the manager's access token."""

    def sync_auth_flow(self, request: Any) -> Generator[Any, Any, None]:
        flow = bearer_flow(replayable=_replayable(request))
        effect = next(flow)
        while True:
            reply: Any
            if isinstance(effect, SendRequest):
                request.headers["Authorization"] = effect.authorization
                reply = yield request
            else:
                reply = self.tokens_for(effect)
            try:
                effect = flow.send(reply)
            except StopIteration:
                return

    async def async_auth_flow(self, request: Any) -> AsyncGenerator[Any, Any]:
        flow = bearer_flow(replayable=_replayable(request))
        effect = next(flow)
        while True:
            reply: Any
            if isinstance(effect, SendRequest):
                request.headers["Authorization"] = effect.authorization
                reply = yield request
            else:
                reply = await self.tokens_for_async(effect)
            try:
                effect = flow.send(reply)
            except StopIteration:
                return
