"""Calling the webhook back, as Meta does: signed envelopes, statuses after each accepted send, inbound messages.

A few sender threads share one pooled urllib3 manager. Each thread takes a batch of
accepted messages and posts their statuses stage by stage (every message's first status,
then every second one...), so one message's statuses always leave in the planned order;
duplicates and out-of-order delivery are planned per message from the configured shares.
"""

from __future__ import annotations

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

log = logging.getLogger(__name__)

PRICING_CATEGORY = {"MARKETING": "marketing", "UTILITY": "utility", "AUTHENTICATION": "authentication"}


def sign(app_secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def plan_statuses(behaviour, category: str) -> list[tuple[str, int | None]]:
    """The statuses one accepted message will produce: sent → delivered → read, or sent → failed."""
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


class WebhookSender:
    def __init__(self, state, threads: int = 4, retries: int = 3):
        self.state = state
        self.retries = retries
        self.pending: queue.Queue = queue.Queue()
        self.http = urllib3.PoolManager(num_pools=4, maxsize=threads, timeout=urllib3.Timeout(connect=2, read=10),
                                        retries=False)
        self.posted = 0
        self.failed = 0
        self._counts = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"sandbox-webhook-{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def message_accepted(self, number, recipient: str, wamid: str, template, opaque) -> None:
        if self.state.behaviour.webhook_url:
            category = PRICING_CATEGORY.get(template.category, "utility") if template else "service"
            self.pending.put(("status", number, recipient, wamid, category, opaque))

    def inbound_text(self, number, sender: str, text: str, name: str, wamid: str) -> None:
        self.pending.put(("inbound", number, sender, wamid, text, name))

    def stats(self) -> dict:
        return {"posted": self.posted, "failed": self.failed, "pending": self.pending.qsize()}

    def close(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self.pending.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self.http.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.pending.get()
            if item is None:
                return
            batch = [item]
            limit = max(1, self.state.behaviour.webhook_batch)
            while len(batch) < limit:
                try:
                    more = self.pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.pending.put(None)
                    break
                batch.append(more)
            try:
                self._deliver(batch, limit)
            except Exception:  # a broken receiver must not kill the sender
                log.exception("sandbox webhook delivery failed")

    def _deliver(self, batch: list, limit: int) -> None:
        behaviour = self.state.behaviour
        stages: list[list[tuple]] = []
        for item in batch:
            if item[0] == "inbound":
                _, number, sender, wamid, text, name = item
                self._post(number, {"contacts": [{"profile": {"name": name}, "wa_id": sender}],
                                    "messages": [{"from": sender, "id": wamid, "timestamp": str(int(time.time())),
                                                  "type": "text", "text": {"body": text}}]})
                continue
            _, number, recipient, wamid, category, opaque = item
            for index, (status, code) in enumerate(plan_statuses(behaviour, category)):
                if len(stages) <= index:
                    stages.append([])
                stages[index].append((number, _status(wamid, recipient, status, code, category, opaque)))
        for stage in stages:
            by_number: dict = {}
            for number, status in stage:
                by_number.setdefault(number.id, (number, []))[1].append(status)
            for number, statuses in by_number.values():
                for start in range(0, len(statuses), limit):
                    self._post(number, {"statuses": statuses[start:start + limit]})

    def _post(self, number, value: dict) -> None:
        url = self.state.behaviour.webhook_url
        if not url:
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
        for attempt in range(self.retries + 1):
            try:
                response = self.http.request("POST", url, body=body, headers=headers)
                if 200 <= response.status < 300:
                    with self._counts:
                        self.posted += 1
                    return
            except urllib3.exceptions.HTTPError:
                pass
            if self._stop.wait(0.2 * 2 ** attempt):
                break
        with self._counts:
            self.failed += 1


def _status(wamid: str, recipient: str, status: str, code: int | None, category: str, opaque) -> dict:
    result: dict = {"id": wamid, "status": status, "timestamp": str(int(time.time())), "recipient_id": recipient}
    if opaque:
        result["biz_opaque_callback_data"] = opaque
    if code is not None:
        result["errors"] = [webhook_error(code)]
    else:
        result["pricing"] = {"billable": category != "service", "pricing_model": "PMP", "category": category,
                             "type": "regular" if category != "service" else "free_customer_service"}
    return result
