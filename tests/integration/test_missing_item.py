"""A missing item delays its user at most ``held_max_s`` (issue 25, item 2), on the real
broker and the real store.

An interaction names an item that was never created: within the bound the user's
embedding is written without it; then the item's content vector lands (what the item
consumer writes) and the idle re-check embeds the user again with it.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from feature_repo.store import FeatureStoreHandle
from learn_core.events import Interaction
from learn_core.history import to_ms
from streaming.producer import EventProducer
from streaming.user_sinks import USER_VIEW, open_history_store
from tests.integration.test_interaction_e2e import (
    consume,
    content_vectors,
    kafka_settings,
    reference,
    write_content,
)

pytestmark = pytest.mark.integration

HELD_MAX_S = 2.0
MARGIN_S = 10.0  # consumer start-up, the idle re-check period, one batch


def test_missing_item_is_skipped_after_the_bound_then_embedded(
    kafka_bootstrap: str, topic_factory, feast_handle: FeatureStoreHandle
) -> None:
    vecs = content_vectors(["a", "b", "never"])
    write_content(feast_handle, {"a": vecs["a"], "b": vecs["b"]})
    k = kafka_settings(kafka_bootstrap, topic_factory)
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    user = f"u-{uuid.uuid4().hex[:6]}"
    events = [
        Interaction(
            event_id=f"{user}-{n}",
            user_id=user,
            item_id=item,
            event_type="click",
            occurred_at=t0 + timedelta(seconds=n),
        )
        for n, item in enumerate(["a", "b", "never"])
    ]
    with EventProducer(kafka_bootstrap, k) as p:
        for ev in events:
            p.send(ev)
        p.flush()

    history = open_history_store(feast_handle)
    group = f"g-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    h1 = consume(
        feast_handle,
        history,
        k,
        group=group,
        until=lambda h: h.stats.embedded_without >= 1,
        held_max_s=HELD_MAX_S,
        held_recheck_s=0.2,
        timeout_s=HELD_MAX_S + MARGIN_S,
    )
    assert HELD_MAX_S <= time.monotonic() - start <= HELD_MAX_S + MARGIN_S
    assert h1.stats.events == 3 and h1.stats.missing_items == 1 and h1.model is not None
    version = h1.model.version
    got = feast_handle.read_embeddings(USER_VIEW, [user], model_version=version)
    assert got.found[0] and got.extra["history_len"][0] == 2  # a and b, not "never"
    # Before the newest event (1 us before it; Feast's SQLite store keeps whole seconds).
    assert to_ms(got.event_timestamp[0]) < to_ms(events[-1].occurred_at)
    partial = got.vectors[0].copy()
    assert set(history.held(None)) == {user}  # still re-checked; nothing accepted is lost
    assert history.get_many([user])[user].item_ids == ["a", "b", "never"]

    # The item arrives: the same group's next consumer re-checks and embeds it.
    write_content(feast_handle, {"never": vecs["never"]})
    h2 = consume(
        feast_handle,
        history,
        k,
        group=group,
        until=lambda h: h.stats.released_users >= 1,
        held_recheck_s=0.2,
        timeout_s=20,
    )
    assert h2.stats.events == 0 and not history.held(None)
    got = feast_handle.read_embeddings(USER_VIEW, [user], model_version=version)
    want = reference(feast_handle, h2)[user]
    assert got.extra["history_len"][0] == 3
    assert to_ms(got.event_timestamp[0]) == want[2] == to_ms(events[-1].occurred_at)
    assert np.abs(got.vectors[0] - want[0]).max() <= 1e-5
    assert np.abs(got.vectors[0] - partial).max() > 1e-3  # a different window, a new vector
    history.close()
