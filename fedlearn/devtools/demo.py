"""The demo: a film catalog with readable titles and a base trained on generated sessions.

``fedlearn up --demo`` calls :func:`install_demo` when no base is published yet, so a fresh
machine has something to rank within seconds. The data comes from the project's own synthetic
generator (known per-user tastes over genres), dressed with genre names and titles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fedlearn.data.synthetic import SyntheticConfig, SyntheticLog, generate
from fedlearn.model import Base, TrainConfig, event_features, train_base
from fedlearn.store import Store
from fedlearn.store.items import Catalog

GENRES = ("Drama", "Comedy", "Sci-Fi", "Thriller", "Romance", "Animation", "Documentary", "Horror")
_FIRST = ("The", "A", "Last", "Midnight", "Silent", "Golden", "Broken", "Electric")
_FIRST += ("Hidden", "Lonely", "Crimson", "Paper", "Northern", "Velvet", "Wild", "Distant")
_SECOND = ("Harbor", "Orchard", "Signal", "Garden", "Machine", "River", "Comet", "Letters")
_SECOND += ("Lantern", "Circus", "Summer", "Frontier", "Engine", "Mirror", "Island", "Code")

DEMO_VERSION = "demo-1"


def title_of(index: int) -> str:
    """A made-up film title, stable for an item index."""
    first = _FIRST[index % len(_FIRST)]
    second = _SECOND[(index * 7 + index // len(_FIRST)) % len(_SECOND)]
    return f"{first} {second}" + (f" {index // 256 + 1}" if index >= 256 else "")


def demo_catalog(log: SyntheticLog) -> dict[str, dict[str, Any]]:
    """The log's items with titles, their generic genres ``g<i>`` renamed to film genres."""
    names = dict(zip(log.truth.genre_names, GENRES, strict=False))
    catalog = {}
    for item, features in log.items().items():
        genres = {f"genre={names[name.split('=', 1)[1]]}": v for name, v in features.items()}
        catalog[item] = {"title": title_of(int(item[1:])), "features": genres}
    return catalog


def install_demo(
    store: Store,
    *,
    n_users: int = 2000,
    n_items: int = 120,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Base:
    """Generate the demo data, train a base on it, publish it and its catalog."""
    config = SyntheticConfig(
        n_users=n_users, n_items=n_items, n_genres=len(GENRES), events_per_user=25, seed=seed
    )
    progress(f"generating {config.n_events:,} demo events for {n_users:,} users")
    log = generate(config)
    catalog = demo_catalog(log)
    samples = [
        (event_features(e.user, e.item, e.context, catalog[e.item]["features"]), e.label)
        for e in log.events()
    ]
    progress("training the demo base")
    result = train_base(samples, TrainConfig(epochs=6, seed=seed), version=DEMO_VERSION)
    base = result.base.with_version(DEMO_VERSION, generation=0, source="demo (synthetic)")
    store.bases.put_base(base.version, base.to_bytes(), {"generation": 0, "source": "demo"})
    store.bases.set_current(base.version)
    Catalog(store.client).put_items(catalog)
    progress(f"published base {base.version} ({base.n_features} features) and {len(catalog)} items")
    return base
