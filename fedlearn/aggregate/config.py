"""How rounds aggregate: one frozen dataclass, built from :class:`fedlearn.config.Settings`.

Each field ``x`` is read from the setting ``aggregation_x`` (``FEDLEARN_AGGREGATION_X``), the
monthly ones from ``monthly_x``; a setting the Settings class does not define yet falls back to
the default here. A round stores the config it ran with in its record, so every task of the
round (and anyone reading its result later) sees the same values, whatever the environment of
the worker that runs it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from fedlearn.aggregate.strategies import STRATEGIES, Strategy, make_strategy
from fedlearn.config import Settings

# The setting of a field named otherwise than ``aggregation_<field>``: a delta's row cap is
# the clones' own, and the monthly fields are named as their settings are.
_RENAMED = {"max_delta_rows": "clone_max_rows"}


def setting_of(field_name: str) -> str:
    """The :class:`~fedlearn.config.Settings` attribute a config field is read from."""
    if field_name.startswith("monthly_"):
        return field_name
    return _RENAMED.get(field_name, f"aggregation_{field_name}")


def _defaults_from_settings(cls: type) -> type:
    """Give each annotated field the default of its setting, so a default is written once,
    in ``Settings`` (applied before ``@dataclass``, which then sees them as defaults)."""
    for name in cls.__annotations__:
        setattr(cls, name, Settings.model_fields[setting_of(name)].default)
    return cls


@dataclass(frozen=True, kw_only=True)
@_defaults_from_settings
class AggregationConfig:
    """A round's rule and safety limits, and the schedule of rounds and monthly retraining.

        ``clip_norm``: each user's change is scaled down to at most this L2 norm (``None``: no
        clipping). ``max_weight``: a user's weight is its events since its last contribution,
        capped here. ``min_users``: fewer contributing users and nothing is published (their
        changes wait for the next round). ``min_row_users``: a row changed by fewer users in a round
    is not published (it stays in the users' deltas); a user's own ``user=<id>`` row never is,
    whatever this (the fold's rule: the base is served to everyone). ``noise_multiplier``:
        Gaussian noise of std ``noise_multiplier * clip_norm * max_weight`` on the clipped
        sums (fedavg/fedavgm only).
        ``buckets``: rows are split in this many groups that the reducer aggregates one at a time,
        which bounds its memory for the median and trimmed mean. ``every_min = 0`` turns the
        scheduled rounds off, an empty ``monthly_crontab`` the monthly retraining.

    What a round accepts (``checks``): a user's record of more than ``max_delta_bytes`` or
    ``max_delta_rows`` rows (the clones' own row cap), or whose change is non-finite or of
    norm above ``max_user_norm``, is rejected; a candidate base with a non-finite parameter, a
    row (or intercept) of norm above ``max_row_norm`` or more than ``max_base_features`` rows
    is not published. Shadow check (``shadow``): a candidate is scored beside the current base
    on the ``shadow_events`` most recent events of the event log and not promoted when its log
    loss is worse by more than ``shadow_margin``. How rounds heal (``heal``): a round's tasks
    renew its heartbeat every ``stale_s / 6`` s; a round whose heartbeat is ``stale_s`` old is
    abandoned and retried, checked every ``stale_s / 3`` s. ``task_time_limit_s`` is the hard
    time limit of a round's task, ``monthly_time_limit_s`` the monthly retrain's.
    """

    # Defaults: the settings' (``_defaults_from_settings``).
    every_min: int
    strategy: str
    clip_norm: float | None
    noise_multiplier: float
    min_users: int
    min_row_users: int
    max_weight: int
    server_lr: float
    momentum: float
    trim_beta: float
    lock_ttl_s: int
    buckets: int
    monthly_crontab: str
    monthly_eventlog_dir: str | None
    max_delta_rows: int
    max_delta_bytes: int
    max_user_norm: float
    max_row_norm: float
    max_base_features: int
    shadow_events: int
    shadow_margin: float
    stale_s: float
    task_time_limit_s: int
    monthly_time_limit_s: int

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"aggregation strategy must be one of {sorted(STRATEGIES)}, got {self.strategy!r}"
            )
        if self.clip_norm is not None and self.clip_norm <= 0:
            object.__setattr__(self, "clip_norm", None)  # 0 means "no clipping"
        if self.clip_norm is not None and not math.isfinite(self.clip_norm):
            raise ValueError(f"clip_norm must be finite, got {self.clip_norm}")
        for name, low in (("every_min", 0), ("min_users", 1), ("min_row_users", 1),
                          ("max_weight", 1),
                          ("lock_ttl_s", 1), ("buckets", 1), ("max_delta_rows", 1),
                          ("max_delta_bytes", 64), ("max_base_features", 1),
                          ("task_time_limit_s", 10), ("monthly_time_limit_s", 10),
                          ("shadow_events", 0)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        margin = self.shadow_margin
        if not (isinstance(margin, int | float) and 0 <= margin < math.inf):
            raise ValueError(f"shadow_margin must be a finite number >= 0, got {margin!r}")
        for name in ("max_user_norm", "max_row_norm", "stale_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.noise_multiplier > 0:
            if not STRATEGIES[self.strategy].supports_noise:
                noisy = " or ".join(n for n, c in STRATEGIES.items() if c.supports_noise)
                raise ValueError(
                    f"noise_multiplier={self.noise_multiplier} is calibrated for the weighted "
                    f"mean; strategy {self.strategy!r} does not add noise: use {noisy}, or set "
                    f"noise_multiplier to 0"
                )
            if self.clip_norm is None:
                raise ValueError(
                    f"noise_multiplier={self.noise_multiplier} needs clipping: set clip_norm > 0"
                )
        self.make_strategy()  # checks the rule's own parameters now, not inside a round
        if self.monthly_crontab.strip():
            parse_crontab(self.monthly_crontab)

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> AggregationConfig:
        """The config of ``settings`` (attributes it lacks keep their default), with
        ``overrides`` (field names) on top."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            setting = setting_of(f.name)
            if getattr(settings, setting, None) is not None:  # None: "no cap", ours stays
                value = getattr(settings, setting)
                values[f.name] = str(value) if f.name == "monthly_eventlog_dir" and value else value
        if values.get("monthly_eventlog_dir") is None and getattr(settings, "data_dir", None):
            # the trainers' default folder: the monthly job and the shadow check read it
            values["monthly_eventlog_dir"] = str(settings.data_dir / "eventlog")
        values.update(overrides)
        return cls(**values)

    @property
    def heartbeat_s(self) -> float:
        """How often a round's working task renews its heartbeat: six beats per ``stale_s``,
        so a round is declared dead only after missing several."""
        return self.stale_s / 6

    @property
    def watch_s(self) -> float:
        """How often the beat schedule looks for dead rounds."""
        return self.stale_s / 3

    def make_strategy(self) -> Strategy:
        """The configured rule, each of its parameters read from the field of its name (or
        the one its class names in ``config_names``)."""
        cls = STRATEGIES[self.strategy]
        names = cls.config_names
        params = {p: getattr(self, names.get(p, p)) for p in cls.parameters()}
        return make_strategy(self.strategy, **params)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AggregationConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> AggregationConfig:
        return replace(self, **changes)


def parse_crontab(text: str) -> dict[str, str]:
    """``"0 3 1 * *"`` -> the keyword arguments of ``celery.schedules.crontab``."""
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"monthly_crontab must have 5 fields 'minute hour day-of-month month day-of-week', "
            f"got {text!r}"
        )
    names = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    return dict(zip(names, parts, strict=True))
