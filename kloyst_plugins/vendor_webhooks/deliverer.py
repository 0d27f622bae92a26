"""The deliverer: a WORKER process's loop that POSTs due deliveries to vendors' endpoints.

Threads, as the messages sender: one **dispatcher** claims due deliveries per endpoint, N
**callers** (``vendor_webhooks.concurrency``) make the blocking HTTP calls through one pooled
urllib3 client (:mod:`.client`), one **writer** records outcomes in batches.

**Fair per vendor.** An endpoint gets at most ``vendor_webhooks.per_endpoint_concurrency``
calls at a time, and only one while its last attempt failed (a probe); after
``vendor_webhooks.circuit_failures`` failures in a row it gets none at all for a pause that
doubles up to ``circuit_pause_cap_seconds`` (the circuit breaker). Claims go round the due
endpoints in turn, each claim bounded by that endpoint's free slots. So a dead or slow endpoint
holds one thread for one timeout at most while it fails, and never the queue: another
vendor's deliveries are claimed and called as if it were not there
(``tests/plugins/vendor_webhooks/test_vendor_webhooks_delivery.py`` measures it).

**At least once.** A claim (PENDING → DELIVERING, ``attempts + 1``) names this process
(``claimed_by``, :mod:`kloyst.heartbeat`) and a lease; an outcome is written only if the row
is still that attempt. A worker killed mid-call leaves DELIVERING rows that any deliverer takes
back once the owner's heartbeat stops (or the lease ends): they are sent again, so a receiver
may see an event twice and dedupes on ``Kloyst-Event-Id``. A stopping process (SIGTERM) gives
back what it claimed but did not call and records what it called.

**Retries.** A failed attempt (no answer in time, a non-2xx, a 3xx: redirects are not
followed) is retried with exponential backoff and jitter (``retry_base_seconds`` doubling to
``retry_cap_seconds``) until ``retry_horizon_seconds`` (24 h) after the delivery was created
or redelivered; then it is DEAD, and ``POST …/redeliver`` starts a new window.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import bindparam, DateTime, exists, func, Integer, or_, select, text, update, Uuid
from sqlalchemy.dialects.postgresql import ARRAY

from kloyst.api import (
    alive_since,
    backoff_seconds,
    Heartbeat,
    HeartbeatSettings,
    OWNER_ALIVE,
    UTCDateTime,
    utcnow,
    write_in_batches,
    write_until_done,
)
from kloyst_plugins.vendor_webhooks import client
from kloyst_plugins.vendor_webhooks.addresses import AddressPolicy
from kloyst_plugins.vendor_webhooks.bodies import event_id, event_json, FeedRow, inbound_messages
from kloyst_plugins.vendor_webhooks.models import DeliveryStatus, VendorEvent, WebhookDelivery, WebhookEndpoint
from kloyst_plugins.vendor_webhooks.sealing import endpoint_secrets
from kloyst_plugins.vendor_webhooks.signatures import HEADER, sign

log = logging.getLogger(__name__)

DELIVERIES = WebhookDelivery.__table__
ENDPOINTS = WebhookEndpoint.__table__
EVENTS = VendorEvent.__table__
PENDING, DELIVERING = DeliveryStatus.PENDING.value, DeliveryStatus.DELIVERING.value
DELIVERED, DEAD = DeliveryStatus.DELIVERED.value, DeliveryStatus.DEAD.value
CLAIM_BATCH = 200
WRITE_BATCH = 1000
POLL_SECONDS = 0.2  # how often due endpoints are looked for while there is work
EXPIRED = "not delivered within the retry window"


# PostgreSQL: a batch of successes in one statement (psycopg2 runs an executemany row by row).
_DELIVERED_PG = text("""
UPDATE vendor_webhook_delivery d
   SET status = 'DELIVERED', delivered_at = o.at, updated_at = o.at, last_status_code = o.code, last_error = NULL,
       next_attempt_at = NULL, claimed_by = NULL, lease_until = NULL
  FROM unnest(:ids, :attempts, :codes, :ats) AS o(id, attempt, code, at)
 WHERE d.id = o.id AND d.status = 'DELIVERING' AND d.attempts = o.attempt
""").bindparams(bindparam("ids", type_=ARRAY(Uuid())), bindparam("attempts", type_=ARRAY(Integer())),
                bindparam("codes", type_=ARRAY(Integer())), bindparam("ats", type_=ARRAY(DateTime(timezone=True))))


# PostgreSQL: one round's claims in one statement, each endpoint limited to what it wants (fairness), rows locked
# by another deliverer skipped.
_CLAIM_PG = text("""
WITH wanted AS (SELECT * FROM unnest(:endpoints, :wants) AS w(endpoint_id, n)),
picked AS (
    SELECT p.id FROM wanted w CROSS JOIN LATERAL (
        SELECT d.id FROM vendor_webhook_delivery d
         WHERE d.endpoint_id = w.endpoint_id AND d.status = 'PENDING' AND d.next_attempt_at <= :now
         ORDER BY d.next_attempt_at LIMIT w.n FOR UPDATE SKIP LOCKED) p),
claimed AS (
    UPDATE vendor_webhook_delivery d
       SET status = 'DELIVERING', attempts = d.attempts + 1, claimed_by = :owner, lease_until = :lease,
           last_attempt_at = :now, updated_at = :now
      FROM picked WHERE d.id = picked.id
    RETURNING d.id, d.endpoint_id, d.attempts, d.event_row_id, d.window_started_at)
SELECT c.id, c.endpoint_id, c.attempts, c.event_row_id, c.window_started_at,
       e.vendor_id, e.type, e.occurred_at, e.payload
  FROM claimed c JOIN vendor_event e ON e.id = c.event_row_id
""").bindparams(bindparam("endpoints", type_=ARRAY(Uuid())), bindparam("wants", type_=ARRAY(Integer())),
                bindparam("now", type_=UTCDateTime()), bindparam("lease", type_=UTCDateTime()),
                bindparam("owner", type_=Uuid()))


@dataclass(frozen=True)
class DelivererSettings:
    concurrency: int = 64
    per_endpoint: int = 16
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    lease_seconds: float = 120.0
    retry_base: float = 10.0
    retry_cap: float = 3600.0
    horizon: float = 86400.0
    circuit_failures: int = 5
    circuit_pause_cap: float = 600.0
    idle_poll_seconds: float = 0.5
    recovery_seconds: float = 2.0
    policy: AddressPolicy = AddressPolicy()

    @classmethod
    def from_settings(cls, settings) -> DelivererSettings:
        key = "vendor_webhooks."
        return cls(concurrency=settings[key + "concurrency"], per_endpoint=settings[key + "per_endpoint_concurrency"],
                   connect_timeout=settings[key + "connect_timeout_seconds"],
                   read_timeout=settings[key + "read_timeout_seconds"], lease_seconds=settings[key + "lease_seconds"],
                   retry_base=settings[key + "retry_base_seconds"], retry_cap=settings[key + "retry_cap_seconds"],
                   horizon=settings[key + "retry_horizon_seconds"], circuit_failures=settings[key + "circuit_failures"],
                   circuit_pause_cap=settings[key + "circuit_pause_cap_seconds"],
                   policy=AddressPolicy.from_settings(settings))


@dataclass
class Endpoint:
    """What the deliverer keeps about one endpoint between polls (guarded by the deliverer's lock)."""

    id: uuid.UUID
    vendor_id: uuid.UUID
    url: str
    secrets: tuple[str, ...]
    version: object  # updated_at: the secrets are decrypted again when it changes
    failures: int = 0
    paused_until: float = 0.0  # monotonic; no attempt before it (the open circuit)
    due: bool = False
    calling: int = 0  # released to the callers, not finished
    buffer: collections.deque = field(default_factory=collections.deque)  # claimed, waiting for a free slot
    persisted: tuple = (0, None)  # (failures, paused_until) as last written

    def limit(self, per_endpoint: int) -> int:
        return per_endpoint if self.failures == 0 else 1


@dataclass(frozen=True)
class Job:
    delivery_id: uuid.UUID
    endpoint: Endpoint
    attempt: int
    window_started_at: dt.datetime
    event_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True)
class Outcome:
    job: Job
    answer: client.Answer
    at: dt.datetime


class Deliverer:
    def __init__(self, registry, settings: DelivererSettings | None = None, *,
                 heartbeat: Heartbeat | None = None) -> None:
        self.registry = registry
        self.settings = settings or DelivererSettings.from_settings(registry.settings)
        self.heartbeat = heartbeat
        self.heartbeat_settings = heartbeat.settings if heartbeat else HeartbeatSettings.from_settings(
            registry.settings)
        self.engine = registry["kloyst.engine"]
        self.postgres = self.engine.dialect.name == "postgresql"
        self.cipher = registry["kloyst.cipher"]
        self.http = client.pool_manager(self.settings.policy, per_host=self.settings.per_endpoint)
        self.endpoints: dict[uuid.UUID, Endpoint] = {}
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.outcomes: queue.SimpleQueue = queue.SimpleQueue()
        self.stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._claimed = 0  # claimed and not yet written, over every endpoint
        self._threads: list[threading.Thread] = []
        self._writer: threading.Thread | None = None
        self._turn = 0
        self.stats = {"delivered": 0, "failed": 0, "dead": 0, "reclaimed": 0}

    # ---- life cycle -------------------------------------------------------------------------------------

    def start(self) -> Deliverer:
        self._threads = [threading.Thread(target=self._call_loop, name=f"webhooks-call-{i}", daemon=True)
                         for i in range(self.settings.concurrency)]
        self._threads.append(threading.Thread(target=self._dispatch_loop, name="webhooks-dispatch", daemon=True))
        self._writer = threading.Thread(target=self._write_loop, name="webhooks-write", daemon=True)
        for thread in [*self._threads, self._writer]:
            thread.start()
        log.info("vendor webhooks deliverer started: %d callers, %d per endpoint", self.settings.concurrency,
                 self.settings.per_endpoint)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, give back what was claimed but not called, finish the calls in hand, write outcomes."""
        self.stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads[-1:]:  # the dispatcher first: then no new claims
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self._release_buffers()
        except Exception:  # their leases return them anyway
            log.exception("vendor webhooks: could not give back unsent claims")
        for _ in range(self.settings.concurrency):
            self.jobs.put(None)
        for thread in self._threads[:-1]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.outcomes.put(None)
        if self._writer is not None:
            self._writer.join(max(0.0, deadline - time.monotonic()))
        self.http.clear()

    def is_alive(self) -> bool:
        threads = [*self._threads, *([self._writer] if self._writer else [])]
        return not self.stopping.is_set() and all(t.is_alive() for t in threads)

    # ---- claiming ----------------------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        next_poll = next_recovery = 0.0
        while not self.stopping.is_set():
            try:
                now = time.monotonic()
                if now >= next_recovery:
                    next_recovery = now + self.settings.recovery_seconds
                    self._recover()
                    self._expire()
                if now >= next_poll:
                    next_poll = now + POLL_SECONDS
                    self._poll()
                busy = self._round()
            except Exception:
                log.exception("vendor webhooks dispatch failed; retrying")
                self.stopping.wait(1.0)
                continue
            if not busy:
                waited = self._wake.wait(self.settings.idle_poll_seconds)
                self._wake.clear()
                if not waited:
                    next_poll = 0.0
            else:
                self._wake.wait(0.005)
                self._wake.clear()

    def _poll(self) -> None:
        """Which endpoints have due deliveries (one index probe per enabled endpoint)."""
        now = utcnow()
        due = exists().where(DELIVERIES.c.endpoint_id == ENDPOINTS.c.id, DELIVERIES.c.status == PENDING,
                             DELIVERIES.c.next_attempt_at <= now)
        query = select(ENDPOINTS.c.id, ENDPOINTS.c.vendor_id, ENDPOINTS.c.url, ENDPOINTS.c.secret_enc,
                       ENDPOINTS.c.previous_secret_enc, ENDPOINTS.c.previous_secret_expires_at,
                       ENDPOINTS.c.consecutive_failures, ENDPOINTS.c.paused_until,
                       ENDPOINTS.c.updated_at).where(ENDPOINTS.c.enabled.is_(True), due)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        seen = set()
        with self._lock:
            for row in rows:
                seen.add(row.id)
                endpoint = self.endpoints.get(row.id)
                if endpoint is None or endpoint.version != row.updated_at:
                    secrets_ = endpoint_secrets(self.cipher, row.vendor_id, row.secret_enc, row.previous_secret_enc,
                                                row.previous_secret_expires_at)
                    if endpoint is None:
                        endpoint = self.endpoints[row.id] = Endpoint(row.id, row.vendor_id, row.url, secrets_,
                                                                     row.updated_at)
                    endpoint.url, endpoint.secrets, endpoint.version = row.url, secrets_, row.updated_at
                paused = row.paused_until
                endpoint.failures = row.consecutive_failures
                endpoint.paused_until = (time.monotonic() + (paused - now).total_seconds()
                                         if paused is not None and paused > now else 0.0)
                endpoint.persisted = (row.consecutive_failures, paused)
                endpoint.due = True
            for endpoint_id, endpoint in list(self.endpoints.items()):
                if endpoint_id not in seen:
                    endpoint.due = False
                    if not endpoint.calling and not endpoint.buffer:
                        del self.endpoints[endpoint_id]

    def _round(self) -> bool:
        """Claim for every due endpoint up to its own limit, then release claimed jobs into free slots.

        Endpoints are taken in a rotating order, each bounded by its own free slots, so one
        endpoint's backlog never fills the claim; on PostgreSQL the claims of a round are one
        statement (a lateral join over the wanted endpoints). True if anything moved.
        """
        per_endpoint = self.settings.per_endpoint
        now = time.monotonic()
        stale: list[Job] = []
        wants: dict[uuid.UUID, int] = {}
        with self._lock:
            order = list(self.endpoints.values())
            if not order:
                return False
            self._turn = (self._turn + 1) % len(order)
            order = order[self._turn:] + order[:self._turn]
            room = 16 * self.settings.concurrency - self._claimed
            for endpoint in order:
                if endpoint.paused_until and endpoint.paused_until > now:
                    stale.extend(endpoint.buffer)  # the circuit is open: what it holds goes back to wait
                    endpoint.buffer.clear()
                    continue
                limit = endpoint.limit(per_endpoint)
                if endpoint.failures:
                    # It started failing: what it holds beyond a probe goes back, for the retry schedule to decide.
                    while endpoint.buffer and len(endpoint.buffer) > max(0, limit - endpoint.calling):
                        stale.append(endpoint.buffer.pop())
                want = (8 * limit if not endpoint.failures else limit) - endpoint.calling - len(endpoint.buffer)
                want = min(want, room, CLAIM_BATCH)
                if endpoint.due and want > 0:
                    wants[endpoint.id] = want
                    room -= want
        moved = False
        if wants and not self.stopping.is_set() and self._may_claim():
            claimed = self._claim(wants)
            with self._lock:
                for endpoint_id, want in wants.items():
                    known = self.endpoints.get(endpoint_id)
                    jobs = claimed.get(endpoint_id, [])
                    self._claimed += len(jobs)
                    if known is None:  # forgotten meanwhile: give its claims back
                        stale.extend(jobs)
                        continue
                    known.buffer.extend(jobs)
                    if len(jobs) < want:
                        known.due = False
                    moved = moved or bool(jobs)
        release: list[Job] = []
        with self._lock:
            for endpoint in order:
                free = endpoint.limit(per_endpoint) - endpoint.calling
                taken = [endpoint.buffer.popleft() for _ in range(min(max(0, free), len(endpoint.buffer)))]
                endpoint.calling += len(taken)
                release.extend(taken)
        for job in release:
            self.jobs.put(job)
        if stale:
            self._give_back(stale)
        return moved or bool(release)

    def _may_claim(self) -> bool:
        """False while this process cannot prove it is alive: its claims may be being taken back (fencing)."""
        return self.heartbeat is None or self.heartbeat.healthy

    def _claim(self, wants: dict[uuid.UUID, int]) -> dict[uuid.UUID, list[Job]]:
        """Claim up to ``wants[endpoint]`` due deliveries of each endpoint (PENDING → DELIVERING, attempts + 1)."""
        now = utcnow()
        owner = self.heartbeat.id if self.heartbeat else None
        lease = now + dt.timedelta(seconds=self.settings.lease_seconds)
        with self.engine.begin() as conn:
            if self.postgres:
                found = conn.execute(_CLAIM_PG, {"endpoints": list(wants), "wants": list(wants.values()),
                                                 "now": now, "owner": owner, "lease": lease}).all()
                claimed = [(r.id, r.endpoint_id, r.attempts, r.event_row_id, r.window_started_at) for r in found]
                rows = {r.event_row_id: FeedRow(r.event_row_id, r.vendor_id, r.type, r.occurred_at,
                                                r.payload if isinstance(r.payload, dict) else json.loads(r.payload))
                        for r in found}
            else:
                claimed = []
                for endpoint_id, want in wants.items():
                    due = (select(DELIVERIES.c.id)
                           .where(DELIVERIES.c.endpoint_id == endpoint_id, DELIVERIES.c.status == PENDING,
                                  DELIVERIES.c.next_attempt_at <= now)
                           .order_by(DELIVERIES.c.next_attempt_at).limit(want))
                    claimed += conn.execute(
                        update(DELIVERIES).where(DELIVERIES.c.id.in_(due.scalar_subquery()))
                        .values(status=DELIVERING, attempts=DELIVERIES.c.attempts + 1, claimed_by=owner,
                                lease_until=lease, last_attempt_at=now, updated_at=now)
                        .returning(DELIVERIES.c.id, DELIVERIES.c.endpoint_id, DELIVERIES.c.attempts,
                                   DELIVERIES.c.event_row_id, DELIVERIES.c.window_started_at)).all()
                if claimed:
                    rows = {r.id: FeedRow(r.id, r.vendor_id, r.type, r.occurred_at, r.payload) for r in conn.execute(
                        select(EVENTS.c.id, EVENTS.c.vendor_id, EVENTS.c.type, EVENTS.c.occurred_at,
                               EVENTS.c.payload).where(EVENTS.c.id.in_({c[3] for c in claimed})))}
            if not claimed:
                return {}
            messages = inbound_messages(conn, self.cipher, rows.values())
        jobs: dict[uuid.UUID, list[Job]] = {}
        for delivery_id, endpoint_id, attempt, row_id, window in claimed:
            endpoint = self.endpoints[endpoint_id]
            row = rows[row_id]
            inbound = row.payload.get("inbound_id")
            body = event_json(row, messages.get(uuid.UUID(str(inbound))) if inbound else None)
            jobs.setdefault(endpoint_id, []).append(Job(
                delivery_id, endpoint, attempt, window, event_id(row.id), row.type,
                json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")))
        return jobs

    def _give_back(self, jobs: list[Job]) -> None:
        """Claimed but never called: PENDING again as if never claimed (the attempt is not counted)."""
        if not jobs:
            return
        statement = (update(DELIVERIES)
                     .where(DELIVERIES.c.id == bindparam("b_id"), DELIVERIES.c.status == DELIVERING,
                            DELIVERIES.c.attempts == bindparam("b_attempt"))
                     .values(status=PENDING, attempts=DELIVERIES.c.attempts - 1, claimed_by=None, lease_until=None))
        with self.engine.begin() as conn:
            conn.execute(statement, [{"b_id": job.delivery_id, "b_attempt": job.attempt} for job in jobs])
        with self._lock:
            self._claimed -= len(jobs)

    def _release_buffers(self) -> None:
        with self._lock:
            jobs = [job for endpoint in self.endpoints.values() for job in endpoint.buffer]
            for endpoint in self.endpoints.values():
                endpoint.buffer.clear()
        self._give_back(jobs)
        if jobs:
            log.info("vendor webhooks: %d claimed deliveries given back unsent", len(jobs))

    def _recover(self) -> None:
        """Take back deliveries whose owner died (its heartbeat stopped) or whose lease ran out."""
        now = utcnow()
        dead_owner = text("NOT " + OWNER_ALIVE.format(owner="vendor_webhook_delivery.claimed_by")).bindparams(
            bindparam("alive_since", alive_since(self.heartbeat_settings, now), type_=UTCDateTime()))
        statement = (update(DELIVERIES)
                     .where(DELIVERIES.c.status == DELIVERING,
                            or_(DELIVERIES.c.lease_until < now, DELIVERIES.c.claimed_by.is_not(None) & dead_owner))
                     .values(status=PENDING, claimed_by=None, lease_until=None, next_attempt_at=now, updated_at=now))
        with self.engine.begin() as conn:
            count = conn.execute(statement).rowcount
        if count:
            self.stats["reclaimed"] += count
            log.warning("vendor webhooks: %d deliveries of a stopped or stuck process taken back", count)

    def _expire(self) -> None:
        """Pending past the retry window (an endpoint paused or disabled all along): DEAD."""
        now = utcnow()
        statement = (update(DELIVERIES)
                     .where(DELIVERIES.c.status == PENDING,
                            DELIVERIES.c.window_started_at < now - dt.timedelta(seconds=self.settings.horizon))
                     .values(status=DEAD, next_attempt_at=None, updated_at=now,
                             last_error=func.coalesce(DELIVERIES.c.last_error, EXPIRED)))
        with self.engine.begin() as conn:
            self.stats["dead"] += conn.execute(statement).rowcount

    # ---- calling -----------------------------------------------------------------------------------------

    def _call_loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            while job is not None:
                answer = self.call(job)
                self.outcomes.put(Outcome(job, answer, utcnow()))
                endpoint = job.endpoint
                with self._lock:
                    self._note(endpoint, answer.ok)
                    # The same slot takes the endpoint's next claimed delivery at once, while the endpoint is healthy.
                    if (endpoint.buffer and not self.stopping.is_set()
                            and endpoint.calling <= endpoint.limit(self.settings.per_endpoint)):
                        job = endpoint.buffer.popleft()
                    else:
                        endpoint.calling -= 1
                        job = None
                self._wake.set()

    def call(self, job: Job) -> client.Answer:
        headers = {HEADER: sign(job.endpoint.secrets, job.body), "Kloyst-Event-Id": job.event_id,
                   "Kloyst-Event-Type": job.event_type, "Kloyst-Delivery-Id": str(job.delivery_id),
                   "Kloyst-Delivery-Attempt": str(job.attempt)}
        return client.post(self.http, job.endpoint.url, job.body, headers,
                           connect_timeout=self.settings.connect_timeout, read_timeout=self.settings.read_timeout)

    def _note(self, endpoint: Endpoint, ok: bool) -> None:
        """The circuit breaker (under the lock): a success closes it, enough failures in a row open it."""
        if ok:
            endpoint.failures, endpoint.paused_until = 0, 0.0
            return
        endpoint.failures += 1
        over = endpoint.failures - self.settings.circuit_failures
        if over >= 0:
            pause = min(self.settings.circuit_pause_cap, self.settings.retry_base * 2 ** min(over, 20))
            endpoint.paused_until = time.monotonic() + pause

    # ---- recording outcomes ------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        write_in_batches(self.outcomes, self._write_with_retry, batch_size=WRITE_BATCH)

    def _write_with_retry(self, batch: list[Outcome]) -> None:
        # Given up only while stopping: the leases return them, sent again, which receivers dedupe.
        write_until_done(self.write, batch, stopping=self.stopping, what="vendor webhooks")
        with self._lock:
            self._claimed -= len(batch)
        self._wake.set()

    def write(self, batch: list[Outcome]) -> None:
        """One transaction: successes, failures (retry or DEAD), and the touched endpoints' circuit state."""
        delivered, failed = [], []
        for outcome in batch:
            job, answer = outcome.job, outcome.answer
            if answer.ok:
                delivered.append({"b_id": job.delivery_id, "b_attempt": job.attempt, "b_at": outcome.at,
                                  "b_code": answer.status_code})
                continue
            end = job.window_started_at + dt.timedelta(seconds=self.settings.horizon)
            retry_at = outcome.at + dt.timedelta(seconds=backoff_seconds(job.attempt, self.settings.retry_base,
                                                                         self.settings.retry_cap))
            dead = outcome.at >= end
            failed.append({"b_id": job.delivery_id, "b_attempt": job.attempt, "b_code": answer.status_code,
                           "b_error": (answer.error or "")[:500], "b_status": DEAD if dead else PENDING,
                           "b_next": None if dead else min(retry_at, end), "b_at": outcome.at})
        with self._lock:
            touched = {o.job.endpoint.id: o.job.endpoint for o in batch}
            states = []
            now_mono, now = time.monotonic(), utcnow()
            for endpoint in touched.values():
                paused = (now + dt.timedelta(seconds=endpoint.paused_until - now_mono)
                          if endpoint.paused_until > now_mono else None)
                persisted_failures, persisted_pause = endpoint.persisted
                if (endpoint.failures, paused is not None) != (persisted_failures, persisted_pause is not None):
                    states.append({"b_id": endpoint.id, "b_failures": endpoint.failures, "b_paused": paused})
                    endpoint.persisted = (endpoint.failures, paused)
        mine = (DELIVERIES.c.id == bindparam("b_id"), DELIVERIES.c.status == DELIVERING,
                DELIVERIES.c.attempts == bindparam("b_attempt"))
        with self.engine.begin() as conn:
            if delivered and self.postgres:
                conn.execute(_DELIVERED_PG, {"ids": [d["b_id"] for d in delivered],
                                             "attempts": [d["b_attempt"] for d in delivered],
                                             "codes": [d["b_code"] for d in delivered],
                                             "ats": [d["b_at"] for d in delivered]})
            elif delivered:
                conn.execute(update(DELIVERIES).where(*mine).values(
                    status=DELIVERED, delivered_at=bindparam("b_at"), last_status_code=bindparam("b_code"),
                    last_error=None, next_attempt_at=None, claimed_by=None, lease_until=None,
                    updated_at=bindparam("b_at")), delivered)
            if failed:
                conn.execute(update(DELIVERIES).where(*mine).values(
                    status=bindparam("b_status"), next_attempt_at=bindparam("b_next"),
                    last_status_code=bindparam("b_code"), last_error=bindparam("b_error"), claimed_by=None,
                    lease_until=None, updated_at=bindparam("b_at")), failed)
            if states:
                conn.execute(update(ENDPOINTS).where(ENDPOINTS.c.id == bindparam("b_id")).values(
                    consecutive_failures=bindparam("b_failures"), paused_until=bindparam("b_paused"),
                    updated_at=ENDPOINTS.c.updated_at), states)  # not an edit of the endpoint
        self.stats["delivered"] += len(delivered)
        self.stats["failed"] += len(failed)
        self.stats["dead"] += sum(1 for f in failed if f["b_status"] == DEAD)
