"""Builders for the webhook tests: vendors with numbers and messages (rows made with the models), Meta-shaped
envelopes signed the way Meta signs them (HMAC-SHA256 of the exact bytes posted), and real HTTP posts to a
receiver: a waitress server in this process, or a ``kloyst run`` process of its own."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import select

from kloyst import testing
from kloyst.db import tenancy
from kloyst.testing.processes import free_port, stop_process
from kloyst.webhooks import WEBHOOK_PATH
from kloyst.webhooks.models import WebhookDelivery
from kloyst_plugins.messages.content import seal_content
from kloyst_plugins.messages.models import STATUS_RANK, MessageLog, MessageStatus
from kloyst_plugins.waba.access import encrypt_waba_token
from kloyst_plugins.waba.models import PhoneNumber, Waba

APP_SECRET = testing.TEST_SETTINGS["kloyst.meta.app_secret"]
PLUGINS = ("contacts", "waba", "templates", "messages")
RECIPIENT = "+12025550123"
_ids = itertools.count(2 * 10**14 + uuid.uuid4().int % 10**13)


def meta_id() -> str:
    return str(next(_ids))


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(testapp, body: bytes, *, signature: str | None = None, status: int = 200):
    """POST ``body`` to the webhook route, signed over these exact bytes unless ``signature`` is given."""
    return testapp.post(WEBHOOK_PATH, body, status=status, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": signature if signature is not None else sign(body)})


@dataclass(frozen=True)
class Line:
    """A vendor's sending number: what a webhook envelope names."""

    vendor_id: uuid.UUID
    number: PhoneNumber
    meta_waba_id: str

    @property
    def meta_phone_number_id(self) -> str:
        return self.number.meta_phone_number_id


def envelope(line: Line, value: dict, field: str = "messages") -> bytes:
    """One delivery as Meta writes it: escaped unicode (json.dumps' default), no spaces."""
    return json.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": line.meta_waba_id, "time": int(time.time()),
        "changes": [{"field": field, "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550100000", "phone_number_id": line.meta_phone_number_id},
            **value}}]}]}, separators=(",", ":")).encode()


def status(wamid: str, name: str, *, at: int | None = None, opaque: str | None = None, errors: list | None = None,
           category: str | None = "utility") -> dict:
    result = {"id": wamid, "status": name, "timestamp": str(at or int(time.time())), "recipient_id": RECIPIENT[1:]}
    if opaque:
        result["biz_opaque_callback_data"] = opaque
    if errors:
        result["errors"] = errors
    elif category:
        result["pricing"] = {"billable": True, "pricing_model": "PMP", "category": category, "type": "regular"}
    return result


def statuses(line: Line, *items: dict) -> bytes:
    return envelope(line, {"statuses": list(items)})


def inbound(line: Line, text: str, *, sender: str = RECIPIENT, name: str = "Ann Customer", wamid: str | None = None,
            at: int | None = None) -> bytes:
    digits = sender.lstrip("+")
    return envelope(line, {"contacts": [{"profile": {"name": name}, "wa_id": digits}],
                           "messages": [{"from": digits, "id": wamid or f"wamid.in.{uuid.uuid4().hex}",
                                         "timestamp": str(at or int(time.time())), "type": "text",
                                         "text": {"body": text}}]})


def deliveries(db) -> list[WebhookDelivery]:
    db.expire_all()
    return list(db.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


class Builder:
    """Vendors, numbers and messages for a test, committed through ``db``."""

    def __init__(self, db, registry) -> None:
        self.db = db
        self.cipher = registry["kloyst.cipher"]
        self.hasher = registry["kloyst.mobile_hasher"]
        self.accounts = testing.AccountFactory(db, registry["kloyst.access_tokens"])

    def _save(self, row):
        with tenancy.unscoped(self.db):
            self.db.add(row)
            self.db.commit()
        return row

    def line(self, name: str = "Webhook Co", plugins=PLUGINS) -> Line:
        """A vendor with ``plugins`` on, its own WABA and one number."""
        account = self.accounts.vendor(name)
        for plugin in plugins:
            testing.enable_plugin(self.db, account.vendor_id, plugin)
        self.db.commit()
        token_enc, kid = encrypt_waba_token(self.cipher, account.vendor_id, "token")
        waba = self._save(Waba(vendor_id=account.vendor_id, meta_waba_id=meta_id(), name="WABA",
                               access_token_enc=token_enc, enc_kid=kid))
        number = self._save(PhoneNumber(vendor_id=account.vendor_id, waba_id=waba.id, meta_phone_number_id=meta_id(),
                                        display_phone_number="+1 555 010 0000"))
        return Line(account.vendor_id, number, waba.meta_waba_id)

    def message(self, line: Line, *, status: MessageStatus = MessageStatus.SENT, wamid: str | None = "new",
                **fields) -> MessageLog:
        """A message of ``line`` that got as far as ``status`` (SENT ones carry a fresh wamid)."""
        message_id = uuid.uuid4()
        payload = {"messaging_product": "whatsapp", "to": RECIPIENT, "type": "template",
                   "template": {"name": "order_update", "language": {"code": "en_US"}},
                   "biz_opaque_callback_data": str(message_id)}
        content_enc, kid = seal_content(self.cipher, line.vendor_id, payload)
        return self._save(MessageLog(
            id=message_id, vendor_id=line.vendor_id, phone_number_id=line.number.id, template_name="order_update",
            template_language="en_US", category="UTILITY", recipient_hash=self.hasher(line.vendor_id, RECIPIENT),
            content_enc=content_enc, enc_kid=kid, status=status.value, status_rank=STATUS_RANK[status],
            wamid=f"wamid.{uuid.uuid4().hex}" if wamid == "new" else wamid, **fields))

    def reload(self, row):
        self.db.expire_all()
        with tenancy.unscoped(self.db):
            return self.db.get(type(row), row.id)


def post_over_http(port: int, body: bytes, *, timeout: float = 30) -> int:
    """POST ``body``, signed, to a receiver listening on ``port``; the status of the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", WEBHOOK_PATH, body, {"Content-Type": "application/json",
                                                        "X-Hub-Signature-256": sign(body)})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def stored_bodies(engine) -> set[bytes]:
    """The bodies in ``webhook_delivery`` as a connection of its own sees them (what is committed)."""
    with engine.connect() as connection:
        return {bytes(body) for body in connection.scalars(sa.text("SELECT body FROM webhook_delivery"))}


def wait_until(condition, what: str, timeout: float = 30, step: float = 0.05) -> float:
    """Poll ``condition`` until it holds; the seconds it took (fails the test after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - started


def table_lock(engine, table: str, mode: str):
    """A transaction holding ``LOCK TABLE table IN mode MODE`` on a connection of its own; ``.rollback()``
    and ``.connection.close()`` end it (the caller's ``finally``)."""
    connection = engine.connect()
    held = connection.begin()
    connection.execute(sa.text(f"LOCK TABLE {table} IN {mode} MODE"))
    return held


class WebhookProcess:
    """``kloyst run`` in WEBHOOK mode, as a process of its own, on the test database and Redis.

    Its ini is written from the test settings, so it shares the database the fixtures built; it
    runs the code this test imports (``PYTHONPATH`` is passed on).
    """

    KLOYST = str(Path(sys.executable).with_name("kloyst"))

    def __init__(self, settings: dict, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "kloyst.log"
        ini = directory / "webhook.ini"
        lines = [f"{key} = {value}" for key, value in settings.items() if key.startswith(("kloyst.", "messages."))]
        ini.write_text("[app:main]\nuse = egg:kloyst\n" + "\n".join(lines) + "\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/"),
               "SERVICE_TYPE": "WEBHOOK", "WEBHOOK_PORT": str(self.port), "LOG_CONSOLE": "true"}
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        with self.log.open("w") as output:
            self.process = subprocess.Popen([self.KLOYST, "run", str(ini)], env=env, cwd=directory, stdout=output,
                                            stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait_until_serving(self, timeout: float = 60) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"kloyst exited with {self.process.returncode}:\n{self.output()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                connection.request("GET", "/healthz")
                return connection.getresponse().status == 200
            except OSError:
                return False

        wait_until(answers, f"the WEBHOOK process on port {self.port} to answer /healthz", timeout, step=0.2)

    def post(self, body: bytes) -> int:
        return post_over_http(self.port, body)

    def stop(self) -> None:
        stop_process(self.process)
