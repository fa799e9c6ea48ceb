"""Bring a deployment's database to the state the gateway needs, idempotently.

Used by both deployments (compose's one-shot `migrate` service and the Ansible playbook), so that
they cannot drift apart. In order:

1. as the PostgreSQL superuser: the schema owner `sms_owner` (LOGIN CREATEROLE) with its
   password, the right to grant `pg_read_all_stats` (migration 0005 gives it to the validator;
   from PostgreSQL 16 on, CREATEROLE alone no longer allows that), and the database;
2. as `sms_owner`: every migration of db/init/ with `sms-migrate`'s own code (0004 creates the
   service roles, so the owner administers them on PostgreSQL 16 too);
3. as the superuser: each service role's password, and the settings the deployment decides
   (where Redis is, for example);
4. pgbouncer's auth file: the SCRAM verifiers as PostgreSQL stores them in `pg_authid`.

pgbouncer's auth file holds the server's own verifiers, not verifiers computed here: pgbouncer
passes a client's SCRAM proof through to PostgreSQL, which only works when both sides hold the
same salt and iteration count. Passwords are sent to PostgreSQL already hashed (a SCRAM verifier
made here with a fresh salt), so no plain password can reach a server log; a password is changed
only when the stored verifier does not match it, so a second run changes nothing.

Secrets come from the environment, each also as `<NAME>_FILE`: SMSGW_PG_ADMIN_PASSWORD (when the
superuser needs one), SMSGW_OWNER_PASSWORD, SMSGW_RECEIVER_DB_PASSWORD,
SMSGW_VALIDATOR_DB_PASSWORD, SMSGW_ADMIN_DB_PASSWORD. The result is one JSON line on stdout:
`{"changed": bool, "changes": [...], "pgbouncer_pool_size": N}`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit

import asyncpg

from sms_gateway.errors import GatewayError
from sms_gateway.migrate import migrate

OWNER_ROLE: Final = "sms_owner"
SERVICE_ROLES: Final = {
    "sms_receiver": "SMSGW_RECEIVER_DB_PASSWORD",
    "sms_validator": "SMSGW_VALIDATOR_DB_PASSWORD",
    "sms_admin": "SMSGW_ADMIN_DB_PASSWORD",
}
SCRAM_ITERATIONS: Final = 4096  # PostgreSQL's default scram_iterations


class BootstrapError(Exception):
    """The deployment's database could not be brought to the required state."""


def secret(name: str) -> str:
    """`name` from the environment, or the content of the file `name_FILE` names."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise BootstrapError(f"{name}_FILE: cannot read {path}: {exc.strerror}") from None
    value = os.environ.get(name, "")
    if not value:
        raise BootstrapError(f"{name} (or {name}_FILE) is not set")
    return value


# ------------------------------------------------------------------ SCRAM-SHA-256 (RFC 5802/7677)


def _scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    # PostgreSQL SASLprep-normalises the password; for the ASCII passwords a deployment
    # generates that is the identity, so a non-ASCII password only costs a needless re-hash.
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return stored_key, server_key


def scram_verifier(
    password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The verifier PostgreSQL stores in pg_authid.rolpassword for `password`."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    stored_key, server_key = _scram_keys(password, salt, iterations)
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def verifier_matches(verifier: str | None, password: str) -> bool:
    """Whether the stored `verifier` was made from `password` (False for md5 or none)."""
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        iterations_salt, keys = verifier.removeprefix("SCRAM-SHA-256$").split("$")
        iterations, salt = iterations_salt.split(":")
        stored, server = (base64.b64decode(part) for part in keys.split(":"))
        expected = _scram_keys(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(stored + server, expected[0] + expected[1])


# ------------------------------------------------------------------ the steps


@dataclass
class Bootstrap:
    admin_dsn: str
    admin_password: str | None
    database: str
    owner_host: str
    owner_port: int
    migrations: Path
    pinned_settings: dict[str, str]
    changes: list[str] = field(default_factory=list)

    async def _admin(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(
            self.admin_dsn, password=self.admin_password, database=database, statement_cache_size=0
        )

    async def _set_password(self, connection: asyncpg.Connection, role: str, password: str) -> None:
        stored = await connection.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role
        )
        if verifier_matches(stored, password):
            return
        # ALTER ROLE takes no parameters: let the server quote the verifier.
        statement = await connection.fetchval(
            "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
            role,
            scram_verifier(password),
        )
        await connection.execute(statement)
        self.changes.append(f"password of {role}")

    async def owner_and_database(self, owner_password: str) -> None:
        connection = await self._admin()
        try:
            async with connection.transaction():
                # One bootstrap at a time (several deploys racing on one cluster).
                await connection.execute("SELECT pg_advisory_xact_lock(7361)")
                if not await connection.fetchval(
                    "SELECT true FROM pg_roles WHERE rolname = $1", OWNER_ROLE
                ):
                    await connection.execute(f'CREATE ROLE "{OWNER_ROLE}" LOGIN CREATEROLE')
                    self.changes.append(f"role {OWNER_ROLE}")
                elif not await connection.fetchval(
                    "SELECT rolcanlogin AND rolcreaterole FROM pg_roles WHERE rolname = $1",
                    OWNER_ROLE,
                ):
                    await connection.execute(f'ALTER ROLE "{OWNER_ROLE}" LOGIN CREATEROLE')
                    self.changes.append(f"LOGIN CREATEROLE of {OWNER_ROLE}")
                await self._set_password(connection, OWNER_ROLE, owner_password)
                await self._grant_administration(connection)
            if not await connection.fetchval(
                "SELECT true FROM pg_database WHERE datname = $1", self.database
            ):
                await connection.execute(f'CREATE DATABASE "{self.database}" OWNER "{OWNER_ROLE}"')
                self.changes.append(f"database {self.database}")
        finally:
            await connection.close()

    async def _grant_administration(self, connection: asyncpg.Connection) -> None:
        """What the owner must administer for the migrations to run on PostgreSQL 16 and later.

        Up to 15, CREATEROLE covers every non-superuser role. From 16 on, a role administers only
        the roles it created or was granted WITH ADMIN OPTION: pg_read_all_stats (granted to the
        validator by 0005), and service roles that a superuser created earlier (0004 alters them).
        """
        if int(await connection.fetchval("SHOW server_version_num")) < 160000:
            return
        administered = [
            "pg_read_all_stats",
            *[
                role
                for role in SERVICE_ROLES
                if await connection.fetchval("SELECT true FROM pg_roles WHERE rolname = $1", role)
            ],
        ]
        for role in administered:
            if await connection.fetchval(
                "SELECT true FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
                "JOIN pg_roles o ON o.oid = m.member "
                "WHERE r.rolname = $1 AND o.rolname = $2 AND m.admin_option",
                role,
                OWNER_ROLE,
            ):
                continue
            await connection.execute(
                f'GRANT "{role}" TO "{OWNER_ROLE}" WITH ADMIN TRUE, INHERIT FALSE, SET FALSE'
            )
            self.changes.append(f"{OWNER_ROLE} administers {role}")

    async def schema(self, owner_password: str) -> None:
        dsn = (
            f"postgresql://{OWNER_ROLE}:{quote(owner_password, safe='')}@{self.owner_host}:"
            f"{self.owner_port}/{quote(self.database, safe='')}"
        )
        applied = await migrate(dsn, self.migrations)
        self.changes += [f"migration {version}" for version in applied]

    async def service_passwords(self, passwords: dict[str, str]) -> None:
        connection = await self._admin()
        try:
            for role, password in passwords.items():
                await self._set_password(connection, role, password)
        finally:
            await connection.close()

    async def settings(self) -> int:
        """Apply the deployment's settings; return pgbouncer_pool_size."""
        connection = await self._admin(self.database)
        try:
            async with connection.transaction():
                for key, value in self.pinned_settings.items():
                    updated = await connection.fetchval(
                        "UPDATE system_settings SET setting_value = $2, updated_at = now() "
                        "WHERE setting_key = $1 AND setting_value IS DISTINCT FROM $2 "
                        "RETURNING true",
                        key,
                        value,
                    )
                    if updated:
                        self.changes.append(f"setting {key}")
                pool_size = await connection.fetchval(
                    "SELECT setting_value FROM system_settings "
                    "WHERE setting_key = 'pgbouncer_pool_size'"
                )
        finally:
            await connection.close()
        try:
            return int(pool_size)
        except (TypeError, ValueError):
            raise BootstrapError(f"pgbouncer_pool_size is not an integer: {pool_size!r}") from None

    async def userlist(self) -> str:
        connection = await self._admin()
        try:
            rows = await connection.fetch(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[]) "
                "ORDER BY rolname",
                [OWNER_ROLE, *SERVICE_ROLES],
            )
        finally:
            await connection.close()
        return "".join(f'"{row["rolname"]}" "{row["rolpassword"]}"\n' for row in rows)


def write_if_changed(path: Path, content: str, changes: list[str]) -> None:
    """Replace `path` atomically (mode 0640) when its content differs."""
    try:
        if path.read_text(encoding="utf-8") == content:
            return
    except FileNotFoundError:
        pass
    scratch = path.with_name(f".{path.name}.new")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(content)
    scratch.replace(path)
    changes.append(f"file {path}")


async def run(args: argparse.Namespace) -> dict[str, object]:
    pinned = {}
    for item in args.setting:
        key, equals, value = item.partition("=")
        if not equals:
            raise BootstrapError(f"--setting {item!r}: expected key=value")
        pinned[key] = value
    admin_password = (
        secret("SMSGW_PG_ADMIN_PASSWORD")
        if os.environ.get("SMSGW_PG_ADMIN_PASSWORD")
        or os.environ.get("SMSGW_PG_ADMIN_PASSWORD_FILE")
        else None
    )
    admin_host = urlsplit(args.admin_dsn).hostname
    bootstrap = Bootstrap(
        admin_dsn=args.admin_dsn,
        admin_password=admin_password,
        database=args.database,
        owner_host=args.owner_host or admin_host or "127.0.0.1",
        owner_port=args.owner_port or urlsplit(args.admin_dsn).port or 5432,
        migrations=args.migrations,
        pinned_settings=pinned,
    )
    owner_password = secret("SMSGW_OWNER_PASSWORD")
    service_passwords = {role: secret(variable) for role, variable in SERVICE_ROLES.items()}
    await bootstrap.owner_and_database(owner_password)
    await bootstrap.schema(owner_password)
    await bootstrap.service_passwords(service_passwords)
    pool_size = await bootstrap.settings()
    if args.output_dir is not None:
        write_if_changed(
            args.output_dir / "userlist.txt", await bootstrap.userlist(), bootstrap.changes
        )
        write_if_changed(args.output_dir / "pool_size", f"{pool_size}\n", bootstrap.changes)
    return {
        "changed": bool(bootstrap.changes),
        "changes": bootstrap.changes,
        "pgbouncer_pool_size": pool_size,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bootstrap", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--admin-dsn",
        default=os.environ.get(
            "SMSGW_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="the superuser, direct (no password in it: use SMSGW_PG_ADMIN_PASSWORD[_FILE])",
    )
    parser.add_argument("--database", default=os.environ.get("SMSGW_DB_NAME", "sms_gateway"))
    parser.add_argument("--owner-host", help="where sms_owner connects (default: the admin's)")
    parser.add_argument("--owner-port", type=int)
    parser.add_argument("--migrations", type=Path, required=True, help="the db/init directory")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run-time setting this deployment decides (e.g. redis_host=redis)",
    )
    parser.add_argument(
        "--output-dir", type=Path, help="write pgbouncer's userlist.txt and pool_size here"
    )
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except (BootstrapError, GatewayError, OSError, asyncpg.PostgresError) as exc:
        print(f"bootstrap: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
