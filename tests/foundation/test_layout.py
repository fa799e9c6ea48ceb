"""The layout is the architecture: services share only the core and the checks."""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports") or str(
        Path(sys.executable).with_name("lint-imports")
    )
    result = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken." in result.stdout


# Imports every module named on its command line, then fails (exit 1, naming the culprit) if
# one of them made a pool, a connection or a Redis client at import time, or configured logging
# or a tracer provider: tests and workers build their own (docs/architecture.md, "Shared core").
IMPORT_CHECK = """
import importlib, logging, sys
import asyncpg, asyncpg.pool, redis, redis.asyncio
from opentelemetry import trace

FORBIDDEN = (asyncpg.pool.Pool, asyncpg.Connection, redis.Redis, redis.asyncio.Redis)
names = sys.argv[1:]
for name in names:
    importlib.import_module(name)
problems = []
for name in names:
    for attribute, value in vars(sys.modules[name]).items():
        if isinstance(value, FORBIDDEN):
            problems.append(f"{name}.{attribute} is a {type(value).__name__} made at import")
if logging.getLogger().handlers:
    problems.append(f"logging configured at import: {logging.getLogger().handlers}")
if type(trace.get_tracer_provider()).__name__ != "ProxyTracerProvider":
    problems.append("a tracer provider was set at import")
if problems:
    sys.exit("\\n".join(problems))
"""


def runtime_modules() -> list[str]:
    """Every module of the three packages, entry points included."""
    names = []
    for package in ("sms_gateway", "services", "checks"):
        module = importlib.import_module(package)
        names.append(package)
        names += [
            info.name for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}.")
        ]
    return names


def check_imports(names: list[str], *, path: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK, *names],
        cwd=path,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{ROOT}"},
    )


def test_no_module_builds_a_pool_or_configures_logging_at_import() -> None:
    names = runtime_modules()
    assert {"sms_gateway.db", "services.receiver.api", "checks.mobile"} <= set(names)
    result = check_imports(names)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("import asyncpg\npool = asyncpg.create_pool('postgresql://nowhere/x')\n", "Pool"),
        ("import redis.asyncio\nclient = redis.asyncio.Redis()\n", "Redis"),
        ("import logging\nlogging.basicConfig()\n", "logging configured"),
    ],
)
def test_the_import_check_catches_what_it_looks_for(
    tmp_path: Path, body: str, problem: str
) -> None:
    """The check above can fail: a module that does at import what it must not is caught."""
    (tmp_path / "planted.py").write_text(body)
    result = check_imports(["sms_gateway.db", "planted"], path=tmp_path)
    assert result.returncode == 1
    assert problem in result.stderr
