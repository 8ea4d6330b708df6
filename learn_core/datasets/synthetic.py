"""Deterministic generator of the sample e-commerce catalogue with planted preferences.

Each topic has its own vocabulary (nouns, adjectives, brands, keywords, attributes),
so item text carries the topic; each user prefers one to three topics and mostly acts
inside them, drifting between them over time. That planted structure is what the
learning test and the demo rely on: a content-aware sequential model should find it,
popularity cannot.

The shipped sample under ``learn_core/datasets/sample/`` is this generator's output::

    python -m learn_core.datasets.synthetic --out learn_core/datasets/sample
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from learn_core.datasets.base import Dataset, normalise_interactions
from learn_core.events import ItemCreated


@dataclass(frozen=True)
class Topic:
    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    brands: tuple[str, ...]
    keywords: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]
    price: tuple[float, float]
    uses: tuple[str, ...]


TOPICS: tuple[Topic, ...] = (
    Topic("Running Gear", ("running shoe", "trail runner", "sports watch", "compression tights", "hydration vest"),
          ("lightweight", "breathable", "cushioned", "reflective", "grippy"), ("Stridex", "Pacewell", "Runora"),
          ("marathon", "jogging", "trail", "cardio", "endurance", "stride"),
          {"size": ("S", "M", "L", "42", "44"), "drop": ("4mm", "8mm", "10mm")}, (25, 180),
          ("long runs", "tempo workouts", "race day", "muddy trails")),
    Topic("Coffee & Tea", ("espresso grinder", "pour-over kettle", "matcha whisk", "french press", "loose leaf tea"),
          ("single-origin", "dark roast", "ceremonial", "stovetop", "burr"), ("Beanhaus", "Steepwise", "Crema Co"),
          ("espresso", "brewing", "barista", "caffeine", "aroma", "roast"),
          {"origin": ("Ethiopia", "Colombia", "Kyoto", "Assam"), "capacity": ("350ml", "1l")}, (8, 320),
          ("morning brews", "slow weekends", "cafe-style drinks", "tea ceremonies")),
    Topic("Camping", ("two-person tent", "sleeping bag", "camp stove", "headlamp", "trekking poles"),
          ("waterproof", "ultralight", "insulated", "packable", "windproof"), ("Summitra", "Wildloft", "Pinecrest"),
          ("hiking", "backpacking", "outdoors", "wilderness", "campsite", "bivouac"),
          {"season": ("3-season", "4-season"), "weight": ("900g", "1.4kg", "2kg")}, (15, 450),
          ("alpine nights", "weekend trips", "thru-hikes", "backcountry camps")),
    Topic("Baby Care", ("baby stroller", "diaper bag", "teething ring", "baby monitor", "swaddle blanket"),
          ("hypoallergenic", "soft-touch", "foldable", "BPA-free", "organic cotton"), ("Littlenest", "Cuddlebug", "Tinysteps"),
          ("newborn", "infant", "toddler", "nursery", "parenting", "lullaby"),
          {"age": ("0-6 months", "6-12 months", "1-3 years"), "color": ("mint", "sand", "blush")}, (6, 600),
          ("nap time", "first walks", "night feeds", "nursery setups")),
    Topic("Gaming", ("mechanical keyboard", "gaming mouse", "headset", "controller", "capture card"),
          ("RGB", "low-latency", "wireless", "ergonomic", "hot-swappable"), ("Fragcore", "Pixelforge", "Nexaplay"),
          ("esports", "fps", "streaming", "console", "latency", "multiplayer"),
          {"switch": ("linear", "tactile", "clicky"), "dpi": ("8000", "16000", "26000")}, (20, 400),
          ("ranked matches", "late-night raids", "live streams", "speedruns")),
    Topic("Kitchen Cookware", ("cast iron skillet", "chef knife", "dutch oven", "wok", "cutting board"),
          ("pre-seasoned", "forged", "enamelled", "carbon steel", "non-stick"), ("Ironhearth", "Sabrella", "Panmaster"),
          ("cooking", "searing", "baking", "chef", "recipes", "simmer"),
          {"material": ("cast iron", "stainless", "walnut"), "diameter": ("20cm", "26cm", "30cm")}, (12, 350),
          ("sunday roasts", "stir fries", "family dinners", "meal prep")),
    Topic("Skincare", ("vitamin C serum", "night cream", "sunscreen", "clay mask", "cleansing balm"),
          ("fragrance-free", "hydrating", "brightening", "non-comedogenic", "gentle"), ("Dermalux", "Glowen", "Purelea"),
          ("skincare", "serum", "moisturizer", "spf", "glow", "pores"),
          {"skin type": ("dry", "oily", "combination", "sensitive"), "volume": ("30ml", "50ml")}, (9, 120),
          ("morning routines", "sunny days", "self-care evenings", "winter dryness")),
    Topic("Books: Sci-Fi", ("space opera novel", "cyberpunk anthology", "time-travel thriller", "first-contact saga", "dystopian epic"),
          ("award-winning", "hardcover", "illustrated", "bestselling", "collector's"), ("Nebula Press", "Orbit Lane", "Quasar Books"),
          ("science fiction", "galaxy", "robots", "starship", "futurism", "aliens"),
          {"format": ("hardcover", "paperback", "ebook"), "pages": ("320", "480", "720")}, (7, 60),
          ("long flights", "rainy evenings", "book clubs", "summer reading")),
    Topic("Gardening", ("raised garden bed", "pruning shears", "seed starter kit", "watering can", "compost bin"),
          ("heirloom", "rust-proof", "self-watering", "biodegradable", "heavy-duty"), ("Greenthumb", "Verdance", "Rootwell"),
          ("gardening", "seedlings", "compost", "perennials", "harvest", "soil"),
          {"zone": ("zone 5", "zone 7", "zone 9"), "volume": ("10l", "40l", "120l")}, (5, 250),
          ("spring planting", "balcony gardens", "vegetable patches", "autumn cleanups")),
    Topic("Pet Supplies", ("dog harness", "cat tree", "slow feeder bowl", "chew toy", "pet carrier"),
          ("durable", "washable", "orthopedic", "interactive", "escape-proof"), ("Pawsome", "Whiskerly", "Barkhaven"),
          ("dog", "cat", "puppy", "kitten", "grooming", "treats"),
          {"pet size": ("small", "medium", "large"), "color": ("navy", "olive", "red")}, (4, 220),
          ("daily walks", "indoor play", "vet visits", "road trips")),
)  # fmt: skip

EVENT_KINDS = ("view", "click", "like", "add_to_cart", "purchase")
_BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)


def _make_items(rng: np.random.Generator, n_items: int) -> tuple[list[ItemCreated], np.ndarray]:
    items: list[ItemCreated] = []
    topics = np.arange(n_items) % len(TOPICS)
    rng.shuffle(topics)
    for i, t in enumerate(topics):
        tp = TOPICS[t]
        noun, adj, brand = rng.choice(tp.nouns), rng.choice(tp.adjectives), rng.choice(tp.brands)
        model = f"{chr(65 + int(rng.integers(26)))}{int(rng.integers(10, 99))}"
        kws = [str(k) for k in rng.choice(tp.keywords, size=3, replace=False)]
        attrs = {k: str(rng.choice(v)) for k, v in tp.attributes.items()}
        lo, hi = tp.price
        price = round(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), 2)
        use = rng.choice(tp.uses)
        items.append(
            ItemCreated(
                item_id=f"i{i:04d}",
                title=f"{brand} {adj} {noun} {model}",
                category=tp.name,
                brand=str(brand),
                price=price,
                keywords=kws,
                attributes=attrs,
                description=f"A {adj} {noun} from {brand}, made for {use}. Loved for {kws[0]} and {kws[1]}.",
                created_at=_BASE_TIME - timedelta(days=int(rng.integers(1, 365))),
            )
        )
    return items, topics


def generate(
    n_items: int = 500,
    n_users: int = 300,
    mean_events: float = 48.0,
    seed: int = 7,
    name: str = "sample",
) -> tuple[Dataset, np.ndarray]:
    """Build the catalogue and interactions; also return each item's planted topic index."""
    rng = np.random.default_rng(seed)
    items, topics = _make_items(rng, n_items)
    by_topic = [np.flatnonzero(topics == t) for t in range(len(TOPICS))]
    # A Zipf-like within-topic popularity so that popularity is a fair, non-trivial baseline.
    pop = [1.0 / np.arange(1, len(ix) + 1) ** 0.8 for ix in by_topic]
    pop = [p / p.sum() for p in pop]
    rows = []
    for u in range(n_users):
        n_fav = int(rng.integers(1, 4))
        favs = rng.choice(len(TOPICS), size=n_fav, replace=False)
        # Heavy-tailed activity, with some users of five events or fewer (the short-history slice).
        if rng.random() < 0.1:
            n_events = int(rng.integers(2, 6))
        else:
            n_events = min(400, max(6, int(rng.lognormal(np.log(mean_events), 0.8))))
        t = _BASE_TIME + timedelta(hours=float(rng.uniform(0, 24 * 30)))
        current = int(rng.choice(favs))
        for k in range(n_events):
            if rng.random() < 0.15:
                current = int(rng.choice(favs))  # drift between the user's own topics
            topic = current if rng.random() < 0.9 else int(rng.integers(len(TOPICS)))
            item = int(rng.choice(by_topic[topic], p=pop[topic]))
            liked = topic in favs
            kind = rng.choice(
                EVENT_KINDS,
                p=[0.45, 0.25, 0.12, 0.10, 0.08] if liked else [0.7, 0.2, 0.05, 0.04, 0.01],
            )
            t += timedelta(minutes=float(rng.exponential(180.0)))
            rows.append((f"e{u:03d}{k:04d}", f"u{u:03d}", items[item].item_id, str(kind), t))
    df = pd.DataFrame(rows, columns=["event_id", "user_id", "item_id", "event_type", "occurred_at"])
    df["value"] = np.nan
    return Dataset(name, items, normalise_interactions(df)), topics


def planted_content(
    topics: np.ndarray, dim: int = 32, noise: float = 0.6, seed: int = 0
) -> np.ndarray:
    """Stand-in content embeddings with topic structure (for fast tests, no language model).

    Each item is its topic's random centroid plus isotropic noise, L2-normalised, like
    a real content model that places same-topic texts close together.
    """
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((int(topics.max()) + 1, dim))
    x = centroids[topics] + noise * rng.standard_normal((len(topics), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def write_sample(dataset: Dataset, out: Path) -> None:
    """Write ``items.jsonl`` and ``interactions.csv`` (compact: the sample ships in the wheel)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "items.jsonl", "w", encoding="utf-8") as f:
        for it in dataset.items:
            f.write(it.model_dump_json(exclude_none=True) + "\n")
    df = dataset.interactions.copy()
    df["occurred_at"] = df["occurred_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    df.to_csv(out / "interactions.csv", index=False)


def read_sample(path: Path, name: str = "sample") -> Dataset:
    """Read a directory written by ``write_sample``."""
    with open(path / "items.jsonl", encoding="utf-8") as f:
        items = [ItemCreated.model_validate_json(line) for line in f if line.strip()]
    df = pd.read_csv(
        path / "interactions.csv", dtype={"event_id": str, "user_id": str, "item_id": str}
    )
    return Dataset(name, items, normalise_interactions(df))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    ds, _ = generate(seed=args.seed)
    write_sample(ds, args.out)
    print(f"wrote {ds.summary()} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
