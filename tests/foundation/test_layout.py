"""The layout is the architecture: services share only the core and the checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports") or str(
        Path(sys.executable).with_name("lint-imports")
    )
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_no_module_builds_a_pool_or_configures_logging_at_import() -> None:
    code = (
        "import logging, sys\n"
        "import sms_gateway.config, sms_gateway.settings, sms_gateway.db, sms_gateway.http\n"
        "import sms_gateway.logging, sms_gateway.telemetry, sms_gateway.redis\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
        "assert 'asyncpg.pool' not in {type(o).__module__ for o in globals().values()}\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
