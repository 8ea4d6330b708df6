"""Prometheus metrics of the streaming consumers: one module, off unless enabled.

``LEARNREC_METRICS_ENABLED=true`` starts an HTTP endpoint on ``LEARNREC_METRICS_PORT``
serving a private registry (so two consumers in one test process do not collide).
Disabled, every ``record_*`` call returns at once and ``prometheus_client`` is not
imported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class MetricsSettings(BaseSettings):
    """Environment: ``LEARNREC_METRICS_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="LEARNREC_METRICS_", extra="forbid", allow_inf_nan=False
    )

    enabled: bool = False
    port: int = Field(9108, ge=0, le=65535, description="0 = any free port")
    addr: str = "127.0.0.1"


class StreamMetrics:
    """Counters, gauges and histograms of one consumer; no-ops when disabled."""

    def __init__(self, settings: MetricsSettings | None = None, consumer: str = "interactions"):
        self.enabled = bool(settings and settings.enabled)
        self.port: int | None = None
        self._last_batch = time.monotonic()
        if not self.enabled:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        assert settings is not None
        self.registry = CollectorRegistry()
        labels = {"consumer": consumer}
        kw: dict[str, Any] = dict(registry=self.registry, labelnames=["consumer"])
        self.events = Counter("learnrec_events", "Events consumed", **kw).labels(**labels)
        self.rate = Gauge("learnrec_events_per_second", "Events/s since last batch", **kw).labels(
            **labels
        )
        self.lag = Gauge("learnrec_consumer_lag", "Records behind the log end", **kw).labels(
            **labels
        )
        hist = dict(kw, buckets=_LATENCY_BUCKETS)
        self.batch = Histogram("learnrec_batch_seconds", "Micro-batch latency", **hist).labels(
            **labels
        )
        self.write = Histogram(
            "learnrec_write_seconds", "Online+offline write latency", **hist
        ).labels(**labels)
        self.fresh = Histogram(
            "learnrec_freshness_seconds", "Produce time to feature readable", **hist
        ).labels(**labels)
        self.dead = Counter("learnrec_dead_letters", "Records dead-lettered", **kw).labels(**labels)
        self.held = Gauge(
            "learnrec_held_interactions", "Interactions held for content", **kw
        ).labels(**labels)
        self.released = Counter(
            "learnrec_held_released", "Held users released by a late item", **kw
        ).labels(**labels)
        self.without = Counter(
            "learnrec_held_embedded_without",
            "Held users embedded without their missing items after held_max_s",
            **kw,
        ).labels(**labels)
        self.missing = Counter(
            "learnrec_held_missing_items", "Items skipped after held_max_s (once each)", **kw
        ).labels(**labels)
        self.rebuilds = Counter(
            "learnrec_store_rebuilds",
            "Partitions found gone back in the online store and rebuilt from the offline log",
            **kw,
        ).labels(**labels)
        self.rebuilt = Counter(
            "learnrec_store_rebuilt_users", "Users rewritten by those rebuilds", **kw
        ).labels(**labels)
        self.port = self._serve(settings)

    def _serve(self, s: MetricsSettings) -> int:
        from prometheus_client import start_http_server

        server, _ = start_http_server(s.port, addr=s.addr, registry=self.registry)
        port = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", s.addr, port)
        return port

    def record_batch(self, accepted: int, dead: int, seconds: float) -> None:
        """The loop's ``on_batch`` hook."""
        if not self.enabled:
            return
        self.events.inc(accepted + dead)
        self.dead.inc(dead)
        self.batch.observe(seconds)
        now = time.monotonic()
        self.rate.set((accepted + dead) / max(now - self._last_batch, 1e-6))
        self._last_batch = now

    def record_write(self, seconds: float, freshness_s: Iterable[float]) -> None:
        if not self.enabled:
            return
        self.write.observe(seconds)
        for f in freshness_s:
            self.fresh.observe(f)

    def record_held(
        self,
        held_interactions: int,
        released_users: int,
        embedded_without: int = 0,
        missing_items: int = 0,
    ) -> None:
        if not self.enabled:
            return
        self.held.set(held_interactions)
        self.released.inc(released_users)
        self.without.inc(embedded_without)
        self.missing.inc(missing_items)

    def record_rebuild(self, partitions: int, users: int) -> None:
        if self.enabled:
            self.rebuilds.inc(partitions)
            self.rebuilt.inc(users)

    def record_lag(self, lag: int) -> None:
        if self.enabled:
            self.lag.set(lag)
