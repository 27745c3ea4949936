"""The parser, the dispatch to the command modules, and the mapping of errors to exit codes.

Each command is named by ``(module, function)`` in the parser; its module is
imported only when that command runs, so ``--help`` and ``token KEY`` load
neither the HTTP client nor the login machinery.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from .. import __version__
from .._lazy import TYPE_CHECKING, import_module
from ..errors import (
    CallbackError,
    DiscoveryError,
    EndpointError,
    IdTokenError,
    IssuerMismatchError,
    MissingCredentialsError,
    OAuthCallbackError,
    OAuthError,
    ReauthRequired,
    ResourceAccessError,
    StoreError,
)
from ._common import (
    EXIT_AUTH_FAILED,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_LOGIN_REQUIRED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    PROG,
    SECRET_ENV_VAR,
    STORE_ENV_VAR,
    CliError,
    err,
    log,
    opened_stores,
)

if TYPE_CHECKING:
    from typing import Any

__all__ = ["build_parser", "main"]

# The token endpoint auth methods of protocol.AUTH_METHODS (a test keeps them equal),
# spelled out so that --help imports no protocol module.
AUTH_METHOD_CHOICES = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535: {text!r}")
    return value


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized like :func:`shutil.get_terminal_size` without importing
    :mod:`shutil` (and the compression modules it loads): ``$COLUMNS``, else the terminal's
    width, else 80. argparse makes a formatter for every argument it adds."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            try:
                columns = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                columns = 0
            if columns <= 0:
                try:
                    columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
                except (AttributeError, ValueError, OSError):
                    columns = 0
            width = (columns or 80) - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """A parser that ``build`` fills in, with sub-commands added by :meth:`command`.

    ``lazy=True`` (what :func:`main` uses): each sub-command's parser is made only when
    that command runs (a :class:`_Command` stands in for it until then), so ``token KEY``
    builds the parser of ``token`` alone, while ``--help`` still lists every command.
    """

    def __init__(self, *args: Any, build: Callable[[_Parser], None] | None = None,
                 lazy: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._lazy = lazy
        if build is not None:
            build(self)

    def commands(self, **kwargs: Any) -> Any:
        """``add_subparsers(**kwargs)``, making sub-command parsers lazily when this is lazy."""
        return self.add_subparsers(parser_class=_Command if self._lazy else _Parser, **kwargs)

    def command(self, sub: Any, name: str, build: Callable[[_Parser], None],
                shared: bool = True, **kwargs: Any) -> None:
        """Add the sub-command ``name`` to ``sub`` (from :meth:`commands`): ``build`` adds
        its arguments after the shared ``--store`` and ``-v`` (``shared=False``: without)."""
        def arguments(p: _Parser) -> None:
            if shared:
                _add_shared_options(p, suppress=True)
            build(p)

        sub.add_parser(name, build=arguments, lazy=self._lazy, **kwargs)


class _Command:
    """Stands in for a sub-command's :class:`_Parser` (argparse's ``parser_class``) until
    the command runs: argparse then calls :meth:`parse_known_args`, which makes the
    parser. Making one costs about as much as the whole start of ``token KEY`` saves."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        return _Parser(**self._kwargs).parse_known_args(args, namespace)


def _add_shared_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    """Options accepted both before and after the command (``default=SUPPRESS`` on the latter)."""
    default: Any = argparse.SUPPRESS if suppress else None
    p.add_argument("--store", metavar="URL_OR_PATH", default=default,
                   help="token store: a path or a store URL: file:PATH, sqlite:PATH, "
                   "keyring:[SERVICE], redis://[user:pass@]HOST[:PORT][/DB], rediss://... "
                   "(TLS), redis+cluster://HOST:PORT[,...], redis+sentinel://HOST:PORT[,...]"
                   "/SERVICE (rediss+cluster://, rediss+sentinel://: TLS), memory: (this "
                   "process only); any of them ?encryption=keyring|env:NAME|file:PATH; "
                   f"default ${STORE_ENV_VAR} or ~/.mcp/tokens.json")
    p.add_argument("-v", "--verbose", action="count",
                   default=argparse.SUPPRESS if suppress else 0,
                   help="log to stderr (-vv: debug)")


def _key(p: argparse.ArgumentParser, **kwargs: Any) -> None:
    p.add_argument("key", metavar="KEY", **kwargs)


def _json(p: argparse.ArgumentParser, help: str = "machine-readable output") -> None:
    p.add_argument("--json", action="store_true", help=help)


def _client_options(p: argparse.ArgumentParser, client_id: str, auth_method: str) -> None:
    """``--client-id`` and ``--auth-method`` (of ``login`` and ``tokens import``)."""
    p.add_argument("--client-id", help=client_id)
    p.add_argument("--auth-method", choices=AUTH_METHOD_CHOICES, help=auth_method)


def _login(p: _Parser) -> None:
    p.add_argument("url", nargs="?", metavar="URL",
                   help="the server to log in to: an MCP server or other protected resource "
                   "(its authorization server is discovered, RFC 9728, and without "
                   "--client-id a client registered, RFC 7591), or an issuer; the key is "
                   "the URL's (the one 'browser_auth(URL)' uses)")
    where = p.add_argument_group("authorization server (URL, --issuer, or both endpoint URLs)")
    where.add_argument("--issuer", help="issuer URL; endpoints are discovered (RFC 8414)")
    where.add_argument("--authorize-url", metavar="URL", help="authorization endpoint")
    where.add_argument("--token-url", metavar="URL", help="token endpoint")
    p.add_argument("--client-id",
                   help="OAuth client id (default with --key: the one stored under KEY)")
    p.add_argument("--client-secret", metavar="SECRET",
                   help=f"client secret for confidential clients (safer: ${SECRET_ENV_VAR}, "
                   "since arguments are visible to other users in the process list)")
    p.add_argument("--scope", help="space-separated scopes to request")
    p.add_argument("--port", type=_port, default=0,
                   help="loopback port for the redirect URI (default 0: any free port)")
    p.add_argument("--key", help="store key (default: the URL's or issuer's host and path, "
                   "'http://' first for http, e.g. example.com/mcp); a key logged in "
                   "before needs no other flag: its issuer, client id, scope and port are reused")
    p.add_argument("--force", action="store_true",
                   help="replace the account stored under the key even if this login is "
                   "another account (another 'sub') of the same provider")
    how = p.add_argument_group(
        "how to log in (default: a browser here; inside SSH or without a display: the device "
        "flow when the provider offers it, else --no-browser)"
    ).add_mutually_exclusive_group()
    how.add_argument("--browser", action="store_true",
                     help="open a browser on this machine, even inside SSH")
    how.add_argument("--no-browser", action="store_true",
                     help="print the authorization URL; finish with the loopback callback or "
                     "by pasting the address the browser ends on (over SSH)")
    how.add_argument("--device", action="store_true",
                     help="device authorization grant (RFC 8628): enter a code on any device")
    p.add_argument("--device-url", metavar="URL",
                   help="device authorization endpoint (default: from the issuer's metadata)")
    p.add_argument("--qr", action="store_true",
                   help="with the device flow, always draw a QR code of the verification URL "
                   "(needs the qr extra; default: on a terminal when segno is installed)")
    _json(p, "progress events on stdout, one JSON object per line (for wrappers)")
    p.add_argument("--timeout", type=_positive_float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the browser's callback (default 300)")
    p.add_argument("--auth-method", choices=AUTH_METHOD_CHOICES,
                   help="token endpoint client authentication (default: client_secret_basic "
                   "with a secret unless the server lists only client_secret_post; "
                   "private_key_jwt with --private-key; none without either)")
    m2m = p.add_argument_group(
        "machine to machine (no browser, no person: CI jobs, servers)")
    m2m.add_argument("--client-credentials", action="store_true",
                     help="use the client credentials grant (RFC 6749 4.4) instead of a "
                     f"browser login; the secret comes from ${SECRET_ENV_VAR} (read again "
                     "on every renewal) or the key from --private-key")
    m2m.add_argument("--private-key", metavar="FILE",
                     help="PEM private key for private_key_jwt (RFC 7523); its path is "
                     "recorded, never its content")
    m2m.add_argument("--signing-alg", choices=("ES256", "ES384", "RS256", "PS256"),
                     default="ES256", help="JWT signing algorithm for --private-key "
                     "(default ES256)")
    m2m.add_argument("--key-id", metavar="KID", help="'kid' header of the JWT assertions")
    m2m.add_argument("--resource", metavar="URL", action="append",
                     help="resource indicator (RFC 8707); repeatable")
    m2m.add_argument("--store-secret", action="store_true",
                     help="also store the client secret (only in an encrypted store or the "
                     "keychain); otherwise it is read from the environment on renewal")
    p.set_defaults(run=("login", "cmd_login"))


def _status(p: _Parser) -> None:
    _key(p, nargs="?", help="only this key")
    _json(p)
    p.add_argument("--check", action="store_true",
                   help="ask the provider: refresh when due, then userinfo when it has one")
    p.set_defaults(run=("accounts", "cmd_status"))


def _logout(p: _Parser) -> None:
    _key(p)
    p.add_argument("--all", action="store_true",
                   help="also remove the client registration (issuer, client id, scope)")
    p.add_argument("--no-revoke", action="store_true",
                   help="remove locally only; the grant stays valid at the provider")
    p.set_defaults(run=("accounts", "cmd_logout"))


def _token(p: _Parser) -> None:
    _key(p)
    _json(p, 'print {"access_token": ..., "expires_at": ...} instead')
    p.set_defaults(run=("token", "cmd_token"))


def _tokens(p: _Parser) -> None:
    sub = p.commands(dest="tokens_command", metavar="ACTION", required=True)
    p.command(sub, "list", _tokens_list, help="list stored tokens (no secrets)")
    p.command(sub, "show", _tokens_show, help="show one entry (secrets masked)")
    p.command(sub, "delete", _tokens_delete, help="delete the tokens of one key")
    p.command(sub, "clear", _tokens_clear, help="delete everything in the store")
    p.command(sub, "migrate", _tokens_migrate,
              help="copy every token, client and session to another store",
              description="Copy the tokens, client registrations and pending "
              "sessions of one store into another (any two of file:PATH, "
              "sqlite:PATH, redis://..., keyring:...), record by record, then read "
              "every record back from the target to verify it. The source is never "
              "modified. A record the target already holds with a different value "
              "is a conflict: kept and reported (exit 1) unless --overwrite.")
    p.command(sub, "keygen", _tokens_keygen,
              help="create an encryption key file (for ?encryption=file:PATH)",
              description="Write a new random 32-byte key (base64url text) to PATH, "
              "mode 0600, for store URLs with ?encryption=file:PATH; the same text "
              "works in an environment variable for ?encryption=env:NAME. An "
              "existing file is never overwritten. Prints the key id, never the key.")
    p.command(sub, "import", _tokens_import,
              help="store a token read from stdin (e.g. from a secret manager)",
              description="Read an access token, or a JSON token response (RFC 6749 "
              "5.1, with refresh_token, expires_in, scope ...), from stdin and store "
              "it under KEY; then 'token KEY' works as after a login. On a terminal "
              "the token is read without echo. With --client-id and --issuer or "
              "--token-url the client is stored too, so a refresh token can be used.")


def _tokens_list(p: _Parser) -> None:
    _json(p)
    p.set_defaults(run=("tokens", "cmd_tokens_list"))


def _tokens_show(p: _Parser) -> None:
    _key(p)
    p.add_argument("--reveal", action="store_true", help="print secrets instead of fingerprints")
    _json(p)
    p.set_defaults(run=("tokens", "cmd_tokens_show"))


def _tokens_delete(p: _Parser) -> None:
    _key(p)
    p.add_argument("--all", action="store_true",
                   help="also delete the key's client registration and pending session")
    p.set_defaults(run=("tokens", "cmd_tokens_delete"))


def _tokens_clear(p: _Parser) -> None:
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(run=("tokens", "cmd_tokens_clear"))


def _tokens_migrate(p: _Parser) -> None:
    p.add_argument("--from", dest="source", metavar="URL", required=True,
                   help="the store to copy from (a path or a store URL)")
    p.add_argument("--to", dest="target", metavar="URL", required=True,
                   help="the store to copy into (a path or a store URL)")
    p.add_argument("--key", dest="keys", metavar="KEY", action="append",
                   help="migrate only this key (repeatable; default: every key)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace records the target holds with a different value")
    p.add_argument("--dry-run", action="store_true",
                   help="only report what would be copied; write nothing")
    _json(p, "machine-readable report")
    p.set_defaults(run=("tokens", "cmd_tokens_migrate"))


def _tokens_keygen(p: _Parser) -> None:
    p.add_argument("path", metavar="PATH", help="the key file to create")
    p.set_defaults(run=("tokens", "cmd_tokens_keygen"))


def _tokens_import(p: _Parser) -> None:
    _key(p)
    p.add_argument("--expires-in", type=_positive_float, metavar="SECONDS",
                   help="lifetime of the access token from now (overrides expires_in)")
    p.add_argument("--scope", help="the token's scope (overrides the response's)")
    _client_options(p, f"client id to refresh with (confidential when ${SECRET_ENV_VAR} is "
                    "set: read again at each refresh, never stored)",
                    "how that client authenticates at the token endpoint")
    p.add_argument("--issuer", help="issuer URL of the client (endpoints are discovered)")
    p.add_argument("--token-url", metavar="URL", help="token endpoint of the client")
    p.add_argument("--overwrite", action="store_true", help="replace tokens stored under KEY")
    p.set_defaults(run=("tokens", "cmd_tokens_import"))


def _doctor(p: _Parser) -> None:
    p.add_argument("--repair", action="store_true", help="apply the safe fixes, then check again")
    _json(p)
    p.set_defaults(run=("doctor", "cmd_doctor"))


def _completion(p: _Parser) -> None:
    p.add_argument("shell", metavar="SHELL", choices=("bash", "zsh", "fish"),
                   help="bash, zsh or fish")
    p.set_defaults(run=("completion", "cmd_completion"))


def _demo(p: _Parser) -> None:
    p.add_argument("--no-browser", "--headless", dest="no_browser", action="store_true",
                   help="never open a browser; follow the redirect headlessly "
                   "(automatic without a display)")
    p.add_argument("--keep", action="store_true", help="keep the temporary store directory")
    p.set_defaults(run=("demo", "cmd_demo"))


def build_parser(*, complete: bool = True) -> argparse.ArgumentParser:
    """The argument parser of the ``oauth-callback`` command, with every command's arguments
    (what the docs, shell completion and tests read).

    ``complete=False`` (what :func:`main` uses): each command's arguments are added only
    when that command parses or shows its help, so a command pays for its own parser
    alone; ``--help`` still lists every command.
    """
    parser = _Parser(
        prog=PROG,
        lazy=not complete,
        description="OAuth 2.0 loopback login and token storage for command-line tools.",
        epilog="exit status: 0 ok, 1 failure or problems found, 2 usage, 3 login required, "
        "4 network/provider/store error, 5 authorization failed, 130 interrupted",
    )
    _add_shared_options(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.commands(dest="command", metavar="COMMAND", required=True)
    parser.command(sub, "login", _login,
                   help="log in (browser, paste-back or device code) and store the tokens",
                   description="Log in and store the tokens: with a browser (authorization "
                   "code + PKCE on a loopback redirect URI), by pasting the redirect back "
                   "(--no-browser), or with a code entered on any device (--device, RFC "
                   "8628). Inside SSH or without a display the device flow is chosen when "
                   "the provider offers it, paste-back otherwise. Prints a one-line "
                   "summary, never the token.")
    parser.command(sub, "status", _status,
                   help="show the stored logins and whether they are usable",
                   description="For each key (or KEY): the account, provider, scopes, "
                   "access-token expiry, refresh token, store and whether the login is "
                   "usable. Exit 0 when every login is usable, 3 when one needs a new "
                   "login, 4 when --check could not reach the provider. Records encrypted "
                   "in a store opened without ?encryption= are listed as encrypted and do "
                   "not change the exit status.")
    parser.command(sub, "logout", _logout,
                   help="revoke a login at the provider and remove it locally",
                   description="Revoke KEY's refresh and access tokens at the provider "
                   "(RFC 7009, when it has a revocation endpoint), then remove the tokens "
                   "and any pending session from the store, whether or not revoking "
                   "worked. The client registration is kept, so 'login --key KEY' logs "
                   "in again without other flags (--all removes it too). Exit 0 when "
                   "done, 4 when revoking failed (removed locally all the same).")
    parser.command(sub, "token", _token, help="print a valid access token",
                   description="Print a valid access token for KEY on stdout, refreshing it "
                   "if needed, and nothing else: curl -H \"Authorization: Bearer "
                   "$(oauth-callback token KEY)\" ...")
    parser.command(sub, "tokens", _tokens,
                   help="list, show, delete and migrate stored tokens; make keys")
    parser.command(sub, "doctor", _doctor, help="check (and --repair) a file store",
                   description="Check a file store: modes and owners, parse state, backup, "
                   "stale temporary files, lock state, corrupt copies; and for an "
                   "encrypted store (?encryption=) of any backend, plaintext records and "
                   "records under another key. Exit 0 when healthy, "
                   "1 when problems were found.")
    parser.command(sub, "completion", _completion, shared=False,
                   help="print the shell completion script (bash, zsh, fish)",
                   description="Print the tab-completion script for SHELL (argcomplete). "
                   "bash: eval \"$(oauth-callback completion bash)\" in ~/.bashrc; "
                   "zsh: the same in ~/.zshrc; fish: oauth-callback completion fish | "
                   "source, in ~/.config/fish/config.fish.")
    parser.command(sub, "demo", _demo, help="run the whole flow against a mock provider",
                   description="Start an embedded mock OAuth provider and run login, token "
                   "and an expiry-driven refresh end to end, in a temporary store unless "
                   "--store is given.")
    return parser


def _exit_code(exc: OAuthCallbackError) -> int:
    if isinstance(exc, (ReauthRequired, ResourceAccessError)):
        return EXIT_LOGIN_REQUIRED
    if isinstance(exc, MissingCredentialsError):
        return EXIT_USAGE
    if isinstance(exc, (StoreError, EndpointError, DiscoveryError)):
        return EXIT_UNAVAILABLE
    if isinstance(exc, (CallbackError, OAuthError, IdTokenError, IssuerMismatchError)):
        return EXIT_AUTH_FAILED
    return EXIT_FAILURE


# Library advice (Python API terms) and what it means on the command line.
_CLI_TERMS = (
    ("Run FileStore.repair() or 'oauth-callback doctor --repair'",
     f"run '{PROG} doctor --repair'"),
    ("pass port=0 to pick a free port", "use --port 0 to pick a free port"),
    ("; use port=0)", "; use --port 0)"),
    (" (OAuthClient.login saves it) or pass client= to TokenManager", ""),
)


def _message(exc: OAuthCallbackError) -> str:
    text = str(exc)
    for python, cli in _CLI_TERMS:
        text = text.replace(python, cli)
    if isinstance(exc, ReauthRequired):
        text += f"; log in again: {PROG} login --key {exc.key}"
    return text


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt,
    so every ``finally`` runs (a login removes its session from the store)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_TERMINATING = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def _terminate(signum: int, frame: FrameType | None) -> None:
    for other in _TERMINATING:  # a second signal must not cut the clean-up short
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_end_like_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` while a command runs.

    Only where their disposition is the default: an ignored one (``nohup``
    ignores SIGHUP) stays ignored. Restored on exit (``main`` may run in-process).
    """
    previous: dict[int, Any] = {}
    try:
        for signum in _TERMINATING:
            if signal.getsignal(signum) is signal.SIG_DFL:
                previous[signum] = signal.signal(signum, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# The optional packages and the extras that install them (pyproject.toml).
_EXTRAS = {
    "keyring": "keyring",
    "redis": "redis",
    "cryptography": "encryption",
    "mcp": "mcp",
    "segno": "qr",
    "joserfc": "jwt",
    "requests": "requests",
}


def _missing_extra(exc: ImportError) -> str | None:
    """One line naming the extra to install, for an optional package that is missing;
    ``None`` for any other ImportError (a bug: shown with its traceback)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ImportError):
            text = str(seen)
            if "pip install 'oauth-callback[" in text:
                return text.splitlines()[0]
            top = (seen.name or "").partition(".")[0]
            if top in _EXTRAS:
                return (f"this needs the optional package {top!r}, which is not installed: "
                        f"pip install 'oauth-callback[{_EXTRAS[top]}]'")
        seen = seen.__cause__ or seen.__context__
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Without ``argv`` (how the ``oauth-callback`` script and ``python -m oauth_callback``
    call it: the process exits next) the command's end also freezes the garbage collector
    (:func:`gc.freeze`): the interpreter's shutdown then skips its last passes over every
    object the imports made, milliseconds on every run. Stores are closed and output is
    flushed before; ``atexit`` handlers still run; only objects in reference cycles are
    left to the process's exit instead of being finalized.
    """
    try:
        return _command(argv)
    finally:
        if argv is None:
            import gc

            gc.freeze()


def _command(argv: Sequence[str] | None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (cli.completion)
        from .completion import complete

        complete(build_parser())
    args = build_parser(complete=False).parse_args(argv)
    cancel = _logging_set_up(getattr(args, "verbose", 0) or 0)
    try:
        with _signals_end_like_ctrl_c():
            return _run(args)
    finally:
        cancel()


def _logging_set_up(verbosity: int) -> Callable[[], None]:
    """Set up the CLI's logging (:mod:`._logging`) now with ``-v``; without, just before
    the package first logs, so that a run that logs nothing never imports :mod:`logging`.
    Returns what cancels a set-up that has not happened (``main`` may run in-process)."""
    from .._log import when_used

    def setup() -> None:
        from ._logging import setup_logging

        setup_logging(verbosity)

    if verbosity > 0 or "logging" in sys.modules:
        setup()
        return lambda: None
    return when_used(setup)


def _run(args: argparse.Namespace) -> int:
    module_name, function_name = args.run
    try:
        module = import_module(f"{__package__}.{module_name}")
        func: Callable[[argparse.Namespace], int] = getattr(module, function_name)
        code = func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        print(f"\n{PROG}: terminated ({name})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ImportError as exc:
        line = _missing_extra(exc)
        if line is None:
            raise
        log.debug("command failed", exc_info=True)
        err(line)
        return EXIT_USAGE
    except CliError as exc:
        err(str(exc))
        return exc.code
    except OAuthCallbackError as exc:
        log.debug("command failed", exc_info=True)
        err(_message(exc))
        return _exit_code(exc)
    except BrokenPipeError:
        # The reader went away (``| head``): exit quietly, without a second error at exit.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except ValueError as exc:
        # Bad input the parser could not catch (an empty key, a malformed URL). Not
        # TypeError: that is a bug, and its traceback must show.
        log.debug("command failed", exc_info=True)
        err(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        log.debug("command failed", exc_info=True)
        err(f"[Errno {exc.errno}] {exc.strerror or exc}"
             + (f": {exc.filename}" if exc.filename else ""))
        return EXIT_UNAVAILABLE
    finally:
        while opened_stores:
            with contextlib.suppress(Exception):
                opened_stores.pop().close()
