"""The schemathesis hooks of bench/api_fuzz.py: a check it adds, and fresh idempotency keys.

Fresh keys: an `Idempotency-Key` names one request, and the same key with another request is
refused 422 `idempotency-mismatch` by design (docs/api.md). No schema can say "unique", so the
fuzzer, drawing keys from the header's pattern, would reuse them across different requests and
report those 422s as valid data refused. Each request it sends gets a key of its own instead (a
UUID, which the pattern allows), as a client does; replays are tested in
crates/strata-api/tests/idempotency.rs.

The check that bench/api_fuzz.py adds to the built-in ones (loaded through
SCHEMATHESIS_HOOKS).

A read that sends `Strata-Read-After` with a commit the data tier has not reached is answered
503 `unavailable` with `Retry-After`, never with older data (docs/api.md): a schema-valid token
from the future — the fuzzer draws them from 0 to 2^63 - 1 — gets that answer by design. So the
run lets `not_a_server_error` pass a 503 on the two reads that take the header, and this check
holds every such 503 to exactly that case: the request carried the header, and the answer is the
`unavailable` problem with `Retry-After`. Any other 5xx of those reads still fails.
"""

import json
import uuid

import schemathesis

READS = {("GET", "/users"), ("GET", "/users/{id}")}


def _header(mapping, name):
    for key, value in (mapping or {}).items():
        if key.lower() == name:
            return value[0] if isinstance(value, list) else value
    return None


@schemathesis.check
def read_after_503_is_lag_only(ctx, response, case):
    if response.status_code < 500 or (case.method.upper(), case.path) not in READS:
        return None
    token = _header(case.headers, "strata-read-after")
    try:
        kind = json.loads(response.content).get("type")
    except (ValueError, AttributeError):
        kind = None
    retry_after = _header(response.headers, "retry-after")
    if response.status_code == 503 and token is not None and kind == "urn:strata:problem:unavailable" \
            and retry_after is not None:
        return None
    raise AssertionError(
        f"{response.status_code} ({kind}) is not the answer to a Strata-Read-After the data tier "
        f"has not reached (Strata-Read-After: {token!r}, Retry-After: {retry_after!r})")


@schemathesis.hook
def before_call(ctx, case, kwargs):
    for name in list((case.headers or {}).keys()):
        if name.lower() == "idempotency-key":
            case.headers[name] = str(uuid.uuid4())
