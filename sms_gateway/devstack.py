"""`sms-stack`: the whole gateway on one machine, without Docker.

It needs PostgreSQL running (reached over a direct superuser connection) and the pgbouncer and
redis-server programs installed. `up` runs the production bootstrap (`sms_gateway.bootstrap`:
roles, database, migrations, settings, pgbouncer's auth file), starts pgbouncer and Redis of its
own (or RELOADs a running pgbouncer whose auth file changed), then the receiver, validator and
admin services, and waits until each answers `/ready`; a second `up` changes nothing. `down`
stops what `up` started. `test` brings up the infrastructure on its own ports, runs pytest
against it (the whole suite with its coverage floor when given no arguments) and takes it down
again.

A development tool, not part of what runs in production: an import contract in pyproject.toml
keeps the services, the migrator and the bootstrap from importing it.

Everything is set by environment variables with development defaults (see `StackConfig`), so
that several stacks can run side by side, each in its own state directory with its own ports
and database. Stacks on one PostgreSQL cluster share the service roles (roles are cluster-wide).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

from sms_gateway.bootstrap import OWNER, SERVICE_ROLE_NAMES, Bootstrap

ROOT: Final = Path(__file__).resolve().parents[1]
SERVICES: Final = ("receiver", "validator", "admin")
# pgbouncer's pool when no database says otherwise (the pgbouncer_pool_size default).
DEFAULT_POOL_SIZE: Final = 10


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SMSGW_{name}", default)


@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and what it is called; every field has an SMSGW_* variable."""

    state_dir: Path = field(default_factory=lambda: Path(_env("STACK_DIR", ".stack")).resolve())
    pg_admin_url: str = field(
        default_factory=lambda: _env(
            "PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        )
    )
    db_name: str = field(default_factory=lambda: _env("DB_NAME", "sms_gateway"))
    pgbouncer_port: int = field(default_factory=lambda: int(_env("PGBOUNCER_PORT", "6432")))
    redis_port: int = field(default_factory=lambda: int(_env("REDIS_PORT", "6380")))
    receiver_port: int = field(default_factory=lambda: int(_env("RECEIVER_PORT", "8080")))
    validator_port: int = field(default_factory=lambda: int(_env("VALIDATOR_PORT", "8081")))
    admin_port: int = field(default_factory=lambda: int(_env("ADMIN_PORT", "8082")))
    owner_password: str = field(default_factory=lambda: _env("OWNER_PASSWORD", "dev-only-owner"))
    role_password: str = field(
        default_factory=lambda: _env("SERVICE_DB_PASSWORD", "dev-only-service")
    )
    redis_password: str = field(default_factory=lambda: _env("REDIS_PASSWORD", "dev-only-redis"))
    admin_tokens: str = field(
        default_factory=lambda: _env("ADMIN_TOKENS", "operator:dev-only-admin-token")
    )
    otlp_endpoint: str = field(default_factory=lambda: _env("OTLP_ENDPOINT", ""))

    @property
    def pg_host(self) -> str:
        return urlsplit(self.pg_admin_url).hostname or "127.0.0.1"

    @property
    def pg_port(self) -> int:
        return urlsplit(self.pg_admin_url).port or 5432

    def admin_url_for(self, database: str) -> str:
        """The superuser URL, pointed at another database."""
        parts = urlsplit(self.pg_admin_url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    def direct_url(self, role: str, password: str, database: str) -> str:
        return (
            f"postgresql://{role}:{quote(password, safe='')}@{self.pg_host}:{self.pg_port}"
            f"/{database}"
        )

    def pooled_url(self, role: str, database: str) -> str:
        """A service role's URL through pgbouncer."""
        return (
            f"postgresql://{role}:{quote(self.role_password, safe='')}@127.0.0.1:"
            f"{self.pgbouncer_port}/{database}"
        )

    def service_env(self, service: str) -> dict[str, str]:
        port = {
            "receiver": self.receiver_port,
            "validator": self.validator_port,
            "admin": self.admin_port,
        }[service]
        env = {
            "SMSGW_ENVIRONMENT": "development",
            "SMSGW_DATABASE_URL": self.pooled_url(f"sms_{service}", self.db_name),
            "SMSGW_REDIS_PASSWORD": self.redis_password,
            "SMSGW_HTTP_PORT": str(port),
            "SMSGW_LOG_FORMAT": "text",
            "SMSGW_ADMIN_TOKENS": self.admin_tokens,
        }
        if self.otlp_endpoint:
            env["SMSGW_OTLP_ENDPOINT"] = self.otlp_endpoint
        if service == "validator":
            # Days dropped by retention are archived under the stack's directory, unless the
            # environment says where (an empty value: no archive).
            env["SMSGW_ARCHIVE_DIR"] = os.environ.get("SMSGW_ARCHIVE_DIR", str(self.archive_dir))
        return env

    @property
    def archive_dir(self) -> Path:
        return self.state_dir / "archive"


# ------------------------------------------------------------------ database


def bootstrap_steps(config: StackConfig) -> Bootstrap:
    """The production bootstrap (`sms-bootstrap`), as the stack's superuser."""
    return Bootstrap(config.pg_admin_url)


def passwords(config: StackConfig) -> dict[str, str]:
    """The stack's passwords: one for the owner, one shared by the service roles."""
    return {OWNER.name: config.owner_password} | dict.fromkeys(
        SERVICE_ROLE_NAMES, config.role_password
    )


async def bootstrap_database(config: StackConfig, *, database: bool) -> tuple[int, bool]:
    """The roles (and with `database`, the stack's database, its migrations and the settings
    that point it at the stack's Redis), then pgbouncer's auth file in the stack's directory:
    exactly what a deployment's bootstrap does. Returns the pool size and whether the auth
    file changed."""
    steps = bootstrap_steps(config)
    await steps.roles(passwords(config))
    pool_size = DEFAULT_POOL_SIZE
    if database:
        await steps.database(config.db_name)
        await steps.schema(config.db_name, config.owner_password)
        pool_size = await steps.settings(
            config.db_name, {"redis_host": "127.0.0.1", "redis_port": str(config.redis_port)}
        )
    changed = await steps.auth_files(pgbouncer_dir(config), pool_size)
    return pool_size, changed


# ------------------------------------------------------------------ processes


def _pidfile(config: StackConfig, name: str) -> Path:
    return config.state_dir / f"{name}.pid"


def _running(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _require_program(name: str) -> str:
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path is None:
        raise SystemExit(f"sms-stack: {name} is not installed (apt-get install {name})")
    return path


def pgbouncer_dir(config: StackConfig) -> Path:
    run_dir = config.state_dir / "pgbouncer"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _give_to_pgbouncer(run_dir: Path) -> list[str]:
    """pgbouncer refuses to run as root: as root, it runs as postgres and owns its files."""
    if os.geteuid() != 0:
        return []
    user = "postgres"
    shutil.chown(run_dir, user)
    for child in run_dir.iterdir():
        shutil.chown(child, user)
    return ["-u", user]


def start_pgbouncer(config: StackConfig, pool_size: int, *, auth_file_changed: bool) -> None:
    """Start pgbouncer with the auth file the bootstrap wrote; when it runs already and that
    file changed (a password did), RELOAD it (SIGHUP), or every login would fail."""
    run_dir = pgbouncer_dir(config)
    pid = _running(run_dir / "pgbouncer.pid")
    if pid is not None:
        if auth_file_changed:
            _give_to_pgbouncer(run_dir)
            os.kill(pid, signal.SIGHUP)
        return
    template = Template((ROOT / "pgbouncer" / "pgbouncer.ini.template").read_text())
    ini = template.substitute(
        pg_host=config.pg_host,
        pg_port=config.pg_port,
        listen_addr="127.0.0.1",
        listen_port=config.pgbouncer_port,
        run_dir=run_dir,
        pool_size=pool_size,
        admin_user=OWNER.name,
    )
    (run_dir / "pgbouncer.ini").write_text(ini)
    command = [
        _require_program("pgbouncer"),
        *_give_to_pgbouncer(run_dir),
        "-d",
        str(run_dir / "pgbouncer.ini"),
    ]
    subprocess.run(command, check=True)
    _wait_for_file(run_dir / "pgbouncer.pid", "pgbouncer", run_dir / "pgbouncer.log")


def start_redis(config: StackConfig) -> None:
    run_dir = config.state_dir / "redis"
    run_dir.mkdir(parents=True, exist_ok=True)
    if _running(run_dir / "redis.pid"):
        return
    subprocess.run(
        [
            _require_program("redis-server"),
            str(ROOT / "redis" / "redis.conf"),
            "--port",
            str(config.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(run_dir),
            "--daemonize",
            "yes",
            "--pidfile",
            str(run_dir / "redis.pid"),
            "--logfile",
            str(run_dir / "redis.log"),
            "--requirepass",
            config.redis_password,
        ],
        check=True,
    )
    _wait_for_file(run_dir / "redis.pid", "redis", run_dir / "redis.log")


def _wait_for_file(path: Path, what: str, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and _running(path):
            return
        time.sleep(0.05)
    tail = log.read_text()[-2000:] if log.exists() else "(no log)"
    raise SystemExit(f"sms-stack: {what} did not start; its log ends with:\n{tail}")


def start_service(config: StackConfig, service: str) -> None:
    pidfile = _pidfile(config, service)
    if _running(pidfile):
        return
    logs = config.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config.archive_dir.mkdir(parents=True, exist_ok=True)
    executable = Path(sys.executable).with_name(f"sms-{service}")
    with (logs / f"{service}.log").open("ab") as log:
        process = subprocess.Popen(
            [str(executable)],
            env={**os.environ, **config.service_env(service)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pidfile.write_text(str(process.pid))


def wait_ready(service: str, port: int, pidfile: Path, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/ready"
    while time.monotonic() < deadline:
        if not _running(pidfile):
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log.exists() else "(no log)"
    raise SystemExit(
        f"sms-stack: {service} is not ready on port {port}; its log ends with:\n{tail}"
    )


def stop_pid(pidfile: Path, *, timeout: float = 35.0) -> None:
    pid = _running(pidfile)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _running(pidfile):
            time.sleep(0.1)
        if _running(pidfile):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


# ------------------------------------------------------------------ commands


def infra_up(config: StackConfig, *, database: bool = True) -> None:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    pool_size, auth_file_changed = asyncio.run(bootstrap_database(config, database=database))
    start_redis(config)
    start_pgbouncer(config, pool_size, auth_file_changed=auth_file_changed)


def up(config: StackConfig, *, infra_only: bool) -> None:
    infra_up(config)
    # Made with the infrastructure: services started by other means (benchmarks, tests) from
    # `service_env` are given this directory too.
    config.archive_dir.mkdir(parents=True, exist_ok=True)
    if infra_only:
        return
    for service in SERVICES:
        start_service(config, service)
    for service in SERVICES:
        port = int(config.service_env(service)["SMSGW_HTTP_PORT"])
        wait_ready(
            service, port, _pidfile(config, service), config.state_dir / "logs" / f"{service}.log"
        )
        print(f"{service:9} ready on http://127.0.0.1:{port}")


def down(config: StackConfig) -> None:
    for service in reversed(SERVICES):
        stop_pid(_pidfile(config, service))
    stop_pid(config.state_dir / "pgbouncer" / "pgbouncer.pid", timeout=10)
    stop_pid(config.state_dir / "redis" / "redis.pid", timeout=10)


def test_environment(config: StackConfig) -> dict[str, str]:
    """What the test suite reads to find the services (see tests/conftest.py)."""
    return {
        "SMSGW_TEST_PG_ADMIN_URL": config.pg_admin_url,
        "SMSGW_TEST_PGBOUNCER_PORT": str(config.pgbouncer_port),
        "SMSGW_TEST_OWNER_PASSWORD": config.owner_password,
        "SMSGW_TEST_SERVICE_DB_PASSWORD": config.role_password,
        "SMSGW_TEST_REDIS_PORT": str(config.redis_port),
        "SMSGW_TEST_REDIS_PASSWORD": config.redis_password,
    }


# The whole suite (no pytest arguments, as CI runs it) also measures coverage and fails under
# the floor of pyproject.toml's [tool.coverage.report].
COVERAGE_ARGS: Final = ("--cov", "--cov-report=term")


def run_tests(config: StackConfig, pytest_args: Sequence[str]) -> int:
    infra_up(config, database=False)
    try:
        command = [sys.executable, "-m", "pytest", *(pytest_args or COVERAGE_ARGS)]
        return subprocess.call(command, env={**os.environ, **test_environment(config)})
    finally:
        down(config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sms-stack", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up_parser = commands.add_parser("up", help="start the gateway (or only its infrastructure)")
    up_parser.add_argument(
        "--infra-only", action="store_true", help="database, pgbouncer and Redis, no services"
    )
    commands.add_parser("down", help="stop what up started")
    commands.add_parser("env", help="print the services' and tests' environment as shell")
    test_parser = commands.add_parser("test", help="run the tests against a stack of their own")
    test_parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command == "test":
        # The tests' stack never collides with a development stack's defaults.
        os.environ.setdefault("SMSGW_STACK_DIR", ".stack-test")
        os.environ.setdefault("SMSGW_PGBOUNCER_PORT", "6442")
        os.environ.setdefault("SMSGW_REDIS_PORT", "6392")
        return run_tests(StackConfig(), [a for a in args.pytest_args if a != "--"])
    config = StackConfig()
    if args.command == "up":
        up(config, infra_only=args.infra_only)
    elif args.command == "down":
        down(config)
    elif args.command == "env":
        variables = {**test_environment(config)}
        for service in SERVICES:
            prefix = service.upper()
            variables |= {f"{prefix}_{k}": v for k, v in config.service_env(service).items()}
        for name, value in variables.items():
            print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
