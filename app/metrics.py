"""The gateway's metrics (prometheus-client), and how /metrics renders them.

Under `n8n-gate serve --workers N` (N > 1) each worker writes its values to files in
PROMETHEUS_MULTIPROC_DIR (serve sets it, app/cli.py) and a scrape of any worker reads every
worker's files: the counters are the whole server's, never one worker's share. With one process
they live in memory. Facts about the shared delivery queue are read from the database at scrape
time (`QueueFacts`), as they belong to no process.

Every label is bounded: workflows by the list in GATE_METRICS_WORKFLOWS (the rest are `other`),
provider routes by the routes file, the rest by fixed sets.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
# The queue's gauges count this many rows at most: a scrape must stay cheap under any backlog.
QUEUE_COUNT_CAP = 100_000

# `*_created` samples are one more series per child and nothing a dashboard or rule reads.
disable_created_metrics()  # type: ignore[no-untyped-call]

TriggerMode = Literal["sync", "async"]
TriggerOutcome = Literal[
    "forwarded",
    "accepted",
    "replayed",
    "in_flight",
    "key_reused",
    "outcome_unknown",
    "rejected",
    "error",
]
RefusalReason = Literal["signature", "missing-key", "key-reused"]
DeliveryResult = Literal["completed", "retry_scheduled", "dead_letter"]
BatchedWrite = Literal["claim", "accept", "record"]
AlertResult = Literal["delivered", "retry_scheduled", "given_up"]

TRIGGERS = Counter(
    "n8n_gate_triggers",
    "Triggers and provider deliveries answered, by how they were asked to run (sync, or async "
    "with Prefer: respond-async), what the gateway did, and the answer's status class.",
    ["mode", "outcome", "status_class"],
)
FORWARD_DURATION = Histogram(
    "n8n_gate_forward_duration_seconds",
    "Time from sending a call to n8n to having its whole answer (or failing), by workflow and "
    "result (n8n's status class, or 'error').",
    ["workflow", "result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
N8N_FAILURES = Counter(
    "n8n_gate_n8n_failures",
    "Calls to n8n that failed, by type: a network failure (n8n-connection-refused, "
    "n8n-read-timeout, ...) or an answer that means failure (n8n-5xx, n8n-4xx, ...).",
    ["type"],
)
DELIVERY_ATTEMPTS = Counter(
    "n8n_gate_delivery_attempts",
    "Attempts of async deliveries by result: completed, retry_scheduled (failed, due again) "
    "or dead_letter (failed for good).",
    ["result"],
)
RETRIES_REQUESTED = Counter(
    "n8n_gate_retries_requested",
    "Failed async executions put back in the queue by an operator (API or dashboard).",
)
DEAD_LETTERS = Counter(
    "n8n_gate_dead_letters",
    "Async executions that ended failed with no attempt left (dead letters).",
)
OUTCOME_UNKNOWN = Counter(
    "n8n_gate_outcome_unknown",
    "Attempts that may have run in n8n without the gateway learning how they went.",
)
DELIVERIES_REFUSED = Counter(
    "n8n_gate_deliveries_refused",
    "Provider deliveries refused with nothing stored: a signature that did not verify, a "
    "delivery without its key, or a known id with another body.",
    ["route", "reason"],
)
ALERT_SENDS = Counter(
    "n8n_gate_alert_sends",
    "Sends of alerts (dead letters, unknown outcomes) to GATE_ALERT_URL by result: delivered, "
    "retry_scheduled (failed, sent again later) or given_up (failed for the last time).",
    ["result"],
)
ALERTS_DROPPED = Counter(
    "n8n_gate_alerts_dropped",
    "Alerts that came due in a process without GATE_ALERT_URL, and were dropped unsent.",
)
DB_CONNECTIONS_IN_USE = Gauge(
    "n8n_gate_db_pool_connections_in_use",
    "Database connections lent out of the pools (all processes).",
    multiprocess_mode="livesum",
)
DB_ACQUIRE_DURATION = Histogram(
    "n8n_gate_db_pool_acquire_seconds",
    "Time spent waiting for a database connection from the pool.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BATCH_SIZE = Histogram(
    "n8n_gate_group_commit_batch_size",
    "Calls committed together in one group-committed write (claims, accepts, outcomes).",
    ["write"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
REPLAY_CACHE_LOOKUPS = Counter(
    "n8n_gate_replay_cache_lookups",
    "Replays looked up in the process's replay cache, by result (hit or miss).",
    ["result"],
)
REPLAY_CACHE_BYTES = Gauge(
    "n8n_gate_replay_cache_bytes",
    "Bytes of answers held by the replay caches (all processes).",
    multiprocess_mode="livesum",
)


# A metric's child for a set of label values, looked up once: prometheus-client's labels()
# took 5-7 µs a call, several times per trigger. Bounded as the labels are.
@functools.cache
def _counter(metric: Counter, *values: str) -> Counter:
    return metric.labels(*values)


@functools.cache
def _histogram(metric: Histogram, *values: str) -> Histogram:
    return metric.labels(*values)


def trigger_answered(*, mode: TriggerMode, outcome: TriggerOutcome, status: int) -> None:
    _counter(TRIGGERS, mode, outcome, f"{status // 100}xx").inc()


def delivery_refused(route: str, reason: RefusalReason) -> None:
    _counter(DELIVERIES_REFUSED, route, reason).inc()


def forward_finished(*, workflow: str, status: int | None, seconds: float) -> None:
    """One call to n8n: `status` is n8n's, None when no answer came."""
    result = "error" if status is None else f"{status // 100}xx"
    _histogram(FORWARD_DURATION, _workflows.label(workflow), result).observe(seconds)


def n8n_failed(error_type: str) -> None:
    """An attempt's failure, counted when it is n8n's (not the gateway's own, such as a
    signing secret the database could not give)."""
    if error_type.startswith("n8n-"):
        _counter(N8N_FAILURES, _bounded_error_type(error_type)).inc()


def delivery_attempted(result: DeliveryResult) -> None:
    _counter(DELIVERY_ATTEMPTS, result).inc()
    if result == "dead_letter":
        DEAD_LETTERS.inc()


def alert_sent(result: AlertResult) -> None:
    _counter(ALERT_SENDS, result).inc()


def batch_committed(write: BatchedWrite, size: int) -> None:
    _histogram(BATCH_SIZE, write).observe(size)


def replay_cache_looked_up(*, hit: bool) -> None:
    _counter(REPLAY_CACHE_LOOKUPS, "hit" if hit else "miss").inc()


_ERROR_TYPE = re.compile(r"^n8n-[a-z0-9-]{1,40}$")


def _bounded_error_type(error_type: str) -> str:
    """Error types are the gateway's own slugs; anything else (never expected) is `other`."""
    return error_type if _ERROR_TYPE.fullmatch(error_type) else OTHER


class WorkflowLabels:
    """The workflows named in GATE_METRICS_WORKFLOWS keep a label of their own (`mode/path`);
    every other is `other`. A fixed list, the same in every process: labels chosen as paths
    came would differ between workers (one worker's `orders` is another's `other`) and let a
    caller inventing paths take the places."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self._paths = frozenset(paths)

    def label(self, workflow: str) -> str:
        _mode, _, path = workflow.partition("/")
        return workflow if path in self._paths else OTHER


_workflows = WorkflowLabels()


def label_workflows(paths: Iterable[str]) -> None:
    """GATE_METRICS_WORKFLOWS, set once at startup."""
    global _workflows
    _workflows = WorkflowLabels(paths)


@dataclass(frozen=True)
class QueueFacts:
    """The delivery queue as the database has it at scrape time; None: it could not be read."""

    due: int
    scheduled: int
    running: int
    oldest_due_age_seconds: float


@dataclass(frozen=True)
class ScrapeFacts:
    """What a scrape reads from the database: whether it answered, and the queue (None when
    it could not be read in time)."""

    database_up: bool
    queue: QueueFacts | None


class _ScrapeCollector(Collector):
    def __init__(self, facts: ScrapeFacts) -> None:
        self._database_up = facts.database_up
        self._queue = facts.queue

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "n8n_gate_database_up",
            "1 when the scrape could connect to the database and query it, else 0.",
            value=1 if self._database_up else 0,
        )
        if self._queue is None:
            return
        depth = GaugeMetricFamily(
            "n8n_gate_queue_depth",
            "Async executions in the delivery queue (all tenants): due now, scheduled for a "
            f"later attempt, or being delivered; counted up to {QUEUE_COUNT_CAP:,} each.",
            labels=["state"],
        )
        depth.add_metric(["due"], self._queue.due)
        depth.add_metric(["scheduled"], self._queue.scheduled)
        depth.add_metric(["running"], self._queue.running)
        yield depth
        yield GaugeMetricFamily(
            "n8n_gate_queue_oldest_due_age_seconds",
            "How long the oldest due delivery has waited past its due time (0: none waiting).",
            value=self._queue.oldest_due_age_seconds,
        )


class _ProcessMetrics(Collector):
    """This process's metrics (one process serving): the default registry's."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(facts: ScrapeFacts, *, accept: str | None) -> tuple[bytes, str]:
    """Every metric, and its content type, in the format the scraper's Accept asks for (the
    Prometheus text format, or OpenMetrics): all workers' under multiprocess mode."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(_ScrapeCollector(facts))
    directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if directory is None:
        scrape.register(_ProcessMetrics())
    else:
        _forget_dead_processes(Path(directory))
        multiprocess.MultiProcessCollector(scrape, path=directory)  # type: ignore[no-untyped-call]
    encode, content_type = choose_encoder(accept or "")
    return encode(scrape), content_type


def _forget_dead_processes(directory: Path) -> None:
    """A worker that died (and was replaced) leaves its live gauges' files behind: they would
    count its connections and cache bytes for ever. Its counters stay: they happened."""
    for pid in _pids_of(directory.glob("gauge_live*_*.db")):
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, path=str(directory))  # type: ignore[no-untyped-call]


def _pids_of(files: Iterator[Path]) -> Sequence[int]:
    pids = set()
    for file in files:
        digits = file.stem.rsplit("_", 1)[-1]
        if digits.isdigit():
            pids.add(int(digits))
    return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_multiprocess_directory(directory: Path) -> None:
    """Empties the directory workers will write to: values of an earlier run must not count."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
