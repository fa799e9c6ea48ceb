"""header (SPEC §5.3): the header fully matches `header_pattern` and is in `header_allowed`.

Skipped when both settings are empty; an empty one of the two imposes nothing. The pattern is
matched with `re.fullmatch` (so `^`/`$` in it are allowed but not needed) and compiled once per
distinct pattern text: settings are reloaded every batch, the pattern rarely changes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from checks.base import CheckContext, CheckResult, SmsToJudge


@lru_cache(maxsize=16)
def _compiled(pattern: str) -> re.Pattern[str]:
    # The settings model has already refused a pattern that does not compile.
    return re.compile(pattern)


class HeaderCheck:
    name: Final = "header"

    def __call__(self, sms: SmsToJudge, context: CheckContext) -> CheckResult:
        pattern = context.settings.header_pattern
        allowed = context.settings.header_allowed
        if not pattern and not allowed:
            return CheckResult.SKIPPED
        header = context.parts.header
        if header is None:
            return CheckResult.FAIL
        if pattern and _compiled(pattern).fullmatch(header) is None:
            return CheckResult.FAIL
        if allowed and header not in allowed:
            return CheckResult.FAIL
        return CheckResult.PASS


check: Final = HeaderCheck()
