"""Workers announce the devices they offer, and the gateway refuses at submission a job for a device
that none offers (422 device_unavailable with the devices on offer), instead of a 202 and a failure."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from service_harness import LiveService, random_states

from service.core.store import RecordStore

pytestmark = pytest.mark.integration


def test_workers_announce_their_devices(live_service: LiveService, tanh_model: dict[str, Any]) -> None:
    store = RecordStore.from_url(live_service.redis_url, live_service.prefix, result_ttl_s=60)
    try:
        offered = store.live_worker_devices()
    finally:
        store.redis.close()
    assert offered and all("cpu" in devices for devices in offered.values()), offered


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine's worker offers CUDA")
def test_a_job_for_a_device_no_worker_offers_is_refused_at_submission(
    live_service: LiveService, tanh_model: dict[str, Any]
) -> None:
    with live_service.client() as http:
        response = http.post(
            "/v1/jobs",
            json={"model_id": tanh_model["id"], "initial_states": random_states(4), "options": {"device": "cuda"}},
        )
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["code"] == "device_unavailable" and problem["devices"] == ["cpu"], problem
        assert problem["field"] == "options.device" and "devices on offer: cpu" in problem["detail"]
        listed = http.get("/v1/jobs", params={"limit": 1000}).json()
        jobs = listed["items"] if isinstance(listed, dict) else listed
        assert not [job for job in jobs if job["options"].get("device") == "cuda"]  # nothing was stored
        accepted = http.post(
            "/v1/jobs",
            json={"model_id": tanh_model["id"], "initial_states": random_states(4), "options": {"device": "cpu"}},
        )
        assert accepted.status_code == 202, accepted.text
