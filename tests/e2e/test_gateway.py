"""The whole gateway as an operator runs it: the three real entry points as processes, talking
to PostgreSQL through pgbouncer and to Redis. An SMS goes in at the receiver, is judged by the
validator and is shown by the admin service, which is what every other test checks in parts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from checks.hash_length import expected_hash
from tests.conftest import TEST_REDIS_DB, FreshDatabase, Infra

pytestmark = pytest.mark.slow

HASH_KEY = "e2e-hash-key-not-a-placeholder"
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
FINAL = {"valid", "invalid", "skipped", "error"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def start(
    name: str, role: str, database: FreshDatabase, infra: Infra, logs: Path, **extra: str
) -> Service:
    port = free_port()
    env = {
        **os.environ,
        "SMSGW_ENVIRONMENT": "development",
        "SMSGW_DATABASE_URL": database.url(role),
        "SMSGW_REDIS_PASSWORD": infra.redis_password,
        "SMSGW_REDIS_DB": str(TEST_REDIS_DB),
        "SMSGW_HTTP_PORT": str(port),
        "SMSGW_LOG_FORMAT": "json",
        **extra,
    }
    log = logs / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name(f"sms-{name}"))],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Service(name, port, process, log)


def wait_ready(service: Service, deadline: float) -> None:
    while time.monotonic() < deadline:
        assert service.process.poll() is None, f"{service.name} exited:\n{service.log_tail()}"
        try:
            if httpx.get(f"{service.url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{service.name} not ready:\n{service.log_tail()}")


@pytest.fixture
def gateway(database: FreshDatabase, infra: Infra, tmp_path: Path) -> Iterator[dict[str, Service]]:
    services = {
        "receiver": start("receiver", "sms_receiver", database, infra, tmp_path),
        "validator": start(
            "validator", "sms_validator", database, infra, tmp_path, SMSGW_HASH_KEY=HASH_KEY
        ),
        "admin": start(
            "admin", "sms_admin", database, infra, tmp_path, SMSGW_ADMIN_TOKENS=f"e2e:{ADMIN_TOKEN}"
        ),
    }
    try:
        deadline = time.monotonic() + 60
        for service in services.values():
            wait_ready(service, deadline)
        yield services
    finally:
        stop_all(services.values())


def stop_all(services: Iterable[Service]) -> None:
    """SIGTERM, then SIGKILL what is still running after 30 s. A SIGKILL alone would leave a
    receiver's gunicorn workers running without their master."""
    running = [service for service in services if service.process.poll() is None]
    for service in running:
        service.process.terminate()
    for service in running:
        try:
            service.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait()


def verification_sms(sender: str, *, header: str = "ACME", tamper: bool = False) -> dict[str, Any]:
    mobile = f"+{sender}"
    digest = expected_hash(HASH_KEY.encode(), header, " ", mobile, length=16, encoding="hex")
    if tamper:
        digest = ("0" if digest[0] != "0" else "1") + digest[1:]
    return {
        "sender_number": f"+{sender[:2]} {sender[2:6]} {sender[6:]}",
        "sms_message": f"{header} {digest} {mobile}",
        "received_timestamp": datetime.now(UTC).isoformat(),
    }


async def judged(admin: httpx.AsyncClient, uuid: str) -> dict[str, Any]:
    """The admin's view of the SMS once the validator has judged it."""
    async with asyncio.timeout(30):
        while True:
            response = await admin.get(f"/sms/{uuid}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["overall_status"] in FINAL:
                return body
            await asyncio.sleep(0.1)


async def test_sms_flow_through_the_running_gateway(
    gateway: dict[str, Service], redis_client: aioredis.Redis
) -> None:
    receiver_url, admin_url = gateway["receiver"].url, gateway["admin"].url
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=receiver_url) as receiver,
        httpx.AsyncClient(base_url=admin_url, headers=headers) as admin,
    ):
        sent = {
            "first": verification_sms("447911123456"),
            "repeat": verification_sms("447911123456"),
            "bad_header": verification_sms("447911123457", header="acme"),
            "bad_hash": verification_sms("447911123458", tamper=True),
        }
        uuids = {}
        for name, body in sent.items():  # in order: "repeat" must come after "first"
            response = await receiver.post("/sms/receive", json=body)
            assert response.status_code == 202, response.text
            uuids[name] = response.json()["uuid"]

        results = {name: await judged(admin, uuid) for name, uuid in uuids.items()}

    assert results["first"]["overall_status"] == "valid"
    assert results["first"]["out_sms"]["sender_number"] == "447911123456"
    assert results["first"]["trace_id"] == uuids["first"].replace("-", "")
    assert all(check["code"] == 1 for check in results["first"]["checks"])
    assert (results["repeat"]["overall_status"], results["repeat"]["failed_at_check"]) == (
        "invalid",
        "duplicate",
    )
    assert (results["bad_header"]["overall_status"], results["bad_header"]["failed_at_check"]) == (
        "invalid",
        "header",
    )
    assert (results["bad_hash"]["overall_status"], results["bad_hash"]["failed_at_check"]) == (
        "invalid",
        "hash_length",
    )
    assert await redis_client.smembers("out_sms_numbers") == {"447911123456"}

    async with httpx.AsyncClient() as client:
        for service in gateway.values():
            metrics = await client.get(f"{service.url}/metrics")
            assert metrics.status_code == 200
            assert "sms_http_requests_total" in metrics.text

    # SIGTERM: every service stops cleanly, well within the 30 s of SPEC §6.5. uvicorn ends by
    # re-raising the signal once shutdown is complete, which systemd counts as a clean stop.
    for service in gateway.values():
        service.process.send_signal(signal.SIGTERM)
    for service in gateway.values():
        returncode = service.process.wait(timeout=30)
        assert returncode in (0, -signal.SIGTERM), (
            f"{service.name} exited {returncode}:\n{service.log_tail()}"
        )
        assert "Application shutdown complete" in service.log_tail()
