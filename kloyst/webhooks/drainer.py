"""The webhook drainer: stored deliveries in, each vendor's changes applied by that vendor's plugins.

Runs as a thread in the WEBHOOK and ALL modes (:func:`start`). Every delivery it applies
is already committed to ``webhook_delivery`` by the receiver (:mod:`kloyst.webhooks.committer`);
the drainer only moves rows from unprocessed to processed. One pass (:meth:`Drainer.drain_once`):

1. **Take.** The deliveries this process just stored and handed over, already claimed by
   this drainer (stored with ``next_attempt_at`` a lease ahead), and the due ones:
   retries whose time came, rows stored while no drainer took them in hand, and rows
   whose lease ran out because their drainer died. Every claim is a lease of
   ``LEASE_SECONDS``; several WEBHOOK processes claim side by side with ``FOR UPDATE SKIP
   LOCKED``, so a process killed with deliveries in hand has them applied by another
   drainer (or by its own restart) within seconds.
2. **Apply.** Each body is split into :class:`~kloyst.webhooks.WebhookChange`; the
   ``kloyst_webhook_vendors`` hook says whose each change is (asked once per WABA and
   number per batch). A change nobody holds is logged and dropped — Meta already had its
   200. Each vendor's changes go to the tenant hook ``kloyst_webhook_changes`` of the
   plugins *that vendor* enabled, in one transaction per vendor and batch.
3. **Finish.** Deliveries whose every vendor committed are processed. When a vendor's
   transaction fails, its deliveries are applied again one by one, so one bad change
   cannot hold back the others; a delivery that still fails keeps its error and is retried
   with exponential backoff, up to ``kloyst.webhooks.max_attempts`` times, then left
   processed with its error for an operator. Applying twice is safe: handlers are
   idempotent (statuses only move forward; events are keyed by ``wamid``).

Waiting is adaptive: full batches are followed at once, a partial one by a short linger so
that the next batch gathers (the per-delivery cost of a pass falls fourfold from 20 to 500
deliveries: measured 0.37 → 0.08 ms of CPU); an idle drainer wakes the moment its process
stores a delivery, and otherwise polls for due rows, backing off to a second. Stopping, it
gives back what it holds in hand (due at once, for another drainer). Processed deliveries
expire after ``kloyst.webhooks.retention_days`` (the core's retention policy, :mod:`kloyst.retention`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict

import transaction

from kloyst import metrics as kmetrics
from kloyst.db import session_scope, tenancy
from kloyst.outbox.context import TaskContext
from kloyst.outbox.delivery import backoff_seconds
from kloyst.plugins.enablement import enabled_plugins
from kloyst.webhooks import deliveries
from kloyst.webhooks.changes import MalformedDelivery, RetryLater, WebhookChange, parse_envelope
from kloyst.webhooks.deliveries import Delivery

log = logging.getLogger(__name__)

# A claimed delivery not finished by then is due again: its drainer died. Short, so that a killed process's
# deliveries are applied within seconds; a pass takes well under a second, and applying twice is harmless.
LEASE_SECONDS = 10
MIN_PAUSE_SECONDS = 0.05
MAX_PAUSE_SECONDS = 1.0
LINGER_SECONDS = 0.2  # after a partial batch: what the next one may wait for more webhooks to join it


class _InHand:
    """Deliveries the committer stored claimed for this drainer and handed over, until a pass takes them.

    A delivery whose lease is half gone by the time a pass would take it is left to the
    claim instead: it is about to be due for every drainer, and applying it here as well
    would only apply it twice.
    """

    def __init__(self, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self._changed = threading.Condition(threading.Lock())
        self._items: list[tuple[float, Delivery]] = []  # (time.monotonic() at hand-over, delivery)
        self._woken = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, fresh: list[Delivery]) -> None:
        handed_at = time.monotonic()
        with self._changed:
            self._items.extend((handed_at, delivery) for delivery in fresh)
            self._changed.notify()

    def wake(self) -> None:
        """Due rows were stored: end an idle wait."""
        with self._changed:
            self._woken = True
            self._changed.notify()

    def take(self, limit: int) -> list[Delivery]:
        fresh_after = time.monotonic() - self.lease_seconds / 2
        with self._changed:
            taken, self._items = self._items[:limit], self._items[limit:]
        return [delivery for handed_at, delivery in taken if handed_at >= fresh_after]

    def take_all(self) -> list[Delivery]:
        with self._changed:
            taken, self._items = self._items, []
        return [delivery for _, delivery in taken]

    def wait(self, count: int, seconds: float, *, until_woken: bool) -> None:
        """Until ``count`` deliveries are in hand (or a wake, with ``until_woken``), at most ``seconds``."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while len(self._items) < count and not (until_woken and self._woken):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            self._woken = False


class Drainer:
    """One drainer: its passes over what is in its hand and what is due, and what it hands back when it stops."""

    def __init__(self, registry) -> None:
        self.registry = registry
        self.settings = registry.settings
        self.batch_size = self.settings["kloyst.webhooks.batch_size"]
        self.lease_seconds = LEASE_SECONDS
        self._in_hand = _InHand(LEASE_SECONDS)

    def _session(self, vendor_id=tenancy.ALL_VENDORS, manager=None):
        # Looked up on every use: tests swap the session factory for one inside their transaction.
        return session_scope(self.registry["kloyst.session_factory"], vendor_id=vendor_id, manager=manager)

    # -- what the committer calls --------------------------------------------------------

    def accepts(self, count: int) -> bool:
        """Whether ``count`` more deliveries may be stored claimed for this drainer (two batches in hand at most:
        beyond that they would wait out their lease here, so they are stored due for any drainer instead)."""
        return len(self._in_hand) + count <= 2 * self.batch_size

    def hand_over(self, fresh: list[Delivery]) -> None:
        """Deliveries just committed with this drainer's lease: applied by its next pass."""
        if fresh:
            self._in_hand.put(fresh)

    def wake(self) -> None:
        """Due deliveries were just committed: an idle drainer claims them now rather than at its next poll."""
        self._in_hand.wake()

    # -- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Drain until ``stop`` is set, taking this process's new deliveries in hand meanwhile."""
        committer = self.registry["kloyst.webhook_receiver"].committer
        committer.attach(self)
        pause = MIN_PAUSE_SECONDS
        try:
            while not stop.is_set():
                handled = self.drain_once()
                if handled >= self.batch_size:
                    continue
                if handled:
                    # Let the next batch gather: a pass costs ~4x more per delivery at 20 than at 500.
                    pause = MIN_PAUSE_SECONDS
                    self._in_hand.wait(self.batch_size, LINGER_SECONDS, until_woken=False)
                else:
                    pause = min(MAX_PAUSE_SECONDS, pause * 2)
                    self._in_hand.wait(1, pause, until_woken=True)
        finally:
            committer.detach(self)
            self._give_back()

    def drain_once(self) -> int:
        """One pass (take what is in hand and what is due, apply, finish); how many deliveries it handled."""
        handled = 0
        if in_hand := self._in_hand.take(self.batch_size):
            handled += len(in_hand)
            self.apply(in_hand)
        with self._session() as db:
            due = deliveries.claim_due(db, self.batch_size, LEASE_SECONDS)
        if due:
            handled += len(due)
            self.apply(due)
        return handled

    def _give_back(self) -> None:
        """Stopping: what is still in hand becomes due at once, for another drainer or this one's restart."""
        if not (held := self._in_hand.take_all()):
            return
        try:
            with self._session() as db:
                deliveries.release(db, [delivery.id for delivery in held])
        except Exception as exc:  # their leases run out instead, LEASE_SECONDS later
            log.warning("could not give back %s webhook deliveries held in hand: %s: %s", len(held),
                        type(exc).__name__, exc)
            return
        log.info("gave back %s webhook deliveries this drainer held", len(held))

    # -- applying ------------------------------------------------------------------------

    def apply(self, batch: list[Delivery]) -> None:
        """Apply ``batch`` and record, per delivery, that it is processed or when to try it again."""
        if not batch:
            return
        by_id = {delivery.id: delivery for delivery in batch}
        errors: dict[int, tuple[str, bool]] = {}  # delivery id → (error, worth retrying)
        changes: list[WebhookChange] = []
        for delivery in batch:
            try:
                changes.extend(parse_envelope(delivery.body, delivery_id=delivery.id,
                                              received_at=delivery.received_at))
            except MalformedDelivery as exc:
                log.warning("webhook delivery %s is not a Meta envelope: %s", delivery.id, exc)
                errors[delivery.id] = (str(exc), False)
        for vendor_id, vendor_changes in self._by_vendor(changes).items():
            self._apply_for_vendor(vendor_id, vendor_changes, errors)
        outcomes = {"processed": len(by_id) - len(errors), "retry": 0, "gave_up": 0, "malformed": 0}
        with self._session() as db:
            deliveries.mark_processed(db, [delivery_id for delivery_id in by_id if delivery_id not in errors])
            for delivery_id, (error, retry) in errors.items():
                delivery = by_id[delivery_id]
                retry_in = (backoff_seconds(delivery.attempts + 1)
                            if retry and delivery.attempts + 1 < self.settings["kloyst.webhooks.max_attempts"]
                            else None)
                if retry and retry_in is None:
                    log.error("webhook delivery %s failed %s times; giving up: %s", delivery_id,
                              delivery.attempts + 1, error)
                outcomes["retry" if retry_in is not None else "gave_up" if retry else "malformed"] += 1
                deliveries.mark_failed(db, delivery, error, retry_in=retry_in)
        drained = kmetrics.of(self.registry).webhook_deliveries_drained
        for outcome, count in outcomes.items():
            if count:
                drained.labels(outcome).inc(count)

    def _by_vendor(self, changes: list[WebhookChange]) -> dict[uuid.UUID, list[WebhookChange]]:
        """Each vendor's changes, in Meta's order; changes no vendor holds are logged, counted and dropped.

        Counted by reason (``kloyst_webhook_changes_dropped_total``): a change naming a phone number id
        no vendor has is ``unknown_phone_number`` even when its WABA is known, since the WABA's owner has
        sent nothing through that number (the ``kloyst_webhook_vendors`` hook answers no vendor for it).
        """
        hook = self.registry["kloyst.plugin_manager"].hook.kloyst_webhook_vendors
        dropped = kmetrics.of(self.registry).webhook_changes_dropped
        owners: dict[tuple[str, str | None], list[uuid.UUID]] = {}
        grouped: dict[uuid.UUID, list[WebhookChange]] = defaultdict(list)
        with self._session() as db:
            for change in changes:
                key = (change.meta_waba_id, change.meta_phone_number_id)
                if key not in owners:
                    answers = hook(meta_waba_id=key[0], meta_phone_number_id=key[1], db=db)
                    owners[key] = list(dict.fromkeys(uuid.UUID(str(v)) for answer in answers for v in answer or ()))
                    if not owners[key]:
                        log.warning("webhook change %r for WABA %s, phone number %s: no vendor holds them; dropped",
                                    change.field, key[0], key[1],
                                    extra={"delivery_id": change.delivery_id, "meta_waba_id": key[0],
                                           "meta_phone_number_id": key[1]})
                if not owners[key]:
                    dropped.labels("unknown_phone_number" if key[1] else "unknown_waba").inc()
                for vendor_id in owners[key]:
                    grouped[vendor_id].append(change)
        return grouped

    def _apply_for_vendor(self, vendor_id: uuid.UUID, changes: list[WebhookChange],
                          errors: dict[int, tuple[str, bool]]) -> None:
        """One transaction for the vendor's share of the batch; on failure, one per delivery."""
        pending = [c for c in changes if c.delivery_id not in errors]
        if not pending:
            return
        failure = self._call_plugins(vendor_id, pending)
        if failure is None:
            return
        by_delivery: dict[int, list[WebhookChange]] = defaultdict(list)
        for change in pending:
            by_delivery[change.delivery_id].append(change)
        if len(by_delivery) == 1:
            errors[next(iter(by_delivery))] = failure
            return
        for delivery_id, delivery_changes in by_delivery.items():
            if (failure := self._call_plugins(vendor_id, delivery_changes)) is not None:
                errors[delivery_id] = failure

    def _call_plugins(self, vendor_id: uuid.UUID, changes: list[WebhookChange]) -> tuple[str, bool] | None:
        """Run the vendor's enabled plugins on ``changes`` in one transaction; the error if it failed."""
        pm = self.registry["kloyst.plugin_manager"]
        manager = transaction.TransactionManager(explicit=True)
        ids = sorted({c.delivery_id for c in changes})
        try:
            with self._session(vendor_id, manager) as db:
                apply = pm.for_plugins("kloyst_webhook_changes", enabled_plugins(db, pm, vendor_id))
                apply(changes=changes, ctx=TaskContext(self.registry, db, manager, vendor_id))
        except RetryLater as exc:
            log.info("webhook deliveries %s of vendor %s wait: %s", ids, vendor_id, exc)
            return f"retry later: {exc}", True
        except Exception as exc:  # recorded on the delivery and retried; the other vendors go on
            log.exception("webhook deliveries %s failed for vendor %s", ids, vendor_id)
            return f"{type(exc).__name__}: {exc}", True
        return None


def drain_once(registry) -> int:
    """Apply every delivery due now (passes until one finds nothing); how many deliveries were handled.

    What tests call instead of running the thread. Without a drainer thread in the process,
    the committer stores deliveries due, so these are all of them.
    """
    drainer = Drainer(registry)
    total = 0
    while handled := drainer.drain_once():
        total += handled
    return total


def drain_loop(registry, stop: threading.Event) -> None:
    """Run one drainer until ``stop``; a failure (the database down) is logged and the loop starts again."""
    drainer = Drainer(registry)
    pause = 0.5
    while not stop.is_set():
        try:
            drainer.run(stop)
            pause = 0.5
        except Exception:
            log.exception("webhook drainer failed; restarting in %.1f s", pause)
            stop.wait(pause)
            pause = min(30.0, pause * 2)


def start(registry, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=drain_loop, args=(registry, stop), name="webhook-drainer", daemon=True)
    thread.start()
    log.info("webhook drainer started")
    return thread
