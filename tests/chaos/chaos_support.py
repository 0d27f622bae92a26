"""A campaign through a deployment of real processes, faults on a seeded schedule, and what must hold after it.

Shared by ``tests/chaos`` and ``bench/chaos.py``. The vendor is arranged as an operator and a
vendor would: its WABA is registered through the API (the sandbox's numbers and templates
sync), the rate card is loaded with ``kloyst pricing load-card``, the wallet is topped up
through the admin API; only the contacts are written straight into the database, as an
import leaves them (encrypted, hashed), because an upload of thousands of rows would only slow
the run. The campaign is drafted, quoted, launched and watched through the API.

:func:`verdict` is what every run must satisfy, read from the database *and* from the sandbox's
own record of what Meta accepted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
import sqlalchemy as sa

from kloyst import testing
from kloyst.cli.bootstrap import load
from kloyst.db import session_scope, tenancy, utcnow
from kloyst.testing.deployment import Deployment, http_json, Sandbox, staging_settings
from kloyst.testing.processes import eventually
from kloyst_plugins.contacts.models import Contact

# The fault schedule's seed: printed by every run, set KLOYST_CHAOS_SEED to replay one.
CHAOS_SEED = int(os.environ.get("KLOYST_CHAOS_SEED", "20261205"))
PLUGINS = ("contacts", "waba", "templates", "messages", "wallet", "pricing", "campaigns")
WABA = "200000000000001"  # the sandbox's default WABA (kloyst/sandbox/embedded.py), holding the numbers below
WELCOME_VARIABLES = {"first_name": {"field": "name", "default": "there"}}


CALM_NUMBER, CHAOS_NUMBER = "100000000000001", "100000000000002"  # Meta's tiers: 1,000 and 80 messages a second
RECIPIENTS = 5000
SERVICES = (("api", "API_GATEWAY"), ("webhook", "WEBHOOK"), ("worker-1", "WORKER"), ("worker-2", "WORKER"),
            ("outbox", "OUTBOX"))


def deployment_settings(database_url: str, redis_url: str, graph_url: str, **extra: str) -> dict[str, str]:
    """What the ini says: staging's shape (PostgreSQL, Redis, a real queue) with the test keys."""
    return staging_settings(database_url, redis_url, queue="chaos", **{
        "kloyst.meta.graph_url": graph_url, "kloyst.meta.timeout_seconds": "5",
        # Small fan-out chunks, so that the fan-out is still under way when OUTBOX is killed.
        "campaigns.chunk_size": "250", "campaigns.tick_seconds": "0.5", **extra})


TOKEN_RENEWAL_SECONDS = 300  # well inside the access token's ten minutes
# A sender decides to send (claims the message and looks for a stored status) before its request reaches
# Meta; a status Kloyst acknowledged in that last instant could not have been seen. A duplicate counts as
# preventable when the status reached Kloyst more than this before the re-send arrived (the cases this
# guards against were tens of seconds; one run saw an ack 1.3 ms before an already-decided re-send).
DECISION_MARGIN_SECONDS = 0.25


def recipient_number(index: int) -> str:
    return f"+1{2020000000 + index}"


@dataclass
class Vendor:
    vendor_id: uuid.UUID
    registry: object  # the test's own application over the deployment's database: it mints the tokens
    owner: testing.Account
    admin: testing.Account  # a platform admin
    phone_numbers: dict[str, str] = field(default_factory=dict)  # sandbox (Meta) number id → Kloyst's id
    template_id: str = ""
    _tokens: dict = field(default_factory=dict)  # user id → (token, when it was minted: monotonic seconds)

    @property
    def headers(self) -> dict:
        """The owner's bearer token, renewed every few minutes: a run can outlast an access token's ten."""
        return {"Authorization": f"Bearer {self._token(self.owner.user)}"}

    @property
    def admin_headers(self) -> dict:
        return {"Authorization": f"Bearer {self._token(self.admin.user)}"}

    def _token(self, user) -> str:
        """An access token in a session of its own, committed, as signing in gives (a token names its session)."""
        token, minted = self._tokens.get(user.id, (None, 0.0))
        if token is None or time.monotonic() - minted > TOKEN_RENEWAL_SECONDS:
            with session_scope(self.registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
                token = testing.AccountFactory(db, self.registry["kloyst.access_tokens"]).token_for(user)
            self._tokens[user.id] = (token, time.monotonic())
        return token


def registry_for(deployment: Deployment):
    """The test's own application over the deployment's database, from its ini (to arrange rows and read results)."""
    return load(str(deployment.ini))[1]


def api(deployment: Deployment, method: str, path: str, headers: dict, body: dict | None = None,
        extra_headers: dict | None = None, expect: int | tuple = (200, 201, 202)) -> dict:
    status, answer = http_json(f"{deployment.api_url}/v1{path}", body, method=method,
                               headers={**headers, **(extra_headers or {})}, timeout=30)
    expected = expect if isinstance(expect, tuple) else (expect,)
    if status not in expected:
        raise AssertionError(f"{method} {path}: {status} {answer}")
    return answer


def arrange_vendor(deployment: Deployment, registry, recipients: int, name: str = "Chaos Co") -> Vendor:
    """A vendor with every campaign plugin on, the sandbox's WABA, ``recipients`` contacts and a funded wallet."""
    factory = registry["kloyst.session_factory"]
    with session_scope(factory, vendor_id=tenancy.ALL_VENDORS) as db:
        accounts = testing.AccountFactory(db, registry["kloyst.access_tokens"])
        owner, admin = accounts.vendor(name), accounts.platform_admin()
        for plugin in PLUGINS:
            testing.enable_plugin(db, owner.vendor_id, plugin)
        vendor = Vendor(owner.vendor_id, registry, owner, admin)
    api(deployment, "POST", "/wabas", vendor.headers, {"meta_waba_id": WABA, "name": "Sandbox", "access_token": "x"})
    listed = eventually(lambda: api(deployment, "GET", "/phone-numbers", vendor.headers)["items"],
                        lambda items: len(items) >= 2, "the sandbox's numbers to sync", 60)
    vendor.phone_numbers = {n["meta_phone_number_id"]: n["id"] for n in listed}
    api(deployment, "POST", "/templates/sync", vendor.headers)
    templates = eventually(lambda: api(deployment, "GET", "/templates?status=APPROVED", vendor.headers)["items"],
                           lambda items: any(t["name"] == "welcome" for t in items), "the templates to sync", 60)
    vendor.template_id = next(t["id"] for t in templates if t["name"] == "welcome")
    add_contacts(registry, vendor.vendor_id, recipients)
    api(deployment, "POST", f"/admin/vendors/{vendor.vendor_id}/wallet/topups", vendor.admin_headers,
        {"amount": "100000"}, extra_headers={"Idempotency-Key": f"chaos-{uuid.uuid4()}"})
    return vendor


def add_contacts(registry, vendor_id: uuid.UUID, count: int) -> None:
    """``count`` contacts as an import leaves them: encrypted number and name, the keyed hash, US numbers."""
    cipher, hasher = registry["kloyst.cipher"], registry["kloyst.mobile_hasher"]
    now = utcnow()
    rows = [{"id": uuid.uuid4(), "vendor_id": vendor_id, "mobile_hash": hasher(vendor_id, recipient_number(i)),
             "mobile_enc": cipher.encrypt(recipient_number(i), vendor_id=vendor_id, field="mobile"),
             "name_enc": cipher.encrypt(f"Customer {i}", vendor_id=vendor_id, field="name"),
             "enc_kid": cipher.active_kid, "country": "US", "calling_code": 1, "labels": [], "attributes": {},
             "opted_out": False, "source": "import", "created_at": now, "updated_at": now} for i in range(count)]
    with registry["kloyst.engine"].begin() as conn:
        for start in range(0, len(rows), 2000):
            conn.execute(sa.insert(Contact.__table__), rows[start:start + 2000])


def launch_campaign(deployment: Deployment, vendor: Vendor, meta_phone_number_id: str, name: str) -> str:
    """Draft, quote and launch a campaign to every contact from that number; its id."""
    created = api(deployment, "POST", "/campaigns", vendor.headers, {
        "name": name, "template_id": vendor.template_id, "phone_number_id": vendor.phone_numbers[meta_phone_number_id],
        "audience": {"all": True}, "variables": WELCOME_VARIABLES})
    campaign_id = created["campaign"]["id"]
    quotation = api(deployment, "POST", f"/campaigns/{campaign_id}/quote", vendor.headers)["quotation"]
    assert quotation["wallet"]["sufficient"], quotation
    api(deployment, "POST", f"/campaigns/{campaign_id}/launch", vendor.headers,
        extra_headers={"Idempotency-Key": f"launch-{campaign_id}"}, expect=202)
    return campaign_id


def campaign_stats(deployment: Deployment, vendor: Vendor, campaign_id: str) -> dict:
    return api(deployment, "GET", f"/campaigns/{campaign_id}/stats", vendor.headers)["stats"]


# -- faults -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the launch
    action: str  # "kill", "start" or "flushdb"
    target: str = ""  # a service name


def chaos_schedule(seed: int, *, gap: tuple[float, float] = (2.0, 3.0)) -> list[Fault]:
    """The faults of one run, drawn from ``seed``.

    OUTBOX dies at once (the fan-out is under way). Then, in a seeded order with a few seconds
    between them: each WORKER dies alone, both die together, WEBHOOK dies, API_GATEWAY dies,
    Redis is flushed — every process back 3–5 s after its death — and once WEBHOOK stays down
    10–12 s while a WORKER dies. That last one makes the worker's re-sends go out before Meta's
    statuses of its calls can reach Kloyst: the duplicates nobody can prevent, which Kloyst must
    count when the statuses finally arrive.
    """
    rng = random.Random(seed)

    def back() -> float:  # how long a process stays down
        return rng.uniform(3, 5)

    outbox_down = round(rng.uniform(0.0, 0.3), 2)
    faults = [Fault(outbox_down, "kill", "outbox"), Fault(round(outbox_down + back(), 2), "start", "outbox")]
    steps = [
        [(0.0, "kill", "worker-1"), (back(), "start", "worker-1")],
        [(0.0, "kill", "worker-2"), (back(), "start", "worker-2")],
        [(0.0, "kill", "worker-1"), (0.5, "kill", "worker-2"), (0.5 + back(), "start", "worker-1"),
         (0.5 + back(), "start", "worker-2")],
        [(0.0, "kill", "webhook"), (back(), "start", "webhook")],
        [(0.0, "kill", "api"), (back(), "start", "api")],
        [(0.0, "flushdb", "")],
        [(0.0, "kill", "webhook"), (0.5, "kill", "worker-2"), (0.5 + back(), "start", "worker-2"),
         (rng.uniform(10, 12), "start", "webhook")],
    ]
    rng.shuffle(steps)
    now = faults[-1].at
    for step in steps:
        now += rng.uniform(*gap)
        faults.extend(Fault(round(now + offset, 2), action, target) for offset, action, target in step)
        now += max(offset for offset, _, _ in step)
    return sorted(faults, key=lambda fault: fault.at)


@dataclass
class FaultLog:
    done: list[tuple[float, Fault]] = field(default_factory=list)  # (time.time(), fault)

    @property
    def last_restart(self) -> float:
        return max(at for at, fault in self.done if fault.action == "start")


def run_faults(deployment: Deployment, faults: list[Fault], launched_at: float, redis_url: str,
               after: Callable[[Fault, float], None] | None = None) -> FaultLog:
    """Carry the faults out on time (``launched_at`` is a ``time.monotonic()``), calling ``after(fault, when)`` as
    each is done (``when`` a ``time.time()``); returns once every process is ready again."""
    log = FaultLog()
    for fault in faults:
        time.sleep(max(0.0, launched_at + fault.at - time.monotonic()))
        if fault.action == "kill":
            deployment[fault.target].kill()
        elif fault.action == "start":
            deployment[fault.target].start()
        else:
            redis.Redis.from_url(redis_url).flushdb()
        log.done.append((time.time(), fault))
        if after is not None:
            after(fault, log.done[-1][0])
    for service in deployment.services.values():
        service.wait_ready(90)
    return log


# -- what must hold -----------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """What a run did, from Kloyst's database and from the sandbox (Meta's side)."""

    recipients: int
    reached: int  # recipients with at least one accepted send
    sends: int  # accepted by Meta
    duplicate_sends: int  # Meta's count: sends beyond one per recipient
    preventable_duplicates: list[dict]  # re-sent although a status of an earlier send had reached Kloyst
    kloyst_duplicate_sends: int  # what Kloyst counted (duplicate_sends of the campaign's messages)
    taken_back: int  # messages of dead senders queued again (maybe_sent_before): the only ones that can go twice
    counts: dict[str, int]  # the campaign's messages by status (SQL)
    api_counts: dict[str, int]  # the same, from GET /campaigns/{id}/stats
    campaign_status: str
    outbox: dict[str, int]  # outbox events by status
    settlement_problems: list[str]
    messages_check: tuple[int, str]  # exit status and output of `kloyst messages check`
    wallet_check: tuple[int, str]

    def problems(self, *, allow_unprevented_duplicates: bool) -> list[str]:
        """Every way the run broke Kloyst's promise (empty: it kept it)."""
        found = []
        if self.reached != self.recipients:
            found.append(f"{self.recipients - self.reached} recipients never got an accepted send")
        if self.preventable_duplicates:
            found.append(f"{len(self.preventable_duplicates)} duplicates although a status had reached Kloyst "
                         f"before the re-send: {self.preventable_duplicates[:5]}")
        if self.duplicate_sends and not allow_unprevented_duplicates:
            found.append(f"{self.duplicate_sends} duplicate sends in a run without faults")
        if self.kloyst_duplicate_sends != self.duplicate_sends:
            found.append(f"Kloyst counted {self.kloyst_duplicate_sends} duplicate sends, Meta accepted "
                         f"{self.duplicate_sends}")
        if self.campaign_status != "COMPLETED":
            found.append(f"the campaign is {self.campaign_status}")
        if {k: v for k, v in self.api_counts.items() if v} != {k: v for k, v in self.counts.items() if v}:
            found.append(f"stats API {self.api_counts} disagrees with SQL {self.counts}")
        if set(self.outbox) - {"delivered"}:
            found.append(f"outbox events not delivered: {self.outbox}")
        found += self.settlement_problems
        if self.messages_check[0] != 0:
            found.append(f"kloyst messages check exited {self.messages_check[0]}: {self.messages_check[1][-2000:]}")
        if self.wallet_check[0] != 0:
            found.append(f"kloyst wallet check exited {self.wallet_check[0]}: {self.wallet_check[1][-2000:]}")
        return found

    def summary(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("messages_check", "wallet_check")}


def wait_until_quiet(deployment: Deployment, sandbox: Sandbox, engine, timeout: float = 120) -> None:
    """Every webhook Meta owes is delivered and applied, and no outbox event is left to deliver."""
    def state():
        webhooks = sandbox.api("stats")["webhooks"]
        with engine.connect() as conn:
            unprocessed = conn.execute(sa.text("SELECT count(*) FROM webhook_delivery WHERE processed_at IS NULL")
                                       ).scalar()
            outbox = conn.execute(sa.text("SELECT count(*) FROM outbox_event WHERE status IN ('pending', 'leased')")
                                  ).scalar()
        return {"sandbox_pending": webhooks["pending"], "sandbox_retrying": webhooks["retrying"],
                "unprocessed_deliveries": unprocessed, "outbox_waiting": outbox}

    eventually(state, lambda s: not any(s.values()), "webhooks and outbox events to settle", timeout, pause=0.5)


def _typed(sql: str):
    """A query whose ``:c`` is a campaign id (a UUID: SQLite stores it as 32 hex digits, PostgreSQL as uuid)."""
    return sa.text(sql).bindparams(sa.bindparam("c", type_=sa.Uuid()))


# The ledger's entries per message in one pass over the campaign's (a sub-select per message would read the
# whole ledger once per message: there is no index on ledger_entry.message_id, and the ledger grows run after run).
_SETTLEMENT = _typed("""
SELECT m.id, m.status, m.price_micros, coalesce(l.captures, 0), coalesce(l.captured, 0), coalesce(l.releases, 0),
       coalesce(l.refunds, 0)
FROM message_log m LEFT JOIN (
    SELECT e.message_id,
           sum(CASE WHEN e.kind = 'CAPTURE' THEN 1 ELSE 0 END) AS captures,
           sum(CASE WHEN e.kind = 'CAPTURE' THEN e.amount_micros ELSE 0 END) AS captured,
           sum(CASE WHEN e.kind = 'RELEASE' THEN 1 ELSE 0 END) AS releases,
           sum(CASE WHEN e.kind = 'REFUND' THEN 1 ELSE 0 END) AS refunds
    FROM ledger_entry e JOIN message_log em ON em.id = e.message_id
    WHERE em.campaign_id = :c GROUP BY e.message_id
) l ON l.message_id = m.id
WHERE m.campaign_id = :c
""")


def settlement_problems(conn, campaign_id: str) -> list[str]:
    """Each message's price captured once if Meta took it, released once if not; every hold settled to zero."""
    problems = []
    for message_id, status, price, captures, captured, releases, refunds in conn.execute(
            _SETTLEMENT, {"c": uuid.UUID(campaign_id)}):
        if status in ("SENT", "DELIVERED", "READ"):
            if (captures, captured, releases) != (1, price, 0):
                problems.append(f"message {message_id} ({status}, price {price}): {captures} captures of {captured}, "
                                f"{releases} releases")
        elif status == "FAILED":  # never sent: its price released; sent, then failed: captured, then refunded
            if (captures, releases, refunds) not in ((0, 1, 0), (1, 0, 1)):
                problems.append(f"message {message_id} (FAILED): {captures} captures, {releases} releases, "
                                f"{refunds} refunds")
        else:
            problems.append(f"message {message_id} is still {status}")
    open_holds = conn.execute(sa.text(
        "SELECT id, amount_micros - captured_micros - released_micros FROM wallet_hold "
        "WHERE reference = :ref AND amount_micros - captured_micros - released_micros <> 0"),
        {"ref": f"campaign:{campaign_id}"}).all()
    problems += [f"hold {hold_id} still holds {outstanding}" for hold_id, outstanding in open_holds]
    return problems


def campaign_sends(sandbox: Sandbox, engine, campaign_id: str, meta_phone_number_id: str) -> dict[str, list]:
    """What the sandbox accepted for this campaign's messages (named in their opaque data), per recipient."""
    with engine.connect() as conn:
        ours = {str(_as_uuid(m)) for m in conn.execute(_typed("SELECT id FROM message_log WHERE campaign_id = :c"),
                                                       {"c": uuid.UUID(campaign_id)}).scalars()}
    accepted = sandbox.api("accepted", query=f"phone_number_id={meta_phone_number_id}")
    found = {}
    for to, sends in accepted["numbers"].get(meta_phone_number_id, {}).items():
        if mine := [send for send in sends if send["opaque"] in ours]:
            found[to] = mine
    return found


def _as_uuid(value) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def verdict(deployment: Deployment, sandbox: Sandbox, engine, vendor: Vendor, campaign_id: str,
            meta_phone_number_id: str, recipients: int) -> Verdict:
    sends_by_recipient = campaign_sends(sandbox, engine, campaign_id, meta_phone_number_id)
    preventable = []
    for to, sends in sends_by_recipient.items():
        for index, later in enumerate(sends[1:], start=1):
            told = [s["status_acked_at"] for s in sends[:index] if s["status_acked_at"] is not None]
            if told and min(told) < later["at"] - DECISION_MARGIN_SECONDS:
                preventable.append({"to": to, "status_acked_at": min(told), "resent_at": later["at"],
                                    "message": later["opaque"]})
    expected = {recipient_number(i).lstrip("+") for i in range(recipients)}
    campaign = {"c": uuid.UUID(campaign_id)}
    with engine.connect() as conn:
        counts = dict(conn.execute(_typed("SELECT status, count(*) FROM message_log WHERE campaign_id = :c "
                                          "GROUP BY status"), campaign).all())
        counted, taken_back = conn.execute(_typed(
            "SELECT coalesce(sum(duplicate_sends), 0), coalesce(sum(CASE WHEN maybe_sent_before THEN 1 ELSE 0 END), 0) "
            "FROM message_log WHERE campaign_id = :c"), campaign).one()
        outbox = dict(conn.execute(sa.text("SELECT status, count(*) FROM outbox_event GROUP BY status")).all())
        settled = settlement_problems(conn, campaign_id)
    stats = campaign_stats(deployment, vendor, campaign_id)
    messages_check, wallet_check = deployment.cli("messages", "check"), deployment.cli("wallet", "check")
    return Verdict(
        recipients=recipients, reached=len(expected & set(sends_by_recipient)),
        sends=sum(len(sends) for sends in sends_by_recipient.values()),
        duplicate_sends=sum(len(sends) - 1 for sends in sends_by_recipient.values()),
        preventable_duplicates=preventable,
        kloyst_duplicate_sends=int(counted), taken_back=int(taken_back),
        counts={k.lower(): int(v) for k, v in counts.items()},
        api_counts={k: int(v) for k, v in stats["counts"].items()}, campaign_status=stats["status"],
        outbox={k: int(v) for k, v in outbox.items()}, settlement_problems=settled,
        messages_check=(messages_check.returncode, messages_check.stdout + messages_check.stderr),
        wallet_check=(wallet_check.returncode, wallet_check.stdout + wallet_check.stderr))


def duplicates_per_kill(sandbox: Sandbox, engine, campaign_id: str, meta_phone_number_id: str,
                        log: FaultLog) -> Counter:
    """Which fault each duplicate send of the campaign follows: the last SIGKILL before the second send was
    accepted."""
    kills = sorted((at, fault.target) for at, fault in log.done if fault.action == "kill")
    blame: Counter = Counter()
    for sends in campaign_sends(sandbox, engine, campaign_id, meta_phone_number_id).values():
        for later in sends[1:]:
            before = [target for at, target in kills if at <= later["at"]]
            blame[before[-1] if before else "no fault"] += 1
    return blame


def dump(path, **sections) -> None:
    """What a failed run leaves behind for a human: the verdict and the schedule, as JSON."""
    path.write_text(json.dumps(sections, indent=2, default=str))
