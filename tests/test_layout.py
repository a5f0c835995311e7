"""The package's layout, read with ``ast`` (nothing is imported): imports go one way and never in a circle, imports
sit at the top of a module unless made lazy on purpose (with a comment saying so), and modules and functions stay
small enough to read.

The rooms, highest first; a module may import its own room, a room beside it and those below it, never one above.
The top-level modules (``helpers/*.py``) import no room at all; ``helpers/__main__.py`` is the entry point and may
import any.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "helpers"
# highest first; rooms on one level sit beside each other
LEVELS = (("cli",), ("course", "grading"), ("sections",), ("reporting",), ("engine",), ("models",), ("data",))
ROOMS = tuple(r for level in LEVELS for r in level)
ORDER = " > ".join("/".join(level) for level in LEVELS)
ENTRY_POINTS = ("helpers.__main__",)
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# the training loop reads top to bottom in one function
LONG_FUNCTIONS = {("helpers/engine/training.py", "_fit")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in MODULES.items()}


def where(name: str, line: int | None = None) -> str:
    rel = MODULES[name].relative_to(PACKAGE.parent).as_posix()
    return f"{rel}:{line}" if line else rel


def resolve(name: str) -> str | None:
    """The package module ``name`` lands in (``helpers.engine.config.Config`` -> ``helpers.engine.config``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package modules one import statement of ``module`` reads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        # `from helpers.sections import mlp` reads helpers.sections.mlp; `from helpers.cache import X` reads cache
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    return sorted({m for m in map(resolve, names) if m and m.startswith("helpers") and m != module})


def function_imports(tree: ast.AST) -> dict[int, ast.AST]:
    """Import statements inside a function (or a method), by line."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    found[sub.lineno] = sub
    return found


def type_checking_only(tree: ast.AST) -> set[int]:
    """Lines of the imports under ``if TYPE_CHECKING:``, which never run (a type named in an annotation only)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {sub.lineno for stmt in node.body for sub in ast.walk(stmt)
                      if isinstance(sub, (ast.Import, ast.ImportFrom))}
    return lines


def arrows() -> list[tuple[str, str, int]]:
    """Every (importer, imported, line) in the package, top-level and function-level imports alike (those for type
    checking only aside)."""
    out = []
    for module, tree in TREES.items():
        skip = type_checking_only(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in skip:
                out += [(module, target, node.lineno) for target in imported(module, node)]
    return out


def room(module: str) -> str | None:
    """``engine`` for ``helpers.engine.config``; None for a top-level module (``helpers.cache``)."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and MODULES[module].name == "__init__.py"):
        return parts[1]
    return None


def rank(module: str) -> int:
    """0 for the top-level modules, then each room upwards (``data`` 1 ... ``cli``)."""
    r = room(module)
    return 0 if r is None else len(LEVELS) - next(i for i, level in enumerate(LEVELS) if r in level)


def test_every_room_has_its_place_in_the_order():
    unknown = sorted({f"{room(m)} ({where(m)})" for m in MODULES if room(m) and room(m) not in ROOMS})
    assert not unknown, f"rooms not in the order {ORDER} of tests/test_layout.py: {', '.join(unknown)}"


def test_imports_never_go_up():
    bad = [f"{where(a, line)}: {a} -> {b} ({room(b) or 'top level'} is above {room(a) or 'the top-level modules'})"
           for a, b, line in arrows()
           if a not in ENTRY_POINTS and room(b) in ROOMS and (room(a) in ROOMS or room(a) is None)
           and rank(b) > rank(a)]
    assert not bad, f"imports that go up the order {ORDER} > top-level modules:\n" + "\n".join(bad)


def test_no_import_circles():
    graph: dict[str, dict[str, int]] = {}
    for a, b, line in arrows():
        graph.setdefault(a, {}).setdefault(b, line)
    circles, done = [], set()

    def visit(node: str, path: list[str], on_path: set[str]):
        for nxt in sorted(graph.get(node, {})):
            if nxt in on_path:
                cycle = path[path.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in done:
                    done.add(key)
                    circles.append(" -> ".join(f"{m} ({where(m, graph[m][n])})" for m, n in zip(cycle, cycle[1:]))
                                   + f" -> {nxt}")
            elif nxt not in finished:
                on_path.add(nxt)
                visit(nxt, path + [nxt], on_path)
                on_path.discard(nxt)
        finished.add(node)

    finished: set[str] = set()
    for start in sorted(graph):
        if start not in finished:
            visit(start, [start], {start})
    assert not circles, "import circles (each arrow at the importing line):\n" + "\n".join(circles)


def test_imports_inside_functions_say_why():
    bad = []
    for module, tree in TREES.items():
        lines = MODULES[module].read_text(encoding="utf-8").splitlines()
        for line, node in sorted(function_imports(tree).items()):
            # one comment serves a block of lazy imports: it sits on a line of the block or just above it
            first = line
            while first > 1 and lines[first - 2].strip().startswith(("import ", "from ")):
                first -= 1
            block = lines[first - 1:node.end_lineno]
            above = lines[first - 2].strip() if first > 1 else ""
            if not any("#" in text for text in block) and not above.startswith("#"):
                bad.append(f"{where(module, line)}: {lines[line - 1].strip()}")
    assert not bad, ("imports inside a function without a comment saying why (move them to the top of the module, "
                     "or say on the line, or the line above the block of imports, why they are lazy):\n"
                     + "\n".join(bad))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    count = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert count <= MAX_MODULE_LINES, f"{where(module)}: {count} lines (at most {MAX_MODULE_LINES}); split it by concern"


def test_functions_stay_short():
    bad = []
    for module, tree in TREES.items():
        rel = where(module)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and (rel, node.name) not in LONG_FUNCTIONS:
                    bad.append(f"{where(module, node.lineno)}: {node.name} has {length} lines")
    assert not bad, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(bad)


# --- the notebooks read like a report: after the parameters cell, calls and presentation only -----------------------

NOTEBOOKS = sorted((PACKAGE.parent / "notebooks").glob("*.ipynb"))
MAX_NOTEBOOK_CODE_LINES = 80


def code_after_parameters(path: Path) -> list[str]:
    """The code lines (blank lines and comments aside) of the cells after the notebook's tagged parameters cell."""
    import json  # only these tests read notebooks

    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    start = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    sources = ["".join(c["source"]) for c in cells[start + 1:] if c["cell_type"] == "code"]
    return [line for src in sources for line in src.splitlines() if line.strip() and not line.strip().startswith("#")]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_hold_only_calls_and_presentation(notebook):
    lines = code_after_parameters(notebook)
    assert len(NOTEBOOKS) == 4
    assert len(lines) <= MAX_NOTEBOOK_CODE_LINES, f"{notebook.name}: {len(lines)} code lines after the parameters cell"
    defined = [line for line in lines if line.lstrip().startswith(("def ", "class ", "for ", "while ", "with "))]
    assert not defined, f"{notebook.name} defines or loops where helpers should: {defined}"
