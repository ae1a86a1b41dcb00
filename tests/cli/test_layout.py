"""The CLI's structure: one module per verb group, no import cycle, short functions, one atomic writer,
and a `midtrain` import that stays light (the browsing commands must start fast)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "midtrain"
CLI = PACKAGE / "cli"
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or (
        PACKAGE.parent / relative / "__init__.py"
    ).is_file()


def cli_imports(path: Path) -> set[str]:
    """The midtrain.cli modules `path` imports, anywhere in it (a function-level import counts too).

    `from P import x` takes x from P's namespace, so it imports P; and the submodule P.x too when
    there is one (`from midtrain.cli import app` outside `midtrain/cli/__init__.py` gets the app
    object that `__init__` holds, not the module).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("midtrain.cli"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("midtrain.cli")
            and node.level == 0
        ):
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}" for alias in node.names if is_module(f"{node.module}.{alias.name}")
            )
    return found


def test_no_module_imports_from_a_module_that_imports_it() -> None:
    graph = {module_name(path): cli_imports(path) - {module_name(path)} for path in CLI.rglob("*.py")}
    cycles = [(a, b) for a, targets in graph.items() for b in targets if a in graph.get(b, set())]
    assert not cycles, f"mutual imports: {cycles}"
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:  # no longer cycle either
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", " -> ".join([*trail, name])
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            visit(target, [*trail, name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_command_modules_take_nothing_from_the_package_init() -> None:
    """`midtrain.cli` imports the command modules; they import app.py (or each other), never `midtrain.cli`'s own names."""
    for path in CLI.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        assert "midtrain.cli" not in cli_imports(path) - {module_name(path)}, (
            f"{path} imports names from midtrain/cli/__init__.py"
        )


def test_every_command_module_registers_explicitly() -> None:
    """Commands are added by register(app), not by decorators on an app imported from elsewhere."""
    for path in [*CLI.glob("*.py"), *CLI.glob("*/*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        decorators = [
            ast.unparse(d) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for d in node.decorator_list
        ]
        registering = [d for d in decorators if ".command(" in d or ".callback(" in d]
        assert not registering or (path.name == "app.py" and registering == ["app.callback()"]), (path, registering)
        if "guarded" in decorators or (path.name == "__init__.py" and path.parent != CLI):
            assert any(isinstance(n, ast.FunctionDef) and n.name == "register" for n in tree.body), (
                f"{path} has no register(app)"
            )


def test_functions_are_at_most_80_lines() -> None:
    """Every function in the package, decorators and docstring included."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(
                        f"{path.relative_to(PACKAGE.parent)}:{start} {node.name} ({node.end_lineno - start + 1} lines)"
                    )
    assert not long, long


def test_one_atomic_writer() -> None:
    """Every file midtrain writes goes through midtrain.io (atomic_writer, write_text, atomic_dir)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "io.py":
            continue
        text = path.read_text(encoding="utf-8")
        for needle in ("mkstemp", "mkdtemp", "os.replace(", "NamedTemporaryFile"):
            if needle in text:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {needle}")
    assert not offenders, offenders


def test_importing_the_cli_stays_light() -> None:
    """`midtrain --help` and every command's start-up pay only for typer: no schema, no YAML, no rich tables."""
    code = "import sys, midtrain.cli; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    heavy = {
        "torch",
        "transformers",
        "datasets",
        "dvc",
        "numpy",
        "pydantic",
        "yaml",
        "midtrain.schema",
        "midtrain.catalog",
        "rich.table",
    }
    assert not loaded & heavy, loaded & heavy
