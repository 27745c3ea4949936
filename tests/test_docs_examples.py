"""Every Python example in the README and the docs runs as pasted.

Each fenced ```` ```python ```` block of ``README.md`` and ``docs/**/*.md`` is
written to a script and run in a fresh interpreter, in an empty temporary
directory with a temporary ``HOME`` (so the default store is a new one), and
must exit 0. A block that cannot run here (a real GitHub login, Windows, a
desktop keychain) starts with ``# needs: <what>``: it is only compiled, and such
blocks stay the exception (a quarter of all blocks at most).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.MULTILINE | re.DOTALL)
NEEDS = re.compile(r"^# needs: \S")


def markdown_files() -> list[Path]:
    files = [ROOT / "README.md"]
    docs = ROOT / "docs"
    if docs.is_dir():
        files += sorted(docs.rglob("*.md"))
    return files


def python_blocks() -> list[tuple[str, str]]:
    """(``file:line``, code) of every ```python block."""
    blocks = []
    for path in markdown_files():
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            lang = m.group("info").strip().split(" ")[0].lower()
            if lang not in ("python", "py"):
                continue
            indent = len(m.group("indent"))
            body = "\n".join(line[indent:] for line in m.group("body").splitlines())
            line = text.count("\n", 0, m.start()) + 1
            blocks.append((f"{path.relative_to(ROOT)}:{line}", body + "\n"))
    return blocks


BLOCKS = python_blocks()
RUNNABLE = [(where, code) for where, code in BLOCKS if not NEEDS.match(code)]
MARKED = [(where, code) for where, code in BLOCKS if NEEDS.match(code)]


def test_examples_exist_and_few_are_marked() -> None:
    assert len(BLOCKS) >= 10, "the docs should show the library with examples"
    assert len(MARKED) * 4 <= len(BLOCKS), (
        f"{len(MARKED)} of {len(BLOCKS)} examples are marked '# needs:'; at most a quarter may be"
    )


def test_marked_examples_compile() -> None:
    """A ``# needs:`` block is not run here, but it must at least be valid Python."""
    for where, code in MARKED:
        compile(code, where, "exec")


@pytest.mark.parametrize(("where", "code"), RUNNABLE, ids=[w for w, _ in RUNNABLE])
def test_example_runs(where: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTH_CALLBACK_")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT / "src"), PYTHONDONTWRITEBYTECODE="1",
               OAUTH_CALLBACK_NO_BROWSER="1")
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (
        f"{where} exited {proc.returncode}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    )


# --------------------------------------------------------------------------- shell examples

SHELL_LANGS = ("console", "sh", "bash", "shell")
LOCAL_COMMANDS = ("demo", "doctor", "status", "completion", "tokens list", "tokens keygen")


def cli_lines() -> list[tuple[str, str]]:
    """(``file:line``, command) of every ``oauth-callback ...`` command in a shell block."""
    out = []
    for path in markdown_files():
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group("info").strip().split(" ")[0].lower() not in SHELL_LANGS:
                continue
            start = text.count("\n", 0, m.start()) + 2
            for offset, line in enumerate(m.group("body").splitlines()):
                command = line.strip().removeprefix("$ ")
                if command.startswith("oauth-callback "):
                    for sep in (" #", " | ", " && ", " ||", " >", " 2>"):
                        command = command.split(sep)[0]
                    command = command.strip().removesuffix("&&").removesuffix("\\").strip()
                    out.append((f"{path.relative_to(ROOT)}:{start + offset}", command))
    return out


CLI_LINES = cli_lines()


def test_every_documented_command_parses() -> None:
    """Every ``oauth-callback`` command shown in the docs is accepted by the real parser."""
    import shlex

    from oauth_callback.cli._main import build_parser

    assert len(CLI_LINES) >= 10
    for where, command in CLI_LINES:
        argv = shlex.split(command.replace("$OAUTH_CALLBACK_STORE", "file:/tmp/x.json"))[1:]
        try:
            build_parser().parse_args(argv)
        except SystemExit as exc:
            raise AssertionError(f"{where}: {command!r} is not a valid command") from exc


@pytest.mark.parametrize(
    ("where", "command"),
    [(w, c) for w, c in CLI_LINES if c.removeprefix("oauth-callback ").startswith(LOCAL_COMMANDS)],
    ids=lambda v: v if ":" in str(v) else None,
)
def test_local_command_runs(where: str, command: str, tmp_path: Path) -> None:
    """The documented commands that need no provider run, in a fresh HOME, without a usage
    error or a traceback."""
    import shlex

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OAUTH_CALLBACK_")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT / "src"))
    env.pop("DISPLAY", None)
    argv = shlex.split(command.replace("~", str(home)))[1:]
    if argv[:1] == ["demo"]:
        argv.append("--no-browser")
    proc = subprocess.run([sys.executable, "-m", "oauth_callback", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode != 2, f"{where}: usage error\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, f"{where}\n{proc.stderr[-3000:]}"
    if argv[:1] in (["demo"], ["completion"]) or argv[:2] == ["tokens", "keygen"]:
        assert proc.returncode == 0, f"{where}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
