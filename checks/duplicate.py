"""duplicate (SPEC §5.3): a sender is forwarded at most once.

Fails when the sender already has an SMS in out_sms, an SMS forwarded earlier in the same batch
included. The validator's ledger answers that from the Redis index and the batch so far (SPEC
§5.4 says when the index may be trusted); this module does no I/O.
"""

from __future__ import annotations

from typing import Final

from checks.base import CheckContext, CheckResult, SmsToJudge


class DuplicateCheck:
    name: Final = "duplicate"

    def __call__(self, sms: SmsToJudge, context: CheckContext) -> CheckResult:
        if context.ledger.is_forwarded(sms.sender_number):
            return CheckResult.FAIL
        return CheckResult.PASS


check: Final = DuplicateCheck()
