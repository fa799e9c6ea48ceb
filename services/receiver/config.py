"""The receiver's bootstrap configuration (SPEC §10): the shared fields plus its secrets and
the bounds of group commit."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr

from sms_gateway.config import BootstrapConfig


class ReceiverConfig(BootstrapConfig):
    """What the receiver reads from the environment (`SMSGW_*`, each also `SMSGW_*_FILE`)."""

    service_name: ClassVar[str] = "sms-receiver"
    default_processes: ClassVar[int] = 0  # one per core
    default_http_port: ClassVar[int] = 8080

    smsgate_signing_key: SecretStr | None = Field(
        None, description="SMS Gateway for Android webhook signing key; unset = no signature check"
    )
    twilio_auth_token: SecretStr | None = Field(
        None, description="Twilio auth token; unset = no X-Twilio-Signature check"
    )
    group_commit_max_wait_ms: float = Field(
        2.0, ge=0, le=50, description="how long a flush waits for more requests to join it, at most"
    )
    group_commit_max_rows: int = Field(
        500, ge=1, le=10_000, description="rows in one group-committed INSERT, at most"
    )
    group_commit_max_flushes: int = Field(
        2, ge=1, le=64, description="flushes in flight at once (each holds one connection)"
    )
    answer_within_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="every SMS request is answered within this many seconds of arriving: "
        "stored (2xx) or, when the row is not committed by then, 503 with Retry-After; the "
        "retries of an outage stop at it",
    )
    http_workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="the receiver's name for `processes` (SMSGW_HTTP_WORKERS): processes "
        "serving HTTP, default one per core; more than 1 runs gunicorn with uvicorn workers",
    )

    @property
    def process_count(self) -> int:
        return self.http_workers or super().process_count
