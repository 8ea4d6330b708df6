"""Both consumers of the data flow on background threads, over one Kafka and one Feast store.

Shared by ``learnrec demo`` and the end-to-end tests, so that what the tests check is
what the demo runs. Each consumer is built by its own wiring function
(``build_item_loop``, ``build_interaction_loop``), as the CLI's services are.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from feature_repo.settings import FeastSettings
    from learn_core.embedding.base import ContentEmbedder
    from streaming.consumer import MicroBatchLoop
    from streaming.interaction_consumer import InteractionHandler
    from streaming.item_consumer import ItemHandler
    from streaming.settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass
class _Running:
    name: str
    loop: MicroBatchLoop
    thread: threading.Thread
    handle: Any


@dataclass
class Pipeline:
    """The item and interaction consumers on background threads, one Feast handle each.

    The item consumer's sink also writes item-tower vectors of the registry's current
    model (``streaming.sinks.ItemTowerSink``), so new items are retrievable at once;
    the interaction consumer serves the registry's current user tower.
    """

    bootstrap: str
    kafka: KafkaSettings
    feast: FeastSettings
    registry: Any
    embedder: ContentEmbedder
    group_prefix: str = field(default_factory=lambda: f"demo-{uuid.uuid4().hex[:8]}")
    history_len: int = 50
    reload_check_s: float = 0.5
    stop: threading.Event = field(default_factory=threading.Event)
    running: list[_Running] = field(default_factory=list)
    item_handler: ItemHandler | None = None
    interaction_handler: InteractionHandler | None = None
    errors: list[BaseException] = field(default_factory=list)

    def start(self) -> None:
        from feature_repo.store import open_store
        from learn_core.serving import RegistryTowers
        from streaming.interaction_consumer import (
            InteractionConsumerSettings,
            build_interaction_loop,
        )
        from streaming.item_consumer import ItemConsumerSettings, build_item_loop
        from streaming.sinks import FeastItemSink
        from streaming.user_sinks import FeastUserSink, open_history_store

        h_items = open_store(self.feast)
        item_loop, self.item_handler = build_item_loop(
            self.bootstrap,
            FeastItemSink(h_items),
            self.embedder,
            settings=ItemConsumerSettings(group_id=f"{self.group_prefix}-items"),
            kafka=self.kafka,
            models=self.registry,
        )
        h_users = open_store(self.feast)
        history = open_history_store(h_users)
        inter_loop, self.interaction_handler = build_interaction_loop(
            self.bootstrap,
            FeastUserSink(h_users),
            history,
            RegistryTowers(self.registry),
            settings=InteractionConsumerSettings(
                group_id=f"{self.group_prefix}-interactions",
                history_len=self.history_len,
                reload_check_s=self.reload_check_s,
            ),
            kafka=self.kafka,
        )
        for name, loop, handle in (
            ("items", item_loop, h_items),
            ("interactions", inter_loop, (h_users, history)),
        ):
            t = threading.Thread(
                target=self._run, args=(loop,), name=f"consumer-{name}", daemon=True
            )
            self.running.append(_Running(name, loop, t, handle))
            t.start()

    def _run(self, loop: MicroBatchLoop) -> None:
        try:
            while not self.stop.is_set():
                loop.step(self.stop)
        except BaseException as exc:  # surfaced by wait_for / close
            log.exception("consumer thread failed")
            self.errors.append(exc)

    def counts(self) -> tuple[int, int]:
        items = self.item_handler.written if self.item_handler else 0
        inter = self.interaction_handler.stats.events if self.interaction_handler else 0
        return items, inter

    def wait_for(self, items: int, interactions: int, timeout_s: float = 300.0) -> float:
        """Block until the consumers have handled this many events; returns seconds."""
        t0 = time.monotonic()
        while True:
            if self.errors:
                raise RuntimeError("a consumer failed") from self.errors[0]
            got_i, got_e = self.counts()
            if got_i >= items and got_e >= interactions:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(
                    f"consumers reached {got_i}/{items} items, {got_e}/{interactions} interactions"
                )
            time.sleep(0.1)

    def close(self) -> None:
        from streaming.item_consumer import close_loop

        self.stop.set()
        for r in self.running:
            r.thread.join(timeout=30)
            close_loop(r.loop)
            handles = r.handle if isinstance(r.handle, tuple) else (r.handle,)
            for h in handles:
                h.close()
