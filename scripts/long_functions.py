"""List the functions longer than a limit: `python scripts/long_functions.py [--limit N] PATH...`.

A function's length runs from its `def` line to the last line of its body, docstring included
(decorators not). Folders are searched for `.py` files. Prints `path:line name length` for each
offender, longest first, and exits 1 when there is any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def functions(path: Path) -> list[tuple[int, int, str]]:
    """(length, line, qualified name) of every function and method in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                found.append((length, child.lineno, name))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--limit", type=int, default=60, help="the most lines allowed (60)")
    args = parser.parse_args(argv)
    files = sorted(
        file for path in args.paths for file in (path.rglob("*.py") if path.is_dir() else [path])
    )
    offenders = [
        (length, f"{file}:{line}", name)
        for file in files
        for length, line, name in functions(file)
        if length > args.limit
    ]
    for length, where, name in sorted(offenders, reverse=True):
        print(f"{where} {name} {length}")
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main())
