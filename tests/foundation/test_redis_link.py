"""The services' Redis client (RedisLink) packs commands with hiredis: the bytes on the wire and
the refusals are those of redis-py's own packer, and values come back as they went."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from sms_gateway.redis import RedisLink
from tests.conftest import TEST_REDIS_DB, Infra


@pytest.fixture
async def link(infra: Infra, redis_client: aioredis.Redis) -> AsyncIterator[aioredis.Redis]:
    redis_link = RedisLink(password=infra.redis_password, db=TEST_REDIS_DB)
    try:
        yield await redis_link.for_target("127.0.0.1", infra.redis_port)
    finally:
        await redis_link.close()


COMMANDS: list[tuple[Any, ...]] = [
    ("SADD", "out_sms_numbers", "447400000001", b"447400000002", "Zürich\\1\t"),
    ("EXPIRE", "out_sms_numbers", 600),
    ("SET", "k", 1.5, "EX", 10),
    ("CONFIG GET", "maxmemory"),
]


def test_commands_are_packed_as_redis_py_packs_them(link: aioredis.Redis) -> None:
    ours = link.connection_pool.connection_class()
    theirs = aioredis.Connection()
    assert type(ours) is not aioredis.Connection
    for command in COMMANDS:
        assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))
    refused: tuple[Any, ...] = (None, True, object())
    for value in refused:
        with pytest.raises(DataError):
            ours.pack_command("SET", "k", value)


async def test_values_come_back_as_they_went(link: aioredis.Redis) -> None:
    members = {"447400000001", "Zürich\\1\t", "A\nB"}
    assert await link.sadd("t", *members, b"bytes", 7) == 5
    assert await link.smembers("t") == {*members, "bytes", "7"}
    async with link.pipeline(transaction=True) as pipe:
        pipe.srem("t", "7")
        pipe.scard("t")
        assert await pipe.execute() == [1, 4]
