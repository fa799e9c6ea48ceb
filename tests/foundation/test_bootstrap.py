"""The one database bootstrap (`sms-bootstrap`, sms_gateway/bootstrap.py): what compose, the
playbook, `./stack` and this harness run. On a cluster of their own that checks passwords
(scram-sha-256, any standard install): a second run changes nothing, a second `./stack up`, or a
`./stack test` beside a running stack, leaves the running pgbouncer able to log in, and a changed
password reaches it without a restart."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from sms_gateway import bootstrap
from sms_gateway.bootstrap import OWNER, SERVICE_ROLES, Bootstrap, Target, scram_verifier
from sms_gateway.devstack import passwords
from tests.conftest import Infra


def test_a_verifier_matches_its_password_and_no_other() -> None:
    verifier = scram_verifier("s3cret")
    assert bootstrap.verifier_matches(verifier, "s3cret")
    assert not bootstrap.verifier_matches(verifier, "s3cret ")
    assert not bootstrap.verifier_matches("md5abc", "s3cret")
    assert not bootstrap.verifier_matches(None, "s3cret")
    assert scram_verifier("s3cret") != verifier  # a fresh salt each time


# ------------------------------------------------------------ a cluster of their own

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _cluster_version() -> str:
    return sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".")])[-1]


def _drop_cluster(version: str, name: str) -> None:
    subprocess.run(["pg_dropcluster", "--stop", version, name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def scram_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster (a name and a port of its own, so that test runs side by
    side do not meet) that checks passwords with scram-sha-256 on TCP, as any standard install
    does; only the superuser is trusted, on loopback, as the harness's own cluster trusts it.
    Its superuser URL. Roles are cluster-wide: on a cluster of their own, these tests see only
    their own bootstraps (the harness's cluster is shared with every other test run)."""
    if shutil.which("pg_createcluster") is None:
        pytest.skip("pg_createcluster is not installed (Debian's postgresql-common)")
    version = _cluster_version()
    name = f"scramtest_{uuid.uuid4().hex[:8]}"
    port = _free_port()
    subprocess.run(
        [
            "pg_createcluster",
            version,
            name,
            "-p",
            str(port),
            "--",
            "--auth-host=scram-sha-256",
            "--auth-local=peer",
        ],
        capture_output=True,
        check=True,
    )
    try:
        hba = Path("/etc/postgresql") / version / name / "pg_hba.conf"
        hba.write_text("host all postgres 127.0.0.1/32 trust\n" + hba.read_text())
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"],
            capture_output=True,
            check=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _drop_cluster(version, name)


PASSWORDS = {role.name: f"{role.name}-bootstrap-test" for role in (OWNER, *SERVICE_ROLES)}


async def test_a_second_bootstrap_changes_nothing(scram_cluster: str, tmp_path: Path) -> None:
    database_name = "sms_bootstrap_twice"
    target = Target(
        admin_dsn=scram_cluster,
        database=database_name,
        passwords=PASSWORDS,
        pinned_settings={"redis_host": "redis.internal", "redis_port": "6390"},
        output_dir=tmp_path,
    )
    first = await bootstrap.bootstrap(target)
    assert f"database {database_name}" in first.changes
    assert "migration 0009_least_privilege" in first.changes
    assert {"setting redis_host", "setting redis_port"} <= set(first.changes)
    assert first.pgbouncer_pool_size == 10
    assert (tmp_path / "pool_size").read_text() == "10\n"
    userlist = (tmp_path / "userlist.txt").read_text()
    for role in (OWNER, *SERVICE_ROLES):
        assert f'"{role.name}" "SCRAM-SHA-256$' in userlist
    assert (tmp_path / "userlist.txt").stat().st_mode & 0o777 == 0o640

    second = await bootstrap.bootstrap(target)
    assert second.changes == []
    assert not second.auth_file_changed
    assert json.loads(second.as_json()) == {
        "changed": False,
        "changes": [],
        "pgbouncer_pool_size": 10,
    }


def test_the_command_line_reads_its_secrets_from_the_environment_or_files(
    scram_cluster: str, tmp_path: Path
) -> None:
    """`sms-bootstrap` as compose and the playbook run it: one JSON line on stdout."""
    secret_file = tmp_path / "owner_password"
    secret_file.write_text(PASSWORDS[OWNER.name] + "\n")
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")},
        "SMSGW_OWNER_PASSWORD_FILE": str(secret_file),
        **{role.password_variable: PASSWORDS[role.name] for role in SERVICE_ROLES},
    }
    command = [
        str(Path(sys.executable).with_name("sms-bootstrap")),
        f"--admin-dsn={scram_cluster}",
        "--database=sms_bootstrap_command",
        "--setting=redis_host=127.0.0.1",
        f"--output-dir={tmp_path}",
    ]
    first = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["changed"] is True
    second = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    assert json.loads(second.stdout) == {
        "changed": False,
        "changes": [],
        "pgbouncer_pool_size": 10,
    }

    del environment["SMSGW_OWNER_PASSWORD_FILE"]
    refused = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
    assert refused.returncode == 1
    assert "SMSGW_OWNER_PASSWORD (or SMSGW_OWNER_PASSWORD_FILE) is not set" in refused.stderr


async def test_a_bad_pinned_setting_or_missing_password_is_refused(infra: Infra) -> None:
    with pytest.raises(bootstrap.BootstrapError, match="no password for sms_admin"):
        await Bootstrap(infra.stack.pg_admin_url).roles(
            {k: v for k, v in passwords(infra.stack).items() if k != "sms_admin"}
        )
    with pytest.raises(bootstrap.BootstrapError, match="expected key=value"):
        bootstrap._pinned(["redis_host"])


async def _login(port: int, role: str, password: str, database: str) -> int:
    """A login through pgbouncer on `port` and one query."""
    connection = await asyncpg.connect(
        host="127.0.0.1",
        port=port,
        user=role,
        password=password,
        database=database,
        statement_cache_size=0,
    )
    try:
        value: int = await connection.fetchval("SELECT 1")
    finally:
        await connection.close()
    return value


async def _verifiers(admin_url: str) -> dict[str, str]:
    connection = await asyncpg.connect(admin_url)
    try:
        rows = await connection.fetch(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'sms\\_%'"
        )
    finally:
        await connection.close()
    return {row["rolname"]: row["rolpassword"] for row in rows}


@pytest.mark.slow
@pytest.mark.fault
async def test_stack_up_twice_and_stack_test_keep_the_running_pgbouncer_working(
    scram_cluster: str,
) -> None:
    root = ROOT
    stack = [str(Path(sys.executable).with_name("sms-stack"))]
    run_id = uuid.uuid4().hex[:8]
    state = root / f".stack-scramtest-{run_id}"
    other_state = root / f".stack-scramtest-{run_id}-2"
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")},
        "SMSGW_STACK_DIR": str(state),
        "SMSGW_PG_ADMIN_URL": scram_cluster,
        "SMSGW_DB_NAME": "sms_scram",
        "SMSGW_PGBOUNCER_PORT": str(_free_port()),
        "SMSGW_REDIS_PORT": str(_free_port()),
        "SMSGW_OWNER_PASSWORD": "scram-owner-1",
        "SMSGW_SERVICE_DB_PASSWORD": "scram-service-1",
    }
    pgbouncer = int(environment["SMSGW_PGBOUNCER_PORT"])

    def run(*arguments: str, **changed: str) -> None:
        result = subprocess.run(
            [*stack, *arguments],
            env=environment | changed,
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    try:
        run("up", "--infra-only")
        assert await _login(pgbouncer, "sms_receiver", "scram-service-1", "sms_scram") == 1
        verifiers = await _verifiers(scram_cluster)

        run("up", "--infra-only")  # the second `./stack up`
        assert await _verifiers(scram_cluster) == verifiers  # nothing re-salted
        assert await _login(pgbouncer, "sms_receiver", "scram-service-1", "sms_scram") == 1

        # `./stack test` on the same cluster, with a stack of its own (it runs `--version` of
        # pytest here, not the suite), then stops its own stack: ours still logs in.
        run(
            "test",
            "--",
            "--version",
            SMSGW_STACK_DIR=str(other_state),
            SMSGW_PGBOUNCER_PORT=str(_free_port()),
            SMSGW_REDIS_PORT=str(_free_port()),
        )
        assert await _verifiers(scram_cluster) == verifiers
        assert await _login(pgbouncer, "sms_admin", "scram-service-1", "sms_scram") == 1

        # A changed password reaches the running pgbouncer: its auth file is rewritten and
        # RELOADed, no restart.
        run("up", "--infra-only", SMSGW_SERVICE_DB_PASSWORD="scram-service-2")
        assert await _login(pgbouncer, "sms_validator", "scram-service-2", "sms_scram") == 1
        with pytest.raises(asyncpg.PostgresError, match="authentication failed"):
            await _login(pgbouncer, "sms_validator", "scram-service-1", "sms_scram")
    finally:
        run("down")
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(other_state, ignore_errors=True)
