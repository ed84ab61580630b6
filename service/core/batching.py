"""Which queued jobs a worker may solve in one engine call: those with the same batch key.

The key is the tenant, the model and the canonical options: jobs of different tenants never
share a call (each tenant has its own sandbox), and the engine solves a batch under one set of
options. Computed here, without torch, because the gateway writes it on the job record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def batch_key(tenant: str, model_id: str, options: dict[str, Any]) -> str:
    """The batch key of a job: a digest of (tenant, model id, options as canonical JSON)."""
    canonical = json.dumps([tenant, model_id, options], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
