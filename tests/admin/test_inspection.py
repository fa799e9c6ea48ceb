"""One SMS, requeue and the blacklist through the admin API (SPEC §7, §6.4)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg
import httpx

from checks import REGISTRY
from checks.base import CheckContext, CheckResult, CheckSecrets, MessageParts, SmsToJudge
from sms_gateway.settings import DEFAULTS
from tests.admin.conftest import insert_sms

PASS, FAIL, SKIPPED, NOT_RUN = 1, 2, 3, 0


async def test_a_valid_sms_shows_every_check_and_its_out_sms_row(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    sms_uuid = await insert_sms(
        owner_pool,
        "447700900123",
        overall_status="valid",
        results=dict.fromkeys(REGISTRY, PASS),
        forwarded=True,
    )
    response = await authed.get(f"/sms/{sms_uuid}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["uuid"] == str(sms_uuid)
    assert body["trace_id"] == sms_uuid.hex
    assert body["overall_status"] == "valid"
    assert body["failed_at_check"] is None
    assert body["input"]["sender_number"] == "447700900123"
    assert body["input"]["source"] == "api"
    assert [(c["name"], c["code"], c["result"]) for c in body["checks"]] == [
        (name, PASS, "pass") for name in REGISTRY
    ]
    assert body["out_sms"]["sender_number"] == "447700900123"
    assert body["out_sms"]["validation_status"] == "valid"
    assert body["processing_ms"] == 25.0
    assert body["batch_id"] is not None


async def test_an_invalid_sms_names_the_failed_check(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    sms_uuid = await insert_sms(
        owner_pool,
        "447700900124",
        "acme nothing",
        overall_status="invalid",
        results={"blacklist": PASS, "duplicate": PASS, "header": FAIL},
        failed_at_check="header",
    )
    body = (await authed.get(f"/sms/{sms_uuid}")).json()
    assert body["overall_status"] == "invalid"
    assert body["failed_at_check"] == "header"
    results = {c["name"]: (c["code"], c["result"]) for c in body["checks"]}
    assert results["header"] == (FAIL, "fail")
    assert results["mobile"] == (NOT_RUN, "not run")
    assert body["out_sms"] is None


async def test_a_skipped_sms(authed: httpx.AsyncClient, owner_pool: asyncpg.Pool) -> None:
    sms_uuid = await insert_sms(
        owner_pool,
        "447700900125",
        overall_status="skipped",
        results=dict.fromkeys(REGISTRY, SKIPPED),
    )
    body = (await authed.get(f"/sms/{sms_uuid}")).json()
    assert body["overall_status"] == "skipped"
    assert {c["result"] for c in body["checks"]} == {"skipped"}
    assert body["out_sms"] is None


async def test_an_sms_not_yet_judged(authed: httpx.AsyncClient, owner_pool: asyncpg.Pool) -> None:
    sms_uuid = await insert_sms(owner_pool, "447700900126")
    body = (await authed.get(f"/sms/{sms_uuid}")).json()
    assert body["overall_status"] == "unprocessed"
    assert body["checks"] == []
    assert body["processing_ms"] is None


async def test_unknown_and_malformed_uuids(authed: httpx.AsyncClient) -> None:
    unknown = uuid4()
    response = await authed.get(f"/sms/{unknown}")
    assert response.status_code == 404
    assert str(unknown) in response.json()["detail"]
    response = await authed.get("/sms/not-a-uuid")
    assert response.status_code == 422
    [problem] = response.json()["errors"]  # problem details (sms_gateway.problems)
    assert (problem["in"], problem["field"]) == ("path", "sms_uuid")


# ------------------------------------------------------------------ requeue


async def monitor_row(pool: asyncpg.Pool, sms_uuid: UUID) -> asyncpg.Record:
    async with pool.acquire() as connection, connection.transaction():
        row = await connection.fetchrow("SELECT * FROM sms_monitor WHERE uuid = $1", sms_uuid)
    assert row is not None
    return row


async def test_requeue_resets_an_sms_in_error(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    sms_uuid = await insert_sms(
        owner_pool,
        "447700900127",
        overall_status="error",
        results={"blacklist": PASS, "duplicate": PASS, "header": PASS, "hash_length": PASS},
        failed_at_check="mobile",
        retry_count=3,
    )

    response = await authed.post(f"/sms/{sms_uuid}/requeue")

    assert response.status_code == 200, response.text
    assert response.json() == {"uuid": str(sms_uuid), "overall_status": "pending", "retry_count": 3}
    row = await monitor_row(owner_pool, sms_uuid)
    assert row["overall_status"] == "pending"
    assert [row[f"{name}_check"] for name in REGISTRY] == [0] * len(REGISTRY)
    assert row["failed_at_check"] is None
    assert row["retry_count"] == 3
    # Now pending, it cannot be requeued again.
    again = await authed.post(f"/sms/{sms_uuid}/requeue")
    assert again.status_code == 409
    assert "pending" in again.json()["detail"]


async def test_requeue_refuses_what_is_not_in_error(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    for status in ("valid", "invalid", "skipped"):
        sms_uuid = await insert_sms(owner_pool, "447700900128", overall_status=status)
        before = await monitor_row(owner_pool, sms_uuid)
        response = await authed.post(f"/sms/{sms_uuid}/requeue")
        assert response.status_code == 409, status
        assert status in response.json()["detail"]
        assert await monitor_row(owner_pool, sms_uuid) == before
    unjudged = await insert_sms(owner_pool, "447700900129")
    response = await authed.post(f"/sms/{unjudged}/requeue")
    assert response.status_code == 409
    assert "unprocessed" in response.json()["detail"]
    assert (await authed.post(f"/sms/{uuid4()}/requeue")).status_code == 404
    assert (await authed.post("/sms/42/requeue")).status_code == 422


# ------------------------------------------------------------------ blacklist


async def blacklist_senders(pool: asyncpg.Pool, counts: dict[str, int]) -> None:
    async with pool.acquire() as connection, connection.transaction():
        await connection.executemany(
            "INSERT INTO blacklist_sms (sender_number, message_count) VALUES ($1, $2)",
            counts.items(),
        )
        await connection.executemany(
            "INSERT INTO count_sms (sender_number, message_count) VALUES ($1, $2)", counts.items()
        )


async def test_the_blacklist_pages_in_order_and_filters_by_prefix(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    senders = {f"4477009{n:05d}": 11 + n for n in range(7)} | {
        "33612345678": 12,
        "Google": 11,
        "44_odd": 11,
    }
    await blacklist_senders(owner_pool, senders)

    seen: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if after is not None:
            params["after"] = after
        page = (await authed.get("/blacklist", params=params)).json()
        seen += [entry["sender_number"] for entry in page["entries"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(senders, key=lambda s: s.encode())  # byte order

    page = (await authed.get("/blacklist", params={"sender_prefix": "447700"})).json()
    assert [e["sender_number"] for e in page["entries"]] == sorted(
        s for s in senders if s.startswith("447700")
    )
    assert page["entries"][0]["current_count"] == 11
    # The prefix is normalised as senders are: an operator may type it as a phone shows it.
    typed = (await authed.get("/blacklist", params={"sender_prefix": "+44 (7700)"})).json()
    assert typed["entries"] == page["entries"]
    nothing_left = await authed.get("/blacklist", params={"sender_prefix": "00"})
    assert nothing_left.status_code == 422
    assert "after normalisation" in nothing_left.text
    # LIKE wildcards in the prefix are taken literally.
    page = (await authed.get("/blacklist", params={"sender_prefix": "44_"})).json()
    assert [e["sender_number"] for e in page["entries"]] == ["44_odd"]
    assert (await authed.get("/blacklist", params={"limit": 0})).status_code == 422


def judge_with_blacklist_check(
    counts: dict[str, int], blacklisted: set[str], sender_number: str
) -> CheckResult:
    """Run the registry's blacklist check on one SMS with a ledger as the tables say."""

    class TableLedger:
        def increment_count(self, sender: str) -> int:
            counts[sender] = counts.get(sender, 0) + 1
            return counts[sender]

        def is_blacklisted(self, sender: str) -> bool:
            return sender in blacklisted

        def blacklist(self, sender: str, message_count: int) -> None:
            blacklisted.add(sender)

        def is_forwarded(self, sender: str) -> bool:
            return False

    now = datetime.now(UTC)
    message = "ACME 0123456789abcdef +447700900123"
    sms = SmsToJudge(uuid4(), sender_number, message, now, now)
    context = CheckContext(
        DEFAULTS, CheckSecrets(), MessageParts.parse(message, " "), now, TableLedger()
    )
    return REGISTRY["blacklist"](sms, context)


async def sender_state(pool: asyncpg.Pool, sender: str) -> tuple[dict[str, int], set[str]]:
    async with pool.acquire() as connection, connection.transaction():
        count = await connection.fetchval(
            "SELECT message_count FROM count_sms WHERE sender_number = $1", sender
        )
        listed = await connection.fetchval(
            "SELECT true FROM blacklist_sms WHERE sender_number = $1", sender
        )
    return ({sender: count} if count is not None else {}), ({sender} if listed else set())


async def test_removal_resets_the_count_and_the_sender_passes_again(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    sender = "447700900999"
    await blacklist_senders(owner_pool, {sender: 15, "447700900998": 12})
    assert (
        judge_with_blacklist_check(*await sender_state(owner_pool, sender), sender)
        is CheckResult.FAIL
    )

    response = await authed.delete(f"/blacklist/{sender}")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["removed"]["sender_number"] == sender
    assert body["removed"]["message_count"] == 15
    assert body["count_reset_from"] == 15
    counts, blacklisted = await sender_state(owner_pool, sender)
    assert (counts, blacklisted) == ({}, set())
    assert judge_with_blacklist_check(counts, blacklisted, sender) is CheckResult.PASS
    # The other sender is untouched, and a second removal finds nothing.
    assert await sender_state(owner_pool, "447700900998") == (
        {"447700900998": 12},
        {"447700900998"},
    )
    missing = await authed.delete(f"/blacklist/{sender}")
    assert missing.status_code == 404
    assert sender in missing.json()["detail"]
    too_long = await authed.delete("/blacklist/1234567890123456")
    assert too_long.status_code == 422
    assert "15 characters after normalisation" in too_long.text


async def test_removal_finds_the_sender_however_it_is_written(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    await blacklist_senders(owner_pool, {"447700900999": 15})
    response = await authed.delete("/blacklist/+44 (7700) 900-999")
    assert response.status_code == 200, response.text
    assert response.json()["removed"]["sender_number"] == "447700900999"


async def test_unknown_query_parameters_are_refused_naming_them(
    authed: httpx.AsyncClient, owner_pool: asyncpg.Pool
) -> None:
    """A misspelt filter must not answer as if there were none (`prefix` is not
    `sender_prefix`: ignoring it would list the whole blacklist)."""
    await blacklist_senders(owner_pool, {"447700900999": 15})
    for path, params in (
        ("/blacklist", {"prefix": "33"}),
        ("/settings/audit", {"keys": "batch_size"}),
        ("/settings", {"key": "batch_size"}),
        ("/stats", {"window": "5"}),
        (f"/sms/{uuid4()}", {"verbose": "1"}),
    ):
        response = await authed.get(path, params=params)
        assert response.status_code == 422, (path, response.text)
        [name] = params
        assert response.json()["detail"].startswith(f"unknown query parameter(s): {name}")
    assert (await authed.get("/blacklist", params={"sender_prefix": "44"})).status_code == 200
