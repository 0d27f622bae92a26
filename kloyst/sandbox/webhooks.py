"""Calling the webhook back, as Meta does: signed envelopes, statuses after each accepted send, inbound messages.

A few sender threads share one pooled urllib3 manager. Each thread takes a batch of
accepted messages and posts their statuses stage by stage (every message's first status,
then every second one...), so one message's statuses first leave in the planned order;
duplicates and out-of-order delivery are planned per message from the configured shares.

A POST that fails (no connection, a timeout, any answer but 2xx) is retried as Meta retries:
the same bytes under the same signature (Kloyst dedupes deliveries by a hash of the raw body),
with growing pauses, until the retry horizon since its first attempt has passed, and only then
given up. Retries wait in a :class:`~kloyst.sandbox.retries.RetrySchedule` for retry threads of
their own, so fresh webhooks keep flowing meanwhile, and a retried status can arrive after
its message's later statuses, as it can from Meta. Killing and restarting Kloyst's webhook
process within the horizon therefore loses nothing: what it refused arrives once it is back. A
POST that reached the receiver but whose answer was lost is sent again, so the receiver sees it
twice, as it would from Meta.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import queue
import random
import threading
import time

import urllib3

from kloyst.sandbox.errors import webhook_error
from kloyst.sandbox.graph import message_pricing
from kloyst.sandbox.retries import RetrySchedule, backoff

log = logging.getLogger(__name__)

def sign(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def plan_statuses(behaviour, failure: int | None = None) -> list[tuple[str, int | None]]:
    """The statuses one accepted message will produce: sent → delivered → read, or sent → failed.

    ``failure`` is a failure decided at send time (131047, outside the service window): Meta
    never sends such a message, so its one status is ``failed``.
    """
    if failure is not None:
        return [("failed", failure)]
    roll, plan = random.random(), None
    for code, rate in behaviour.status_failure_rates.items():
        if roll < rate:
            plan = [("sent", None), ("failed", code)]
            break
        roll -= rate
    plan = plan or [("sent", None), ("delivered", None), ("read", None)]
    if random.random() < behaviour.out_of_order_rate:
        plan.reverse()
    if random.random() < behaviour.duplicate_rate:
        index = random.randrange(len(plan))
        plan.insert(index + 1, plan[index])
    return plan


@dataclasses.dataclass(eq=False)
class Delivery:
    """One webhook POST. Every attempt sends the same body under the same signature."""

    body: bytes
    headers: dict[str, str]
    wamids: tuple[str, ...]  # the messages whose statuses it carries, acknowledged by a 2xx answer
    first_attempt: float = 0.0  # time.monotonic() of the first attempt
    attempts: int = 0


class WebhookSender:
    """Posts status and inbound webhooks to the configured URL and retries the failed ones like Meta.

    ``threads`` sender threads make each POST's first attempt and ``retry_threads`` the later ones.
    More retry threads than senders: a receiver down for a minute leaves thousands of small POSTs
    scheduled (each sender's batch of the moment), and when it is back they must reach it within
    seconds, as Meta's many retrying servers would, not queue behind a handful of threads.
    :meth:`stats` counts POSTs and, for ``pending``, events (accepted sends and inbound messages).
    """

    def __init__(self, state, threads: int = 4, retry_threads: int = 16):
        self.state = state
        self.fresh: queue.Queue = queue.Queue()
        self.schedule = RetrySchedule()
        self.http = urllib3.PoolManager(num_pools=4, maxsize=threads + retry_threads,
                                        timeout=urllib3.Timeout(connect=2, read=10), retries=False)
        self._counts = threading.Lock()  # guards the counters below
        self.posted = 0  # POSTs answered 2xx
        self.failed = 0  # POSTs given up: still failing past the retry horizon
        self.retrying = 0  # POSTs that failed and are due again
        self.retries = 0  # attempts after a POST's first
        self.dropped = 0  # POSTs due again when the sandbox no longer had a webhook URL
        self.pending = 0  # events whose POSTs have not all been attempted once
        self._stop = threading.Event()
        self._senders = [threading.Thread(target=self._send_fresh, name=f"sandbox-webhook-{i}", daemon=True)
                         for i in range(threads)]
        self._retriers = [threading.Thread(target=self._retry_due, name=f"sandbox-webhook-retry-{i}", daemon=True)
                          for i in range(retry_threads)]
        for thread in self._senders + self._retriers:
            thread.start()

    def message_accepted(self, number, recipient, wamid: str, pricing, opaque, failure: int | None = None
                         ) -> None:
        """Plan the status webhooks of an accepted send to ``recipient`` (a :class:`~kloyst.sandbox.customers.
        Recipient`); ``failure``, a code decided at send time, makes its one status ``failed``.

        Tests that play Meta by hand may pass the recipient's phone number instead, and the message's
        template (or None for free-form) instead of its ``pricing``.
        """
        if not self.state.behaviour.webhook_url:
            return
        if isinstance(recipient, str):
            with self.state.lock:
                recipient = self.state.customers.recipient(recipient.lstrip("+"), None)
        if not isinstance(pricing, dict):
            pricing = message_pricing(pricing, False)
        self._enqueue(("status", number, recipient, wamid, pricing, opaque, failure))

    def inbound(self, number, contact: dict, message: dict) -> None:
        """Deliver a customer's message: ``value.contacts`` holds ``contact``, ``value.messages`` ``message``."""
        self._enqueue(("inbound", number, contact, message))

    def inbound_text(self, number, sender: str, text: str, name: str, wamid: str) -> None:
        """Deliver a text from the phone number ``sender`` (digits) with the profile name ``name``."""
        with self.state.lock:
            user_id = self.state.customers.user_id_for_phone(sender)
        self.inbound(number, {"profile": {"name": name}, "wa_id": sender, "user_id": user_id},
                     {"from": sender, "from_user_id": user_id, "id": wamid, "timestamp": str(int(time.time())),
                      "type": "text", "text": {"body": text}})

    def stats(self) -> dict:
        with self._counts:
            return {"posted": self.posted, "failed": self.failed, "retrying": self.retrying,
                    "pending": self.pending, "retries": self.retries, "dropped": self.dropped}

    def drop_scheduled(self) -> int:
        """Forget every POST waiting for a retry (counted as dropped): a sandbox reset between tests, so one test's
        failed webhooks never reach the next test's receiver."""
        dropped = self.schedule.clear()
        with self._counts:
            self.retrying -= dropped
            self.dropped += dropped
        return dropped

    def close(self) -> None:
        """Stop now: attempts in flight may finish, scheduled retries and unsent events are dropped."""
        self._stop.set()
        unsent = self.schedule.close()
        for _ in self._senders:
            self.fresh.put(None)
        deadline = time.monotonic() + 5
        for thread in self._senders + self._retriers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.http.clear()
        if unsent:
            log.info("sandbox closed with %d webhook POSTs still to retry", len(unsent))

    def _enqueue(self, item: tuple) -> None:
        with self._counts:
            self.pending += 1
        self.fresh.put(item)

    def _send_fresh(self) -> None:
        while not self._stop.is_set():
            item = self.fresh.get()
            if item is None:
                return
            batch = [item]
            limit = max(1, self.state.behaviour.webhook_batch)
            while len(batch) < limit:
                try:
                    more = self.fresh.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.fresh.put(None)
                    break
                batch.append(more)
            try:
                self._deliver(batch, limit)
            except Exception:  # a broken receiver must not kill the sender
                log.exception("sandbox webhook delivery failed")
            finally:
                with self._counts:
                    self.pending -= len(batch)

    def _retry_due(self) -> None:
        while (delivery := self.schedule.take()) is not None:
            try:
                self._attempt(delivery)
            except Exception:
                log.exception("sandbox webhook retry failed")

    def _deliver(self, batch: list, limit: int) -> None:
        behaviour = self.state.behaviour
        stages: list[list[tuple]] = []
        for item in batch:
            if item[0] == "inbound":
                _, number, contact, message = item
                self._post(number, {"contacts": [contact], "messages": [message]}, wamids=())
                continue
            _, number, recipient, wamid, pricing, opaque, failure = item
            for index, (status, code) in enumerate(plan_statuses(behaviour, failure)):
                if len(stages) <= index:
                    stages.append([])
                contact = None if code is not None and not behaviour.contacts_in_failed_statuses \
                    else recipient.contact(status)
                stages[index].append((number, contact, _status(wamid, recipient, status, code, pricing, opaque)))
        for stage in stages:
            by_number: dict = {}
            for number, contact, status in stage:
                by_number.setdefault(number.id, (number, []))[1].append((contact, status))
            for number, pairs in by_number.values():
                for start in range(0, len(pairs), limit):
                    chunk = pairs[start:start + limit]
                    value: dict = {}
                    contacts = _unique([contact for contact, _ in chunk if contact is not None])
                    if contacts:  # Meta's current status webhooks carry the recipients (not for failed ones)
                        value["contacts"] = contacts
                    value["statuses"] = [status for _, status in chunk]
                    self._post(number, value, tuple(status["id"] for _, status in chunk))

    def _post(self, number, value: dict, wamids: tuple[str, ...]) -> None:
        if not self.state.behaviour.webhook_url:
            return
        envelope = {"object": "whatsapp_business_account", "entry": [{
            "id": number.waba_id, "time": int(time.time()),
            "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "".join(ch for ch in number.display_phone_number
                                                              if ch.isdigit()),
                             "phone_number_id": number.id},
                **value}}]}]}
        body = json.dumps(envelope, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(self.state.app_secret, body)}
        self._attempt(Delivery(body, headers, wamids))

    def _attempt(self, delivery: Delivery) -> None:
        """POST the delivery once; if that fails, schedule the next attempt or, past the horizon, give it up.

        The URL and the retry settings are read at each attempt, so a reconfigured sandbox
        retries to its new webhook URL; with none left the delivery is dropped.
        """
        if self._stop.is_set():
            return
        behaviour = self.state.behaviour
        url = behaviour.webhook_url
        retry = delivery.attempts > 0
        if not url:
            if retry:
                with self._counts:
                    self.retrying -= 1
                    self.dropped += 1
            return
        if retry:
            with self._counts:
                self.retries += 1
        else:
            delivery.first_attempt = time.monotonic()
        delivery.attempts += 1
        try:
            response = self.http.request("POST", url, body=delivery.body, headers=delivery.headers)
            error = None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib3.exceptions.HTTPError as exc:
            error = repr(exc)
        if error is None:
            if delivery.wamids:  # before counting it posted: a test waiting on the count then sees the time
                self.state.statuses_acknowledged(delivery.wamids, time.time())
            with self._counts:
                self.posted += 1
                if retry:
                    self.retrying -= 1
            return
        now = time.monotonic()
        give_up_at = delivery.first_attempt + behaviour.webhook_retry_horizon_seconds
        if now >= give_up_at:
            with self._counts:
                self.failed += 1
                if retry:
                    self.retrying -= 1
            log.warning("sandbox gave up on a webhook POST to %s after %d attempts in %.1f s; the last: %s",
                        url, delivery.attempts, now - delivery.first_attempt, error)
            return
        if not retry:
            with self._counts:
                self.retrying += 1
        # The last attempt falls on the horizon itself, so a receiver back just in time still gets it.
        due = min(now + backoff(delivery.attempts, behaviour.webhook_retry_max_interval_seconds), give_up_at)
        self.schedule.put(due, delivery)


def _unique(contacts: list[dict]) -> list[dict]:
    seen: dict[str, dict] = {}
    for contact in contacts:
        seen.setdefault(contact["user_id"], contact)
    return list(seen.values())


_FAILURE_DETAILS = {131047: "Message failed to send because more than 24 hours have passed since the customer "
                            "last replied to this number."}


def _status(wamid: str, recipient, status: str, code: int | None, pricing: dict, opaque) -> dict:
    """One ``statuses[]`` entry: ``recipient_id`` when the phone is known, ``recipient_user_id`` (the BSUID)
    except on a failed send that went to a phone number (Meta's BSUID page)."""
    result: dict = {"id": wamid, "status": status, "timestamp": str(int(time.time()))}
    if recipient.wa_id:
        result["recipient_id"] = recipient.wa_id
    if code is None or not recipient.by_phone:
        result["recipient_user_id"] = recipient.user_id
        if recipient.parent_user_id:
            result["parent_recipient_user_id"] = recipient.parent_user_id
    if opaque:
        result["biz_opaque_callback_data"] = opaque
    if code is not None:
        result["errors"] = [webhook_error(code, _FAILURE_DETAILS.get(code, ""))]
    else:
        result["pricing"] = dict(pricing)
    return result
