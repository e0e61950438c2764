"""Publishing a base one trained oneself (``fedlearn base publish``, ``POST /v1/base``).

A ``.flfm`` file is checked before anything is written: it must decode (format, sizes,
checksum, finite numbers), have features, the current base's number of factors (a clone's
delta has that many latents: other factors would void every user's clone), and bounded rows
(the same limits a round's candidate meets). It is then stored as an immutable version, and
made current or only staged (``fedlearn base rollback VERSION`` makes a staged one current).
It joins the current base's generation, so clones carry on: deltas are keyed by feature name
and survive a new vocabulary. Both the CLI and the API call :func:`publish_base`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fedlearn.aggregate.checks import CandidateRefused, check_candidate
from fedlearn.model import Base, ModelFormatError
from fedlearn.store import Store
from fedlearn.store.keys import check_version

# What every "no base yet" message tells the user to do.


class BaseRefused(ValueError):
    """A base file that may not be published; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}; nothing was published")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Published:
    """What :func:`publish_base` did."""

    version: str
    created: bool  # False: these exact bytes were published under this version already
    current: bool
    previous: str | None
    n_factors: int
    n_features: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_base(
    blob: bytes, current: Base | None, *, max_row_norm: float, max_features: int
) -> Base:
    """Decode ``blob`` and check it may replace ``current``; :class:`BaseRefused` if not."""
    try:
        base = Base.from_bytes(blob)
    except ModelFormatError as exc:
        raise BaseRefused("format", f"not a valid .flfm base: {exc}") from None
    if base.n_features == 0:
        raise BaseRefused("vocabulary", "the base has no features; train it on some events")
    if current is not None and base.n_factors != current.n_factors:
        raise BaseRefused(
            "n_factors",
            f"the base has {base.n_factors} factors but the current base {current.version!r} "
            f"has {current.n_factors}; users' clones need the same number: train with "
            f"--factors {current.n_factors}",
        )
    try:
        check_candidate(base, max_row_norm=max_row_norm, max_features=max_features)
    except CandidateRefused as exc:
        raise BaseRefused("vocabulary", str(exc)) from None
    return base


def publish_base(
    store: Store,
    blob: bytes,
    *,
    version: str | None = None,
    make_current: bool = True,
    max_row_norm: float,
    max_features: int,
    source: str = "upload",
) -> Published:
    """Check ``blob``, store it as ``version`` (default: the file's own) and, with
    ``make_current``, point ``current`` at it. Store errors (``VersionExistsError``: other
    bytes hold that version) propagate; nothing is written before every check passed."""
    current_version = store.bases.current_version()
    current = Base.from_bytes(store.bases.get_base(current_version)) if current_version else None
    base = check_base(blob, current, max_row_norm=max_row_norm, max_features=max_features)
    generation = int(current.meta.get("generation", 0)) if current is not None else 0
    version = version or base.version
    try:
        check_version(version)
    except ValueError as exc:
        raise BaseRefused("version", str(exc)) from None
    meta = {"kind": "published", "source": source, "generation": generation}
    if version != base.version or base.meta.get("generation") != generation:
        base = base.with_version(version, generation=generation)
    created = store.bases.put_base(version, base.to_bytes(), meta)
    previous = current_version
    if make_current:
        previous = store.bases.set_current(version)
    return Published(
        version=version,
        created=created,
        current=make_current or current_version == version,
        previous=previous,
        n_factors=base.n_factors,
        n_features=base.n_features,
    )
