"""Property-based requests from the OpenAPI schema: whatever a client sends, the gateway answers no 5xx.

Bounded (examples per operation, no per-example deadline) so it runs in well under a minute.
``/readyz`` is left out: its 503 (no worker) is the documented answer, not a crash.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from service_harness import LiveService

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 20


def test_no_request_gets_a_server_error(live_service: LiveService) -> None:
    schema = schemathesis.openapi.from_url(f"{live_service.url}/openapi.json").exclude(path="/readyz")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def probe(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=30)

        probe()
