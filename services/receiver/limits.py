"""Body limits (SPEC §4.1: 413 over 64 KiB), applied while a body is read so that no request can
make the receiver buffer an unbounded body. Used in one place, the receiver's ASGI front
(`api.ReceiverApp`), for every route.

A batch (SPEC §4.2, up to 1000 SMS) cannot fit in 64 KiB (a minimal item is ~80 bytes), so its
path has a larger cap of its own: 1000 SMS of 1600 characters in any script fit in 16 MiB.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.types import Message, Receive, Scope

from services.receiver.errors import BodyTooLarge


class ClientGone(Exception):
    """The client disconnected before its body was read: nobody is left to answer."""


class BodyLimits:
    """The byte limit of each path's request body, and the reading under it."""

    def __init__(self, max_body_bytes: int, path_limits: Mapping[str, int] | None = None) -> None:
        self.max_body_bytes = max_body_bytes
        self.path_limits = dict(path_limits or {})

    def limit(self, path: str) -> int:
        return self.path_limits.get(path, self.max_body_bytes)

    @staticmethod
    def declared_too_large(scope: Scope, limit: int) -> bool:
        """A declared `Content-Length` over the limit: refused before a byte is read."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value) > limit
                except ValueError:
                    return False
        return False

    @staticmethod
    async def read(receive: Receive, limit: int) -> bytes:
        """The whole body; `BodyTooLarge` past `limit`, `ClientGone` on a disconnect."""
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge(rule(limit))
        if not message.get("more_body", False):
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(rule(limit))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def limited(receive: Receive, limit: int) -> Receive:
        """`receive` that raises `BodyTooLarge` once more than `limit` body bytes came in (for
        the routes that read their bodies themselves)."""
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(rule(limit))
            return message

        return limited_receive


def rule(limit: int) -> str:
    return f"body: must be at most {limit} bytes"
