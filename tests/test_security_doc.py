"""docs/security.md names, for every boundary, the test that attacks it: each named test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs/security.md"


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_test_the_security_doc_names_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = []
    named = 0
    current: str | None = None  # `::name` on a continuation line belongs to the last file named
    for line in text.splitlines():
        files = re.findall(r"tests/(test_\w+\.py)", line)
        for match in re.finditer(r"(?:tests/(test_\w+\.py))?::(test_\w+)", line):
            current = match.group(1) or current
            named += 1
            if current is None or match.group(2) not in _functions(REPO / "tests" / current):
                missing.append(f"{current}::{match.group(2)}")
        for name in files:
            if not (REPO / "tests" / name).exists():
                missing.append(name)
    assert named > 20
    assert not missing, missing


def test_the_readme_lists_the_security_doc() -> None:
    assert "(docs/security.md)" in (REPO / "README.md").read_text(encoding="utf-8")
