"""schemathesis hooks for infergate's specs (loaded by scripts/schemathesis.sh).

Only rules a JSON Schema cannot state are taught here, so generated "valid" data stays valid:
a key's `expires_at` must lie in the future and at most 3650 days ahead (anything else is
refused with 422, rightly).
"""
from datetime import datetime, timedelta, timezone

import schemathesis


@schemathesis.hook
def filter_body(ctx, body):
    if isinstance(body, dict) and isinstance(body.get("expires_at"), str):
        try:
            at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
        except ValueError:
            return True  # not a timestamp at all: a negative case, keep it
        now = datetime.now(timezone.utc)
        return at.tzinfo is None or now < at < now + timedelta(days=3650)
    return True
