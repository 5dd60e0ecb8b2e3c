"""pipeline/ is a library with no UI imports, laid out in layers that only import downwards
(import-linter)."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def test_import_linter_contract_is_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    result = subprocess.run([lint], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "pipeline is a library with no UI imports KEPT" in result.stdout
    assert "pipeline's layers: each imports only the layers below it KEPT" in result.stdout
    assert "0 broken" in result.stdout
