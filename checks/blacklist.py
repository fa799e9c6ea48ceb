"""blacklist (SPEC §5.3): count every SMS of a sender; too many, or a blacklisted sender, fails.

Each SMS that reaches this check counts, whatever it was judged: the count is of SMS seen, not of
SMS forwarded. With threshold 10 a new sender's first ten SMS pass and the eleventh fails and
blacklists the sender. Once past the threshold, every further SMS calls `ledger.blacklist` with
the new count, so that `blacklist_sms.message_count` keeps following `count_sms`; whether an
existing row keeps its reason is the ledger's (the validator's upsert's) business.

State lives only in `context.ledger`; this module does no I/O.
"""

from __future__ import annotations

from typing import Final

from checks.base import CheckContext, CheckResult, SmsToJudge


class BlacklistCheck:
    name: Final = "blacklist"

    def __call__(self, sms: SmsToJudge, context: CheckContext) -> CheckResult:
        ledger = context.ledger
        sender = sms.sender_number
        count = ledger.increment_count(sender)
        if count > context.settings.blacklist_threshold:
            ledger.blacklist(sender, count)
            return CheckResult.FAIL
        if ledger.is_blacklisted(sender):
            return CheckResult.FAIL
        return CheckResult.PASS


check: Final = BlacklistCheck()
