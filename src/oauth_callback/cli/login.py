"""``oauth-callback login``: the three ways to log in, and the choice between them.

* the browser (default on a desktop): authorization code + PKCE on a loopback
  redirect, the system browser opened;
* ``--no-browser`` (paste-back): the URL printed; the loopback callback or the
  redirect URL pasted on stdin, whichever comes first;
* ``--device``: the device authorization grant (RFC 8628), a code to enter
  on any device.

Without a display or inside SSH the device flow is chosen when the provider
offers it, paste-back otherwise (:func:`choose_method`), said in one line.

``--client-credentials`` is the fourth way, for machines: the client credentials
grant (RFC 6749 4.4), no browser and no person (:func:`_machine_login`).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO
from urllib.parse import parse_qs, urlsplit, urlunsplit

from .._text import escape_control
from ..browser import no_graphical_display, open_url
from ..errors import InvalidClientError, OAuthCallbackError
from ..flow import OAuthClient
from ..keys import default_key, resolve_key
from ._common import (
    EXIT_AUTH_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    SECRET_ENV_VAR,
    CliError,
    human_duration,
    human_expiry,
    info,
    log,
    store_from_args,
)
from ._login_ui import Events, show_device_code
from .accounts import apply_stored_login, check_server_url, login_error, remember_port

if TYPE_CHECKING:
    from ..assertion import PrivateKeyJWT
    from ..device import DeviceAuthorization
    from ..models import ClientInfo, Tokens
    from ..storage.base import TokenStore

__all__ = [
    "Progress", "choose_method", "cmd_login", "default_key", "in_ssh_session", "login_key",
]
# default_key: re-exported from oauth_callback.keys (it was this module's own, host[:port]).


class Progress:
    """A status line on stderr: a spinner with elapsed time on a TTY, one plain line otherwise."""

    FRAMES = "|/-\\"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._message = ""
        self._timeout: float | None = None
        self._deadline: float | None = None

    def start(
        self, message: str, timeout: float | None = None, *, deadline: float | None = None
    ) -> None:
        """Show ``message``; on a TTY animate it (elapsed / ``timeout`` s, or the time left
        until ``deadline``, a ``time.time()``) until :meth:`stop`."""
        self._message = message
        self._timeout = timeout
        self._deadline = deadline
        if not self.tty:
            limit = f" (timeout {timeout:g}s)" if timeout else ""
            if deadline is not None:
                limit = f" (the code expires in {human_duration(deadline - time.time())})"
            print(f"{message}{limit} ...", file=self.stream, flush=True)
            return
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._spin, name="oauth-callback-spinner",
                                        daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        started = time.monotonic()
        i = 0
        while not self._stop.wait(0.1):
            elapsed = f"{int(time.monotonic() - started)}s"
            if self._timeout:
                elapsed += f" of {self._timeout:g}s"
            if self._deadline is not None:
                left = max(int(self._deadline - time.time()), 0)
                elapsed = f"code expires in {left // 60}:{left % 60:02d}"
            frame = self.FRAMES[i % len(self.FRAMES)]
            self.stream.write(f"\r{frame} {self._message} ({elapsed}, Ctrl-C to cancel)\x1b[K")
            self.stream.flush()
            i += 1

    def stop(self) -> None:
        """Stop the animation and clear the line (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout=1.0)
        self.stream.write("\r\x1b[K")
        self.stream.flush()


def login_key(store: TokenStore, args: argparse.Namespace) -> str:
    """The key of a login: ``--key``, else the one key scheme (:mod:`oauth_callback.keys`)
    applied to the issuer, or to the origin of the endpoint URLs; a key an earlier
    version wrote for that server is kept (:func:`~oauth_callback.keys.resolve_key`)."""
    if args.key:
        return str(args.key)
    url = getattr(args, "url", None) or args.issuer
    try:
        if not url:  # endpoint URLs only: their origin names the server
            url = urlunsplit((*urlsplit(args.authorize_url or args.token_url)[:2], "", "", ""))
        return resolve_key(store, url)
    except ValueError as exc:
        raise CliError(f"{exc}; pass --key", EXIT_USAGE) from None


#: The ClientInfo.extra field naming the MCP server (protected resource) of a login,
#: as the MCP helpers record it (oauth_callback.mcp.storage).
SERVER_URL_FIELD = "mcpServerUrl"


def discover_server(args: argparse.Namespace) -> None:
    """``login URL``: the authorization server of the protected resource at URL (an MCP
    server: RFC 9728 metadata) becomes ``--issuer`` and its identifier the
    ``--resource``; a URL without such metadata is taken as the issuer."""
    from ..driver import run
    from ..effects import HttpGet, translated
    from ..resource import resource_metadata_flow

    url = args.url
    if args.issuer or args.authorize_url or args.token_url:
        raise CliError("pass the server URL or --issuer (or --authorize-url and --token-url), "
                       "not both", EXIT_USAGE)
    check_server_url("URL", url)
    found = run(translated(resource_metadata_flow(url),
                           lambda u: HttpGet(u, what="protected resource metadata URL")),
                timeout=min(args.timeout, 30.0))
    args.server_url = None
    if found is None:
        args.issuer = url
        return
    args.issuer = found.authorization_servers[0]
    check_server_url(f"the authorization server of {url}", args.issuer)
    if not args.resource:
        args.resource = [found.resource]
    args.server_url = url


def _registered_port(client: ClientInfo | None) -> int:
    """The port of a stored registration's loopback redirect URI (``localhost``,
    ``/callback``: what a login here uses), 0 when there is none."""
    uri = urlsplit(client.redirect_uri or "") if client is not None else None
    if uri is None or uri.scheme != "http" or uri.hostname != "localhost" \
            or uri.path != "/callback":
        return 0
    try:
        return uri.port or 0
    except ValueError:
        return 0


def _free_port() -> int:
    """A loopback port free now, for a registration that must name its redirect URI's
    port exactly (RFC 8252 7.3 asks servers to allow any port; not all do)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _register(args: argparse.Namespace, options: dict[str, object]) -> OAuthClient:
    """A client registered dynamically (RFC 7591) for the loopback redirect of this login."""
    if args.port == 0:
        args.port = _free_port()
    registered = OAuthClient.register(
        args.issuer, client_name=PROG, scope=args.scope,
        redirect_uris=[f"http://localhost:{args.port}/callback"],
    )
    info(f"{PROG}: registered client {registered.client_id} with {registered.issuer} "
         "(dynamic client registration)")
    options = {**options, "client_secret": registered.client_secret}
    if args.auth_method is None:
        options["token_endpoint_auth_method"] = registered.token_endpoint_auth_method
    return OAuthClient(registered.client_id, metadata=registered.metadata,
                       **options)  # type: ignore[arg-type]


def _build_client(args: argparse.Namespace, secret: str | None,
                  private_key: PrivateKeyJWT | None = None) -> OAuthClient:
    options = {
        "scope": args.scope,
        "client_secret": secret,
        "private_key": private_key,
        "token_endpoint_auth_method": args.auth_method,
        "resource": args.resource,
        "device_authorization_endpoint": args.device_url,
    }
    try:
        if args.client_id is None:
            return _register(args, options)
        if args.issuer:
            return OAuthClient.discover(args.issuer, args.client_id, **options)
        return OAuthClient(
            args.client_id,
            authorization_endpoint=args.authorize_url,
            token_endpoint=args.token_url,
            **options,
        )
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _private_key(args: argparse.Namespace) -> PrivateKeyJWT | None:
    if args.private_key is None:
        return None
    from ..assertion import PrivateKeyJWT

    try:
        return PrivateKeyJWT.from_pem_file(
            os.path.abspath(os.path.expanduser(args.private_key)),
            algorithm=args.signing_alg, kid=args.key_id,
        )
    except OSError as exc:
        raise CliError(f"--private-key: cannot read {args.private_key}: "
                       f"{exc.strerror or type(exc).__name__}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CliError(f"--private-key: {exc}", EXIT_USAGE) from None


def _refuse_encrypted_key(store: TokenStore, key: str) -> None:
    """Before the provider is asked: :class:`~oauth_callback.errors.StoreEncryptedError`
    (exit 4) when ``key``'s tokens or client registration are encrypted and ``store``
    was opened without encryption, not after the user logged in, when the save would
    refuse the same way (``set`` never replaces an encrypted record in clear). Any
    other store error is left to the login's own save, as before."""
    from ..errors import StoreEncryptedError, StoreError

    for read in (store.get, store.get_client):
        try:
            read(key)
        except StoreEncryptedError:
            raise
        except StoreError:
            return


def _protects_secrets(store: TokenStore) -> bool:
    """Whether ``store`` keeps records encrypted at rest (``?encryption=``) or in
    the OS keychain: the only places ``--store-secret`` may put a client secret."""
    for module, name in (("oauth_callback.storage.encrypted", "EncryptedStore"),
                         ("oauth_callback.storage.keyring", "KeyringStore")):
        loaded = sys.modules.get(module)  # a store of that kind imported its module
        cls = getattr(loaded, name, None) if loaded is not None else None
        if cls is not None and isinstance(store, cls):
            return True
    return False


def _machine_login(args: argparse.Namespace, store: TokenStore, secret: str | None) -> int:
    """``login --client-credentials``: no browser, no person."""
    if args.authorize_url:
        raise CliError("--client-credentials uses no authorization endpoint; pass --issuer "
                       "or --token-url", EXIT_USAGE)
    private_key = _private_key(args)
    if secret is None and private_key is None:
        raise CliError(f"--client-credentials needs the client secret in ${SECRET_ENV_VAR} "
                       "(or --private-key FILE for private_key_jwt)", EXIT_USAGE)
    key = login_key(store, args)
    _refuse_encrypted_key(store, key)
    if args.store_secret and secret is None:
        raise CliError("--store-secret: there is no client secret to store", EXIT_USAGE)
    if args.store_secret and not _protects_secrets(store):
        raise CliError(f"--store-secret stores the client secret only in an encrypted store "
                       f"(a store URL with ?encryption=...) or the keychain (keyring:); "
                       f"{store.describe()} is neither. Without --store-secret the secret is "
                       f"read from ${SECRET_ENV_VAR} on every renewal", EXIT_USAGE)
    client = _build_client(args, secret, private_key)
    try:
        tokens = client.client_credentials(
            store=store, key=key, store_secret=args.store_secret,
            secret_env=SECRET_ENV_VAR if secret is not None else None,
        )
    except InvalidClientError as exc:
        what = ("--private-key, --signing-alg and --key-id" if private_key is not None
                else f"${SECRET_ENV_VAR}")
        raise CliError(f"the token endpoint rejected the client ({exc}); check the client id "
                       f"and {what}", EXIT_AUTH_FAILED) from None
    if args.store_secret:
        where = "the client secret is stored (encrypted)"
    elif private_key is not None:
        where = f"renewals sign with the key in {private_key.source}"
    else:
        where = f"renewals read the client secret from ${SECRET_ENV_VAR}"
    print(f"Logged in with client credentials: key {key!r}, expires "
          f"{human_expiry(tokens.expires_at)}, scope {tokens.scope or '-'}, "
          f"{client.token_endpoint_auth_method} (stored in {store.describe()}; {where})")
    return EXIT_OK


def _login_summary(key: str, tokens: Tokens, store: TokenStore) -> str:
    return (
        f"Logged in: key {key!r}, expires {human_expiry(tokens.expires_at)}, "
        f"scope {escape_control(tokens.scope or '-')}, "
        f"refresh token {'yes' if tokens.refresh_token else 'no'} "
        f"(stored in {store.describe()})"
    )


def in_ssh_session() -> bool:
    """Whether this process runs inside an SSH session (``SSH_CONNECTION``, ``SSH_TTY``)."""
    return any(os.environ.get(name) for name in ("SSH_CONNECTION", "SSH_TTY", "SSH_CLIENT"))


def choose_method(args: argparse.Namespace, client: OAuthClient) -> tuple[str, str | None]:
    """``("browser" | "paste" | "device", why)``: the explicit flag, else the automatic choice.

    ``why`` is the one line that explains an automatic choice (``None`` for the
    desktop default and for explicit flags).
    """
    if args.device:
        return "device", None
    if args.no_browser:
        return "paste", None
    if args.browser:
        return "browser", None
    if in_ssh_session():
        where = "inside an SSH session"
    elif no_graphical_display():
        where = "no graphical display"
    else:
        return "browser", None
    provider = client.issuer or client.token_endpoint
    if client.device_authorization_endpoint is not None:
        return "device", (
            f"{where}: using the device flow, which {provider} offers "
            "(--no-browser pastes the redirect back instead, --browser opens a browser here)"
        )
    return "paste", (
        f"{where}: printing the URL to open elsewhere and paste the redirect back "
        f"({provider} offers no device flow; --browser opens a browser here)"
    )


def _redirect_of(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("redirect_uri", ["the loopback address"])[0]


def _login_with_browser(
    args: argparse.Namespace, client: OAuthClient, store: TokenStore, key: str,
    events: Events, *, paste: bool, force: bool = False,
) -> Tokens:
    progress = Progress()
    stdin = sys.stdin if paste else None  # None also when stdin is closed (<&-)

    def show(url: str) -> None:
        redirect = _redirect_of(url)
        events.emit("authorization_url", url=url, redirect_uri=redirect)
        if paste:
            info(f"Open this URL in a browser, on this machine or any other:\n\n    {url}\n")
            if stdin is not None:
                info(f"After you approve, the browser is sent to {redirect}?... ; if that page "
                     "cannot load (the browser is on another machine), copy its address from "
                     "the address bar and paste it here.")
            info(f"Waiting for the authorization callback on {redirect} "
                 f"(timeout {args.timeout:g}s, Ctrl-C to cancel) ...")
            return
        if not no_graphical_display():
            info("Opening the authorization page in your browser "
                 "(if none opens, run again with --no-browser) ...")
        open_url(url, True)
        progress.start(f"Waiting for the authorization callback on {redirect}", args.timeout)

    try:
        return client.login(store, key, port=args.port, open_browser=show,
                            timeout=args.timeout, paste=stdin, replace_account=force)
    finally:
        progress.stop()


def _login_with_device(
    args: argparse.Namespace, client: OAuthClient, store: TokenStore, key: str, events: Events,
    *, force: bool = False,
) -> Tokens:
    progress = Progress()

    def on_code(grant: DeviceAuthorization) -> None:
        events.emit(
            "device_code",
            user_code=grant.user_code,
            verification_uri=grant.verification_uri,
            verification_uri_complete=grant.verification_uri_complete,
            expires_in=grant.expires_in,
            interval=grant.interval,
        )
        show_device_code(grant, sys.stderr, qr=True if args.qr else None)
        progress.start("Waiting for you to approve", deadline=grant.expires_at)

    try:
        return client.login_device(store, key, on_code=on_code, replace_account=force)
    finally:
        progress.stop()


def cmd_login(args: argparse.Namespace) -> int:
    """Log in (browser, paste-back or device flow) and store the tokens; one line of result."""
    store = store_from_args(args)
    reused = bool(args.key) and apply_stored_login(args, store, args.key)
    server_url = None
    if getattr(args, "url", None):
        discover_server(args)
        server_url = args.server_url
        if not args.key:
            stored_key = login_key(store, args)
            reused = apply_stored_login(args, store, stored_key)
            registration = store.get_client(stored_key) if reused else None
            if registration is not None and args.client_id == registration.client_id:
                # A registration browser_auth made: its redirect port and auth method.
                args.port = args.port or _registered_port(registration)
                args.auth_method = args.auth_method or registration.token_endpoint_auth_method
    if args.issuer and (args.authorize_url or args.token_url):
        raise CliError("pass either --issuer or --authorize-url and --token-url", EXIT_USAGE)
    if not args.issuer and not (args.authorize_url and args.token_url) and not (
        args.client_credentials and args.token_url
    ):
        if args.key:
            raise CliError(
                f"no login is stored under {args.key!r} in {store.describe()} to log in "
                "again with; pass --issuer URL --client-id ID (or --authorize-url and "
                "--token-url)", EXIT_USAGE)
        if args.client_credentials:
            raise CliError("--client-credentials needs --issuer or --token-url", EXIT_USAGE)
        raise CliError("pass the URL to log in to (an MCP server or an issuer), --issuer, or "
                       "both --authorize-url and --token-url", EXIT_USAGE)
    for option, value in (("--issuer", args.issuer), ("--authorize-url", args.authorize_url),
                          ("--token-url", args.token_url)):
        check_server_url(option, value)
    if args.client_id is None and (server_url is None or args.client_credentials):
        raise CliError("pass --client-id (the OAuth client id registered with the provider)",
                       EXIT_USAGE)
    if args.client_secret:
        log.warning("--client-secret on the command line is visible to other users of this "
                    "machine (process list, shell history); prefer $%s", SECRET_ENV_VAR)
    secret = (args.client_secret or os.environ.get(SECRET_ENV_VAR)
              or getattr(args, "stored_secret", None) or None)
    if args.client_credentials:
        return _machine_login(args, store, secret)
    if args.store_secret:
        raise CliError("--store-secret needs --client-credentials", EXIT_USAGE)
    key = login_key(store, args)
    _refuse_encrypted_key(store, key)
    if store.describe().startswith("memory:"):
        log.warning("--store memory: keeps the tokens in this process only: they vanish when "
                    "it exits (use a file, sqlite:, keyring: or redis:// store to keep them)")
    if reused:
        info(f"Logging in again as stored under {key!r}: {args.issuer or args.token_url}, "
             f"client {args.client_id}" + (f", port {args.port}" if args.port else ""))
    events = Events(args.json)
    try:
        client = _build_client(args, secret, _private_key(args))
        method, why = choose_method(args, client)
        if why is not None:
            info(f"{PROG}: {why}")
        events.emit("method", method=method, reason=why)
        if method == "device":
            tokens = _login_with_device(args, client, store, key, events, force=args.force)
        else:
            tokens = _login_with_browser(args, client, store, key, events,
                                         paste=method == "paste", force=args.force)
    except OAuthCallbackError as exc:
        events.emit("error", type=type(exc).__name__, error=getattr(exc, "error", None),
                    message=str(exc))
        raise login_error(exc, store, key, secret) from None
    remember_port(store, key, args.port)
    if server_url is not None:
        store.update_client(key, lambda c: None if c is None else c.replace(
            extra={**c.extra, SERVER_URL_FIELD: server_url}))
    if args.json:
        events.emit("logged_in", key=key, method=method, expires_at=tokens.expires_at,
                    scope=tokens.scope, refresh_token=tokens.refresh_token is not None,
                    store=store.describe())
    else:
        print(_login_summary(key, tokens, store))
    return EXIT_OK
