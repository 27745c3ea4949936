"""``requests`` authentication from a :class:`~oauth_callback.TokenManager`.

Get one with :meth:`TokenManager.requests_auth` (needs the ``[requests]``
extra; this module is imported then, never by ``import oauth_callback``)::

    requests.get("https://api.example.com/me", auth=manager.requests_auth())

The behaviour is :func:`oauth_callback.bearer.bearer_flow`, as for
:mod:`oauth_callback.httpx_auth`: refresh before the request when the token
expires within the manager's margin; on a ``401`` ``invalid_token`` (or a bare
``Bearer`` challenge) one coordinated refresh and one retry on the same
connection adapter; the second answer is returned as is (the first is in
``response.history``). A request whose body is a file or a generator is not
retried: the token is still refreshed, and its ``401`` returned.

Safe to share between threads and sessions.
"""

from __future__ import annotations

import functools
from typing import Any

import requests
from requests.auth import AuthBase
from requests.cookies import extract_cookies_to_jar

from ._auth_base import TokenAuthBase
from .bearer import BearerFlow, CurrentToken, RefreshRejected, SendRequest, bearer_flow

__all__ = ["RequestsTokenAuth"]


class RequestsTokenAuth(TokenAuthBase, AuthBase):
    """A ``requests`` auth (``AuthBase``) sending the manager's access token."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        replayable = request.body is None or isinstance(request.body, (bytes, str))
        flow = bearer_flow(replayable=replayable)
        send = self._advance(flow, next(flow))
        assert send is not None, "bearer_flow sends the request first"
        request.headers["Authorization"] = send.authorization
        request.register_hook(  # type: ignore[no-untyped-call]
            "response", functools.partial(self._on_response, flow)
        )
        return request

    def _advance(
        self, flow: BearerFlow, effect: CurrentToken | RefreshRejected | SendRequest
    ) -> SendRequest | None:
        """Answer token effects until the flow asks to send (``None``: it ended)."""
        while not isinstance(effect, SendRequest):
            try:
                effect = flow.send(self.tokens_for(effect))
            except StopIteration:
                return None
        return effect

    def _on_response(
        self, flow: BearerFlow, response: requests.Response, **kwargs: Any
    ) -> requests.Response:
        try:
            effect = flow.send(response)
        except StopIteration:
            return response
        send = self._advance(flow, effect)
        if send is None:
            return response
        # One retry, as requests' own HTTPDigestAuth does it: release the
        # connection, copy the request with the new header, send it again.
        response.content  # noqa: B018 - read the body so the connection is reusable
        response.close()
        retry_request = response.request.copy()
        cookies = getattr(retry_request, "_cookies", None)
        if cookies is not None:
            extract_cookies_to_jar(  # type: ignore[no-untyped-call]
                cookies, response.request, response.raw
            )
            retry_request.prepare_cookies(cookies)
        retry_request.headers["Authorization"] = send.authorization
        connection = getattr(response, "connection", None)
        if connection is None:  # pragma: no cover - every requests adapter sets it
            return response
        retry: requests.Response = connection.send(retry_request, **kwargs)
        retry.history.append(response)
        retry.request = retry_request
        flow.close()  # the retry's answer is the last word
        return retry
