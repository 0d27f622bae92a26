"""The sandbox's in-memory world: numbers, templates, behaviour knobs, limits and what it received.

One lock guards it all: a send holds it for a few dictionary operations, far below the
latency the sandbox injects, so it is never the bottleneck at Meta's 1,000 mps.

What it received is what Meta would have accepted: each send's record says which number sent
what to whom, with the ``biz_opaque_callback_data`` it carried and when Kloyst first
acknowledged a status webhook for it. Grouped per number and recipient
(:meth:`SandboxState.accepted`), that is how a test counts duplicate sends from Meta's side.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from kloyst.sandbox.customers import Customers
from kloyst.sandbox.media import MediaStore

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
VERSION = re.compile(r"^v[0-9]+\.[0-9]+$")
# Graph API versions Meta serves at the end of 2026 (each lives about two years); Kloyst uses v23.0.
GRAPH_VERSIONS = ("v21.0", "v22.0", "v23.0", "v24.0", "v25.0", "v26.0")


@dataclass
class PhoneNumber:
    id: str
    waba_id: str
    display_phone_number: str
    throughput: int = 80  # messages per second, any positive rate; Meta's tiers are 80 (STANDARD) and 1,000 (HIGH)
    verified_name: str = "Kloyst Sandbox"
    quality_rating: str = "GREEN"
    status: str = "CONNECTED"
    accepted: deque = field(default_factory=deque, repr=False)  # monotonic times of the last second's sends
    # GET/POST /{phone-number-id}/whatsapp_business_profile
    profile: dict = field(default_factory=lambda: {
        "about": "A Kloyst sandbox number.", "address": "1 Sandbox Way", "description": "Simulated by Kloyst.",
        "email": "sandbox@example.com", "websites": ["https://example.com/"], "vertical": "OTHER"})

    def as_json(self) -> dict:
        return {"id": self.id, "display_phone_number": self.display_phone_number,
                "verified_name": self.verified_name, "quality_rating": self.quality_rating,
                "code_verification_status": "VERIFIED", "status": self.status,
                "platform_type": "CLOUD_API",
                "throughput": {"level": "HIGH" if self.throughput >= 1000 else "STANDARD"}}

    def all_fields(self) -> dict:
        """Every field ``GET /{phone-number-id}?fields=…`` can name; None: a real field the sandbox leaves unset."""
        return {**self.as_json(), "name_status": "APPROVED", "new_name_status": None, "account_mode": "LIVE",
                "is_official_business_account": False, "is_pin_enabled": True, "is_preverified_number": False,
                "is_on_biz_app": False, "search_visibility": "VISIBLE", "health_status": None,
                "conversational_automation": None, "quality_score": {"score": self.quality_rating},
                "webhook_configuration": None, "eligibility_for_api_business_global_search": None,
                "certificate": None, "new_certificate": None, "last_onboarded_time": None,
                "country_code": None, "country_dial_code": None, "messaging_limit_tier": "TIER_UNLIMITED",
                "whatsapp_business_manager_messaging_limit": "TIER_UNLIMITED", "username": None}


@dataclass
class Template:
    id: str
    name: str
    language: str
    category: str
    components: list
    status: str = "APPROVED"
    parameter_format: str = "POSITIONAL"

    def placeholders(self, component_type: str) -> list[str]:
        """The variables of the HEADER or BODY text, in order (``["1", "2"]`` or ``["first_name"]``)."""
        for component in self.components:
            if str(component.get("type", "")).upper() == component_type and component.get("text"):
                return PLACEHOLDER.findall(component["text"])
        return []

    def as_json(self) -> dict:
        return {"id": self.id, "name": self.name, "language": self.language, "status": self.status,
                "category": self.category, "parameter_format": self.parameter_format,
                "components": self.components}

    def body_text(self) -> str:
        return next((str(c.get("text", "")) for c in self.components
                     if str(c.get("type", "")).upper() == "BODY"), "")


@dataclass
class Behaviour:
    """What the sandbox does beyond validating: latency, injected failures, webhook quirks."""

    latency_ms: float = 100.0
    access_token: str | None = None  # None: any non-empty Bearer token is accepted
    failure_rates: dict[int, float] = field(default_factory=dict)  # synchronous errors, code → share of sends
    status_failure_rates: dict[int, float] = field(default_factory=dict)  # "failed" webhooks, code → share
    duplicate_rate: float = 0.0  # share of messages with one status webhook delivered twice
    out_of_order_rate: float = 0.0  # share of messages whose statuses are delivered in reverse order
    webhook_url: str | None = None
    webhook_batch: int = 100  # most statuses in one webhook POST (Meta batches too)
    pair_burst: int = 45  # pair rate limit: a bucket of this many sends to one recipient ...
    pair_interval_seconds: float = 6.0  # ... refilled by one every this many seconds
    new_template_status: str = "APPROVED"
    # A failed webhook POST is retried, with backoff up to this interval, until this long after its first
    # attempt (Meta keeps trying for days): an hour outlasts any restart of Kloyst's webhook process.
    webhook_retry_horizon_seconds: float = 3600.0
    webhook_retry_max_interval_seconds: float = 5.0
    # The Graph API versions Meta serves (about two years of releases); any other answers "Unknown path".
    graph_versions: tuple[str, ...] = GRAPH_VERSIONS
    # The customer-service window (kloyst.sandbox.customers): free-form messages outside it fail with 131047.
    enforce_window: bool = True
    window_seconds: float = 24 * 3600.0
    media_ttl_seconds: float = 30 * 24 * 3600.0  # Meta keeps uploaded and received media 30 days
    media_url_ttl_seconds: float = 300.0  # and a media URL works for 5 minutes
    # Meta's BSUID page: failed status webhooks carry no contacts array. pywa 4.5.0 expects one in every
    # status webhook; its test switches this on to check the rest of a failed status against pywa.
    contacts_in_failed_statuses: bool = False

    def update(self, data: dict) -> None:
        for key, value in data.items():
            if not hasattr(self, key):
                raise ValueError(f"unknown sandbox setting {key!r}")
            if key in ("failure_rates", "status_failure_rates"):
                value = {int(code): float(rate) for code, rate in value.items()}
            if key in ("webhook_retry_horizon_seconds", "webhook_retry_max_interval_seconds", "window_seconds",
                       "media_ttl_seconds", "media_url_ttl_seconds"):
                value = float(value)
                if not value >= 0:
                    raise ValueError(f"{key} must be a number of seconds, not {value!r}")
            if key in ("enforce_window", "contacts_in_failed_statuses") and not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, not {value!r}")
            if key == "graph_versions":
                if isinstance(value, str) or not all(isinstance(v, str) and VERSION.match(v) for v in value):
                    raise ValueError(f"graph_versions must be a list like ['v23.0'], not {value!r}")
                value = tuple(value)
            setattr(self, key, value)


class SandboxState:
    def __init__(self, app_secret: str = "", behaviour: Behaviour | None = None, record_limit: int = 500_000):
        self.lock = threading.Lock()
        self.app_secret = app_secret
        self.behaviour = behaviour or Behaviour()
        self.numbers: dict[str, PhoneNumber] = {}
        self.templates: dict[str, list[Template]] = {}  # waba id → templates in creation order
        self.undeliverable: set[str] = set()
        self._next_id = 900_000_000_000_000
        self._record_limit = record_limit
        self.reset_records()

    def reset_records(self) -> None:
        self.sends: deque = deque(maxlen=self._record_limit)  # accepted sends, oldest first
        self._sends_by_wamid: dict[str, dict] = {}  # the records still in ``sends``, by wamid
        self.by_number: Counter = Counter()
        self.by_recipient: Counter = Counter()
        self.errors: Counter = Counter()  # synchronous error code → how many were returned
        self._pairs: dict[tuple[str, str], tuple[float, float]] = {}  # (number, recipient) → (tokens, at)
        self.customers = Customers()  # simulated users and their service windows
        self.media = MediaStore()
        self.reads: deque = deque(maxlen=self._record_limit)  # mark-as-read (and typing) calls, oldest first
        self.inbound: deque = deque(maxlen=self._record_limit)  # inbound messages injected, oldest first

    def new_id(self) -> str:
        with self.lock:
            self._next_id += 1
            return str(self._next_id)

    def add_number(self, number: PhoneNumber) -> None:
        if number.throughput <= 0:
            raise ValueError("throughput must be positive (Meta's tiers are 80 and 1000)")
        with self.lock:
            self.numbers[number.id] = number
            self.templates.setdefault(number.waba_id, [])

    def add_template(self, waba_id: str, template: Template) -> None:
        with self.lock:
            self.templates.setdefault(waba_id, []).append(template)

    def find_template(self, waba_id: str, name: str, language: str) -> Template | None:
        for template in self.templates.get(waba_id, ()):
            if template.name == name and template.language == language:
                return template
        return None

    def admit(self, number: PhoneNumber, recipient: str, now: float | None = None) -> int | None:
        """Apply the number's throughput and the pair rate limit; ``None`` admits the send, else the code.

        Throughput is a sliding one-second window of accepted sends, so no second anywhere
        holds more than the tier. The pair limit is a token bucket per (number, recipient).
        """
        now = time.monotonic() if now is None else now
        behaviour = self.behaviour
        window = number.accepted
        if window and now < window[-1]:
            now = window[-1]  # arrivals read by other threads a moment apart: keep the window in time order
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= number.throughput:
            return 130429
        key = (number.id, recipient)
        tokens, at = self._pairs.get(key, (float(behaviour.pair_burst), now))
        if behaviour.pair_interval_seconds > 0:
            tokens = min(float(behaviour.pair_burst), tokens + (now - at) / behaviour.pair_interval_seconds)
        if tokens < 1.0:
            self._pairs[key] = (tokens, now)
            return 131056
        self._pairs[key] = (tokens - 1.0, now)
        window.append(now)
        return None

    def record(self, number: PhoneNumber, recipient: str, wamid: str, kind: str, template: str | None, *,
               opaque: str | None, user_id: str | None = None, outcome: str = "accepted") -> None:
        """Note an admitted send (call under the lock, right after :meth:`admit`).

        Every key a record will ever have is set here: a record is read outside the lock while
        :meth:`statuses_acknowledged` may set ``status_acked_at``, which is safe only because
        the dictionary never changes size.
        """
        if len(self.sends) == self.sends.maxlen:  # the oldest record falls out: so does its index entry
            self._sends_by_wamid.pop(self.sends[0]["id"], None)
        record = {"at": time.time(), "admitted": number.accepted[-1], "phone_number_id": number.id,
                  "to": recipient, "user_id": user_id, "id": wamid, "type": kind, "template": template,
                  "opaque": opaque, "outcome": outcome, "status_acked_at": None}
        self.sends.append(record)
        self._sends_by_wamid[wamid] = record
        self.by_number[number.id] += 1
        self.by_recipient[recipient] += 1

    def statuses_acknowledged(self, wamids, at: float) -> None:
        """Kloyst answered 2xx to a webhook carrying statuses of these messages: note the first such answer.

        A wamid the sandbox has no record of (never sent through it, or fallen out of the
        bounded record) is skipped.
        """
        with self.lock:
            for wamid in wamids:
                record = self._sends_by_wamid.get(wamid)
                if record is not None and record["status_acked_at"] is None:
                    record["status_acked_at"] = at

    def accepted(self, phone_number_id: str | None = None, duplicates_only: bool = False) -> dict:
        """The accepted sends grouped per number and recipient, in acceptance order, with duplicate counts.

        ``phone_number_id`` keeps one number's sends. ``duplicates_only`` lists only the
        recipients sent more than once; the counts still cover every send selected.
        """
        with self.lock:
            records = list(self.sends)
        numbers: dict[str, dict[str, list[dict]]] = {}
        for record in records:
            if phone_number_id is not None and record["phone_number_id"] != phone_number_id:
                continue
            numbers.setdefault(record["phone_number_id"], {}).setdefault(record["to"], []).append(
                {"id": record["id"], "at": record["at"], "opaque": record["opaque"],
                 "status_acked_at": record["status_acked_at"], "template": record["template"]})
        per_pair = [len(sends) for recipients in numbers.values() for sends in recipients.values()]
        counts = {"sends": sum(per_pair), "recipients": len(per_pair),
                  "recipients_sent_twice": sum(1 for n in per_pair if n > 1),
                  "duplicate_sends": sum(n - 1 for n in per_pair)}
        if duplicates_only:
            numbers = {number_id: twice for number_id, recipients in numbers.items()
                       if (twice := {to: sends for to, sends in recipients.items() if len(sends) > 1})}
        return {"numbers": numbers, **counts}

    def stats(self) -> dict:
        with self.lock:
            return {"accepted": sum(self.by_number.values()), "by_number": dict(self.by_number),
                    "by_recipient": dict(self.by_recipient),
                    "errors": {str(code): n for code, n in self.errors.items()},
                    "throughput_exceeded": self.errors.get(130429, 0)}
