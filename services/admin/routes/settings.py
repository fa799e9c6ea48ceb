"""Run-time settings (SPEC §3, §7): list, read, change one key with its audit row.

Values are validated by `sms_gateway.settings`, the same model every service reads them with;
there is no second copy of the rules here.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query
from prometheus_client import Counter

from services.admin import queries
from services.admin.models import (
    AuditEntry,
    AuditPage,
    SettingChange,
    SettingUpdate,
    SettingView,
)
from services.admin.state import AdminState, Operator, State
from sms_gateway import db
from sms_gateway.errors import SettingValueError, UnknownSettingError
from sms_gateway.problems import problem_responses
from sms_gateway.settings import (
    SETTING_KEYS,
    encode_setting,
    is_read_only,
    parse_setting_text,
    setting_meaning,
    setting_rule,
    to_json,
    validate_update,
)
from sms_gateway.text import MAX_BIGINT

logger = logging.getLogger(__name__)

SETTINGS_CHANGES = Counter(
    "sms_admin_settings_changes_total", "Settings changed through the admin API.", ["key"]
)

router = APIRouter(prefix="/settings", tags=["settings"])


def setting_view(key: str, row: asyncpg.Record | None, state: AdminState) -> SettingView:
    """A key's value (or its stored text and the rule it breaks), rule, meaning and default:
    the default of this app's registry, so check_sequence lists every registered check."""
    known_checks = state.known_checks
    default = to_json(key, getattr(state.settings.defaults, key))
    value: Any = default
    invalid: str | None = None
    if row is not None:
        try:
            value = to_json(
                key, parse_setting_text(key, row["setting_value"], known_checks=known_checks)
            )
        except SettingValueError as exc:
            value, invalid = row["setting_value"], exc.rule
    return SettingView(
        key=key,
        value=value,
        rule=setting_rule(key),
        meaning=setting_meaning(key),
        default=default,
        read_only=is_read_only(key),
        updated_at=row["updated_at"] if row is not None else None,
        invalid=invalid,
    )


def _require_known(key: str) -> None:
    if key not in SETTING_KEYS:
        raise UnknownSettingError(key)


@router.get("", summary="Every setting with its value, rule and meaning")
async def list_settings(state: State) -> list[SettingView]:
    async with db.transaction(state.pool, readonly=True) as connection:
        rows = {row["setting_key"]: row for row in await connection.fetch(queries.SETTINGS_ALL)}
    return [setting_view(key, rows.get(key), state) for key in SETTING_KEYS]


@router.get("/audit", summary="Who changed which setting, newest first")
async def settings_audit(
    state: State,
    key: Annotated[str | None, Query(max_length=50, description="only this key")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[
        int | None,
        Query(ge=1, le=MAX_BIGINT, description="next_before_id of the previous page"),
    ] = None,
) -> AuditPage:
    async with db.transaction(state.pool, readonly=True) as connection:
        rows = await connection.fetch(queries.AUDIT_PAGE, key, limit + 1, before_id)
    entries = [
        AuditEntry(
            id=row["id"],
            key=row["setting_key"],
            old_value=row["old_value"],
            new_value=row["new_value"],
            changed_by=row["changed_by"],
            changed_at=row["changed_at"],
        )
        for row in rows[:limit]
    ]
    return AuditPage(entries=entries, next_before_id=entries[-1].id if len(rows) > limit else None)


@router.get("/{key}", summary="One setting", responses=problem_responses({404: "no such setting"}))
async def read_setting(key: str, state: State) -> SettingView:
    _require_known(key)
    async with db.transaction(state.pool, readonly=True) as connection:
        row = await connection.fetchrow(queries.SETTING_ONE, key)
    return setting_view(key, row, state)


@router.put(
    "/{key}",
    summary="Change one setting (typed validation, audited)",
    responses=problem_responses(
        {
            404: "no such setting",
            422: "the value breaks the key's rule, or the key is read-only; nothing changed",
        }
    ),
)
async def change_setting(
    key: str, update: SettingUpdate, state: State, changed_by: Operator
) -> SettingChange:
    typed = validate_update(key, update.value, known_checks=state.known_checks)
    text = encode_setting(key, typed)
    async with db.transaction(state.pool) as connection:
        locked = await connection.fetchrow(queries.SETTING_LOCK, key)
        if locked is None:
            row = await connection.fetchrow(queries.SETTING_INSERT, key, text)
            if row is None:  # another request made the row first: change it after that one
                locked = await connection.fetchrow(queries.SETTING_LOCK, key)
        old_text: str | None = locked["setting_value"] if locked is not None else None
        if locked is not None:
            if old_text == text:
                row = await connection.fetchrow(queries.SETTING_ONE, key)
                return SettingChange(
                    setting=setting_view(key, row, state),
                    changed=False,
                    changed_by=changed_by,
                )
            row = await connection.fetchrow(queries.SETTING_UPDATE, key, text)
        await connection.execute(queries.AUDIT_INSERT, key, old_text, text, changed_by)
    SETTINGS_CHANGES.labels(key=key).inc()
    logger.info(
        "setting changed",
        extra={
            "setting_key": key,
            "old_value": old_text,
            "new_value": text,
            "changed_by": changed_by,
        },
    )
    return SettingChange(setting=setting_view(key, row, state), changed=True, changed_by=changed_by)
