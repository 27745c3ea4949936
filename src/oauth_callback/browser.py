"""Showing the authorization URL to the user: the system browser, or a printed URL.

:func:`open_url` is the one opener; :func:`open_url_async` runs it for async
code without blocking the event loop. :func:`no_graphical_display` is the
headless detection both use (and the CLI, to word its messages).
``webbrowser`` and ``anyio`` are imported on first use only.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from typing import TypeAlias

from ._log import get_logger

__all__ = ["OpenBrowser", "no_graphical_display", "open_url", "open_url_async"]

logger = get_logger("oauth_callback.loopback")

OpenBrowser: TypeAlias = "bool | Callable[[str], object]"
"""``True`` (system browser), ``False`` (print the URL) or a callable given the URL
(with :func:`open_url_async` it may also be an ``async`` function)."""


def no_graphical_display() -> bool:
    """True on a Linux/BSD box without a graphical session or an explicit $BROWSER."""
    if sys.platform == "darwin" or os.name == "nt":
        return False
    if os.environ.get("BROWSER"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _print_url(url: str) -> None:
    print(f"Open this URL in your browser: {url}", file=sys.stderr, flush=True)


def open_url(url: str, open_browser: OpenBrowser = True) -> None:
    """Show ``url`` to the user: ``True`` opens the system browser, ``False`` prints it.

    A callable is called with ``url`` (its exceptions propagate). With ``True``,
    when no browser can be opened (headless Linux without ``$BROWSER``,
    ``webbrowser.open`` returning ``False`` or raising) the URL is printed to
    stderr instead, so the caller can keep waiting.
    """
    if callable(open_browser):
        open_browser(url)
        return
    if not open_browser:
        _print_url(url)
        return
    if no_graphical_display():
        logger.info("no graphical display; printing the authorization URL instead")
        _print_url(url)
        return
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except Exception as exc:
        logger.info("could not open a browser (%s); printing the URL", type(exc).__name__)
        opened = False
    if not opened:
        _print_url(url)


async def open_url_async(url: str, open_browser: OpenBrowser = True) -> None:
    """:func:`open_url` for async code (asyncio or trio); never blocks the event loop.

    An ``async`` callable is awaited; a plain callable, and the system browser
    (``True``, whose launch may block), run in a worker thread; ``False``
    prints the URL.
    """
    if callable(open_browser) and inspect.iscoroutinefunction(open_browser):
        await open_browser(url)
        return
    if open_browser is False:
        _print_url(url)
        return
    import anyio.to_thread

    await anyio.to_thread.run_sync(open_url, url, open_browser)
