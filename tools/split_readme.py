"""One-off: move the long README's sections into docs/ pages, rewriting links.

    python tools/split_readme.py README.md

Writes the generated guide pages (each: a header from PAGES, then the README
sections mapped to it, headings lifted one level) and prints what it moved.
Links to README anchors become links to the page that now holds the heading.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# README heading (## or ###) -> docs page; a ### inherits its ## page unless listed.
SECTIONS = {
    "Store tokens": "guides/stores.md",
    "Encryption at rest": "guides/encryption.md",
    "Guarantees": "guarantees.md",
    "File format": "reference/format.md",
    "Capture an authorization code": "guides/loopback.md",
    "What another local user can and cannot do": "security.md",
    "Log in and get tokens": "guides/login.md",
    "Use the tokens": "guides/tokens.md",
    "Command line": "guides/cli.md",
    "Non-loopback hosts (containers)": "guides/loopback.md",
    "Exit status": "reference/errors.md",
    "MCP": "guides/mcp.md",
    "Environment variables": "reference/environment.md",
    "Errors": "reference/errors.md",
    "Architecture": "reference/architecture.md",
    "Performance": "reference/performance.md",
    "Dependencies": "reference/development.md",
    "Development": "reference/development.md",
    "License": None,
}

PAGES = {
    "guides/stores.md": "# Stores and choosing one\n",
    "guides/encryption.md": "# Encryption at rest\n",
    "guarantees.md": (
        "# Guarantees\n\n"
        "What oauth-callback promises, stated as precisely as we can test it: a token "
        "written is never lost, never torn, never readable by another user, and never "
        "refreshed twice. Each statement below names the test that checks it.\n"
    ),
    "reference/format.md": "# File format\n",
    "guides/loopback.md": "# Capturing an authorization code (loopback)\n",
    "security.md": None,  # hand-written page; the moved section is appended
    "guides/login.md": "# Logging in\n",
    "guides/tokens.md": "# Using the tokens\n",
    "guides/cli.md": "# The command line\n\nThe full, generated reference of every command and option is [here](../reference/cli.md).\n",
    "guides/mcp.md": "# MCP clients\n",
    "reference/environment.md": "# Environment variables\n",
    "reference/errors.md": None,
    "reference/architecture.md": "# Architecture\n",
    "reference/performance.md": None,
    "reference/development.md": "# Dependencies and development\n",
}


def sections(text: str) -> list[tuple[int, str, str]]:
    """(level, title, body) for every ## and ### section, outside code fences."""
    out: list[tuple[int, str, list[str]]] = []
    fence = False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^(##|###) (.+?)\s*$", line)
        if m:
            out.append((len(m.group(1)), m.group(2), []))
        elif out:
            out[-1][2].append(line)
    return [(lvl, title, "".join(body)) for lvl, title, body in out]


def plain(title: str) -> str:
    return re.sub(r"`", "", title)


def main() -> None:
    readme = Path(sys.argv[1]).read_text(encoding="utf-8")
    secs = sections(readme)
    placement: list[tuple[str, int, str, str]] = []
    page = None
    for level, title, body in secs:
        key = plain(title)
        if key in SECTIONS:
            page = SECTIONS[key]
        elif level == 2:
            raise SystemExit(f"unmapped README section: ## {title}")
        if page is None:
            continue
        placement.append((page, level, title, body))
    # heading slug -> page
    where: dict[str, str] = {}
    for page, _level, title, _body in placement:
        where.setdefault(slugify(plain(title), "-"), page)

    def fix_links(body: str, page: str) -> str:
        here = (DOCS / page).parent

        def anchor(m: re.Match[str]) -> str:
            slug = m.group(2)
            target = where.get(slug)
            if target is None:
                return m.group(0)
            if target == page:
                return f"]({'#' + slug})"
            rel = os.path.relpath(DOCS / target, here)
            return f"]({rel}#{slug})"

        body = re.sub(r"\]\((#)([^)\s]+)\)", anchor, body)

        def docs_link(m: re.Match[str]) -> str:
            rel = os.path.relpath(DOCS / m.group(1), here)
            return f"]({rel}{m.group(2) or ''})"

        body = re.sub(r"\]\(docs/([^)#\s]+)(#[^)\s]+)?\)", docs_link, body)

        def repo_link(m: re.Match[str]) -> str:  # files of the repository, not of the site
            return f"]({m.group(1)})" if m.group(1).startswith("http") else f"`{m.group(1)}`]"

        return body

    out: dict[str, list[str]] = {}
    first_level: dict[str, int] = {}
    for page, level, title, body in placement:
        base = first_level.setdefault(page, level)
        depth = max(2, level - base + 2)
        header = PAGES.get(page) or ""
        heading = f"{'#' * depth} {title}\n"
        if not out.get(page) and header and plain(title).lower() in header.lower():
            heading = ""  # the page's own title already says it
        out.setdefault(page, []).append(heading + fix_links(body, page))
    for page, parts in out.items():
        path = DOCS / page
        header = PAGES.get(page)
        if header is None:  # a hand-written page: replace only the moved part
            existing = path.read_text(encoding="utf-8") if path.exists() else f"# {page}\n"
            marker = "\n<!-- moved from the README -->\n"
            existing = existing.split(marker)[0]
            text = existing.rstrip("\n") + "\n" + marker + "\n" + "\n".join(parts)
        else:
            text = header + "\n" + "\n".join(parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")
        print(f"{page}: {len(parts)} section(s)")


if __name__ == "__main__":
    main()
