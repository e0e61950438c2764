"""Logged ranking decisions: the unit off-policy evaluation reweights.

A decision is one ranking request's top slot: the user, every candidate's features as they
were scored, which candidate was shown first, the logging policy's probability of that
(the propensity) and whether it was clicked. The simulator records them directly; a production
event log yields them through :func:`decisions_from_eventlog`, which refuses a log written
before propensities were logged with a precise error.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fedlearn.data.errors import DataError
from fedlearn.data.eventlog import CANDIDATES
from fedlearn.data.fromlog import log_lines
from fedlearn.evaluate.ope import Scored, estimate, mean_estimate


@dataclass(frozen=True, slots=True)
class Decision:
    """One logged top-slot decision. ``p_true``: every candidate's true click probability,
    known only in the simulator (None elsewhere)."""

    user: str
    candidates: tuple[Mapping[str, float], ...]
    shown: int
    propensity: float
    click: int
    p_true: np.ndarray | None = None


# What an event-log line must carry to be a decision (docs/CONTRACTS.md): how its item was
# shown (the trainer logs these since exploration exists) and the ranking's candidates.
SHOWN_KEYS = ("propensity", "slot")
DECISION_KEYS = (*SHOWN_KEYS, CANDIDATES)


class NoCandidatesError(DataError):
    """A top-slot line with its propensity but not the ranking's candidates (the browser
    ranked it locally, or a service older than candidates in the log wrote it)."""


class LoggedDecisions(NamedTuple):
    """The decisions of an event log, and how many top-slot lines lacked candidates."""

    decisions: list[Decision]
    without_candidates: int


def decision_of(record: Mapping[str, Any], where: tuple[Path, int]) -> Decision | None:
    """The decision an event-log record is, None if it is no top-slot decision (a later
    slot, or an event without a rank call). Raises :class:`DataError` naming the file and line
    when the record lacks what off-policy evaluation needs (:class:`NoCandidatesError` when
    only the candidates are missing)."""
    path, line = where
    if record.get("prediction_id") is None and record.get("propensity") is None:
        return None  # not shown by a ranking (or by one before propensities were logged)
    missing = [key for key in DECISION_KEYS if key not in record]
    if any(key in missing for key in SHOWN_KEYS):
        raise DataError(
            path, line,
            f"lacks {', '.join(missing)}: this event log was written before propensities were "
            "logged, so no policy but the logging one can be evaluated on it; evaluate a log "
            "written by a service that logs them (docs/CONTRACTS.md)",
        )  # fmt: skip
    if record["slot"] != 0:
        return None  # only slot 0's line carries the candidates (the estimand's decision)
    if missing:
        raise NoCandidatesError(
            path, line,
            "carries its propensity but not the ranking's candidates, so another policy's "
            "choice among them is unknown; only the served policy's own click rate can be "
            "estimated from it (fedlearn ope --served)",
        )  # fmt: skip
    propensity = record["propensity"]
    if not isinstance(propensity, (int, float)) or not (0 < propensity <= 1):
        raise DataError(path, line, f"propensity must be in (0, 1], got {propensity!r}")
    candidates = record["candidates"]
    if not isinstance(candidates, list) or not all(
        isinstance(c, dict) and isinstance(c.get("features"), dict) for c in candidates
    ):
        raise DataError(path, line, 'candidates must be a list of {"item", "features": {...}}')
    shown = [i for i, c in enumerate(candidates) if c.get("item") == record["item"]]
    if not shown:
        raise DataError(path, line, f"the shown item {record['item']!r} is not a candidate")
    return Decision(
        str(record["user"]),
        tuple(c["features"] for c in candidates),
        shown[0],
        float(propensity),
        1 if record["signal"] == "click" else 0,
    )


def decisions_from_eventlog(root: str | os.PathLike[str]) -> LoggedDecisions:
    """The top-slot decisions of an event log folder, in the order events were applied
    (time order across shards: by stream id, which is acceptance time).

    Top-slot lines without candidates (ranked in the browser, or logged before candidates
    were) are skipped and counted: the estimate is then of the rank route's decisions. Lines
    of one ranking (its ``prediction_id``) are one decision, clicked if any line is. A log
    with no decision but such lines is refused with the first one's file and line."""
    rows: list[tuple[float, int, Decision]] = []
    # A ranking is one decision however many events name its top item (a click and a later
    # skip, a resent event): the first line stands for it, clicked if any of them was.
    by_prediction: dict[str, int] = {}
    first_without: NoCandidatesError | None = None
    without = 0
    for path, line, record in log_lines(Path(root)):
        try:
            decision = decision_of(record, (path, line))
        except NoCandidatesError as exc:
            first_without = first_without or exc
            without += 1
            continue
        if decision is None:
            continue
        prediction = record.get("prediction_id")
        if prediction is not None and prediction in by_prediction:
            at, order, seen = rows[by_prediction[prediction]]
            if decision.click > seen.click:
                rows[by_prediction[prediction]] = (at, order, replace(seen, click=decision.click))
            continue
        if prediction is not None:
            by_prediction[prediction] = len(rows)
        rows.append((_accepted(record), len(rows), decision))
    if not rows:
        raise first_without or DataError(
            root, None, "holds no top-slot decisions (events of rank calls)"
        )
    rows.sort(key=lambda row: (row[0], row[1]))
    return LoggedDecisions([d for _, _, d in rows], without)


def greedy_agrees(record: Mapping[str, Any]) -> bool | None:
    """Whether greedy would have put the logged item in its slot, where the logged policy
    and propensity tell: always under greedy; under epsilon-greedy with epsilon < 1/2, iff
    the propensity is at least 1 - epsilon (the best item's is 1 - eps + eps/m, any other's
    eps/m <= eps). None under softmax: only the candidates' scores could tell."""
    policy = record.get("policy") or {}
    if policy.get("kind") == "greedy":
        return True
    epsilon = policy.get("epsilon")
    if policy.get("kind") == "epsilon" and isinstance(epsilon, (int, float)) and epsilon < 0.5:
        return float(record["propensity"]) >= 1.0 - epsilon
    return None


def served_and_greedy(root: str | os.PathLike[str], *, last: int | None = None) -> dict[str, Any]:
    """The served policy's own click rate (on-policy, no reweighting) and greedy's SNIPS
    estimate, both of the top slot, on the ``last`` events of rankings that carry their
    propensity (all of them: None), with 95 % intervals clustered by user.

    Greedy is estimated on the decisions whose logged policy tells whether greedy agreed
    (:func:`greedy_agrees`); ``greedy`` is None when there are none (softmax traffic)."""
    rows: deque[tuple[float, str, float, float, bool | None]] = deque(maxlen=last)
    for record in sorted(_shown_top_records(Path(root), last), key=_accepted):
        click = 1.0 if record.get("signal") == "click" else 0.0
        rows.append((_accepted(record), str(record.get("user")), click,
                     float(record["propensity"]), greedy_agrees(record)))  # fmt: skip
    if not rows:
        raise DataError(root, None, "holds no top-slot events of rank calls with a propensity")
    users = users_of(user for _, user, *_ in rows)
    clicks = np.fromiter((click for _, _, click, *_ in rows), np.float64, len(rows))
    out: dict[str, Any] = {"served": mean_estimate("served", clicks, users), "greedy": None}
    known = np.fromiter((agree is not None for *_, agree in rows), bool, len(rows))
    if known.any():
        agree = np.fromiter((bool(agree) for *_, agree in rows), np.float64, len(rows))
        propensity = np.fromiter((p for *_, p, _ in rows), np.float64, len(rows))
        zeros = np.zeros(int(known.sum()))
        scored = Scored(users[known], clicks[known], propensity[known], agree[known], zeros, zeros)
        out["greedy"] = estimate(scored)["snips"]
    return out


def dashboard_estimate(
    root: str | os.PathLike[str], *, last: int | None, now: float
) -> dict[str, Any]:
    """:func:`served_and_greedy` on the newest ``last`` top-slot events of ``root``, as the
    dashboard stores it: ``served`` and ``greedy`` (estimates as dicts, or None), ``error``
    (why there is no estimate: no log yet, no ranking with a propensity), ``last`` and
    ``computed_at``. A log that cannot be estimated yet is a result, not a failure."""
    out: dict[str, Any] = {"computed_at": now, "last": last, "served": None, "greedy": None,
                           "error": None}  # fmt: skip
    try:
        values = served_and_greedy(root, last=last)
    except DataError as exc:
        return {**out, "error": str(exc)}
    return {**out, **{name: e and e.to_dict() for name, e in values.items()}}


def _shown_top_records(root: Path, last: int | None) -> list[dict[str, Any]]:
    """The log's top-slot records of rankings (the newest ``last`` or more, when given).

    With ``last``, the day files are read newest first and reading stops at the day that
    completes ``last``: the cost is bounded by the newest days, not by the log's size. (A
    line's day is when it was applied; an event accepted before midnight and applied after
    it may be among a later day's lines, so the cut is exact up to the trainers' lag.)"""
    days = sorted({path.stem for path in root.glob("shard=*/*.jsonl")}, reverse=True)
    if last is None or not days:  # no files: log_lines says what is wrong with the folder
        return [record for *_, record in log_lines(root) if _is_shown_top(record)]
    found: list[dict[str, Any]] = []
    for day in days:
        found += [record for *_, record in log_lines(root, days={day}) if _is_shown_top(record)]
        if len(found) >= last:
            break
    return found


def _is_shown_top(record: Mapping[str, Any]) -> bool:
    """Shown in slot 0 by a ranking that logged its propensity: the rank route's, or the
    browser's local one (no ``prediction_id``, the client sends the fields itself)."""
    return record.get("propensity") is not None and record.get("slot") == 0


def _accepted(record: Mapping[str, Any]) -> float:
    ms = str(record.get("stream_id", "")).partition("-")[0]
    return float(ms) if ms.isdigit() else math.inf


def users_of(users: Iterable[str]) -> np.ndarray:
    """Each user as an integer (the clusters of the intervals)."""
    index: dict[str, int] = {}
    return np.fromiter((index.setdefault(u, len(index)) for u in users), np.int64)
