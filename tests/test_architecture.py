"""The README's module map is the code's: each module imports only layers above its own.

The map is the ``text`` block under "Architecture, at a glance" in README.md; a row is a
layer, its words are modules (``storage/{a,b}`` is a package and its modules, ``mcp/`` a
whole package, ``...`` the package's other modules). Every ``import`` statement of the
package counts, those inside functions too (a lazy import is still a dependency); only
imports under ``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "oauth_callback"
# Start-up helpers that every layer may use; they import nothing of the package.
HELPERS = {"_lazy", "_log", "_value"}


def _layers() -> list[tuple[str, list[str]]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture, at a glance", 1)[1]
    block = re.search(r"```text\n(.*?)```", section, re.S)
    assert block, "README: no text block under 'Architecture, at a glance'"
    layers = []
    for line in block.group(1).splitlines():
        name, *words = re.split(r"\s{2,}", line.strip())
        layers.append((name, words))
    return layers


def _module_patterns(word: str) -> list[str]:
    """``storage/{base,file,...}`` -> ``storage``, ``storage.base``, ``storage.*``."""
    token = re.sub(r"\s*\(.*\)$", "", word).strip()
    names: list[str] = []
    if token:
        match = re.fullmatch(r"(\w+)/\{(.*)\}", token)
        if match:
            package, members = match.groups()
            names.append(package)
            for member in members.split(","):
                names.append(f"{package}.*" if member == "..." else f"{package}.{member}")
        elif token.endswith("/"):
            names += [token[:-1], f"{token[:-1]}.*"]
        elif re.fullmatch(r"\w+", token):
            names.append(token)
    return names


def _layer_of() -> dict[str, int]:
    table: dict[str, int] = {}
    for index, (_, words) in enumerate(_layers()):
        for word in words:
            for name in _module_patterns(word):
                table[name] = index
    return table


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _find(table: dict[str, int], module: str) -> int | None:
    if module in table:
        return table[module]
    package = module.rpartition(".")[0]
    while package:
        if f"{package}.*" in table:
            return table[f"{package}.*"]
        package = package.rpartition(".")[0]
    return None


def _exists(module: str) -> bool:
    path = PACKAGE.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or path.is_dir()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """The package modules ``path`` imports at run time (relative and absolute)."""
    here = _module_name(path).split(".") if _module_name(path) else []
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("oauth_callback"):
                target = node.module.removeprefix("oauth_callback").lstrip(".")
            else:
                target = None
            if target is not None:
                names = [a.name for a in node.names]
                submodules = [m for n in names if _exists(m := f"{target}.{n}".lstrip("."))]
                found.update(submodules or [target])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("oauth_callback."):
                    found.add(alias.name.removeprefix("oauth_callback."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name}


def test_every_module_is_on_the_map() -> None:
    table = _layer_of()
    missing = sorted(
        name for path in PACKAGE.rglob("*.py")
        if (name := _module_name(path)) and not name.startswith("_") and "._" not in name
        and name not in {"cli.__main__", "__main__"} and _find(table, name) is None
    )
    assert not missing, f"modules the README's map does not place: {missing}"


def test_each_module_imports_only_layers_above_its_own() -> None:
    table = _layer_of()
    layers = _layers()
    breaks = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        own = _find(table, module)
        if own is None:
            continue
        for imported in sorted(_imports(path)):
            if imported.split(".")[-1] in HELPERS or imported in HELPERS:
                continue
            other = _find(table, imported)
            if other is not None and other > own:
                breaks.append(f"{module} ({layers[own][0]}) imports {imported} ({layers[other][0]})")
    assert not breaks, "imports against the README's map:\n" + "\n".join(breaks)


def test_storage_imports_only_values_and_errors() -> None:
    table = _layer_of()
    breaks = [
        f"{_module_name(path)} imports {imported}"
        for path in sorted((PACKAGE / "storage").rglob("*.py"))
        for imported in _imports(path)
        if imported.split(".")[-1] not in HELPERS and not imported.startswith("storage")
        and _find(table, imported) not in (0, None) and imported not in {"fs", "locking"}
    ]
    assert not breaks, breaks
