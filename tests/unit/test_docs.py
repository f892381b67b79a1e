"""The documents stay true about the tests: every test file and test a document cites exists.

THREAT_MODEL.md names, per attack, the test that shows it fails; README.md and docs/ point at tests and test
data. A rename or a deleted test must update them, or this fails naming the document and the reference.
References look like ``tests/unit/contract/test_attacks.py::test_wrong_key`` or a bare
``test_attacks.py::name`` (resolved by file name when it is unique).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from tests.paths import REPO

_DOCUMENTS = sorted(
    [
        REPO / "README.md",
        REPO / "THREAT_MODEL.md",
        *(REPO / "docs").rglob("*.md"),
        *(REPO / "deploy").rglob("*.md"),
    ]
)
_PATH = re.compile(r"(?<![\w/.-])((?:tests/[\w/.-]*?)?test_\w+\.py)((?:::\w+)*)")


@cache
def _test_files() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in (REPO / "tests").rglob("test_*.py"):
        found.setdefault(path.name, []).append(path)
    return found


@cache
def _names(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    )


def _problems(document: Path) -> list[str]:
    problems = []
    for match in _PATH.finditer(document.read_text(encoding="utf-8")):
        reference, names = match.group(1), [n for n in match.group(2).split("::") if n]
        if reference.startswith("tests/"):
            path = REPO / reference
            candidates = [path] if path.is_file() else []
        else:
            candidates = _test_files().get(reference, [])
        if len(candidates) != 1:
            problems.append(
                f"{reference}: {'no such test file' if not candidates else 'ambiguous file name'}"
            )
            continue
        missing = [name for name in names if name not in _names(candidates[0])]
        if missing:
            problems.append(f"{reference}::{'::'.join(names)}: {', '.join(missing)} not found")
    return problems


def test_every_cited_test_exists() -> None:
    problems = {str(doc.relative_to(REPO)): _problems(doc) for doc in _DOCUMENTS}
    assert {doc: found for doc, found in problems.items() if found} == {}


def test_the_checker_sees_a_stale_reference(tmp_path: Path) -> None:
    stale = tmp_path / "stale.md"
    stale.write_text(
        "`tests/unit/test_gone.py` and `tests/unit/test_imports.py::test_no_such_test` and "
        "`test_imports.py::test_imports_point_down`\n",
        encoding="utf-8",
    )
    assert _problems(stale) == [
        "tests/unit/test_gone.py: no such test file",
        "tests/unit/test_imports.py::test_no_such_test: test_no_such_test not found",
    ]
