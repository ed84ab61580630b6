"""Prometheus metrics read from the job store at scrape time, so every gateway reports the same numbers."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.core.store import DURATION_BUCKETS, RecordStore


class JobMetrics(Collector):
    """``fpf_jobs{state}``, ``fpf_queue_depth`` and ``fpf_job_duration_seconds``."""

    def __init__(self, store: RecordStore, queue: str) -> None:
        self.store = store
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("fpf_jobs", "Jobs known to the store, by state", labels=["state"])
        for status, count in self.store.count_jobs().items():
            jobs.add_metric([status.value], count)
        yield jobs
        yield GaugeMetricFamily(
            "fpf_queue_depth", "Messages waiting in the worker queue", value=self.store.queue_depth(self.queue)
        )
        counts = self.store.durations()
        buckets = [(repr(float(b)), counts.get(repr(float(b)), 0.0)) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", counts.get("+Inf", 0.0)))
        yield HistogramMetricFamily(
            "fpf_job_duration_seconds",
            "Submission to end of finished jobs",
            buckets=buckets,
            sum_value=counts.get("sum", 0.0),
        )
