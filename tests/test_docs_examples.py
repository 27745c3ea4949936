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
