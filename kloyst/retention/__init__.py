"""Data lifecycle: how long each kind of stored data is kept, and the pass that removes what has expired.

Nothing Kloyst stores grows without bound. Each plugin declares, through ``kloyst_retention_policies``,
what of its data expires (a :class:`RetentionPolicy`: the rows, the setting that holds how many
days they are kept, and what happens to an expired row), and one pass applies them all:
``kloyst db prune <ini>`` runs it once, and every OUTBOX process (ALL on the embedded default)
runs it on a timer (:func:`service`). A setting of 0 days keeps that data forever.

The pass works in short batches (:mod:`kloyst.retention.expiry`): each is its own transaction of at
most ``kloyst.retention.batch_size`` rows, so it holds no lock for long and the loops that write
the same tables keep their pace. Two OUTBOX replicas may prune at once: on PostgreSQL each skips
the rows the other holds, and a row is removed once.

The defaults and the reason for each are in docs/retention.md.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from kloyst import metrics
from kloyst.config import Setting
from kloyst.db import utcnow
from kloyst.outbox.connections import Transaction
from kloyst.periodic import Periodic
from kloyst.retention.expiry import ByGroupAndTime, BySequence, Cursor

__all__ = ["ByGroupAndTime", "BySequence", "Pruned", "Pruner", "RetentionPolicy", "SETTINGS",
           "policies", "service"]

log = logging.getLogger(__name__)

SETTINGS = (
    Setting("kloyst.retention.interval_seconds", "RETENTION_INTERVAL_SECONDS", 3600.0, float,
            help="How often an OUTBOX process (ALL on the embedded default) prunes expired data; 0 turns the "
                 "timer off (then run `kloyst db prune` from cron)."),
    Setting("kloyst.retention.batch_size", "RETENTION_BATCH_SIZE", 5000, int,
            help="Rows removed per transaction while pruning: each batch holds its locks this long only."),
    Setting("kloyst.retention.pause_ratio", "RETENTION_PAUSE_RATIO", 1.0, float,
            help="After each batch, the pass waits this many times as long as the batch took (1: it prunes at most "
                 "half the time), so the loops writing the same tables keep their pace; 0: no pause."),
)

# What a policy does with one batch of expired rows, in the batch's transaction. It may give back a callable to
# run once that transaction committed (removing files: a file goes only after the row stopped naming it).
Action = Callable[[Connection, Sequence], Callable[[], None] | None]


@dataclass(frozen=True)
class RetentionPolicy:
    """One kind of data that expires: which rows, after how long, and what becomes of them.

    ``setting`` is the :class:`kloyst.config.Setting` holding the days (its ``help`` says why the
    default is what it is; declare it in ``kloyst_settings`` too). ``rows`` finds the expired rows
    (:class:`BySequence` or :class:`ByGroupAndTime`); ``action`` receives each batch of them (each
    row starts with the table's key, then the finder's ``columns``); without one they are deleted.
    """

    name: str
    setting: Setting
    rows: BySequence | ByGroupAndTime
    removes: str
    action: Action | None = None

    def prune_batch(self, connection: Connection, cutoff: dt.datetime, limit: int,
                    cursor: Cursor) -> tuple[int, Callable[[], None] | None]:
        """One batch in ``connection``'s transaction: how many rows, and what to run once it committed."""
        if self.action is None:
            return self.rows.delete(connection, cutoff, limit, cursor), None
        rows = self.rows.batch(connection, cutoff, limit, cursor)
        return len(rows), self.action(connection, rows)


@dataclass(frozen=True)
class Pruned:
    """What one policy removed in a pass (``days`` 0: kept forever, nothing looked at)."""

    policy: str
    days: int
    cutoff: dt.datetime | None
    removed: int
    seconds: float


def policies(registry) -> list[RetentionPolicy]:
    """Every installed plugin's policies (``kloyst_retention_policies``), in plugin load order."""
    found = [policy for _, policy in registry["kloyst.plugin_manager"].collect("kloyst_retention_policies",
                                                                                settings=registry.settings)]
    names = [policy.name for policy in found]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"retention policies declared twice: {', '.join(repeated)}")
    return found


class Pruner:
    """One pass over every policy, batch by batch; ``stop`` (set by SIGTERM) ends it between two batches."""

    def __init__(self, registry, policies: Sequence[RetentionPolicy], *, stop: threading.Event | None = None) -> None:
        self.registry = registry
        self.policies = list(policies)
        self.stop = stop or threading.Event()
        self.removed = metrics.of(registry).retention_removed
        for policy in self.policies:  # exported at 0 from the start: rate() sees the first pass
            self.removed.labels(policy.name)

    def run(self, *, only: Sequence[str] = (), now: dt.datetime | None = None,
            progress: Callable[[Pruned], None] | None = None) -> list[Pruned]:
        now = now or utcnow()
        results = []
        for policy in self.policies:
            if only and policy.name not in only:
                continue
            result = self.prune(policy, now)
            results.append(result)
            if progress is not None:
                progress(result)
            if self.stop.is_set():
                break
        return results

    def prune(self, policy: RetentionPolicy, now: dt.datetime) -> Pruned:
        days = self.registry.settings[policy.setting.key]
        if days <= 0:
            return Pruned(policy.name, days, None, 0, 0.0)
        cutoff = now - dt.timedelta(days=days)
        limit = self.registry.settings["kloyst.retention.batch_size"]
        started, removed, cursor = time.monotonic(), 0, Cursor()
        pause_ratio = self.registry.settings["kloyst.retention.pause_ratio"]
        while not cursor.done and not self.stop.is_set():
            begun = time.monotonic()
            with Transaction(self.registry) as connection:
                count, after_commit = policy.prune_batch(connection, cutoff, limit, cursor)
            if after_commit is not None:
                after_commit()
            removed += count
            self.removed.labels(policy.name).inc(count)
            if not cursor.done:  # room for the loops writing the same tables (the relay beside us)
                self.stop.wait((time.monotonic() - begun) * pause_ratio)
        seconds = time.monotonic() - started
        if removed:
            log.info("retention: %s: %s older than %s days (before %s) in %.1f s", policy.name, removed, days,
                     cutoff.isoformat(timespec="seconds"), seconds)
        return Pruned(policy.name, days, cutoff, removed, seconds)


def service(registry, policies: Sequence[RetentionPolicy]) -> Periodic:
    """The pruning pass on a timer, beside an OUTBOX (or ALL) process's relay; stopping ends a pass between two
    batches (a batch in hand is one short transaction: it commits or rolls back)."""
    stop = threading.Event()
    pruner = Pruner(registry, policies, stop=stop)
    return Periodic("retention", registry.settings["kloyst.retention.interval_seconds"], pruner.run, stop=stop)
