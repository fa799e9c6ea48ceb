"""time_window (SPEC §5.3): the SMS is neither too old nor from the future.

Skipped when `validation_time_window` is 0. Fails when the reference time minus
`received_timestamp` is more than `validation_time_window` seconds (delayed), or when
`received_timestamp` minus `created_at` is more than `time_window_max_skew` seconds (a time from
the future: tampering or a wrong clock). Exactly the limit passes. The reference is `created_at`
for `arrival` (the default, so that a validator backlog never invalidates an SMS that arrived
in time) or `context.now` for `processing`.

Times must be timezone-aware (they come from timestamptz columns); mixing naive and aware
times is a bug and raises `TypeError`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from checks.base import CheckContext, CheckResult, SmsToJudge


class TimeWindowCheck:
    name: Final = "time_window"

    def __call__(self, sms: SmsToJudge, context: CheckContext) -> CheckResult:
        settings = context.settings
        window = settings.validation_time_window
        if window == 0:
            return CheckResult.SKIPPED
        reference = sms.created_at if settings.time_window_reference == "arrival" else context.now
        if reference - sms.received_timestamp > timedelta(seconds=window):
            return CheckResult.FAIL
        if sms.received_timestamp - sms.created_at > timedelta(
            seconds=settings.time_window_max_skew
        ):
            return CheckResult.FAIL
        return CheckResult.PASS


check: Final = TimeWindowCheck()
