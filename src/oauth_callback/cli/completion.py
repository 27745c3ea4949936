"""``oauth-callback completion SHELL``: tab completion for bash, zsh and fish (argcomplete).

The script a shell sources calls ``oauth-callback`` itself with ``_ARGCOMPLETE``
set; :func:`complete` then answers from the real parser (commands, options,
choices) and exits, so completion never drifts from the parser.
"""

from __future__ import annotations

import argparse
import sys

from ._common import EXIT_OK, EXIT_UNAVAILABLE, PROG, CliError

__all__ = ["cmd_completion", "complete"]


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer a shell's completion request (exits) when ``_ARGCOMPLETE`` is set."""
    try:
        import argcomplete
    except ImportError:  # pragma: no cover - a core dependency
        return
    argcomplete.autocomplete(parser)


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the completion script of ``args.shell`` for the ``oauth-callback`` command."""
    try:
        from argcomplete.shell_integration import shellcode
    except ImportError:  # pragma: no cover - a core dependency
        raise CliError("shell completion needs argcomplete: pip install argcomplete",
                       EXIT_UNAVAILABLE) from None
    sys.stdout.write(shellcode([PROG], shell=args.shell))
    return EXIT_OK
