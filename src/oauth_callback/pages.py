"""The HTML pages the loopback callback server shows in the user's browser.

Pure text: no I/O. Every value that comes from a request or a provider is
HTML-escaped before it is put in a page.
"""

from __future__ import annotations

import html

__all__ = ["DEFAULT_SUCCESS_HTML", "default_error_html", "render_error", "status_page"]

_PAGE_STYLE = (
    "body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;"
    "background:#f4f5f7;color:#1f2328;font:16px/1.5 -apple-system,BlinkMacSystemFont,"
    "'Segoe UI',Roboto,Helvetica,Arial,sans-serif}"
    "main{background:#fff;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08);"
    "padding:2.5rem 3rem;max-width:32rem;text-align:center}"
    ".icon{font-size:2.5rem;line-height:1;margin-bottom:.75rem}"
    ".ok{color:#1a7f37}.bad{color:#cf222e}"
    "h1{font-size:1.35rem;margin:0 0 .5rem}p{margin:.5rem 0;color:#59636e}"
    "code{background:#f0f1f3;border-radius:4px;padding:.1rem .35rem;word-break:break-all}"
)


def _page(title: str, icon: str, icon_class: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{title}</title><style>{_PAGE_STYLE}</style></head>"
        f'<body><main><div class="icon {icon_class}">{icon}</div>{body}</main></body></html>'
    )


#: The page shown after a successful callback (``success_html`` replaces it).
DEFAULT_SUCCESS_HTML = _page(
    "Authorization complete",
    "&#10003;",
    "ok",
    "<h1>Authorization complete</h1><p>You can close this tab and return to the application.</p>",
)


def default_error_html(error: str, description: str | None, uri: str | None) -> str:
    """The page shown for an OAuth error callback (``error``, description, URI escaped)."""
    parts = [f"<h1>Authorization failed</h1><p><code>{html.escape(error)}</code></p>"]
    if description:
        parts.append(f"<p>{html.escape(description)}</p>")
    if uri:
        parts.append(f"<p>More information: <code>{html.escape(uri)}</code></p>")
    parts.append("<p>You can close this tab and return to the application.</p>")
    return _page("Authorization failed", "&#10007;", "bad", "".join(parts))


def render_error(
    template: str | None, error: str, description: str | None, uri: str | None
) -> str:
    """The error page: ``template`` with ``{{error}}``, ``{{error_description}}`` and
    ``{{error_uri}}`` replaced by the escaped values, or :func:`default_error_html`."""
    if template is None:
        return default_error_html(error, description, uri)
    return (
        template.replace("{{error}}", html.escape(error))
        .replace("{{error_description}}", html.escape(description or ""))
        .replace("{{error_uri}}", html.escape(uri or ""))
    )


def status_page(status: int, message: str) -> str:
    """A plain page for an HTTP status (404, 409, ...): ``<status> <message>``."""
    return _page(
        f"{status} {html.escape(message)}",
        "&#9888;",
        "bad",
        f"<h1>{status} {html.escape(message)}</h1>",
    )
