"""MkDocs hook: the command-line reference is generated from the argparse parser.

``<!-- cli-reference -->`` in a page is replaced by every command's usage and
options, read from :func:`oauth_callback.cli` 's parser at build time, so the
reference cannot drift from the code.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

MARKER = "<!-- cli-reference -->"


def _parser() -> argparse.ArgumentParser:
    for module in ("oauth_callback.cli", "oauth_callback.cli._parser", "oauth_callback.cli.main"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        build = getattr(mod, "build_parser", None)
        if build is not None:
            return build()  # type: ignore[no-any-return]
    raise RuntimeError("no build_parser() found in oauth_callback.cli")


def _walk(parser: argparse.ArgumentParser, name: str, out: list[str], level: int) -> None:
    parser.prog = name
    out.append(f"{'#' * level} `{name}`\n")
    if parser.description:
        out.append(parser.description.strip() + "\n")
    out.append("```text\n" + parser.format_help().rstrip() + "\n```\n")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                _walk(sub, f"{name} {sub_name}", out, min(level + 1, 4))


def render() -> str:
    out: list[str] = []
    _walk(_parser(), "oauth-callback", out, 2)
    return "\n".join(out)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, render())
    return markdown
