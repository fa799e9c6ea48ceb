"""`sms-bootstrap`: bring a PostgreSQL cluster and the gateway's database to the state the
gateway needs, idempotently.

The one database bootstrap: compose's one-shot `migrate` service, the Ansible playbook, `./stack`
(`sms_gateway/devstack.py`) and the test harness (`tests/conftest.py`) all run this code, so that
every test run exercises the production path. In order:

1. `roles`, as the superuser, under a transaction-scoped advisory lock (one bootstrap at a time
   per cluster): the schema owner `sms_owner` and the service roles, with what is cluster-wide
   about them and therefore no migration's business (a migration runs per database, as the
   owner): their attributes, passwords, per-role settings and memberships (`ROLES`). Least
   privilege (SPEC §2): `sms_owner` never has CREATEROLE (on PostgreSQL 15 it would let the
   owner grant itself `pg_execute_server_program` and run programs on the server); no role
   is a superuser, creates databases or bypasses row-level security; the cluster's `postgres`
   database is closed to PUBLIC, so the service roles reach only the gateway's database.
2. `database`: created, owned by `sms_owner`, when missing.
3. `schema`: as `sms_owner`, every migration of `db/init/` (`sms_gateway.migrate`).
4. `settings`: as the superuser, the run-time settings the deployment decides (where Redis is,
   for example); answers `pgbouncer_pool_size`.
5. `userlist`: pgbouncer's auth file, the SCRAM verifiers as PostgreSQL stores them.

pgbouncer's auth file holds the server's own verifiers, not verifiers computed here: pgbouncer
passes a client's SCRAM proof through to PostgreSQL, which only works when both sides hold the
same salt and iteration count. Passwords are sent to PostgreSQL already hashed (a SCRAM verifier
made here with a fresh salt), so no plain password can reach a server log; a password is changed
only when the stored verifier does not match it, so a second run changes nothing, and a running
pgbouncer's auth file stays valid (a new salt would make every login fail until it reloads).

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit

import asyncpg

from sms_gateway.errors import GatewayError
from sms_gateway.migrate import MIGRATIONS_DIR, migrate

# One bootstrap of roles at a time per cluster (several deployments or test runs at once).
ROLES_LOCK: Final = 7361
SCRAM_ITERATIONS: Final = 4096  # PostgreSQL's default scram_iterations
# A transaction left open by a bug must not hold locks for ever.
_IDLE_IN_TRANSACTION: Final = ("idle_in_transaction_session_timeout", "30s")


@dataclass(frozen=True, slots=True)
class Role:
    """A login role of the gateway and what is cluster-wide about it."""

    name: str
    password_variable: str
    # ALTER ROLE ... SET: applied to every session of the role, in every database.
    parameters: Mapping[str, str] = field(default_factory=dict)
    # Predefined roles it is a member of.
    member_of: tuple[str, ...] = ()


OWNER: Final = Role("sms_owner", "SMSGW_OWNER_PASSWORD")
SERVICE_ROLES: Final = (
    # Receiver transactions are one INSERT: bounded, so that one stuck insert cannot hold the
    # validator's settle horizon (and every SMS behind it) back for long.
    Role(
        "sms_receiver",
        "SMSGW_RECEIVER_DB_PASSWORD",
        dict([_IDLE_IN_TRANSACTION, ("statement_timeout", "10s")]),
    ),
    # The settle horizon reads the xact_start of other roles' sessions in pg_stat_activity;
    # without pg_read_all_stats those columns read as NULL and the horizon would ignore them.
    Role(
        "sms_validator",
        "SMSGW_VALIDATOR_DB_PASSWORD",
        dict([_IDLE_IN_TRANSACTION]),
        member_of=("pg_read_all_stats",),
    ),
    Role("sms_admin", "SMSGW_ADMIN_DB_PASSWORD", dict([_IDLE_IN_TRANSACTION])),
)
ROLES: Final = (OWNER, *SERVICE_ROLES)
SERVICE_ROLE_NAMES: Final = tuple(role.name for role in SERVICE_ROLES)
# The only attributes a gateway role has: LOGIN, and none of these.
_REFUSED_ATTRIBUTES: Final = (
    "rolsuper",
    "rolcreaterole",
    "rolcreatedb",
    "rolreplication",
    "rolbypassrls",
)


class BootstrapError(GatewayError):
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


def passwords_from_environment() -> dict[str, str]:
    """Every gateway role's password, by role name."""
    return {role.name: secret(role.password_variable) for role in ROLES}


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
    """The steps, each idempotent; `changes` says what they changed (empty: nothing)."""

    admin_dsn: str  # the superuser, direct (not through pgbouncer)
    admin_password: str | None = None
    changes: list[str] = field(default_factory=list)

    async def _admin(self, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(
            self.admin_dsn, password=self.admin_password, database=database, statement_cache_size=0
        )

    async def roles(self, passwords: Mapping[str, str]) -> None:
        """Every role of `ROLES` as it must be, with its password from `passwords`."""
        missing = [role.name for role in ROLES if not passwords.get(role.name)]
        if missing:
            raise BootstrapError(f"no password for {', '.join(missing)}")
        connection = await self._admin()
        try:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", ROLES_LOCK)
                for role in ROLES:
                    await self._role(connection, role, passwords[role.name])
                await self._close_maintenance_database(connection)
        finally:
            await connection.close()

    async def _role(self, connection: asyncpg.Connection, role: Role, password: str) -> None:
        attributes = await connection.fetchrow(
            f"SELECT rolcanlogin, {', '.join(_REFUSED_ATTRIBUTES)} FROM pg_roles "  # noqa: S608
            "WHERE rolname = $1",
            role.name,
        )
        if attributes is None:
            await self._execute(connection, "CREATE ROLE %I LOGIN", role.name)
            self.changes.append(f"role {role.name}")
        elif not attributes["rolcanlogin"] or any(attributes[a] for a in _REFUSED_ATTRIBUTES):
            await self._execute(
                connection,
                "ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS",
                role.name,
            )
            self.changes.append(f"attributes of {role.name}: LOGIN only")
        await self._password(connection, role.name, password)
        configured = set(
            await connection.fetchval(
                "SELECT setconfig FROM pg_db_role_setting "
                "WHERE setdatabase = 0 AND setrole = $1::regrole",
                role.name,
            )
            or ()
        )
        for parameter, value in role.parameters.items():
            if f"{parameter}={value}" not in configured:
                await self._execute(
                    connection, "ALTER ROLE %I SET %I = %L", role.name, parameter, value
                )
                self.changes.append(f"{parameter} of {role.name}")
        for group in role.member_of:
            if not await connection.fetchval(
                "SELECT true FROM pg_auth_members "
                "WHERE roleid = $1::regrole AND member = $2::regrole",
                group,
                role.name,
            ):
                await self._execute(connection, "GRANT %I TO %I", group, role.name)
                self.changes.append(f"{role.name} in {group}")

    async def _password(self, connection: asyncpg.Connection, role: str, password: str) -> None:
        stored = await connection.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role
        )
        if verifier_matches(stored, password):
            return
        await self._execute(connection, "ALTER ROLE %I PASSWORD %L", role, scram_verifier(password))
        self.changes.append(f"password of {role}")

    async def _close_maintenance_database(self, connection: asyncpg.Connection) -> None:
        """Every database grants CONNECT to PUBLIC when it is created; the gateway's migrations
        take it back from theirs (0004). The cluster's `postgres` database is the superuser's."""
        if not await connection.fetchval("SELECT true FROM pg_database WHERE datname = 'postgres'"):
            return
        open_to = [
            name
            for name in (OWNER.name, *SERVICE_ROLE_NAMES)
            if await connection.fetchval(
                "SELECT has_database_privilege($1, 'postgres', 'CONNECT')", name
            )
        ]
        if open_to:
            await connection.execute("REVOKE CONNECT ON DATABASE postgres FROM PUBLIC")
            for name in open_to:
                await self._execute(connection, "REVOKE CONNECT ON DATABASE postgres FROM %I", name)
            self.changes.append("CONNECT on database postgres revoked")

    @staticmethod
    async def _execute(connection: asyncpg.Connection, template: str, *values: str) -> None:
        """A utility statement, which takes no parameters: the server quotes the names (%I)
        and values (%L) into it."""
        placeholders = ", ".join(f"${i + 1}::text" for i in range(len(values)))
        statement = await connection.fetchval(
            f"SELECT format('{template}', {placeholders})", *values
        )
        await connection.execute(statement)

    async def database(self, name: str, *, template: str | None = None) -> bool:
        """Create `name`, owned by the schema owner, unless it exists; True when created."""
        connection = await self._admin()
        try:
            if await connection.fetchval("SELECT true FROM pg_database WHERE datname = $1", name):
                return False
            statement = await connection.fetchval(
                "SELECT format('CREATE DATABASE %I OWNER %I', $1::text, $2::text)"
                " || CASE WHEN $3::text IS NULL THEN '' ELSE format(' TEMPLATE %I', $3::text) END",
                name,
                OWNER.name,
                template,
            )
            try:
                await connection.execute(statement)
            except asyncpg.DuplicateDatabaseError:
                return False  # made by a concurrent bootstrap in the meantime
        finally:
            await connection.close()
        self.changes.append(f"database {name}")
        return True

    async def schema(
        self,
        name: str,
        owner_password: str,
        *,
        owner_host: str | None = None,
        owner_port: int | None = None,
        migrations: Path = MIGRATIONS_DIR,
    ) -> list[str]:
        """Apply the migrations that `name` has not seen, as the schema owner, directly
        (default: where the superuser connects, over TCP)."""
        admin = urlsplit(self.admin_dsn)
        host = owner_host or admin.hostname or "127.0.0.1"
        port = owner_port or admin.port or 5432
        dsn = (
            f"postgresql://{OWNER.name}:{quote(owner_password, safe='')}@{host}:{port}"
            f"/{quote(name, safe='')}"
        )
        applied = await migrate(dsn, migrations)
        self.changes += [f"migration {version}" for version in applied]
        return applied

    async def settings(self, name: str, pinned: Mapping[str, str]) -> int:
        """Apply the deployment's settings to database `name`; return pgbouncer_pool_size."""
        connection = await self._admin(name)
        try:
            async with connection.transaction():
                for key, value in pinned.items():
                    if await connection.fetchval(
                        "UPDATE system_settings SET setting_value = $2, updated_at = now() "
                        "WHERE setting_key = $1 AND setting_value IS DISTINCT FROM $2 "
                        "RETURNING true",
                        key,
                        value,
                    ):
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
        """pgbouncer's auth file: each gateway role's verifier as pg_authid holds it."""
        connection = await self._admin()
        try:
            rows = await connection.fetch(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[]) "
                "ORDER BY rolname",
                [role.name for role in ROLES],
            )
        finally:
            await connection.close()
        return "".join(f'"{row["rolname"]}" "{row["rolpassword"]}"\n' for row in rows)

    async def auth_files(self, directory: Path, pool_size: int) -> bool:
        """Write pgbouncer's `userlist.txt` and `pool_size` into `directory` when they differ;
        True when the auth file changed (a running pgbouncer must then RELOAD)."""
        changed = write_if_changed(directory / "userlist.txt", await self.userlist(), self.changes)
        write_if_changed(directory / "pool_size", f"{pool_size}\n", self.changes)
        return changed


def write_if_changed(path: Path, content: str, changes: list[str]) -> bool:
    """Replace `path` atomically (mode 0640) when its content differs; True when replaced."""
    try:
        if path.read_text(encoding="utf-8") == content:
            return False
    except FileNotFoundError:
        pass
    scratch = path.with_name(f".{path.name}.new")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(content)
    scratch.replace(path)
    changes.append(f"file {path}")
    return True


@dataclass(frozen=True)
class Target:
    """What one run of `sms-bootstrap` brings up to date."""

    admin_dsn: str
    database: str
    passwords: Mapping[str, str]
    admin_password: str | None = None
    owner_host: str | None = None
    owner_port: int | None = None
    migrations: Path = MIGRATIONS_DIR
    pinned_settings: Mapping[str, str] = field(default_factory=dict)
    output_dir: Path | None = None


@dataclass(frozen=True)
class Outcome:
    changes: list[str]
    pgbouncer_pool_size: int
    auth_file_changed: bool

    def as_json(self) -> str:
        return json.dumps(
            {
                "changed": bool(self.changes),
                "changes": self.changes,
                "pgbouncer_pool_size": self.pgbouncer_pool_size,
            }
        )


async def bootstrap(target: Target) -> Outcome:
    """Every step, in order (see the module's docstring)."""
    steps = Bootstrap(target.admin_dsn, target.admin_password)
    await steps.roles(target.passwords)
    await steps.database(target.database)
    await steps.schema(
        target.database,
        target.passwords[OWNER.name],
        owner_host=target.owner_host,
        owner_port=target.owner_port,
        migrations=target.migrations,
    )
    pool_size = await steps.settings(target.database, target.pinned_settings)
    auth_file_changed = (
        await steps.auth_files(target.output_dir, pool_size)
        if target.output_dir is not None
        else False
    )
    return Outcome(steps.changes, pool_size, auth_file_changed)


def _pinned(items: Sequence[str]) -> dict[str, str]:
    pinned = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise BootstrapError(f"--setting {item!r}: expected key=value")
        pinned[key] = value
    return pinned


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sms-bootstrap", description=__doc__.splitlines()[0])
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
    parser.add_argument(
        "--migrations",
        type=Path,
        default=Path(os.environ.get("SMSGW_MIGRATIONS_DIR") or MIGRATIONS_DIR),
        help="the db/init directory (default: $SMSGW_MIGRATIONS_DIR, else db/init of the source)",
    )
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
        has_admin_password = bool(
            os.environ.get("SMSGW_PG_ADMIN_PASSWORD")
            or os.environ.get("SMSGW_PG_ADMIN_PASSWORD_FILE")
        )
        target = Target(
            admin_dsn=args.admin_dsn,
            database=args.database,
            passwords=passwords_from_environment(),
            admin_password=secret("SMSGW_PG_ADMIN_PASSWORD") if has_admin_password else None,
            owner_host=args.owner_host,
            owner_port=args.owner_port,
            migrations=args.migrations,
            pinned_settings=_pinned(args.setting),
            output_dir=args.output_dir,
        )
        outcome = asyncio.run(bootstrap(target))
    except (GatewayError, OSError, asyncpg.PostgresError) as exc:
        print(f"sms-bootstrap: {exc}", file=sys.stderr)
        return 1
    print(outcome.as_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
