"""The shared service skeleton (sms_gateway/service.py): a background task that dies of a bug
turns readiness false and stops the process; one that is cancelled at shutdown does not."""

from __future__ import annotations

import asyncio

from sms_gateway.config import BootstrapConfig, available_cores
from sms_gateway.service import Supervisor


async def test_a_dying_task_makes_the_app_unready_and_stops_the_process() -> None:
    fatal: list[BaseException] = []
    supervisor = Supervisor(on_fatal=fatal.append)

    async def buggy() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("a bug")

    async def steady() -> None:
        await asyncio.sleep(3600)

    calm = supervisor.start(steady(), name="steady")
    before = supervisor.healthy
    task = supervisor.start(buggy(), name="buggy")
    await asyncio.wait([task])
    await asyncio.sleep(0)  # the done callback
    assert (before, supervisor.healthy) == (True, False)
    assert [type(error) for error in fatal] == [RuntimeError]
    calm.cancel()


async def test_a_task_cancelled_at_shutdown_is_not_fatal() -> None:
    fatal: list[BaseException] = []
    supervisor = Supervisor(on_fatal=fatal.append)
    task = supervisor.watch(asyncio.create_task(asyncio.sleep(3600)))
    task.cancel()
    await asyncio.wait([task])
    await asyncio.sleep(0)
    assert fatal == []


def test_processes_default_to_the_service_s_own_default() -> None:
    class OneProcess(BootstrapConfig):
        pass

    class PerCore(BootstrapConfig):
        default_processes = 0

    url = "postgresql://u:p@h/d"
    assert OneProcess(database_url=url, environment="development").process_count == 1
    per_core = PerCore(database_url=url, environment="development")
    assert per_core.process_count == min(available_cores(), 64)
    assert PerCore(database_url=url, environment="development", processes=3).process_count == 3
