"""bench.ranker's data, pure: labelled exposures, the time split, point-in-time statistics.

No Feast, no torch: the rows built here are what the Feast adapter writes (one row per
change, stamped just after the event that made it) and what the plain pandas join reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from learn_core.datasets import Dataset, conversion_labels

EVENT_TS = "event_timestamp"
#: A row made by an event is stamped this much after it, so that the event's own row (and
#: any other event at the same instant) never reads it: its label cannot leak into it.
AFTER = pd.Timedelta(microseconds=1)
#: Sampled negatives per purchase on purchase-only data (amazon-pantry).
NEGATIVES_PER_POSITIVE = 4
#: The sampler's own seed: every model seed sees the same labelled events.
SAMPLER_SEED = 12345


def labelled_events(ds: Dataset, negatives: int | None = None) -> tuple[pd.DataFrame, str]:
    """Exposures with a 0/1 ``label``, time-sorted; and a sentence saying how they were made.

    Data with both classes (MovieLens: every rating an exposure, rating >= 4 the
    conversion) is taken as is. Purchase-only data gets ``negatives`` per purchase
    (default ``NEGATIVES_PER_POSITIVE``): items drawn uniformly from the catalogue, never
    one the user interacted with at any time, at the purchase's timestamp.
    """
    df = ds.interactions
    label = conversion_labels(df).astype(np.int8)
    out = pd.DataFrame(
        {
            "user_id": df["user_id"].to_numpy(),
            "item_id": df["item_id"].to_numpy(),
            EVENT_TS: pd.to_datetime(df["occurred_at"], utc=True).dt.floor("us").to_numpy(),
            "label": label,
        }
    )
    mixed = 0 < int(label.sum()) < len(label)
    if negatives is None:
        negatives = 0 if mixed else NEGATIVES_PER_POSITIVE
    how = "every interaction an exposure, label = is_conversion (rating >= 4 or purchase)"
    if negatives > 0:
        out = pd.concat([out, sample_negatives(out, ds.item_ids, negatives)], ignore_index=True)
        how = (
            f"every interaction a positive; {negatives} negatives per positive drawn uniformly "
            f"from the {len(ds.item_ids)} catalogue items the user never interacted with, at "
            f"the positive's timestamp (seed {SAMPLER_SEED})"
        )
    out = out.sort_values([EVENT_TS, "user_id", "label"], kind="stable", ignore_index=True)
    return out, how


def sample_negatives(pos: pd.DataFrame, item_ids: list[str], k: int) -> pd.DataFrame:
    """``k`` uniform catalogue items per positive row, outside the user's own items."""
    rng = np.random.default_rng(SAMPLER_SEED)
    items = np.asarray(item_ids)
    index = {i: n for n, i in enumerate(item_ids)}
    own: dict[str, set[int]] = {}
    for u, i in zip(pos["user_id"], pos["item_id"], strict=True):
        own.setdefault(u, set()).add(index[i])
    users, picks = [], []
    for u in pos["user_id"]:
        mine, got = own[u], []
        while len(got) < k:
            c = int(rng.integers(len(items)))
            if c not in mine:
                got.append(c)
        users.append(u)
        picks.append(got)
    return pd.DataFrame(
        {
            "user_id": np.repeat(np.asarray(users), k),
            "item_id": items[np.asarray(picks).reshape(-1)],
            EVENT_TS: np.repeat(pos[EVENT_TS].to_numpy(), k),
            "label": np.zeros(len(users) * k, np.int8),
        }
    )


def epoch_s(ts: pd.Series) -> np.ndarray:
    """Seconds since the epoch, whatever the column's time unit."""
    t = pd.to_datetime(ts, utc=True)
    return ((t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(float)


@dataclass(frozen=True)
class TimeSplit:
    """Three periods by time: the towers learn on the first, the ranker on the second
    (its last part for early stopping), and the test is the third, read once."""

    towers_end: pd.Timestamp
    valid_start: pd.Timestamp
    test_start: pd.Timestamp

    def period(self, ts: pd.Series) -> np.ndarray:
        """Per row: ``towers``, ``train``, ``valid`` or ``test``."""
        t = pd.to_datetime(ts, utc=True)
        return np.select(
            [t < self.towers_end, t < self.valid_start, t < self.test_start],
            ["towers", "train", "valid"],
            "test",
        )


def time_split(
    ts: pd.Series, towers: float = 0.6, valid: float = 0.75, test: float = 0.8
) -> TimeSplit:
    """Boundaries at these quantiles of the event times (ties stay in one period)."""
    t = pd.to_datetime(ts, utc=True).sort_values(ignore_index=True)

    def at(q: float) -> pd.Timestamp:
        return t.iloc[min(len(t) - 1, int(q * len(t)))]

    return TimeSplit(at(towers), at(valid), at(test))


def stats_rows(
    events: pd.DataFrame, key: str, category: dict[str, str] | None = None
) -> pd.DataFrame:
    """Running counts of one entity, one row per instant it changed, stamped ``AFTER`` it.

    ``events`` is time-sorted with ``label``. Several events of one entity at one instant
    give one row (their sum), so a point-in-time read at that instant sees none of them.
    """
    e = events[[key, EVENT_TS, "label"]]
    g = e.groupby([key, EVENT_TS], sort=True, observed=True)["label"].agg(["size", "sum"])
    g = g.reset_index()
    by = g.groupby(key, sort=False)
    secs = epoch_s(g[EVENT_TS])
    out = pd.DataFrame(
        {
            key: g[key].to_numpy(),
            "events": by["size"].cumsum().to_numpy(np.int64),
            "conversions": by["sum"].cumsum().to_numpy(np.int64),
            "first_event_s": pd.Series(secs).groupby(g[key].to_numpy()).transform("min").to_numpy(),
            "last_event_s": secs,
            EVENT_TS: pd.to_datetime(g[EVENT_TS], utc=True) + AFTER,
        }
    )
    if category is not None:
        out.insert(5, "category", out[key].map(category).fillna("").to_numpy())
    return out


@dataclass(frozen=True)
class Slices:
    """Masks over the test rows: ``cold`` items had no interaction before the test period;
    ``tail`` items are the bottom 80% of the other items by interactions before it.

    Interactions, not exposures: a sampled negative is no sign that an item was known
    (uniform negatives reach every item), and on MovieLens the two are the same rows.
    """

    cold: np.ndarray
    tail: np.ndarray


def slices(before: pd.DataFrame, test: pd.DataFrame, tail_share: float = 0.8) -> Slices:
    counts = before["item_id"].value_counts()
    cold = ~test["item_id"].isin(counts.index).to_numpy()
    ranked = counts.sort_values(kind="stable").index  # fewest first
    tail_items = set(ranked[: int(tail_share * len(ranked))])
    tail = test["item_id"].isin(tail_items).to_numpy()
    return Slices(cold=cold, tail=tail)


def derived(frame: pd.DataFrame) -> pd.DataFrame:
    """Stats features as the ranker reads them: counts, smoothed rates and recencies (s)
    at the row's time, category as a code; absent stats (first sight) stay NaN."""
    now = epoch_s(frame[EVENT_TS])
    out = pd.DataFrame(index=frame.index)
    for side in ("user", "item"):
        n = frame[f"{side}_events"].astype(float)
        c = frame[f"{side}_conversions"].astype(float)
        out[f"{side}_events"] = n
        out[f"{side}_rate"] = (c + 1.0) / (n + 2.0)
        out[f"{side}_since_last_s"] = now - frame[f"{side}_last_event_s"].astype(float)
        out[f"{side}_age_s"] = now - frame[f"{side}_first_event_s"].astype(float)
    return out
